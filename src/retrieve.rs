//! Retrieval from host slices: validation, query batching, the iterated
//! dynamics loop and the readback. The kernels' dispatches are recorded by
//! `kernels::*`; this module decides which, how many, and in what order.

use std::time::Duration;

use crate::bank::{magnitudes, validate_matrix, MemoryBank};
use crate::context::{Context, Timer};
use crate::error::{Error, Result};
use crate::kernels;
use crate::kernels::dense::{self, MergeMode, Partials, QueryInfo, SplitPlan, BQ, MAX_GROUPS};

/// Which retrieval method to run (SEMANTICS.md defines each).
///
/// Not `Eq`: the feature-map methods carry f64 parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum Method {
    /// Exact softmax retrieval with the tiled online-softmax kernel.
    #[default]
    Dense,
    /// The same result from the naive one-thread-per-query kernel: a
    /// baseline for `bench`, not for use (one step).
    DenseNaive,
    /// Softmax over the `k` largest scores only (ties: lower index); the
    /// others get weight exactly 0. `k >= M` is dense retrieval.
    TopK {
        /// Memories kept per query (>= 1).
        k: usize,
    },
    /// Softmax over `k` memories drawn per query without replacement from a
    /// seeded counter-based hash ([`crate::cpu::sparse::random_rank_key`]).
    Random {
        /// Memories kept per query (>= 1).
        k: usize,
        /// Seed of the draw.
        seed: u64,
    },
    /// Softmax over a window of memories centred at `floor(l M / L)`.
    Window {
        /// Window width (>= 1); default `ceil(sqrt(M))`.
        width: Option<usize>,
    },
    /// sparsemax of the scores (Martins & Astudillo 2016).
    Sparsemax,
    /// 1.5-entmax of the scores (Peters et al. 2019).
    Entmax15,
    /// Polynomial low-rank kernel retrieval (fine-grained complexity paper,
    /// Section 3): `k(x, y) = P(beta <x, y>)` with a Taylor polynomial P of
    /// `e^t` whose relative error on `[-R, R]` is verified to be at most
    /// `delta` ([`crate::planner::poly_choice`] picks the lowest such degree).
    Poly {
        /// Relative error delta_A of P against `e^t` on `[-R, R]`, in (0, 1).
        delta: f64,
        /// Use this degree instead of searching (its achieved delta is
        /// reported, not checked against `delta`).
        degree: Option<usize>,
    },
    /// Linear-kernel retrieval, `phi(x) = elu(x) + 1` (no beta).
    Linear,
    /// Positive random features (FAVOR+), seeded.
    Prf {
        /// Random features m (default `ceil(d ln d)`).
        features: Option<usize>,
        /// Seed of W.
        seed: u64,
        /// Draw W in orthogonal blocks.
        orthogonal: bool,
    },
    /// Let the planner ([`crate::planner::plan`]) pick the cheapest method
    /// whose output is guaranteed within `tolerance` of dense retrieval
    /// (max-norm, one step).
    Auto {
        /// Allowed max-norm distance to exact dense retrieval (> 0).
        tolerance: f64,
    },
}

impl Method {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Dense => "dense",
            Method::DenseNaive => "dense-naive",
            Method::TopK { .. } => "topk",
            Method::Random { .. } => "random",
            Method::Window { .. } => "window",
            Method::Sparsemax => "sparsemax",
            Method::Entmax15 => "entmax15",
            Method::Poly { .. } => "poly",
            Method::Linear => "linear",
            Method::Prf { .. } => "prf",
            Method::Auto { .. } => "auto",
        }
    }

    /// Whether this is one of the two dense kernels.
    pub fn is_dense(self) -> bool {
        matches!(self, Method::Dense | Method::DenseNaive)
    }

    /// Check the method's own parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Method::TopK { k: 0 } | Method::Random { k: 0, .. } => {
                Err(Error::invalid("k", 0, "at least one memory must be kept"))
            }
            Method::Window { width: Some(0) } => Err(Error::invalid("window", 0, "must be at least 1")),
            Method::Poly { delta, degree } => {
                if !(delta > 0.0 && delta < 1.0) {
                    return Err(Error::invalid("--delta", delta, "delta_A must lie in (0, 1)"));
                }
                match degree {
                    Some(g) if g == 0 || g > crate::feature::poly::MAX_DEGREE => Err(Error::invalid(
                        "--degree",
                        g,
                        format!("the degree must lie in 1..={}", crate::feature::poly::MAX_DEGREE),
                    )),
                    _ => Ok(()),
                }
            }
            Method::Prf { features: Some(0), .. } => {
                Err(Error::invalid("--features", 0, "at least one random feature is needed"))
            }
            Method::Auto { tolerance } if !(tolerance.is_finite() && tolerance > 0.0) => {
                Err(Error::invalid("--tolerance", tolerance, "must be finite and > 0"))
            }
            _ => Ok(()),
        }
    }
}

