//! The seed papers' retrieval experiments (Nonparametric Modern Hopfield
//! Models, App. E.1, Fig. 3 and Figs. 7/8), run on the engine through its
//! public API only (`Context`, `MemoryBank`, `RetrieveOptions`, `Method`):
//! `hopfield-gpu experiment capacity | noise | scaling`.
//!
//! The protocols are SEMANTICS.md's "Experiment protocols":
//! - capacity: M patterns drawn without replacement (per trial, seeded),
//!   queried with the top half of each image set to 0;
//! - noise: M = 100, queries = stored + N(0, sigma^2) per entry (or the
//!   authors' row-broadcast noise, `noise_broadcast`);
//! - scaling: d = 16, L = M = n, seeded N(0, 1/d) patterns, wall time of one
//!   retrieval per method, ratio to dense, fitted exponent.
//!
//! Success (ours) is cosine distance <= 0.2; squared distance / d <= 0.2 and
//! the authors' mean |clamp(z) - clamp(xi)| <= threshold are reported beside
//! it. `Variant::Authors` makes the authors' criterion the primary one and
//! swaps in the authors' top-K and random masks ([`authors`], on the host)
//! and their sparsemax (which runs softmax). Every draw is seeded
//! ([`data::Stream`]): the same configuration gives the same numbers, bit
//! for bit on the same device.

pub mod authors;
pub mod data;
pub mod output;
pub mod plot;

use std::time::Instant;

use serde::Serialize;

use crate::bank::MemoryBank;
use crate::context::{Context, DeviceReport};
use crate::error::{Error, Result};
use crate::method::Method;
use crate::retrieve::{Retrieval, RetrieveOptions};
use data::{Dataset, Stream};

/// Which experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Success rate against the number of stored patterns, half-masked queries.
    Capacity,
    /// Success rate against the noise level, M = 100.
    Noise,
    /// Time against n = L = M.
    Scaling,
}

impl Kind {
    /// The subcommand's name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Capacity => "capacity",
            Kind::Noise => "noise",
            Kind::Scaling => "scaling",
        }
    }

    fn tag(self) -> u64 {
        match self {
            Kind::Capacity => 1,
            Kind::Noise => 2,
            Kind::Scaling => 3,
        }
    }

    /// What the x axis is.
    pub fn x_name(self) -> &'static str {
        match self {
            Kind::Capacity => "M",
            Kind::Noise => "sigma",
            Kind::Scaling => "n",
        }
    }
}

/// Whose definitions the methods and the success criterion follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// SEMANTICS.md: eq. (3.9) supports, cosine-distance success.
    Ours,
    /// What the authors' code computes (see [`authors`]).
    Authors,
}

impl Variant {
    /// The name used in flags, files and plots.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Ours => "ours",
            Variant::Authors => "authors",
        }
    }
}

/// One method of an experiment, with its parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MethodSpec {
    /// Dense retrieval.
    Dense,
    /// Top-K with `k = ceil(f M)` (authors: `int(f M)`, zero logits).
    TopK {
        /// Kept fraction f.
        f: f64,
    },
    /// Random mask with `k = ceil(f M)` (authors: dropout with p = f).
    Random {
        /// Kept fraction f (authors: dropped fraction).
        f: f64,
    },
    /// sparsemax (authors: softmax, as their code runs).
    Sparsemax,
    /// 1.5-entmax.
    Entmax15,
    /// Sliding window of default width `ceil(sqrt(M))`.
    Window,
    /// Linear kernel.
    Linear,
    /// Positive random features, default count, seeded per trial.
    Prf,
    /// Polynomial kernel with the experiment's delta.
    Poly,
}

impl MethodSpec {
    /// The method's name.
    pub fn name(self) -> &'static str {
        match self {
            MethodSpec::Dense => "dense",
            MethodSpec::TopK { .. } => "topk",
            MethodSpec::Random { .. } => "random",
            MethodSpec::Sparsemax => "sparsemax",
            MethodSpec::Entmax15 => "entmax15",
            MethodSpec::Window => "window",
            MethodSpec::Linear => "linear",
            MethodSpec::Prf => "prf",
            MethodSpec::Poly => "poly",
        }
    }

    /// Its parameter as text ("" when it has none).
    pub fn parameter(self) -> String {
        match self {
            MethodSpec::TopK { f } | MethodSpec::Random { f } => format!("f={f}"),
            MethodSpec::Dense
            | MethodSpec::Sparsemax
            | MethodSpec::Entmax15
            | MethodSpec::Window
            | MethodSpec::Linear
            | MethodSpec::Prf
            | MethodSpec::Poly => String::new(),
        }
    }

    /// Name and parameter, for legends.
    pub fn label(self) -> String {
        match self.parameter().as_str() {
            "" => self.name().to_string(),
            p => format!("{} {p}", self.name()),
        }
    }

    /// `k = ceil(f M)`, at least 1 (ours).
    fn k(f: f64, m: usize) -> usize {
        ((f * m as f64).ceil() as usize).clamp(1, m)
    }

    /// The engine's method for M memories (seed: the random draws').
    fn method(self, m: usize, seed: u64, delta: f64) -> Method {
        match self {
            MethodSpec::Dense => Method::Dense,
            MethodSpec::TopK { f } => Method::TopK { k: Self::k(f, m) },
            MethodSpec::Random { f } => Method::Random { k: Self::k(f, m), seed },
            MethodSpec::Sparsemax => Method::Sparsemax,
            MethodSpec::Entmax15 => Method::Entmax15,
            MethodSpec::Window => Method::Window { width: None },
            MethodSpec::Linear => Method::Linear,
            MethodSpec::Prf => Method::Prf { features: None, seed, orthogonal: false },
            MethodSpec::Poly => Method::Poly { delta, degree: None },
        }
    }
}

