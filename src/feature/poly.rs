//! The polynomial low-rank path (fine-grained complexity paper, Section 3,
//! after Alman & Song 2023), host side: how wide the scores can be, which
//! polynomial `P ~ exp` to use, and the monomial feature maps it expands into.
//!
//! The contract (SEMANTICS.md, "Kernel (feature-map) retrieval"):
//! `P(t)` of degree g with `|P(t) - e^t| <= delta_A e^t` on all of
//! `[-R, R]`, `R >= beta * max |<x_l, xi_mu>|`. Then
//! `P(beta <x, y>) = sum_k c_k beta^k sum_{|a| = k} (k! / a!) x^a y^a`
//! is an inner product of feature maps of rank `r = C(d + g, g)`, one feature
//! per multi-index `a` with `|a| <= g`:
//! `phi(x)_a = sqrt(|c_k| beta^k k! / a!) x^a`, `k = |a|`. When `c_k < 0` the
//! query side carries the minus sign (see [`PolyCoefs`]).
//!
//! The relative-error claim is never assumed: every candidate polynomial is
//! evaluated in f64, in the monomial form the GPU will use, on a uniform grid
//! of [`GRID_POINTS`] points that includes both endpoints ([`verify`]). A
//! relative error below 1 on the grid also shows `P > 0` there, which the
//! normalisation `sum_mu k(x, xi_mu)` needs. It is a grid check, not a proof
//! between grid points; with 20001 points on a smooth function the gap is far
//! below the tolerances we use.
//!
//! Where this file computes the normaliser it is per query, as in the
//! formula: the paper's Algorithm 1 writes `diag(U1 (U2^T 1))`, which is a
//! typo (see [`crate::feature`]).

use std::collections::HashMap;

use crate::error::{Error, Resource, Result};

/// Points in the verification grid on `[-R, R]` (uniform, both endpoints included).
pub const GRID_POINTS: usize = 20_001;

pub use crate::method::MAX_DEGREE;

/// Lemma 3.2's a-priori bound on the retrieval error, `|Z~ - Z|_max <= 2 M B delta_A`.
///
/// `b` must bound the values as well as the scores' inputs: with separate
/// values `V`, pass `max(B, |V|_max)`.
pub fn lemma_3_2_bound(m: usize, b: f64, delta_a: f64) -> f64 {
    2.0 * m as f64 * b * delta_a
}

/// A tighter a-posteriori bound than Lemma 3.2, without the factor M:
/// `|Z~ - Z|_max <= 2 B delta / (1 - delta)`.
///
/// Why: if every kernel value is off by a relative `eps_mu`, `|eps_mu| <= delta`,
/// then with the exact weights `w_mu` and `e = sum_mu w_mu eps_mu`,
/// `z~ - z = sum_mu w_mu (eps_mu - e) v_mu / (1 + e)`, whose entries are at most
/// `max|v| sum_mu w_mu |eps_mu - e| / (1 - delta) <= 2 delta max|v| / (1 - delta)`.
/// It needs every score inside `[-R, R]` (true for the R of
/// [`crate::ProblemStats::range`])
/// and `b >= |V|_max`; `delta` may be the achieved delta of the polynomial.
/// Exact arithmetic only: f32 rounding on the GPU comes on top
/// (see [`monomial_rounding_floor`]).
pub fn ratio_error_bound(b: f64, delta: f64) -> f64 {
    2.0 * b * delta / (1.0 - delta)
}

fn check_beta(beta: f64) -> Result<()> {
    if beta.is_finite() && beta > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid("beta", beta, "beta must be finite and > 0"))
    }
}

fn check_delta(delta_a: f64) -> Result<()> {
    if delta_a > 0.0 && delta_a < 1.0 {
        Ok(())
    } else {
        // NaN fails both comparisons and lands here too.
        Err(Error::invalid("delta", delta_a, "delta_A must lie in (0, 1)"))
    }
}

fn check_range(range: f64) -> Result<()> {
    if range.is_finite() && range >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid("R", range, "the score range must be finite and >= 0"))
    }
}

