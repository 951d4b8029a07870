//! Host side of `shaders/dense.wgsl`, `shaders/dense_merge.wgsl` and
//! `shaders/dense_naive.wgsl`: uniform layouts, the split plan, and functions
//! that record dispatches into a compute pass the caller owns (encode, don't
//! submit: the caller batches every step into one submission).

use bytemuck::{Pod, Zeroable};

use super::{bind_group, entire, uniform};
use crate::bank::MemoryBank;
use crate::context::Context;
use crate::error::{Error, Result};

/// Queries per workgroup of `dense.wgsl` (`BQ`).
pub(crate) const BQ: usize = 16;
/// Memories per tile of `dense.wgsl` (`BM`).
pub(crate) const BM: usize = 64;
/// Dimensions staged per barrier in `dense.wgsl` (`DK`).
pub(crate) const DK: usize = 64;
/// Output columns per workgroup of `dense.wgsl` (`DVB`).
pub(crate) const DVB: usize = 64;
/// Workgroup memory `dense.wgsl` declares: qs + kv + ps + alpha.
pub(crate) const TILED_WORKGROUP_BYTES: u32 = (256 * 16 + 4160 * 4 + 256 * 16 + 4 * 16) as u32;
/// Largest workgroup count along one dispatch dimension that every device accepts.
pub(crate) const MAX_GROUPS: usize = 65535;

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

/// Per-query results written by dense_merge.wgsl. Keep in sync with
/// `QueryInfo` there.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct QueryInfo {
    pub lse: f32,
    pub energy: f32,
    pub argmax: u32,
    pub steps: u32,
    pub converged: u32,
    pub delta: f32,
    pub _pad: [u32; 2],
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
        let decode = l <= DECODE_MAX_L;
        let work_groups = if decode { l } else { l.div_ceil(BQ) };
        let target = if ctx.is_cpu() {
            // lavapipe runs one workgroup per thread; more splits only add merging.
            4 * std::thread::available_parallelism().map_or(4, |n| n.get())
        } else {
            2048
        };
        let tiles = bank.len().div_ceil(BM);
        let want = target.div_ceil(work_groups).clamp(1, (tiles / 2).max(1));
        let split_rows = bank.len().div_ceil(want).div_ceil(BM) * BM;
        Self::with_rows(ctx, bank, split_rows, decode)
    }

    /// The fewest splits the device allows (used when the partial buffers
    /// would not fit otherwise).
    pub(crate) fn minimal(ctx: &Context, bank: &MemoryBank, l: usize) -> SplitPlan {
        let largest = bank.segments.iter().map(|s| s.rows).max().unwrap_or(1);
        Self::with_rows(ctx, bank, largest.div_ceil(BM) * BM, l <= DECODE_MAX_L)
    }

    fn with_rows(ctx: &Context, bank: &MemoryBank, mut split_rows: usize, decode: bool) -> SplitPlan {
        if let Some(budget) = ctx.loop_budget() {
            // Loop iterations of the busiest invocation per tile, each loop
            // counted with one more for its exit.
            let chunks = bank.dim().div_ceil(DK);
            let blocks = bank.value_dim().div_ceil(DVB);
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
            split_rows = split_rows.min((budget / per_tile).max(1) * BM);
        }
        // One dispatch dimension holds a segment's splits.
        let largest = bank.segments.iter().map(|s| s.rows).max().unwrap_or(1);
        split_rows = split_rows.max(largest.div_ceil(MAX_GROUPS).div_ceil(BM) * BM);
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
/// for `l` queries in `queries` against every segment of `bank`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_partial(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    bank: &MemoryBank,
    plan: &SplitPlan,
    queries: &wgpu::Buffer,
    l: usize,
    partials: &Partials,
    beta: f32,
    scores_only: bool,
) -> Result<()> {
    let shader = if plan.decode { "dense_decode" } else { "dense" };
    let pipeline = ctx.pipeline(shader, "main", &[])?;
    let (d, dv) = (bank.dim(), bank.value_dim());
    pass.set_pipeline(&pipeline);
    for (seg, &(split0, count)) in bank.segments.iter().zip(&plan.per_segment) {
        let params = uniform(
            ctx,
            &DenseParams {
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
            },
        );
        let group = bind_group(
            ctx,
            &pipeline.get_bind_group_layout(0),
            "dense",
            &[
                (0, entire(&params)),
                (1, entire(queries)),
                (2, seg.key_binding(d)),
                (3, seg.value_binding(dv)),
                (4, entire(&partials.o)),
                (5, entire(&partials.stats)),
            ],
        );
        pass.set_bind_group(0, &group, &[]);
        let x = if plan.decode { l } else { l.div_ceil(BQ) };
        pass.dispatch_workgroups(x as u32, count as u32, 1);
    }
    Ok(())
}

