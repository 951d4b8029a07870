//! Host side of the WGSL kernels: one module per kernel family, each with the
//! uniform structs that mirror its shader and `encode_*` functions that record
//! dispatches into a compute pass the caller owns.
//!
//! The dense family (`dense`) merges its dynamics step into its own second
//! pass. Every other family implements [`encode_step`]'s contract: read `l`
//! states from `queries`, write `z` (`[l, dv]`) and, if asked, the support
//! indices; `retrieve.rs` then applies the dynamics step with `update`.

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use crate::bank::MemoryBank;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::retrieve::Method;

pub(crate) mod dense;
pub(crate) mod entmax;
pub(crate) mod feature;
pub(crate) mod select;
pub(crate) mod update;
pub(crate) mod window;

/// A uniform buffer holding `value`.
pub(crate) fn uniform<T: Pod>(ctx: &Context, value: &T) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("params"),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

/// A bind group with the given (binding number, resource) pairs.
pub(crate) fn bind_group(
    ctx: &Context,
    layout: &wgpu::BindGroupLayout,
    label: &str,
    resources: &[(u32, wgpu::BindingResource<'_>)],
) -> wgpu::BindGroup {
    let entries: Vec<_> =
        resources.iter().map(|(binding, r)| wgpu::BindGroupEntry { binding: *binding, resource: r.clone() }).collect();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout, entries: &entries })
}

/// A whole buffer as a binding.
pub(crate) fn entire(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    b.as_entire_binding()
}

/// What a non-dense kernel family needs to record one retrieval step.
pub(crate) struct StepArgs<'a> {
    /// The memories.
    pub bank: &'a MemoryBank,
    /// `[l, d]` current states (the queries on the first step).
    pub queries: &'a wgpu::Buffer,
    /// Queries in this batch.
    pub l: usize,
    /// Index of this batch's first query among all queries (random masks and
    /// windows depend on the query's global index).
    pub l0: usize,
    /// Queries in the whole call (windows are centred at `floor(l M / L)`).
    pub l_total: usize,
    /// Inverse temperature.
    pub beta: f32,
    /// `[l, dv]` output.
    pub z: &'a wgpu::Buffer,
    /// `[l, support_width]` i32 support indices (-1 padded), when asked for.
    pub support: Option<&'a wgpu::Buffer>,
}

/// Columns of the support output of `method` for `m` memories, or `None` for
/// methods without a support (dense).
pub(crate) fn support_width(method: &Method, m: usize) -> Option<usize> {
    match *method {
        Method::Dense | Method::DenseNaive => None,
        Method::TopK { k } | Method::Random { k, .. } => Some(k.min(m)),
        Method::Window { width } => Some(width.unwrap_or_else(|| crate::cpu::sparse::default_window(m)).min(m)),
        Method::Sparsemax | Method::Entmax15 => Some(m),
        Method::Poly { .. } | Method::Linear | Method::Prf { .. } | Method::Auto { .. } => None,
    }
}

/// Record one step of a non-dense method. Scratch buffers it acquires go into
/// `scratch`, released by the caller once the GPU is done.
pub(crate) fn encode_step(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    method: &Method,
    args: &StepArgs<'_>,
    scratch: &mut Vec<wgpu::Buffer>,
) -> Result<()> {
    if let Some(key) = feature::FeatureKey::of(method, args.beta, args.bank.dim()) {
        return feature::encode_step(ctx, pass, &key, args, scratch);
    }
    match *method {
        Method::TopK { k } => select::encode(ctx, pass, select::Selection::TopK, k, args, scratch),
        Method::Random { k, seed } => select::encode(ctx, pass, select::Selection::Random { seed }, k, args, scratch),
        Method::Window { width } => {
            let w = width.unwrap_or_else(|| crate::cpu::sparse::default_window(args.bank.len()));
            window::encode(ctx, pass, args, w, scratch)
        }
        Method::Sparsemax => entmax::encode(ctx, pass, args, entmax::Map::Sparsemax, scratch),
        Method::Entmax15 => entmax::encode(ctx, pass, args, entmax::Map::Entmax15, scratch),
        // Dense runs its own two passes in retrieve.rs, and `auto` is replaced
        // by its plan's method before any kernel is recorded.
        _ => Err(Error::Unsupported(format!("method {} is not recorded through encode_step", method.name()))),
    }
}