/// The default method list: dense, top-K and random for f in {0.2, 0.5,
/// 0.8}, sparsemax, entmax15, window, linear, prf, poly.
pub fn default_methods() -> Vec<MethodSpec> {
    parse_methods("dense,topk,random,sparsemax,entmax15,window,linear,prf,poly", &[0.2, 0.5, 0.8])
        .expect("the default list parses")
}

/// Parse `--methods`: comma-separated names; `topk` and `random` expand to
/// one entry per fraction, `topk:0.8` names one fraction.
pub fn parse_methods(list: &str, fractions: &[f64]) -> Result<Vec<MethodSpec>> {
    let bad = |why: String| Error::invalid("methods", list, why);
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, f) = match item.split_once(':') {
            Some((n, f)) => {
                let f: f64 = f.parse().map_err(|_| bad(format!("{item}: the fraction after ':' is not a number")))?;
                if !(f > 0.0 && f <= 1.0) {
                    return Err(bad(format!("{item}: the fraction must lie in (0, 1]")));
                }
                (n, Some(f))
            }
            None => (item, None),
        };
        let fs = f.map_or_else(|| fractions.to_vec(), |f| vec![f]);
        match name {
            "dense" => out.push(MethodSpec::Dense),
            "topk" => out.extend(fs.iter().map(|&f| MethodSpec::TopK { f })),
            "random" => out.extend(fs.iter().map(|&f| MethodSpec::Random { f })),
            "sparsemax" => out.push(MethodSpec::Sparsemax),
            "entmax15" => out.push(MethodSpec::Entmax15),
            "window" => out.push(MethodSpec::Window),
            "linear" => out.push(MethodSpec::Linear),
            "prf" => out.push(MethodSpec::Prf),
            "poly" => out.push(MethodSpec::Poly),
            other => {
                return Err(bad(format!(
                    "unknown method {other:?} (dense, topk, random, sparsemax, entmax15, window, linear, prf, poly)"
                )))
            }
        }
        if f.is_some() && !matches!(name, "topk" | "random") {
            return Err(bad(format!("{item}: only topk and random take a fraction")));
        }
    }
    if out.is_empty() {
        return Err(bad("no method given".into()));
    }
    Ok(out)
}

/// Everything an experiment needs; the CLI fills it from flags.
#[derive(Clone, Debug)]
pub struct Config {
    /// Which experiment.
    pub kind: Kind,
    /// Methods, in plot order.
    pub methods: Vec<MethodSpec>,
    /// Trials per x value (scaling: timed repeats).
    pub trials: usize,
    /// Seed of every draw.
    pub seed: u64,
    /// Update steps per retrieval (>= 1; every step runs, eps = 0).
    pub steps: u32,
    /// Inverse temperature.
    pub beta: f32,
    /// Whose definitions.
    pub variant: Variant,
    /// The authors' noise (one N(0, sigma^2) vector along the image width,
    /// broadcast over rows, channels and images; then |x + n| clamped to [0, 1]).
    pub noise_broadcast: bool,
    /// x values: M (capacity), sigma (noise), n (scaling).
    pub xs: Vec<f64>,
    /// M of the noise experiment.
    pub noise_m: usize,
    /// delta_A of the poly method.
    pub delta: f64,
    /// The authors' success threshold (0.1 digits, 0.2 patches).
    pub authors_threshold: f64,
    /// Authors' variant: also turn every score into its sign, as their
    /// `F.normalize(scores)` does (dense, sparsemax, top-K and random then
    /// all run on the host).
    pub authors_sign_scores: bool,
    /// Scaling: d.
    pub scaling_dim: usize,
    /// Scaling: skip a method's larger n once a run is predicted to take
    /// longer than this many seconds (dense, the reference, always runs).
    pub time_budget_s: f64,
}

