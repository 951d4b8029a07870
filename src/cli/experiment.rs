//! `hopfield-gpu experiment capacity | noise | scaling`: the seed papers'
//! retrieval experiments ([`hopfield_gpu::experiment`]), written into a
//! folder with CSV, JSON, PNG, SVG and a README holding the command.

use std::path::PathBuf;
use std::time::Instant;

use clap::ValueEnum;
use hopfield_gpu::experiment::{self, data, Config, Kind, Variant};
use indicatif::{ProgressBar, ProgressStyle};

use super::CliError;

/// Which experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Success rate against M (10..200), queries with the top half zeroed.
    Capacity,
    /// Success rate against the noise width sigma, M = 100.
    Noise,
    /// Time of one retrieval against n = L = M (d = 16).
    Scaling,
}

/// How to scale the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NormalizeArg {
    /// Scale to [0, 1] by the global minimum and maximum.
    None,
    /// Per feature to mean 0, standard deviation 1 (the default).
    Zscore,
    /// Per channel (one mean and deviation per channel), as torchvision's Normalize.
    Channel,
}

/// Whose definitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VariantArg {
    /// SEMANTICS.md's methods and cosine-distance success.
    Ours,
    /// What the authors' public code computes (zero-logit top-K, dropout masks, their criterion).
    Authors,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The experiment.
    #[arg(value_enum)]
    which: Which,
    /// Pattern set: a 2-D .npy, or the shipped `digits` / `patches8x8` (capacity, noise).
    #[arg(long, value_name = "FILE.npy")]
    data: Option<String>,
    /// Methods, comma-separated: dense, topk, random, sparsemax, entmax15, window,
    /// linear, prf, poly; `topk` / `random` expand to every --fractions value,
    /// `topk:0.8` names one. Default: all of them.
    #[arg(long, value_name = "LIST")]
    methods: Option<String>,
    /// Kept fractions f of top-K and random masks (k = ceil(f M)).
    #[arg(long, value_name = "LIST", default_value = "0.2,0.5,0.8")]
    fractions: String,
    /// Trials per point (default 10; scaling: 3 timed runs).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    trials: Option<usize>,
    /// Seed of every draw.
    #[arg(long, value_name = "S", default_value_t = 0, allow_negative_numbers = true)]
    seed: u64,
    /// Update steps per retrieval (every step runs).
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true)]
    steps: u32,
    /// Inverse temperature. Default: 0.12 (d = 64) or 1.6 (d = 192) on z-scored
    /// data, the authors' beta d; 1 for scaling.
    #[arg(long, value_name = "B", allow_negative_numbers = true)]
    beta: Option<f32>,
    /// Output folder (created). Default: results/<experiment>-<variant>.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Scaling of the data.
    #[arg(long, value_enum, default_value = "zscore")]
    normalize: NormalizeArg,
    /// Whose definitions of the methods and of success.
    #[arg(long, value_enum, default_value = "ours")]
    variant: VariantArg,
    /// Noise as the authors' code draws it: one N(0, sigma^2) vector along the
    /// image width, broadcast over rows, channels and images, then |x + n| clamped to [0, 1] (noise).
    #[arg(long)]
    noise_broadcast: bool,
    /// With --variant authors: also replace every score by its sign, as their
    /// `F.normalize(scores)` over a head axis of size 1 does.
    #[arg(long)]
    authors_sign_scores: bool,
    /// Memory counts M (capacity), comma-separated. Default 10,20,...,200.
    #[arg(long, value_name = "LIST", allow_negative_numbers = true)]
    sizes: Option<String>,
    /// Noise widths sigma (noise). Default 0.05,0.1,0.2,0.3,0.5,0.8,1.1,1.4.
    #[arg(long, value_name = "LIST", allow_negative_numbers = true)]
    sigmas: Option<String>,
    /// Stored patterns M of the noise experiment.
    #[arg(long, value_name = "M", allow_negative_numbers = true)]
    m: Option<usize>,
    /// Largest n of the scaling sweep (powers of two from --min-n); default 16384.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_n: Option<usize>,
    /// Smallest n of the scaling sweep; default 256.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    min_n: Option<usize>,
    /// Pattern dimension of the scaling sweep; default 16.
    #[arg(long, value_name = "D", allow_negative_numbers = true)]
    dim: Option<usize>,
    /// Scaling: stop a method once its next run is predicted to exceed this many seconds; default 120.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    time_budget: Option<f64>,
    /// delta_A of the poly method, in (0, 1).
    #[arg(long, value_name = "D", default_value_t = 0.05, allow_negative_numbers = true)]
    delta: f64,
    /// The authors' success threshold on mean |clamp(z) - clamp(xi)|: default 0.1 (d = 64, digits), 0.2 (d = 192, patches).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    authors_threshold: Option<f64>,
}

fn usage(flag: &'static str, why: impl Into<String>) -> CliError {
    CliError::Usage { flag, why: why.into() }
}

fn list(flag: &'static str, text: &str) -> Result<Vec<f64>, CliError> {
    let v: Result<Vec<f64>, _> = text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::parse).collect();
    match v {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(usage(flag, "the list is empty")),
        Err(_) => Err(usage(flag, format!("{text:?} is not a comma-separated list of numbers"))),
    }
}

/// The command as typed, for the README (arguments shell-quoted where needed).
fn command_line() -> String {
    let mut parts = vec!["hopfield-gpu".to_string()];
    for a in std::env::args().skip(1) {
        if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_=.,/:+".contains(c)) && !a.is_empty() {
            parts.push(a);
        } else {
            parts.push(format!("'{}'", a.replace('\'', "'\\''")));
        }
    }
    parts.join(" ")
}

