//! Command-line parsing (clap) and dispatch to one module per subcommand.
//! The flag names are an interface users' scripts rely on: keep them.

mod analyze;
mod bench;
mod bench_layer;
mod experiment;
mod forward;
mod info;
mod layer;
mod paths;
mod retrieve;
mod tune;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hopfield_gpu::{Context, ContextOptions, Error, Method};

/// Modern Hopfield retrieval on any GPU (Vulkan, Metal, DX12, or lavapipe).
#[derive(Debug, Parser)]
#[command(name = "hopfield-gpu", version, about)]
pub struct Cli {
    /// Use the adapter whose name contains this text (case-insensitive),
    /// e.g. "llvmpipe" or "H100". Default: the fastest adapter present.
    #[arg(long, global = true, value_name = "NAME")]
    device: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Retrieve patterns for queries read from .npy files.
    Retrieve(retrieve::Args),
    /// List adapters, and show the chosen one's limits and features.
    Info(info::Args),
    /// Time retrieval kernels and check them against the CPU reference.
    Bench(bench::Args),
    /// Find the fastest kernel configuration for this device and cache it.
    Tune(tune::Args),
    /// Run a trained hopfield-layers module (Hopfield, HopfieldPooling,
    /// HopfieldLayer) on .npy inputs.
    Layer(layer::Args),
    /// Run a Hopfield network (feed-forward, LayerNorm, residual, Hopfield
    /// and kernelized Hopfield blocks) on a .npy input.
    Forward(forward::Args),
    /// The seed papers' quantities for a memory set: separation, radius,
    /// well-separation thresholds, capacity bounds, and per query the one-step
    /// error bounds beside the measured error.
    Analyze(analyze::Args),
    /// Rerun the seed papers' retrieval experiments (capacity, noise, scaling):
    /// CSV, JSON, PNG and SVG plots, and a README with the command.
    Experiment(experiment::Args),
}

/// Retrieval methods as spelled on the command line: one per [`Method`]
/// variant ([`MethodArg::of`] maps back, exhaustively, so a new method
/// cannot be forgotten here), named as [`Method::name`] names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Exact softmax retrieval (tiled online-softmax kernel).
    Dense,
    /// The naive one-thread-per-query kernel (a baseline for bench).
    DenseNaive,
    /// Softmax over the K largest scores (needs --k).
    Topk,
    /// Softmax over k memories drawn per query (needs --k; --seed).
    Random,
    /// Softmax over a sliding window of memories (--window).
    Window,
    /// sparsemax of the scores.
    Sparsemax,
    /// 1.5-entmax of the scores.
    Entmax15,
    /// Polynomial low-rank kernel (needs --delta; --degree).
    Poly,
    /// Linear kernel elu(x) + 1 (no beta).
    Linear,
    /// Positive random features (--features, --seed, --orthogonal).
    Prf,
    /// The planner picks the cheapest method within --tolerance of dense.
    Auto,
}

impl MethodArg {
    /// The command-line spelling of `method`.
    pub fn of(method: &Method) -> MethodArg {
        match method {
            Method::Dense => MethodArg::Dense,
            Method::DenseNaive => MethodArg::DenseNaive,
            Method::TopK { .. } => MethodArg::Topk,
            Method::Random { .. } => MethodArg::Random,
            Method::Window { .. } => MethodArg::Window,
            Method::Sparsemax => MethodArg::Sparsemax,
            Method::Entmax15 => MethodArg::Entmax15,
            Method::Poly { .. } => MethodArg::Poly,
            Method::Linear => MethodArg::Linear,
            Method::Prf { .. } => MethodArg::Prf,
            Method::Auto { .. } => MethodArg::Auto,
        }
    }
}

