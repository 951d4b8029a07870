//! Kernel configurations: the shape each kernel family runs with on a given
//! device. One WGSL source per kernel is shaped by override constants
//! (workgroup size, queries per workgroup, memories per tile, register tile
//! per thread, dimensions per barrier, subgroup reductions, prefetch, fixed
//! d and dv); a [`KernelConfig`] holds one choice per family, the split
//! target and the name it is reported under.
//!
//! Where a configuration comes from:
//! - [`KernelConfig::legacy`]: the kernels as they were before they were
//!   shaped for GPUs (`shaders/*_legacy.wgsl`), kept so that every speed-up
//!   is measured against them in one run (`bench --config legacy`);
//! - [`KernelConfig::defaults`]: a table by vendor and device type, for a
//!   device that has not been tuned;
//! - the tuner (`Context::tune`, `hopfield-gpu tune`), which checks every
//!   candidate of [`candidates`] against the f64 reference, times the
//!   survivors and caches the winner per device ([`cache`]).
//!
//! Each family's kernel is an enum with one variant per implementation
//! strategy, so a cooperative-matrix (tensor-core) dense kernel is one more
//! variant of [`DenseKernel`] with its own tile struct, enumerated and
//! pruned by the same [`DeviceCaps`] (which already records whether the
//! adapter reports cooperative matrices) and timed by the same tuner.
//!
//! Nothing here touches a device: the caps are plain data read off the
//! adapter by the context.

use serde::{Deserialize, Serialize};

pub mod cache;

/// What the device offers that a configuration depends on, read off the
/// adapter when the context is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceCaps {
    /// PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel, 0x106b Apple, 0x10005 Mesa).
    pub vendor: u32,
    /// "DiscreteGpu", "IntegratedGpu", "VirtualGpu", "Cpu" or "Other".
    pub device_type: String,
    /// Workgroup memory in bytes.
    pub workgroup_bytes: u32,
    /// Invocations per workgroup.
    pub invocations: u32,
    /// Largest workgroup size along x.
    pub workgroup_size_x: u32,
    /// Whether subgroup operations are enabled on the device (`Features::SUBGROUP`).
    pub subgroups: bool,
    /// Smallest and largest subgroup size the adapter reports.
    pub subgroup_min: u32,
    /// Largest subgroup size.
    pub subgroup_max: u32,
    /// Whether f16 in shaders is enabled on the device (`Features::SHADER_F16`).
    pub shader_f16: bool,
    /// Whether the adapter reports cooperative matrices
    /// (`Features::EXPERIMENTAL_COOPERATIVE_MATRIX`); no kernel uses them yet.
    pub cooperative_matrix: bool,
}

impl DeviceCaps {
    /// Whether this is a CPU implementation (lavapipe, SwiftShader, WARP).
    pub fn is_cpu(&self) -> bool {
        self.device_type == "Cpu"
    }
}

/// One configuration of every kernel family.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelConfig {
    /// The name reports use: "legacy", "default", "tuned", or the caller's.
    pub name: String,
    /// Dense pass 1 for more queries than the few-query kernel serves.
    pub dense: DenseKernel,
    /// Dense pass 1 for a few queries against many memories.
    pub decode: DecodeKernel,
    /// Top-K and random-mask selection.
    pub topk: TopkKernel,
    /// Workgroups a pass aims for when it cuts the memories into splits
    /// (wgpu does not expose the number of compute units); 0: the device's
    /// default (2048 on GPUs, 4 per CPU thread on CPU devices).
    pub split_target: u32,
    /// Fix d and dv as override constants (constant trip counts), at the
    /// cost of one pipeline per bank shape.
    pub fixed_dims: bool,
}

/// Dense pass 1 (more queries than the few-query kernel serves).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DenseKernel {
    /// `shaders/dense_legacy.wgsl` and its merge, as before issue 9.
    Legacy,
    /// `shaders/dense.wgsl` with this tile.
    Tiled(DenseTile),
}

/// Dense pass 1 for a few queries.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DecodeKernel {
    /// `shaders/dense_decode_legacy.wgsl` (one workgroup per query and split, L <= 4).
    Legacy,
    /// `shaders/dense_decode.wgsl` with this tile.
    Tiled(DecodeTile),
}

