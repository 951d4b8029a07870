// The pairwise sweep behind `hopfield-gpu analyze` (the theory quantities of
// SEMANTICS.md): for every row a (a memory, or a query) against the memories
// xi_nu of one split of a bound segment,
//   - the nearest memory, argmin |a - xi_nu|^2 (R, the balls S_mu, a query's pattern);
//   - the two largest <a, xi_nu>, ranked by t = |xi_nu|^2 - |a - xi_nu|^2
//     (= 2 <a, xi_nu> - |a|^2: the same order; Delta_mu, Lemma A.4's exponent);
//   - the exact duplicates, |a - xi_nu|^2 == 0 (every entry equal; a
//     difference below ~1e-19 squares to 0 in f32 and counts as equal);
// reduced on the fly in registers: no rows x M matrix is ever stored. With
// exclude_self, row i is memory row0 + i and skips itself (nu != mu).
//
// Entry points:
//   norms  |xi_nu|^2 of every memory of the bound segment, one thread each;
//   main   workgroup (x, y) = (block of 16 rows, split of the segment): per
//          64-memory tile it stages the keys (DK dims at a time) transposed in
//          workgroup memory; each thread accumulates the squared distances of
//          4 rows x 4 memories in vec4 registers and folds them into its
//          running summary of those 4 rows; at the end the 16 lanes of a row
//          are merged and one Summary per (row, split) is written;
//   merge  one thread per row: the splits' summaries, in split order.
// Ties go to the lower memory index everywhere (each thread sees its
// memories in increasing order; merges compare (value, index)).
// The host keeps every invocation's loop count inside the driver's budget
// (src/kernels/separation.rs, `split_cols`).
//
// Reference: src/cpu/separation.rs. Host side: src/kernels/separation.rs.

// Keep in sync with `SeparationParams` in src/kernels/separation.rs.
struct Params {
    rows: u32,          // rows in the bound row buffer
    row0: u32,          // global index of its first row (self-exclusion; merge: first output row)
    d: u32,             // pattern dimension
    cols: u32,          // memories in the bound segment
    col0: u32,          // global index of the segment's first memory
    split_cols: u32,    // memories per split, a multiple of BC
    split0: u32,        // index of this segment's first split in `part`
    n_splits: u32,      // splits over all segments (stride of `part`)
    exclude_self: u32,  // 1: skip the memory with the row's own global index
    groups_x: u32,      // norms/merge: workgroups along x of the 2-D grid
    row_off: u32,       // main: index of the first row in the bound row buffer
    _pad: u32,
}

// Keep in sync with `Summary` in src/kernels/separation.rs.
struct Summary {
    near_d2: f32,   // min |a - xi|^2
    near: u32,      // its memory (NONE: no memory qualified)
    best_t: f32,    // max t
    best: u32,
    second_t: f32,  // max t over the memories other than `best`
    second: u32,
    dups: u32,      // memories equal to a
    _pad: u32,
}

override DK: u32;         // dimensions staged per barrier
const BR: u32 = 16u;      // rows per workgroup (4 groups of 4)
const BC: u32 = 64u;      // memories per tile (16 lanes x 4)
// Row stride of the staged keys: 65, not 64, so that the transposing writes
// of a warp do not all hit one memory bank.
const KS: u32 = 65u;
const NONE: u32 = 0xffffffffu;
// Beyond any squared distance or t the host admits (it checks d (2 B)^2 < 1e37).
const BIG: f32 = 3.0e38;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rows_in: array<f32>;
@group(0) @binding(2) var<storage, read> cols_in: array<f32>;
@group(0) @binding(3) var<storage, read_write> norms: array<f32>;
@group(0) @binding(4) var<storage, read_write> part: array<Summary>;
@group(0) @binding(5) var<storage, read_write> out: array<Summary>;

