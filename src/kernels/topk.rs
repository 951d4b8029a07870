//! Host side of `shaders/topk.wgsl` and `shaders/topk_merge.wgsl` (and of
//! their legacy versions, `*_legacy.wgsl`): top-K and random-mask retrieval
//! (reference: `src/cpu/topk.rs`). Both select per query a support of `k`
//! memories by a u32 rank (top-K: the score's bits; random: the inverted
//! hash key), with scoring or hashing fused into the selection, then take
//! the softmax over the support only. See the shaders' header comments for
//! the algorithms.
//!
//! Work per step: one selection pass over all memories (threshold, then
//! collect, any K), one choice of the winners and one fold per segment; the
//! legacy kernels run `ceil(min(k, M) / 64)` rounds instead. Top-K with
//! `k >= M` and no support output is dense retrieval and runs the dense
//! kernels.

use bytemuck::{Pod, Zeroable};

use super::dense::{self, chunk_dims};
use super::{entire, grid, split_rows as device_split_rows, Kernel, Recorder, StepArgs, MAX_GROUPS};
use crate::config::{TopkKernel, TopkTile};
use crate::context::Context;
use crate::error::{Error, Resource, Result};
use crate::shaders::Shader;

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
    pub k: u32,
    pub beta: f32,
    pub cap: u32,
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
    pub k: u32,
    pub cap: u32,
    pub width: u32,
    pub q_off: u32,
    pub groups_x: u32,
    pub random: u32,
    pub beta: f32,
    pub support: u32,
    pub seg_row0: u32,
    pub seg_rows: u32,
    pub first: u32,
    pub last: u32,
    pub pw: u32,
    pub _pad: [u32; 3],
}

/// Threads of the merge kernels (topk_merge.wgsl's `WG`): one workgroup
/// per query; on CPU devices, where every barrier switches between all of a
/// workgroup's SIMD groups, a quarter of a GPU's.
fn merge_threads(ctx: &Context) -> usize {
    if ctx.is_cpu() {
        64
    } else {
        256
    }
}

/// Record one top-K (`seed` = `None`) or random-mask step (`k >= 1`) for
/// `args`, on the kernels the configuration names. A bank whose bindings end
/// mid-vec4 (a caller's buffer) runs the legacy kernels.
pub(crate) fn encode(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    k: usize,
    seed: Option<u64>,
    args: &StepArgs<'_>,
) -> Result<()> {
    match args.cfg.topk {
        TopkKernel::Threshold(tile) if args.bank.vec4_bindable() => encode_threshold(rec, pass, tile, k, seed, args),
        TopkKernel::Threshold(_) | TopkKernel::Legacy => encode_legacy(rec, pass, k, seed, args),
    }
}

/// log2 rounded up, plus one (loop levels of a tree over `x`).
fn levels(x: usize) -> usize {
    (usize::BITS - x.leading_zeros()) as usize
}

/// Loop iterations of one radix select (shared/radix_select.wgsl) over
/// `regions` regions of at most `cap` entries with `wg` threads, for the
/// busiest invocation (thread 0 also scans): 16 digit passes, each a
/// histogram over every region and a scan of 16 bins.
fn select_iterations(regions: usize, cap: usize, wg: usize) -> usize {
    16 * (regions * (cap.div_ceil(wg) + 1) + 1 + 17)
}

/// The selection pass's plan: entries per region, memories per split.
struct ThresholdPlan {
    cap: usize,
    rows: usize,
}

