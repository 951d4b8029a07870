//! Reference for the feature-map (kernel) retrieval kernels: polynomial
//! low-rank, linear and positive random features (SEMANTICS.md, "Kernel
//! (feature-map) retrieval"):
//! `z_l = (sum_mu k(x_l, xi_mu) v_mu) / (sum_mu k(x_l, xi_mu))`.
//!
//! Written directly from the kernel, pair by pair, and never through
//! `S = sum_mu phi_k(xi_mu) v_mu^T` and `n = sum_mu phi_k(xi_mu)`, which is
//! what the GPU computes: agreement between the two is then a real check of
//! the factorisation, not of the same code twice.
//! - poly: `k(x, y) = P(beta <x, y>)`, P given by its monomial coefficients;
//! - linear: `k(x, y) = <elu(x) + 1, elu(y) + 1>` (no beta);
//! - prf: `k(x, y) = <phi(x), phi(y)>`, `phi(x) = exp(W x' - |x'|^2/2) / sqrt(m)`,
//!   `x' = sqrt(beta) x`, summed in the log domain so that nothing overflows.
//!
//! Each query is normalised by its own sum over memories. The paper's
//! Algorithm 1 writes `diag(U1 (U2^T 1))` for the normaliser; that is a typo
//! (it would mix all queries into one scalar per memory), and this file does
//! not reproduce it.

use super::dense::{log_sum_exp, softmax, weighted_sum};
use super::{dot, Matrix};
use crate::error::Result;
use crate::feature::poly::{horner, taylor_coefs};
use crate::feature::prf::{linear_feature_map, RandomFeatures};

/// The Taylor coefficients `1 / k!`, `k = 0..=degree`, of the polynomial
/// `--method poly --degree g` uses (monomial basis of t).
pub fn taylor(degree: usize) -> Vec<f64> {
    taylor_coefs(degree)
}

/// The projection W (`features x d`) of `--method prf` with this seed, as the
/// GPU receives it: drawn in f64, rounded to f32, widened back, so that
/// [`prf`] with it checks the kernel tightly.
pub fn prf_projection(d: usize, features: usize, seed: u64, orthogonal: bool) -> Result<Matrix> {
    let rf = RandomFeatures::new(d, features, seed, orthogonal)?;
    Ok(Matrix::from_f32(features, d, &rf.w_f32()))
}

/// `z_l = sum_mu k(x_l, xi_mu) v_mu / sum_mu k(x_l, xi_mu)` for any kernel.
///
/// The kernel values are used as they come: a kernel that is not positive
/// (a polynomial evaluated outside the range it was verified on) gives
/// whatever the formula gives, so that a test can see it.
pub fn kernel_retrieval(
    queries: &Matrix,
    memories: &Matrix,
    values: &Matrix,
    kernel: impl Fn(&[f64], &[f64]) -> f64,
) -> Matrix {
    let mut z = Matrix::zeros(queries.rows, values.cols);
    for l in 0..queries.rows {
        let k: Vec<f64> = (0..memories.rows).map(|mu| kernel(queries.row(l), memories.row(mu))).collect();
        let total: f64 = k.iter().sum();
        let w: Vec<f64> = k.iter().map(|v| v / total).collect();
        z.row_mut(l).copy_from_slice(&weighted_sum(&w, values));
    }
    z
}

/// Polynomial kernel retrieval, `k(x, y) = P(beta <x, y>)` with
/// `P(t) = sum_k coefs[k] t^k`.
pub fn poly(queries: &Matrix, memories: &Matrix, values: &Matrix, beta: f64, coefs: &[f64]) -> Matrix {
    kernel_retrieval(queries, memories, values, |x, y| horner(coefs, beta * dot(x, y)))
}

/// Linear kernel retrieval, `k(x, y) = <elu(x) + 1, elu(y) + 1>`; no beta
/// (Nonparametric paper, Prop. C.1).
pub fn linear(queries: &Matrix, memories: &Matrix, values: &Matrix) -> Matrix {
    kernel_retrieval(queries, memories, values, |x, y| dot(&linear_feature_map(x), &linear_feature_map(y)))
}

