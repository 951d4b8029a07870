//! Host side of `shaders/batch*.wgsl`: the descriptor table of a batched
//! retrieval (problems, keep tables, polynomial coefficients, groups and
//! their members, in one read-only buffer) and one `encode_*` per entry
//! point. The order in which they run, and the products between them
//! (`kernels::linalg`), is the driver's (`retrieve::batch`).

use bytemuck::{Pod, Zeroable};

use super::{entire, grid, Kernel, Recorder};
use crate::error::{Error, Resource, Result};
use crate::kernels::linalg::At;
use crate::method::Method;
use crate::shaders::Shader;

/// Words per problem descriptor; keep in sync with `PW` in shaders/batch.wgsl.
pub(crate) const PROBLEM_WORDS: usize = 24;
/// Keep in sync with `GW` in shaders/batch.wgsl.
const GROUP_WORDS: usize = 4;
/// `NONE` in shaders/batch.wgsl: a masked memory, or no keep table.
pub(crate) const NONE: u32 = u32::MAX;
/// Bisection steps at most for sparsemax / entmax (entmax.wgsl's `MAX_IT`).
const MAX_IT: usize = 64;

/// Keep in sync with `Params` in shaders/batch.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct BatchParams {
    pub p0: u32,
    pub p1: u32,
    pub rows: u32,
    pub row0: u32,
    pub groups_x: u32,
    pub d: u32,
    pub method: u32,
    pub k: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub degree: u32,
    pub flags: u32,
    pub prob_at: u32,
    pub keep_at: u32,
    pub coef_at: u32,
    pub group_at: u32,
    pub member_at: u32,
    pub _pad: [u32; 3],
}

/// Keep in sync with `Params` in shaders/batch_pairwise.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct PairParams {
    pub p0: u32,
    pub p1: u32,
    pub rows: u32,
    pub row0: u32,
    pub groups_x: u32,
    pub d: u32,
    pub r: u32,
    pub flags: u32,
    pub prob_at: u32,
    pub _pad: [u32; 3],
}

/// Keep in sync with `Params` in shaders/batch_fused.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct FusedParams {
    pub rows: u32,
    pub problems: u32,
    pub groups_x: u32,
    pub d: u32,
    pub dv: u32,
    pub prob_at: u32,
    pub keep_at: u32,
    pub _pad: u32,
}

/// Loop iterations one `fused_dense` invocation runs for a problem of
/// `width` memories: two walks over them (scores of d terms; the second
/// adds dv columns), the output row cleared, the query's norm.
pub(crate) fn fused_cost(width: usize, d: usize, dv: usize) -> usize {
    width * (2 * (d + 1) + dv + 2) + 2 * d + dv + 8
}

/// The buffers of batch_fused.wgsl.
pub(crate) struct FusedBound<'b> {
    pub queries: &'b wgpu::Buffer,
    pub keys: &'b wgpu::Buffer,
    pub values: &'b wgpu::Buffer,
    pub out: &'b wgpu::Buffer,
    pub recs: &'b wgpu::Buffer,
}

/// Record dense retrieval without updates for every query, one thread each.
pub(crate) fn encode_fused(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    tables: &Tables,
    rows: usize,
    (d, dv): (usize, usize),
    bound: &FusedBound<'_>,
) -> Result<()> {
    let kernel = Kernel::new(rec.ctx, Shader::BatchFused, "fused_dense", &[])?;
    let (gx, gy) = grid(rows.div_ceil(64));
    let params = FusedParams {
        rows: rows as u32,
        problems: tables.problems as u32,
        groups_x: gx,
        d: d as u32,
        dv: dv as u32,
        prob_at: tables.prob_at,
        keep_at: tables.keep_at,
        _pad: 0,
    };
    let bindings = [
        (1, entire(&tables.desc)),
        (2, entire(bound.queries)),
        (3, entire(bound.keys)),
        (4, entire(bound.values)),
        (5, entire(bound.out)),
        (6, entire(bound.recs)),
    ];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

/// Per-query record. Keep in sync with `Row` in shaders/batch.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct RowRecord {
    pub steps: u32,
    pub converged: u32,
    pub stopped: u32,
    pub argmax: u32,
    pub lse: f32,
    pub diff: f32,
    pub energy: f32,
    pub moved: f32,
}

