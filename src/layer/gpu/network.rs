//! Hopfield networks on the GPU ([`Network`]): a [`Model`]'s blocks
//! (feed-forward maps, LayerNorms, residual connections, hopfield-layers
//! `Hopfield` modules over a bank or the hidden state, kernelized Hopfield
//! layers) recorded one after the other into one submission, with one
//! readback of the output. The reference is `Model::reference` run by
//! `cpu::network::network_forward`.
//!
//! A KHN block is a batched retrieval (`retrieve::batch`) whose queries and
//! keys are the feature maps `Phi x` and `Phi xi` (one product each) and
//! whose values are the memories themselves; its records give the KHN energy
//! `E_K(x) = 0.5 |Phi x|^2 - lse(beta, <Phi x, Phi xi>)` of each input row.

use super::{Layer, Operand, Recorded};
use crate::context::{Context, Scratch};
use crate::error::{Error, Result};
use crate::kernels::batch::{GroupRecord, RowRecord};
use crate::kernels::linalg::{self, AffineAt, At, BLayout, MapOp, Matmul, MatmulEntry};
use crate::kernels::Recorder;
use crate::layer::network::{Bank, Model, ModelBlock};
use crate::layer::Sequences;
use crate::method::Method;
use crate::retrieve::batch::{DeviceInputs, Plan, ProblemSpec};
use crate::retrieve::{BatchGroup, BatchSpace, BatchStop};

/// A bank in the network's weights buffer: offset, rows, features.
#[derive(Clone, Copy, Debug)]
struct BankAt {
    off: usize,
    rows: usize,
    cols: usize,
}

enum NetBlock<'c> {
    FeedForward { w1: usize, b1: Option<usize>, w2: usize, b2: Option<usize>, inp: usize, hidden: usize, out: usize },
    LayerNorm { eps: f32, affine: Option<usize> },
    Residual(Vec<NetBlock<'c>>),
    Hopfield { layer: Box<Layer<'c>>, bank: Option<BankAt> },
    Khn { beta: f32, phi: usize, r: usize, bank: Option<BankAt>, steps: usize },
}

/// The output of [`Network::forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkOutput {
    /// Sequences N.
    pub n: usize,
    /// Rows per sequence.
    pub rows: usize,
    /// Output features.
    pub features: usize,
    /// `[N, rows, features]`.
    pub data: Vec<f32>,
    /// Per application of a KHN block, in order: the KHN energy `E_K` of
    /// each of its input rows, `[N * rows]`.
    pub khn_energy: Vec<Vec<f32>>,
}

/// A Hopfield network on the GPU, its weights on the device.
pub struct Network<'c> {
    ctx: &'c Context,
    buffer: wgpu::Buffer,
    blocks: Vec<NetBlock<'c>>,
    input: usize,
}

fn build<'c>(ctx: &'c Context, blocks: &[ModelBlock], arena: &mut Vec<f32>) -> Result<Vec<NetBlock<'c>>> {
    let push = |arena: &mut Vec<f32>, v: &[f32]| {
        let off = arena.len();
        arena.extend_from_slice(v);
        off
    };
    let mut out = Vec::with_capacity(blocks.len());
    for b in blocks {
        out.push(match b {
            ModelBlock::FeedForward { w1, b1, w2, b2 } => NetBlock::FeedForward {
                w1: push(arena, &w1.data),
                b1: b1.as_ref().map(|t| push(arena, &t.data)),
                w2: push(arena, &w2.data),
                b2: b2.as_ref().map(|t| push(arena, &t.data)),
                inp: w1.shape[1],
                hidden: w1.shape[0],
                out: w2.shape[0],
            },
            ModelBlock::LayerNorm { eps, affine } => NetBlock::LayerNorm {
                eps: *eps as f32,
                affine: affine.as_ref().map(|(w, b)| {
                    let off = push(arena, &w.data);
                    push(arena, &b.data);
                    off
                }),
            },
            ModelBlock::Residual(inner) => NetBlock::Residual(build(ctx, inner, arena)?),
            ModelBlock::Hopfield { config, weights, memories } => NetBlock::Hopfield {
                layer: Box::new(Layer::new(ctx, config, weights)?),
                bank: match memories {
                    Bank::Hidden => None,
                    Bank::Fixed(t) => Some(BankAt { off: push(arena, &t.data), rows: t.shape[0], cols: t.shape[1] }),
                },
            },
            ModelBlock::Khn { beta, phi, memories, steps } => NetBlock::Khn {
                beta: *beta as f32,
                phi: push(arena, &phi.data),
                r: phi.shape[0],
                bank: match memories {
                    Bank::Hidden => None,
                    Bank::Fixed(t) => Some(BankAt { off: push(arena, &t.data), rows: t.shape[0], cols: t.shape[1] }),
                },
                steps: *steps,
            },
        });
    }
    Ok(out)
}

