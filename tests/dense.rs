//! Dense retrieval on the GPU against the f64 CPU reference (src/cpu/dense.rs),
//! over a grid of shapes that are deliberately not multiples of the tile sizes.
//!
//! Tolerances. The kernels compute in f32; the reference in f64. A score
//! `beta <x, xi>` carries a rounding error of about `sqrt(d) * 6e-8 * beta |x| |xi|`
//! (random-walk accumulation of d products); with the data below (entries in
//! [-1, 1], beta = 1/sqrt(d), so |beta <x, xi>| <= sqrt(d)) that is < 1e-5 even
//! at d = 3072. A softmax weight inherits that as a relative error, and z, a
//! convex combination of values bounded by 1, an absolute one. Sums over M
//! terms add M * 6e-8 relative. Hence z: abs 1e-4, rel 1e-4 (an order of
//! magnitude of headroom); log-sum-exp: abs 1e-4 + rel 1e-5 of its size.

mod common;

use std::sync::Arc;

use common::{assert_close, bank, checked_ctx, ctx, default_config, random, small_binding_ctx};
use hopfield_gpu::config::{candidates, DecodeKernel, DenseKernel, KernelConfig};
use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{Context, Error, MemoryBank, Method, RetrieveOptions, Storage};

const Z_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);
const LSE_TOL: Tolerance = Tolerance::new(1e-4, 1e-5);

/// Run one GPU retrieval and compare z, log-sum-exp, argmax and energy with the reference.
fn check(ctx: &Context, d: usize, m: usize, l: usize, dv: Option<usize>, seed: u64, method: Method) {
    check_on(ctx, ctx.config(), d, m, l, dv, seed, method);
}

