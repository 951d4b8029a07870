//! The tuner: which kernel configuration runs fastest on this device.
//! [`Context::tune`] (and `hopfield-gpu tune`):
//!
//! 1. enumerates at most a dozen candidates per kernel family
//!    ([`config::candidates`]), pruned by the adapter's limits (workgroup
//!    memory, invocations, subgroup sizes, features); the legacy kernels are
//!    candidates too;
//! 2. runs each candidate on a small ragged problem (sizes that are no
//!    multiple of any tile) and compares it with the f64 CPU reference; a
//!    candidate that disagrees is rejected and reported, never timed;
//! 3. times the survivors on representative shapes with GPU timestamps
//!    (wall clock where the device has none): one warm-up run (pipelines
//!    compile on first use), then the median of the timed runs;
//! 4. tunes the split target (wgpu does not say how many compute units the
//!    device has) with the chosen few-query kernel, where splits matter most;
//! 5. installs the winner in the context and caches it
//!    (`$XDG_CACHE_HOME/hopfield-gpu/`, keyed by device, driver, wgpu and the
//!    kernels' source hash; `HOPFIELD_TUNE` controls it, see [`TuneMode`]).
//!
//! Each family is tuned with the others at their defaults: dense shapes run
//! more queries than the few-query kernel serves, so the two do not meet.
//!
//! Like `bench`, the tuner is a harness over retrieval that checks against
//! the reference: it sits above the device side (ARCHITECTURE.md), and the
//! kernels never see the reference.

use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::bank::MemoryBank;
use crate::config::cache::{self, CacheEntry, TuneMode};
use crate::config::{self, DecodeKernel, DenseKernel, KernelConfig, TopkKernel};
use crate::context::Context;
use crate::cpu::{self, Matrix};
use crate::error::{Error, Result};
use crate::method::Method;
use crate::retrieve::RetrieveOptions;
use crate::tolerance::Tolerance;

/// How hard to tune.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    /// Measure even when the cache has an entry for this device
    /// (`HOPFIELD_TUNE=force` does the same).
    pub force: bool,
    /// Timed runs per candidate and shape, after one warm-up run.
    pub repeats: usize,
    /// Timing shapes: [`TuneShapes::for_device`] unless given.
    pub shapes: Option<TuneShapes>,
    /// Candidates to consider instead of [`config::candidates`] (they are
    /// still pruned by the device's limits).
    pub candidates: Option<config::Candidates>,
    /// Split targets to try (workgroups per pass); `None`: a few around the
    /// device's default.
    pub split_targets: Option<Vec<u32>>,
    /// Write the choice to the cache (unless `HOPFIELD_TUNE=off`).
    pub write_cache: bool,
    /// For tests of the tuner itself: called on each candidate's output of
    /// the correctness check, with the candidate's label, before it is
    /// compared; a test perturbs one candidate's output to show that a
    /// wrong candidate is rejected.
    #[doc(hidden)]
    pub fault: Option<fn(&str, &mut [f32])>,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            force: false,
            repeats: 5,
            shapes: None,
            candidates: None,
            split_targets: None,
            write_cache: true,
            fault: None,
        }
    }
}

/// The problem sizes candidates are timed on: (d, M, L) per family, K for top-K.
#[derive(Clone, Debug, Serialize)]
pub struct TuneShapes {
    /// Dense: many queries against many memories.
    pub dense: (usize, usize, usize),
    /// Few queries against many memories.
    pub decode: (usize, usize, usize),
    /// Top-K: (d, M, L) and K.
    pub topk: (usize, usize, usize, usize),
}

impl TuneShapes {
    /// Shapes large enough to show a GPU's steady state, small enough that
    /// lavapipe tunes in minutes: on CPU devices d = 64, M = L = 1024 for
    /// dense and top-K (K = 256), one query against 65,536 memories; on
    /// GPUs M = L = 8192, one query against 2^20 memories, top-K at
    /// L = 1024, M = 2^18, K = 32.
    pub fn for_device(ctx: &Context) -> Self {
        if ctx.is_cpu() {
            TuneShapes { dense: (64, 1024, 1024), decode: (128, 65_536, 1), topk: (64, 1024, 1024, 256) }
        } else {
            TuneShapes { dense: (64, 8192, 8192), decode: (64, 1 << 20, 1), topk: (64, 1 << 18, 1024, 32) }
        }
    }

    /// Tiny shapes for tests of the tuner.
    pub fn tiny() -> Self {
        TuneShapes { dense: (8, 256, 64), decode: (8, 1024, 1), topk: (8, 256, 64, 8) }
    }
}

