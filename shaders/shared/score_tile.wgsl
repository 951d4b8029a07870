// Scores of a tile of BQ queries against BM memories, shared by dense.wgsl
// and topk.wgsl (the same register-tiled loop as FlashAttention-2's
// Q K^T). The including kernel declares the overrides WG, BQ, RM, DK, D,
// KALIGN, PREFETCH, PAD and the derived TQ, TM, BM, DK4, KS4; the bindings `queries`
// (array<vec4<f32>>) and `keys` (array<vec4<elem>>, elem f32 or f16), and
// the workgroup arrays `qs` (BQ * KS4 vec4) and `kv` (at least BM * KS4 vec4).
//
// Layout. Thread t is (tq, tm) = (t / TM, t % TM): it scores the 4 queries
// 4 tq .. 4 tq + 3 against the RM memories tm + TM r (r < RM), a 4 x RM
// register tile, s[r][i] = score of query 4 tq + i against memory tm + TM r.
// Queries and keys are staged row-major in vec4s of 4 dimensions
// (qs[q * KS4 + k4], kv[j * KS4 + k4]); per 4 dimensions a thread reads 4
// query vec4s (the same for the TM lanes of a row: a broadcast) and RM key
// vec4s (rows tm + TM r: an odd row stride KS4, where PAD, keeps the lanes
// on distinct banks), and does 16 RM multiply-adds: 128 per 12 loads at RM = 8, against
// 16 per 5 in the legacy kernel. Global loads are vec4 (16 bytes) where d is
// a multiple of 4, consecutive threads reading consecutive vec4s of a row.
//
// Indices: every vec4 read of `queries` / `keys` is guarded by the row
// (q < l, j < jmax) and the dimension (k < d) it holds; the host binds
// them padded to whole vec4s (src/bank.rs, src/kernels/dense.rs).

// Prefetched key vec4s of this thread (PREFETCH): the next chunk's loads are
// issued before the current one is computed on, so their latency hides
// behind the arithmetic. The host keeps ceil(BM DK4 / WG) <= 16.
var<private> pf: array<vec4<f32>, 16>;

// #include shared/load4.wgsl

// Stage dimensions k0 .. k0 + DK of queries q0 .. q0 + BQ - 1 (rows
// qrow0 + q of `queries`, zero past l), multiplied by `scale`.
fn stage_queries(t: u32, qrow0: u32, q0: u32, l: u32, d: u32, k0: u32, scale: f32) {
    for (var i = 0u; i < (BQ * DK4 + WG - 1u) / WG; i++) {
        let e = t + WG * i;
        if (e < BQ * DK4) {
            let q = e / DK4;
            let k4 = e % DK4;
            var v = vec4<f32>(0.0);
            if (q0 + q < l) {
                v = query4(qrow0 + q0 + q, d, k0 + 4u * k4) * scale;
            }
            qs[q * KS4 + k4] = v;
        }
    }
}

// Load (into this thread's registers) dimensions k0 .. k0 + DK of memories
// m0 .. m0 + jmax - 1 of the segment; zero for the rest of the tile.
fn fetch_keys(t: u32, m0: u32, jmax: u32, d: u32, k0: u32) {
    for (var i = 0u; i < (BM * DK4 + WG - 1u) / WG; i++) {
        let e = t + WG * i;
        let j = e / DK4;
        var v = vec4<f32>(0.0);
        if (e < BM * DK4 && j < jmax) {
            v = key4(m0 + j, d, k0 + 4u * (e % DK4));
        }
        pf[i] = v;
    }
}

// Write the fetched keys to the tile (callers put barriers around it).
fn store_keys(t: u32) {
    for (var i = 0u; i < (BM * DK4 + WG - 1u) / WG; i++) {
        let e = t + WG * i;
        if (e < BM * DK4) {
            kv[(e / DK4) * KS4 + e % DK4] = pf[i];
        }
    }
}

// Accumulate the staged chunk into the thread's 4 x RM register tile.
fn score_chunk(tq: u32, tm: u32, s: ptr<function, array<vec4<f32>, 8>>) {
    for (var k4 = 0u; k4 < DK4; k4++) {
        let qm = mat4x4<f32>(
            qs[(4u * tq) * KS4 + k4],
            qs[(4u * tq + 1u) * KS4 + k4],
            qs[(4u * tq + 2u) * KS4 + k4],
            qs[(4u * tq + 3u) * KS4 + k4],
        );
        for (var r = 0u; r < RM; r++) {
            // key * Q: the dot product of the key with each query (column).
            (*s)[r] += kv[(tm + TM * r) * KS4 + k4] * qm;
        }
    }
}

// Prefetch the first chunk of the first tile (PREFETCH only).
fn prefetch_first(t: u32, m_begin: u32, m_end: u32, d: u32) {
    if (PREFETCH && m_begin < m_end) {
        fetch_keys(t, m_begin, min(BM, m_end - m_begin), d, 0u);
    }
}

// The thread's 4 x RM scores of the tile at m0 (memories m0 .. m_end of the
// split, BM at a time), chunk by chunk of DK dimensions. With one chunk the
// caller stages the queries once, before its tile loop; with more, each
// chunk restages them. Callers read `kv` after this only behind a barrier.
fn score_tile(
    t: u32, tq: u32, tm: u32, qrow0: u32, q0: u32, l: u32, d: u32,
    m0: u32, m_end: u32, scale: f32, s: ptr<function, array<vec4<f32>, 8>>,
) {
    let jmax = min(BM, m_end - m0);
    let n_chunks = (d + DK - 1u) / DK;
    for (var ch = 0u; ch < n_chunks; ch++) {
        if (!PREFETCH) {
            fetch_keys(t, m0, jmax, d, ch * DK);
        }
        workgroupBarrier(); // the previous readers of qs / kv are done
        if (n_chunks > 1u) {
            stage_queries(t, qrow0, q0, l, d, ch * DK, scale);
        }
        store_keys(t);
        workgroupBarrier();
        if (PREFETCH) {
            if (ch + 1u < n_chunks) {
                fetch_keys(t, m0, jmax, d, (ch + 1u) * DK);
            } else if (m0 + BM < m_end) {
                fetch_keys(t, m0 + BM, min(BM, m_end - m0 - BM), d, 0u);
            }
        }
        score_chunk(tq, tm, s);
    }
}
