// z[q, c] = num[q, c] / num[q, dv]: each query normalised by its OWN sum
// over memories, <n, phi_q(x_q)> (SEMANTICS.md). The fine-grained complexity
// paper's Algorithm 1 writes the normaliser as diag(U1 (U2^T 1)); that is a
// typo (SEMANTICS.md, "Kernel (feature-map) retrieval"): each query (column
// of the paper's Z) is normalised by its own sum, as computed here. Output rows start at f0 (this query sub-batch's offset).
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