/// Per-group record. Keep in sync with `Group` in shaders/batch.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct GroupRecord {
    pub updates: u32,
    pub converged: u32,
    pub stopped: u32,
    pub change: f32,
}

/// Flags of shaders/batch.wgsl (`F_*`).
pub(crate) mod flags {
    pub const DIFF: u32 = 1;
    pub const RECORDS_ONLY: u32 = 2;
    pub const PAIRWISE: u32 = 4;
    pub const FIRST: u32 = 8;
    pub const ASSOC: u32 = 16;
    pub const COPY_Z: u32 = 32;
    pub const SUMMARY: u32 = 64;
}

/// How batch.wgsl turns a score row into weights, and what produces the row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Normaliser {
    /// `M_*` of batch.wgsl.
    pub code: u32,
    /// Top-K / random: memories kept; window: width (0: the default).
    pub k: u32,
    pub seed: u64,
    /// Poly: the Taylor coefficients.
    pub coefs: Vec<f32>,
    /// The scores: a product (`beta <x, xi>`), or batch_pairwise.wgsl.
    pub scores: Scores,
}

/// What produces a score row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scores {
    /// `beta <x, xi>` (linalg.wgsl).
    Product,
    /// `<elu(x) + 1, elu(xi) + 1>` (batch_pairwise.wgsl).
    Linear,
    /// The log of the positive-random-feature kernel, with the `r x d`
    /// projection W (batch_pairwise.wgsl, after linalg.wgsl's W x products).
    Prf { r: usize, w: Vec<f32> },
}

impl Normaliser {
    /// The normaliser of `method` for states of dimension `d`. A polynomial
    /// needs its degree (the queries of a batched or layer retrieval may only
    /// exist on the device, so the degree cannot be chosen from them);
    /// `auto` must be resolved and the naive baseline has no batched kernel.
    pub(crate) fn of(method: &Method, d: usize) -> Result<Self> {
        method.validate()?;
        let plain = |code| Normaliser { code, k: 0, seed: 0, coefs: Vec::new(), scores: Scores::Product };
        Ok(match *method {
            Method::Dense => plain(0),
            Method::TopK { k } => Normaliser { k: clamp_u32(k), ..plain(1) },
            Method::Random { k, seed } => Normaliser { k: clamp_u32(k), seed, ..plain(2) },
            Method::Window { width } => Normaliser { k: width.map_or(0, clamp_u32), ..plain(3) },
            Method::Sparsemax => plain(4),
            Method::Entmax15 => plain(5),
            Method::Poly { degree: Some(g), .. } => Normaliser {
                coefs: crate::feature::poly::taylor_coefs(g).iter().map(|&c| c as f32).collect(),
                ..plain(6)
            },
            Method::Poly { degree: None, .. } => {
                return Err(Error::unsupported(
                    "degree",
                    Some("poly"),
                    "batched retrieval and layers need the polynomial's degree (the queries may only exist on the \
                     device, so it cannot be chosen from their magnitudes): give one, e.g. from poly_choice",
                ))
            }
            Method::Linear => Normaliser { scores: Scores::Linear, ..plain(7) },
            Method::Prf { features, seed, orthogonal } => {
                let r = features.unwrap_or_else(|| crate::method::default_feature_count(d));
                let rf = crate::feature::prf::RandomFeatures::new(d, r, seed, orthogonal)?;
                Normaliser { scores: Scores::Prf { r, w: rf.w_f32() }, ..plain(0) }
            }
            Method::DenseNaive => {
                return Err(Error::unsupported(
                    "method",
                    Some("dense-naive"),
                    "the naive baseline has no batched kernel",
                ))
            }
            Method::Auto { .. } => {
                return Err(Error::unsupported(
                    "method",
                    Some("auto"),
                    "resolve auto with plan first (batched retrieval takes a concrete method)",
                ))
            }
        })
    }

