// Per-row maximum of the random-feature exponents (feature_prf's output).
// flag == 1 (queries): also replace each exponent e by exp(e - max): the
// query's features are then scaled by exp(-max), a per-query constant that
// cancels between the numerator S^T phi_q and the normaliser <n, phi_q>.
// flag == 0 (memories): only the maxima, which feature_reduce uses.
// One thread per row; 2 r loop iterations (the host keeps r within
// llvmpipe's loop budget).
// #include shared/feature_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> feat: array<f32>;
@group(0) @binding(2) var<storage, read_write> rowmax: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let row = (wg.x + wg.y * p.groups_x) * 64u + t;
    if (row >= p.rows) {
        return;
    }
    var mx = -3.0e38;
    for (var f = 0u; f < p.r; f += 1u) {
        mx = max(mx, feat[row * p.r + f]);
    }
    rowmax[row] = mx;
    if (p.flag == 1u) {
        for (var f = 0u; f < p.r; f += 1u) {
            feat[row * p.r + f] = exp(feat[row * p.r + f] - mx);
        }
    }
}