/// Memories per split (as the dense plan, but short enough for the driver's
/// loop budget in the worst order, where every score survives) and the
/// candidate capacity per (query, split).
fn threshold_plan(ctx: &Context, args: &StepArgs<'_>, t: TopkTile, k: usize, scored: bool) -> Result<ThresholdPlan> {
    let (m, d, l) = (args.bank.len(), args.bank.dim(), args.l);
    let (wg, bq, rm, bm) = (t.threads as usize, t.queries as usize, t.mems as usize, t.tile_mems() as usize);
    let mut rows = device_split_rows(ctx, args.cfg.split_target, m, l.div_ceil(bq), bm);
    // Room for K kept plus at least two tiles of survivors, so that a
    // compaction buys at least one tile (more for larger K); no more than a
    // split holds, which never needs compacting. Under a loop budget
    // (lavapipe) eight tiles: the planner must assume the worst order, a
    // compaction of every query each `gap` tiles, and a larger gap lets a
    // split hold more tiles (fewer splits to merge).
    let slack = if ctx.loop_budget().is_some() { 8 } else { 2 };
    let cap_for = |rows: usize| (k + k.max(slack * bm)).min(rows);
    if let Some(budget) = ctx.loop_budget() {
        let dk4 = chunk_dims(t.dims, d) as usize / 4;
        let (kl, ql) = ((bm * dk4).div_ceil(wg), (bq * dk4).div_ceil(wg));
        let scoring = if scored {
            d.div_ceil(4 * dk4) * ((kl + 1) * 7 + (ql + 1) * 6 + dk4 * (rm + 1) + 2) + 2 * (rm + 1)
        } else {
            rm + 1
        };
        let offer = 5 + (rm + 1) * 5;
        // A query's buffer is compacted at most once per `gap` tiles (at
        // worst every tile), and every thread takes part in every query's
        // compaction.
        let cap = cap_for(rows);
        let gap = (cap.saturating_sub(bm + k) / bm).max(1);
        let compaction = select_iterations(1, cap, wg) + cap.div_ceil(wg) + 2;
        let per_tile = scoring + offer + bq + 2 + (bq * compaction).div_ceil(gap);
        let fixed = (ql + 1) * 6 + 16;
        let tiles = budget.saturating_sub(fixed) / per_tile;
        if tiles == 0 {
            return Err(Error::limit(
                format!("top-K/random selection at d = {d}, K = {k}"),
                Resource::LoopIterations,
                per_tile + fixed,
                budget as u64,
            ));
        }
        rows = rows.min(tiles * bm);
    }
    let largest = args.bank.segments.iter().map(|s| s.rows).max().unwrap_or(1);
    rows = rows.max(largest.div_ceil(MAX_GROUPS).div_ceil(bm) * bm);
    // A split never holds more memories than its segment.
    let cap = cap_for(rows.min(largest));
    Ok(ThresholdPlan { cap, rows })
}

