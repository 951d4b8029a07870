//! `hopfield-gpu bench`: time retrieval kernels, check each against the f64
//! CPU reference, and print a table (or `--json` records).
//!
//! Each configuration is warmed up once (lavapipe compiles pipelines on first
//! dispatch), then timed `repeats` times; the median is reported. Times come
//! from GPU timestamps around the kernels where the device has them, else
//! from the wall clock around the whole call (upload and readback included).

use std::time::{Duration, Instant};

use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::{Context, MemoryBank, Method, RetrieveOptions};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{CliError, MethodArg, MethodFlags};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print machine-readable JSON records instead of the table.
    #[arg(long)]
    json: bool,
    /// Run one configuration with this method instead of the default suite.
    #[arg(long, value_enum)]
    method: Option<MethodArg>,
    #[command(flatten)]
    flags: MethodFlags,
    /// Pattern dimension of the single configuration.
    #[arg(long)]
    d: Option<usize>,
    /// Number of memories of the single configuration.
    #[arg(long)]
    m: Option<usize>,
    /// Number of queries of the single configuration.
    #[arg(long)]
    l: Option<usize>,
    /// Inverse temperature (default 1/sqrt(d), which keeps scores of order one).
    #[arg(long)]
    beta: Option<f32>,
    /// Timed runs per configuration (after one warm-up run).
    #[arg(long)]
    repeats: Option<usize>,
    /// Updates per retrieval.
    #[arg(long, default_value_t = 1)]
    steps: u32,
}

/// One configuration to time.
#[derive(Clone, Debug)]
struct Config {
    method: Method,
    d: usize,
    m: usize,
    l: usize,
    beta: Option<f32>,
    steps: u32,
    repeats: usize,
    note: &'static str,
}

/// One measured configuration, as printed and as `--json` emits it.
#[derive(Clone, Debug, Serialize)]
struct Record {
    method: &'static str,
    d: usize,
    m: usize,
    l: usize,
    steps: u32,
    beta: f32,
    note: &'static str,
    /// "gpu-timestamps" or "wall-clock".
    timing: &'static str,
    repeats: usize,
    median_ms: f64,
    wall_median_ms: f64,
    /// Flops counted as 4 d M L per step (2 d M L for the scores, 2 d M L for the weighted sum).
    gflops: f64,
    /// Compulsory bytes (memories and queries read once, outputs written once) per median time.
    gbps: f64,
    /// Largest |z_gpu - z_ref| over the checked queries.
    max_abs_err: f64,
    /// Queries checked against the reference (evenly spaced subsample).
    checked_queries: usize,
    /// f64 CPU reference time for all L queries, extrapolated from the subsample.
    cpu_ref_ms: f64,
    /// cpu_ref_ms / median_ms.
    speedup_vs_cpu_ref: f64,
    /// Storage-binding segments the memories were split into.
    segments: usize,
}

#[derive(Serialize)]
struct Report<'a> {
    device: hopfield_gpu::DeviceReport,
    records: &'a [Record],
}

/// The default suite: dense kernels only, so that it stays near two minutes
/// on lavapipe. Top-K and random masks are timed as single configurations
/// (each 4096 x 4096 run takes tens of seconds on lavapipe, dense as well;
/// compare against dense at the same shape, in the same session):
///
/// ```text
/// hopfield-gpu bench --method dense  --d 64 --m 4096 --l 4096 --repeats 3
/// hopfield-gpu bench --method topk   --k 16  --d 64 --m 4096 --l 4096 --repeats 3
/// hopfield-gpu bench --method topk   --k 256 --d 64 --m 4096 --l 4096 --repeats 3
/// hopfield-gpu bench --method random --k 64  --d 64 --m 4096 --l 4096 --repeats 3
/// ```
fn default_suite() -> Vec<Config> {
    let c = |method, d, m, l, repeats, note| Config { method, d, m, l, beta: None, steps: 1, repeats, note };
    vec![
        c(Method::Dense, 64, 1024, 1024, 5, ""),
        c(Method::Dense, 64, 4096, 4096, 3, ""),
        c(Method::Dense, 64, 2048, 2048, 3, "tiled, vs the naive kernel below"),
        c(Method::DenseNaive, 64, 2048, 2048, 3, "naive one-thread-per-query baseline"),
        c(Method::Dense, 784, 1024, 256, 3, "MNIST-sized patterns"),
        c(Method::Dense, 3, 4096, 4096, 3, "tiny d"),
        c(Method::Dense, 128, 300_000, 1, 3, "one query, memories beyond one 128 MiB binding"),
    ]
}

