//! hopfield-layers modules on the GPU: [`Hopfield`], [`HopfieldPooling`] and
//! [`HopfieldLayer`], built from a [`LayerConfig`] and its [`LayerWeights`],
//! each with `forward`. They compute what the f64 reference
//! (`layer::forward_reference`) computes, which is hopfield-layers'
//! eval-mode output (docs/hflayers.md).
//!
//! A forward pass is one submission with one readback (for at most 16
//! updates; longer dynamics check a 4-byte counter every 8): the input
//! LayerNorms, the projections (`kernels::linalg`, one product each over
//! every sequence), the per-head Hopfield-space LayerNorm, the retrieval of
//! every (sequence, head) as one batched retrieval (`retrieve::batch`: the
//! heads are regions of the projections, never copies), and the output
//! projection. The weights are uploaded once, when the layer is built.
//!
//! beta. One beta for every head is the batched retrieval's beta. A
//! per-head tensor (hopfield-layers tiles it over features) multiplies
//! feature i of each head's keys by `beta[i mod H]` when H divides the head
//! dimension (then that is what hopfield-layers' queries get at every step),
//! and otherwise, where only the first step exists, the queries' features
//! `j = h hd + i` by `beta[j mod H]`, as hopfield-layers does.

pub mod network;

use std::time::{Duration, Instant};

use super::config::{LayerClass, LayerConfig, PerHead, MAX_UNBOUNDED_UPDATES};
use super::weights::{LayerWeights, Projection};
use super::{resolve, LayerInputs, Mask, NormSpec, PathSpec, Sequences, Source, Structure};
use crate::context::{Context, Scratch};
use crate::error::{Error, Result};
use crate::kernels::batch::{GroupRecord, NONE};
use crate::kernels::linalg::{self, AffineAt, At, BLayout, MapOp, Matmul, MatmulEntry};
use crate::kernels::Recorder;
use crate::method::Method;
use crate::retrieve::batch::{DeviceInputs, Plan, ProblemSpec};
use crate::retrieve::{BatchGroup, BatchSpace, BatchStop};

/// A linear map in the weights buffer: `W` (`[out, in]`) at `w`, `b` at `b`.
#[derive(Clone, Copy, Debug)]
struct LinearAt {
    w: usize,
    b: Option<usize>,
    inp: usize,
    out: usize,
}

/// A LayerNorm: eps and, if affine, weight and bias at `off` and `off + cols`.
#[derive(Clone, Copy, Debug)]
struct NormAt {
    eps: f32,
    affine: Option<usize>,
}

#[derive(Clone, Debug)]
struct PathAt {
    linears: Vec<LinearAt>,
    split: bool,
}

/// Floats of every tensor a layer uses, in one buffer.
#[derive(Default)]
struct Arena {
    data: Vec<f32>,
}

impl Arena {
    fn push(&mut self, values: &[f32]) -> usize {
        let off = self.data.len();
        self.data.extend_from_slice(values);
        off
    }

    fn linear(&mut self, p: &Projection) -> LinearAt {
        LinearAt {
            w: self.push(&p.weight),
            b: p.bias.as_ref().map(|b| self.push(b)),
            inp: p.in_features,
            out: p.out_features,
        }
    }

    fn norm(&mut self, n: Option<NormSpec<'_>>) -> Option<NormAt> {
        n.map(|n| NormAt {
            eps: n.eps as f32,
            affine: n.affine.map(|a| {
                let off = self.push(&a.weight);
                self.push(&a.bias);
                off
            }),
        })
    }

    fn path(&mut self, p: &PathSpec<'_>) -> PathAt {
        PathAt { linears: p.linears.iter().map(|l| self.linear(l)).collect(), split: p.split }
    }
}

/// The time one forward pass spent in each phase (separately submitted and
/// waited for, so the phases do not overlap): [`Layer::forward_profiled`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PhaseTimes {
    /// Input LayerNorms, projections, Hopfield-space LayerNorm, scaling.
    pub projections: Duration,
    /// The batched retrieval of every (sequence, head).
    pub retrieval: Duration,
    /// The output projection and the readback.
    pub rest: Duration,
}

