//! Host side of `shaders/dense.wgsl`, `shaders/dense_merge.wgsl` and
//! `shaders/dense_naive.wgsl`: uniform layouts, the split plan, and functions
//! that record dispatches into a compute pass the caller owns (encode, don't
//! submit: the caller batches every step into one submission).

use bytemuck::{Pod, Zeroable};

use super::update::QueryInfo;
use super::{entire, grid, split_rows, Kernel, Recorder, MAX_GROUPS};
use crate::bank::MemoryBank;
use crate::context::Context;
use crate::error::{Error, Resource, Result};
use crate::shaders::Shader;

/// Tile shape of `dense.wgsl` and `dense_decode.wgsl`, handed to both as
/// override constants at pipeline creation (and part of the pipeline key):
/// the one place the shape is written. A tuner (issue 9) picks other shapes
/// by building other `Tile`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tile {
    /// Queries per workgroup of dense.wgsl (`BQ`).
    pub bq: usize,
    /// Memories per tile (`BM`).
    pub bm: usize,
    /// Dimensions staged per barrier (`DK`).
    pub dk: usize,
    /// Output columns per workgroup (`DVB`).
    pub dvb: usize,
}

impl Tile {
    /// The shape the kernels' thread layout is written for: 64 threads as 4
    /// groups of 4 queries by 16 lanes of 4 memories (or columns).
    pub(crate) const DEFAULT: Tile = Tile { bq: 16, bm: 64, dk: 64, dvb: 64 };