/// Record one step on topk.wgsl and topk_merge.wgsl.
fn encode_threshold(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    tile: TopkTile,
    k: usize,
    seed: Option<u64>,
    args: &StepArgs<'_>,
) -> Result<()> {
    use wgpu::BufferUsages as U;
    let ctx = rec.ctx;
    let bank = args.bank;
    let (m, d, dv, l) = (bank.len(), bank.dim(), bank.value_dim(), args.l);
    let k_eff = k.min(m);
    let random = seed.is_some();
    if !random && k >= m && args.support.is_none() {
        // K >= M keeps every memory: exactly dense retrieval.
        return dense::encode_z(rec, pass, args.cfg, bank, args.queries, l, args.z, args.beta);
    }
    let ThresholdPlan { cap, rows } = threshold_plan(ctx, args, tile, k_eff, !random)?;
    let (per_segment, n_splits) = dense::splits_per_segment(bank, rows);
    let pw = k_eff.next_power_of_two();
    if u32::try_from(n_splits * cap).is_err() || u32::try_from(l * pw).is_err() {
        return Err(Error::limit(
            format!("top-K/random candidates over {m} memories"),
            Resource::Indices,
            (n_splits * cap).max(l * pw) as u64,
            u64::from(u32::MAX),
        ));
    }
    let merge_wg = merge_threads(ctx);
    if let Some(budget) = ctx.loop_budget() {
        let wg = merge_wg;
        let sort = if args.support.is_some() {
            let lv = levels(pw);
            lv * (lv + 1) / 2 * ((pw / 2).div_ceil(wg) + 1) + lv + k_eff.div_ceil(wg) + 1
        } else {
            0
        };
        let choose =
            select_iterations(n_splits, cap, wg) + n_splits * (cap.div_ceil(wg) + 1) + pw.div_ceil(wg) + 2 + sort;
        let cl = dv.min(wg);
        let fold = (k_eff.div_ceil(wg) + 1) * (if random { d + 1 } else { 1 } + 1)
            + 2 * (levels(wg) + 1)
            + dv.div_ceil(cl) * (k_eff.div_ceil(wg / cl) + wg / cl + 3);
        let need = choose.max(fold);
        if need > budget {
            return Err(Error::limit(
                format!("the top-K/random merge at K = {k_eff}, d = {d}, dv = {dv} over {n_splits} splits"),
                Resource::LoopIterations,
                need,
                budget as u64,
            ));
        }
    }

    // Sub-batches keep the candidates (and the winner rows) inside one
    // binding; where one query's do not fit, the legacy rounds of 64 need
    // less (a binding far below any device's, as the tests' 4 KiB).
    let per_query = (n_splits * cap * 8).max(pw * 8) as u64;
    let sub = ((ctx.max_binding() / per_query) as usize).min(l);
    if sub == 0 {
        return encode_legacy(rec, pass, k, seed, args);
    }
    let cand = rec.buffer(sub as u64 * (n_splits * cap * 8) as u64, U::STORAGE)?;
    let counts = rec.buffer((sub * n_splits * 4) as u64, U::STORAGE)?;
    let win = rec.buffer((sub * pw * 8) as u64, U::STORAGE)?;
    let wts = rec.buffer((sub * pw * 4) as u64, U::STORAGE)?;
    let state = rec.buffer((sub * 8) as u64, U::STORAGE)?;
    let sup = args.support.unwrap_or(ctx.placeholder());
    let seed = seed.unwrap_or(0);
    let (seed_lo, seed_hi) = (seed as u32, (seed >> 32) as u32); // the low and high words
    let dk = chunk_dims(tile.dims, d);
    let constants = [
        ("WG", f64::from(tile.threads)),
        ("BQ", f64::from(tile.queries)),
        ("RM", f64::from(tile.mems)),
        ("DK", f64::from(dk)),
        ("PREFETCH", if tile.prefetch { 1.0 } else { 0.0 }),
        ("D", if args.cfg.fixed_dims { d as f64 } else { 0.0 }),
        ("PAD", if ctx.is_cpu() { 0.0 } else { 1.0 }),
        ("KALIGN", if d % 4 == 0 { 1.0 } else { 0.0 }),
    ];
    let entry = if random { "hash_select" } else { "score_select" };
    let select = Kernel::new(ctx, Shader::Topk, entry, &constants)?;
    let choose = Kernel::new(ctx, Shader::TopkMerge, "choose", &[("WG", merge_wg as f64)])?;
    let valign = if dv % 4 == 0 { 1.0 } else { 0.0 };
    let fold = Kernel::new(ctx, Shader::TopkMerge, "fold", &[("WG", merge_wg as f64), ("VALIGN", valign)])?;
    let n_seg = bank.segments.len();

    for q_off in (0..l).step_by(sub) {
        let ls = sub.min(l - q_off);
        let (gx, gy) = grid(ls);
        for (seg, &(split0, count)) in bank.segments.iter().zip(&per_segment) {
            let params = SelectParams {
                l: ls as u32,
                d: d as u32,
                seg_rows: seg.rows as u32,
                seg_row0: seg.row0 as u32,
                split_rows: rows as u32,
                split0: split0 as u32,
                n_splits: n_splits as u32,
                k: k_eff as u32,
                beta: args.beta,
                cap: cap as u32,
                q_off: q_off as u32,
                l_global: (args.l0 + q_off) as u32,
                seed_lo,
                seed_hi,
                _pad: [0; 2],
            };
            let mut bindings = vec![(3, entire(&cand)), (4, entire(&counts))];
            if !random {
                bindings.push((1, entire(args.queries)));
                bindings.push((2, seg.key_binding(d)));
            }
            let groups = (ls.div_ceil(tile.queries as usize) as u32, count as u32, 1);
            rec.dispatch(pass, &select, &params, &bindings, groups)?;
        }
        let base = SelectMergeParams {
            l: ls as u32,
            d: d as u32,
            dv: dv as u32,
            n_splits: n_splits as u32,
            k: k_eff as u32,
            cap: cap as u32,
            width: k_eff as u32,
            q_off: q_off as u32,
            groups_x: gx,
            random: random as u32,
            beta: args.beta,
            support: args.support.is_some() as u32,
            pw: pw as u32,
            ..Zeroable::zeroed()
        };
        let bindings = [(1, entire(&cand)), (2, entire(&counts)), (3, entire(&win)), (10, entire(sup))];
        rec.dispatch(pass, &choose, &base, &bindings, (gx, gy, 1))?;
        // One fold per segment: each folds in the winners it holds.
        for (si, seg) in bank.segments.iter().enumerate() {
            let params = SelectMergeParams {
                seg_row0: seg.row0 as u32,
                seg_rows: seg.rows as u32,
                first: (si == 0) as u32,
                last: (si + 1 == n_seg) as u32,
                ..base
            };
            let bindings = [
                (3, entire(&win)),
                (4, entire(&wts)),
                (5, entire(&state)),
                (6, entire(args.queries)),
                (7, seg.key_binding(d)),
                (8, seg.value_binding(dv)),
                (9, entire(args.z)),
            ];
            rec.dispatch(pass, &fold, &params, &bindings, (gx, gy, 1))?;
        }
    }
    Ok(())
}