/// Top-K and random-mask selection.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TopkKernel {
    /// `shaders/topk_legacy.wgsl` (heaps of <= 64, rounds of 64 for larger K).
    Legacy,
    /// `shaders/topk.wgsl` (threshold, then collect) with this tile.
    Threshold(TopkTile),
}

/// Shape of `shaders/dense.wgsl`: `threads` as `queries / 4` rows of
/// `threads / (queries / 4)` lanes; each thread a 4 x `mems` score tile and
/// a 4 x 4 `col4s` output tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenseTile {
    /// Threads per workgroup (`WG`).
    pub threads: u32,
    /// Queries per workgroup (`BQ`), a multiple of 4.
    pub queries: u32,
    /// Memories per thread and tile (`RM`, <= 8): the tile is lanes x mems.
    pub mems: u32,
    /// Output vec4 columns per thread and block (`RC`, <= 4).
    pub col4s: u32,
    /// Dimensions staged per barrier (`DK`), a multiple of 4.
    pub dims: u32,
    /// Row max and sums by subgroup shuffles instead of workgroup memory.
    pub subgroups: bool,
    /// Load the next key chunk before computing on the current one.
    pub prefetch: bool,
}

/// Shape of `shaders/dense_decode.wgsl`: one memory per thread and tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeTile {
    /// Threads per workgroup = memories per tile (`WG`), a power of two.
    pub threads: u32,
    /// Most queries it serves (4, 8 or 16); a batch of L <= this runs the
    /// smallest of 4, 8, 16 that holds L.
    pub max_queries: u32,
    /// Dimensions staged per barrier (`DK`), a multiple of 4.
    pub dims: u32,
    /// Tile maxima by subgroup shuffles (groups of the device's smallest subgroup).
    pub subgroups: bool,
}

/// Shape of `shaders/topk.wgsl` (scoring as in [`DenseTile`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopkTile {
    /// Threads per workgroup (`WG`).
    pub threads: u32,
    /// Queries per workgroup (`BQ`), a multiple of 4.
    pub queries: u32,
    /// Memories per thread and tile (`RM`, <= 8).
    pub mems: u32,
    /// Dimensions staged per barrier (`DK`), a multiple of 4.
    pub dims: u32,
    /// Load the next key chunk before computing on the current one.
    pub prefetch: bool,
}

/// Most registers the kernels keep per thread in their fixed-size private
/// arrays (shaders/shared/score_tile.wgsl `pf`, dense.wgsl `s`, `o`).
const MAX_PREFETCH: u32 = 16;
const MAX_MEMS: u32 = 8;
const MAX_COL4S: u32 = 4;

/// Row stride in vec4s of a staged tile of `dims` dimensions, as the
/// shaders' KS4: odd where `pad` (GPUs, against bank conflicts), else none.
pub fn ks4(dims: u32, pad: bool) -> u32 {
    let dk4 = dims / 4;
    if pad {
        dk4 + 1 - dk4 % 2
    } else {
        dk4
    }
}

impl DenseTile {
    /// Lanes per row (`TM`).
    pub fn lanes(&self) -> u32 {
        self.threads / (self.queries / 4).max(1)
    }

    /// Memories per tile (`BM`).
    pub fn tile_mems(&self) -> u32 {
        self.lanes() * self.mems
    }

    /// Output vec4 columns per block (`DVB4`).
    pub fn block_col4s(&self) -> u32 {
        self.lanes() * self.col4s
    }

    /// Workgroup memory the kernel declares with `dims` dimensions per
    /// chunk (rows padded where `pad`): qs + kv + ps.
    pub fn workgroup_bytes(&self, dims: u32, pad: bool) -> u32 {
        let bm = self.tile_mems();
        let kv = (bm * ks4(dims, pad)).max(bm * self.block_col4s());
        16 * (self.queries * ks4(dims, pad) + kv + bm * self.queries / 4)
    }

