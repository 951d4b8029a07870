// Dense retrieval, pass 1 for a few queries (L <= 4): one workgroup per
// (query, split of the bound memory segment), so one query against a million
// memories spreads over thousands of workgroups (flash-decoding) without the
// 16-query tile of dense.wgsl computing 15 empty rows. It writes the same
// per-split partials as dense.wgsl (running max, sum, argmax, weighted sum),
// merged by dense_merge.wgsl.
//
// Per 64-memory tile: the keys are staged transposed in workgroup memory
// (coalesced reads, a 65-word stride so the transposing store has no bank
// conflicts), thread t scores memory t, thread 0 updates the online softmax,
// and thread t accumulates output columns t, t + 64, ... reading the value
// rows straight from global memory (consecutive threads, consecutive
// columns). With dv <= 64 the accumulator stays in a register; with more
// columns it lives in the split's row of part_o between tiles.
//
// Reference: src/cpu/dense.rs. Host side: src/kernels/dense.rs.

// Keep in sync with `DenseParams` in src/kernels/dense.rs (same as dense.wgsl).
struct Params {
    l: u32,
    d: u32,
    dv: u32,
    seg_rows: u32,
    seg_row0: u32,
    split_rows: u32,
    split0: u32,
    n_splits: u32,
    beta: f32,
    scores_only: u32,
    _pad0: u32,
    _pad1: u32,
}

// Tile shape, set by the host (`dense::Tile`, as dense.wgsl). One thread per
// memory of the tile, so BM = 64 (the workgroup size); DK is free.
override BM: u32;              // memories per tile
override DK: u32;              // dimensions staged per barrier
override KS: u32 = BM + 1u;    // row stride of the staged keys
// #include shared/online_softmax.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<f32>;
@group(0) @binding(3) var<storage, read> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> part_o: array<f32>;
@group(0) @binding(5) var<storage, read_write> part_stats: array<vec4<f32>>;

var<workgroup> xq: array<f32, DK>;       // the chunk of the query
var<workgroup> kv: array<f32, DK * KS>;  // keys of the tile, kv[k * KS + j]
var<workgroup> w: array<f32, BM>;        // scores, then exp(s - max)
var<workgroup> alpha: f32;             // rescale of the accumulators for this tile

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let q = wg.x;
    let m_begin = wg.y * p.split_rows;
    let m_end = min(m_begin + p.split_rows, p.seg_rows);
    let n_chunks = (p.d + DK - 1u) / DK;
    let n_blocks = (p.dv + 63u) / 64u;
    let split = p.split0 + wg.y;
    let out_row = (q * p.n_splits + split) * p.dv;

    var run = online_new(); // thread 0's running statistics
    var o = 0.0;       // column t while dv <= 64

    for (var m0 = m_begin; m0 < m_end; m0 += BM) {
        let jmax = min(BM, m_end - m0);
        var s = 0.0;
        for (var ch = 0u; ch < n_chunks; ch++) {
            let k0 = ch * DK;
            let kmax = min(DK, p.d - k0);
            workgroupBarrier(); // the previous readers of xq / kv are done
            if (t < kmax) {
                xq[t] = queries[q * p.d + k0 + t];
            }
            for (var e = t; e < BM * kmax; e += 64u) {
                let j = e / kmax;
                let k = e % kmax;
                var v = 0.0;
                if (j < jmax) {
                    v = keys[(m0 + j) * p.d + k0 + k];
                }
                kv[k * KS + j] = v;
            }
            workgroupBarrier();
            for (var k = 0u; k < kmax; k++) {
                s += xq[k] * kv[k * KS + t];
            }
        }
        w[t] = select(NEG, s * p.beta, t < jmax);
        workgroupBarrier();

        if (t == 0u) {
            var tile_max = NEG;
            var tile_arg = 0u;
            for (var j = 0u; j < jmax; j++) {
                if (w[j] > tile_max) { // strict: the lowest index wins ties
                    tile_max = w[j];
                    tile_arg = j;
                }
            }
            let new_max = online_max(&run, tile_max, m0 + tile_arg);
            var sum = 0.0;
            for (var j = 0u; j < jmax; j++) {
                let e = exp(w[j] - new_max);
                w[j] = e;
                sum += e;
            }
            alpha = online_add(&run, new_max, sum);
        }
        workgroupBarrier();

        if (p.scores_only == 0u) {
            let a = alpha;
            for (var b = 0u; b < n_blocks; b++) {
                let c = b * 64u + t;
                if (c < p.dv) {
                    var acc = o;
                    if (n_blocks > 1u) {
                        // The first tile starts from zero, never from stale memory.
                        acc = select(0.0, part_o[out_row + c], m0 != m_begin);
                    }
                    acc *= a;
                    for (var j = 0u; j < jmax; j++) {
                        acc += w[j] * values[(m0 + j) * p.dv + c];
                    }
                    if (n_blocks > 1u || m0 + BM >= m_end) {
                        part_o[out_row + c] = acc;
                    }
                    o = acc;
                }
            }
        }
    }
    if (t == 0u) {
        part_stats[q * p.n_splits + split] = vec4<f32>(run.max, run.sum, bitcast<f32>(p.seg_row0 + run.arg), 0.0);
    }
}
