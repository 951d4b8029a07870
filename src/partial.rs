//! Partial results of one shard of a memory set, and their exact merge
//! (flash-decoding across devices or machines). A shard holds memories
//! `[offset, offset + memories)` of the whole set in its own [`MemoryBank`];
//! [`Context::retrieve_partial`] returns per query what the merge needs, and
//! [`Partial::merge`] combines the shards' partials into the [`Retrieval`]
//! one bank holding every memory would give, up to f32 rounding.
//!
//! Which methods merge exactly, and how:
//! - **dense**: per query the log-sum-exp `lse_s` of the shard's scores, its
//!   softmax output `z_s`, its best score and argmax. Then
//!   `lse = log sum_s e^(lse_s)` and `z = sum_s e^(lse_s - lse) z_s`: the same
//!   sum as one bank, regrouped (the running max, sum of exponentials and
//!   weighted sum of values in log-sum-exp form, which cannot overflow). The
//!   shard's partial is the driver's own dense pass: pass 1's per-split
//!   statistics merged by pass 2 over the shard, whose best score pass 2
//!   records beside the log-sum-exp (`QueryInfo::max_score`).
//! - **top-K**: the global top K lies within the union of the shards' top-K
//!   lists, so each shard returns its list (scores, indices, value rows:
//!   the driver's top-K selection, then `kernels::partial` gathers the rows
//!   in the same submission) and the merge keeps the K best (ties to the
//!   lower global index, as one bank does) and takes the softmax over them.
//!   As from one bank, `log_sum_exp` and `argmax` are not computed for top-K
//!   (0); the support's first entry is the argmax.
//! - **refused** ([`Error::Unsupported`], naming the reason): random masks
//!   and windows (their support depends on the global index and on M, which
//!   the kernels do not take an offset for), sparsemax and 1.5-entmax (the
//!   threshold depends on every score of the query, so one round cannot
//!   merge it), and the feature-map methods poly, linear, prf and auto (their
//!   sums S and n do merge exactly, but the kernels return only the normalised
//!   ratio, poly picks its degree from each shard's own bound, and prf
//!   stabilises with a per-bank constant), and the naive dense baseline.
//!
//! A partial is one update. Iterated dynamics, with the state sent back to
//! every shard each step, are [`crate::ShardedBank::retrieve`]'s job.

use crate::bank::MemoryBank;
use crate::context::{Context, Scratch};
use crate::error::{Error, Resource, Result};
use crate::kernels::partial::{check_loops, encode_gather, GatherArgs};
use crate::kernels::update::QueryInfo;
use crate::kernels::Recorder;
use crate::method::Method;
use crate::retrieve::job::{Job, Passes};
use crate::retrieve::{query_rows, Retrieval, RetrieveOptions, SupportSets};

/// One shard's partial result for `rows` queries. Every field is plain data
/// (numbers and vectors), so partials can be serialised and merged on
/// another machine; [`Partial::merge`] checks them as untrusted input.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    /// Queries L.
    pub rows: usize,
    /// Value dimension dv.
    pub value_dim: usize,
    /// Global index of the shard's first memory. [`Context::retrieve_partial`]
    /// sets 0; set it to the shard's place in the whole set before merging.
    pub offset: usize,
    /// Memories in the shard.
    pub memories: usize,
    /// The beta the scores were taken at.
    pub beta: f32,
    /// What the method needs merged.
    pub data: PartialData,
}

/// The per-method contents of a [`Partial`]. Indices are local to the shard
/// (add [`Partial::offset`] for the global index). Deliberately exhaustive:
/// code that serialises partials must learn about a new kind at compile time.
#[derive(Clone, Debug, PartialEq)]
pub enum PartialData {
    /// Dense softmax retrieval.
    Dense {
        /// `[L, dv]` the shard's softmax output.
        z: Vec<f32>,
        /// `log sum exp(beta <x, xi>)` over the shard, per query.
        log_sum_exp: Vec<f32>,
        /// The shard's best score `beta <x, xi_argmax>`, per query.
        max_score: Vec<f32>,
        /// Local index of the shard's best memory (lowest on ties).
        argmax: Vec<u32>,
    },
    /// Top-K retrieval: each query's `width = min(k, memories)` best memories.
    TopK {
        /// K asked for.
        k: usize,
        /// Entries per query.
        width: usize,
        /// `[L, width]` scores `beta <x, xi>`, best first.
        scores: Vec<f32>,
        /// `[L, width]` local memory indices, in the same order.
        indices: Vec<i32>,
        /// `[L, width, dv]` the value rows of those memories.
        values: Vec<f32>,
    },
}

