//! Host side of `shaders/dense.wgsl`, `shaders/dense_merge.wgsl` and
//! `shaders/dense_naive.wgsl`: uniform layouts, the split plan, and functions
//! that record dispatches into a compute pass the caller owns (encode, don't
//! submit: the caller batches every step into one submission).

use bytemuck::{Pod, Zeroable};

use super::update::QueryInfo;
use super::{entire, grid, split_rows, Kernel, Recorder, MAX_GROUPS};
use crate::bank::{MemoryBank, Storage};
use crate::config::{ks4, DecodeKernel, DecodeTile, DenseKernel, DenseTile, DeviceCaps, KernelConfig};
use crate::context::Context;
use crate::error::{Error, Resource, Result};
use crate::shaders::Shader;

/// Tile shape of the legacy kernels `dense_legacy.wgsl` and
/// `dense_decode_legacy.wgsl`, handed to both as override constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LegacyTile {
    /// Queries per workgroup of dense_legacy.wgsl (`BQ`).
    pub bq: usize,
    /// Memories per tile (`BM`).
    pub bm: usize,
    /// Dimensions staged per barrier (`DK`).
    pub dk: usize,
    /// Output columns per workgroup (`DVB`).
    pub dvb: usize,
}

impl LegacyTile {
    /// The shape the legacy kernels' thread layout is written for: 64
    /// threads as 4 groups of 4 queries by 16 lanes of 4 memories (or columns).
    pub(crate) const DEFAULT: LegacyTile = LegacyTile { bq: 16, bm: 64, dk: 64, dvb: 64 };

    /// The override constants of dense_legacy.wgsl.
    pub(crate) fn constants(&self) -> [(&'static str, f64); 4] {
        [("BQ", self.bq as f64), ("BM", self.bm as f64), ("DK", self.dk as f64), ("DVB", self.dvb as f64)]
    }

    /// The override constants of dense_decode_legacy.wgsl.
    pub(crate) fn decode_constants(&self) -> [(&'static str, f64); 2] {
        [("BM", self.bm as f64), ("DK", self.dk as f64)]
    }

    /// Workgroup memory dense_legacy.wgsl declares for this shape: qs + kv + ps + alpha.
    pub(crate) fn workgroup_bytes(&self) -> u64 {
        let vec4 = 16;
        (self.dk * self.bq / 4 * vec4 + self.dk * (self.bm + 1) * 4 + self.bm * self.bq / 4 * vec4 + self.bq / 4 * vec4)
            as u64
    }
}

/// Dimensions a kernel stages per barrier for a bank of dimension `d`: the
/// configured `dims`, or fewer for small d (a power of two of at least 4),
/// so that d = 3 does not load 32 zeros per row.
pub(crate) fn chunk_dims(dims: u32, d: usize) -> u32 {
    let need = (d.next_multiple_of(4) as u32).next_power_of_two().max(4);
    dims.min(need)
}

/// The kernel pass 1 runs for one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pass1 {
    /// dense_legacy.wgsl, 16 queries per workgroup.
    LegacyTiled,
    /// dense_decode_legacy.wgsl, one workgroup per query and split (L <= 4).
    LegacyDecode,
    /// dense.wgsl with this tile.
    Tiled(DenseTile),
    /// dense_decode.wgsl with this tile, serving `lq` (4, 8 or 16) queries.
    Decode(DecodeTile, u32),
}

impl Pass1 {
    /// The kernel for `l` queries against `bank` under `cfg`: the few-query
    /// kernel up to the most queries it serves, else the tiled one. A bank
    /// whose bindings end mid-vec4 (a caller's buffer) runs the legacy kernels.
    pub(crate) fn choose(cfg: &KernelConfig, bank: &MemoryBank, l: usize) -> Pass1 {
        let vec4 = bank.vec4_bindable();
        let decode_max = match cfg.decode {
            DecodeKernel::Tiled(t) if vec4 => t.max_queries as usize,
            DecodeKernel::Tiled(_) | DecodeKernel::Legacy => DECODE_MAX_L,
        };
        if l <= decode_max {
            return match cfg.decode {
                DecodeKernel::Tiled(t) if vec4 => {
                    let lq = [4, 8, 16].into_iter().find(|&q| q >= l as u32).unwrap_or(16);
                    Pass1::Decode(t, lq)
                }
                DecodeKernel::Tiled(_) | DecodeKernel::Legacy => Pass1::LegacyDecode,
            };
        }
        match cfg.dense {
            DenseKernel::Tiled(t) if vec4 => Pass1::Tiled(t),
            DenseKernel::Tiled(_) | DenseKernel::Legacy => Pass1::LegacyTiled,
        }
    }

