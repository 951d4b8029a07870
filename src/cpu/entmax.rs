//! Reference for `shaders/entmax.wgsl`: sparse retrieval of SEMANTICS.md
//! ("Sparse and entmax retrieval", Sparse Modern Hopfield Models, Hu et al.
//! 2023), `z_l = sum_mu p_mu v_mu` with `p = sparsemax(s_l)` (Martins &
//! Astudillo 2016) or `p = 1.5-entmax(s_l)` (Peters et al. 2019) and
//! `s_l = beta Xi x_l`.
//!
//! Both maps are computed exactly by a full sort of the score row and a
//! threshold found on its sorted prefixes; no bisection, no partial sort.

use super::dense::{scores, weighted_sum};
use super::Matrix;

/// A map that replaces softmax: [`sparsemax`] or [`entmax15`].
pub type Map = fn(&[f64]) -> Vec<f64>;

/// The entries of `s - max(s)`, sorted in descending order.
///
/// Both maps are invariant to adding a constant to every score; shifting by
/// the maximum first keeps the prefix sums small when scores are ~1e4, so the
/// threshold is not lost to cancellation. `total_cmp` keeps the sort total;
/// the order of equal values does not change any prefix sum.
fn shifted_descending(s: &[f64]) -> (Vec<f64>, f64) {
    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut z: Vec<f64> = s.iter().map(|&v| v - max).collect();
    z.sort_by(|a, b| b.total_cmp(a));
    (z, max)
}

/// sparsemax(s) (Martins & Astudillo 2016, Alg. 1): `p_i = max(s_i - tau, 0)`
/// with `tau = (sum_{j <= k} z_(j) - 1) / k`, where `z` is `s` sorted in
/// descending order and `k = max{k : 1 + k z_(k) > sum_{j <= k} z_(j)}`.
///
/// # Panics
/// On an empty row (the threshold is undefined).
pub fn sparsemax(s: &[f64]) -> Vec<f64> {
    assert!(!s.is_empty(), "sparsemax of an empty row");
    let (z, max) = shifted_descending(s);
    // k = 1 always qualifies (1 + z_(1) > z_(1)), and the condition holds
    // exactly on a prefix, so the last k that passes is the support size.
    let (mut cumsum, mut k, mut sum_k) = (0.0, 0, 0.0);
    for (i, &zi) in z.iter().enumerate() {
        cumsum += zi;
        let rank = (i + 1) as f64;
        if 1.0 + rank * zi > cumsum {
            k = i + 1;
            sum_k = cumsum;
        }
    }
    let tau = (sum_k - 1.0) / k as f64;
    s.iter().map(|&v| (v - max - tau).max(0.0)).collect()
}

/// 1.5-entmax(s) (Peters et al. 2019, Alg. 2, the exact sort-based
/// algorithm of the `entmax` package's `entmax15`):
/// `p_i = max(s_i / 2 - tau, 0)^2` with `sum_i p_i = 1`.
///
/// With `z` = `s / 2` (shifted by its max) sorted in descending order, and
/// for each prefix length `rho` its mean `m_rho`, mean of squares `q_rho` and
/// `ss_rho = rho (q_rho - m_rho^2)`, the candidate threshold is
/// `tau_rho = m_rho - sqrt(max((1 - ss_rho) / rho, 0))` (the smaller root of
/// `sum_{j <= rho} (z_(j) - tau)^2 = 1`). The support size is the largest
/// `rho` with `tau_rho <= z_(rho)`, and `tau = tau_rho` there.
///
/// # Panics
/// On an empty row.
pub fn entmax15(s: &[f64]) -> Vec<f64> {
    assert!(!s.is_empty(), "entmax15 of an empty row");
    // (alpha - 1) s = s / 2, then the same shift-and-sort as sparsemax.
    let half: Vec<f64> = s.iter().map(|&v| v / 2.0).collect();
    let (z, max) = shifted_descending(&half);
    let (mut sum, mut sum_sq, mut tau_star) = (0.0, 0.0, f64::NAN);
    for (i, &zi) in z.iter().enumerate() {
        sum += zi;
        sum_sq += zi * zi;
        let rho = (i + 1) as f64;
        let mean = sum / rho;
        let ss = rho * (sum_sq / rho - mean * mean);
        let tau = mean - ((1.0 - ss) / rho).max(0.0).sqrt();
        // rho = 1 always qualifies (tau_1 = z_(1) - 1), so tau_star is set.
        // The package counts the passing rho instead of taking the largest;
        // they agree because the condition holds exactly on a prefix.
        if tau <= zi {
            tau_star = tau;
        }
    }
    half.iter()
        .map(|&v| {
            let t = (v - max - tau_star).max(0.0);
            t * t
        })
        .collect()
}

