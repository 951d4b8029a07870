//! Positive random features (Nonparametric paper, Prop. C.3; Performer's
//! FAVOR+) and the linear feature map (Prop. C.1), host side.
//!
//! PRF: with `x' = sqrt(beta) x`, `phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m)`,
//! W an `m x d` matrix of N(0, 1) rows, so `E[<phi(x), phi(y)>] = exp(beta <x, y>)`.
//! W is drawn here, seeded, and handed to the GPU as data; the CPU reference
//! ([`crate::cpu::feature::prf`]) takes the same W.
//!
//! Reproducibility: the stream is `ChaCha8Rng::seed_from_u64(seed)`
//! (rand_chacha promises value-stable output) turned into normals by our own
//! Box-Muller, not by a distribution crate whose algorithm may change between
//! versions. The same seed gives the same W on every machine up to the last
//! bit of `f64::ln`/`cos`/`sin`, which Rust takes from the platform's libm.
//!
//! Stability on the GPU: `exp(W x' - |x'|^2 / 2)` overflows f32 once an
//! exponent passes ~88, so a kernel will subtract a stabiliser. It must cancel
//! in `z_l = S^T phi_q(x_l) / <n, phi_q(x_l)>`:
//! - on the query side any per-query constant cancels (it scales numerator and
//!   denominator of that query alike), e.g. the query's own max exponent;
//! - on the memory side only ONE constant for the whole bank cancels (it scales
//!   S and n alike), e.g. the max over all memories and features. A per-memory
//!   max would reweight the memories and change the answer.
//!
//! The normaliser is per query, `<n, phi_q(x_l)>` (the paper's Algorithm 1
//! `diag(U1 (U2^T 1))` is a typo; see [`crate::feature`]).
//!
//! Linear: `phi(x) = elu(x) + 1` elementwise, rank d, no beta.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// A drawn projection W for positive random features.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomFeatures {
    /// Input dimension d.
    pub d: usize,
    /// Number of features m (rows of W).
    pub m: usize,
    /// The seed W was drawn from.
    pub seed: u64,
    /// Whether rows come in orthogonal blocks of d (see [`RandomFeatures::new`]).
    pub orthogonal: bool,
    /// W, `m x d` row-major.
    pub w: Vec<f64>,
}

impl RandomFeatures {
    /// Draw W (`m x d`) from `seed`.
    ///
    /// i.i.d.: row after row, d normals each. Orthogonal (Performer's
    /// variance reduction): blocks of d rows, each block d x d normals
    /// orthonormalised by Gram-Schmidt in f64, then each row rescaled to the
    /// norm of a fresh N(0, I_d) vector (chi-distributed with d degrees of
    /// freedom, d x d more normals per block), so rows stay marginally N(0, I_d);
    /// the last block keeps its first `m mod d` rows.
    pub fn new(d: usize, m: usize, seed: u64, orthogonal: bool) -> Result<Self> {
        if d == 0 {
            return Err(Error::invalid("d", d, "the dimension must be at least 1"));
        }
        if m == 0 {
            return Err(Error::invalid("features", m, "at least one random feature is needed"));
        }
        let len = m.checked_mul(d).ok_or_else(|| Error::invalid("features", m, "m * d overflows"))?;
        // W in f64, and the f32 copy the GPU gets.
        crate::host::check_allocation(
            || format!("random features: W of {m} features x d = {d}"),
            (len as u64).checked_mul(12),
        )?;
        let mut normal = Normal::new(seed);
        let mut w = Vec::with_capacity(len);
        if orthogonal {
            while w.len() < len {
                let block = orthogonal_block(&mut normal, d);
                let take = (len - w.len()).min(d * d);
                w.extend_from_slice(&block[..take]);
            }
        } else {
            w.extend((0..len).map(|_| normal.sample()));
        }
        Ok(RandomFeatures { d, m, seed, orthogonal, w })
    }

