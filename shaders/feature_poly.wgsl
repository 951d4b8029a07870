// Polynomial feature map: the raw monomials x^a of features f0..f1 of
// `rows` input rows, by the parent recurrence of feature::poly::MonomialTable:
// x^a(f) = x^a(parent[f]) * x[parent_dim[f]], one multiply per feature, with
// parent[f] < f (features are graded by degree). One thread per row walks
// its features in order, so every parent is ready when it is read: written
// earlier by the same thread, or by an earlier dispatch when the host cuts
// f into blocks for llvmpipe's loop budget (wgpu orders dispatches in a
// pass). One thread per row rather than per feature: llvmpipe's cost per
// workgroup dwarfs one multiply. Feature 0 is the constant 1.
// The coefficients sqrt(|c_k| beta^k k! / a!) are applied later, on the
// key side once per partial sum (feature_reduce), on the query side per
// term with the sign of c_k (feature_answer).
// Reference: cpu::feature::poly (the kernel form) and feature::poly::feature_map.
// #include shared/feature_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> parent: array<u32>;
@group(0) @binding(3) var<storage, read> parent_dim: array<u32>;
@group(0) @binding(4) var<storage, read_write> feat: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let row = (wg.x + wg.y * p.groups_x) * 64u + t;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.r;
    let xb = (p.x0 + row) * p.d;
    for (var f = p.f0; f < p.f1; f += 1u) {
        if (f == 0u) {
            feat[base] = 1.0;
        } else {
            feat[base + f] = feat[base + parent[f]] * x[xb + parent_dim[f]];
        }
    }
}