/// [`check`] on the kernels of `cfg`.
#[allow(clippy::too_many_arguments)]
fn check_on(
    ctx: &Context,
    cfg: Arc<KernelConfig>,
    d: usize,
    m: usize,
    l: usize,
    dv: Option<usize>,
    seed: u64,
    method: Method,
) {
    let beta = 1.0 / (d as f32).sqrt();
    let xi = random(seed, m, d, 1.0);
    let x = random(seed + 1, l, d, 1.0);
    let values = dv.map(|dv| (random(seed + 2, m, dv, 1.0), dv));
    let (bank, v) = bank(ctx, &xi, m, d, values.as_ref().map(|(v, dv)| (&v[..], *dv)));
    let name = cfg.name.clone();
    let got = ctx
        .retrieve_with(cfg, &bank, &x, &RetrieveOptions::dense(beta).method(method), &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("{name} d={d} m={m} l={l} dv={dv:?}: {e}"));
    let xs = Matrix::from_f32(l, d, &x);
    let xim = Matrix::from_f32(m, d, &xi);
    let want = cpu::dense::dense(&xs, &xim, &v, f64::from(beta));
    let what = format!("{method:?} [{name}] d={d} m={m} l={l} dv={dv:?}");
    assert_close(&format!("{what}: z"), &got.z, &want.z.data, Z_TOL);
    if dv.is_none() {
        // Energies are of the final state z (the state after the update).
        let e: Vec<f64> = (0..l).map(|i| cpu::dense::energy(want.z.row(i), &xim, f64::from(beta))).collect();
        assert_close(&format!("{what}: energy"), got.energy.as_ref().unwrap(), &e, LSE_TOL);
    } else {
        // Hetero-association: statistics are of the query itself.
        assert_close(&format!("{what}: lse"), &got.log_sum_exp, &want.log_sum_exp, LSE_TOL);
        let argmax: Vec<u32> = want.argmax.iter().map(|&a| a as u32).collect();
        assert_eq!(got.argmax, argmax, "{what}: argmax");
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn tiled_kernel_matches_reference_over_shape_grid() {
    let ctx = ctx();
    for (i, &(d, m, l)) in [
        (1, 1, 1),
        (1, 200, 3),
        (3, 5, 7),
        (3, 1, 40),
        (64, 1, 1),
        (64, 130, 33),
        (65, 64, 16),
        (100, 257, 17),
        (100, 257, 4),
        (784, 19, 5),
        (3072, 9, 3),
    ]
    .iter()
    .enumerate()
    {
        check(ctx, d, m, l, None, 100 + i as u64, Method::Dense);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn hetero_association_matches_reference() {
    // dv = 70 spans two 64-column output blocks; dv = 1 the smallest.
    check(ctx(), 5, 50, 9, Some(70), 7, Method::Dense);
    check(ctx(), 16, 33, 4, Some(1), 8, Method::Dense);
    // dv = 150: three column blocks accumulated across four memory tiles,
    // with the 16-query tiles (L = 18) and the few-query kernel (L = 2).
    check(ctx(), 9, 200, 18, Some(150), 10, Method::Dense);
    check(ctx(), 9, 200, 2, Some(150), 10, Method::Dense);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn naive_baseline_matches_reference() {
    check(ctx(), 7, 70, 9, None, 9, Method::Dense);
    check(ctx(), 7, 70, 9, None, 9, Method::DenseNaive);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn few_queries_many_memories_use_many_splits() {
    // One query against 20000 memories is split across workgroups and merged.
    // On lavapipe the splits must also stay short enough for its per-invocation
    // loop limiter, which would otherwise silently drop memories.
    check(ctx(), 64, 20_000, 1, None, 11, Method::Dense);
    check(ctx(), 8, 3000, 1, None, 11, Method::Dense);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn chunked_bank_matches_unchunked() {
    // Pretend a storage binding holds 4 KiB: 300 memories of d = 24 (28.8 KB)
    // become several segments, bound one at a time and merged.
    let small = small_binding_ctx();
    let (d, m, l) = (24, 300, 20);
    let xi = random(21, m, d, 1.0);
    let x = random(22, l, d, 1.0);
    let chunked = MemoryBank::new(&small, &xi, m, d).unwrap();
    assert!(chunked.segment_count() > 1, "expected several segments, got {}", chunked.segment_count());
    let whole = MemoryBank::new(ctx(), &xi, m, d).unwrap();
    assert_eq!(whole.segment_count(), 1);
    let opts = RetrieveOptions::dense(0.5);
    let a = small.retrieve(&chunked, &x, &opts).unwrap();
    let b = ctx().retrieve(&whole, &x, &opts).unwrap();
    let want =
        cpu::dense::dense(&Matrix::from_f32(l, d, &x), &Matrix::from_f32(m, d, &xi), &Matrix::from_f32(m, d, &xi), 0.5);
    assert_close("chunked z", &a.z, &want.z.data, Z_TOL);
    assert_close("unchunked z", &b.z, &want.z.data, Z_TOL);
    // Hetero-association through chunks too, and argmax across segment borders.
    // One query (the few-query kernel) through the segments too.
    let one = small.retrieve(&chunked, &x[..d], &opts).unwrap();
    assert_close("chunked z, one query", &one.z, &want.z.data[..d], Z_TOL);
    let v = random(23, m, 3, 1.0);
    let hb = MemoryBank::with_values(&small, &xi, m, d, &v, 3).unwrap();
    let h = small.retrieve(&hb, &x, &opts).unwrap();
    let hw =
        cpu::dense::dense(&Matrix::from_f32(l, d, &x), &Matrix::from_f32(m, d, &xi), &Matrix::from_f32(m, 3, &v), 0.5);
    assert_close("chunked hetero z", &h.z, &hw.z.data, Z_TOL);
    assert_eq!(h.argmax, hw.argmax.iter().map(|&a| a as u32).collect::<Vec<_>>());
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn scores_of_1e4_do_not_overflow() {
    // beta <x, xi> reaches 1e4: naive exp would overflow f32 at ~88.
    let ctx = ctx();
    let (d, m) = (4, 6);
    let xi = random(31, m, d, 1.0);
    let x: Vec<f32> = xi[..2 * d].to_vec(); // two stored patterns as queries
    let norm2: f32 = xi[..d].iter().map(|v| v * v).sum();
    let beta = 1e4 / norm2;
    let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
    let got = ctx.retrieve(&bank, &x, &RetrieveOptions::dense(beta)).unwrap();
    assert!(got.z.iter().all(|v| v.is_finite()));
    let want = cpu::dense::dense(
        &Matrix::from_f32(2, d, &x),
        &Matrix::from_f32(m, d, &xi),
        &Matrix::from_f32(m, d, &xi),
        f64::from(beta),
    );
    assert_close("z at huge beta", &got.z, &want.z.data, Z_TOL);
    // Scores of 1e4 in f32 carry an absolute error of ~1e4 * 6e-8 * d.
    assert_close("lse at huge beta", &got.log_sum_exp, &want.log_sum_exp, Tolerance::new(1e-2, 1e-6));
    assert_eq!(got.argmax, vec![0, 1]);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn dynamics_match_reference_and_energy_never_increases() {
    let ctx = ctx();
    let (d, m, l) = (16, 40, 12);
    let beta = 2.0;
    let xi = random(41, m, d, 1.0);
    let x = random(42, l, d, 1.0);
    let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
    let xim = Matrix::from_f32(m, d, &xi);
    let xs = Matrix::from_f32(l, d, &x);

    // Energy along the trajectory: E(x^t) for t = 1..6 with eps = 0 (no early stop).
    let mut last: Option<Vec<f32>> = None;
    for t in 1..=6 {
        let r = ctx.retrieve(&bank, &x, &RetrieveOptions::dense(beta).steps(t, 0.0)).unwrap();
        let e = r.energy.unwrap();
        if let Some(prev) = &last {
            for (q, (a, b)) in prev.iter().zip(&e).enumerate() {
                // CCCP guarantees E(x^{t+1}) <= E(x^t); allow f32 rounding of E (|E| ~ 10).
                assert!(b <= &(a + 1e-5 * a.abs().max(1.0)), "query {q}: energy rose from {a} to {b} at step {t}");
            }
        }
        last = Some(e);
    }

    // Early stopping per query: compare steps, convergence and states with the reference.
    let eps = 1e-3;
    let r = ctx.retrieve(&bank, &x, &RetrieveOptions::dense(beta).steps(50, eps)).unwrap();
    let want = cpu::dynamics(&Method::Dense, &xs, &xim, f64::from(beta), 50, f64::from(eps)).unwrap();
    assert_close("final states", &r.z, &want.state.data, Tolerance::new(1e-4, 1e-4));
    assert_close("final energies", r.energy.as_ref().unwrap(), &want.energy, LSE_TOL);
    assert_eq!(r.converged, want.converged, "converged flags");
    // A step count can differ by one where a query's change lands within f32
    // rounding of eps; anything more is a bug.
    for (q, (&g, &w)) in r.steps.iter().zip(&want.steps).enumerate() {
        assert!((g as i64 - w as i64).abs() <= 1, "query {q}: {g} steps on the GPU, {w} in the reference");
    }
    assert!(r.steps.iter().any(|&s| s > 1) && r.steps.iter().all(|&s| s < 50), "steps {:?}", r.steps);

    // More than 8 steps crosses a host check of the moving-query counter; a
    // converged query must not change afterwards.
    let long = ctx.retrieve(&bank, &x, &RetrieveOptions::dense(beta).steps(200, eps)).unwrap();
    assert_eq!(long.steps, r.steps);
    assert_close(
        "states after extra steps",
        &long.z,
        &r.z.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        Tolerance::new(0.0, 0.0),
    );
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn caller_owned_device_and_buffers_are_used_without_copies() {
    use wgpu::util::DeviceExt;
    // A graphics app's own device: created here with plain wgpu.
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).expect("adapter");
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor { required_limits: adapter.limits(), ..Default::default() }),
    )
    .expect("device");
    let (d, m, l) = (8, 50, 5);
    let xi = random(51, m, d, 1.0);
    let x = random(52, l, d, 1.0);
    let keys = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("app memories"),
        contents: bytemuck::cast_slice(&xi),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let ctx = Context::from_device(device, queue).unwrap();
    let bank = MemoryBank::from_buffer(&ctx, &keys, m, d, None).unwrap();
    let got = ctx.retrieve(&bank, &x, &RetrieveOptions::dense(1.0)).unwrap();
    let xim = Matrix::from_f32(m, d, &xi);
    let want = cpu::dense::dense(&Matrix::from_f32(l, d, &x), &xim, &xim, 1.0);
    assert_close("z from caller buffers", &got.z, &want.z.data, Z_TOL);
    // A buffer too small for the declared shape is an error, not a GPU fault.
    assert!(matches!(MemoryBank::from_buffer(&ctx, &keys, m + 1, d, None), Err(Error::ShapeMismatch { .. })));
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn bad_input_gets_typed_errors() {
    let ctx = ctx();
    let xi = random(61, 4, 3, 1.0);
    let bank = MemoryBank::new(ctx, &xi, 4, 3).unwrap();
    let x = random(62, 2, 3, 1.0);
    let ok = RetrieveOptions::dense(1.0);
    // Shape mismatch: queries of d = 2 against memories of d = 3 (length 4 not a multiple of 3).
    assert!(matches!(ctx.retrieve(&bank, &[1.0; 4], &ok), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(ctx.retrieve(&bank, &[], &ok), Err(Error::Empty { what: "queries" })));
    assert!(matches!(MemoryBank::new(ctx, &[], 0, 3), Err(Error::Empty { what: "memories" })));
    assert!(matches!(MemoryBank::new(ctx, &xi, 5, 3), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(MemoryBank::with_values(ctx, &xi, 4, 3, &[1.0; 7], 2), Err(Error::ShapeMismatch { .. })));
    let mut nan = x.clone();
    nan[4] = f32::NAN;
    assert!(matches!(ctx.retrieve(&bank, &nan, &ok), Err(Error::NonFinite { what: "queries", row: 1, col: 1, .. })));
    let mut inf = xi.clone();
    inf[0] = f32::INFINITY;
    assert!(matches!(MemoryBank::new(ctx, &inf, 4, 3), Err(Error::NonFinite { what: "memories", .. })));
    for beta in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert!(
            matches!(
                ctx.retrieve(&bank, &x, &RetrieveOptions::dense(beta)),
                Err(Error::InvalidParameter { name: "beta", .. })
            ),
            "beta {beta}"
        );
    }
    for eps in [-1e-3, f32::NAN] {
        assert!(matches!(
            ctx.retrieve(&bank, &x, &ok.clone().steps(3, eps)),
            Err(Error::InvalidParameter { name: "eps", .. })
        ));
    }
    assert!(matches!(
        ctx.retrieve(&bank, &x, &ok.clone().steps(0, 0.0)),
        Err(Error::InvalidParameter { name: "max_steps", .. })
    ));
    // Scores that would overflow f32 are refused, not turned into NaN.
    assert!(matches!(
        ctx.retrieve(&bank, &x, &RetrieveOptions::dense(1e35)),
        Err(Error::InvalidParameter { name: "beta", .. })
    ));
    // Iterating a hetero-associative bank is a shape error.
    let hb = MemoryBank::with_values(ctx, &xi, 4, 3, &[0.5; 8], 2).unwrap();
    assert!(matches!(ctx.retrieve(&hb, &x, &ok.clone().steps(3, 0.0)), Err(Error::ShapeMismatch { .. })));
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn naive_baseline_matches_reference_at_bench_size() {
    // Past llvmpipe's 65535-iteration loop limiter per invocation (~508
    // memories at d = 64 in one loop), the naive kernel must run in pieces.
    check(ctx(), 64, 600, 3, None, 12, Method::DenseNaive);
    check(ctx(), 8, 4000, 2, None, 13, Method::DenseNaive);
}

/// The case table every configuration runs: ragged L and M (no multiple of
/// a tile), d in {1, 3, 64, 784}, dv != d (one value column, and more value
/// columns than one pass of the few-query kernel holds), L = 1..16 through
/// the few-query kernel's 4-, 8- and 16-query shapes, then the tiled one.
fn case_table(ctx: &Context, cfg: &Arc<KernelConfig>) {
    for (i, &(d, m, l, dv)) in [
        (1, 67, 17, None),
        (3, 130, 40, Some(5)),
        (64, 300, 33, None),
        (784, 70, 19, Some(1)),
        (9, 200, 2, Some(300)),
        (9, 200, 40, Some(300)),
    ]
    .iter()
    .enumerate()
    {
        check_on(ctx, cfg.clone(), d, m, l, dv, 200 + i as u64, Method::Dense);
    }
    for l in 1..=16 {
        check_on(ctx, cfg.clone(), 20, 1000, l, None, 300 + l as u64, Method::Dense);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn default_configuration_matches_reference_on_the_case_table() {
    let ctx = ctx();
    case_table(ctx, &default_config(ctx));
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn checked_shaders_match_reference_on_the_case_table() {
    // The same kernels built with wgpu's runtime checks (bounds, loop
    // bounding, division): what HOPFIELD_CHECKED_SHADERS=1 gives.
    let ctx = checked_ctx();
    case_table(ctx, &default_config(ctx));
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn shared_memory_reductions_match_reference_on_the_case_table() {
    // The defaults without subgroup operations: the workgroup-memory path
    // of the row and tile reductions (devices without Features::SUBGROUP).
    let ctx = ctx();
    let mut cfg = (*default_config(ctx)).clone();
    cfg.name = "no subgroups".into();
    if let DenseKernel::Tiled(t) = &mut cfg.dense {
        t.subgroups = false;
    }
    if let DecodeKernel::Tiled(t) = &mut cfg.decode {
        t.subgroups = false;
    }
    case_table(ctx, &Arc::new(cfg));
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn every_candidate_matches_reference() {
    // Every configuration the tuner may choose on this device (pruned by
    // its limits), each on ragged shapes: the tiled candidates with a
    // partial vec4 and two chunks (d = 37) and with hetero values over two
    // column blocks; the few-query ones at 3 and 9 queries (their 4- and
    // 16-query shapes) and with more value columns than one pass holds.
    let ctx = ctx();
    let base = (*default_config(ctx)).clone();
    let all = candidates(ctx.caps());
    assert!(all.dense.len() >= 2 && all.decode.len() >= 2, "{all:?}");
    for (i, k) in all.dense.iter().enumerate() {
        let cfg = Arc::new(KernelConfig { name: format!("dense [{k}]"), dense: *k, ..base.clone() });
        check_on(ctx, cfg.clone(), 37, 301, 37, None, 400 + i as u64, Method::Dense);
        check_on(ctx, cfg, 37, 130, 21, Some(70), 420 + i as u64, Method::Dense);
    }
    for (i, k) in all.decode.iter().enumerate() {
        let cfg = Arc::new(KernelConfig { name: format!("decode [{k}]"), decode: *k, ..base.clone() });
        check_on(ctx, cfg.clone(), 37, 1001, 3, None, 440 + i as u64, Method::Dense);
        check_on(ctx, cfg.clone(), 37, 1001, 9, Some(300), 460 + i as u64, Method::Dense);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn segments_match_reference_on_every_pass_shape() {
    // Memories in several storage bindings (a 4 KiB binding limit), bound
    // one at a time: the tiled kernel, the few-query kernel at 5 queries
    // (its 8-query shape), the legacy configuration beside them.
    let small = small_binding_ctx();
    let (d, m) = (24, 300);
    let xi = random(31, m, d, 1.0);
    let bank = MemoryBank::new(&small, &xi, m, d).unwrap();
    assert!(bank.segment_count() > 1);
    let xim = Matrix::from_f32(m, d, &xi);
    for cfg in [default_config(&small), Arc::new(KernelConfig::legacy())] {
        for l in [5, 20] {
            let x = random(32 + l as u64, l, d, 1.0);
            let got = small
                .retrieve_with(cfg.clone(), &bank, &x, &RetrieveOptions::dense(0.5), &mut |_| {
                    std::ops::ControlFlow::Continue(())
                })
                .unwrap();
            let want = cpu::dense::dense(&Matrix::from_f32(l, d, &x), &xim, &xim, 0.5);
            assert_close(&format!("[{}] segments l={l}", cfg.name), &got.z, &want.z.data, Z_TOL);
        }
    }
}

/// The bound on z of memories stored as f16 (README.md, "f16 storage"):
/// each stored entry is within u = 2^-11 relative (plus 2^-25 absolute for
/// f16 subnormals) of the f32 one, so each score beta <x, xi> moves by at
/// most delta = beta sum_k |x_k| (u |xi_k| + 2^-25); the softmax weights then
/// change by a factor within exp(+-2 delta), so sum |p~ - p| <= exp(2 delta) - 1,
/// and the values themselves by u |v| + 2^-25: |z~ - z| <= (exp(2 delta) - 1)
/// max|v~| + u max|v| + 2^-25.
fn f16_bound(x: &[f32], xi: &[f32], d: usize, beta: f32) -> f64 {
    let u = 2f64.powi(-11);
    let sub = 2f64.powi(-25);
    let vmax = xi.iter().fold(0.0f64, |a, &v| a.max(f64::from(v.abs())));
    let mut delta = 0.0f64;
    for q in x.chunks(d) {
        for m in xi.chunks(d) {
            let s: f64 = q.iter().zip(m).map(|(a, b)| f64::from(a.abs()) * (u * f64::from(b.abs()) + sub)).sum();
            delta = delta.max(f64::from(beta) * s);
        }
    }
    (2.0 * delta).exp_m1() * vmax * (1.0 + u) + u * vmax + sub
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn f16_storage_stays_within_its_bound() {
    let ctx = ctx();
    assert!(ctx.caps().shader_f16, "lavapipe has shader-f16; this test needs it");
    // Few queries (the case f16 is for) and many, d with a partial vec4.
    for (i, &(d, m, l)) in [(64, 3000, 1), (64, 3000, 8), (37, 500, 40)].iter().enumerate() {
        let beta = 1.0 / (d as f32).sqrt();
        let xi = random(500 + i as u64, m, d, 1.0);
        let x = random(510 + i as u64, l, d, 1.0);
        let bank = MemoryBank::with_storage(ctx, &xi, m, d, None, Storage::F16).unwrap();
        assert_eq!(bank.storage(), Storage::F16);
        let opts = RetrieveOptions { energy: false, ..RetrieveOptions::dense(beta) };
        let got = ctx.retrieve(&bank, &x, &opts).unwrap();
        let xim = Matrix::from_f32(m, d, &xi);
        let want = cpu::dense::dense(&Matrix::from_f32(l, d, &x), &xim, &xim, f64::from(beta));
        // The f16 bound plus the f32 kernels' own rounding (Z_TOL's abs part).
        let bound = f16_bound(&x, &xi, d, beta);
        assert!(bound < 0.05, "the bound should say something here: {bound}");
        let tol = Tolerance::new(bound + Z_TOL.abs, 0.0);
        assert_close(&format!("f16 d={d} m={m} l={l}"), &got.z, &want.z.data, tol);
        // And the rounding is really there: the same memories in f32 land
        // closer to the reference than f16 storage does.
        let exact = ctx.retrieve(&MemoryBank::new(ctx, &xi, m, d).unwrap(), &x, &opts).unwrap();
        let err = |z: &[f32]| z.iter().zip(&want.z.data).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
        assert!(err(&got.z) > err(&exact.z), "f16 {} vs f32 {}", err(&got.z), err(&exact.z));
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn f16_storage_is_refused_clearly() {
    let ctx = ctx();
    let xi = random(520, 10, 4, 1.0);
    // Beyond the f16 range: a typed error naming the entry, not infinities.
    let mut big = xi.clone();
    big[7] = 1e5;
    let e = MemoryBank::with_storage(ctx, &big, 10, 4, None, Storage::F16).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter { name: "storage", .. }) && e.to_string().contains("[1, 3]"), "{e}");
    // Other methods than dense, and the legacy kernels, refuse f16 banks.
    let bank = MemoryBank::with_storage(ctx, &xi, 10, 4, None, Storage::F16).unwrap();
    let e = ctx.retrieve(&bank, &xi[..4], &RetrieveOptions::dense(1.0).method(Method::TopK { k: 2 })).unwrap_err();
    assert!(matches!(e, Error::Unsupported { option: "storage", .. }), "{e}");
    let legacy = Arc::new(KernelConfig::legacy());
    let e = ctx
        .retrieve_with(legacy, &bank, &xi[..4], &RetrieveOptions::dense(1.0), &mut |_| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { option: "storage", .. }), "{e}");
    // A device without shader-f16 (one made here without the feature).
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).unwrap();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let plain = Context::from_device(device, queue).unwrap();
    assert!(!plain.caps().shader_f16);
    let e = MemoryBank::with_storage(&plain, &xi, 10, 4, None, Storage::F16).unwrap_err();
    assert!(matches!(e, Error::MissingFeature { feature: "Features::SHADER_F16", .. }), "{e}");
}

/// Issue 8 §6.10: energies beyond f32's range were written as -inf (beta
/// below ~1e-38: -lse / beta overflows) or +inf (states of norm ~1e20:
/// 0.5 <x, x> overflows), with success. Now such a retrieval fails with
/// `OutOfRange`, and an energy that fits f32 is returned even where the
/// f32 intermediates would overflow (<x, x> = 4e38 here, E ~ 2e38).
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn energies_beyond_f32_are_refused_and_those_within_are_exact() {
    let bank = MemoryBank::new(ctx(), &[1.0, 0.0, 0.0, 1.0], 2, 2).unwrap();
    // beta = 1e-39: E = -ln(e^(beta 1) + e^0) / beta ~ -ln 2 / beta = -6.9e38.
    match ctx().retrieve(&bank, &[1.0, 0.0], &RetrieveOptions::dense(1e-39)) {
        Err(Error::OutOfRange { what, value }) => {
            assert!(what.contains("energy of query 0"), "{what}");
            assert!((value / -6.931_471_805_599_453e38 - 1.0).abs() < 1e-6, "{value:e}");
        }
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    // Values of norm 1e20: one step moves the state there, 0.5 <x, x> = 5e39.
    let big = MemoryBank::with_values(ctx(), &[1.0, 0.0, 0.0, 1.0], 2, 2, &[1e20, 0.0, 0.0, 1e20], 2).unwrap();
    match ctx().retrieve(&big, &[1.0, 0.0], &RetrieveOptions::dense(1.0)) {
        Err(Error::OutOfRange { what, value }) => {
            assert!(what.contains("energy of query 0") && value > 3.4e38, "{what} {value:e}");
        }
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    // Without the energy the same retrievals succeed.
    assert!(ctx()
        .retrieve(&bank, &[1.0, 0.0], &RetrieveOptions { energy: false, ..RetrieveOptions::dense(1e-39) })
        .is_ok());

    // Hetero values (dv = 3 != d = 1): the energy is that of the query,
    // x = 2e19, so <x, x> = 4e38 overflows f32 while E = 2e38 - lse / beta fits.
    let hetero = MemoryBank::with_values(ctx(), &[1.0, -1.0], 2, 1, &[0.0; 6], 3).unwrap();
    let (x, beta) = (2e19f32, 1e-20f32);
    let r = ctx().retrieve(&hetero, &[x], &RetrieveOptions::dense(beta)).unwrap();
    let xim = Matrix::from_f32(2, 1, &[1.0, -1.0]);
    let want = cpu::dense::energy(&[f64::from(x)], &xim, f64::from(beta));
    let got = r.energy.unwrap();
    // lse carries f32 rounding (rel 6e-8 of ~0.2), divided by beta: ~1e12,
    // far below 1e-6 relative of 2e38.
    assert_close("energy at <x, x> = 4e38", &got, &[want], Tolerance::new(0.0, 1e-6));
}
