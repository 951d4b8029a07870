// Linear feature map (Nonparametric paper, Prop. C.1): phi(x) = elu(x) + 1
// elementwise, rank d, no beta. One thread per (row, coordinate).
// Reference: cpu::feature::linear, feature::prf::linear_feature_map.
// #include shared/feature_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> feat: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * p.groups_x) * 64u + t;
    if (i >= p.rows * p.d) {
        return;
    }
    let row = i / p.d;
    let c = i % p.d;
    let v = x[(p.x0 + row) * p.d + c];
    feat[i] = select(exp(v), v + 1.0, v > 0.0);
}