// ---------------------------------------------------------------------------
// Polynomials

/// A polynomial `P(t) = sum_k c_k t^k` for `e^t` on `[-R, R]`, with its measured accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct Polynomial {
    /// The degree g (`coefs.len() - 1`).
    pub degree: usize,
    /// `c_0, ..., c_g` in the monomial basis of t.
    pub coefs: Vec<f64>,
    /// The half-width R of the interval the accuracy was measured on.
    pub range: f64,
    /// The achieved delta: `max |P(t) - e^t| / e^t` over the verification grid
    /// (+inf if any evaluation was not finite).
    pub achieved_delta: f64,
    /// `min P(t)` over the verification grid; must be > 0 for the kernel to be
    /// a valid normaliser.
    pub min_value: f64,
    /// `sum_k |c_k| R^k / min P`: how much rounding in the feature-map inner
    /// product can be amplified relative to the smallest kernel value. The
    /// sum of `|phi_q_a phi_k_a|` over features is `sum_k |c_k| (beta <|x|, |y|>)^k`,
    /// which is at most `sum_k |c_k| R^k`. For Taylor this is about
    /// `e^{2R}`: f32 feature maps lose about `log10(condition)` of their ~7 digits.
    pub condition: f64,
}

impl Polynomial {
    /// The Taylor polynomial of `e^t` of this degree, `c_k = 1 / k!`, with
    /// its accuracy on `[-range, range]` measured by [`verify`]. It may miss
    /// any particular `delta_A`; check [`Polynomial::is_within`].
    ///
    /// Why Taylor only: its coefficients do not depend on R, so S and n
    /// built for one query set serve every later one whose R the degree
    /// covers (the bank's cache), and with all `c_k > 0` there is no
    /// cancellation in the f32 sums. A fitted (minimax) polynomial was a few
    /// degrees lower at R >= 2, but its coefficients depend on R (one S/n per
    /// query set) and change sign, and the window where it helps closes near
    /// R = 6, where f32 rounding alone exceeds 1e-3 ([`monomial_rounding_floor`]);
    /// it was removed rather than wired to the GPU.
    pub fn new(degree: usize, range: f64) -> Result<Self> {
        if degree == 0 || degree > MAX_DEGREE {
            return Err(Error::invalid("degree", degree, format!("the degree must lie in 1..={MAX_DEGREE}")));
        }
        check_range(range)?;
        let coefs = taylor_coefs(degree);
        let check = verify(&coefs, range);
        let abs_sum: f64 = coefs.iter().rev().fold(0.0, |acc, c| acc * range + c.abs());
        let condition = if check.min_value > 0.0 { abs_sum / check.min_value } else { f64::INFINITY };
        Ok(Polynomial {
            degree,
            coefs,
            range,
            achieved_delta: check.max_rel_error,
            min_value: check.min_value,
            condition,
        })
    }

    /// Whether the verified relative error is at most `delta_a` and `P > 0` on the grid.
    pub fn is_within(&self, delta_a: f64) -> bool {
        self.achieved_delta <= delta_a && self.min_value > 0.0
    }
}

/// `sum_k coefs[k] t^k`, by Horner's rule.
pub fn horner(coefs: &[f64], t: f64) -> f64 {
    coefs.iter().rev().fold(0.0, |acc, &c| acc * t + c)
}

/// What [`verify`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verification {
    /// `max |P(t) - e^t| / e^t` over the grid; +inf if any value was not finite.
    pub max_rel_error: f64,
    /// `min P(t)` over the grid (NaN counts as -inf).
    pub min_value: f64,
}

