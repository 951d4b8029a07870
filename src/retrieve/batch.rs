//! Batched retrieval: P independent problems in one submission
//! ([`Context::retrieve_batch`]), each its own queries against its own
//! memory set (sets may be shared), with a key-padding mask, an optional
//! zero memory, its own beta, and the dynamics of either the engine
//! ([`BatchSpace::Values`], per-query stop) or hopfield-layers
//! ([`BatchSpace::Keys`], and [`BatchStop::Association`]: per group, the
//! Frobenius norm of the change of the association matrix, maximised over
//! the group). The f64 reference is `cpu::batch`.
//!
//! How it runs. Every problem's `[L, M]` score rows are materialised (as
//! PyTorch's multi-head attention does): the scores and read-outs are one
//! batched product each (`kernels::linalg`, a work list of tiles over all
//! problems), the weights one workgroup per row (`shaders/batch.wgsl`).
//! Problems are packed into chunks whose rows fit one storage binding; a
//! problem too large for one chunk is cut into blocks of queries. No step
//! dispatches per problem.
//!
//! [`Plan`] is the device-level job: problems as regions of GPU buffers
//! (offsets and strides), which is how a Hopfield layer records its heads
//! without copying them (`layer::gpu`).

use crate::context::{Context, Scratch};
use crate::error::{Error, Resource, Result};
use crate::kernels::batch::{
    self, flags, Bound, GroupDesc, GroupRecord, Normaliser, PairBound, ProblemDesc, RowRecord, Scores, Tables, NONE,
};
use crate::kernels::linalg::{self, At, BLayout, Matmul, MatmulEntry};
use crate::kernels::{Recorder, MAX_GROUPS};
use crate::method::Method;

use super::MAX_STEPS;

/// Updates recorded in one submission before the host checks whether any
/// query (or group) still moves; below this many every update goes into the
/// one submission.
const STEPS_PER_CHECK: u32 = 8;

/// The fused small-problem path is taken while one query's walks over its
/// memories stay below this many loop iterations (~a bag of 100 memories at
/// d = dv = 64): beyond it one thread per query has too much serial work,
/// and the materialised path spreads each query over a workgroup.
const FUSED_MAX_COST: usize = 32_768;
const ONE_SUBMISSION: u32 = 16;

/// What the state of a batched retrieval moves towards (cpu::batch::Space).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSpace {
    /// SEMANTICS.md's dynamics: `x <- A(x) V`; z is the final state (values
    /// of the pattern dimension, or one update).
    Values,
    /// hopfield-layers' dynamics: `x <- A(x) K`, the keys as values, then
    /// `z = A(x) V` once: `max_updates = n` means n updates, n + 1
    /// association matrices.
    Keys,
}

/// When a batched state stops (cpu::batch::Stop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchStop {
    /// Per query, once an update changes no coordinate by more than eps.
    PerQuery,
    /// Per group, once the Frobenius norm of the change of each member
    /// problem's association matrix, maximised over the group, is <= eps
    /// (hopfield-layers' rule, per head).
    Association,
}

/// One memory set.
#[derive(Clone, Copy, Debug)]
pub struct BatchMemories<'a> {
    /// `[m, d]` keys.
    pub keys: &'a [f32],
    /// `[m, dv]` values; `None`: the keys (then dv = d).
    pub values: Option<&'a [f32]>,
    /// `[m]` key-padding mask, true where a memory is absent (PyTorch's
    /// convention); absent memories get weight exactly 0.
    pub mask: Option<&'a [bool]>,
    /// Append a zero key with a zero value (hopfield-layers'
    /// `add_zero_association`; never masked).
    pub zero: bool,
}

/// One problem.
#[derive(Clone, Copy, Debug)]
pub struct BatchProblem<'a> {
    /// Index of its memory set.
    pub memories: usize,
    /// `[l, d]` queries.
    pub queries: &'a [f32],
    /// Inverse temperature, applied to the scores (finite, > 0).
    pub beta: f32,
    /// Index of its stop group.
    pub group: usize,
}

/// A stop group: its problems' limit and threshold, and for
/// [`BatchStop::Association`] their shared stop decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchGroup {
    /// [`BatchSpace::Values`]: updates at most, 1 ..= MAX_STEPS.
    /// [`BatchSpace::Keys`]: key-space updates at most, 0 ..= MAX_STEPS.
    pub max_updates: u32,
    /// The stop threshold (finite, >= 0).
    pub eps: f32,
}

/// A batched retrieval: dimensions, memory sets, problems, groups.
#[derive(Clone, Debug)]
pub struct Batch<'a> {
    /// Pattern dimension of queries and keys.
    pub d: usize,
    /// Value dimension (d when the sets give no values).
    pub dv: usize,
    /// Memory sets.
    pub memories: Vec<BatchMemories<'a>>,
    /// Problems.
    pub problems: Vec<BatchProblem<'a>>,
    /// Stop groups.
    pub groups: Vec<BatchGroup>,
}

/// How to run a [`Batch`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchOptions {
    /// The method (every method but `dense-naive` and `auto`; a polynomial
    /// with its degree).
    pub method: Method,
    /// Dynamics.
    pub space: BatchSpace,
    /// Stop rule.
    pub stop: BatchStop,
}

