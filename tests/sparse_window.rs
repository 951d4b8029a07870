//! Sliding-window, sparsemax and 1.5-entmax retrieval on the GPU against the
//! f64 CPU references (src/cpu/sparse.rs `sparse` with `Support::Window`,
//! src/cpu/entmax.rs `entmax`), with the supports compared exactly.
//!
//! Tolerances. As in tests/dense.rs: the kernels score in f32, so a score
//! carries ~sqrt(d) 6e-8 beta |x| |xi| of rounding, < 1e-5 for the data below
//! (entries in [-1, 1], beta |x| |xi| <= 3 d / sqrt(d)). A softmax weight over
//! the window inherits it as a relative error and z (a convex combination of
//! values bounded by 1) as an absolute one: z abs 1e-4, rel 1e-4. sparsemax
//! weights are p = u - tau, with tau a mean over the support, so their
//! absolute error is that of the scores (entmax: 2 sqrt(p) times that);
//! z sums at most M such errors times |v| <= 1, which stays below 1e-4 for
//! the sizes here. Energies as tests/dense.rs.
//!
//! Supports are compared exactly. A memory whose score lies within rounding
//! of the sparsemax/entmax threshold could legitimately fall on either side
//! in f32; `assert_unambiguous` checks that the reference's margin to the
//! threshold is at least 1e-4 (10x the score error) for every memory, so
//! that an exact comparison is fair, and fails loudly (pick other data) if not.

mod common;

use common::{assert_close, ctx, random};
use hopfield_gpu::cpu::entmax::Normalizer;
use hopfield_gpu::cpu::sparse::{default_window, window_range, Support};
use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{Context, ContextOptions, MemoryBank, Method, Retrieval, RetrieveOptions};

const Z_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);
const E_TOL: Tolerance = Tolerance::new(1e-4, 1e-5);

fn opts(method: Method, beta: f32) -> RetrieveOptions {
    let mut o = RetrieveOptions::dense(beta).method(method);
    o.support = true;
    o
}

/// Reference supports (ascending) padded with -1 to `width`, row-major.
fn padded(support: &[Vec<usize>], width: usize) -> Vec<i32> {
    let mut out = Vec::with_capacity(support.len() * width);
    for s in support {
        let mut row: Vec<i32> = s.iter().map(|&i| i as i32).collect();
        assert!(row.windows(2).all(|w| w[0] < w[1]), "reference support not ascending: {row:?}");
        row.resize(width, -1);
        out.extend(row);
    }
    out
}

fn assert_support(what: &str, got: &Retrieval, want: &[Vec<usize>], width: usize) {
    let s = got.support.as_ref().expect("support asked for");
    assert_eq!(s.width, width, "{what}: support width");
    let want = padded(want, width);
    for (q, (g, w)) in s.indices.chunks(width).zip(want.chunks(width)).enumerate() {
        assert_eq!(g, w, "{what}: support of query {q}");
    }
    assert_eq!(s.indices.len(), want.len(), "{what}: support length");
}