/// The indices with a positive weight, ascending.
pub fn support_of(p: &[f64]) -> Vec<usize> {
    (0..p.len()).filter(|&i| p[i] > 0.0).collect()
}

/// One sparsemax / entmax update for every query.
#[derive(Clone, Debug)]
pub struct EntmaxStep {
    /// `[L, dv]` retrieved patterns.
    pub z: Matrix,
    /// Per query, the memories with `p_mu > 0`, ascending.
    pub support: Vec<Vec<usize>>,
}

/// `z_l = sum_mu p_mu v_mu` with `p = map(beta Xi x_l)` for every query.
/// `values` is `memories` for auto-association.
pub fn entmax(queries: &Matrix, memories: &Matrix, values: &Matrix, beta: f64, map: Map) -> EntmaxStep {
    let mut z = Matrix::zeros(queries.rows, values.cols);
    let mut support = Vec::with_capacity(queries.rows);
    for l in 0..queries.rows {
        let p = map(&scores(queries.row(l), memories, beta));
        z.row_mut(l).copy_from_slice(&weighted_sum(&p, values));
        support.push(support_of(&p));
    }
    EntmaxStep { z, support }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::dense::{self, softmax};
    use crate::cpu::update;
    use crate::tolerance::Tolerance;

    /// The golden vectors of SEMANTICS.md are printed to 4 decimals, so a
    /// correct value may differ from them by up to half a unit in the 4th
    /// place (5e-5); a wrong algorithm (e.g. entmax without the s/2 scaling,
    /// which gives [0, 0.1693, 0.8307]) misses by far more.
    const FOUR_DIGITS: Tolerance = Tolerance::new(5e-5, 0.0);

    fn assert_distribution(p: &[f64]) {
        assert!(p.iter().all(|&v| v.is_finite() && v >= 0.0), "{p:?}");
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12, "sum {} of {p:?}", p.iter().sum::<f64>());
    }

    /// 1.5-entmax over a support of two halved, shifted scores `a`, `b`
    /// solves `(a - tau)^2 + (b - tau)^2 = 1`: the closed form checks the
    /// sorted-prefix algorithm to rounding.
    fn two_point_entmax(a: f64, b: f64) -> [f64; 2] {
        let tau = (a + b - (2.0 - (a - b) * (a - b)).sqrt()) / 2.0;
        [(a - tau) * (a - tau), (b - tau) * (b - tau)]
    }

    #[test]
    fn golden_vectors() {
        let s = [-2.0, 0.0, 0.5];
        FOUR_DIGITS.check_f64(&softmax(&s), &[0.0486, 0.3592, 0.5922]).unwrap();
        FOUR_DIGITS.check_f64(&sparsemax(&s), &[0.0, 0.25, 0.75]).unwrap();
        FOUR_DIGITS.check_f64(&entmax15(&s), &[0.0, 0.3260, 0.6740]).unwrap();
        // Tighter than the printed digits: sparsemax is exact in binary here,
        // and entmax15 matches its two-point closed form on {0, 0.5}.
        assert_eq!(sparsemax(&s), vec![0.0, 0.25, 0.75]);
        let [hi, lo] = two_point_entmax(0.25, 0.0);
        Tolerance::new(1e-15, 1e-14).check_f64(&entmax15(&s), &[0.0, lo, hi]).unwrap();
        assert_eq!(support_of(&entmax15(&s)), vec![1, 2]);
    }

    #[test]
    fn outputs_are_distributions() {
        let rows: [&[f64]; 6] = [
            &[-2.0, 0.0, 0.5],
            &[0.1, 0.2, 0.3, 0.4, 0.5],
            &[3.0, -1.0, 2.5, 2.9, 0.0, -7.0],
            &[0.0; 8],
            &[1e-9, -1e-9, 0.0],
            &[5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0],
        ];
        for s in rows {
            assert_distribution(&sparsemax(s));
            assert_distribution(&entmax15(s));
        }
    }

    #[test]
    fn ties_share_equally() {
        for n in [2, 3, 7] {
            let uniform = vec![1.0 / n as f64; n];
            Tolerance::new(1e-15, 1e-14).check_f64(&sparsemax(&vec![2.5; n]), &uniform).unwrap();
            Tolerance::new(1e-15, 1e-14).check_f64(&entmax15(&vec![2.5; n]), &uniform).unwrap();
        }
        // A tie at the top with a far-away third: half each, third excluded.
        assert_eq!(sparsemax(&[1.0, 5.0, 5.0]), vec![0.0, 0.5, 0.5]);
        let p = entmax15(&[1.0, 5.0, 5.0]);
        Tolerance::new(1e-15, 1e-14).check_f64(&p, &[0.0, 0.5, 0.5]).unwrap();
    }

    #[test]
    fn a_single_element_gets_everything() {
        for v in [-3.0, 0.0, 1e4] {
            assert_eq!(sparsemax(&[v]), vec![1.0]);
            assert_eq!(entmax15(&[v]), vec![1.0]);
        }
    }

    #[test]
    fn huge_scores_stay_finite() {
        // sparsemax by hand: shifted [0, -2e4, -0.5]; k = 2, tau = -0.75.
        let s = [1e4, -1e4, 1e4 - 0.5];
        assert_eq!(sparsemax(&s), vec![0.75, 0.0, 0.25]);
        // entmax15: halved and shifted [0, -1e4, -0.25]; two-point support.
        let [a, b] = two_point_entmax(0.0, -0.25);
        Tolerance::new(1e-15, 1e-12).check_f64(&entmax15(&s), &[a, 0.0, b]).unwrap();
        let wide = [1e4, 9.99e3, -1e4, 5e3, 1e4];
        assert_distribution(&sparsemax(&wide));
        assert_distribution(&entmax15(&wide));
    }

    #[test]
    fn thresholds_survive_scores_far_beyond_f32() {
        // A tie at the top: tau = -1/2 (sparsemax), -1/sqrt(2) (entmax), far
        // below the spacing of the scores themselves at 1e15 in f32 and close
        // to it in f64 (0.125): the shift by the max comes first.
        for top in [1e7, 1e9, 1e15] {
            let s = [top, top - 1e3, top];
            assert_eq!(sparsemax(&s), vec![0.5, 0.0, 0.5], "{top:e}");
            Tolerance::new(1e-15, 1e-14).check_f64(&entmax15(&s), &[0.5, 0.0, 0.5]).unwrap();
        }
    }

    #[test]
    fn one_dominant_score_is_one_hot() {
        assert_eq!(sparsemax(&[0.0, 10.0, -1.0, 8.5]), vec![0.0, 1.0, 0.0, 0.0]);
        // 1.5-entmax is one-hot once the gap of halved scores reaches 1.
        assert_eq!(entmax15(&[0.0, 10.0, -1.0, 7.9]), vec![0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn retrieval_uses_the_sparse_weights() {
        // d = 1, beta = 1, x = 1, scores [-2, 0, 0.5]; values = I_3 make z the
        // weight row, and values = memories give the weighted memory.
        let xi = Matrix { rows: 3, cols: 1, data: vec![-2.0, 0.0, 0.5] };
        let q = Matrix { rows: 1, cols: 1, data: vec![1.0] };
        let mut eye = Matrix::zeros(3, 3);
        (0..3).for_each(|i| eye.row_mut(i)[i] = 1.0);
        let sm = entmax(&q, &xi, &eye, 1.0, sparsemax);
        assert_eq!(sm.z.data, vec![0.0, 0.25, 0.75]);
        assert_eq!(sm.support, vec![vec![1, 2]]);
        let en = entmax(&q, &xi, &xi, 1.0, entmax15);
        let [hi, _] = two_point_entmax(0.25, 0.0);
        Tolerance::new(1e-15, 1e-14).check_f64(&en.z.data, &[0.5 * hi]).unwrap();
        // beta scales the scores before the map: beta = 10 makes it one-hot.
        assert_eq!(entmax(&q, &xi, &eye, 10.0, sparsemax).z.data, vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn dynamics_accept_the_entmax_update() {
        let xi = Matrix { rows: 3, cols: 2, data: vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0] };
        let q = Matrix { rows: 1, cols: 2, data: vec![0.8, 0.3] };
        let d = update::dynamics(&q, &xi, 8.0, 10, 1e-12, |x| weighted_sum(&sparsemax(&scores(x, &xi, 8.0)), &xi));
        // sparsemax reaches the stored pattern exactly (a finite-step fixed point).
        assert_eq!(d.state.data, vec![1.0, 0.0]);
        assert!(d.converged[0]);
        assert_eq!(d.energy[0], dense::energy(&[1.0, 0.0], &xi, 8.0));
    }
}
