// #select f16
// Dense retrieval, pass 1 of 2, shaped for GPUs (FlashAttention-2's inner
// loop, split over memory chunks as in flash-decoding). Pass 2
// (dense_merge.wgsl) merges the splits. The kernel before issue 9 is
// dense_legacy.wgsl (the `legacy` configuration).
//
// One source, many shapes: the tile is set by override constants from
// `dense::Tiled` (src/kernels/dense.rs), the one place it is written:
//   WG threads as TQ = BQ / 4 rows of TM = WG / TQ lanes; each thread
//   scores 4 queries against RM memories (a 4 x RM register tile,
//   shared/score_tile.wgsl) and accumulates 4 queries x 4 RC output columns
//   (4 x 4 RC); a tile is BM = TM RM memories, a column block DVB4 = TM RC
//   vec4s. The default for discrete GPUs is 128 threads, 64 x 64 tiles,
//   4 x 8 register tiles for scores and output.
// Per tile:
//   1. scores, with beta * log2(e) folded into the staged queries, so the
//      softmax runs on exp2;
//   2. each thread's row max over its RM memories, then across the TM lanes
//      of its row: subgroupShuffleXor butterflies (SUBGROUP, where the
//      device's smallest subgroup holds TM lanes) or through workgroup
//      memory; each thread keeps its own part of the row sums and its own
//      argmax, reduced once per split at the end;
//   3. p = exp2(s - max) to workgroup memory, the output rescaled and
//      p V accumulated from the staged values, block by block of columns
//      (with more than one block, the accumulators live in this split's rows
//      of part_o between tiles, as in the legacy kernel).
// Every loop has a trip count fixed by the overrides (and by D, DV where the
// bank fixes them); memories past the split's end score NEG and weigh 0.
//
// Output (the interface pass 2 and `retrieve_partial` read): per (query,
// split) part_stats = (running max, sum of exp(s - max), argmax as bits, 0)
// with the max in natural units, and part_o = sum exp(s - max) v.
//
// Reference: src/cpu/dense.rs. Host side: src/kernels/dense.rs.
//
// #trusted every index is in range by construction: tile rows are guarded by j < jmax (memories of the bound segment) and q < l (queries of the batch), dimensions by k < d and c < dv, the bindings hold whole vec4s (the host pads them), part_o / part_stats rows are (q < l, split < n_splits) with n_splits counted by the host from the same split_rows, and workgroup arrays are sized by the same overrides that bound their loops; every loop's trip count is an override or a validated parameter, so loops end and no divisor is 0 (WG, DK4, TQ, TM > 0, checked by `Tiled::check`).
// #select subgroup

// Keep in sync with `DenseParams` in src/kernels/dense.rs (same as dense_legacy.wgsl).
struct Params {
    l: u32,           // queries in this batch
    d: u32,           // pattern dimension
    dv: u32,          // value dimension
    seg_rows: u32,    // memories in the bound segment
    seg_row0: u32,    // global index of the segment's first memory
    split_rows: u32,  // memories per split, a multiple of BM
    split0: u32,      // index of this segment's first split in the partial arrays
    n_splits: u32,    // splits in all segments (stride of the partial arrays)
    beta: f32,
    scores_only: u32, // 1: only the max/sum/argmax statistics (energy pass)
    _pad0: u32,
    _pad1: u32,
}

override WG: u32;                // threads per workgroup
override BQ: u32;                // queries per workgroup, a multiple of 4
override RM: u32;                // memories per thread and tile, <= 8
override RC: u32;                // output vec4 columns per thread and block, <= 4
override DK: u32;                // dimensions staged per barrier, a multiple of 4
override SUBGROUP: bool = false; // row reductions by subgroup shuffles
override PREFETCH: bool = false; // load the next key chunk before computing on this one
override D: u32 = 0u;            // the bank's d, fixed at pipeline creation (0: from Params)
override KALIGN: bool = false;   // d is a multiple of 4 (vec4 loads of keys and queries only)
override VALIGN: bool = false;   // dv is a multiple of 4 (vec4 loads of values only)
override DV: u32 = 0u;           // the bank's dv, likewise
override TQ: u32 = BQ / 4u;      // rows of lanes (4 queries each)
override TM: u32 = WG / TQ;      // lanes per row
override BM: u32 = TM * RM;      // memories per tile
override DVB4: u32 = TM * RC;    // vec4 output columns per block
override DK4: u32 = DK / 4u;
// Row stride (in vec4s) of the staged rows: odd where PAD (GPUs: lanes
// reading rows tm + TM r land on distinct banks), DK4 on CPU devices, which
// have no banks and are short of workgroup memory.
override PAD: bool = true;
override KS4: u32 = select(DK4, DK4 + 1u - DK4 % 2u, PAD);
// Size of `kv`, which holds the keys of a chunk, then the values of a block:
// max(BM KS4, BM DVB4), computed by the host.
override KV: u32;