/// Tile shape and list length of `topk.wgsl` / `topk_merge.wgsl`, handed to
/// them as override constants: the one place they are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LegacyShape {
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

impl LegacyShape {
    /// The shape the kernels' thread layout is written for.
    pub(crate) const DEFAULT: LegacyShape = LegacyShape { bq: 16, bm: 64, dk: 64, kf: 64, max_splits: 4096 };

    /// The override constants of topk.wgsl.
    fn select_constants(&self) -> [(&'static str, f64); 4] {
        [("BQ", self.bq as f64), ("BM", self.bm as f64), ("DK", self.dk as f64), ("KF", self.kf as f64)]
    }

    /// The override constants of topk_merge.wgsl.
    fn merge_constants(&self) -> [(&'static str, f64); 1] {
        [("MAX_SPLITS", self.max_splits as f64)]
    }
}

/// Keep in sync with `Params` in shaders/topk_legacy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct LegacySelectParams {
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

/// Keep in sync with `Params` in shaders/topk_merge_legacy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct LegacySelectMergeParams {
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
    let LegacyShape { bm, dk, .. } = LegacyShape::DEFAULT;
    let scoring = if scored { d.div_ceil(dk) * (65 + 17 + 65 + 1) } else { 0 };
    scoring + 65 + bm * (heap_depth(take) + 1) + 1
}

/// Memories per split: enough splits to fill the device (as the dense
/// plan), short enough for the driver's loop budget, few enough for the merge.
fn legacy_split_rows(ctx: &Context, m: usize, d: usize, l: usize, scored: bool, take: usize) -> Result<usize> {
    let LegacyShape { bq, bm, max_splits, .. } = LegacyShape::DEFAULT;
    let mut rows = device_split_rows(ctx, 0, m, l.div_ceil(bq), bm);
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

/// Record one step on the legacy kernels (topk_legacy.wgsl, rounds of 64).
fn encode_legacy(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    k: usize,
    seed: Option<u64>,
    args: &StepArgs<'_>,
) -> Result<()> {
    use wgpu::BufferUsages as U;
    let shape = LegacyShape::DEFAULT;
    let ctx = rec.ctx;
    let bank = args.bank;
    let (m, d, dv, l) = (bank.len(), bank.dim(), bank.value_dim(), args.l);
    let k_eff = k.min(m);
    let random = seed.is_some();
    if !random && k >= m && args.support.is_none() {
        // K >= M keeps every memory: exactly dense retrieval.
        return dense::encode_z(rec, pass, args.cfg, bank, args.queries, l, args.z, args.beta);
    }
    let take_max = k_eff.min(shape.kf);
    let rows = legacy_split_rows(ctx, m, d, l, !random, take_max)?;
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
    let select = Kernel::new(ctx, Shader::TopkLegacy, entry, &shape.select_constants())?;
    let merge = Kernel::new(ctx, Shader::TopkMergeLegacy, "main", &shape.merge_constants())?;
    let rounds = k_eff.div_ceil(shape.kf);
    let n_seg = bank.segments.len();

    for q_off in (0..l).step_by(sub) {
        let ls = sub.min(l - q_off);
        let (gx, gy) = grid(ls);
        for round in 0..rounds {
            let take = shape.kf.min(k_eff - round * shape.kf);
            for (seg, &(split0, count)) in bank.segments.iter().zip(&per_segment) {
                let params = LegacySelectParams {
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
                let params = LegacySelectMergeParams {
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
        let rank = Kernel::new(ctx, Shader::TopkMergeLegacy, "rank", &shape.merge_constants())?;
        let (gx, gy) = grid(l * width.div_ceil(64));
        let params = LegacySelectMergeParams { l: l as u32, width: width as u32, groups_x: gx, ..Zeroable::zeroed() };
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
        assert_eq!(wgsl_struct_size(Shader::TopkLegacy, "Params"), size_of::<LegacySelectParams>());
        assert_eq!(wgsl_struct_size(Shader::TopkMergeLegacy, "Params"), size_of::<LegacySelectMergeParams>());
        assert_eq!(wgsl_struct_size(Shader::Topk, "Params"), size_of::<SelectParams>());
        assert_eq!(wgsl_struct_size(Shader::TopkMerge, "Params"), size_of::<SelectMergeParams>());
    }

    #[test]
    fn every_tile_sets_every_override() {
        use crate::config::{candidates, testing::nvidia};
        let caps = nvidia();
        for k in candidates(&caps).topk {
            if let TopkKernel::Threshold(t) = k {
                let c = [
                    ("WG", f64::from(t.threads)),
                    ("BQ", f64::from(t.queries)),
                    ("RM", f64::from(t.mems)),
                    ("DK", f64::from(t.dims)),
                    ("PREFETCH", 1.0),
                    ("D", 64.0),
                    ("PAD", 1.0),
                    ("KALIGN", 1.0),
                ];
                check_constants(Shader::Topk, "score_select", &c);
                check_constants(Shader::Topk, "hash_select", &c);
            }
        }
        for wg in [64.0, 256.0] {
            check_constants(Shader::TopkMerge, "choose", &[("WG", wg)]);
            check_constants(Shader::TopkMerge, "fold", &[("WG", wg), ("VALIGN", 1.0)]);
        }
    }

    #[test]
    fn the_legacy_shape_sets_every_override() {
        let shape = LegacyShape::DEFAULT;
        for entry in ["score_select", "hash_select"] {
            check_constants(Shader::TopkLegacy, entry, &shape.select_constants());
        }
        for entry in ["main", "rank"] {
            check_constants(Shader::TopkMergeLegacy, entry, &shape.merge_constants());
        }
        assert!(shape.kf <= 64, "the merge keeps one winner per thread of its 64");
    }
}