    /// Row i of W.
    #[cfg(test)]
    pub fn row(&self, i: usize) -> &[f64] {
        &self.w[i * self.d..(i + 1) * self.d]
    }

    /// W rounded to f32, as the GPU receives it. A tight CPU check should feed
    /// these values (widened back to f64) to the reference.
    pub fn w_f32(&self) -> Vec<f32> {
        self.w.iter().map(|&v| v as f32).collect()
    }

    /// `log phi(x)_i = <w_i, x'> - |x'|^2 / 2 - ln(m) / 2`, `x' = sqrt(beta) x`.
    /// Logs rather than values so that large inputs do not overflow.
    ///
    /// # Panics
    /// If `x.len() != d`.
    #[cfg(test)]
    pub fn log_feature_map(&self, x: &[f64], beta: f64) -> Vec<f64> {
        assert_eq!(x.len(), self.d, "log_feature_map: input dimension");
        let s = beta.sqrt();
        let half_sq = 0.5 * beta * x.iter().map(|v| v * v).sum::<f64>();
        let log_norm = 0.5 * (self.m as f64).ln();
        (0..self.m)
            .map(|i| s * self.row(i).iter().zip(x).map(|(w, v)| w * v).sum::<f64>() - half_sq - log_norm)
            .collect()
    }

    /// `phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m)`, `x' = sqrt(beta) x`.
    #[cfg(test)]
    pub fn feature_map(&self, x: &[f64], beta: f64) -> Vec<f64> {
        self.log_feature_map(x, beta).into_iter().map(f64::exp).collect()
    }
}

/// `elu(v) + 1`: `v + 1` for `v > 0`, `e^v` otherwise (positive everywhere).
pub fn elu_plus_one(v: f64) -> f64 {
    if v > 0.0 {
        v + 1.0
    } else {
        v.exp()
    }
}

/// The linear feature map `phi(x) = elu(x) + 1`, elementwise.
pub fn linear_feature_map(x: &[f64]) -> Vec<f64> {
    x.iter().map(|&v| elu_plus_one(v)).collect()
}

/// Standard normals from ChaCha8 by Box-Muller, both outputs used.
struct Normal {
    rng: ChaCha8Rng,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Normal { rng: ChaCha8Rng::seed_from_u64(seed), spare: None }
    }

    fn sample(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        // 53-bit uniforms; u1 in (0, 1] so that ln(u1) is finite.
        let u1 = ((self.rng.next_u64() >> 11) + 1) as f64 * SCALE;
        let u2 = (self.rng.next_u64() >> 11) as f64 * SCALE;
        let radius = (-2.0 * u1.ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * u2).sin_cos();
        self.spare = Some(radius * sin);
        radius * cos
    }
}

/// One d x d block of orthogonal rows with chi(d)-distributed norms.
fn orthogonal_block(normal: &mut Normal, d: usize) -> Vec<f64> {
    let mut q = loop {
        let mut g: Vec<f64> = (0..d * d).map(|_| normal.sample()).collect();
        if gram_schmidt(&mut g, d) {
            break g;
        }
        // A singular Gaussian block has probability zero; redraw if rounding
        // ever makes one look singular.
    };
    for row in q.chunks_exact_mut(d) {
        let chi = (0..d).map(|_| normal.sample().powi(2)).sum::<f64>().sqrt();
        row.iter_mut().for_each(|v| *v *= chi);
    }
    q
}