impl PartialData {
    /// The method's name, as in [`Method::name`].
    pub fn method_name(&self) -> &'static str {
        match self {
            PartialData::Dense { .. } => "dense",
            PartialData::TopK { .. } => "topk",
        }
    }
}

/// Why `method` has no exact partial/merge form, or `None` if it has one.
/// Every method is listed (no wildcard), so a new one must be decided here.
fn unmergeable(method: &Method) -> Option<&'static str> {
    match method {
        Method::Dense | Method::TopK { .. } => None,
        Method::DenseNaive => Some("the naive kernel is a benchmark baseline; use dense"),
        Method::Random { .. } => {
            Some("a random mask is drawn from each memory's global index, which the kernel has no offset for")
        }
        Method::Window { .. } => {
            Some("a window is centred by the query's index and M of the whole set, which a shard does not know")
        }
        Method::Sparsemax | Method::Entmax15 => {
            Some("the threshold depends on every score of the query, so shards cannot be merged in one round")
        }
        Method::Poly { .. } | Method::Linear | Method::Prf { .. } | Method::Auto { .. } => Some(
            "the feature-map kernels return only the normalised ratio (and poly's degree and prf's stabiliser \
             are chosen per bank), so the shards' numerators and denominators are not available to add",
        ),
    }
}

/// `Ok` if `method` merges exactly across shards, else [`Error::Unsupported`]
/// saying why (see the module docs).
pub(crate) fn check_mergeable(method: &Method) -> Result<()> {
    match unmergeable(method) {
        None => Ok(()),
        Some(why) => Err(Error::unsupported(
            "method",
            Some(method.name()),
            format!("{} has no exact shard merge: {why}", method.name()),
        )),
    }
}

impl Context {
    /// One shard's partial result for `queries` (`[L, d]`) from `bank`: the
    /// statistics [`Partial::merge`] combines into the whole set's
    /// [`Retrieval`]. `opts.method` must be dense or top-K (see the module
    /// docs for why the others are refused), with one step and no energy
    /// (both need the merged state: [`crate::ShardedBank`] does them);
    /// `opts.support` is implied for top-K (the list is the partial).
    pub fn retrieve_partial(&self, bank: &MemoryBank, queries: &[f32], opts: &RetrieveOptions) -> Result<Partial> {
        opts.validate()?;
        check_mergeable(&opts.method)?;
        let name = Some(opts.method.name());
        if opts.max_steps != 1 {
            return Err(Error::unsupported(
                "max_steps",
                name,
                "a partial result is one update; ShardedBank::retrieve runs iterated dynamics across shards",
            ));
        }
        if opts.energy {
            return Err(Error::unsupported(
                "energy",
                name,
                "the energy of the final state needs the merged state; ShardedBank::retrieve computes it",
            ));
        }
        let l = query_rows(queries, bank.dim())?;
        let stats = bank.problem_stats(queries, f64::from(opts.beta), 1);
        let top_k = if let Method::TopK { k } = opts.method { Some(k) } else { None };
        let one = RetrieveOptions { max_steps: 1, energy: false, support: top_k.is_some(), ..opts.clone() };
        let data = self.scoped(|| {
            let job = Job::new(self, bank, self.config(), &one, l, stats.as_ref())?;
            match top_k {
                Some(k) => self.topk_partial(&job, queries, k),
                None => self.dense_partial(&job, queries),
            }
        })?;
        Ok(Partial { rows: l, value_dim: bank.value_dim(), offset: 0, memories: bank.len(), beta: opts.beta, data })
    }