/// What happened to one candidate.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Verdict {
    /// The device cannot run it.
    Pruned {
        /// Why.
        why: String,
    },
    /// It ran but disagreed with the reference (or failed): not timed.
    Rejected {
        /// How it failed.
        why: String,
    },
    /// Checked, then timed: the median over the timed runs.
    Timed {
        /// Median milliseconds.
        median_ms: f64,
    },
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// "dense", "decode", "topk" or "splits".
    pub family: &'static str,
    /// The candidate, as the configuration prints it.
    pub candidate: String,
    /// What happened to it.
    pub verdict: Verdict,
}

/// What [`Context::tune`] did.
#[derive(Clone, Debug, Serialize)]
pub struct TuneReport {
    /// The configuration now installed.
    pub config: KernelConfig,
    /// Whether it came from the cache (nothing was measured).
    pub cache_hit: bool,
    /// Where it was cached, if it was written.
    pub cache_file: Option<String>,
    /// The shapes candidates were timed on.
    pub shapes: Option<TuneShapes>,
    /// Every candidate, in the order tried.
    pub trials: Vec<Trial>,
    /// "gpu-timestamps" or "wall-clock".
    pub timing: &'static str,
}

/// Uniform [-1, 1] data on the grid of multiples of 1/8: with beta a power
/// of two every score is exact in f32, so the top-K support of the check is
/// the reference's whatever the summation order.
fn grid(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| (rng.random_range(-1.0f32..=1.0) * 8.0).round() / 8.0).collect()
}

fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
}

/// A small ragged problem and its reference: sizes that are no multiple of
/// any tile, d with a partial vec4 tail and more than one chunk.
struct Check {
    bank: MemoryBank,
    x: Vec<f32>,
    method: Method,
    beta: f32,
    want: Vec<f64>,
}

// The kernels compute in f32, the reference in f64: a score carries about
// sqrt(d) * 6e-8 relative error, which a softmax weight inherits, and z is a
// convex combination of values bounded by 1 (as tests/dense.rs argues);
// 1e-4 abs + rel leaves an order of magnitude of headroom, while a broken
// kernel (a lost tile, a wrong max) is off by far more.
const CHECK_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);

impl Check {
    fn new(ctx: &Context, d: usize, m: usize, l: usize, method: Method, seed: u64) -> Result<Check> {
        let beta = 0.5;
        let xi = grid(seed, m * d);
        let x = grid(seed + 1, l * d);
        let bank = MemoryBank::new(ctx, &xi, m, d)?;
        let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
        let want = cpu::retrieve(&method, &xs, &xim, &xim, f64::from(beta))?.z.data;
        Ok(Check { bank, x, method, beta, want })
    }

    /// Why `cfg` fails the check, if it does.
    fn run(
        &self,
        ctx: &Context,
        cfg: &KernelConfig,
        label: &str,
        fault: Option<fn(&str, &mut [f32])>,
    ) -> Option<String> {
        let opts = RetrieveOptions {
            method: self.method,
            beta: self.beta,
            max_steps: 1,
            eps: 0.0,
            energy: false,
            support: false,
        };
        match ctx.retrieve_with(Arc::new(cfg.clone()), &self.bank, &self.x, &opts, &mut |_| {
            std::ops::ControlFlow::Continue(())
        }) {
            Err(e) => Some(format!("failed: {e}")),
            Ok(mut got) => {
                if let Some(f) = fault {
                    f(label, &mut got.z);
                }
                CHECK_TOL.check(&got.z, &self.want).err().map(|m| format!("disagrees with the reference: {m}"))
            }
        }
    }
}

/// A timing problem.
struct Timing {
    bank: MemoryBank,
    x: Vec<f32>,
    opts: RetrieveOptions,
}

impl Timing {
    fn new(ctx: &Context, d: usize, m: usize, l: usize, method: Method, seed: u64) -> Result<Timing> {
        let bank = MemoryBank::new(ctx, &uniform(seed, m * d), m, d)?;
        let opts = RetrieveOptions {
            method,
            beta: 1.0 / (d as f32).sqrt(),
            max_steps: 1,
            eps: 0.0,
            energy: false,
            support: false,
        };
        Ok(Timing { bank, x: uniform(seed + 1, l * d), opts })
    }