/// The output of a forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerOutput {
    /// Sequences N.
    pub n: usize,
    /// Rows per sequence: the state patterns (`quantity` for `HopfieldPooling`).
    pub rows: usize,
    /// Output features.
    pub features: usize,
    /// `[N, rows, features]`, row-major (hopfield-layers' batch-first output;
    /// `HopfieldPooling`'s `[N, quantity * out]` is the same memory).
    pub data: Vec<f32>,
    /// Per head: updates applied.
    pub updates: Vec<u32>,
    /// Per head: whether the stop rule ended its updates.
    pub converged: Vec<bool>,
}

/// One input of the inner module on the device: a buffer region, rows per
/// sequence, features, and the floats from one sequence to the next (0 for
/// learned patterns shared by every sequence).
#[derive(Clone, Copy)]
pub(crate) struct Operand<'b> {
    pub buffer: &'b wgpu::Buffer,
    pub off: usize,
    pub seq: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Operand<'_> {
    /// Rows stored: every sequence's, or the learned ones once.
    fn stored_rows(&self, n: usize) -> usize {
        if self.seq == 0 {
            self.rows
        } else {
            n * self.rows
        }
    }
}

/// A hopfield-layers module of any class on the GPU, with its weights on
/// the device. The typed [`Hopfield`], [`HopfieldPooling`] and
/// [`HopfieldLayer`] wrap it.
pub struct Layer<'c> {
    ctx: &'c Context,
    config: LayerConfig,
    weights: LayerWeights,
    buffer: wgpu::Buffer,
    heads: usize,
    norm_stored: Option<NormAt>,
    norm_state: Option<NormAt>,
    norm_projection: Option<NormAt>,
    query: PathAt,
    key: PathAt,
    value: PathAt,
    hopfield_norm: Option<NormAt>,
    scaling: PerHead<f64>,
    max_updates: Vec<Option<usize>>,
    eps: Vec<f64>,
    zero: bool,
    out: Option<LinearAt>,
    /// Learned patterns (pooling, lookup, target) in the weights buffer, by
    /// the address of their host data (which identifies them: `weights` owns it).
    learned: Vec<(usize, usize)>,
    stop: BatchStop,
}

impl<'c> Layer<'c> {
    /// Check the config and weights and upload the weights.
    ///
    /// # Errors
    /// An invalid config or weights, a `method` a layer cannot run, a
    /// per-head scaling with the linear or prf kernel, a device error.
    pub fn new(ctx: &'c Context, config: &LayerConfig, weights: &LayerWeights) -> Result<Self> {
        super::config::check_layer_method(&config.method)?;
        if let Method::Poly { degree: None, .. } = config.method {
            return Err(Error::unsupported(
                "degree",
                Some("poly"),
                "a GPU layer computes its queries on the device, so the polynomial's degree cannot be chosen from \
                 their magnitudes: give one",
            ));
        }
        let st = Structure::new(config, weights)?;
        if matches!(st.scaling, PerHead::Each(_)) && matches!(config.method, Method::Linear | Method::Prf { .. }) {
            return Err(Error::LayerConfig {
                arg: "scaling".into(),
                why: format!(
                    "a per-head scaling tensor scales each feature of the queries differently, which the {} kernel \
                     has no beta for: give one scaling for all heads",
                    config.method.name()
                ),
            });
        }
        let mut arena = Arena::default();
        let norm_stored = arena.norm(st.norm_stored);
        let norm_state = arena.norm(st.norm_state);
        let norm_projection = arena.norm(st.norm_projection);
        let query = arena.path(&st.query);
        let key = arena.path(&st.key);
        let value = arena.path(&st.value);
        let hopfield_norm = arena.norm(st.hopfield_norm);
        let out = st.out.map(|p| arena.linear(p));
        let weights = weights.clone();
        let mut learned = Vec::new();
        for t in [&weights.pooling_weights, &weights.lookup_weights, &weights.target_weights].into_iter().flatten() {
            learned.push((t.data.as_ptr() as usize, arena.push(&t.data)));
        }
        let (heads, scaling, max_updates, eps, zero) =
            (st.heads, st.scaling.clone(), st.max_updates.clone(), st.eps.clone(), st.zero);
        if arena.data.is_empty() {
            arena.data.push(0.0);
        }
        let buffer =
            ctx.scoped(|| ctx.upload("layer weights", bytemuck::cast_slice(&arena.data), wgpu::BufferUsages::empty()))?;
        Ok(Layer {
            ctx,
            config: config.clone(),
            weights,
            buffer,
            heads,
            norm_stored,
            norm_state,
            norm_projection,
            query,
            key,
            value,
            hopfield_norm,
            scaling,
            max_updates,
            eps,
            zero,
            out,
            learned,
            stop: BatchStop::Association,
        })
    }

