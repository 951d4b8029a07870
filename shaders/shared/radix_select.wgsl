// Exact threshold of a candidate set by radix select, shared by topk.wgsl
// (compacting a full candidate buffer) and topk_merge.wgsl (choosing the K
// winners among every split's candidates).
//
// Entries are (rank, index) pairs; the order is rank descending, then index
// ascending (ties to the lower index), and indices are unique, so the K best
// entries are one well-defined set. `select_threshold(t, k)` returns theta
// such that exactly k entries of the set satisfy ge(entry, theta):
// 4-bit digits of the rank from the top (a 16-bin histogram in workgroup
// memory per pass, at most 8 passes), stopping as soon as the bucket that
// holds the k-th entry is kept whole; when the k-th rank is shared by more
// entries than are kept, 4-bit digits of the index (smallest first) decide
// which. A looser theta than the k-th entry itself is returned when a whole
// bucket is kept: it keeps the same k entries.
//
// The including kernel defines WG, `cand` (array<vec2<u32>>), and the set:
// `set_regions()` regions, region g at `set_region(g)` = (first entry, count).
// Every control decision goes through `workgroupUniformLoad`, so all
// threads take the same branches around the barriers.

var<workgroup> hist: array<atomic<u32>, 16>;
var<workgroup> sel: vec4<u32>; // thread 0's scan: (digit, entries before its bucket, entries in it, 0)

// a at least as good as b: higher rank, or the same rank and an index not above.
fn ge(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x > b.x || (a.x == b.x && a.y <= b.y);
}

// Histogram of the digit at `shift` of the entries whose key matches
// `prefix` under `mask`. Phase 0: the key is the rank; phase 1: the index,
// of the entries whose rank is `rk`.
fn histogram(t: u32, phase: u32, rk: u32, prefix: u32, mask: u32, shift: u32) {
    if (t < 16u) {
        atomicStore(&hist[t], 0u);
    }
    workgroupBarrier();
    let n_reg = set_regions();
    for (var g = 0u; g < n_reg; g++) {
        let reg = set_region(g);
        for (var e = t; e < reg.y; e += WG) {
            let c = cand[reg.x + e];
            let key = select(c.x, c.y, phase == 1u);
            if ((phase == 0u || c.x == rk) && (key & mask) == prefix) {
                atomicAdd(&hist[(key >> shift) & 15u], 1u);
            }
        }
    }
    workgroupBarrier();
}

// The bucket holding the need-th entry: thread 0 walks the bins (ranks from
// the largest digit down, indices from the smallest up) and every thread
// receives (digit, entries before the bucket, entries in it).
fn scan(t: u32, phase: u32, need: u32) -> vec3<u32> {
    if (t == 0u) {
        // A fixed trip count and no break, so the compiler can unroll it.
        var before = 0u;
        var found = vec4<u32>(0u, 0u, 0u, 0u);
        var done = false;
        for (var i = 0u; i < 16u; i++) {
            let b = select(15u - i, i, phase == 1u);
            let h = atomicLoad(&hist[b]);
            if (!done && before + h >= need) {
                found = vec4<u32>(b, before, h, 0u);
                done = true;
            }
            if (!done) {
                before += h;
            }
        }
        sel = found;
    }
    return workgroupUniformLoad(&sel).xyz;
}

// theta with exactly k (1 <= k <= entries) entries of the set ge theta.
fn select_threshold(t: u32, k: u32) -> vec2<u32> {
    var prefix = 0u;
    var mask = 0u;
    var need = k;
    for (var step = 0u; step < 8u; step++) {
        let shift = 28u - 4u * step;
        histogram(t, 0u, 0u, prefix, mask, shift);
        let r = scan(t, 0u, need);
        prefix |= r.x << shift;
        mask |= 15u << shift;
        need -= r.y;
        if (r.z == need) {
            // The whole bucket is kept: every rank >= its lowest.
            return vec2<u32>(prefix, 0xffffffffu);
        }
    }
    // The k-th rank, shared by more entries than are kept: the need
    // smallest indices among them.
    let rk = prefix;
    prefix = 0u;
    mask = 0u;
    for (var step = 0u; step < 8u; step++) {
        let shift = 28u - 4u * step;
        histogram(t, 1u, rk, prefix, mask, shift);
        let r = scan(t, 1u, need);
        prefix |= r.x << shift;
        mask |= 15u << shift;
        need -= r.y;
        if (r.z == need) {
            return vec2<u32>(rk, prefix | ~mask);
        }
    }
    // Unreachable: indices are unique, so the last digit's bucket holds one.
    return vec2<u32>(rk, prefix);
}
