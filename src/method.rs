//! What a retrieval method *is*, independent of any device: the [`Method`]
//! enum, the validation of its parameters, and the definitions that both the
//! GPU kernels and the CPU reference must agree on bit for bit (the width of
//! a support, the window of a query, the random mask's hash, the default
//! number of random features, the key that identifies a feature map).
//!
//! Everything here is a leaf: it imports nothing but the error type, so the
//! kernels (`crate::kernels`) and the reference (`crate::cpu`) can both use
//! it without depending on each other.

use crate::error::{Error, Result};

/// Which retrieval method to run (SEMANTICS.md defines each).
///
/// Not `Eq`: the feature-map methods carry f64 parameters. Deliberately not
/// `#[non_exhaustive]`: a new method should break every `match` on it (the
/// library's, the command line's, yours), so the compiler lists each place
/// that must learn about it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Method {
    /// Exact softmax retrieval with the tiled online-softmax kernel.
    #[default]
    Dense,
    /// The same result from the naive one-thread-per-query kernel: a
    /// baseline for `bench`, not for use (one step).
    DenseNaive,
    /// Softmax over the `k` largest scores only (ties: lower index); the
    /// others get weight exactly 0. `k >= M` is dense retrieval.
    TopK {
        /// Memories kept per query (>= 1).
        k: usize,
    },
    /// Softmax over `k` memories drawn per query without replacement from a
    /// seeded counter-based hash ([`random_rank_key`]).
    Random {
        /// Memories kept per query (>= 1).
        k: usize,
        /// Seed of the draw.
        seed: u64,
    },
    /// Softmax over a window of memories centred at `floor(l M / L)`
    /// ([`window_range`]).
    Window {
        /// Window width (>= 1); default `ceil(sqrt(M))` ([`default_window`]).
        width: Option<usize>,
    },
    /// sparsemax of the scores (Martins & Astudillo 2016).
    Sparsemax,
    /// 1.5-entmax of the scores (Peters et al. 2019).
    Entmax15,
    /// Polynomial low-rank kernel retrieval (fine-grained complexity paper,
    /// Section 3): `k(x, y) = P(beta <x, y>)` with a Taylor polynomial P of
    /// `e^t` whose relative error on `[-R, R]` is verified to be at most
    /// `delta` ([`crate::poly_choice`] picks the lowest such degree).
    Poly {
        /// Relative error delta_A of P against `e^t` on `[-R, R]`, in (0, 1).
        delta: f64,
        /// Use this degree instead of searching (its achieved delta is
        /// reported, not checked against `delta`).
        degree: Option<usize>,
    },
    /// Linear-kernel retrieval, `phi(x) = elu(x) + 1` (no beta).
    Linear,
    /// Positive random features (FAVOR+), seeded.
    Prf {
        /// Random features m (default [`default_feature_count`], `max(ceil(d ln d), 64)`).
        features: Option<usize>,
        /// Seed of W.
        seed: u64,
        /// Draw W in orthogonal blocks.
        orthogonal: bool,
    },
    /// Let the planner ([`crate::plan`]) pick the cheapest method whose
    /// output is guaranteed within `tolerance` of dense retrieval (max-norm,
    /// one step).
    Auto {
        /// Allowed max-norm distance to exact dense retrieval (> 0).
        tolerance: f64,
    },
}

/// The kernel families of ARCHITECTURE.md (`auto` is planned among the
/// feature methods and dense).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Dense,
    Topk,
    Window,
    Entmax,
    Feature,
}

/// The highest polynomial degree [`Method::Poly`] accepts. Beyond it the
/// rank `C(d + g, g)` is out of reach for any useful d, and `k!` approaches
/// the edge of f64.
pub const MAX_DEGREE: usize = 64;

