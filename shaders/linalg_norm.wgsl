// The dense algebra of a Hopfield layer, part 2: LayerNorm over each row's
// `cols` features, PyTorch's definition: y = (x - mean) / sqrt(var + eps)
// * w + b, the variance biased. Two passes (the mean, then the squared
// deviations from it), so a large mean does not cancel the variance. One
// workgroup per row (`layer_norm`), or one thread per row for short rows
// (`layer_norm_rows`: no barriers, which dominate on llvmpipe when rows
// hold a few dozen features); rows and features are addressed by offset and stride,
// so the per-head LayerNorm of a [rows, H hd] projection is H rows per row.
//
// Keep in sync with `NormParams` in src/kernels/linalg.rs.
struct NormParams {
    rows: u32,
    cols: u32,
    x_off: u32,
    x_stride: u32,
    y_off: u32,
    y_stride: u32,
    w_off: u32,    // weight at w_off, bias at w_off + cols (affine only)
    affine: u32,
    groups_x: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> np: NormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> affine: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 64>;

fn sum64(t: u32, v: f32) -> f32 {
    workgroupBarrier(); // earlier readers of red are done
    red[t] = v;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) {
            red[t] += red[t + s];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&red[0]);
}

@compute @workgroup_size(64)
fn layer_norm(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let row = wg.x + wg.y * np.groups_x;
    if (row >= np.rows) {
        return;
    }
    let xb = np.x_off + row * np.x_stride;
    let yb = np.y_off + row * np.y_stride;
    let f = f32(np.cols);
    var s = 0.0;
    for (var i = t; i < np.cols; i += 64u) {
        s += x[xb + i];
    }
    let mean = sum64(t, s) / f;
    var ss = 0.0;
    for (var i = t; i < np.cols; i += 64u) {
        let dv = x[xb + i] - mean;
        ss += dv * dv;
    }
    let inv = inverseSqrt(sum64(t, ss) / f + np.eps);
    for (var i = t; i < np.cols; i += 64u) {
        var v = (x[xb + i] - mean) * inv;
        if (np.affine == 1u) {
            v = v * affine[np.w_off + i] + affine[np.w_off + np.cols + i];
        }
        y[yb + i] = v;
    }
}


// Reference: cpu::linalg::LayerNorm. Host side: src/kernels/linalg.rs.

// One thread per row: the same two passes, no reductions across threads.
@compute @workgroup_size(64)
fn layer_norm_rows(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let row = (wg.x + wg.y * np.groups_x) * 64u + t;
    if (row >= np.rows) {
        return;
    }
    let xb = np.x_off + row * np.x_stride;
    let yb = np.y_off + row * np.y_stride;
    let f = f32(np.cols);
    // The sum runs over x - x_0: a large common offset (the mean) would
    // otherwise cost the sequential sum its low digits.
    let x0 = x[xb];
    var s = 0.0;
    for (var i = 0u; i < np.cols; i++) {
        s += x[xb + i] - x0;
    }
    let mean = x0 + s / f;
    var ss = 0.0;
    for (var i = 0u; i < np.cols; i++) {
        let dv = x[xb + i] - mean;
        ss += dv * dv;
    }
    let inv = inverseSqrt(ss / f + np.eps);
    for (var i = 0u; i < np.cols; i++) {
        var v = (x[xb + i] - mean) * inv;
        if (np.affine == 1u) {
            v = v * affine[np.w_off + i] + affine[np.w_off + np.cols + i];
        }
        y[yb + i] = v;
    }
}
