//! The driver's primitive: one retrieval, checked and planned ([`Job`]),
//! recorded batch by batch into a command encoder. It never submits; the
//! host-slice driver submits between its steps to stop early, the encode
//! driver hands the encoder back to its caller.
//!
//! Per step, one compute pass: dense runs pass 1 (partial results per
//! split: running max, sum, weighted sum) and pass 2 (merge, with the
//! dynamics bookkeeping); every other family records its kernels through
//! `kernels::encode_step`, then `update` does the bookkeeping. The partial
//! results stay a separate stage (`dense::encode_partial`), which is what
//! merging the shards of a bank needs.

use std::sync::Arc;

use crate::bank::{MemoryBank, Storage};
use crate::config::KernelConfig;
use crate::context::{Context, Timer};
use crate::error::{Error, Resource, Result};
use crate::kernels::dense::{self, LegacyTile, MergeMode, Partials, Pass1, SplitPlan};
use crate::kernels::update::{self, QueryInfo};
use crate::kernels::{self, feature, Recorder, StepArgs, MAX_GROUPS};
use crate::method::Method;
use crate::planner;
use crate::stats::ProblemStats;

use super::RetrieveOptions;

/// Steps recorded per submission before the host-slice driver checks
/// whether any query still moves (a 4-byte read, not a state readback).
pub(crate) const STEPS_PER_CHECK: u32 = 8;

/// Scores beyond this magnitude are refused: the kernels use -3e38 as the
/// score of masked memories and must never overflow f32.
const MAX_SCORE: f64 = 1e30;

/// One retrieval, validated and planned: the method resolved, S and n built
/// for a kernel method, the split plan and the batch size chosen.
pub(crate) struct Job<'a> {
    pub(crate) bank: &'a MemoryBank,
    /// The options, with the method resolved (no `auto`, a polynomial with its degree).
    pub(crate) opts: RetrieveOptions,
    /// The kernel configuration (a snapshot of the context's, or the tuner's candidate).
    pub(crate) cfg: Arc<KernelConfig>,
    /// Queries in the call.
    pub(crate) l: usize,
    /// Whether states are iterated (dv == d): z replaces the state.
    pub(crate) iterate: bool,
    /// Output row length.
    pub(crate) cols: usize,
    /// Support columns, when asked for.
    pub(crate) support_width: Option<usize>,
    plan: SplitPlan,
    /// Queries per batch.
    pub(crate) batch: usize,
}

/// The device buffers of one batch, sized for the largest batch and reused
/// by every batch of the job (each batch writes them before reading).
pub(crate) struct Buffers {
    /// `[batch, d]` the batch's queries.
    pub(crate) queries: wgpu::Buffer,
    /// `[batch, cols]` the state (iterating) or z.
    pub(crate) target: wgpu::Buffer,
    partials: Partials,
    /// `[batch]` per-query records.
    pub(crate) info: wgpu::Buffer,
    /// Queries still moving after the last step (a u32).
    pub(crate) active: wgpu::Buffer,
    /// Non-dense methods write z here, then `update` moves it into the state.
    z: Option<wgpu::Buffer>,
    /// `[batch, width]` support indices.
    pub(crate) support: Option<wgpu::Buffer>,
}

/// Compute passes of one submission, the first and last carrying the
/// timer's timestamps (host-slice driver only).
pub(crate) struct Passes<'t> {
    timer: Option<&'t Timer>,
    first: bool,
}

impl<'t> Passes<'t> {
    pub(crate) fn new(timer: Option<&'t Timer>) -> Self {
        Passes { timer, first: true }
    }

    fn begin<'e>(&mut self, encoder: &'e mut wgpu::CommandEncoder) -> wgpu::ComputePass<'e>
    where
        't: 'e,
    {
        let writes = self.timer.and_then(|t| t.writes(self.first, false));
        self.first = false;
        encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("retrieve"), timestamp_writes: writes })
    }

    /// An empty pass carrying the end timestamp after all the work.
    pub(crate) fn end(&mut self, encoder: &mut wgpu::CommandEncoder) {
        if let Some(t) = self.timer {
            drop(encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("end"),
                timestamp_writes: t.writes(self.first, true),
            }));
        }
    }
}