    /// Whether this is one of the legacy kernels (f32 only).
    pub(crate) fn is_legacy(&self) -> bool {
        matches!(self, Pass1::LegacyTiled | Pass1::LegacyDecode)
    }

    /// Queries per workgroup along x.
    pub(crate) fn queries_per_group(&self) -> usize {
        match self {
            Pass1::LegacyTiled => LegacyTile::DEFAULT.bq,
            Pass1::LegacyDecode => 1,
            Pass1::Tiled(t) => t.queries as usize,
            Pass1::Decode(_, lq) => *lq as usize,
        }
    }

    /// Memories per tile (splits are multiples of it).
    pub(crate) fn tile_mems(&self) -> usize {
        match self {
            Pass1::LegacyTiled | Pass1::LegacyDecode => LegacyTile::DEFAULT.bm,
            Pass1::Tiled(t) => t.tile_mems() as usize,
            Pass1::Decode(t, _) => t.threads as usize,
        }
    }

    /// Loop iterations of the busiest invocation: (per tile, once per split),
    /// each loop counted with one more for its exit, every scalar load path
    /// counted as taken (d or dv not a multiple of 4), unrolled or not.
    fn iterations(&self, d: usize, dv: usize) -> (usize, usize) {
        let log2 = |x: usize| (usize::BITS - x.leading_zeros()) as usize;
        match *self {
            Pass1::LegacyDecode => {
                // dense_decode_legacy.wgsl: per chunk the key load (65), the
                // dot product (65) and the chunk loop (1); the softmax
                // (2 x 65); per column block the weighted sum (65) and its loop (1).
                let LegacyTile { dk, dvb, .. } = LegacyTile::DEFAULT;
                (d.div_ceil(dk) * 131 + 2 * 65 + dv.div_ceil(dvb) * 66 + 1, 0)
            }
            Pass1::LegacyTiled => {
                // dense_legacy.wgsl: per 64-dim chunk the key load (65), query
                // load (17), dot products (65) and the chunk loop (1); the
                // softmax (2 x 65) and the tile loop (1); per block of 64
                // columns the value load (65), the weighted sum (65), the
                // block loop (1) and the column reads and writes (2 x 4 x 5).
                let LegacyTile { dk, dvb, .. } = LegacyTile::DEFAULT;
                (d.div_ceil(dk) * (65 + 17 + 65 + 1) + 2 * 65 + 1 + dv.div_ceil(dvb) * (65 + 65 + 1 + 40), 0)
            }
            Pass1::Tiled(t) => {
                let (wg, bq, rm, rc) = (t.threads as usize, t.queries as usize, t.mems as usize, t.col4s as usize);
                let (tm, bm, dvb4) = (t.lanes() as usize, t.tile_mems() as usize, t.block_col4s() as usize);
                let dk4 = chunk_dims(t.dims, d) as usize / 4;
                let chunks = d.div_ceil(4 * dk4);
                let blocks = dv.div_ceil(4).div_ceil(dvb4);
                let (kl, ql, vl) = ((bm * dk4).div_ceil(wg), (bq * dk4).div_ceil(wg), (bm * dvb4).div_ceil(wg));
                // Per chunk: fetch (kl loads of 5) and store, query staging,
                // the dot products, the chunk loop.
                let chunk = (kl + 1) * 6 + (kl + 1) + (ql + 1) * 6 + dk4 * (rm + 1) + 1 + 1;
                // The softmax: four loops over RM, a row reduction.
                let softmax = 4 * (rm + 1) + tm + 1 + log2(tm);
                // Per column block: value loads, reading, rescaling, p V,
                // writing the accumulators, the block loop.
                let block = (vl + 1) * 6 + 2 * (4 * (rc + 1) * 5 + 5) + 4 * (rc + 1) + 5 + bm * (rc + 1) + 1 + 1;
                let per_tile = chunks * chunk + softmax + blocks * block + 1;
                (per_tile, (ql + 1) * 6 + 2 * (tm + 1) + 5 + 16)
            }
            Pass1::Decode(t, lq) => {
                let (wg, lq) = (t.threads as usize, lq as usize);
                let lq4 = lq / 4;
                let dk4 = chunk_dims(t.dims, d) as usize / 4;
                let chunks = d.div_ceil(4 * dk4);
                let dv4 = dv.div_ceil(4);
                let cw = dv4.min(wg);
                let (jl, blocks) = (wg / cw, dv4.div_ceil(cw));
                let chunk = ((lq * dk4).div_ceil(wg) + 1) * 6 + (dk4 + 1) * 6 + dk4 * (lq4 + 1) + 1 + 1;
                // The tile max, either path: a tree of log2(wg) levels.
                let reduce = (lq4 + 1) * (log2(wg) + wg / 4 + 3);
                let softmax = 2 * (lq4 + 1) + reduce;
                let block = 2 * (lq * 5 + lq + 1) + (lq + 1) + (wg / jl + 1) * (lq4 + 1 + 5) + 1;
                let per_tile = chunks * chunk + softmax + blocks * block + 1;
                (per_tile, 3 * reduce + (lq + 1) * (jl + 6) + lq4 + 8)
            }
        }
    }