/// One problem's results.
#[derive(Clone, Debug, PartialEq)]
pub struct ProblemResult {
    /// `[l, dv]` retrieved patterns (the final states for the engine's dynamics).
    pub z: Vec<f32>,
    /// Updates applied per query (1 for one hetero-associative update).
    pub steps: Vec<u32>,
    /// Per query: its stop rule ended its updates.
    pub converged: Vec<bool>,
    /// Per query: `log sum exp(beta <x, xi>)` of its final state over the
    /// kept memories (and the zero memory), in score units, whatever the method.
    pub log_sum_exp: Vec<f32>,
    /// Per query: the kept memory with the largest score on its final state
    /// (lowest index on ties; the zero memory is index m).
    pub argmax: Vec<u32>,
    /// Per query: the dense energy `-lse / beta + 0.5 <x, x>` of its final state.
    pub energy: Vec<f32>,
}

/// A group's results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupResult {
    /// Updates applied (the most over its queries).
    pub updates: u32,
    /// Whether the stop rule ended every member's updates.
    pub converged: bool,
}

/// The results of [`Context::retrieve_batch`].
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRetrieval {
    /// Per problem.
    pub problems: Vec<ProblemResult>,
    /// Per group.
    pub groups: Vec<GroupResult>,
}

/// A problem of a [`Plan`]: regions of the device buffers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ProblemSpec {
    pub rows: usize,
    pub m: usize,
    pub zero: bool,
    /// Offset of its keep table (`NONE` per masked memory, else the rank
    /// among the kept), and how many memories it keeps without the zero one.
    pub keep: Option<(usize, usize)>,
    pub queries: At,
    pub keys: At,
    pub update: At,
    pub values: At,
    pub out: At,
    pub beta: f32,
    pub group: usize,
}

/// The device buffers a [`Plan`] reads and writes.
pub(crate) struct DeviceInputs<'b> {
    pub queries: &'b wgpu::Buffer,
    pub keys: &'b wgpu::Buffer,
    pub update: &'b wgpu::Buffer,
    pub values: &'b wgpu::Buffer,
    pub out: &'b wgpu::Buffer,
}

/// Problems whose score rows share one pair of buffers.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    p0: usize,
    p1: usize,
    row0: usize,
    rows: usize,
    floats: usize,
}

/// A batched retrieval planned for the device: problems split and packed
/// into chunks, work lists built.
pub(crate) struct Plan {
    norm: Normaliser,
    pub(crate) space: BatchSpace,
    pub(crate) stop: BatchStop,
    d: usize,
    dv: usize,
    problems: Vec<ProblemDesc>,
    groups: Vec<GroupDesc>,
    keep: Vec<u32>,
    chunks: Vec<Chunk>,
    /// Queries in all.
    pub(crate) rows: usize,
    /// The most updates any group may take.
    pub(crate) max_updates: u32,
    /// prf: rows of key features.
    key_rows: usize,
    /// Dense without updates on small problems: batch_fused.wgsl, a thread
    /// per query, nothing materialised.
    fused: bool,
}

/// The scratch of a recorded [`Plan`].
pub(crate) struct PlanBuffers {
    tables: Tables,
    scores: wgpu::Buffer,
    assoc: Vec<wgpu::Buffer>,
    pub(crate) recs: wgpu::Buffer,
    pub(crate) groups: wgpu::Buffer,
    xnew: wgpu::Buffer,
    state: wgpu::Buffer,
    pub(crate) moving: wgpu::Buffer,
    ax: Option<wgpu::Buffer>,
    bk: Option<wgpu::Buffer>,
    w: Option<wgpu::Buffer>,
}