impl<'a> Job<'a> {
    /// Check and plan a retrieval of `l` queries. `stats` are the problem's
    /// magnitudes when known (host queries against a host-built bank): they
    /// resolve `auto` and a polynomial's degree and rule out overflowing
    /// scores; without them the caller vouches for the data.
    pub(crate) fn new(
        ctx: &'a Context,
        bank: &'a MemoryBank,
        cfg: Arc<KernelConfig>,
        opts: &RetrieveOptions,
        l: usize,
        stats: Option<&ProblemStats>,
    ) -> Result<Self> {
        opts.validate()?;
        let (d, dv) = (bank.dim(), bank.value_dim());
        if l == 0 {
            return Err(Error::Empty { what: "queries" });
        }
        let method = planner::resolve(opts.method, stats, ctx.max_binding())?;
        let opts = RetrieveOptions { method, ..opts.clone() };
        if bank.storage() == Storage::F16 && method != Method::Dense {
            return Err(Error::unsupported(
                "storage",
                Some(method.name()),
                "memories stored as f16 serve dense retrieval only; upload them as f32 for this method",
            ));
        }
        if opts.max_steps > 1 && dv != d {
            return Err(Error::ShapeMismatch {
                what: "iterated dynamics need values of the pattern dimension (dv == d)".into(),
                expected: d,
                got: dv,
            });
        }
        if let Some(s) = stats {
            // Cauchy-Schwarz: |beta <x, xi>| <= beta |x| |xi|. Iterated states
            // are convex combinations of the values, so their norms stay
            // below max(|x|, max |v|): with separate values the bound needs
            // the values' norms too.
            // The energy pass scores the final state too.
            let states_are_values = dv == d && (opts.max_steps > 1 || opts.energy);
            let state = s.query_norm.max(s.key_norm).max(if states_are_values { s.value_norm } else { 0.0 });
            let bound = f64::from(opts.beta) * state * s.key_norm;
            if bound.is_nan() || bound >= MAX_SCORE {
                return Err(Error::invalid(
                    "beta",
                    opts.beta,
                    format!(
                        "beta max(|x|, |v|) |xi| = {bound:e} would overflow f32 scores (limit {MAX_SCORE:e}); \
                         scale the data down"
                    ),
                ));
            }
        }
        if let Some(key) = method.feature_key(opts.beta, d) {
            if opts.support {
                return Err(Error::unsupported(
                    "support",
                    Some(method.name()),
                    "kernel-method retrieval gives every memory a weight; there is no support set",
                ));
            }
            // S and n: from the bank's cache, or built now in one submission.
            feature::prepare(ctx, bank, key)?;
        }

        let mut plan = SplitPlan::new(ctx, &cfg, bank, l)?;
        let wg_mem = u64::from(ctx.limits().max_compute_workgroup_storage_size);
        let need = LegacyTile::DEFAULT.workgroup_bytes();
        if method == Method::Dense && plan.pass1 == Pass1::LegacyTiled && wg_mem < need {
            return Err(Error::limit(
                "the legacy tiled dense kernel (use method dense-naive, or another configuration, on this device)",
                Resource::WorkgroupBytes,
                need,
                wg_mem,
            ));
        }
        let max_bind = ctx.max_binding() as usize;
        let cap = |plan: &SplitPlan| {
            (max_bind / (plan.n_splits * dv * 4))
                .min(max_bind / (plan.n_splits * 16))
                .min(max_bind / (d.max(dv) * 4))
                .min(MAX_GROUPS * plan.pass1.queries_per_group())
        };
        if cap(&plan) == 0 {
            plan = SplitPlan::minimal(ctx, &cfg, bank, l)?;
        }
        let batch = cap(&plan).min(l);
        if batch == 0 {
            return Err(Error::limit(
                format!("the partial results of one query over {} memory segments", bank.segment_count()),
                Resource::BindingBytes,
                (plan.n_splits * dv.max(4) * 4) as u64,
                ctx.max_binding(),
            ));
        }
        let iterate = dv == d;
        let support_width = if opts.support { method.support_width(bank.len()) } else { None };
        Ok(Job { bank, opts, cfg, l, iterate, cols: if iterate { d } else { dv }, support_width, plan, batch })
    }

    /// Whether the kernels count each query's steps (else exactly one update
    /// is applied: hetero-association, the naive kernel).
    pub(crate) fn counts_steps(&self) -> bool {
        self.iterate && self.opts.method != Method::DenseNaive
    }

    /// The batch buffers, from `rec`'s scratch.
    pub(crate) fn buffers(&self, rec: &mut Recorder<'_>) -> Result<Buffers> {
        use wgpu::BufferUsages as U;
        let (d, dv, lb) = (self.bank.dim(), self.bank.value_dim(), self.batch);
        let rw = U::STORAGE | U::COPY_DST | U::COPY_SRC;
        let (o_bytes, s_bytes) = Partials::bytes(lb, dv, &self.plan);
        Ok(Buffers {
            queries: rec.buffer((lb * d * 4) as u64, rw)?,
            target: rec.buffer((lb * self.cols * 4) as u64, rw)?,
            partials: Partials { o: rec.buffer(o_bytes, U::STORAGE)?, stats: rec.buffer(s_bytes, U::STORAGE)? },
            info: rec.buffer((lb * std::mem::size_of::<QueryInfo>()) as u64, rw)?,
            active: rec.buffer(16, rw)?,
            z: if self.iterate && !self.opts.method.is_dense() {
                Some(rec.buffer((lb * dv * 4) as u64, rw)?)
            } else {
                None
            },
            support: match self.support_width {
                Some(w) => Some(rec.buffer((lb * w * 4).max(4) as u64, rw)?),
                None => None,
            },
        })
    }

