// Batched retrieval, the kernel methods' score rows, pair by pair: for the
// linear kernel the kernel value <elu(x) + 1, elu(xi) + 1> (normalised by
// their sum, batch.wgsl M_RATIO); for positive random features the log of
// the kernel, log sum_f exp(<w_f, x'> + <w_f, xi'>) - (|x'|^2 + |xi'|^2) / 2
// with x' = sqrt(beta) x (normalised by a softmax, M_DENSE), which neither
// overflows nor underflows whatever the magnitudes. The 1 / m factor of the
// features cancels in the normalisation and is left out. The products
// <w_f, x> and <w_f, xi> come from linalg.wgsl (`ax`, `bk`).
//
// The association matrix of a batched problem is materialised, so these
// rows cost O(L M d) (linear) and O(L M r) (prf), not the feature-map
// path's O((L + M) r d): the outputs are the methods', the cost is not.
//
// One workgroup per score row; its threads take the memories, the zero
// memory (add_zero_association, index m, key 0) included.
// Reference: cpu::batch::association. Host side: src/kernels/batch.rs.

// Keep in sync with `PairParams` in src/kernels/batch.rs.
struct Params {
    p0: u32,
    p1: u32,
    rows: u32,     // rows of this dispatch
    row0: u32,     // global row of the first
    groups_x: u32,
    d: u32,
    r: u32,        // random features (prf)
    flags: u32,    // FIRST | PRF
    prob_at: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const FIRST: u32 = 1u; // the state is still the queries
const PRF: u32 = 2u;   // else linear
const PW: u32 = 24u;   // words per problem; keep in sync with batch.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> desc: array<u32>;
@group(0) @binding(2) var<storage, read> queries: array<f32>;
@group(0) @binding(3) var<storage, read> state: array<f32>;
@group(0) @binding(4) var<storage, read> keys: array<f32>;
@group(0) @binding(5) var<storage, read> ax: array<f32>;
@group(0) @binding(6) var<storage, read> bk: array<f32>;
@group(0) @binding(7) var<storage, read_write> s: array<f32>;

var<workgroup> pd: array<u32, 24>;
var<workgroup> found: u32;

fn elu1(v: f32) -> f32 {
    return select(exp(v), v + 1.0, v > 0.0);
}

@compute @workgroup_size(64)
fn pairwise(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let item = wg.x + wg.y * p.groups_x;
    if (item >= p.rows) {
        return;
    }
    let row = p.row0 + item;
    if (t == 0u) {
        var lo = p.p0;
        var hi = p.p1;
        while (hi - lo > 1u) {
            let mid = (lo + hi) / 2u;
            if (desc[p.prob_at + mid * PW + 1u] <= row) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        found = lo;
    }
    let q = workgroupUniformLoad(&found);
    if (t < PW) {
        pd[t] = desc[p.prob_at + q * PW + t];
    }
    workgroupBarrier();
    let lr = row - pd[1];
    let m = pd[4];
    let width = pd[5];
    let base = pd[8] + lr * width;
    let x_off = select(row * p.d, pd[12] + lr * pd[13], (p.flags & FIRST) != 0u);
    let k_off = pd[14];
    let k_stride = pd[15];
    let beta = bitcast<f32>(pd[22]);
    let aux = pd[23];
    let prf = (p.flags & PRF) != 0u;
    let first = (p.flags & FIRST) != 0u;

    var xx = 0.0;
    if (prf) {
        for (var c = 0u; c < p.d; c++) {
            var x = 0.0;
            if (first) { x = queries[x_off + c]; } else { x = state[x_off + c]; }
            xx += x * x;
        }
    }
    let sb = sqrt(beta);
    for (var mu = t; mu < width; mu += 64u) {
        let real = mu < m;
        if (prf) {
            var kk = 0.0;
            if (real) {
                for (var c = 0u; c < p.d; c++) {
                    let v = keys[k_off + mu * k_stride + c];
                    kk += v * v;
                }
            }
            var mx = -3.0e38;
            for (var f = 0u; f < p.r; f++) {
                var b = 0.0;
                if (real) { b = bk[(aux + mu) * p.r + f]; }
                mx = max(mx, sb * (ax[row * p.r + f] + b));
            }
            var sum = 0.0;
            for (var f = 0u; f < p.r; f++) {
                var b = 0.0;
                if (real) { b = bk[(aux + mu) * p.r + f]; }
                sum += exp(sb * (ax[row * p.r + f] + b) - mx);
            }
            s[base + mu] = mx + log(sum) - 0.5 * beta * (xx + kk);
        } else {
            var acc = 0.0;
            for (var c = 0u; c < p.d; c++) {
                var x = 0.0;
                if (first) { x = queries[x_off + c]; } else { x = state[x_off + c]; }
                var k = 0.0;
                if (real) { k = keys[k_off + mu * k_stride + c]; }
                acc += elu1(x) * elu1(k);
            }
            s[base + mu] = acc;
        }
    }
}
