// Dense retrieval, pass 2 of 2: merge the per-split partial results of
// dense.wgsl (running max m_s, sum l_s, weighted sum O_s) into
//   M = max_s m_s,  lse = M + log sum_s l_s e^(m_s - M),
//   z = sum_s O_s e^(m_s - M) / sum_s l_s e^(m_s - M),
// and, depending on `mode`:
//   0 (retrieve): write z;
//   1 (dynamics step): replace the state x by z unless the query already
//     converged, record steps, the max-norm change and convergence, and count
//     the queries still moving (so the host can stop early without reading
//     states back);
//   2 (energy): write E(x) = -lse / beta + 0.5 <x, x> for the current state.
// One workgroup of WG threads per query. The splits are merged in
// parallel: the statistics by a tree over the threads, and z by threads
// that are (column lane, split lane) pairs, each summing one column over
// every SL-th split, then a sum over the split lanes; no thread walks all
// the splits of a column alone (the legacy merge, dense_merge_legacy.wgsl,
// did: thousands of splits in a row for few queries against many memories).
// Reference: src/cpu/dense.rs.
//
// #trusted every index is in range: the query q < l (workgroups past l return), splits s < n_splits and columns c < dv bound every part_o / part_stats / out index, the buffers are sized by the host for (l, n_splits, dv), and the argmax split comes from part_stats rows the same workgroup read; the reduction slots are t < WG.

// Keep in sync with `MergeParams` in src/kernels/dense.rs.
struct Params {
    l: u32,
    dv: u32,
    n_splits: u32,
    mode: u32,
    beta: f32,
    eps: f32,
    groups_x: u32,  // workgroups along x; the query is x + y * groups_x
    _pad: u32,
}

// #include shared/query_info.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part_o: array<f32>;
@group(0) @binding(2) var<storage, read> part_stats: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> info: array<QueryInfo>;
@group(0) @binding(5) var<storage, read_write> moving: atomic<u32>;

// Threads per workgroup (a power of two), set by the host.
override WG: u32 = 256u;

var<workgroup> red: array<vec2<f32>, WG>;
var<workgroup> red_arg: array<u32, WG>;
var<workgroup> skip: u32;

fn reduce_max_arg(t: u32, v: f32, arg: u32) -> vec2<f32> {
    red[t] = vec2<f32>(v, 0.0);
    red_arg[t] = arg;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            let a = red[t].x;
            let b = red[t + s].x;
            // Larger wins; on equal values the lower split (lower memory index).
            if (b > a || (b == a && red_arg[t + s] < red_arg[t])) {
                red[t].x = b;
                red_arg[t] = red_arg[t + s];
            }
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(red[0].x, bitcast<f32>(red_arg[0]));
    workgroupBarrier();
    return r;
}

fn reduce_sum2(t: u32, v: vec2<f32>) -> vec2<f32> {
    red[t] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] += red[t + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(t: u32, v: f32) -> f32 {
    red[t] = vec2<f32>(v, 0.0);
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t].x = max(red[t].x, red[t + s].x);
        }
        workgroupBarrier();
    }
    let r = red[0].x;
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let q = wg.x + wg.y * p.groups_x;
    if (q >= p.l) {
        return; // uniform: q depends on the workgroup only
    }
    let ns = p.n_splits;

    // Global max over the splits, with the argmax of the split that holds it.
    var mx = -3.4e38;
    var mx_split = 0xffffffffu;
    for (var s = t; s < ns; s += WG) {
        let m = part_stats[q * ns + s].x;
        if (m > mx) {
            mx = m;
            mx_split = s;
        }
    }
    let top = reduce_max_arg(t, mx, mx_split);
    let big_m = top.x;
    let arg = bitcast<u32>(part_stats[q * ns + bitcast<u32>(top.y)].z);

    // Total sum, and <x, x> of the current state for the energy.
    var sum = 0.0;
    for (var s = t; s < ns; s += WG) {
        let st = part_stats[q * ns + s];
        sum += st.y * exp(st.x - big_m);
    }
    // 0.5 <x, x> summed as (x / 2) x, and -lse / beta split into its two
    // terms: no intermediate overflows f32 where the energy itself fits
    // (|x| ~ 2e19 gave +inf for 0.5 * inf). Context::retrieve recombines the
    // energy in f64 from lse on the host and refuses one beyond f32; this
    // value is what encode_retrieve writes into the caller's buffer.
    var half_xx = 0.0;
    if (p.mode != 0u) {
        for (var c = t; c < p.dv; c += WG) {
            let x = out[q * p.dv + c];
            half_xx += (0.5 * x) * x;
        }
    }
    let tot = reduce_sum2(t, vec2<f32>(sum, half_xx));
    let lse = big_m + log(tot.x);

    if (t == 0u) {
        info[q].lse = lse;
        info[q].argmax = arg;
        info[q].max_score = big_m;
        info[q].energy = tot.y - big_m / p.beta - log(tot.x) / p.beta;
        skip = select(0u, 1u, p.mode == 1u && info[q].converged == 1u);
    }
    let skip_all = workgroupUniformLoad(&skip);
    if (p.mode == 2u || skip_all == 1u) {
        return;
    }

    let inv = 1.0 / tot.x;
    // z: CL column lanes by SL split lanes.
    let cl_n = min(p.dv, WG);
    let sl_n = WG / cl_n;
    let cl = t % cl_n;
    let sl = t / cl_n;
    var delta = 0.0;
    for (var c0 = 0u; c0 < p.dv; c0 += cl_n) {
        let c = c0 + cl;
        var acc = 0.0;
        if (sl < sl_n && c < p.dv) {
            for (var s = sl; s < ns; s += sl_n) {
                acc += part_o[(q * ns + s) * p.dv + c] * exp(part_stats[q * ns + s].x - big_m);
            }
        }
        red[t].x = acc;
        workgroupBarrier();
        if (sl == 0u && c < p.dv) {
            var z = acc;
            for (var i = 1u; i < sl_n; i++) {
                z += red[t + i * cl_n].x;
            }
            z *= inv;
            if (p.mode == 1u) {
                delta = max(delta, abs(z - out[q * p.dv + c]));
            }
            out[q * p.dv + c] = z;
        }
        workgroupBarrier(); // red is free again
    }
    if (p.mode == 1u) {
        let dmax = reduce_max(t, delta);
        if (t == 0u) {
            info[q].steps += 1u;
            info[q].delta = dmax;
            if (dmax <= p.eps) {
                info[q].converged = 1u;
            } else {
                atomicAdd(&moving, 1u);
            }
        }
    } else if (t == 0u) {
        info[q].steps = 1u;
    }
}
