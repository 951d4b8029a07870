//! `hopfield-gpu info`: every adapter, then the chosen one's limits and features.

use super::CliError;

pub fn run(device: &Option<String>) -> Result<(), CliError> {
    println!("adapters:");
    for a in hopfield_gpu::list_adapters(None)? {
        println!("  {} ({:?}, {:?}, driver {} {})", a.name, a.backend, a.device_type, a.driver, a.driver_info);
    }
    let ctx = super::context(device)?;
    let r = ctx.report();
    let limits = ctx.limits();
    println!("chosen: {} ({}, {})", r.name, r.backend, r.device_type);
    println!("  driver: {}", r.driver);
    println!("  timing: {}", if r.timestamps { "GPU timestamps" } else { "wall clock (no timestamp queries)" });
    println!("  max storage binding: {} MiB", limits.max_storage_buffer_binding_size >> 20);
    println!("  max buffer: {} MiB", limits.max_buffer_size >> 20);
    println!("  workgroup memory: {} KiB", limits.max_compute_workgroup_storage_size >> 10);
    println!("  invocations per workgroup: {}", limits.max_compute_invocations_per_workgroup);
    println!("  workgroups per dimension: {}", limits.max_compute_workgroups_per_dimension);
    println!("  storage buffers per stage: {}", limits.max_storage_buffers_per_shader_stage);
    println!("  features: {:?}", ctx.device().features());
    Ok(())
}