/// Value parsers for the numeric flags.
///
/// Every numeric flag also takes `allow_hyphen_values`, so that a negative
/// value in any spelling (`-3`, `-1e-3`, `-inf`) reaches its parser or the
/// library's domain check, and the error names the flag and the rule, rather
/// than clap reading `-1e-3` as an unknown flag ("unexpected argument").
pub(crate) mod parse {
    /// A whole number in `min..=max`; the message states the rule.
    fn whole(s: &str, min: u128, max: u128) -> Result<u128, String> {
        let rule = || {
            if max == u128::from(u64::MAX) || max == usize::MAX as u128 {
                format!("must be a whole number >= {min}")
            } else {
                format!("must be a whole number in {min}..={max}")
            }
        };
        match s.trim().parse::<i128>() {
            Ok(v) if v >= min as i128 && (v as u128) <= max => Ok(v as u128),
            _ => Err(rule()),
        }
    }

    /// A count of at least 1 (`--d`, `--m`, `--repeats`, ...).
    pub fn count(s: &str) -> Result<usize, String> {
        whole(s, 1, usize::MAX as u128).map(|v| v as usize)
    }

    /// A size whose zero the library refuses with its own rule (`--k`,
    /// `--window`, `--degree`, `--features`): here only the sign and form.
    pub fn size(s: &str) -> Result<usize, String> {
        whole(s, 0, usize::MAX as u128).map(|v| v as usize)
    }

    /// A number of updates, at least 1, at most 2^32 - 1.
    pub fn steps(s: &str) -> Result<u32, String> {
        whole(s, 1, u128::from(u32::MAX)).map(|v| v as u32)
    }

    /// A seed: any whole number in 0..=2^64 - 1.
    pub fn seed(s: &str) -> Result<u64, String> {
        whole(s, 0, u128::from(u64::MAX)).map(|v| v as u64)
    }

    /// A number the f32 kernels can hold. Finite values that f32 would turn
    /// into +-inf or 0 (`--beta 1e-300` used to become "invalid beta = 0")
    /// are refused here; NaN, +-inf and signs are left to the domain checks,
    /// which state each flag's rule.
    pub fn float32(s: &str) -> Result<f32, String> {
        let v: f64 = s.trim().parse().map_err(|_| "must be a number".to_string())?;
        let f = v as f32;
        if v.is_finite() && f.is_infinite() {
            return Err(format!("{v:e} is beyond the range of f32 (+-3.4e38)"));
        }
        if v != 0.0 && f == 0.0 {
            return Err(format!("{v:e} is closer to 0 than the smallest f32 (1.4e-45)"));
        }
        Ok(f)
    }
}

/// The flags that parameterise a method.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct MethodFlags {
    /// Memories kept per query (topk, random).
    #[arg(long, value_name = "K", value_parser = parse::size, allow_hyphen_values = true)]
    k: Option<usize>,
    /// Seed of the random mask (random) or of the random features (prf); default 0.
    #[arg(long, value_name = "S", value_parser = parse::seed, allow_hyphen_values = true)]
    seed: Option<u64>,
    /// Window width (window); default ceil(sqrt(M)).
    #[arg(long, value_name = "W", value_parser = parse::size, allow_hyphen_values = true)]
    window: Option<usize>,
    /// Relative error delta_A of the polynomial against exp on [-R, R] (poly), in (0, 1).
    #[arg(long, value_name = "D", allow_hyphen_values = true)]
    delta: Option<f64>,
    /// Degree of the polynomial (poly); default: the lowest that meets --delta.
    #[arg(long, value_name = "G", value_parser = parse::size, allow_hyphen_values = true)]
    degree: Option<usize>,
    /// Random features m (prf); default max(ceil(d ln d), 64).
    #[arg(long, value_name = "M", value_parser = parse::size, allow_hyphen_values = true)]
    features: Option<usize>,
    /// Draw the random features in orthogonal blocks (prf).
    #[arg(long)]
    orthogonal: bool,
    /// Max-norm distance to dense retrieval the planner must guarantee (auto).
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    tolerance: Option<f64>,
}

impl MethodFlags {
    /// Refuse any method flag: without `method_flag` (`--method`) it would
    /// be ignored.
    pub fn none_given(&self, method_flag: &'static str) -> Result<(), CliError> {
        let given = [
            ("--k", self.k.is_some()),
            ("--seed", self.seed.is_some()),
            ("--window", self.window.is_some()),
            ("--delta", self.delta.is_some()),
            ("--degree", self.degree.is_some()),
            ("--features", self.features.is_some()),
            ("--orthogonal", self.orthogonal),
            ("--tolerance", self.tolerance.is_some()),
        ];
        match given.iter().find(|(_, g)| *g) {
            Some((flag, _)) => {
                Err(CliError::Usage { flag, why: format!("needs {method_flag}: it sets one of its parameters") })
            }
            None => Ok(()),
        }
    }