    /// Use the engine's per-query stop rule on the key-space state instead of
    /// hopfield-layers' (the reference's `StopRule::State`).
    pub fn with_stop(mut self, stop: BatchStop) -> Self {
        self.stop = stop;
        self
    }

    /// The module's config.
    pub fn config(&self) -> &LayerConfig {
        &self.config
    }

    /// The eval-mode forward pass on `inputs` (which ones a class takes:
    /// [`LayerInputs`]).
    ///
    /// # Errors
    /// Inputs the class does not take, sizes that disagree with the config, a
    /// mask that masks every stored pattern of a sequence, a head still
    /// moving after [`MAX_UNBOUNDED_UPDATES`] updates when the config has no
    /// limit, a device limit or error.
    pub fn forward(&self, inputs: &LayerInputs<'_>) -> Result<LayerOutput> {
        self.run(inputs, false).map(|(out, _)| out)
    }

    /// [`Layer::forward`], with each phase submitted and waited for on its
    /// own and timed (for benchmarks: the phases then cannot overlap).
    ///
    /// # Errors
    /// As [`Layer::forward`].
    pub fn forward_profiled(&self, inputs: &LayerInputs<'_>) -> Result<(LayerOutput, PhaseTimes)> {
        self.run(inputs, true)
    }

    fn learned_at(&self, data: &[f32]) -> Result<usize> {
        self.learned
            .iter()
            .find(|(p, _)| *p == data.as_ptr() as usize)
            .map(|&(_, off)| off)
            .ok_or_else(|| Error::internal("a learned pattern was not uploaded with the layer"))
    }

