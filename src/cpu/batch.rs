//! Reference for batched retrieval (`shaders/batch.wgsl`, the `batch`
//! driver): P independent problems, each its own queries against its own
//! memory set (sets may be shared), with a key-padding mask, an optional
//! zero memory, a per-problem beta and the dynamics of SEMANTICS.md, either
//! the engine's ("Energy and iterated dynamics": `x <- A(x) V`, per-query
//! stop) or hopfield-layers' ("hopfield-layers compatibility": the state
//! moves in key space with the keys as values, values read once at the end,
//! per-group stop on the Frobenius norm of the change of the association
//! matrix, maximised over the group).
//!
//! The association matrix `A(x)` of a problem is [`association`]: the
//! method's normaliser (softmax for dense, and every other method of the
//! engine, as its own reference computes it) of the scores `beta <x, xi>`
//! over the memories the mask keeps; the others get weight exactly 0.
//! Random masks and windows count memories among the kept ones only (the
//! `j`-th kept memory is memory `j` of the method), and query `l` is the
//! problem's `l`-th query of `L`: masked memories are absent, not present
//! with zero weight.

use super::dense::{argmax, log_sum_exp, scores, softmax, weighted_sum};
use super::entmax::{entmax15, sparsemax};
use super::topk::{random_support, top_k_support};
use super::{dot, feature, Matrix};
use crate::error::{Error, Result};
use crate::feature::poly::{choose_polynomial, horner, Polynomial};
use crate::feature::prf::linear_feature_map;
use crate::method::{default_feature_count, default_window, window_range, Method, MAX_DEGREE};

/// The `[L, S]` association matrix of states `q` (`[L, d]`) against keys
/// `k` (`[S, d]`) at inverse temperature `beta` under `method`, as the
/// method's own retrieval would weight the memories (SEMANTICS.md): the
/// scores `beta <q, k>` for the softmax-like methods and `P(beta <q, k>)`
/// for poly; linear has no beta; prf maps `sqrt(beta) q` and
/// `sqrt(beta) k`. Memory `mu` takes part only where `keep[mu]`, and the
/// others get weight exactly 0. A polynomial without its degree takes the
/// lowest Taylor degree that meets its `delta` for
/// `R = beta max |q| max |k|` (2-norms, kept keys).
///
/// # Errors
/// Nothing kept; a method with invalid parameters; `auto` (resolve it first).
pub fn association(method: &Method, q: &Matrix, k: &Matrix, beta: f64, keep: &[bool]) -> Result<Matrix> {
    method.validate()?;
    let kept: Vec<usize> = (0..k.rows).filter(|&mu| keep[mu]).collect();
    if kept.is_empty() {
        return Err(Error::invalid("mask", "every memory", "a query needs at least one unmasked memory"));
    }
    let keys = k.select_rows(&kept);
    let m = kept.len();
    let d = q.cols;
    let score_rows = || (0..q.rows).map(|l| scores(q.row(l), &keys, beta));
    let rows: Vec<Vec<f64>> = match *method {
        Method::Dense | Method::DenseNaive => score_rows().map(|s| softmax(&s)).collect(),
        Method::TopK { k } => support_rows(q, &keys, beta, |_, s| top_k_support(s, k)),
        Method::Random { k, seed } => support_rows(q, &keys, beta, |l, _| random_support(seed, l, m, k)),
        Method::Window { width } => {
            let w = width.unwrap_or_else(|| default_window(m));
            support_rows(q, &keys, beta, |l, _| window_range(l, q.rows, m, w).collect())
        }
        Method::Sparsemax => score_rows().map(|s| sparsemax(&s)).collect(),
        Method::Entmax15 => score_rows().map(|s| entmax15(&s)).collect(),
        Method::Poly { delta, degree } => {
            let norm = |x: &Matrix| (0..x.rows).map(|i| dot(x.row(i), x.row(i)).sqrt()).fold(0.0, f64::max);
            let range = beta * norm(q) * norm(&keys);
            let poly = match degree {
                Some(g) => Polynomial::new(g, range)?,
                None => choose_polynomial(range, delta, d, MAX_DEGREE)?.poly,
            };
            kernel_rows(q, &keys, |x, y| horner(&poly.coefs, beta * dot(x, y)))
        }
        Method::Linear => kernel_rows(q, &keys, |x, y| dot(&linear_feature_map(x), &linear_feature_map(y))),
        Method::Prf { features, seed, orthogonal } => {
            // W as the GPU receives it (rounded to f32), so that the check is tight.
            let w = feature::prf_projection(d, features.unwrap_or_else(|| default_feature_count(d)), seed, orthogonal)?;
            // The reference's own PRF retrieval, read out against the
            // identity: row l of `z` is then row l of the weights.
            let z = feature::prf(q, &keys, &identity(m), beta, &w);
            (0..q.rows).map(|l| z.row(l).to_vec()).collect()
        }
        Method::Auto { .. } => {
            return Err(Error::invalid("method", "auto", "the reference needs a concrete method: resolve it with plan"))
        }
    };
    let mut out = Matrix::zeros(q.rows, k.rows);
    for (l, row) in rows.iter().enumerate() {
        for (j, &mu) in kept.iter().enumerate() {
            out.row_mut(l)[mu] = row[j];
        }
    }
    Ok(out)
}