    /// The dense partial: one step of the driver per batch, z and the
    /// per-query records (log-sum-exp, best score, argmax) read back.
    fn dense_partial(&self, job: &Job<'_>, queries: &[f32]) -> Result<PartialData> {
        let (l, d, cols) = (job.l, job.bank.dim(), job.cols);
        let mut rec = Recorder::new(self, Scratch::pooled(self));
        let bufs = job.buffers(&mut rec)?;
        let (mut z, mut log_sum_exp, mut max_score, mut argmax) =
            (Vec::with_capacity(l * cols), Vec::with_capacity(l), Vec::with_capacity(l), Vec::with_capacity(l));
        for start in (0..l).step_by(job.batch) {
            let lb = job.batch.min(l - start);
            self.queue().write_buffer(&bufs.queries, 0, bytemuck::cast_slice(&queries[start * d..(start + lb) * d]));
            let mut encoder = self.device().create_command_encoder(&Default::default());
            job.begin(&mut encoder, &bufs, lb);
            job.steps(&mut rec, &mut encoder, &mut Passes::new(None), &bufs, lb, start, 1, false)?;
            rec.flush();
            let info_bytes = (lb * size_of::<QueryInfo>()) as u64;
            let bytes = self
                .submit_and_read(encoder, &[(&bufs.target, 0, (lb * cols * 4) as u64), (&bufs.info, 0, info_bytes)])?;
            let zb: &[f32] = bytemuck::cast_slice(&bytes[0]);
            if zb.iter().any(|v| !v.is_finite()) {
                return Err(Error::internal("the kernel produced a non-finite output"));
            }
            z.extend_from_slice(zb);
            for qi in bytemuck::pod_collect_to_vec::<u8, QueryInfo>(&bytes[1]) {
                log_sum_exp.push(qi.lse);
                max_score.push(qi.max_score);
                argmax.push(qi.argmax);
            }
        }
        Ok(PartialData::Dense { z, log_sum_exp, max_score, argmax })
    }

    /// The top-K partial: per batch the driver's top-K selection (its
    /// support, best first) and, in the same submission, the gather of the
    /// selected memories' scores and value rows.
    fn topk_partial(&self, job: &Job<'_>, queries: &[f32], k: usize) -> Result<PartialData> {
        use wgpu::BufferUsages as U;
        let (l, d, dv) = (job.l, job.bank.dim(), job.bank.value_dim());
        let width = job.support_width.ok_or_else(|| Error::internal("a top-K job without a support width"))?;
        check_loops(self.loop_budget(), d, dv)?;
        // The gathered rows of one batch must fit a binding.
        let row_bytes = (width * dv * 4) as u64;
        let batch = job.batch.min(usize::try_from(self.max_binding() / row_bytes).unwrap_or(usize::MAX));
        if batch == 0 {
            return Err(Error::limit(
                format!("the {width} value rows of dimension {dv} a shard returns per query"),
                Resource::BindingBytes,
                row_bytes,
                self.max_binding(),
            ));
        }
        let mut rec = Recorder::new(self, Scratch::pooled(self));
        let bufs = job.buffers(&mut rec)?;
        let sel = bufs.support.as_ref().ok_or_else(|| Error::internal("a top-K job without a support buffer"))?;
        let scores_buf = rec.buffer((batch * width * 4).max(4) as u64, U::STORAGE | U::COPY_SRC)?;
        let vals_buf = rec.buffer((batch as u64 * row_bytes).max(4), U::STORAGE | U::COPY_SRC)?;
        let (mut scores, mut indices, mut values) =
            (Vec::with_capacity(l * width), Vec::with_capacity(l * width), Vec::with_capacity(l * width * dv));
        for start in (0..l).step_by(batch) {
            let lb = batch.min(l - start);
            self.queue().write_buffer(&bufs.queries, 0, bytemuck::cast_slice(&queries[start * d..(start + lb) * d]));
            let mut encoder = self.device().create_command_encoder(&Default::default());
            job.begin(&mut encoder, &bufs, lb);
            job.steps(&mut rec, &mut encoder, &mut Passes::new(None), &bufs, lb, start, 1, false)?;
            {
                // The step left the queries intact (iterating works on a copy).
                let mut pass = encoder.begin_compute_pass(&Default::default());
                let args = GatherArgs {
                    queries: &bufs.queries,
                    sel,
                    scores: &scores_buf,
                    vals: &vals_buf,
                    l: lb,
                    width,
                    beta: job.opts.beta,
                };
                encode_gather(&mut rec, &mut pass, job.bank, &args)?;
            }
            rec.flush();
            let n = (lb * width * 4) as u64;
            let bytes = self
                .submit_and_read(encoder, &[(sel, 0, n), (&scores_buf, 0, n), (&vals_buf, 0, lb as u64 * row_bytes)])?;
            let idx: Vec<i32> = bytemuck::pod_collect_to_vec(&bytes[0]);
            if let Some(&bad) = idx.iter().find(|&&i| i < 0 || i as usize >= job.bank.len()) {
                return Err(Error::internal(format!(
                    "the top-K selection returned memory {bad} of {}",
                    job.bank.len()
                )));
            }
            let sc: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[1]);
            let va: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[2]);
            if sc.iter().chain(&va).any(|v| !v.is_finite()) {
                return Err(Error::internal("the gather produced a non-finite output"));
            }
            indices.extend(idx);
            scores.extend(sc);
            values.extend(va);
        }
        Ok(PartialData::TopK { k, width, scores, indices, values })
    }
}

