//! The quantities the seed papers state their theorems in, and the bounds
//! themselves, evaluated for a concrete memory set (SEMANTICS.md, "Theory
//! quantities"): `hopfield-gpu analyze` prints them.
//!
//! Device-free. The only O(M^2 d) input, which memory is nearest to which
//! and which has the largest inner product ([`Neighbours`]), comes from a
//! pairwise sweep (the GPU's `separation` kernel, or [`crate::cpu::separation`]);
//! everything here is O((M + L) d) on the host in f64, and every value is
//! recomputed in f64 from the indices the sweep found, so an f32 sweep
//! only decides *which* pair is extreme (up to f32 ties), never the value.
//!
//! What is computed, and where the printed formulas needed a reading:
//! - `m = max |xi|`, `B = max |entry|` (memories and queries), Delta_mu
//!   (Def 3.4, nu != mu), `R = 0.5 min |xi_mu - xi_nu|` (Def 3.3), exact
//!   duplicates (R = 0).
//! - Well-separation (Lemma B.1 dense/poly, Thm 4.2 top-K): the threshold
//!   `ln(A) / beta + 2 m r` has the same value for every pattern; a pattern
//!   meets it when `Delta_mu >=` it. The condition is linear in `1 / beta`,
//!   so the smallest beta is solved in closed form ([`Threshold`]).
//!   On a sphere of radius m the condition with `r = R` can never hold for
//!   the closest pair: there `Delta_mu = |xi_mu - xi_nu|^2 / 2 = 2 R^2 <= 2 m R`
//!   (as `R <= m`). The ball radius `r` is therefore a parameter (default R):
//!   the proofs only need `|x - xi_mu| <= r`, and with `r < R` the
//!   threshold is `T(S_mu) subset S_mu` for the smaller ball.
//! - One-step error bounds per query (nearest pattern mu):
//!   B.34 as the seeds print it (with the max over nu != mu; the printed max
//!   over all nu includes nu = mu and is a typo), `2 m (M - 1) exp(-beta
//!   (<xi_mu, x> - max_{nu != mu} <xi_mu, xi_nu>))`; Ramsauer et al.'s Lemma
//!   A.4 form, whose exponent is `<xi_mu, x> - max_{nu != mu} <xi_nu, x>`
//!   (what the proof bounds: `1 - p_mu <= sum_{nu != mu} exp(s_nu - s_mu)`
//!   and `|T(x) - xi_mu| <= 2 m (1 - p_mu)`); and the separation form
//!   `2 m (M - 1) exp(-beta (Delta_mu - 2 m |x - xi_mu|))`, which follows from
//!   A.4 by Cauchy-Schwarz. The printed B.34 exponent differs from A.4's by
//!   `<xi_nu, x - xi_mu>`, which can be positive: the printed bound can fail
//!   (tests/theory.rs keeps a counterexample), the other two cannot.
//!   Top-K (Thm 4.1): `m (M + k - 2) exp(...)` with the B.34 exponent as
//!   printed, and with A.4's. Poly (Thm 3.2): the dense bound plus
//!   `2 M B delta_A` as printed, and plus `2 M m delta_A`: Lemma 3.2 bounds
//!   the max-norm, and the 2-norm of the error needs m where B is printed.
//! - Capacity (Thm B.1, Lemma 4.2): `M >= sqrt(p) C^((d - 1) / 4)`,
//!   `C = b / W0(exp(a + ln b))`, evaluated in the log domain (C^((d-1)/4)
//!   overflows f64 quickly). The dense formula's `ln[2 m (sqrt(p) - 1) / ...]`
//!   is undefined for every p in (0, 1): reported as null with that note, and
//!   beside it the value with `1 - sqrt(p)` (our reading, not a proven
//!   bound), whose right side holds M through `2 M B delta_A`: there the
//!   largest self-consistent M (the fixed point) is reported.

use serde::Serialize;

use crate::error::{Error, Result};

/// What one pairwise sweep finds for one row `a` (a memory, or a query)
/// against the memories `xi_nu`: the GPU's `separation` kernel and its
/// reference [`crate::cpu::separation`] both produce it. Ties go to the
/// lower index; `None` where no memory qualifies (a bank of one memory has
/// no other one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbours {
    /// `argmin_nu |a - xi_nu|^2`.
    pub nearest: Option<usize>,
    /// `argmax_nu <a, xi_nu>`.
    pub best: Option<usize>,
    /// `argmax_{nu != best} <a, xi_nu>`.
    pub second: Option<usize>,
    /// Memories `nu` (other than the row itself) with `xi_nu == a` entry by entry.
    pub duplicates: usize,
}

/// What the analysis needs besides the data (`hopfield-gpu analyze` flags).
#[derive(Clone, Debug)]
pub struct Params {
    /// Inverse temperature (> 0).
    pub beta: f64,
    /// delta_A of the polynomial path, in (0, 1); `None` is exact dense.
    pub delta: Option<f64>,
    /// K of top-K (>= 1); `None` leaves the top-K quantities out.
    pub k: Option<usize>,
    /// Failure probability p of the capacity bounds, in (0, 1).
    pub p: f64,
    /// Radius r of the balls S_mu; `None` is R (Def 3.3).
    pub radius: Option<f64>,
    /// Tolerance handed to the planner for its verdict (> 0).
    pub tolerance: f64,
    /// Largest S and n the planner may plan for (the device's binding size).
    pub max_state_bytes: u64,
}

impl Params {
    /// Check every parameter's domain; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(Error::invalid("beta", self.beta, "must be finite and > 0"));
        }
        if let Some(delta) = self.delta {
            if !(delta > 0.0 && delta < 1.0) {
                return Err(Error::invalid("delta", delta, "delta_A must lie in (0, 1)"));
            }
        }
        if self.k == Some(0) {
            return Err(Error::invalid("k", 0, "top-K keeps at least one memory"));
        }
        if !(self.p > 0.0 && self.p < 1.0) {
            return Err(Error::invalid("p", self.p, "the failure probability must lie in (0, 1)"));
        }
        if let Some(r) = self.radius {
            if !(r.is_finite() && r > 0.0) {
                return Err(Error::invalid("radius", r, "must be finite and > 0"));
            }
        }
        if !(self.tolerance.is_finite() && self.tolerance > 0.0) {
            return Err(Error::invalid("tolerance", self.tolerance, "must be finite and > 0"));
        }
        Ok(())
    }
}

