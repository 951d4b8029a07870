//! The CPU reference: plain f64 loops written from the formulas in
//! `SEMANTICS.md`, one file per kernel family with the same name as the shader
//! it checks (`shaders/dense.wgsl` <-> `cpu/dense.rs`).
//!
//! Nothing here is a copy of a GPU algorithm: no tiling, no online softmax, no
//! chunk merging. Each function materialises the full score row, takes its
//! maximum, exponentiates and sums, exactly as the math is written. It is slow
//! on purpose and exists to be trusted.

pub mod dense;
pub mod entmax;
pub mod feature;
pub mod sparse;

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
