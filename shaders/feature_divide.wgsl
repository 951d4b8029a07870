// z[q, c] = num[q, c] / num[q, dv]: each query normalised by its OWN sum
// over memories, <n, phi_q(x_q)> (SEMANTICS.md). The fine-grained complexity
// paper's Algorithm 1 writes the normaliser as diag(U1 (U2^T 1)); that is a
// typo (SEMANTICS.md, "Kernel (feature-map) retrieval"): each query (column
// of the paper's Z) is normalised by its own sum, as computed here. Output rows start at f0 (this query sub-batch's offset).
// #include shared/feature_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> num: array<f32>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * p.groups_x) * 64u + t;
    if (i >= p.rows * p.dv) {
        return;
    }
    let q = i / p.dv;
    let c = i % p.dv;
    z[(p.f0 + q) * p.dv + c] = num[q * p.cols + c] / num[q * p.cols + p.dv];
}