    /// The module and override constants for a bank of dimensions `d`,
    /// `dv` (f16 storage if `f16`) on a device with `caps`.
    pub(crate) fn module(
        &self,
        caps: &DeviceCaps,
        d: usize,
        dv: usize,
        f16: bool,
        fixed_dims: bool,
    ) -> Result<(Shader, Vec<(&'static str, f64)>)> {
        let fixed = |x: usize| if fixed_dims { x as f64 } else { 0.0 };
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        // Padded rows against bank conflicts, except on CPU devices.
        let pad = !caps.is_cpu();
        Ok(match *self {
            Pass1::LegacyTiled => (Shader::DenseLegacy, LegacyTile::DEFAULT.constants().to_vec()),
            Pass1::LegacyDecode => (Shader::DenseDecodeLegacy, LegacyTile::DEFAULT.decode_constants().to_vec()),
            Pass1::Tiled(t) => {
                let dk = chunk_dims(t.dims, d);
                let bm = t.tile_mems();
                let kv = (bm * ks4(dk, pad)).max(bm * t.block_col4s());
                let constants = vec![
                    ("WG", f64::from(t.threads)),
                    ("BQ", f64::from(t.queries)),
                    ("RM", f64::from(t.mems)),
                    ("RC", f64::from(t.col4s)),
                    ("DK", f64::from(dk)),
                    ("SUBGROUP", flag(t.subgroups)),
                    ("PREFETCH", flag(t.prefetch)),
                    ("D", fixed(d)),
                    ("DV", fixed(dv)),
                    ("KALIGN", flag(d.is_multiple_of(4))),
                    ("VALIGN", flag(dv.is_multiple_of(4))),
                    ("KV", f64::from(kv)),
                    ("PAD", flag(pad)),
                ];
                (variant(Shader::Dense, t.subgroups, f16)?, constants)
            }
            Pass1::Decode(t, lq) => {
                let constants = vec![
                    ("WG", f64::from(t.threads)),
                    ("LQ", f64::from(lq)),
                    ("DK", f64::from(chunk_dims(t.dims, d))),
                    ("SUBGROUP", flag(t.subgroups)),
                    ("SGS", f64::from(caps.subgroup_min.clamp(4, t.threads))),
                    ("PAD", flag(pad)),
                    ("D", fixed(d)),
                    ("DV", fixed(dv)),
                    ("KALIGN", flag(d.is_multiple_of(4))),
                    ("VALIGN", flag(dv.is_multiple_of(4))),
                ];
                (variant(Shader::DenseDecode, t.subgroups, f16)?, constants)
            }
        })
    }

    /// The compiled kernel.
    fn kernel(&self, ctx: &Context, d: usize, dv: usize, f16: bool, fixed_dims: bool) -> Result<Kernel> {
        let (shader, constants) = self.module(ctx.caps(), d, dv, f16, fixed_dims)?;
        Kernel::new(ctx, shader, "main", &constants)
    }
}

/// The module of `base` with subgroups and f16 storage as asked.
pub(crate) fn variant(base: Shader, subgroups: bool, f16: bool) -> Result<Shader> {
    base.with(subgroups, f16)
        .ok_or_else(|| Error::internal(format!("{} has no variant (subgroups {subgroups}, f16 {f16})", base.name())))
}

/// Keep in sync with `Params` in shaders/dense.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct DenseParams {
    pub l: u32,
    pub d: u32,
    pub dv: u32,
    pub seg_rows: u32,
    pub seg_row0: u32,
    pub split_rows: u32,
    pub split0: u32,
    pub n_splits: u32,
    pub beta: f32,
    pub scores_only: u32,
    pub _pad: [u32; 2],
}

/// Keep in sync with `Params` in shaders/dense_merge.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct MergeParams {
    pub l: u32,
    pub dv: u32,
    pub n_splits: u32,
    pub mode: u32,
    pub beta: f32,
    pub eps: f32,
    pub groups_x: u32,
    pub _pad: u32,
}