/// What to compute.
#[derive(Clone, Debug)]
pub struct RetrieveOptions {
    /// Kernel.
    pub method: Method,
    /// Inverse temperature, applied to the scores: `s = beta <x, xi>`. Must be finite and > 0.
    pub beta: f32,
    /// Updates at most (>= 1). One is plain retrieval; more iterate `x <- T(x)`.
    pub max_steps: u32,
    /// A query stops once an update changes no coordinate by more than this
    /// (absolute, max-norm). Must be finite and >= 0.
    pub eps: f32,
    /// Also compute the energy of each final state (one more scoring pass).
    /// For every method this is the dense energy `E(x)`.
    pub energy: bool,
    /// Also return each query's support (the memories with non-zero weight);
    /// not available for dense retrieval.
    pub support: bool,
}

impl RetrieveOptions {
    /// One dense update at inverse temperature `beta`, with energies.
    pub fn dense(beta: f32) -> Self {
        RetrieveOptions { method: Method::Dense, beta, max_steps: 1, eps: 1e-5, energy: true, support: false }
    }

    /// Iterate up to `max_steps` updates, stopping each query at `eps`.
    pub fn steps(mut self, max_steps: u32, eps: f32) -> Self {
        self.max_steps = max_steps;
        self.eps = eps;
        self
    }

    /// Use another kernel.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Check the options alone (no device needed): the CLI calls this before
    /// it opens a device, so a bad flag is reported first.
    pub fn validate(&self) -> Result<()> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(Error::invalid("beta", self.beta, "must be finite and > 0"));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::invalid("eps", self.eps, "must be finite and >= 0"));
        }
        if self.max_steps == 0 {
            return Err(Error::invalid("steps", 0, "at least one update is needed"));
        }
        if self.method == Method::DenseNaive && self.max_steps > 1 {
            return Err(Error::Unsupported("the naive baseline kernel runs one step only".into()));
        }
        if self.support && self.method.is_dense() {
            return Err(Error::Unsupported("dense retrieval has no support set (every memory has weight)".into()));
        }
        self.method.validate()
    }
}

/// The outcome of a retrieval, one entry per query.
#[derive(Clone, Debug)]
pub struct Retrieval {
    /// Queries L.
    pub rows: usize,
    /// Output row length: dv (d when iterating).
    pub cols: usize,
    /// `[L, cols]` retrieved patterns (the final states when iterating).
    pub z: Vec<f32>,
    /// Updates applied per query.
    pub steps: Vec<u32>,
    /// Whether the last update moved the query by at most eps. Always false
    /// for hetero-association (dv != d), where there is no fixed point.
    pub converged: Vec<bool>,
    /// `log sum_mu exp(beta <x, xi_mu>)` of the state the last update started
    /// from (of the final state when energies were asked for).
    pub log_sum_exp: Vec<f32>,
    /// Index of the memory most similar to that state (lowest on ties).
    pub argmax: Vec<u32>,
    /// `E(x) = -lse(beta, Xi x) + 0.5 <x, x>` of each final state, if asked for.
    pub energy: Option<Vec<f32>>,
    /// Time the GPU spent on the passes (timestamps), where the device has them.
    pub gpu_time: Option<Duration>,
    /// Each query's support, when asked for.
    pub support: Option<SupportSets>,
}