/// The geometry of a memory set, in f64.
#[derive(Clone, Debug)]
pub struct Geometry {
    /// Memories M.
    pub memories: usize,
    /// Dimension d.
    pub dim: usize,
    /// `|xi_mu|_2` per pattern.
    pub norms: Vec<f64>,
    /// `m = max_mu |xi_mu|_2`.
    pub m: f64,
    /// `max |entry|` of the memories.
    pub b_memories: f64,
    /// `Delta_mu = |xi_mu|^2 - max_{nu != mu} <xi_mu, xi_nu>` (+inf when M = 1).
    pub delta: Vec<f64>,
    /// `max_{nu != mu} <xi_mu, xi_nu>` (-inf when M = 1).
    pub max_other_dot: Vec<f64>,
    /// Nearest other pattern and its distance (`None`, +inf when M = 1).
    pub nearest: Vec<Option<usize>>,
    /// `|xi_mu - xi_nearest|_2`.
    pub nearest_dist: Vec<f64>,
    /// `R = 0.5 min_{mu != nu} |xi_mu - xi_nu|` (+inf when M = 1).
    pub r: f64,
    /// Patterns equal to an earlier one (what deduplication would remove).
    pub duplicates: usize,
    /// Patterns that have at least one exact twin.
    pub duplicate_patterns: usize,
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
}

fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum::<f64>().sqrt()
}

fn check_shape(what: &'static str, data: &[f32], rows: usize, d: usize, nb: &[Neighbours]) -> Result<()> {
    if rows == 0 || d == 0 {
        return Err(Error::Empty { what });
    }
    if data.len() != rows * d {
        return Err(Error::ShapeMismatch {
            what: format!("{what}: data length vs rows x d"),
            expected: rows * d,
            got: data.len(),
        });
    }
    if nb.len() != rows {
        return Err(Error::ShapeMismatch {
            what: format!("{what}: one sweep result per row"),
            expected: rows,
            got: nb.len(),
        });
    }
    Ok(())
}

fn index(what: &'static str, i: Option<usize>, m: usize) -> Result<Option<usize>> {
    match i {
        Some(i) if i >= m => Err(Error::ShapeMismatch {
            what: format!("{what}: a neighbour index beyond the memories"),
            expected: m,
            got: i,
        }),
        other => Ok(other),
    }
}

/// The geometry of `memories` (`[M, d]` row-major) from their sweep
/// against themselves (`exclude_self`).
pub fn geometry(memories: &[f32], m_rows: usize, d: usize, nb: &[Neighbours]) -> Result<Geometry> {
    check_shape("memories", memories, m_rows, d, nb)?;
    let row = |i: usize| &memories[i * d..(i + 1) * d];
    let norms: Vec<f64> = (0..m_rows).map(|i| dot(row(i), row(i)).sqrt()).collect();
    let m = norms.iter().copied().fold(0.0, f64::max);
    let b_memories = memories.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs()));
    let mut delta = Vec::with_capacity(m_rows);
    let mut max_other_dot = Vec::with_capacity(m_rows);
    let mut nearest = Vec::with_capacity(m_rows);
    let mut nearest_dist = Vec::with_capacity(m_rows);
    let mut redundant = 0.0;
    let mut duplicate_patterns = 0;
    for (mu, n) in nb.iter().enumerate() {
        let best = index("memories", n.best, m_rows)?;
        let near = index("memories", n.nearest, m_rows)?;
        let other = best.map_or(f64::NEG_INFINITY, |nu| dot(row(mu), row(nu)));
        max_other_dot.push(other);
        delta.push(norms[mu] * norms[mu] - other);
        nearest.push(near);
        nearest_dist.push(near.map_or(f64::INFINITY, |nu| dist(row(mu), row(nu))));
        if n.duplicates > 0 {
            duplicate_patterns += 1;
            // A group of g equal patterns has duplicates = g - 1 in each of
            // its g members: summing (g - 1) / g over them gives g - 1.
            redundant += n.duplicates as f64 / (n.duplicates + 1) as f64;
        }
    }
    let r = 0.5 * nearest_dist.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(Geometry {
        memories: m_rows,
        dim: d,
        norms,
        m,
        b_memories,
        delta,
        max_other_dot,
        nearest,
        nearest_dist,
        r,
        duplicates: redundant.round() as usize,
        duplicate_patterns,
    })
}

/// The well-separation condition `Delta_mu >= ln(A) / beta + 2 m r` of one
/// theorem, evaluated at the given beta and solved for beta.
#[derive(Clone, Debug, Serialize)]
pub struct Threshold {
    /// `A` inside the logarithm (null where undefined).
    pub log_argument: Option<f64>,
    /// The threshold at the given beta (null where undefined; the same for every pattern).
    pub value: Option<f64>,
    /// Fraction of patterns with `Delta_mu >=` the threshold.
    pub fraction: Option<f64>,
    /// The smallest beta at which every pattern meets it (0: every beta > 0; null: none).
    pub min_beta: Option<f64>,
    /// Where the condition holds only below a beta, that beta (ln A < 0).
    pub max_beta: Option<f64>,
    /// Why a value is null, or how to read it.
    pub note: Option<String>,
}

/// Solve `delta_min >= c / beta + two_m_r` (c = ln A): the condition is
/// linear in `1 / beta`, so this is closed form. Returns (min_beta,
/// max_beta, note).
fn solve_beta(c: f64, delta_min: f64, two_m_r: f64) -> (Option<f64>, Option<f64>, Option<String>) {
    let gap = delta_min - two_m_r;
    if gap > 0.0 {
        if c > 0.0 {
            (Some(c / gap), None, None)
        } else {
            (Some(0.0), None, Some("ln A <= 0 and Delta_min > 2 m r: every beta > 0 works".into()))
        }
    } else if gap == 0.0 {
        if c <= 0.0 {
            (Some(0.0), None, Some("Delta_min = 2 m r and ln A <= 0: every beta > 0 works".into()))
        } else {
            (None, None, Some("Delta_min = 2 m r exactly: no finite beta meets the condition".into()))
        }
    } else if c < 0.0 {
        (
            Some(0.0),
            Some(c / gap),
            Some("ln A < 0 and Delta_min < 2 m r: the condition holds only for beta up to max_beta".into()),
        )
    } else if delta_min <= 0.0 {
        (
            None,
            None,
            Some(format!(
                "Delta_min = {delta_min:.6e} <= 0: some pattern has another at least as aligned with it as itself, \
                 so no beta and no radius makes every pattern well separated"
            )),
        )
    } else {
        (
            None,
            None,
            Some(format!(
                "Delta_min = {delta_min:.6e} < 2 m r = {two_m_r:.6e}: no beta makes every pattern well separated \
                 (on a sphere of radius m with r = R this always happens: Delta = 2 R^2 <= 2 m R for the closest pair; \
                 a smaller radius can help)"
            )),
        )
    }
}

