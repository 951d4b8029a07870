//! Host side of the feature-map kernels (`shaders/feature_*.wgsl`): one
//! pipeline for every kernel (feature-map) method of SEMANTICS.md,
//! `z_l = S^T phi_q(x_l) / <n, phi_q(x_l)>` with
//! `S = sum_mu phi_k(xi_mu) v_mu^T` and `n = sum_mu phi_k(xi_mu)`.
//!
//! - Build (once per bank and feature map, cached in the bank): memories are
//!   taken in rounds; each round maps its rows to features (`feature_poly`,
//!   `feature_linear` or `feature_prf` + `feature_rowmax`), sums fixed parts
//!   of `feature::PART_ROWS` rows per thread (`feature_reduce`), and adds the parts
//!   in index order to S and n (`feature_merge`). Every sum runs in a fixed
//!   order with no atomics, so two builds give the same bits.
//! - Query (per batch, per dynamics step, inside the caller's pass): map the
//!   queries, `num = phi_q^T [S | n]` (`feature_answer`), then divide each
//!   query by its own normaliser (`feature_divide`).
//!
//! llvmpipe's loop limiter (see [`Context::loop_budget`]): the map kernels
//! loop at most over d (PRF) or r (row maxima), the reduction over one part,
//! the merge over one round's parts, and the answer over one block of
//! features; each is kept inside the budget here.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use super::{entire, grid, Kernel, Recorder, StepArgs};
use crate::bank::MemoryBank;
use crate::context::{Context, Scratch};
use crate::error::{Error, Resource, Result};
use crate::feature::poly::{self, MonomialTable, Polynomial};
use crate::feature::prf::RandomFeatures;
use crate::feature::PART_ROWS;
use crate::method::FeatureKey;
use crate::shaders::Shader;

/// Most parts per build round: bounds the feature and partial-sum scratch.
const MAX_PARTS: usize = 64;

/// Keep in sync with `Params` in shaders/shared/feature_params.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct FeatureParams {
    pub rows: u32,
    pub d: u32,
    pub r: u32,
    pub cols: u32,
    pub x0: u32,
    pub f0: u32,
    pub f1: u32,
    pub flag: u32,
    pub parts: u32,
    pub part_rows: u32,
    pub round: u32,
    pub scale: f32,
    pub groups_x: u32,
    pub dv: u32,
    pub _pad: [u32; 2],
}

/// S and n of one feature map on one bank, with what the query side needs.
pub(crate) struct FeatureState {
    key: FeatureKey,
    d: usize,
    dv: usize,
    r: usize,
    /// The map's tables: the monomial parents and their dimensions
    /// (polynomial), W (random features), nothing (linear).
    tables: Vec<wgpu::Buffer>,
    /// sqrt(beta) for random features.
    scale: f32,
    qcoef: wgpu::Buffer,
    /// `[r, dv + 1]`: S in the first dv columns, n in the last.
    state: wgpu::Buffer,
}

/// S and n for `key` on `bank`: from the bank's cache, or built now (one
/// submission of this context's own, waited for) and cached. Concurrent
/// callers with the same key wait for one build.
pub(crate) fn prepare(ctx: &Context, bank: &MemoryBank, key: FeatureKey) -> Result<Arc<FeatureState>> {
    bank.cache().get_or_build(key, || build(ctx, bank, key))
}

/// Largest loop count one invocation may run here (with some slack).
/// Bytes of S and n, `[r, dv + 1]` f32, refused beyond one storage binding.
fn check_state_size(r: usize, cols: usize, max_bind: u64) -> Result<u64> {
    let bytes = (r as u64).checked_mul(cols as u64 * 4);
    match bytes {
        Some(b) if b <= max_bind => Ok(b),
        _ => Err(Error::DeviceLimit {
            what: format!(
                "S and n of feature rank r = {r} (r (dv + 1) 4 bytes: at most r = {} at dv + 1 = {cols})",
                max_bind / (4 * cols as u64)
            ),
            resource: Resource::BindingBytes,
            need: bytes,
            limit: max_bind,
        }),
    }
}

fn budget(ctx: &Context) -> Option<usize> {
    ctx.loop_budget().map(|b| b - 64)
}

