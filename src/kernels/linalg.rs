//! Host side of `shaders/linalg*.wgsl`: the batched strided matrix multiply
//! (projections, feed-forward maps, and batched retrieval's scores and
//! read-outs), LayerNorm and the element-wise maps. Each `encode_*` records
//! its dispatches into the caller's pass.
//!
//! Operands are regions of buffers, `(offset, row stride)` in floats
//! ([`At`]): a head of a multi-head projection is a region with the
//! projection's row stride, so heads are split and concatenated by strides,
//! never copied. Indices are u32 in the shaders: every region is checked to
//! end below 2^32 floats (a binding is smaller anyway).

use bytemuck::{Pod, Zeroable};

use super::{entire, grid, Kernel, Recorder};
use crate::error::{Error, Resource, Result};
use crate::shaders::Shader;

/// The matmul tile, handed to linalg.wgsl as its override constants: 32 x 32
/// outputs per workgroup, 16 dimensions staged per barrier. The shader's
/// thread layout is written for these values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MatTile {
    pub tm: usize,
    pub tn: usize,
    pub tk: usize,
}

pub(crate) const TILE: MatTile = MatTile { tm: 32, tn: 32, tk: 16 };

impl MatTile {
    fn constants(self) -> [(&'static str, f64); 3] {
        [("TM", self.tm as f64), ("TN", self.tn as f64), ("TK", self.tk as f64)]
    }

    /// Loop iterations one invocation runs per staged chunk of `tk`
    /// dimensions: the two loads (and their exits) and the inner loop.
    fn chunk_cost(self) -> usize {
        let load = |n: usize| (n * self.tk).div_ceil(64) + 1;
        load(self.tm) + load(self.tn) + self.tk + 1
    }
}

/// Where an operand lives in its buffer, in floats: row `r` starts at `off + r * stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    /// First float of row 0.
    pub off: usize,
    /// Floats from one row to the next.
    pub stride: usize,
}

impl At {
    /// Rows of `stride` floats from `off`.
    pub fn new(off: usize, stride: usize) -> Self {
        At { off, stride }
    }

    /// One past the last float of `rows` rows of `cols` floats.
    fn end(self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            return self.off;
        }
        self.off + (rows - 1) * self.stride + cols
    }
}

/// One product `C = alpha A op(B) (+ bias)`: A is `[m, k]`, op(B) `[k, n]`, C `[m, n]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulEntry {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The reduction: columns of A.
    pub k: usize,
    /// A, `[m, k]`.
    pub a: At,
    /// B, `[n, k]` or `[k, n]` ([`BLayout`]).
    pub b: At,
    /// C, `[m, n]`.
    pub c: At,
    /// Offset of this entry's `n` biases (ignored without a bias buffer).
    pub bias_off: usize,
    /// Factor of the product (not of the bias).
    pub alpha: f32,
}

/// How B is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BLayout {
    /// `[n, k]` (PyTorch's `[out, in]` weights, keys): C = A B^T.
    Rows,
    /// `[k, n]` (values): C = A B.
    Cols,
}

/// The buffers and flags of one batched product.
pub(crate) struct Matmul<'b> {
    pub a: &'b wgpu::Buffer,
    pub b: &'b wgpu::Buffer,
    pub c: &'b wgpu::Buffer,
    pub bias: Option<&'b wgpu::Buffer>,
    pub layout: BLayout,
    pub relu: bool,
}

/// Keep in sync with `MatmulParams` in shaders/linalg.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct MatmulParams {
    pub tiles: u32,
    pub tile0: u32,
    pub entry0: u32,
    pub groups_x: u32,
    pub k0: u32,
    pub k1: u32,
    pub flags: u32,
    pub _pad: u32,
}

/// Keep in sync with the words of an entry in shaders/linalg.wgsl.
const ENTRY_WORDS: usize = 12;
const B_ROWS: u32 = 1;
const BIAS: u32 = 2;
const RELU: u32 = 4;
const ACCUMULATE: u32 = 8;

/// Regions must end below this many floats: the shaders index in u32.
const MAX_INDEX: usize = u32::MAX as usize;

fn index(what: &str, end: usize) -> Result<u32> {
    u32::try_from(end).ok().filter(|_| end <= MAX_INDEX).ok_or_else(|| {
        Error::limit(
            format!("{what}: an operand region indexed past 2^32 floats"),
            Resource::BindingBytes,
            end,
            1 << 34,
        )
    })
}

