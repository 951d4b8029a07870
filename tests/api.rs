//! The library as an application uses it: retrieval recorded into the
//! caller's encoder on the caller's buffers (`encode_retrieve`, the example
//! app), one context shared by threads, GPU errors that stay with the call
//! that caused them, the bank's cache under concurrency, and the context's
//! and bank's own input checks.
//!
//! Tolerances: the example's z is held to the dense tolerance of
//! tests/dense.rs (abs 1e-4 + rel 1e-4: f32 scores, convex combinations of
//! values bounded by 1); everything compared between two GPU paths is
//! compared bit for bit, since both run the same kernels on the same data.

mod common;

#[path = "../examples/encode_retrieve.rs"]
mod example;

use std::sync::Barrier;

use common::{assert_close, ctx, random};
use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{Context, Error, GpuErrorKind, MemoryBank, Method, RetrieveBuffers, RetrieveOptions};
use wgpu::util::DeviceExt;

const Z_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);

/// A device of the test's own, as an application would create it.
fn app_device() -> (wgpu::Device, wgpu::Queue) {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).expect("an adapter");
    pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor { required_limits: adapter.limits(), ..Default::default() }),
    )
    .expect("a device")
}

/// A storage buffer on `ctx`'s device holding `data`, usable as a copy source.
fn buffer_with(ctx: &Context, data: &[f32]) -> wgpu::Buffer {
    ctx.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("test data"),
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    })
}

