//! Sliding-window retrieval on the GPU against the f64 CPU reference
//! (src/cpu/window.rs), with the supports compared exactly. The window's
//! dynamics are in tests/update.rs.
//!
//! Tolerances. As in tests/dense.rs: the kernels score in f32, so a score
//! carries ~sqrt(d) 6e-8 beta |x| |xi| of rounding, < 1e-5 for the data below
//! (entries in [-1, 1], beta |x| |xi| <= 3 d / sqrt(d)). A softmax weight over
//! the window inherits it as a relative error and z (a convex combination of
//! values bounded by 1) as an absolute one: z abs 1e-4, rel 1e-4. Energies as
//! tests/dense.rs.

mod common;

use common::{assert_close, assert_support, bank, ctx, random, small_binding_ctx, with_support as opts};
use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{default_window, window_range, Context, MemoryBank, Method};

const Z_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);
const E_TOL: Tolerance = Tolerance::new(1e-4, 1e-5);

/// One window retrieval against the reference: z, support, energy.
fn check_window(ctx: &Context, d: usize, m: usize, l: usize, width: Option<usize>, dv: Option<usize>, seed: u64) {
    let beta = 1.0 / (d as f32).sqrt();
    let xi = random(seed, m, d, 1.0);
    let x = random(seed + 1, l, d, 1.0);
    let vals = dv.map(|dv| (random(seed + 2, m, dv, 1.0), dv));
    let (bank, v) = bank(ctx, &xi, m, d, vals.as_ref().map(|(v, dv)| (&v[..], *dv)));
    let got = ctx.retrieve(&bank, &x, &opts(Method::Window { width }, beta)).unwrap();
    let w = width.unwrap_or_else(|| default_window(m));
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    let want = cpu::window::window(&xs, &xim, &v, f64::from(beta), w);
    let what = format!("window d={d} m={m} l={l} w={width:?} dv={dv:?}");
    assert_close(&format!("{what}: z"), &got.z, &want.z.data, Z_TOL);
    assert_support(&what, &got, &want.support, w.min(m));
    if dv.is_none() {
        let e: Vec<f64> = (0..l).map(|i| cpu::dense::energy(want.z.row(i), &xim, f64::from(beta))).collect();
        assert_close(&format!("{what}: energy"), got.energy.as_ref().unwrap(), &e, E_TOL);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn window_matches_reference_over_shapes() {
    let ctx = ctx();
    // Even and odd widths, clipped at both ends (every case includes l = 0 and l = L - 1).
    check_window(ctx, 5, 37, 37, Some(4), None, 1);
    check_window(ctx, 5, 37, 37, Some(5), None, 2);
    check_window(ctx, 3, 10, 10, Some(1), None, 3);
    // W >= M (the whole bank; W > 2M too), default W, L != M both ways.
    check_window(ctx, 3, 10, 7, Some(10), None, 4);
    check_window(ctx, 3, 10, 7, Some(25), None, 5);
    check_window(ctx, 16, 100, 100, None, None, 6);
    check_window(ctx, 8, 130, 17, Some(9), None, 7);
    check_window(ctx, 8, 20, 70, Some(3), None, 8);
    // M not a multiple of any tile size, d across 64-lanes, and hetero values.
    check_window(ctx, 65, 257, 33, Some(16), None, 9);
    check_window(ctx, 5, 50, 9, Some(7), Some(70), 10);
    // A window longer than one workgroup chunk (2048 positions): several
    // chunks per query, merged.
    check_window(ctx, 4, 3000, 3, Some(2500), None, 11);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn window_clipping_is_visible_in_the_support() {
    let (m, l, w) = (37, 37, 6);
    let xi = random(21, m, 4, 1.0);
    let bank = MemoryBank::new(ctx(), &xi, m, 4).unwrap();
    let got = ctx().retrieve(&bank, &xi, &opts(Method::Window { width: Some(w) }, 1.0)).unwrap();
    let s = got.support.unwrap();
    // Query 0: centre 0, window [-3, 3) clipped to [0, 3).
    assert_eq!(&s.indices[..w], &[0, 1, 2, -1, -1, -1]);
    // Query L-1: centre 36, window [33, 39) clipped to [33, 37).
    assert_eq!(&s.indices[(l - 1) * w..], &[33, 34, 35, 36, -1, -1]);
    assert_eq!(window_range(l - 1, l, m, w), 33..37);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn window_over_a_chunked_bank_straddles_segments() {
    // A 4 KiB binding holds ~42 memories of d = 24: windows of 60 cross two
    // or three segment borders; the default width (18) crosses at most one.
    let small = small_binding_ctx();
    let (d, m, l) = (24, 300, 20);
    let xi = random(31, m, d, 1.0);
    let x = random(32, l, d, 1.0);
    let b = MemoryBank::new(&small, &xi, m, d).unwrap();
    assert!(b.segment_count() > 3, "expected several segments, got {}", b.segment_count());
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    for width in [Some(60), None, Some(1), Some(400)] {
        let got = small.retrieve(&b, &x, &opts(Method::Window { width }, 0.5)).unwrap();
        let w = width.unwrap_or_else(|| default_window(m));
        let want = cpu::window::window(&xs, &xim, &xim, 0.5, w);
        assert_close(&format!("chunked window {width:?}: z"), &got.z, &want.z.data, Z_TOL);
        assert_support(&format!("chunked window {width:?}"), &got, &want.support, w.min(m));
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn window_scores_of_1e4_stay_finite() {
    let (d, m) = (4, 12);
    let xi = random(41, m, d, 1.0);
    let x: Vec<f32> = xi.clone(); // every stored pattern as a query: its own score is the largest
    let norm2: f32 = xi.chunks(d).map(|r| r.iter().map(|v| v * v).sum::<f32>()).fold(0.0, f32::max);
    let beta = 1e4 / norm2;
    let bank = MemoryBank::new(ctx(), &xi, m, d).unwrap();
    let got = ctx().retrieve(&bank, &x, &opts(Method::Window { width: Some(5) }, beta)).unwrap();
    assert!(got.z.iter().all(|v| v.is_finite()));
    let xim = Matrix::from_f32(m, d, &xi);
    let want = cpu::window::window(&xim, &xim, &xim, f64::from(beta), 5);
    // Scores of 1e4 carry ~1e4 * 6e-8 * d of absolute error: weights of
    // near-ties may move by that much.
    assert_close("window z at 1e4", &got.z, &want.z.data, Tolerance::new(1e-2, 1e-3));
}

#[test]
fn window_zero_is_refused_on_the_command_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hopfield-gpu"))
        .args(["bench", "--method", "window", "--window", "0"])
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(err.contains("window"), "stderr does not name the window: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