impl Plan {
    /// Check and plan. `keep` holds the problems' keep tables; `groups`
    /// their (limit, threshold).
    #[expect(clippy::too_many_arguments, reason = "the problem set and how to run it")]
    pub(crate) fn new(
        ctx: &Context,
        method: &Method,
        space: BatchSpace,
        stop: BatchStop,
        d: usize,
        dv: usize,
        specs: &[ProblemSpec],
        groups: &[BatchGroup],
        keep: Vec<u32>,
    ) -> Result<Self> {
        let norm = Normaliser::of(method, d)?;
        if specs.is_empty() {
            return Err(Error::Empty { what: "problems" });
        }
        if d == 0 || dv == 0 {
            return Err(Error::Empty { what: "pattern dimension" });
        }
        for (gi, g) in groups.iter().enumerate() {
            if g.max_updates > MAX_STEPS {
                return Err(Error::invalid("max_updates", g.max_updates, format!("group {gi}: at most {MAX_STEPS}")));
            }
            if space == BatchSpace::Values && g.max_updates == 0 {
                return Err(Error::invalid(
                    "max_updates",
                    0,
                    format!("group {gi}: the engine's dynamics need at least one update"),
                ));
            }
            if !(g.eps.is_finite() && g.eps >= 0.0) {
                return Err(Error::invalid("eps", g.eps, format!("group {gi}: must be finite and >= 0")));
            }
        }
        let used_max = specs.iter().map(|s| groups.get(s.group).map_or(0, |g| g.max_updates)).max().unwrap_or(0);
        if space == BatchSpace::Values && dv != d && used_max > 1 {
            return Err(Error::ShapeMismatch {
                what: "iterated dynamics need values of the pattern dimension (dv == d)".into(),
                expected: d,
                got: dv,
            });
        }
        let max_bind = ctx.max_binding() as usize;
        let cap = max_bind / 4;
        let budget = ctx.loop_budget();
        let mut problems = Vec::new();
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut members: Vec<Vec<(usize, usize)>> = vec![Vec::new(); groups.len()];
        let mut row = 0usize;
        let mut key_rows = 0usize;
        for (i, s) in specs.iter().enumerate() {
            if groups.get(s.group).is_none() {
                return Err(Error::invalid("group", s.group, format!("problem {i}: no such group")));
            }
            if !(s.beta.is_finite() && s.beta > 0.0) {
                return Err(Error::invalid("beta", s.beta, format!("problem {i}: must be finite and > 0")));
            }
            if s.rows == 0 {
                return Err(Error::Empty { what: "queries" });
            }
            let kept = s.keep.map_or(s.m, |(_, k)| k) + usize::from(s.zero);
            if kept == 0 {
                return Err(Error::invalid(
                    "mask",
                    format!("problem {i}"),
                    "masks every memory, so its queries have nothing to attend to",
                ));
            }
            let width = s.m + usize::from(s.zero);
            if let Some(b) = budget {
                let cost = match &norm.scores {
                    Scores::Product => norm.cost(width),
                    Scores::Linear => norm.cost(width).max(batch::pairwise_cost(width, d, None)),
                    Scores::Prf { r, .. } => norm.cost(width).max(batch::pairwise_cost(width, d, Some(*r))),
                };
                if cost > b {
                    return Err(Error::limit(
                        format!("{} over one query's {width} memories", method.name()),
                        Resource::LoopIterations,
                        cost,
                        b as u64,
                    ));
                }
            }
            if matches!(method, Method::Window { .. }) && (s.rows as u64) * (kept as u64) >= 1 << 32 {
                return Err(Error::limit(
                    "a window problem's queries x memories (the centre is computed in u32)",
                    Resource::BindingBytes,
                    s.rows * kept,
                    1 << 32,
                ));
            }
            if width > cap {
                return Err(Error::limit(
                    format!("problem {i}: one query's {width} scores"),
                    Resource::BindingBytes,
                    width * 4,
                    max_bind as u64,
                ));
            }
            members[s.group].push((row, s.rows));
            // Blocks of queries whose score rows fit a chunk.
            let block = (cap / width).min(s.rows).max(1);
            for l0 in (0..s.rows).step_by(block) {
                let rows = block.min(s.rows - l0);
                let floats = rows * width;
                let fits = chunks.last().is_some_and(|c| c.floats + floats <= cap);
                if !fits {
                    chunks.push(Chunk { p0: problems.len(), p1: problems.len(), row0: row, rows: 0, floats: 0 });
                }
                let c = chunks.len() - 1;
                let chunk = &mut chunks[c];
                let shift = |at: At| At::new(at.off + l0 * at.stride, at.stride);
                problems.push(ProblemDesc {
                    rows,
                    row0: row,
                    l0,
                    l_total: s.rows,
                    m: s.m,
                    zero: s.zero,
                    keep: s.keep.map(|(off, _)| off),
                    m_kept: kept,
                    s_off: chunk.floats,
                    chunk: c,
                    group: s.group,
                    queries: shift(s.queries),
                    keys: s.keys,
                    update: s.update,
                    values: s.values,
                    out: shift(s.out),
                    beta: s.beta,
                    aux: key_rows,
                });
                chunk.p1 = problems.len();
                chunk.rows += rows;
                chunk.floats += floats;
                row += rows;
            }
            key_rows += s.m;
        }
        let groups: Vec<GroupDesc> = groups
            .iter()
            .zip(members)
            .map(|(g, members)| GroupDesc { max_updates: g.max_updates, eps: g.eps, members })
            .collect();
        if let Some(b) = budget {
            for (gi, g) in groups.iter().enumerate() {
                let cost = batch::stop_cost(&g.members);
                if cost > b {
                    return Err(Error::limit(
                        format!("group {gi}: the stop rule over its {} problems", g.members.len()),
                        Resource::LoopIterations,
                        cost,
                        b as u64,
                    ));
                }
            }
        }
        let rows = row;
        // Buffers of all rows must fit one binding each.
        let r = match &norm.scores {
            Scores::Prf { r, .. } => *r,
            Scores::Product | Scores::Linear => 0,
        };
        for (what, floats) in [
            ("the batch's states", rows * d),
            ("the queries' random features", rows * r),
            ("the keys' random features", key_rows * r),
        ] {
            if floats * 4 > max_bind {
                return Err(Error::limit(
                    format!("{what} ({rows} queries): split the batch"),
                    Resource::BindingBytes,
                    floats * 4,
                    max_bind as u64,
                ));
            }
        }
        if rows > MAX_GROUPS * MAX_GROUPS {
            return Err(Error::limit(
                "queries of one batch",
                Resource::BindingBytes,
                rows,
                (MAX_GROUPS * MAX_GROUPS) as u64,
            ));
        }
        // One hetero-associative update is the read-out itself.
        let hetero = space == BatchSpace::Values && dv != d;
        let max_updates = if hetero { 0 } else { groups.iter().map(|g| g.max_updates).max().unwrap_or(0) };
        // Small problems' dense read-out: one thread per query walks its
        // memories; the materialised path's tiles and per-row workgroups
        // would cost more than the work.
        let widest = specs.iter().map(|s| s.m + usize::from(s.zero)).max().unwrap_or(0);
        let cost = batch::fused_cost(widest, d, dv);
        let fused = norm.code == 0
            && matches!(norm.scores, Scores::Product)
            && max_updates == 0
            && (space == BatchSpace::Keys || hetero)
            && cost <= budget.unwrap_or(usize::MAX).min(FUSED_MAX_COST);
        Ok(Plan { norm, space, stop, d, dv, problems, groups, keep, chunks, rows, max_updates, key_rows, fused })
    }

