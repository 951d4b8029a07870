//! What the error bounds and the overflow checks need to know about the
//! data: the magnitudes of a set of rows ([`Magnitudes`]) and of a whole
//! problem ([`ProblemStats`]: queries, keys, values, beta). One type serves
//! the planner, the polynomial's range, the bank and the score-overflow
//! check, so every bound is computed from the same numbers. Device-free.

use crate::error::{Error, Result};

/// Largest entry and largest row norm of a set of row-major rows, in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Magnitudes {
    /// `max |x_ij|`: the max-norm bound B of the papers.
    pub max_abs: f64,
    /// `max_i |x_i|_2`, summed in f64.
    pub max_norm: f64,
}

impl Magnitudes {
    /// The magnitudes of row-major `data` with `cols` columns (`cols >= 1`;
    /// zero for empty data).
    pub fn of(data: &[f32], cols: usize) -> Self {
        let mut max_abs = 0.0f64;
        let mut max_sq = 0.0f64;
        for row in data.chunks_exact(cols.max(1)) {
            let mut sq = 0.0f64;
            for &v in row {
                let v = f64::from(v);
                max_abs = max_abs.max(v.abs());
                sq += v * v;
            }
            max_sq = max_sq.max(sq);
        }
        Magnitudes { max_abs, max_norm: max_sq.sqrt() }
    }
}

/// Reject empty, mis-sized or non-finite row-major data (`what` names it:
/// "memories", "queries", "values").
pub(crate) fn validate_matrix(what: &'static str, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::Empty { what });
    }
    let want = rows.checked_mul(cols).ok_or_else(|| Error::ShapeMismatch {
        what: format!("{what}: {rows} x {cols} overflows usize"),
        expected: usize::MAX,
        got: data.len(),
    })?;
    if data.len() != want {
        return Err(Error::ShapeMismatch {
            what: format!("{what}: data length vs rows x cols ({rows} x {cols})"),
            expected: want,
            got: data.len(),
        });
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what, row: i / cols, col: i % cols, value: data[i] });
    }
    Ok(())
}

/// What the planner and the polynomial choice need to know about a problem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProblemStats {
    /// Memories M.
    pub m: usize,
    /// Queries L.
    pub l: usize,
    /// Pattern dimension d.
    pub d: usize,
    /// Value dimension dv.
    pub dv: usize,
    /// Inverse temperature.
    pub beta: f64,
    /// Dynamics steps (the planner's guarantee is for one).
    pub steps: u32,
    /// `B = max(|X|_max, |Xi|_max)`.
    pub b: f64,
    /// `|V|_max` (`|Xi|_max` without separate values).
    pub b_values: f64,
    /// `max_l |x_l|_2`.
    pub query_norm: f64,
    /// `max_mu |xi_mu|_2`.
    pub key_norm: f64,
    /// `max_mu |v_mu|_2`.
    pub value_norm: f64,
}

