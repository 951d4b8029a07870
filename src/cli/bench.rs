//! `hopfield-gpu bench`: time retrieval kernels, check each against the f64
//! CPU reference, and print a table (or `--json` records).
//!
//! Each configuration is warmed up once (lavapipe compiles pipelines on first
//! dispatch), then timed `repeats` times; the median is reported. With
//! several kernel configurations (`--config a,b`) every row runs on each,
//! the timed runs taken in turns (a b a b ...) so that the ratios come from
//! the same moments of one run. Times come from GPU timestamps around the
//! kernels where the device has them, else from the wall clock around the
//! whole call (upload and readback included).

use std::time::{Duration, Instant};

use std::sync::Arc;

use hopfield_gpu::config::{cache, KernelConfig};
use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::{Context, MemoryBank, Method, RetrieveOptions, Storage};
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
    #[arg(long, value_parser = super::parse::count, allow_hyphen_values = true)]
    d: Option<usize>,
    /// Number of memories of the single configuration.
    #[arg(long, value_parser = super::parse::count, allow_hyphen_values = true)]
    m: Option<usize>,
    /// Number of queries of the single configuration.
    #[arg(long, value_parser = super::parse::count, allow_hyphen_values = true)]
    l: Option<usize>,
    /// Inverse temperature (default 1/sqrt(d), which keeps scores of order one).
    #[arg(long, value_parser = super::parse::float32, allow_hyphen_values = true)]
    beta: Option<f32>,
    /// Timed runs per configuration (after one warm-up run).
    #[arg(long, value_parser = super::parse::count, allow_hyphen_values = true)]
    repeats: Option<usize>,
    /// Updates per retrieval.
    #[arg(long, default_value_t = 1, value_parser = super::parse::steps, allow_hyphen_values = true)]
    steps: u32,
    /// Sweep tau = M = L by doublings for dense and poly at fixed d, B and
    /// delta_A (--d, default 4; --scale, --delta, --beta; --max-tau),
    /// and fit the growth exponents (Theorem 3.1).
    #[arg(long)]
    scaling: bool,
    /// Largest tau of the --scaling sweep.
    #[arg(long, value_name = "TAU", default_value_t = 4096, value_parser = super::parse::count, allow_hyphen_values = true)]
    max_tau: usize,
    /// Smallest tau of the --scaling sweep.
    #[arg(long, value_name = "TAU", default_value_t = 512, value_parser = super::parse::count, allow_hyphen_values = true)]
    min_tau: usize,
    /// Data are uniform in [-scale, scale] (so B = scale), default 1; for --scaling 0.5.
    #[arg(long, value_name = "B", value_parser = super::parse::float32, allow_hyphen_values = true)]
    scale: Option<f32>,
    /// Kernel configurations to run every row with, comma-separated, side
    /// by side in this one run: `current` (the context's: the tuner's cached
    /// choice, else the defaults table), `default` (the defaults table),
    /// `tuned` (the cached choice; an error if this device was never
    /// tuned), `legacy` (the kernels before they were shaped for GPUs), or
    /// a JSON file (a configuration, or a tuner cache entry). Example:
    /// `--config current,legacy`.
    #[arg(long, value_name = "LIST", default_value = "current")]
    config: String,
    /// Store the memories as f16 (dense only; needs shader-f16).
    #[arg(long)]
    f16: bool,
    /// Time a hopfield-layers module's forward pass instead: HopfieldPooling
    /// over 1024 bags of 64 instances (input 64, 4 heads), or Hopfield
    /// self-association on 16 sequences of 1024 tokens (d = 256, 8 heads);
    /// --method swaps its retrieval. Not in the default suite (tens of
    /// seconds on lavapipe).
    #[arg(long, value_enum, value_name = "KIND")]
    layer: Option<super::bench_layer::LayerKind>,
    /// --layer: sequences (bags).
    #[arg(long, value_name = "N", value_parser = super::parse::count, allow_hyphen_values = true)]
    sequences: Option<usize>,
    /// --layer: rows per sequence (instances, tokens).
    #[arg(long, value_name = "S", value_parser = super::parse::count, allow_hyphen_values = true)]
    rows: Option<usize>,
    /// --layer: the module's input_size.
    #[arg(long, value_name = "F", value_parser = super::parse::count, allow_hyphen_values = true)]
    input_size: Option<usize>,
    /// --layer: the module's num_heads.
    #[arg(long, value_name = "H", value_parser = super::parse::count, allow_hyphen_values = true)]
    heads: Option<usize>,
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
    /// Entries uniform in [-scale, scale].
    scale: f32,
    /// Time every method by wall clock on a fresh bank per run, S/n build
    /// included (the feature methods always are; --scaling times dense so too).
    wall: bool,
}