    /// Why this tile cannot run on `caps`, if it cannot.
    pub fn check(&self, caps: &DeviceCaps) -> Result<(), String> {
        let rows = self.queries / 4;
        if self.queries == 0 || !self.queries.is_multiple_of(4) {
            return Err(format!("queries = {} is not a positive multiple of 4", self.queries));
        }
        if self.threads == 0 || !self.threads.is_multiple_of(rows) || !self.lanes().is_power_of_two() {
            return Err(format!("{} threads do not make {rows} rows of a power-of-two lane count", self.threads));
        }
        if !(1..=MAX_MEMS).contains(&self.mems) || !(1..=MAX_COL4S).contains(&self.col4s) {
            return Err(format!(
                "register tile 4 x {} / 4 x {} outside 4 x 1..8 / 4 x 4..16",
                self.mems,
                4 * self.col4s
            ));
        }
        check_dims(self.dims, self.tile_mems(), self.threads)?;
        check_threads(self.threads, caps)?;
        if self.subgroups {
            check_subgroups(self.lanes(), caps)?;
        }
        check_memory(self.workgroup_bytes(self.dims, !caps.is_cpu()), caps)
    }
}

impl DecodeTile {
    /// Workgroup memory the kernel declares for `lq` queries: qs + kv + ws + red.
    pub fn workgroup_bytes(&self, dims: u32, lq: u32, pad: bool) -> u32 {
        16 * (lq * ks4(dims, pad) + self.threads * ks4(dims, pad) + 2 * self.threads * lq / 4)
    }

    /// Why this tile cannot run on `caps`, if it cannot.
    pub fn check(&self, caps: &DeviceCaps) -> Result<(), String> {
        if !self.threads.is_power_of_two() || self.threads < 16 {
            return Err(format!("{} threads is not a power of two >= 16", self.threads));
        }
        if ![4, 8, 16].contains(&self.max_queries) {
            return Err(format!("max_queries = {} is not 4, 8 or 16", self.max_queries));
        }
        if self.dims == 0 || !self.dims.is_multiple_of(4) || self.dims / 4 > self.threads {
            return Err(format!("dims = {} is not a positive multiple of 4 up to 4 threads", self.dims));
        }
        check_threads(self.threads, caps)?;
        if self.subgroups {
            check_subgroups(4, caps)?;
            if caps.subgroup_min > self.threads {
                return Err(format!("subgroups of {} exceed {} threads", caps.subgroup_min, self.threads));
            }
        }
        check_memory(self.workgroup_bytes(self.dims, self.max_queries, !caps.is_cpu()), caps)
    }
}

impl TopkTile {
    /// Lanes per row (`TM`).
    pub fn lanes(&self) -> u32 {
        self.threads / (self.queries / 4).max(1)
    }

    /// Memories per tile (`BM`).
    pub fn tile_mems(&self) -> u32 {
        self.lanes() * self.mems
    }

    /// Workgroup memory the kernel declares: qs + kv, the per-query
    /// counters, thresholds and list of full buffers, and the select state.
    pub fn workgroup_bytes(&self, dims: u32, pad: bool) -> u32 {
        16 * (self.queries + self.tile_mems()) * ks4(dims, pad) + 16 * self.queries + 16 * 4 + 16 + 16
    }

    /// Why this tile cannot run on `caps`, if it cannot.
    pub fn check(&self, caps: &DeviceCaps) -> Result<(), String> {
        let as_dense = DenseTile {
            threads: self.threads,
            queries: self.queries,
            mems: self.mems,
            col4s: 1,
            dims: self.dims,
            subgroups: false,
            prefetch: self.prefetch,
        };
        as_dense.check(&DeviceCaps { workgroup_bytes: u32::MAX, ..caps.clone() })?;
        if self.threads < 16 {
            return Err("top-K needs at least 16 threads (its histogram)".into());
        }
        check_memory(self.workgroup_bytes(self.dims, !caps.is_cpu()), caps)
    }
}

fn check_dims(dims: u32, tile_mems: u32, threads: u32) -> Result<(), String> {
    if dims == 0 || !dims.is_multiple_of(4) {
        return Err(format!("dims = {dims} is not a positive multiple of 4"));
    }
    let per_thread = (tile_mems * dims / 4).div_ceil(threads);
    if per_thread > MAX_PREFETCH {
        return Err(format!("{per_thread} key vec4s per thread and chunk exceed {MAX_PREFETCH}"));
    }
    Ok(())
}