/// Softmax over each query's support set (`choose(l, scores)`), 0 elsewhere.
fn support_rows(q: &Matrix, keys: &Matrix, beta: f64, choose: impl Fn(usize, &[f64]) -> Vec<usize>) -> Vec<Vec<f64>> {
    (0..q.rows)
        .map(|l| {
            let s = scores(q.row(l), keys, beta);
            let idx = choose(l, &s);
            let w = softmax(&idx.iter().map(|&i| s[i]).collect::<Vec<_>>());
            let mut row = vec![0.0; keys.rows];
            idx.iter().zip(w).for_each(|(&i, wi)| row[i] = wi);
            row
        })
        .collect()
}

/// `k(q_l, k_mu) / sum_mu k(q_l, k_mu)`, pair by pair (SEMANTICS.md, "Kernel
/// (feature-map) retrieval").
fn kernel_rows(q: &Matrix, keys: &Matrix, kernel: impl Fn(&[f64], &[f64]) -> f64) -> Vec<Vec<f64>> {
    (0..q.rows)
        .map(|l| {
            let kv: Vec<f64> = (0..keys.rows).map(|mu| kernel(q.row(l), keys.row(mu))).collect();
            let total: f64 = kv.iter().sum();
            kv.iter().map(|v| v / total).collect()
        })
        .collect()
}

fn identity(m: usize) -> Matrix {
    let mut eye = Matrix::zeros(m, m);
    (0..m).for_each(|i| eye.row_mut(i)[i] = 1.0);
    eye
}

/// One memory set: keys, values, which keys are present, and whether a zero
/// key with a zero value is appended (hopfield-layers'
/// `add_zero_association`; it is never masked).
#[derive(Clone, Debug, PartialEq)]
pub struct Memories {
    /// `[M, d]`.
    pub keys: Matrix,
    /// `[M, dv]`.
    pub values: Matrix,
    /// `keep[mu]`: memory mu is present (None: all are).
    pub keep: Option<Vec<bool>>,
    /// Append a zero key and value (index M).
    pub zero: bool,
}

impl Memories {
    /// Keys, values and the keep flags with the zero memory appended if asked for.
    fn expanded(&self) -> (Matrix, Matrix, Vec<bool>) {
        let mut keys = self.keys.clone();
        let mut values = self.values.clone();
        let mut keep = self.keep.clone().unwrap_or_else(|| vec![true; keys.rows]);
        if self.zero {
            keys.data.extend(std::iter::repeat_n(0.0, keys.cols));
            keys.rows += 1;
            values.data.extend(std::iter::repeat_n(0.0, values.cols));
            values.rows += 1;
            keep.push(true);
        }
        (keys, values, keep)
    }
}

/// One problem: its queries against memory set `memories`, at `beta`, in
/// stop group `group`.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Index into the memory sets.
    pub memories: usize,
    /// `[L, d]`.
    pub queries: Matrix,
    /// Inverse temperature, applied to the scores.
    pub beta: f64,
    /// Index into the groups.
    pub group: usize,
}

/// A stop group: the problems that share a limit and a threshold (and, for
/// [`Stop::Association`], one stop decision: hopfield-layers' head).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Group {
    /// [`Space::Values`]: updates at most (>= 1; one is plain retrieval).
    /// [`Space::Keys`]: key-space updates at most (0: plain attention).
    pub max_updates: usize,
    /// The stop threshold (>= 0).
    pub eps: f64,
}

/// What the state moves towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// SEMANTICS.md's dynamics: `x <- A(x) V`, z = the final state (values
    /// of the pattern dimension, or one update).
    Values,
    /// hopfield-layers' dynamics: `x <- A(x) K` (the keys as values), then
    /// `z = A(x) V` once; `max_updates = n` means n updates, n + 1
    /// association matrices.
    Keys,
}