/// Support indices per query, row-major `[L, width]`, padded with -1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupportSets {
    /// Columns per query.
    pub width: usize,
    /// `L * width` memory indices; -1 marks padding.
    pub indices: Vec<i32>,
}

/// Scores beyond this magnitude are refused: the kernels use -3e38 as the
/// score of masked memories and must never overflow f32.
const MAX_SCORE: f64 = 1e30;

/// Steps encoded per submission before the host checks whether any query
/// still moves (a 4-byte read, not a state readback).
const STEPS_PER_CHECK: u32 = 8;

impl Context {
    /// Retrieve for `queries` (`[L, d]` row-major) from `bank`.
    pub fn retrieve(&self, bank: &MemoryBank, queries: &[f32], opts: &RetrieveOptions) -> Result<Retrieval> {
        opts.validate()?;
        let (d, dv) = (bank.dim(), bank.value_dim());
        if queries.is_empty() {
            return Err(Error::Empty { what: "queries" });
        }
        if !queries.len().is_multiple_of(d) {
            return Err(Error::ShapeMismatch {
                what: "queries must have the memories' dimension d (length not a multiple of d)".into(),
                expected: d,
                got: queries.len() % d,
            });
        }
        let l = queries.len() / d;
        validate_matrix("queries", queries, l, d)?;
        // Feature-map methods: pick the map (planner, polynomial degree) and
        // build or fetch the bank's S and n before the first pass.
        let resolved = crate::planner::prepare(self, bank, queries, opts)?;
        let opts = resolved.as_ref().unwrap_or(opts);
        let wg_mem = self.limits().max_compute_workgroup_storage_size;
        if opts.method == Method::Dense && wg_mem < dense::TILED_WORKGROUP_BYTES {
            return Err(Error::DeviceLimit(format!(
                "the tiled dense kernel needs {} bytes of workgroup memory and this device has {wg_mem}; \
                 use the naive kernel (--method dense-naive) here",
                dense::TILED_WORKGROUP_BYTES
            )));
        }
        if opts.max_steps > 1 && dv != d {
            return Err(Error::ShapeMismatch {
                what: "iterated dynamics need values of the pattern dimension (dv == d)".into(),
                expected: d,
                got: dv,
            });
        }
        if let Some(stats) = bank.stats() {
            // Cauchy-Schwarz: |beta <x, xi>| <= beta |x| |xi|. Iterated states
            // are convex combinations of values, so their norms stay below
            // max(|x|, max |v|) and the bound covers every step.
            let bound = f64::from(opts.beta)
                * f64::from(magnitudes(queries, d).max_norm.max(stats.max_norm))
                * f64::from(stats.max_norm);
            if bound >= MAX_SCORE {
                return Err(Error::invalid(
                    "beta",
                    opts.beta,
                    format!("beta |x| |xi| = {bound:e} would overflow f32 scores (limit {MAX_SCORE:e})"),
                ));
            }
        }

        let mut plan = SplitPlan::new(self, bank, l);
        let max_bind = self.max_binding() as usize;
        let cap = |plan: &SplitPlan| {
            (max_bind / (plan.n_splits * dv * 4))
                .min(max_bind / (plan.n_splits * 16))
                .min(max_bind / (d.max(dv) * 4))
                .min(MAX_GROUPS * BQ)
        };
        if cap(&plan) == 0 {
            plan = SplitPlan::minimal(self, bank, l);
        }
        let batch = cap(&plan).min(l);
        if batch == 0 {
            return Err(Error::DeviceLimit(format!(
                "the {} memory segments' partial results for one query do not fit a storage binding of {} bytes",
                bank.segment_count(),
                max_bind
            )));
        }

        let iterate = dv == d;
        let cols = if iterate { d } else { dv };
        let mut out = Retrieval {
            rows: l,
            cols,
            z: Vec::with_capacity(l * cols),
            steps: Vec::with_capacity(l),
            converged: Vec::with_capacity(l),
            log_sum_exp: Vec::with_capacity(l),
            argmax: Vec::with_capacity(l),
            energy: opts.energy.then(|| Vec::with_capacity(l)),
            gpu_time: self.has_timestamps().then_some(Duration::ZERO),
            support: None,
        };
        let support_width = if opts.support { kernels::support_width(&opts.method, bank.len()) } else { None };
        if let Some(width) = support_width {
            out.support = Some(SupportSets { width, indices: Vec::with_capacity(l * width) });
        }
        for start in (0..l).step_by(batch) {
            let lb = batch.min(l - start);
            self.retrieve_batch(bank, &queries[start * d..(start + lb) * d], start, lb, opts, &plan, &mut out)?;
        }
        Ok(out)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one batch's inputs, outputs and plan; a struct would only rename them"
    )]
    fn retrieve_batch(
        &self,
        bank: &MemoryBank,
        queries: &[f32],
        l0: usize,
        lb: usize,
        opts: &RetrieveOptions,
        plan: &SplitPlan,
        out: &mut Retrieval,
    ) -> Result<()> {
        use wgpu::BufferUsages as U;
        let (d, dv) = (bank.dim(), bank.value_dim());
        let iterate = dv == d;
        let cols = out.cols;
        let rw = U::STORAGE | U::COPY_DST | U::COPY_SRC;
        let qbuf = self.acquire((lb * d * 4) as u64, rw)?;
        self.queue.write_buffer(&qbuf, 0, bytemuck::cast_slice(queries));
        // Iterating works on a copy, so the query buffer stays intact.
        let target = self.acquire((lb * cols * 4) as u64, rw)?;
        let (o_bytes, s_bytes) = Partials::bytes(lb, dv, plan);
        let partials = Partials { o: self.acquire(o_bytes, U::STORAGE)?, stats: self.acquire(s_bytes, U::STORAGE)? };
        let info = self.acquire((lb * std::mem::size_of::<QueryInfo>()) as u64, rw)?;
        let active = self.acquire(16, rw)?;
        let mut scratch = vec![
            qbuf.clone(),
            target.clone(),
            partials.o.clone(),
            partials.stats.clone(),
            info.clone(),
            active.clone(),
        ];
        // Non-dense methods write z here, then `update` moves it into the state.
        let zbuf =
            if iterate && !opts.method.is_dense() { Some(self.acquire((lb * dv * 4) as u64, rw)?) } else { None };
        let support_width = out.support.as_ref().map(|s| s.width);
        let support = match support_width {
            Some(w) => Some(self.acquire((lb * w * 4).max(4) as u64, rw)?),
            None => None,
        };
        scratch.extend(zbuf.iter().cloned().chain(support.iter().cloned()));
        let mut kernel_scratch = Vec::new();

        let result = (|| -> Result<()> {
            let timer = self.timer();
            let mut first_pass = true;
            let mut encoder = self.device.create_command_encoder(&Default::default());
            encoder.clear_buffer(&info, 0, None);
            if iterate {
                encoder.copy_buffer_to_buffer(&qbuf, 0, &target, 0, (lb * d * 4) as u64);
            }
            let state = if iterate { &target } else { &qbuf };
            let mut done = 0;
            while done < opts.max_steps {
                let k = STEPS_PER_CHECK.min(opts.max_steps - done);
                let more_may_follow = done + k < opts.max_steps;
                for i in 0..k {
                    if more_may_follow && i + 1 == k {
                        encoder.clear_buffer(&active, 0, None);
                    }
                    let mut pass = begin(&mut encoder, timer.as_ref(), &mut first_pass);
                    match opts.method {
                        Method::Dense => {
                            dense::encode_partial(self, &mut pass, bank, plan, state, lb, &partials, opts.beta, false)?;
                            let mode = if iterate { MergeMode::Step } else { MergeMode::Retrieve };
                            dense::encode_merge(
                                self, &mut pass, plan, &partials, &target, &info, &active, lb, cols, mode, opts.beta,
                                opts.eps,
                            )?;
                        }
                        Method::DenseNaive => {
                            // The naive kernel writes z; the statistics come from the
                            // tiled kernel's scoring pass so that both report alike.
                            // `partials.stats` (16 bytes per query and split) holds the naive
                            // kernel's 8-byte running max and sum per query.
                            dense::encode_naive(self, &mut pass, bank, &qbuf, lb, &target, &partials.stats, opts.beta)?;
                        }
                        method => {
                            let z = zbuf.as_ref().unwrap_or(&target);
                            let args = kernels::StepArgs {
                                bank,
                                queries: state,
                                l: lb,
                                l0,
                                l_total: out.rows,
                                beta: opts.beta,
                                z,
                                support: support.as_ref(),
                            };
                            kernels::encode_step(self, &mut pass, &method, &args, &mut kernel_scratch)?;
                            if let Some(z) = &zbuf {
                                kernels::update::encode(self, &mut pass, z, &target, &info, &active, lb, d, opts.eps)?;
                            }
                        }
                    }
                }
                done += k;
                if more_may_follow {
                    let moving = self.submit_and_read(encoder, &[(&active, 0, 4)])?;
                    encoder = self.device.create_command_encoder(&Default::default());
                    if u32::from_le_bytes(moving[0][..4].try_into().expect("4 bytes")) == 0 {
                        break;
                    }
                }
            }
            if opts.energy || opts.method == Method::DenseNaive {
                let mut pass = begin(&mut encoder, timer.as_ref(), &mut first_pass);
                dense::encode_partial(self, &mut pass, bank, plan, state, lb, &partials, opts.beta, true)?;
                dense::encode_merge(
                    self,
                    &mut pass,
                    plan,
                    &partials,
                    state,
                    &info,
                    &active,
                    lb,
                    d,
                    MergeMode::Energy,
                    opts.beta,
                    opts.eps,
                )?;
            }
            let mut ranges =
                vec![(&target, 0, (lb * cols * 4) as u64), (&info, 0, (lb * std::mem::size_of::<QueryInfo>()) as u64)];
            if let (Some(buf), Some(w)) = (&support, support_width) {
                ranges.push((buf, 0, (lb * w * 4) as u64));
            }
            if let Some(t) = &timer {
                // An empty pass carries the end timestamp after all the work.
                drop(encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("end"),
                    timestamp_writes: t.writes(first_pass, true),
                }));
                t.resolve(&mut encoder);
                ranges.push((&t.resolve, 0, 16));
            }
            let bytes = self.submit_and_read(encoder, &ranges)?;
            out.z.extend_from_slice(bytemuck::cast_slice(&bytes[0]));
            if let Some(s) = out.support.as_mut() {
                s.indices.extend_from_slice(bytemuck::cast_slice(&bytes[2]));
            }
            let infos: Vec<QueryInfo> = bytemuck::pod_collect_to_vec(&bytes[1]);
            for qi in &infos {
                out.steps.push(if opts.method == Method::DenseNaive { 1 } else { qi.steps });
                out.converged.push(iterate && qi.converged == 1);
                out.log_sum_exp.push(qi.lse);
                out.argmax.push(qi.argmax);
                if let Some(e) = out.energy.as_mut() {
                    e.push(qi.energy);
                }
            }
            if let (Some(t), Some(total)) = (&timer, out.gpu_time.as_mut()) {
                *total += t.elapsed(bytes.last().expect("timestamps read")).unwrap_or_default();
            }
            Ok(())
        })();
        self.release(scratch);
        self.release(kernel_scratch);
        result?;
        if out.z[out.z.len() - lb * cols..].iter().any(|v| !v.is_finite()) {
            return Err(Error::Gpu("the kernel produced a non-finite output; this is a bug, please report it".into()));
        }
        Ok(())
    }
}

/// Begin a compute pass; the first one of a retrieval carries the start timestamp.
fn begin<'e>(
    encoder: &'e mut wgpu::CommandEncoder,
    timer: Option<&'e Timer>,
    first: &mut bool,
) -> wgpu::ComputePass<'e> {
    let writes = timer.and_then(|t| t.writes(*first, false));
    *first = false;
    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("retrieve"), timestamp_writes: writes })
}