impl Config {
    /// Check the configuration against the data (`None` for scaling); every
    /// error names the field (the command line prints its flag).
    pub fn validate(&self, data: Option<&Dataset>) -> Result<()> {
        if self.trials == 0 {
            return Err(Error::invalid("trials", 0, "at least one trial"));
        }
        if self.steps == 0 {
            return Err(Error::invalid("steps", 0, "at least one update"));
        }
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(Error::invalid("beta", self.beta, "must be finite and > 0"));
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(Error::invalid("delta", self.delta, "delta_A must lie in (0, 1)"));
        }
        if !(self.authors_threshold.is_finite() && self.authors_threshold > 0.0) {
            return Err(Error::invalid("authors_threshold", self.authors_threshold, "must be finite and > 0"));
        }
        if self.authors_sign_scores && self.variant != Variant::Authors {
            return Err(Error::invalid("authors_sign_scores", "true", "only applies to the authors' variant"));
        }
        if self.xs.is_empty() {
            return Err(Error::invalid("xs", "", "no x values"));
        }
        match self.kind {
            Kind::Capacity => {
                let n = data.map_or(usize::MAX, |d| d.rows);
                for &x in &self.xs {
                    if !(x >= 1.0 && x.fract() == 0.0 && x as usize <= n) {
                        return Err(Error::invalid("sizes", x, format!("M must be a whole number in 1..={n}")));
                    }
                }
                if data.is_some_and(|d| d.image.is_none()) {
                    return Err(Error::invalid(
                        "data",
                        data.map_or("", |d| &d.source),
                        "the capacity protocol zeroes the top half of each image, and d is not a square image of 1 or 3 channels",
                    ));
                }
            }
            Kind::Noise => {
                for &x in &self.xs {
                    if !(x.is_finite() && x >= 0.0) {
                        return Err(Error::invalid("sigmas", x, "noise widths must be finite and >= 0"));
                    }
                }
                let n = data.map_or(usize::MAX, |d| d.rows);
                if self.noise_m == 0 || self.noise_m > n {
                    return Err(Error::invalid("noise_m", self.noise_m, format!("M must lie in 1..={n}")));
                }
                if self.noise_broadcast && data.is_some_and(|d| d.image.is_none()) {
                    return Err(Error::invalid(
                        "noise_broadcast",
                        "",
                        "needs an image shape (square, 1 or 3 channels)",
                    ));
                }
            }
            Kind::Scaling => {
                for &x in &self.xs {
                    if !(x >= 2.0 && x.fract() == 0.0 && x <= 1e9) {
                        return Err(Error::invalid("n", x, "n must be a whole number >= 2"));
                    }
                }
                if self.scaling_dim == 0 {
                    return Err(Error::invalid("scaling_dim", 0, "d >= 1"));
                }
                if self.variant == Variant::Authors || self.authors_sign_scores {
                    return Err(Error::invalid(
                        "variant",
                        "authors",
                        "the authors' variants run on the host for comparing accuracy; timing them says nothing about the engine",
                    ));
                }
                if self.time_budget_s.is_nan() || self.time_budget_s <= 0.0 {
                    return Err(Error::invalid("time_budget_s", self.time_budget_s, "must be > 0 seconds"));
                }
            }
        }
        Ok(())
    }

    /// Retrievals the experiment will run (for a progress bar).
    pub fn work(&self) -> u64 {
        (self.xs.len() * self.methods.len() * self.trials) as u64
    }
}

/// One row of the results: one (method, parameter, x value).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    /// Method name.
    pub method: String,
    /// Its parameter ("f=0.2"; "" when none).
    pub parameter: String,
    /// The x value (M, sigma or n).
    pub x: f64,
    /// Trials that produced a value.
    pub trials: usize,
    /// Mean over trials of the primary measure (success rate of the
    /// variant's criterion; scaling: wall milliseconds).
    pub mean: Option<f64>,
    /// Sample standard deviation over trials (0 for one trial).
    pub std: Option<f64>,
    /// Success rate, cosine distance <= 0.2 (mean, std).
    pub success_cosine_mean: Option<f64>,
    /// Its std.
    pub success_cosine_std: Option<f64>,
    /// Success rate, squared distance / d <= 0.2.
    pub success_sqdist_mean: Option<f64>,
    /// Its std.
    pub success_sqdist_std: Option<f64>,
    /// Success rate, the authors' mean |clamp(z) - clamp(xi)| <= threshold.
    pub success_authors_mean: Option<f64>,
    /// Its std.
    pub success_authors_std: Option<f64>,
    /// Random masks: P(mu in S) = k / M (authors: 1 - p).
    pub p_in_support: Option<f64>,
    /// Random masks: the measured fraction of queries whose own pattern was in S.
    pub p_in_support_measured: Option<f64>,
    /// Random masks: the primary success rate over the queries with mu in S
    /// (pooled over trials).
    pub success_given_in_support: Option<f64>,
    /// Scaling: median wall time of one retrieval, ms.
    pub median_ms: Option<f64>,
    /// Scaling: median GPU time (timestamps), ms, where the device has them.
    pub gpu_median_ms: Option<f64>,
    /// Scaling: median over dense's median at the same n.
    pub ratio_to_dense: Option<f64>,
    /// Why there is no value (a method that cannot run here, or skipped).
    pub skipped: Option<String>,
}

