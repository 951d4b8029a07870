// Batched retrieval: P independent problems (their own queries, memory sets,
// masks, beta), the per-row and per-group bookkeeping of their dynamics.
// The scores and read-outs are products (linalg.wgsl, one work list for all
// problems); this file turns score rows into association rows and runs the
// stop rules. Entry points, in the order the driver records them:
//   normalise: one workgroup per score row: the method's weights over the
//              memories the mask keeps (exactly 0 elsewhere), the dense
//              log-sum-exp and argmax of the row, and, for hopfield-layers'
//              stop rule, the squared change of the row since the last step;
//   update:    one workgroup per query: the state takes the product of its
//              association row with the update values, unless it has stopped;
//              per-query stop (the max-norm change <= eps) and step counts;
//   stop:      one workgroup per group: the Frobenius norm of each member
//              problem's change, maximised over the group, against eps
//              (hopfield-layers' per-head rule); or, at the end, the group's
//              summary of its queries' records;
//   finish:    one workgroup per query: the energy of its final state, and
//              for the engine's dynamics z = that state, written where the
//              problem's output lives.
//
// Problem and group descriptors live in one read-only table (`desc`), laid
// out by src/kernels/batch.rs; a workgroup finds its problem by binary
// search over the problems' first rows, and reads the descriptor through
// workgroup memory so that its loop bounds are uniform.
//
// Masked memories are absent: random masks and windows count kept memories
// only (`keep` maps memory mu to its rank among the kept ones), and the
// zero memory of add_zero_association is the last kept one, index m.
//
// Reference: src/cpu/batch.rs. Host side: src/kernels/batch.rs.

