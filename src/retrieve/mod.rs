//! Retrieval: the options and results users see, and the driver that
//! decides which kernels run in which order. Every retrieval is recorded by
//! one primitive ([`job`]) into a command encoder; [`Context::retrieve`]
//! (host slices in and out) and [`Context::encode_retrieve`] (the caller's
//! buffers and encoder, no readback, no submit) are two ways of driving it.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use crate::bank::MemoryBank;
use crate::config::KernelConfig;
use crate::context::{Context, Scratch};
use crate::error::{Error, Result};
use crate::kernels::update::QueryInfo;
use crate::kernels::Recorder;
use crate::method::Method;
use crate::stats::validate_matrix;

pub(crate) mod batch;
pub(crate) mod encode;
pub(crate) mod job;
mod separation;

pub use batch::{
    Batch, BatchGroup, BatchMemories, BatchOptions, BatchProblem, BatchRetrieval, BatchSpace, BatchStop, GroupResult,
    ProblemResult,
};
pub use encode::RetrieveBuffers;
use job::Job;
pub use separation::Sweep;

/// The most updates one retrieval may run. Each costs about one retrieval
/// (dense: `O(L M (d + dv))`; a converged query stops changing but the
/// batch keeps its place in the dispatch until every query has converged),
/// so a million already takes days on lavapipe at bench sizes; with `eps > 0`
/// queries usually converge within tens of steps.
pub const MAX_STEPS: u32 = 1_000_000;

/// What to compute.
#[derive(Clone, Debug)]
pub struct RetrieveOptions {
    /// Kernel.
    pub method: Method,
    /// Inverse temperature, applied to the scores: `s = beta <x, xi>`. Must be finite and > 0.
    pub beta: f32,
    /// Updates at most (1 ..= [`MAX_STEPS`]). One is plain retrieval; more
    /// iterate `x <- T(x)`.
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
            return Err(Error::invalid("max_steps", 0, "at least one update is needed"));
        }
        if self.max_steps > MAX_STEPS {
            return Err(Error::invalid(
                "max_steps",
                self.max_steps,
                format!(
                    "at most {MAX_STEPS}: each step costs about one retrieval (O(L M d) for dense); use eps > 0 \
                     to stop converged queries early"
                ),
            ));
        }
        if self.method == Method::DenseNaive && self.max_steps > 1 {
            return Err(Error::unsupported(
                "max_steps",
                Some("dense-naive"),
                "the naive baseline kernel runs one step",
            ));
        }
        if self.support && self.method.is_dense() {
            return Err(Error::unsupported(
                "support",
                Some(self.method.name()),
                "dense retrieval has no support set (every memory has weight)",
            ));
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
    /// Updates applied per query (1 for hetero-association, the one update there is).
    pub steps: Vec<u32>,
    /// Whether the last update moved the query by at most eps. Always false
    /// for hetero-association (dv != d), where there is no fixed point.
    pub converged: Vec<bool>,
    /// `log sum_mu exp(beta <x, xi_mu>)` of the state the last update started
    /// from (of the final state when energies were asked for). Computed by
    /// the dense methods (also `auto` when it picks dense) and, for every
    /// method, when energies are asked for; otherwise 0, not a result: the
    /// other families never score every memory.
    pub log_sum_exp: Vec<f32>,
    /// Index of the memory most similar to that state (lowest on ties).
    /// Computed where [`Retrieval::log_sum_exp`] is; otherwise 0.
    pub argmax: Vec<u32>,
    /// `E(x) = -lse(beta, Xi x) + 0.5 <x, x>` of each final state, if asked
    /// for. Always finite: an energy beyond f32's range (beta below ~1e-38,
    /// states of norm ~1e19 and more) makes the retrieval fail with
    /// [`Error::OutOfRange`] instead.
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

/// Where a long retrieval stands, reported to the observer of
/// [`Context::retrieve_observed`] after every check of the dynamics (every
/// 8 steps) and at the end of each batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Index of the batch of queries running (queries are cut into batches
    /// whose partial results fit the device).
    pub batch: usize,
    /// Batches in all.
    pub batches: usize,
    /// Queries of the earlier batches, all finished.
    pub queries_done: usize,
    /// Queries in this batch.
    pub batch_queries: usize,
    /// Queries in the whole call.
    pub queries: usize,
    /// Steps this batch has run.
    pub steps_done: u32,
    /// Steps at most.
    pub max_steps: u32,
    /// Queries of this batch that moved by more than eps in the last step
    /// (0: the batch has converged and stops; at the end of a batch, those
    /// that did not converge).
    pub moving: u32,
}