/// Positive-random-feature retrieval with projection `w` (`m x d`, rows of W):
/// `k(x, y) = (1/m) sum_i exp(<w_i, x' + y'> - |x'|^2/2 - |y'|^2/2)`.
///
/// Computed as `log k` per memory and a softmax over memories: the weights
/// `k_mu / sum k` are unchanged and no exponential overflows.
pub fn prf(queries: &Matrix, memories: &Matrix, values: &Matrix, beta: f64, w: &Matrix) -> Matrix {
    let s = beta.sqrt();
    let log_m = (w.rows as f64).ln();
    // <w_i, x'> - |x'|^2 / 2 for every row and feature.
    let exponents = |data: &Matrix| -> Vec<Vec<f64>> {
        (0..data.rows)
            .map(|i| {
                let x = data.row(i);
                let half_sq = 0.5 * beta * dot(x, x);
                (0..w.rows).map(|f| s * dot(w.row(f), x) - half_sq).collect()
            })
            .collect()
    };
    let (eq, ek) = (exponents(queries), exponents(memories));
    let mut z = Matrix::zeros(queries.rows, values.cols);
    let mut pair = vec![0.0; w.rows];
    for (l, eq_l) in eq.iter().enumerate() {
        let log_k: Vec<f64> = ek
            .iter()
            .map(|ek_mu| {
                pair.iter_mut().zip(eq_l.iter().zip(ek_mu)).for_each(|(p, (a, b))| *p = a + b);
                log_sum_exp(&pair) - log_m
            })
            .collect();
        z.row_mut(l).copy_from_slice(&weighted_sum(&softmax(&log_k), values));
    }
    z
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::dense::dense;
    use crate::feature::poly::{
        choose_polynomial, feature_coefficients, feature_map, lemma_3_2_bound, ratio_error_bound, MonomialTable,
        Polynomial, MAX_DEGREE,
    };
    use crate::feature::prf::RandomFeatures;
    use crate::stats::ProblemStats;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rng: &mut ChaCha8Rng, rows: usize, cols: usize, half: f32) -> Vec<f32> {
        (0..rows * cols).map(|_| rng.random_range(-half..half)).collect()
    }

    fn max_diff(a: &Matrix, b: &Matrix) -> f64 {
        assert_eq!((a.rows, a.cols), (b.rows, b.cols));
        a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    /// What the GPU will compute: `S = sum phi_k(xi) v^T`, `n = sum phi_k(xi)`,
    /// `z = S^T phi_q(x) / <n, phi_q(x)>`.
    fn factorised(
        queries: &Matrix,
        memories: &Matrix,
        values: &Matrix,
        phi_q: impl Fn(&[f64]) -> Vec<f64>,
        phi_k: impl Fn(&[f64]) -> Vec<f64>,
    ) -> Matrix {
        let r = phi_k(memories.row(0)).len();
        let mut s = Matrix::zeros(r, values.cols);
        let mut n = vec![0.0; r];
        for mu in 0..memories.rows {
            let p = phi_k(memories.row(mu));
            for f in 0..r {
                n[f] += p[f];
                s.row_mut(f).iter_mut().zip(values.row(mu)).for_each(|(a, v)| *a += p[f] * v);
            }
        }
        let mut z = Matrix::zeros(queries.rows, values.cols);
        for l in 0..queries.rows {
            let q = phi_q(queries.row(l));
            let den = dot(&n, &q);
            for c in 0..values.cols {
                z.row_mut(l)[c] = (0..r).map(|f| s.row(f)[c] * q[f]).sum::<f64>() / den;
            }
        }
        z
    }

    #[test]
    fn linear_matches_a_hand_computation() {
        // phi([0, 0]) = [1, 1], phi([1, -1]) = [2, 1/e]; memories [0, 0] and [1, 0]
        // have phi [1, 1] and [2, 1]. Query [0, 0]: k = 2, 3. Query [1, -1]:
        // k = 2 + 1/e, 4 + 1/e.
        let q = Matrix { rows: 2, cols: 2, data: vec![0.0, 0.0, 1.0, -1.0] };
        let m = Matrix { rows: 2, cols: 2, data: vec![0.0, 0.0, 1.0, 0.0] };
        let v = Matrix { rows: 2, cols: 2, data: vec![1.0, 2.0, 3.0, 4.0] };
        let e = (-1.0f64).exp();
        let (k1, k2) = (2.0 + e, 4.0 + e);
        let want = [
            (2.0 * 1.0 + 3.0 * 3.0) / 5.0,
            (2.0 * 2.0 + 3.0 * 4.0) / 5.0,
            (k1 * 1.0 + k2 * 3.0) / (k1 + k2),
            (k1 * 2.0 + k2 * 4.0) / (k1 + k2),
        ];
        let z = linear(&q, &m, &v);
        for (got, want) in z.data.iter().zip(want) {
            assert!((got - want).abs() < 1e-15, "{:?} vs {want}", z.data);
        }
    }

    #[test]
    fn lemma_3_2_bound_holds_on_small_b() {
        // d = 4, M = 64, L = 16, entries in [-0.3, 0.3], beta = 1: B <= 0.3.
        let (d, m, l, beta) = (4, 64, 16, 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for case in 0..4 {
            let (xq, xm) = (random(&mut rng, l, d, 0.3), random(&mut rng, m, d, 0.3));
            let bounds = ProblemStats::new(&xq, &xm, None, d, beta, 1).unwrap();
            let (q, mem) = (Matrix::from_f32(l, d, &xq), Matrix::from_f32(m, d, &xm));
            let want = dense(&q, &mem, &mem, beta).z;
            for delta in [1e-2, 1e-3, 1e-5] {
                let c = choose_polynomial(bounds.range(), delta, d, MAX_DEGREE).unwrap();
                let err = max_diff(&poly(&q, &mem, &mem, beta, &c.poly.coefs), &want);
                let bound = lemma_3_2_bound(m, bounds.b, delta);
                assert!(err <= bound, "case {case}, delta {delta}: {err} > {bound}");
                // The M-free bound is ~M times tighter (measured errors sit
                // another 10-100x below it), so it is the one that can fail.
                let tight = ratio_error_bound(bounds.b, c.poly.achieved_delta);
                assert!(err <= tight, "case {case}, delta {delta}: {err} > {tight}");
            }
        }
    }

    #[test]
    fn poly_error_against_dense_shrinks_with_degree() {
        let (d, m, l, beta) = (4, 64, 16, 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let (xq, xm) = (random(&mut rng, l, d, 0.5), random(&mut rng, m, d, 0.5));
        let range = ProblemStats::new(&xq, &xm, None, d, beta, 1).unwrap().range();
        let (q, mem) = (Matrix::from_f32(l, d, &xq), Matrix::from_f32(m, d, &xm));
        let want = dense(&q, &mem, &mem, beta).z;
        // Even degrees: the error of consecutive degrees can tie when the
        // odd term barely matters for the ratio.
        let errs: Vec<f64> = [2, 4, 6, 8]
            .iter()
            .map(|&g| {
                let p = Polynomial::new(g, range).unwrap();
                max_diff(&poly(&q, &mem, &mem, beta, &p.coefs), &want)
            })
            .collect();
        for w in errs.windows(2) {
            assert!(w[1] < w[0], "{errs:?}");
        }
    }

    #[test]
    fn factorised_form_matches_the_direct_reference() {
        let (d, m, l, dv, beta) = (3, 20, 5, 2, 0.8);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let q = Matrix::from_f32(l, d, &random(&mut rng, l, d, 0.6));
        let mem = Matrix::from_f32(m, d, &random(&mut rng, m, d, 0.6));
        let v = Matrix::from_f32(m, dv, &random(&mut rng, m, dv, 2.0));

        // Polynomial, with a sign split: P(t) = 1 + t + 0.3 t^2 - 0.02 t^3 + 0.01 t^4
        // stays positive for |t| <= 0.8 * 0.6^2 * 3.
        let coefs = [1.0, 1.0, 0.3, -0.02, 0.01];
        let table = MonomialTable::new(d, 4, 1000).unwrap();
        let pc = feature_coefficients(&table, &coefs, beta).unwrap();
        let direct = poly(&q, &mem, &v, beta, &coefs);
        let fact = factorised(&q, &mem, &v, |x| feature_map(x, &table, &pc.query), |y| feature_map(y, &table, &pc.key));
        assert!(max_diff(&direct, &fact) < 1e-12, "poly: {}", max_diff(&direct, &fact));

        let direct = linear(&q, &mem, &v);
        let fact = factorised(&q, &mem, &v, linear_feature_map, linear_feature_map);
        assert!(max_diff(&direct, &fact) < 1e-12, "linear");

        let rf = RandomFeatures::new(d, 64, 1, true).unwrap();
        let w = Matrix { rows: rf.m, cols: d, data: rf.w.clone() };
        let direct = prf(&q, &mem, &v, beta, &w);
        let fact = factorised(&q, &mem, &v, |x| rf.feature_map(x, beta), |y| rf.feature_map(y, beta));
        assert!(max_diff(&direct, &fact) < 1e-12, "prf");
    }

    #[test]
    fn prf_with_many_features_approaches_dense() {
        // Why 0.02 is safe. Each kernel estimate is the mean of m i.i.d.
        // terms with mean exp(beta <x, y>) and relative variance
        // exp(|x' + y'|^2) - 1 (Performer, Lemma 2). Here every entry lies in
        // [-0.3, 0.3] with d = 4 and beta = 1, so |x' + y'|^2 <= 4 * 0.6^2 = 1.44
        // and the relative standard error is at most
        // sqrt((e^1.44 - 1) / 20000) = 0.0127 per pair. If every weight k_mu is
        // off by a relative eps_mu with |eps_mu| <= eps, z moves by at most
        // 2 eps max|v| / (1 - eps) (weights renormalise). With eps = 5
        // standard errors (0.063; over the M L = 1024 pairs the chance that
        // any exceeds it is ~1024 * 6e-7 under the normal approximation) that
        // is 2 * 0.063 * 0.3 / 0.937 = 0.040. The seed is fixed, so the test is
        // deterministic; errors partly cancel in the ratio, so the measured
        // error sits well inside; we assert half the worst case.
        let (d, m, l, beta, features) = (4, 64, 16, 1.0, 20_000);
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let q = Matrix::from_f32(l, d, &random(&mut rng, l, d, 0.3));
        let mem = Matrix::from_f32(m, d, &random(&mut rng, m, d, 0.3));
        let want = dense(&q, &mem, &mem, beta).z;
        for orthogonal in [false, true] {
            let rf = RandomFeatures::new(d, features, 2024, orthogonal).unwrap();
            let w = Matrix { rows: rf.m, cols: d, data: rf.w };
            let err = max_diff(&prf(&q, &mem, &mem, beta, &w), &want);
            assert!(err < 0.02, "orthogonal = {orthogonal}: {err}");
        }
    }

    #[test]
    fn prf_survives_huge_exponents() {
        // beta <x, x> = 2e4: exp would overflow, the log-domain sum must not.
        let q = Matrix { rows: 1, cols: 2, data: vec![100.0, 0.0] };
        let mem = Matrix { rows: 2, cols: 2, data: vec![100.0, 0.0, -100.0, 0.0] };
        let w = Matrix { rows: 2, cols: 2, data: vec![1.0, 0.0, 0.5, 0.5] };
        let z = prf(&q, &mem, &mem, 2.0, &w);
        assert!(z.data.iter().all(|v| v.is_finite()), "{:?}", z.data);
    }
}
