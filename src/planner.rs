//! Choosing a kernel (feature-map) method's parameters, without a device:
//! the polynomial's degree for `--method poly` ([`poly_choice`]), and the
//! planner behind `--method auto` ([`plan`]), which picks the cheapest method
//! whose output is *guaranteed* within a tolerance of exact dense retrieval.
//!
//! The guarantee for the polynomial path has two parts, both in max-norm:
//! - approximation: `feature::poly::ratio_error_bound`, `2 B' delta / (1 - delta)` with the
//!   polynomial's verified (achieved) delta and `B'` bounding the values.
//!   This is tighter than Lemma 3.2's `2 M B delta_A` by the factor M (the
//!   derivation is in feature::poly); both are reported, the planner uses the
//!   tighter one;
//! - f32 rounding on the GPU: a worst-case (Higham `gamma_n`) bound, see
//!   [`f32_rounding_bound`]. The typical error is far below it.
//!
//! Linear features, random features and top-K are not offered by the planner:
//! the linear kernel is a different kernel (no bound against softmax at
//! all), random features only have a probabilistic bound, and top-K has no
//! a-priori bound from B and M alone (the weight left outside the K largest
//! scores depends on the score gaps, known only after scoring every memory,
//! which costs as much as dense). [`Plan`] lists them with these reasons.

use std::fmt;

use crate::error::{Error, Result};
use crate::feature::plan as cost;
use crate::feature::poly::{self, Polynomial, MAX_DEGREE};
use crate::feature::PART_ROWS;
use crate::method::{default_feature_count, Method};
use crate::stats::ProblemStats;

/// The polynomial chosen for a problem, with its numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct PolyReport {
    /// Degree g.
    pub degree: usize,
    /// Rank `r = C(d + g, g)`.
    pub rank: u64,
    /// Range R of the scores the polynomial covers.
    pub range: f64,
    /// `B = max(|X|_max, |Xi|_max)` (with values: `max(B, |V|_max)`).
    pub b: f64,
    /// delta_A asked for.
    pub delta: f64,
    /// Verified relative error of P against `e^t` on `[-R, R]`.
    pub achieved_delta: f64,
    /// Lemma 3.2's a-priori bound `2 M B delta_A` (with the asked delta_A).
    pub lemma_bound: f64,
    /// The tighter bound `2 B delta / (1 - delta)` (achieved delta).
    pub ratio_bound: f64,
    /// Worst-case effect of f32 rounding on the GPU ([`f32_rounding_bound`]).
    pub rounding_bound: f64,
    /// Bytes of S and n on the device.
    pub state_bytes: u64,
}

impl PolyReport {
    /// The guaranteed max-norm distance to exact dense retrieval (one step):
    /// approximation plus rounding.
    pub fn guaranteed_error(&self) -> f64 {
        self.ratio_bound + self.rounding_bound
    }
}

impl fmt::Display for PolyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "poly: Taylor degree g = {}, rank r = {}, R = {:.4}, B = {:.4}, delta_A asked {:.1e}, achieved {:.3e}; \
             Lemma 3.2 bound 2 M B delta_A = {:.3e}; tighter bound 2 B delta / (1 - delta) = {:.3e} \
             + f32 rounding <= {:.3e}; S and n: {} bytes",
            self.degree,
            self.rank,
            self.range,
            self.b,
            self.delta,
            self.achieved_delta,
            self.lemma_bound,
            self.ratio_bound,
            self.rounding_bound,
            self.state_bytes
        )
    }
}

/// Worst-case max-norm error that f32 arithmetic adds to the GPU's
/// polynomial path, relative to exact arithmetic with the same polynomial.
///
/// Every sum the GPU forms (S, n, the answer) is of products of terms whose
/// absolute values add up to at most `M |c|(R) max|v|` for the numerator and
/// `M |c|(R)` for the normaliser, `|c|(R) = sum_k |c_k| R^k`, while the exact
/// normaliser is at least `M min P`. With `gamma = n u / (1 - n u)`,
/// u = 2^-24 and n the longest chain of roundings (a part's
/// `PART_ROWS` (1024) rows, the parts, the r features, the g multiplies of a
/// monomial and the two f32 coefficients), numerator and normaliser are off
/// by at most `gamma |c|(R) M` (times max|v|), hence z by at most
/// `2 gamma cond B' / (1 - gamma cond)` with `cond = |c|(R) / min P`
/// (the polynomial's condition number). Infinite when `gamma cond >= 1`.
pub fn f32_rounding_bound(b_values: f64, condition: f64, m: usize, rank: u64, degree: usize) -> f64 {
    let n = (PART_ROWS + m.div_ceil(PART_ROWS) + degree + 6) as f64 + rank as f64;
    let u = f64::from(f32::EPSILON) / 2.0;
    let gamma = n * u / (1.0 - n * u);
    let gc = gamma * condition;
    if gc.is_nan() || gc >= 1.0 {
        return f64::INFINITY;
    }
    2.0 * gc * b_values / (1.0 - gc)
}