fn threshold(log_argument: f64, why_undefined: Option<String>, g: &Geometry, r: f64, beta: f64) -> Threshold {
    if g.memories == 1 {
        return Threshold {
            log_argument: Some(0.0),
            value: None,
            fraction: Some(1.0),
            min_beta: Some(0.0),
            max_beta: None,
            note: Some("one memory: no other pattern to be separated from".into()),
        };
    }
    if let Some(why) = why_undefined {
        return Threshold {
            log_argument: None,
            value: None,
            fraction: None,
            min_beta: None,
            max_beta: None,
            note: Some(why),
        };
    }
    let two_m_r = 2.0 * g.m * r;
    let c = log_argument.ln();
    let value = c / beta + two_m_r;
    let fraction = g.delta.iter().filter(|&&dm| dm >= value).count() as f64 / g.memories as f64;
    let delta_min = g.delta.iter().copied().fold(f64::INFINITY, f64::min);
    let (min_beta, max_beta, note) = solve_beta(c, delta_min, two_m_r);
    Threshold {
        log_argument: Some(log_argument),
        value: Some(value),
        fraction: Some(fraction),
        min_beta,
        max_beta,
        note,
    }
}

/// A capacity lower bound `M >= sqrt(p) C^((d - 1) / 4)`.
#[derive(Clone, Debug, Serialize)]
pub struct Capacity {
    /// The bound (null where undefined, or beyond f64).
    pub value: Option<f64>,
    /// `log10` of the bound (finite even where the value overflows).
    pub log10: Option<f64>,
    /// `a` of the formula.
    pub a: Option<f64>,
    /// `b = 4 m^2 beta / (5 (d - 1))`.
    pub b: Option<f64>,
    /// Where M appears on both sides: the largest M with `M <= bound(M)`.
    pub fixed_point: Option<f64>,
    /// Why null, or how to read it.
    pub note: Option<String>,
}

/// `ln W0(e^y)`, for any real y: W0 of the exponential in the log domain, so
/// that the capacity formula's `W0(exp(a + ln b))` never overflows.
/// Through [`lambert_w::lambert_w0`] where `e^y` is a normal f64; beyond,
/// Newton's method on `w + ln w = y` (for y > 700, W0 > 600 and the
/// iteration converges quadratically from `y - ln y`); below, `W0(t) = t (1 + O(t))`.
pub fn ln_w0_of_exp(y: f64) -> f64 {
    if y.is_nan() {
        return f64::NAN;
    }
    if y < -700.0 {
        return y;
    }
    if y <= 700.0 {
        return lambert_w::lambert_w0(y.exp()).ln();
    }
    let mut w = y - y.ln();
    for _ in 0..50 {
        // f(w) = w + ln w - y, f'(w) = 1 + 1 / w.
        let step = (w + w.ln() - y) / (1.0 + 1.0 / w);
        w -= step;
        if step.abs() <= 1e-15 * w {
            break;
        }
    }
    w.ln()
}

/// `ln` of the bound `sqrt(p) C^((d - 1) / 4)`, `C = b / W0(b e^a)`,
/// `a = 4 / (d - 1) (ln x + 1)`, for a positive log argument x.
fn ln_capacity(x: f64, b: f64, p: f64, d: usize) -> (f64, f64) {
    let dm1 = (d - 1) as f64;
    let a = 4.0 / dm1 * (x.ln() + 1.0);
    let ln_c = b.ln() - ln_w0_of_exp(a + b.ln());
    (0.5 * p.ln() + dm1 / 4.0 * ln_c, a)
}

fn capacity_from_ln(ln_m: f64, a: f64, b: f64, note: Option<String>) -> Capacity {
    if ln_m.is_nan() {
        return undefined(Some(b), "the formula is undefined here (m = 0 or an infinite radius)".into());
    }
    let value = ln_m.exp();
    let mut note = note;
    if !value.is_finite() {
        let extra = format!("the bound exceeds f64 (log10 = {:.4})", ln_m / std::f64::consts::LN_10);
        note = Some(note.map_or(extra.clone(), |n| format!("{n}; {extra}")));
    }
    Capacity {
        value: value.is_finite().then_some(value),
        log10: ln_m.is_finite().then_some(ln_m / std::f64::consts::LN_10),
        a: Some(a),
        b: Some(b),
        fixed_point: None,
        note,
    }
}

fn undefined(b: Option<f64>, why: String) -> Capacity {
    Capacity { value: None, log10: None, a: None, b, fixed_point: None, note: Some(why) }
}

/// The largest M in [1, m_max) with `M <= g(M)` for a decreasing g, by
/// bisection on `ln M` (g is evaluated as ln g). `None` when `g(1) < 1`.
fn fixed_point(ln_g: impl Fn(f64) -> f64, m_max: f64) -> Option<f64> {
    if ln_g(1.0) < 0.0 {
        return None;
    }
    let (mut lo, mut hi) = (0.0f64, m_max.ln());
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if ln_g(mid.exp()) >= mid {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo.exp())
}

