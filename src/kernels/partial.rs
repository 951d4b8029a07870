//! Host side of `shaders/partial_gather.wgsl`: the scores and value rows of
//! chosen memories (a shard's top-K list), which the exact merge of shard
//! partials needs on the host (`crate::partial`).

use bytemuck::{Pod, Zeroable};

use super::{entire, grid, Kernel, Recorder};
use crate::bank::MemoryBank;
use crate::error::{Error, Resource, Result};
use crate::shaders::Shader;

/// Keep in sync with `Params` in shaders/partial_gather.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct GatherParams {
    pub l: u32,
    pub width: u32,
    pub d: u32,
    pub dv: u32,
    pub row0: u32,
    pub rows: u32,
    pub beta: f32,
    pub groups_x: u32,
}

/// Buffers of one gather: `queries` `[l, d]`, `sel` `[l, width]` (i32 bank
/// indices, -1 for padding), outputs `scores` `[l, width]` and `vals`
/// `[l, width, dv]`.
pub(crate) struct GatherArgs<'a> {
    pub queries: &'a wgpu::Buffer,
    pub sel: &'a wgpu::Buffer,
    pub scores: &'a wgpu::Buffer,
    pub vals: &'a wgpu::Buffer,
    pub l: usize,
    pub width: usize,
    pub beta: f32,
}

/// Loop iterations of one gather invocation over `d` and `dv` (each loop
/// with one more for its exit): the caller checks them against the
/// driver's budget before it records anything.
pub(crate) fn check_loops(loop_budget: Option<usize>, d: usize, dv: usize) -> Result<()> {
    let need = d + dv + 2;
    match loop_budget {
        Some(budget) if need > budget => Err(Error::limit(
            format!("gathering a shard's top-K rows at d = {d}, dv = {dv}"),
            Resource::LoopIterations,
            need,
            budget as u64,
        )),
        _ => Ok(()),
    }
}

/// Record the gather, one dispatch per segment of `bank`.
pub(crate) fn encode_gather(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    bank: &MemoryBank,
    args: &GatherArgs<'_>,
) -> Result<()> {
    let (d, dv) = (bank.dim(), bank.value_dim());
    check_loops(rec.ctx.loop_budget(), d, dv)?;
    let kernel = Kernel::new(rec.ctx, Shader::PartialGather, "main", &[])?;
    let (gx, gy) = grid((args.l * args.width).div_ceil(64));
    for seg in &bank.segments {
        let params = GatherParams {
            l: args.l as u32,
            width: args.width as u32,
            d: d as u32,
            dv: dv as u32,
            row0: seg.row0 as u32,
            rows: seg.rows as u32,
            beta: args.beta,
            groups_x: gx,
        };
        let bindings = [
            (1, entire(args.queries)),
            (2, seg.key_binding(d)),
            (3, seg.value_binding(dv)),
            (4, entire(args.sel)),
            (5, entire(args.scores)),
            (6, entire(args.vals)),
        ];
        rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaders::wgsl_struct_size;

    #[test]
    fn structs_match_the_wgsl_layouts() {
        assert_eq!(wgsl_struct_size(Shader::PartialGather, "Params"), size_of::<GatherParams>());
    }

    #[test]
    fn loops_beyond_the_budget_are_a_device_limit() {
        assert!(check_loops(None, 1 << 20, 1 << 20).is_ok());
        assert!(check_loops(Some(50_000), 64, 64).is_ok());
        match check_loops(Some(50_000), 40_000, 10_000) {
            Err(Error::DeviceLimit { resource: Resource::LoopIterations, need: Some(50_002), .. }) => {}
            other => panic!("expected a loop-budget DeviceLimit, got {other:?}"),
        }
    }
}