impl Method {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Dense => "dense",
            Method::DenseNaive => "dense-naive",
            Method::TopK { .. } => "topk",
            Method::Random { .. } => "random",
            Method::Window { .. } => "window",
            Method::Sparsemax => "sparsemax",
            Method::Entmax15 => "entmax15",
            Method::Poly { .. } => "poly",
            Method::Linear => "linear",
            Method::Prf { .. } => "prf",
            Method::Auto { .. } => "auto",
        }
    }

    /// Whether this is one of the two dense kernels.
    pub fn is_dense(self) -> bool {
        self.family() == Family::Dense
    }

    /// Whether this is a kernel (feature-map) method: S and n built once per
    /// bank, then each query answered from them (`auto` may become one).
    pub fn is_kernel_method(self) -> bool {
        self.family() == Family::Feature
    }

    /// The kernel family that runs it.
    fn family(self) -> Family {
        match self {
            Method::Dense | Method::DenseNaive => Family::Dense,
            Method::TopK { .. } | Method::Random { .. } => Family::Topk,
            Method::Window { .. } => Family::Window,
            Method::Sparsemax | Method::Entmax15 => Family::Entmax,
            Method::Poly { .. } | Method::Linear | Method::Prf { .. } | Method::Auto { .. } => Family::Feature,
        }
    }

    /// Check the method's own parameters. Errors name the field
    /// (`k`, `width`, `delta`, `degree`, `features`, `tolerance`).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Method::Dense | Method::DenseNaive | Method::Sparsemax | Method::Entmax15 | Method::Linear => Ok(()),
            Method::TopK { k } | Method::Random { k, .. } => match k {
                0 => Err(Error::invalid("k", 0, "at least one memory must be kept")),
                _ => Ok(()),
            },
            Method::Window { width } => match width {
                Some(0) => Err(Error::invalid("width", 0, "the window width must be at least 1")),
                _ => Ok(()),
            },
            Method::Poly { delta, degree } => {
                if !(delta > 0.0 && delta < 1.0) {
                    return Err(Error::invalid("delta", delta, "delta_A must lie in (0, 1)"));
                }
                match degree {
                    Some(g) if g == 0 || g > MAX_DEGREE => {
                        Err(Error::invalid("degree", g, format!("the degree must lie in 1..={MAX_DEGREE}")))
                    }
                    _ => Ok(()),
                }
            }
            Method::Prf { features, .. } => match features {
                Some(0) => Err(Error::invalid("features", 0, "at least one random feature is needed")),
                _ => Ok(()),
            },
            Method::Auto { tolerance } => {
                if tolerance.is_finite() && tolerance > 0.0 {
                    Ok(())
                } else {
                    Err(Error::invalid("tolerance", tolerance, "must be finite and > 0"))
                }
            }
        }
    }

    /// Columns of the support this method returns for `m` memories (each
    /// query's memories with non-zero weight, padded with -1), or `None` for
    /// methods that give every memory a weight (dense, kernel methods).
    pub fn support_width(&self, m: usize) -> Option<usize> {
        match *self {
            Method::Dense | Method::DenseNaive => None,
            Method::TopK { k } | Method::Random { k, .. } => Some(k.min(m)),
            Method::Window { width } => Some(width.unwrap_or_else(|| default_window(m)).min(m)),
            Method::Sparsemax | Method::Entmax15 => Some(m),
            Method::Poly { .. } | Method::Linear | Method::Prf { .. } | Method::Auto { .. } => None,
        }
    }

    /// The feature map of a kernel method, once resolved (a polynomial
    /// needs its degree), at inverse temperature `beta` on dimension `d`;
    /// `None` for the other methods and for an unresolved polynomial.
    pub(crate) fn feature_key(&self, beta: f32, d: usize) -> Option<FeatureKey> {
        match *self {
            Method::Poly { degree: Some(degree), .. } => Some(FeatureKey::Poly { degree, beta: beta.to_bits() }),
            Method::Linear => Some(FeatureKey::Linear),
            Method::Prf { features, seed, orthogonal } => Some(FeatureKey::Prf {
                features: features.unwrap_or_else(|| default_feature_count(d)),
                seed,
                orthogonal,
                beta: beta.to_bits(),
            }),
            Method::Poly { degree: None, .. }
            | Method::Dense
            | Method::DenseNaive
            | Method::TopK { .. }
            | Method::Random { .. }
            | Method::Window { .. }
            | Method::Sparsemax
            | Method::Entmax15
            | Method::Auto { .. } => None,
        }
    }
}

/// One feature map of a kernel method, fully determined (hashable, unlike
/// [`Method`]): a bank caches its S and n under this key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FeatureKey {
    /// Taylor polynomial of this degree at this beta (bits of the f32).
    Poly { degree: usize, beta: u32 },
    /// `elu(x) + 1` (no beta).
    Linear,
    /// Positive random features.
    Prf { features: usize, seed: u64, orthogonal: bool, beta: u32 },
}

/// The fewest random features the default gives (see [`default_feature_count`]).
const MIN_DEFAULT_FEATURES: usize = 64;

/// The default number of random features, `max(ceil(d ln d), 64)`.
///
/// `ceil(d ln d)` alone (Performer's choice) gives one feature at d = 1 and
/// two at d = 2. With one feature, `phi(x)` is a single positive number and
/// `z = S^T phi(x) / <n, phi(x)> = S / n` is the same for every query. In
/// general each kernel estimate averages m i.i.d. terms, with relative
/// standard deviation `sqrt(e^|x' + y'|^2 - 1) / sqrt(m)` (FAVOR+,
/// `x' = sqrt(beta) x`): about `1.3 / sqrt(m)` at `|x' + y'| = 1`. The floor
/// of 64 brings that to ~16%, where the estimates start to rank memories
/// the way the exact kernel does; below a few tens of features they mostly
/// do not. `ceil(d ln d)` exceeds 64 from d = 22 on, so the floor only
/// changes small d, where 64 features cost what a dense retrieval over 64
/// memories per query costs.
pub fn default_feature_count(d: usize) -> usize {
    let df = d as f64;
    ((df * df.ln()).ceil() as usize).max(MIN_DEFAULT_FEATURES)
}