/// Capacity lower bounds: (Thm B.1 as printed, Thm B.1 with `1 - sqrt(p)`,
/// Lemma 4.2 top-K).
fn capacities(g: &Geometry, b_all: f64, r: f64, prm: &Params) -> (Capacity, Capacity, Capacity) {
    let d = g.dim;
    if d <= 1 {
        let why = || "d - 1 = 0: the exponent (d - 1) / 4 and a, b divide by zero".to_string();
        return (undefined(None, why()), undefined(None, why()), undefined(None, why()));
    }
    if g.memories == 1 || !r.is_finite() {
        let why = || "one memory: R (and the formula's ln[... / R]) is undefined".to_string();
        return (undefined(None, why()), undefined(None, why()), undefined(None, why()));
    }
    let dm1 = (d - 1) as f64;
    let b = 4.0 * g.m * g.m * prm.beta / (5.0 * dm1);
    let sp = prm.p.sqrt();
    let delta = prm.delta.unwrap_or(0.0);
    let mm = g.memories as f64;
    let denom = r - 2.0 * mm * b_all * delta;
    let printed = if r == 0.0 {
        undefined(Some(b), "R = 0 (duplicated patterns): ln[... / R] is undefined".into())
    } else {
        undefined(
            Some(b),
            format!(
                "as printed, a = 4/(d-1) (ln[2 m (sqrt(p) - 1) / (R - 2 M B delta_A)] + 1) takes the log of \
                 2 m (sqrt(p) - 1) = {:.4e} < 0 for every p in (0, 1): the formula is undefined (a flaw in the \
                 printed statement); capacity_dense_alternative uses 1 - sqrt(p)",
                2.0 * g.m * (sp - 1.0)
            ),
        )
    };
    let alternative = if r == 0.0 {
        undefined(Some(b), "R = 0 (duplicated patterns)".into())
    } else if denom <= 0.0 {
        undefined(
            Some(b),
            format!("R - 2 M B delta_A = {denom:.4e} <= 0: the polynomial's error alone exceeds the radius"),
        )
    } else {
        let ln_g = |m_val: f64| {
            let den = r - 2.0 * m_val * b_all * delta;
            if den <= 0.0 {
                return f64::NEG_INFINITY;
            }
            ln_capacity(2.0 * g.m * (1.0 - sp) / den, b, prm.p, d).0
        };
        let (ln_m, a) = ln_capacity(2.0 * g.m * (1.0 - sp) / denom, b, prm.p, d);
        let mut c = capacity_from_ln(
            ln_m,
            a,
            b,
            Some("our reading with 1 - sqrt(p) in place of sqrt(p) - 1; not a proven bound".into()),
        );
        if delta > 0.0 {
            c.fixed_point = fixed_point(ln_g, r / (2.0 * b_all * delta));
            let extra = match c.fixed_point {
                Some(_) => "M appears on both sides (2 M B delta_A): fixed_point is the largest M with M <= bound(M)",
                None => "M appears on both sides (2 M B delta_A), and bound(1) < 1: no fixed point",
            };
            c.note = c.note.map(|n| format!("{n}; {extra}"));
        }
        c
    };
    let topk = match prm.k {
        None => undefined(Some(b), "needs --k".into()),
        Some(_) if r == 0.0 => undefined(Some(b), "R = 0 (duplicated patterns): ln[... / R] is undefined".into()),
        Some(k) => {
            let (ln_m, a) = ln_capacity(g.m * (sp + k as f64 - 1.0) / r, b, prm.p, d);
            capacity_from_ln(ln_m, a, b, Some("Lemma 4.2 as printed; M does not appear on the right".into()))
        }
    };
    (printed, alternative, topk)
}

/// One query's geometry against the memories.
#[derive(Clone, Debug)]
pub struct QueryGeometry {
    /// Nearest memory mu (the pattern it should retrieve).
    pub nearest: usize,
    /// `|x - xi_mu|_2`.
    pub dist: f64,
    /// `<xi_mu, x>`.
    pub dot_nearest: f64,
    /// `max_{nu != mu} <xi_nu, x>` (-inf when M = 1).
    pub max_other_dot: f64,
}

/// Each query's nearest memory and its inner products, from the queries'
/// sweep against the memories.
pub fn query_geometry(memories: &[f32], d: usize, queries: &[f32], nb: &[Neighbours]) -> Result<Vec<QueryGeometry>> {
    let m_rows = memories.len() / d.max(1);
    check_shape("queries", queries, queries.len() / d.max(1), d, nb)?;
    let row = |i: usize| &memories[i * d..(i + 1) * d];
    nb.iter()
        .enumerate()
        .map(|(l, n)| {
            let x = &queries[l * d..(l + 1) * d];
            let mu = index("queries", n.nearest, m_rows)?.ok_or(Error::Empty { what: "memories" })?;
            // The largest <xi_nu, x> other than mu's: the best, or the
            // second best when the best is mu itself.
            let other = if n.best == Some(mu) { n.second } else { n.best };
            let other = index("queries", other, m_rows)?;
            Ok(QueryGeometry {
                nearest: mu,
                dist: dist(x, row(mu)),
                dot_nearest: dot(x, row(mu)),
                max_other_dot: other.map_or(f64::NEG_INFINITY, |nu| dot(x, row(nu))),
            })
        })
        .collect()
}

/// Measured one-step errors `|T(x) - xi_mu|_2` per query (mu = nearest).
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Dense retrieval.
    pub dense: Vec<f64>,
    /// Top-K retrieval (with `Params::k`), and whether mu was in the query's support.
    pub topk: Option<(Vec<f64>, Vec<bool>)>,
    /// Polynomial retrieval (with `Params::delta`), or why it could not run.
    pub poly: Option<std::result::Result<Vec<f64>, String>>,
    /// An error at or below this is indistinguishable from zero in the
    /// measurement (f32 rounding of z); a bound counts as holding when
    /// `measured <= bound + floor`. 0 for f64 reference errors.
    pub floor: f64,
}

/// One query's line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct QueryReport {
    /// Nearest memory mu.
    pub nearest: usize,
    /// `|x - xi_mu|_2`.
    pub distance: f64,
    /// Whether `|x - xi_mu| <= r` (the ball S_mu).
    pub in_ball: bool,
    /// Whether pattern mu meets Lemma B.1's threshold.
    pub well_separated: Option<bool>,
    /// B.34 as printed (max over nu != mu): `2 m (M-1) exp(-beta (<xi_mu, x> - max_{nu != mu} <xi_mu, xi_nu>))`.
    pub bound_dense: f64,
    /// Ramsauer et al.'s Lemma A.4 form: exponent `<xi_mu, x> - max_{nu != mu} <xi_nu, x>`.
    pub bound_dense_lemma_a4: f64,
    /// `2 m (M-1) exp(-beta (Delta_mu - 2 m |x - xi_mu|))`.
    pub bound_dense_separation: f64,
    /// Thm 4.1 as printed: `m (M + k - 2) exp(...)`, B.34's exponent (null without k).
    pub bound_topk: Option<f64>,
    /// Thm 4.1's factor with Lemma A.4's exponent.
    pub bound_topk_lemma_a4: Option<f64>,
    /// Thm 3.2 as printed: `bound_dense + 2 M B delta_A` (null without delta).
    pub bound_poly: Option<f64>,
    /// `bound_dense_lemma_a4 + 2 M m delta_A` (the 2-norm needs m).
    pub bound_poly_m: Option<f64>,
    /// Measured `|T(x) - xi_mu|_2`, dense.
    pub measured_error: Option<f64>,
    /// Measured error of top-K retrieval.
    pub measured_error_topk: Option<f64>,
    /// Whether mu was in the query's top-K support (Thm 4.1 assumes it).
    pub nearest_in_topk_support: Option<bool>,
    /// Measured error of polynomial retrieval.
    pub measured_error_poly: Option<f64>,
}

/// For one bound: on how many queries it held.
#[derive(Clone, Debug, Serialize)]
pub struct BoundCheck {
    /// The bound's key in `queries`.
    pub bound: &'static str,
    /// Against which measured error.
    pub against: &'static str,
    /// Queries where both exist.
    pub queries: usize,
    /// Fraction of them where `measured <= bound + floor`.
    pub holds_fraction: f64,
    /// Queries meeting the theorem's hypotheses (in the ball, pattern well
    /// separated; for top-K also mu in the support).
    pub hypothesis_queries: usize,
    /// Fraction of those where it held (null when there are none).
    pub hypothesis_holds_fraction: Option<f64>,
    /// The query with the largest `measured / bound` among the failures.
    pub worst_query: Option<usize>,
}

