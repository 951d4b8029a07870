// Top-K and random-mask retrieval, pass 1 of 2: threshold, then collect,
// over one split of the memories, in one scoring sweep for any K. Pass 2
// (topk_merge.wgsl) chooses the K winners among the splits' candidates and
// folds them into z. The kernel before issue 9 (a heap of <= 64 per query,
// rounds of 64 for larger K) is topk_legacy.wgsl.
//
// Selection works on a u32 rank, larger is better, with the total order
// (rank desc, global index asc), so ties go to the lower index:
//   - top-K (`score_select`): rank = order-preserving bits of beta <x, xi>
//     (-0 and +0 rank equal, as in the reference);
//   - random (`hash_select`): rank = ~random_rank_key(seed, l, mu), the
//     u32-only hash of src/method.rs ported bit for bit below.
//
// Workgroup = (block of BQ queries, split). Scoring is dense.wgsl's
// register-tiled loop (shared/score_tile.wgsl). Each query has a threshold
// theta, the K-th best candidate it has kept (at first: nothing to beat),
// which every thread of its row holds in a register during a tile: a score
// that does not reach it costs one compare and nothing else. Survivors are
// appended (a workgroup atomic counter per query) to the query's candidate
// buffer for this split, a region of CAP entries in global memory: K up to
// and beyond 1024 would not fit workgroup memory beside the tile, and an
// append-only region needs no per-entry ordering. After a tile, every
// buffer that could overflow in the next one (more than CAP - BM entries)
// is compacted: its exact K-th best becomes theta (shared/radix_select.wgsl)
// and only the K entries at or above it stay. So each split ends with at
// most CAP candidates per query, among them all of the split's top K.
// The cost of the adversarial orders is bounded: scores rising along the
// memories make every score a survivor, and then a compaction every
// (CAP - K - BM) / BM tiles at most, which the host's loop budget for
// lavapipe counts (src/kernels/topk.rs).
//
// Reference: src/cpu/topk.rs (top_k_support, random_support) and
// src/method.rs (random_rank_key). Host side: src/kernels/topk.rs.
//
// #trusted every index is in range: scores are offered only for memories j < jmax of the bound segment and queries q < l of the sub-batch, a query's appends stay below CAP because either CAP > K + BM and its buffer is compacted (to K) whenever it holds more than CAP - BM (a tile adds at most BM), or CAP >= split_rows, which bounds the appends of a split, compaction writes below the count it read, regions are (query < l, split < n_splits) of a buffer the host sized l * n_splits * CAP, the bindings hold whole vec4s (padded by the host), and workgroup arrays are sized by the overrides that bound their loops; no divisor is 0 (WG, DK4, TQ, TM > 0).

alias elem = f32;