/// Record one dispatch of `shader` over `n` threads (64 per workgroup), its
/// `bindings` numbered from 1 in order.
fn dispatch(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    shader: Shader,
    mut params: FeatureParams,
    bindings: &[wgpu::BindingResource<'_>],
    n: usize,
) -> Result<()> {
    let kernel = Kernel::new(rec.ctx, shader, "main", &[])?;
    let (gx, gy) = grid(n.div_ceil(64));
    params.groups_x = gx;
    let numbered: Vec<_> = bindings.iter().enumerate().map(|(i, b)| (i as u32 + 1, b.clone())).collect();
    rec.dispatch(pass, &kernel, &params, &numbered, (gx, gy, 1))
}

/// Record the feature map of `rows` rows of `x` starting at row `x0` into
/// `feat` (`[rows, r]`). Random features leave exponents and row maxima
/// (`query`: already exponentiated less the row maximum).
#[expect(clippy::too_many_arguments, reason = "the map's input rows and outputs; a struct would only rename them")]
fn encode_map(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    st: &FeatureState,
    x: wgpu::BindingResource<'_>,
    x0: usize,
    rows: usize,
    feat: &wgpu::Buffer,
    rowmax: &wgpu::Buffer,
    query: bool,
) -> Result<()> {
    let base = FeatureParams { rows: rows as u32, d: st.d as u32, r: st.r as u32, x0: x0 as u32, ..Default::default() };
    match st.key {
        FeatureKey::Poly { .. } => {
            let block = budget(rec.ctx).unwrap_or(st.r).max(1);
            for f0 in (0..st.r).step_by(block) {
                let p = FeatureParams { f0: f0 as u32, f1: (f0 + block).min(st.r) as u32, ..base };
                let b = [x.clone(), entire(&st.tables[0]), entire(&st.tables[1]), entire(feat)];
                dispatch(rec, pass, Shader::FeaturePoly, p, &b, rows)?;
            }
        }
        FeatureKey::Linear => dispatch(rec, pass, Shader::FeatureLinear, base, &[x, entire(feat)], rows * st.d)?,
        FeatureKey::Prf { .. } => {
            let p = FeatureParams { scale: st.scale, ..base };
            dispatch(rec, pass, Shader::FeaturePrf, p, &[x, entire(&st.tables[0]), entire(feat)], rows * st.r)?;
            let p = FeatureParams { flag: query as u32, ..base };
            dispatch(rec, pass, Shader::FeatureRowmax, p, &[entire(feat), entire(rowmax)], rows)?;
        }
    }
    Ok(())
}

fn binding(buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer, offset, size: wgpu::BufferSize::new(bytes.max(4)) })
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&c| c as f32).collect()
}

fn build(ctx: &Context, bank: &MemoryBank, key: FeatureKey) -> Result<FeatureState> {
    ctx.scoped(|| build_scoped(ctx, bank, key))
}