    /// Loop iterations one `normalise` invocation runs on a row of `width`
    /// entries (each pass over the thread's run counted with its exit, each
    /// reduction as 7).
    pub(crate) fn cost(&self, width: usize) -> usize {
        let pass = width.div_ceil(64) + 1;
        let base = 3 * pass + 14;
        base + match self.code {
            1 | 2 => 32 * (pass + 7) + pass + 64 + 2 * (pass + 7) + pass,
            3 => 2 * (pass + 7) + pass + 8,
            4 | 5 => (MAX_IT + 4) * (pass + 14) + pass,
            6 => (pass + 7) * (self.coefs.len() + 1) + pass * self.coefs.len(),
            _ => pass + 7,
        }
    }
}

impl Normaliser {
    /// Loop iterations of one `normalise_rows` invocation on a row of
    /// `width` entries: the statistics pass, the polynomial's or ratio's sum,
    /// the weights pass (each poly entry a Horner loop).
    pub(crate) fn row_cost(&self, width: usize, records_only: bool) -> usize {
        let horner = self.coefs.len() + 1;
        let per = if self.code == 6 { horner } else { 1 };
        let passes = if records_only { width + 1 } else { (width + 1) * (2 + 2 * per) };
        passes + 32
    }
}

fn clamp_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// One problem as the kernels see it (after the driver split any problem
/// too large for one chunk into blocks of rows).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ProblemDesc {
    /// Queries of this block.
    pub rows: usize,
    /// Global index of its first query (rows of all problems, concatenated).
    pub row0: usize,
    /// Index of its first query within the original problem, and that problem's queries.
    pub l0: usize,
    pub l_total: usize,
    /// Memories (without the zero memory), and whether a zero memory follows.
    pub m: usize,
    pub zero: bool,
    /// Offset of its keep table, and how many memories (zero included) it keeps.
    pub keep: Option<usize>,
    pub m_kept: usize,
    /// Offset of its score rows within its chunk.
    pub s_off: usize,
    pub chunk: usize,
    pub group: usize,
    /// The first queries (not moved by the driver), keys, update values, values, output.
    pub queries: At,
    pub keys: At,
    pub update: At,
    pub values: At,
    pub out: At,
    pub beta: f32,
    /// prf: row of its memories' features in the key-feature buffer.
    pub aux: usize,
}

impl ProblemDesc {
    /// Score row length: the memories and the zero memory.
    pub(crate) fn width(&self) -> usize {
        self.m + usize::from(self.zero)
    }

    fn words(&self) -> Result<[u32; PROBLEM_WORDS]> {
        let w = |v: usize| {
            u32::try_from(v).map_err(|_| {
                Error::limit(
                    "a batched problem's offsets (indexed in u32)",
                    Resource::BindingBytes,
                    v,
                    u64::from(u32::MAX),
                )
            })
        };
        Ok([
            w(self.rows)?,
            w(self.row0)?,
            w(self.l0)?,
            w(self.l_total)?,
            w(self.m)?,
            w(self.width())?,
            w(self.m_kept)?,
            self.keep.map_or(Ok(NONE), w)?,
            w(self.s_off)?,
            w(self.chunk)?,
            w(self.group)?,
            0,
            w(self.queries.off)?,
            w(self.queries.stride)?,
            w(self.keys.off)?,
            w(self.keys.stride)?,
            w(self.update.off)?,
            w(self.update.stride)?,
            w(self.values.off)?,
            w(self.values.stride)?,
            w(self.out.off)?,
            w(self.out.stride)?,
            self.beta.to_bits(),
            w(self.aux)?,
        ])
    }
}

/// A stop group: its limit, threshold and member problems' rows.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GroupDesc {
    pub max_updates: u32,
    pub eps: f32,
    /// (first global row, rows) of each original member problem.
    pub members: Vec<(usize, usize)>,
}

