//! Reference for `shaders/dense.wgsl` and `shaders/dense_merge.wgsl`: dense
//! retrieval `z = softmax(beta Xi x) V`, its log-sum-exp, the most similar
//! memory, the energy `E(x) = -lse(beta, Xi x) + 0.5 <x, x>` and the iterated
//! dynamics of SEMANTICS.md ("Dense retrieval", "Energy and iterated dynamics").

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

/// The outcome of iterating the update rule.
#[derive(Clone, Debug)]
pub struct Dynamics {
    /// `[L, d]` final states.
    pub state: Matrix,
    /// Updates applied to each query.
    pub steps: Vec<usize>,
    /// Whether the query's last update moved it by at most `eps` (max-norm).
    pub converged: Vec<bool>,
    /// Energy of each final state.
    pub energy: Vec<f64>,
}

/// Iterate `x <- T(x)` per query, at most `max_steps` times, stopping a query
/// once an update changes no coordinate by more than `eps`.
///
/// `update` maps one state to its next state; the dense rule is
/// [`dense_update`], and other methods pass their own.
pub fn dynamics(
    queries: &Matrix,
    memories: &Matrix,
    beta: f64,
    max_steps: usize,
    eps: f64,
    update: impl Fn(&[f64]) -> Vec<f64>,
) -> Dynamics {
    let mut state = queries.clone();
    let mut steps = vec![0; queries.rows];
    let mut converged = vec![false; queries.rows];
    for l in 0..queries.rows {
        for _ in 0..max_steps {
            let next = update(state.row(l));
            let change = next.iter().zip(state.row(l)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            state.row_mut(l).copy_from_slice(&next);
            steps[l] += 1;
            if change <= eps {
                converged[l] = true;
                break;
            }
        }
    }
    let energy = (0..state.rows).map(|l| energy(state.row(l), memories, beta)).collect();
    Dynamics { state, steps, converged, energy }
}

/// The dense update of one state: `T(x) = Xi^T softmax(beta Xi x)`.
pub fn dense_update<'a>(memories: &'a Matrix, beta: f64) -> impl Fn(&[f64]) -> Vec<f64> + 'a {
    move |x| weighted_sum(&softmax(&scores(x, memories, beta)), memories)
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

    #[test]
    fn a_stored_pattern_is_a_fixed_point_at_high_beta() {
        let m = Matrix { rows: 2, cols: 2, data: vec![1.0, 0.0, 0.0, 1.0] };
        let d =
            dynamics(&Matrix { rows: 1, cols: 2, data: vec![0.9, 0.2] }, &m, 50.0, 10, 1e-9, dense_update(&m, 50.0));
        assert!((d.state.data[0] - 1.0).abs() < 1e-9 && d.state.data[1].abs() < 1e-9);
        assert!(d.converged[0]);
    }
}