fn build_scoped(ctx: &Context, bank: &MemoryBank, key: FeatureKey) -> Result<FeatureState> {
    use wgpu::BufferUsages as U;
    let (d, dv) = (bank.dim(), bank.value_dim());
    let cols = dv + 1;
    let max_bind = ctx.max_binding();
    let (tables, scale, r, kcoef, qcoef) = match key {
        FeatureKey::Poly { degree, beta } => {
            poly::check_rank(d, degree, dv, max_bind)?;
            let table = MonomialTable::new(d, degree, max_bind / 4)?;
            // Taylor coefficients 1/k! do not depend on R, so one S serves
            // every query set whose R the degree covers.
            let p = Polynomial::new(degree, 0.0)?;
            let pc = poly::feature_coefficients(&table, &p.coefs, f64::from(f32::from_bits(beta)))?;
            let tables = vec![
                ctx.upload("parent", bytemuck::cast_slice(&table.parent), U::empty())?,
                ctx.upload("parent_dim", bytemuck::cast_slice(&table.parent_dim), U::empty())?,
            ];
            (tables, 0.0, table.rank(), to_f32(&pc.key), to_f32(&pc.query))
        }
        FeatureKey::Linear => (Vec::new(), 0.0, d, vec![1.0; d], vec![1.0; d]),
        FeatureKey::Prf { features, seed, orthogonal, beta } => {
            // Every size check comes before W is drawn: W costs 12 m d bytes
            // of host memory (f64 and its f32 copy) and the time to draw it.
            if let Some(b) = budget(ctx) {
                // feature_rowmax loops twice over the features, feature_prf twice over d.
                if 2 * features > b {
                    return Err(Error::limit(
                        format!("random features: m = {features} (2 loop iterations per feature: at most {})", b / 2),
                        Resource::LoopIterations,
                        2 * features as u64,
                        b as u64,
                    ));
                }
                if 2 * d > b {
                    return Err(Error::limit(
                        format!("random features on d = {d} (2 loop iterations per dimension: at most d = {})", b / 2),
                        Resource::LoopIterations,
                        2 * d as u64,
                        b as u64,
                    ));
                }
            }
            check_state_size(features, cols, max_bind)?;
            let w_bytes = (features as u64).checked_mul(d as u64 * 4);
            if w_bytes.is_none_or(|b| b > max_bind) {
                return Err(Error::DeviceLimit {
                    what: format!(
                        "random features: W of m = {features} features x d = {d} in f32 (at most {} features at \
                         this d)",
                        max_bind / (4 * d as u64)
                    ),
                    resource: Resource::BindingBytes,
                    need: w_bytes,
                    limit: max_bind,
                });
            }
            let rf = RandomFeatures::new(d, features, seed, orthogonal)?;
            let w = ctx.upload("prf W", bytemuck::cast_slice(&rf.w_f32()), U::empty())?;
            (vec![w], f32::from_bits(beta).sqrt(), features, vec![1.0; features], vec![1.0; features])
        }
    };
    let state_bytes = check_state_size(r, cols, max_bind)?;
    // Rows per round: the feature rows and the parts' partial sums each fit a binding.
    let feat_rows = (max_bind / (4 * r as u64)) as usize;
    let parts_fit = (max_bind / state_bytes) as usize;
    // PART_ROWS unless the driver's loop budget or a small binding forces less.
    let part_rows = PART_ROWS.min(budget(ctx).map_or(usize::MAX, |b| b / 2)).min(feat_rows);
    if part_rows == 0 {
        return Err(Error::limit(
            format!("one feature row of rank r = {r}"),
            Resource::BindingBytes,
            r as u64 * 4,
            max_bind,
        ));
    }
    let round_rows = feat_rows.min(parts_fit.min(MAX_PARTS) * part_rows) / part_rows * part_rows;
    let round_rows = round_rows.min(bank.len().next_multiple_of(part_rows));
    let kcoef = ctx.upload("kcoef", bytemuck::cast_slice(&kcoef), U::empty())?;
    let qcoef = ctx.upload("qcoef", bytemuck::cast_slice(&qcoef), U::empty())?;
    let state = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("feature S n"),
        size: state_bytes.max(16),
        usage: U::STORAGE | U::COPY_SRC | U::COPY_DST,
        mapped_at_creation: false,
    });
    let st = FeatureState { key, d, dv, r, tables, scale, qcoef, state };

    // Rounds never straddle a segment (each binds its own keys and values).
    let mut rounds = Vec::new();
    for seg in &bank.segments {
        let mut at = 0;
        while at < seg.rows {
            let rows = round_rows.min(seg.rows - at);
            rounds.push((seg, at, rows));
            at += rows;
        }
    }
    let parts_max = round_rows.div_ceil(part_rows);
    if let Some(b) = budget(ctx) {
        if 2 * parts_max > b {
            return Err(Error::limit(
                "the parts of one feature build round",
                Resource::LoopIterations,
                2 * parts_max,
                b as u64,
            ));
        }
    }
    let mut rec = Recorder::new(ctx, Scratch::pooled(ctx));
    let feat = rec.buffer((round_rows * r * 4) as u64, U::STORAGE)?;
    let rowmax = rec.buffer((round_rows * 4) as u64, U::STORAGE)?;
    let partial = rec.buffer((parts_max * r * cols * 4) as u64, U::STORAGE)?;
    let pmax = rec.buffer((parts_max * 4) as u64, U::STORAGE)?;
    let cmax = rec.buffer(((rounds.len() + 1) * 4) as u64, U::STORAGE)?;
    let prf = matches!(st.key, FeatureKey::Prf { .. });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    {
        let mut pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("feature build"), timestamp_writes: None });
        for (i, &(seg, at, rows)) in rounds.iter().enumerate() {
            let keys = binding(&seg.keys, seg.key_offset, (seg.rows * d * 4) as u64);
            encode_map(&mut rec, &mut pass, &st, keys, at, rows, &feat, &rowmax, false)?;
            let parts = rows.div_ceil(part_rows);
            let base = FeatureParams {
                rows: rows as u32,
                d: d as u32,
                r: r as u32,
                cols: cols as u32,
                x0: at as u32,
                dv: dv as u32,
                parts: parts as u32,
                part_rows: part_rows as u32,
                round: i as u32,
                ..Default::default()
            };
            let vals = binding(&seg.values, seg.value_offset, (seg.rows * dv * 4) as u64);
            let b = [entire(&feat), entire(&rowmax), vals, entire(&kcoef), entire(&partial), entire(&pmax)];
            let p = FeatureParams { flag: prf as u32, ..base };
            dispatch(&mut rec, &mut pass, Shader::FeatureReduce, p, &b, parts * r * cols.div_ceil(4))?;
            let flag = prf as u32 | if i == 0 { 2 } else { 0 };
            let b = [entire(&partial), entire(&pmax), entire(&st.state), entire(&cmax)];
            dispatch(&mut rec, &mut pass, Shader::FeatureMerge, FeatureParams { flag, ..base }, &b, r * cols)?;
        }
    }
    rec.flush();
    ctx.submit_and_read(encoder, &[])?;
    Ok(st)
}

