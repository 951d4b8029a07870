// Sliding-window retrieval (SEMANTICS.md "Sparse-structured retrieval",
// Nonparametric Modern Hopfield Models eq. (3.9)): the softmax of query l runs
// over the memories of its window [a_l, b_l) only, every other memory has
// weight exactly 0, and only the window's memories are read: O(L W d).
//
// The host computes each query's window exactly (u64/u128 centre
// floor(l M / L), see method::window_range) and uploads it with the
// indices of the first and last memory segment it touches: l M overflows u32.
//
// Two entry points, as the dense split-merge:
//   part:  one workgroup per (query, chunk j of at most `chunk` window
//          positions), dispatched once per memory segment; it covers the
//          chunk's intersection with the bound segment and writes the
//          partial (max, sum of exp(s - max), sum of exp(s - max) v) into
//          slot (query, segment - first segment of the window, j). A chunk
//          that misses the segment writes an empty slot (sum 0), so every
//          slot the merge reads was written this step.
//   merge: one workgroup per query: combines its slots, writes z and, if
//          asked, the support (the window's indices, -1 padded).
// Chunks keep every invocation inside llvmpipe's loop limiter (the host sizes
// `chunk` from Context::loop_budget).
//
// Reference: src/cpu/window.rs. Host: src/kernels/window.rs.

// Keep in sync with `WindowParams` in src/kernels/window.rs.
struct Params {
    l: u32,        // queries in this sub-batch
    q_off: u32,    // index of the sub-batch's first query in the batch
    d: u32,
    dv: u32,
    seg: u32,      // index of the bound segment
    seg_row0: u32, // global index of its first memory
    seg_rows: u32, // memories in it
    chunk: u32,    // window positions per chunk (<= CH_MAX)
    n_chunks: u32, // chunk slots per (query, segment slot)
    n_segs: u32,   // segment slots per query
    width: u32,    // support columns; 0: no support output
    groups_x: u32, // workgroups along x; the query is x + y * groups_x
    beta: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Window positions per workgroup at most, set by the host (`window::CH_MAX`).
override CH_MAX: u32;
// #include shared/neg.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<f32>;
// Per query of the batch: (a, b, first segment, last segment), window [a, b).
@group(0) @binding(2) var<storage, read> win: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> keys: array<f32>;
@group(0) @binding(4) var<storage, read> values: array<f32>;
@group(0) @binding(5) var<storage, read_write> part_o: array<f32>;
@group(0) @binding(6) var<storage, read_write> part_stats: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> z: array<f32>;
@group(0) @binding(8) var<storage, read_write> support: array<i32>;

// Scores, then exp(s - max), of the chunk's memories.
var<workgroup> sc: array<f32, CH_MAX>;
var<workgroup> red: array<f32, 64>;
var<workgroup> wwin: vec4<u32>;

fn reduce(t: u32, v: f32, is_max: bool) -> f32 {
    workgroupBarrier(); // earlier readers of red are done
    red[t] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) {
            if (is_max) {
                red[t] = max(red[t], red[t + s]);
            } else {
                red[t] = red[t] + red[t + s];
            }
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red[0]);
}

@compute @workgroup_size(64)
fn part(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let ql = wg.x + wg.y * p.groups_x;
    if (ql >= p.l) {
        return; // uniform: depends on the workgroup only
    }
    let q = p.q_off + ql;
    if (t == 0u) {
        wwin = win[q];
    }
    let w = workgroupUniformLoad(&wwin);
    let j = wg.z;
    if (p.seg < w.z || p.seg > w.w || j * p.chunk >= w.y - w.x) {
        return; // no slot of this query for this (segment, chunk)
    }
    let slot = (ql * p.n_segs + (p.seg - w.z)) * p.n_chunks + j;
    let lo = max(w.x + j * p.chunk, p.seg_row0);
    let hi = min(min(w.x + (j + 1u) * p.chunk, w.y), p.seg_row0 + p.seg_rows);
    if (lo >= hi) {
        if (t == 0u) {
            part_stats[slot] = vec2<f32>(NEG, 0.0);
        }
        return;
    }
    let n = hi - lo;
    let r0 = lo - p.seg_row0;

    var local_max = NEG;
    for (var i = t; i < n; i += 64u) {
        let kb = (r0 + i) * p.d;
        var acc = 0.0;
        for (var c = 0u; c < p.d; c++) {
            acc += queries[q * p.d + c] * keys[kb + c];
        }
        let s = acc * p.beta;
        sc[i] = s;
        local_max = max(local_max, s);
    }
    let m = reduce(t, local_max, true);
    var local_sum = 0.0;
    for (var i = t; i < n; i += 64u) {
        let e = exp(sc[i] - m);
        sc[i] = e;
        local_sum += e;
    }
    let sum = reduce(t, local_sum, false); // its barriers also publish sc
    for (var c = t; c < p.dv; c += 64u) {
        var o = 0.0;
        for (var i = 0u; i < n; i++) {
            o += sc[i] * values[(r0 + i) * p.dv + c];
        }
        part_o[slot * p.dv + c] = o;
    }
    if (t == 0u) {
        part_stats[slot] = vec2<f32>(m, sum);
    }
}

@compute @workgroup_size(64)
fn merge(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let ql = wg.x + wg.y * p.groups_x;
    if (ql >= p.l) {
        return;
    }
    let q = p.q_off + ql;
    let w = win[q];
    let nj = (w.y - w.x + p.chunk - 1u) / p.chunk;
    let nk = w.w - w.z + 1u;
    let base = ql * p.n_segs * p.n_chunks;
    // Every slot (k < nk, j < nj) was written by segment w.z + k this step;
    // empty ones carry sum 0 and are skipped.
    var m = NEG;
    for (var k = 0u; k < nk; k++) {
        for (var j = 0u; j < nj; j++) {
            let st = part_stats[base + k * p.n_chunks + j];
            if (st.y > 0.0) {
                m = max(m, st.x);
            }
        }
    }
    var sum = 0.0;
    for (var k = 0u; k < nk; k++) {
        for (var j = 0u; j < nj; j++) {
            let st = part_stats[base + k * p.n_chunks + j];
            if (st.y > 0.0) {
                sum += st.y * exp(st.x - m);
            }
        }
    }
    // The window is never empty (w >= 1 and it holds its centre): sum >= 1.
    for (var c = t; c < p.dv; c += 64u) {
        var o = 0.0;
        for (var k = 0u; k < nk; k++) {
            for (var j = 0u; j < nj; j++) {
                let s = base + k * p.n_chunks + j;
                let st = part_stats[s];
                if (st.y > 0.0) {
                    o += part_o[s * p.dv + c] * exp(st.x - m);
                }
            }
        }
        z[q * p.dv + c] = o / sum;
    }
    for (var i = t; i < p.width; i += 64u) {
        support[q * p.width + i] = select(-1, i32(w.x + i), w.x + i < w.y);
    }
}
