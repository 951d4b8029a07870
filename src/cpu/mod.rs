//! The CPU reference: plain f64 loops written from the formulas in
//! `SEMANTICS.md`, one file per kernel family with the same name as the
//! shaders it checks (`shaders/topk*.wgsl` <-> `cpu/topk.rs`). It is public
//! so that users and tests can check the GPU against it; the GPU path never
//! calls it.
//!
//! Nothing here is a copy of a GPU algorithm: no tiling, no online softmax, no
//! chunk merging. Each function materialises the full score row, takes its
//! maximum, exponentiates and sums, exactly as the math is written. It is slow
//! on purpose and exists to be trusted.
//!
//! [`retrieve`] and [`dynamics`] map every [`Method`] to its reference, once;
//! the family modules hold the formulas.

pub mod batch;
pub mod dense;
pub mod entmax;
pub mod feature;
pub mod layer;
pub mod linalg;
pub mod network;
pub mod separation;
pub mod topk;
pub mod update;
pub mod window;

use crate::error::{Error, Result};
use crate::method::{default_feature_count, default_window, window_range, Method};

/// A dense row-major matrix of f64, the reference's only data type.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<f64>,
}

impl Matrix {
    /// A matrix from row-major f32 data (the library's input format).
    ///
    /// # Panics
    /// If `data.len() != rows * cols`: the reference is only called on
    /// already-validated inputs.
    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Self {
        assert_eq!(data.len(), rows * cols, "reference matrix shape");
        Matrix { rows, cols, data: data.iter().map(|&v| f64::from(v)).collect() }
    }

    /// A zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix { rows, cols, data: vec![0.0; rows * cols] }
    }

    /// Row `i` as a slice.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Row `i` as a mutable slice.
    pub fn row_mut(&mut self, i: usize) -> &mut [f64] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// A copy that keeps only the listed rows, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Matrix {
        let mut out = Matrix::zeros(rows.len(), self.cols);
        for (k, &r) in rows.iter().enumerate() {
            out.row_mut(k).copy_from_slice(self.row(r));
        }
        out
    }

    /// The values rounded to f32, for comparison with GPU output.
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|&v| v as f32).collect()
    }
}

/// `<a, b>` in f64.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One update of every query by some method.
#[derive(Clone, Debug)]
pub struct Step {
    /// `[L, dv]` retrieved patterns.
    pub z: Matrix,
    /// Per query, the memories with non-zero weight, in the order the
    /// method's family documents (top-K: descending score; the others:
    /// ascending index); `None` for methods without a support.
    pub support: Option<Vec<Vec<usize>>>,
}

/// One support-restricted update of every query (top-K, random masks,
/// windows; eq. (3.9)).
#[derive(Clone, Debug)]
pub struct SparseStep {
    /// `[L, dv]` retrieved patterns.
    pub z: Matrix,
    /// Per query, the support set `S_l`, in the order its family documents.
    pub support: Vec<Vec<usize>>,
    /// Per query, `log sum_{mu in S_l} exp(s_mu)` with `s_mu = beta <x, xi_mu>`
    /// (score units; the dense value is [`dense::DenseStep::log_sum_exp`]).
    pub log_sum_exp: Vec<f64>,
}

/// The support-restricted update of one state: the support `choose` picks
/// from the score row, the softmax over it (weight exactly 0 elsewhere), the
/// weighted sum of values: `(z, support, log_sum_exp)`.
fn support_step(
    x: &[f64],
    memories: &Matrix,
    values: &Matrix,
    beta: f64,
    choose: impl FnOnce(&[f64]) -> Vec<usize>,
) -> (Vec<f64>, Vec<usize>, f64) {
    let s = dense::scores(x, memories, beta);
    let support = choose(&s);
    let (w, lse) = dense::support_softmax(&s, &support);
    (dense::weighted_sum(&w, values), support, lse)
}

/// [`support_step`] for every query; `choose(l, s)` picks query `l`'s support.
fn restricted(
    queries: &Matrix,
    memories: &Matrix,
    values: &Matrix,
    beta: f64,
    choose: impl Fn(usize, &[f64]) -> Vec<usize>,
) -> SparseStep {
    let mut z = Matrix::zeros(queries.rows, values.cols);
    let mut support = Vec::with_capacity(queries.rows);
    let mut log_sum_exp = Vec::with_capacity(queries.rows);
    for l in 0..queries.rows {
        let (zl, sl, lse) = support_step(queries.row(l), memories, values, beta, |s| choose(l, s));
        z.row_mut(l).copy_from_slice(&zl);
        support.push(sl);
        log_sum_exp.push(lse);
    }
    SparseStep { z, support, log_sum_exp }
}

/// The update rule of one method: the new state of query `l` (its index
/// among all queries, which random masks and windows depend on) and its
/// support, from its current state.
type Rule<'a> = Box<dyn Fn(usize, &[f64]) -> (Vec<f64>, Option<Vec<usize>>) + 'a>;