// Keep in sync with `BatchParams` in src/kernels/batch.rs.
struct Params {
    p0: u32,        // problems searched: [p0, p1)
    p1: u32,
    rows: u32,      // workgroups' items: rows (normalise, update, finish) or groups (stop)
    row0: u32,      // global row of item 0 (normalise: the chunk's first row)
    groups_x: u32,
    d: u32,         // state dimension
    method: u32,    // M_*
    k: u32,         // top-K / random: memories kept; window: width (0 = default)
    seed_lo: u32,
    seed_hi: u32,
    degree: u32,    // poly
    flags: u32,     // F_*
    prob_at: u32,   // word offsets of the tables in `desc`
    keep_at: u32,
    coef_at: u32,
    group_at: u32,
    member_at: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const M_DENSE: u32 = 0u;     // softmax (also prf: its scores are log-kernels)
const M_TOPK: u32 = 1u;
const M_RANDOM: u32 = 2u;
const M_WINDOW: u32 = 3u;
const M_SPARSEMAX: u32 = 4u;
const M_ENTMAX15: u32 = 5u;
const M_POLY: u32 = 6u;      // P(s) / sum P(s)
const M_RATIO: u32 = 7u;     // s / sum s (linear: its scores are kernel values)

const F_DIFF: u32 = 1u;          // normalise: squared change of the row
const F_RECORDS_ONLY: u32 = 2u;  // normalise: only the dense lse and argmax
const F_PAIRWISE: u32 = 4u;      // normalise: the zero memory's score is in the row
const F_FIRST: u32 = 8u;         // update / finish: the state is still the queries
const F_ASSOC: u32 = 16u;        // hopfield-layers' per-group stop
const F_COPY_Z: u32 = 32u;       // finish: z = the final state
const F_SUMMARY: u32 = 64u;      // stop: summarise the group's queries

const NONE: u32 = 0xffffffffu;
// Words per problem; keep in sync with `PROBLEM_WORDS` in src/kernels/batch.rs.
const PW: u32 = 24u;
// Words per group: max updates, eps (f32 bits), first member, members.
const GW: u32 = 4u;

// #include shared/neg.wgsl
// #include shared/random_rank.wgsl

// Keep in sync with `RowRecord` in src/kernels/batch.rs.
struct Row {
    steps: u32,
    converged: u32,
    stopped: u32,
    argmax: u32,
    lse: f32,
    diff: f32,     // normalise (F_DIFF): squared Frobenius change of the row
    energy: f32,
    moved: f32,    // max-norm change of the last update
}

// Keep in sync with `GroupRecord` in src/kernels/batch.rs.
struct Group {
    updates: u32,
    converged: u32,
    stopped: u32,
    change: f32,
}

// Bisection steps at most for sparsemax / entmax (see entmax.wgsl: never the exit).
override MAX_IT: u32;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> desc: array<u32>;
@group(0) @binding(2) var<storage, read> s: array<f32>;
@group(0) @binding(3) var<storage, read_write> a: array<f32>;
@group(0) @binding(4) var<storage, read_write> recs: array<Row>;
@group(0) @binding(5) var<storage, read_write> grp: array<Group>;
@group(0) @binding(6) var<storage, read> xnew: array<f32>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>;
@group(0) @binding(8) var<storage, read> queries: array<f32>;
@group(0) @binding(9) var<storage, read_write> moving: atomic<u32>;
@group(0) @binding(10) var<storage, read_write> out: array<f32>;

var<workgroup> pd: array<u32, 24>;   // this workgroup's problem descriptor
var<workgroup> found: u32;
var<workgroup> redf: array<f32, 64>;
var<workgroup> redu: array<u32, 64>;
var<workgroup> flag: u32;

// Descriptor fields (word indices).
const P_ROWS: u32 = 0u;
const P_ROW0: u32 = 1u;
const P_L0: u32 = 2u;
const P_LTOTAL: u32 = 3u;
const P_M: u32 = 4u;
const P_WIDTH: u32 = 5u;
const P_MKEPT: u32 = 6u;
const P_KEEP: u32 = 7u;
const P_SOFF: u32 = 8u;
const P_GROUP: u32 = 10u;
const P_QOFF: u32 = 12u;
const P_QSTRIDE: u32 = 13u;
const P_ZOFF: u32 = 20u;
const P_ZSTRIDE: u32 = 21u;
const P_BETA: u32 = 22u;

// Load the descriptor of the problem holding global row `row` into `pd`
// (every thread calls it; the search runs in thread 0).
fn load_problem(t: u32, row: u32) {
    if (t == 0u) {
        var lo = p.p0;
        var hi = p.p1; // the answer lies in [lo, hi)
        while (hi - lo > 1u) {
            let mid = (lo + hi) / 2u;
            if (desc[p.prob_at + mid * PW + P_ROW0] <= row) {
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
}

fn field(i: u32) -> u32 {
    return workgroupUniformLoad(&pd[i]);
}

fn sum_f(t: u32, v: f32) -> f32 {
    workgroupBarrier();
    redf[t] = v;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (t < w) {
            redf[t] += redf[t + w];
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&redf[0]);
}

fn max_f(t: u32, v: f32) -> f32 {
    workgroupBarrier();
    redf[t] = v;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (t < w) {
            redf[t] = max(redf[t], redf[t + w]);
        }
        workgroupBarrier();
    }
    return workgroupUniformLoad(&redf[0]);
}

// The largest value and the lowest index holding it.
fn argmax_f(t: u32, v: f32, i: u32) -> vec2<u32> {
    workgroupBarrier();
    redf[t] = v;
    redu[t] = i;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w >>= 1u) {
        if (t < w) {
            let o = t + w;
            if (redf[o] > redf[t] || (redf[o] == redf[t] && redu[o] < redu[t])) {
                redf[t] = redf[o];
                redu[t] = redu[o];
            }
        }
        workgroupBarrier();
    }
    return vec2<u32>(bitcast<u32>(workgroupUniformLoad(&redf[0])), workgroupUniformLoad(&redu[0]));
}

// ---------------------------------------------------------------- normalise

// The row being normalised: its problem's geometry (uniform values).
struct RowCtx {
    base: u32,   // offset of the row in s / a
    m: u32,      // real memories
    width: u32,  // row length (m + the zero memory)
    m_kept: u32,
    keep: u32,   // offset of the keep table, or NONE
    l: u32,      // query index in the original problem
    l_total: u32,
    run: u32,    // entries per thread (thread t owns [t run, (t + 1) run))
}

fn score(c: RowCtx, mu: u32) -> f32 {
    if (mu < c.m || (p.flags & F_PAIRWISE) != 0u) {
        return s[c.base + mu];
    }
    return 0.0; // the zero memory: <x, 0> = 0
}

// Rank of memory mu among the kept ones, or NONE if it is masked.
fn kept_rank(c: RowCtx, mu: u32) -> u32 {
    if (mu >= c.m) {
        return c.m_kept - 1u; // the zero memory, always kept, last
    }
    if (c.keep == NONE) {
        return mu;
    }
    return desc[p.keep_at + c.keep + mu];
}

// Order-preserving u32 of a score (-0 counted as +0, as the reference's
// comparison does), or of the negated random rank (smaller rank first).
fn select_key(c: RowCtx, mu: u32, j: u32) -> u32 {
    if (p.method == M_RANDOM) {
        return ~random_rank_key(p.seed_lo, p.seed_hi, c.l, j);
    }
    let v = select(score(c, mu), 0.0, score(c, mu) == 0.0);
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b >> 31u) == 1u);
}

