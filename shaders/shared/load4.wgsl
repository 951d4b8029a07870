// Reads of 4 consecutive dimensions of a query or a memory row, shared by
// the kernels that score (score_tile.wgsl: dense, topk; dense_decode). The
// including kernel declares the overrides D and KALIGN, the uniform `p`
// (with p.d), and the bindings `queries` (array<vec4<f32>>) and `keys`
// (array<vec4<elem>>, elem f32 or f16). Indices: every vec4 read is guarded
// by the dimension (k < d) it holds; the caller guards the row, and the host
// binds both arrays padded to whole vec4s.

// Pattern dimension: the bank's, fixed at pipeline creation where D > 0
// (constant trip counts), else the parameter.
fn dims() -> u32 {
    return select(p.d, D, D > 0u);
}

// Dimensions k .. k + 3 of row `row` of the queries (d per row); zero past
// d. KALIGN (d a multiple of 4, set by the host) compiles the vec4 path
// alone: the scalar one, dead there, would still cost registers.
fn query4(row: u32, d: u32, k: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (KALIGN) {
        if (k < d) {
            v = queries[(row * d + k) >> 2u];
        }
        return v;
    }
    let e = row * d + k;
    for (var c = 0u; c < 4u; c++) {
        if (k + c < d) {
            v[c] = queries[(e + c) >> 2u][(e + c) & 3u];
        }
    }
    return v;
}

// Dimensions k .. k + 3 of memory `row` of the bound segment; zero past d.
fn key4(row: u32, d: u32, k: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (KALIGN) {
        if (k < d) {
            v = vec4<f32>(keys[(row * d + k) >> 2u]);
        }
        return v;
    }
    let e = row * d + k;
    for (var c = 0u; c < 4u; c++) {
        if (k + c < d) {
            v[c] = f32(keys[(e + c) >> 2u][(e + c) & 3u]);
        }
    }
    return v;
}