/// The descriptor table on the device, and where each part starts (words).
pub(crate) struct Tables {
    pub desc: wgpu::Buffer,
    prob_at: u32,
    keep_at: u32,
    coef_at: u32,
    group_at: u32,
    member_at: u32,
    pub problems: usize,
    pub groups: usize,
    /// Score row length of each problem.
    widths: Vec<usize>,
}

impl Tables {
    /// Lay out and record the upload of the tables.
    pub(crate) fn new(
        rec: &mut Recorder<'_>,
        problems: &[ProblemDesc],
        keep: &[u32],
        coefs: &[f32],
        groups: &[GroupDesc],
    ) -> Result<Self> {
        let mut words: Vec<u32> = Vec::with_capacity(problems.len() * PROBLEM_WORDS + keep.len() + 64);
        let prob_at = 0u32;
        for p in problems {
            words.extend(p.words()?);
        }
        let keep_at = words.len();
        words.extend_from_slice(keep);
        let coef_at = words.len();
        words.extend(coefs.iter().map(|c| c.to_bits()));
        let group_at = words.len();
        let mut member = 0usize;
        for g in groups {
            words.extend([g.max_updates, g.eps.to_bits(), member as u32, g.members.len() as u32]);
            member += g.members.len();
        }
        let member_at = words.len();
        for g in groups {
            for &(r0, n) in &g.members {
                words.extend([r0 as u32, n as u32]);
            }
        }
        if words.len() > u32::MAX as usize {
            return Err(Error::limit(
                "the batch descriptor table",
                Resource::BindingBytes,
                words.len() * 4,
                u64::from(u32::MAX),
            ));
        }
        debug_assert_eq!(GROUP_WORDS, 4);
        Ok(Tables {
            desc: rec.table(&words)?,
            prob_at,
            keep_at: keep_at as u32,
            coef_at: coef_at as u32,
            group_at: group_at as u32,
            member_at: member_at as u32,
            problems: problems.len(),
            groups: groups.len(),
            widths: problems.iter().map(ProblemDesc::width).collect(),
        })
    }

    /// The longest score row among the problems `[p0, p1)`.
    fn widest(&self, p0: usize, p1: usize) -> usize {
        self.widths[p0..p1].iter().copied().max().unwrap_or(0)
    }

    fn params(&self, p0: usize, p1: usize, items: usize, row0: usize, d: usize, flags: u32) -> BatchParams {
        let (gx, _) = grid(items);
        BatchParams {
            p0: p0 as u32,
            p1: p1 as u32,
            rows: items as u32,
            row0: row0 as u32,
            groups_x: gx,
            d: d as u32,
            flags,
            prob_at: self.prob_at,
            keep_at: self.keep_at,
            coef_at: self.coef_at,
            group_at: self.group_at,
            member_at: self.member_at,
            ..Default::default()
        }
    }
}

fn constants() -> [(&'static str, f64); 1] {
    [("MAX_IT", MAX_IT as f64)]
}

/// The buffers the batch kernels bind; unused ones are the placeholder.
pub(crate) struct Bound<'b> {
    pub scores: &'b wgpu::Buffer,
    pub assoc: &'b wgpu::Buffer,
    pub recs: &'b wgpu::Buffer,
    pub groups: &'b wgpu::Buffer,
    pub xnew: &'b wgpu::Buffer,
    pub state: &'b wgpu::Buffer,
    pub queries: &'b wgpu::Buffer,
    pub moving: &'b wgpu::Buffer,
    pub out: &'b wgpu::Buffer,
}