fn power(x: f32) -> f32 {
    if (p.method == M_ENTMAX15) {
        return x * x;
    }
    return x;
}

fn horner(x: f32) -> f32 {
    var acc = 0.0;
    for (var i = p.degree + 1u; i > 0u; i--) {
        acc = acc * x + bitcast<f32>(desc[p.coef_at + i - 1u]);
    }
    return acc;
}

// What `normalise` needs to decide every entry's weight.
struct Choice {
    top: f32,      // max kept score (softmax shift)
    total: f32,    // normaliser of the weights
    tau: f32,      // sparsemax / entmax threshold (shifted units)
    thr: u32,      // top-K / random: the k-th largest key
    need: u32,     // ... and how many of the keys equal to it are taken
    ties0: u32,    // ... and this thread's first rank among those
    lo: u32,       // window: kept ranks [lo, hi)
    hi: u32,
    all: u32,      // 1: every kept memory is selected
}

// Whether kept memory mu (rank j, key) is selected; `tie` counts this
// thread's keys equal to the threshold seen so far (updated).
fn selected(ch: Choice, j: u32, key: u32, tie: ptr<function, u32>) -> bool {
    if (p.method == M_WINDOW) {
        return j >= ch.lo && j < ch.hi;
    }
    if (ch.all == 1u) {
        return true;
    }
    if (key > ch.thr) {
        return true;
    }
    if (key == ch.thr) {
        let rank = ch.ties0 + *tie;
        *tie += 1u;
        return rank < ch.need;
    }
    return false;
}

// The weight of kept memory mu under the method, before `total` for the
// softmax-like ones.
fn raw_weight(ch: Choice, v: f32) -> f32 {
    switch p.method {
        case 4u, 5u: {
            let a = select(1.0, 0.5, p.method == M_ENTMAX15);
            return power(max(a * v - a * ch.top - ch.tau, 0.0));
        }
        case 6u: { return horner(v); }
        case 7u: { return v; }
        default: { return exp(v - ch.top); }
    }
}

