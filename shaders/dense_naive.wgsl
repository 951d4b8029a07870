// Dense retrieval, the naive baseline: one thread per query, reading every
// memory straight from global memory, with an online softmax and the
// accumulator in the query's own output row. No workgroup memory, no tiling.
// It exists so that `bench` can show what the tiled kernel (dense.wgsl) buys.
//
// One dispatch covers memories [m0, m1); the running max and sum persist in
// `run` between dispatches. The host makes one dispatch per device unless its
// driver caps loop iterations per invocation (llvmpipe), then several.
// Reference: src/cpu/dense.rs. Host side: src/kernels/dense.rs.

// Keep in sync with `NaiveParams` in src/kernels/dense.rs.
struct Params {
    l: u32,
    d: u32,
    dv: u32,
    m0: u32,
    m1: u32,
    first: u32, // 1: start from an empty accumulator
    last: u32,  // 1: divide by the sum at the end
    beta: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<f32>;
@group(0) @binding(2) var<storage, read> keys: array<f32>;
@group(0) @binding(3) var<storage, read> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read_write> run: array<vec2<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let q = gid.x;
    if (q >= p.l) {
        return;
    }
    let o = q * p.dv;
    var run_max = -3.0e38;
    var run_sum = 0.0;
    if (p.first == 1u) {
        for (var c = 0u; c < p.dv; c++) {
            out[o + c] = 0.0;
        }
    } else {
        run_max = run[q].x;
        run_sum = run[q].y;
    }
    for (var mu = p.m0; mu < p.m1; mu++) {
        var s = 0.0;
        for (var k = 0u; k < p.d; k++) {
            s += queries[q * p.d + k] * keys[mu * p.d + k];
        }
        s *= p.beta;
        let new_max = max(run_max, s);
        let a = exp(run_max - new_max);
        let w = exp(s - new_max);
        run_sum = run_sum * a + w;
        run_max = new_max;
        for (var c = 0u; c < p.dv; c++) {
            out[o + c] = out[o + c] * a + w * values[mu * p.dv + c];
        }
    }
    run[q] = vec2<f32>(run_max, run_sum);
    if (p.last == 1u) {
        for (var c = 0u; c < p.dv; c++) {
            out[o + c] /= run_sum;
        }
    }
}
