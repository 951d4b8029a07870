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
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Method {
        match m {
            MethodArg::Dense => Method::Dense,
            MethodArg::DenseNaive => Method::DenseNaive,
        }
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