/// Keep in sync with `Params` in shaders/dense_naive.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct NaiveParams {
    pub l: u32,
    pub d: u32,
    pub dv: u32,
    pub m0: u32,
    pub m1: u32,
    pub first: u32,
    pub last: u32,
    pub beta: f32,
}

/// What `mode` the merge pass runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MergeMode {
    /// Write z to the output.
    Retrieve = 0,
    /// Replace the state by z, unless converged; count moving queries.
    Step = 1,
    /// Energy of the current state only.
    Energy = 2,
}

/// Most queries for which pass 1 uses dense_decode_legacy.wgsl (one
/// workgroup per query) instead of the 16-query tiles of dense_legacy.wgsl.
pub(crate) const DECODE_MAX_L: usize = 4;

/// How the memories are cut into splits, each the work of one workgroup
/// column, never straddling a segment, and which kernels run the passes.
#[derive(Clone, Debug)]
pub(crate) struct SplitPlan {
    /// Memories per split (a multiple of the pass-1 tile).
    pub split_rows: usize,
    /// Per segment: (index of its first split, number of splits).
    pub per_segment: Vec<(usize, usize)>,
    /// Splits in all.
    pub n_splits: usize,
    /// The pass-1 kernel.
    pub pass1: Pass1,
    /// Pass 2 runs dense_merge_legacy.wgsl (the legacy configuration).
    pub legacy_merge: bool,
    /// d and dv are override constants of pass 1.
    pub fixed_dims: bool,
}

impl SplitPlan {
    /// Enough splits that `l` queries keep the device busy: a few queries
    /// against a million memories must still fill a GPU (flash-decoding).
    pub(crate) fn new(ctx: &Context, cfg: &KernelConfig, bank: &MemoryBank, l: usize) -> Result<SplitPlan> {
        let pass1 = Pass1::choose(cfg, bank, l);
        let work_groups = l.div_ceil(pass1.queries_per_group());
        let rows = split_rows(ctx, cfg.split_target, bank.len(), work_groups, pass1.tile_mems());
        Self::with_rows(ctx, cfg, bank, rows, pass1)
    }

    /// The fewest splits the device allows (used when the partial buffers
    /// would not fit otherwise).
    pub(crate) fn minimal(ctx: &Context, cfg: &KernelConfig, bank: &MemoryBank, l: usize) -> Result<SplitPlan> {
        let pass1 = Pass1::choose(cfg, bank, l);
        let largest = bank.segments.iter().map(|s| s.rows).max().unwrap_or(1);
        let bm = pass1.tile_mems();
        Self::with_rows(ctx, cfg, bank, largest.div_ceil(bm) * bm, pass1)
    }

    /// The plan for `l` queries whose partial results fit a storage
    /// binding: [`SplitPlan::new`], else [`SplitPlan::minimal`], else a
    /// [`Error::DeviceLimit`].
    pub(crate) fn fitting(ctx: &Context, cfg: &KernelConfig, bank: &MemoryBank, l: usize) -> Result<SplitPlan> {
        let fits = |plan: &SplitPlan| {
            let (o, s) = Partials::bytes(l, bank.value_dim(), plan);
            o.max(s) <= ctx.max_binding()
        };
        let plan = SplitPlan::new(ctx, cfg, bank, l)?;
        if fits(&plan) {
            return Ok(plan);
        }
        let plan = SplitPlan::minimal(ctx, cfg, bank, l)?;
        if fits(&plan) {
            return Ok(plan);
        }
        Err(Error::limit(
            "the dense partial results of this batch",
            Resource::BindingBytes,
            Partials::bytes(l, bank.value_dim(), &plan).0,
            ctx.max_binding(),
        ))
    }