impl ProblemStats {
    /// Statistics of row-major queries `[L, d]`, memories `[M, d]` and
    /// optional values `([M, dv], dv)`, checked (non-empty, whole rows,
    /// finite, `beta` finite and > 0).
    pub fn new(
        queries: &[f32],
        memories: &[f32],
        values: Option<(&[f32], usize)>,
        d: usize,
        beta: f64,
        steps: u32,
    ) -> Result<Self> {
        if !(beta.is_finite() && beta > 0.0) {
            return Err(Error::invalid("beta", beta, "must be finite and > 0"));
        }
        let rows = |what: &'static str, data: &[f32], cols: usize| -> Result<usize> {
            if cols == 0 || data.is_empty() {
                return Err(Error::Empty { what });
            }
            if !data.len().is_multiple_of(cols) {
                return Err(Error::ShapeMismatch {
                    what: format!("{what}: length is not a multiple of the row length {cols}"),
                    expected: data.len().next_multiple_of(cols),
                    got: data.len(),
                });
            }
            validate_matrix(what, data, data.len() / cols, cols)?;
            Ok(data.len() / cols)
        };
        let l = rows("queries", queries, d)?;
        let m = rows("memories", memories, d)?;
        let (q, k) = (Magnitudes::of(queries, d), Magnitudes::of(memories, d));
        let (v, dv) = match values {
            Some((v, dv)) => {
                if rows("values", v, dv)? != m {
                    return Err(Error::ShapeMismatch {
                        what: "values must have one row per memory".into(),
                        expected: m * dv,
                        got: v.len(),
                    });
                }
                (Magnitudes::of(v, dv), dv)
            }
            None => (k, d),
        };
        Ok(Self::from_magnitudes(q, k, v, (l, m, d, dv), beta, steps))
    }

    /// Statistics from magnitudes already known (a bank keeps those of its
    /// keys and values): `shape` is `(L, M, d, dv)`.
    pub(crate) fn from_magnitudes(
        queries: Magnitudes,
        keys: Magnitudes,
        values: Magnitudes,
        (l, m, d, dv): (usize, usize, usize, usize),
        beta: f64,
        steps: u32,
    ) -> Self {
        ProblemStats {
            m,
            l,
            d,
            dv,
            beta,
            steps,
            b: queries.max_abs.max(keys.max_abs),
            b_values: values.max_abs,
            query_norm: queries.max_norm,
            key_norm: keys.max_norm,
            value_norm: values.max_norm,
        }
    }

    /// The range `R >= beta * |<x, xi>|` the polynomial must cover:
    /// `beta * max|x|_2 * max|xi|_2` (Cauchy-Schwarz, the tighter R of
    /// SEMANTICS.md; never above [`ProblemStats::lemma_range`], since
    /// `|x|_2 <= sqrt(d) B`). With dynamics, later states are convex
    /// combinations of the values (the kernel is positive), so their norms
    /// stay below `max(max|x|_2, max|v|_2)`, which then replaces `max|x|_2`.
    pub fn range(&self) -> f64 {
        let x = if self.steps > 1 { self.query_norm.max(self.value_norm) } else { self.query_norm };
        self.beta * x * self.key_norm
    }

    /// Lemma 3.1's range `R = B^2 beta d` (looser than [`ProblemStats::range`]).
    pub fn lemma_range(&self) -> f64 {
        self.b * self.b * self.beta * self.d as f64
    }

    /// `B' = max(B, |V|_max)`: bounds the entries of values and of every
    /// state, as the error bounds need.
    pub fn b_bound(&self) -> f64 {
        self.b.max(self.b_values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_data_is_rejected() {
        let stats = |q: &[f32], m: &[f32], d, beta| ProblemStats::new(q, m, None, d, beta, 1);
        assert!(matches!(stats(&[1.0], &[1.0], 1, 0.0), Err(Error::InvalidParameter { name: "beta", .. })));
        assert!(matches!(stats(&[1.0, 2.0, 3.0], &[1.0, 2.0], 2, 1.0), Err(Error::ShapeMismatch { .. })));
        assert!(matches!(stats(&[f32::NAN, 0.0], &[1.0, 2.0], 2, 1.0), Err(Error::NonFinite { row: 0, col: 0, .. })));
        assert!(matches!(stats(&[], &[1.0], 1, 1.0), Err(Error::Empty { what: "queries" })));
    }

    #[test]
    fn ranges_by_hand() {
        // X = [[3, 4]], Xi = [[1, 0], [0, -2]]: B = 4; R_lemma = 16 * 0.5 * 2 = 16;
        // R_norm = 0.5 * 5 * 2 = 5.
        let s = ProblemStats::new(&[3.0, 4.0], &[1.0, 0.0, 0.0, -2.0], None, 2, 0.5, 1).unwrap();
        assert_eq!((s.b, s.lemma_range(), s.range()), (4.0, 16.0, 5.0));
        assert_eq!(crate::feature::poly::lemma_3_2_bound(10, 4.0, 1e-3), 0.08);
        assert_eq!(Magnitudes::of(&[3.0, -4.0, 1.0, 0.0], 2), Magnitudes { max_abs: 4.0, max_norm: 5.0 });
    }
}