pub fn run(args: &Args, device: &Option<String>) -> Result<(), CliError> {
    let single = args.method.is_some() || args.d.is_some() || args.m.is_some() || args.l.is_some();
    let configs = if single {
        let d = args.d.unwrap_or(64);
        let m = args.m.unwrap_or(4096);
        let l = args.l.unwrap_or(4096);
        for (flag, v) in [("--d", d), ("--m", m), ("--l", l)] {
            if v == 0 {
                return Err(CliError::Usage { flag, why: "must be at least 1".into() });
            }
        }
        vec![Config {
            method: args.flags.method(args.method.unwrap_or(MethodArg::Dense))?,
            d,
            m,
            l,
            beta: args.beta,
            steps: args.steps,
            repeats: args.repeats.unwrap_or(5),
            note: "",
        }]
    } else {
        let mut suite = default_suite();
        for c in &mut suite {
            c.repeats = args.repeats.unwrap_or(c.repeats);
            c.beta = args.beta.or(c.beta);
            c.steps = args.steps;
        }
        suite
    };
    if configs.iter().any(|c| c.repeats == 0) {
        return Err(CliError::Usage { flag: "--repeats", why: "must be at least 1".into() });
    }

    let ctx = super::context(device)?;
    let report = ctx.report();
    if !args.json {
        println!(
            "device: {} ({}, {}); timing: {}",
            report.name,
            report.backend,
            report.device_type,
            if report.timestamps { "GPU timestamps" } else { "wall clock" }
        );
    }
    let runs: u64 = configs.iter().map(|c| c.repeats as u64 + 2).sum();
    let bar = ProgressBar::new(runs).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let mut records = Vec::new();
    for c in &configs {
        bar.set_message(format!("{} d={} M={} L={}", c.method.name(), c.d, c.m, c.l));
        records.push(measure(&ctx, c, &bar)?);
    }
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&Report { device: report, records: &records }).expect("serialisable")
        );
    } else {
        print_table(&records);
    }
    Ok(())
}

fn random(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn measure(ctx: &Context, c: &Config, bar: &ProgressBar) -> Result<Record, CliError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed ^ (c.d * 31 + c.m * 7 + c.l) as u64);
    let memories = random(&mut rng, c.m * c.d);
    let queries = random(&mut rng, c.l * c.d);
    let beta = c.beta.unwrap_or(1.0 / (c.d as f32).sqrt());
    let bank = MemoryBank::new(ctx, &memories, c.m, c.d)?;
    let opts = RetrieveOptions { method: c.method, beta, max_steps: c.steps, eps: 0.0, energy: false, support: false };

    // Warm-up: compiles the pipelines and fills the buffer pool.
    let first = ctx.retrieve(&bank, &queries, &opts)?;
    bar.inc(1);
    let mut gpu = Vec::new();
    let mut wall = Vec::new();
    for _ in 0..c.repeats {
        let t = Instant::now();
        let r = ctx.retrieve(&bank, &queries, &opts)?;
        wall.push(t.elapsed());
        if let Some(g) = r.gpu_time {
            gpu.push(g);
        }
        bar.inc(1);
    }
    let wall_median = median(wall);
    let (timing, time) =
        if gpu.len() == c.repeats { ("gpu-timestamps", median(gpu)) } else { ("wall-clock", wall_median) };

    // Reference on an evenly spaced subsample, sized to ~2e8 multiply-adds per step.
    let budget = 2e8 / (c.m as f64 * 2.0 * c.d as f64 * f64::from(c.steps));
    let n_ref = (budget as usize).clamp(1, c.l.min(64));
    let rows: Vec<usize> = (0..n_ref).map(|i| i * c.l / n_ref).collect();
    let xs = Matrix::from_f32(c.l, c.d, &queries).select_rows(&rows);
    let xim = Matrix::from_f32(c.m, c.d, &memories);
    let t = Instant::now();
    let want = reference(c, &xs, &rows, &xim, f64::from(beta));
    let cpu_time = t.elapsed().as_secs_f64() * c.l as f64 / n_ref as f64;
    bar.inc(1);
    let mut max_err = 0.0f64;
    for (k, &row) in rows.iter().enumerate() {
        let got = &first.z[row * c.d..(row + 1) * c.d];
        max_err = max_err.max(hopfield_gpu::tolerance::max_abs_diff(got, want.row(k)));
    }

    let secs = time.as_secs_f64();
    let flops = 4.0 * c.d as f64 * c.m as f64 * c.l as f64 * f64::from(c.steps);
    let bytes = 4.0 * (2.0 * c.m as f64 * c.d as f64 + 2.0 * c.l as f64 * c.d as f64);
    Ok(Record {
        method: c.method.name(),
        d: c.d,
        m: c.m,
        l: c.l,
        steps: c.steps,
        beta,
        note: c.note,
        timing,
        repeats: c.repeats,
        median_ms: secs * 1e3,
        wall_median_ms: wall_median.as_secs_f64() * 1e3,
        gflops: flops / secs / 1e9,
        gbps: bytes / secs / 1e9,
        max_abs_err: max_err,
        checked_queries: n_ref,
        cpu_ref_ms: cpu_time * 1e3,
        speedup_vs_cpu_ref: cpu_time / secs,
        segments: bank.segment_count(),
    })
}

