//! Host side of `shaders/topk.wgsl` and `shaders/topk_merge.wgsl`: top-K and
//! random-mask retrieval. Both select per query a support of `k` memories by
//! a u32 rank (top-K: the score's bits; random: the inverted hash key), with
//! scoring or hashing fused into the selection, then take the softmax over
//! the support only. See the shaders' header comments for the algorithm.
//!
//! Work per step: `ceil(min(k, M) / 64)` rounds, each one selection pass over
//! all memories and one merge pass; top-K with `k >= M` and no support output
//! is dense retrieval and runs the dense kernels instead.

use bytemuck::{Pod, Zeroable};

use super::dense::{self, MergeMode, Partials, SplitPlan, MAX_GROUPS};
use super::{bind_group, entire, uniform, StepArgs};
use crate::context::Context;
use crate::error::{Error, Result};

/// Queries per workgroup of `topk.wgsl` (`BQ`).
const BQ: usize = 16;
/// Memories per tile of `topk.wgsl` (`BM`).
const BM: usize = 64;
/// Dimensions staged per barrier (`DK`).
const DK: usize = 64;
/// Longest list per query and round (`KF`): K > KF runs in rounds.
pub(crate) const KF: usize = 64;
/// Most splits the merge pass can track (`MAX_SPLITS` in topk_merge.wgsl).
const MAX_SPLITS: usize = 4096;

/// Keep in sync with `Params` in shaders/topk.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct SelectParams {
    pub l: u32,
    pub d: u32,
    pub seg_rows: u32,
    pub seg_row0: u32,
    pub split_rows: u32,
    pub split0: u32,
    pub n_splits: u32,
    pub take: u32,
    pub beta: f32,
    pub round: u32,
    pub q_off: u32,
    pub l_global: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub _pad: [u32; 2],
}

/// Keep in sync with `Params` in shaders/topk_merge.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct SelectMergeParams {
    pub l: u32,
    pub d: u32,
    pub dv: u32,
    pub n_splits: u32,
    pub take: u32,
    pub first: u32,
    pub last: u32,
    pub width: u32,
    pub col0: u32,
    pub q_off: u32,
    pub groups_x: u32,
    pub random: u32,
    pub beta: f32,
    pub support: u32,
    pub seg_row0: u32,
    pub seg_rows: u32,
}

/// How the support is chosen.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Selection {
    /// The k largest scores.
    TopK,
    /// The k smallest `random_rank_key(seed, l, mu)`.
    Random { seed: u64 },
}

/// Depth of a binary heap of `take` entries: most sift steps per offer.
fn heap_depth(take: usize) -> usize {
    (usize::BITS - take.leading_zeros()) as usize
}

/// Worst-case loop iterations of one `topk.wgsl` invocation per 64-memory
/// tile, each loop counted with one more for its exit: scoring as in
/// dense.wgsl (key load 65, query load 17, dot products 65, chunk loop 1 per
/// 64-dim chunk), the offer loop (65), a full sift for every candidate
/// (64 x (depth + 1); adversarial data, e.g. memories sorted by ascending
/// score, accepts every candidate), plus the tile loop.
fn select_iterations_per_tile(sel: Selection, d: usize, take: usize) -> usize {
    let scoring = match sel {
        Selection::TopK => d.div_ceil(DK) * (65 + 17 + 65 + 1),
        Selection::Random { .. } => 0,
    };
    scoring + 65 + BM * (heap_depth(take) + 1) + 1
}

/// Memories per split: enough splits to fill the device (as the dense
/// plan), short enough for the driver's loop budget, few enough for the merge.
fn split_rows(ctx: &Context, m: usize, d: usize, l: usize, sel: Selection, take: usize) -> Result<usize> {
    let groups = l.div_ceil(BQ);
    let target = if ctx.is_cpu() { 4 * std::thread::available_parallelism().map_or(4, |n| n.get()) } else { 2048 };
    let tiles = m.div_ceil(BM);
    let want = target.div_ceil(groups).clamp(1, (tiles / 2).max(1));
    let mut rows = m.div_ceil(want).div_ceil(BM) * BM;
    let floor = m.div_ceil(MAX_SPLITS.min(MAX_GROUPS)).div_ceil(BM) * BM;
    if let Some(budget) = ctx.loop_budget() {
        // Fixed part: the query load (17), the heapsort (take sifts) and
        // the list write-out (take + 1).
        let fixed = 17 + (take + 1) * (heap_depth(take) + 2) + take + 1 + 8;
        let per_tile = select_iterations_per_tile(sel, d, take);
        let tiles_max = budget.saturating_sub(fixed) / per_tile;
        if tiles_max == 0 || tiles_max * BM < floor {
            return Err(Error::DeviceLimit(format!(
                "top-K/random selection over {m} memories at d = {d} needs more than {MAX_SPLITS} splits \
                 to stay inside this driver's loop limit"
            )));
        }
        rows = rows.min(tiles_max * BM);
    }
    Ok(rows.max(floor))
}

