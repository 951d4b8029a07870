//! Host side of `shaders/separation.wgsl`: the pairwise sweep behind the
//! theory quantities (reference: `src/cpu/separation.rs`; the driver that
//! submits it is `src/retrieve/separation.rs`).
//!
//! The sweep is O(rows M d) and never stores a rows x M matrix: each
//! workgroup reduces its 16 rows against one split of a memory segment in
//! registers, one [`Summary`] per (row, split) goes to a scratch buffer,
//! and `merge` combines the splits. The splits are sized here so that no
//! invocation runs more loop iterations than the driver allows
//! ([`split_cols`]): llvmpipe silently leaves a loop after 65,535.

use bytemuck::{Pod, Zeroable};

use super::{entire, grid, Kernel, Recorder};
use crate::bank::Segment;
use crate::error::Result;
use crate::shaders::Shader;

/// Keep in sync with `Params` in shaders/separation.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct SeparationParams {
    pub rows: u32,
    pub row0: u32,
    pub d: u32,
    pub cols: u32,
    pub col0: u32,
    pub split_cols: u32,
    pub split0: u32,
    pub n_splits: u32,
    pub exclude_self: u32,
    pub groups_x: u32,
    pub row_off: u32,
    pub _pad: u32,
}

/// One row's summary over some memories. Keep in sync with `Summary` in
/// shaders/separation.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub(crate) struct Summary {
    pub near_d2: f32,
    pub near: u32,
    pub best_t: f32,
    pub best: u32,
    pub second_t: f32,
    pub second: u32,
    pub dups: u32,
    pub _pad: u32,
}

/// The kernel's "no memory" index.
pub(crate) const NONE: u32 = u32::MAX;

/// Rows per workgroup and memories per tile (fixed by the 4 x 4 register
/// tiles of 64 threads in the shader).
pub(crate) const BR: usize = 16;
/// Memories per tile.
pub(crate) const BC: usize = 64;
/// Dimensions staged per barrier: the override `DK` of the shader.
pub(crate) const DK: usize = 64;