/// One measured configuration, as printed and as `--json` emits it.
#[derive(Clone, Debug, Serialize)]
struct Record {
    /// The kernel configuration's name and what it runs (`hopfield-gpu info`).
    config: String,
    kernels: String,
    /// "f32" or "f16" storage of the memories.
    storage: &'static str,
    /// This median over the median of the row's first configuration (the
    /// same shape, the same run); absent for the first.
    relative_to_first: Option<f64>,
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

/// The default suite, sized to stay near two minutes on lavapipe: the dense
/// shapes the foundation issue names, then every sparse method at
/// M = L = 1024 beside the dense row of that shape, so their ratios to dense
/// come from one run. The issues' 4096 x 4096 comparisons are single
/// configurations (each run takes tens of seconds on lavapipe):
///
/// ```text
/// hopfield-gpu bench --method dense  --d 64 --m 4096 --l 4096 --repeats 3
/// hopfield-gpu bench --method topk   --k 16  --d 64 --m 4096 --l 4096 --repeats 3
/// hopfield-gpu bench --method topk   --k 256 --d 64 --m 4096 --l 4096 --repeats 3
/// hopfield-gpu bench --method topk   --k 256 --d 64 --m 1024 --l 1024 --repeats 3
/// hopfield-gpu bench --method random --k 64  --d 64 --m 4096 --l 4096 --repeats 3
/// ```
fn default_suite() -> Vec<Config> {
    let c = |method, d, m, l, repeats, note| Config {
        method,
        d,
        m,
        l,
        beta: None,
        steps: 1,
        repeats,
        note,
        scale: 1.0,
        wall: false,
    };
    vec![
        c(Method::Dense, 64, 4096, 4096, 3, ""),
        c(Method::Dense, 64, 1024, 1024, 3, "tiled; the rows below compare with it"),
        c(Method::DenseNaive, 64, 1024, 1024, 3, "naive one-thread-per-query baseline"),
        c(Method::TopK { k: 16 }, 64, 1024, 1024, 3, "K = 16"),
        c(Method::Random { k: 64, seed: 0 }, 64, 1024, 1024, 3, "k = 64"),
        c(Method::Window { width: None }, 64, 1024, 1024, 3, "default W = 32"),
        c(Method::Sparsemax, 64, 1024, 1024, 3, ""),
        c(Method::Entmax15, 64, 1024, 1024, 3, ""),
        c(Method::Dense, 784, 1024, 128, 3, "MNIST-sized patterns"),
        c(Method::Dense, 3, 4096, 1024, 3, "tiny d"),
        c(Method::Dense, 128, 300_000, 1, 3, "one query, memories beyond one 128 MiB binding"),
        c(
            Method::Window { width: None },
            64,
            4096,
            4096,
            3,
            "default W = ceil(sqrt(M)) = 64; vs the dense row at this shape",
        ),
    ]
}

pub fn run(args: &Args, device: &Option<String>) -> Result<(), CliError> {
    if let Some(kind) = args.layer {
        return layer(args, kind, device);
    }
    for (flag, given) in [
        ("--sequences", args.sequences.is_some()),
        ("--rows", args.rows.is_some()),
        ("--input-size", args.input_size.is_some()),
        ("--heads", args.heads.is_some()),
    ] {
        if given {
            return Err(CliError::Usage { flag, why: "applies to --layer only".into() });
        }
    }
    if args.scaling {
        return scaling(args, device);
    }
    let single = args.method.is_some() || args.d.is_some() || args.m.is_some() || args.l.is_some();
    let configs = if single {
        // The parsers refused 0 and negative sizes.
        let d = args.d.unwrap_or(64);
        let m = args.m.unwrap_or(4096);
        let l = args.l.unwrap_or(4096);
        vec![Config {
            method: args.flags.method(args.method.unwrap_or(MethodArg::Dense))?,
            d,
            m,
            l,
            beta: args.beta,
            steps: args.steps,
            repeats: args.repeats.unwrap_or(5),
            note: "",
            scale: args.scale.unwrap_or(1.0),
            wall: false,
        }]
    } else {
        if args.scale.is_some() {
            return Err(CliError::Usage {
                flag: "--scale",
                why: "applies to a single configuration or --scaling".into(),
            });
        }
        let mut suite = default_suite();
        for c in &mut suite {
            c.repeats = args.repeats.unwrap_or(c.repeats);
            c.beta = args.beta.or(c.beta);
            c.steps = args.steps;
        }
        suite
    };
    // Every configuration is checked whole before the device is touched or
    // anything is allocated.
    for c in &configs {
        validate(c)?;
    }
    let named = parse_configs(&args.config)?;
    if args.f16 && configs.iter().any(|c| c.method != Method::Dense) {
        return Err(CliError::Usage { flag: "--f16", why: "f16 storage serves --method dense only".into() });
    }

    let ctx = super::context(device)?;
    let kernels = kernel_configs(&ctx, named)?;
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
    let runs: u64 = configs.iter().map(|c| (c.repeats as u64 + 1) * kernels.len() as u64 + 1).sum();
    let bar = ProgressBar::new(runs).with_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    let mut records = Vec::new();
    let storage = if args.f16 { Storage::F16 } else { Storage::F32 };
    for c in &configs {
        records.extend(measure(&ctx, c, &kernels, storage, &bar)?);
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

/// `--layer`: one hopfield-layers module, timed and split by phase.
fn layer(args: &Args, kind: super::bench_layer::LayerKind, device: &Option<String>) -> Result<(), CliError> {
    for (flag, given) in [
        ("--d", args.d.is_some()),
        ("--m", args.m.is_some()),
        ("--l", args.l.is_some()),
        ("--scaling", args.scaling),
        ("--scale", args.scale.is_some()),
        ("--beta", args.beta.is_some()),
    ] {
        if given {
            return Err(CliError::Usage {
                flag,
                why: "does not apply to --layer (its shape flags are --sequences, --rows, --input-size, --heads)"
                    .into(),
            });
        }
    }
    if args.steps != 1 {
        return Err(CliError::Usage {
            flag: "--steps",
            why: "does not apply to --layer (the module's update_steps_max is 0)".into(),
        });
    }
    let mut b = super::bench_layer::LayerBench::new(kind, args.sequences, args.rows, args.input_size, args.heads);
    b.method = match args.method {
        Some(m) => args.flags.method(m)?,
        None => {
            args.flags.none_given("--method")?;
            Method::Dense
        }
    };
    b.repeats = args.repeats.unwrap_or(3);
    if !b.features.is_multiple_of(b.heads) {
        return Err(CliError::Usage { flag: "--heads", why: format!("must divide --input-size {}", b.features) });
    }
    let floats = b.n.checked_mul(b.s).and_then(|v| v.checked_mul(b.features));
    if floats.is_none_or(|f| f > 1 << 31) {
        return Err(CliError::Usage { flag: "--sequences", why: "the input holds more than 2^31 floats".into() });
    }
    let ctx = super::context(device)?;
    let report = ctx.report();
    let record = super::bench_layer::measure(&ctx, &b)?;
    if args.json {
        #[derive(Serialize)]
        struct LayerReport<'a> {
            device: hopfield_gpu::DeviceReport,
            layers: &'a [super::bench_layer::LayerRecord],
        }
        let json =
            serde_json::to_string_pretty(&LayerReport { device: report, layers: &[record] }).expect("serialisable");
        println!("{json}");
    } else {
        println!("device: {} ({}, {}); timing: wall clock", report.name, report.backend, report.device_type);
        super::bench_layer::print_table(&[record]);
    }
    Ok(())
}

/// Refuse a configuration that cannot run, before any allocation: its
/// options (beta, steps), a scale that is not a positive finite number
/// (rand's range would panic on it), and sizes whose host buffers overflow
/// or exceed the memory available.
fn validate(c: &Config) -> Result<(), CliError> {
    if !(c.scale.is_finite() && c.scale > 0.0) {
        return Err(CliError::Usage { flag: "--scale", why: format!("must be finite and > 0, got {:e}", c.scale) });
    }
    let beta = c.beta.unwrap_or(1.0 / (c.d as f32).sqrt());
    RetrieveOptions { method: c.method, beta, max_steps: c.steps, eps: 0.0, energy: false, support: false }
        .validate()?;
    hopfield_gpu::check_host_memory(|| format!("bench with d = {}, M = {}, L = {}", c.d, c.m, c.l), host_bytes(c))?;
    Ok(())
}

/// Host bytes one configuration holds at once: memories and queries in f32,
/// the memories again in f64 for the reference, and z. `None` on overflow.
fn host_bytes(c: &Config) -> Option<u64> {
    let (d, m, l) = (c.d as u64, c.m as u64, c.l as u64);
    let md = m.checked_mul(d)?;
    let ld = l.checked_mul(d)?;
    md.checked_mul(12)?.checked_add(ld.checked_mul(8)?)
}

fn random(rng: &mut rand::rngs::StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..=scale)).collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// A configuration `--config` names, read before the device is opened.
enum Named {
    Current,
    Default,
    Tuned,
    Given(KernelConfig),
}

/// Parse `--config` without a device: the four names, or JSON files (a
/// configuration, or a tuner cache entry).
fn parse_configs(list: &str) -> Result<Vec<(String, Named)>, CliError> {
    let usage = |why: String| CliError::Usage { flag: "--config", why };
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let named = match name {
            "current" => Named::Current,
            "default" => Named::Default,
            "tuned" => Named::Tuned,
            "legacy" => Named::Given(KernelConfig::legacy()),
            path => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    usage(format!("{path:?} is none of current, default, tuned, legacy, and not a readable file: {e}"))
                })?;
                Named::Given(match serde_json::from_str::<KernelConfig>(&text) {
                    Ok(c) => c,
                    Err(_) => {
                        serde_json::from_str::<cache::CacheEntry>(&text)
                            .map_err(|e| {
                                usage(format!("{path}: neither a kernel configuration nor a tuner cache entry: {e}"))
                            })?
                            .config
                    }
                })
            }
        };
        out.push((name.to_string(), named));
    }
    if out.is_empty() {
        return Err(usage("names no configuration".into()));
    }
    Ok(out)
}

