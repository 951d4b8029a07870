//! Reference for `shaders/topk.wgsl` (top-K and random masks) and
//! `shaders/window.wgsl`: sparse-structured retrieval of SEMANTICS.md
//! ("Sparse-structured retrieval", Nonparametric Modern Hopfield Models,
//! eq. (3.9)),
//!
//! `z_l = sum_{mu in S_l} softmax_{mu in S_l}(s[l, mu]) v_mu`,
//!
//! where the softmax runs over the support set `S_l` only and every memory
//! outside `S_l` gets a weight of exactly 0 (not the weight `e^0 / Z` that
//! setting the excluded logits to 0 would give). Three ways to choose `S_l`:
//! top-K by score, a seeded random draw, and a sliding window of indices.
//!
//! As in the rest of [`crate::cpu`], nothing here mirrors a GPU algorithm:
//! top-K is a full stable sort followed by an explicit boolean mask, not a
//! heap or a streaming selection.

use std::cmp::Ordering;

use super::dense::{self, log_sum_exp, scores, softmax, weighted_sum};
use super::Matrix;
use crate::error::{Error, Result};

/// How each query's support set `S_l` is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// The `k` memories with the largest score, ties broken by the lower
    /// index; `k >= M` keeps all of them (dense). See [`top_k_support`].
    TopK {
        /// Support size K (at least 1).
        k: usize,
    },
    /// `k` memories drawn without replacement, independently per query, by
    /// ranking [`random_rank_key`]`(seed, l, mu)`; `k >= M` keeps all of
    /// them. See [`random_support`].
    Random {
        /// Support size k (at least 1).
        k: usize,
        /// Seed of the counter-based hash.
        seed: u64,
    },
    /// The indices in a window of `width` centred at `floor(l M / L)`,
    /// clipped to `[0, M)`. See [`window_range`] for the exact convention.
    Window {
        /// Window width w (at least 1); [`default_window`] gives `ceil(sqrt(M))`.
        width: usize,
    },
}

impl Support {
    /// Reject parameters outside their domain: a support size or window of 0
    /// would leave a query with an empty softmax (0 / 0).
    ///
    /// A size larger than M is allowed and means "all memories" (top-K,
    /// random) or "clipped to `[0, M)`" (window).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Support::TopK { k: 0 } => Err(Error::invalid("top_k", 0, "K must be at least 1 (K >= M means dense)")),
            Support::Random { k: 0, .. } => {
                Err(Error::invalid("random_k", 0, "k must be at least 1 (k >= M keeps every memory)"))
            }
            Support::Window { width: 0 } => {
                Err(Error::invalid("window", 0, "the window width must be at least 1 (default: ceil(sqrt(M)))"))
            }
            _ => Ok(()),
        }
    }

    /// The support of query `l` (of `num_queries`), given its score row `s`
    /// (one entry per memory), in the order documented on the per-method
    /// function: [`top_k_support`] (descending score, then ascending index),
    /// [`random_support`] (ascending index), [`window_range`] (ascending index).
    pub fn indices(&self, s: &[f64], l: usize, num_queries: usize) -> Vec<usize> {
        match *self {
            Support::TopK { k } => top_k_support(s, k),
            Support::Random { k, seed } => random_support(seed, l, s.len(), k),
            Support::Window { width } => window_range(l, num_queries, s.len(), width).collect(),
        }
    }
}

/// One application of a sparse-structured update rule to every query.
#[derive(Clone, Debug)]
pub struct SparseStep {
    /// `[L, dv]` retrieved patterns.
    pub z: Matrix,
    /// Per query, the support set `S_l` in the order of [`Support::indices`].
    pub support: Vec<Vec<usize>>,
    /// Per query, `log sum_{mu in S_l} exp(s_mu)` with `s_mu = beta <x, xi_mu>`
    /// (score units; the dense value is [`dense::DenseStep::log_sum_exp`]).
    pub log_sum_exp: Vec<f64>,
}

