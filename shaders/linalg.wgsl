// The dense algebra of a Hopfield layer, part 1: a batched, strided, tiled
// matrix multiply with bias and ReLU (projections, feed-forward maps, and
// the scores and read-outs of batched retrieval). LayerNorm is
// linalg_norm.wgsl, the element-wise maps linalg_map.wgsl.
//
// Every operand is addressed as (offset, row stride) in floats, so the head
// split and concatenation of a multi-head layer are strides, not copies:
// head h of a [rows, H hd] projection starts at offset h hd with stride H hd.
//
// matmul: C = alpha A op(B) (+ bias) (ReLU), per entry of a list; op(B) is
// B^T for B stored [n, k] (PyTorch's [out, in] weights, keys) or B for B
// stored [k, n] (values). The work is a list of 32 x 32 output tiles, each
// naming its entry, so problems of different sizes share one dispatch and no
// workgroup idles on another problem's padding. A tile stages A's rows
// (16 dims at a time) and B's columns in workgroup memory; each of 64
// threads keeps a 4 x 4 register tile (rows 4 tr + i, columns 4 tc + j),
// both operands read as vec4: two workgroup loads per 16 multiply-adds. Along k a dispatch covers [k0, k1): the host
// splits long reductions so that no invocation runs past llvmpipe's loop
// limit, later dispatches adding to C (flag ACCUMULATE, no bias).
//
// Reference: src/cpu/linalg.rs. Host side: src/kernels/linalg.rs.

// Keep in sync with `MatmulParams` in src/kernels/linalg.rs.
struct MatmulParams {
    tiles: u32,    // tiles in this dispatch
    tile0: u32,    // index in `desc` of its first tile (4 words each)
    entry0: u32,   // index in `desc` of entry 0 (ENTRY_WORDS words each)
    groups_x: u32, // workgroups along x; the tile is x + y * groups_x
    k0: u32,       // reduction range of this dispatch
    k1: u32,
    flags: u32,    // B_ROWS | BIAS | RELU | ACCUMULATE
    _pad: u32,
}

const B_ROWS: u32 = 1u;     // B stored [n, k]: C = A B^T
const BIAS: u32 = 2u;       // add bias[bias_off + col]
const RELU: u32 = 4u;       // max(., 0) after the bias
const ACCUMULATE: u32 = 8u; // C += instead of C =

// One entry: words m, n, k, a_off, a_stride, b_off, b_stride, c_off,
// c_stride, bias_off, alpha (f32 bits), unused. Keep in sync with
// `MatmulEntry` in src/kernels/linalg.rs.
const ENTRY_WORDS: u32 = 12u;

// Tile shape, set by the host (`linalg::TILE`, the one place it is written).
// The thread layout (8 row groups of 4 rows x 8 column groups of 4
// columns) is written for TM = TN = 32.
override TM: u32;
override TN: u32;
override TK: u32;

@group(0) @binding(0) var<uniform> mp: MatmulParams;
@group(0) @binding(1) var<storage, read> desc: array<u32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;

// as_[k * TM / 4 + g][i]: dimension k of row 4 g + i of the tile.
var<workgroup> as_: array<vec4<f32>, TK * TM / 4u>;
// bs[k * TN / 4 + g][j]: dimension k of column 4 g + j of the tile.
var<workgroup> bs: array<vec4<f32>, TK * TN / 4u>;
// The entry's words, read once per workgroup (a uniform value for the loops).
var<workgroup> entry: array<u32, 12>;

fn store_row(row: u32, col0: u32, v: vec4<f32>, n: u32, c_off: u32, c_stride: u32, bias_off: u32, alpha: f32) {
    for (var j = 0u; j < 4u; j++) {
        let col = col0 + j;
        if (col < n) {
            var x = alpha * v[j];
            let at = c_off + row * c_stride + col;
            if ((mp.flags & ACCUMULATE) != 0u) {
                x += c[at];
            } else {
                if ((mp.flags & BIAS) != 0u) {
                    x += bias[bias_off + col];
                }
                if ((mp.flags & RELU) != 0u) {
                    x = max(x, 0.0);
                }
            }
            c[at] = x;
        }
    }
}

@compute @workgroup_size(64)
fn matmul(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tile = wg.x + wg.y * mp.groups_x;
    if (tile >= mp.tiles) {
        return; // uniform: the tile depends on the workgroup only
    }
    let tb = mp.tile0 + tile * 4u;
    if (t < ENTRY_WORDS) {
        entry[t] = desc[mp.entry0 + desc[tb] * ENTRY_WORDS + t];
    }
    let m = workgroupUniformLoad(&entry[0]);
    let n = workgroupUniformLoad(&entry[1]);
    let kk = workgroupUniformLoad(&entry[2]);
    let a_off = entry[3];
    let a_stride = entry[4];
    let b_off = entry[5];
    let b_stride = entry[6];
    let c_off = entry[7];
    let c_stride = entry[8];
    let bias_off = entry[9];
    let alpha = bitcast<f32>(entry[10]);
    let row0 = desc[tb + 1u];
    let col0 = desc[tb + 2u];
    let kend = min(mp.k1, kk);
    if (mp.k0 >= kend && (mp.flags & ACCUMULATE) != 0u) {
        return; // nothing of this entry's reduction falls in this dispatch
    }
    let tr = t / 8u; // rows 4 tr .. 4 tr + 3
    let tc = t % 8u; // columns 4 tc .. 4 tc + 3
    let b_rows = (mp.flags & B_ROWS) != 0u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = mp.k0; k0 < kend; k0 += TK) {
        let kmax = min(TK, kend - k0);
        workgroupBarrier(); // the previous chunk's readers are done
        for (var e = t; e < TM * TK; e += 64u) {
            let r = e / TK;
            let k = e % TK;
            var v = 0.0;
            if (row0 + r < m && k < kmax) {
                v = a[a_off + (row0 + r) * a_stride + k0 + k];
            }
            as_[k * (TM / 4u) + r / 4u][r % 4u] = v;
        }
        if (b_rows) {
            for (var e = t; e < TN * TK; e += 64u) {
                let j = e / TK;
                let k = e % TK;
                var v = 0.0;
                if (col0 + j < n && k < kmax) {
                    v = b[b_off + (col0 + j) * b_stride + k0 + k];
                }
                bs[k * (TN / 4u) + j / 4u][j % 4u] = v;
            }
        } else {
            for (var e = t; e < TN * TK; e += 64u) {
                let k = e / TN;
                let j = e % TN;
                var v = 0.0;
                if (col0 + j < n && k < kmax) {
                    v = b[b_off + (k0 + k) * b_stride + col0 + j];
                }
                bs[k * (TN / 4u) + j / 4u][j % 4u] = v;
            }
        }
        workgroupBarrier();
        for (var k = 0u; k < kmax; k++) {
            let av = as_[k * (TM / 4u) + tr];
            let bv = bs[k * (TN / 4u) + tc];
            acc0 += av.x * bv;
            acc1 += av.y * bv;
            acc2 += av.z * bv;
            acc3 += av.w * bv;
        }
    }
    let r = row0 + 4u * tr;
    let col = col0 + 4u * tc;
    if (r < m) { store_row(r, col, acc0, n, c_off, c_stride, bias_off, alpha); }
    if (r + 1u < m) { store_row(r + 1u, col, acc1, n, c_off, c_stride, bias_off, alpha); }
    if (r + 2u < m) { store_row(r + 2u, col, acc2, n, c_off, c_stride, bias_off, alpha); }
    if (r + 3u < m) { store_row(r + 3u, col, acc3, n, c_off, c_stride, bias_off, alpha); }
}