const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;
// #include shared/neg.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read> values: array<vec4<elem>>;
@group(0) @binding(4) var<storage, read_write> part_o: array<f32>;
@group(0) @binding(5) var<storage, read_write> part_stats: array<vec4<f32>>;

var<workgroup> qs: array<vec4<f32>, BQ * KS4>;
var<workgroup> kv: array<vec4<f32>, KV>;
// ps[j * TQ + tq]: exp2(s - max) of memory j for the 4 queries of row tq.
// Its first WG slots double as the workgroup-memory reductions' (without
// subgroups), used only between a tile's scores and its exp2 (and after a
// barrier at the end): BM TQ >= WG since BM = TM RM >= TM.
var<workgroup> ps: array<vec4<f32>, BM * TQ>;

// #include shared/score_tile.wgsl

// #include shared/value4.wgsl

// Max over the TM lanes of this thread's row, per query.
fn row_max(t: u32, v: vec4<f32>) -> vec4<f32> {
    var m = v;
    if (SUBGROUP && HAVE_SUBGROUPS) {
        for (var s = TM / 2u; s > 0u; s >>= 1u) {
            m = max(m, sg_xor4(m, s));
        }
        return m;
    }
    ps[t] = v;
    workgroupBarrier();
    let base = t - t % TM;
    for (var i = 0u; i < TM; i++) {
        m = max(m, ps[base + i]);
    }
    workgroupBarrier(); // the slots are free again
    return m;
}

// Sum over the TM lanes of this thread's row, per query.
fn row_sum(t: u32, v: vec4<f32>) -> vec4<f32> {
    if (SUBGROUP && HAVE_SUBGROUPS) {
        var m = v;
        for (var s = TM / 2u; s > 0u; s >>= 1u) {
            m += sg_xor4(m, s);
        }
        return m;
    }
    ps[t] = v;
    workgroupBarrier();
    let base = t - t % TM;
    var m = vec4<f32>(0.0);
    for (var i = 0u; i < TM; i++) {
        m += ps[base + i];
    }
    workgroupBarrier();
    return m;
}

// Min over the TM lanes of this thread's row, per query (the argmax: lanes
// that do not hold the max offer 0xffffffff).
fn row_min_u(t: u32, v: vec4<u32>) -> vec4<u32> {
    var m = v;
    if (SUBGROUP && HAVE_SUBGROUPS) {
        for (var s = TM / 2u; s > 0u; s >>= 1u) {
            m = min(m, sg_xor4u(m, s));
        }
        return m;
    }
    ps[t] = bitcast<vec4<f32>>(v);
    workgroupBarrier();
    let base = t - t % TM;
    for (var i = 0u; i < TM; i++) {
        m = min(m, bitcast<vec4<u32>>(ps[base + i]));
    }
    workgroupBarrier();
    return m;
}