/// Orthonormalise the rows of a d x d matrix in place (modified Gram-Schmidt,
/// each projection applied twice, "twice is enough"); false if a row
/// collapses.
fn gram_schmidt(a: &mut [f64], d: usize) -> bool {
    for i in 0..d {
        for _ in 0..2 {
            for j in 0..i {
                let p: f64 = (0..d).map(|k| a[i * d + k] * a[j * d + k]).sum();
                for k in 0..d {
                    a[i * d + k] -= p * a[j * d + k];
                }
            }
        }
        let norm = (0..d).map(|k| a[i * d + k].powi(2)).sum::<f64>().sqrt();
        if norm.is_nan() || norm <= 1e-10 {
            return false;
        }
        a[i * d..(i + 1) * d].iter_mut().for_each(|v| *v /= norm);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::dot;

    #[test]
    fn zero_features_or_dimension_is_rejected() {
        assert!(matches!(RandomFeatures::new(4, 0, 1, false), Err(Error::InvalidParameter { name: "features", .. })));
        assert!(matches!(RandomFeatures::new(0, 4, 1, false), Err(Error::InvalidParameter { name: "d", .. })));
    }

    #[test]
    fn seeded_and_reproducible() {
        let a = RandomFeatures::new(5, 7, 42, false).unwrap();
        assert_eq!(a, RandomFeatures::new(5, 7, 42, false).unwrap());
        assert_ne!(a.w, RandomFeatures::new(5, 7, 43, false).unwrap().w);
        // Orthogonal mode draws from the same stream but differently.
        let o = RandomFeatures::new(5, 7, 42, true).unwrap();
        assert_eq!(o, RandomFeatures::new(5, 7, 42, true).unwrap());
        assert_eq!(o.w.len(), 35);
    }

    #[test]
    fn normals_have_unit_moments() {
        // 80000 draws: the sample mean has standard error 1/sqrt(80000) =
        // 0.0035 and the sample variance sqrt(2/80000) = 0.005; 5 sigma each.
        let w = RandomFeatures::new(4, 20_000, 3, false).unwrap().w;
        let n = w.len() as f64;
        let mean = w.iter().sum::<f64>() / n;
        let var = w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.018 && (var - 1.0).abs() < 0.025, "mean {mean}, var {var}");
    }

    #[test]
    fn orthogonal_blocks_are_orthogonal_with_chi_norms() {
        let (d, m) = (6, 6 * 500 + 2);
        let f = RandomFeatures::new(d, m, 9, true).unwrap();
        for block in 0..m / d {
            for i in 0..d {
                for j in 0..i {
                    let (a, b) = (f.row(block * d + i), f.row(block * d + j));
                    let cos = dot(a, b) / (dot(a, a) * dot(b, b)).sqrt();
                    assert!(cos.abs() < 1e-12, "block {block} rows {i}, {j}: {cos}");
                }
            }
        }
        // |w|^2 ~ chi^2(d): mean d, variance 2d; over 3002 rows the mean has
        // standard error sqrt(12 / 3002) = 0.063.
        let mean_sq = (0..m).map(|i| dot(f.row(i), f.row(i))).sum::<f64>() / m as f64;
        assert!((mean_sq - d as f64).abs() < 0.32, "{mean_sq}");
    }

    #[test]
    fn kernel_estimate_is_unbiased() {
        // One term of the estimate is exp(w.(x'+y') - |x'|^2/2 - |y'|^2/2),
        // mean exp(beta <x,y>), relative variance exp(|x'+y'|^2) - 1
        // (Performer, Lemma 2). With m = 20000 the relative standard error is
        // sqrt((e^{|x'+y'|^2} - 1) / m); allow 5 of them.
        let beta = 0.8;
        let (x, y) = ([0.3, -0.2, 0.5], [0.4, 0.1, -0.3]);
        let m = 20_000;
        let f = RandomFeatures::new(3, m, 11, false).unwrap();
        let k = dot(&f.feature_map(&x, beta), &f.feature_map(&y, beta));
        let want = (beta * dot(&x, &y)).exp();
        let sum_sq: f64 = x.iter().zip(&y).map(|(a, b)| beta * (a + b) * (a + b)).sum();
        let se = ((sum_sq.exp() - 1.0) / m as f64).sqrt();
        assert!((k / want - 1.0).abs() < 5.0 * se, "k {k}, want {want}, se {se}");
    }

    #[test]
    fn linear_map_by_hand() {
        let e = (-1.0f64).exp();
        assert_eq!(linear_feature_map(&[1.0, -1.0, 0.0]), vec![2.0, e, 1.0]);
    }
}