    /// Whether z is the state (the engine's dynamics with values of the
    /// pattern dimension) rather than a read-out.
    fn z_is_state(&self) -> bool {
        self.space == BatchSpace::Values && self.dv == self.d
    }

    /// The scratch buffers, from `rec`'s pool.
    pub(crate) fn buffers(&self, rec: &mut Recorder<'_>) -> Result<PlanBuffers> {
        use wgpu::BufferUsages as U;
        let rw = U::STORAGE | U::COPY_DST | U::COPY_SRC;
        let tables = Tables::new(rec, &self.problems, &self.keep, &self.norm.coefs, &self.groups)?;
        if self.fused {
            // Only the records: nothing is materialised.
            let tiny = rec.buffer(16, U::STORAGE)?;
            return Ok(PlanBuffers {
                tables,
                scores: tiny.clone(),
                assoc: Vec::new(),
                recs: rec.buffer((self.rows * size_of::<RowRecord>()) as u64, rw)?,
                groups: rec.buffer((self.groups.len().max(1) * size_of::<GroupRecord>()) as u64, rw)?,
                xnew: tiny.clone(),
                state: tiny,
                moving: rec.buffer(16, rw)?,
                ax: None,
                bk: None,
                w: None,
            });
        }
        let largest = self.chunks.iter().map(|c| c.floats).max().unwrap_or(1);
        let scores = rec.buffer((largest * 4) as u64, U::STORAGE)?;
        let mut assoc = Vec::with_capacity(self.chunks.len());
        for c in &self.chunks {
            assoc.push(rec.buffer((c.floats * 4) as u64, U::STORAGE | U::COPY_DST)?);
        }
        let (ax, bk, w) = match &self.norm.scores {
            Scores::Prf { r, w } => (
                Some(rec.buffer((self.rows * r * 4) as u64, U::STORAGE)?),
                Some(rec.buffer((self.key_rows.max(1) * r * 4) as u64, U::STORAGE)?),
                Some(rec.table(&w.iter().map(|v| v.to_bits()).collect::<Vec<u32>>())?),
            ),
            Scores::Product | Scores::Linear => (None, None, None),
        };
        Ok(PlanBuffers {
            tables,
            scores,
            assoc,
            recs: rec.buffer((self.rows * size_of::<RowRecord>()) as u64, rw)?,
            groups: rec.buffer((self.groups.len().max(1) * size_of::<GroupRecord>()) as u64, rw)?,
            xnew: rec.buffer((self.rows * self.d * 4) as u64, U::STORAGE)?,
            state: rec.buffer((self.rows * self.d * 4) as u64, U::STORAGE | U::COPY_SRC)?,
            moving: rec.buffer(16, rw)?,
            ax,
            bk,
            w,
        })
    }