/// Measure `P` (monomial coefficients, evaluated in f64 exactly as given)
/// against `e^t` on [`GRID_POINTS`] uniform points of `[-range, range]`,
/// both endpoints included exactly.
pub fn verify(coefs: &[f64], range: f64) -> Verification {
    let last = GRID_POINTS - 1;
    let mut max_rel_error = 0.0f64;
    let mut min_value = f64::INFINITY;
    for i in 0..GRID_POINTS {
        // Endpoints set exactly rather than through the affine formula, so
        // that `t = +-R` itself is tested.
        let t = match i {
            0 => -range,
            _ if i == last => range,
            _ => -range + 2.0 * range * (i as f64 / last as f64),
        };
        let p = horner(coefs, t);
        let e = t.exp();
        let rel = (p - e).abs() / e;
        // f64::max ignores NaN, so a NaN must be turned into a failure by hand.
        max_rel_error = if rel.is_finite() { max_rel_error.max(rel) } else { f64::INFINITY };
        min_value = if p.is_nan() { f64::NEG_INFINITY } else { min_value.min(p) };
    }
    Verification { max_rel_error, min_value }
}

/// `1 / k!` for `k = 0..=degree`.
pub(crate) fn taylor_coefs(degree: usize) -> Vec<f64> {
    let mut coefs = Vec::with_capacity(degree + 1);
    let mut c = 1.0;
    for k in 0..=degree {
        if k > 0 {
            c /= k as f64;
        }
        coefs.push(c);
    }
    coefs
}

/// The outcome of [`choose_polynomial`]: the lowest-degree polynomial that
/// met `delta_A`, and what it implies for the feature maps.
#[derive(Clone, Debug, PartialEq)]
pub struct PolyChoice {
    /// The chosen polynomial (degree, coefficients, R, achieved delta, signs).
    pub poly: Polynomial,
    /// The relative error asked for.
    pub delta_a: f64,
    /// The dimension the rank is counted for.
    pub d: usize,
    /// `r = C(d + g, g)`; `None` if it exceeds `u64::MAX`.
    pub rank: Option<u64>,
}

/// The lowest degree `g <= max_degree` (at most [`MAX_DEGREE`]) for which
/// the Taylor polynomial has verified relative error `<= delta_a` on
/// `[-range, range]` and is positive there.
pub fn choose_polynomial(range: f64, delta_a: f64, d: usize, max_degree: usize) -> Result<PolyChoice> {
    check_delta(delta_a)?;
    check_range(range)?;
    if d == 0 {
        return Err(Error::invalid("d", d, "the dimension must be at least 1"));
    }
    let floor = monomial_rounding_floor(range, f64::EPSILON / 2.0);
    if 0.1 * floor > delta_a {
        // Not worth a search: no degree can be verified, and the f32 GPU
        // path would be worse still.
        return Err(Error::invalid(
            "delta",
            delta_a,
            format!(
                "at R = {range:.4} the monomial form of any polynomial close to e^t loses about {floor:.1e} \
                 relative accuracy to rounding in f64 ({:.1e} in f32); the scores span too wide a range \
                 for the low-rank path, use dense retrieval",
                monomial_rounding_floor(range, f64::from(f32::EPSILON) / 2.0)
            ),
        ));
    }
    let max_degree = max_degree.min(MAX_DEGREE);
    let mut best: Option<Polynomial> = None;
    for g in 1..=max_degree {
        let p = Polynomial::new(g, range)?;
        if p.is_within(delta_a) {
            return Ok(PolyChoice { rank: rank(d, g).ok(), poly: p, delta_a, d });
        }
        if best.as_ref().is_none_or(|b| p.achieved_delta < b.achieved_delta) {
            best = Some(p);
        }
    }
    let (bg, bd) = best.map(|b| (b.degree, b.achieved_delta)).unwrap_or((0, f64::INFINITY));
    Err(Error::invalid(
        "delta",
        delta_a,
        format!(
            "no polynomial of degree <= {max_degree} reaches this relative error on [-R, R] with \
             R = {range:.4} (best: degree {bg}, {bd:.3e}); the scores span too wide a range for \
             the low-rank path, use dense retrieval"
        ),
    ))
}