/// A buffer of `bytes` the library can write results into and the test can read.
fn output(ctx: &Context, bytes: usize) -> wgpu::Buffer {
    ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test output"),
        size: bytes as u64,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

/// Read `buf` back (test plumbing: its own submission and wait).
fn read<T: bytemuck::Pod>(ctx: &Context, buf: &wgpu::Buffer) -> Vec<T> {
    let staging = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("test readback"),
        size: buf.size(),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buf, 0, &staging, 0, buf.size());
    ctx.queue().submit([encoder.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
    ctx.device().poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    let bytes = staging.get_mapped_range(..).expect("mapped").to_vec();
    bytemuck::pod_collect_to_vec(&bytes)
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn the_example_app_retrieves_in_its_own_submission() {
    // examples/encode_retrieve.rs: the app's pass writes the queries, the
    // library's retrieval and the app's scoring pass follow in one submission.
    let (device, queue) = app_device();
    let out = example::run(&device, &queue).unwrap();
    let (m, l, d) = (example::M, example::L, example::D);
    let xi = Matrix::from_f32(m, d, &out.memories);
    let xs = Matrix::from_f32(l, d, &out.queries);
    assert!(out.queries.iter().any(|&q| q != 0.0), "the app's pass wrote the queries");
    let want = cpu::dynamics(&Method::Dense, &xs, &xi, f64::from(example::BETA), example::STEPS as usize, 0.0).unwrap();
    assert_close("z read by the app", &out.z, &want.state.data, Z_TOL);
    // The app's own pass saw that z: <z_l, xi_source(l)>.
    let scores: Vec<f64> = (0..l).map(|q| cpu::dot(want.state.row(q), xi.row((q * 7) % m))).collect();
    // d = 16 products of entries <= 1 summed in f32: 1e-4 relative of |score| <= 16.
    assert_close("the app's scores of z", &out.scores, &scores, Tolerance::new(1e-4, 1e-4));
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn encode_retrieve_gives_retrieve_s_bits() {
    // The same retrieval through both drivers: every output bit for bit,
    // including dynamics that the host path stops early (every query
    // converged) and the encode path runs to the end (converged queries no
    // longer change), batches (a 4 KiB binding), supports and energies.
    let ctx = ctx();
    let small = common::small_binding_ctx();
    let (d, m, l) = (8, 90, 37);
    let xi = random(2001, m, d, 1.0);
    let x = random(2002, l, d, 1.0);
    for (ctx, name) in [(ctx, "shared"), (&small, "4 KiB bindings")] {
        let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
        let bank_keys = buffer_with(ctx, &xi);
        let device_bank = MemoryBank::from_buffer(ctx, &bank_keys, m, d, None).unwrap();
        let queries = buffer_with(ctx, &x);
        for method in [
            Method::Dense,
            Method::TopK { k: 5 },
            Method::Random { k: 7, seed: 3 },
            Method::Window { width: Some(9) },
            Method::Sparsemax,
            Method::Entmax15,
            Method::Linear,
            // Degree 2 on d = 8: rank 45, whose S and n fit a 4 KiB binding.
            Method::Poly { delta: 1e-3, degree: Some(2) },
        ] {
            let support = method.support_width(m).is_some();
            let opts = RetrieveOptions { support, ..RetrieveOptions::dense(1.5).method(method).steps(12, 1e-3) };
            let host = ctx.retrieve(&bank, &x, &opts).unwrap();
            let (z, energy) = (output(ctx, l * d * 4), output(ctx, l * 4));
            let sup = method.support_width(m).map(|w| output(ctx, l * w * 4));
            let outputs = RetrieveBuffers { z: &z, energy: Some(&energy), support: sup.as_ref() };
            let mut encoder = ctx.device().create_command_encoder(&Default::default());
            ctx.encode_retrieve_with(&mut encoder, &device_bank, &queries, l, &outputs, &opts).unwrap();
            ctx.queue().submit([encoder.finish()]);
            let what = format!("{name}, {method:?}");
            assert_eq!(read::<f32>(ctx, &z), host.z, "{what}: z");
            assert_eq!(&read::<f32>(ctx, &energy), host.energy.as_ref().unwrap(), "{what}: energy");
            if let Some(sup) = &sup {
                assert_eq!(read::<i32>(ctx, sup), host.support.as_ref().unwrap().indices, "{what}: support");
            }
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn encode_retrieve_refuses_what_needs_a_readback_or_bad_buffers() {
    let ctx = ctx();
    let (d, m, l) = (4, 20, 3);
    let xi = random(2101, m, d, 1.0);
    let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
    let queries = buffer_with(ctx, &random(2102, l, d, 1.0));
    let z = output(ctx, l * d * 4);
    let mut encoder = ctx.device().create_command_encoder(&Default::default());
    let mut run = |opts: &RetrieveOptions, q: &wgpu::Buffer, z: &wgpu::Buffer| {
        ctx.encode_retrieve(&mut encoder, &bank, q, l, z, opts).unwrap_err()
    };
    let dense = RetrieveOptions::dense(1.0);
    // auto and a degree-less polynomial need the queries' norms.
    for method in [Method::Auto { tolerance: 1e-2 }, Method::Poly { delta: 1e-3, degree: None }] {
        let err = run(&dense.clone().method(method), &queries, &z);
        assert!(matches!(err, Error::Unsupported { option: "degree", .. }), "{method:?}: {err}");
    }
    // Every step is recorded: a cap, named.
    let err = run(&dense.clone().steps(hopfield_gpu::MAX_ENCODED_STEPS + 1, 0.0), &queries, &z);
    assert!(matches!(err, Error::Unsupported { option: "max_steps", .. }), "{err}");
    // Buffers too small, or without the usage the copies need.
    let err = run(&dense, &queries, &output(ctx, 8));
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let no_copy = ctx.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 1024,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let err = run(&dense, &no_copy, &z);
    assert!(matches!(err, Error::Unsupported { option: "queries", .. }), "{err}");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn one_context_serves_many_threads_with_the_same_bits() {
    // Context and MemoryBank are Send + Sync (static assertions in the
    // library); here four threads share one of each, all at once.
    let ctx = ctx();
    let (d, m, l) = (16, 300, 25);
    let xi = random(2201, m, d, 1.0);
    let x = random(2202, l, d, 1.0);
    let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
    let cases = [
        RetrieveOptions::dense(0.8).steps(10, 1e-4),
        RetrieveOptions::dense(0.8).method(Method::TopK { k: 7 }),
        RetrieveOptions::dense(0.8).method(Method::Sparsemax),
        RetrieveOptions::dense(0.8).method(Method::Prf { features: Some(32), seed: 5, orthogonal: false }),
    ];
    let alone: Vec<Vec<f32>> = cases.iter().map(|o| ctx.retrieve(&bank, &x, o).unwrap().z).collect();
    let start = Barrier::new(4);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (bank, x, cases, alone, start) = (&bank, &x, &cases, &alone, &start);
            s.spawn(move || {
                start.wait();
                for round in 0..3 {
                    for (i, o) in cases.iter().enumerate().cycle().skip(t).take(cases.len()) {
                        let z = ctx.retrieve(bank, x, o).unwrap().z;
                        assert_eq!(z, alone[i], "thread {t}, round {round}, case {i}");
                    }
                }
            });
        }
    });
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn gpu_errors_stay_with_the_call_that_caused_them() {
    // Issue 8 §6 #4: thread A retrieves from a bank whose buffer it
    // destroyed (a validation error); thread B's healthy retrievals on the
    // same context must all succeed, and A must see its own error, each time.
    let ctx = ctx();
    let (d, m, l) = (8, 64, 5);
    let xi = random(2301, m, d, 1.0);
    let x = random(2302, l, d, 1.0);
    let good = MemoryBank::new(ctx, &xi, m, d).unwrap();
    let want = ctx.retrieve(&good, &x, &RetrieveOptions::dense(1.0)).unwrap().z;
    let doomed = buffer_with(ctx, &xi);
    let bad = MemoryBank::from_buffer(ctx, &doomed, m, d, None).unwrap();
    doomed.destroy();
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            start.wait();
            for i in 0..20 {
                let err = ctx.retrieve(&bad, &x, &RetrieveOptions::dense(1.0)).unwrap_err();
                assert!(matches!(err, Error::Gpu { kind: GpuErrorKind::Validation, .. }), "call {i}: {err}");
                assert!(!err.to_string().contains('\n'), "one line: {err}");
            }
        });
        s.spawn(|| {
            start.wait();
            for i in 0..40 {
                let got = ctx.retrieve(&good, &x, &RetrieveOptions::dense(1.0));
                assert_eq!(got.map(|r| r.z).map_err(|e| e.to_string()), Ok(want.clone()), "call {i}");
            }
        });
    });
    // And afterwards the context is healthy.
    assert_eq!(ctx.retrieve(&good, &x, &RetrieveOptions::dense(1.0)).unwrap().z, want);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn concurrent_feature_retrievals_build_each_map_once() {
    // Issue 8 §6 #16: four threads retrieve with three feature maps on one
    // fresh bank at once; each S/n is built once, under its key's lock.
    let ctx = ctx();
    let (d, m, l) = (3, 500, 9);
    let xi = random(2401, m, d, 0.5);
    let x = random(2402, l, d, 0.5);
    let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
    let maps = [
        Method::Poly { delta: 1e-3, degree: Some(4) },
        Method::Linear,
        Method::Prf { features: Some(16), seed: 1, orthogonal: false },
    ];
    let start = Barrier::new(4);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (bank, x, start) = (&bank, &x, &start);
            s.spawn(move || {
                start.wait();
                for method in maps.iter().cycle().skip(t).take(maps.len()) {
                    ctx.retrieve(bank, x, &RetrieveOptions::dense(1.0).method(*method)).unwrap();
                }
            });
        }
    });
    assert_eq!(bank.feature_builds(), 3);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn from_buffer_checks_its_sizes_without_overflow() {
    // Issue 8 §6 #7: m = 2^62, d = 1 on a 4 KiB buffer: m d 4 overflows u64.
    let ctx = ctx();
    let keys = buffer_with(ctx, &[0.5; 1024]);
    let err = MemoryBank::from_buffer(ctx, &keys, 1 << 62, 1, None).unwrap_err();
    assert!(matches!(err, Error::DeviceLimit { need: None, .. }), "{err}");
    // Large but countable: a plain size mismatch.
    let err = MemoryBank::from_buffer(ctx, &keys, 1 << 40, 1, None).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let values = buffer_with(ctx, &[0.5; 16]);
    let err = MemoryBank::from_buffer(ctx, &keys, 1024, 1, Some((&values, usize::MAX))).unwrap_err();
    assert!(matches!(err, Error::DeviceLimit { .. }), "{err}");
}

#[test]
fn an_unknown_wgpu_backend_is_named() {
    // Issue 8 §6 #16: WGPU_BACKEND=bogus used to leave no backend and print
    // "Backends(0x0)"; the value is named, with the accepted ones.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hopfield-gpu"))
        .arg("info")
        .env("WGPU_BACKEND", "vulkan,bogus")
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("WGPU_BACKEND") && err.contains("\"bogus\"") && err.contains("vulkan"), "{err}");
    assert!(!err.contains("Backends(0x0)") && !err.contains("panicked"), "{err}");
}
