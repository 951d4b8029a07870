// Partial sums of S = sum_mu phi_k(xi_mu) v_mu^T and n = sum_mu phi_k(xi_mu)
// over fixed parts of part_rows memories: one thread per (part, feature,
// group of 4 columns), column dv being the normaliser n (a value of 1). Each thread sums
// its part's rows sequentially, in row order, so the result does not
// depend on scheduling (no atomics): two runs give the same bits.
// The key-side coefficient (non-negative) multiplies the sum once.
// flag == 1 (random features): the features are exponents; the part's own
// maximum C_p (over its rows' maxima from feature_rowmax) is subtracted
// before exp and stored in pmax, so feature_merge can rescale all parts to
// one constant for the whole bank (one constant cancels in the ratio; a
// per-memory one would reweight the memories).
// Loop iterations per thread: part_rows (2 part_rows with flag == 1).
// #include shared/feature_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> feat: array<f32>;
@group(0) @binding(2) var<storage, read> rowmax: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> kcoef: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
@group(0) @binding(6) var<storage, read_write> pmax: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * p.groups_x) * 64u + t;
    let groups = (p.cols + 3u) / 4u;
    if (i >= p.parts * p.r * groups) {
        return;
    }
    let part = i / (p.r * groups);
    let rem = i % (p.r * groups);
    let f = rem / groups;
    let c0 = (rem % groups) * 4u;
    let start = part * p.part_rows;
    let end = min(start + p.part_rows, p.rows);
    var cmax = 0.0;
    if (p.flag == 1u) {
        cmax = -3.0e38;
        for (var row = start; row < end; row += 1u) {
            cmax = max(cmax, rowmax[row]);
        }
    }
    // Value columns past dv - 1 are read as column dv - 1 and replaced: the
    // normaliser column by 1, columns past it are never written.
    let last = p.dv - 1u;
    let ones = vec4<bool>(c0 >= p.dv, c0 + 1u >= p.dv, c0 + 2u >= p.dv, c0 + 3u >= p.dv);
    var acc = vec4<f32>(0.0);
    for (var row = start; row < end; row += 1u) {
        var phi = feat[row * p.r + f];
        if (p.flag == 1u) {
            phi = exp(phi - cmax);
        }
        let vb = (p.x0 + row) * p.dv;
        let val = vec4<f32>(
            v[vb + min(c0, last)],
            v[vb + min(c0 + 1u, last)],
            v[vb + min(c0 + 2u, last)],
            v[vb + min(c0 + 3u, last)],
        );
        acc += phi * select(val, vec4<f32>(1.0), ones);
    }
    let size = p.r * p.cols;
    for (var k = 0u; k < 4u; k += 1u) {
        if (c0 + k < p.cols) {
            partial[part * size + f * p.cols + c0 + k] = kcoef[f] * acc[k];
        }
    }
    if (rem == 0u) {
        pmax[part] = cmax;
    }
}