/// The relative accuracy that rounding alone costs when a polynomial close
/// to `e^t` on `[-R, R]` is evaluated in monomial form (or as a feature-map
/// inner product, which sums the same terms): one rounding error `u` of the
/// largest term `max_k R^k / k!`, against the smallest value `P(-R) ~ e^{-R}`,
/// i.e. `u e^R max_k R^k / k!` (about `u e^{2R} / sqrt(2 pi R)` for R >= 1).
///
/// `u` is the unit roundoff: `f64::EPSILON / 2` on the host,
/// `f32::EPSILON / 2 = 6e-8` for f32 feature maps on the GPU. No delta_A
/// below this floor can be met in that precision, whatever the degree: in
/// f32 it passes 1e-3 near R = 6, so a planner must check it too. It is an
/// estimate (one rounding of the largest term), not a bound.
pub fn monomial_rounding_floor(range: f64, unit_roundoff: f64) -> f64 {
    // max_k R^k / k! sits at k = floor(R); built term by term (no overflow
    // for any R the search accepts).
    let mut term = 1.0f64;
    let mut max_term = 1.0f64;
    for k in 1..=(range.floor() as usize) {
        term *= range / k as f64;
        max_term = max_term.max(term);
    }
    unit_roundoff * max_term * range.exp()
}

// ---------------------------------------------------------------------------
// Rank and memory

/// The feature rank `r = C(d + g, g)`: the number of multi-indices `a` in
/// `N^d` with `|a| <= g`. Exact, in checked arithmetic; an error (not a
/// panic) when it exceeds `u64::MAX`.
pub fn rank(d: usize, g: usize) -> Result<u64> {
    let too_big = || {
        Error::limit(
            format!("the feature rank C(d + g, g) for d = {d}, g = {g}"),
            Resource::Indices,
            u128::MAX,
            u64::MAX,
        )
    };
    let n = d.checked_add(g).ok_or_else(too_big)? as u128;
    let k = d.min(g) as u128;
    let mut c: u128 = 1;
    for i in 1..=k {
        // c = C(n - k + i - 1, i - 1) <= u64::MAX, so the product fits u128,
        // and C(n - k + i, i) = c (n - k + i) / i exactly.
        c = c * (n - k + i) / i;
        if c > u128::from(u64::MAX) {
            return Err(too_big());
        }
    }
    Ok(c as u64)
}

/// Device memory a feature-map method of rank r needs, in bytes (f32 storage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureMemory {
    /// The rank r.
    pub rank: u64,
    /// `S` (`r x dv`) and `n` (`r`): `r (dv + 1) 4` bytes.
    pub state_bytes: u64,
    /// One row's feature vector, `r 4` bytes (times the rows a chunk keeps).
    pub bytes_per_row: u64,
}

/// [`FeatureMemory`] for rank `rank` and `dv` value columns; `None` on u64 overflow.
pub fn feature_memory(rank: u64, dv: usize) -> Option<FeatureMemory> {
    let dv1 = u64::try_from(dv).ok()?.checked_add(1)?;
    Some(FeatureMemory {
        rank,
        state_bytes: rank.checked_mul(dv1)?.checked_mul(4)?,
        bytes_per_row: rank.checked_mul(4)?,
    })
}

/// The rank of degree-g features on d dimensions, if `S` and `n` fit in
/// `max_state_bytes`; otherwise a [`Error::DeviceLimit`] that names r and the
/// memory it would need.
pub fn check_rank(d: usize, g: usize, dv: usize, max_state_bytes: u64) -> Result<FeatureMemory> {
    let r = rank(d, g)?;
    let what = format!("S and n of polynomial features of degree {g} on d = {d}, rank r = {r} (r (dv + 1) 4 bytes)");
    let mem =
        feature_memory(r, dv).ok_or_else(|| Error::limit(&what, Resource::BindingBytes, u128::MAX, max_state_bytes))?;
    if mem.state_bytes > max_state_bytes {
        return Err(Error::limit(
            format!("{what}, plus r 4 = {} bytes per feature row", mem.bytes_per_row),
            Resource::BindingBytes,
            mem.state_bytes,
            max_state_bytes,
        ));
    }
    Ok(mem)
}

// ---------------------------------------------------------------------------
// Monomial table