    /// The override constants of dense.wgsl.
    pub(crate) fn constants(&self) -> [(&'static str, f64); 4] {
        [("BQ", self.bq as f64), ("BM", self.bm as f64), ("DK", self.dk as f64), ("DVB", self.dvb as f64)]
    }

    /// The override constants of dense_decode.wgsl.
    pub(crate) fn decode_constants(&self) -> [(&'static str, f64); 2] {
        [("BM", self.bm as f64), ("DK", self.dk as f64)]
    }

    /// Workgroup memory dense.wgsl declares for this shape: qs + kv + ps + alpha.
    pub(crate) fn workgroup_bytes(&self) -> u64 {
        let vec4 = 16;
        (self.dk * self.bq / 4 * vec4 + self.dk * (self.bm + 1) * 4 + self.bm * self.bq / 4 * vec4 + self.bq / 4 * vec4)
            as u64
    }
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

/// Most queries for which pass 1 uses dense_decode.wgsl (one workgroup per
/// query) instead of the 16-query tiles of dense.wgsl.
pub(crate) const DECODE_MAX_L: usize = 4;

/// How the memories are cut into splits, each the work of one workgroup
/// column, never straddling a segment.
#[derive(Clone, Debug)]
pub(crate) struct SplitPlan {
    /// Memories per split (a multiple of BM).
    pub split_rows: usize,
    /// Per segment: (index of its first split, number of splits).
    pub per_segment: Vec<(usize, usize)>,
    /// Splits in all.
    pub n_splits: usize,
    /// Pass 1 runs dense_decode.wgsl (few queries) rather than dense.wgsl.
    pub decode: bool,
}

impl SplitPlan {
    /// Enough splits that `l` queries keep the device busy: a few queries
    /// against a million memories must still fill a GPU (flash-decoding).
    pub(crate) fn new(ctx: &Context, bank: &MemoryBank, l: usize) -> SplitPlan {
        let tile = Tile::DEFAULT;
        let decode = l <= DECODE_MAX_L;
        let work_groups = if decode { l } else { l.div_ceil(tile.bq) };
        Self::with_rows(ctx, bank, split_rows(ctx, bank.len(), work_groups, tile.bm), decode)
    }

    /// The fewest splits the device allows (used when the partial buffers
    /// would not fit otherwise).
    pub(crate) fn minimal(ctx: &Context, bank: &MemoryBank, l: usize) -> SplitPlan {
        let largest = bank.segments.iter().map(|s| s.rows).max().unwrap_or(1);
        Self::with_rows(ctx, bank, largest.div_ceil(Tile::DEFAULT.bm) * Tile::DEFAULT.bm, l <= DECODE_MAX_L)
    }

    /// The plan for `l` queries whose partial results fit a storage
    /// binding: [`SplitPlan::new`], else [`SplitPlan::minimal`], else a
    /// [`Error::DeviceLimit`].
    pub(crate) fn fitting(ctx: &Context, bank: &MemoryBank, l: usize) -> Result<SplitPlan> {
        let fits = |plan: &SplitPlan| {
            let (o, s) = Partials::bytes(l, bank.value_dim(), plan);
            o.max(s) <= ctx.max_binding()
        };
        let plan = SplitPlan::new(ctx, bank, l);
        if fits(&plan) {
            return Ok(plan);
        }
        let plan = SplitPlan::minimal(ctx, bank, l);
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

    fn with_rows(ctx: &Context, bank: &MemoryBank, mut split_rows: usize, decode: bool) -> SplitPlan {
        let Tile { bm, dk, dvb, .. } = Tile::DEFAULT;
        if let Some(budget) = ctx.loop_budget() {
            // Loop iterations of the busiest invocation per tile, each loop
            // counted with one more for its exit.
            let chunks = bank.dim().div_ceil(dk);
            let blocks = bank.value_dim().div_ceil(dvb);
            let per_tile = if decode {
                // dense_decode.wgsl: per chunk the key load (65), the dot
                // product (65) and the chunk loop (1); the softmax (2 x 65);
                // per column block the weighted sum (65) and its loop (1).
                chunks * 131 + 2 * 65 + blocks * 66 + 1
            } else {
                // dense.wgsl: per 64-dim chunk the key load (65), query load
                // (17), dot products (65) and the chunk loop (1); the softmax
                // (2 x 65) and the tile loop (1); per block of 64 columns the
                // value load (65), the weighted sum (65), the block loop (1)
                // and the column reads and writes (2 x 4 x 5).
                chunks * (65 + 17 + 65 + 1) + 2 * 65 + 1 + blocks * (65 + 65 + 1 + 40)
            };
            split_rows = split_rows.min((budget / per_tile).max(1) * bm);
        }
        // One dispatch dimension holds a segment's splits.
        let largest = bank.segments.iter().map(|s| s.rows).max().unwrap_or(1);
        split_rows = split_rows.max(largest.div_ceil(MAX_GROUPS).div_ceil(bm) * bm);
        let (per_segment, n_splits) = splits_per_segment(bank, split_rows);
        SplitPlan { split_rows, per_segment, n_splits, decode }
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
    let tile = Tile::DEFAULT;
    let kernel = if plan.decode {
        Kernel::new(rec.ctx, Shader::DenseDecode, "main", &tile.decode_constants())?
    } else {
        Kernel::new(rec.ctx, Shader::Dense, "main", &tile.constants())?
    };
    let (d, dv) = (bank.dim(), bank.value_dim());
    let x = if plan.decode { l } else { l.div_ceil(tile.bq) };
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
    let kernel = Kernel::new(rec.ctx, Shader::DenseMerge, "main", &[])?;
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
pub(crate) fn encode_z(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    bank: &MemoryBank,
    queries: &wgpu::Buffer,
    l: usize,
    z: &wgpu::Buffer,
    beta: f32,
) -> Result<()> {
    use wgpu::BufferUsages as U;
    let plan = SplitPlan::fitting(rec.ctx, bank, l)?;
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
        assert_eq!(wgsl_struct_size(Shader::DenseDecode, "Params"), size_of::<DenseParams>());
        assert_eq!(wgsl_struct_size(Shader::DenseMerge, "Params"), size_of::<MergeParams>());
        assert_eq!(wgsl_struct_size(Shader::DenseNaive, "Params"), size_of::<NaiveParams>());
    }

    #[test]
    fn the_tile_sets_every_override() {
        let tile = Tile::DEFAULT;
        check_constants(Shader::Dense, "main", &tile.constants());
        check_constants(Shader::DenseDecode, "main", &tile.decode_constants());
        // qs 256 vec4 + kv 64 x 65 f32 + ps 256 vec4 + alpha 4 vec4, as dense.wgsl declares.
        assert_eq!(tile.workgroup_bytes(), 256 * 16 + 4160 * 4 + 256 * 16 + 4 * 16);
    }
}