/// The f64 CPU reference of `c.steps` updates for the sampled query `rows`
/// (`xs` holds them). Random masks and windows depend on each query's index
/// among all L, so every row is iterated with its own update rule.
fn reference(c: &Config, xs: &Matrix, rows: &[usize], xim: &Matrix, beta: f64) -> Matrix {
    use cpu::sparse::Support;
    let steps = c.steps as usize;
    let support = match c.method {
        Method::Dense | Method::DenseNaive => {
            return cpu::dense::dynamics(xs, xim, beta, steps, 0.0, cpu::dense::dense_update(xim, beta)).state
        }
        Method::Sparsemax => {
            let update = cpu::entmax::entmax_update(xim, beta, cpu::entmax::Normalizer::Sparsemax);
            return cpu::dense::dynamics(xs, xim, beta, steps, 0.0, update).state;
        }
        Method::Entmax15 => {
            let update = cpu::entmax::entmax_update(xim, beta, cpu::entmax::Normalizer::Entmax15);
            return cpu::dense::dynamics(xs, xim, beta, steps, 0.0, update).state;
        }
        Method::TopK { k } => Support::TopK { k },
        Method::Random { k, seed } => Support::Random { k, seed },
        Method::Window { width } => {
            Support::Window { width: width.unwrap_or_else(|| cpu::sparse::default_window(c.m)) }
        }
        _ => unreachable!("every method the CLI can build is listed"),
    };
    let mut out = Matrix::zeros(rows.len(), xs.cols);
    for (i, &row) in rows.iter().enumerate() {
        let one = xs.select_rows(&[i]);
        let update = cpu::sparse::sparse_update(xim, beta, support, row, c.l);
        let r = cpu::dense::dynamics(&one, xim, beta, steps, 0.0, update);
        out.row_mut(i).copy_from_slice(r.state.row(0));
    }
    out
}

fn print_table(records: &[Record]) {
    println!(
        "{:<12} {:>5} {:>8} {:>6} {:>5} {:>11} {:>11} {:>9} {:>8} {:>10} {:>9}  note",
        "method", "d", "M", "L", "steps", "median ms", "wall ms", "GFLOP/s", "GB/s", "max|err|", "vs CPU"
    );
    for r in records {
        println!(
            "{:<12} {:>5} {:>8} {:>6} {:>5} {:>11.3} {:>11.3} {:>9.2} {:>8.2} {:>10.2e} {:>8.1}x  {}{}",
            r.method,
            r.d,
            r.m,
            r.l,
            r.steps,
            r.median_ms,
            r.wall_median_ms,
            r.gflops,
            r.gbps,
            r.max_abs_err,
            r.speedup_vs_cpu_ref,
            r.note,
            if r.segments > 1 { format!(" [{} segments]", r.segments) } else { String::new() }
        );
    }
    println!(
        "GFLOP/s counts 4 d M L flops per step; GB/s counts memories, queries and outputs moved once; \
         max|err| is against the f64 CPU reference on a subsample; \"vs CPU\" is the reference's time \
         (extrapolated from that subsample) over the median."
    );
}