    fn bound<'b>(&self, bufs: &'b PlanBuffers, inputs: &'b DeviceInputs<'b>, chunk: usize) -> Bound<'b> {
        Bound {
            scores: &bufs.scores,
            assoc: &bufs.assoc[chunk],
            recs: &bufs.recs,
            groups: &bufs.groups,
            xnew: &bufs.xnew,
            state: &bufs.state,
            queries: inputs.queries,
            moving: &bufs.moving,
            out: inputs.out,
        }
    }

    /// The problems of `chunk`.
    fn of(&self, c: &Chunk) -> &[ProblemDesc] {
        &self.problems[c.p0..c.p1]
    }

    /// Record the scores of `chunk`: of the queries (`first`) or the states;
    /// `dense`: `beta <x, xi>` whatever the method (the records' pass).
    #[expect(clippy::too_many_arguments, reason = "the recording, the chunk and the pass's two choices")]
    fn encode_scores(
        &self,
        rec: &mut Recorder<'_>,
        pass: &mut wgpu::ComputePass<'_>,
        bufs: &PlanBuffers,
        inputs: &DeviceInputs<'_>,
        c: &Chunk,
        first: bool,
        dense: bool,
    ) -> Result<()> {
        let d = self.d;
        let pairwise = match &self.norm.scores {
            Scores::Product => None,
            Scores::Linear => Some(None),
            Scores::Prf { r, .. } => Some(Some(*r)),
        };
        match pairwise {
            Some(prf) if !dense => {
                if let (Some(r), Some(ax), Some(w)) = (prf, &bufs.ax, &bufs.w) {
                    // <w_f, x> for the chunk's rows.
                    let entries: Vec<MatmulEntry> = self
                        .of(c)
                        .iter()
                        .map(|p| MatmulEntry {
                            m: p.rows,
                            n: r,
                            k: d,
                            a: if first { p.queries } else { At::new(p.row0 * d, d) },
                            b: At::new(0, d),
                            c: At::new(p.row0 * r, r),
                            bias_off: 0,
                            alpha: 1.0,
                        })
                        .collect();
                    let a = if first { inputs.queries } else { &bufs.state };
                    let op = Matmul { a, b: w, c: ax, bias: None, layout: BLayout::Rows, relu: false };
                    linalg::encode_matmul(rec, pass, &op, &entries)?;
                }
                let tables = &bufs.tables;
                let placeholder = rec.ctx.placeholder().clone();
                let pb = PairBound {
                    queries: inputs.queries,
                    state: &bufs.state,
                    keys: inputs.keys,
                    ax: bufs.ax.as_ref().unwrap_or(&placeholder),
                    bk: bufs.bk.as_ref().unwrap_or(&placeholder),
                    scores: &bufs.scores,
                };
                batch::encode_pairwise(rec, pass, tables, (c.p0, c.p1), (c.row0, c.rows), d, prf, first, &pb)
            }
            _ => {
                let entries: Vec<MatmulEntry> = self
                    .of(c)
                    .iter()
                    .map(|p| MatmulEntry {
                        m: p.rows,
                        n: p.m,
                        k: d,
                        a: if first { p.queries } else { At::new(p.row0 * d, d) },
                        b: p.keys,
                        c: At::new(p.s_off, p.width()),
                        bias_off: 0,
                        alpha: p.beta,
                    })
                    .collect();
                let a = if first { inputs.queries } else { &bufs.state };
                let op = Matmul { a, b: inputs.keys, c: &bufs.scores, bias: None, layout: BLayout::Rows, relu: false };
                linalg::encode_matmul(rec, pass, &op, &entries)
            }
        }
    }

    /// Record `C = A B` for every problem of every chunk, A its association
    /// rows (`[rows, m]` in the chunk's association buffer), B `[m, n]` of
    /// `b` and C `[rows, n]` of `c`, where `at` places B and C per problem.
    #[expect(clippy::too_many_arguments, reason = "the recorder, pass and buffers of one product")]
    fn encode_assoc_times(
        &self,
        rec: &mut Recorder<'_>,
        pass: &mut wgpu::ComputePass<'_>,
        bufs: &PlanBuffers,
        n: usize,
        b: &wgpu::Buffer,
        c: &wgpu::Buffer,
        at: impl Fn(&ProblemDesc) -> (At, At),
    ) -> Result<()> {
        for (ci, chunk) in self.chunks.iter().enumerate() {
            let entries: Vec<MatmulEntry> = self
                .of(chunk)
                .iter()
                .map(|p| {
                    let (b_at, c_at) = at(p);
                    MatmulEntry {
                        m: p.rows,
                        n,
                        k: p.m,
                        a: At::new(p.s_off, p.width()),
                        b: b_at,
                        c: c_at,
                        bias_off: 0,
                        alpha: 1.0,
                    }
                })
                .collect();
            let op = Matmul { a: &bufs.assoc[ci], b, c, bias: None, layout: BLayout::Cols, relu: false };
            linalg::encode_matmul(rec, pass, &op, &entries)?;
        }
        Ok(())
    }

    /// Record one chunk's scores and association rows.
    #[expect(clippy::too_many_arguments, reason = "the recording, the chunk and the pass's two choices")]
    fn encode_assoc(
        &self,
        rec: &mut Recorder<'_>,
        pass: &mut wgpu::ComputePass<'_>,
        bufs: &PlanBuffers,
        inputs: &DeviceInputs<'_>,
        ci: usize,
        first: bool,
        extra: u32,
    ) -> Result<()> {
        let c = self.chunks[ci];
        self.encode_scores(rec, pass, bufs, inputs, &c, first, false)?;
        let pairwise = if matches!(self.norm.scores, Scores::Product) { 0 } else { flags::PAIRWISE };
        let bound = self.bound(bufs, inputs, ci);
        batch::encode_normalise(
            rec,
            pass,
            &bufs.tables,
            &self.norm,
            (c.p0, c.p1),
            (c.row0, c.rows),
            extra | pairwise,
            &bound,
        )
    }

    /// Record the start: records cleared, the key features (prf), the
    /// association of every problem's queries.
    pub(crate) fn begin(
        &self,
        rec: &mut Recorder<'_>,
        encoder: &mut wgpu::CommandEncoder,
        bufs: &PlanBuffers,
        inputs: &DeviceInputs<'_>,
    ) -> Result<()> {
        encoder.clear_buffer(&bufs.recs, 0, None);
        encoder.clear_buffer(&bufs.groups, 0, None);
        encoder.clear_buffer(&bufs.moving, 0, None);
        let mut pass = encoder.begin_compute_pass(&Default::default());
        if let (Scores::Prf { r, .. }, Some(bk), Some(w)) = (&self.norm.scores, &bufs.bk, &bufs.w) {
            let entries: Vec<MatmulEntry> = self
                .problems
                .iter()
                .filter(|p| p.l0 == 0) // one per original problem
                .map(|p| MatmulEntry {
                    m: p.m,
                    n: *r,
                    k: self.d,
                    a: p.keys,
                    b: At::new(0, self.d),
                    c: At::new(p.aux * r, *r),
                    bias_off: 0,
                    alpha: 1.0,
                })
                .collect();
            let op = Matmul { a: inputs.keys, b: w, c: bk, bias: None, layout: BLayout::Rows, relu: false };
            linalg::encode_matmul(rec, &mut pass, &op, &entries)?;
        }
        for ci in 0..self.chunks.len() {
            self.encode_assoc(rec, &mut pass, bufs, inputs, ci, true, 0)?;
        }
        Ok(())
    }

    /// Record one update of every state that has not stopped (`first`: the
    /// first update, which also moves the stopped states into the state
    /// buffer), then the new association and, for hopfield-layers' rule,
    /// the groups' stop decision.
    pub(crate) fn step(
        &self,
        rec: &mut Recorder<'_>,
        encoder: &mut wgpu::CommandEncoder,
        bufs: &PlanBuffers,
        inputs: &DeviceInputs<'_>,
        first: bool,
    ) -> Result<()> {
        let d = self.d;
        let mut pass = encoder.begin_compute_pass(&Default::default());
        self.encode_assoc_times(rec, &mut pass, bufs, d, inputs.update, &bufs.xnew, |p| {
            (p.update, At::new(p.row0 * d, d))
        })?;
        let assoc = self.stop == BatchStop::Association;
        let mut f = if assoc { flags::ASSOC } else { 0 };
        if first {
            f |= flags::FIRST;
        }
        let bound = self.bound(bufs, inputs, 0);
        batch::encode_update(rec, &mut pass, &bufs.tables, self.rows, d, f, &bound)?;
        let diff = if assoc { flags::DIFF } else { 0 };
        for ci in 0..self.chunks.len() {
            self.encode_assoc(rec, &mut pass, bufs, inputs, ci, false, diff)?;
        }
        if assoc {
            batch::encode_stop(rec, &mut pass, &bufs.tables, flags::ASSOC, &bound)?;
        }
        Ok(())
    }

    /// Record the end: the read-out (or z = the state), the dense records of
    /// the final states where the method's scores are not dense, the groups'
    /// summaries, the energies. `updated`: at least one step was recorded.
    pub(crate) fn end(
        &self,
        rec: &mut Recorder<'_>,
        encoder: &mut wgpu::CommandEncoder,
        bufs: &PlanBuffers,
        inputs: &DeviceInputs<'_>,
        updated: bool,
    ) -> Result<()> {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        if !self.z_is_state() {
            self.encode_assoc_times(rec, &mut pass, bufs, self.dv, inputs.values, inputs.out, |p| (p.values, p.out))?;
        }
        // The records (lse, argmax) must be the dense ones of the final
        // states: the kernel methods' rows are not dense scores.
        if !matches!(self.norm.scores, Scores::Product) {
            for (ci, c) in self.chunks.iter().enumerate() {
                self.encode_scores(rec, &mut pass, bufs, inputs, c, !updated, true)?;
                let bound = self.bound(bufs, inputs, ci);
                batch::encode_normalise(
                    rec,
                    &mut pass,
                    &bufs.tables,
                    &self.norm,
                    (c.p0, c.p1),
                    (c.row0, c.rows),
                    flags::RECORDS_ONLY,
                    &bound,
                )?;
            }
        }
        let bound = self.bound(bufs, inputs, 0);
        let assoc = self.stop == BatchStop::Association;
        let mut f = if assoc { flags::ASSOC } else { 0 };
        if !updated {
            f |= flags::FIRST;
        }
        if self.z_is_state() {
            f |= flags::COPY_Z;
        }
        batch::encode_finish(rec, &mut pass, &bufs.tables, self.rows, self.d, f, &bound)?;
        batch::encode_stop(rec, &mut pass, &bufs.tables, flags::SUMMARY | if assoc { flags::ASSOC } else { 0 }, &bound)
    }

    /// Record everything and run it: one submission when every group's limit
    /// is small, else a 4-byte check of the states (or groups) still moving
    /// every few updates, stopping once none does. Returns the updates
    /// recorded. `rec` must be flushed and its work submitted by the caller
    /// after `end` (the caller reads its results in the same submission).
    pub(crate) fn record(
        &self,
        ctx: &Context,
        rec: &mut Recorder<'_>,
        encoder: &mut wgpu::CommandEncoder,
        bufs: &PlanBuffers,
        inputs: &DeviceInputs<'_>,
    ) -> Result<u32> {
        if self.fused {
            encoder.clear_buffer(&bufs.recs, 0, None);
            encoder.clear_buffer(&bufs.groups, 0, None);
            let mut pass = encoder.begin_compute_pass(&Default::default());
            let bound = batch::FusedBound {
                queries: inputs.queries,
                keys: inputs.keys,
                values: inputs.values,
                out: inputs.out,
                recs: &bufs.recs,
            };
            batch::encode_fused(rec, &mut pass, &bufs.tables, self.rows, (self.d, self.dv), &bound)?;
            return Ok(0);
        }
        self.begin(rec, encoder, bufs, inputs)?;
        let total = self.max_updates;
        let mut done = 0;
        while done < total {
            let n = if total <= ONE_SUBMISSION { total } else { STEPS_PER_CHECK.min(total - done) };
            for i in 0..n {
                if total > ONE_SUBMISSION && i + 1 == n {
                    encoder.clear_buffer(&bufs.moving, 0, None);
                }
                self.step(rec, encoder, bufs, inputs, done + i == 0)?;
            }
            done += n;
            if done < total {
                rec.flush();
                let old = std::mem::replace(encoder, ctx.device().create_command_encoder(&Default::default()));
                let moving = ctx.submit_and_read(old, &[(&bufs.moving, 0, 4)])?;
                let moving = u32::from_le_bytes(
                    moving[0][..4].try_into().map_err(|_| Error::internal("a 4-byte counter read back short"))?,
                );
                if moving == 0 {
                    break;
                }
            }
        }
        self.end(rec, encoder, bufs, inputs, done > 0)?;
        Ok(done)
    }
}