/// `log sum_i e^(x_i)` in f64.
fn lse(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().fold(f64::NEG_INFINITY, f64::max);
    m + xs.map(|x| (x - m).exp()).sum::<f64>().ln()
}

impl Partial {
    /// Set [`Partial::offset`] (the global index of the shard's first memory).
    pub fn at_offset(mut self, offset: usize) -> Self {
        self.offset = offset;
        self
    }

    /// Merge the partials of shards that together tile the memory set
    /// `[0, M)` (in any order) into the [`Retrieval`] of the whole set.
    /// The result is one update: `steps` are 1, `converged` false (a merge
    /// knows no state to compare with) and there is no energy;
    /// [`crate::ShardedBank::retrieve`] adds dynamics and energies. As from
    /// one bank, top-K leaves `log_sum_exp` and `argmax` at 0 (not computed).
    ///
    /// Partials may come from another machine, so each is checked: one
    /// method, k and beta for all, the same queries and dv, lengths that
    /// match the shapes, indices inside the shard, finite numbers, and
    /// shards that tile `[0, M)` without gaps or overlaps.
    pub fn merge(parts: &[Partial]) -> Result<Retrieval> {
        let first = parts.first().ok_or(Error::Empty { what: "partials" })?;
        let mut order: Vec<&Partial> = parts.iter().collect();
        order.sort_by_key(|p| p.offset);
        let mut next = 0usize;
        for p in &order {
            if p.data.method_name() != first.data.method_name() {
                return Err(Error::invalid(
                    "method",
                    p.data.method_name(),
                    format!(
                        "the partials of one merge must come from one method; another one is {}",
                        first.data.method_name()
                    ),
                ));
            }
            if p.rows != first.rows || p.value_dim != first.value_dim {
                return Err(Error::ShapeMismatch {
                    what: "partials must cover the same queries with the same value dimension (rows x dv)".into(),
                    expected: first.rows.saturating_mul(first.value_dim),
                    got: p.rows.saturating_mul(p.value_dim),
                });
            }
            if p.beta.to_bits() != first.beta.to_bits() {
                return Err(Error::invalid(
                    "beta",
                    p.beta,
                    format!("partials were taken at beta {} and {}", first.beta, p.beta),
                ));
            }
            if let (PartialData::TopK { k, .. }, PartialData::TopK { k: k0, .. }) = (&p.data, &first.data) {
                if k != k0 {
                    return Err(Error::invalid("k", k, format!("partials were taken with k = {k0} and k = {k}")));
                }
            }
            if p.offset != next {
                return Err(Error::invalid(
                    "offset",
                    p.offset,
                    format!("the shards must tile the memories without gaps or overlaps; expected a shard at {next}"),
                ));
            }
            p.check()?;
            next = next
                .checked_add(p.memories)
                .ok_or_else(|| Error::invalid("memories", p.memories, "overflows usize"))?;
        }
        let (l, dv) = (first.rows, first.value_dim);
        let mut out = Retrieval {
            rows: l,
            cols: dv,
            z: vec![0.0; l * dv],
            steps: vec![1; l],
            converged: vec![false; l],
            log_sum_exp: vec![0.0; l],
            argmax: vec![0; l],
            energy: None,
            gpu_time: None,
            support: None,
        };
        match &first.data {
            PartialData::Dense { .. } => merge_dense(&order, &mut out),
            PartialData::TopK { k, .. } => merge_topk(&order, (*k).min(next), &mut out),
        }
        Ok(out)
    }