    /// The library method for `arg` with these flags; a flag that does not
    /// belong to the method is an error rather than silently ignored.
    pub fn method(&self, arg: MethodArg) -> Result<Method, CliError> {
        let usage = |flag, why: &str| CliError::Usage { flag, why: why.to_string() };
        if self.seed.is_some() && !matches!(arg, MethodArg::Random | MethodArg::Prf) {
            return Err(usage("--seed", "only applies to --method random and --method prf"));
        }
        if self.delta.is_some() && arg != MethodArg::Poly {
            return Err(usage("--delta", "only applies to --method poly"));
        }
        if self.degree.is_some() && arg != MethodArg::Poly {
            return Err(usage("--degree", "only applies to --method poly"));
        }
        if (self.features.is_some() || self.orthogonal) && arg != MethodArg::Prf {
            return Err(usage("--features", "--features and --orthogonal only apply to --method prf"));
        }
        if self.tolerance.is_some() && arg != MethodArg::Auto {
            return Err(usage("--tolerance", "only applies to --method auto"));
        }
        if self.window.is_some() && arg != MethodArg::Window {
            return Err(usage("--window", "only applies to --method window"));
        }
        if self.k.is_some() && !matches!(arg, MethodArg::Topk | MethodArg::Random) {
            return Err(usage("--k", "only applies to --method topk and --method random"));
        }
        let k = || self.k.ok_or_else(|| usage("--k", "is required by this method"));
        let method = match arg {
            MethodArg::Dense => Method::Dense,
            MethodArg::DenseNaive => Method::DenseNaive,
            MethodArg::Topk => Method::TopK { k: k()? },
            MethodArg::Random => Method::Random { k: k()?, seed: self.seed.unwrap_or(0) },
            MethodArg::Window => Method::Window { width: self.window },
            MethodArg::Sparsemax => Method::Sparsemax,
            MethodArg::Entmax15 => Method::Entmax15,
            MethodArg::Poly => Method::Poly {
                delta: self.delta.ok_or_else(|| usage("--delta", "is required by --method poly"))?,
                degree: self.degree,
            },
            MethodArg::Linear => Method::Linear,
            MethodArg::Prf => {
                Method::Prf { features: self.features, seed: self.seed.unwrap_or(0), orthogonal: self.orthogonal }
            }
            MethodArg::Auto => Method::Auto {
                tolerance: self.tolerance.ok_or_else(|| usage("--tolerance", "is required by --method auto"))?,
            },
        };
        method.validate()?;
        debug_assert_eq!(MethodArg::of(&method), arg, "the flag and the method it builds disagree");
        Ok(method)
    }
}

