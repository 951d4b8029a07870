// Top-K and random-mask retrieval, pass 2 of 2 (one round): merge the
// per-split sorted lists of topk.wgsl into the next `take` entries of each
// query's support, then fold them into z with an online softmax over rounds.
//
// `main`, one workgroup per query:
//   1. each thread owns splits t, t + 64, ... and keeps the best head among
//      them; `take` times, a 64-way reduction finds the best head overall
//      (rank desc, index asc), its owner advances that list's head;
//   2. the winners' scores: top-K decodes them from the rank bits (exact);
//      random computes beta <x, xi_mu> for the winners only;
//   3. running max and sum over the rounds so far (stored with the pivot),
//      counting only winners in the bound segment: with a bank of several
//      segments, `main` runs once per segment and each folds in its own,
//      z <- z * exp(old max - new max) + sum_i exp(s_i - new max) v_i, and on
//      the last round z /= sum: the softmax over the support only, weight
//      exactly 0 elsewhere (eq. (3.9)), no rescaling of the kept logits;
//   4. the pivot (last winner) for the next round, and the support indices
//      in selection order (top-K: score desc, index asc; random: key order,
//      which `rank` then reorders by ascending index).
// `rank`: one thread per support entry; its position in ascending index
// order is the number of entries with a smaller index (indices are unique).
//
// Reference: src/cpu/topk.rs. Host side: src/kernels/topk.rs.

// Keep in sync with `SelectMergeParams` in src/kernels/topk.rs.
struct Params {
    l: u32,        // queries in this sub-batch (rank: in the whole step)
    d: u32,
    dv: u32,
    n_splits: u32,
    take: u32,     // entries chosen this round (1..=64)
    first: u32,    // 1 on the step's first dispatch (round 0, segment 0)
    last: u32,     // 1 on the last dispatch (last round, last segment): normalise z
    width: u32,    // support row length
    col0: u32,     // first support column of this round
    q_off: u32,    // first query of the sub-batch in the step's buffers
    groups_x: u32, // workgroups along x; the work item is x + y * groups_x
    random: u32,   // 1: score the winners here (random mask)
    beta: f32,
    support: u32,  // 1: write support indices
    seg_row0: u32, // global index of the bound segment's first memory
    seg_rows: u32, // memories in the bound segment
}

const EMPTY: u32 = 0xffffffffu;
// Most splits the merge can track, set by the host (`topk::Shape`).
override MAX_SPLITS: u32;
// #include shared/neg.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read_write> pivots: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> queries: array<f32>;
@group(0) @binding(4) var<storage, read> keys: array<f32>;
@group(0) @binding(5) var<storage, read> values: array<f32>;
@group(0) @binding(6) var<storage, read_write> z: array<f32>;
// main: support in selection order; rank: in ascending index order.
@group(0) @binding(7) var<storage, read_write> sup: array<i32>;
// rank: the support in key order, as `main` wrote it.
@group(0) @binding(8) var<storage, read> order: array<i32>;

var<workgroup> heads: array<u32, MAX_SPLITS>;
var<workgroup> red: array<vec2<u32>, 64>;
var<workgroup> win: array<vec2<u32>, 64>;
var<workgroup> wts: array<f32, 64>;
var<workgroup> winner: vec2<u32>;
var<workgroup> scale: vec2<f32>; // (alpha, 1 / sum or 1)

fn better(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y < b.y);
}

// Inverse of topk.wgsl's rank_of.
fn score_of(r: u32) -> f32 {
    return bitcast<f32>(select(~r, r & 0x7fffffffu, (r & 0x80000000u) != 0u));
}

// Whether memory mu lies in the bound segment.
fn is_local(mu: u32) -> bool {
    return mu >= p.seg_row0 && mu - p.seg_row0 < p.seg_rows;
}