    /// One partial's fields against its shapes.
    fn check(&self) -> Result<()> {
        let (l, dv, m) = (self.rows, self.value_dim, self.memories);
        let sized = |what: &'static str, got: usize, per_query: usize| match l.checked_mul(per_query) {
            Some(want) if want == got => Ok(()),
            want => Err(Error::ShapeMismatch {
                what: format!("partial field {what} (rows x its row length)"),
                expected: want.unwrap_or(usize::MAX),
                got,
            }),
        };
        let finite = |what: &'static str, xs: &[f32], cols: usize| match xs.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(Error::NonFinite { what, row: i / cols.max(1), col: i % cols.max(1), value: xs[i] }),
            None => Ok(()),
        };
        if m == 0 {
            return Err(Error::Empty { what: "a partial's shard" });
        }
        match &self.data {
            PartialData::Dense { z, log_sum_exp, max_score, argmax } => {
                sized("z", z.len(), dv)?;
                sized("log_sum_exp", log_sum_exp.len(), 1)?;
                sized("max_score", max_score.len(), 1)?;
                sized("argmax", argmax.len(), 1)?;
                finite("partial z", z, dv)?;
                finite("partial log_sum_exp", log_sum_exp, 1)?;
                finite("partial max_score", max_score, 1)?;
                if let Some(&a) = argmax.iter().find(|&&a| a as usize >= m) {
                    return Err(Error::invalid("argmax", a, format!("beyond the shard's {m} memories")));
                }
            }
            PartialData::TopK { k, width, scores, indices, values } => {
                if *width != (*k).min(m) {
                    return Err(Error::ShapeMismatch {
                        what: format!("a top-K partial's width (min(k, memories) for k = {k})"),
                        expected: (*k).min(m),
                        got: *width,
                    });
                }
                sized("scores", scores.len(), *width)?;
                sized("indices", indices.len(), *width)?;
                sized("values", values.len(), width.saturating_mul(dv))?;
                finite("partial scores", scores, *width)?;
                finite("partial values", values, dv)?;
                if let Some(&i) = indices.iter().find(|&&i| i < 0 || i as usize >= m) {
                    return Err(Error::invalid("indices", i, format!("outside the shard's {m} memories")));
                }
            }
        }
        Ok(())
    }
}

fn merge_dense(order: &[&Partial], out: &mut Retrieval) {
    let (l, dv) = (out.rows, out.cols);
    let mut acc = vec![0.0f64; dv];
    for q in 0..l {
        let mut shards = Vec::with_capacity(order.len());
        for p in order {
            if let PartialData::Dense { z, log_sum_exp, max_score, argmax } = &p.data {
                shards.push((log_sum_exp[q], max_score[q], p.offset + argmax[q] as usize, &z[q * dv..(q + 1) * dv]));
            }
        }
        let total = lse(shards.iter().map(|s| f64::from(s.0)));
        acc.iter_mut().for_each(|a| *a = 0.0);
        let (mut best, mut arg) = (f32::NEG_INFINITY, 0usize);
        for &(ls, ms, am, z) in &shards {
            let w = (f64::from(ls) - total).exp();
            for (a, &v) in acc.iter_mut().zip(z) {
                *a += w * f64::from(v);
            }
            // Shards in offset order: strictly greater keeps the lower index on ties.
            if ms > best {
                (best, arg) = (ms, am);
            }
        }
        for (o, a) in out.z[q * dv..(q + 1) * dv].iter_mut().zip(&acc) {
            *o = *a as f32;
        }
        out.log_sum_exp[q] = total as f32;
        out.argmax[q] = arg as u32;
    }
}

fn merge_topk(order: &[&Partial], k: usize, out: &mut Retrieval) {
    let (l, dv) = (out.rows, out.cols);
    let mut indices = vec![-1i32; l * k];
    let mut cand: Vec<(f32, usize, &[f32])> = Vec::new();
    let mut acc = vec![0.0f64; dv];
    for q in 0..l {
        cand.clear();
        for p in order {
            if let PartialData::TopK { width, scores, indices, values, .. } = &p.data {
                for i in q * width..(q + 1) * width {
                    cand.push((scores[i], p.offset + indices[i] as usize, &values[i * dv..(i + 1) * dv]));
                }
            }
        }
        // Best score first; ties to the lower global index (as one bank).
        // `+ 0.0` makes -0.0 and +0.0 equal, which `total_cmp` alone orders.
        cand.sort_by(|a, b| (b.0 + 0.0).total_cmp(&(a.0 + 0.0)).then(a.1.cmp(&b.1)));
        let kept = &cand[..k.min(cand.len())];
        let total = lse(kept.iter().map(|c| f64::from(c.0)));
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (j, (s, g, v)) in kept.iter().enumerate() {
            let w = (f64::from(*s) - total).exp();
            for (a, &x) in acc.iter_mut().zip(*v) {
                *a += w * f64::from(x);
            }
            indices[q * k + j] = *g as i32;
        }
        for (o, a) in out.z[q * dv..(q + 1) * dv].iter_mut().zip(&acc) {
            *o = *a as f32;
        }
    }
    out.support = Some(SupportSets { width: k, indices });
}
