//! The iterated dynamics of every method against the f64 reference
//! (src/cpu/update.rs): dense through its own merge pass, every other family
//! through shaders/update.wgsl; per-query stopping, step counts, the dense
//! energy of the final states, progress reports and the checks that only
//! iterating needs.
//!
//! Tolerances as in tests/dense.rs: z abs 1e-4 + rel 1e-4 (f32 scores, convex
//! combinations of values bounded by 1); energies (|E| ~ 10) abs 1e-4 + rel
//! 1e-5. Step counts may differ from the reference by one where a query's
//! change lands within f32 rounding of eps.

mod common;

use common::{assert_close, assert_support, bank, ctx, random};
use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{window_range, Error, MemoryBank, Method, RetrieveOptions};

const Z_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);
const E_TOL: Tolerance = Tolerance::new(1e-4, 1e-5);

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn topk_and_random_dynamics_match_reference_per_query() {
    let ctx = ctx();
    let (d, m, l) = (16, 60, 10);
    let beta = 2.0f32;
    let xi = random(1001, m, d, 1.0);
    let x = random(1002, l, d, 1.0);
    let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    for method in [Method::TopK { k: 3 }, Method::TopK { k: 70 }, Method::Random { k: 20, seed: 4 }] {
        for (steps, eps) in [(3, 0.0f32), (30, 1e-4)] {
            let opts = RetrieveOptions { method, beta, max_steps: steps, eps, energy: true, support: false };
            let r = ctx.retrieve(&bank, &x, &opts).unwrap();
            let want = cpu::dynamics(&method, &xs, &xim, f64::from(beta), steps as usize, f64::from(eps)).unwrap();
            let what = format!("{method:?} steps={steps} eps={eps}");
            assert_close(&format!("{what}: states"), &r.z, &want.state.data, Z_TOL);
            // Sparse methods report the dense energy E(x) of the final state.
            assert_close(&format!("{what}: energy"), r.energy.as_ref().unwrap(), &want.energy, E_TOL);
            assert_eq!(r.converged, want.converged, "{what}: converged");
            for (q, (&g, &w)) in r.steps.iter().zip(&want.steps).enumerate() {
                // As in tests/dense.rs: one step of slack where a change lands within f32 rounding of eps.
                assert!(
                    (g as i64 - w as i64).abs() <= 1,
                    "{what}: query {q}: {g} steps on the GPU, {w} in the reference"
                );
            }
        }
    }
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
    let method = Method::Window { width: Some(width) };
    let want = cpu::dynamics(&method, &xs, &xim, f64::from(beta), 20, f64::from(eps)).unwrap();
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
    for map in [Method::Sparsemax, Method::Entmax15] {
        let r = ctx().retrieve(&bank, &x, &RetrieveOptions::dense(beta).method(map).steps(20, eps)).unwrap();
        let want = cpu::dynamics(&map, &xs, &xim, f64::from(beta), 20, f64::from(eps)).unwrap();
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
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn poly_dynamics_match_the_reference() {
    // Five steps of x <- z(x) through the generic update kernel; the
    // reference iterates the exact polynomial kernel in f64.
    let ctx = ctx();
    let (d, m, l) = (3, 200, 12);
    let (x, xi) = (random(120, l, d, 0.5), random(121, m, d, 0.5));
    let g = 6;
    let method = Method::Poly { delta: 1e-3, degree: Some(g) };
    let o = RetrieveOptions { method, beta: 2.0, max_steps: 5, eps: 1e-7, energy: true, support: false };
    let got = ctx.retrieve(&MemoryBank::new(ctx, &xi, m, d).unwrap(), &x, &o).unwrap();
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    let want = cpu::dynamics(&method, &xs, &xim, 2.0, 5, 1e-7).unwrap();
    assert_close("poly dynamics", &got.z, &want.state.data, Tolerance::new(1e-4, 1e-4));
    // The energy is the dense E(x) of the final state.
    assert_close("energy", got.energy.as_ref().unwrap(), &want.energy, Tolerance::new(1e-4, 1e-5));
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn hetero_association_reports_the_one_step_applied() {
    // Issue 8 §6 #11: with values of another dimension every method applies
    // exactly one update, and says so (non-dense methods reported 0).
    let ctx = ctx();
    let (d, m, l, dv) = (6, 50, 7, 3);
    let (x, xi, v) = (random(1201, l, d, 1.0), random(1202, m, d, 1.0), random(1203, m, dv, 1.0));
    let (bank, vm) = bank(ctx, &xi, m, d, Some((&v, dv)));
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    for method in [
        Method::Dense,
        Method::TopK { k: 5 },
        Method::Random { k: 9, seed: 2 },
        Method::Window { width: Some(8) },
        Method::Sparsemax,
        Method::Entmax15,
        Method::Linear,
    ] {
        let got = ctx.retrieve(&bank, &x, &RetrieveOptions::dense(0.7).method(method)).unwrap();
        assert_eq!(got.steps, vec![1; l], "{method:?}: steps");
        assert_eq!(got.converged, vec![false; l], "{method:?}: no fixed point without dv == d");
        let want = cpu::retrieve(&method, &xs, &xim, &vm, 0.7).unwrap();
        // Linear is its own kernel, f32 sums of positive terms: 1e-5 is ample; the others as Z_TOL.
        assert_close(&format!("{method:?}: z"), &got.z, &want.z.data, Z_TOL);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn long_dynamics_report_progress_and_can_be_stopped() {
    // Issue 8 §6 #13: the observer sees steps done and queries still moving
    // after every check (every 8 steps), and can end the call cleanly.
    //
    // Two memories +-e (a unit vector) at beta = 1: T(x) = e tanh(<e, x>)
    // along e, whose fixed point 0 has slope exactly 1 (critical slowing:
    // the state decays like 1/sqrt(t)), so after 30 steps every query still
    // moves by ~1e-2, far above an f32 ulp. (With a contraction the f32
    // iteration may lock into an exact fixed point within 30 steps, and
    // whether it does depends on the kernel's rounding.)
    let ctx = ctx();
    let (d, m, l) = (8, 2, 6);
    let e: Vec<f32> = (0..d).map(|k| if k % 2 == 0 { 0.5 } else { -0.5 }).collect(); // |e| = sqrt(2)
    let scale = 1.0 / 2f32.sqrt();
    let xi: Vec<f32> = e.iter().map(|v| v * scale).chain(e.iter().map(|v| -v * scale)).collect();
    let noise = random(1301, l, d, 0.05);
    let x: Vec<f32> = (0..l * d).map(|i| xi[i % d] * (0.2 + 0.1 * (i / d) as f32) + noise[i]).collect();
    let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
    let opts = RetrieveOptions::dense(1.0).steps(30, 0.0);
    let mut seen = Vec::new();
    let r = ctx
        .retrieve_observed(&bank, &x, &opts, &mut |p| {
            seen.push(*p);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    let steps: Vec<u32> = seen.iter().map(|p| p.steps_done).collect();
    // Checks after 8, 16 and 24 steps, then the end of the only batch.
    assert_eq!(steps, vec![8, 16, 24, 30], "{seen:?}");
    assert!(seen.iter().all(|p| p.max_steps == 30 && p.queries == l && p.batches == 1), "{seen:?}");
    // eps = 0 at the critical beta: nobody converges exactly, all keep moving.
    assert!(seen[..3].iter().all(|p| p.moving == l as u32), "{seen:?}");
    assert_eq!(r.steps, vec![30; l]);
    // The same retrieval without an observer gives the same bits.
    let plain = ctx.retrieve(&bank, &x, &opts).unwrap();
    assert_eq!(plain.z, r.z);
    // Stopping at the first check is a typed error naming the steps done.
    let stopped = ctx.retrieve_observed(&bank, &x, &opts, &mut |_| std::ops::ControlFlow::Break(()));
    assert!(matches!(stopped, Err(Error::Cancelled { steps_done: 8 })), "{stopped:?}");
    // Absurd step counts are refused up front, naming the field.
    let absurd = ctx.retrieve(&bank, &x, &opts.clone().steps(u32::MAX, 0.0));
    assert!(matches!(absurd, Err(Error::InvalidParameter { name: "max_steps", .. })), "{absurd:?}");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn overflow_check_counts_the_values_of_iterated_states() {
    // Issue 8 §6 #5: keys of norm 10 and values (dv = d) of norm 1e38: the
    // first scores are small, but iterated states are combinations of the
    // values, whose scores reach 1e39. Refused as an invalid beta for every
    // method, instead of a non-finite output or a silent zero.
    let ctx = ctx();
    let (d, m) = (4, 8);
    let xi: Vec<f32> = random(1401, m, d, 1.0).iter().map(|v| v.signum() * 5.0).collect(); // norm 10
    let v: Vec<f32> = random(1402, m, d, 1.0).iter().map(|v| v.signum() * 5e37).collect(); // norm 1e38
    let x = random(1403, 3, d, 1.0);
    let bank = MemoryBank::with_values(ctx, &xi, m, d, &v, d).unwrap();
    for method in [
        Method::Dense,
        Method::TopK { k: 3 },
        Method::Random { k: 3, seed: 1 },
        Method::Window { width: None },
        Method::Sparsemax,
        Method::Entmax15,
    ] {
        let opts = RetrieveOptions::dense(1.0).method(method).steps(3, 0.0);
        let err = ctx.retrieve(&bank, &x, &opts).unwrap_err();
        assert!(matches!(err, Error::InvalidParameter { name: "beta", .. }), "{method:?}: {err}");
        // One step without the energy pass scores only queries against keys: fine.
        let one = RetrieveOptions { energy: false, ..RetrieveOptions::dense(1.0).method(method) };
        let r = ctx.retrieve(&bank, &x, &one).unwrap();
        assert!(r.z.iter().all(|z| z.is_finite()), "{method:?}");
    }
}