/// Record `normalise` for the rows `[row0, row0 + rows)` of the problems
/// `[p0, p1)` (one chunk: their score rows in `bound.scores`, their
/// association rows in `bound.assoc`).
#[expect(clippy::too_many_arguments, reason = "the chunk's range, the method and the buffers")]
pub(crate) fn encode_normalise(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    tables: &Tables,
    norm: &Normaliser,
    (p0, p1): (usize, usize),
    (row0, rows): (usize, usize),
    flags: u32,
    bound: &Bound<'_>,
) -> Result<()> {
    let records_only = flags & flags::RECORDS_ONLY != 0;
    // One thread per row where a workgroup's barriers cost more than the
    // row's work (CPU devices) and the row fits one invocation's loops; the
    // supports (top-K, random, window) and thresholds (sparsemax, entmax)
    // always take a workgroup.
    let plain = records_only || matches!(norm.code, 0 | 6 | 7);
    let widest = tables.widest(p0, p1);
    let per_thread =
        plain && rec.ctx.is_cpu() && rec.ctx.loop_budget().is_none_or(|b| norm.row_cost(widest, records_only) <= b);
    let (entry, items) = if per_thread { ("normalise_rows", rows.div_ceil(64)) } else { ("normalise", rows) };
    let kernel = Kernel::new(rec.ctx, Shader::Batch, entry, &constants())?;
    let mut params = tables.params(p0, p1, rows, row0, 0, flags);
    params.groups_x = grid(items).0;
    params.method = if records_only { 0 } else { norm.code };
    params.k = norm.k;
    params.seed_lo = norm.seed as u32;
    params.seed_hi = (norm.seed >> 32) as u32;
    params.degree = norm.coefs.len().saturating_sub(1) as u32;
    let (gx, gy) = grid(rows);
    let bindings =
        [(1, entire(&tables.desc)), (2, entire(bound.scores)), (3, entire(bound.assoc)), (4, entire(bound.recs))];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

/// Record `update` for every row: the state takes `bound.xnew` unless it stopped.
pub(crate) fn encode_update(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    tables: &Tables,
    rows: usize,
    d: usize,
    flags: u32,
    bound: &Bound<'_>,
) -> Result<()> {
    let kernel = Kernel::new(rec.ctx, Shader::Batch, "update", &constants())?;
    let params = tables.params(0, tables.problems, rows, 0, d, flags);
    let (gx, gy) = grid(rows);
    let bindings = [
        (1, entire(&tables.desc)),
        (4, entire(bound.recs)),
        (5, entire(bound.groups)),
        (6, entire(bound.xnew)),
        (7, entire(bound.state)),
        (8, entire(bound.queries)),
        (9, entire(bound.moving)),
    ];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

/// Record `stop` for every group (hopfield-layers' rule, or with
/// `flags::SUMMARY` the groups' summaries of their queries).
pub(crate) fn encode_stop(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    tables: &Tables,
    flags: u32,
    bound: &Bound<'_>,
) -> Result<()> {
    if tables.groups == 0 {
        return Ok(());
    }
    let kernel = Kernel::new(rec.ctx, Shader::Batch, "stop", &constants())?;
    let params = tables.params(0, tables.problems, tables.groups, 0, 0, flags);
    let (gx, gy) = grid(tables.groups);
    let bindings =
        [(1, entire(&tables.desc)), (4, entire(bound.recs)), (5, entire(bound.groups)), (9, entire(bound.moving))];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

/// Record `finish` for every row: energies, z for the engine's dynamics,
/// the groups' records for hopfield-layers' rule.
pub(crate) fn encode_finish(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    tables: &Tables,
    rows: usize,
    d: usize,
    flags: u32,
    bound: &Bound<'_>,
) -> Result<()> {
    let kernel = Kernel::new(rec.ctx, Shader::Batch, "finish", &constants())?;
    let params = tables.params(0, tables.problems, rows, 0, d, flags);
    let (gx, gy) = grid(rows);
    let bindings = [
        (1, entire(&tables.desc)),
        (4, entire(bound.recs)),
        (5, entire(bound.groups)),
        (7, entire(bound.state)),
        (8, entire(bound.queries)),
        (10, entire(bound.out)),
    ];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

/// The buffers of batch_pairwise.wgsl.
pub(crate) struct PairBound<'b> {
    pub queries: &'b wgpu::Buffer,
    pub state: &'b wgpu::Buffer,
    pub keys: &'b wgpu::Buffer,
    pub ax: &'b wgpu::Buffer,
    pub bk: &'b wgpu::Buffer,
    pub scores: &'b wgpu::Buffer,
}

/// Record the kernel methods' score rows for one chunk (`first`: from the queries).
#[expect(clippy::too_many_arguments, reason = "the chunk's range, the method and the buffers")]
pub(crate) fn encode_pairwise(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    tables: &Tables,
    (p0, p1): (usize, usize),
    (row0, rows): (usize, usize),
    d: usize,
    prf: Option<usize>,
    first: bool,
    bound: &PairBound<'_>,
) -> Result<()> {
    let kernel = Kernel::new(rec.ctx, Shader::BatchPairwise, "pairwise", &[])?;
    let (gx, gy) = grid(rows);
    let params = PairParams {
        p0: p0 as u32,
        p1: p1 as u32,
        rows: rows as u32,
        row0: row0 as u32,
        groups_x: gx,
        d: d as u32,
        r: prf.unwrap_or(0) as u32,
        flags: u32::from(first) | if prf.is_some() { 2 } else { 0 },
        prob_at: tables.prob_at,
        _pad: [0; 3],
    };
    let bindings = [
        (1, entire(&tables.desc)),
        (2, entire(bound.queries)),
        (3, entire(bound.state)),
        (4, entire(bound.keys)),
        (5, entire(bound.ax)),
        (6, entire(bound.bk)),
        (7, entire(bound.scores)),
    ];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

/// Loop iterations of one `pairwise` invocation on a row of `width` memories.
pub(crate) fn pairwise_cost(width: usize, d: usize, prf: Option<usize>) -> usize {
    let per = match prf {
        Some(r) => 2 * (r + 1) + d + 1,
        None => d + 1,
    };
    d + 1 + width.div_ceil(64) * (per + 1) + 1
}

/// Loop iterations of one `stop` invocation over members of these sizes.
pub(crate) fn stop_cost(members: &[(usize, usize)]) -> usize {
    members.iter().map(|&(_, n)| n.div_ceil(64) + 1 + 3 * 7 + 1).sum::<usize>() + 8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaders::{check_constants, wgsl_struct_size};

    #[test]
    fn structs_match_the_wgsl_layouts() {
        assert_eq!(wgsl_struct_size(Shader::Batch, "Params"), size_of::<BatchParams>());
        assert_eq!(wgsl_struct_size(Shader::Batch, "Row"), size_of::<RowRecord>());
        assert_eq!(wgsl_struct_size(Shader::Batch, "Group"), size_of::<GroupRecord>());
        assert_eq!(wgsl_struct_size(Shader::BatchPairwise, "Params"), size_of::<PairParams>());
        assert_eq!(wgsl_struct_size(Shader::BatchFused, "Params"), size_of::<FusedParams>());
        assert_eq!(wgsl_struct_size(Shader::BatchFused, "Row"), size_of::<RowRecord>());
        check_constants(Shader::BatchFused, "fused_dense", &[]);
        for entry in ["normalise", "normalise_rows", "update", "stop", "finish"] {
            check_constants(Shader::Batch, entry, &constants());
        }
        check_constants(Shader::BatchPairwise, "pairwise", &[]);
    }

    #[test]
    fn a_descriptor_has_the_shaders_word_count() {
        let at = At::new(0, 1);
        let p = ProblemDesc {
            rows: 1,
            row0: 0,
            l0: 0,
            l_total: 1,
            m: 3,
            zero: true,
            keep: None,
            m_kept: 4,
            s_off: 0,
            chunk: 0,
            group: 0,
            queries: at,
            keys: at,
            update: at,
            values: at,
            out: at,
            beta: 1.0,
            aux: 0,
        };
        let w = p.words().unwrap();
        assert_eq!((w[4], w[5], w[7]), (3, 4, NONE));
        assert!(Normaliser::of(&Method::Poly { delta: 0.1, degree: None }, 4).is_err());
        assert!(Normaliser::of(&Method::Entmax15, 4).unwrap().cost(4096) < 50_000);
    }
}