// rs[k * 4 + g] = dimension k of rows 4g .. 4g + 3 of the block.
var<workgroup> rs: array<vec4<f32>, DK * 4u>;
// Keys of the tile, transposed: ks[k * KS + j].
var<workgroup> ks: array<f32, DK * KS>;
// The lanes' summaries at the end: red[row * 16 + lane].
var<workgroup> red: array<Summary, 256>;

@compute @workgroup_size(64)
fn norms_main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x + gid.y * p.groups_x * 64u;
    if (j >= p.cols) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < p.d; k++) {
        let v = cols_in[j * p.d + k];
        s += v * v;
    }
    norms[j] = s;
}

// Per-thread running summary of its 4 rows, one component per row.
struct Running {
    near_d2: vec4<f32>,
    near: vec4<u32>,
    t1: vec4<f32>,
    i1: vec4<u32>,
    t2: vec4<f32>,
    i2: vec4<u32>,
    dups: vec4<u32>,
}

fn load_rows(t: u32, r0: u32, k0: u32, kmax: u32) {
    for (var e = t; e < BR * DK; e += 64u) {
        let ri = e / DK;
        let k = e % DK;
        var v = 0.0;
        if (r0 + ri < p.rows && k < kmax) {
            v = rows_in[(p.row_off + r0 + ri) * p.d + k0 + k];
        }
        rs[k * 4u + ri / 4u][ri % 4u] = v;
    }
}

fn load_keys(t: u32, c0: u32, jmax: u32, k0: u32, kmax: u32) {
    for (var e = t; e < BC * kmax; e += 64u) {
        let j = e / kmax;
        let k = e % kmax;
        var v = 0.0;
        if (j < jmax) {
            v = cols_in[(c0 + j) * p.d + k0 + k];
        }
        ks[k * KS + j] = v;
    }
}

// Fold the squared distances d2 of the thread's 4 rows to segment memory j
// into its summary. Memories reach a thread in increasing order, so strict
// comparisons keep the lower index on ties.
fn fold(s: ptr<function, Running>, d2: vec4<f32>, j: u32, in_tile: bool, rows_global: vec4<u32>) {
    let col = p.col0 + j;
    var valid = vec4<bool>(in_tile);
    if (p.exclude_self != 0u) {
        valid = valid & (rows_global != vec4<u32>(col));
    }
    let ci = vec4<u32>(col);
    let closer = valid & (d2 < (*s).near_d2);
    (*s).near_d2 = select((*s).near_d2, d2, closer);
    (*s).near = select((*s).near, ci, closer);
    let tv = vec4<f32>(norms[min(j, p.cols - 1u)]) - d2;
    let b1 = valid & (tv > (*s).t1);
    let b2 = valid & !b1 & (tv > (*s).t2);
    (*s).t2 = select(select((*s).t2, tv, b2), (*s).t1, b1);
    (*s).i2 = select(select((*s).i2, ci, b2), (*s).i1, b1);
    (*s).t1 = select((*s).t1, tv, b1);
    (*s).i1 = select((*s).i1, ci, b1);
    (*s).dups += select(vec4<u32>(0u), vec4<u32>(1u), valid & (d2 == vec4<f32>(0.0)));
}

fn empty() -> Summary {
    return Summary(BIG, NONE, -BIG, NONE, -BIG, NONE, 0u, 0u);
}

// (v, i) before (bv, bi) in ascending order of v, then of the index.
fn lower(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return v < bv || (v == bv && i < bi);
}

// (v, i) before (bv, bi) in descending order of v, then ascending index.
fn higher(v: f32, i: u32, bv: f32, bi: u32) -> bool {
    return v > bv || (v == bv && i < bi);
}

fn insert(a: ptr<function, Summary>, t: f32, i: u32) {
    if (i == NONE) {
        return;
    }
    if (higher(t, i, (*a).best_t, (*a).best)) {
        (*a).second_t = (*a).best_t;
        (*a).second = (*a).best;
        (*a).best_t = t;
        (*a).best = i;
    } else if (higher(t, i, (*a).second_t, (*a).second)) {
        (*a).second_t = t;
        (*a).second = i;
    }
}

