//! Reference for `shaders/update.wgsl` (and the dynamics mode of
//! `shaders/dense_merge.wgsl`): the iterated dynamics of SEMANTICS.md
//! ("Energy and iterated dynamics"), `x^{t+1} = T(x^t)` per query, stopped
//! once an update moves no coordinate by more than `eps`, with the dense
//! energy `E(x)` of each final state.

use super::{dense, Matrix};

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
/// `update` maps one state to its next state (for any method:
/// [`super::dynamics`] picks the method's rule).
pub fn dynamics(
    queries: &Matrix,
    memories: &Matrix,
    beta: f64,
    max_steps: usize,
    eps: f64,
    update: impl Fn(&[f64]) -> Vec<f64>,
) -> Dynamics {
    let rows: Vec<usize> = (0..queries.rows).collect();
    dynamics_indexed(queries, &rows, memories, beta, max_steps, eps, |_, x| update(x))
}

/// [`dynamics`] with an update rule that depends on the query's index:
/// row `i` of `queries` is query `rows[i]`, and `update(rows[i], x)` is its
/// next state (random masks and windows depend on the index).
pub fn dynamics_indexed(
    queries: &Matrix,
    rows: &[usize],
    memories: &Matrix,
    beta: f64,
    max_steps: usize,
    eps: f64,
    update: impl Fn(usize, &[f64]) -> Vec<f64>,
) -> Dynamics {
    assert_eq!(rows.len(), queries.rows, "one global index per query row");
    let mut state = queries.clone();
    let mut steps = vec![0; queries.rows];
    let mut converged = vec![false; queries.rows];
    for (i, &l) in rows.iter().enumerate() {
        for _ in 0..max_steps {
            let next = update(l, state.row(i));
            let change = next.iter().zip(state.row(i)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            state.row_mut(i).copy_from_slice(&next);
            steps[i] += 1;
            if change <= eps {
                converged[i] = true;
                break;
            }
        }
    }
    let energy = (0..state.rows).map(|l| dense::energy(state.row(l), memories, beta)).collect();
    Dynamics { state, steps, converged, energy }
}

#[cfg(test)]
mod tests {
    use super::super::{dynamics as method_dynamics, topk, window};
    use super::*;
    use crate::cpu::testing::matrix;
    use crate::method::{default_window, Method};
    use crate::tolerance::Tolerance;

    #[test]
    fn a_stored_pattern_is_a_fixed_point_at_high_beta() {
        let m = Matrix { rows: 2, cols: 2, data: vec![1.0, 0.0, 0.0, 1.0] };
        let q = Matrix { rows: 1, cols: 2, data: vec![0.9, 0.2] };
        let d = dynamics(&q, &m, 50.0, 10, 1e-9, |x| dense::update(x, &m, &m, 50.0));
        assert!((d.state.data[0] - 1.0).abs() < 1e-9 && d.state.data[1].abs() < 1e-9);
        assert!(d.converged[0]);
    }

    #[test]
    fn sparse_dynamics_report_the_dense_energy() {
        let (q, xi) = (matrix(5, 6, 13), matrix(16, 6, 14));
        // K = M: the same trajectory as the dense dynamics.
        let full = method_dynamics(&Method::TopK { k: 16 }, &q, &xi, 4.0, 20, 1e-10).unwrap();
        let d = method_dynamics(&Method::Dense, &q, &xi, 4.0, 20, 1e-10).unwrap();
        Tolerance::new(1e-15, 1e-12).check_f64(&full.state.data, &d.state.data).unwrap();
        assert_eq!(full.steps, d.steps);
        // Window: the energy of the final state is the dense E(x).
        let win =
            method_dynamics(&Method::Window { width: Some(default_window(16)) }, &q, &xi, 4.0, 20, 1e-10).unwrap();
        let one_step = method_dynamics(&Method::Window { width: Some(4) }, &q, &xi, 4.0, 1, 0.0).unwrap();
        let want = window::window(&q, &xi, &xi, 4.0, 4);
        for l in 0..q.rows {
            assert_eq!(win.energy[l], dense::energy(win.state.row(l), &xi, 4.0));
            // One step from query l mixes only the memories of its window.
            let one = window::window(&q.select_rows(&[l]), &xi, &xi, 4.0, 4);
            // A one-row batch would centre the window at 0; the dynamics must not.
            if l > 0 {
                assert_ne!(one_step.state.row(l), one.z.row(0));
            }
            assert_eq!(one_step.state.row(l), want.z.row(l));
        }
        // The random mask is fixed per query across steps: one step of the
        // dynamics is one random-mask retrieval.
        let r = method_dynamics(&Method::Random { k: 5, seed: 3 }, &q, &xi, 4.0, 1, 0.0).unwrap();
        assert_eq!(r.state.data, topk::random(&q, &xi, &xi, 4.0, 5, 3).z.data);
    }
}