/// Order two scores: descending, with `-0.0` and `+0.0` equal.
///
/// `total_cmp` alone would rank `+0.0` above `-0.0` (a dot product of
/// zeros can come out as either) and so break the "lower index wins ties"
/// rule; adding `+0.0` maps `-0.0` to `+0.0` and leaves every other value
/// alone. `total_cmp` rather than `partial_cmp` keeps the sort total even
/// for NaN, which validated (finite) inputs never produce.
fn descending(a: f64, b: f64) -> Ordering {
    (b + 0.0).total_cmp(&(a + 0.0))
}

/// Top-K support of one score row: the `k` memories with the largest score,
/// ties broken by the lower index, ordered by descending score and then
/// ascending index. `k >= s.len()` returns every index (dense).
///
/// The ranking is on `s = beta <x, xi>`; with `beta > 0` that is the order of
/// `<x, xi>` in eq. (3.10), except that two dot products one rounding step
/// apart may tie after the multiplication by beta (then the lower index wins).
pub fn top_k_support(s: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..s.len()).collect();
    // A stable sort over indices that start ascending keeps the lower index
    // first among equal scores; the explicit `then` says so regardless.
    order.sort_by(|&a, &b| descending(s[a], s[b]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// The rank key of memory `mu` for query `l` in the random mask: smaller keys
/// are drawn first.
///
/// Defined with u32 arithmetic only (wrapping multiply, shifts, xor) so that
/// `shaders/topk.wgsl` (`hash_select`) reproduces it bit for bit; keep the two in sync:
///
/// ```text
/// lowbias32(x):                 // Chris Wellons' "lowbias32" integer mixer
///     x ^= x >> 16; x *= 0x7feb352d;
///     x ^= x >> 15; x *= 0x846ca68b;
///     x ^= x >> 16; return x    // (multiplications wrap mod 2^32)
///
/// random_rank_key(seed, l, mu):
///     h = lowbias32(seed_lo ^ 0x9e3779b9)   // seed_lo = seed & 0xffffffff
///     h = lowbias32(h ^ seed_hi)            // seed_hi = seed >> 32
///     h = lowbias32(h ^ l)
///     h = lowbias32(h ^ mu)
///     return h
/// ```
///
/// The constant `0x9e3779b9` (the 32-bit golden ratio) keeps seed 0 away
/// from lowbias32's fixed point at 0. Each round is a bijection of u32, so
/// for a fixed `(seed, l)` the keys of distinct memories are distinct: the
/// draw never needs its tie-break.
pub fn random_rank_key(seed: u64, l: u32, mu: u32) -> u32 {
    let seed_lo = seed as u32; // truncation intended: the low word
    let seed_hi = (seed >> 32) as u32;
    let mut h = lowbias32(seed_lo ^ 0x9e37_79b9);
    h = lowbias32(h ^ seed_hi);
    h = lowbias32(h ^ l);
    lowbias32(h ^ mu)
}

/// Chris Wellons' lowbias32 mixer (nullprogram.com/blog/2018/07/31), a
/// bijection of u32 with low bias, written with WGSL's u32 semantics.
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Random-mask support of query `l` over `m` memories: the `k` memories with
/// the smallest [`random_rank_key`]`(seed, l, mu)` (ties by lower index,
/// which cannot happen, see there), returned in ascending index order, the
/// order a kernel scanning the memories meets them. `k >= m` returns all.
///
/// The draw depends on `(seed, l, mu)` only, not on the scores nor on a step
/// counter: iterating the dynamics keeps each query's mask fixed.
///
/// # Panics
/// If `l` or an index below `m` does not fit in u32 (the GPU's index type);
/// the library validates sizes before calling the reference.
pub fn random_support(seed: u64, l: usize, m: usize, k: usize) -> Vec<usize> {
    let l = u32::try_from(l).expect("query index fits in u32");
    let key = |mu: usize| random_rank_key(seed, l, u32::try_from(mu).expect("memory index fits in u32"));
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by_key(|&mu| (key(mu), mu));
    order.truncate(k);
    order.sort_unstable();
    order
}

/// The memory indices covered by query `l`'s window, in ascending order.
///
/// Convention: the centre is `c = floor(l * m / num_queries)` and the window
/// is the half-open range `[c - floor(w / 2), c - floor(w / 2) + w)`,
/// intersected with `[0, m)`. It is clipped, not shifted, so a window at
/// either end holds fewer than `w` memories. For odd `w` it is symmetric,
/// `[c - (w-1)/2, c + (w-1)/2]`; for even `w` it reaches one further to the
/// left than to the right, `[c - w/2, c + w/2 - 1]`. It always contains `c`
/// when `w >= 1`, so no query is left with an empty support.
///
/// The product `l * m` is formed in u128: the GPU port must also avoid the
/// u32 overflow once `L * M >= 2^32`.
pub fn window_range(l: usize, num_queries: usize, m: usize, w: usize) -> std::ops::Range<usize> {
    let centre = (l as u128 * m as u128 / num_queries as u128) as usize;
    let start = centre as i128 - (w / 2) as i128;
    let end = start + w as i128;
    let clip = |i: i128| i.clamp(0, m as i128) as usize;
    clip(start)..clip(end)
}

/// The default window width `ceil(sqrt(m))`, exactly in integers (no float
/// rounding at perfect squares): with `M = L` it gives the paper's
/// `O(L sqrt(L))` cost. `default_window(0) = 0`.
pub fn default_window(m: usize) -> usize {
    let r = m.isqrt();
    if r * r == m {
        r
    } else {
        r + 1
    }
}

/// The support-restricted softmax of one score row: weights over all M
/// memories, exactly 0 where `mask` is false, and `log sum exp` over the
/// support. Reuses the dense softmax on the gathered support scores, in
/// ascending index order, so that a full mask reproduces the dense weights.
fn masked_softmax(s: &[f64], mask: &[bool]) -> (Vec<f64>, f64) {
    let kept: Vec<usize> = (0..s.len()).filter(|&mu| mask[mu]).collect();
    // An empty support would be a 0 / 0 softmax; `Support::validate` rules it out.
    assert!(!kept.is_empty(), "empty support set: validate the parameters first");
    let s_kept: Vec<f64> = kept.iter().map(|&mu| s[mu]).collect();
    let mut w = vec![0.0; s.len()];
    for (&mu, wk) in kept.iter().zip(softmax(&s_kept)) {
        w[mu] = wk;
    }
    (w, log_sum_exp(&s_kept))
}

/// The boolean mask of a support list over `m` memories.
fn mask_of(support: &[usize], m: usize) -> Vec<bool> {
    let mut mask = vec![false; m];
    for &mu in support {
        mask[mu] = true;
    }
    mask
}

/// One support-restricted update of query `l` (of `num_queries`):
/// `(z, support, log_sum_exp)`.
fn step_one(
    x: &[f64],
    l: usize,
    num_queries: usize,
    memories: &Matrix,
    values: &Matrix,
    beta: f64,
    support: Support,
) -> (Vec<f64>, Vec<usize>, f64) {
    let s = scores(x, memories, beta);
    let indices = support.indices(&s, l, num_queries);
    let (w, lse) = masked_softmax(&s, &mask_of(&indices, s.len()));
    (weighted_sum(&w, values), indices, lse)
}

/// One sparse-structured update for every query:
/// `z_l = sum_{mu in S_l} softmax_{S_l}(s_l)_mu v_mu`, with `S_l` chosen by
/// `support`. `values` is `memories` for auto-association.
///
/// # Panics
/// On an empty support (a zero size, which [`Support::validate`] rejects, or
/// no memories) or on indices beyond u32 (random mask).
pub fn sparse(queries: &Matrix, memories: &Matrix, values: &Matrix, beta: f64, support: Support) -> SparseStep {
    let mut z = Matrix::zeros(queries.rows, values.cols);
    let mut supports = Vec::with_capacity(queries.rows);
    let mut lse = Vec::with_capacity(queries.rows);
    for l in 0..queries.rows {
        let (zl, sl, ll) = step_one(queries.row(l), l, queries.rows, memories, values, beta, support);
        z.row_mut(l).copy_from_slice(&zl);
        supports.push(sl);
        lse.push(ll);
    }
    SparseStep { z, support: supports, log_sum_exp: lse }
}

/// The sparse-structured update of query `l`'s state (auto-association):
/// `T(x) = sum_{mu in S_l(x)} softmax_{S_l}(beta Xi x)_mu xi_mu`.
///
/// `l` and `num_queries` are needed because the random mask and the window
/// depend on the query's index; top-K ignores them.
pub fn sparse_update<'a>(
    memories: &'a Matrix,
    beta: f64,
    support: Support,
    l: usize,
    num_queries: usize,
) -> impl Fn(&[f64]) -> Vec<f64> + 'a {
    move |x| step_one(x, l, num_queries, memories, memories, beta, support).0
}

