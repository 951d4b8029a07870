//! Host side of `shaders/update.wgsl`: one dynamics step from a z that
//! another kernel family produced.

use bytemuck::{Pod, Zeroable};

use super::dense::MAX_GROUPS;
use super::{bind_group, entire, uniform};
use crate::context::Context;
use crate::error::Result;

/// Keep in sync with `Params` in shaders/update.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct UpdateParams {
    pub l: u32,
    pub d: u32,
    pub eps: f32,
    pub groups_x: u32,
}

/// Record `state <- z` for every query not yet converged.
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    z: &wgpu::Buffer,
    state: &wgpu::Buffer,
    info: &wgpu::Buffer,
    moving: &wgpu::Buffer,
    l: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    let pipeline = ctx.pipeline("update", "main", &[])?;
    let groups_x = l.min(MAX_GROUPS);
    let params = uniform(ctx, &UpdateParams { l: l as u32, d: d as u32, eps, groups_x: groups_x as u32 });
    let group = bind_group(
        ctx,
        &pipeline.get_bind_group_layout(0),
        "update",
        &[(0, entire(&params)), (1, entire(z)), (2, entire(state)), (3, entire(info)), (4, entire(moving))],
    );
    pass.set_pipeline(&pipeline);
    pass.set_bind_group(0, &group, &[]);
    pass.dispatch_workgroups(groups_x as u32, l.div_ceil(groups_x) as u32, 1);
    Ok(())
}