impl Context {
    /// Retrieve for `queries` (`[L, d]` row-major) from `bank`.
    pub fn retrieve(&self, bank: &MemoryBank, queries: &[f32], opts: &RetrieveOptions) -> Result<Retrieval> {
        self.retrieve_observed(bank, queries, opts, &mut |_| ControlFlow::Continue(()))
    }

    /// [`Context::retrieve`], telling `observer` how the dynamics progress
    /// (steps done, queries still moving) between submissions. The observer
    /// may stop the retrieval by returning `ControlFlow::Break`; the call
    /// then returns [`Error::Cancelled`].
    pub fn retrieve_observed(
        &self,
        bank: &MemoryBank,
        queries: &[f32],
        opts: &RetrieveOptions,
        observer: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Retrieval> {
        self.retrieve_with(self.config(), bank, queries, opts, observer)
    }

    /// [`Context::retrieve_observed`] on the kernels of `cfg` rather than
    /// the context's configuration (the tuner's candidates, bench's
    /// configurations side by side). `cfg` must fit the device
    /// ([`KernelConfig::check`]).
    pub fn retrieve_with(
        &self,
        cfg: Arc<KernelConfig>,
        bank: &MemoryBank,
        queries: &[f32],
        opts: &RetrieveOptions,
        observer: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Retrieval> {
        cfg.check(self.caps())
            .map_err(|why| Error::unsupported("config", None, format!("configuration {:?}: {why}", cfg.name)))?;
        opts.validate()?;
        let d = bank.dim();
        let l = query_rows(queries, d)?;
        let stats = bank.problem_stats(queries, f64::from(opts.beta), opts.max_steps);
        self.scoped(|| {
            let job = Job::new(self, bank, cfg, opts, l, stats.as_ref())?;
            self.run_host(&job, queries, observer)
        })
    }

    /// The host-slice driver: upload each batch of queries, record its
    /// steps, submit every [`job::STEPS_PER_CHECK`] steps to read how many
    /// queries still move (4 bytes), and read the results back once.
    fn run_host(
        &self,
        job: &Job<'_>,
        queries: &[f32],
        observer: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Retrieval> {
        let (l, d, cols) = (job.l, job.bank.dim(), job.cols);
        let mut out = Retrieval {
            rows: l,
            cols,
            z: Vec::with_capacity(l * cols),
            steps: Vec::with_capacity(l),
            converged: Vec::with_capacity(l),
            log_sum_exp: Vec::with_capacity(l),
            argmax: Vec::with_capacity(l),
            energy: job.opts.energy.then(|| Vec::with_capacity(l)),
            gpu_time: self.has_timestamps().then_some(Duration::ZERO),
            support: job.support_width.map(|width| SupportSets { width, indices: Vec::with_capacity(l * width) }),
        };
        // The recorder's scratch returns to the pool when it drops, after
        // the last wait below.
        let mut rec = Recorder::new(self, Scratch::pooled(self));
        let bufs = job.buffers(&mut rec)?;
        let batches = l.div_ceil(job.batch);
        for (bi, start) in (0..l).step_by(job.batch).enumerate() {
            let lb = job.batch.min(l - start);
            let progress = |steps_done, moving| Progress {
                batch: bi,
                batches,
                queries_done: start,
                batch_queries: lb,
                queries: l,
                steps_done,
                max_steps: job.opts.max_steps,
                moving,
            };
            self.queue().write_buffer(&bufs.queries, 0, bytemuck::cast_slice(&queries[start * d..(start + lb) * d]));
            let timer = self.timer();
            let mut passes = job::Passes::new(timer.as_ref());
            let mut encoder = self.device().create_command_encoder(&Default::default());
            job.begin(&mut encoder, &bufs, lb);
            let mut done = 0;
            while done < job.opts.max_steps {
                let k = job::STEPS_PER_CHECK.min(job.opts.max_steps - done);
                let more_may_follow = done + k < job.opts.max_steps;
                job.steps(&mut rec, &mut encoder, &mut passes, &bufs, lb, start, k, more_may_follow)?;
                done += k;
                if more_may_follow {
                    rec.flush();
                    let moving = self.submit_and_read(encoder, &[(&bufs.active, 0, 4)])?;
                    encoder = self.device().create_command_encoder(&Default::default());
                    let moving = u32::from_le_bytes(
                        moving[0][..4].try_into().map_err(|_| Error::internal("a 4-byte counter read back short"))?,
                    );
                    if observer(&progress(done, moving)).is_break() {
                        return Err(Error::Cancelled { steps_done: done });
                    }
                    if moving == 0 {
                        break;
                    }
                }
            }
            job.finish(&mut rec, &mut encoder, &mut passes, &bufs, lb)?;
            let info_bytes = (lb * std::mem::size_of::<QueryInfo>()) as u64;
            let mut ranges = vec![(&bufs.target, 0, (lb * cols * 4) as u64), (&bufs.info, 0, info_bytes)];
            if let (Some(buf), Some(w)) = (&bufs.support, job.support_width) {
                ranges.push((buf, 0, (lb * w * 4) as u64));
            }
            if let Some(t) = &timer {
                passes.end(&mut encoder);
                t.resolve(&mut encoder);
                ranges.push((&t.resolve, 0, 16));
            }
            rec.flush();
            let bytes = self.submit_and_read(encoder, &ranges)?;
            let z: &[f32] = bytemuck::cast_slice(&bytes[0]);
            if z.iter().any(|v| !v.is_finite()) {
                return Err(Error::internal("the kernel produced a non-finite output"));
            }
            out.z.extend_from_slice(z);
            if let Some(s) = out.support.as_mut() {
                s.indices.extend_from_slice(bytemuck::cast_slice(&bytes[2]));
            }
            let infos: Vec<QueryInfo> = bytemuck::pod_collect_to_vec(&bytes[1]);
            for (i, qi) in infos.iter().enumerate() {
                // One update is applied where the kernels do not count steps
                // (hetero-association, the naive kernel).
                out.steps.push(if job.counts_steps() { qi.steps } else { 1 });
                out.converged.push(job.iterate && qi.converged == 1);
                out.log_sum_exp.push(qi.lse);
                out.argmax.push(qi.argmax);
                if let Some(e) = out.energy.as_mut() {
                    // The energy's state: the final one, or the query itself
                    // when values of another dimension leave it unchanged.
                    let x = if job.iterate { &z[i * cols..(i + 1) * cols] } else { &queries[(start + i) * d..][..d] };
                    e.push(energy(qi.energy, qi.lse, x, job.opts.beta, start + i)?);
                }
            }
            if let (Some(t), Some(total)) = (&timer, out.gpu_time.as_mut()) {
                *total += t.elapsed(bytes.last().map_or(&[][..], |b| &b[..])).unwrap_or_default();
            }
            let still_moving = infos.iter().filter(|q| job.iterate && q.converged == 0).count() as u32;
            if observer(&progress(done, still_moving)).is_break() && start + lb < l {
                return Err(Error::Cancelled { steps_done: done });
            }
        }
        Ok(out)
    }
}

/// `E(x) = -lse / beta + 0.5 <x, x>`, never non-finite. `kernel` is the
/// device's f32 value (shaders/dense_merge.wgsl, written so that no
/// intermediate overflows where the energy fits f32); when finite it is
/// returned as it is, so that [`Context::retrieve`] and
/// [`Context::encode_retrieve`] give the same bits. When not, the energy is
/// recombined in f64 from the kernel's log-sum-exp of the scores of `x` and
/// the state itself: one that fits f32 is returned, one that does not (beta
/// below ~1e-38 makes `lse / beta` huge, states of norm ~1e19 `<x, x>`) is
/// an [`Error::OutOfRange`].
fn energy(kernel: f32, lse: f32, x: &[f32], beta: f32, query: usize) -> Result<f32> {
    if kernel.is_finite() {
        return Ok(kernel);
    }
    energy_from_lse(lse, x, beta, query)
}

/// `E(x) = -lse / beta + 0.5 <x, x>` of query `query`'s state `x`, in f64
/// from the log-sum-exp of its scores; one beyond f32 is an
/// [`Error::OutOfRange`]. (The energies of merged shards come from here:
/// `crate::sharded`.)
pub(crate) fn energy_from_lse(lse: f32, x: &[f32], beta: f32, query: usize) -> Result<f32> {
    let half_xx = 0.5 * x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
    let e = -f64::from(lse) / f64::from(beta) + half_xx;
    if e.is_finite() && e.abs() <= f64::from(f32::MAX) {
        // |e| <= f32::MAX rounds to a finite f32.
        return Ok(e as f32);
    }
    Err(Error::OutOfRange {
        what: format!(
            "the energy of query {query} (-lse / beta + 0.5 <x, x> with lse = {lse:e}, beta = {beta:e}, \
             0.5 <x, x> = {half_xx:e})"
        ),
        value: e,
    })
}

/// Rows of `queries` against memories of dimension `d`, after the checks
/// every entry point makes: not empty, whole rows, finite.
pub(crate) fn query_rows(queries: &[f32], d: usize) -> Result<usize> {
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
    Ok(l)
}
