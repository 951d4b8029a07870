// Batched retrieval, the small-problem path: dense retrieval without
// updates, one thread per query of all problems, nothing materialised.
// Bags of a few dozen memories give the materialised path (a tile of a
// product, a workgroup per score row) more overhead than work; here a
// thread walks its problem's memories twice: the running max and sum of
// exp(beta <x, xi> - max) (its log-sum-exp and argmax), then
// z = sum_mu exp(s_mu - lse) v_mu accumulated in z's own row. The zero
// memory scores 0 and adds nothing; masked memories are skipped. The host
// takes this path only when a query's two walks stay inside the driver's
// loop budget, and records the same per-query records as batch.wgsl.
//
// Reference: src/cpu/batch.rs. Host side: src/kernels/batch.rs.

// Keep in sync with `FusedParams` in src/kernels/batch.rs.
struct Params {
    rows: u32,     // queries in all
    problems: u32,
    groups_x: u32,
    d: u32,
    dv: u32,
    prob_at: u32,  // word offsets of the tables in `desc`
    keep_at: u32,
    _pad: u32,
}

const NONE: u32 = 0xffffffffu;
const PW: u32 = 24u; // words per problem; keep in sync with batch.wgsl

// Keep in sync with `RowRecord` in src/kernels/batch.rs (batch.wgsl's Row).
struct Row {
    steps: u32,
    converged: u32,
    stopped: u32,
    argmax: u32,
    lse: f32,
    diff: f32,
    energy: f32,
    moved: f32,
}

// #include shared/neg.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> desc: array<u32>;
@group(0) @binding(2) var<storage, read> queries: array<f32>;
@group(0) @binding(3) var<storage, read> keys: array<f32>;
@group(0) @binding(4) var<storage, read> values: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> recs: array<Row>;

fn word(q: u32, i: u32) -> u32 {
    return desc[p.prob_at + q * PW + i];
}

@compute @workgroup_size(64)
fn fused_dense(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let row = (wg.x + wg.y * p.groups_x) * 64u + t;
    if (row >= p.rows) {
        return;
    }
    var lo = 0u;
    var hi = p.problems;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (word(mid, 1u) <= row) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let q = lo;
    let lr = row - word(q, 1u);
    let m = word(q, 4u);
    let zero = word(q, 5u) > m;
    let keep = word(q, 7u);
    let x_off = word(q, 12u) + lr * word(q, 13u);
    let k_off = word(q, 14u);
    let k_stride = word(q, 15u);
    let v_off = word(q, 18u);
    let v_stride = word(q, 19u);
    let z_off = word(q, 20u) + lr * word(q, 21u);
    let beta = bitcast<f32>(word(q, 22u));

    // Walk 1: the softmax's shift and normaliser (online: the sum is
    // rescaled when the maximum moves), and the argmax.
    var best = NEG;
    var arg = NONE;
    var sum = 0.0;
    if (zero) {
        best = 0.0;
        arg = m;
        sum = 1.0;
    }
    for (var mu = 0u; mu < m; mu++) {
        if (keep != NONE && desc[p.keep_at + keep + mu] == NONE) {
            continue;
        }
        var s = 0.0;
        for (var c = 0u; c < p.d; c++) {
            s += queries[x_off + c] * keys[k_off + mu * k_stride + c];
        }
        s *= beta;
        // The lowest index wins ties (the zero memory counts as index m).
        if (s > best || (s == best && mu < arg)) {
            if (s > best) {
                sum *= exp(best - s);
                best = s;
            }
            arg = mu;
        }
        sum += exp(s - best);
    }
    let lse = best + log(sum);

    // Walk 2: z = sum_mu exp(s_mu - lse) v_mu, in z's row.
    for (var c = 0u; c < p.dv; c++) {
        out[z_off + c] = 0.0;
    }
    for (var mu = 0u; mu < m; mu++) {
        if (keep != NONE && desc[p.keep_at + keep + mu] == NONE) {
            continue;
        }
        var s = 0.0;
        for (var c = 0u; c < p.d; c++) {
            s += queries[x_off + c] * keys[k_off + mu * k_stride + c];
        }
        let w = exp(s * beta - lse);
        for (var c = 0u; c < p.dv; c++) {
            out[z_off + c] += w * values[v_off + mu * v_stride + c];
        }
    }
    var sq = 0.0;
    for (var c = 0u; c < p.d; c++) {
        sq += queries[x_off + c] * queries[x_off + c];
    }
    recs[row].lse = lse;
    recs[row].argmax = arg;
    recs[row].energy = -lse / beta + 0.5 * sq;
}