/// Record `C = alpha A op(B) (+ bias) (ReLU)` for every entry, in one work
/// list of 32 x 32 output tiles. Reductions longer than the driver's loop
/// budget allows one invocation are cut along k into dispatches that add to C.
pub(crate) fn encode_matmul(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    op: &Matmul<'_>,
    entries: &[MatmulEntry],
) -> Result<()> {
    let entries: Vec<&MatmulEntry> = entries.iter().filter(|e| e.m > 0 && e.n > 0).collect();
    if entries.is_empty() {
        return Ok(());
    }
    let t = TILE;
    let mut words: Vec<u32> = Vec::with_capacity(entries.len() * ENTRY_WORDS);
    let mut tiles: Vec<u32> = Vec::new();
    let mut k_max = 0;
    for (i, e) in entries.iter().enumerate() {
        let (a_end, b_end, c_end) = match op.layout {
            BLayout::Rows => (e.a.end(e.m, e.k), e.b.end(e.n, e.k), e.c.end(e.m, e.n)),
            BLayout::Cols => (e.a.end(e.m, e.k), e.b.end(e.k, e.n), e.c.end(e.m, e.n)),
        };
        index("matmul A", a_end)?;
        index("matmul B", b_end)?;
        index("matmul C", c_end)?;
        index("matmul bias", e.bias_off + e.n)?;
        k_max = k_max.max(e.k);
        words.extend([
            e.m as u32,
            e.n as u32,
            e.k as u32,
            e.a.off as u32,
            e.a.stride as u32,
            e.b.off as u32,
            e.b.stride as u32,
            e.c.off as u32,
            e.c.stride as u32,
            e.bias_off as u32,
            e.alpha.to_bits(),
            0,
        ]);
        for r in (0..e.m).step_by(t.tm) {
            for c in (0..e.n).step_by(t.tn) {
                tiles.extend([i as u32, r as u32, c as u32, 0]);
            }
        }
    }
    let n_tiles = tiles.len() / 4;
    let tile0 = words.len() as u32;
    words.extend(tiles);
    let desc = rec.table(&words)?;
    // Dimensions per dispatch: each staged chunk of TK costs chunk_cost
    // iterations; the epilogue and the entry read are a few dozen more.
    let k_step = match rec.ctx.loop_budget() {
        Some(budget) => (budget.saturating_sub(256) / t.chunk_cost()).max(1) * t.tk,
        None => k_max.max(1),
    };
    let kernel = Kernel::new(rec.ctx, Shader::Linalg, "matmul", &t.constants())?;
    let bias = op.bias.unwrap_or(rec.ctx.placeholder());
    let (gx, gy) = grid(n_tiles);
    let mut flags = if op.layout == BLayout::Rows { B_ROWS } else { 0 };
    if op.bias.is_some() {
        flags |= BIAS;
    }
    if op.relu {
        flags |= RELU;
    }
    if op.relu && k_max > k_step {
        // ReLU applies to the whole sum; a split reduction would apply it
        // to the first part. No layer needs a ReLU after so long a sum.
        return Err(Error::limit(
            "a matmul with ReLU over a reduction longer than one invocation may loop",
            Resource::LoopIterations,
            k_max,
            k_step as u64,
        ));
    }
    for k0 in (0..k_max.max(1)).step_by(k_step) {
        let params = MatmulParams {
            tiles: n_tiles as u32,
            tile0,
            entry0: 0,
            groups_x: gx,
            k0: k0 as u32,
            k1: (k0 + k_step).min(k_max) as u32,
            flags: if k0 == 0 { flags } else { flags | ACCUMULATE },
            _pad: 0,
        };
        let bindings = [(1, entire(&desc)), (2, entire(op.a)), (3, entire(op.b)), (4, entire(bias)), (5, entire(op.c))];
        rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))?;
    }
    Ok(())
}

/// Keep in sync with `NormParams` in shaders/linalg_norm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct NormParams {
    pub rows: u32,
    pub cols: u32,
    pub x_off: u32,
    pub x_stride: u32,
    pub y_off: u32,
    pub y_stride: u32,
    pub w_off: u32,
    pub affine: u32,
    pub groups_x: u32,
    pub eps: f32,
    pub _pad: [u32; 2],
}

/// Rows of at most this many features are normalised one per thread.
const ROW_THREAD_COLS: usize = 256;

/// A LayerNorm's learned parameters: `weight` at `off`, `bias` at `off + cols`
/// of `buffer`.
pub(crate) struct AffineAt<'b> {
    pub buffer: &'b wgpu::Buffer,
    pub off: usize,
}