/// When a state stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Per query: once an update changes no coordinate of its state by more
    /// than eps (the engine's rule).
    PerQuery,
    /// Per group: once the Frobenius norm of the change of a problem's
    /// association matrix, maximised over the group's problems, is at most
    /// eps (hopfield-layers' rule, per head).
    Association,
}

/// The result for one problem.
#[derive(Clone, Debug, PartialEq)]
pub struct ProblemOut {
    /// `[L, dv]` (`[L, d]`, the final states, for [`Space::Values`]).
    pub z: Matrix,
    /// `[L, d]` final states.
    pub state: Matrix,
    /// Updates applied per query.
    pub steps: Vec<usize>,
    /// Per query: whether its stop rule (not the limit) ended its updates.
    pub converged: Vec<bool>,
    /// Per query: `log sum_mu exp(beta <x, xi_mu>)` of the final state over
    /// the kept memories (and the zero memory), in score units.
    pub log_sum_exp: Vec<f64>,
    /// Per query: the kept memory with the largest score (lowest index on
    /// ties; the zero memory is index M).
    pub argmax: Vec<usize>,
    /// Per query: the dense energy `E(x) = -lse / beta + 0.5 <x, x>` of the final state.
    pub energy: Vec<f64>,
}

/// The result of [`batch`].
#[derive(Clone, Debug, PartialEq)]
pub struct BatchOut {
    /// Per problem.
    pub problems: Vec<ProblemOut>,
    /// Per group: updates applied (the most over its queries), and whether
    /// every query (or, for [`Stop::Association`], the group) converged.
    pub groups: Vec<(usize, bool)>,
}