pub fn run(args: &Args, device: &Option<String>) -> Result<(), CliError> {
    let kind = match args.which {
        Which::Capacity => Kind::Capacity,
        Which::Noise => Kind::Noise,
        Which::Scaling => Kind::Scaling,
    };
    let variant = match args.variant {
        VariantArg::Ours => Variant::Ours,
        VariantArg::Authors => Variant::Authors,
    };
    let normalize = match args.normalize {
        NormalizeArg::None => data::Normalize::None,
        NormalizeArg::Zscore => data::Normalize::Zscore,
        NormalizeArg::Channel => data::Normalize::Channel,
    };
    // Flags that belong to another experiment are refused, not ignored.
    let only = |set: bool, flag: &'static str, which: &[Which]| -> Result<(), CliError> {
        if set && !which.contains(&args.which) {
            let names: Vec<String> =
                which.iter().filter_map(|w| w.to_possible_value()).map(|v| v.get_name().to_string()).collect();
            return Err(usage(flag, format!("only applies to experiment {}", names.join(" / "))));
        }
        Ok(())
    };
    only(args.sizes.is_some(), "--sizes", &[Which::Capacity])?;
    only(args.sigmas.is_some(), "--sigmas", &[Which::Noise])?;
    only(args.m.is_some(), "--m", &[Which::Noise])?;
    only(args.noise_broadcast, "--noise-broadcast", &[Which::Noise])?;
    only(args.max_n.is_some(), "--max-n", &[Which::Scaling])?;
    only(args.min_n.is_some(), "--min-n", &[Which::Scaling])?;
    only(args.dim.is_some(), "--dim", &[Which::Scaling])?;
    only(args.time_budget.is_some(), "--time-budget", &[Which::Scaling])?;
    only(args.data.is_some(), "--data", &[Which::Capacity, Which::Noise])?;
    only(args.authors_threshold.is_some(), "--authors-threshold", &[Which::Capacity, Which::Noise])?;
    let fractions = list("--fractions", &args.fractions)?;
    if let Some(f) = fractions.iter().find(|&&f| !(f > 0.0 && f <= 1.0)) {
        return Err(usage("--fractions", format!("{f} is outside (0, 1]")));
    }
    let methods = match &args.methods {
        Some(m) => experiment::parse_methods(m, &fractions)?,
        None => experiment::parse_methods("dense,topk,random,sparsemax,entmax15,window,linear,prf,poly", &fractions)?,
    };
    let xs = match kind {
        Kind::Capacity => match &args.sizes {
            Some(s) => list("--sizes", s)?,
            None => (1..=20).map(|i| f64::from(i * 10)).collect(),
        },
        Kind::Noise => match &args.sigmas {
            Some(s) => list("--sigmas", s)?,
            None => vec![0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.1, 1.4],
        },
        Kind::Scaling => {
            let (lo, hi) = (args.min_n.unwrap_or(256), args.max_n.unwrap_or(16384));
            if lo < 2 || hi < lo {
                return Err(usage("--max-n", format!("needs 2 <= --min-n ({lo}) <= --max-n ({hi})")));
            }
            std::iter::successors(Some(lo), |&n| n.checked_mul(2)).take_while(|&n| n <= hi).map(|n| n as f64).collect()
        }
    };
    // Read the data before opening a device: a bad file is reported first.
    let dataset = match kind {
        Kind::Scaling => None,
        Kind::Capacity | Kind::Noise => Some(data::Dataset::load(args.data.as_deref().unwrap_or("digits"), normalize)?),
    };
    let d = dataset.as_ref().map_or(args.dim.unwrap_or(16), |ds| ds.cols);
    let beta = match (args.beta, kind) {
        (Some(b), _) => b,
        (None, Kind::Scaling) => 1.0,
        (None, _) if normalize == data::Normalize::Zscore && d == 64 => 0.12,
        (None, _) if normalize == data::Normalize::Zscore && d == 192 => 1.6,
        (None, _) => {
            return Err(usage(
                "--beta",
                "has a default only for z-scored data of d = 64 (0.12) or d = 192 (1.6); give it explicitly",
            ))
        }
    };
    let authors_threshold = args.authors_threshold.unwrap_or(if d == 192 { 0.2 } else { 0.1 });
    let cfg = Config {
        kind,
        methods,
        trials: args.trials.unwrap_or(if kind == Kind::Scaling { 3 } else { 10 }),
        seed: args.seed,
        steps: args.steps,
        beta,
        variant,
        noise_broadcast: args.noise_broadcast,
        xs,
        noise_m: args.m.unwrap_or(100),
        delta: args.delta,
        authors_threshold,
        authors_sign_scores: args.authors_sign_scores,
        scaling_dim: d,
        time_budget_s: args.time_budget.unwrap_or(120.0),
    };
    cfg.validate(dataset.as_ref())?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("results/{}-{}", kind.name(), variant.name())));

    let ctx = super::context(device)?;
    let bar = ProgressBar::new(cfg.work()).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.set_message(format!("{} ({})", kind.name(), variant.name()));
    let t0 = Instant::now();
    let results = experiment::run(&ctx, &cfg, dataset.as_ref(), normalize, command_line(), &bar)?;
    bar.finish_and_clear();
    let wall = t0.elapsed().as_secs_f64();
    let files = experiment::output::write_all(&out, &results, wall)?;
    for n in &results.notes {
        eprintln!("note: {n}");
    }
    eprintln!(
        "{} ({}) on {}: {:.1} s; wrote {}",
        kind.name(),
        variant.name(),
        results.device.name,
        wall,
        files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(())
}
