//! Retrieval from host slices: validation, query batching, the iterated
//! dynamics loop and the readback. The kernels' dispatches are recorded by
//! `kernels::*`; this module decides which, how many, and in what order.

use std::time::Duration;

use crate::bank::{magnitudes, validate_matrix, MemoryBank};
use crate::context::{Context, Timer};
use crate::error::{Error, Result};
use crate::kernels::dense::{self, MergeMode, Partials, QueryInfo, SplitPlan, BQ, MAX_GROUPS};

/// Which retrieval kernel to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Method {
    /// Exact softmax retrieval with the tiled online-softmax kernel.
    #[default]
    Dense,
    /// The same result from the naive one-thread-per-query kernel: a
    /// baseline for `bench`, not for use (dv <= 256, one step).
    DenseNaive,
}

impl Method {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Dense => "dense",
            Method::DenseNaive => "dense-naive",
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
    pub energy: bool,
}

impl RetrieveOptions {
    /// One dense update at inverse temperature `beta`, with energies.
    pub fn dense(beta: f32) -> Self {
        RetrieveOptions { method: Method::Dense, beta, max_steps: 1, eps: 1e-5, energy: true }
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
        Ok(())
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
        if queries.len() % d != 0 {
            return Err(Error::ShapeMismatch {
                what: "queries must have the memories' dimension d (length not a multiple of d)".into(),
                expected: d,
                got: queries.len() % d,
            });
        }
        let l = queries.len() / d;
        validate_matrix("queries", queries, l, d)?;
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
            plan = SplitPlan::minimal(self, bank);
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
        };
        for start in (0..l).step_by(batch) {
            let lb = batch.min(l - start);
            self.retrieve_batch(bank, &queries[start * d..(start + lb) * d], lb, opts, &plan, &mut out)?;
        }
        Ok(out)
    }

    fn retrieve_batch(
        &self,
        bank: &MemoryBank,
        queries: &[f32],
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
        let scratch =
            [qbuf.clone(), target.clone(), partials.o.clone(), partials.stats.clone(), info.clone(), active.clone()];

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
                *total += t.elapsed(&bytes[2]).unwrap_or_default();
            }
            Ok(())
        })();
        self.release(scratch);
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