    fn run(&self, inputs: &LayerInputs<'_>, profile: bool) -> Result<(LayerOutput, PhaseTimes)> {
        let ctx = self.ctx;
        let r = resolve(&self.config, &self.weights, inputs)?;
        ctx.scoped(|| {
            let mut rec = Recorder::new(ctx, Scratch::pooled(ctx));
            // Upload the caller's inputs (a projection that is the stored
            // input is the same upload).
            let mut uploads: Vec<(*const f32, wgpu::Buffer)> = Vec::new();
            for s in [&r.stored, &r.state, &r.projection] {
                if let Source::Input(seqs) = s {
                    if !uploads.iter().any(|(p, _)| *p == seqs.data.as_ptr()) {
                        let b =
                            ctx.upload("layer input", bytemuck::cast_slice(&seqs.data), wgpu::BufferUsages::empty())?;
                        uploads.push((seqs.data.as_ptr(), b));
                    }
                }
            }
            let operand = |s: &Source<'_>| -> Result<Operand<'_>> {
                Ok(match s {
                    Source::Input(seqs) => {
                        let buffer = &uploads
                            .iter()
                            .find(|(p, _)| *p == seqs.data.as_ptr())
                            .ok_or_else(|| Error::internal("a layer input was not uploaded"))?
                            .1;
                        Operand { buffer, off: 0, seq: seqs.rows * seqs.features, rows: seqs.rows, cols: seqs.features }
                    }
                    Source::Learned(t) => Operand {
                        buffer: &self.buffer,
                        off: self.learned_at(&t.data)?,
                        seq: 0,
                        rows: t.shape[0],
                        cols: t.shape[1],
                    },
                })
            };
            let (y0, r0, p0) = (operand(&r.stored)?, operand(&r.state)?, operand(&r.projection)?);
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            let mut times = PhaseTimes::default();
            let done = self.record(&mut rec, &mut encoder, r.n, [y0, r0, p0], r.mask, profile.then_some(&mut times))?;
            let clock = Instant::now();
            rec.flush();
            let out_len = r.n * done.rows * done.cols;
            let heads = self.heads;
            let ranges =
                [(&done.out, 0, (out_len * 4) as u64), (&done.groups, 0, (heads * size_of::<GroupRecord>()) as u64)];
            let bytes = ctx.submit_and_read(encoder, &ranges)?;
            if profile {
                times.rest += clock.elapsed();
            }
            let data: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[0]);
            if data.iter().any(|v| !v.is_finite()) {
                return Err(Error::internal("the layer produced a non-finite output"));
            }
            let grecs: Vec<GroupRecord> = bytemuck::pod_collect_to_vec(&bytes[1]);
            let (updates, converged) = self.check_groups(&grecs)?;
            Ok((LayerOutput { n: r.n, rows: done.rows, features: done.cols, data, updates, converged }, times))
        })
    }

    /// Per head: updates and convergence, or the error of a head that had
    /// no limit and did not stop.
    pub(crate) fn check_groups(&self, grecs: &[GroupRecord]) -> Result<(Vec<u32>, Vec<bool>)> {
        for (h, g) in grecs.iter().enumerate() {
            if self.max_updates[h].is_none() && g.converged == 0 {
                return Err(Error::invalid(
                    "update_steps_max",
                    "None",
                    format!(
                        "head {h} still moved after {MAX_UNBOUNDED_UPDATES} updates (hopfield-layers would loop on)"
                    ),
                ));
            }
        }
        Ok((grecs.iter().map(|g| g.updates).collect(), grecs.iter().map(|g| g.converged == 1).collect()))
    }

    /// Record the forward pass of `n` sequences whose (stored, state,
    /// projection) inputs are the device regions `inputs`, into `encoder`.
    /// With `profile`, each phase is submitted, waited for and timed (the
    /// out_proj is timed by the caller, with its readback).
    pub(crate) fn record(
        &self,
        rec: &mut Recorder<'_>,
        encoder: &mut wgpu::CommandEncoder,
        n: usize,
        inputs: [Operand<'_>; 3],
        mask: Option<&Mask>,
        mut profile: Option<&mut PhaseTimes>,
    ) -> Result<Recorded> {
        let ctx = self.ctx;
        let [y0, r0, p0] = inputs;
        let mut clock = Instant::now();
        use wgpu::BufferUsages as U;
        let rw = U::STORAGE | U::COPY_SRC | U::COPY_DST;
        let heads = self.heads;
        // Shapes along each path, checked before anything is recorded.
        let out_of = |p: &PathAt, f: usize, what: &str| -> Result<usize> {
            let mut cols = f;
            for l in &p.linears {
                if l.inp != cols {
                    return Err(Error::ShapeMismatch {
                        what: format!("{what} features vs the projection's input features"),
                        expected: l.inp,
                        got: cols,
                    });
                }
                cols = l.out;
            }
            Ok(cols)
        };
        let head_dim = |p: &PathAt, cols: usize, what: &str| -> Result<usize> {
            if !p.split {
                return Ok(cols);
            }
            if !cols.is_multiple_of(heads) {
                return Err(Error::ShapeMismatch {
                    what: format!("{what} features split across {heads} heads (a multiple of the heads)"),
                    expected: cols.div_ceil(heads) * heads,
                    got: cols,
                });
            }
            Ok(cols / heads)
        };
        let qw = out_of(&self.query, r0.cols, "state pattern")?;
        let kw = out_of(&self.key, y0.cols, "stored pattern")?;
        let vw = out_of(&self.value, p0.cols, "pattern projection")?;
        let (hq, hk, dv) = (
            head_dim(&self.query, qw, "state pattern")?,
            head_dim(&self.key, kw, "stored pattern")?,
            head_dim(&self.value, vw, "pattern projection")?,
        );
        if hq != hk {
            return Err(Error::ShapeMismatch {
                what: "query head dimension vs key head dimension".into(),
                expected: hk,
                got: hq,
            });
        }
        let d = hq;
        let z_cols = heads * dv;
        if let Some(o) = &self.out {
            if o.inp != z_cols {
                return Err(Error::ShapeMismatch {
                    what: "concatenated head outputs vs out_proj input features".into(),
                    expected: o.inp,
                    got: z_cols,
                });
            }
        }
        let (l_rows, s_rows) = (r0.rows, y0.rows);
        let out_cols = self.out.map_or(z_cols, |o| o.out);

        let (q, k, v, scaled_keys, beta_one);
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            let stage = |rec: &mut Recorder<'_>,
                         pass: &mut wgpu::ComputePass<'_>,
                         x: Operand<'_>,
                         norm: Option<NormAt>,
                         path: &PathAt|
             -> Result<(wgpu::Buffer, usize, usize, usize)> {
                // (buffer, offset, per-sequence floats, row width) of the path's output.
                let rows = x.stored_rows(n);
                let mut cur: (wgpu::Buffer, usize, usize) = (x.buffer.clone(), x.off, x.cols);
                if let Some(nm) = norm {
                    let y = rec.buffer((rows * x.cols * 4) as u64, rw)?;
                    let affine = nm.affine.map(|off| AffineAt { buffer: &self.buffer, off });
                    linalg::encode_layer_norm(
                        rec,
                        pass,
                        (&cur.0, At::new(cur.1, x.cols)),
                        (&y, At::new(0, x.cols)),
                        rows,
                        x.cols,
                        nm.eps,
                        affine,
                    )?;
                    cur = (y, 0, x.cols);
                }
                for l in &path.linears {
                    let y = rec.buffer((rows * l.out * 4) as u64, rw)?;
                    let e = MatmulEntry {
                        m: rows,
                        n: l.out,
                        k: l.inp,
                        a: At::new(cur.1, cur.2),
                        b: At::new(l.w, l.inp),
                        c: At::new(0, l.out),
                        bias_off: l.b.unwrap_or(0),
                        alpha: 1.0,
                    };
                    let op = Matmul {
                        a: &cur.0,
                        b: &self.buffer,
                        c: &y,
                        bias: l.b.map(|_| &self.buffer),
                        layout: BLayout::Rows,
                        relu: false,
                    };
                    linalg::encode_matmul(rec, pass, &op, &[e])?;
                    cur = (y, 0, l.out);
                }
                let seq = if x.seq == 0 { 0 } else { x.rows * cur.2 };
                Ok((cur.0, cur.1, seq, cur.2))
            };
            let mut qs = stage(rec, &mut pass, r0, self.norm_state, &self.query)?;
            let mut ks = stage(rec, &mut pass, y0, self.norm_stored, &self.key)?;
            let vs = stage(rec, &mut pass, p0, self.norm_projection, &self.value)?;
            // Hopfield-space LayerNorm of each head of q and k.
            if let Some(nm) = self.hopfield_norm {
                for (st, op, path_split) in [(&mut qs, r0, self.query.split), (&mut ks, y0, self.key.split)] {
                    let rows = op.stored_rows(n) * if path_split { heads } else { 1 };
                    let y = rec.buffer((rows * d * 4) as u64, rw)?;
                    let affine = nm.affine.map(|off| AffineAt { buffer: &self.buffer, off });
                    // A split row of H hd floats is H rows of hd: contiguous heads.
                    let stride_in = if path_split { d } else { st.3 };
                    linalg::encode_layer_norm(
                        rec,
                        &mut pass,
                        (&st.0, At::new(st.1, stride_in)),
                        (&y, At::new(0, stride_in)),
                        rows,
                        d,
                        nm.eps,
                        affine,
                    )?;
                    *st = (y, 0, st.2, st.3);
                }
            }
            // beta.
            let mut query_split = self.query.split;
            let (sk, one) = match &self.scaling {
                PerHead::All(_) => (None, false),
                PerHead::Each(betas) if d.is_multiple_of(heads) => {
                    // Feature i of every head's keys times beta[i mod H].
                    let vector: Vec<f32> = (0..ks.3).map(|j| betas[(j % d) % heads] as f32).collect();
                    let vb = rec.table(&vector.iter().map(|v| v.to_bits()).collect::<Vec<u32>>())?;
                    let rows = y0.stored_rows(n);
                    let y = rec.buffer((rows * ks.3 * 4) as u64, rw)?;
                    linalg::encode_map(
                        rec,
                        &mut pass,
                        MapOp::Mul,
                        (&ks.0, At::new(ks.1, ks.3)),
                        Some((&vb, At::new(0, 0))),
                        (&y, At::new(0, ks.3)),
                        rows,
                        ks.3,
                    )?;
                    (Some(y), true)
                }
                PerHead::Each(betas) => {
                    // Only the first step exists: query feature j = h hd + i
                    // of the concatenated heads times beta[j mod H], each
                    // head into its own columns.
                    let rows = r0.stored_rows(n);
                    let y = rec.buffer((rows * heads * d * 4) as u64, rw)?;
                    for h in 0..heads {
                        let vector: Vec<u32> = (0..d).map(|i| (betas[(h * d + i) % heads] as f32).to_bits()).collect();
                        let vb = rec.table(&vector)?;
                        let src_off = qs.1 + if self.query.split { h * d } else { 0 };
                        linalg::encode_map(
                            rec,
                            &mut pass,
                            MapOp::Mul,
                            (&qs.0, At::new(src_off, qs.3)),
                            Some((&vb, At::new(0, 0))),
                            (&y, At::new(h * d, heads * d)),
                            rows,
                            d,
                        )?;
                    }
                    let seq = if r0.seq == 0 { 0 } else { r0.rows * heads * d };
                    qs = (y, 0, seq, heads * d);
                    query_split = true;
                    (None, true)
                }
            };
            q = (qs, query_split);
            k = ks;
            v = vs;
            scaled_keys = sk;
            beta_one = one;
        }
        if let Some(t) = profile.as_deref_mut() {
            rec.flush();
            let e = std::mem::replace(encoder, ctx.device().create_command_encoder(&Default::default()));
            ctx.submit_and_read(e, &[])?;
            t.projections = clock.elapsed();
            clock = Instant::now();
        }

        // The retrieval: one problem per (sequence, head), group = head.
        let ((qb, qoff, qseq, qrow), qsplit) = (&q.0, q.1);
        let (kb, koff, kseq, krow) = (&k.0, k.1, k.2, k.3);
        let (vb, voff, vseq, vrow) = (&v.0, v.1, v.2, v.3);
        let mut keep: Vec<u32> = Vec::new();
        let mut kept: Vec<usize> = Vec::new();
        if let Some(m) = mask {
            for row in m.masked.chunks(m.s) {
                let mut rank = 0u32;
                for &x in row {
                    keep.push(if x { NONE } else { rank });
                    rank += u32::from(!x);
                }
                kept.push(rank as usize);
            }
        }
        let beta = |h: usize| -> f32 {
            if beta_one {
                1.0
            } else {
                match &self.scaling {
                    PerHead::All(b) => *b as f32,
                    PerHead::Each(b) => b[h] as f32,
                }
            }
        };
        let mut specs = Vec::with_capacity(n * heads);
        for s in 0..n {
            for h in 0..heads {
                let head = |split: bool, width: usize| if split { h * width } else { 0 };
                specs.push(ProblemSpec {
                    rows: l_rows,
                    m: s_rows,
                    zero: self.zero,
                    keep: mask.map(|m| (s * m.s, kept.get(s).copied().unwrap_or(0))),
                    queries: At::new(qoff + s * qseq + head(qsplit, d), *qrow),
                    // Scored keys scaled per feature have the keys' layout from 0.
                    keys: At::new(
                        if scaled_keys.is_some() { 0 } else { koff } + s * kseq + head(self.key.split, d),
                        krow,
                    ),
                    update: At::new(koff + s * kseq + head(self.key.split, d), krow),
                    values: At::new(voff + s * vseq + head(self.value.split, dv), vrow),
                    out: At::new(s * l_rows * z_cols + h * dv, z_cols),
                    beta: beta(h),
                    group: h,
                });
            }
        }
        let groups: Vec<BatchGroup> = (0..heads)
            .map(|h| BatchGroup {
                max_updates: self.max_updates[h].unwrap_or(MAX_UNBOUNDED_UPDATES) as u32,
                eps: self.eps[h] as f32,
            })
            .collect();
        let plan = Plan::new(ctx, &self.config.method, BatchSpace::Keys, self.stop, d, dv, &specs, &groups, keep)?;
        let z = rec.buffer((n * l_rows * z_cols * 4) as u64, rw)?;
        let bufs = plan.buffers(rec)?;
        let scored = scaled_keys.as_ref().unwrap_or(kb);
        let inputs = DeviceInputs { queries: qb, keys: scored, update: kb, values: vb, out: &z };
        plan.record(ctx, rec, encoder, &bufs, &inputs)?;
        if let Some(t) = profile.as_deref_mut() {
            rec.flush();
            let e = std::mem::replace(encoder, ctx.device().create_command_encoder(&Default::default()));
            ctx.submit_and_read(e, &[])?;
            t.retrieval = clock.elapsed();
            clock = Instant::now();
        }

        // out_proj.
        let result = match &self.out {
            None => z.clone(),
            Some(o) => {
                let y = rec.buffer((n * l_rows * o.out * 4) as u64, rw)?;
                let mut pass = encoder.begin_compute_pass(&Default::default());
                let e = MatmulEntry {
                    m: n * l_rows,
                    n: o.out,
                    k: o.inp,
                    a: At::new(0, o.inp),
                    b: At::new(o.w, o.inp),
                    c: At::new(0, o.out),
                    bias_off: o.b.unwrap_or(0),
                    alpha: 1.0,
                };
                let op = Matmul {
                    a: &z,
                    b: &self.buffer,
                    c: &y,
                    bias: o.b.map(|_| &self.buffer),
                    layout: BLayout::Rows,
                    relu: false,
                };
                linalg::encode_matmul(rec, &mut pass, &op, &[e])?;
                drop(pass);
                y
            }
        };
        if let Some(t) = profile {
            // The out_proj is recorded: its time goes with the readback's.
            t.rest = clock.elapsed();
        }
        Ok(Recorded { out: result, rows: l_rows, cols: out_cols, groups: bufs.groups.clone() })
    }
}

