//! Pattern sets for the experiments: loading, scaling, the image shape the
//! capacity protocol needs, and the seeded streams every draw comes from.
//!
//! Every random number of an experiment comes from [`Stream`]: ChaCha8
//! (value-stable by its specification) keyed by the user's seed and the
//! draw's coordinates (experiment, x value, trial), with the bounded-integer
//! and Gaussian transforms written here, so that the numbers do not depend
//! on the algorithms a `rand` release happens to use.

use std::path::{Path, PathBuf};

use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::error::{Error, Result};
use crate::npy;

/// How the raw data is scaled before an experiment (SEMANTICS.md,
/// "Experiment protocols").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// Scaled to [0, 1] by the data's global minimum and maximum.
    None,
    /// Each feature (pixel, channel) to mean 0 and standard deviation 1 over
    /// the whole set; a constant feature becomes 0.
    Zscore,
    /// Each channel to mean 0 and standard deviation 1 with one mean and one
    /// deviation per channel, after scaling to [0, 1]: what the authors'
    /// loaders do with torchvision's `Normalize` (their constants come from
    /// MNIST and CIFAR-10; ours from the data at hand).
    Channel,
}

impl Normalize {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Normalize::None => "none",
            Normalize::Zscore => "zscore",
            Normalize::Channel => "channel",
        }
    }
}

/// The image layout of a pattern: row-major (y, x, channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImageShape {
    /// Rows (height).
    pub h: usize,
    /// Columns (width).
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl ImageShape {
    /// The square image of 1 or 3 channels with `d` entries, if there is one
    /// (64 -> 8x8x1 for digits, 192 -> 8x8x3 for patches8x8).
    pub fn guess(d: usize) -> Option<Self> {
        [1, 3].into_iter().find_map(|c| {
            if !d.is_multiple_of(c) {
                return None;
            }
            let side = ((d / c) as f64).sqrt().round() as usize;
            (side * side * c == d).then_some(ImageShape { h: side, w: side, c })
        })
    }

    /// Entries in the top half of the image (rows `0..h/2`, all channels):
    /// in row-major (y, x, c) order they are the first ones.
    pub fn top_half_len(&self) -> usize {
        (self.h / 2) * self.w * self.c
    }
}

/// A pattern set, scaled as asked.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Where it came from (as given on the command line).
    pub source: String,
    /// Patterns N.
    pub rows: usize,
    /// Dimension d.
    pub cols: usize,
    /// `[N, d]` row-major.
    pub data: Vec<f32>,
    /// The image shape, where d has one.
    pub image: Option<ImageShape>,
}

/// The shipped data sets, by name: `digits` and `patches8x8` resolve to the
/// files in this crate's `data/` folder.
pub fn resolve(name_or_path: &str) -> PathBuf {
    match name_or_path {
        "digits" | "patches8x8" => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(format!("{name_or_path}.npy"))
        }
        other => PathBuf::from(other),
    }
}

impl Dataset {
    /// Read a 2-D .npy (or a shipped set by name) and scale it.
    pub fn load(name_or_path: &str, normalize: Normalize) -> Result<Self> {
        let path = resolve(name_or_path);
        let a = npy::read_2d(&path)?;
        if a.rows == 0 || a.cols == 0 {
            return Err(Error::Empty { what: "data" });
        }
        if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what: "data", row: i / a.cols, col: i % a.cols, value: a.data[i] });
        }
        Ok(Self::from_raw(name_or_path.to_string(), a.rows, a.cols, a.data, normalize))
    }

    /// Scale raw data (finite, `[rows, cols]`).
    pub fn from_raw(source: String, rows: usize, cols: usize, raw: Vec<f32>, normalize: Normalize) -> Self {
        let image = ImageShape::guess(cols);
        let (lo, hi) = raw
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(f64::from(v)), hi.max(f64::from(v))));
        let span = if hi > lo { hi - lo } else { 1.0 };
        let unit: Vec<f64> = raw.iter().map(|&v| (f64::from(v) - lo) / span).collect();
        let data = match normalize {
            Normalize::None => unit.iter().map(|&v| v as f32).collect(),
            Normalize::Zscore => {
                let stats: Vec<(f64, f64)> =
                    (0..cols).map(|j| mean_std((0..rows).map(|i| unit[i * cols + j]))).collect();
                scale_by(&unit, cols, |j| stats[j])
            }
            Normalize::Channel => {
                let c = image.map_or(1, |s| s.c);
                let stats: Vec<(f64, f64)> = (0..c)
                    .map(|ch| mean_std(unit.iter().enumerate().filter(|(i, _)| (i % cols) % c == ch).map(|(_, &v)| v)))
                    .collect();
                scale_by(&unit, cols, |j| stats[j % c])
            }
        };
        Dataset { source, rows, cols, data, image }
    }

    /// Rows `idx` as one `[idx.len(), d]` block.
    pub fn select(&self, idx: &[usize]) -> Vec<f32> {
        let d = self.cols;
        let mut out = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            out.extend_from_slice(&self.data[i * d..(i + 1) * d]);
        }
        out
    }
}