fn check_threads(threads: u32, caps: &DeviceCaps) -> Result<(), String> {
    if threads > caps.invocations || threads > caps.workgroup_size_x {
        return Err(format!(
            "{threads} threads exceed the device's {} invocations / {} along x",
            caps.invocations, caps.workgroup_size_x
        ));
    }
    Ok(())
}

fn check_subgroups(lanes: u32, caps: &DeviceCaps) -> Result<(), String> {
    if !caps.subgroups {
        return Err("the device has no subgroup operations".into());
    }
    if caps.subgroup_min < 8 || caps.subgroup_min < lanes {
        return Err(format!(
            "subgroups of {} (at least) cannot hold rows of {lanes} lanes (or are below 8)",
            caps.subgroup_min
        ));
    }
    Ok(())
}

fn check_memory(bytes: u32, caps: &DeviceCaps) -> Result<(), String> {
    if bytes > caps.workgroup_bytes {
        return Err(format!("{bytes} bytes of workgroup memory exceed the device's {}", caps.workgroup_bytes));
    }
    Ok(())
}

impl DenseKernel {
    /// Why this kernel cannot run on `caps`, if it cannot.
    pub fn check(&self, caps: &DeviceCaps) -> Result<(), String> {
        match self {
            // The legacy tile declares 25,664 bytes of workgroup memory.
            DenseKernel::Legacy => check_memory(25_664, caps),
            DenseKernel::Tiled(t) => t.check(caps),
        }
    }
}

impl DecodeKernel {
    /// Why this kernel cannot run on `caps`, if it cannot.
    pub fn check(&self, caps: &DeviceCaps) -> Result<(), String> {
        match self {
            DecodeKernel::Legacy => Ok(()),
            DecodeKernel::Tiled(t) => t.check(caps),
        }
    }
}

impl TopkKernel {
    /// Why this kernel cannot run on `caps`, if it cannot.
    pub fn check(&self, caps: &DeviceCaps) -> Result<(), String> {
        match self {
            TopkKernel::Legacy => Ok(()),
            TopkKernel::Threshold(t) => t.check(caps),
        }
    }
}

impl std::fmt::Display for DenseKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DenseKernel::Legacy => write!(f, "legacy"),
            DenseKernel::Tiled(t) => write!(
                f,
                "wg{} q{}xm{} r4x{}/4x{} dk{}{}{}",
                t.threads,
                t.queries,
                t.tile_mems(),
                t.mems,
                4 * t.col4s,
                t.dims,
                if t.subgroups { " sg" } else { "" },
                if t.prefetch { " pf" } else { "" }
            ),
        }
    }
}

impl std::fmt::Display for DecodeKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeKernel::Legacy => write!(f, "legacy"),
            DecodeKernel::Tiled(t) => {
                write!(f, "wg{} lq<={} dk{}{}", t.threads, t.max_queries, t.dims, if t.subgroups { " sg" } else { "" })
            }
        }
    }
}

impl std::fmt::Display for TopkKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopkKernel::Legacy => write!(f, "legacy"),
            TopkKernel::Threshold(t) => write!(
                f,
                "wg{} q{}xm{} r4x{} dk{}{}",
                t.threads,
                t.queries,
                t.tile_mems(),
                t.mems,
                t.dims,
                if t.prefetch { " pf" } else { "" }
            ),
        }
    }
}

impl std::fmt::Display for KernelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: dense [{}], decode [{}], topk [{}], splits {}{}",
            self.name,
            self.dense,
            self.decode,
            self.topk,
            if self.split_target == 0 { "default".to_string() } else { self.split_target.to_string() },
            if self.fixed_dims { ", fixed d" } else { "" }
        )
    }
}

impl KernelConfig {
    /// The kernels as they were before they were shaped for GPUs.
    pub fn legacy() -> Self {
        KernelConfig {
            name: "legacy".into(),
            dense: DenseKernel::Legacy,
            decode: DecodeKernel::Legacy,
            topk: TopkKernel::Legacy,
            split_target: 0,
            fixed_dims: false,
        }
    }