/// The hidden state between blocks: `[n, rows, cols]` from `off` of `buffer`.
#[derive(Clone)]
struct Hidden {
    buffer: wgpu::Buffer,
    off: usize,
    rows: usize,
    cols: usize,
}

/// What a recording must read back besides the output.
#[derive(Default)]
struct Reads {
    /// Per Hopfield block: its layer's index and its per-head records.
    groups: Vec<(usize, wgpu::Buffer)>,
    /// Per KHN application: its rows' records.
    khn: Vec<(wgpu::Buffer, usize)>,
}

impl<'c> Network<'c> {
    /// Upload the model's weights (and build its Hopfield layers).
    ///
    /// # Errors
    /// A Hopfield block's layer that cannot be built; a device error.
    pub fn new(ctx: &'c Context, model: &Model) -> Result<Self> {
        let mut arena = Vec::new();
        let blocks = build(ctx, &model.blocks, &mut arena)?;
        if arena.is_empty() {
            arena.push(0.0);
        }
        let buffer =
            ctx.scoped(|| ctx.upload("network weights", bytemuck::cast_slice(&arena), wgpu::BufferUsages::empty()))?;
        Ok(Network { ctx, buffer, blocks, input: model.input })
    }

    /// The network on `x`: `[N, L, input]` (N independent sequences; a
    /// Hopfield or KHN block over the hidden state attends within each).
    ///
    /// # Errors
    /// Input features other than the model's, a layer's errors, a device error.
    pub fn forward(&self, x: &Sequences) -> Result<NetworkOutput> {
        if x.features != self.input {
            return Err(Error::ShapeMismatch {
                what: "input features vs the model's input".into(),
                expected: self.input,
                got: x.features,
            });
        }
        let ctx = self.ctx;
        ctx.scoped(|| {
            let mut rec = Recorder::new(ctx, Scratch::pooled(ctx));
            let input = ctx.upload("network input", bytemuck::cast_slice(&x.data), wgpu::BufferUsages::empty())?;
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            let mut reads = Reads::default();
            let h = Hidden { buffer: input, off: 0, rows: x.rows, cols: x.features };
            let out = self.record(&mut rec, &mut encoder, &self.blocks, x.n, h, &mut reads)?;
            rec.flush();
            let len = x.n * out.rows * out.cols;
            let mut ranges = vec![(&out.buffer, (out.off * 4) as u64, (len * 4) as u64)];
            for (i, g) in &reads.groups {
                let heads = self.layer_at(*i).map_or(0, |l| l.heads);
                ranges.push((g, 0, (heads * size_of::<GroupRecord>()) as u64));
            }
            for (r, rows) in &reads.khn {
                ranges.push((r, 0, (rows * size_of::<RowRecord>()) as u64));
            }
            let bytes = ctx.submit_and_read(encoder, &ranges)?;
            let data: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[0]);
            if data.iter().any(|v| !v.is_finite()) {
                return Err(Error::internal("the network produced a non-finite output"));
            }
            for (k, (i, _)) in reads.groups.iter().enumerate() {
                let grecs: Vec<GroupRecord> = bytemuck::pod_collect_to_vec(&bytes[1 + k]);
                if let Some(layer) = self.layer_at(*i) {
                    layer.check_groups(&grecs)?;
                }
            }
            let khn_energy = (0..reads.khn.len())
                .map(|k| {
                    let recs: Vec<RowRecord> = bytemuck::pod_collect_to_vec(&bytes[1 + reads.groups.len() + k]);
                    recs.iter().map(|r| r.energy).collect()
                })
                .collect();
            Ok(NetworkOutput { n: x.n, rows: out.rows, features: out.cols, data, khn_energy })
        })
    }

    /// The `i`-th Hopfield block's layer, in recording order.
    fn layer_at(&self, i: usize) -> Option<&Layer<'c>> {
        fn walk<'a, 'c>(blocks: &'a [NetBlock<'c>], out: &mut Vec<&'a Layer<'c>>) {
            for b in blocks {
                match b {
                    NetBlock::Hopfield { layer, .. } => out.push(layer),
                    NetBlock::Residual(inner) => walk(inner, out),
                    NetBlock::FeedForward { .. } | NetBlock::LayerNorm { .. } | NetBlock::Khn { .. } => {}
                }
            }
        }
        let mut all = Vec::new();
        walk(&self.blocks, &mut all);
        all.get(i).copied()
    }

    fn record(
        &self,
        rec: &mut Recorder<'_>,
        encoder: &mut wgpu::CommandEncoder,
        blocks: &[NetBlock<'c>],
        n: usize,
        mut h: Hidden,
        reads: &mut Reads,
    ) -> Result<Hidden> {
        use wgpu::BufferUsages as U;
        let rw = U::STORAGE | U::COPY_SRC | U::COPY_DST;
        let w = &self.buffer;
        for block in blocks {
            let rows = n * h.rows;
            h = match block {
                NetBlock::FeedForward { w1, b1, w2, b2, inp, hidden, out } => {
                    if *inp != h.cols {
                        return Err(Error::internal("a feed-forward block's input features were not checked"));
                    }
                    let mid = rec.buffer((rows * hidden * 4) as u64, rw)?;
                    let y = rec.buffer((rows * out * 4) as u64, rw)?;
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    let e1 = MatmulEntry {
                        m: rows,
                        n: *hidden,
                        k: *inp,
                        a: At::new(h.off, h.cols),
                        b: At::new(*w1, *inp),
                        c: At::new(0, *hidden),
                        bias_off: b1.unwrap_or(0),
                        alpha: 1.0,
                    };
                    let op =
                        Matmul { a: &h.buffer, b: w, c: &mid, bias: b1.map(|_| w), layout: BLayout::Rows, relu: true };
                    linalg::encode_matmul(rec, &mut pass, &op, &[e1])?;
                    let e2 = MatmulEntry {
                        m: rows,
                        n: *out,
                        k: *hidden,
                        a: At::new(0, *hidden),
                        b: At::new(*w2, *hidden),
                        c: At::new(0, *out),
                        bias_off: b2.unwrap_or(0),
                        alpha: 1.0,
                    };
                    let op = Matmul { a: &mid, b: w, c: &y, bias: b2.map(|_| w), layout: BLayout::Rows, relu: false };
                    linalg::encode_matmul(rec, &mut pass, &op, &[e2])?;
                    Hidden { buffer: y, off: 0, rows: h.rows, cols: *out }
                }
                NetBlock::LayerNorm { eps, affine } => {
                    let y = rec.buffer((rows * h.cols * 4) as u64, rw)?;
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    let aff = affine.map(|off| AffineAt { buffer: w, off });
                    let (x_at, y_at) = (At::new(h.off, h.cols), At::new(0, h.cols));
                    linalg::encode_layer_norm(rec, &mut pass, (&h.buffer, x_at), (&y, y_at), rows, h.cols, *eps, aff)?;
                    Hidden { buffer: y, off: 0, rows: h.rows, cols: h.cols }
                }
                NetBlock::Residual(inner) => {
                    let g = self.record(rec, encoder, inner, n, h.clone(), reads)?;
                    if (g.rows, g.cols) != (h.rows, h.cols) {
                        return Err(Error::ShapeMismatch {
                            what: "a residual block's output vs its input (rows x features)".into(),
                            expected: h.rows * h.cols,
                            got: g.rows * g.cols,
                        });
                    }
                    let y = rec.buffer((rows * h.cols * 4) as u64, rw)?;
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    let (u, v) = ((&h.buffer, At::new(h.off, h.cols)), (&g.buffer, At::new(g.off, g.cols)));
                    linalg::encode_map(rec, &mut pass, MapOp::Add, u, Some(v), (&y, At::new(0, h.cols)), rows, h.cols)?;
                    Hidden { buffer: y, off: 0, rows: h.rows, cols: h.cols }
                }
                NetBlock::Hopfield { layer, bank } => {
                    let state =
                        Operand { buffer: &h.buffer, off: h.off, seq: h.rows * h.cols, rows: h.rows, cols: h.cols };
                    let stored = match bank {
                        Some(b) => Operand { buffer: w, off: b.off, seq: 0, rows: b.rows, cols: b.cols },
                        None => state,
                    };
                    let Recorded { out, rows: r, cols, groups } =
                        layer.record(rec, encoder, n, [stored, state, stored], None, None)?;
                    let index = reads.groups.len();
                    reads.groups.push((index, groups));
                    Hidden { buffer: out, off: 0, rows: r, cols }
                }
                NetBlock::Khn { beta, phi, r, bank, steps } => {
                    let mut cur = h.clone();
                    for _ in 0..*steps {
                        cur = self.khn(rec, encoder, n, &cur, *beta, *phi, *r, bank.as_ref(), reads)?;
                    }
                    cur
                }
            };
        }
        Ok(h)
    }

    /// One application of a KHN block to `h`.
    #[expect(clippy::too_many_arguments, reason = "the recording, the hidden state and the block's parameters")]
    fn khn(
        &self,
        rec: &mut Recorder<'_>,
        encoder: &mut wgpu::CommandEncoder,
        n: usize,
        h: &Hidden,
        beta: f32,
        phi: usize,
        r: usize,
        bank: Option<&BankAt>,
        reads: &mut Reads,
    ) -> Result<Hidden> {
        use wgpu::BufferUsages as U;
        let rw = U::STORAGE | U::COPY_SRC | U::COPY_DST;
        let (ctx, w, d) = (self.ctx, &self.buffer, h.cols);
        let rows = n * h.rows;
        let phi_x = rec.buffer((rows * r * 4) as u64, rw)?;
        let phi_b = match bank {
            Some(b) => Some(rec.buffer((b.rows * r * 4) as u64, rw)?),
            None => None,
        };
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            let map = |a_off: usize, m: usize| MatmulEntry {
                m,
                n: r,
                k: d,
                a: At::new(a_off, d),
                b: At::new(phi, d),
                c: At::new(0, r),
                bias_off: 0,
                alpha: 1.0,
            };
            let op = Matmul { a: &h.buffer, b: w, c: &phi_x, bias: None, layout: BLayout::Rows, relu: false };
            linalg::encode_matmul(rec, &mut pass, &op, &[map(h.off, rows)])?;
            if let (Some(b), Some(pb)) = (bank, &phi_b) {
                let op = Matmul { a: w, b: w, c: pb, bias: None, layout: BLayout::Rows, relu: false };
                linalg::encode_matmul(rec, &mut pass, &op, &[map(b.off, b.rows)])?;
            }
        }
        // One problem per sequence: queries Phi x, keys Phi xi, values xi.
        let specs: Vec<ProblemSpec> = (0..n)
            .map(|s| {
                let (m, keys, values) = match bank {
                    Some(b) => (b.rows, At::new(0, r), At::new(b.off, d)),
                    None => (h.rows, At::new(s * h.rows * r, r), At::new(h.off + s * h.rows * d, d)),
                };
                ProblemSpec {
                    rows: h.rows,
                    m,
                    zero: false,
                    keep: None,
                    queries: At::new(s * h.rows * r, r),
                    keys,
                    update: keys,
                    values,
                    out: At::new(s * h.rows * d, d),
                    beta,
                    group: 0,
                }
            })
            .collect();
        let groups = [BatchGroup { max_updates: 0, eps: 0.0 }];
        let plan =
            Plan::new(ctx, &Method::Dense, BatchSpace::Keys, BatchStop::Association, r, d, &specs, &groups, vec![])?;
        let z = rec.buffer((rows * d * 4) as u64, rw)?;
        let bufs = plan.buffers(rec)?;
        let keys = phi_b.as_ref().unwrap_or(&phi_x);
        let values = if bank.is_some() { w } else { &h.buffer };
        let inputs = DeviceInputs { queries: &phi_x, keys, update: keys, values, out: &z };
        plan.record(ctx, rec, encoder, &bufs, &inputs)?;
        reads.khn.push((bufs.recs.clone(), rows));
        Ok(Hidden { buffer: z, off: 0, rows: h.rows, cols: d })
    }
}
