// The dense algebra of a Hopfield layer, part 3: element-wise maps of a
// [rows, cols] region, out = op(u, v), one thread per element: copies,
// ReLU, the residual add, products (v_stride = 0 broadcasts one row of v
// over the rows: a column scaling), and elu + 1.
//
// Keep in sync with `MapParams` in src/kernels/linalg.rs.
struct MapParams {
    rows: u32,
    cols: u32,
    u_off: u32,
    u_stride: u32,
    v_off: u32,
    v_stride: u32,
    o_off: u32,
    o_stride: u32,
    op: u32,       // OP_*
    groups_x: u32,
    _pad0: u32,
    _pad1: u32,
}

const OP_COPY: u32 = 0u; // u
const OP_RELU: u32 = 1u; // max(u, 0)
const OP_ADD: u32 = 2u;  // u + v (the residual connection)
const OP_MUL: u32 = 3u;  // u * v
const OP_ELU1: u32 = 4u; // elu(u) + 1, the linear kernel's feature map

@group(0) @binding(0) var<uniform> ep: MapParams;
@group(0) @binding(1) var<storage, read> u: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;

@compute @workgroup_size(64)
fn map(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let i = (wg.x + wg.y * ep.groups_x) * 64u + t;
    if (i >= ep.rows * ep.cols) {
        return;
    }
    let r = i / ep.cols;
    let col = i % ep.cols;
    let a = u[ep.u_off + r * ep.u_stride + col];
    var res = a;
    switch ep.op {
        case 1u: { res = max(a, 0.0); }
        case 2u: { res = a + v[ep.v_off + r * ep.v_stride + col]; }
        case 3u: { res = a * v[ep.v_off + r * ep.v_stride + col]; }
        case 4u: { res = select(exp(a), a + 1.0, a > 0.0); }
        default: {}
    }
    o[ep.o_off + r * ep.o_stride + col] = res;
}

// Reference: cpu::linalg (relu, residual_add), feature::prf::linear_feature_map.
// Host side: src/kernels/linalg.rs.