/// Record pass 2 (dense_merge.wgsl). `out` is z (Retrieve) or the state
/// (Step, Energy); `cols` is its row length.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_merge(
    ctx: &Context,
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
    let pipeline = ctx.pipeline("dense_merge", "main", &[])?;
    let groups_x = l.min(MAX_GROUPS);
    let params = uniform(
        ctx,
        &MergeParams {
            l: l as u32,
            dv: cols as u32,
            n_splits: plan.n_splits as u32,
            mode: mode as u32,
            beta,
            eps,
            groups_x: groups_x as u32,
            _pad: 0,
        },
    );
    let group = bind_group(
        ctx,
        &pipeline.get_bind_group_layout(0),
        "dense_merge",
        &[
            (0, entire(&params)),
            (1, entire(&partials.o)),
            (2, entire(&partials.stats)),
            (3, entire(out)),
            (4, entire(info)),
            (5, entire(active)),
        ],
    );
    pass.set_pipeline(&pipeline);
    pass.set_bind_group(0, &group, &[]);
    pass.dispatch_workgroups(groups_x as u32, l.div_ceil(groups_x) as u32, 1);
    Ok(())
}

/// Record the naive one-thread-per-query kernel (dense_naive.wgsl): one
/// dispatch per run of memories that keeps every invocation inside the
/// driver's loop budget. `run` holds 8 bytes per query.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_naive(
    ctx: &Context,
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
        return Err(Error::Unsupported(format!(
            "the naive baseline kernel handles one storage binding of memories and at most {} queries",
            MAX_GROUPS * 64
        )));
    }
    let chunk = match ctx.loop_budget() {
        // Per memory: the dot product and the accumulation loops, each with
        // its exit, and the memory loop; plus the two row loops.
        Some(budget) if budget > 2 * (dv + 1) + d + dv + 3 => (budget - 2 * (dv + 1)) / (d + dv + 3),
        Some(_) => return Err(Error::Unsupported(format!("the naive kernel cannot run dv = {dv} on this driver"))),
        None => bank.len(),
    };
    let seg = &bank.segments[0];
    let pipeline = ctx.pipeline("dense_naive", "main", &[])?;
    pass.set_pipeline(&pipeline);
    for m0 in (0..bank.len()).step_by(chunk) {
        let m1 = (m0 + chunk).min(bank.len());
        let params = uniform(
            ctx,
            &NaiveParams {
                l: l as u32,
                d: d as u32,
                dv: dv as u32,
                m0: m0 as u32,
                m1: m1 as u32,
                first: (m0 == 0) as u32,
                last: (m1 == bank.len()) as u32,
                beta,
            },
        );
        let group = bind_group(
            ctx,
            &pipeline.get_bind_group_layout(0),
            "dense_naive",
            &[
                (0, entire(&params)),
                (1, entire(queries)),
                (2, seg.key_binding(d)),
                (3, seg.value_binding(dv)),
                (4, entire(out)),
                (5, entire(run)),
            ],
        );
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(l.div_ceil(64) as u32, 1, 1);
    }
    Ok(())
}
