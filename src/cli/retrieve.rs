//! `hopfield-gpu retrieve`: memories and queries from .npy, z (and energies) to .npy.

use std::ops::ControlFlow;
use std::path::PathBuf;

use hopfield_gpu::npy;
use hopfield_gpu::{MemoryBank, RetrieveOptions};
use indicatif::{ProgressBar, ProgressStyle};

use super::paths::{self, Named};
use super::{CliError, MethodArg, MethodFlags};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stored patterns, a 2-D [M, d] .npy (float32, float64 or uint8).
    #[arg(long, value_name = "M.npy")]
    memories: PathBuf,
    /// Query patterns, a 2-D [L, d] .npy.
    #[arg(long, value_name = "X.npy")]
    queries: PathBuf,
    /// Inverse temperature (> 0), applied to the scores.
    #[arg(long, value_name = "B", value_parser = super::parse::float32, allow_hyphen_values = true)]
    beta: f32,
    /// Where to write the retrieved patterns, [L, dv] float32.
    #[arg(long, value_name = "Z.npy")]
    out: PathBuf,
    /// Separate values [M, dv] (hetero-association); default: the memories.
    #[arg(long, value_name = "V.npy")]
    values: Option<PathBuf>,
    /// Retrieval method.
    #[arg(long, value_enum, default_value = "dense")]
    method: MethodArg,
    #[command(flatten)]
    flags: MethodFlags,
    /// Write each query's support (memories with non-zero weight) as an
    /// int32 [L, width] .npy, padded with -1. Not for dense methods.
    #[arg(long, value_name = "S.npy")]
    support_out: Option<PathBuf>,
    /// Most updates per query (1 = one retrieval step).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = super::parse::steps, allow_hyphen_values = true)]
    steps: u32,
    /// Stop a query once an update moves no coordinate by more than this.
    #[arg(long, value_name = "E", default_value_t = 1e-5, value_parser = super::parse::float32, allow_hyphen_values = true)]
    eps: f32,
    /// Write the energy of each final state, a 1-D [L] float32 .npy.
    #[arg(long, value_name = "E.npy")]
    energy_out: Option<PathBuf>,
}

pub fn run(args: &Args, device: &Option<String>) -> Result<(), CliError> {
    let method = args.flags.method(args.method)?;
    if args.support_out.is_some() && method.is_dense() {
        return Err(CliError::Usage {
            flag: "--support-out",
            why: "dense retrieval gives every memory weight; there is no support to write".into(),
        });
    }
    let opts = RetrieveOptions {
        method,
        support: args.support_out.is_some(),
        beta: args.beta,
        max_steps: args.steps,
        eps: args.eps,
        energy: args.energy_out.is_some(),
    };
    // Check the flags and the paths, and read every file, before touching
    // the GPU: a typo in an output path must not cost the computation.
    opts.validate()?;
    paths::check(
        &[
            Some(Named { flag: "--out", path: &args.out }),
            Named::opt("--energy-out", &args.energy_out),
            Named::opt("--support-out", &args.support_out),
        ],
        &[
            Some(Named { flag: "--memories", path: &args.memories }),
            Some(Named { flag: "--queries", path: &args.queries }),
            Named::opt("--values", &args.values),
        ],
    )?;
    let mem = npy::read_2d(&args.memories)?;
    let q = npy::read_2d(&args.queries)?;
    if q.cols != mem.cols {
        return Err(CliError::Usage {
            flag: "--queries",
            why: format!(
                "{} has d = {}, but the memories {} have d = {}",
                args.queries.display(),
                q.cols,
                args.memories.display(),
                mem.cols
            ),
        });
    }
    let values = args.values.as_ref().map(|p| npy::read_2d(p)).transpose()?;
    if let (Some(v), Some(p)) = (&values, &args.values) {
        if v.rows != mem.rows {
            return Err(CliError::Usage {
                flag: "--values",
                why: format!("{} has {} rows, but there are {} memories", p.display(), v.rows, mem.rows),
            });
        }
    }
    let ctx = super::context(device)?;
    let opts = RetrieveOptions {
        method: super::explain(&ctx, opts.method, || {
            Ok(hopfield_gpu::ProblemStats::new(
                &q.data,
                &mem.data,
                values.as_ref().map(|v| (&v.data[..], v.cols)),
                mem.cols,
                f64::from(args.beta),
                args.steps,
            )?)
        })?,
        ..opts
    };
    let bank = match &values {
        Some(v) => MemoryBank::with_values(&ctx, &mem.data, mem.rows, mem.cols, &v.data, v.cols)?,
        None => MemoryBank::new(&ctx, &mem.data, mem.rows, mem.cols)?,
    };
    let r = if opts.max_steps > 8 {
        // Long dynamics: a bar of steps done (all batches) and queries still
        // moving, drawn only when stderr is a terminal.
        let bar = ProgressBar::new(u64::from(opts.max_steps)).with_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len} {msg}")
                .expect("a valid template"),
        );
        let r = ctx.retrieve_observed(&bank, &q.data, &opts, &mut |p| {
            bar.set_position(u64::from(p.steps_done));
            bar.set_message(format!(
                "batch {}/{}: {} of {} queries still moving",
                p.batch + 1,
                p.batches,
                p.moving,
                p.batch_queries
            ));
            ControlFlow::Continue(())
        });
        bar.finish_and_clear();
        r?
    } else {
        ctx.retrieve(&bank, &q.data, &opts)?
    };
    // Every output is staged before any is committed, so a failure on the
    // last one leaves the others (and any files they would replace) as they were.
    let mut staged = vec![npy::stage_f32_2d(&args.out, r.rows, r.cols, &r.z)?];
    if let (Some(path), Some(e)) = (&args.energy_out, &r.energy) {
        staged.push(npy::stage_f32_1d(path, e)?);
    }
    if let (Some(path), Some(s)) = (&args.support_out, &r.support) {
        staged.push(npy::stage_i32_2d(path, r.rows, s.width, &s.indices)?);
    }
    for s in staged {
        s.commit()?;
    }
    let converged = r.converged.iter().filter(|&&c| c).count();
    let max_steps = r.steps.iter().max().copied().unwrap_or(0);
    eprintln!(
        "retrieved {} x {} -> {} ({} of {} queries converged, at most {} steps)",
        r.rows,
        r.cols,
        args.out.display(),
        converged,
        r.rows,
        max_steps
    );
    Ok(())
}