/// Every multi-index `a` in `N^d` with `|a| <= g`, as flat u32 tables a GPU
/// kernel can bind directly.
///
/// Order (deterministic): graded by total degree `k = 0, 1, ..., g`; within one
/// degree, decreasing lexicographic order of `(a_0, ..., a_{d-1})`, so that for
/// d = 2, g = 2 the features are `1, x0, x1, x0^2, x0 x1, x1^2`.
///
/// Two equivalent encodings of the same monomials:
/// - CSR: feature f is `prod x[dim]^power` over
///   `pairs[offsets[f]..offsets[f + 1]]`, each pair `[dim, power]` with
///   `power >= 1` and dims increasing; the constant feature has no pairs.
/// - Parent recurrence: for f >= 1, `x^a(f) = x^a(parent[f]) * x[parent_dim[f]]`
///   with `parent[f] < f`, so one pass in feature order costs one multiply per
///   feature. Entry 0 (the constant 1) is unused and holds 0, 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonomialTable {
    /// Input dimension d.
    pub d: usize,
    /// Degree g.
    pub degree: usize,
    /// `rank + 1` offsets into `pairs`.
    pub offsets: Vec<u32>,
    /// `[dim, power]` pairs, bindable as WGSL `array<vec2<u32>>`.
    pub pairs: Vec<[u32; 2]>,
    /// `degree + 2` offsets: features of total degree k are
    /// `degree_offsets[k]..degree_offsets[k + 1]`.
    pub degree_offsets: Vec<u32>,
    /// Per feature, the feature it extends by one factor (0 for feature 0).
    pub parent: Vec<u32>,
    /// Per feature, the dimension that extends it (0 for feature 0).
    pub parent_dim: Vec<u32>,
}

impl MonomialTable {
    /// The table for d dimensions and degree g. Fails with
    /// [`Error::DeviceLimit`] when the rank exceeds `max_rank` (or u32
    /// indexing), before allocating anything.
    pub fn new(d: usize, degree: usize, max_rank: u64) -> Result<Self> {
        if d == 0 {
            return Err(Error::invalid("d", d, "the dimension must be at least 1"));
        }
        if degree == 0 {
            return Err(Error::invalid("degree", degree, "the degree must be at least 1"));
        }
        let r = rank(d, degree)?;
        let limit = max_rank.min(u64::from(u32::MAX));
        if r > limit {
            return Err(Error::limit(
                format!(
                    "polynomial features of degree {degree} on d = {d}, rank r = {r} (each feature row alone needs \
                     r 4 = {} bytes)",
                    r.saturating_mul(4)
                ),
                Resource::Indices,
                r,
                limit,
            ));
        }
        let r = r as usize;
        let mut table = MonomialTable {
            d,
            degree,
            offsets: Vec::with_capacity(r + 1),
            pairs: Vec::new(),
            degree_offsets: Vec::with_capacity(degree + 2),
            parent: Vec::with_capacity(r),
            parent_dim: Vec::with_capacity(r),
        };
        let mut index: HashMap<Vec<u32>, u32> = HashMap::with_capacity(r);
        table.offsets.push(0);
        for k in 0..=degree {
            table.degree_offsets.push(index.len() as u32);
            let mut a = vec![0u32; d];
            a[0] = k as u32;
            loop {
                let f = index.len() as u32;
                for (dim, &p) in a.iter().enumerate() {
                    if p > 0 {
                        table.pairs.push([dim as u32, p]);
                    }
                }
                table.offsets.push(table.pairs.len() as u32);
                match a.iter().position(|&p| p > 0) {
                    None => {
                        table.parent.push(0);
                        table.parent_dim.push(0);
                    }
                    Some(j) => {
                        let mut up = a.clone();
                        up[j] -= 1;
                        table.parent.push(index[&up]);
                        table.parent_dim.push(j as u32);
                    }
                }
                index.insert(a.clone(), f);
                if !next_composition(&mut a) {
                    break;
                }
            }
        }
        table.degree_offsets.push(index.len() as u32);
        debug_assert_eq!(index.len(), r);
        Ok(table)
    }

    /// The rank r (number of features).
    pub fn rank(&self) -> usize {
        self.parent.len()
    }