/// The error type of the command: the library's, or a usage problem that
/// clap cannot see (a combination of flags).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the library; printed with the library's field names mapped to
    /// the flags that set them ([`flag`]).
    #[error("{}", lib_message(.0))]
    Lib(#[from] hopfield_gpu::Error),
    /// A flag's value or combination is not allowed.
    #[error("{flag}: {why}")]
    Usage {
        /// The flag, as typed.
        flag: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// The flag that sets library field `name` (`beta` -> `--beta`,
/// `max_steps` -> `--steps`); names without a flag are kept.
pub fn flag(name: &str) -> String {
    match name {
        "max_steps" => "--steps".into(),
        "width" => "--window".into(),
        "support" => "--support-out".into(),
        "energy" => "--energy-out".into(),
        "beta" | "eps" | "k" | "seed" | "delta" | "degree" | "features" | "tolerance" | "method" => format!("--{name}"),
        // analyze and experiment
        "p" | "radius" | "trials" | "steps" | "methods" | "sizes" | "sigmas" | "data" | "variant" => {
            format!("--{name}")
        }
        "noise_m" => "--m".into(),
        "n" => "--max-n".into(),
        "scaling_dim" => "--dim".into(),
        "time_budget_s" => "--time-budget".into(),
        "authors_threshold" => "--authors-threshold".into(),
        "noise_broadcast" => "--noise-broadcast".into(),
        "authors_sign_scores" => "--authors-sign-scores".into(),
        other => other.into(),
    }
}

/// A library error as the command line says it: field names as flags.
fn lib_message(e: &Error) -> String {
    match e {
        Error::InvalidParameter { name, value, why } => format!("invalid {} = {value}: {why}", flag(name)),
        Error::Unsupported { option, method, reason } => format!(
            "unsupported: {}{}: {reason}",
            flag(option),
            method.map(|m| format!(" with --method {m}")).unwrap_or_default()
        ),
        other => other.to_string(),
    }
}

pub(crate) fn context(device: &Option<String>) -> Result<Context, CliError> {
    Ok(Context::new(&ContextOptions { adapter_name: device.clone(), ..Default::default() })?)
}

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Retrieve(args) => retrieve::run(args, &cli.device),
        Command::Info(args) => info::run(args, &cli.device),
        Command::Bench(args) => bench::run(args, &cli.device),
        Command::Tune(args) => tune::run(args, &cli.device),
        Command::Layer(args) => layer::run(args, &cli.device),
        Command::Forward(args) => forward::run(args, &cli.device),
        Command::Experiment(args) => experiment::run(args, &cli.device),
        Command::Analyze(args) => analyze::run(args, &cli.device),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// For the kernel methods that depend on the data, decide on the host and
/// say so on stderr: `auto` prints the planner's numbers and decision, `poly`
/// its polynomial (g, r, R, B, delta, bounds). Returns the resolved method
/// (the library would resolve it the same way; resolving here lets the
/// command print why).
pub(crate) fn explain(
    ctx: &Context,
    method: Method,
    stats: impl FnOnce() -> Result<hopfield_gpu::ProblemStats, CliError>,
) -> Result<Method, CliError> {
    // Only these two depend on the data; the other methods are what runs.
    if let Method::Auto { tolerance } = method {
        let plan = hopfield_gpu::plan(&stats()?, tolerance, ctx.max_binding())?;
        eprintln!("{plan}");
        if let Some(rep) = plan.candidates.iter().find(|c| c.method == plan.choice).and_then(|c| c.poly.as_ref()) {
            eprintln!("{rep}");
        }
        return Ok(plan.choice);
    }
    if let Method::Poly { delta, degree } = method {
        let rep = hopfield_gpu::poly_choice(&stats()?, delta, degree, ctx.max_binding())?;
        eprintln!("{rep}");
        return Ok(Method::Poly { delta, degree: Some(rep.degree) });
    }
    Ok(method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_its_flag_spelling() {
        // MethodArg::of is exhaustive over Method; here every MethodArg maps
        // to a Method of the same name and back.
        let flags = MethodFlags { k: Some(3), delta: Some(0.1), tolerance: Some(0.1), ..Default::default() };
        for &arg in MethodArg::value_variants() {
            let flags = MethodFlags {
                k: flags.k.filter(|_| matches!(arg, MethodArg::Topk | MethodArg::Random)),
                delta: flags.delta.filter(|_| arg == MethodArg::Poly),
                tolerance: flags.tolerance.filter(|_| arg == MethodArg::Auto),
                ..Default::default()
            };
            let method = flags.method(arg).unwrap();
            assert_eq!(MethodArg::of(&method), arg);
            let spelled = arg.to_possible_value().expect("not hidden");
            assert_eq!(spelled.get_name(), method.name());
        }
    }

    #[test]
    fn library_fields_print_as_flags() {
        let e = CliError::Lib(Error::InvalidParameter { name: "max_steps", value: "0".into(), why: "x".into() });
        assert_eq!(e.to_string(), "invalid --steps = 0: x");
        let e = CliError::Lib(Error::InvalidParameter { name: "delta", value: "2".into(), why: "x".into() });
        assert_eq!(e.to_string(), "invalid --delta = 2: x");
    }
}