fn mean_std(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count().max(1) as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn scale_by(unit: &[f64], cols: usize, stats: impl Fn(usize) -> (f64, f64)) -> Vec<f32> {
    unit.iter()
        .enumerate()
        .map(|(i, &v)| {
            let (mean, std) = stats(i % cols);
            // A constant feature carries no information: 0, as scikit-learn's
            // StandardScaler leaves it.
            if std > 0.0 {
                ((v - mean) / std) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// SplitMix64's finaliser: mixes a seed and draw coordinates into one key.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A key for the draw at `coords` under `seed`: distinct coordinates give
/// unrelated streams.
pub fn key(seed: u64, coords: &[u64]) -> u64 {
    coords.iter().fold(mix(seed ^ 0x9e37_79b9_7f4a_7c15), |k, &c| mix(k ^ mix(c.wrapping_add(0x632b_e59b_d9b4_e019))))
}

/// A seeded, value-stable random stream.
pub struct Stream(rand_chacha::ChaCha8Rng);

impl Stream {
    /// The stream for `seed` at `coords` (see [`key`]).
    pub fn new(seed: u64, coords: &[u64]) -> Self {
        let k = key(seed, coords);
        let mut bytes = [0u8; 32];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&mix(k.wrapping_add(i as u64)).to_le_bytes());
        }
        Stream(rand_chacha::ChaCha8Rng::from_seed(bytes))
    }

    /// A raw 64-bit draw.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (n >= 1), unbiased (Lemire's multiply-and-reject).
    pub fn below(&mut self, n: u64) -> u64 {
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in (0, 1]: 53 random bits.
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal draw (Box-Muller; the second value is discarded so
    /// that each call consumes exactly two words).
    pub fn gaussian(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// `k` distinct indices of `0..n` in draw order (partial Fisher-Yates).
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below((n - i) as u64) as usize;
            idx.swap(i, j);
        }
        idx.truncate(k.min(n));
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Stream::new(7, &[1, 2]).next_u64()).collect();
        assert!(a.iter().all(|&v| v == a[0]));
        assert_ne!(Stream::new(7, &[1, 2]).next_u64(), Stream::new(7, &[2, 1]).next_u64());
        assert_ne!(Stream::new(7, &[1]).next_u64(), Stream::new(8, &[1]).next_u64());
        let s = Stream::new(3, &[]).sample(10, 10);
        let mut sorted = s.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn below_and_gaussian_have_the_right_moments() {
        let mut s = Stream::new(1, &[]);
        let n = 200_000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[s.below(3) as usize] += 1;
        }
        // Each count ~ Binomial(n, 1/3): sd ~ 211; 6 sd = 1266.
        assert!(counts.iter().all(|&c| (c as f64 - n as f64 / 3.0).abs() < 1266.0), "{counts:?}");
        let g: Vec<f64> = (0..n).map(|_| s.gaussian()).collect();
        let mean = g.iter().sum::<f64>() / n as f64;
        let var = g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: mean 1/sqrt(n) = 0.0022, variance sqrt(2/n) = 0.0032.
        assert!(mean.abs() < 0.012 && (var - 1.0).abs() < 0.02, "{mean} {var}");
    }

    #[test]
    fn scaling_and_shapes() {
        assert_eq!(ImageShape::guess(64), Some(ImageShape { h: 8, w: 8, c: 1 }));
        assert_eq!(ImageShape::guess(192), Some(ImageShape { h: 8, w: 8, c: 3 }));
        assert_eq!(ImageShape::guess(10), None);
        assert_eq!(ImageShape { h: 8, w: 8, c: 3 }.top_half_len(), 96);
        // Two patterns of d = 4 (2x2 grey): [0, 2, 4, 4] and [4, 2, 0, 4].
        let raw = vec![0.0, 2.0, 4.0, 4.0, 4.0, 2.0, 0.0, 4.0];
        let none = Dataset::from_raw("t".into(), 2, 4, raw.clone(), Normalize::None);
        assert_eq!(none.data, vec![0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 1.0]);
        let z = Dataset::from_raw("t".into(), 2, 4, raw.clone(), Normalize::Zscore);
        // Features 0 and 2 are +-1; 1 and 3 are constant -> 0.
        assert_eq!(z.data, vec![-1.0, 0.0, 1.0, 0.0, 1.0, 0.0, -1.0, 0.0]);
        let c = Dataset::from_raw("t".into(), 2, 4, raw, Normalize::Channel);
        // One channel: mean 0.625, sd sqrt(0.171875) over all 8 values.
        let sd = 0.171_875f64.sqrt();
        assert!((f64::from(c.data[0]) + 0.625 / sd).abs() < 1e-6);
    }
}