    fn with_rows(
        ctx: &Context,
        cfg: &KernelConfig,
        bank: &MemoryBank,
        mut split_rows: usize,
        pass1: Pass1,
    ) -> Result<SplitPlan> {
        if bank.storage() == Storage::F16 && pass1.is_legacy() {
            return Err(Error::unsupported(
                "storage",
                Some("dense"),
                "f16 storage runs on the kernels shaped for GPUs, not the legacy configuration",
            ));
        }
        let bm = pass1.tile_mems();
        if let Some(budget) = ctx.loop_budget() {
            let (per_tile, fixed) = pass1.iterations(bank.dim(), bank.value_dim());
            let tiles = budget.saturating_sub(fixed) / per_tile;
            if tiles == 0 {
                return Err(Error::limit(
                    format!("dense pass 1 at d = {}, dv = {}", bank.dim(), bank.value_dim()),
                    Resource::LoopIterations,
                    per_tile + fixed,
                    budget as u64,
                ));
            }
            split_rows = split_rows.min(tiles * bm);
        }
        // One dispatch dimension holds a segment's splits.
        let largest = bank.segments.iter().map(|s| s.rows).max().unwrap_or(1);
        split_rows = split_rows.max(largest.div_ceil(MAX_GROUPS).div_ceil(bm) * bm);
        let (per_segment, n_splits) = splits_per_segment(bank, split_rows);
        Ok(SplitPlan {
            split_rows,
            per_segment,
            n_splits,
            pass1,
            legacy_merge: cfg.dense == DenseKernel::Legacy,
            fixed_dims: cfg.fixed_dims,
        })
    }
}

/// Cut each segment into splits of `split_rows` memories (splits never
/// straddle a segment): (index of its first split, number of splits) per
/// segment, and the splits in all.
pub(crate) fn splits_per_segment(bank: &MemoryBank, split_rows: usize) -> (Vec<(usize, usize)>, usize) {
    let mut per_segment = Vec::with_capacity(bank.segments.len());
    let mut n = 0;
    for seg in &bank.segments {
        let count = seg.rows.div_ceil(split_rows);
        per_segment.push((n, count));
        n += count;
    }
    (per_segment, n)
}

/// Scratch that one batch of queries needs.
pub(crate) struct Partials {
    pub o: wgpu::Buffer,
    pub stats: wgpu::Buffer,
}

impl Partials {
    pub(crate) fn bytes(l: usize, dv: usize, plan: &SplitPlan) -> (u64, u64) {
        ((l * plan.n_splits * dv * 4) as u64, (l * plan.n_splits * 16) as u64)
    }
}

/// Record pass 1 (dense.wgsl, or dense_decode.wgsl when the plan says so)
/// for `l` queries in `queries` against every segment of `bank`: per
/// (query, split) the running max, sum and weighted sum of values. These
/// partial results are what pass 2 merges (and what a caller merging the
/// shards of a bank would merge).
#[expect(clippy::too_many_arguments, reason = "one pass's inputs, outputs and plan; a struct would only rename them")]
pub(crate) fn encode_partial(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    bank: &MemoryBank,
    plan: &SplitPlan,
    queries: &wgpu::Buffer,
    l: usize,
    partials: &Partials,
    beta: f32,
    scores_only: bool,
) -> Result<()> {
    let (d, dv) = (bank.dim(), bank.value_dim());
    let kernel = plan.pass1.kernel(rec.ctx, d, dv, bank.storage() == Storage::F16, plan.fixed_dims)?;
    let x = l.div_ceil(plan.pass1.queries_per_group());
    for (seg, &(split0, count)) in bank.segments.iter().zip(&plan.per_segment) {
        let params = DenseParams {
            l: l as u32,
            d: d as u32,
            dv: dv as u32,
            seg_rows: seg.rows as u32,
            seg_row0: seg.row0 as u32,
            split_rows: plan.split_rows as u32,
            split0: split0 as u32,
            n_splits: plan.n_splits as u32,
            beta,
            scores_only: scores_only as u32,
            _pad: [0; 2],
        };
        let bindings = [
            (1, entire(queries)),
            (2, seg.key_binding(d)),
            (3, seg.value_binding(dv)),
            (4, entire(&partials.o)),
            (5, entire(&partials.stats)),
        ];
        rec.dispatch(pass, &kernel, &params, &bindings, (x as u32, count as u32, 1))?;
    }
    Ok(())
}