/// The reference update rule of `method` for `l_total` queries against
/// `memories` with `values`. A method the reference cannot run as given (an
/// `auto` or a polynomial without its degree: resolve them with
/// [`crate::plan`] / [`crate::poly_choice`] first) is an error.
fn rule<'a>(method: &Method, memories: &'a Matrix, values: &'a Matrix, beta: f64, l_total: usize) -> Result<Rule<'a>> {
    let m = memories.rows;
    let one_row = |x: &[f64]| Matrix { rows: 1, cols: x.len(), data: x.to_vec() };
    Ok(match *method {
        Method::Dense | Method::DenseNaive => Box::new(move |_, x| (dense::update(x, memories, values, beta), None)),
        Method::TopK { k } => Box::new(move |_, x| {
            let (z, support, _) = support_step(x, memories, values, beta, |s| topk::top_k_support(s, k));
            (z, Some(support))
        }),
        Method::Random { k, seed } => Box::new(move |l, x| {
            let (z, support, _) = support_step(x, memories, values, beta, |_| topk::random_support(seed, l, m, k));
            (z, Some(support))
        }),
        Method::Window { width } => {
            let w = width.unwrap_or_else(|| default_window(m));
            Box::new(move |l, x| {
                let choose = |_: &[f64]| window_range(l, l_total, m, w).collect();
                let (z, support, _) = support_step(x, memories, values, beta, choose);
                (z, Some(support))
            })
        }
        Method::Sparsemax => Box::new(move |_, x| {
            let p = entmax::sparsemax(&dense::scores(x, memories, beta));
            (dense::weighted_sum(&p, values), Some(entmax::support_of(&p)))
        }),
        Method::Entmax15 => Box::new(move |_, x| {
            let p = entmax::entmax15(&dense::scores(x, memories, beta));
            (dense::weighted_sum(&p, values), Some(entmax::support_of(&p)))
        }),
        Method::Poly { degree: Some(g), .. } => {
            let coefs = feature::taylor(g);
            Box::new(move |_, x| (feature::poly(&one_row(x), memories, values, beta, &coefs).data, None))
        }
        Method::Poly { degree: None, .. } => {
            return Err(Error::invalid("degree", "none", "the reference needs the degree: resolve it with poly_choice"))
        }
        Method::Linear => Box::new(move |_, x| (feature::linear(&one_row(x), memories, values).data, None)),
        Method::Prf { features, seed, orthogonal } => {
            let w = feature::prf_projection(
                memories.cols,
                features.unwrap_or(default_feature_count(memories.cols)),
                seed,
                orthogonal,
            )?;
            Box::new(move |_, x| (feature::prf(&one_row(x), memories, values, beta, &w).data, None))
        }
        Method::Auto { .. } => {
            return Err(Error::invalid("method", "auto", "the reference needs a concrete method: resolve it with plan"))
        }
    })
}

/// One update of every query of `queries` by `method` (query `l` is the
/// `l`-th of them): the reference of one GPU retrieval step.
pub fn retrieve(method: &Method, queries: &Matrix, memories: &Matrix, values: &Matrix, beta: f64) -> Result<Step> {
    method.validate()?;
    let rule = rule(method, memories, values, beta, queries.rows)?;
    let mut z = Matrix::zeros(queries.rows, values.cols);
    let mut support: Option<Vec<Vec<usize>>> = None;
    for l in 0..queries.rows {
        let (zl, sl) = rule(l, queries.row(l));
        z.row_mut(l).copy_from_slice(&zl);
        if let Some(sl) = sl {
            support.get_or_insert_with(|| Vec::with_capacity(queries.rows)).push(sl);
        }
    }
    Ok(Step { z, support })
}

/// The iterated dynamics of `method` (auto-association) for every query of
/// `queries`, as [`update::dynamics`] runs them; the energy is the dense `E(x)`.
pub fn dynamics(
    method: &Method,
    queries: &Matrix,
    memories: &Matrix,
    beta: f64,
    max_steps: usize,
    eps: f64,
) -> Result<update::Dynamics> {
    let rows: Vec<usize> = (0..queries.rows).collect();
    dynamics_rows(method, queries, &rows, queries.rows, memories, beta, max_steps, eps)
}

/// [`dynamics`] for a subset of the queries: row `i` of `queries` is query
/// `rows[i]` of `l_total` (random masks and windows depend on that index).
#[expect(clippy::too_many_arguments, reason = "the problem, the subset and the dynamics' two stopping parameters")]
pub fn dynamics_rows(
    method: &Method,
    queries: &Matrix,
    rows: &[usize],
    l_total: usize,
    memories: &Matrix,
    beta: f64,
    max_steps: usize,
    eps: f64,
) -> Result<update::Dynamics> {
    method.validate()?;
    let rule = rule(method, memories, memories, beta, l_total)?;
    Ok(update::dynamics_indexed(queries, rows, memories, beta, max_steps, eps, |l, x| rule(l, x).0))
}

/// Test data for the reference's own unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Matrix;

    /// A deterministic pseudo-random matrix in [-1, 1) (an LCG, so the test
    /// data depends neither on the hash under test nor on the `rand` crate's
    /// version).
    pub(crate) fn matrix(rows: usize, cols: usize, mut state: u64) -> Matrix {
        let data = (0..rows * cols)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect();
        Matrix { rows, cols, data }
    }

    /// The n x n identity: as values, z is the weight row itself.
    pub(crate) fn identity(n: usize) -> Matrix {
        let mut m = Matrix::zeros(n, n);
        for i in 0..n {
            m.row_mut(i)[i] = 1.0;
        }
        m
    }
}