    /// The configuration for a device nobody has tuned: a table by vendor
    /// and device type, each entry shrunk until it fits the device (fewer
    /// queries per workgroup, then no subgroups), the legacy kernel where
    /// nothing fits.
    ///
    /// - discrete GPUs (NVIDIA, AMD, others): the FlashAttention-2 recipe,
    ///   128 threads, 64 queries x 64 memories, 4 x 8 register tiles for
    ///   scores and output, 32 dimensions per barrier (42 KiB of workgroup
    ///   memory: within NVIDIA's 48 KiB; 32 KiB devices get 32 queries),
    ///   subgroup reductions where subgroups hold the 8 lanes of a row,
    ///   prefetch; d and dv fixed per bank (pipelines compile fast there);
    /// - integrated GPUs: 64 threads, 32 queries x 64 memories;
    /// - CPU devices (lavapipe): the shape measured fastest on lavapipe
    ///   (BENCHMARKS.md), without prefetch (registers are memory there) and
    ///   without fixed d (each pipeline costs seconds to compile).
    pub fn defaults(caps: &DeviceCaps) -> Self {
        let sg = caps.subgroups && caps.subgroup_min >= 8;
        let (dense, decode, topk, fixed_dims) = match caps.device_type.as_str() {
            "Cpu" => (
                DenseTile { threads: 64, queries: 32, mems: 8, col4s: 2, dims: 32, subgroups: sg, prefetch: false },
                DecodeTile { threads: 64, max_queries: 16, dims: 32, subgroups: sg },
                TopkTile { threads: 64, queries: 32, mems: 8, dims: 32, prefetch: false },
                false,
            ),
            "IntegratedGpu" => (
                DenseTile { threads: 64, queries: 32, mems: 8, col4s: 2, dims: 32, subgroups: sg, prefetch: true },
                DecodeTile { threads: 128, max_queries: 16, dims: 32, subgroups: sg },
                TopkTile { threads: 64, queries: 32, mems: 8, dims: 32, prefetch: true },
                true,
            ),
            _ => (
                DenseTile { threads: 128, queries: 64, mems: 8, col4s: 2, dims: 32, subgroups: sg, prefetch: true },
                DecodeTile { threads: 128, max_queries: 16, dims: 32, subgroups: sg },
                TopkTile { threads: 128, queries: 64, mems: 8, dims: 32, prefetch: true },
                true,
            ),
        };
        KernelConfig {
            name: "default".into(),
            dense: fit_dense(dense, caps),
            decode: fit_decode(decode, caps),
            topk: fit_topk(topk, caps),
            split_target: 0,
            fixed_dims,
        }
    }

    /// Why this configuration cannot run on `caps`, if it cannot.
    pub fn check(&self, caps: &DeviceCaps) -> Result<(), String> {
        self.dense.check(caps).map_err(|e| format!("dense: {e}"))?;
        self.decode.check(caps).map_err(|e| format!("decode: {e}"))?;
        self.topk.check(caps).map_err(|e| format!("topk: {e}"))
    }
}

/// `tile` with fewer queries per workgroup (threads kept in proportion),
/// then without subgroups, until it fits; else the legacy kernel.
fn fit_dense(mut tile: DenseTile, caps: &DeviceCaps) -> DenseKernel {
    for subgroups in [tile.subgroups, false] {
        tile.subgroups = subgroups;
        let mut t = tile;
        while t.queries >= 16 {
            if t.check(caps).is_ok() {
                return DenseKernel::Tiled(t);
            }
            t.queries /= 2;
            t.threads /= 2;
        }
    }
    DenseKernel::Legacy
}

fn fit_decode(mut tile: DecodeTile, caps: &DeviceCaps) -> DecodeKernel {
    for subgroups in [tile.subgroups, false] {
        tile.subgroups = subgroups;
        let mut t = tile;
        while t.threads >= 16 {
            if t.check(caps).is_ok() {
                return DecodeKernel::Tiled(t);
            }
            t.threads /= 2;
        }
    }
    DecodeKernel::Legacy
}

fn fit_topk(tile: TopkTile, caps: &DeviceCaps) -> TopkKernel {
    let mut t = tile;
    while t.queries >= 16 {
        if t.check(caps).is_ok() {
            return TopkKernel::Threshold(t);
        }
        t.queries /= 2;
        t.threads /= 2;
    }
    TopkKernel::Legacy
}