/// A recorded forward pass: where its output will be, `[n, rows, cols]`
/// from offset 0, and its per-head records.
pub(crate) struct Recorded {
    pub out: wgpu::Buffer,
    pub rows: usize,
    pub cols: usize,
    pub groups: wgpu::Buffer,
}

macro_rules! typed_layer {
    ($name:ident, $class:expr, $doc:literal) => {
        #[doc = $doc]
        pub struct $name<'c>(Layer<'c>);

        impl<'c> $name<'c> {
            /// Check the config (its class must be this one) and weights, and upload the weights.
            ///
            /// # Errors
            /// As [`Layer::new`], and a config of another class.
            pub fn new(ctx: &'c Context, config: &LayerConfig, weights: &LayerWeights) -> Result<Self> {
                if config.class != $class {
                    return Err(Error::LayerConfig {
                        arg: "class".into(),
                        why: format!("{} is not {}", config.class.name(), $class.name()),
                    });
                }
                Layer::new(ctx, config, weights).map($name)
            }

            /// The untyped layer.
            pub fn layer(&self) -> &Layer<'c> {
                &self.0
            }
        }
    };
}

typed_layer!(
    Hopfield,
    LayerClass::Hopfield,
    "`hflayers.Hopfield` on the GPU: stored, state and pattern-projection inputs."
);
typed_layer!(
    HopfieldPooling,
    LayerClass::HopfieldPooling,
    "`hflayers.HopfieldPooling` on the GPU: learned state patterns (`quantity` queries) pool the stored patterns."
);
typed_layer!(
    HopfieldLayer,
    LayerClass::HopfieldLayer,
    "`hflayers.HopfieldLayer` on the GPU: learned stored patterns (and targets) answer the state patterns."
);