    /// Record the start of a batch of `lb` queries (already in
    /// `bufs.queries`): records cleared, the state a copy of the queries.
    pub(crate) fn begin(&self, encoder: &mut wgpu::CommandEncoder, bufs: &Buffers, lb: usize) {
        encoder.clear_buffer(&bufs.info, 0, None);
        if self.iterate {
            // Iterating works on a copy, so the query buffer stays intact.
            encoder.copy_buffer_to_buffer(&bufs.queries, 0, &bufs.target, 0, (lb * self.bank.dim() * 4) as u64);
        }
    }

    /// Record `n` steps of the batch whose first query is query `l0`.
    /// `count_moving`: clear the moving-query counter before the last step,
    /// so that it then holds the queries that step moved.
    #[expect(clippy::too_many_arguments, reason = "the recording's state, the batch and the step range")]
    pub(crate) fn steps(
        &self,
        rec: &mut Recorder<'_>,
        encoder: &mut wgpu::CommandEncoder,
        passes: &mut Passes<'_>,
        bufs: &Buffers,
        lb: usize,
        l0: usize,
        n: u32,
        count_moving: bool,
    ) -> Result<()> {
        let (d, opts) = (self.bank.dim(), &self.opts);
        let state = if self.iterate { &bufs.target } else { &bufs.queries };
        for i in 0..n {
            if count_moving && i + 1 == n {
                encoder.clear_buffer(&bufs.active, 0, None);
            }
            let mut pass = passes.begin(encoder);
            // Dense runs its own two passes (the merge does the dynamics'
            // bookkeeping); every other method goes through encode_step.
            if opts.method == Method::Dense {
                let mode = if self.iterate { MergeMode::Step } else { MergeMode::Retrieve };
                self.dense_pass(rec, &mut pass, bufs, lb, state, &bufs.target, self.cols, mode)?;
            } else if opts.method == Method::DenseNaive {
                // The naive kernel writes z; the statistics come from the
                // tiled kernel's scoring pass (finish) so that both report
                // alike. `partials.stats` (16 bytes per query and split)
                // holds the naive kernel's 8-byte running max and sum.
                let stats = &bufs.partials.stats;
                dense::encode_naive(rec, &mut pass, self.bank, &bufs.queries, lb, &bufs.target, stats, opts.beta)?;
            } else {
                let z = bufs.z.as_ref().unwrap_or(&bufs.target);
                let args = StepArgs {
                    cfg: &self.cfg,
                    bank: self.bank,
                    queries: state,
                    l: lb,
                    l0,
                    l_total: self.l,
                    beta: opts.beta,
                    z,
                    support: bufs.support.as_ref(),
                };
                kernels::encode_step(rec, &mut pass, &opts.method, &args)?;
                if let Some(z) = &bufs.z {
                    update::encode(rec, &mut pass, z, &bufs.target, &bufs.info, &bufs.active, lb, d, opts.eps)?;
                }
            }
        }
        Ok(())
    }

    /// Record the two dense passes over `state`: partial results per split
    /// (scores only for the energy), then the merge in `mode` into `out`
    /// (`cols` wide).
    #[expect(clippy::too_many_arguments, reason = "the pass, the batch and the merge's target and mode")]
    fn dense_pass(
        &self,
        rec: &mut Recorder<'_>,
        pass: &mut wgpu::ComputePass<'_>,
        bufs: &Buffers,
        lb: usize,
        state: &wgpu::Buffer,
        out: &wgpu::Buffer,
        cols: usize,
        mode: MergeMode,
    ) -> Result<()> {
        let (beta, eps, partials) = (self.opts.beta, self.opts.eps, &bufs.partials);
        let scores_only = mode == MergeMode::Energy;
        dense::encode_partial(rec, pass, self.bank, &self.plan, state, lb, partials, beta, scores_only)?;
        dense::encode_merge(rec, pass, &self.plan, partials, out, &bufs.info, &bufs.active, lb, cols, mode, beta, eps)
    }

    /// Record the end of a batch: the energy pass (also the naive kernel's
    /// statistics), scoring the final states without values.
    pub(crate) fn finish(
        &self,
        rec: &mut Recorder<'_>,
        encoder: &mut wgpu::CommandEncoder,
        passes: &mut Passes<'_>,
        bufs: &Buffers,
        lb: usize,
    ) -> Result<()> {
        if !(self.opts.energy || self.opts.method == Method::DenseNaive) {
            return Ok(());
        }
        let state = if self.iterate { &bufs.target } else { &bufs.queries };
        let mut pass = passes.begin(encoder);
        self.dense_pass(rec, &mut pass, bufs, lb, state, state, self.bank.dim(), MergeMode::Energy)
    }
}
