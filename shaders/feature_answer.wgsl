// Answer queries from the bank's S and n: num[q, c] = sum_f qcoef[f]
// phi_q(x_q)[f] S[f, c] over features f0..f1, column dv giving the
// normaliser <n, phi_q(x_q)>. flag == 1: first feature block (start from
// zero); otherwise add to num. The host cuts f into blocks that fit
// llvmpipe's loop budget; the blocks run in order, so the sum is
// deterministic. qcoef carries the sign of c_k for the polynomial map
// (the key side is unsigned) and is 1 for the other maps.
// One thread per (query, group of 4 columns): each feature value is loaded
// once per 4 columns (llvmpipe pays per loop iteration and per load).
// feature_divide then normalises each query by its own sum.
// #include shared/feature_params.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> feat: array<f32>;
@group(0) @binding(2) var<storage, read> qcoef: array<f32>;
@group(0) @binding(3) var<storage, read> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> num: array<f32>;

fn col4(base: u32, c0: u32) -> vec4<f32> {
    // Columns past the last are read as the last and discarded by the caller.
    let last = p.cols - 1u;
    return vec4<f32>(
        state[base + min(c0, last)],
        state[base + min(c0 + 1u, last)],
        state[base + min(c0 + 2u, last)],
        state[base + min(c0 + 3u, last)],
    );
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * p.groups_x) * 64u + t;
    let groups = (p.cols + 3u) / 4u;
    if (i >= p.rows * groups) {
        return;
    }
    let q = i / groups;
    let c0 = (i % groups) * 4u;
    let out = q * p.cols + c0;
    var acc = vec4<f32>(0.0);
    if (p.flag != 1u) {
        for (var k = 0u; k < 4u; k += 1u) {
            if (c0 + k < p.cols) {
                acc[k] = num[out + k];
            }
        }
    }
    for (var f = p.f0; f < p.f1; f += 1u) {
        acc += (qcoef[f] * feat[q * p.r + f]) * col4(f * p.cols, c0);
    }
    for (var k = 0u; k < 4u; k += 1u) {
        if (c0 + k < p.cols) {
            num[out + k] = acc[k];
        }
    }
}
