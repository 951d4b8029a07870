//! The dense algebra of Hopfield layers on host data: the batched strided
//! matrix multiply ([`Context::matmul`]), LayerNorm ([`Context::layer_norm`])
//! and the element-wise maps ([`Context::map`]), each one submission and one
//! readback. The layers record the same kernels into their own submissions
//! (`kernels::linalg`); these entry points exist so that every kernel can be
//! checked alone against the f64 reference (`cpu::linalg`), and for users who
//! want the products themselves.

use crate::context::{Context, Scratch};
use crate::error::{Error, Result};
use crate::kernels::linalg::{self, AffineAt, Matmul};
use crate::kernels::Recorder;

pub use crate::kernels::linalg::{At, BLayout, MapOp, MatmulEntry};

/// The operands of [`Context::matmul`].
#[derive(Clone, Copy, Debug)]
pub struct MatmulInputs<'a> {
    /// Every entry's A, addressed by its [`At`].
    pub a: &'a [f32],
    /// Every entry's B.
    pub b: &'a [f32],
    /// Every entry's biases (at its `bias_off`), if any.
    pub bias: Option<&'a [f32]>,
    /// How B is stored.
    pub layout: BLayout,
    /// `max(., 0)` after the bias.
    pub relu: bool,
    /// Floats of the output buffer; what no entry writes is 0.
    pub c_len: usize,
}

fn finite(what: &'static str, data: &[f32]) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::NonFinite { what, row: 0, col: i, value: data[i] }),
        None => Ok(()),
    }
}

fn covers(what: &'static str, len: usize, end: usize) -> Result<()> {
    if end > len {
        return Err(Error::ShapeMismatch {
            what: format!("{what}: floats the regions address"),
            expected: end,
            got: len,
        });
    }
    Ok(())
}

fn end(at: At, rows: usize, cols: usize) -> usize {
    if rows == 0 || cols == 0 {
        at.off
    } else {
        at.off + (rows - 1) * at.stride + cols
    }
}

