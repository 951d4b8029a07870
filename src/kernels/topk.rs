//! Host side of `shaders/topk.wgsl` and `shaders/topk_merge.wgsl`: top-K and
//! random-mask retrieval (reference: `src/cpu/topk.rs`). Both select per query a support of `k` memories by
//! a u32 rank (top-K: the score's bits; random: the inverted hash key), with
//! scoring or hashing fused into the selection, then take the softmax over
//! the support only. See the shaders' header comments for the algorithm.
//!
//! Work per step: `ceil(min(k, M) / 64)` rounds, each one selection pass over
//! all memories and one merge pass; top-K with `k >= M` and no support output
//! is dense retrieval and runs the dense kernels instead.

use bytemuck::{Pod, Zeroable};

use super::dense;
use super::{entire, grid, split_rows as device_split_rows, Kernel, Recorder, StepArgs, MAX_GROUPS};
use crate::context::Context;
use crate::error::{Error, Resource, Result};
use crate::shaders::Shader;

/// Tile shape and list length of `topk.wgsl` / `topk_merge.wgsl`, handed to
/// them as override constants: the one place they are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Queries per workgroup (`BQ`).
    pub bq: usize,
    /// Memories per tile (`BM`).
    pub bm: usize,
    /// Dimensions staged per barrier (`DK`).
    pub dk: usize,
    /// Longest list per query and round (`KF`, at most the 64 threads of
    /// the merge): K > KF runs in rounds.
    pub kf: usize,
    /// Most splits the merge pass can track (`MAX_SPLITS`).
    pub max_splits: usize,
}

impl Shape {
    /// The shape the kernels' thread layout is written for.
    pub(crate) const DEFAULT: Shape = Shape { bq: 16, bm: 64, dk: 64, kf: 64, max_splits: 4096 };