/// The tuner's candidates per family, at most a dozen each, pruned by
/// `caps` (workgroup memory, invocations, subgroup sizes and features):
/// (dense, decode, topk, and why each pruned one was dropped). The legacy
/// kernels are candidates too, so a tuned device is never slower than them
/// on the tuner's shapes.
pub fn candidates(caps: &DeviceCaps) -> Candidates {
    // Subgroup reductions wherever the device has them; the shared-memory
    // path of the first shape too, so the tuner sees what subgroups buy.
    let sg = caps.subgroups;
    let cpu = caps.is_cpu();
    let mut dense = vec![DenseKernel::Legacy];
    for (i, (threads, queries, mems, col4s, dims)) in [
        (128, 64, 8, 2, 32), // FlashAttention-2: 64 x 64, 4 x 8 register tiles
        (64, 32, 8, 2, 32),
        (64, 32, 8, 2, 64),
        (64, 16, 8, 2, 32),
        (256, 64, 4, 1, 32),
        (128, 64, 4, 1, 16),
    ]
    .into_iter()
    .enumerate()
    {
        let prefetch = !cpu && queries == 64;
        let tile = DenseTile { threads, queries, mems, col4s, dims, subgroups: sg, prefetch };
        dense.push(DenseKernel::Tiled(tile));
        if i == 0 && sg {
            dense.push(DenseKernel::Tiled(DenseTile { subgroups: false, ..tile }));
        }
        if i == 0 && prefetch {
            dense.push(DenseKernel::Tiled(DenseTile { prefetch: false, ..tile }));
        }
    }
    let mut decode = vec![DecodeKernel::Legacy];
    for (i, (threads, max_queries, dims)) in
        [(64, 16, 32), (64, 16, 64), (128, 8, 32), (128, 16, 32), (256, 8, 16), (256, 16, 16)].into_iter().enumerate()
    {
        let tile = DecodeTile { threads, max_queries, dims, subgroups: sg };
        decode.push(DecodeKernel::Tiled(tile));
        if i == 0 && sg {
            decode.push(DecodeKernel::Tiled(DecodeTile { subgroups: false, ..tile }));
        }
    }
    let mut topk = vec![TopkKernel::Legacy];
    for (threads, queries, mems, dims, prefetch) in [
        (64, 16, 8, 32, false),
        (64, 32, 8, 32, false),
        (64, 32, 8, 64, false),
        (128, 64, 8, 32, false),
        (128, 64, 8, 32, true),
        (256, 64, 4, 32, false),
    ] {
        topk.push(TopkKernel::Threshold(TopkTile { threads, queries, mems, dims, prefetch }));
    }
    let mut pruned = Vec::new();
    let keep = |check: Result<(), String>, what: String, pruned: &mut Vec<(String, String)>| match check {
        Ok(()) => true,
        Err(why) => {
            pruned.push((what, why));
            false
        }
    };
    dense.retain(|k| keep(k.check(caps), format!("dense [{k}]"), &mut pruned));
    decode.retain(|k| keep(k.check(caps), format!("decode [{k}]"), &mut pruned));
    topk.retain(|k| keep(k.check(caps), format!("topk [{k}]"), &mut pruned));
    Candidates { dense, decode, topk, pruned }
}

/// What [`candidates`] returns.
#[derive(Clone, Debug)]
pub struct Candidates {
    /// Dense kernels that fit the device.
    pub dense: Vec<DenseKernel>,
    /// Few-query kernels that fit.
    pub decode: Vec<DecodeKernel>,
    /// Top-K kernels that fit.
    pub topk: Vec<TopkKernel>,
    /// (candidate, why it does not fit) for the others.
    pub pruned: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::testing::{lavapipe, nvidia};
    use super::*;

