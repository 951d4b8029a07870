//! An application that owns its GPU device and keeps its data on it: its own
//! compute pass writes the queries, `Context::encode_retrieve` records a
//! retrieval (three dense dynamics steps) into the same command encoder, and
//! the application's next pass reads z, all in one submission. Nothing goes
//! through the host until the application reads its own result at the end.
//!
//! `cargo run --example encode_retrieve` (on lavapipe:
//! `bash tools/with-vulkan.sh cargo run --example encode_retrieve`).
//! tests/api.rs runs this same code and checks it against the CPU reference.

use hopfield_gpu::{Context, MemoryBank, RetrieveOptions};
use wgpu::util::DeviceExt;

/// The application's two kernels: `make_queries` writes each query as a
/// noisy copy of a stored pattern, `score` reads z and writes, per query,
/// its inner product with the pattern it came from.
const APP_SHADER: &str = r#"
struct Sizes { m: u32, l: u32, d: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> n: Sizes;
@group(0) @binding(1) var<storage, read> memories: array<f32>;
@group(0) @binding(2) var<storage, read_write> queries: array<f32>;
@group(0) @binding(3) var<storage, read> z: array<f32>;
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;

fn source(l: u32) -> u32 { return (l * 7u) % n.m; }

@compute @workgroup_size(64)
fn make_queries(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= n.l * n.d) { return; }
    let l = i / n.d;
    let c = i % n.d;
    queries[i] = 0.7 * memories[source(l) * n.d + c] + 0.2 * sin(f32(i));
}

@compute @workgroup_size(64)
fn score(@builtin(global_invocation_id) id: vec3<u32>) {
    let l = id.x;
    if (l >= n.l) { return; }
    var s = 0.0;
    for (var c = 0u; c < n.d; c++) {
        s += z[l * n.d + c] * memories[source(l) * n.d + c];
    }
    scores[l] = s;
}
"#;

/// The shape of the demo.
pub const M: usize = 64;
pub const L: usize = 20;
pub const D: usize = 16;
pub const BETA: f32 = 4.0;
pub const STEPS: u32 = 3;

/// What the application saw, read back at the very end (for printing and
/// for the test's check against the reference).
pub struct Outcome {
    pub memories: Vec<f32>,
    pub queries: Vec<f32>,
    pub z: Vec<f32>,
    pub scores: Vec<f32>,
}

/// The stored patterns: +-1 entries from a small LCG (any data would do).
pub fn memories() -> Vec<f32> {
    let mut s = 12345u32;
    (0..M * D)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            if s >> 31 == 0 {
                1.0
            } else {
                -1.0
            }
        })
        .collect()
}

/// Run the demo on a device the application created.
pub fn run(device: &wgpu::Device, queue: &wgpu::Queue) -> hopfield_gpu::Result<Outcome> {
    use wgpu::BufferUsages as U;
    let memories = memories();
    let buffer = |label, size: usize, usage| {
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size as u64,
            usage,
            mapped_at_creation: false,
        })
    };
    // The application's own buffers.
    let keys = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("app memories"),
        contents: bytemuck::cast_slice(&memories),
        usage: U::STORAGE,
    });
    let queries = buffer("app queries", L * D * 4, U::STORAGE | U::COPY_SRC);
    let z = buffer("app z", L * D * 4, U::STORAGE | U::COPY_DST | U::COPY_SRC);
    let scores = buffer("app scores", L * 4, U::STORAGE | U::COPY_SRC);
    let sizes = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("app sizes"),
        contents: bytemuck::cast_slice(&[M as u32, L as u32, D as u32, 0]),
        usage: U::UNIFORM,
    });
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("app"),
        source: wgpu::ShaderSource::Wgsl(APP_SHADER.into()),
    });
    let pipeline = |entry| {
        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        })
    };
    let (make, score) = (pipeline("make_queries"), pipeline("score"));
    let group = |p: &wgpu::ComputePipeline, entries: &[(u32, &wgpu::Buffer)]| {
        let entries: Vec<_> = entries
            .iter()
            .map(|(b, buf)| wgpu::BindGroupEntry { binding: *b, resource: buf.as_entire_binding() })
            .collect();
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &p.get_bind_group_layout(0),
            entries: &entries,
        })
    };

    // The library on the same device, its bank on the application's buffer.
    let ctx = Context::from_device(device.clone(), queue.clone())?;
    let bank = MemoryBank::from_buffer(&ctx, &keys, M, D, None)?;

    let mut encoder = device.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&make);
        pass.set_bind_group(0, &group(&make, &[(0, &sizes), (1, &keys), (2, &queries)]), &[]);
        pass.dispatch_workgroups((L * D).div_ceil(64) as u32, 1, 1);
    }
    let opts = RetrieveOptions::dense(BETA).steps(STEPS, 0.0);
    ctx.encode_retrieve(&mut encoder, &bank, &queries, L, &z, &opts)?;
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&score);
        pass.set_bind_group(0, &group(&score, &[(0, &sizes), (1, &keys), (3, &z), (4, &scores)]), &[]);
        pass.dispatch_workgroups(L.div_ceil(64) as u32, 1, 1);
    }
    // Only to show (and check) what happened: copy everything out at the end.
    let total = (L * D * 4) * 2 + L * 4;
    let staging = buffer("readback", total, U::MAP_READ | U::COPY_DST);
    encoder.copy_buffer_to_buffer(&queries, 0, &staging, 0, (L * D * 4) as u64);
    encoder.copy_buffer_to_buffer(&z, 0, &staging, (L * D * 4) as u64, (L * D * 4) as u64);
    encoder.copy_buffer_to_buffer(&scores, 0, &staging, (2 * L * D * 4) as u64, (L * 4) as u64);
    queue.submit([encoder.finish()]);

    staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("mapping the readback buffer"));
    device.poll(wgpu::PollType::wait_indefinitely()).expect("the GPU finishes");
    let bytes = staging.get_mapped_range(..).expect("mapped").to_vec();
    let floats: &[f32] = bytemuck::cast_slice(&bytes);
    Ok(Outcome {
        memories,
        queries: floats[..L * D].to_vec(),
        z: floats[L * D..2 * L * D].to_vec(),
        scores: floats[2 * L * D..].to_vec(),
    })
}

#[cfg_attr(test, expect(dead_code, reason = "tests/api.rs includes this file and calls run"))]
fn main() -> hopfield_gpu::Result<()> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&Default::default())).expect("a GPU adapter (lavapipe will do)");
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor { required_limits: adapter.limits(), ..Default::default() }),
    )
    .expect("a device");
    let out = run(&device, &queue)?;
    println!("adapter: {}", adapter.get_info().name);
    for l in 0..4 {
        println!(
            "query {l}: retrieved pattern {} after {STEPS} steps, <z, xi> = {:.3} (|xi|^2 = {D})",
            (l * 7) % M,
            out.scores[l]
        );
    }
    Ok(())
}