/// The memory indices covered by query `l`'s window, in ascending order.
///
/// Convention: the centre is `c = floor(l * m / num_queries)` and the window
/// is the half-open range `[c - floor(w / 2), c - floor(w / 2) + w)`,
/// intersected with `[0, m)`. It is clipped, not shifted, so a window at
/// either end holds fewer than `w` memories. For odd `w` it is symmetric,
/// `[c - (w-1)/2, c + (w-1)/2]`; for even `w` it reaches one further to the
/// left than to the right, `[c - w/2, c + w/2 - 1]`. It always contains `c`
/// when `w >= 1`, so no query is left with an empty support.
///
/// The product `l * m` is formed in u128: the GPU port must also avoid the
/// u32 overflow once `L * M >= 2^32` (the host computes windows with this
/// function and hands them to `shaders/window.wgsl`).
pub fn window_range(l: usize, num_queries: usize, m: usize, w: usize) -> std::ops::Range<usize> {
    let centre = (l as u128 * m as u128 / num_queries as u128) as usize;
    let start = centre as i128 - (w / 2) as i128;
    let end = start + w as i128;
    let clip = |i: i128| i.clamp(0, m as i128) as usize;
    clip(start)..clip(end)
}

/// The default window width `ceil(sqrt(m))`, exactly in integers (no float
/// rounding at perfect squares): with `M = L` it gives the paper's
/// `O(L sqrt(L))` cost. `default_window(0) = 0`.
pub fn default_window(m: usize) -> usize {
    let r = m.isqrt();
    if r * r == m {
        r
    } else {
        r + 1
    }
}

/// The rank key of memory `mu` for query `l` in the random mask: smaller keys
/// are drawn first.
///
/// Defined with u32 arithmetic only (wrapping multiply, shifts, xor) so that
/// `shaders/topk.wgsl` (`hash_select`) reproduces it bit for bit; keep the two in sync:
///
/// ```text
/// lowbias32(x):                 // Chris Wellons' "lowbias32" integer mixer
///     x ^= x >> 16; x *= 0x7feb352d;
///     x ^= x >> 15; x *= 0x846ca68b;
///     x ^= x >> 16; return x    // (multiplications wrap mod 2^32)
///
/// random_rank_key(seed, l, mu):
///     h = lowbias32(seed_lo ^ 0x9e3779b9)   // seed_lo = seed & 0xffffffff
///     h = lowbias32(h ^ seed_hi)            // seed_hi = seed >> 32
///     h = lowbias32(h ^ l)
///     h = lowbias32(h ^ mu)
///     return h
/// ```
///
/// The constant `0x9e3779b9` (the 32-bit golden ratio) keeps seed 0 away
/// from lowbias32's fixed point at 0. Each round is a bijection of u32, so
/// for a fixed `(seed, l)` the keys of distinct memories are distinct: the
/// draw never needs its tie-break.
pub fn random_rank_key(seed: u64, l: u32, mu: u32) -> u32 {
    let seed_lo = seed as u32; // truncation intended: the low word
    let seed_hi = (seed >> 32) as u32;
    let mut h = lowbias32(seed_lo ^ 0x9e37_79b9);
    h = lowbias32(h ^ seed_hi);
    h = lowbias32(h ^ l);
    lowbias32(h ^ mu)
}