/// Record one retrieval step of a feature method: `z = S^T phi_q / <n, phi_q>`
/// for the `args.l` states in `args.queries`, S and n taken from the bank's
/// cache (built by [`prepare`] before the first pass).
pub(crate) fn encode_step(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    key: FeatureKey,
    args: &StepArgs<'_>,
) -> Result<()> {
    use wgpu::BufferUsages as U;
    let st = args
        .bank
        .cache()
        .get::<FeatureState>(key)
        .ok_or_else(|| Error::internal("a feature state is missing from the bank's cache"))?;
    let (r, dv) = (st.r, st.dv);
    let cols = dv + 1;
    let max_bind = rec.ctx.max_binding() as usize;
    let qb = args.l.min(max_bind / (4 * r)).min(max_bind / (4 * cols)).max(1);
    let feat = rec.buffer((qb * r * 4) as u64, U::STORAGE)?;
    let num = rec.buffer((qb * cols * 4) as u64, U::STORAGE)?;
    let rowmax = rec.buffer((qb * 4) as u64, U::STORAGE)?;
    let block = budget(rec.ctx).unwrap_or(r).max(1);
    for q0 in (0..args.l).step_by(qb) {
        let rows = qb.min(args.l - q0);
        encode_map(rec, pass, &st, entire(args.queries), q0, rows, &feat, &rowmax, true)?;
        let base = FeatureParams {
            rows: rows as u32,
            d: st.d as u32,
            r: r as u32,
            cols: cols as u32,
            dv: dv as u32,
            ..Default::default()
        };
        for f0 in (0..r).step_by(block) {
            let f1 = (f0 + block).min(r);
            let p = FeatureParams { f0: f0 as u32, f1: f1 as u32, flag: (f0 == 0) as u32, ..base };
            let b = [entire(&feat), entire(&st.qcoef), entire(&st.state), entire(&num)];
            dispatch(rec, pass, Shader::FeatureAnswer, p, &b, rows * cols.div_ceil(4))?;
        }
        let p = FeatureParams { f0: q0 as u32, ..base };
        dispatch(rec, pass, Shader::FeatureDivide, p, &[entire(&num), entire(args.z)], rows * dv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaders::wgsl_struct_size;

    #[test]
    fn params_match_every_feature_kernel() {
        for shader in Shader::ALL.iter().filter(|s| s.name().starts_with("feature_")) {
            assert_eq!(wgsl_struct_size(*shader, "Params"), size_of::<FeatureParams>(), "{}", shader.name());
        }
    }
}