/// The host arrays of a [`Batch`] laid out for the device, and its plan.
struct Laid {
    queries: Vec<f32>,
    keys: Vec<f32>,
    values: Option<Vec<f32>>,
    specs: Vec<ProblemSpec>,
    keep: Vec<u32>,
    rows: Vec<(usize, usize)>,
}

fn lay_out(batch: &Batch<'_>, space: BatchSpace) -> Result<Laid> {
    let (d, dv) = (batch.d, batch.dv);
    if d == 0 || dv == 0 {
        return Err(Error::Empty { what: "pattern dimension" });
    }
    let mut keys = Vec::new();
    let mut values: Option<Vec<f32>> = None;
    let mut sets = Vec::with_capacity(batch.memories.len());
    let mut keep = Vec::new();
    let any_values = batch.memories.iter().any(|s| s.values.is_some());
    if !any_values && dv != d {
        return Err(Error::ShapeMismatch {
            what: "dv without values (values default to the keys)".into(),
            expected: d,
            got: dv,
        });
    }
    for (i, s) in batch.memories.iter().enumerate() {
        if s.keys.is_empty() && !s.zero {
            return Err(Error::Empty { what: "memories" });
        }
        if !s.keys.len().is_multiple_of(d) {
            return Err(Error::ShapeMismatch {
                what: format!("memory set {i}: keys length vs d"),
                expected: s.keys.len().div_ceil(d) * d,
                got: s.keys.len(),
            });
        }
        let m = s.keys.len() / d;
        if m > 0 {
            crate::stats::validate_matrix("keys", s.keys, m, d)?;
        }
        let k_off = keys.len();
        keys.extend_from_slice(s.keys);
        let v_at = match (s.values, any_values) {
            (Some(v), _) => {
                if m > 0 {
                    crate::stats::validate_matrix("values", v, m, dv)?;
                } else if !v.is_empty() {
                    return Err(Error::ShapeMismatch {
                        what: format!("memory set {i}: values of no keys"),
                        expected: 0,
                        got: v.len(),
                    });
                }
                let vs = values.get_or_insert_with(Vec::new);
                let off = vs.len();
                vs.extend_from_slice(v);
                At::new(off, dv)
            }
            (None, true) => {
                if dv != d {
                    return Err(Error::ShapeMismatch {
                        what: format!("memory set {i}: no values, so its values are its keys"),
                        expected: dv,
                        got: d,
                    });
                }
                let vs = values.get_or_insert_with(Vec::new);
                let off = vs.len();
                vs.extend_from_slice(s.keys);
                At::new(off, dv)
            }
            (None, false) => At::new(k_off, d),
        };
        let kept = match s.mask {
            None => None,
            Some(mask) => {
                if mask.len() != m {
                    return Err(Error::ShapeMismatch {
                        what: format!("memory set {i}: mask vs memories"),
                        expected: m,
                        got: mask.len(),
                    });
                }
                let off = keep.len();
                let mut rank = 0u32;
                for &masked in mask {
                    if masked {
                        keep.push(NONE);
                    } else {
                        keep.push(rank);
                        rank += 1;
                    }
                }
                Some((off, rank as usize))
            }
        };
        sets.push((At::new(k_off, d), v_at, m, kept, s.zero));
    }
    let mut queries = Vec::new();
    let mut specs = Vec::with_capacity(batch.problems.len());
    let mut rows = Vec::with_capacity(batch.problems.len());
    let mut out_rows = 0;
    for (i, p) in batch.problems.iter().enumerate() {
        let &(k_at, v_at, m, kept, zero) = sets
            .get(p.memories)
            .ok_or_else(|| Error::invalid("memories", p.memories, format!("problem {i}: no such memory set")))?;
        if p.queries.is_empty() {
            return Err(Error::Empty { what: "queries" });
        }
        if !p.queries.len().is_multiple_of(d) {
            return Err(Error::ShapeMismatch {
                what: format!("problem {i}: queries length vs d"),
                expected: p.queries.len().div_ceil(d) * d,
                got: p.queries.len(),
            });
        }
        let l = p.queries.len() / d;
        crate::stats::validate_matrix("queries", p.queries, l, d)?;
        let q_off = queries.len();
        queries.extend_from_slice(p.queries);
        let update = match space {
            BatchSpace::Keys => k_at,
            BatchSpace::Values => v_at,
        };
        specs.push(ProblemSpec {
            rows: l,
            m,
            zero,
            keep: kept,
            queries: At::new(q_off, d),
            keys: k_at,
            update,
            values: v_at,
            out: At::new(out_rows * dv, dv),
            beta: p.beta,
            group: p.group,
        });
        rows.push((out_rows, l));
        out_rows += l;
    }
    Ok(Laid { queries, keys, values, specs, keep, rows })
}