/// A fitted power law `time ~ n^exponent` (scaling).
#[derive(Clone, Debug, Serialize)]
pub struct Fit {
    /// Method name.
    pub method: String,
    /// Its parameter.
    pub parameter: String,
    /// Least-squares slope of ln(median ms) against ln(n).
    pub exponent: f64,
    /// Points fitted.
    pub points: usize,
}

/// The outcome of one experiment (written as results.json).
#[derive(Clone, Debug, Serialize)]
pub struct Results {
    /// Which experiment.
    pub experiment: Kind,
    /// Whose definitions.
    pub variant: Variant,
    /// The primary measure.
    pub metric: String,
    /// What x is.
    pub x_name: &'static str,
    /// Data source ("synthetic" for scaling).
    pub data: String,
    /// Normalisation.
    pub normalize: String,
    /// beta.
    pub beta: f32,
    /// Steps.
    pub steps: u32,
    /// Seed.
    pub seed: u64,
    /// Trials per point.
    pub trials: usize,
    /// The authors' noise.
    pub noise_broadcast: bool,
    /// The authors' sign scores.
    pub authors_sign_scores: bool,
    /// The rows.
    pub rows: Vec<Row>,
    /// Scaling fits.
    pub fits: Vec<Fit>,
    /// How to read the numbers, and what was skipped.
    pub notes: Vec<String>,
    /// The command that made them.
    pub command: String,
    /// The device.
    pub device: DeviceReport,
}

/// Per-query outcome of one retrieval.
struct Judged {
    cosine: bool,
    sqdist: bool,
    authors: bool,
}

fn judge(z: &[f32], xi: &[f32], threshold: f64) -> Judged {
    let d = xi.len() as f64;
    let (mut zz, mut xx, mut zx, mut sq, mut man) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for (&a, &b) in z.iter().zip(xi) {
        let (a, b) = (f64::from(a), f64::from(b));
        zz += a * a;
        xx += b * b;
        zx += a * b;
        sq += (a - b) * (a - b);
        man += (a.clamp(0.0, 1.0) - b.clamp(0.0, 1.0)).abs();
    }
    // torch's cosine_similarity divides by max(|z| |xi|, 1e-8): a zero vector has similarity 0.
    let cos = zx / (zz.sqrt() * xx.sqrt()).max(1e-8);
    Judged { cosine: 1.0 - cos <= 0.2, sqdist: sq / d <= 0.2, authors: man / d <= threshold }
}

