// sparsemax and 1.5-entmax retrieval (SEMANTICS.md "Sparse and entmax
// retrieval", Hu et al. 2023): z_l = sum_mu p_mu v_mu with
// p = sparsemax(s_l) (Martins & Astudillo 2016) or 1.5-entmax(s_l) (Peters et
// al. 2019), s_l = beta Xi x_l. Three entry points, recorded in this order:
//   scores:    one thread per (query, memory) of the bound segment writes
//              s = beta <x, xi> into a [l, M] scratch row per query;
//   threshold: one workgroup per query finds the threshold exactly (below)
//              and overwrites the row with p, writing the support if asked;
//   weighted:  one workgroup per query, dispatched per run of memories of
//              each segment, accumulates z += sum_mu p_mu v_mu (p = 0 skipped).
//
// The threshold. With u_i = a s_i - max_j a s_j (a = 1 for sparsemax, 1/2 for
// 1.5-entmax, the reference's (alpha - 1) s scaling) and k = 1 or 2,
// p_i = max(u_i - tau, 0)^k where tau solves f(tau) = sum_i max(u_i - tau, 0)^k = 1.
// f is continuous and strictly decreasing where positive, f(-1) >= 1 (the top
// element alone contributes 1) and f(0) = 0, so tau lies in [-1, 0).
// 0. The row is shifted once, in place: s_i <- a s_i - top, before any other
//    pass. The top element's u is then exactly 0 and every u_i <= 0 is a
//    stored f32, rounded once (exact, by Sterbenz, for scores within a
//    factor 2 of the top). Everything below reads these u only, and all that
//    matters happens in [-1, 0]: lo, hi, tau and the weights never meet `top`, so
//    neither cancellation nor a compiler's reassociation of
//    `(a s - top) - tau` into `a s - (top + tau)` can lose tau. (Computing u
//    inline in every pass did lose it: from top ~ 2^24, where tau is below
//    top's spacing, lavapipe returned p = 0 for every memory.)
// 1. Bisection keeps the invariant f(lo) >= 1 > f(hi), hence lo <= tau < hi.
//    It stops as soon as no u_i lies strictly inside (lo, hi). Then the
//    support S = {i : u_i > tau} is exactly {u_i > lo}: u_i <= lo <= tau is
//    out, and u_i > lo means u_i >= hi > tau is in. The bracket halves each
//    step; tau <= -1/M (sparsemax: |S| (-tau) >= sum_S (u_i - tau) = 1, as
//    u_i <= 0) or tau <= -1/sqrt(M) (entmax), so after at most
//    23 + log2(M) + 2 <= 58 halvings lo and hi are adjacent f32 values and
//    nothing lies strictly between them; MAX_IT = 64 is never the exit.
// 2. tau is then recovered in closed form from S alone, as the sort-based
//    reference does on its prefix: sparsemax tau = (sum_S u - 1) / |S|;
//    1.5-entmax tau = mean - sqrt(max((1 - ss) / |S|, 0)) with mean and ss
//    = sum_S (u - mean)^2 over S (the smaller root of sum_S (u - tau)^2 = 1).
//    Given the true S this is the exact threshold (KKT: the map's solution is
//    unique, and S with its closed-form tau satisfies u_i > tau on S,
//    u_i <= tau off S). Bisection is only used to find S, so its tolerance
//    never enters p.
// 3. p_i = max(u_i - tau, 0)^k for every i, so the reported support {p > 0}
//    is consistent with the weights by construction. The only inexactness is
//    f32 rounding of the scores and of f near tau: a memory whose u_i lies
//    within rounding of tau may be in or out, with a weight of that order.
//
// Reference: src/cpu/entmax.rs (full sort). Host: src/kernels/entmax.rs.

// Keep in sync with `EntmaxParams` in src/kernels/entmax.rs.
struct Params {
    l: u32,        // queries in this sub-batch
    q_off: u32,    // index of its first query in the batch
    d: u32,
    dv: u32,
    m: u32,        // memories in all (row length of the score scratch)
    seg_row0: u32, // global index of the bound segment's first memory
    seg_rows: u32, // memories in the bound segment
    r0: u32,       // weighted: first row of the segment in this dispatch
    r1: u32,       // weighted: one past the last
    first: u32,    // weighted: 1 if this dispatch writes z, 0 if it adds
    entmax: u32,   // 0: sparsemax; 1: 1.5-entmax
    width: u32,    // support columns (M), 0 when no support is asked for
    groups_x: u32, // workgroups along x
    beta: f32,
    _pad0: u32,
    _pad1: u32,
}

// #include shared/neg.wgsl
// Bisection steps at most, set by the host (`entmax::MAX_IT`).
override MAX_IT: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<f32>;
@group(0) @binding(3) var<storage, read> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;
@group(0) @binding(5) var<storage, read_write> z: array<f32>;
@group(0) @binding(6) var<storage, read_write> support: array<i32>;

var<workgroup> red: array<vec2<f32>, 64>;
var<workgroup> counts: array<u32, 64>;