    /// The override constants of topk.wgsl.
    fn select_constants(&self) -> [(&'static str, f64); 4] {
        [("BQ", self.bq as f64), ("BM", self.bm as f64), ("DK", self.dk as f64), ("KF", self.kf as f64)]
    }

    /// The override constants of topk_merge.wgsl.
    fn merge_constants(&self) -> [(&'static str, f64); 1] {
        [("MAX_SPLITS", self.max_splits as f64)]
    }
}

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
fn select_iterations_per_tile(scored: bool, d: usize, take: usize) -> usize {
    let Shape { bm, dk, .. } = Shape::DEFAULT;
    let scoring = if scored { d.div_ceil(dk) * (65 + 17 + 65 + 1) } else { 0 };
    scoring + 65 + bm * (heap_depth(take) + 1) + 1
}

/// Memories per split: enough splits to fill the device (as the dense
/// plan), short enough for the driver's loop budget, few enough for the merge.
fn split_rows(ctx: &Context, m: usize, d: usize, l: usize, scored: bool, take: usize) -> Result<usize> {
    let Shape { bq, bm, max_splits, .. } = Shape::DEFAULT;
    let mut rows = device_split_rows(ctx, m, l.div_ceil(bq), bm);
    let floor = m.div_ceil(max_splits.min(MAX_GROUPS)).div_ceil(bm) * bm;
    if let Some(budget) = ctx.loop_budget() {
        // Fixed part: the query load (17), the heapsort (take sifts) and
        // the list write-out (take + 1).
        let fixed = 17 + (take + 1) * (heap_depth(take) + 2) + take + 1 + 8;
        let per_tile = select_iterations_per_tile(scored, d, take);
        let tiles_max = budget.saturating_sub(fixed) / per_tile;
        if tiles_max == 0 || tiles_max * bm < floor {
            return Err(Error::limit(
                format!("top-K/random selection over {m} memories at d = {d} within {max_splits} splits"),
                Resource::LoopIterations,
                fixed + per_tile * floor.div_ceil(bm),
                budget as u64,
            ));
        }
        rows = rows.min(tiles_max * bm);
    }
    Ok(rows.max(floor))
}

/// Record one top-K (`seed` = `None`) or random-mask step (`k >= 1`) for `args`.
pub(crate) fn encode(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    k: usize,
    seed: Option<u64>,
    args: &StepArgs<'_>,
) -> Result<()> {
    use wgpu::BufferUsages as U;
    let shape = Shape::DEFAULT;
    let ctx = rec.ctx;
    let bank = args.bank;
    let (m, d, dv, l) = (bank.len(), bank.dim(), bank.value_dim(), args.l);
    let k_eff = k.min(m);
    let random = seed.is_some();
    if !random && k >= m && args.support.is_none() {
        // K >= M keeps every memory: exactly dense retrieval.
        return dense::encode_z(rec, pass, bank, args.queries, l, args.z, args.beta);
    }
    let take_max = k_eff.min(shape.kf);
    let rows = split_rows(ctx, m, d, l, !random, take_max)?;
    let (per_segment, n_splits) = dense::splits_per_segment(bank, rows);
    if n_splits > shape.max_splits {
        return Err(Error::limit(
            format!("top-K/random selection over {m} memories"),
            Resource::Splits,
            n_splits,
            shape.max_splits as u64,
        ));
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
            return Err(Error::limit(
                format!("the top-K/random merge at d = {d}, dv = {dv} over {n_splits} splits"),
                Resource::LoopIterations,
                merge_iterations(take_max),
                budget as u64,
            ));
        }
        if random && args.support.is_some() && width + 1 > budget {
            return Err(Error::limit(
                format!("ordering a random support of {width} indices"),
                Resource::LoopIterations,
                width + 1,
                budget as u64,
            ));
        }
    }

    // Sub-batches keep the partial lists inside one storage binding.
    let per_query = (n_splits * take_max * 8) as u64;
    let sub = ((ctx.max_binding() / per_query.max(16)) as usize).min(l);
    if sub == 0 {
        return Err(Error::limit(
            "the partial lists of one query",
            Resource::BindingBytes,
            per_query,
            ctx.max_binding(),
        ));
    }
    let part = rec.buffer(sub as u64 * per_query, U::STORAGE)?;
    let pivots = rec.buffer((sub * 16) as u64, U::STORAGE)?;
    // Random writes its support in key order to `order`; `rank` sorts it into
    // the output. Without a support output binding 7 gets the placeholder.
    let order =
        if random && args.support.is_some() { Some(rec.buffer((l * width * 4) as u64, U::STORAGE)?) } else { None };
    let sup_binding = match (&order, args.support) {
        (Some(o), _) => o,
        (None, Some(s)) => s,
        (None, None) => ctx.placeholder(),
    };
    let seed = seed.unwrap_or(0);
    let (seed_lo, seed_hi) = (seed as u32, (seed >> 32) as u32); // the low and high words
    let entry = if random { "hash_select" } else { "score_select" };
    let select = Kernel::new(ctx, Shader::Topk, entry, &shape.select_constants())?;
    let merge = Kernel::new(ctx, Shader::TopkMerge, "main", &shape.merge_constants())?;
    let rounds = k_eff.div_ceil(shape.kf);
    let n_seg = bank.segments.len();

    for q_off in (0..l).step_by(sub) {
        let ls = sub.min(l - q_off);
        let (gx, gy) = grid(ls);
        for round in 0..rounds {
            let take = shape.kf.min(k_eff - round * shape.kf);
            for (seg, &(split0, count)) in bank.segments.iter().zip(&per_segment) {
                let params = SelectParams {
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
                };
                let mut bindings = vec![(3, entire(&pivots)), (4, entire(&part))];
                if !random {
                    bindings.push((1, entire(args.queries)));
                    bindings.push((2, seg.key_binding(d)));
                }
                rec.dispatch(pass, &select, &params, &bindings, (ls.div_ceil(shape.bq) as u32, count as u32, 1))?;
            }

            // One merge per segment: each folds in the winners it holds.
            for (si, seg) in bank.segments.iter().enumerate() {
                let params = SelectMergeParams {
                    l: ls as u32,
                    d: d as u32,
                    dv: dv as u32,
                    n_splits: n_splits as u32,
                    take: take as u32,
                    first: (round == 0 && si == 0) as u32,
                    last: (round + 1 == rounds && si + 1 == n_seg) as u32,
                    width: width as u32,
                    col0: (round * shape.kf) as u32,
                    q_off: q_off as u32,
                    groups_x: gx,
                    random: random as u32,
                    beta: args.beta,
                    support: args.support.is_some() as u32,
                    seg_row0: seg.row0 as u32,
                    seg_rows: seg.rows as u32,
                };
                let bindings = [
                    (1, entire(&part)),
                    (2, entire(&pivots)),
                    (3, entire(args.queries)),
                    (4, seg.key_binding(d)),
                    (5, seg.value_binding(dv)),
                    (6, entire(args.z)),
                    (7, entire(sup_binding)),
                ];
                rec.dispatch(pass, &merge, &params, &bindings, (gx, gy, 1))?;
            }
        }
    }

    if let (Some(order), Some(support)) = (&order, args.support) {
        let rank = Kernel::new(ctx, Shader::TopkMerge, "rank", &shape.merge_constants())?;
        let (gx, gy) = grid(l * width.div_ceil(64));
        let params = SelectMergeParams { l: l as u32, width: width as u32, groups_x: gx, ..Zeroable::zeroed() };
        rec.dispatch(pass, &rank, &params, &[(7, entire(support)), (8, entire(order))], (gx, gy, 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaders::{check_constants, wgsl_struct_size};

    #[test]
    fn structs_match_the_wgsl_layouts() {
        assert_eq!(wgsl_struct_size(Shader::Topk, "Params"), size_of::<SelectParams>());
        assert_eq!(wgsl_struct_size(Shader::TopkMerge, "Params"), size_of::<SelectMergeParams>());
    }

    #[test]
    fn the_shape_sets_every_override() {
        let shape = Shape::DEFAULT;
        for entry in ["score_select", "hash_select"] {
            check_constants(Shader::Topk, entry, &shape.select_constants());
        }
        for entry in ["main", "rank"] {
            check_constants(Shader::TopkMerge, entry, &shape.merge_constants());
        }
        assert!(shape.kf <= 64, "the merge keeps one winner per thread of its 64");
    }
}
