// #select f16
// Dense retrieval, pass 1 for a few queries (L <= LQ <= 16) against many
// memories: one workgroup per split of the bound segment serves every query
// of the batch, so each key and value is read from memory once (the legacy
// kernel, dense_decode_legacy.wgsl, ran one workgroup per query and split,
// reading everything L times). It writes the same per-split partials as
// dense.wgsl, merged by dense_merge.wgsl.
//
// Shape (overrides, set by `dense::Decode` in src/kernels/dense.rs): WG
// threads, one memory per thread and tile (BM = WG); LQ queries as LQ4 = LQ / 4
// vec4s, so L = 5 .. 8 runs LQ = 8 and L = 9 .. 16 runs LQ = 16 rather than a
// 16-query tile with empty rows.
// Per tile:
//   1. the keys are staged in workgroup memory with vec4 loads (consecutive
//      threads, consecutive 16 bytes) and thread t scores memory t against
//      all LQ queries (beta * log2(e) folded into the staged queries);
//   2. the tile's max per query over the workgroup: subgroupShuffleXor
//      butterflies within groups of SGS lanes (SUBGROUP, SGS = the device's
//      smallest subgroup), then one slot per group in workgroup memory; or
//      a tree in workgroup memory. Sums and argmaxes stay per thread and
//      are reduced once per split;
//   3. p = exp2(s - max) to workgroup memory; threads are (column vec4,
//      memory lane) pairs that accumulate p V with vec4 loads straight from
//      the value rows (each value read once), in registers when the columns
//      fit one pass (dv <= 4 WG), else in the split's rows of part_o.
//
// Reference: src/cpu/dense.rs. Host side: src/kernels/dense.rs.
//
// #trusted every index is in range: memories are guarded by j < jmax (rows of the bound segment), queries by q < l <= LQ, dimensions by k < d and c < dv, the bindings hold whole vec4s (the host pads them), part_o / part_stats rows are (q < l, split < n_splits), workgroup arrays are sized by the overrides that bound their loops, and no divisor is 0 (WG, DK4, SGS, column lanes >= 1).
// #select subgroup

// Keep in sync with `DenseParams` in src/kernels/dense.rs (same as dense.wgsl).
struct Params {
    l: u32,
    d: u32,
    dv: u32,
    seg_rows: u32,
    seg_row0: u32,
    split_rows: u32,
    split0: u32,
    n_splits: u32,
    beta: f32,
    scores_only: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32;                // threads = memories per tile, a power of two
override LQ: u32;                // queries served: 4, 8 or 16
override DK: u32;                // dimensions staged per barrier, a multiple of 4
override SUBGROUP: bool = false;
override SGS: u32 = 8u;          // lanes per subgroup reduction (<= the smallest subgroup)
override D: u32 = 0u;            // the bank's d where fixed at pipeline creation
override KALIGN: bool = false;   // d is a multiple of 4 (vec4 loads of keys and queries only)
override VALIGN: bool = false;   // dv is a multiple of 4 (vec4 loads of values only)
override DV: u32 = 0u;           // the bank's dv likewise
override LQ4: u32 = LQ / 4u;
override DK4: u32 = DK / 4u;
override PAD: bool = true;          // odd row stride on GPUs (banks), none on CPU devices
override KS4: u32 = select(DK4, DK4 + 1u - DK4 % 2u, PAD);

const LOG2E: f32 = 1.4426950408889634;
const LN2: f32 = 0.6931471805599453;
// #include shared/neg.wgsl

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> queries: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> keys: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read> values: array<vec4<elem>>;
@group(0) @binding(4) var<storage, read_write> part_o: array<f32>;
@group(0) @binding(5) var<storage, read_write> part_stats: array<vec4<f32>>;

var<workgroup> qs: array<vec4<f32>, LQ * KS4>;  // qs[q * KS4 + k4], scaled
var<workgroup> kv: array<vec4<f32>, WG * KS4>;  // kv[j * KS4 + k4]: the tile's keys
var<workgroup> ws: array<vec4<f32>, WG * LQ4>;  // ws[j * LQ4 + g]: exp2(s - max) of memory j
var<workgroup> red: array<vec4<f32>, WG * LQ4>; // reductions

// #include shared/load4.wgsl
// #include shared/value4.wgsl

// op 0: max, 1: sum, 2: min of the u32 bits; over the whole workgroup, per
// component of each of the LQ4 vec4s in `v` (every thread gets the result).
fn reduce(t: u32, v: ptr<function, array<vec4<f32>, 4>>, op: u32) {
    if (SUBGROUP && HAVE_SUBGROUPS && op == 0u) {
        // Max is idempotent: a subgroup larger than SGS just covers several
        // slots with the same value.
        for (var g = 0u; g < LQ4; g++) {
            var m = (*v)[g];
            for (var s = SGS / 2u; s > 0u; s >>= 1u) {
                m = max(m, sg_xor4(m, s));
            }
            if (t % SGS == 0u) {
                red[(t / SGS) * LQ4 + g] = m;
            }
        }
        workgroupBarrier();
        for (var g = 0u; g < LQ4; g++) {
            var m = red[g];
            for (var i = 1u; i < WG / SGS; i++) {
                m = max(m, red[i * LQ4 + g]);
            }
            (*v)[g] = m;
        }
        workgroupBarrier();
        return;
    }
    for (var g = 0u; g < LQ4; g++) {
        red[t * LQ4 + g] = (*v)[g];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            for (var g = 0u; g < LQ4; g++) {
                let a = red[t * LQ4 + g];
                let b = red[(t + s) * LQ4 + g];
                var r = max(a, b);
                if (op == 1u) {
                    r = a + b;
                } else if (op == 2u) {
                    r = bitcast<vec4<f32>>(min(bitcast<vec4<u32>>(a), bitcast<vec4<u32>>(b)));
                }
                red[t * LQ4 + g] = r;
            }
        }
        workgroupBarrier();
    }
    for (var g = 0u; g < LQ4; g++) {
        (*v)[g] = red[g];
    }
    workgroupBarrier();
}