/// The Taylor polynomial for `stats`: the lowest degree whose verified
/// relative error on `[-R, R]` is at most `delta` (or the given `degree`),
/// with its bounds. Fails with a typed error for a bad delta or degree, a
/// range no degree can cover, or S and n beyond `max_state_bytes`
/// (naming the rank and the bytes).
///
/// Why Taylor only: its coefficients `1/k!` do not depend on R, so S and n
/// built for one query set serve every later one whose R the degree covers;
/// and with all `c_k > 0` no sign split is needed (fitted polynomials were removed: their
/// coefficients depend on R and change sign).
pub fn poly_choice(
    stats: &ProblemStats,
    delta: f64,
    degree: Option<usize>,
    max_state_bytes: u64,
) -> Result<PolyReport> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(Error::invalid("delta", delta, "delta_A must lie in (0, 1)"));
    }
    let range = stats.range();
    let p = match degree {
        Some(g) => {
            let p = Polynomial::new(g, range)?;
            if p.min_value <= 0.0 {
                return Err(Error::invalid(
                    "degree",
                    g,
                    format!("the Taylor polynomial of this degree is not positive on [-R, R], R = {range:.4}"),
                ));
            }
            p
        }
        None => poly::choose_polynomial(range, delta, stats.d, MAX_DEGREE)?.poly,
    };
    let mem = poly::check_rank(stats.d, p.degree, stats.dv, max_state_bytes)?;
    let b = stats.b_bound();
    Ok(PolyReport {
        degree: p.degree,
        rank: mem.rank,
        range,
        b,
        delta,
        achieved_delta: p.achieved_delta,
        lemma_bound: poly::lemma_3_2_bound(stats.m, b, delta),
        ratio_bound: poly::ratio_error_bound(b, p.achieved_delta),
        rounding_bound: f32_rounding_bound(stats.b_values, p.condition, stats.m, mem.rank, p.degree),
        state_bytes: mem.state_bytes,
    })
}

/// One method the planner considered.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The method (resolved: a polynomial carries its degree).
    pub method: Method,
    /// Estimated flops of one step (feature::plan).
    pub flops: Option<f64>,
    /// Guaranteed max-norm distance to exact dense retrieval, if any.
    pub error_bound: Option<f64>,
    /// Whether it meets the tolerance.
    pub feasible: bool,
    /// Why (not).
    pub reason: String,
    /// The polynomial's numbers, for the polynomial path.
    pub poly: Option<PolyReport>,
}

/// The planner's decision, inspectable and printable.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Tolerance asked for (max-norm distance to dense).
    pub tolerance: f64,
    /// The efficiency criterion: B against `sqrt(ln tau)`.
    pub efficiency: cost::Efficiency,
    /// `tau = max(M, L)`.
    pub tau: usize,
    /// Every method considered, feasible or not.
    pub candidates: Vec<Candidate>,
    /// The method chosen.
    pub choice: Method,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.efficiency;
        writeln!(
            f,
            "plan (tolerance {:.1e}): B = {:.4}, sqrt(ln tau) = {:.4} (tau = {}), B / sqrt(ln tau) = {:.3} -> {}",
            self.tolerance,
            e.b,
            e.sqrt_ln_tau,
            self.tau,
            e.ratio,
            if e.b_is_small {
                "B small: the almost-linear regime of Theorem 3.1"
            } else {
                "B large: outside the almost-linear regime, g and r grow fast"
            }
        )?;
        for c in &self.candidates {
            let flops = c.flops.map_or("-".to_string(), |v| format!("{v:.3e}"));
            let bound = c.error_bound.map_or("none".to_string(), |v| format!("{v:.3e}"));
            let gr = c.poly.as_ref().map_or(String::new(), |p| format!(" g = {}, r = {},", p.degree, p.rank));
            writeln!(
                f,
                "  {:<7}{} flops {}, error bound {}: {}{}",
                c.method.name(),
                gr,
                flops,
                bound,
                if c.feasible { "feasible; " } else { "excluded; " },
                c.reason
            )?;
        }
        write!(f, "  choice: {} ({})", self.choice.name(), self.reason)
    }
}

