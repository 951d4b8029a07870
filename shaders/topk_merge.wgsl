// Top-K and random-mask retrieval, pass 2 of 2: from every split's
// candidates (topk.wgsl), the K winners of each query, then the softmax over
// them only and z.
//
// `choose`, one workgroup per query: the exact K-th best of the union of
// the query's regions by radix select (shared/radix_select.wgsl), then the
// K entries at or above it gathered into the query's winner row (any
// order). With a support output the row is sorted by a bitonic network in
// place (top-K: score desc, index asc, the reference's order; random:
// index asc) and its indices written out.
// `fold`, one workgroup per query, once per bound segment (a bank of
// several segments binds its keys and values one at a time): the scores of
// the winners in this segment (top-K: decoded from the rank bits, exact;
// random: beta <x, xi> computed here), their running max and sum across
// segments, and z <- z * exp(old max - new max) + sum_i exp(s_i - max) v_i,
// divided by the sum on the last segment: the softmax over the support
// only, weight exactly 0 elsewhere (eq. (3.9)), no rescaling of the kept
// logits. Threads are (16 columns, winner lane) pairs, so no thread walks
// all K winners of a column alone, and a winner's index and weight serve 16
// columns.
//
// Reference: src/cpu/topk.rs. Host side: src/kernels/topk.rs.
//
// #trusted every index is in range: the query ql < l (workgroups past l return), regions are (ql, split < n_splits) with counts <= cap written by topk.wgsl, exactly k <= pw winners are gathered (the threshold keeps exactly k), winner rows hold pw entries for each of the l queries, winners index memories of the bank and are dereferenced only inside the bound segment (is_local), columns are c < dv and dimensions k < d, and the host sized z, the support and the state for the step's queries.

// Keep in sync with `SelectMergeParams` in src/kernels/topk.rs.
struct Params {
    l: u32,        // queries in this sub-batch
    d: u32,
    dv: u32,
    n_splits: u32,
    k: u32,        // winners per query (K, or M if smaller)
    cap: u32,      // entries per (query, split) region
    width: u32,    // support row length
    q_off: u32,    // first query of the sub-batch in the step's buffers
    groups_x: u32, // workgroups along x; the query is x + y * groups_x
    random: u32,   // 1: score the winners here (random mask)
    beta: f32,
    support: u32,  // 1: sort the winners and write their indices
    seg_row0: u32, // global index of the bound segment's first memory
    seg_rows: u32, // memories in the bound segment
    first: u32,    // fold: the first segment (z starts from nothing)
    last: u32,     // fold: the last segment (divide by the sum)
    pw: u32,       // winner row stride: k rounded up to a power of two
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 256u;       // threads per workgroup, a power of two
override VALIGN: bool = false; // dv is a multiple of 4 (vec4 loads of values only)
const EMPTY: u32 = 0xffffffffu;
// #include shared/neg.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> cand: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> counts: array<u32>;
@group(0) @binding(3) var<storage, read_write> win: array<vec2<u32>>;
// Per winner: its score, then its weight exp(s - max) in the bound segment.
@group(0) @binding(4) var<storage, read_write> wts: array<f32>;
// Per query of the sub-batch: running (max, sum) over the segments so far.
@group(0) @binding(5) var<storage, read_write> state: array<vec2<f32>>;
@group(0) @binding(6) var<storage, read> queries: array<f32>;
@group(0) @binding(7) var<storage, read> keys: array<f32>;
// Read as vec4s (four columns at a time; the host binds whole vec4s).
@group(0) @binding(8) var<storage, read> values: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> z: array<f32>;
@group(0) @binding(10) var<storage, read_write> sup: array<i32>;

var<workgroup> nwin: atomic<u32>;
var<workgroup> red: array<vec4<f32>, WG>;
// The query this workgroup serves (set_region needs it).
var<private> cur: u32;

// #include shared/radix_select.wgsl

fn set_regions() -> u32 {
    return p.n_splits;
}

fn set_region(g: u32) -> vec2<u32> {
    let r = cur * p.n_splits + g;
    return vec2<u32>(r * p.cap, counts[r]);
}

// Inverse of topk.wgsl's rank_of.
fn score_of(r: u32) -> f32 {
    return bitcast<f32>(select(~r, r & 0x7fffffffu, (r & 0x80000000u) != 0u));
}

// Whether memory mu lies in the bound segment.
fn is_local(mu: u32) -> bool {
    return mu >= p.seg_row0 && mu - p.seg_row0 < p.seg_rows;
}

// Sort order of the support: top-K by (rank desc, index asc), random by index.
fn before(a: vec2<u32>, b: vec2<u32>) -> bool {
    if (p.random == 1u) {
        return a.y < b.y;
    }
    return a.x > b.x || (a.x == b.x && a.y < b.y);
}

// op 0: max, 1: sum over the workgroup (every thread gets it).
fn reduce(t: u32, v: f32, op: u32) -> f32 {
    red[t].x = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t].x = select(max(red[t].x, red[t + s].x), red[t].x + red[t + s].x, op == 1u);
        }
        workgroupBarrier();
    }
    let r = red[0].x;
    workgroupBarrier();
    return r;
}

// Columns 4 c4 .. 4 c4 + 3 of value row `row` of the bound segment; zero past dv.
fn value4(row: u32, c4: u32) -> vec4<f32> {
    let k = 4u * c4;
    if (VALIGN) {
        return values[(row * p.dv + k) >> 2u];
    }
    var v = vec4<f32>(0.0);
    let e = row * p.dv + k;
    for (var c = 0u; c < 4u; c++) {
        if (k + c < p.dv) {
            v[c] = values[(e + c) >> 2u][(e + c) & 3u];
        }
    }
    return v;
}

