// Dense retrieval, pass 1 of 2: tiled online softmax over one split of the
// memories (FlashAttention's inner loop, split over memory chunks as in
// flash-decoding). Pass 2 (dense_merge.wgsl) merges the splits.
//
// Workgroup (x, y) = (block of 16 queries, split of the bound memory
// segment). Per 64-memory tile it
//   1. stages the tile's keys (64 dims at a time) in workgroup memory and
//      computes the 16 x 64 scores, each thread a 4 x 4 register tile;
//   2. updates each query's running max and sum (online softmax) and turns
//      the scores into exp(s - max);
//   3. for each block of 64 output columns, stages the tile's values and
//      accumulates exp(s - max) * v into 4 x 4 register tiles of the output,
//      rescaled when the running max moves. With dv <= 64 the accumulators
//      stay in registers; with more columns they live in this split's rows
//      of part_o between tiles, so the scores are computed once, not once
//      per column block.
// No L x M score matrix ever reaches global memory. Per-thread state lives in
// named vec4 registers: loop-indexed private arrays are slow on lavapipe.
//
// Reference: src/cpu/dense.rs. Host side: src/kernels/dense.rs.

// Keep in sync with `DenseParams` in src/kernels/dense.rs.
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

// Tile shape, set by the host at pipeline creation (`dense::Tile` in
// src/kernels/dense.rs is the one place it is written). The thread layout
// below (64 threads = 4 groups of 4 queries x 16 lanes of 4 memories or
// columns) is written for BQ = 16, BM = DVB = 64; DK is free.
override BQ: u32;   // queries per workgroup
override BM: u32;   // memories per tile
override DK: u32;   // dimensions staged per barrier
override DVB: u32;  // output columns per workgroup
// Row stride of the staged keys. BM + 1: load_keys writes a column of the
// transposed tile per thread, and a stride of 64 words would put all 32
// threads of a GPU warp on one memory bank.
override KS: u32 = BM + 1u;
// #include shared/online_softmax.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<f32>;
@group(0) @binding(3) var<storage, read> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> part_o: array<f32>;
@group(0) @binding(5) var<storage, read_write> part_stats: array<vec4<f32>>;

// qs[k * 4 + g] = dimension k of the queries 4g .. 4g + 3 of the block.
var<workgroup> qs: array<vec4<f32>, DK * BQ / 4u>;
// Keys of the tile, transposed: kv[k * KS + j]; then its values:
// kv[j * DVB + c] (BM DVB <= DK KS for the shape above).
var<workgroup> kv: array<f32, DK * KS>;
// ps[j * 4 + g]: scores, then exp(s - max), of memory j for query group g.
var<workgroup> ps: array<vec4<f32>, BM * BQ / 4u>;
// Factor exp(old max - new max) by which each query's accumulator is rescaled.
var<workgroup> alpha: array<vec4<f32>, BQ / 4u>;

fn load_queries(t: u32, q0: u32, k0: u32, kmax: u32) {
    // 16 queries x kmax dims (zero beyond d); consecutive threads read
    // consecutive dims.
    for (var e = t; e < BQ * DK; e += 64u) {
        let qi = e / DK;
        let k = e % DK;
        var v = 0.0;
        if (q0 + qi < p.l && k < kmax) {
            v = queries[(q0 + qi) * p.d + k0 + k];
        }
        qs[k * 4u + qi / 4u][qi % 4u] = v;
    }
}

fn load_keys(t: u32, m0: u32, jmax: u32, k0: u32, kmax: u32) {
    // Only the kmax dims of the chunk that exist: a tile of d = 3 costs 3
    // loads per thread, not 64.
    for (var e = t; e < BM * kmax; e += 64u) {
        let j = e / kmax;
        let k = e % kmax;
        var v = 0.0;
        if (j < jmax) {
            v = keys[(m0 + j) * p.d + k0 + k];
        }
        kv[k * KS + j] = v;
    }
}

fn load_values(t: u32, m0: u32, jmax: u32, c0: u32, cmax: u32) {
    // Columns up to the next multiple of 16 past cmax are read by the
    // weighted sum below; the rest of the tile is never touched.
    let width = min(DVB, (cmax + 15u) / 16u * 16u);
    for (var e = t; e < BM * DVB; e += 64u) {
        if (e % DVB >= width) {
            continue;
        }
        let j = e / DVB;
        let c = e % DVB;
        var v = 0.0;
        if (j < jmax && c < cmax) {
            v = values[(m0 + j) * p.dv + c0 + c];
        }
        kv[j * DVB + c] = v;
    }
}

// Column c of the 4 queries q .. q + 3 (those that exist) in this split.
fn write_column(q: u32, split: u32, c: u32, o: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (q + i < p.l) {
            part_o[((q + i) * p.n_splits + split) * p.dv + c] = o[i];
        }
    }
}

