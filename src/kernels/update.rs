//! Host side of `shaders/update.wgsl`: one dynamics step from a z that
//! another kernel family produced, and the per-query records every family
//! shares ([`QueryInfo`], also written by `shaders/dense_merge.wgsl`).

use bytemuck::{Pod, Zeroable};

use super::{entire, grid, Kernel, Recorder};
use crate::error::Result;
use crate::shaders::Shader;

/// Keep in sync with `Params` in shaders/update.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct UpdateParams {
    pub l: u32,
    pub d: u32,
    pub eps: f32,
    pub groups_x: u32,
}

/// Per-query results of a retrieval. Keep in sync with `QueryInfo` in
/// shaders/shared/query_info.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct QueryInfo {
    pub lse: f32,
    pub energy: f32,
    pub argmax: u32,
    pub steps: u32,
    pub converged: u32,
    pub delta: f32,
    pub max_score: f32,
    pub _pad: u32,
}

/// Record `state <- z` for every query not yet converged; count the queries
/// still moving in `moving`.
#[expect(clippy::too_many_arguments, reason = "the step's buffers and sizes; a struct would only rename them")]
pub(crate) fn encode(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    z: &wgpu::Buffer,
    state: &wgpu::Buffer,
    info: &wgpu::Buffer,
    moving: &wgpu::Buffer,
    l: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    let kernel = Kernel::new(rec.ctx, Shader::Update, "main", &[])?;
    let (gx, gy) = grid(l);
    let params = UpdateParams { l: l as u32, d: d as u32, eps, groups_x: gx };
    let bindings = [(1, entire(z)), (2, entire(state)), (3, entire(info)), (4, entire(moving))];
    rec.dispatch(pass, &kernel, &params, &bindings, (gx, gy, 1))
}

/// Record the copy of each query's energy from `info` into `energies` (`[l]` f32).
pub(crate) fn encode_energies(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    info: &wgpu::Buffer,
    energies: &wgpu::Buffer,
    l: usize,
) -> Result<()> {
    let kernel = Kernel::new(rec.ctx, Shader::Update, "export_energies", &[])?;
    let (gx, gy) = grid(l.div_ceil(64));
    let params = UpdateParams { l: l as u32, d: 0, eps: 0.0, groups_x: gx };
    rec.dispatch(pass, &kernel, &params, &[(3, entire(info)), (5, entire(energies))], (gx, gy, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaders::wgsl_struct_size;

    #[test]
    fn structs_match_the_wgsl_layouts() {
        assert_eq!(wgsl_struct_size(Shader::Update, "Params"), size_of::<UpdateParams>());
        assert_eq!(wgsl_struct_size(Shader::Update, "QueryInfo"), size_of::<QueryInfo>());
        assert_eq!(wgsl_struct_size(Shader::DenseMerge, "QueryInfo"), size_of::<QueryInfo>());
    }
}