impl Context {
    /// Run every problem of `batch` as `opts` says, in one submission (or,
    /// for long dynamics, one per few updates, with a 4-byte check between).
    /// The reference is `cpu::batch::batch`.
    ///
    /// # Errors
    /// Shapes, non-finite values, a problem naming a missing set or group, a
    /// mask that masks every memory of a set used by a problem, beta not
    /// finite and > 0, iterated engine dynamics with dv != d, a method
    /// without a batched kernel (`dense-naive`, `auto`, a polynomial without
    /// its degree), or a device limit.
    pub fn retrieve_batch(&self, batch: &Batch<'_>, opts: &BatchOptions) -> Result<BatchRetrieval> {
        let laid = lay_out(batch, opts.space)?;
        let plan = Plan::new(
            self,
            &opts.method,
            opts.space,
            opts.stop,
            batch.d,
            batch.dv,
            &laid.specs,
            &batch.groups,
            laid.keep.clone(),
        )?;
        let dv = batch.dv;
        let out_len = plan.rows * dv;
        self.scoped(|| {
            let usage = wgpu::BufferUsages::empty();
            let queries = self.upload("batch queries", bytemuck::cast_slice(&laid.queries), usage)?;
            let keys = self.upload("batch keys", bytemuck::cast_slice(&laid.keys), usage)?;
            let values = match &laid.values {
                Some(v) => Some(self.upload("batch values", bytemuck::cast_slice(v), usage)?),
                None => None,
            };
            let mut rec = Recorder::new(self, Scratch::pooled(self));
            let out = rec.buffer(
                (out_len * 4) as u64,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            )?;
            let bufs = plan.buffers(&mut rec)?;
            let vb = values.as_ref().unwrap_or(&keys);
            let update = match opts.space {
                BatchSpace::Keys => &keys,
                BatchSpace::Values => vb,
            };
            let inputs = DeviceInputs { queries: &queries, keys: &keys, update, values: vb, out: &out };
            let mut encoder = self.device().create_command_encoder(&Default::default());
            plan.record(self, &mut rec, &mut encoder, &bufs, &inputs)?;
            rec.flush();
            let groups = batch.groups.len();
            let ranges = [
                (&out, 0, (out_len * 4) as u64),
                (&bufs.recs, 0, (plan.rows * size_of::<RowRecord>()) as u64),
                (&bufs.groups, 0, (groups * size_of::<GroupRecord>()) as u64),
            ];
            let bytes = self.submit_and_read(encoder, &ranges)?;
            let z: &[f32] = bytemuck::cast_slice(&bytes[0]);
            if z.iter().any(|v| !v.is_finite()) {
                return Err(Error::internal("the batch kernels produced a non-finite output"));
            }
            let recs: Vec<RowRecord> = bytemuck::pod_collect_to_vec(&bytes[1]);
            let grecs: Vec<GroupRecord> = bytemuck::pod_collect_to_vec(&bytes[2]);
            let hetero = opts.space == BatchSpace::Values && dv != batch.d;
            let problems = laid
                .rows
                .iter()
                .map(|&(r0, l)| {
                    let rs = &recs[r0..r0 + l];
                    ProblemResult {
                        z: z[r0 * dv..(r0 + l) * dv].to_vec(),
                        steps: rs.iter().map(|r| if hetero { 1 } else { r.steps }).collect(),
                        converged: rs.iter().map(|r| !hetero && r.converged == 1).collect(),
                        log_sum_exp: rs.iter().map(|r| r.lse).collect(),
                        argmax: rs.iter().map(|r| r.argmax).collect(),
                        energy: rs.iter().map(|r| r.energy).collect(),
                    }
                })
                .collect();
            let groups = grecs
                .iter()
                .map(|g| GroupResult {
                    updates: if hetero { 1 } else { g.updates },
                    converged: !hetero && g.converged == 1,
                })
                .collect();
            Ok(BatchRetrieval { problems, groups })
        })
    }
}
