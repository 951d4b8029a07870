//! Host side of the WGSL kernels: one module per kernel family, each with the
//! uniform structs that mirror its shader and `encode_*` functions that record
//! dispatches into a compute pass the caller owns (encode, don't submit).
//!
//! Every dispatch goes through [`Recorder::dispatch`]: pipeline, uniform (a
//! slot of a per-recording arena, not a buffer per dispatch), bind group,
//! grid. Scratch buffers come from the recorder's [`Scratch`] guard.
//!
//! [`encode_step`] maps every method to its family: read `l` states, write
//! z (`[l, dv]`) and, if asked, the support indices. The dense family merges
//! its dynamics step into its own second pass; the others leave it to
//! [`update`].

use std::collections::HashMap;

use bytemuck::Pod;

use crate::bank::MemoryBank;
use crate::config::KernelConfig;
use crate::context::{Context, Scratch};
use crate::error::{Error, Result};
use crate::method::{default_window, Method};
use crate::shaders::Shader;

pub(crate) mod batch;
pub(crate) mod dense;
pub(crate) mod entmax;
pub(crate) mod feature;
pub(crate) mod linalg;
pub(crate) mod partial;
pub(crate) mod separation;
pub(crate) mod topk;
pub(crate) mod update;
pub(crate) mod window;

/// Largest workgroup count along one dispatch dimension that every device accepts.
pub(crate) const MAX_GROUPS: usize = 65535;

/// Bytes of one uniform arena chunk (256 slots at the usual 256-byte alignment).
const UNIFORM_CHUNK: u64 = 64 << 10;

/// A compiled entry point and its bind group layout.
pub(crate) struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    label: &'static str,
}

impl Kernel {
    /// `entry` of `shader` with these override constants (compiled once per context).
    pub(crate) fn new(
        ctx: &Context,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Self> {
        let pipeline = ctx.pipeline(shader, entry, constants)?;
        let layout = pipeline.get_bind_group_layout(0);
        Ok(Kernel { pipeline, layout, label: entry })
    }
}

/// The uniform arena of one recording: every dispatch's parameters live in
/// slots of a few chunk buffers, identical parameters share a slot (the
/// steps of a dynamics loop repeat them), and the bytes reach the device in
/// one `write_buffer` per chunk at [`Recorder::flush`].
#[derive(Default)]
struct Uniforms {
    chunks: Vec<Chunk>,
    slots: HashMap<Vec<u8>, (usize, u64)>,
}

struct Chunk {
    buffer: wgpu::Buffer,
    bytes: Vec<u8>,
    flushed: usize,
}

/// Records kernels' dispatches for one retrieval (or one S/n build).
pub(crate) struct Recorder<'c> {
    pub(crate) ctx: &'c Context,
    scratch: Scratch<'c>,
    uniforms: Uniforms,
    /// Read-only storage tables (work lists, problem descriptors) by content,
    /// written at [`Recorder::flush`].
    tables: HashMap<Vec<u32>, (wgpu::Buffer, bool)>,
}

impl<'c> Recorder<'c> {
    /// A recorder whose buffers go back to the pool when it drops (hold it
    /// until the GPU is done), or are only dropped (`scratch` detached).
    pub(crate) fn new(ctx: &'c Context, scratch: Scratch<'c>) -> Self {
        Recorder { ctx, scratch, uniforms: Uniforms::default(), tables: HashMap::new() }
    }

    /// A storage buffer holding `words` (a work list, a descriptor table),
    /// written to the device at the next [`Recorder::flush`]. Identical
    /// tables share one buffer: the steps of a dynamics loop repeat theirs.
    pub(crate) fn table(&mut self, words: &[u32]) -> Result<wgpu::Buffer> {
        if let Some((b, _)) = self.tables.get(words) {
            return Ok(b.clone());
        }
        let bytes = (words.len() as u64 * 4).max(16);
        let b = self.scratch.buffer(bytes, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST)?;
        self.tables.insert(words.to_vec(), (b.clone(), false));
        Ok(b)
    }

    /// A scratch buffer of at least `size` bytes, held as long as the recorder.
    pub(crate) fn buffer(&mut self, size: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
        self.scratch.buffer(size, usage)
    }

    /// The slot holding `params`: (chunk, offset).
    fn slot<P: Pod>(&mut self, params: &P) -> Result<(usize, u64)> {
        let bytes = bytemuck::bytes_of(params);
        if let Some(&s) = self.uniforms.slots.get(bytes) {
            return Ok(s);
        }
        let align = u64::from(self.ctx.limits().min_uniform_buffer_offset_alignment).max(16);
        let size = (bytes.len() as u64).next_multiple_of(align);
        let fits = self.uniforms.chunks.last().is_some_and(|c| c.bytes.len() as u64 + size <= UNIFORM_CHUNK);
        if !fits {
            let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
            let buffer = self.scratch.buffer(UNIFORM_CHUNK.max(size), usage)?;
            self.uniforms.chunks.push(Chunk { buffer, bytes: Vec::new(), flushed: 0 });
        }
        let index = self.uniforms.chunks.len() - 1;
        let chunk = &mut self.uniforms.chunks[index];
        let offset = chunk.bytes.len() as u64;
        chunk.bytes.extend_from_slice(bytes);
        chunk.bytes.resize((offset + size) as usize, 0);
        self.uniforms.slots.insert(bytes.to_vec(), (index, offset));
        Ok((index, offset))
    }