/// Record `y = LayerNorm(x)` for `rows` rows of `cols` features.
#[expect(clippy::too_many_arguments, reason = "two regions, their size, the LayerNorm's parameters")]
pub(crate) fn encode_layer_norm(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    x: (&wgpu::Buffer, At),
    y: (&wgpu::Buffer, At),
    rows: usize,
    cols: usize,
    eps: f32,
    affine: Option<AffineAt<'_>>,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    index("layer norm input", x.1.end(rows, cols))?;
    index("layer norm output", y.1.end(rows, cols))?;
    // Short rows: a thread per row (3 cols loop iterations); long rows: a
    // workgroup per row (three passes over ceil(cols / 64) features and two
    // 6-step reductions).
    let per_thread = cols <= ROW_THREAD_COLS;
    if let Some(budget) = rec.ctx.loop_budget() {
        let cost = if per_thread { 3 * (cols + 1) } else { 3 * (cols.div_ceil(64) + 1) + 20 };
        if cost > budget {
            return Err(Error::limit("a LayerNorm row", Resource::LoopIterations, cost, budget as u64));
        }
    }
    let (entry, items) = if per_thread { ("layer_norm_rows", rows.div_ceil(64)) } else { ("layer_norm", rows) };
    let kernel = Kernel::new(rec.ctx, Shader::LinalgNorm, entry, &[])?;
    let (gx, gy) = grid(items);
    let w_off = affine.as_ref().map_or(0, |a| a.off);
    index("layer norm parameters", w_off + 2 * cols)?;
    let params = NormParams {
        rows: rows as u32,
        cols: cols as u32,
        x_off: x.1.off as u32,
        x_stride: x.1.stride as u32,
        y_off: y.1.off as u32,
        y_stride: y.1.stride as u32,
        w_off: w_off as u32,
        affine: u32::from(affine.is_some()),
        groups_x: gx,
        eps,
        _pad: [0; 2],
    };
    let aff = affine.as_ref().map_or(rec.ctx.placeholder(), |a| a.buffer);
    let bindings = [(1, entire(x.0)), (2, entire(aff)), (3, entire(y.0))];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

/// Keep in sync with `MapParams` in shaders/linalg_map.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct MapParams {
    pub rows: u32,
    pub cols: u32,
    pub u_off: u32,
    pub u_stride: u32,
    pub v_off: u32,
    pub v_stride: u32,
    pub o_off: u32,
    pub o_stride: u32,
    pub op: u32,
    pub groups_x: u32,
    pub _pad: [u32; 2],
}

/// An element-wise map (shaders/linalg_map.wgsl `OP_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// `u`.
    Copy,
    /// `max(u, 0)`.
    Relu,
    /// `u + v`.
    Add,
    /// `u * v` (v with stride 0: one row scaling every row).
    Mul,
    /// `elu(u) + 1`.
    Elu1,
}

impl MapOp {
    fn code(self) -> u32 {
        match self {
            MapOp::Copy => 0,
            MapOp::Relu => 1,
            MapOp::Add => 2,
            MapOp::Mul => 3,
            MapOp::Elu1 => 4,
        }
    }
}

/// Record `o = op(u, v)` over a `[rows, cols]` region (v unused by the unary maps).
#[expect(clippy::too_many_arguments, reason = "three regions, their size and the map")]
pub(crate) fn encode_map(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    op: MapOp,
    u: (&wgpu::Buffer, At),
    v: Option<(&wgpu::Buffer, At)>,
    o: (&wgpu::Buffer, At),
    rows: usize,
    cols: usize,
) -> Result<()> {
    let n = rows * cols;
    if n == 0 {
        return Ok(());
    }
    index("map input", u.1.end(rows, cols))?;
    index("map output", o.1.end(rows, cols))?;
    index("map elements", n)?;
    let binary = matches!(op, MapOp::Add | MapOp::Mul);
    let (vb, va) = match (v, binary) {
        (Some((b, at)), true) => {
            index("map second input", if at.stride == 0 { at.off + cols } else { at.end(rows, cols) })?;
            (b, at)
        }
        (None, true) => return Err(Error::internal("a binary element-wise map without its second operand")),
        (_, false) => (rec.ctx.placeholder(), At::new(0, 0)),
    };
    let kernel = Kernel::new(rec.ctx, Shader::LinalgMap, "map", &[])?;
    let (gx, gy) = grid(n.div_ceil(64));
    let params = MapParams {
        rows: rows as u32,
        cols: cols as u32,
        u_off: u.1.off as u32,
        u_stride: u.1.stride as u32,
        v_off: va.off as u32,
        v_stride: va.stride as u32,
        o_off: o.1.off as u32,
        o_stride: o.1.stride as u32,
        op: op.code(),
        groups_x: gx,
        _pad: [0; 2],
    };
    let bindings = [(1, entire(u.0)), (2, entire(vb)), (3, entire(o.0))];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaders::{check_constants, wgsl_struct_size};

    #[test]
    fn structs_match_the_wgsl_layouts() {
        assert_eq!(wgsl_struct_size(Shader::Linalg, "MatmulParams"), size_of::<MatmulParams>());
        assert_eq!(wgsl_struct_size(Shader::LinalgNorm, "NormParams"), size_of::<NormParams>());
        assert_eq!(wgsl_struct_size(Shader::LinalgMap, "MapParams"), size_of::<MapParams>());
        check_constants(Shader::Linalg, "matmul", &TILE.constants());
        check_constants(Shader::LinalgNorm, "layer_norm", &[]);
        check_constants(Shader::LinalgNorm, "layer_norm_rows", &[]);
        check_constants(Shader::LinalgMap, "map", &[]);
    }

    #[test]
    fn a_region_ends_after_its_last_row() {
        assert_eq!(At::new(5, 10).end(3, 4), 5 + 20 + 4);
        assert_eq!(At::new(5, 10).end(0, 4), 5);
        assert!(index("x", 1 << 33).is_err());
    }
}