    /// The multi-index `a` of feature f, as a dense vector of length d.
    #[cfg(test)]
    pub fn exponents(&self, f: usize) -> Vec<u32> {
        let mut a = vec![0; self.d];
        for &[dim, p] in self.factors(f) {
            a[dim as usize] = p;
        }
        a
    }

    /// The `[dim, power]` pairs of feature f.
    pub fn factors(&self, f: usize) -> &[[u32; 2]] {
        &self.pairs[self.offsets[f] as usize..self.offsets[f + 1] as usize]
    }

    /// The total degree `|a|` of feature f.
    #[cfg(test)]
    pub fn total_degree(&self, f: usize) -> usize {
        self.factors(f).iter().map(|&[_, p]| p as usize).sum()
    }
}

/// Step `a` to the next multi-index of the same total degree in decreasing
/// lexicographic order; false after the last one (`(0, ..., 0, k)`).
fn next_composition(a: &mut [u32]) -> bool {
    let last = a.len() - 1;
    let Some(i) = a[..last].iter().rposition(|&p| p > 0) else {
        return false;
    };
    let tail = a[last];
    a[last] = 0;
    a[i] -= 1;
    a[i + 1] = tail + 1;
    true
}

/// Per-feature coefficients of the polynomial feature maps:
/// `phi_q(x)_f = query[f] x^a`, `phi_k(y)_f = key[f] y^a`, so that
/// `<phi_q(x), phi_k(y)> = P(beta <x, y>)`.
///
/// `key[f] = sqrt(|c_k| beta^k k! / a!)` and `query[f] = sign(c_k) key[f]`
/// (`k = |a|`): features with `c_k < 0` form a negative block, whole degrees
/// at a time, without changing the rank. The memories' side (S and n) never
/// sees a sign, so S and n stay what they are for an all-positive P.
#[derive(Clone, Debug, PartialEq)]
pub struct PolyCoefs {
    /// Coefficients of the query map `phi_q` (carry the sign of `c_k`).
    pub query: Vec<f64>,
    /// Coefficients of the memory (key) map `phi_k` (non-negative).
    pub key: Vec<f64>,
}

/// [`PolyCoefs`] for `table` and the monomial coefficients `coefs` of P (length `g + 1`).
pub fn feature_coefficients(table: &MonomialTable, coefs: &[f64], beta: f64) -> Result<PolyCoefs> {
    check_beta(beta)?;
    if coefs.len() != table.degree + 1 {
        return Err(Error::ShapeMismatch {
            what: "polynomial coefficients vs monomial table degree + 1".into(),
            expected: table.degree + 1,
            got: coefs.len(),
        });
    }
    let mut query = Vec::with_capacity(table.rank());
    let mut key = Vec::with_capacity(table.rank());
    for f in 0..table.rank() {
        // k! / a! as a product of binomials C(a_0 + ... + a_j, a_j), built
        // one factor at a time (multiply, then divide: every intermediate is
        // an integer, exact in f64 below 2^53), so k! itself never appears.
        let mut multinomial = 1.0;
        let mut k = 0;
        for &[_, p] in table.factors(f) {
            for i in 1..=p as usize {
                multinomial = multinomial * (k + i) as f64 / i as f64;
            }
            k += p as usize;
        }
        let c = coefs[k];
        let v = (c.abs() * beta.powi(k as i32) * multinomial).sqrt();
        key.push(v);
        query.push(if c < 0.0 { -v } else { v });
    }
    Ok(PolyCoefs { query, key })
}