    /// Milliseconds of one run of `cfg` (GPU timestamps where the device has them).
    fn once(&self, ctx: &Context, cfg: &Arc<KernelConfig>) -> Result<f64> {
        let start = Instant::now();
        let r = ctx.retrieve_with(cfg.clone(), &self.bank, &self.x, &self.opts, &mut |_| {
            std::ops::ControlFlow::Continue(())
        })?;
        Ok(r.gpu_time.unwrap_or_else(|| start.elapsed()).as_secs_f64() * 1e3)
    }

    /// The median milliseconds of each of `cfgs`: one warm-up run each
    /// (pipelines compile on first use), then `repeats` timed runs taken in
    /// turns (a b c a b c ...), so that a shared machine's changing load
    /// falls on every candidate alike. A failing candidate gets its error.
    fn medians(&self, ctx: &Context, cfgs: &[Arc<KernelConfig>], repeats: usize) -> Vec<Result<f64>> {
        let mut times: Vec<Result<Vec<f64>>> =
            cfgs.iter().map(|c| self.once(ctx, c).map(|_| Vec::with_capacity(repeats))).collect();
        for _ in 0..repeats.max(1) {
            for (cfg, t) in cfgs.iter().zip(times.iter_mut()) {
                if let Ok(v) = t {
                    match self.once(ctx, cfg) {
                        Ok(ms) => v.push(ms),
                        Err(e) => *t = Err(e),
                    }
                }
            }
        }
        times
            .into_iter()
            .map(|t| {
                t.map(|mut v| {
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                })
            })
            .collect()
    }
}

/// Check then time every candidate of one family; the fastest survivor.
#[expect(clippy::too_many_arguments, reason = "one family's candidates, problems and report")]
fn tune_family<K: Copy + std::fmt::Display>(
    ctx: &Context,
    family: &'static str,
    candidates: &[K],
    with: impl Fn(K) -> KernelConfig,
    check: &Check,
    timing: &Timing,
    opts: &TuneOptions,
    trials: &mut Vec<Trial>,
) -> Option<K> {
    // Correctness first: only candidates that match the reference are timed.
    let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(candidates.len());
    let mut timed: Vec<(usize, Arc<KernelConfig>)> = Vec::new();
    for (i, &k) in candidates.iter().enumerate() {
        let cfg = with(k);
        let label = format!("{family} [{k}]");
        verdicts.push(match cfg.check(ctx.caps()) {
            Err(why) => Some(Verdict::Pruned { why }),
            Ok(()) => match check.run(ctx, &cfg, &label, opts.fault) {
                Some(why) => Some(Verdict::Rejected { why }),
                None => {
                    timed.push((i, Arc::new(cfg)));
                    None
                }
            },
        });
    }
    let cfgs: Vec<Arc<KernelConfig>> = timed.iter().map(|(_, c)| c.clone()).collect();
    let mut best: Option<(f64, K)> = None;
    for ((i, _), ms) in timed.iter().zip(timing.medians(ctx, &cfgs, opts.repeats)) {
        verdicts[*i] = Some(match ms {
            Err(e) => Verdict::Rejected { why: format!("failed on the timing shape: {e}") },
            Ok(ms) => {
                if best.is_none_or(|(b, _)| ms < b) {
                    best = Some((ms, candidates[*i]));
                }
                Verdict::Timed { median_ms: ms }
            }
        });
    }
    for (k, v) in candidates.iter().zip(verdicts) {
        let verdict = v.unwrap_or(Verdict::Rejected { why: "not timed".into() });
        trials.push(Trial { family, candidate: k.to_string(), verdict });
    }
    best.map(|(_, k)| k)
}