@compute @workgroup_size(64)
fn score(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let blocks = (p.seg_rows + 63u) / 64u;
    let unit = wg.x + wg.y * p.groups_x;
    let ql = unit / blocks;
    let row = (unit % blocks) * 64u + t;
    if (ql >= p.l || row >= p.seg_rows) {
        return;
    }
    let q = p.q_off + ql;
    var acc = 0.0;
    for (var c = 0u; c < p.d; c++) {
        acc += queries[q * p.d + c] * keys[row * p.d + c];
    }
    scores[ql * p.m + p.seg_row0 + row] = acc * p.beta;
}

// Sum (op 0) or max (op 1) of v over the workgroup, the same in every thread.
fn reduce(t: u32, v: vec2<f32>, op: u32) -> vec2<f32> {
    workgroupBarrier(); // earlier readers of red are done
    red[t] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) {
            if (op == 1u) {
                red[t] = max(red[t], red[t + s]);
            } else {
                red[t] = red[t] + red[t + s];
            }
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red[0]);
}

fn power(x: f32) -> f32 {
    if (p.entmax == 1u) {
        return x * x;
    }
    return x;
}

@compute @workgroup_size(64)
fn threshold(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let ql = wg.x + wg.y * p.groups_x;
    if (ql >= p.l) {
        return;
    }
    let base = ql * p.m;
    let a = select(1.0, 0.5, p.entmax == 1u); // exact scaling by a power of 2
    var local_max = NEG;
    for (var i = t; i < p.m; i += 64u) {
        local_max = max(local_max, scores[base + i]);
    }
    let top = reduce(t, vec2<f32>(local_max, 0.0), 1u).x * a;
    // 0. Shift once, in place (see the top of this file); every later pass
    // reads u from the row, never recomputes it from the score.
    for (var i = t; i < p.m; i += 64u) {
        scores[base + i] = scores[base + i] * a - top;
    }

    // 1. Bisection for the support.
    var lo = -1.0;
    var hi = 0.0;
    for (var it = 0u; it < MAX_IT; it++) {
        let mid = 0.5 * (lo + hi);
        if (!(mid > lo && mid < hi)) {
            break; // adjacent floats: nothing lies strictly between
        }
        var f = 0.0;
        var inside = 0.0;
        for (var i = t; i < p.m; i += 64u) {
            let u = scores[base + i];
            f += power(max(u - mid, 0.0));
            inside += select(0.0, 1.0, u > lo && u < hi);
        }
        let r = reduce(t, vec2<f32>(f, inside), 0u);
        if (r.y == 0.0) {
            break;
        }
        if (r.x >= 1.0) {
            lo = mid;
        } else {
            hi = mid;
        }
    }

    // 2. Closed-form threshold from S = {u > lo}.
    var su = 0.0;
    var n = 0.0;
    for (var i = t; i < p.m; i += 64u) {
        let u = scores[base + i];
        if (u > lo) {
            su += u;
            n += 1.0;
        }
    }
    let sn = reduce(t, vec2<f32>(su, n), 0u);
    var tau = (sn.x - 1.0) / sn.y;
    if (p.entmax == 1u) {
        let mean = sn.x / sn.y;
        var ss = 0.0;
        for (var i = t; i < p.m; i += 64u) {
            let u = scores[base + i];
            if (u > lo) {
                ss += (u - mean) * (u - mean);
            }
        }
        let ssr = reduce(t, vec2<f32>(ss, 0.0), 0u).x;
        tau = mean - sqrt(max((1.0 - ssr) / sn.y, 0.0));
    }

    // 3. Weights, in place (each thread rewrites only the entries it read).
    for (var i = t; i < p.m; i += 64u) {
        let u = scores[base + i];
        scores[base + i] = power(max(u - tau, 0.0));
    }
    if (p.width == 0u) {
        return; // uniform
    }
    // Support, ascending: thread t owns the contiguous run [t r, t r + r).
    storageBarrier();
    let r = (p.m + 63u) / 64u;
    let i0 = min(t * r, p.m);
    let i1 = min(i0 + r, p.m);
    var cnt = 0u;
    for (var i = i0; i < i1; i++) {
        cnt += select(0u, 1u, scores[base + i] > 0.0);
    }
    counts[t] = cnt;
    workgroupBarrier();
    var at = 0u;
    var total = 0u;
    for (var k = 0u; k < 64u; k++) {
        at += select(0u, counts[k], k < t);
        total += counts[k];
    }
    let q = p.q_off + ql;
    for (var i = i0; i < i1; i++) {
        if (scores[base + i] > 0.0) {
            support[q * p.width + at] = i32(i);
            at += 1u;
        }
        if (i >= total) {
            support[q * p.width + i] = -1;
        }
    }
}

@compute @workgroup_size(64)
fn weighted(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let ql = wg.x + wg.y * p.groups_x;
    if (ql >= p.l) {
        return;
    }
    let q = p.q_off + ql;
    let row = ql * p.m + p.seg_row0;
    for (var c = t; c < p.dv; c += 64u) {
        var o = 0.0;
        for (var i = p.r0; i < p.r1; i++) {
            let w = scores[row + i];
            if (w > 0.0) {
                o += w * values[i * p.dv + c];
            }
        }
        if (p.first == 1u) {
            z[q * p.dv + c] = o;
        } else {
            z[q * p.dv + c] += o;
        }
    }
}
