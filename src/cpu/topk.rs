//! Reference for `shaders/topk.wgsl` and `shaders/topk_merge.wgsl`: top-K
//! and random-mask retrieval, sparse-structured retrieval of SEMANTICS.md
//! ("Sparse-structured retrieval", Nonparametric Modern Hopfield Models,
//! eq. (3.9)),
//!
//! `z_l = sum_{mu in S_l} softmax_{mu in S_l}(s[l, mu]) v_mu`,
//!
//! where the softmax runs over the support set `S_l` only and every memory
//! outside `S_l` gets a weight of exactly 0 (not the weight `e^0 / Z` that
//! setting the excluded logits to 0 would give). `S_l` is the K largest
//! scores (top-K) or k memories of a seeded draw ([`random_rank_key`]).
//!
//! As in the rest of [`crate::cpu`], nothing here mirrors a GPU algorithm:
//! top-K is a full stable sort followed by an explicit boolean mask, not a
//! heap or a streaming selection.

use std::cmp::Ordering;

use super::{restricted, Matrix, SparseStep};
use crate::method::random_rank_key;

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

/// Top-K retrieval for every query: `S_l` = [`top_k_support`] of its scores.
/// `values` is `memories` for auto-association.
///
/// # Panics
/// On `k = 0` (an empty softmax; [`crate::Method::validate`] rejects it).
pub fn topk(queries: &Matrix, memories: &Matrix, values: &Matrix, beta: f64, k: usize) -> SparseStep {
    restricted(queries, memories, values, beta, |_, s| top_k_support(s, k))
}

/// Random-mask retrieval for every query: query `l` (the `l`-th row)
/// keeps [`random_support`]`(seed, l, M, k)`.
///
/// # Panics
/// On `k = 0` or indices beyond u32.
pub fn random(queries: &Matrix, memories: &Matrix, values: &Matrix, beta: f64, k: usize, seed: u64) -> SparseStep {
    restricted(queries, memories, values, beta, |l, s| random_support(seed, l, s.len(), k))
}

#[cfg(test)]
mod tests {
    use super::super::dense::{self, scores, softmax};
    use super::*;
    use crate::cpu::testing::{identity, matrix};
    use crate::tolerance::Tolerance;

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
            let step = topk(&q, &xi, &v, 2.0, k);
            assert_matches_dense(&step, &q, &xi, &v, 2.0);
            assert!(step.support.iter().all(|s| s.len() == 12));
        }
    }

    #[test]
    fn top_1_is_exactly_the_value_row_of_the_argmax() {
        let (q, xi, v) = (matrix(6, 8, 4), matrix(20, 8, 5), matrix(20, 4, 6));
        let step = topk(&q, &xi, &v, 3.0, 1);
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
        let step = topk(&q, &xi, &identity(3), 1.0, 1);
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
        let step = topk(&q, &xi, &identity(3), 1.0, 2);
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
            let step = random(&q, &xi, &v, 1.5, k, 17);
            assert_matches_dense(&step, &q, &xi, &v, 1.5);
            assert!(step.support.iter().all(|s| *s == (0..9).collect::<Vec<_>>()));
        }
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
        let step = random(&q, &xi, &identity(m), 1.0, k, 1);
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
}