/// The configurations `--config` named, on this device, in order.
fn kernel_configs(ctx: &Context, named: Vec<(String, Named)>) -> Result<Vec<Arc<KernelConfig>>, CliError> {
    let usage = |why: String| CliError::Usage { flag: "--config", why };
    let mut out = Vec::new();
    for (name, n) in named {
        let cfg = match n {
            Named::Current => {
                let mut c = (*ctx.config()).clone();
                if c.name == "default" || c.name == "tuned" {
                    c.name = format!("current ({})", c.name);
                }
                c
            }
            Named::Default => KernelConfig::defaults(ctx.caps()),
            Named::Tuned => {
                let dir = ctx.cache_dir().ok_or_else(|| usage("this platform has no cache directory".into()))?;
                cache::load(dir, &ctx.cache_key())
                    .ok_or_else(|| {
                        usage(format!(
                            "no tuned configuration for this device in {}: run `hopfield-gpu tune` first",
                            dir.display()
                        ))
                    })?
                    .config
            }
            Named::Given(c) => c,
        };
        cfg.check(ctx.caps()).map_err(|why| usage(format!("{name}: cannot run on this device: {why}")))?;
        out.push(Arc::new(cfg));
    }
    Ok(out)
}

/// Time row `c` on every configuration of `kernels` (the same data for
/// all): each warmed up once (lavapipe compiles pipelines on first use),
/// then the timed runs round-robin across the configurations, so that a
/// shared machine's changing load falls on all of them alike and their
/// ratios stay fair. One record per configuration, each checked against
/// the reference.
fn measure(
    ctx: &Context,
    c: &Config,
    kernels: &[Arc<KernelConfig>],
    storage: Storage,
    bar: &ProgressBar,
) -> Result<Vec<Record>, CliError> {
    let seed = (c.d as u64).wrapping_mul(31).wrapping_add((c.m as u64).wrapping_mul(7)).wrapping_add(c.l as u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed ^ seed);
    let memories = random(&mut rng, c.m * c.d, c.scale);
    let queries = random(&mut rng, c.l * c.d, c.scale);
    let beta = c.beta.unwrap_or(1.0 / (c.d as f32).sqrt());
    let bank = MemoryBank::with_storage(ctx, &memories, c.m, c.d, None, storage)?;
    // auto and poly are resolved here (and explained on stderr) so that the
    // reference below knows the polynomial.
    let method = super::explain(ctx, c.method, || {
        Ok(hopfield_gpu::ProblemStats::new(&queries, &memories, None, c.d, f64::from(beta), c.steps)?)
    })?;
    let c = &Config { method, ..c.clone() };
    let opts = RetrieveOptions { method: c.method, beta, max_steps: c.steps, eps: 0.0, energy: false, support: false };
    // Feature methods build S and n once per bank; timing them on a fresh
    // bank each run counts that build, as Theorem 3.1's total cost does.
    let wall_only = c.wall || c.method.is_kernel_method();
    let run = |k: &Arc<KernelConfig>, bank: &MemoryBank| {
        ctx.retrieve_with(k.clone(), bank, &queries, &opts, &mut |_| std::ops::ControlFlow::Continue(()))
    };

    // Warm-up: compiles the pipelines and fills the buffer pool.
    let mut firsts = Vec::with_capacity(kernels.len());
    for k in kernels {
        bar.set_message(format!("{} d={} M={} L={} [{}] warm-up", c.method.name(), c.d, c.m, c.l, k.name));
        firsts.push(run(k, &bank)?);
        bar.inc(1);
    }
    let mut gpu = vec![Vec::new(); kernels.len()];
    let mut wall = vec![Vec::new(); kernels.len()];
    bar.set_message(format!("{} d={} M={} L={}", c.method.name(), c.d, c.m, c.l));
    for _ in 0..c.repeats {
        for (i, k) in kernels.iter().enumerate() {
            let fresh =
                if wall_only { Some(MemoryBank::with_storage(ctx, &memories, c.m, c.d, None, storage)?) } else { None };
            let t = Instant::now();
            let r = run(k, fresh.as_ref().unwrap_or(&bank))?;
            wall[i].push(t.elapsed());
            if let Some(g) = r.gpu_time {
                gpu[i].push(g);
            }
            bar.inc(1);
        }
    }

    // Reference on an evenly spaced subsample, sized to ~2e8 multiply-adds per step.
    let budget = 2e8 / (c.m as f64 * 2.0 * c.d as f64 * f64::from(c.steps));
    let n_ref = (budget as usize).clamp(1, c.l.min(64));
    let rows: Vec<usize> = (0..n_ref).map(|i| i * c.l / n_ref).collect();
    let xs = Matrix::from_f32(c.l, c.d, &queries).select_rows(&rows);
    let xim = Matrix::from_f32(c.m, c.d, &memories);
    let t = Instant::now();
    let want = reference(c, &xs, &rows, &xim, f64::from(beta))?;
    let cpu_time = t.elapsed().as_secs_f64() * c.l as f64 / n_ref as f64;
    bar.inc(1);

    let mut records = Vec::with_capacity(kernels.len());
    for (i, k) in kernels.iter().enumerate() {
        let mut max_err = 0.0f64;
        for (r, &row) in rows.iter().enumerate() {
            let got = &firsts[i].z[row * c.d..(row + 1) * c.d];
            max_err = max_err.max(hopfield_gpu::tolerance::max_abs_diff(got, want.row(r)));
        }
        let wall_median = median(wall[i].clone());
        let (timing, time) = if wall_only {
            ("wall-clock, fresh bank (S/n build included)", wall_median)
        } else if gpu[i].len() == c.repeats {
            ("gpu-timestamps", median(gpu[i].clone()))
        } else {
            ("wall-clock", wall_median)
        };
        let secs = time.as_secs_f64();
        // Dense-equivalent for every method, so that GFLOP/s compare times.
        let flops = 4.0 * c.d as f64 * c.m as f64 * c.l as f64 * f64::from(c.steps);
        let bytes = storage.bytes() as f64 * 2.0 * c.m as f64 * c.d as f64 + 4.0 * 2.0 * c.l as f64 * c.d as f64;
        records.push(Record {
            config: k.name.clone(),
            kernels: k.to_string(),
            storage: match storage {
                Storage::F32 => "f32",
                Storage::F16 => "f16",
            },
            relative_to_first: None,
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
        });
    }
    let first = records[0].median_ms;
    for r in records.iter_mut().skip(1) {
        r.relative_to_first = Some(r.median_ms / first);
    }
    Ok(records)
}