/// The planner's view (efficiency criterion and verdict).
#[derive(Clone, Debug, Serialize)]
pub struct Efficiency {
    /// B.
    #[serde(rename = "B")]
    pub b: f64,
    /// `sqrt(ln tau)`, `tau = max(M, L)`.
    pub sqrt_ln_tau: f64,
    /// `B / sqrt(ln tau)`.
    pub ratio: f64,
    /// Whether `B / sqrt(ln tau) < 1` (the almost-linear regime).
    pub b_is_small: bool,
    /// `tau`.
    pub tau: usize,
    /// Tolerance given to the planner.
    pub tolerance: f64,
    /// The planner's choice for one step within the tolerance.
    pub planner_choice: Option<String>,
    /// Its reason, or why it could not plan.
    pub planner_reason: String,
}

/// The whole report; its JSON keys are an interface (`analyze --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Memories M.
    pub memories: usize,
    /// Dimension d.
    pub dim: usize,
    /// Queries L (0 without queries).
    pub num_queries: usize,
    /// beta.
    pub beta: f64,
    /// delta_A (null: exact dense).
    pub delta_a: Option<f64>,
    /// K of top-K.
    pub k: Option<usize>,
    /// Failure probability p.
    pub p: f64,
    /// `max |xi|_2`.
    pub m: f64,
    /// `max |entry|` of memories and queries.
    #[serde(rename = "B")]
    pub b: f64,
    /// `0.5 min |xi_mu - xi_nu|` (null when M = 1).
    #[serde(rename = "R")]
    pub r: Option<f64>,
    /// The ball radius r used (R unless `--radius`).
    pub radius: Option<f64>,
    /// Patterns equal to an earlier one.
    pub duplicates: usize,
    /// Patterns with an exact twin.
    pub duplicate_patterns: usize,
    /// `min Delta_mu`.
    pub delta_min: Option<f64>,
    /// Median Delta_mu (the lower middle one for even M).
    pub delta_median: Option<f64>,
    /// Fraction of patterns with `Delta_mu > 0`.
    pub delta_positive_fraction: f64,
    /// Lemma B.1's (dense / poly) fraction of well-separated patterns.
    pub well_separated_fraction: Option<f64>,
    /// Smallest beta making every pattern well separated (Lemma B.1).
    pub min_beta_well_separated: Option<f64>,
    /// Thm 4.2's fraction (top-K).
    pub well_separated_fraction_topk: Option<f64>,
    /// Thm 4.2's smallest beta.
    pub min_beta_well_separated_topk: Option<f64>,
    /// Lemma B.1 in full.
    pub threshold_dense: Threshold,
    /// Thm 4.2 in full (null without k).
    pub threshold_topk: Option<Threshold>,
    /// Thm B.1 as printed (null: undefined, see notes).
    pub capacity_dense: Option<f64>,
    /// Lemma 4.2 (null without k or where undefined).
    pub capacity_topk: Option<f64>,
    /// Thm B.1 in full.
    pub capacity_dense_detail: Capacity,
    /// Thm B.1 with `1 - sqrt(p)` (our reading).
    pub capacity_dense_alternative: Capacity,
    /// Lemma 4.2 in full.
    pub capacity_topk_detail: Capacity,
    /// The efficiency criterion and the planner's verdict.
    pub efficiency: Efficiency,
    /// Per query.
    pub queries: Vec<QueryReport>,
    /// Per bound, the fraction of queries it held for.
    pub bound_checks: Vec<BoundCheck>,
    /// Why values are null, and how to read them.
    pub notes: Vec<String>,
}

/// Inputs for the query part of the report.
pub struct QueryInputs<'a> {
    /// `[L, d]` row-major.
    pub queries: &'a [f32],
    /// The queries' geometry ([`query_geometry`]).
    pub geometry: &'a [QueryGeometry],
    /// Measured errors (empty vectors: not measured).
    pub measured: &'a Measured,
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[(s.len() - 1) / 2])
}