/// The monomial feature map in f64: `phi(x)_f = coefs[f] * prod x[dim]^power`
/// over feature f's pairs. For tests and the CPU side of checks; pass
/// [`PolyCoefs::query`] for queries and [`PolyCoefs::key`] for memories.
///
/// # Panics
/// If `x.len() != table.d` or `coefs.len() != table.rank()`.
#[cfg(test)]
pub fn feature_map(x: &[f64], table: &MonomialTable, coefs: &[f64]) -> Vec<f64> {
    assert_eq!(x.len(), table.d, "feature_map: input dimension");
    assert_eq!(coefs.len(), table.rank(), "feature_map: one coefficient per feature");
    (0..table.rank())
        .map(|f| coefs[f] * table.factors(f).iter().map(|&[dim, p]| x[dim as usize].powi(p as i32)).product::<f64>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::dot;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn taylor_degree_is_the_lowest_that_passes() {
        let (range, delta) = (0.5, 1e-3);
        let choice = choose_polynomial(range, delta, 3, MAX_DEGREE).unwrap();
        let g = choice.poly.degree;
        assert!(choice.poly.achieved_delta <= delta, "{choice:?}");
        assert!(choice.poly.coefs.iter().all(|&c| c > 0.0));
        // Every lower degree must fail the same grid check (g - 1 and g - 2 included).
        for lower in 1..g {
            let p = Polynomial::new(lower, range).unwrap();
            assert!(!p.is_within(delta), "degree {lower} also passes: {}", p.achieved_delta);
        }
        // The worst point is t = -0.5, where the relative error is about
        // 0.5^(g+1)/(g+1)! e^{0.5}: g = 3 gives 3.9e-3 (fails), g = 4 gives 4.0e-4.
        assert_eq!(g, 4);
        assert_eq!(choice.rank, Some(35)); // C(3 + 4, 4)
    }

    #[test]
    fn error_shrinks_as_the_degree_grows() {
        let errs: Vec<f64> = (1..=10).map(|g| Polynomial::new(g, 2.0).unwrap().achieved_delta).collect();
        for w in errs.windows(2) {
            assert!(w[1] < w[0], "{errs:?}");
        }
        // Measured: 3.2e-4 at degree 10 (R = 2).
        assert!(errs[9] < 1e-3, "{errs:?}");
    }

    #[test]
    fn unreachable_delta_is_a_typed_error() {
        // Degree cap reached.
        let err = choose_polynomial(3.0, 1e-6, 4, 4).unwrap_err();
        assert!(matches!(err, Error::InvalidParameter { name: "delta", .. }), "{err}");
        // Rounding floor: at R = 20 no monomial form reaches 1e-3 even in f64
        // (measured: Taylor's best over g <= 64 is 1.7e2), so the
        // search is refused up front instead of running to g = 64.
        let err = choose_polynomial(20.0, 1e-3, 4, MAX_DEGREE).unwrap_err();
        assert!(err.to_string().contains("rounding"), "{err}");
    }

    #[test]
    fn rounding_floor_by_hand() {
        // R = 2: max term 2 (k = 1, 2), floor = u * 2 * e^2.
        let u = f64::EPSILON / 2.0;
        assert!((monomial_rounding_floor(2.0, u) / (u * 2.0 * 2f64.exp()) - 1.0).abs() < 1e-12);
        assert_eq!(monomial_rounding_floor(0.0, u), u);
        // In f32 the floor passes 1e-3 between R = 5 and R = 6.
        let u32 = f64::from(f32::EPSILON) / 2.0;
        assert!(monomial_rounding_floor(5.0, u32) < 1e-3 && monomial_rounding_floor(6.0, u32) > 1e-3);
    }

    #[test]
    fn bad_parameters_are_rejected() {
        for delta in [0.0, 1.0, -0.5, 2.0, f64::NAN] {
            assert!(matches!(choose_polynomial(1.0, delta, 2, 8), Err(Error::InvalidParameter { name: "delta", .. })));
        }
        assert!(matches!(Polynomial::new(0, 1.0), Err(Error::InvalidParameter { name: "degree", .. })));
        assert!(matches!(MonomialTable::new(3, 0, 1000), Err(Error::InvalidParameter { name: "degree", .. })));
        assert!(matches!(Polynomial::new(2, f64::INFINITY), Err(Error::InvalidParameter { .. })));
    }

    #[test]
    fn rank_by_hand_and_overflow() {
        assert_eq!(rank(3, 4).unwrap(), 35);
        assert_eq!(rank(1, 5).unwrap(), 6);
        assert_eq!(rank(4, 10).unwrap(), 1001);
        assert_eq!(rank(10, 10).unwrap(), 184_756);
        // C(128, 64) = 2.4e37 > 2^64: an error, not a panic or a wrapped value.
        assert!(matches!(rank(64, 64), Err(Error::DeviceLimit { .. })));
        assert!(matches!(rank(usize::MAX, 2), Err(Error::DeviceLimit { .. })));
        // C(67, 33) = 1.42e19 < 2^64 = 1.84e19 < C(68, 34) = 2.8e19.
        assert_eq!(rank(34, 33).unwrap(), 14_226_520_737_620_288_370);
        assert!(rank(34, 34).is_err());
    }

    #[test]
    fn too_large_rank_names_r_and_bytes() {
        let err = check_rank(16, 12, 16, 1 << 30).unwrap_err();
        let msg = err.to_string();
        // C(28, 12) = 30421755; S and n: 30421755 * 17 * 4 = 2068679340 bytes.
        assert!(msg.contains("30421755") && msg.contains("2068679340"), "{msg}");
        assert_eq!(
            check_rank(4, 4, 4, 1 << 30).unwrap(),
            FeatureMemory { rank: 70, state_bytes: 70 * 5 * 4, bytes_per_row: 280 }
        );
        assert!(matches!(MonomialTable::new(16, 12, 1_000_000), Err(Error::DeviceLimit { .. })));
    }

    #[test]
    fn monomial_table_order_and_layouts() {
        let t = MonomialTable::new(2, 2, 1000).unwrap();
        let want: Vec<Vec<u32>> = vec![vec![0, 0], vec![1, 0], vec![0, 1], vec![2, 0], vec![1, 1], vec![0, 2]];
        assert_eq!((0..t.rank()).map(|f| t.exponents(f)).collect::<Vec<_>>(), want);
        assert_eq!(t.offsets, vec![0, 0, 1, 2, 3, 5, 6]);
        assert_eq!(t.pairs, vec![[0, 1], [1, 1], [0, 2], [0, 1], [1, 1], [1, 2]]);
        assert_eq!(t.degree_offsets, vec![0, 1, 3, 6]);
        assert_eq!(t.parent, vec![0, 0, 0, 1, 2, 2]);
        assert_eq!(t.parent_dim, vec![0, 0, 1, 0, 0, 1]);

        // On a bigger table: every multi-index appears once, graded, and the
        // parent recurrence rebuilds the CSR exponents.
        let t = MonomialTable::new(4, 5, 10_000).unwrap();
        assert_eq!(t.rank(), 126);
        let mut seen = std::collections::HashSet::new();
        for f in 0..t.rank() {
            let a = t.exponents(f);
            assert!(seen.insert(a.clone()));
            if f > 0 {
                assert!(t.total_degree(f - 1) <= t.total_degree(f));
                let mut up = t.exponents(t.parent[f] as usize);
                assert!((t.parent[f] as usize) < f);
                up[t.parent_dim[f] as usize] += 1;
                assert_eq!(up, a, "feature {f}");
            }
        }
    }

    #[test]
    fn feature_inner_product_is_the_polynomial() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (d, g, beta) = (3, 4, 0.7);
        let table = MonomialTable::new(d, g, 1000).unwrap();
        // Taylor (all positive) and a hand-made polynomial with negative
        // coefficients that exercises the sign split.
        let polys = [taylor_coefs(g), vec![1.0, -0.5, 0.3, -0.1, 0.05]];
        for coefs in polys {
            let pc = feature_coefficients(&table, &coefs, beta).unwrap();
            assert_eq!(pc.query.iter().any(|&q| q < 0.0), coefs.iter().any(|&c| c < 0.0));
            for _ in 0..20 {
                let x: Vec<f64> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
                let y: Vec<f64> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
                let got = dot(&feature_map(&x, &table, &pc.query), &feature_map(&y, &table, &pc.key));
                let want = horner(&coefs, beta * dot(&x, &y));
                assert!((got - want).abs() <= 1e-10 * want.abs(), "got {got}, want {want}");
            }
        }
    }
}