    #[test]
    fn the_flash_attention_default_fits_nvidia_and_shrinks_for_32_kib() {
        let DenseKernel::Tiled(t) = KernelConfig::defaults(&nvidia()).dense else { panic!("a tiled default") };
        assert_eq!((t.threads, t.queries, t.tile_mems(), t.mems, 4 * t.col4s), (128, 64, 64, 8, 8));
        assert!(t.subgroups && t.prefetch);
        assert!(t.workgroup_bytes(t.dims, true) <= 48 << 10);
        // 32 KiB (DX12, lavapipe): the same recipe with 32 queries.
        let dx12 = DeviceCaps { workgroup_bytes: 32 << 10, ..nvidia() };
        let DenseKernel::Tiled(t) = KernelConfig::defaults(&dx12).dense else { panic!("a tiled default") };
        assert_eq!((t.threads, t.queries), (64, 32));
        // No subgroups: shared-memory reductions.
        let plain = DeviceCaps { subgroups: false, ..nvidia() };
        let DenseKernel::Tiled(t) = KernelConfig::defaults(&plain).dense else { panic!("a tiled default") };
        assert!(!t.subgroups);
        // Subgroups smaller than a row's 8 lanes (WARP's 4): no shuffles.
        let warp = DeviceCaps { subgroup_min: 4, ..nvidia() };
        let DenseKernel::Tiled(t) = KernelConfig::defaults(&warp).dense else { panic!("a tiled default") };
        assert!(!t.subgroups);
        // 16 KiB: nothing tiled fits but the smallest shapes, or legacy.
        let tiny = DeviceCaps { workgroup_bytes: 8 << 10, ..nvidia() };
        assert_eq!(KernelConfig::defaults(&tiny).dense, DenseKernel::Legacy);
    }

    #[test]
    fn pruning_drops_what_the_device_cannot_run_and_says_why() {
        let all = candidates(&nvidia());
        assert!(all.dense.len() <= 12 && all.decode.len() <= 12 && all.topk.len() <= 12);
        assert!(all.dense.iter().any(|k| matches!(k, DenseKernel::Tiled(t) if t.subgroups)));
        // Without subgroups, no candidate asks for them.
        let plain = candidates(&DeviceCaps { subgroups: false, ..nvidia() });
        assert!(plain.dense.iter().all(|k| !matches!(k, DenseKernel::Tiled(t) if t.subgroups)));
        assert!(plain.decode.iter().all(|k| !matches!(k, DecodeKernel::Tiled(t) if t.subgroups)));
        // 16 KiB of workgroup memory and 64 invocations: the big tiles go, with reasons.
        let small = DeviceCaps { workgroup_bytes: 16 << 10, invocations: 64, ..nvidia() };
        let some = candidates(&small);
        assert!(some.dense.iter().all(|k| k.check(&small).is_ok()));
        assert!(some.dense.len() < all.dense.len());
        assert!(some.pruned.iter().any(|(_, why)| why.contains("workgroup memory")), "{:?}", some.pruned);
        assert!(some.pruned.iter().any(|(_, why)| why.contains("invocations")), "{:?}", some.pruned);
        // Every survivor fits, every pruned one does not.
        for k in &some.topk {
            assert!(k.check(&small).is_ok());
        }
    }

    #[test]
    fn configurations_round_trip_through_json() {
        for cfg in [KernelConfig::legacy(), KernelConfig::defaults(&nvidia()), KernelConfig::defaults(&lavapipe())] {
            let text = serde_json::to_string(&cfg).unwrap();
            assert_eq!(serde_json::from_str::<KernelConfig>(&text).unwrap(), cfg);
        }
    }
}

/// Device capabilities the tests of every kernel family shape their
/// candidates for.
#[cfg(test)]
pub(crate) mod testing {
    use super::DeviceCaps;

    /// lavapipe as wgpu 30 reports it (Mesa 22.3): 32 KiB, subgroups of 8.
    pub(crate) fn lavapipe() -> DeviceCaps {
        DeviceCaps {
            vendor: 0x10005,
            device_type: "Cpu".into(),
            workgroup_bytes: 32 << 10,
            invocations: 1024,
            workgroup_size_x: 1024,
            subgroups: true,
            subgroup_min: 8,
            subgroup_max: 8,
            shader_f16: true,
            cooperative_matrix: false,
        }
    }

    /// An NVIDIA discrete GPU (H100/H200 class): 48 KiB, subgroups of 32.
    pub(crate) fn nvidia() -> DeviceCaps {
        DeviceCaps {
            vendor: 0x10de,
            device_type: "DiscreteGpu".into(),
            workgroup_bytes: 48 << 10,
            subgroup_min: 32,
            subgroup_max: 32,
            ..lavapipe()
        }
    }
}
