//! Command-line parsing (clap) and dispatch to one module per subcommand.
//! The flag names are an interface users' scripts rely on: keep them.

mod bench;
mod info;
mod retrieve;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hopfield_gpu::{Context, ContextOptions, Method};

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
    Info,
    /// Time retrieval kernels and check them against the CPU reference.
    Bench(bench::Args),
}

/// Retrieval methods as spelled on the command line.
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
}

/// The flags that parameterise a method.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct MethodFlags {
    /// Memories kept per query (topk, random).
    #[arg(long, value_name = "K")]
    k: Option<usize>,
    /// Seed of the random mask (random); default 0.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Window width (window); default ceil(sqrt(M)).
    #[arg(long, value_name = "W")]
    window: Option<usize>,
}

impl MethodFlags {
    /// The library method for `arg` with these flags; a flag that does not
    /// belong to the method is an error rather than silently ignored.
    pub fn method(&self, arg: MethodArg) -> Result<Method, CliError> {
        let usage = |flag, why: &str| CliError::Usage { flag, why: why.to_string() };
        if self.seed.is_some() && arg != MethodArg::Random {
            return Err(usage("--seed", "only applies to --method random"));
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
        };
        method.validate()?;
        Ok(method)
    }
}

/// The error type of the command: the library's, or a usage problem that
/// clap cannot see (a combination of flags).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// From the library.
    #[error(transparent)]
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

pub(crate) fn context(device: &Option<String>) -> Result<Context, CliError> {
    Ok(Context::new(&ContextOptions { adapter_name: device.clone(), ..Default::default() })?)
}

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Retrieve(args) => retrieve::run(args, &cli.device),
        Command::Info => info::run(&cli.device),
        Command::Bench(args) => bench::run(args, &cli.device),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