/// Plan one retrieval step of `stats` within `tolerance` (max-norm, against
/// exact dense retrieval): the cheapest method, by feature::plan's flop
/// estimates, among those with a guaranteed error bound at most `tolerance`.
/// `max_state_bytes` caps S and n (the device's largest storage binding).
pub fn plan(stats: &ProblemStats, tolerance: f64, max_state_bytes: u64) -> Result<Plan> {
    if !(tolerance.is_finite() && tolerance > 0.0) {
        return Err(Error::invalid("tolerance", tolerance, "must be finite and > 0"));
    }
    if stats.steps > 1 {
        return Err(Error::unsupported(
            "max_steps",
            Some("auto"),
            "the planner guarantees one retrieval step; errors of iterated approximate steps compound, so pick a \
             method explicitly for more steps",
        ));
    }
    let (d, dv, m, l) = (stats.d, stats.dv, stats.m, stats.l);
    let efficiency = cost::efficiency(stats.b, m, l);
    let mut candidates = vec![Candidate {
        method: Method::Dense,
        flops: Some(cost::dense_flops(d, dv, m, l)),
        error_bound: Some(0.0),
        feasible: true,
        reason: "exact (f32 rounding only)".into(),
        poly: None,
    }];
    // Half the tolerance for the approximation, the rest for rounding.
    let b = stats.b_bound();
    let half = tolerance / 2.0;
    let delta = (half / (2.0 * b + half)).min(0.5);
    candidates.push(match poly_choice(stats, delta, None, max_state_bytes) {
        Ok(rep) => {
            let bound = rep.guaranteed_error();
            let feasible = bound <= tolerance;
            Candidate {
                method: Method::Poly { delta, degree: Some(rep.degree) },
                flops: Some(cost::poly_flops(rep.rank, rep.degree, dv, m, l)),
                error_bound: Some(bound),
                feasible,
                reason: if feasible {
                    format!(
                        "2 B delta / (1 - delta) = {:.3e} (delta = {:.3e}) + f32 rounding {:.3e}",
                        rep.ratio_bound, rep.achieved_delta, rep.rounding_bound
                    )
                } else {
                    format!("f32 rounding bound {:.3e} leaves no room within the tolerance", rep.rounding_bound)
                },
                poly: Some(rep),
            }
        }
        Err(e) => Candidate {
            method: Method::Poly { delta, degree: None },
            flops: None,
            error_bound: None,
            feasible: false,
            // The delta here is the planner's own share of the tolerance,
            // not a flag the user gave: say so rather than "invalid --delta".
            reason: match e {
                Error::InvalidParameter { name: "delta", value, why } => {
                    format!("at delta_A = {value} (the planner's share of the tolerance): {why}")
                }
                other => other.to_string(),
            },
            poly: None,
        },
    });
    candidates.push(Candidate {
        method: Method::Linear,
        flops: Some(cost::linear_flops(d, dv, m, l)),
        error_bound: None,
        feasible: false,
        reason: "elu(x) + 1 is another kernel, not an approximation of exp: no bound against dense".into(),
        poly: None,
    });
    let features = default_feature_count(d);
    candidates.push(Candidate {
        method: Method::Prf { features: Some(features), seed: 0, orthogonal: false },
        flops: Some(cost::prf_flops(features, d, dv, m, l)),
        error_bound: None,
        feasible: false,
        reason: "random features bound the error only in probability (Performer, Lemma 2); the planner promises a \
                 deterministic bound"
            .into(),
        poly: None,
    });
    candidates.push(Candidate {
        method: Method::TopK { k: 1 },
        flops: None,
        error_bound: None,
        feasible: false,
        reason: "no a-priori bound from B and M: the weight outside the top K depends on score gaps known only \
                 after scoring every memory"
            .into(),
        poly: None,
    });
    let best = candidates
        .iter()
        .filter(|c| c.feasible)
        .min_by(|a, b| a.flops.unwrap_or(f64::INFINITY).total_cmp(&b.flops.unwrap_or(f64::INFINITY)))
        .expect("dense is always feasible");
    let choice = best.method;
    let reason = if choice == Method::Dense {
        if candidates[1].feasible {
            "the polynomial path meets the tolerance but costs more flops than dense".to_string()
        } else {
            "no approximate method can guarantee the tolerance here".to_string()
        }
    } else {
        format!(
            "cheapest guaranteed method: {:.1}x fewer estimated flops than dense",
            candidates[0].flops.unwrap_or(0.0) / best.flops.unwrap_or(1.0)
        )
    };
    Ok(Plan { tolerance, efficiency, tau: cost::tau(m, l), candidates, choice, reason })
}