impl Context {
    /// `C = alpha A op(B) (+ bias) (ReLU)` for every entry, all in one
    /// dispatch list (entries may write disjoint regions of C: the heads of a
    /// multi-head layer). Returns C, `c_len` floats.
    ///
    /// # Errors
    /// A region past the end of its slice, a non-finite input, or a device limit.
    pub fn matmul(&self, inputs: &MatmulInputs<'_>, entries: &[MatmulEntry]) -> Result<Vec<f32>> {
        let MatmulInputs { a, b, bias, layout, relu, c_len } = *inputs;
        for e in entries {
            covers("matmul a", a.len(), end(e.a, e.m, e.k))?;
            let b_end = match layout {
                BLayout::Rows => end(e.b, e.n, e.k),
                BLayout::Cols => end(e.b, e.k, e.n),
            };
            covers("matmul b", b.len(), b_end)?;
            covers("matmul c", c_len, end(e.c, e.m, e.n))?;
            if let Some(bias) = bias {
                covers("matmul bias", bias.len(), e.bias_off + e.n)?;
            }
            if !e.alpha.is_finite() {
                return Err(Error::invalid("alpha", e.alpha, "must be finite"));
            }
        }
        finite("matmul a", a)?;
        finite("matmul b", b)?;
        if let Some(bias) = bias {
            finite("matmul bias", bias)?;
        }
        if c_len == 0 {
            return Err(Error::Empty { what: "matmul output" });
        }
        self.scoped(|| {
            let extra = wgpu::BufferUsages::COPY_SRC;
            let a = self.upload("matmul a", bytemuck::cast_slice(a), extra)?;
            let b = self.upload("matmul b", bytemuck::cast_slice(b), extra)?;
            let bias = bias.map(|x| self.upload("matmul bias", bytemuck::cast_slice(x), extra)).transpose()?;
            let mut rec = Recorder::new(self, Scratch::pooled(self));
            let c = rec.buffer(
                (c_len * 4) as u64,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            )?;
            let mut encoder = self.device().create_command_encoder(&Default::default());
            encoder.clear_buffer(&c, 0, None);
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                let op = Matmul { a: &a, b: &b, c: &c, bias: bias.as_ref(), layout, relu };
                linalg::encode_matmul(&mut rec, &mut pass, &op, entries)?;
            }
            rec.flush();
            let out = self.submit_and_read(encoder, &[(&c, 0, (c_len * 4) as u64)])?;
            Ok(bytemuck::pod_collect_to_vec(&out[0]))
        })
    }

    /// LayerNorm of each of the `rows` rows of `x` (`[rows, cols]`):
    /// `(x - mean) / sqrt(var + eps)`, times `weight` plus `bias` when
    /// `affine` is given (PyTorch's definition, biased variance).
    ///
    /// # Errors
    /// Shapes, non-finite values, `eps` not finite and >= 0, a device limit.
    pub fn layer_norm(
        &self,
        x: &[f32],
        rows: usize,
        cols: usize,
        eps: f32,
        affine: Option<(&[f32], &[f32])>,
    ) -> Result<Vec<f32>> {
        crate::stats::validate_matrix("layer norm input", x, rows, cols)?;
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::invalid("eps", eps, "must be finite and >= 0"));
        }
        let params: Option<Vec<f32>> = match affine {
            None => None,
            Some((w, b)) => {
                crate::stats::validate_matrix("layer norm weight", w, 1, cols)?;
                crate::stats::validate_matrix("layer norm bias", b, 1, cols)?;
                Some(w.iter().chain(b).copied().collect())
            }
        };
        self.scoped(|| {
            let x = self.upload("layer norm x", bytemuck::cast_slice(x), wgpu::BufferUsages::empty())?;
            let aff = params
                .map(|p| self.upload("layer norm affine", bytemuck::cast_slice(&p), wgpu::BufferUsages::empty()))
                .transpose()?;
            let mut rec = Recorder::new(self, Scratch::pooled(self));
            let y = rec.buffer((rows * cols * 4) as u64, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC)?;
            let mut encoder = self.device().create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                let affine = aff.as_ref().map(|buffer| AffineAt { buffer, off: 0 });
                let at = At::new(0, cols);
                linalg::encode_layer_norm(&mut rec, &mut pass, (&x, at), (&y, at), rows, cols, eps, affine)?;
            }
            rec.flush();
            let out = self.submit_and_read(encoder, &[(&y, 0, (rows * cols * 4) as u64)])?;
            Ok(bytemuck::pod_collect_to_vec(&out[0]))
        })
    }

    /// `op(u, v)` element by element over `[rows, cols]` (contiguous), with
    /// `v` `[rows, cols]` or, for a column scaling, `[cols]` (one row for
    /// all rows). `v` is for the binary maps only.
    ///
    /// # Errors
    /// Shapes, a missing or unexpected `v`, non-finite values, a device limit.
    pub fn map(&self, op: MapOp, u: &[f32], v: Option<&[f32]>, rows: usize, cols: usize) -> Result<Vec<f32>> {
        crate::stats::validate_matrix("map input", u, rows, cols)?;
        let binary = matches!(op, MapOp::Add | MapOp::Mul);
        let v_stride = match (binary, v) {
            (true, Some(v)) if v.len() == cols => {
                finite("map second input", v)?;
                0
            }
            (true, Some(v)) => {
                crate::stats::validate_matrix("map second input", v, rows, cols)?;
                cols
            }
            (true, None) => return Err(Error::invalid("v", "none", "a binary map needs its second operand")),
            (false, Some(_)) => return Err(Error::invalid("v", "given", "a unary map takes one operand")),
            (false, None) => 0,
        };
        self.scoped(|| {
            let ub = self.upload("map u", bytemuck::cast_slice(u), wgpu::BufferUsages::empty())?;
            let vb =
                v.map(|v| self.upload("map v", bytemuck::cast_slice(v), wgpu::BufferUsages::empty())).transpose()?;
            let mut rec = Recorder::new(self, Scratch::pooled(self));
            let o = rec.buffer((rows * cols * 4) as u64, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC)?;
            let mut encoder = self.device().create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                let at = At::new(0, cols);
                let v = vb.as_ref().map(|b| (b, At::new(0, v_stride)));
                linalg::encode_map(&mut rec, &mut pass, op, (&ub, at), v, (&o, at), rows, cols)?;
            }
            rec.flush();
            let out = self.submit_and_read(encoder, &[(&o, 0, (rows * cols * 4) as u64)])?;
            Ok(bytemuck::pod_collect_to_vec(&out[0]))
        })
    }
}