/// Record pass 2 (dense_merge.wgsl). `out` is z (Retrieve) or the state
/// (Step, Energy); `cols` is its row length.
#[expect(clippy::too_many_arguments, reason = "one pass's inputs, outputs and mode; a struct would only rename them")]
pub(crate) fn encode_merge(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    plan: &SplitPlan,
    partials: &Partials,
    out: &wgpu::Buffer,
    info: &wgpu::Buffer,
    active: &wgpu::Buffer,
    l: usize,
    cols: usize,
    mode: MergeMode,
    beta: f32,
    eps: f32,
) -> Result<()> {
    let kernel = if plan.legacy_merge {
        Kernel::new(rec.ctx, Shader::DenseMergeLegacy, "main", &[])?
    } else {
        Kernel::new(rec.ctx, Shader::DenseMerge, "main", &[("WG", 256.0)])?
    };
    let (gx, gy) = grid(l);
    let params = MergeParams {
        l: l as u32,
        dv: cols as u32,
        n_splits: plan.n_splits as u32,
        mode: mode as u32,
        beta,
        eps,
        groups_x: gx,
        _pad: 0,
    };
    let bindings = [
        (1, entire(&partials.o)),
        (2, entire(&partials.stats)),
        (3, entire(out)),
        (4, entire(info)),
        (5, entire(active)),
    ];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

/// Record dense retrieval of `l` queries into `z` only (a method that ends
/// up dense, such as top-K with K >= M): both passes, with the per-query
/// statistics going to scratch so the caller's records are untouched.
#[expect(clippy::too_many_arguments, reason = "one retrieval's inputs and output; a struct would only rename them")]
pub(crate) fn encode_z(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    cfg: &KernelConfig,
    bank: &MemoryBank,
    queries: &wgpu::Buffer,
    l: usize,
    z: &wgpu::Buffer,
    beta: f32,
) -> Result<()> {
    use wgpu::BufferUsages as U;
    let plan = SplitPlan::fitting(rec.ctx, cfg, bank, l)?;
    let (o, s) = Partials::bytes(l, bank.value_dim(), &plan);
    let partials = Partials { o: rec.buffer(o, U::STORAGE)?, stats: rec.buffer(s, U::STORAGE)? };
    let info = rec.buffer((l * std::mem::size_of::<QueryInfo>()) as u64, U::STORAGE)?;
    let active = rec.buffer(16, U::STORAGE)?;
    encode_partial(rec, pass, bank, &plan, queries, l, &partials, beta, false)?;
    let dv = bank.value_dim();
    encode_merge(rec, pass, &plan, &partials, z, &info, &active, l, dv, MergeMode::Retrieve, beta, 0.0)
}

/// Record the naive one-thread-per-query kernel (dense_naive.wgsl): one
/// dispatch per run of memories that keeps every invocation inside the
/// driver's loop budget. `run` holds 8 bytes per query.
#[expect(clippy::too_many_arguments, reason = "the kernel's buffers and sizes; a struct would only rename them")]
pub(crate) fn encode_naive(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    bank: &MemoryBank,
    queries: &wgpu::Buffer,
    l: usize,
    out: &wgpu::Buffer,
    run: &wgpu::Buffer,
    beta: f32,
) -> Result<()> {
    let (d, dv) = (bank.dim(), bank.value_dim());
    if bank.segments.len() != 1 || l.div_ceil(64) > MAX_GROUPS {
        return Err(Error::unsupported(
            "memories",
            Some("dense-naive"),
            format!(
                "the naive baseline kernel handles one storage binding of memories and at most {} queries",
                MAX_GROUPS * 64
            ),
        ));
    }
    let chunk = match rec.ctx.loop_budget() {
        // Per memory: the dot product and the accumulation loops, each with
        // its exit, and the memory loop; plus the two row loops.
        Some(budget) if budget > 2 * (dv + 1) + d + dv + 3 => (budget - 2 * (dv + 1)) / (d + dv + 3),
        Some(budget) => {
            return Err(Error::limit(
                format!("the naive kernel at dv = {dv}"),
                Resource::LoopIterations,
                2 * (dv + 1) + d + dv + 3,
                budget as u64,
            ))
        }
        None => bank.len(),
    };
    let seg = &bank.segments[0];
    let kernel = Kernel::new(rec.ctx, Shader::DenseNaive, "main", &[])?;
    for m0 in (0..bank.len()).step_by(chunk) {
        let m1 = (m0 + chunk).min(bank.len());
        let params = NaiveParams {
            l: l as u32,
            d: d as u32,
            dv: dv as u32,
            m0: m0 as u32,
            m1: m1 as u32,
            first: (m0 == 0) as u32,
            last: (m1 == bank.len()) as u32,
            beta,
        };
        let bindings = [
            (1, entire(queries)),
            (2, seg.key_binding(d)),
            (3, seg.value_binding(dv)),
            (4, entire(out)),
            (5, entire(run)),
        ];
        rec.dispatch(pass, &kernel, &params, &bindings, (l.div_ceil(64) as u32, 1, 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaders::{check_constants, wgsl_struct_size};

    #[test]
    fn structs_match_the_wgsl_layouts() {
        assert_eq!(wgsl_struct_size(Shader::Dense, "Params"), size_of::<DenseParams>());
        assert_eq!(wgsl_struct_size(Shader::DenseLegacy, "Params"), size_of::<DenseParams>());
        assert_eq!(wgsl_struct_size(Shader::DenseDecodeLegacy, "Params"), size_of::<DenseParams>());
        assert_eq!(wgsl_struct_size(Shader::DenseMergeLegacy, "Params"), size_of::<MergeParams>());
        assert_eq!(wgsl_struct_size(Shader::DenseDecode, "Params"), size_of::<DenseParams>());
        assert_eq!(wgsl_struct_size(Shader::DenseMerge, "Params"), size_of::<MergeParams>());
        assert_eq!(wgsl_struct_size(Shader::DenseNaive, "Params"), size_of::<NaiveParams>());
    }

    #[test]
    fn the_legacy_tile_sets_every_override() {
        let tile = LegacyTile::DEFAULT;
        check_constants(Shader::DenseLegacy, "main", &tile.constants());
        check_constants(Shader::DenseDecodeLegacy, "main", &tile.decode_constants());
        // qs 256 vec4 + kv 64 x 65 f32 + ps 256 vec4 + alpha 4 vec4, as dense_legacy.wgsl declares.
        assert_eq!(tile.workgroup_bytes(), 256 * 16 + 4160 * 4 + 256 * 16 + 4 * 16);
    }

    #[test]
    fn every_candidate_sets_every_override() {
        use crate::config::{candidates, testing::nvidia};
        let caps = nvidia();
        let all = candidates(&caps);
        let mut passes: Vec<Pass1> = Vec::new();
        for k in &all.dense {
            if let DenseKernel::Tiled(t) = k {
                passes.push(Pass1::Tiled(*t));
            }
        }
        for k in &all.decode {
            if let DecodeKernel::Tiled(t) = k {
                passes.extend([4, 8, 16].map(|lq| Pass1::Decode(*t, lq)));
            }
        }
        passes.extend([Pass1::LegacyTiled, Pass1::LegacyDecode]);
        for pass1 in passes {
            for (d, dv, f16, fixed) in [(64, 64, false, false), (3, 70, true, true), (784, 5, false, true)] {
                for caps in [&caps, &DeviceCaps { device_type: "Cpu".into(), ..caps.clone() }] {
                    let (shader, constants) = pass1.module(caps, d, dv, f16 && !pass1.is_legacy(), fixed).unwrap();
                    check_constants(shader, "main", &constants);
                }
            }
        }
        check_constants(Shader::DenseMerge, "main", &[("WG", 256.0)]);
    }

    #[test]
    fn chunks_shrink_for_small_d() {
        assert_eq!(chunk_dims(32, 1), 4);
        assert_eq!(chunk_dims(32, 3), 4);
        assert_eq!(chunk_dims(32, 5), 8);
        assert_eq!(chunk_dims(32, 64), 32);
        assert_eq!(chunk_dims(32, 784), 32);
    }
}
