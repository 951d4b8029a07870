//! Pure numbers a planner compares: the efficiency criterion of Corollary
//! 2.1.1 / Theorem 3.1 and per-method flop estimates.
//!
//! The criterion is asymptotic: the polynomial path is almost linear only
//! while `B = o(sqrt(ln tau))`, `tau = max(M, L)`; above it, the degree and
//! the rank `C(d + g, g)` explode and dense wins. A finite problem has no
//! "o()", so [`Efficiency`] reports the ratio `B / sqrt(ln tau)` and calls B
//! small when the ratio is below 1 (our constant, not the paper's). The
//! decision itself should rest on the flop estimates below, evaluated with
//! the actual g and r of the chosen polynomial; the ratio explains *why* they
//! come out as they do.
//!
//! Flop counts are multiply-adds counted as 2, per application (one
//! retrieval step), with `exp`, `max` and divisions left out: they add
//! `O(M L)` to dense and `O((M + L) r)` to the feature methods, lower order in
//! d. They are estimates for ranking methods, not predictions of run time:
//! memory traffic and occupancy are not modelled.

/// `tau = max(M, L)`.
pub fn tau(m: usize, l: usize) -> usize {
    m.max(l)
}

/// `sqrt(ln tau)`, `tau = max(M, L)` (0 when tau <= 1).
pub fn sqrt_ln_tau(m: usize, l: usize) -> f64 {
    (tau(m, l).max(1) as f64).ln().sqrt()
}

/// The efficiency criterion for one problem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Efficiency {
    /// `B = max(|X|_max, |Xi|_max)`.
    pub b: f64,
    /// `sqrt(ln tau)`.
    pub sqrt_ln_tau: f64,
    /// `B / sqrt(ln tau)` (+inf when tau <= 1).
    pub ratio: f64,
    /// Whether `ratio < 1`: B is small against `sqrt(ln tau)`, the regime
    /// where Theorem 3.1's almost-linear algorithm applies.
    pub b_is_small: bool,
}

/// [`Efficiency`] of a problem with max-norm bound `b`, M memories and L queries.
pub fn efficiency(b: f64, m: usize, l: usize) -> Efficiency {
    let s = sqrt_ln_tau(m, l);
    let ratio = if s > 0.0 { b / s } else { f64::INFINITY };
    Efficiency { b, sqrt_ln_tau: s, ratio, b_is_small: ratio < 1.0 }
}

/// Dense retrieval: scores `2 d M L` plus the weighted sum `2 dv M L`
/// (`4 d M L` when `dv = d`).
pub fn dense_flops(d: usize, dv: usize, m: usize, l: usize) -> f64 {
    2.0 * (m as f64) * (l as f64) * (d + dv) as f64
}

/// Any feature-map method of rank r: `feature_flops_per_row` to map each of
/// the M + L rows, then `2 r (dv + 1)` per memory to accumulate S and n and
/// the same per query to answer `S^T phi_q` and `<n, phi_q>`.
pub fn feature_method_flops(rank: f64, feature_flops_per_row: f64, dv: usize, m: usize, l: usize) -> f64 {
    (m + l) as f64 * (feature_flops_per_row + 2.0 * rank * (dv + 1) as f64)
}

/// The polynomial path of rank r and degree g. Feature maps are counted at
/// `g + 1` multiplies per feature, an upper bound for evaluating each
/// monomial from the CSR table by repeated multiplication (`|a| <= g`) plus
/// its coefficient; the parent recurrence of
/// [`MonomialTable`](super::poly::MonomialTable) needs only 2.
pub fn poly_flops(rank: u64, degree: usize, dv: usize, m: usize, l: usize) -> f64 {
    let r = rank as f64;
    feature_method_flops(r, r * (degree + 1) as f64, dv, m, l)
}

/// Positive random features with `features` rows of W: `2 m_f d` for `W x`
/// plus `2 d` for `|x|^2`.
pub fn prf_flops(features: usize, d: usize, dv: usize, m: usize, l: usize) -> f64 {
    let f = features as f64;
    feature_method_flops(f, 2.0 * f * d as f64 + 2.0 * d as f64, dv, m, l)
}

/// The linear map `elu(x) + 1`: rank d, about d operations per row.
pub fn linear_flops(d: usize, dv: usize, m: usize, l: usize) -> f64 {
    feature_method_flops(d as f64, d as f64, dv, m, l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criterion_by_hand() {
        // tau = e^4 rounded: ln(55) = 4.007, sqrt = 2.0018.
        let e = efficiency(1.0, 55, 10);
        assert!((e.sqrt_ln_tau - 55f64.ln().sqrt()).abs() < 1e-15);
        assert!(e.b_is_small && !efficiency(2.5, 55, 10).b_is_small);
        assert!(!efficiency(0.1, 1, 1).b_is_small, "tau = 1 has no almost-linear regime");
    }

    #[test]
    fn flops_by_hand() {
        assert_eq!(dense_flops(4, 4, 100, 10), 4.0 * 4.0 * 100.0 * 10.0);
        // r = 15 (d = 4, g = 2), dv = 4: (100 + 10) * (15 * 3 + 2 * 15 * 5).
        assert_eq!(poly_flops(15, 2, 4, 100, 10), 110.0 * (45.0 + 150.0));
        // Doubling M = L doubles the feature methods and quadruples dense.
        let r = poly_flops(70, 4, 4, 2048, 2048) / poly_flops(70, 4, 4, 1024, 1024);
        assert!((r - 2.0).abs() < 1e-12);
        assert_eq!(dense_flops(4, 4, 2048, 2048) / dense_flops(4, 4, 1024, 1024), 4.0);
    }
}