/// Assemble the report: thresholds, capacities, the planner's verdict and,
/// with queries, every bound beside the measured errors.
pub fn report(g: &Geometry, memories: &[f32], q: Option<QueryInputs<'_>>, prm: &Params) -> Result<Report> {
    prm.validate()?;
    let mm = g.memories;
    let mut notes = Vec::new();
    let b_queries = q.as_ref().map_or(0.0, |q| q.queries.iter().fold(0.0f64, |a, &v| a.max(f64::from(v).abs())));
    let b = g.b_memories.max(b_queries);
    let r = prm.radius.unwrap_or(g.r);
    if mm == 1 {
        notes.push("one memory: R, Delta and the neighbour-based quantities are undefined (null)".into());
    }
    if g.duplicates > 0 {
        notes.push(format!(
            "{} duplicated pattern(s) ({} patterns have an exact twin): R = 0, so S_mu is a point and every \
             threshold is infinite",
            g.duplicates, g.duplicate_patterns
        ));
    }
    if prm.radius.is_some() {
        notes.push(format!("ball radius r = {r:.6e} from --radius (R = {:.6e}); thresholds and in_ball use r", g.r));
    }
    notes.push(
        "B.34 and Thm 4.1 print max over all nu in the exponent, which includes nu = mu; read as nu != mu (a typo)"
            .into(),
    );
    let delta = prm.delta.unwrap_or(0.0);
    let dense_arg = 2.0 * (mm as f64 - 1.0) * g.m / (r - 2.0 * mm as f64 * b * delta);
    let dense_undefined = if r == 0.0 {
        Some("R = 0 (duplicated patterns): ln(2 (M - 1) m / R) is infinite, no pattern is well separated".to_string())
    } else if r - 2.0 * mm as f64 * b * delta <= 0.0 {
        Some(format!(
            "R - 2 M B delta_A = {:.4e} <= 0: Lemma B.1's logarithm is undefined (the polynomial's error alone \
             exceeds the radius)",
            r - 2.0 * mm as f64 * b * delta
        ))
    } else {
        None
    };
    let threshold_dense = threshold(dense_arg, dense_undefined, g, r, prm.beta);
    let threshold_topk = prm.k.map(|k| {
        let undefined =
            (r == 0.0).then(|| "R = 0 (duplicated patterns): ln((M + k - 2) m / R) is infinite".to_string());
        threshold((mm as f64 + k as f64 - 2.0) * g.m / r, undefined, g, r, prm.beta)
    });
    for (name, t) in [("Lemma B.1", Some(&threshold_dense)), ("Thm 4.2", threshold_topk.as_ref())] {
        if let Some(n) = t.and_then(|t| t.note.as_ref()) {
            notes.push(format!("{name}: {n}"));
        }
    }
    let (cap_printed, cap_alt, cap_topk) = capacities(g, b, r, prm);
    for (name, c) in [("Thm B.1", &cap_printed), ("Thm B.1 (1 - sqrt(p))", &cap_alt), ("Lemma 4.2", &cap_topk)] {
        if let Some(n) = &c.note {
            notes.push(format!("{name}: {n}"));
        }
    }

    let l = q.as_ref().map_or(0, |q| q.geometry.len());
    let eff = crate::feature::plan::efficiency(b, mm, l.max(1));
    let stats_queries = q.as_ref().map_or(memories, |q| q.queries);
    let (planner_choice, planner_reason) =
        match crate::stats::ProblemStats::new(stats_queries, memories, None, g.dim, prm.beta, 1)
            .and_then(|s| crate::planner::plan(&s, prm.tolerance, prm.max_state_bytes))
        {
            Ok(p) => (Some(p.choice.name().to_string()), p.reason),
            Err(e) => (None, e.to_string()),
        };
    let efficiency = Efficiency {
        b,
        sqrt_ln_tau: eff.sqrt_ln_tau,
        ratio: eff.ratio,
        b_is_small: eff.b_is_small,
        tau: crate::feature::plan::tau(mm, l.max(1)),
        tolerance: prm.tolerance,
        planner_choice,
        planner_reason,
    };

    let well_sep = |mu: usize| threshold_dense.value.map(|t| g.delta[mu] >= t);
    let mut queries = Vec::with_capacity(l);
    let mut bound_checks = Vec::new();
    if let Some(q) = &q {
        let meas = q.measured;
        let two_m_m1 = 2.0 * g.m * (mm as f64 - 1.0);
        for (i, qg) in q.geometry.iter().enumerate() {
            let mu = qg.nearest;
            let printed_exp = qg.dot_nearest - g.max_other_dot[mu];
            let a4_exp = qg.dot_nearest - qg.max_other_dot;
            let bound_dense = two_m_m1 * (-prm.beta * printed_exp).exp();
            let bound_a4 = two_m_m1 * (-prm.beta * a4_exp).exp();
            let bound_sep = two_m_m1 * (-prm.beta * (g.delta[mu] - 2.0 * g.m * qg.dist)).exp();
            let topk_factor = prm.k.map(|k| g.m * (mm as f64 + k as f64 - 2.0));
            let topk_meas = meas.topk.as_ref();
            let poly_meas = match &meas.poly {
                Some(Ok(v)) => v.get(i).copied(),
                _ => None,
            };
            queries.push(QueryReport {
                nearest: mu,
                distance: qg.dist,
                in_ball: qg.dist <= r,
                well_separated: well_sep(mu),
                bound_dense,
                bound_dense_lemma_a4: bound_a4,
                bound_dense_separation: bound_sep,
                bound_topk: topk_factor.map(|f| f * (-prm.beta * printed_exp).exp()),
                bound_topk_lemma_a4: topk_factor.map(|f| f * (-prm.beta * a4_exp).exp()),
                bound_poly: prm.delta.map(|dl| bound_dense + 2.0 * mm as f64 * b * dl),
                bound_poly_m: prm.delta.map(|dl| bound_a4 + 2.0 * mm as f64 * g.m * dl),
                measured_error: meas.dense.get(i).copied(),
                measured_error_topk: topk_meas.and_then(|t| t.0.get(i).copied()),
                nearest_in_topk_support: topk_meas.and_then(|t| t.1.get(i).copied()),
                measured_error_poly: poly_meas,
            });
        }
        if let Some(Err(why)) = &meas.poly {
            notes.push(format!("polynomial retrieval could not run: {why}"));
        }
        type Pick = fn(&QueryReport) -> (Option<f64>, Option<f64>);
        let checks: [(&'static str, &'static str, Pick); 7] = [
            ("bound_dense", "measured_error", |q| (Some(q.bound_dense), q.measured_error)),
            ("bound_dense_lemma_a4", "measured_error", |q| (Some(q.bound_dense_lemma_a4), q.measured_error)),
            ("bound_dense_separation", "measured_error", |q| (Some(q.bound_dense_separation), q.measured_error)),
            ("bound_topk", "measured_error_topk", |q| (q.bound_topk, q.measured_error_topk)),
            ("bound_topk_lemma_a4", "measured_error_topk", |q| (q.bound_topk_lemma_a4, q.measured_error_topk)),
            ("bound_poly", "measured_error_poly", |q| (q.bound_poly, q.measured_error_poly)),
            ("bound_poly_m", "measured_error_poly", |q| (q.bound_poly_m, q.measured_error_poly)),
        ];
        for (bound, against, pick) in checks {
            let topk = against == "measured_error_topk";
            let mut n = 0;
            let mut held = 0;
            let mut hyp_n = 0;
            let mut hyp_held = 0;
            let mut worst: Option<(usize, f64)> = None;
            for (i, qr) in queries.iter().enumerate() {
                let (Some(bd), Some(me)) = pick(qr) else { continue };
                n += 1;
                let ok = me <= bd + meas.floor;
                held += usize::from(ok);
                let hyp = qr.in_ball
                    && qr.well_separated == Some(true)
                    && (!topk || qr.nearest_in_topk_support == Some(true));
                if hyp {
                    hyp_n += 1;
                    hyp_held += usize::from(ok);
                }
                if !ok {
                    let ratio = me / bd;
                    if worst.is_none_or(|(_, w)| ratio > w) {
                        worst = Some((i, ratio));
                    }
                }
            }
            if n > 0 {
                bound_checks.push(BoundCheck {
                    bound,
                    against,
                    queries: n,
                    holds_fraction: held as f64 / n as f64,
                    hypothesis_queries: hyp_n,
                    hypothesis_holds_fraction: (hyp_n > 0).then(|| hyp_held as f64 / hyp_n as f64),
                    worst_query: worst.map(|w| w.0),
                });
            }
        }
    }
    let finite_delta: Vec<f64> = g.delta.iter().copied().filter(|v| v.is_finite()).collect();
    Ok(Report {
        memories: mm,
        dim: g.dim,
        num_queries: l,
        beta: prm.beta,
        delta_a: prm.delta,
        k: prm.k,
        p: prm.p,
        m: g.m,
        b,
        r: g.r.is_finite().then_some(g.r),
        radius: r.is_finite().then_some(r),
        duplicates: g.duplicates,
        duplicate_patterns: g.duplicate_patterns,
        delta_min: finite_delta.iter().copied().reduce(f64::min),
        delta_median: median(&finite_delta),
        delta_positive_fraction: g.delta.iter().filter(|&&v| v > 0.0).count() as f64 / mm as f64,
        well_separated_fraction: threshold_dense.fraction,
        min_beta_well_separated: threshold_dense.min_beta,
        well_separated_fraction_topk: threshold_topk.as_ref().and_then(|t| t.fraction),
        min_beta_well_separated_topk: threshold_topk.as_ref().and_then(|t| t.min_beta),
        threshold_dense,
        threshold_topk,
        capacity_dense: cap_printed.value,
        capacity_topk: cap_topk.value,
        capacity_dense_detail: cap_printed,
        capacity_dense_alternative: cap_alt,
        capacity_topk_detail: cap_topk,
        efficiency,
        queries,
        bound_checks,
        notes,
    })
}

