//! Reference for `shaders/separation.wgsl`: what one sweep over every pair
//! (row, memory) finds for each row, the raw material of the theory
//! quantities (SEMANTICS.md, "Theory quantities"; computed in
//! [`crate::theory`]).
//!
//! For a row `a` (a memory, or a query) against memories `xi_nu`:
//! - the nearest memory `argmin_nu |a - xi_nu|^2` (for R, the ball S_mu and a
//!   query's pattern);
//! - the two memories with the largest `<a, xi_nu>` (Delta_mu, and the
//!   `max_{nu != mu} <xi_nu, x>` of a query's Lemma A.4 exponent);
//! - how many memories equal `a` exactly (duplicates make R = 0).
//!
//! With `exclude_self`, row i is memory i and skips itself (nu != mu).
//! Ties go to the lower index everywhere. Plain f64 loops, O(rows M d).

use super::{dot, Matrix};
pub use crate::theory::Neighbours;

/// The sweep for the memories listed in `which` against the others (what
/// [`neighbours`] with `exclude_self` gives for those rows), for checking a
/// sample of a large bank.
pub fn neighbours_of(memories: &Matrix, which: &[usize]) -> Vec<Neighbours> {
    which.iter().map(|&mu| sweep_row(memories.row(mu), memories, Some(mu))).collect()
}

/// The sweep for every row of `rows` against `memories`.
///
/// # Panics
/// If `exclude_self` and `rows` is not `memories` in shape (rows != M).
pub fn neighbours(rows: &Matrix, memories: &Matrix, exclude_self: bool) -> Vec<Neighbours> {
    assert!(!exclude_self || rows.rows == memories.rows, "exclude_self needs rows == memories");
    (0..rows.rows).map(|i| sweep_row(rows.row(i), memories, exclude_self.then_some(i))).collect()
}

/// One row `a` against every memory but `skip`.
fn sweep_row(a: &[f64], memories: &Matrix, skip: Option<usize>) -> Neighbours {
    let mut out = Neighbours { nearest: None, best: None, second: None, duplicates: 0 };
    let (mut near_d2, mut best_dot, mut second_dot) = (f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for nu in (0..memories.rows).filter(|&nu| Some(nu) != skip) {
        let b = memories.row(nu);
        let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        if a == b {
            out.duplicates += 1;
        }
        if out.nearest.is_none() || d2 < near_d2 {
            near_d2 = d2;
            out.nearest = Some(nu);
        }
        let s = dot(a, b);
        if out.best.is_none() || s > best_dot {
            second_dot = best_dot;
            out.second = out.best;
            best_dot = s;
            out.best = Some(nu);
        } else if out.second.is_none() || s > second_dot {
            second_dot = s;
            out.second = Some(nu);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_neighbours_duplicates_and_ties_by_hand() {
        // xi_0 = (1, 0), xi_1 = (0, 1), xi_2 = (1, 0) (a duplicate of 0), xi_3 = (2, 0).
        let m = Matrix { rows: 4, cols: 2, data: vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 2.0, 0.0] };
        let nb = neighbours(&m, &m, true);
        // Row 0: nearest is its duplicate 2 (distance 0); dots: 0, 1, 2 -> best 3, second 2.
        assert_eq!(nb[0], Neighbours { nearest: Some(2), best: Some(3), second: Some(2), duplicates: 1 });
        // Row 1: distances 2, 2, 5 -> nearest 0 (lower index); dots 0, 0, 0 -> best 0, second 2.
        assert_eq!(nb[1], Neighbours { nearest: Some(0), best: Some(0), second: Some(2), duplicates: 0 });
        // Row 3: distances 1, 5, 1 -> nearest 0; dots 2, 0, 2 -> best 0, second 2.
        assert_eq!(nb[3], Neighbours { nearest: Some(0), best: Some(0), second: Some(2), duplicates: 0 });
        // One memory: nothing qualifies.
        let one = Matrix { rows: 1, cols: 2, data: vec![1.0, 2.0] };
        assert_eq!(
            neighbours(&one, &one, true)[0],
            Neighbours { nearest: None, best: None, second: None, duplicates: 0 }
        );
        // Queries against memories: no self-exclusion, an equal query counts as a duplicate.
        let q = Matrix { rows: 1, cols: 2, data: vec![1.0, 0.0] };
        assert_eq!(
            neighbours(&q, &m, false)[0],
            Neighbours { nearest: Some(0), best: Some(3), second: Some(0), duplicates: 2 }
        );
    }
}