fn mean_std(v: &[f64]) -> (Option<f64>, Option<f64>) {
    if v.is_empty() {
        return (None, None);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = if v.len() > 1 { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (Some(mean), Some(std))
}

/// Per (method, x): what the trials produced.
#[derive(Default)]
struct Acc {
    primary: Vec<f64>,
    cosine: Vec<f64>,
    sqdist: Vec<f64>,
    authors: Vec<f64>,
    in_support: usize,
    in_support_success: usize,
    queries: usize,
    p_in_support: Option<f64>,
    times: Vec<f64>,
    gpu_times: Vec<f64>,
    skipped: Option<String>,
}

/// Errors that mean "this method cannot run on this problem" (recorded and
/// skipped) rather than "the experiment is broken" (propagated).
fn skippable(e: &Error) -> bool {
    matches!(e, Error::InvalidParameter { .. } | Error::DeviceLimit { .. } | Error::Unsupported { .. })
}

/// The authors' noise: one N(0, sigma^2) value per image column, shared by
/// every row, channel and image of the trial (their `torch.normal(0, sigma,
/// size=[img.size(-1)])` broadcast over `[M, c, h, w]`), then
/// `clamp(|x + n|, 0, 1)`.
fn broadcast_noise(x: &mut [f32], shape: data::ImageShape, sigma: f64, stream: &mut Stream) {
    let n: Vec<f64> = (0..shape.w).map(|_| sigma * stream.gaussian()).collect();
    let d = shape.h * shape.w * shape.c;
    for (i, v) in x.iter_mut().enumerate() {
        let col = (i % d) / shape.c % shape.w;
        *v = (f64::from(*v) + n[col]).abs().clamp(0.0, 1.0) as f32;
    }
}

/// Run the capacity or noise experiment on `data`.
pub fn run_retrieval(
    ctx: &Context,
    cfg: &Config,
    data: &Dataset,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Row>> {
    cfg.validate(Some(data))?;
    let d = data.cols;
    let mut acc: Vec<Vec<Acc>> =
        (0..cfg.methods.len()).map(|_| (0..cfg.xs.len()).map(|_| Acc::default()).collect()).collect();
    for (xi, &x) in cfg.xs.iter().enumerate() {
        let m = if cfg.kind == Kind::Capacity { x as usize } else { cfg.noise_m };
        for trial in 0..cfg.trials {
            let t = trial as u64;
            // The patterns depend on (M, trial) only, so every x of the noise
            // experiment sees the same memories: a paired comparison.
            let idx = Stream::new(cfg.seed, &[cfg.kind.tag(), 0, m as u64, t]).sample(data.rows, m);
            let memories = data.select(&idx);
            let mut queries = memories.clone();
            match cfg.kind {
                Kind::Capacity => {
                    let half = data.image.map_or(d / 2, |s| s.top_half_len());
                    for q in queries.chunks_exact_mut(d) {
                        q[..half].fill(0.0);
                    }
                }
                Kind::Noise => {
                    let mut s = Stream::new(cfg.seed, &[cfg.kind.tag(), 1, x.to_bits(), t]);
                    match (cfg.noise_broadcast, data.image) {
                        (true, Some(shape)) => broadcast_noise(&mut queries, shape, x, &mut s),
                        _ => queries.iter_mut().for_each(|v| *v = (f64::from(*v) + x * s.gaussian()) as f32),
                    }
                }
                Kind::Scaling => unreachable!("validated: scaling has its own runner"),
            }
            let bank = MemoryBank::new(ctx, &memories, m, d)?;
            for (mi, &spec) in cfg.methods.iter().enumerate() {
                let a = &mut acc[mi][xi];
                let draw_seed = data::key(cfg.seed, &[cfg.kind.tag(), 2, x.to_bits(), t, mi as u64]);
                let outcome = retrieve_one(ctx, cfg, &bank, &memories, &queries, m, d, spec, draw_seed);
                progress.inc(1);
                let (z, in_support) = match outcome {
                    Ok(v) => v,
                    Err(e) if skippable(&e) => {
                        a.skipped.get_or_insert_with(|| e.to_string());
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let judged: Vec<Judged> = (0..m)
                    .map(|l| judge(&z[l * d..(l + 1) * d], &memories[l * d..(l + 1) * d], cfg.authors_threshold))
                    .collect();
                let rate = |f: fn(&Judged) -> bool| judged.iter().filter(|j| f(j)).count() as f64 / m as f64;
                let primary: fn(&Judged) -> bool = match cfg.variant {
                    Variant::Ours => |j| j.cosine,
                    Variant::Authors => |j| j.authors,
                };
                a.primary.push(rate(primary));
                a.cosine.push(rate(|j| j.cosine));
                a.sqdist.push(rate(|j| j.sqdist));
                a.authors.push(rate(|j| j.authors));
                if let Some(flags) = in_support {
                    a.queries += m;
                    for (j, &inside) in judged.iter().zip(&flags) {
                        if inside {
                            a.in_support += 1;
                            a.in_support_success += usize::from(primary(j));
                        }
                    }
                    a.p_in_support = Some(match (cfg.variant, spec) {
                        (Variant::Authors, MethodSpec::Random { f }) => 1.0 - f,
                        (_, MethodSpec::Random { f }) => MethodSpec::k(f, m) as f64 / m as f64,
                        _ => f64::NAN,
                    });
                }
            }
        }
    }
    Ok(rows(cfg, acc))
}

/// One retrieval of `queries`, by the variant's definition of `spec`;
/// for random masks also whether each query's own memory was in its support.
#[expect(clippy::too_many_arguments, reason = "one trial's data and its method; a struct would only rename them")]
fn retrieve_one(
    ctx: &Context,
    cfg: &Config,
    bank: &MemoryBank,
    memories: &[f32],
    queries: &[f32],
    m: usize,
    d: usize,
    spec: MethodSpec,
    seed: u64,
) -> Result<(Vec<f32>, Option<Vec<bool>>)> {
    let beta = f64::from(cfg.beta);
    let engine = |method: Method, support: bool| -> Result<Retrieval> {
        let opts = RetrieveOptions { method, beta: cfg.beta, max_steps: cfg.steps, eps: 0.0, energy: false, support };
        ctx.retrieve(bank, queries, &opts)
    };
    let host = |mask: authors::Mask, own: bool| {
        let mut s = Stream::new(seed, &[]);
        let (z, kept) = authors::retrieve(queries, memories, d, beta, cfg.steps, mask, cfg.authors_sign_scores, &mut s);
        (z, own.then_some(kept))
    };
    match (cfg.variant, spec) {
        // Their int(prob * S): floor, not ceil.
        (Variant::Authors, MethodSpec::TopK { f }) => {
            Ok(host(authors::Mask::ZeroLogitTopK { k: (f * m as f64).floor() as usize }, false))
        }
        (Variant::Authors, MethodSpec::Random { f }) => Ok(host(authors::Mask::Dropout { p: f }, true)),
        // Their "sparsemax" mode builds a Sparsemax but calls torch.softmax.
        (Variant::Authors, MethodSpec::Dense | MethodSpec::Sparsemax) if cfg.authors_sign_scores => {
            Ok(host(authors::Mask::None, false))
        }
        (Variant::Authors, MethodSpec::Sparsemax) => Ok((engine(Method::Dense, false)?.z, None)),
        (_, MethodSpec::Random { .. }) => {
            let r = engine(spec.method(m, seed, cfg.delta), true)?;
            let s = r.support.ok_or_else(|| Error::internal("random retrieval returned no support"))?;
            let flags = (0..m).map(|l| s.indices[l * s.width..(l + 1) * s.width].contains(&(l as i32))).collect();
            Ok((r.z, Some(flags)))
        }
        (_, spec) => Ok((engine(spec.method(m, seed, cfg.delta), false)?.z, None)),
    }
}

fn rows(cfg: &Config, acc: Vec<Vec<Acc>>) -> Vec<Row> {
    let mut out = Vec::new();
    for (mi, per_x) in acc.into_iter().enumerate() {
        let spec = cfg.methods[mi];
        for (xi, a) in per_x.into_iter().enumerate() {
            let (mean, std) = mean_std(&a.primary);
            let (cm, cs) = mean_std(&a.cosine);
            let (sm, ss) = mean_std(&a.sqdist);
            let (am, ast) = mean_std(&a.authors);
            let random = a.p_in_support.is_some();
            out.push(Row {
                method: spec.name().into(),
                parameter: spec.parameter(),
                x: cfg.xs[xi],
                trials: a.primary.len(),
                mean,
                std,
                success_cosine_mean: cm,
                success_cosine_std: cs,
                success_sqdist_mean: sm,
                success_sqdist_std: ss,
                success_authors_mean: am,
                success_authors_std: ast,
                p_in_support: a.p_in_support,
                p_in_support_measured: (random && a.queries > 0).then(|| a.in_support as f64 / a.queries as f64),
                success_given_in_support: (random && a.in_support > 0)
                    .then(|| a.in_support_success as f64 / a.in_support as f64),
                skipped: if a.primary.is_empty() { a.skipped } else { a.skipped.map(|s| format!("some trials: {s}")) },
                ..Row::default()
            });
        }
    }
    out
}

/// Run the scaling experiment: seeded N(0, 1/d) memories and queries,
/// `L = M = n`, the wall time of one retrieval per method (bank upload
/// excluded; a fresh bank per run, so that feature methods include building
/// S and n), `trials` timed runs after one untimed warm-up per method.
pub fn run_scaling(ctx: &Context, cfg: &Config, progress: &indicatif::ProgressBar) -> Result<(Vec<Row>, Vec<Fit>)> {
    cfg.validate(None)?;
    let d = cfg.scaling_dim;
    let scale = 1.0 / (d as f64).sqrt();
    let mut acc: Vec<Vec<Acc>> =
        (0..cfg.methods.len()).map(|_| (0..cfg.xs.len()).map(|_| Acc::default()).collect()).collect();
    let mut warmed = vec![false; cfg.methods.len()];
    let mut dead: Vec<Option<String>> = vec![None; cfg.methods.len()];
    for (xi, &x) in cfg.xs.iter().enumerate() {
        let n = x as usize;
        let draw = |which: u64| -> Vec<f32> {
            let mut s = Stream::new(cfg.seed, &[Kind::Scaling.tag(), which, n as u64]);
            (0..n * d).map(|_| (scale * s.gaussian()) as f32).collect()
        };
        let (memories, queries) = (draw(0), draw(1));
        for (mi, &spec) in cfg.methods.iter().enumerate() {
            if let Some(why) = &dead[mi] {
                acc[mi][xi].skipped = Some(why.clone());
                progress.inc(cfg.trials as u64);
                continue;
            }
            let seed = data::key(cfg.seed, &[Kind::Scaling.tag(), 2, n as u64, mi as u64]);
            let method = spec.method(n, seed, cfg.delta);
            let opts = RetrieveOptions {
                method,
                beta: cfg.beta,
                max_steps: cfg.steps,
                eps: 0.0,
                energy: false,
                support: false,
            };
            let run = || -> Result<(f64, Option<f64>)> {
                let bank = MemoryBank::new(ctx, &memories, n, d)?;
                let t0 = Instant::now();
                let r = ctx.retrieve(&bank, &queries, &opts)?;
                Ok((t0.elapsed().as_secs_f64() * 1e3, r.gpu_time.map(|t| t.as_secs_f64() * 1e3)))
            };
            // Dense is the reference of every ratio: never skipped for time.
            let budgeted = spec != MethodSpec::Dense;
            if !warmed[mi] {
                // lavapipe compiles each pipeline on first use.
                match run() {
                    Ok((wall, _)) => {
                        warmed[mi] = true;
                        if budgeted && wall / 1e3 > cfg.time_budget_s {
                            let why = format!(
                                "skipped: the untimed first run at n = {x} took {:.0} s, over --time-budget {} s",
                                wall / 1e3,
                                cfg.time_budget_s
                            );
                            acc[mi][xi].skipped = Some(why.clone());
                            dead[mi] = Some(why);
                            progress.inc(cfg.trials as u64);
                            continue;
                        }
                    }
                    Err(e) if skippable(&e) => {
                        acc[mi][xi].skipped = Some(e.to_string());
                        progress.inc(cfg.trials as u64);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let a = &mut acc[mi][xi];
            for _ in 0..cfg.trials {
                match run() {
                    Ok((wall, gpu)) => {
                        a.times.push(wall);
                        a.gpu_times.extend(gpu);
                    }
                    Err(e) if skippable(&e) => {
                        a.skipped = Some(e.to_string());
                        break;
                    }
                    Err(e) => return Err(e),
                }
                progress.inc(1);
            }
            // Predict the next size from the last two (or a quadratic law)
            // and stop this method before it blows the budget.
            if let (Some(next), Some(t)) = (cfg.xs.get(xi + 1), median(&a.times)) {
                let prev = (0..xi).rev().find_map(|j| median(&acc[mi][j].times).map(|tp| (cfg.xs[j], tp)));
                let slope = prev.map_or(2.0, |(xp, tp)| ((t / tp).ln() / (x / xp).ln()).clamp(1.0, 3.0));
                let predicted_s = t / 1e3 * (next / x).powf(slope);
                if budgeted && predicted_s > cfg.time_budget_s {
                    dead[mi] = Some(format!(
                        "skipped: predicted {predicted_s:.0} s per run at n = {next} (from {t:.0} ms at n = {x}, \
                         exponent {slope:.2}) exceeds --time-budget {} s",
                        cfg.time_budget_s
                    ));
                }
            }
        }
    }
    let mut rows = Vec::new();
    let mut fits = Vec::new();
    let dense_mi = cfg.methods.iter().position(|&s| s == MethodSpec::Dense);
    for (mi, per_x) in acc.iter().enumerate() {
        let spec = cfg.methods[mi];
        let mut pts = Vec::new();
        for (xi, a) in per_x.iter().enumerate() {
            let med = median(&a.times);
            let (mean, std) = mean_std(&a.times);
            let dense = dense_mi.and_then(|j| median(&acc[j][xi].times));
            if let Some(m) = med {
                pts.push((cfg.xs[xi].ln(), m.ln()));
            }
            rows.push(Row {
                method: spec.name().into(),
                parameter: spec.parameter(),
                x: cfg.xs[xi],
                trials: a.times.len(),
                mean,
                std,
                median_ms: med,
                gpu_median_ms: median(&a.gpu_times),
                ratio_to_dense: med.zip(dense).map(|(m, dm)| m / dm),
                skipped: a.skipped.clone(),
                ..Row::default()
            });
        }
        if pts.len() >= 2 {
            fits.push(Fit {
                method: spec.name().into(),
                parameter: spec.parameter(),
                exponent: slope(&pts),
                points: pts.len(),
            });
        }
    }
    Ok((rows, fits))
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 { s[n / 2] } else { 0.5 * (s[n / 2 - 1] + s[n / 2]) })
}

/// Least-squares slope of y on x.
fn slope(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len() as f64;
    let (mx, my) = (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    sxy / sxx
}

/// The primary measure's description, for plots and files.
pub fn metric_name(cfg: &Config) -> String {
    match (cfg.kind, cfg.variant) {
        (Kind::Scaling, _) => "median wall time of one retrieval (ms)".into(),
        (_, Variant::Ours) => "success rate (cosine distance <= 0.2)".into(),
        (_, Variant::Authors) => {
            format!("success rate (authors: mean |clamp(z) - clamp(xi)| <= {})", cfg.authors_threshold)
        }
    }
}

/// Run the configured experiment and collect everything results.json holds.
pub fn run(
    ctx: &Context,
    cfg: &Config,
    data: Option<&Dataset>,
    normalize: data::Normalize,
    command: String,
    progress: &indicatif::ProgressBar,
) -> Result<Results> {
    let mut notes = Vec::new();
    let (rows, fits) = match (cfg.kind, data) {
        (Kind::Scaling, _) => run_scaling(ctx, cfg, progress)?,
        (_, Some(data)) => (run_retrieval(ctx, cfg, data, progress)?, Vec::new()),
        (_, None) => return Err(Error::Empty { what: "data" }),
    };
    for r in &rows {
        if let Some(s) = &r.skipped {
            notes.push(format!("{} {} at {} = {}: {s}", r.method, r.parameter, cfg.kind.x_name(), r.x));
        }
    }
    if cfg.variant == Variant::Authors {
        notes.push(
            "variant authors: top-K with zero logits and k = int(f M), random masks as logit dropout with p = f and \
             1/(1-p) rescaling (a new mask each step), sparsemax runs softmax (as their code), their success \
             criterion; the other methods are ours"
                .into(),
        );
        if cfg.authors_sign_scores {
            notes.push(
                "with their F.normalize(scores): every score replaced by its sign before the scale (dense, sparsemax, \
                 top-K and random on the host)"
                    .into(),
            );
        }
    }
    Ok(Results {
        experiment: cfg.kind,
        variant: cfg.variant,
        metric: metric_name(cfg),
        x_name: cfg.kind.x_name(),
        data: data.map_or_else(|| format!("synthetic N(0, 1/d), d = {}", cfg.scaling_dim), |d| d.source.clone()),
        normalize: if cfg.kind == Kind::Scaling { "-".into() } else { normalize.name().into() },
        beta: cfg.beta,
        steps: cfg.steps,
        seed: cfg.seed,
        trials: cfg.trials,
        noise_broadcast: cfg.noise_broadcast,
        authors_sign_scores: cfg.authors_sign_scores,
        rows,
        fits,
        notes,
        command,
        device: ctx.report(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_lists_parse_and_refuse() {
        let all = default_methods();
        assert_eq!(all.len(), 13);
        assert_eq!(all[1], MethodSpec::TopK { f: 0.2 });
        assert_eq!(
            parse_methods("topk:0.8, random:0.2", &[0.5]).unwrap(),
            vec![MethodSpec::TopK { f: 0.8 }, MethodSpec::Random { f: 0.2 }]
        );
        for bad in ["", "nope", "dense:0.5", "topk:2", "topk:x"] {
            assert!(
                matches!(parse_methods(bad, &[0.5]), Err(Error::InvalidParameter { name: "methods", .. })),
                "{bad}"
            );
        }
        assert_eq!(MethodSpec::k(0.2, 10), 2);
        assert_eq!(MethodSpec::k(0.25, 10), 3);
        assert_eq!(MethodSpec::k(0.01, 10), 1);
    }

    #[test]
    fn success_criteria_by_hand() {
        // z = xi: every criterion holds.
        let xi = [1.0, 0.0, 0.5, 0.5];
        let j = judge(&xi, &xi, 0.1);
        assert!(j.cosine && j.sqdist && j.authors);
        // z = 2 xi: cosine distance 0, squared distance / d = 1.5 / 4, clamped L1 = (1 - 1 + 0 + 0.5 + 0.5) / 4 = 0.25.
        let z = [2.0, 0.0, 1.0, 1.0];
        let j = judge(&z, &xi, 0.1);
        assert!(j.cosine && !j.sqdist && !j.authors);
        assert!(judge(&z, &xi, 0.25).authors);
        // A zero output has cosine similarity 0 (distance 1).
        assert!(!judge(&[0.0; 4], &xi, 0.1).cosine);
    }

    #[test]
    fn broadcast_noise_is_one_vector_along_the_width() {
        let shape = data::ImageShape { h: 2, w: 2, c: 3 };
        let mut x = vec![0.5f32; 2 * 12];
        broadcast_noise(&mut x, shape, 0.1, &mut Stream::new(1, &[]));
        // Entry (y, x, c) of image i gets n[x]: equal across y, c and images.
        for (i, v) in x.iter().enumerate() {
            let col = (i % 12) / 3 % 2;
            assert_eq!(*v, x[col * 3], "entry {i}");
        }
        assert_ne!(x[0], x[3]);
    }

    #[test]
    fn slope_and_median() {
        let pts: Vec<(f64, f64)> = [1.0f64, 2.0, 4.0].iter().map(|&n| (n.ln(), (3.0 * n * n).ln())).collect();
        assert!((slope(&pts) - 2.0).abs() < 1e-12);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