@compute @workgroup_size(WG)
fn choose(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let ql = wg.x + wg.y * p.groups_x;
    if (ql >= p.l) {
        return; // uniform: depends on the workgroup only
    }
    cur = ql;
    let th = select_threshold(t, p.k);
    if (t == 0u) {
        atomicStore(&nwin, 0u);
    }
    workgroupBarrier();
    let base = ql * p.pw;
    for (var g = 0u; g < p.n_splits; g++) {
        let reg = set_region(g);
        for (var e = t; e < reg.y; e += WG) {
            let c = cand[reg.x + e];
            if (ge(c, th)) {
                win[base + atomicAdd(&nwin, 1u)] = c;
            }
        }
    }
    for (var i = p.k + t; i < p.pw; i += WG) {
        win[base + i] = vec2<u32>(0u, EMPTY); // after every real entry in both orders
    }
    if (p.support == 0u) {
        return;
    }
    // Bitonic sort of the row, best first.
    for (var size = 2u; size <= p.pw; size <<= 1u) {
        for (var stride = size / 2u; stride > 0u; stride >>= 1u) {
            storageBarrier();
            workgroupBarrier();
            for (var i = t; i < p.pw / 2u; i += WG) {
                let lo = 2u * stride * (i / stride) + i % stride;
                let hi = lo + stride;
                let a = win[base + lo];
                let b = win[base + hi];
                let up = (lo & size) == 0u;
                if (select(before(a, b), before(b, a), up)) {
                    win[base + lo] = b;
                    win[base + hi] = a;
                }
            }
        }
    }
    storageBarrier();
    workgroupBarrier();
    let q = p.q_off + ql;
    for (var i = t; i < p.width; i += WG) {
        sup[q * p.width + i] = i32(win[base + i].y);
    }
}

@compute @workgroup_size(WG)
fn fold(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let ql = wg.x + wg.y * p.groups_x;
    if (ql >= p.l) {
        return; // uniform: depends on the workgroup only
    }
    let q = p.q_off + ql;
    let base = ql * p.pw;

    // Scores of the winners in this segment, and their max.
    var lmax = NEG;
    for (var i = t; i < p.k; i += WG) {
        let e = win[base + i];
        var s = NEG;
        if (is_local(e.y)) {
            if (p.random == 1u) {
                let row = (e.y - p.seg_row0) * p.d;
                var acc = 0.0;
                for (var k = 0u; k < p.d; k++) {
                    acc += queries[q * p.d + k] * keys[row + k];
                }
                s = acc * p.beta;
            } else {
                s = score_of(e.x);
            }
        }
        wts[base + i] = s;
        lmax = max(lmax, s);
    }
    lmax = reduce(t, lmax, 0u);
    var old = vec2<f32>(NEG, 0.0);
    if (p.first == 0u) {
        old = state[ql];
    }
    let mx = max(old.x, lmax);
    // exp(NEG - mx) = 0 for any admitted score (|s| < 1e30): a first
    // segment starts from nothing.
    let alpha = exp(old.x - mx);
    var lsum = 0.0;
    for (var i = t; i < p.k; i += WG) {
        var e = 0.0;
        if (is_local(win[base + i].y)) {
            e = exp(wts[base + i] - mx);
        }
        wts[base + i] = e;
        lsum += e;
    }
    let sum = old.y * alpha + reduce(t, lsum, 1u);
    storageBarrier();
    workgroupBarrier(); // the weights are written

    // z: threads are (group of up to 4 vec4 columns, winner lane) pairs:
    // each winner's index and weight are loaded once per 16 columns.
    let dv4 = (p.dv + 3u) / 4u;
    let groups = (dv4 + 3u) / 4u;
    let cl_n = min(groups, WG);
    let sl_n = WG / cl_n;
    let cl = t % cl_n;
    let sl = t / cl_n;
    for (var g0 = 0u; g0 < groups; g0 += cl_n) {
        let g = g0 + cl;
        var acc: array<vec4<f32>, 4>;
        if (sl < sl_n && g < groups) {
            for (var i = sl; i < p.k; i += sl_n) {
                let mu = win[base + i].y;
                if (is_local(mu)) {
                    let w = wts[base + i];
                    let row = mu - p.seg_row0;
                    for (var c = 0u; c < 4u; c++) {
                        if (4u * g + c < dv4) {
                            acc[c] += w * value4(row, 4u * g + c);
                        }
                    }
                }
            }
        }
        for (var c = 0u; c < 4u; c++) {
            red[t] = acc[c];
            workgroupBarrier();
            let c4 = 4u * g + c;
            if (sl == 0u && g < groups && c4 < dv4) {
                var zc = acc[c];
                for (var i = 1u; i < sl_n; i++) {
                    zc += red[t + i * cl_n];
                }
                for (var k = 0u; k < 4u; k++) {
                    let col = 4u * c4 + k;
                    if (col < p.dv) {
                        var v = zc[k];
                        if (p.first == 0u) {
                            v += z[q * p.dv + col] * alpha;
                        }
                        if (p.last == 1u) {
                            v /= sum;
                        }
                        z[q * p.dv + col] = v;
                    }
                }
            }
            workgroupBarrier();
        }
    }
    if (t == 0u) {
        state[ql] = vec2<f32>(mx, sum);
    }
}