/// Resolve `method` before any kernel runs: `auto` through [`plan`], a
/// polynomial through [`poly_choice`] (its lowest degree, or a check that
/// the given one is positive on the data's range). `stats` is `None` when the
/// data's magnitudes are unknown (a bank wrapping a caller's buffer, queries
/// on the device); then only a polynomial with an explicit degree resolves.
pub(crate) fn resolve(method: Method, stats: Option<&ProblemStats>, max_state_bytes: u64) -> Result<Method> {
    let need_stats = |method: Method| {
        Error::unsupported(
            "degree",
            Some(method.name()),
            "choosing the method needs the magnitudes of the memories and queries, which are unknown for data \
             on the device; give the polynomial's degree explicitly, or plan with ProblemStats and plan()",
        )
    };
    // Only these two methods depend on the data; every other method is
    // already what runs (so a new method needs nothing here).
    if let Method::Auto { tolerance } = method {
        return Ok(plan(stats.ok_or_else(|| need_stats(method))?, tolerance, max_state_bytes)?.choice);
    }
    if let Method::Poly { delta, degree } = method {
        return match (stats, degree) {
            (Some(stats), _) => {
                Ok(Method::Poly { delta, degree: Some(poly_choice(stats, delta, degree, max_state_bytes)?.degree) })
            }
            (None, Some(_)) => Ok(method),
            (None, None) => Err(need_stats(method)),
        };
    }
    Ok(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(b: f64, m: usize, d: usize, steps: u32) -> ProblemStats {
        let norm = b * (d as f64).sqrt();
        ProblemStats {
            m,
            l: m,
            d,
            dv: d,
            beta: 1.0,
            steps,
            b,
            b_values: b,
            query_norm: norm,
            key_norm: norm,
            value_norm: norm,
        }
    }

    #[test]
    fn small_b_picks_poly_large_b_picks_dense() {
        let p = plan(&stats(0.25, 1 << 14, 2, 1), 1e-2, 1 << 27).unwrap();
        assert!(matches!(p.choice, Method::Poly { degree: Some(_), .. }), "{p}");
        let poly = &p.candidates[1];
        assert!(poly.feasible && poly.error_bound.unwrap() <= 1e-2, "{p}");
        // Excluded methods say why; none of them is chosen.
        for c in &p.candidates[2..] {
            assert!(!c.feasible && !c.reason.is_empty(), "{c:?}");
        }
        // R = beta B^2 d = 32: no polynomial in f32 (or f64) reaches the tolerance.
        let p = plan(&stats(4.0, 1 << 14, 2, 1), 1e-2, 1 << 27).unwrap();
        assert_eq!(p.choice, Method::Dense, "{p}");
        assert!(!p.efficiency.b_is_small);
    }

    #[test]
    fn an_excluded_polynomial_does_not_blame_a_flag() {
        // Issue 8 §6.16: with B = 255 (uint8 pixels) no polynomial fits, and
        // the plan said "invalid --delta" although the user gave no --delta.
        let p = plan(&stats(255.0, 100, 8, 1), 1e-2, 1 << 27).unwrap();
        let reason = &p.candidates[1].reason;
        assert!(!p.candidates[1].feasible, "{p}");
        assert!(!reason.contains("invalid") && reason.contains("planner's share"), "{reason}");
    }

    #[test]
    fn tiny_problems_stay_dense() {
        // M = L = 8 at d = 8: r (dv + 1) per row outweighs M.
        let p = plan(&stats(0.25, 8, 8, 1), 1e-2, 1 << 27).unwrap();
        assert_eq!(p.choice, Method::Dense, "{p}");
    }

    #[test]
    fn bad_plans_are_typed_errors() {
        assert!(matches!(plan(&stats(0.25, 64, 2, 1), 0.0, 1 << 27), Err(Error::InvalidParameter { .. })));
        assert!(matches!(plan(&stats(0.25, 64, 2, 3), 1e-2, 1 << 27), Err(Error::Unsupported { .. })));
        // S and n of r = 70 (d = 4, g = 4) need 1400 bytes.
        let err = poly_choice(&stats(0.1, 64, 4, 1), 1e-3, Some(4), 1000).unwrap_err();
        assert!(matches!(err, Error::DeviceLimit { .. }) && err.to_string().contains("r = 70"), "{err}");
    }

    #[test]
    fn range_covers_later_states() {
        let mut s = stats(0.5, 16, 4, 1);
        s.query_norm = 0.1;
        assert!((s.range() - 0.1 * s.key_norm).abs() < 1e-12);
        s.steps = 2;
        assert!((s.range() - s.value_norm * s.key_norm).abs() < 1e-12);
    }

    #[test]
    fn rounding_bound_grows_with_condition_and_is_infinite_past_one() {
        let a = f32_rounding_bound(1.0, 2.0, 1000, 70, 4);
        let b = f32_rounding_bound(1.0, 20.0, 1000, 70, 4);
        assert!(a > 0.0 && b > 5.0 * a, "{a} {b}");
        assert_eq!(f32_rounding_bound(1.0, 1e9, 1000, 70, 4), f64::INFINITY);
    }
}