impl Context {
    /// Tune the kernels for this device (see the module documentation of
    /// `tune`) and install the winner. With a cached entry for this device
    /// and these kernels, and neither `opts.force` nor `HOPFIELD_TUNE=force`,
    /// the cached choice is installed and nothing is measured.
    pub fn tune(&self, opts: &TuneOptions) -> Result<TuneReport> {
        let mode = self.tune_mode();
        let key = self.cache_key();
        let timing = if self.has_timestamps() { "gpu-timestamps" } else { "wall-clock" };
        if mode == TuneMode::Cache && !opts.force {
            if let Some(entry) = self.cache_dir().and_then(|dir| cache::load(dir, &key)) {
                if entry.config.check(self.caps()).is_ok() {
                    self.set_config(entry.config.clone())?;
                    return Ok(TuneReport {
                        config: entry.config,
                        cache_hit: true,
                        cache_file: self.cache_dir().map(|d| d.join(key.file_name()).display().to_string()),
                        shapes: None,
                        trials: Vec::new(),
                        timing,
                    });
                }
            }
        }
        let shapes = opts.shapes.clone().unwrap_or_else(|| TuneShapes::for_device(self));
        let all = opts.candidates.clone().unwrap_or_else(|| config::candidates(self.caps()));
        let mut trials: Vec<Trial> = all
            .pruned
            .iter()
            .map(|(what, why)| Trial {
                family: "pruned",
                candidate: what.clone(),
                verdict: Verdict::Pruned { why: why.clone() },
            })
            .collect();
        let base = KernelConfig::defaults(self.caps());

        // Correctness problems: ragged sizes, d = 13 (a partial vec4, a
        // scalar load path) for dense, d = 20 for the others.
        let (dd, dm, dl) = shapes.dense;
        let dense_check = Check::new(self, 13, 301, 37, Method::Dense, 11)?;
        let dense_time = Timing::new(self, dd, dm, dl, Method::Dense, 12)?;
        let dense = tune_family(
            self,
            "dense",
            &all.dense,
            |k| KernelConfig { dense: k, ..base.clone() },
            &dense_check,
            &dense_time,
            opts,
            &mut trials,
        );
        drop(dense_time);
        let (cd, cm, cl) = shapes.decode;
        let decode_check = Check::new(self, 20, 1001, 3, Method::Dense, 13)?;
        let decode_time = Timing::new(self, cd, cm, cl, Method::Dense, 14)?;
        let decode = tune_family(
            self,
            "decode",
            &all.decode,
            |k| KernelConfig { decode: k, ..base.clone() },
            &decode_check,
            &decode_time,
            opts,
            &mut trials,
        );
        let (td, tm, tl, tk) = shapes.topk;
        let topk_check = Check::new(self, 20, 301, 37, Method::TopK { k: 10 }, 15)?;
        let topk_time = Timing::new(self, td, tm, tl, Method::TopK { k: tk }, 16)?;
        let topk = tune_family(
            self,
            "topk",
            &all.topk,
            |k| KernelConfig { topk: k, ..base.clone() },
            &topk_check,
            &topk_time,
            opts,
            &mut trials,
        );
        drop(topk_time);
        let mut chosen = KernelConfig {
            name: "tuned".into(),
            dense: dense.unwrap_or(DenseKernel::Legacy),
            decode: decode.unwrap_or(DecodeKernel::Legacy),
            topk: topk.unwrap_or(TopkKernel::Legacy),
            ..base
        };
        // Splits: around the device's default (4 per CPU thread, 2048 on GPUs).
        let default_target =
            if self.is_cpu() { 4 * std::thread::available_parallelism().map_or(4, |n| n.get()) as u32 } else { 2048 };
        let targets = opts.split_targets.clone().unwrap_or_else(|| {
            [default_target / 4, default_target / 2, default_target, default_target * 2]
                .into_iter()
                .filter(|&t| t > 0)
                .collect()
        });
        let cfgs: Vec<Arc<KernelConfig>> =
            targets.iter().map(|&t| Arc::new(KernelConfig { split_target: t, ..chosen.clone() })).collect();
        let mut best: Option<(f64, u32)> = None;
        for (&target, ms) in targets.iter().zip(decode_time.medians(self, &cfgs, opts.repeats)) {
            let verdict = match ms {
                Err(e) => Verdict::Rejected { why: format!("failed: {e}") },
                Ok(ms) => {
                    if best.is_none_or(|(b, _)| ms < b) {
                        best = Some((ms, target));
                    }
                    Verdict::Timed { median_ms: ms }
                }
            };
            trials.push(Trial { family: "splits", candidate: format!("{target} workgroups per pass"), verdict });
        }
        if let Some((_, t)) = best {
            chosen.split_target = if t == default_target { 0 } else { t };
        }
        if let Err(why) = chosen.check(self.caps()) {
            return Err(Error::internal(format!("the tuner chose a configuration the device cannot run: {why}")));
        }
        self.set_config(chosen.clone())?;
        let mut report = TuneReport {
            config: chosen.clone(),
            cache_hit: false,
            cache_file: None,
            shapes: Some(shapes),
            trials,
            timing,
        };
        if opts.write_cache && mode != TuneMode::Off {
            if let Some(dir) = self.cache_dir() {
                let entry = CacheEntry {
                    key,
                    config: chosen,
                    report: serde_json::to_value(&report).unwrap_or(serde_json::Value::Null),
                };
                report.cache_file = Some(cache::store(dir, &entry)?.display().to_string());
            }
        }
        Ok(report)
    }
}