/// The override constants of separation.wgsl.
pub(crate) fn constants() -> [(&'static str, f64); 1] {
    [("DK", DK as f64)]
}

/// Loop iterations one `main` invocation runs per 64-memory tile at
/// dimension d: the tile loop, and per chunk of DK dimensions its loop,
/// (when d > DK) restaging the rows, staging the keys (kmax per thread) and
/// the kmax products, each loop with its exit.
fn tile_cost(d: usize) -> usize {
    let chunks = d.div_ceil(DK);
    let restage = if chunks > 1 { BR * DK / 64 + 1 } else { 0 };
    1 + chunks * (1 + restage + 2 * (DK + 1))
}

/// Iterations outside the tile loop: staging the rows once, handing the four
/// rows' summaries over and merging the 16 lanes.
fn fixed_cost() -> usize {
    (BR * DK / 64 + 1) + 5 + 17
}

/// Memories per split: a multiple of [`BC`], at most `want` (the caller's
/// choice for parallelism), and small enough that one invocation stays
/// inside `budget` loop iterations. `None` when not even one tile fits (d
/// too large for the driver).
pub(crate) fn split_cols(budget: Option<usize>, d: usize, want: usize) -> Option<usize> {
    let want = want.max(1).div_ceil(BC) * BC;
    match budget {
        None => Some(want),
        Some(b) => {
            let tiles = b.checked_sub(fixed_cost())? / tile_cost(d);
            (tiles > 0).then(|| want.min(tiles * BC))
        }
    }
}

/// Record `norms[j] = |xi_j|^2` for the memories of `seg`.
pub(crate) fn encode_norms(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    seg: &Segment,
    d: usize,
    norms: &wgpu::Buffer,
) -> Result<()> {
    let kernel = Kernel::new(rec.ctx, Shader::Separation, "norms_main", &constants())?;
    let (gx, gy) = grid(seg.rows.div_ceil(64));
    let params = SeparationParams { d: d as u32, cols: seg.rows as u32, groups_x: gx, ..Default::default() };
    // Each entry point's layout holds only the bindings it uses.
    let bindings = [(2, seg.key_binding(d)), (3, entire(norms))];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

/// The rows of one sweep: a buffer binding and where they sit.
pub(crate) struct Rows<'a> {
    /// The bound rows (a bank segment, or a batch of queries).
    pub binding: wgpu::BindingResource<'a>,
    /// Index of the first swept row in the binding.
    pub offset: usize,
    /// Rows swept.
    pub count: usize,
    /// Global index of the first swept row (self-exclusion).
    pub row0: usize,
    /// Skip the memory with the row's own global index.
    pub exclude_self: bool,
}

/// Record the sweep of `rows` against the memories of `seg`, in splits of
/// `split_cols`, into `part` (`[rows.count, n_splits]` summaries) at
/// split columns `split0..`.
#[expect(clippy::too_many_arguments, reason = "one sweep's operands and its place in the partials")]
pub(crate) fn encode_sweep(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    rows: &Rows<'_>,
    seg: &Segment,
    norms: &wgpu::Buffer,
    d: usize,
    split_cols: usize,
    split0: usize,
    n_splits: usize,
    part: &wgpu::Buffer,
) -> Result<()> {
    let kernel = Kernel::new(rec.ctx, Shader::Separation, "main", &constants())?;
    let splits = seg.rows.div_ceil(split_cols);
    let params = SeparationParams {
        rows: rows.count as u32,
        row0: rows.row0 as u32,
        d: d as u32,
        cols: seg.rows as u32,
        col0: seg.row0 as u32,
        split_cols: split_cols as u32,
        split0: split0 as u32,
        n_splits: n_splits as u32,
        exclude_self: u32::from(rows.exclude_self),
        row_off: rows.offset as u32,
        ..Default::default()
    };
    let bindings = [(1, rows.binding.clone()), (2, seg.key_binding(d)), (3, entire(norms)), (4, entire(part))];
    rec.dispatch(pass, &kernel, &params, &bindings, (rows.count.div_ceil(BR) as u32, splits as u32, 1))
}

/// Record the merge of each row's `n_splits` summaries in `part` into `out`
/// (`[rows, 1]`).
pub(crate) fn encode_merge(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    part: &wgpu::Buffer,
    rows: usize,
    n_splits: usize,
    out: &wgpu::Buffer,
) -> Result<()> {
    let kernel = Kernel::new(rec.ctx, Shader::Separation, "merge", &constants())?;
    let (gx, gy) = grid(rows.div_ceil(64));
    let params = SeparationParams { rows: rows as u32, n_splits: n_splits as u32, groups_x: gx, ..Default::default() };
    let bindings = [(4, entire(part)), (5, entire(out))];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaders::{check_constants, wgsl_struct_size};

    #[test]
    fn structs_match_the_wgsl_layouts() {
        assert_eq!(wgsl_struct_size(Shader::Separation, "Params"), size_of::<SeparationParams>());
        assert_eq!(wgsl_struct_size(Shader::Separation, "Summary"), size_of::<Summary>());
        for entry in ["norms_main", "main", "merge"] {
            check_constants(Shader::Separation, entry, &constants());
        }
    }

    #[test]
    fn splits_respect_the_loop_budget() {
        assert_eq!(split_cols(None, 64, 1000), Some(1024));
        for d in [1, 3, 64, 65, 1024, 3072] {
            let s = split_cols(Some(50_000), d, usize::MAX / 2).unwrap();
            assert!(s.is_multiple_of(BC) && s >= BC, "d {d}: {s}");
            assert!(fixed_cost() + (s / BC) * tile_cost(d) <= 50_000, "d {d}: {s} columns");
        }
        // d = 64: 132 iterations per tile, 378 tiles; d = 1024 needs splits of 21 tiles.
        assert_eq!(split_cols(Some(50_000), 64, usize::MAX / 2), Some(378 * 64));
        assert_eq!(split_cols(Some(50_000), 1024, usize::MAX / 2), Some(21 * 64));
        // A split never exceeds what the caller wants.
        assert_eq!(split_cols(Some(50_000), 64, 100), Some(128));
        // Beyond ~21,000 dimensions not one tile fits.
        assert_eq!(split_cols(Some(50_000), 30_000, 64), None);
    }
}