    /// Record one dispatch of `kernel` with `params` at binding 0 (every
    /// kernel's `Params`) and `bindings` (binding number, resource), over
    /// `groups` workgroups.
    pub(crate) fn dispatch<P: Pod>(
        &mut self,
        pass: &mut wgpu::ComputePass<'_>,
        kernel: &Kernel,
        params: &P,
        bindings: &[(u32, wgpu::BindingResource<'_>)],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let (chunk, offset) = self.slot(params)?;
        let uniform = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.uniforms.chunks[chunk].buffer,
            offset,
            size: wgpu::BufferSize::new(std::mem::size_of::<P>() as u64),
        });
        let entries: Vec<_> = std::iter::once(wgpu::BindGroupEntry { binding: 0, resource: uniform })
            .chain(bindings.iter().map(|(binding, r)| wgpu::BindGroupEntry { binding: *binding, resource: r.clone() }))
            .collect();
        let group = self.ctx.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.label),
            layout: &kernel.layout,
            entries: &entries,
        });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        Ok(())
    }

    /// Write the uniforms recorded since the last flush to the device. Call
    /// it before the work recorded so far is submitted (queue writes land
    /// before the next submission).
    pub(crate) fn flush(&mut self) {
        for (words, (b, written)) in &mut self.tables {
            if !*written {
                self.ctx.queue().write_buffer(b, 0, bytemuck::cast_slice(words));
                *written = true;
            }
        }
        for c in &mut self.uniforms.chunks {
            if c.flushed < c.bytes.len() {
                self.ctx.queue().write_buffer(&c.buffer, c.flushed as u64, &c.bytes[c.flushed..]);
                c.flushed = c.bytes.len();
            }
        }
    }
}

/// A whole buffer as a binding.
pub(crate) fn entire(b: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    b.as_entire_binding()
}

/// `n` work items as a 2-D grid of at most [`MAX_GROUPS`] along x:
/// (groups along x, groups along y). Kernels recover the item as
/// `x + y * groups_x`.
pub(crate) fn grid(n: usize) -> (u32, u32) {
    let n = n.max(1);
    let x = n.min(MAX_GROUPS);
    (x as u32, n.div_ceil(x) as u32)
}

/// Memories per split of a pass over `m` memories in tiles of `bm`, with
/// `work_groups` workgroups per split: enough splits that a few queries
/// against a million memories still fill a GPU (flash-decoding), and few on
/// CPU devices (lavapipe runs one workgroup per thread; more splits only add
/// merging). `target` is the workgroups to aim for (the configuration's
/// `split_target`, which the tuner measures; 0: 2048 on GPUs, 4 per CPU
/// thread on CPU devices). A multiple of `bm`; at least two tiles per split.
pub(crate) fn split_rows(ctx: &Context, target: u32, m: usize, work_groups: usize, bm: usize) -> usize {
    let target = match target {
        0 if ctx.is_cpu() => 4 * std::thread::available_parallelism().map_or(4, |n| n.get()),
        0 => 2048,
        t => t as usize,
    };
    let tiles = m.div_ceil(bm);
    let want = target.div_ceil(work_groups.max(1)).clamp(1, (tiles / 2).max(1));
    m.div_ceil(want).div_ceil(bm) * bm
}

/// What a kernel family needs to record one retrieval step.
pub(crate) struct StepArgs<'a> {
    /// The kernel configuration of this retrieval.
    pub cfg: &'a KernelConfig,
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

/// Record one step of `method` (resolved: no `auto`, a polynomial with its
/// degree) for `args`: z into `args.z`, the support if asked. The dense
/// methods are recorded by [`dense::Step`] instead, which merges the
/// dynamics bookkeeping into its second pass.
pub(crate) fn encode_step(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    method: &Method,
    args: &StepArgs<'_>,
) -> Result<()> {
    let m = args.bank.len();
    match *method {
        Method::TopK { k } => topk::encode(rec, pass, k, None, args),
        Method::Random { k, seed } => topk::encode(rec, pass, k, Some(seed), args),
        Method::Window { width } => window::encode(rec, pass, args, width.unwrap_or_else(|| default_window(m))),
        Method::Sparsemax => entmax::encode(rec, pass, args, false),
        Method::Entmax15 => entmax::encode(rec, pass, args, true),
        Method::Poly { .. } | Method::Linear | Method::Prf { .. } => {
            let key = method.feature_key(args.beta, args.bank.dim()).ok_or_else(|| {
                Error::internal(format!("{} reached the kernels without its parameters resolved", method.name()))
            })?;
            feature::encode_step(rec, pass, key, args)
        }
        Method::Dense | Method::DenseNaive | Method::Auto { .. } => Err(Error::internal(format!(
            "{} is not recorded through encode_step (dense runs its own passes; auto is resolved first)",
            method.name()
        ))),
    }
}
