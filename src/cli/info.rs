//! `hopfield-gpu info`: every adapter, then the chosen one's limits, the
//! features the kernels care about, and the kernel configuration in use.

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object (the adapters, the chosen device, its limits and features).
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args, device: &Option<String>) -> Result<(), CliError> {
    if args.json {
        let adapters: Vec<String> = hopfield_gpu::list_adapters(None)?
            .iter()
            .map(|a| {
                format!("{} ({:?}, {:?}, driver {} {})", a.name, a.backend, a.device_type, a.driver, a.driver_info)
            })
            .collect();
        let ctx = super::context(device)?;
        let coop: Vec<String> = ctx
            .cooperative_matrix_properties()
            .iter()
            .map(|p| format!("{}x{}x{} {:?} -> {:?}", p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type))
            .collect();
        let out = serde_json::json!({
            "adapters": adapters,
            "device": ctx.report(),
            "caps": ctx.caps(),
            "adapter_features": format!("{:?}", ctx.adapter_features()),
            "cooperative_matrix": coop,
            "config": &*ctx.config(),
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("serialisable"));
        return Ok(());
    }
    println!("adapters:");
    for a in hopfield_gpu::list_adapters(None)? {
        println!("  {} ({:?}, {:?}, driver {} {})", a.name, a.backend, a.device_type, a.driver, a.driver_info);
    }
    let ctx = super::context(device)?;
    let r = ctx.report();
    let limits = ctx.limits();
    let adapter = ctx.adapter_features();
    let has = |f: wgpu::Features| if adapter.contains(f) { "yes" } else { "no" };
    println!("chosen: {} ({}, {})", r.name, r.backend, r.device_type);
    println!("  driver: {}", r.driver);
    println!("  timing: {}", if r.timestamps { "GPU timestamps" } else { "wall clock (no timestamp queries)" });
    println!("  max storage binding: {} MiB", limits.max_storage_buffer_binding_size >> 20);
    println!("  max buffer: {} MiB", limits.max_buffer_size >> 20);
    println!("  workgroup memory: {} KiB", limits.max_compute_workgroup_storage_size >> 10);
    println!("  invocations per workgroup: {}", limits.max_compute_invocations_per_workgroup);
    println!("  workgroups per dimension: {}", limits.max_compute_workgroups_per_dimension);
    println!("  storage buffers per stage: {}", limits.max_storage_buffers_per_shader_stage);
    println!(
        "  subgroups: {} (sizes {} to {}){}",
        has(wgpu::Features::SUBGROUP),
        r.subgroup_sizes.0,
        r.subgroup_sizes.1,
        if r.subgroups { ", enabled" } else { "" }
    );
    println!("  shader-f16: {}{}", has(wgpu::Features::SHADER_F16), if r.shader_f16 { ", enabled" } else { "" });
    let coop = ctx.cooperative_matrix_properties();
    println!(
        "  cooperative matrices: {}",
        if adapter.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            format!("yes, {} shapes", coop.len())
        } else {
            "no".to_string()
        }
    );
    for p in coop {
        println!(
            "    {}x{}x{} {:?} -> {:?}{}",
            p.m_size,
            p.n_size,
            p.k_size,
            p.ab_type,
            p.cr_type,
            if p.saturating_accumulation { " (saturating)" } else { "" }
        );
    }
    println!("  shader checks: {}", if r.checked_shaders { "on for every kernel" } else { "off for trusted kernels" });
    println!("  kernels: {}", r.config);
    println!("  device features enabled: {:?}", ctx.device().features());
    Ok(())
}
