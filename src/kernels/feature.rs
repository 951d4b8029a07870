//! Host side of the feature-map kernels (`shaders/feature_*.wgsl`): one
//! pipeline for every kernel (feature-map) method of SEMANTICS.md,
//! `z_l = S^T phi_q(x_l) / <n, phi_q(x_l)>` with
//! `S = sum_mu phi_k(xi_mu) v_mu^T` and `n = sum_mu phi_k(xi_mu)`.
//!
//! - Build (once per bank and feature map, cached in the bank): memories are
//!   taken in rounds; each round maps its rows to features (`feature_poly`,
//!   `feature_linear` or `feature_prf` + `feature_rowmax`), sums fixed parts
//!   of [`PART_ROWS`] rows per thread (`feature_reduce`), and adds the parts
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytemuck::{Pod, Zeroable};

use super::dense::MAX_GROUPS;
use super::{bind_group, entire, uniform, StepArgs};
use crate::bank::MemoryBank;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::feature::poly::{self, Family, MonomialTable, Polynomial};
use crate::feature::prf::{default_feature_count, RandomFeatures};
use crate::retrieve::Method;

/// Memories one thread of `feature_reduce` sums (a part). Fixed, so the
/// summation order, and with it every bit of S and n, depends only on M.
pub(crate) const PART_ROWS: usize = 1024;
/// Most parts per build round: bounds the feature and partial-sum scratch.
const MAX_PARTS: usize = 64;

/// Keep in sync with `Params` in every shaders/feature_*.wgsl.
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

/// What identifies one feature map on one bank: S and n are cached under it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FeatureKey {
    /// Taylor polynomial of this degree at this beta (bits of the f32).
    Poly { degree: usize, beta: u32 },
    /// `elu(x) + 1` (no beta).
    Linear,
    /// Positive random features.
    Prf { features: usize, seed: u64, orthogonal: bool, beta: u32 },
}

impl FeatureKey {
    /// The key of a *resolved* feature method (a polynomial needs its degree),
    /// `None` for the other methods.
    pub(crate) fn of(method: &Method, beta: f32, d: usize) -> Option<FeatureKey> {
        match *method {
            Method::Poly { degree: Some(degree), .. } => Some(FeatureKey::Poly { degree, beta: beta.to_bits() }),
            Method::Linear => Some(FeatureKey::Linear),
            Method::Prf { features, seed, orthogonal } => Some(FeatureKey::Prf {
                features: features.unwrap_or_else(|| default_feature_count(d)),
                seed,
                orthogonal,
                beta: beta.to_bits(),
            }),
            _ => None,
        }
    }
}

enum Map {
    Poly { parent: wgpu::Buffer, parent_dim: wgpu::Buffer },
    Linear,
    Prf { w: wgpu::Buffer, scale: f32 },
}

/// S and n of one feature map on one bank, with what the query side needs.
pub(crate) struct FeatureState {
    map: Map,
    d: usize,
    dv: usize,
    r: usize,
    qcoef: wgpu::Buffer,
    /// `[r, dv + 1]`: S in the first dv columns, n in the last.
    state: wgpu::Buffer,
}

/// The feature states built for one bank (shared by clones of the bank).
#[derive(Clone, Default)]
pub(crate) struct FeatureCache {
    map: Arc<Mutex<HashMap<FeatureKey, Arc<FeatureState>>>>,
    builds: Arc<AtomicUsize>,
}

impl std::fmt::Debug for FeatureCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureCache").field("builds", &self.builds()).finish_non_exhaustive()
    }
}

impl FeatureCache {
    /// How many S/n builds this bank has run.
    pub(crate) fn builds(&self) -> usize {
        self.builds.load(Ordering::Relaxed)
    }

    fn get(&self, key: &FeatureKey) -> Option<Arc<FeatureState>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }
}

/// S and n for `key` on `bank`: from the bank's cache, or built now (one
/// submission, waited for) and cached.
pub(crate) fn prepare(ctx: &Context, bank: &MemoryBank, key: &FeatureKey) -> Result<Arc<FeatureState>> {
    if let Some(s) = bank.features.get(key) {
        return Ok(s);
    }
    let state = Arc::new(build(ctx, bank, key)?);
    bank.features.builds.fetch_add(1, Ordering::Relaxed);
    bank.features.map.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), state.clone());
    Ok(state)
}

/// Largest loop count one invocation may run here (with some slack).
fn budget(ctx: &Context) -> Option<usize> {
    ctx.loop_budget().map(|b| b - 64)
}

fn threads(n: usize) -> (u32, u32) {
    let groups = n.div_ceil(64).max(1);
    let x = groups.min(MAX_GROUPS);
    (x as u32, groups.div_ceil(x) as u32)
}