fn head(base: u32, s: u32) -> vec2<u32> {
    let h = heads[s];
    if (h < p.take) {
        return part[base + s * p.take + h];
    }
    return vec2<u32>(0u, EMPTY);
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let ql = wg.x + wg.y * p.groups_x;
    if (ql >= p.l) {
        return; // uniform: depends on the workgroup only
    }
    let q = p.q_off + ql;
    let ns = p.n_splits;
    let base = ql * ns * p.take;

    // 1. Merge: `take` rounds of "best head wins".
    var best = vec2<u32>(0u, EMPTY);
    for (var s = t; s < ns; s += 64u) {
        heads[s] = 0u;
        let c = part[base + s * p.take];
        if (better(c, best)) {
            best = c;
        }
    }
    var n = 0u;
    for (var r = 0u; r < p.take; r++) {
        red[t] = best;
        workgroupBarrier();
        for (var h = 32u; h > 0u; h >>= 1u) {
            if (t < h && better(red[t + h], red[t])) {
                red[t] = red[t + h];
            }
            workgroupBarrier();
        }
        if (t == 0u) {
            winner = red[0];
            win[r] = red[0];
        }
        let w = workgroupUniformLoad(&winner);
        if (w.y == EMPTY) {
            break; // fewer candidates than `take` (the host never asks for that)
        }
        n = r + 1u;
        if (best.y == w.y) {
            // This thread owns the winner's list: advance it, find the new best.
            best = vec2<u32>(0u, EMPTY);
            for (var s = t; s < ns; s += 64u) {
                var c = head(base, s);
                if (c.y == w.y) {
                    heads[s] += 1u;
                    c = head(base, s);
                }
                if (better(c, best)) {
                    best = c;
                }
            }
        }
    }
    workgroupBarrier();

    // 2. Scores of the winners held by the bound segment (all of them when
    // the bank is one segment; otherwise each segment's dispatch folds in its
    // own, and the online softmax below makes the order irrelevant).
    if (t < n) {
        let e = win[t];
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
            if (p.support == 1u) {
                sup[q * p.width + p.col0 + t] = i32(e.y);
            }
        }
        wts[t] = s;
    }
    workgroupBarrier();

    // 3. Online softmax across rounds and segments.
    if (t == 0u && n > 0u) {
        let pv = pivots[ql];
        var old_max = NEG;
        var old_sum = 0.0;
        if (p.first == 0u) {
            old_max = bitcast<f32>(pv.z);
            old_sum = bitcast<f32>(pv.w);
        }
        var mx = old_max;
        for (var i = 0u; i < n; i++) {
            mx = max(mx, wts[i]);
        }
        // exp(NEG - mx) = 0 for any admitted score (|s| < 1e30): a first
        // dispatch starts from nothing.
        let alpha = exp(old_max - mx);
        var sum = old_sum * alpha;
        for (var i = 0u; i < n; i++) {
            var e = 0.0;
            if (is_local(win[i].y)) {
                e = exp(wts[i] - mx);
            }
            wts[i] = e;
            sum += e;
        }
        pivots[ql] = vec4<u32>(win[n - 1u], bitcast<u32>(mx), bitcast<u32>(sum));
        scale = vec2<f32>(alpha, select(1.0, 1.0 / sum, p.last == 1u));
    }
    let sc = workgroupUniformLoad(&scale);
    for (var c = t; c < p.dv; c += 64u) {
        var acc = 0.0;
        for (var i = 0u; i < n; i++) {
            let mu = win[i].y;
            if (is_local(mu)) {
                acc += wts[i] * values[(mu - p.seg_row0) * p.dv + c];
            }
        }
        if (p.first == 0u) {
            acc += z[q * p.dv + c] * sc.x;
        }
        z[q * p.dv + c] = acc * sc.y;
    }
}

@compute @workgroup_size(64)
fn rank(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let blocks = (p.width + 63u) / 64u;
    let flat = wg.x + wg.y * p.groups_x;
    let q = flat / blocks;
    let e = (flat % blocks) * 64u + t;
    if (q >= p.l || e >= p.width) {
        return;
    }
    let row = q * p.width;
    let me = order[row + e];
    var r = 0u;
    for (var j = 0u; j < p.width; j++) {
        r += select(0u, 1u, order[row + j] < me);
    }
    sup[row + r] = me;
}