/// The f64 CPU reference of `c.steps` updates for the sampled query `rows`
/// (`xs` holds them; random masks and windows depend on each query's index
/// among all L).
fn reference(c: &Config, xs: &Matrix, rows: &[usize], xim: &Matrix, beta: f64) -> Result<Matrix, CliError> {
    Ok(cpu::dynamics_rows(&c.method, xs, rows, c.l, xim, beta, c.steps as usize, 0.0)?.state)
}

fn print_table(records: &[Record]) {
    println!(
        "{:<16} {:<12} {:>5} {:>8} {:>6} {:>5} {:>11} {:>11} {:>7} {:>9} {:>8} {:>10} {:>9}  note",
        "config",
        "method",
        "d",
        "M",
        "L",
        "steps",
        "median ms",
        "wall ms",
        "vs 1st",
        "GFLOP/s",
        "GB/s",
        "max|err|",
        "vs CPU"
    );
    for r in records {
        println!(
            "{:<16} {:<12} {:>5} {:>8} {:>6} {:>5} {:>11.3} {:>11.3} {:>7} {:>9.2} {:>8.2} {:>10.2e} {:>8.1}x  {}{}",
            r.config,
            r.method,
            r.d,
            r.m,
            r.l,
            r.steps,
            r.median_ms,
            r.wall_median_ms,
            r.relative_to_first.map_or("-".to_string(), |x| format!("{x:.3}")),
            r.gflops,
            r.gbps,
            r.max_abs_err,
            r.speedup_vs_cpu_ref,
            r.note,
            if r.segments > 1 { format!(" [{} segments]", r.segments) } else { String::new() }
        );
    }
    println!(
        "GFLOP/s counts 4 d M L flops per step (for the non-dense methods a dense-equivalent rate: \
         compare times); GB/s counts memories, queries and outputs moved once; \
         max|err| is against the f64 CPU reference on a subsample; \"vs CPU\" is the reference's time \
         (extrapolated from that subsample) over the median; \"vs 1st\" is the median over that of the \
         row's first configuration (--config)."
    );
}