// part_o index of column c of query q in this split.
fn out_index(q: u32, split: u32, dv: u32, c: u32) -> u32 {
    return (q * p.n_splits + split) * dv + c;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tq = t / TM;
    let tm = t % TM;
    let q0 = wg.x * BQ;
    let d = dims();
    let dv = value_dims();
    let dv4 = (dv + 3u) / 4u;
    let m_begin = wg.y * p.split_rows;
    let m_end = min(m_begin + p.split_rows, p.seg_rows);
    let n_chunks = (d + DK - 1u) / DK;
    let n_blocks = (dv4 + DVB4 - 1u) / DVB4;
    let split = p.split0 + wg.y;
    let scale = p.beta * LOG2E;

    var run_max = vec4<f32>(NEG);          // running max of the row (log2 units), per query
    var run_sum = vec4<f32>(0.0);          // this lane's part of the sum of exp2(s - max)
    var best = vec4<f32>(NEG);             // this lane's largest score ...
    var best_at = vec4<u32>(0xffffffffu);  // ... and the first memory holding it
    // Output accumulators: o[i * RC + c] = columns 4 (tm + TM c) .. + 3 of
    // the current block for query 4 tq + i.
    var o: array<vec4<f32>, 16>;

    if (n_chunks == 1u) {
        stage_queries(t, 0u, q0, p.l, d, 0u, scale);
    }
    prefetch_first(t, m_begin, m_end, d);
    for (var m0 = m_begin; m0 < m_end; m0 += BM) {
        let jmax = min(BM, m_end - m0);
        var s: array<vec4<f32>, 8>;
        for (var r = 0u; r < RM; r++) {
            s[r] = vec4<f32>(0.0);
        }
        score_tile(t, tq, tm, 0u, q0, p.l, d, m0, m_end, scale, &s);

        // 2. Row max over the tile, this lane's argmax, exp2.
        var tile_max = vec4<f32>(NEG);
        for (var r = 0u; r < RM; r++) {
            let j = tm + TM * r;
            if (j < jmax) {
                tile_max = max(tile_max, s[r]);
                let better = s[r] > best; // strict: the lowest index keeps ties
                best = select(best, s[r], better);
                best_at = select(best_at, vec4<u32>(m0 + j), better);
            } else {
                s[r] = vec4<f32>(NEG);
            }
        }
        let new_max = max(run_max, row_max(t, tile_max));
        let alpha = exp2(run_max - new_max); // 0 on the first tile (run_max = NEG)
        run_max = new_max;
        run_sum *= alpha;
        for (var r = 0u; r < RM; r++) {
            let e = exp2(s[r] - new_max);
            run_sum += e;
            ps[(tm + TM * r) * TQ + tq] = e;
        }
        if (p.scores_only == 1u) {
            continue;
        }
        // ps is read after the barrier that precedes the first value load.

        // 3. o = o * alpha + p V, block by block of DVB4 vec4 columns.
        for (var b = 0u; b < n_blocks; b++) {
            workgroupBarrier(); // ps is written; the previous readers of kv are done
            for (var i = 0u; i < (BM * DVB4 + WG - 1u) / WG; i++) {
                let e = t + WG * i;
                if (e < BM * DVB4) {
                    let j = e / DVB4;
                    let c4 = e % DVB4;
                    var v = vec4<f32>(0.0);
                    if (j < jmax) {
                        v = value4(m0 + j, dv, b * DVB4 + c4);
                    }
                    kv[j * DVB4 + c4] = v;
                }
            }
            workgroupBarrier();
            if (n_blocks > 1u) {
                // This block's accumulators from the previous tile; the first
                // tile starts from zero (never from stale memory, which 0 * NaN
                // would not clear).
                for (var i = 0u; i < 4u; i++) {
                    for (var c = 0u; c < RC; c++) {
                        var acc = vec4<f32>(0.0);
                        let c4 = b * DVB4 + tm + TM * c;
                        let q = q0 + 4u * tq + i;
                        if (m0 != m_begin && q < p.l) {
                            for (var k = 0u; k < 4u; k++) {
                                if (4u * c4 + k < dv) {
                                    acc[k] = part_o[out_index(q, split, dv, 4u * c4 + k)];
                                }
                            }
                        }
                        o[i * RC + c] = acc;
                    }
                }
            } else if (m0 == m_begin) {
                for (var i = 0u; i < 4u * RC; i++) {
                    o[i] = vec4<f32>(0.0);
                }
            }
            for (var i = 0u; i < 4u; i++) {
                for (var c = 0u; c < RC; c++) {
                    o[i * RC + c] *= alpha[i];
                }
            }
            for (var j = 0u; j < BM; j++) {
                let w = ps[j * TQ + tq];
                for (var c = 0u; c < RC; c++) {
                    let v = kv[j * DVB4 + tm + TM * c];
                    o[c] += w.x * v;
                    o[RC + c] += w.y * v;
                    o[2u * RC + c] += w.z * v;
                    o[3u * RC + c] += w.w * v;
                }
            }
            if (n_blocks > 1u || m0 + BM >= m_end) {
                for (var i = 0u; i < 4u; i++) {
                    let q = q0 + 4u * tq + i;
                    for (var c = 0u; c < RC; c++) {
                        let c4 = b * DVB4 + tm + TM * c;
                        for (var k = 0u; k < 4u; k++) {
                            if (q < p.l && 4u * c4 + k < dv) {
                                part_o[out_index(q, split, dv, 4u * c4 + k)] = o[i * RC + c][k];
                            }
                        }
                    }
                }
            }
        }
    }

    // The row's statistics: sum and argmax reduced across its lanes once
    // (in ps's slots without subgroups, once every thread is done with p V).
    if (!(SUBGROUP && HAVE_SUBGROUPS)) {
        workgroupBarrier();
    }
    let total = row_sum(t, run_sum);
    let at = row_min_u(t, select(vec4<u32>(0xffffffffu), best_at, best == run_max));
    if (tm == 0u) {
        for (var i = 0u; i < 4u; i++) {
            let q = q0 + 4u * tq + i;
            if (q < p.l) {
                part_stats[q * p.n_splits + split] =
                    vec4<f32>(run_max[i] * LN2, total[i], bitcast<f32>(p.seg_row0 + at[i]), 0.0);
            }
        }
    }
}
