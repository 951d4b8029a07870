// Reads of 4 consecutive columns of a value row, shared by dense.wgsl and
// dense_decode.wgsl. The including kernel declares the overrides DV and
// VALIGN, the uniform `p` (with p.dv) and the binding `values`
// (array<vec4<elem>>). Every vec4 read is guarded by the column (k < dv);
// the caller guards the row, and the host binds the values padded to whole
// vec4s.

fn value_dims() -> u32 {
    return select(p.dv, DV, DV > 0u);
}

// Columns 4 c4 .. 4 c4 + 3 of value row `row` of the segment; zero past dv.
fn value4(row: u32, dv: u32, c4: u32) -> vec4<f32> {
    let k = 4u * c4;
    var v = vec4<f32>(0.0);
    if (VALIGN) {
        if (k < dv) {
            v = vec4<f32>(values[(row * dv + k) >> 2u]);
        }
        return v;
    }
    let e = row * dv + k;
    for (var c = 0u; c < 4u; c++) {
        if (k + c < dv) {
            v[c] = f32(values[(e + c) >> 2u][(e + c) & 3u]);
        }
    }
    return v;
}