fn read_column(q: u32, split: u32, c: u32) -> vec4<f32> {
    var o = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (q + i < p.l) {
            o[i] = part_o[((q + i) * p.n_splits + split) * p.dv + c];
        }
    }
    return o;
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tq = t / 16u;  // this thread's query group (queries 4 tq .. 4 tq + 3)
    let tm = t % 16u;  // this thread's lane: memories / columns tm + 16 i
    let q0 = wg.x * BQ;
    let qg = q0 + tq * 4u;
    let m_begin = wg.y * p.split_rows;
    let m_end = min(m_begin + p.split_rows, p.seg_rows);
    let n_chunks = (p.d + DK - 1u) / DK;
    let n_blocks = (p.dv + DVB - 1u) / DVB;
    let split = p.split0 + wg.y;

    // Running statistics of query t (threads 0..15 only).
    var run = online_new();
    // Output accumulators: o_c holds column tm + 16 c of the current column
    // block for the 4 queries of group tq.
    var o0 = vec4<f32>(0.0);
    var o1 = vec4<f32>(0.0);
    var o2 = vec4<f32>(0.0);
    var o3 = vec4<f32>(0.0);

    if (n_chunks == 1u) {
        load_queries(t, q0, 0u, p.d);
    }
    for (var m0 = m_begin; m0 < m_end; m0 += BM) {
        let jmax = min(BM, m_end - m0);
        // 1. Scores of the 16 queries against memories m0 + tm + 16 j.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        for (var ch = 0u; ch < n_chunks; ch++) {
            let kmax = min(DK, p.d - ch * DK);
            workgroupBarrier(); // the previous readers of qs / kv are done
            if (n_chunks > 1u) {
                load_queries(t, q0, ch * DK, kmax);
            }
            load_keys(t, m0, jmax, ch * DK, kmax);
            workgroupBarrier();
            for (var k = 0u; k < kmax; k++) {
                let q = qs[k * 4u + tq];
                let kb = k * KS + tm;
                s0 += q * kv[kb];
                s1 += q * kv[kb + 16u];
                s2 += q * kv[kb + 32u];
                s3 += q * kv[kb + 48u];
            }
        }
        let neg = vec4<f32>(NEG);
        ps[(tm) * 4u + tq] = select(neg, s0 * p.beta, tm < jmax);
        ps[(tm + 16u) * 4u + tq] = select(neg, s1 * p.beta, tm + 16u < jmax);
        ps[(tm + 32u) * 4u + tq] = select(neg, s2 * p.beta, tm + 32u < jmax);
        ps[(tm + 48u) * 4u + tq] = select(neg, s3 * p.beta, tm + 48u < jmax);
        workgroupBarrier();

        // 2. Online softmax, one thread per query.
        if (t < BQ) {
            let g = t / 4u;
            let c = t % 4u;
            var tile_max = NEG;
            var tile_arg = 0u;
            for (var j = 0u; j < jmax; j++) {
                let s = ps[j * 4u + g][c];
                if (s > tile_max) { // strict: the lowest index wins ties
                    tile_max = s;
                    tile_arg = j;
                }
            }
            let new_max = online_max(&run, tile_max, m0 + tile_arg);
            var sum = 0.0;
            for (var j = 0u; j < jmax; j++) {
                let e = exp(ps[j * 4u + g][c] - new_max);
                ps[j * 4u + g][c] = e;
                sum += e;
            }
            alpha[g][c] = online_add(&run, new_max, sum);
        }
        workgroupBarrier();

        // 3. Accumulate exp(s - max) * v, one block of 64 columns at a time.
        if (p.scores_only == 0u) {
            let a = alpha[tq];
            for (var b = 0u; b < n_blocks; b++) {
                let c0 = b * DVB + tm;
                if (b > 0u) {
                    workgroupBarrier(); // the previous block's readers of kv are done
                }
                load_values(t, m0, jmax, b * DVB, min(DVB, p.dv - b * DVB));
                workgroupBarrier();
                if (n_blocks > 1u) {
                    // Accumulators of this block from the previous tile; the
                    // first tile starts from zero (never from stale memory,
                    // which 0 * NaN would not clear).
                    o0 = vec4<f32>(0.0);
                    o1 = vec4<f32>(0.0);
                    o2 = vec4<f32>(0.0);
                    o3 = vec4<f32>(0.0);
                    if (m0 != m_begin) {
                        if (c0 < p.dv) { o0 = read_column(qg, split, c0); }
                        if (c0 + 16u < p.dv) { o1 = read_column(qg, split, c0 + 16u); }
                        if (c0 + 32u < p.dv) { o2 = read_column(qg, split, c0 + 32u); }
                        if (c0 + 48u < p.dv) { o3 = read_column(qg, split, c0 + 48u); }
                    }
                }
                o0 *= a;
                o1 *= a;
                o2 *= a;
                o3 *= a;
                // Register columns past dv are skipped: the condition is the
                // same for the whole workgroup, so small dv costs little.
                let cmax = min(DVB, p.dv - b * DVB);
                if (cmax > 48u) {
                    for (var j = 0u; j < jmax; j++) {
                        let w = ps[j * 4u + tq];
                        let vb = j * DVB + tm;
                        o0 += w * kv[vb];
                        o1 += w * kv[vb + 16u];
                        o2 += w * kv[vb + 32u];
                        o3 += w * kv[vb + 48u];
                    }
                } else if (cmax > 16u) {
                    for (var j = 0u; j < jmax; j++) {
                        let w = ps[j * 4u + tq];
                        let vb = j * DVB + tm;
                        o0 += w * kv[vb];
                        o1 += w * kv[vb + 16u];
                        o2 += w * kv[vb + 32u];
                    }
                } else {
                    for (var j = 0u; j < jmax; j++) {
                        o0 += ps[j * 4u + tq] * kv[j * DVB + tm];
                    }
                }
                if (n_blocks > 1u || m0 + BM >= m_end) {
                    if (c0 < p.dv) { write_column(qg, split, c0, o0); }
                    if (c0 + 16u < p.dv) { write_column(qg, split, c0 + 16u, o1); }
                    if (c0 + 32u < p.dv) { write_column(qg, split, c0 + 32u, o2); }
                    if (c0 + 48u < p.dv) { write_column(qg, split, c0 + 48u, o3); }
                }
            }
        }
    }

    if (t < BQ && q0 + t < p.l) {
        part_stats[(q0 + t) * p.n_splits + split] =
            vec4<f32>(run.max, run.sum, bitcast<f32>(p.seg_row0 + run.arg), 0.0);
    }
}