@compute @workgroup_size(64)
fn normalise(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let item = wg.x + wg.y * p.groups_x;
    if (item >= p.rows) {
        return;
    }
    let row = p.row0 + item;
    load_problem(t, row);
    var c: RowCtx;
    let lr = row - field(P_ROW0);
    c.m = field(P_M);
    c.width = field(P_WIDTH);
    c.m_kept = field(P_MKEPT);
    c.keep = field(P_KEEP);
    c.base = field(P_SOFF) + lr * c.width;
    c.l = field(P_L0) + lr;
    c.l_total = field(P_LTOTAL);
    c.run = (c.width + 63u) / 64u;
    let i0 = min(t * c.run, c.width);
    let i1 = min(i0 + c.run, c.width);

    // The dense statistics of the kept scores (also the softmax shift).
    var best = NEG;
    var arg = NONE;
    for (var mu = i0; mu < i1; mu++) {
        if (kept_rank(c, mu) != NONE) {
            let v = score(c, mu);
            if (v > best) {
                best = v;
                arg = mu;
            }
        }
    }
    let am = argmax_f(t, best, arg);
    let top = bitcast<f32>(am.x);
    var se = 0.0;
    for (var mu = i0; mu < i1; mu++) {
        if (kept_rank(c, mu) != NONE) {
            se += exp(score(c, mu) - top);
        }
    }
    let dense_sum = sum_f(t, se);
    if (t == 0u) {
        recs[row].lse = top + log(dense_sum);
        recs[row].argmax = am.y;
    }
    if ((p.flags & F_RECORDS_ONLY) != 0u) {
        return;
    }

    var ch: Choice;
    ch.top = top;
    ch.total = dense_sum;
    ch.tau = 0.0;
    ch.all = 0u;
    ch.thr = 0u;
    ch.need = 0u;
    ch.ties0 = 0u;
    ch.lo = 0u;
    ch.hi = 0u;
    let method = p.method;
    if (method == M_TOPK || method == M_RANDOM) {
        let kk = min(p.k, c.m_kept);
        ch.all = select(0u, 1u, kk == c.m_kept);
        if (ch.all == 0u) {
            // The kk-th largest key, bit by bit from the top: the largest T
            // with at least kk keys >= T.
            var thr = 0u;
            for (var b = 32u; b > 0u; b--) {
                let cand = thr | (1u << (b - 1u));
                var n = 0.0;
                for (var mu = i0; mu < i1; mu++) {
                    let j = kept_rank(c, mu);
                    if (j != NONE && select_key(c, mu, j) >= cand) {
                        n += 1.0;
                    }
                }
                if (sum_f(t, n) >= f32(kk)) {
                    thr = cand;
                }
            }
            var gt = 0.0;
            var eq = 0u;
            for (var mu = i0; mu < i1; mu++) {
                let j = kept_rank(c, mu);
                if (j != NONE) {
                    let key = select_key(c, mu, j);
                    gt += select(0.0, 1.0, key > thr);
                    eq += select(0u, 1u, key == thr);
                }
            }
            let above = u32(sum_f(t, gt));
            // Ties at the threshold go to the lower indices: this thread's
            // first rank among them is the count in the threads before it.
            workgroupBarrier();
            redu[t] = eq;
            workgroupBarrier();
            var before = 0u;
            for (var o = 0u; o < 64u; o++) {
                before += select(0u, redu[o], o < t);
            }
            ch.thr = thr;
            ch.need = kk - above;
            ch.ties0 = before;
        }
    } else if (method == M_WINDOW) {
        var w = p.k;
        if (w == 0u) {
            // ceil(sqrt(m_kept)) in integers (method::default_window).
            w = u32(sqrt(f32(c.m_kept)));
            while (w * w > c.m_kept) { w -= 1u; }
            while (w * w < c.m_kept) { w += 1u; }
        }
        // The host keeps l_total * m_kept below 2^32.
        let centre = (c.l * c.m_kept) / c.l_total;
        let start = i32(centre) - i32(w / 2u);
        ch.lo = u32(clamp(start, 0, i32(c.m_kept)));
        ch.hi = u32(clamp(start + i32(w), 0, i32(c.m_kept)));
    } else if (method == M_SPARSEMAX || method == M_ENTMAX15) {
        // entmax.wgsl's exact threshold over the kept scores (see there for
        // why the bisection only finds the support and tau is exact).
        let sa = select(1.0, 0.5, method == M_ENTMAX15);
        let shift = sa * top;
        var lo = -1.0;
        var hi = 0.0;
        for (var it = 0u; it < MAX_IT; it++) {
            let mid = 0.5 * (lo + hi);
            if (!(mid > lo && mid < hi)) {
                break;
            }
            var f = 0.0;
            var inside = 0.0;
            for (var mu = i0; mu < i1; mu++) {
                if (kept_rank(c, mu) != NONE) {
                    let u = sa * score(c, mu) - shift;
                    f += power(max(u - mid, 0.0));
                    inside += select(0.0, 1.0, u > lo && u < hi);
                }
            }
            let fr = sum_f(t, f);
            let ins = sum_f(t, inside);
            if (ins == 0.0) {
                break;
            }
            if (fr >= 1.0) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        var su = 0.0;
        var n = 0.0;
        for (var mu = i0; mu < i1; mu++) {
            if (kept_rank(c, mu) != NONE) {
                let u = sa * score(c, mu) - shift;
                if (u > lo) {
                    su += u;
                    n += 1.0;
                }
            }
        }
        let ssum = sum_f(t, su);
        let cnt = sum_f(t, n);
        var tau = (ssum - 1.0) / cnt;
        if (method == M_ENTMAX15) {
            let mean = ssum / cnt;
            var ss = 0.0;
            for (var mu = i0; mu < i1; mu++) {
                if (kept_rank(c, mu) != NONE) {
                    let u = sa * score(c, mu) - shift;
                    if (u > lo) {
                        ss += (u - mean) * (u - mean);
                    }
                }
            }
            tau = mean - sqrt(max((1.0 - sum_f(t, ss)) / cnt, 0.0));
        }
        ch.tau = tau;
        ch.total = 1.0;
    }
    if (method == M_TOPK || method == M_RANDOM || method == M_WINDOW) {
        // Softmax over the selected memories only.
        var mx = NEG;
        var tie = 0u;
        for (var mu = i0; mu < i1; mu++) {
            let j = kept_rank(c, mu);
            if (j != NONE && selected(ch, j, select_key(c, mu, j), &tie)) {
                mx = max(mx, score(c, mu));
            }
        }
        ch.top = max_f(t, mx);
        var sm = 0.0;
        tie = 0u;
        for (var mu = i0; mu < i1; mu++) {
            let j = kept_rank(c, mu);
            if (j != NONE && selected(ch, j, select_key(c, mu, j), &tie)) {
                sm += exp(score(c, mu) - ch.top);
            }
        }
        ch.total = sum_f(t, sm);
    } else if (method == M_POLY || method == M_RATIO) {
        var sm = 0.0;
        for (var mu = i0; mu < i1; mu++) {
            if (kept_rank(c, mu) != NONE) {
                sm += raw_weight(ch, score(c, mu));
            }
        }
        ch.total = sum_f(t, sm);
    }

    // The weights, with the squared change from the previous row.
    let sparse = method == M_TOPK || method == M_RANDOM || method == M_WINDOW;
    var change = 0.0;
    var tie = 0u;
    for (var mu = i0; mu < i1; mu++) {
        var w = 0.0;
        let j = kept_rank(c, mu);
        if (j != NONE) {
            if (!sparse || selected(ch, j, select_key(c, mu, j), &tie)) {
                w = raw_weight(ch, score(c, mu)) / ch.total;
            }
        }
        if ((p.flags & F_DIFF) != 0u) {
            let dv = w - a[c.base + mu];
            change += dv * dv;
        }
        a[c.base + mu] = w;
    }
    if ((p.flags & F_DIFF) != 0u) {
        let total = sum_f(t, change);
        if (t == 0u) {
            recs[row].diff = total;
        }
    }
}

// ------------------------------------------------------------ normalise_rows

// `normalise` for the softmax-like normalisers without a support (dense,
// prf's log-kernels, poly, linear's ratios), one thread per row and no
// barriers: on llvmpipe, where a workgroup's barriers cost more than a
// thousand entries of work, the host takes this entry for rows whose three
// passes fit the loop budget. The same weights, records and change as
// `normalise`, in one thread's summation order.
@compute @workgroup_size(64)
fn normalise_rows(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let item = (wg.x + wg.y * p.groups_x) * 64u + t;
    if (item >= p.rows) {
        return;
    }
    let row = p.row0 + item;
    var lo = p.p0;
    var hi = p.p1;
    while (hi - lo > 1u) {
        let mid = (lo + hi) / 2u;
        if (desc[p.prob_at + mid * PW + P_ROW0] <= row) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let pb = p.prob_at + lo * PW;
    var c: RowCtx;
    let lr = row - desc[pb + P_ROW0];
    c.m = desc[pb + P_M];
    c.width = desc[pb + P_WIDTH];
    c.m_kept = desc[pb + P_MKEPT];
    c.keep = desc[pb + P_KEEP];
    c.base = desc[pb + P_SOFF] + lr * c.width;
    c.l = desc[pb + P_L0] + lr;
    c.l_total = desc[pb + P_LTOTAL];
    c.run = c.width;
    // Online max and sum of exp(s - max), the argmax (lowest index on ties).
    var best = NEG;
    var arg = NONE;
    var sum = 0.0;
    for (var mu = 0u; mu < c.width; mu++) {
        if (kept_rank(c, mu) != NONE) {
            let v = score(c, mu);
            if (v > best) {
                sum *= exp(best - v);
                best = v;
                arg = mu;
            }
            sum += exp(v - best);
        }
    }
    recs[row].lse = best + log(sum);
    recs[row].argmax = arg;
    if ((p.flags & F_RECORDS_ONLY) != 0u) {
        return;
    }
    var ch: Choice;
    ch.top = best;
    ch.total = sum;
    ch.tau = 0.0;
    if (p.method == M_POLY || p.method == M_RATIO) {
        var sm = 0.0;
        for (var mu = 0u; mu < c.width; mu++) {
            if (kept_rank(c, mu) != NONE) {
                sm += raw_weight(ch, score(c, mu));
            }
        }
        ch.total = sm;
    }
    var change = 0.0;
    for (var mu = 0u; mu < c.width; mu++) {
        var w = 0.0;
        if (kept_rank(c, mu) != NONE) {
            w = raw_weight(ch, score(c, mu)) / ch.total;
        }
        if ((p.flags & F_DIFF) != 0u) {
            let dv = w - a[c.base + mu];
            change += dv * dv;
        }
        a[c.base + mu] = w;
    }
    if ((p.flags & F_DIFF) != 0u) {
        recs[row].diff = change;
    }
}

// ------------------------------------------------------------------- update

@compute @workgroup_size(64)
fn update(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let item = wg.x + wg.y * p.groups_x;
    if (item >= p.rows) {
        return;
    }
    let row = p.row0 + item;
    load_problem(t, row);
    let lr = row - field(P_ROW0);
    let q_off = field(P_QOFF) + lr * field(P_QSTRIDE);
    let g = field(P_GROUP);
    let gmax = desc[p.group_at + g * GW];
    let geps = bitcast<f32>(desc[p.group_at + g * GW + 1u]);
    let assoc = (p.flags & F_ASSOC) != 0u;
    let first = (p.flags & F_FIRST) != 0u;
    if (t == 0u) {
        var go: bool;
        if (assoc) {
            go = grp[g].stopped == 0u && grp[g].updates < gmax;
        } else {
            go = recs[row].stopped == 0u && recs[row].steps < gmax;
        }
        flag = select(0u, 1u, go);
    }
    let go_on = workgroupUniformLoad(&flag) == 1u;
    var moved = 0.0;
    for (var col = t; col < p.d; col += 64u) {
        var old = 0.0;
        if (first) {
            old = queries[q_off + col];
        } else {
            old = state[row * p.d + col];
        }
        if (go_on) {
            let v = xnew[row * p.d + col];
            moved = max(moved, abs(v - old));
            state[row * p.d + col] = v;
        } else if (first) {
            state[row * p.d + col] = old; // from now on the state lives here
        }
    }
    let change = max_f(t, moved);
    if (t == 0u && go_on) {
        recs[row].moved = change;
        if (!assoc) {
            let steps = recs[row].steps + 1u;
            recs[row].steps = steps;
            if (change <= geps) {
                recs[row].converged = 1u;
                recs[row].stopped = 1u;
            } else if (steps < gmax) {
                atomicAdd(&moving, 1u);
            }
        }
    }
}

// --------------------------------------------------------------------- stop

@compute @workgroup_size(64)
fn stop(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let g = wg.x + wg.y * p.groups_x;
    if (g >= p.rows) {
        return;
    }
    let gb = p.group_at + g * GW;
    if (t == 0u) {
        pd[0] = desc[gb + 2u];
        pd[1] = desc[gb + 3u];
        // A group at its limit (0 included) takes no further update.
        flag = select(grp[g].stopped, 1u, grp[g].updates >= desc[gb]);
    }
    let first = workgroupUniformLoad(&pd[0]);
    let members = workgroupUniformLoad(&pd[1]);
    let summary = (p.flags & F_SUMMARY) != 0u;
    if (!summary && workgroupUniformLoad(&flag) == 1u) {
        return;
    }
    // Per member problem (its rows [r0, r0 + n)): the Frobenius norm of its
    // change; or, for the summary, the most steps and whether all converged.
    var change = 0.0;
    var most = 0.0;
    var all = 1.0;
    for (var i = 0u; i < members; i++) {
        let mb = p.member_at + (first + i) * 2u;
        if (t == 0u) {
            pd[2] = desc[mb];
            pd[3] = desc[mb + 1u];
        }
        let r0 = workgroupUniformLoad(&pd[2]);
        let n = workgroupUniformLoad(&pd[3]);
        var acc = 0.0;
        var st = 0.0;
        var cv = 1.0;
        for (var r = r0 + t; r < r0 + n; r += 64u) {
            acc += recs[r].diff;
            st = max(st, f32(recs[r].steps));
            cv = min(cv, f32(recs[r].converged));
        }
        change = max(change, sqrt(sum_f(t, acc)));
        most = max(most, max_f(t, st));
        all = min(all, -max_f(t, -cv));
    }
    if (t != 0u) {
        return;
    }
    if (summary) {
        if ((p.flags & F_ASSOC) == 0u) {
            grp[g].updates = u32(most);
            grp[g].converged = select(0u, u32(all), members > 0u);
        }
        return;
    }
    let updates = grp[g].updates + 1u;
    grp[g].updates = updates;
    grp[g].change = change;
    if (change <= bitcast<f32>(desc[gb + 1u])) {
        grp[g].converged = 1u;
        grp[g].stopped = 1u;
    } else if (updates >= desc[gb]) {
        grp[g].stopped = 1u;
    } else {
        atomicAdd(&moving, 1u);
    }
}

// ------------------------------------------------------------------- finish

@compute @workgroup_size(64)
fn finish(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let item = wg.x + wg.y * p.groups_x;
    if (item >= p.rows) {
        return;
    }
    let row = p.row0 + item;
    load_problem(t, row);
    let lr = row - field(P_ROW0);
    let q_off = field(P_QOFF) + lr * field(P_QSTRIDE);
    let z_off = field(P_ZOFF) + lr * field(P_ZSTRIDE);
    let beta = bitcast<f32>(field(P_BETA));
    let first = (p.flags & F_FIRST) != 0u;
    var sq = 0.0;
    for (var col = t; col < p.d; col += 64u) {
        var x = 0.0;
        if (first) {
            x = queries[q_off + col];
        } else {
            x = state[row * p.d + col];
        }
        sq += x * x;
        if ((p.flags & F_COPY_Z) != 0u) {
            out[z_off + col] = x;
        }
    }
    let norm2 = sum_f(t, sq);
    if (t == 0u) {
        recs[row].energy = -recs[row].lse / beta + 0.5 * norm2;
        if ((p.flags & F_ASSOC) != 0u) {
            let g = field(P_GROUP);
            recs[row].steps = grp[g].updates;
            recs[row].converged = grp[g].converged;
        }
    }
}
