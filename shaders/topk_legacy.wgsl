// Top-K and random-mask retrieval, pass 1 of 2: fused selection over one
// split of the memories. Pass 2 (topk_merge.wgsl) merges the splits' lists.
//
// Design. Selection works on a u32 "rank" where larger is better and the
// total order is (rank desc, global index asc), so ties go to the lower index:
//   - top-K (`score_select`): rank = order-preserving bits of beta <x, xi>
//     (-0 and +0 rank equal, as in the reference);
//   - random (`hash_select`): rank = ~random_rank_key(seed, l, mu), the
//     u32-only hash of src/method.rs ported bit for bit below; only the
//     hash is computed here, the selected memories are scored in pass 2.
// Workgroup = (block of 16 queries, split). Scoring reuses dense.wgsl's tile:
// 64 memories per tile, keys staged 64 dims at a time, each thread a 4 x 4
// register tile of scores; the L x M scores never leave workgroup memory.
// Per tile the 16 x 64 ranks go to workgroup memory and one thread per query
// offers its 64 candidates to a binary heap of `take` (<= 64) entries held in
// workgroup memory, whose root is the current K-th best (the threshold): a
// candidate that does not beat it is rejected with one compare, the common
// case once the heap is full; an accepted one replaces the root and sifts
// down (<= 6 steps, so even adversarial orders, where every candidate is
// accepted, stay cheap and inside lavapipe's loop limiter). All compares use
// the total order, so ties keep the lower index. Each split heapsorts its
// heap and writes it best first (padded with EMPTY) to `part`.
//
// K > 64 runs in rounds of at most 64: round r admits only candidates that
// come after the pivot (the last entry chosen in round r - 1) in the total
// order, so each round yields the next 64 of the ranking. A round costs one
// more scoring sweep; that is the slower path for large K.
//
// Reference: src/cpu/topk.rs (top_k_support, random_support) and
// src/method.rs (random_rank_key). Host side: src/kernels/topk.rs.

// Keep in sync with `SelectParams` in src/kernels/topk.rs.
struct Params {
    l: u32,          // queries in this sub-batch
    d: u32,          // pattern dimension
    seg_rows: u32,   // memories in the bound segment
    seg_row0: u32,   // global index of the segment's first memory
    split_rows: u32, // memories per split, a multiple of BM
    split0: u32,     // index of this segment's first split
    n_splits: u32,   // splits in all (stride of `part`)
    take: u32,       // list length this round (1..=64)
    beta: f32,
    round: u32,      // 0: no pivot yet
    q_off: u32,      // first query of the sub-batch in `queries`
    l_global: u32,   // global index of the sub-batch's first query (hash input)
    seed_lo: u32,
    seed_hi: u32,
    _pad0: u32,
    _pad1: u32,
}

// Tile shape and list length, set by the host (`topk::Shape` in
// src/kernels/topk.rs). The thread layout (64 threads = 4 groups of 4
// queries x 16 lanes of 4 memories; one thread per query offers) is written
// for BQ = 16, BM = 64; DK is free; KF <= 64 (the merge's reduction width).
override BQ: u32;  // queries per workgroup
override BM: u32;  // memories per tile
override DK: u32;  // dimensions staged per barrier
override KF: u32;  // longest list per query and round
const EMPTY: u32 = 0xffffffffu; // index of a padding entry (rank 0): loses to every memory

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<f32>;
// Per query of the sub-batch: (pivot rank, pivot index, running max bits,
// running sum bits).
@group(0) @binding(3) var<storage, read> pivots: array<vec4<u32>>;
// Per (query, split): `take` (rank, index) pairs, best first.
@group(0) @binding(4) var<storage, read_write> part: array<vec2<u32>>;

// qs[k * 4 + g] = dimension k of queries 4g .. 4g + 3 of the block.
var<workgroup> qs: array<vec4<f32>, DK * BQ / 4u>;
// Keys of the tile as f32 bits, transposed (kv[k * BM + j]); after scoring,
// the ranks of the tile: kv[j * BQ + query] (BM BQ <= DK BM for DK >= BQ).
var<workgroup> kv: array<u32, DK * BM>;
// lists[t * KF ..]: query t's heap of its best candidates (root: the worst).
var<workgroup> lists: array<vec2<u32>, BQ * KF>;