/// A bank of `m` memories of dimension `d` and optionally separate values.
fn bank(ctx: &Context, xi: &[f32], m: usize, d: usize, v: Option<(&[f32], usize)>) -> (MemoryBank, Matrix) {
    match v {
        Some((v, dv)) => (MemoryBank::with_values(ctx, xi, m, d, v, dv).unwrap(), Matrix::from_f32(m, dv, v)),
        None => (MemoryBank::new(ctx, xi, m, d).unwrap(), Matrix::from_f32(m, d, xi)),
    }
}

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
    let want = cpu::sparse::sparse(&xs, &xim, &v, f64::from(beta), Support::Window { width: w });
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
    let small = Context::new(&ContextOptions { max_binding_bytes: Some(4096), ..Default::default() }).unwrap();
    let (d, m, l) = (24, 300, 20);
    let xi = random(31, m, d, 1.0);
    let x = random(32, l, d, 1.0);
    let b = MemoryBank::new(&small, &xi, m, d).unwrap();
    assert!(b.segment_count() > 3, "expected several segments, got {}", b.segment_count());
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    for width in [Some(60), None, Some(1), Some(400)] {
        let got = small.retrieve(&b, &x, &opts(Method::Window { width }, 0.5)).unwrap();
        let w = width.unwrap_or_else(|| default_window(m));
        let want = cpu::sparse::sparse(&xs, &xim, &xim, 0.5, Support::Window { width: w });
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
    let want = cpu::sparse::sparse(&xim, &xim, &xim, f64::from(beta), Support::Window { width: 5 });
    // Scores of 1e4 carry ~1e4 * 6e-8 * d of absolute error: weights of
    // near-ties may move by that much.
    assert_close("window z at 1e4", &got.z, &want.z.data, Tolerance::new(1e-2, 1e-3));
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn window_dynamics_match_reference() {
    let (d, m, l) = (16, 40, 12);
    let beta = 2.0;
    let xi = random(51, m, d, 1.0);
    let x = random(52, l, d, 1.0);
    let bank = MemoryBank::new(ctx(), &xi, m, d).unwrap();
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    let eps = 1e-4;
    let width = 7;
    let mut o = RetrieveOptions::dense(beta).method(Method::Window { width: Some(width) }).steps(20, eps);
    o.support = true;
    let r = ctx().retrieve(&bank, &x, &o).unwrap();
    let want = cpu::sparse::sparse_dynamics(&xs, &xim, f64::from(beta), 20, f64::from(eps), Support::Window { width });
    assert_close("window final states", &r.z, &want.state.data, Z_TOL);
    assert_close("window final energies (dense E)", r.energy.as_ref().unwrap(), &want.energy, E_TOL);
    assert_eq!(r.converged, want.converged, "converged flags");
    for (q, (&g, &w)) in r.steps.iter().zip(&want.steps).enumerate() {
        assert!((g as i64 - w as i64).abs() <= 1, "query {q}: {g} steps on the GPU, {w} in the reference");
    }
    assert!(r.steps.iter().any(|&s| s > 1), "steps {:?}", r.steps);
    // The support of a window depends on the query's index only.
    let supports: Vec<Vec<usize>> = (0..l).map(|q| window_range(q, l, m, width).collect()).collect();
    assert_support("window dynamics", &r, &supports, width);
}

/// The threshold of the reference's weights `p` for scores `s`, from any
/// memory in the support, and a check that every memory is at least `margin`
/// away from it (in the map's shifted units), so that f32 scores cannot flip
/// the support.
fn assert_unambiguous(s: &[f64], p: &[f64], map: Normalizer, margin: f64) {
    let a = if map == Normalizer::Entmax15 { 0.5 } else { 1.0 };
    let u: Vec<f64> = s.iter().map(|&v| v * a).collect();
    let i = (0..p.len()).max_by(|&i, &j| p[i].total_cmp(&p[j])).unwrap();
    let tau = if map == Normalizer::Entmax15 { u[i] - p[i].sqrt() } else { u[i] - p[i] };
    for (j, &uj) in u.iter().enumerate() {
        assert!((uj - tau).abs() >= margin, "ambiguous test data: memory {j} lies {} from the threshold", uj - tau);
    }
}

/// One sparsemax / entmax retrieval against the reference.
#[expect(clippy::too_many_arguments, reason = "a test case is its data plus its tolerance")]
fn check_entmax(
    ctx: &Context,
    xi: &[f32],
    m: usize,
    d: usize,
    x: &[f32],
    v: Option<(&[f32], usize)>,
    beta: f32,
    map: Normalizer,
    tol: Tolerance,
) -> Retrieval {
    let l = x.len() / d;
    let method = if map == Normalizer::Sparsemax { Method::Sparsemax } else { Method::Entmax15 };
    let (bank, vm) = bank(ctx, xi, m, d, v);
    let got = ctx.retrieve(&bank, x, &opts(method, beta)).unwrap();
    let (xs, xim) = (Matrix::from_f32(l, d, x), Matrix::from_f32(m, d, xi));
    let want = cpu::entmax::entmax(&xs, &xim, &vm, f64::from(beta), map);
    for q in 0..l {
        let s = cpu::dense::scores(xs.row(q), &xim, f64::from(beta));
        assert_unambiguous(&s, &map.apply(&s), map, 1e-4);
    }
    let what = format!("{map:?} d={d} m={m} l={l}");
    assert_close(&format!("{what}: z"), &got.z, &want.z.data, tol);
    assert_support(&what, &got, &want.support, m);
    if v.is_none() {
        let e: Vec<f64> = (0..l).map(|i| cpu::dense::energy(want.z.row(i), &xim, f64::from(beta))).collect();
        assert_close(&format!("{what}: energy"), got.energy.as_ref().unwrap(), &e, E_TOL);
    }
    got
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn sparsemax_and_entmax_golden_vectors() {
    // d = 1, beta = 1, query 1: the scores are exactly [-2, 0, 0.5]; identity
    // values make z the weight row.
    let eye = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let four_digits = Tolerance::new(5e-5, 0.0); // SEMANTICS.md prints 4 decimals
    for (map, golden) in [(Normalizer::Sparsemax, [0.0, 0.25, 0.75]), (Normalizer::Entmax15, [0.0, 0.3260, 0.6740])] {
        let got =
            check_entmax(ctx(), &[-2.0, 0.0, 0.5], 3, 1, &[1.0], Some((&eye, 3)), 1.0, map, Tolerance::new(1e-6, 1e-6));
        assert_close(&format!("{map:?} golden"), &got.z, &golden, four_digits);
        assert_eq!(got.support.unwrap().indices, vec![1, 2, -1]);
    }
    // Softmax for the same scores, through the dense kernel.
    let bank = MemoryBank::with_values(ctx(), &[-2.0, 0.0, 0.5], 3, 1, &eye, 3).unwrap();
    let soft = ctx().retrieve(&bank, &[1.0], &RetrieveOptions::dense(1.0)).unwrap();
    assert_close("softmax golden", &soft.z, &[0.0486, 0.3592, 0.5922], four_digits);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn sparsemax_and_entmax_match_reference_on_random_data() {
    for map in [Normalizer::Sparsemax, Normalizer::Entmax15] {
        for (i, &(d, m, l, beta)) in
            [(8, 50, 13, 1.0), (3, 200, 5, 2.0), (64, 130, 9, 0.25), (1, 1, 2, 1.0), (16, 700, 4, 0.5)]
                .iter()
                .enumerate()
        {
            let seed = 100 + i as u64 * 3;
            let xi = random(seed, m, d, 1.0);
            let x = random(seed + 1, l, d, 1.0);
            let got = check_entmax(ctx(), &xi, m, d, &x, None, beta, map, Z_TOL);
            if (d, m) == (8, 50) {
                // The data must reach non-trivial supports, or the test proves little.
                let sizes: Vec<usize> =
                    got.support.unwrap().indices.chunks(m).map(|r| r.iter().filter(|&&i| i >= 0).count()).collect();
                assert!(sizes.iter().any(|&s| s > 2), "{map:?}: support sizes {sizes:?}");
            }
        }
        // Hetero values across two 64-column blocks.
        let (d, m, l) = (5, 40, 6);
        let (xi, x, v) = (random(7, m, d, 1.0), random(8, l, d, 1.0), random(9, m, 70, 1.0));
        check_entmax(ctx(), &xi, m, d, &x, Some((&v, 70)), 2.0, map, Z_TOL);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn sparsemax_and_entmax_one_hot_ties_and_huge_scores() {
    for map in [Normalizer::Sparsemax, Normalizer::Entmax15] {
        // One-hot: memories e_0 .. e_8, a query near e_2; scores 5 vs < 1.
        let (d, m) = (9, 9);
        let eye9: Vec<f32> = (0..m * d).map(|i| if i % (d + 1) == 0 { 1.0 } else { 0.0 }).collect();
        let mut q: Vec<f32> = random(61, 1, d, 0.1);
        q[2] += 1.0;
        let got = check_entmax(ctx(), &eye9, m, d, &q, None, 5.0, map, Z_TOL);
        assert_eq!(got.support.as_ref().unwrap().indices, vec![2, -1, -1, -1, -1, -1, -1, -1, -1]);
        assert_close("one-hot z", &got.z, &eye9[2 * d..3 * d].iter().map(|&v| f64::from(v)).collect::<Vec<_>>(), Z_TOL);
        // An exact tie at the top shares the weight equally; the third memory
        // is far enough below to stay out of both maps' support.
        let eye = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let got =
            check_entmax(ctx(), &[1.0, 1.0, -1.2], 3, 1, &[1.0], Some((&eye, 3)), 1.0, map, Tolerance::new(1e-6, 1e-6));
        assert_close("tie", &got.z, &[0.5, 0.5, 0.0], Tolerance::new(1e-6, 0.0));
        assert_eq!(got.support.unwrap().indices, vec![0, 1, -1]);
        // Scores around 1e4: finite, and (one-hot here, as the reference).
        let (d, m) = (6, 9);
        let xi = random(62, m, d, 1.0);
        let norm2: f32 = xi.chunks(d).map(|r| r.iter().map(|v| v * v).sum::<f32>()).fold(0.0, f32::max);
        let beta = 1e4 / norm2;
        // Scores of 1e4 carry ~1e-3 of absolute f32 error.
        let got = check_entmax(ctx(), &xi, m, d, &xi, None, beta, map, Tolerance::new(1e-2, 1e-3));
        assert!(got.z.iter().all(|v| v.is_finite()));
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn sparsemax_and_entmax_over_a_chunked_bank() {
    // 4 KiB bindings: 300 memories of d = 24 span several segments, and one
    // query's 300 scores (1200 bytes) leave room for 3 queries per sub-batch.
    let small = Context::new(&ContextOptions { max_binding_bytes: Some(4096), ..Default::default() }).unwrap();
    let (d, m, l) = (24, 300, 10);
    let xi = random(71, m, d, 1.0);
    let x = random(72, l, d, 1.0);
    for map in [Normalizer::Sparsemax, Normalizer::Entmax15] {
        let got = check_entmax(&small, &xi, m, d, &x, None, 1.5, map, Z_TOL);
        assert_eq!(got.z.len(), l * d);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn sparsemax_and_entmax_dynamics_match_reference() {
    let (d, m, l) = (16, 40, 8);
    let beta = 3.0;
    let xi = random(81, m, d, 1.0);
    let x = random(82, l, d, 1.0);
    let bank = MemoryBank::new(ctx(), &xi, m, d).unwrap();
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    let eps = 1e-4;
    for (map, method) in [(Normalizer::Sparsemax, Method::Sparsemax), (Normalizer::Entmax15, Method::Entmax15)] {
        let r = ctx().retrieve(&bank, &x, &RetrieveOptions::dense(beta).method(method).steps(20, eps)).unwrap();
        let update = cpu::entmax::entmax_update(&xim, f64::from(beta), map);
        let want = cpu::dense::dynamics(&xs, &xim, f64::from(beta), 20, f64::from(eps), update);
        assert_close(&format!("{map:?} final states"), &r.z, &want.state.data, Z_TOL);
        assert_close(&format!("{map:?} final energies"), r.energy.as_ref().unwrap(), &want.energy, E_TOL);
        assert_eq!(r.converged, want.converged, "{map:?} converged flags");
        for (q, (&g, &w)) in r.steps.iter().zip(&want.steps).enumerate() {
            assert!((g as i64 - w as i64).abs() <= 1, "{map:?} query {q}: {g} steps on the GPU, {w} in the reference");
        }
        assert!(r.steps.iter().any(|&s| s > 1), "{map:?} steps {:?}", r.steps);
    }
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