// Merge summary b (of other memories) into a.
fn combine(a: ptr<function, Summary>, b: Summary) {
    if (b.near != NONE && lower(b.near_d2, b.near, (*a).near_d2, (*a).near)) {
        (*a).near_d2 = b.near_d2;
        (*a).near = b.near;
    }
    insert(a, b.best_t, b.best);
    insert(a, b.second_t, b.second);
    (*a).dups += b.dups;
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tr = t / 16u;  // row group: rows 4 tr .. 4 tr + 3 of the block
    let tc = t % 16u;  // lane: memories tc + 16 i of each tile
    let r_block = wg.x * BR;
    let r_first = r_block + tr * 4u;
    let rows_global = vec4<u32>(r_first, r_first + 1u, r_first + 2u, r_first + 3u) + vec4<u32>(p.row0);
    let c_begin = wg.y * p.split_cols;
    let c_end = min(c_begin + p.split_cols, p.cols);
    let n_chunks = (p.d + DK - 1u) / DK;

    var s: Running;
    s.near_d2 = vec4<f32>(BIG);
    s.near = vec4<u32>(NONE);
    s.t1 = vec4<f32>(-BIG);
    s.i1 = vec4<u32>(NONE);
    s.t2 = vec4<f32>(-BIG);
    s.i2 = vec4<u32>(NONE);
    s.dups = vec4<u32>(0u);

    if (n_chunks == 1u) {
        // The rows fit one chunk: stage them once for every tile.
        load_rows(t, r_block, 0u, p.d);
    }
    for (var c0 = c_begin; c0 < c_end; c0 += BC) {
        let jmax = min(BC, c_end - c0);
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        for (var ch = 0u; ch < n_chunks; ch++) {
            let k0 = ch * DK;
            let kmax = min(DK, p.d - k0);
            workgroupBarrier();
            if (n_chunks > 1u) {
                load_rows(t, r_block, k0, kmax);
            }
            load_keys(t, c0, jmax, k0, kmax);
            workgroupBarrier();
            for (var k = 0u; k < kmax; k++) {
                let r = rs[k * 4u + tr];
                let b = k * KS + tc;
                let e0 = r - vec4<f32>(ks[b]);
                let e1 = r - vec4<f32>(ks[b + 16u]);
                let e2 = r - vec4<f32>(ks[b + 32u]);
                let e3 = r - vec4<f32>(ks[b + 48u]);
                a0 += e0 * e0;
                a1 += e1 * e1;
                a2 += e2 * e2;
                a3 += e3 * e3;
            }
        }
        let j = c0 + tc;
        fold(&s, a0, j, tc < jmax, rows_global);
        fold(&s, a1, j + 16u, tc + 16u < jmax, rows_global);
        fold(&s, a2, j + 32u, tc + 32u < jmax, rows_global);
        fold(&s, a3, j + 48u, tc + 48u < jmax, rows_global);
    }

    // Hand the 4 rows' summaries to the row's merger.
    for (var i = 0u; i < 4u; i++) {
        red[(tr * 4u + i) * 16u + tc] = Summary(s.near_d2[i], s.near[i], s.t1[i], s.i1[i], s.t2[i], s.i2[i], s.dups[i], 0u);
    }
    workgroupBarrier();
    if (t < BR && r_block + t < p.rows) {
        var acc = empty();
        for (var lane = 0u; lane < 16u; lane++) {
            combine(&acc, red[t * 16u + lane]);
        }
        part[(r_block + t) * p.n_splits + p.split0 + wg.y] = acc;
    }
}

@compute @workgroup_size(64)
fn merge(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x + gid.y * p.groups_x * 64u;
    if (r >= p.rows) {
        return;
    }
    var acc = empty();
    for (var sp = 0u; sp < p.n_splits; sp++) {
        combine(&acc, part[r * p.n_splits + sp]);
    }
    out[p.row0 + r] = acc;
}