/// One tau of the `--scaling` sweep.
#[derive(Clone, Debug, Serialize)]
struct ScalingPoint {
    tau: usize,
    dense_ms: f64,
    poly_ms: f64,
    /// Time over the previous tau's (one doubling); absent at the first tau.
    dense_ratio: Option<f64>,
    poly_ratio: Option<f64>,
}

#[derive(Serialize)]
struct ScalingReport<'a> {
    device: hopfield_gpu::DeviceReport,
    d: usize,
    b: f32,
    beta: f32,
    delta: f64,
    points: &'a [ScalingPoint],
    /// Least-squares slope of ln(time) against ln(tau).
    dense_exponent: f64,
    poly_exponent: f64,
    /// First measured tau where poly is faster than dense.
    crossover_tau: Option<usize>,
    /// Whether poly is already faster at the smallest tau (the crossover
    /// then lies below the sweep).
    faster_from_the_start: bool,
    /// Where the two fitted power laws cross (extrapolated when outside the sweep).
    fitted_crossover_tau: Option<f64>,
    records: &'a [Record],
}

/// Least squares `y = a + b x`: (a, b).
fn fit(x: &[f64], y: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let sxx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let b = sxy / sxx;
    (my - b * mx, b)
}

/// `bench --scaling`: tau = M = L doubling from 512 to --max-tau, dense and
/// poly at fixed d, B and delta_A, both timed by wall clock on a fresh bank
/// (poly's S/n build included), the median of --repeats (default 2, after
/// one warm-up run). The defaults stop at tau = 4096, where dense at d = 4
/// already takes ~20 s per call on a contended lavapipe.
fn scaling(args: &Args, device: &Option<String>) -> Result<(), CliError> {
    if args.method.is_some() || args.m.is_some() || args.l.is_some() {
        return Err(CliError::Usage {
            flag: "--scaling",
            why: "sets M = L = tau and runs dense and poly itself".into(),
        });
    }
    if args.min_tau.checked_mul(2).is_none_or(|t| args.max_tau < t) {
        return Err(CliError::Usage { flag: "--max-tau", why: "must be at least twice --min-tau".into() });
    }
    let d = args.d.unwrap_or(4);
    let scale = args.scale.unwrap_or(0.5);
    let delta = args.flags.delta.unwrap_or(1e-3);
    let poly = MethodFlags { delta: Some(delta), ..args.flags.clone() }.method(MethodArg::Poly)?;
    let repeats = args.repeats.unwrap_or(2);
    let mut taus = vec![args.min_tau];
    while let Some(next) = taus.last().and_then(|t| t.checked_mul(2)).filter(|&t| t <= args.max_tau) {
        taus.push(next);
    }
    let config = |method, tau| Config {
        method,
        d,
        m: tau,
        l: tau,
        beta: args.beta,
        steps: 1,
        repeats,
        note: "scaling",
        scale,
        wall: true,
    };
    // The largest tau holds the most; check it (and the flags) first.
    let largest = *taus.last().expect("min_tau is in the sweep");
    validate(&config(Method::Dense, largest))?;
    let ctx = super::context(device)?;
    let bar = ProgressBar::new((taus.len() * 2 * (repeats + 2)) as u64);
    let mut records = Vec::new();
    let mut points: Vec<ScalingPoint> = Vec::new();
    for &tau in &taus {
        let mut times = [0.0; 2];
        for (i, method) in [Method::Dense, poly].into_iter().enumerate() {
            let r = measure(&ctx, &config(method, tau), &[ctx.config()], Storage::F32, &bar)?.remove(0);
            times[i] = r.median_ms;
            records.push(r);
        }
        let prev = points.last();
        points.push(ScalingPoint {
            tau,
            dense_ms: times[0],
            poly_ms: times[1],
            dense_ratio: prev.map(|p| times[0] / p.dense_ms),
            poly_ratio: prev.map(|p| times[1] / p.poly_ms),
        });
    }
    bar.finish_and_clear();
    let x: Vec<f64> = points.iter().map(|p| (p.tau as f64).ln()).collect();
    let (ad, bd) = fit(&x, &points.iter().map(|p| p.dense_ms.ln()).collect::<Vec<_>>());
    let (ap, bp) = fit(&x, &points.iter().map(|p| p.poly_ms.ln()).collect::<Vec<_>>());
    let measured = points.iter().position(|p| p.poly_ms < p.dense_ms);
    let fitted = (bd > bp).then(|| ((ap - ad) / (bd - bp)).exp());
    let beta = args.beta.unwrap_or(1.0 / (d as f32).sqrt());
    if args.json {
        let report = ScalingReport {
            device: ctx.report(),
            d,
            b: scale,
            beta,
            delta,
            points: &points,
            dense_exponent: bd,
            poly_exponent: bp,
            crossover_tau: measured.map(|i| points[i].tau),
            faster_from_the_start: measured == Some(0),
            fitted_crossover_tau: fitted,
            records: &records,
        };
        println!("{}", serde_json::to_string_pretty(&report).expect("serialisable"));
        return Ok(());
    }
    println!(
        "device: {}; tau = M = L, d = {d}, B = {scale}, beta = {beta}, delta_A = {delta:e}; wall clock per call \
         on a fresh bank (poly's S/n build included), median of {repeats}",
        ctx.report().name
    );
    println!("{:>8} {:>12} {:>12} {:>10} {:>10} {:>10}", "tau", "dense ms", "poly ms", "dense x", "poly x", "max|err|");
    for (i, p) in points.iter().enumerate() {
        let ratio = |r: Option<f64>| r.map_or("-".to_string(), |v| format!("{v:.2}"));
        println!(
            "{:>8} {:>12.3} {:>12.3} {:>10} {:>10} {:>10.2e}",
            p.tau,
            p.dense_ms,
            p.poly_ms,
            ratio(p.dense_ratio),
            ratio(p.poly_ratio),
            records[2 * i + 1].max_abs_err
        );
    }
    println!(
        "fitted exponents (log-log least squares): dense tau^{bd:.2} (Theorem 3.1: 2, i.e. 4x per doubling), \
         poly tau^{bp:.2} (almost linear: 1, i.e. 2x per doubling)"
    );
    let fitted =
        fitted.map_or("the fits do not cross".to_string(), |t| format!("the fitted laws cross at tau ~ {t:.0}"));
    match measured {
        Some(0) => println!(
            "crossover: poly is already faster at the smallest tau measured ({}); {fitted} (extrapolated; \
             run with a smaller --min-tau to measure it)",
            points[0].tau
        ),
        Some(i) => println!(
            "crossover: poly becomes faster between tau = {} and {} (measured); {fitted}",
            points[i - 1].tau,
            points[i].tau
        ),
        None => println!("crossover: not within the sweep; {fitted}"),
    }
    println!("max|err| is poly against the exact polynomial kernel (f64) on a subsample, not against dense.");
    Ok(())
}
