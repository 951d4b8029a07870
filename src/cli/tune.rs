//! `hopfield-gpu tune`: find the fastest kernel configuration for this
//! device (every candidate checked against the f64 reference first), install
//! and cache it, and print what was tried.

use hopfield_gpu::{TuneOptions, TuneShapes, Verdict};

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Measure even if this device's choice is cached (as HOPFIELD_TUNE=force).
    #[arg(long)]
    force: bool,
    /// Timed runs per candidate, after one warm-up run.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Tiny timing shapes (a smoke test of the tuner; the choice is not
    /// representative and is not cached).
    #[arg(long)]
    quick: bool,
}

pub fn run(args: &Args, device: &Option<String>) -> Result<(), CliError> {
    if args.repeats == 0 {
        return Err(CliError::Usage { flag: "--repeats", why: "must be at least 1".into() });
    }
    let ctx = super::context(device)?;
    let opts = TuneOptions {
        force: args.force,
        repeats: args.repeats,
        shapes: args.quick.then(TuneShapes::tiny),
        write_cache: !args.quick,
        ..TuneOptions::default()
    };
    let report = ctx.tune(&opts)?;
    if args.json {
        let out = serde_json::json!({ "device": ctx.report(), "tune": report });
        println!("{}", serde_json::to_string_pretty(&out).expect("serialisable"));
        return Ok(());
    }
    let r = ctx.report();
    println!("device: {} ({}, {}); timing: {}", r.name, r.backend, r.device_type, report.timing);
    if report.cache_hit {
        println!("cached (HOPFIELD_TUNE=force or --force to measure again)");
    }
    if let Some(s) = &report.shapes {
        println!(
            "shapes: dense d={} M={} L={}; few queries d={} M={} L={}; top-K d={} M={} L={} K={}",
            s.dense.0, s.dense.1, s.dense.2, s.decode.0, s.decode.1, s.decode.2, s.topk.0, s.topk.1, s.topk.2, s.topk.3
        );
    }
    for t in &report.trials {
        let v = match &t.verdict {
            Verdict::Pruned { why } => format!("pruned: {why}"),
            Verdict::Rejected { why } => format!("REJECTED: {why}"),
            Verdict::Timed { median_ms } => format!("{median_ms:.3} ms"),
        };
        println!("  {:<7} {:<40} {v}", t.family, t.candidate);
    }
    println!("chosen: {}", report.config);
    if let Some(f) = &report.cache_file {
        println!("cached in {f}");
    }
    Ok(())
}
