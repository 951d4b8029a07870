//! Reference for `shaders/dense*.wgsl`: dense retrieval
//! `z = softmax(beta Xi x) V`, its log-sum-exp, the most similar memory and
//! the energy `E(x) = -lse(beta, Xi x) + 0.5 <x, x>` of SEMANTICS.md ("Dense
//! retrieval", "Energy and iterated dynamics"). The dynamics loop is in
//! [`super::update`].

use super::{dot, Matrix};

/// One application of the update rule to every query.
#[derive(Clone, Debug)]
pub struct DenseStep {
    /// `[L, dv]` retrieved patterns.
    pub z: Matrix,
    /// Per query, `log sum_mu exp(s_mu)` with `s_mu = beta <x, xi_mu>` (score units).
    pub log_sum_exp: Vec<f64>,
    /// Per query, the index of the memory with the largest score (lowest index on ties).
    pub argmax: Vec<usize>,
}

/// Scores of one query against every memory: `s_mu = beta <x, xi_mu>`.
pub fn scores(x: &[f64], memories: &Matrix, beta: f64) -> Vec<f64> {
    (0..memories.rows).map(|mu| beta * dot(x, memories.row(mu))).collect()
}

/// `log sum exp(s)`, computed as `max + log sum exp(s - max)` so that scores
/// of 1e4 neither overflow nor underflow.
pub fn log_sum_exp(s: &[f64]) -> f64 {
    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + s.iter().map(|&v| (v - max).exp()).sum::<f64>().ln()
}

/// Softmax of a score row (weights sum to one).
pub fn softmax(s: &[f64]) -> Vec<f64> {
    let lse = log_sum_exp(s);
    s.iter().map(|&v| (v - lse).exp()).collect()
}

/// Index of the largest entry; the lowest index wins ties.
pub fn argmax(s: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in s.iter().enumerate() {
        if v > s[best] {
            best = i;
        }
    }
    best
}

/// `sum_mu w_mu v_mu` for a weight row over all memories.
pub fn weighted_sum(w: &[f64], values: &Matrix) -> Vec<f64> {
    let mut z = vec![0.0; values.cols];
    for (mu, &wm) in w.iter().enumerate() {
        if wm != 0.0 {
            for (zc, vc) in z.iter_mut().zip(values.row(mu)) {
                *zc += wm * vc;
            }
        }
    }
    z
}

/// The softmax of a score row restricted to `support` (eq. (3.9)): weights
/// over all M memories, exactly 0 outside the support, and `log sum exp`
/// over the support. It gathers the support scores in ascending index order
/// and reuses [`softmax`], so a full support reproduces the dense weights.
///
/// # Panics
/// On an empty support (a 0 / 0 softmax; the method's validation rules it out).
pub fn support_softmax(s: &[f64], support: &[usize]) -> (Vec<f64>, f64) {
    let mut mask = vec![false; s.len()];
    for &mu in support {
        mask[mu] = true;
    }
    let kept: Vec<usize> = (0..s.len()).filter(|&mu| mask[mu]).collect();
    assert!(!kept.is_empty(), "empty support set: validate the parameters first");
    let s_kept: Vec<f64> = kept.iter().map(|&mu| s[mu]).collect();
    let mut w = vec![0.0; s.len()];
    for (&mu, wk) in kept.iter().zip(softmax(&s_kept)) {
        w[mu] = wk;
    }
    (w, log_sum_exp(&s_kept))
}

/// One dense update for every query: `z_l = sum_mu softmax(s_l)_mu v_mu`.
/// `values` is `memories` for auto-association.
pub fn dense(queries: &Matrix, memories: &Matrix, values: &Matrix, beta: f64) -> DenseStep {
    let mut z = Matrix::zeros(queries.rows, values.cols);
    let mut log_sum_exp_out = Vec::with_capacity(queries.rows);
    let mut arg = Vec::with_capacity(queries.rows);
    for l in 0..queries.rows {
        let s = scores(queries.row(l), memories, beta);
        let w = softmax(&s);
        z.row_mut(l).copy_from_slice(&weighted_sum(&w, values));
        log_sum_exp_out.push(log_sum_exp(&s));
        arg.push(argmax(&s));
    }
    DenseStep { z, log_sum_exp: log_sum_exp_out, argmax: arg }
}

/// `E(x) = -lse(beta, Xi x) + 0.5 <x, x>`, where `lse(beta, .) = log sum exp(beta .) / beta`.
/// No constants are added (SEMANTICS.md).
pub fn energy(x: &[f64], memories: &Matrix, beta: f64) -> f64 {
    let s = scores(x, memories, beta);
    -log_sum_exp(&s) / beta + 0.5 * dot(x, x)
}

/// The dense update of one state, `T(x) = V^T softmax(beta Xi x)`.
pub fn update(x: &[f64], memories: &Matrix, values: &Matrix, beta: f64) -> Vec<f64> {
    weighted_sum(&softmax(&scores(x, memories, beta)), values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_the_golden_vector() {
        // SEMANTICS.md: softmax([-2, 0, 0.5]) = [0.0486, 0.3592, 0.5922] (4 digits).
        let w = softmax(&[-2.0, 0.0, 0.5]);
        for (got, want) in w.iter().zip([0.0486, 0.3592, 0.5922]) {
            assert!((got - want).abs() < 5e-5, "{w:?}");
        }
    }

    #[test]
    fn huge_scores_stay_finite() {
        let s = [1e4, 1e4 - 1.0, -1e4];
        let w = softmax(&s);
        assert!(w.iter().all(|v| v.is_finite()));
        assert!((log_sum_exp(&s) - (1e4 + (1.0 + (-1.0f64).exp()).ln())).abs() < 1e-9);
    }

    #[test]
    fn argmax_prefers_the_lower_index_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }
}