/// Iterate a sparse-structured update with [`dense::dynamics`]; the energy
/// reported is still the dense energy `E(x)` of SEMANTICS.md.
///
/// `dense::dynamics` hands its update only the state, not the query's index,
/// which the random mask and the window need; so each query runs through it
/// as a one-row batch with its own [`sparse_update`]. Queries are independent
/// in `dense::dynamics`, so the result is what an index-aware loop would give.
pub fn sparse_dynamics(
    queries: &Matrix,
    memories: &Matrix,
    beta: f64,
    max_steps: usize,
    eps: f64,
    support: Support,
) -> dense::Dynamics {
    let mut out = dense::Dynamics {
        state: Matrix::zeros(queries.rows, queries.cols),
        steps: Vec::with_capacity(queries.rows),
        converged: Vec::with_capacity(queries.rows),
        energy: Vec::with_capacity(queries.rows),
    };
    for l in 0..queries.rows {
        let one = dense::dynamics(
            &queries.select_rows(&[l]),
            memories,
            beta,
            max_steps,
            eps,
            sparse_update(memories, beta, support, l, queries.rows),
        );
        out.state.row_mut(l).copy_from_slice(one.state.row(0));
        out.steps.push(one.steps[0]);
        out.converged.push(one.converged[0]);
        out.energy.push(one.energy[0]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tolerance::Tolerance;

    /// A deterministic pseudo-random matrix in [-1, 1) (an LCG, so the test
    /// data does not depend on the hash under test nor on the `rand` crate's
    /// version).
    fn matrix(rows: usize, cols: usize, mut state: u64) -> Matrix {
        let data = (0..rows * cols)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect();
        Matrix { rows, cols, data }
    }

    fn identity(n: usize) -> Matrix {
        let mut m = Matrix::zeros(n, n);
        for i in 0..n {
            m.row_mut(i)[i] = 1.0;
        }
        m
    }

    const REL: Tolerance = Tolerance::new(0.0, 1e-12);

    fn assert_matches_dense(step: &SparseStep, q: &Matrix, xi: &Matrix, v: &Matrix, beta: f64) {
        let d = dense::dense(q, xi, v, beta);
        // 1e-12 relative (plus a 1e-15 floor for entries that cancel to ~0).
        Tolerance::new(1e-15, 1e-12).check_f64(&step.z.data, &d.z.data).unwrap();
        REL.check_f64(&step.log_sum_exp, &d.log_sum_exp).unwrap();
    }

    #[test]
    fn top_k_with_k_equal_to_m_or_more_is_dense() {
        let (q, xi, v) = (matrix(5, 8, 1), matrix(12, 8, 2), matrix(12, 3, 3));
        for k in [12, 13, 1000] {
            let step = sparse(&q, &xi, &v, 2.0, Support::TopK { k });
            assert_matches_dense(&step, &q, &xi, &v, 2.0);
            assert!(step.support.iter().all(|s| s.len() == 12));
        }
    }

    #[test]
    fn top_1_is_exactly_the_value_row_of_the_argmax() {
        let (q, xi, v) = (matrix(6, 8, 4), matrix(20, 8, 5), matrix(20, 4, 6));
        let step = sparse(&q, &xi, &v, 3.0, Support::TopK { k: 1 });
        let d = dense::dense(&q, &xi, &v, 3.0);
        for l in 0..q.rows {
            // One kept logit: softmax weight exp(0) / 1 = 1.0 exactly, so the
            // row is copied without rounding.
            assert_eq!(step.support[l], vec![d.argmax[l]]);
            assert_eq!(step.z.row(l), v.row(d.argmax[l]));
            assert_eq!(step.log_sum_exp[l], scores(q.row(l), &xi, 3.0)[d.argmax[l]]);
        }
    }

    #[test]
    fn top_k_orders_by_score_and_breaks_ties_by_lower_index() {
        let s = [1.0, 3.0, 2.0, 3.0, 2.0, -0.0, 0.0];
        assert_eq!(top_k_support(&s, 7), vec![1, 3, 2, 4, 0, 5, 6]);
        assert_eq!(top_k_support(&s, 3), vec![1, 3, 2]);
        // -0.0 and +0.0 are equal scores: the lower index wins either way.
        assert_eq!(top_k_support(&[-1.0, 0.0, -0.0], 2), vec![1, 2]);
        assert_eq!(top_k_support(&[-1.0, -0.0, 0.0], 2), vec![1, 2]);
        // Ties through the whole pipeline: memories 1 and 2 are identical.
        let xi = Matrix { rows: 3, cols: 1, data: vec![0.5, 1.0, 1.0] };
        let q = Matrix { rows: 1, cols: 1, data: vec![1.0] };
        let step = sparse(&q, &xi, &identity(3), 1.0, Support::TopK { k: 1 });
        assert_eq!(step.support[0], vec![1]);
        assert_eq!(step.z.data, vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn excluded_memories_get_exactly_zero_weight_not_the_zero_logit_weight() {
        // d = 1, beta = 1, x = 1, scores [2, 1, -1]; values = I_3, so z is
        // the weight row itself. Top-2 keeps {0, 1}:
        //   eq. (3.9):          [e^2, e, 0] / (e^2 + e)     = [e/(e+1), 1/(e+1), 0]
        //   zero-logit variant: [e^2, e, e^0] / (e^2 + e + 1)
        let e = std::f64::consts::E;
        let xi = Matrix { rows: 3, cols: 1, data: vec![2.0, 1.0, -1.0] };
        let q = Matrix { rows: 1, cols: 1, data: vec![1.0] };
        let step = sparse(&q, &xi, &identity(3), 1.0, Support::TopK { k: 2 });
        assert_eq!(step.support[0], vec![0, 1]);
        assert_eq!(step.z.data[2], 0.0, "excluded memory must have weight exactly 0");
        REL.check_f64(&step.z.data[..2], &[e / (e + 1.0), 1.0 / (e + 1.0)]).unwrap();
        REL.check_f64(&step.log_sum_exp, &[(e * e + e).ln()]).unwrap();

        let zero_logit = softmax(&[2.0, 1.0, 0.0]);
        REL.check_f64(&zero_logit, &[e * e, e, 1.0].map(|v| v / (e * e + e + 1.0))).unwrap();
        assert!(Tolerance::new(1e-3, 0.0).check_f64(&step.z.data, &zero_logit).is_err());
        assert!(zero_logit[2] > 0.09, "the zero-logit variant leaks weight to excluded memories");
    }

    #[test]
    fn random_with_k_equal_to_m_or_more_is_dense() {
        let (q, xi, v) = (matrix(4, 6, 7), matrix(9, 6, 8), matrix(9, 2, 9));
        for k in [9, 50] {
            let step = sparse(&q, &xi, &v, 1.5, Support::Random { k, seed: 17 });
            assert_matches_dense(&step, &q, &xi, &v, 1.5);
            assert!(step.support.iter().all(|s| *s == (0..9).collect::<Vec<_>>()));
        }
    }

    #[test]
    fn random_rank_key_is_pinned() {
        // Values from an independent Python model of the same u32 arithmetic
        // (`& 0xffffffff` after each multiply); the WGSL port is checked
        // against these, so any change to the function must break this test.
        let cases: [(u64, u32, u32, u32); 7] = [
            (0, 0, 0, 0x41f3_9e5e),
            (0, 0, 1, 0x2b4b_55bb),
            (1, 0, 0, 0x0b6c_72df),
            (0, 1, 0, 0xb0ef_959b),
            (0xDEAD_BEEF_CAFE_F00D, 7, 123_456, 0xbe03_e96a),
            (u64::MAX, u32::MAX, u32::MAX, 0x7272_f41a),
            (42, 3, 5, 0x03d5_a83e),
        ];
        for (seed, l, mu, want) in cases {
            assert_eq!(random_rank_key(seed, l, mu), want, "key({seed:#x}, {l}, {mu})");
        }
    }

    #[test]
    fn lowbias32_has_the_published_constants() {
        // Wellons' published inverse of lowbias32 undoes it only if both
        // multipliers and shifts are the published ones; it also shows the
        // mixer is a bijection (so a query's keys never tie).
        fn inverse(mut x: u32) -> u32 {
            x ^= x >> 16;
            x = x.wrapping_mul(0x4302_1123);
            x ^= (x >> 15) ^ (x >> 30);
            x = x.wrapping_mul(0x1d69_e2a5);
            x ^= x >> 16;
            x
        }
        for x in [0u32, 1, 2, 0x8000_0000, 0xffff_ffff, 0x1234_5678, 0x9e37_79b9] {
            assert_eq!(inverse(lowbias32(x)), x);
        }
        assert_eq!(lowbias32(0), 0, "the fixed point the golden-ratio constant avoids");
    }

    #[test]
    fn random_support_is_deterministic_seeded_and_per_query() {
        let (m, k) = (64, 8);
        let a = random_support(1, 0, m, k);
        assert_eq!(a.len(), k);
        assert!(a.windows(2).all(|p| p[0] < p[1]), "ascending, no repeats: {a:?}");
        assert_eq!(a, random_support(1, 0, m, k), "same seed, same draw");
        // C(64, 8) ~ 4.4e9 possible supports: equal draws would mean the seed
        // is ignored.
        assert_ne!(a, random_support(2, 0, m, k));
        assert_ne!(a, random_support(1 << 32, 0, m, k), "the high seed word matters");
        let per_query: Vec<_> = (0..6).map(|l| random_support(1, l, m, k)).collect();
        for i in 0..per_query.len() {
            for j in 0..i {
                assert_ne!(per_query[i], per_query[j], "queries {i} and {j} drew the same mask");
            }
        }
        // Through the retrieval: identical queries still get their own draws,
        // and only their own memories carry weight.
        let xi = matrix(m, 4, 10);
        let q = Matrix { rows: 3, cols: 4, data: [0.3, -0.2, 0.5, 0.1].repeat(3) };
        let step = sparse(&q, &xi, &identity(m), 1.0, Support::Random { k, seed: 1 });
        for l in 0..3 {
            assert_eq!(step.support[l], random_support(1, l, m, k));
            let nonzero: Vec<usize> = (0..m).filter(|&mu| step.z.row(l)[mu] != 0.0).collect();
            assert_eq!(nonzero, step.support[l]);
        }
        assert_ne!(step.z.row(0), step.z.row(1));
    }

    #[test]
    fn random_support_picks_every_memory_about_equally_often() {
        // 4000 queries, k/M = 1/4: each memory is drawn 1000 times on average
        // with a standard deviation of about 27; 6 sigma is a loose bound that
        // still catches a biased or broken hash.
        let (m, k, queries) = (16, 4, 4000);
        let mut count = vec![0usize; m];
        for l in 0..queries {
            for mu in random_support(99, l, m, k) {
                count[mu] += 1;
            }
        }
        assert!(count.iter().all(|&c| c.abs_diff(queries * k / m) < 165), "{count:?}");
    }

    #[test]
    fn windows_are_clipped_at_both_ends() {
        // M = L = 10: the centre of query l is l.
        let (m, l_count) = (10, 10);
        let w4: Vec<Vec<usize>> = (0..10).map(|l| window_range(l, l_count, m, 4).collect()).collect();
        assert_eq!(w4[0], vec![0, 1]); // [-2, 2) clipped
        assert_eq!(w4[1], vec![0, 1, 2]); // [-1, 3) clipped
        assert_eq!(w4[5], vec![3, 4, 5, 6]); // even width: two left, one right
        assert_eq!(w4[9], vec![7, 8, 9]); // [7, 11) clipped
        let w3: Vec<Vec<usize>> = (0..10).map(|l| window_range(l, l_count, m, 3).collect()).collect();
        assert_eq!(w3[0], vec![0, 1]);
        assert_eq!(w3[4], vec![3, 4, 5]); // odd width: symmetric
        assert_eq!(w3[9], vec![8, 9]);
        assert_eq!(window_range(3, 10, 10, 1), 3..4);
        // M != L: M = 10, L = 4 gives centres floor(l * 10 / 4) = 0, 2, 5, 7.
        let centres: Vec<Vec<usize>> = (0..4).map(|l| window_range(l, 4, 10, 3).collect()).collect();
        assert_eq!(centres, vec![vec![0, 1], vec![1, 2, 3], vec![4, 5, 6], vec![6, 7, 8]]);
        // A window wider than 2M covers everything.
        assert_eq!(window_range(0, 10, 10, 25), 0..10);
    }

    #[test]
    fn window_retrieval_keeps_only_the_window() {
        let (q, xi) = (matrix(10, 3, 11), matrix(10, 3, 12));
        let step = sparse(&q, &xi, &identity(10), 2.0, Support::Window { width: 4 });
        assert_eq!(step.support[0], vec![0, 1]);
        assert_eq!(step.support[9], vec![7, 8, 9]);
        for l in [0, 9] {
            let s = scores(q.row(l), &xi, 2.0);
            let kept: Vec<f64> = step.support[l].iter().map(|&mu| s[mu]).collect();
            let mut want = [0.0; 10];
            for (&mu, w) in step.support[l].iter().zip(softmax(&kept)) {
                want[mu] = w;
            }
            assert_eq!(step.z.row(l), &want[..]);
            assert_eq!(step.log_sum_exp[l], log_sum_exp(&kept));
        }
    }

    #[test]
    fn default_window_is_an_exact_ceil_sqrt() {
        let cases =
            [(0, 0), (1, 1), (2, 2), (3, 2), (4, 2), (5, 3), (9, 3), (10, 4), (16, 4), (17, 5), (1_000_000, 1000)];
        for (m, want) in cases {
            assert_eq!(default_window(m), want, "m = {m}");
        }
        // Where f64 sqrt would round: (2^32 - 1)^2 and its neighbours.
        #[cfg(target_pointer_width = "64")]
        {
            let r = (1usize << 32) - 1;
            assert_eq!(default_window(r * r), r);
            assert_eq!(default_window(r * r - 1), r);
            assert_eq!(default_window(r * r + 1), r + 1);
        }
    }

    #[test]
    fn zero_sizes_are_rejected() {
        for bad in [Support::TopK { k: 0 }, Support::Random { k: 0, seed: 3 }, Support::Window { width: 0 }] {
            assert!(matches!(bad.validate(), Err(Error::InvalidParameter { .. })), "{bad:?}");
        }
        for good in [Support::TopK { k: 1 }, Support::Random { k: 1_000_000, seed: 0 }, Support::Window { width: 1 }] {
            good.validate().unwrap();
        }
    }

    #[test]
    fn sparse_dynamics_reports_the_dense_energy() {
        let (q, xi) = (matrix(5, 6, 13), matrix(16, 6, 14));
        // K = M: the same trajectory as the dense dynamics.
        let full = sparse_dynamics(&q, &xi, 4.0, 20, 1e-10, Support::TopK { k: 16 });
        let d = dense::dynamics(&q, &xi, 4.0, 20, 1e-10, dense::dense_update(&xi, 4.0));
        Tolerance::new(1e-15, 1e-12).check_f64(&full.state.data, &d.state.data).unwrap();
        assert_eq!(full.steps, d.steps);
        // Window: the energy of the final state is the dense E(x).
        let win = sparse_dynamics(&q, &xi, 4.0, 20, 1e-10, Support::Window { width: default_window(16) });
        for l in 0..q.rows {
            assert_eq!(win.energy[l], dense::energy(win.state.row(l), &xi, 4.0));
            // One step from query l mixes only the memories of its window.
            let next = sparse_update(&xi, 4.0, Support::Window { width: 4 }, l, q.rows)(q.row(l));
            let one = sparse(&q.select_rows(&[l]), &xi, &xi, 4.0, Support::Window { width: 4 });
            // A one-row batch would centre the window at 0; the update must not.
            if l > 0 {
                assert_ne!(next, one.z.row(0));
            }
            let want = sparse(&q, &xi, &xi, 4.0, Support::Window { width: 4 });
            assert_eq!(next, want.z.row(l));
        }
    }
}