fn opt(v: Option<f64>) -> String {
    v.map_or("undefined".to_string(), |v| format!("{v:.6e}"))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "memories: M = {}, d = {}; queries: {}", self.memories, self.dim, self.num_queries)?;
        writeln!(f, "m = max |xi| = {:.6e}, B = max |entry| = {:.6e}", self.m, self.b)?;
        writeln!(
            f,
            "R = {} (ball radius used: {}), duplicates: {} ({} patterns with a twin)",
            opt(self.r),
            opt(self.radius),
            self.duplicates,
            self.duplicate_patterns
        )?;
        writeln!(
            f,
            "Delta: min {}, median {}, positive for {:.2}% of patterns",
            opt(self.delta_min),
            opt(self.delta_median),
            100.0 * self.delta_positive_fraction
        )?;
        let t = &self.threshold_dense;
        writeln!(
            f,
            "well separated (Lemma B.1, beta = {}): threshold {}, fraction {}, smallest beta for all {}",
            self.beta,
            opt(t.value),
            opt(t.fraction),
            opt(t.min_beta)
        )?;
        if let Some(t) = &self.threshold_topk {
            writeln!(
                f,
                "well separated (Thm 4.2, k = {}): threshold {}, fraction {}, smallest beta for all {}",
                self.k.unwrap_or(0),
                opt(t.value),
                opt(t.fraction),
                opt(t.min_beta)
            )?;
        }
        let e = &self.efficiency;
        writeln!(
            f,
            "efficiency: B = {:.4}, sqrt(ln tau) = {:.4} (tau = {}), ratio {:.3} -> {}; planner (tolerance {:.1e}): {} ({})",
            e.b,
            e.sqrt_ln_tau,
            e.tau,
            e.ratio,
            if e.b_is_small { "B small (almost-linear regime)" } else { "B large (dense wins)" },
            e.tolerance,
            e.planner_choice.as_deref().unwrap_or("none"),
            e.planner_reason
        )?;
        writeln!(
            f,
            "capacity (p = {}): Thm B.1 {}, with 1 - sqrt(p) {} (log10 {}, fixed point {}), Lemma 4.2 {} (log10 {})",
            self.p,
            opt(self.capacity_dense),
            opt(self.capacity_dense_alternative.value),
            opt(self.capacity_dense_alternative.log10),
            opt(self.capacity_dense_alternative.fixed_point),
            opt(self.capacity_topk),
            opt(self.capacity_topk_detail.log10)
        )?;
        if !self.queries.is_empty() {
            let in_ball = self.queries.iter().filter(|q| q.in_ball).count();
            writeln!(f, "queries in their nearest pattern's ball: {in_ball} of {}", self.queries.len())?;
            for c in &self.bound_checks {
                writeln!(
                    f,
                    "  {:<24} vs {:<20} holds for {:>6.2}% of {} queries; under the hypotheses: {} of {}",
                    c.bound,
                    c.against,
                    100.0 * c.holds_fraction,
                    c.queries,
                    c.hypothesis_holds_fraction.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v)),
                    c.hypothesis_queries
                )?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambert_w_matches_known_values_in_every_regime() {
        // W0(1) = Omega, W0(e) = 1, W0(10), W0(1e300) from the defining identity.
        let cases = [(1.0f64, 0.567_143_290_409_783_8), (std::f64::consts::E, 1.0), (10.0, 1.745_528_002_740_699_4)];
        for (x, w) in cases {
            let got = ln_w0_of_exp(x.ln()).exp();
            assert!((got - w).abs() <= 1e-14 * w.max(1.0), "W0({x}) = {got}, want {w}");
        }
        // Beyond f64: w + ln w = y must hold, and the two methods agree at the seam.
        for y in [700.0, 700.5, 1e3, 1e6, 1e12] {
            let w = ln_w0_of_exp(y).exp();
            assert!(((w + w.ln()) - y).abs() <= 1e-12 * y, "y = {y}: w = {w}");
        }
        let near = (ln_w0_of_exp(700.0) - ln_w0_of_exp(700.0 + 1e-9)).abs();
        assert!(near < 1e-9, "{near}");
        // Tiny arguments: W0(t) ~ t.
        assert!((ln_w0_of_exp(-800.0) + 800.0).abs() < 1e-12);
        assert!((ln_w0_of_exp(-30.0) + 30.0).abs() < 1e-12);
    }

    #[test]
    fn smallest_beta_is_closed_form_in_every_case() {
        // gap > 0, c > 0: beta* = c / gap, and the condition holds exactly there.
        let (lo, hi, _) = solve_beta(2.0, 1.5, 0.5);
        assert_eq!((lo, hi), (Some(2.0), None));
        let beta = 2.0;
        assert!(1.5 >= 2.0 / beta + 0.5 - 1e-15);
        // gap > 0, c <= 0: every beta.
        assert_eq!(solve_beta(-1.0, 1.0, 0.5).0, Some(0.0));
        // gap < 0, c >= 0: none.
        let (lo, _, note) = solve_beta(1.0, 0.1, 0.5);
        assert!(lo.is_none() && note.unwrap().contains("no beta"));
        // gap < 0, c < 0: only up to c / gap = 2.5.
        let (lo, hi, _) = solve_beta(-1.0, 0.1, 0.5);
        assert_eq!(lo, Some(0.0));
        assert!((hi.unwrap() - 2.5).abs() < 1e-12);
    }

    fn geometry_of(mem: &[f32], m: usize, d: usize) -> Geometry {
        let mat = crate::cpu::Matrix::from_f32(m, d, mem);
        let nb = crate::cpu::separation::neighbours(&mat, &mat, true);
        geometry(mem, m, d, &nb).unwrap()
    }

    fn params(beta: f64) -> Params {
        Params { beta, delta: None, k: None, p: 0.01, radius: None, tolerance: 1e-2, max_state_bytes: 1 << 27 }
    }

    #[test]
    fn geometry_by_hand() {
        // (3, 0), (0, 4), (3, 0): a duplicate pair, R = 0.
        let g = geometry_of(&[3.0, 0.0, 0.0, 4.0, 3.0, 0.0], 3, 2);
        assert_eq!((g.m, g.b_memories, g.r), (4.0, 4.0, 0.0));
        assert_eq!((g.duplicates, g.duplicate_patterns), (1, 2));
        // Delta_0 = 9 - max(<xi0, xi1> = 0, <xi0, xi2> = 9) = 0; Delta_1 = 16 - 0.
        assert_eq!(g.delta, vec![0.0, 16.0, 0.0]);
        let rep = report(&g, &[3.0, 0.0, 0.0, 4.0, 3.0, 0.0], None, &params(1.0)).unwrap();
        assert_eq!(rep.well_separated_fraction, None);
        assert!(rep.notes.iter().any(|n| n.contains("duplicated")), "{:?}", rep.notes);
        // Three copies of one pattern: 2 redundant rows, 3 with a twin.
        let g = geometry_of(&[1.0, 1.0, 1.0], 3, 1);
        assert_eq!((g.duplicates, g.duplicate_patterns), (2, 3));
    }

    #[test]
    fn thresholds_and_min_beta_on_an_orthogonal_pair() {
        // xi = e1, e2 (m = 1, R = sqrt(2) / 2, Delta = 1). Lemma B.1 at r = R:
        // 2 m R = sqrt(2) > Delta, so no beta works.
        let mem = [1.0, 0.0, 0.0, 1.0];
        let g = geometry_of(&mem, 2, 2);
        let rep = report(&g, &mem, None, &params(10.0)).unwrap();
        assert_eq!(rep.min_beta_well_separated, None);
        assert_eq!(rep.well_separated_fraction, Some(0.0));
        // With r = 0.1: threshold ln(2 / 0.1) / beta + 0.2, beta* = ln 20 / 0.8.
        let prm = Params { radius: Some(0.1), ..params(10.0) };
        let rep = report(&g, &mem, None, &prm).unwrap();
        let want = 20f64.ln() / 0.8;
        assert!((rep.min_beta_well_separated.unwrap() - want).abs() < 1e-12);
        assert_eq!(rep.well_separated_fraction, Some(1.0));
        let at = report(&g, &mem, None, &Params { beta: want * (1.0 - 1e-9), ..prm.clone() }).unwrap();
        assert_eq!(at.well_separated_fraction, Some(0.0), "just below beta* the condition fails");
    }

    #[test]
    fn capacity_notes_and_values() {
        let mem = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let g = geometry_of(&mem, 3, 3);
        let prm = Params { k: Some(2), delta: Some(1e-3), ..params(2.0) };
        let rep = report(&g, &mem, None, &prm).unwrap();
        assert_eq!(rep.capacity_dense, None);
        assert!(rep.notes.iter().any(|n| n.contains("sqrt(p) - 1") && n.contains("undefined")), "{:?}", rep.notes);
        // Lemma 4.2 by hand: d = 3, m = 1, R = sqrt(2)/2, k = 2, p = 0.01.
        let r = 0.5f64.sqrt();
        let b = 4.0 * 2.0 / (5.0 * 2.0);
        let a = 4.0 / 2.0 * ((0.1 + 1.0) / r).ln() + 2.0;
        let w = lambert_w::lambert_w0(b * a.exp());
        let want = 0.1 * (b / w).powf(0.5);
        let got = rep.capacity_topk.unwrap();
        assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
        // Here the alternative reading's bound(1) < 1: no fixed point, said so.
        let alt = &rep.capacity_dense_alternative;
        assert!(alt.value.unwrap() < 1.0 && alt.fixed_point.is_none(), "{alt:?}");
        assert!(alt.note.as_deref().unwrap().contains("no fixed point"), "{alt:?}");
        // One memory: undefined with a reason, and no NaN anywhere.
        let g1 = geometry_of(&[1.0, 2.0, 3.0], 1, 3);
        let rep = report(&g1, &[1.0, 2.0, 3.0], None, &prm).unwrap();
        assert!(rep.capacity_topk.is_none() && rep.r.is_none() && rep.well_separated_fraction == Some(1.0));
        assert!(serde_json::to_string(&rep).unwrap().contains("one memory"));
        // d = 1: undefined with a reason.
        let g1 = geometry_of(&[1.0, 2.0], 2, 1);
        let rep = report(&g1, &[1.0, 2.0], None, &prm).unwrap();
        assert!(rep.capacity_topk.is_none() && rep.capacity_topk_detail.note.as_deref().unwrap().contains("d - 1"));
    }

    #[test]
    fn fixed_point_of_a_decreasing_bound() {
        // bound(M) = 100 / M meets M at 10; bound(M) = 0.5 / M never reaches 1.
        let fp = fixed_point(|m: f64| (100.0 / m).ln(), 1e6).unwrap();
        assert!((fp - 10.0).abs() < 1e-9, "{fp}");
        assert_eq!(fixed_point(|m: f64| (0.5 / m).ln(), 1e6), None);
        // With a large d the sphere bound grows with beta: the fixed point
        // of the 1 - sqrt(p) reading exists and satisfies M = bound(M).
        let (d, m, beta, p, r, b, delta) = (64usize, 1.0f64, 50.0f64, 0.01f64, 0.4f64, 0.2f64, 1e-4f64);
        let bb = 4.0 * m * m * beta / (5.0 * 63.0);
        let ln_g = |mm: f64| ln_capacity(2.0 * m * (1.0 - p.sqrt()) / (r - 2.0 * mm * b * delta), bb, p, d).0;
        let fp = fixed_point(ln_g, r / (2.0 * b * delta)).unwrap();
        assert!((ln_g(fp) - fp.ln()).abs() < 1e-9, "bound({fp}) = {}", ln_g(fp).exp());
    }

    #[test]
    fn bad_parameters_name_their_flag() {
        let cases: [(Params, &str); 6] = [
            (params(-1.0), "beta"),
            (Params { delta: Some(1.5), ..params(1.0) }, "delta"),
            (Params { k: Some(0), ..params(1.0) }, "k"),
            (Params { p: 1.0, ..params(1.0) }, "p"),
            (Params { radius: Some(f64::NAN), ..params(1.0) }, "radius"),
            (Params { tolerance: 0.0, ..params(1.0) }, "tolerance"),
        ];
        for (p, flag) in cases {
            match p.validate() {
                Err(Error::InvalidParameter { name, .. }) => assert_eq!(name, flag),
                other => panic!("{flag}: {other:?}"),
            }
        }
    }
}