/// Record one top-K or random-mask step (`k >= 1`) for `args`.
pub(crate) fn encode(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    sel: Selection,
    k: usize,
    args: &StepArgs<'_>,
    scratch: &mut Vec<wgpu::Buffer>,
) -> Result<()> {
    use wgpu::BufferUsages as U;
    let bank = args.bank;
    let (m, d, dv, l) = (bank.len(), bank.dim(), bank.value_dim(), args.l);
    let k_eff = k.min(m);
    if matches!(sel, Selection::TopK) && k >= m && args.support.is_none() {
        // K >= M keeps every memory: exactly dense retrieval.
        return encode_dense(ctx, pass, args, scratch);
    }
    let take_max = k_eff.min(KF);
    let rows = split_rows(ctx, m, d, l, sel, take_max)?;
    let (per_segment, n_splits) = dense::splits_per_segment(bank, rows);
    if n_splits > MAX_SPLITS {
        return Err(Error::DeviceLimit(format!(
            "top-K/random selection over {m} memories needs {n_splits} splits (at most {MAX_SPLITS})"
        )));
    }
    let width = k_eff;

    let merge_iterations = |take: usize| {
        let per_thread_splits = n_splits.div_ceil(64) + 1;
        per_thread_splits
            + take * (7 + 1 + per_thread_splits)
            + (d + 1)
            + 3 * (take + 1)
            + (dv.div_ceil(64) + 1) * (take + 1)
    };
    if let Some(budget) = ctx.loop_budget() {
        if merge_iterations(take_max) > budget {
            return Err(Error::DeviceLimit(format!(
                "the top-K/random merge at d = {d}, dv = {dv} over {n_splits} splits exceeds this driver's loop limit"
            )));
        }
        if matches!(sel, Selection::Random { .. }) && args.support.is_some() && width + 1 > budget {
            return Err(Error::DeviceLimit(format!(
                "ordering a random support of {width} indices exceeds this driver's loop limit ({budget})"
            )));
        }
    }

    // Sub-batches keep the partial lists inside one storage binding.
    let per_query = (n_splits * take_max * 8) as u64;
    let sub = ((ctx.max_binding() / per_query.max(16)) as usize).min(l);
    if sub == 0 {
        return Err(Error::DeviceLimit(format!(
            "the partial lists of one query ({per_query} bytes) exceed a storage binding"
        )));
    }
    let part = ctx.acquire(sub as u64 * per_query, U::STORAGE)?;
    let pivots = ctx.acquire((sub * 16) as u64, U::STORAGE)?;
    let random = matches!(sel, Selection::Random { .. });
    // Random writes its support in key order to `order`; `rank` sorts it into
    // the output. Without a support output binding 7 still needs a buffer.
    let order =
        if random && args.support.is_some() { Some(ctx.acquire((l * width * 4) as u64, U::STORAGE)?) } else { None };
    let dummy = ctx.acquire(16, U::STORAGE)?;
    let sup_binding = match (&order, args.support) {
        (Some(o), _) => o,
        (None, Some(s)) => s,
        (None, None) => &dummy,
    };
    let (seed_lo, seed_hi) = match sel {
        Selection::Random { seed } => (seed as u32, (seed >> 32) as u32), // the low and high words
        Selection::TopK => (0, 0),
    };
    let (entry, with_keys) = if random { ("hash_select", false) } else { ("score_select", true) };
    let select_pipeline = ctx.pipeline("topk", entry, &[])?;
    let select_layout = select_pipeline.get_bind_group_layout(0);
    let merge_pipeline = ctx.pipeline("topk_merge", "main", &[])?;
    let merge_layout = merge_pipeline.get_bind_group_layout(0);
    let rounds = k_eff.div_ceil(KF);
    let n_seg = bank.segments.len();

    for q_off in (0..l).step_by(sub) {
        let ls = sub.min(l - q_off);
        let groups_x = ls.min(MAX_GROUPS);
        for round in 0..rounds {
            let take = KF.min(k_eff - round * KF);
            for (seg, &(split0, count)) in bank.segments.iter().zip(&per_segment) {
                let params = uniform(
                    ctx,
                    &SelectParams {
                        l: ls as u32,
                        d: d as u32,
                        seg_rows: seg.rows as u32,
                        seg_row0: seg.row0 as u32,
                        split_rows: rows as u32,
                        split0: split0 as u32,
                        n_splits: n_splits as u32,
                        take: take as u32,
                        beta: args.beta,
                        round: round as u32,
                        q_off: q_off as u32,
                        l_global: (args.l0 + q_off) as u32,
                        seed_lo,
                        seed_hi,
                        _pad: [0; 2],
                    },
                );
                let mut entries = vec![(0, entire(&params)), (3, entire(&pivots)), (4, entire(&part))];
                if with_keys {
                    entries.push((1, entire(args.queries)));
                    entries.push((2, seg.key_binding(d)));
                }
                let group = bind_group(ctx, &select_layout, "topk", &entries);
                pass.set_pipeline(&select_pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(ls.div_ceil(BQ) as u32, count as u32, 1);
            }

            // One merge per segment: each folds in the winners it holds.
            for (si, seg) in bank.segments.iter().enumerate() {
                let params = uniform(
                    ctx,
                    &SelectMergeParams {
                        l: ls as u32,
                        d: d as u32,
                        dv: dv as u32,
                        n_splits: n_splits as u32,
                        take: take as u32,
                        first: (round == 0 && si == 0) as u32,
                        last: (round + 1 == rounds && si + 1 == n_seg) as u32,
                        width: width as u32,
                        col0: (round * KF) as u32,
                        q_off: q_off as u32,
                        groups_x: groups_x as u32,
                        random: random as u32,
                        beta: args.beta,
                        support: args.support.is_some() as u32,
                        seg_row0: seg.row0 as u32,
                        seg_rows: seg.rows as u32,
                    },
                );
                let group = bind_group(
                    ctx,
                    &merge_layout,
                    "topk_merge",
                    &[
                        (0, entire(&params)),
                        (1, entire(&part)),
                        (2, entire(&pivots)),
                        (3, entire(args.queries)),
                        (4, seg.key_binding(d)),
                        (5, seg.value_binding(dv)),
                        (6, entire(args.z)),
                        (7, entire(sup_binding)),
                    ],
                );
                pass.set_pipeline(&merge_pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(groups_x as u32, ls.div_ceil(groups_x) as u32, 1);
            }
        }
    }

    if let (Some(order), Some(support)) = (&order, args.support) {
        let pipeline = ctx.pipeline("topk_merge", "rank", &[])?;
        let items = l * width.div_ceil(64);
        let groups_x = items.min(MAX_GROUPS);
        let params = uniform(
            ctx,
            &SelectMergeParams { l: l as u32, width: width as u32, groups_x: groups_x as u32, ..Zeroable::zeroed() },
        );
        let group = bind_group(
            ctx,
            &pipeline.get_bind_group_layout(0),
            "topk_rank",
            &[(0, entire(&params)), (7, entire(support)), (8, entire(order))],
        );
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(groups_x as u32, items.div_ceil(groups_x) as u32, 1);
    }
    scratch.extend([part, pivots, dummy]);
    scratch.extend(order);
    Ok(())
}

/// Top-K with K >= M: the dense kernels, writing z only (their per-query
/// statistics go to scratch, so the dynamics' records are untouched).
fn encode_dense(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    args: &StepArgs<'_>,
    scratch: &mut Vec<wgpu::Buffer>,
) -> Result<()> {
    use wgpu::BufferUsages as U;
    let (bank, l, dv) = (args.bank, args.l, args.bank.value_dim());
    let mut plan = SplitPlan::new(ctx, bank, l);
    let fits = |plan: &SplitPlan| {
        let (o, s) = Partials::bytes(l, dv, plan);
        o.max(s) <= ctx.max_binding()
    };
    if !fits(&plan) {
        plan = SplitPlan::minimal(ctx, bank, l);
    }
    if !fits(&plan) {
        return Err(Error::DeviceLimit("the dense partial results of this batch exceed a storage binding".into()));
    }
    let (o, s) = Partials::bytes(l, dv, &plan);
    let partials = Partials { o: ctx.acquire(o, U::STORAGE)?, stats: ctx.acquire(s, U::STORAGE)? };
    let info = ctx.acquire((l * std::mem::size_of::<dense::QueryInfo>()) as u64, U::STORAGE)?;
    let active = ctx.acquire(16, U::STORAGE)?;
    dense::encode_partial(ctx, pass, bank, &plan, args.queries, l, &partials, args.beta, false)?;
    dense::encode_merge(
        ctx,
        pass,
        &plan,
        &partials,
        args.z,
        &info,
        &active,
        l,
        dv,
        MergeMode::Retrieve,
        args.beta,
        0.0,
    )?;
    scratch.extend([partials.o, partials.stats, info, active]);
    Ok(())
}
