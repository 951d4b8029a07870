// Positive random features (Performer's FAVOR+; Nonparametric paper, Prop.
// C.3), in the log domain: feat[row, f] = <w_f, x'> - |x'|^2 / 2 with
// x' = sqrt(beta) x. The exponential is taken later, after a stabilising
// constant is subtracted that cancels in the ratio (feature_rowmax for
// queries: one constant per query; feature_reduce/feature_merge for
// memories: one constant for the whole bank). The 1 / sqrt(m) factor of
// phi is a constant on both sides and cancels too, so it is left out.
// One thread per (row, feature); its two loops run d iterations each.
// Reference: cpu::feature::prf.
// #include shared/feature_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> feat: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * p.groups_x) * 64u + t;
    if (i >= p.rows * p.r) {
        return;
    }
    let row = i / p.r;
    let f = i % p.r;
    let xb = (p.x0 + row) * p.d;
    var sq = 0.0;
    var dotw = 0.0;
    for (var c = 0u; c < p.d; c += 1u) {
        let v = p.scale * x[xb + c];
        sq += v * v;
        dotw += w[f * p.d + c] * v;
    }
    feat[i] = dotw - 0.5 * sq;
}