/// Record one dispatch of `shader` over `n` threads.
fn dispatch(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    shader: &'static str,
    mut params: FeatureParams,
    bindings: &[wgpu::BindingResource<'_>],
    n: usize,
) -> Result<()> {
    let pipeline = ctx.pipeline(shader, "main", &[])?;
    let (gx, gy) = threads(n);
    params.groups_x = gx;
    let params = uniform(ctx, &params);
    let mut entries = vec![(0, entire(&params))];
    entries.extend(bindings.iter().enumerate().map(|(i, b)| (i as u32 + 1, b.clone())));
    let group = bind_group(ctx, &pipeline.get_bind_group_layout(0), shader, &entries);
    pass.set_pipeline(&pipeline);
    pass.set_bind_group(0, &group, &[]);
    pass.dispatch_workgroups(gx, gy, 1);
    Ok(())
}

/// Record the feature map of `rows` rows of `x` starting at row `x0` into
/// `feat` (`[rows, r]`). Random features leave exponents and row maxima
/// (`query`: already exponentiated less the row maximum).
#[allow(clippy::too_many_arguments)]
fn encode_map(
    ctx: &Context,
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
    match &st.map {
        Map::Poly { parent, parent_dim } => {
            let block = budget(ctx).unwrap_or(st.r).max(1);
            for f0 in (0..st.r).step_by(block) {
                let p = FeatureParams { f0: f0 as u32, f1: (f0 + block).min(st.r) as u32, ..base };
                let b = [x.clone(), entire(parent), entire(parent_dim), entire(feat)];
                dispatch(ctx, pass, "feature_poly", p, &b, rows)?;
            }
        }
        Map::Linear => dispatch(ctx, pass, "feature_linear", base, &[x, entire(feat)], rows * st.d)?,
        Map::Prf { w, scale } => {
            let p = FeatureParams { scale: *scale, ..base };
            dispatch(ctx, pass, "feature_prf", p, &[x, entire(w), entire(feat)], rows * st.r)?;
            let p = FeatureParams { flag: query as u32, ..base };
            dispatch(ctx, pass, "feature_rowmax", p, &[entire(feat), entire(rowmax)], rows)?;
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

fn build(ctx: &Context, bank: &MemoryBank, key: &FeatureKey) -> Result<FeatureState> {
    use wgpu::BufferUsages as U;
    let (d, dv) = (bank.dim(), bank.value_dim());
    let cols = dv + 1;
    let max_bind = ctx.max_binding();
    let (map, r, kcoef, qcoef) = match *key {
        FeatureKey::Poly { degree, beta } => {
            poly::check_rank(d, degree, dv, max_bind)?;
            let table = MonomialTable::new(d, degree, max_bind / 4)?;
            // Taylor coefficients 1/k! do not depend on R, so one S serves
            // every query set whose R the degree covers.
            let p = Polynomial::new(Family::Taylor, degree, 0.0)?;
            let pc = poly::feature_coefficients(&table, &p.coefs, f64::from(f32::from_bits(beta)))?;
            let map = Map::Poly {
                parent: ctx.upload("parent", bytemuck::cast_slice(&table.parent), U::empty()),
                parent_dim: ctx.upload("parent_dim", bytemuck::cast_slice(&table.parent_dim), U::empty()),
            };
            (map, table.rank(), to_f32(&pc.key), to_f32(&pc.query))
        }
        FeatureKey::Linear => (Map::Linear, d, vec![1.0; d], vec![1.0; d]),
        FeatureKey::Prf { features, seed, orthogonal, beta } => {
            let rf = RandomFeatures::new(d, features, seed, orthogonal)?;
            if let Some(b) = budget(ctx) {
                // feature_rowmax loops twice over the features, feature_prf twice over d.
                if 2 * features > b || 2 * d > b {
                    return Err(Error::DeviceLimit(format!(
                        "random features: m = {features} features on d = {d} exceed this driver's \
                         per-invocation loop budget ({b} iterations; m and d must stay below {})",
                        b / 2
                    )));
                }
            }
            let w = ctx.upload("prf W", bytemuck::cast_slice(&rf.w_f32()), U::empty());
            let map = Map::Prf { w, scale: f32::from_bits(beta).sqrt() };
            (map, features, vec![1.0; features], vec![1.0; features])
        }
    };
    let state_bytes = (r * cols * 4) as u64;
    if state_bytes > max_bind {
        return Err(Error::DeviceLimit(format!(
            "feature rank r = {r}: S and n need r (dv + 1) 4 = {state_bytes} bytes, more than one storage binding \
             ({max_bind} bytes)"
        )));
    }
    // Rows per round: the feature rows and the parts' partial sums each fit a binding.
    let feat_rows = (max_bind / (4 * r as u64)) as usize;
    let parts_fit = (max_bind / state_bytes) as usize;
    // PART_ROWS unless the driver's loop budget or a small binding forces less.
    let part_rows = PART_ROWS.min(budget(ctx).map_or(usize::MAX, |b| b / 2)).min(feat_rows);
    if part_rows == 0 {
        return Err(Error::DeviceLimit(format!(
            "feature rank r = {r}: one feature row ({} bytes) does not fit a storage binding of {max_bind} bytes",
            r * 4
        )));
    }
    let round_rows = feat_rows.min(parts_fit.min(MAX_PARTS) * part_rows) / part_rows * part_rows;
    let round_rows = round_rows.min(bank.len().next_multiple_of(part_rows));
    let kcoef = ctx.upload("kcoef", bytemuck::cast_slice(&kcoef), U::empty());
    let qcoef = ctx.upload("qcoef", bytemuck::cast_slice(&qcoef), U::empty());
    let state = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("feature S n"),
        size: state_bytes.max(16),
        usage: U::STORAGE | U::COPY_SRC | U::COPY_DST,
        mapped_at_creation: false,
    });
    let st = FeatureState { map, d, dv, r, qcoef, state };

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
    let feat = ctx.acquire((round_rows * r * 4) as u64, U::STORAGE)?;
    let rowmax = ctx.acquire((round_rows * 4) as u64, U::STORAGE)?;
    let parts_max = round_rows.div_ceil(part_rows);
    let partial = ctx.acquire((parts_max * r * cols * 4) as u64, U::STORAGE)?;
    let pmax = ctx.acquire((parts_max * 4) as u64, U::STORAGE)?;
    let cmax = ctx.acquire(((rounds.len() + 1) * 4) as u64, U::STORAGE)?;
    let scratch = vec![feat.clone(), rowmax.clone(), partial.clone(), pmax.clone(), cmax.clone()];
    let result = (|| -> Result<()> {
        if let Some(b) = budget(ctx) {
            if 2 * parts_max > b {
                return Err(Error::DeviceLimit("too many parts per round for this driver's loop budget".into()));
            }
        }
        let prf = matches!(st.map, Map::Prf { .. });
        let mut encoder = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("feature build"),
                timestamp_writes: None,
            });
            for (i, &(seg, at, rows)) in rounds.iter().enumerate() {
                let keys = binding(&seg.keys, seg.key_offset, (seg.rows * d * 4) as u64);
                encode_map(ctx, &mut pass, &st, keys, at, rows, &feat, &rowmax, false)?;
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
                dispatch(
                    ctx,
                    &mut pass,
                    "feature_reduce",
                    FeatureParams { flag: prf as u32, ..base },
                    &b,
                    parts * r * cols.div_ceil(4),
                )?;
                let flag = prf as u32 | if i == 0 { 2 } else { 0 };
                let b = [entire(&partial), entire(&pmax), entire(&st.state), entire(&cmax)];
                dispatch(ctx, &mut pass, "feature_merge", FeatureParams { flag, ..base }, &b, r * cols)?;
            }
        }
        ctx.submit_and_read(encoder, &[])?;
        Ok(())
    })();
    ctx.release(scratch);
    result?;
    Ok(st)
}