// Order-preserving map of an f32 score to u32 (larger score, larger rank).
fn rank_of(s: f32) -> u32 {
    let b = bitcast<u32>(select(s, 0.0, s == 0.0));
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// Whether a comes strictly before b: higher rank, then lower index.
fn better(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y < b.y);
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

fn load_queries(t: u32, q0: u32, k0: u32) {
    for (var i = 0u; i < BQ * DK / 64u; i++) {
        let e = t + 64u * i;
        let qi = e / DK;
        let k = e % DK;
        var v = 0.0;
        if (q0 + qi < p.l && k0 + k < p.d) {
            v = queries[(p.q_off + q0 + qi) * p.d + k0 + k];
        }
        qs[k * 4u + qi / 4u][qi % 4u] = v;
    }
}

fn load_keys(t: u32, m0: u32, m_end: u32, k0: u32) {
    for (var i = 0u; i < BM * DK / 64u; i++) {
        let e = t + 64u * i;
        let j = e / DK;
        let k = e % DK;
        var v = 0.0;
        if (m0 + j < m_end && k0 + k < p.d) {
            v = keys[(m0 + j) * p.d + k0 + k];
        }
        kv[k * BM + j] = bitcast<u32>(v);
    }
}

// Ranks of memory j for the 4 queries of group g.
fn put(j: u32, g: u32, r: vec4<u32>) {
    let b = j * BQ + 4u * g;
    kv[b] = r.x;
    kv[b + 1u] = r.y;
    kv[b + 2u] = r.z;
    kv[b + 3u] = r.w;
}

// Sift entry c down from position pos of the heap lists[base .. base + n)
// (root = worst entry: every parent is worse than its children).
fn sift_down(base: u32, pos0: u32, n: u32, c: vec2<u32>) {
    var pos = pos0;
    loop {
        let l = 2u * pos + 1u;
        if (l >= n) {
            break;
        }
        var w = l; // the worse child
        if (l + 1u < n && better(lists[base + l], lists[base + l + 1u])) {
            w = l + 1u;
        }
        if (!better(c, lists[base + w])) {
            break;
        }
        lists[base + pos] = lists[base + w];
        pos = w;
    }
    lists[base + pos] = c;
}

// Offer the tile's candidates (memories m0 .. m0 + jmax of the segment) to
// query t's heap of `cnt` entries (at most `take`).
fn offer(t: u32, m0: u32, jmax: u32, cnt: ptr<function, u32>, pivot: vec2<u32>, has_pivot: bool) {
    let base = t * KF;
    for (var j = 0u; j < jmax; j++) {
        let c = vec2<u32>(kv[j * BQ + t], p.seg_row0 + m0 + j);
        if (has_pivot && !better(pivot, c)) {
            continue; // chosen in an earlier round
        }
        let n = *cnt;
        if (n == p.take) {
            if (better(c, lists[base])) {
                sift_down(base, 0u, n, c); // replaces the worst entry
            }
            // else the common case: not above the threshold, one compare
            continue;
        }
        // Filling: append and sift up.
        var pos = n;
        loop {
            if (pos == 0u) {
                break;
            }
            let parent = (pos - 1u) / 2u;
            if (!better(lists[base + parent], c)) {
                break;
            }
            lists[base + pos] = lists[base + parent];
            pos = parent;
        }
        lists[base + pos] = c;
        *cnt = n + 1u;
    }
}

// Heapsort query t's heap in place, best first, and write it out padded.
fn write_list(t: u32, q0: u32, split: u32, cnt: u32) {
    let base = t * KF;
    for (var end = cnt; end > 1u; end--) {
        // The worst entry goes to the back; the rest is re-heaped.
        let last = lists[base + end - 1u];
        lists[base + end - 1u] = lists[base];
        sift_down(base, 0u, end - 1u, last);
    }
    if (q0 + t < p.l) {
        let out = ((q0 + t) * p.n_splits + split) * p.take;
        for (var i = 0u; i < p.take; i++) {
            var e = vec2<u32>(0u, EMPTY);
            if (i < cnt) {
                e = lists[base + i];
            }
            part[out + i] = e;
        }
    }
}

fn pivot_of(t: u32, q0: u32) -> vec2<u32> {
    if (p.round > 0u && q0 + t < p.l) {
        return pivots[q0 + t].xy;
    }
    return vec2<u32>(0u, 0u);
}

@compute @workgroup_size(64)
fn score_select(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tq = t / 16u;
    let tm = t % 16u;
    let q0 = wg.x * BQ;
    let m_begin = wg.y * p.split_rows;
    let m_end = min(m_begin + p.split_rows, p.seg_rows);
    let n_chunks = (p.d + DK - 1u) / DK;
    let has_pivot = p.round > 0u;
    let pivot = pivot_of(t, q0);
    var cnt = 0u;

    if (n_chunks == 1u) {
        load_queries(t, q0, 0u);
    }
    for (var m0 = m_begin; m0 < m_end; m0 += BM) {
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        for (var ch = 0u; ch < n_chunks; ch++) {
            workgroupBarrier(); // the previous readers of qs / kv are done
            if (n_chunks > 1u) {
                load_queries(t, q0, ch * DK);
            }
            load_keys(t, m0, m_end, ch * DK);
            workgroupBarrier();
            let kmax = min(DK, p.d - ch * DK);
            for (var k = 0u; k < kmax; k++) {
                let q = qs[k * 4u + tq];
                let kb = k * BM + tm;
                s0 += q * bitcast<f32>(kv[kb]);
                s1 += q * bitcast<f32>(kv[kb + 16u]);
                s2 += q * bitcast<f32>(kv[kb + 32u]);
                s3 += q * bitcast<f32>(kv[kb + 48u]);
            }
        }
        workgroupBarrier(); // the keys are read; kv now takes the ranks
        let b = p.beta;
        s0 *= b;
        s1 *= b;
        s2 *= b;
        s3 *= b;
        put(tm, tq, vec4<u32>(rank_of(s0.x), rank_of(s0.y), rank_of(s0.z), rank_of(s0.w)));
        put(tm + 16u, tq, vec4<u32>(rank_of(s1.x), rank_of(s1.y), rank_of(s1.z), rank_of(s1.w)));
        put(tm + 32u, tq, vec4<u32>(rank_of(s2.x), rank_of(s2.y), rank_of(s2.z), rank_of(s2.w)));
        put(tm + 48u, tq, vec4<u32>(rank_of(s3.x), rank_of(s3.y), rank_of(s3.z), rank_of(s3.w)));
        workgroupBarrier();
        if (t < BQ) {
            offer(t, m0, min(BM, m_end - m0), &cnt, pivot, has_pivot);
        }
    }
    if (t < BQ) {
        write_list(t, q0, p.split0 + wg.y, cnt);
    }
}

@compute @workgroup_size(64)
fn hash_select(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tq = t / 16u;
    let tm = t % 16u;
    let q0 = wg.x * BQ;
    let m_begin = wg.y * p.split_rows;
    let m_end = min(m_begin + p.split_rows, p.seg_rows);
    let has_pivot = p.round > 0u;
    let pivot = pivot_of(t, q0);
    var cnt = 0u;

    // random_rank_key(seed, l, mu) = lowbias32(h_l ^ mu), with h_l from the
    // seed and the query's global index l (queries 4 tq .. 4 tq + 3 here).
    let hs = lowbias4(lowbias4(vec4<u32>(p.seed_lo ^ 0x9e3779b9u)) ^ vec4<u32>(p.seed_hi));
    let l4 = vec4<u32>(p.l_global + q0 + 4u * tq) + vec4<u32>(0u, 1u, 2u, 3u);
    let h = lowbias4(hs ^ l4);

    for (var m0 = m_begin; m0 < m_end; m0 += BM) {
        workgroupBarrier(); // the previous tile's ranks are read
        let mu = p.seg_row0 + m0 + tm;
        put(tm, tq, ~lowbias4(h ^ vec4<u32>(mu)));
        put(tm + 16u, tq, ~lowbias4(h ^ vec4<u32>(mu + 16u)));
        put(tm + 32u, tq, ~lowbias4(h ^ vec4<u32>(mu + 32u)));
        put(tm + 48u, tq, ~lowbias4(h ^ vec4<u32>(mu + 48u)));
        workgroupBarrier();
        if (t < BQ) {
            offer(t, m0, min(BM, m_end - m0), &cnt, pivot, has_pivot);
        }
    }
    if (t < BQ) {
        write_list(t, q0, p.split0 + wg.y, cnt);
    }
}