// Keep in sync with `SelectParams` in src/kernels/topk.rs.
struct Params {
    l: u32,          // queries in this sub-batch
    d: u32,          // pattern dimension
    seg_rows: u32,   // memories in the bound segment
    seg_row0: u32,   // global index of the segment's first memory
    split_rows: u32, // memories per split, a multiple of BM
    split0: u32,     // index of this segment's first split
    n_splits: u32,   // splits in all (stride of the regions)
    k: u32,          // candidates kept per query at a compaction (K, or M if smaller)
    beta: f32,
    cap: u32,        // entries per (query, split) region: > K + BM, or >= split_rows
    q_off: u32,      // first query of the sub-batch in `queries`
    l_global: u32,   // global index of the sub-batch's first query (hash input)
    seed_lo: u32,
    seed_hi: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32;                // threads per workgroup
override BQ: u32;                // queries per workgroup, a multiple of 4
override RM: u32;                // memories per thread and tile, <= 8
override DK: u32;                // dimensions staged per barrier, a multiple of 4
override PREFETCH: bool = false;
override D: u32 = 0u;            // the bank's d where fixed at pipeline creation
override KALIGN: bool = false;   // d is a multiple of 4 (vec4 loads of keys and queries only)
override TQ: u32 = BQ / 4u;
override TM: u32 = WG / TQ;
override BM: u32 = TM * RM;
override DK4: u32 = DK / 4u;
override PAD: bool = true;          // odd row stride on GPUs (banks), none on CPU devices
override KS4: u32 = select(DK4, DK4 + 1u - DK4 % 2u, PAD);
const EMPTY: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<elem>>;
// Per (query, split) region of `cap` entries: (rank, global index).
@group(0) @binding(3) var<storage, read_write> cand: array<vec2<u32>>;
// Per (query, split): entries in the region when the split is done.
@group(0) @binding(4) var<storage, read_write> counts: array<u32>;

var<workgroup> qs: array<vec4<f32>, BQ * KS4>;
var<workgroup> kv: array<vec4<f32>, BM * KS4>;
var<workgroup> cnt: array<atomic<u32>, BQ>;
var<workgroup> theta: array<vec2<u32>, BQ>;
// Buffers to compact after this tile, and how many.
var<workgroup> full: array<u32, BQ>;
var<workgroup> n_full: u32;
// The buffer being compacted: (first entry, entries), and its new count.
var<workgroup> region: vec2<u32>;
var<workgroup> kept: atomic<u32>;

// #include shared/score_tile.wgsl
// #include shared/radix_select.wgsl

fn set_regions() -> u32 {
    return 1u;
}

fn set_region(g: u32) -> vec2<u32> {
    return region;
}

// Order-preserving map of an f32 score to u32 (larger score, larger rank).
fn rank_of(s: f32) -> u32 {
    let b = bitcast<u32>(select(s, 0.0, s == 0.0));
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// Chris Wellons' lowbias32, lane-wise; keep in sync with
// `lowbias32` in src/method.rs (u32 multiplications wrap).
fn lowbias4(x0: vec4<u32>) -> vec4<u32> {
    var x = x0;
    x ^= x >> vec4<u32>(16u);
    x *= vec4<u32>(0x7feb352du);
    x ^= x >> vec4<u32>(15u);
    x *= vec4<u32>(0x846ca68bu);
    x ^= x >> vec4<u32>(16u);
    return x;
}

// First entry of query q's region (q within the workgroup's block).
fn region_base(q0: u32, q: u32, split: u32) -> u32 {
    return ((q0 + q) * p.n_splits + split) * p.cap;
}

fn begin(t: u32) {
    if (t < BQ) {
        atomicStore(&cnt[t], 0u);
        theta[t] = vec2<u32>(0u, EMPTY); // every candidate is ge this
    }
}

// Offer the thread's 4 x RM candidates (ranks r[r][i] of memory
// m0 + tm + TM r for query 4 tq + i) against the thresholds.
fn offer(tq: u32, tm: u32, q0: u32, m0: u32, jmax: u32, split: u32, r: ptr<function, array<vec4<u32>, 8>>) {
    var th: array<vec2<u32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        th[i] = theta[4u * tq + i];
    }
    // Per query: count this thread's survivors, take their places with one
    // atomic, then write them (one atomic per thread and query, not per
    // survivor: where most scores survive, atomics would dominate).
    for (var i = 0u; i < 4u; i++) {
        let q = 4u * tq + i;
        if (q0 + q >= p.l) {
            continue;
        }
        var n = 0u;
        for (var k = 0u; k < RM; k++) {
            let j = tm + TM * k;
            if (j < jmax && ge(vec2<u32>((*r)[k][i], p.seg_row0 + m0 + j), th[i])) {
                n++;
            }
        }
        if (n == 0u) {
            continue;
        }
        var at = region_base(q0, q, split) + atomicAdd(&cnt[q], n);
        for (var k = 0u; k < RM; k++) {
            let j = tm + TM * k;
            let c = vec2<u32>((*r)[k][i], p.seg_row0 + m0 + j);
            if (j < jmax && ge(c, th[i])) {
                cand[at] = c;
                at++;
            }
        }
    }
}

// Compact every buffer that the next tile could overflow.
fn compact_full(t: u32, q0: u32, split: u32) {
    storageBarrier();
    workgroupBarrier(); // every append of the tile is visible
    if (t == 0u) {
        var n = 0u;
        for (var q = 0u; q < BQ; q++) {
            let c = atomicLoad(&cnt[q]);
            // A buffer of at most K entries is never compacted: then the
            // host made it hold a whole split (cap >= split_rows).
            if (c + BM > p.cap && c > p.k) {
                full[n] = q;
                n++;
            }
        }
        n_full = n;
    }
    let nf = workgroupUniformLoad(&n_full);
    for (var f = 0u; f < nf; f++) {
        if (t == 0u) {
            let q = full[f];
            region = vec2<u32>(region_base(q0, q, split), atomicLoad(&cnt[q]));
            atomicStore(&kept, 0u);
        }
        let reg = workgroupUniformLoad(&region);
        let th = select_threshold(t, p.k);
        // Keep the entries ge th, in place: chunk by chunk of WG entries,
        // each read before any is written, and written below the count
        // kept so far (never past the chunk being read).
        for (var c0 = 0u; c0 < reg.y; c0 += WG) {
            let e = c0 + t;
            var c = vec2<u32>(0u, EMPTY);
            if (e < reg.y) {
                c = cand[reg.x + e];
            }
            storageBarrier();
            workgroupBarrier();
            if (e < reg.y && ge(c, th)) {
                cand[reg.x + atomicAdd(&kept, 1u)] = c;
            }
        }
        storageBarrier();
        workgroupBarrier();
        if (t == 0u) {
            let q = full[f];
            atomicStore(&cnt[q], atomicLoad(&kept));
            // Thresholds only rise: a bucket-wide theta may be looser than
            // the one before.
            if (ge(th, theta[q])) {
                theta[q] = th;
            }
        }
        workgroupBarrier();
    }
}

fn finish(t: u32, q0: u32, split: u32) {
    workgroupBarrier();
    if (t < BQ && q0 + t < p.l) {
        counts[(q0 + t) * p.n_splits + split] = atomicLoad(&cnt[t]);
    }
}

@compute @workgroup_size(WG)
fn score_select(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tq = t / TM;
    let tm = t % TM;
    let q0 = wg.x * BQ;
    let d = dims();
    let m_begin = wg.y * p.split_rows;
    let m_end = min(m_begin + p.split_rows, p.seg_rows);
    let split = p.split0 + wg.y;
    begin(t);
    if ((d + DK - 1u) / DK == 1u) {
        stage_queries(t, p.q_off, q0, p.l, d, 0u, p.beta);
    }
    prefetch_first(t, m_begin, m_end, d);
    for (var m0 = m_begin; m0 < m_end; m0 += BM) {
        var s: array<vec4<f32>, 8>;
        for (var k = 0u; k < RM; k++) {
            s[k] = vec4<f32>(0.0);
        }
        // beta is folded into the staged queries: s = <beta x, xi>.
        score_tile(t, tq, tm, p.q_off, q0, p.l, d, m0, m_end, p.beta, &s);
        var r: array<vec4<u32>, 8>;
        for (var k = 0u; k < RM; k++) {
            r[k] = vec4<u32>(rank_of(s[k].x), rank_of(s[k].y), rank_of(s[k].z), rank_of(s[k].w));
        }
        offer(tq, tm, q0, m0, min(BM, m_end - m0), split, &r);
        compact_full(t, q0, split);
    }
    finish(t, q0, split);
}

@compute @workgroup_size(WG)
fn hash_select(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tq = t / TM;
    let tm = t % TM;
    let q0 = wg.x * BQ;
    let m_begin = wg.y * p.split_rows;
    let m_end = min(m_begin + p.split_rows, p.seg_rows);
    let split = p.split0 + wg.y;
    begin(t);
    // random_rank_key(seed, l, mu) = lowbias32(h_l ^ mu), with h_l from the
    // seed and the query's global index l (queries 4 tq .. 4 tq + 3 here).
    let hs = lowbias4(lowbias4(vec4<u32>(p.seed_lo ^ 0x9e3779b9u)) ^ vec4<u32>(p.seed_hi));
    let h = lowbias4(hs ^ (vec4<u32>(p.l_global + q0 + 4u * tq) + vec4<u32>(0u, 1u, 2u, 3u)));
    workgroupBarrier(); // the counters are cleared
    for (var m0 = m_begin; m0 < m_end; m0 += BM) {
        var r: array<vec4<u32>, 8>;
        for (var k = 0u; k < RM; k++) {
            r[k] = ~lowbias4(h ^ vec4<u32>(p.seg_row0 + m0 + tm + TM * k));
        }
        offer(tq, tm, q0, m0, min(BM, m_end - m0), split, &r);
        compact_full(t, q0, split);
    }
    finish(t, q0, split);
}