/// Record one retrieval step of a feature method: `z = S^T phi_q / <n, phi_q>`
/// for the `args.l` states in `args.queries`, S and n taken from the bank's
/// cache (built by [`prepare`] before the first pass).
pub(crate) fn encode_step(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    key: &FeatureKey,
    args: &StepArgs<'_>,
    scratch: &mut Vec<wgpu::Buffer>,
) -> Result<()> {
    use wgpu::BufferUsages as U;
    let st = args.bank.features.get(key).ok_or_else(|| {
        Error::Gpu("feature state missing from the bank cache; this is a bug, please report it".into())
    })?;
    let (r, dv) = (st.r, st.dv);
    let cols = dv + 1;
    let max_bind = ctx.max_binding() as usize;
    let qb = args.l.min(max_bind / (4 * r)).min(max_bind / (4 * cols)).max(1);
    let feat = ctx.acquire((qb * r * 4) as u64, U::STORAGE)?;
    let num = ctx.acquire((qb * cols * 4) as u64, U::STORAGE)?;
    let rowmax = ctx.acquire((qb * 4) as u64, U::STORAGE)?;
    scratch.extend([feat.clone(), num.clone(), rowmax.clone()]);
    let block = budget(ctx).unwrap_or(r).max(1);
    for q0 in (0..args.l).step_by(qb) {
        let rows = qb.min(args.l - q0);
        encode_map(ctx, pass, &st, entire(args.queries), q0, rows, &feat, &rowmax, true)?;
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
            dispatch(ctx, pass, "feature_answer", p, &b, rows * cols.div_ceil(4))?;
        }
        let p = FeatureParams { f0: q0 as u32, ..base };
        dispatch(ctx, pass, "feature_divide", p, &[entire(&num), entire(args.z)], rows * dv)?;
    }
    Ok(())
}
