// Polynomial feature map, one total degree per dispatch: the raw monomials
// x^a of the features f0..f1 (all of one degree k) of `rows` input rows, by
// the parent recurrence of feature::poly::MonomialTable:
// x^a(f) = x^a(parent[f]) * x[parent_dim[f]], one multiply per feature. The
// parents (degree k - 1) were written by the previous dispatch; wgpu orders
// dispatches in a pass, so they are visible. Feature 0 is the constant 1.
// The coefficients sqrt(|c_k| beta^k k! / a!) are applied later, on the
// key side once per partial sum (feature_reduce), on the query side per
// term with the sign of c_k (feature_answer). No loops: one thread per
// (row, feature), nothing for llvmpipe's loop limiter to count.
// Reference: cpu::feature::poly (the kernel form) and feature::poly::feature_map.
// Keep in sync with `FeatureParams` in src/kernels/feature.rs (every
// feature_*.wgsl declares this same struct; each uses the fields it needs).
struct Params {
    rows: u32,      // rows (memories or queries) in this dispatch
    d: u32,         // input dimension
    r: u32,         // rank: features per row
    cols: u32,      // dv + 1: value columns plus the normaliser column
    x0: u32,        // first input row of this dispatch, in the bound input
    f0: u32,        // first feature (or first output row, feature_divide)
    f1: u32,        // one past the last feature (feature_poly, feature_answer)
    flag: u32,      // kernel-specific switch, see each kernel's header
    parts: u32,     // memory parts in this round (feature_reduce, feature_merge)
    part_rows: u32, // memories per part
    round: u32,     // index of this round (feature_merge's running max slot)
    scale: f32,     // sqrt(beta) (feature_prf)
    groups_x: u32,  // workgroups along x; the thread is (x + y * groups_x) * 64 + local
    dv: u32,        // value columns
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> parent: array<u32>;
@group(0) @binding(3) var<storage, read> parent_dim: array<u32>;
@group(0) @binding(4) var<storage, read_write> feat: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * p.groups_x) * 64u + t;
    let count = p.f1 - p.f0;
    if (i >= p.rows * count) {
        return;
    }
    let row = i / count;
    let f = p.f0 + i % count;
    if (f == 0u) {
        feat[row * p.r] = 1.0;
    } else {
        let dim = parent_dim[f];
        feat[row * p.r + f] = feat[row * p.r + parent[f]] * x[(p.x0 + row) * p.d + dim];
    }
}