impl Hopfield<'_> {
    /// The forward pass: `stored` `[N, S, F]`, `state` `[N, L, F]`,
    /// `projection` (default `stored`), optional key-padding mask `[N, S]`.
    ///
    /// # Errors
    /// As [`Layer::forward`].
    pub fn forward(
        &self,
        stored: &Sequences,
        state: &Sequences,
        projection: Option<&Sequences>,
        mask: Option<&Mask>,
    ) -> Result<LayerOutput> {
        self.0.forward(&LayerInputs { stored: Some(stored), state: Some(state), projection, mask })
    }
}

impl HopfieldPooling<'_> {
    /// The forward pass: `stored` `[N, S, F]` pooled by the learned state
    /// patterns, `projection` (default `stored`), optional mask `[N, S]`.
    /// Returns `[N, quantity, out]`.
    ///
    /// # Errors
    /// As [`Layer::forward`].
    pub fn forward(
        &self,
        stored: &Sequences,
        projection: Option<&Sequences>,
        mask: Option<&Mask>,
    ) -> Result<LayerOutput> {
        self.0.forward(&LayerInputs { stored: Some(stored), state: None, projection, mask })
    }
}

impl HopfieldLayer<'_> {
    /// The forward pass: `state` `[N, L, F]` against the learned stored
    /// patterns, optional mask `[N, quantity]`.
    ///
    /// # Errors
    /// As [`Layer::forward`].
    pub fn forward(&self, state: &Sequences, mask: Option<&Mask>) -> Result<LayerOutput> {
        self.0.forward(&LayerInputs { stored: None, state: Some(state), projection: None, mask })
    }
}
