//! Float comparison with an absolute plus a relative tolerance, used by the
//! tests and by `bench` to check GPU output against the CPU reference.
//!
//! `|got - want| <= max(abs, rel * max(|got|, |want|))`, element by element.
//! A mismatch reports the first offending index with both values and both
//! differences, so a failing test says what went wrong.

use std::fmt;

/// Absolute and relative tolerance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Allowed absolute difference (matters near zero).
    pub abs: f64,
    /// Allowed difference relative to the larger magnitude.
    pub rel: f64,
}

/// Where and how two arrays differ.
#[derive(Clone, Debug, PartialEq)]
pub enum Mismatch {
    /// The arrays have different lengths.
    Length {
        /// Length of the value under test.
        got: usize,
        /// Length of the reference.
        want: usize,
    },
    /// An element is out of tolerance (the first one found).
    Value {
        /// Flat index of the element.
        index: usize,
        /// Value under test.
        got: f64,
        /// Reference value.
        want: f64,
        /// `|got - want|`.
        abs_diff: f64,
        /// `|got - want| / max(|got|, |want|)`.
        rel_diff: f64,
        /// How many elements were out of tolerance in all.
        count: usize,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Length { got, want } => write!(f, "length {got} != reference length {want}"),
            Mismatch::Value { index, got, want, abs_diff, rel_diff, count } => write!(
                f,
                "{count} element(s) out of tolerance; first at index {index}: got {got:e}, want {want:e}, \
                 |diff| = {abs_diff:e}, rel = {rel_diff:e}"
            ),
        }
    }
}

impl Tolerance {
    /// A tolerance with the given absolute and relative parts.
    pub const fn new(abs: f64, rel: f64) -> Self {
        Tolerance { abs, rel }
    }

    /// Whether one pair is within tolerance. NaN is never close to anything.
    pub fn close(&self, got: f64, want: f64) -> bool {
        let diff = (got - want).abs();
        diff <= self.abs.max(self.rel * got.abs().max(want.abs()))
    }

    /// Compare two arrays element by element.
    pub fn check(&self, got: &[f32], want: &[f64]) -> Result<(), Mismatch> {
        self.check_f64(&got.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), want)
    }

    /// [`Tolerance::check`] for f64 data.
    pub fn check_f64(&self, got: &[f64], want: &[f64]) -> Result<(), Mismatch> {
        if got.len() != want.len() {
            return Err(Mismatch::Length { got: got.len(), want: want.len() });
        }
        let mut first = None;
        let mut count = 0;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if !self.close(g, w) {
                count += 1;
                first.get_or_insert(i);
            }
        }
        match first {
            None => Ok(()),
            Some(index) => {
                let (g, w) = (got[index], want[index]);
                let abs_diff = (g - w).abs();
                Err(Mismatch::Value {
                    index,
                    got: g,
                    want: w,
                    abs_diff,
                    rel_diff: abs_diff / g.abs().max(w.abs()),
                    count,
                })
            }
        }
    }
}

/// Largest absolute difference between two arrays of the same length.
pub fn max_abs_diff(got: &[f32], want: &[f64]) -> f64 {
    got.iter().zip(want).map(|(&g, &w)| (f64::from(g) - w).abs()).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_arrays_pass() {
        Tolerance::new(1e-6, 1e-5).check(&[1.0, -2.0, 0.0], &[1.0, -2.0, 0.0]).unwrap();
    }

    #[test]
    fn one_perturbed_value_fails_and_is_reported() {
        // The comparison must be able to fail: perturb one element well past
        // both tolerances and check that it is caught and located.
        let want = [1.0, 2.0, 3.0, 4.0];
        let got = [1.0f32, 2.0, 3.001, 4.0];
        let err = Tolerance::new(1e-6, 1e-5).check(&got, &want).unwrap_err();
        match err {
            Mismatch::Value { index, count, .. } => assert_eq!((index, count), (2, 1)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn length_mismatch_fails() {
        assert!(matches!(
            Tolerance::new(1.0, 1.0).check(&[1.0], &[1.0, 2.0]),
            Err(Mismatch::Length { got: 1, want: 2 })
        ));
    }

    #[test]
    fn nan_never_passes() {
        assert!(Tolerance::new(1e9, 1e9).check(&[f32::NAN], &[0.0]).is_err());
    }

    #[test]
    fn relative_part_scales_with_magnitude() {
        let t = Tolerance::new(1e-9, 1e-3);
        assert!(t.close(1000.5, 1000.0));
        assert!(!t.close(0.5, 0.0));
    }
}