/// Chris Wellons' lowbias32 mixer (nullprogram.com/blog/2018/07/31), a
/// bijection of u32 with low bias, written with WGSL's u32 semantics.
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_rank_key_is_pinned() {
        // Values from an independent Python model of the same u32 arithmetic
        // (`& 0xffffffff` after each multiply); the WGSL port is checked
        // against these, so any change to the function must break this test.
        let cases: [(u64, u32, u32, u32); 7] = [
            (0, 0, 0, 0x41f3_9e5e),
            (0, 0, 1, 0x2b4b_55bb),
            (1, 0, 0, 0x0b6c_72df),
            (0, 1, 0, 0xb0ef_959b),
            (0xDEAD_BEEF_CAFE_F00D, 7, 123_456, 0xbe03_e96a),
            (u64::MAX, u32::MAX, u32::MAX, 0x7272_f41a),
            (42, 3, 5, 0x03d5_a83e),
        ];
        for (seed, l, mu, want) in cases {
            assert_eq!(random_rank_key(seed, l, mu), want, "key({seed:#x}, {l}, {mu})");
        }
    }

    #[test]
    fn lowbias32_has_the_published_constants() {
        // Wellons' published inverse of lowbias32 undoes it only if both
        // multipliers and shifts are the published ones; it also shows the
        // mixer is a bijection (so a query's keys never tie).
        fn inverse(mut x: u32) -> u32 {
            x ^= x >> 16;
            x = x.wrapping_mul(0x4302_1123);
            x ^= (x >> 15) ^ (x >> 30);
            x = x.wrapping_mul(0x1d69_e2a5);
            x ^= x >> 16;
            x
        }
        for x in [0u32, 1, 2, 0x8000_0000, 0xffff_ffff, 0x1234_5678, 0x9e37_79b9] {
            assert_eq!(inverse(lowbias32(x)), x);
        }
        assert_eq!(lowbias32(0), 0, "the fixed point the golden-ratio constant avoids");
    }

    #[test]
    fn windows_are_clipped_at_both_ends() {
        // M = L = 10: the centre of query l is l.
        let (m, l_count) = (10, 10);
        let w4: Vec<Vec<usize>> = (0..10).map(|l| window_range(l, l_count, m, 4).collect()).collect();
        assert_eq!(w4[0], vec![0, 1]); // [-2, 2) clipped
        assert_eq!(w4[1], vec![0, 1, 2]); // [-1, 3) clipped
        assert_eq!(w4[5], vec![3, 4, 5, 6]); // even width: two left, one right
        assert_eq!(w4[9], vec![7, 8, 9]); // [7, 11) clipped
        let w3: Vec<Vec<usize>> = (0..10).map(|l| window_range(l, l_count, m, 3).collect()).collect();
        assert_eq!(w3[0], vec![0, 1]);
        assert_eq!(w3[4], vec![3, 4, 5]); // odd width: symmetric
        assert_eq!(w3[9], vec![8, 9]);
        assert_eq!(window_range(3, 10, 10, 1), 3..4);
        // M != L: M = 10, L = 4 gives centres floor(l * 10 / 4) = 0, 2, 5, 7.
        let centres: Vec<Vec<usize>> = (0..4).map(|l| window_range(l, 4, 10, 3).collect()).collect();
        assert_eq!(centres, vec![vec![0, 1], vec![1, 2, 3], vec![4, 5, 6], vec![6, 7, 8]]);
        // A window wider than 2M covers everything.
        assert_eq!(window_range(0, 10, 10, 25), 0..10);
    }

    #[test]
    fn default_window_is_an_exact_ceil_sqrt() {
        let cases =
            [(0, 0), (1, 1), (2, 2), (3, 2), (4, 2), (5, 3), (9, 3), (10, 4), (16, 4), (17, 5), (1_000_000, 1000)];
        for (m, want) in cases {
            assert_eq!(default_window(m), want, "m = {m}");
        }
        // Where f64 sqrt would round: (2^32 - 1)^2 and its neighbours.
        #[cfg(target_pointer_width = "64")]
        {
            let r = (1usize << 32) - 1;
            assert_eq!(default_window(r * r), r);
            assert_eq!(default_window(r * r - 1), r);
            assert_eq!(default_window(r * r + 1), r + 1);
        }
    }

    #[test]
    fn default_feature_count_by_hand() {
        // max(ceil(d ln d), 64): d = 10 -> 23.03, 21 -> 63.93, 22 -> 68.003,
        // 23 -> 72.12, 100 -> 460.5.
        assert_eq!([1, 2, 3, 10, 21].map(default_feature_count), [64; 5]);
        assert_eq!([22, 23, 100].map(default_feature_count), [69, 73, 461]);
    }

    #[test]
    fn zero_sizes_are_rejected_naming_the_field() {
        for (bad, field) in [
            (Method::TopK { k: 0 }, "k"),
            (Method::Random { k: 0, seed: 3 }, "k"),
            (Method::Window { width: Some(0) }, "width"),
            (Method::Prf { features: Some(0), seed: 0, orthogonal: false }, "features"),
            (Method::Poly { delta: 0.0, degree: None }, "delta"),
            (Method::Poly { delta: 0.5, degree: Some(MAX_DEGREE + 1) }, "degree"),
            (Method::Auto { tolerance: f64::NAN }, "tolerance"),
        ] {
            match bad.validate() {
                Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, field, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        for good in [Method::TopK { k: 1 }, Method::Random { k: 1_000_000, seed: 0 }, Method::Window { width: Some(1) }]
        {
            good.validate().unwrap();
        }
    }
}