/// Run every problem: the association of its state, updated as
/// `space` and `stop` say, within its group's limit.
///
/// # Errors
/// A problem naming a missing set or group, mismatched dimensions, a set
/// with nothing kept, beta not finite and > 0, a method the reference cannot
/// run, or iterated [`Space::Values`] dynamics with values of another dimension.
pub fn batch(
    method: &Method,
    memories: &[Memories],
    problems: &[Problem],
    groups: &[Group],
    space: Space,
    stop: Stop,
) -> Result<BatchOut> {
    let mut states: Vec<Matrix> = Vec::with_capacity(problems.len());
    let mut sets = Vec::with_capacity(problems.len());
    for (i, p) in problems.iter().enumerate() {
        let set = memories.get(p.memories).ok_or_else(|| Error::invalid("memories", i, "no such memory set"))?;
        let g = groups.get(p.group).ok_or_else(|| Error::invalid("group", i, "no such group"))?;
        if !(p.beta.is_finite() && p.beta > 0.0) {
            return Err(Error::invalid("beta", p.beta, "must be finite and > 0"));
        }
        if p.queries.cols != set.keys.cols {
            return Err(Error::ShapeMismatch {
                what: format!("problem {i}: query dimension vs its keys"),
                expected: set.keys.cols,
                got: p.queries.cols,
            });
        }
        if space == Space::Values && g.max_updates == 0 {
            return Err(Error::invalid("max_updates", 0, "the engine's dynamics need at least one update"));
        }
        if !(g.eps.is_finite() && g.eps >= 0.0) {
            return Err(Error::invalid("eps", g.eps, "must be finite and >= 0"));
        }
        let iterates = space == Space::Values && g.max_updates > 1;
        if iterates && set.values.cols != set.keys.cols {
            return Err(Error::ShapeMismatch {
                what: format!("problem {i}: iterated dynamics need values of the pattern dimension"),
                expected: set.keys.cols,
                got: set.values.cols,
            });
        }
        states.push(p.queries.clone());
        sets.push(set.expanded());
    }
    let weights = |i: usize, x: &Matrix| association(method, x, &sets[i].0, problems[i].beta, &sets[i].2);
    let mut xi: Vec<Matrix> = Vec::with_capacity(problems.len());
    let mut steps: Vec<Vec<usize>> = problems.iter().map(|p| vec![0; p.queries.rows]).collect();
    let mut converged: Vec<Vec<bool>> = problems.iter().map(|p| vec![false; p.queries.rows]).collect();
    let hetero = |i: usize| space == Space::Values && sets[i].1.cols != sets[i].0.cols;
    for (i, x) in states.iter().enumerate() {
        xi.push(weights(i, x)?);
    }
    let mut group_out: Vec<(usize, bool)> = vec![(0, false); groups.len()];
    match (space, stop) {
        (_, Stop::PerQuery) => {
            for i in 0..problems.len() {
                if hetero(i) {
                    continue; // one update, read out below
                }
                let g = groups[problems[i].group];
                let moves = if space == Space::Keys { &sets[i].0 } else { &sets[i].1 };
                let mut active = vec![true; problems[i].queries.rows];
                for _ in 0..g.max_updates {
                    if !active.iter().any(|&a| a) {
                        break;
                    }
                    let next = map(&xi[i], moves);
                    for (l, act) in active.iter_mut().enumerate().filter(|(_, a)| **a) {
                        let change =
                            next.row(l).iter().zip(states[i].row(l)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                        states[i].row_mut(l).copy_from_slice(next.row(l));
                        steps[i][l] += 1;
                        if change <= g.eps {
                            converged[i][l] = true;
                            *act = false;
                        }
                    }
                    // Stopped queries keep their state, so their rows come out as before.
                    xi[i] = weights(i, &states[i])?;
                }
            }
            for (i, p) in problems.iter().enumerate() {
                let go = &mut group_out[p.group];
                go.0 = go.0.max(steps[i].iter().copied().max().unwrap_or(0));
            }
            for (gi, go) in group_out.iter_mut().enumerate() {
                let members: Vec<usize> = (0..problems.len()).filter(|&i| problems[i].group == gi).collect();
                go.1 = !members.is_empty() && members.iter().all(|&i| converged[i].iter().all(|&c| c));
            }
        }
        (_, Stop::Association) => {
            for (gi, g) in groups.iter().enumerate() {
                let members: Vec<usize> = (0..problems.len()).filter(|&i| problems[i].group == gi).collect();
                let mut updates = 0;
                let mut done = false;
                while updates < g.max_updates && !members.iter().any(|&i| hetero(i)) {
                    let mut change: f64 = 0.0;
                    for &i in &members {
                        let moves = if space == Space::Keys { &sets[i].0 } else { &sets[i].1 };
                        states[i] = map(&xi[i], moves);
                        let next = weights(i, &states[i])?;
                        let diff: f64 = next.data.iter().zip(&xi[i].data).map(|(a, b)| (a - b) * (a - b)).sum();
                        change = change.max(diff.sqrt());
                        xi[i] = next;
                    }
                    updates += 1;
                    if change <= g.eps {
                        done = true;
                        break;
                    }
                }
                for &i in &members {
                    steps[i].iter_mut().for_each(|s| *s = updates);
                    converged[i].iter_mut().for_each(|c| *c = done);
                }
                group_out[gi] = (updates, done);
            }
        }
    }
    let mut out = Vec::with_capacity(problems.len());
    for (i, p) in problems.iter().enumerate() {
        let (keys, values, keep) = &sets[i];
        let state = &states[i];
        let z = match space {
            Space::Keys => map(&xi[i], values),
            Space::Values if hetero(i) => {
                steps[i].iter_mut().for_each(|s| *s = 1);
                map(&xi[i], values)
            }
            Space::Values => state.clone(),
        };
        let mut lse = Vec::with_capacity(state.rows);
        let mut arg = Vec::with_capacity(state.rows);
        let mut energy = Vec::with_capacity(state.rows);
        for l in 0..state.rows {
            let s = scores(state.row(l), keys, p.beta);
            let kept: Vec<usize> = (0..keys.rows).filter(|&mu| keep[mu]).collect();
            let ks: Vec<f64> = kept.iter().map(|&mu| s[mu]).collect();
            let v = log_sum_exp(&ks);
            lse.push(v);
            arg.push(kept[argmax(&ks)]);
            energy.push(-v / p.beta + 0.5 * dot(state.row(l), state.row(l)));
        }
        out.push(ProblemOut {
            z,
            state: state.clone(),
            steps: steps[i].clone(),
            converged: converged[i].clone(),
            log_sum_exp: lse,
            argmax: arg,
            energy,
        });
    }
    if space == Space::Values {
        for (i, p) in problems.iter().enumerate() {
            if hetero(i) {
                let go = &mut group_out[p.group];
                go.0 = go.0.max(1);
            }
        }
    }
    Ok(BatchOut { problems: out, groups: group_out })
}

/// `w u`: every row of weights `w` (`[L, S]`) against the rows of `u` (`[S, c]`).
fn map(w: &Matrix, u: &Matrix) -> Matrix {
    super::linalg::map_rows(w, u.cols, |row| weighted_sum(row, u))
}

#[cfg(test)]
mod tests {
    use super::super::testing::matrix;
    use super::*;

    fn m(rows: usize, cols: usize, data: &[f64]) -> Matrix {
        Matrix { rows, cols, data: data.to_vec() }
    }

    #[test]
    fn masked_memories_get_exactly_zero_for_every_method() {
        let q = m(2, 2, &[0.3, -0.2, 1.0, 0.5]);
        let k = m(4, 2, &[1.0, 0.0, 0.0, 1.0, -1.0, 0.5, 0.2, 0.2]);
        let keep = [true, false, true, true];
        for a in [
            Method::Dense,
            Method::TopK { k: 2 },
            Method::Random { k: 2, seed: 1 },
            Method::Window { width: None },
            Method::Sparsemax,
            Method::Entmax15,
            Method::Poly { delta: 1e-3, degree: None },
            Method::Linear,
            Method::Prf { features: Some(8), seed: 2, orthogonal: false },
        ] {
            let w = association(&a, &q, &k, 1.5, &keep).unwrap();
            for l in 0..2 {
                assert_eq!(w.row(l)[1], 0.0, "{a:?}");
                assert!((w.row(l).iter().sum::<f64>() - 1.0).abs() < 1e-12, "{a:?}: {:?}", w.row(l));
            }
        }
        assert!(association(&Method::Dense, &q, &k, 1.0, &[false; 4]).is_err());
    }

    #[test]
    fn the_engine_dynamics_of_one_problem_are_the_single_problem_reference() {
        let (q, xi) = (matrix(4, 5, 3), matrix(9, 5, 4));
        for method in [Method::Dense, Method::TopK { k: 3 }, Method::Window { width: Some(3) }] {
            let want = super::super::dynamics(&method, &q, &xi, 3.0, 6, 1e-9).unwrap();
            let set = Memories { keys: xi.clone(), values: xi.clone(), keep: None, zero: false };
            let problem = Problem { memories: 0, queries: q.clone(), beta: 3.0, group: 0 };
            let group = Group { max_updates: 6, eps: 1e-9 };
            let got = batch(&method, &[set], &[problem], &[group], Space::Values, Stop::PerQuery).unwrap();
            let p = &got.problems[0];
            // beta multiplies the query here and the score there: a rounding apart.
            crate::tolerance::Tolerance::new(1e-13, 1e-12).check_f64(&p.z.data, &want.state.data).unwrap();
            assert_eq!(p.steps, want.steps, "{method:?}");
            assert_eq!(p.converged, want.converged, "{method:?}");
            for (a, b) in p.energy.iter().zip(&want.energy) {
                assert!((a - b).abs() < 1e-12, "{method:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn masked_memories_are_absent_and_a_group_stops_together() {
        let (q, k, v) = (matrix(3, 4, 5), matrix(6, 4, 6), matrix(6, 2, 7));
        let keep = vec![true, false, true, true, false, true];
        let kept: Vec<usize> = (0..6).filter(|&i| keep[i]).collect();
        let masked = Memories { keys: k.clone(), values: v.clone(), keep: Some(keep), zero: false };
        let dropped = Memories { keys: k.select_rows(&kept), values: v.select_rows(&kept), keep: None, zero: false };
        let group = Group { max_updates: 3, eps: 1e-12 };
        for method in [Method::Random { k: 2, seed: 9 }, Method::Window { width: None }, Method::Entmax15] {
            let run = |set: Memories| {
                let problem = Problem { memories: 0, queries: q.clone(), beta: 2.0, group: 0 };
                batch(&method, &[set], &[problem], &[group], Space::Keys, Stop::Association).unwrap()
            };
            let (a, b) = (run(masked.clone()), run(dropped.clone()));
            // A masked memory is absent: the same output as without it.
            crate::tolerance::Tolerance::new(1e-14, 1e-13)
                .check_f64(&a.problems[0].z.data, &b.problems[0].z.data)
                .unwrap_or_else(|e| panic!("{method:?}: {e}"));
        }
        // Two problems in one group stop together: the still-moving one keeps
        // the other updating.
        let still = Problem { memories: 0, queries: matrix(2, 4, 8), beta: 1e-3, group: 0 };
        let moving = Problem { memories: 0, queries: matrix(2, 4, 9), beta: 4.0, group: 0 };
        let set = Memories { keys: k.clone(), values: v.clone(), keep: None, zero: true };
        let eps = Group { max_updates: 50, eps: 1e-9 };
        let alone = batch(
            &Method::Dense,
            std::slice::from_ref(&set),
            std::slice::from_ref(&still),
            &[eps],
            Space::Keys,
            Stop::Association,
        )
        .unwrap();
        let both = batch(&Method::Dense, &[set], &[still, moving], &[eps], Space::Keys, Stop::Association).unwrap();
        assert!(both.groups[0].0 > alone.groups[0].0, "{:?} vs {:?}", both.groups, alone.groups);
        assert_eq!(both.problems[0].steps, both.problems[1].steps);
    }
}