fn out_index(q: u32, split: u32, dv: u32, c: u32) -> u32 {
    return (q * p.n_splits + split) * dv + c;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let q0 = wg.x * LQ;
    let d = dims();
    let dv = value_dims();
    let dv4 = (dv + 3u) / 4u;
    let m_begin = wg.y * p.split_rows;
    let m_end = min(m_begin + p.split_rows, p.seg_rows);
    let n_chunks = (d + DK - 1u) / DK;
    let split = p.split0 + wg.y;
    let scale = p.beta * LOG2E;
    // Column lanes by memory lanes for p V: one pass of cw <= WG vec4
    // columns, accumulators in registers, if dv4 <= WG; else passes of WG
    // columns with the accumulators in part_o.
    let cw = min(dv4, WG);
    let jl_n = WG / cw;
    let cl = t % cw;
    let jl = t / cw;
    let n_blocks = (dv4 + cw - 1u) / cw;

    var run_max: array<vec4<f32>, 4>;     // per query group, log2 units
    var run_sum: array<vec4<f32>, 4>;     // this thread's part of the sums
    var best: array<vec4<f32>, 4>;        // this thread's largest score per query ...
    var best_at: array<vec4<u32>, 4>;     // ... at the first memory holding it
    var o: array<vec4<f32>, 16>;          // o[q]: columns 4 (block + cl) .. + 3 of query q
    for (var g = 0u; g < LQ4; g++) {
        run_max[g] = vec4<f32>(NEG);
        best[g] = vec4<f32>(NEG);
        best_at[g] = vec4<u32>(0xffffffffu);
    }

    for (var m0 = m_begin; m0 < m_end; m0 += WG) {
        let jmax = min(WG, m_end - m0);
        // 1. Scores of memory m0 + t.
        var s: array<vec4<f32>, 4>;
        for (var ch = 0u; ch < n_chunks; ch++) {
            let k0 = ch * DK;
            workgroupBarrier(); // the previous readers of qs / kv are done
            if (ch == 0u || n_chunks > 1u) {
                // With one chunk the queries are restaged per tile too: a
                // few vec4s per thread, cheaper than a second code path.
                for (var i = 0u; i < (LQ * DK4 + WG - 1u) / WG; i++) {
                    let e = t + WG * i;
                    if (e < LQ * DK4) {
                        let q = e / DK4;
                        var v = vec4<f32>(0.0);
                        if (q0 + q < p.l) {
                            v = query4(q0 + q, d, k0 + 4u * (e % DK4)) * scale;
                        }
                        qs[q * KS4 + e % DK4] = v;
                    }
                }
            }
            for (var i = 0u; i < DK4; i++) {
                let e = t + WG * i;
                let j = e / DK4;
                var v = vec4<f32>(0.0);
                if (j < jmax) {
                    v = key4(m0 + j, d, k0 + 4u * (e % DK4));
                }
                kv[j * KS4 + e % DK4] = v;
            }
            workgroupBarrier();
            for (var k4 = 0u; k4 < DK4; k4++) {
                let key = kv[t * KS4 + k4];
                for (var g = 0u; g < LQ4; g++) {
                    let qm = mat4x4<f32>(
                        qs[(4u * g) * KS4 + k4],
                        qs[(4u * g + 1u) * KS4 + k4],
                        qs[(4u * g + 2u) * KS4 + k4],
                        qs[(4u * g + 3u) * KS4 + k4],
                    );
                    s[g] += key * qm;
                }
            }
        }

        // 2. The tile's max per query; this thread's argmax and exp2.
        var tile_max: array<vec4<f32>, 4>;
        for (var g = 0u; g < LQ4; g++) {
            if (t < jmax) {
                tile_max[g] = s[g];
                let better = s[g] > best[g];
                best[g] = select(best[g], s[g], better);
                best_at[g] = select(best_at[g], vec4<u32>(m0 + t), better);
            } else {
                tile_max[g] = vec4<f32>(NEG);
                s[g] = vec4<f32>(NEG);
            }
        }
        reduce(t, &tile_max, 0u);
        var alpha: array<vec4<f32>, 4>;
        for (var g = 0u; g < LQ4; g++) {
            let new_max = max(run_max[g], tile_max[g]);
            alpha[g] = exp2(run_max[g] - new_max);
            run_max[g] = new_max;
            let e = exp2(s[g] - new_max);
            run_sum[g] = run_sum[g] * alpha[g] + e;
            ws[t * LQ4 + g] = e;
        }
        if (p.scores_only == 1u) {
            continue;
        }
        workgroupBarrier(); // ws is written

        // 3. o = o * alpha + p V.
        for (var b = 0u; b < n_blocks; b++) {
            let c4 = b * cw + cl;
            let live = jl < jl_n && c4 < dv4;
            if (n_blocks > 1u) {
                for (var q = 0u; q < LQ; q++) {
                    var acc = vec4<f32>(0.0);
                    if (live && m0 != m_begin && q0 + q < p.l) {
                        for (var k = 0u; k < 4u; k++) {
                            if (4u * c4 + k < dv) {
                                acc[k] = part_o[out_index(q0 + q, split, dv, 4u * c4 + k)];
                            }
                        }
                    }
                    o[q] = acc;
                }
            }
            for (var q = 0u; q < LQ; q++) {
                o[q] *= alpha[q / 4u][q % 4u];
            }
            if (live) {
                for (var j = jl; j < jmax; j += jl_n) {
                    let v = value4(m0 + j, dv, c4);
                    for (var g = 0u; g < LQ4; g++) {
                        let w = ws[j * LQ4 + g];
                        o[4u * g] += w.x * v;
                        o[4u * g + 1u] += w.y * v;
                        o[4u * g + 2u] += w.z * v;
                        o[4u * g + 3u] += w.w * v;
                    }
                }
            }
            if (n_blocks > 1u && live) {
                for (var q = 0u; q < LQ; q++) {
                    for (var k = 0u; k < 4u; k++) {
                        if (q0 + q < p.l && 4u * c4 + k < dv) {
                            part_o[out_index(q0 + q, split, dv, 4u * c4 + k)] = o[q][k];
                        }
                    }
                }
            }
        }
    }

    // The split's statistics, reduced once: sums and argmaxes.
    reduce(t, &run_sum, 1u);
    var at: array<vec4<f32>, 4>;
    for (var g = 0u; g < LQ4; g++) {
        at[g] = bitcast<vec4<f32>>(select(vec4<u32>(0xffffffffu), best_at[g], best[g] == run_max[g]));
    }
    reduce(t, &at, 2u);
    if (t < LQ && q0 + t < p.l) {
        let g = t / 4u;
        let i = t % 4u;
        part_stats[(q0 + t) * p.n_splits + split] = vec4<f32>(
            run_max[g][i] * LN2,
            run_sum[g][i],
            bitcast<f32>(p.seg_row0 + bitcast<u32>(at[g][i])),
            0.0,
        );
    }
    // With one pass of columns the memory lanes' accumulators are summed
    // here, one query at a time, and written once.
    if (p.scores_only == 0u && n_blocks == 1u) {
        for (var q = 0u; q < LQ; q++) {
            red[t] = o[q];
            workgroupBarrier();
            if (jl == 0u && cl < dv4 && q0 + q < p.l) {
                var acc = o[q];
                for (var i = 1u; i < jl_n; i++) {
                    acc += red[t + i * cw];
                }
                for (var k = 0u; k < 4u; k++) {
                    if (4u * cl + k < dv) {
                        part_o[out_index(q0 + q, split, dv, 4u * cl + k)] = acc[k];
                    }
                }
            }
            workgroupBarrier();
        }
    }
}
