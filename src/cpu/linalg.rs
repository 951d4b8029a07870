//! Reference for the dense algebra a Hopfield layer is made of
//! (`shaders/linalg.wgsl`): linear maps `y = x W^T + b` with PyTorch's
//! `[out, in]` weights, LayerNorm over the last axis (PyTorch's definition),
//! ReLU, the residual add, and the two-layer feed-forward map
//! `W2 relu(W1 x + b1) + b2` of the expressive-power paper's Def. 3.4.
//! Plain f64 loops, row by row.

use super::{dot, Matrix};

/// LayerNorm over the last axis, PyTorch's definition:
/// `y = (x - mean(x)) / sqrt(var(x) + eps) * w + b`, with the biased
/// variance (divided by the number of features).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    /// Added to the variance.
    pub eps: f64,
    /// `(weight, bias)` when affine.
    pub affine: Option<(Vec<f64>, Vec<f64>)>,
}

impl LayerNorm {
    /// One row.
    pub fn apply_row(&self, x: &[f64]) -> Vec<f64> {
        let f = x.len() as f64;
        let mean = x.iter().sum::<f64>() / f;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / f;
        let inv = 1.0 / (var + self.eps).sqrt();
        let mut y: Vec<f64> = x.iter().map(|v| (v - mean) * inv).collect();
        if let Some((w, b)) = &self.affine {
            for ((yi, wi), bi) in y.iter_mut().zip(w).zip(b) {
                *yi = *yi * wi + bi;
            }
        }
        y
    }

    /// Every row of a matrix.
    pub fn apply(&self, x: &Matrix) -> Matrix {
        map_rows(x, x.cols, |row| self.apply_row(row))
    }
}

/// `y = x W^T + b`, with W stored `[out, in]` as PyTorch stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Matrix,
    /// `[out]`, if any.
    pub bias: Option<Vec<f64>>,
}

impl Linear {
    /// Input features.
    pub fn in_features(&self) -> usize {
        self.weight.cols
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.rows
    }

    /// Every row of `x` (`[rows, in]`) mapped to `[rows, out]`.
    pub fn apply(&self, x: &Matrix) -> Matrix {
        map_rows(x, self.out_features(), |row| {
            (0..self.out_features())
                .map(|o| dot(self.weight.row(o), row) + self.bias.as_ref().map_or(0.0, |b| b[o]))
                .collect()
        })
    }
}

/// `max(x, 0)` element by element.
pub fn relu(x: &Matrix) -> Matrix {
    Matrix { rows: x.rows, cols: x.cols, data: x.data.iter().map(|&v| v.max(0.0)).collect() }
}

/// `a + b` (the residual connection).
///
/// # Panics
/// If the shapes differ: callers compose blocks of validated sizes.
pub fn residual_add(a: &Matrix, b: &Matrix) -> Matrix {
    assert_eq!((a.rows, a.cols), (b.rows, b.cols), "residual shapes");
    Matrix { rows: a.rows, cols: a.cols, data: a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect() }
}

/// The two-layer ReLU feed-forward map of the expressive-power paper's
/// Def. 3.4: `f(x) = W2 relu(W1 x + b1) + b2`, row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedForward {
    /// `W1`, `b1`.
    pub first: Linear,
    /// `W2`, `b2`.
    pub second: Linear,
}

impl FeedForward {
    /// `W2 relu(W1 x + b1) + b2` for every row of `x`.
    pub fn apply(&self, x: &Matrix) -> Matrix {
        self.second.apply(&relu(&self.first.apply(x)))
    }
}

/// Row `i` of the result is `f(row i of x)` (`cols` values).
pub fn map_rows(x: &Matrix, cols: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Matrix {
    let mut out = Matrix::zeros(x.rows, cols);
    for i in 0..x.rows {
        out.row_mut(i).copy_from_slice(&f(x.row(i)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: usize, cols: usize, data: &[f64]) -> Matrix {
        Matrix { rows, cols, data: data.to_vec() }
    }

    #[test]
    fn layer_norm_matches_hand_values() {
        // x = [1, 2, 3]: mean 2, biased var 2/3.
        let ln = LayerNorm { eps: 0.0, affine: Some((vec![2.0, 1.0, 1.0], vec![0.0, 0.0, 1.0])) };
        let y = ln.apply_row(&[1.0, 2.0, 3.0]);
        let s = (2.0f64 / 3.0).sqrt();
        for (got, want) in y.iter().zip([-2.0 / s, 0.0, 1.0 / s + 1.0]) {
            assert!((got - want).abs() < 1e-12, "{y:?}");
        }
    }

    #[test]
    fn feed_forward_is_w2_relu_w1_plus_b() {
        let ff = FeedForward {
            first: Linear { weight: m(2, 1, &[1.0, -1.0]), bias: Some(vec![0.0, 0.5]) },
            second: Linear { weight: m(1, 2, &[3.0, 5.0]), bias: Some(vec![1.0]) },
        };
        // x = 2: W1 x + b1 = [2, -1.5] -> relu [2, 0] -> 3 * 2 + 0 + 1 = 7.
        assert_eq!(ff.apply(&m(1, 1, &[2.0])).data, vec![7.0]);
        // x = -1: [-1, 1.5] -> [0, 1.5] -> 7.5 + 1 = 8.5.
        assert_eq!(ff.apply(&m(1, 1, &[-1.0])).data, vec![8.5]);
    }
}
