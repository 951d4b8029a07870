//! Reference for `shaders/window.wgsl`: sliding-window retrieval of
//! SEMANTICS.md ("Sparse-structured retrieval"): the softmax of query l runs
//! over the memories of its window ([`window_range`], centred at
//! `floor(l M / L)`) only, every other memory has weight exactly 0.

use super::{restricted, Matrix, SparseStep};
use crate::method::window_range;

/// Window retrieval of width `width` for every query: query `l` (the
/// `l`-th of the L rows) keeps [`window_range`]`(l, L, M, width)`.
///
/// # Panics
/// On `width = 0` (an empty softmax; [`crate::Method::validate`] rejects it).
pub fn window(queries: &Matrix, memories: &Matrix, values: &Matrix, beta: f64, width: usize) -> SparseStep {
    let l_total = queries.rows;
    restricted(queries, memories, values, beta, |l, s| window_range(l, l_total, s.len(), width).collect())
}

#[cfg(test)]
mod tests {
    use super::super::dense::{log_sum_exp, scores, softmax};
    use super::*;
    use crate::cpu::testing::{identity, matrix};

    #[test]
    fn window_retrieval_keeps_only_the_window() {
        let (q, xi) = (matrix(10, 3, 11), matrix(10, 3, 12));
        let step = window(&q, &xi, &identity(10), 2.0, 4);
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
}
