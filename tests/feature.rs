//! Kernel (feature-map) retrieval on the GPU: poly, linear and prf against
//! their f64 references (src/cpu/feature.rs, which never factorises through
//! S and n), against dense retrieval within the papers' bounds, determinism,
//! S/n reuse, the planner, and bad input.
//!
//! Tolerance against the exact references. The GPU evaluates the same
//! kernel in f32. The worst-case bound (f32_rounding_bound,
//! Higham's gamma_n over the ~1100-long rounding chain) is ~5e-4 for the
//! data below and far from what happens: rounding errors of a sum of n
//! terms behave like sqrt(n) u, not n u. With entries in [-0.5, 0.5], d <= 4
//! and beta = 1, R <= 1 and the polynomial's condition number
//! sum |c_k| R^k / min P is <= e^2 = 7.4, so the expected error is about
//! sqrt(1100) * 6e-8 * 7.4 * 0.5 = 7e-6. We allow 3e-5 (4x that); a wrong
//! coefficient, a missing feature or a mixed-up normaliser moves z by 1e-2
//! or more.

mod common;

use common::{assert_close, bank, ctx, random, small_binding_ctx};
use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{poly_choice, Context, Error, MemoryBank, Method, ProblemStats, RetrieveOptions};

const POLY_TOL: Tolerance = Tolerance::new(3e-5, 3e-5);

fn opts(method: Method, beta: f32) -> RetrieveOptions {
    RetrieveOptions { method, beta, max_steps: 1, eps: 0.0, energy: false, support: false }
}

fn taylor(degree: usize) -> Vec<f64> {
    cpu::feature::taylor(degree)
}

fn max_err(got: &[f32], want: &Matrix) -> f64 {
    assert_eq!(got.len(), want.data.len());
    got.iter().zip(&want.data).map(|(&a, b)| (f64::from(a) - b).abs()).fold(0.0, f64::max)
}

struct Case {
    d: usize,
    m: usize,
    l: usize,
    x: Vec<f32>,
    xi: Vec<f32>,
    v: Option<(Vec<f32>, usize)>,
}

impl Case {
    fn new(seed: u64, d: usize, m: usize, l: usize, dv: Option<usize>, scale: f32) -> Case {
        Case {
            d,
            m,
            l,
            x: random(seed, l, d, scale),
            xi: random(seed + 1, m, d, scale),
            v: dv.map(|dv| (random(seed + 2, m, dv, scale), dv)),
        }
    }
    fn bank(&self, ctx: &Context) -> MemoryBank {
        bank(ctx, &self.xi, self.m, self.d, self.v.as_ref().map(|(v, dv)| (&v[..], *dv))).0
    }
    fn q(&self) -> Matrix {
        Matrix::from_f32(self.l, self.d, &self.x)
    }
    fn mem(&self) -> Matrix {
        Matrix::from_f32(self.m, self.d, &self.xi)
    }
    fn values(&self) -> Matrix {
        match &self.v {
            Some((v, dv)) => Matrix::from_f32(self.m, *dv, v),
            None => self.mem(),
        }
    }
    fn stats(&self, beta: f64) -> ProblemStats {
        ProblemStats::new(&self.x, &self.xi, self.v.as_ref().map(|(v, dv)| (&v[..], *dv)), self.d, beta, 1).unwrap()
    }
    fn dense(&self, beta: f64) -> Matrix {
        cpu::dense::dense(&self.q(), &self.mem(), &self.values(), beta).z
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn poly_matches_the_exact_polynomial_kernel() {
    let ctx = ctx();
    let beta = 1.0f32;
    // M = 2500 spans three parts of 1024 memories (merged in order); dv = 5
    // is hetero-association; degree 3 is odd (still positive for R <= 1).
    for (i, &(d, m, l, dv, degree)) in
        [(4, 300, 33, None, None), (3, 2500, 20, None, None), (2, 100, 7, Some(5), Some(5)), (4, 50, 9, None, Some(3))]
            .iter()
            .enumerate()
    {
        let c = Case::new(40 + i as u64, d, m, l, dv, 0.5);
        let bank = c.bank(ctx);
        let g = match degree {
            Some(g) => g,
            None => poly_choice(&c.stats(1.0), 1e-3, None, ctx.max_binding()).unwrap().degree,
        };
        let got = ctx.retrieve(&bank, &c.x, &opts(Method::Poly { delta: 1e-3, degree }, beta)).unwrap();
        let want = cpu::feature::poly(&c.q(), &c.mem(), &c.values(), 1.0, &taylor(g));
        assert_close(&format!("poly d={d} m={m} l={l} dv={dv:?} g={g}"), &got.z, &want.data, POLY_TOL);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn poly_obeys_lemma_3_2_against_dense() {
    // Small B (entries in [-0.3, 0.3]), several delta_A: the measured
    // max-norm error against exact dense retrieval must stay below Lemma
    // 3.2's 2 M B delta_A and below the tighter 2 B delta / (1 - delta) plus
    // the worst-case f32 rounding bound (both from the planner's report).
    let ctx = ctx();
    for case in 0..3u64 {
        let c = Case::new(60 + case, 4, 200, 16, None, 0.3);
        let bank = c.bank(ctx);
        let want = c.dense(1.0);
        for delta in [1e-2, 1e-3, 1e-5] {
            let rep = poly_choice(&c.stats(1.0), delta, None, ctx.max_binding()).unwrap();
            let got = ctx.retrieve(&bank, &c.x, &opts(Method::Poly { delta, degree: None }, 1.0)).unwrap();
            let err = max_err(&got.z, &want);
            assert!(err <= rep.lemma_bound, "case {case}, delta {delta}: {err} > Lemma 3.2 {}", rep.lemma_bound);
            assert!(err <= rep.guaranteed_error(), "case {case}, delta {delta}: {err} > {}", rep.guaranteed_error());
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn poly_error_shrinks_as_the_degree_grows() {
    let ctx = ctx();
    let c = Case::new(70, 4, 256, 16, None, 0.5);
    let bank = c.bank(ctx);
    let want = c.dense(1.0);
    // Even degrees (odd terms barely change the ratio, so g and g + 1 can tie).
    let errs: Vec<f64> = [2, 4, 6]
        .iter()
        .map(|&g| {
            let z = ctx.retrieve(&bank, &c.x, &opts(Method::Poly { delta: 0.5, degree: Some(g) }, 1.0)).unwrap().z;
            max_err(&z, &want)
        })
        .collect();
    for w in errs.windows(2) {
        assert!(w[1] < w[0], "{errs:?}");
    }
    assert_eq!(bank.feature_builds(), 3, "one S/n per degree");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn linear_matches_its_reference() {
    // elu(x) + 1 is positive with no cancellation: every term of every sum is
    // positive (except values), errors ~ sqrt(n) u; 1e-5 is generous.
    let ctx = ctx();
    for (i, &(d, m, l, dv)) in [(5, 300, 17, None), (3, 1500, 4, Some(2))].iter().enumerate() {
        let c = Case::new(80 + i as u64, d, m, l, dv, 1.0);
        let got = ctx.retrieve(&c.bank(ctx), &c.x, &opts(Method::Linear, 1.0)).unwrap();
        let want = cpu::feature::linear(&c.q(), &c.mem(), &c.values());
        assert_close(&format!("linear d={d} m={m}"), &got.z, &want.data, Tolerance::new(1e-5, 1e-5));
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn prf_matches_its_reference_with_the_same_w() {
    // The reference gets W as the GPU sees it (f32, widened). Exponents of
    // size up to sqrt(beta) |w| |x| ~ 5 carry ~d u relative error each, so a
    // weight is off by ~1e-6 relative; z by ~1e-6. 2e-5 allows for 3000 memories.
    let ctx = ctx();
    for (i, &(d, m, l, features, orthogonal, beta)) in
        [(4, 300, 9, 32, false, 1.0f32), (6, 3000, 5, 64, true, 0.5), (3, 50, 3, 7, false, 8.0)].iter().enumerate()
    {
        let c = Case::new(90 + i as u64, d, m, l, None, 1.0);
        let method = Method::Prf { features: Some(features), seed: 7 + i as u64, orthogonal };
        let got = ctx.retrieve(&c.bank(ctx), &c.x, &opts(method, beta)).unwrap();
        let w = cpu::feature::prf_projection(d, features, 7 + i as u64, orthogonal).unwrap();
        let want = cpu::feature::prf(&c.q(), &c.mem(), &c.values(), f64::from(beta), &w);
        assert_close(&format!("prf d={d} m={m} beta={beta}"), &got.z, &want.data, Tolerance::new(2e-5, 2e-5));
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn prf_with_many_features_approaches_dense() {
    // The bound of cpu::feature's test of the same name: entries in
    // [-0.3, 0.3], d = 4, beta = 1 give |x' + y'|^2 <= 1.44, so with 20000
    // features each kernel estimate has relative standard error <= 0.0127;
    // allowing 5 of them for every one of the M L = 1024 pairs (chance of
    // any exceeding it ~6e-4 under the normal approximation), z moves by at
    // most 2 * 0.063 * 0.3 / 0.937 = 0.040. The seed is fixed, so the test is
    // deterministic; we assert half of that worst case.
    let ctx = ctx();
    let c = Case::new(95, 4, 64, 16, None, 0.3);
    let got = ctx
        .retrieve(&c.bank(ctx), &c.x, &opts(Method::Prf { features: Some(20_000), seed: 2024, orthogonal: true }, 1.0))
        .unwrap();
    let err = max_err(&got.z, &c.dense(1.0));
    assert!(err < 0.02, "{err}");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn two_runs_give_the_same_bits() {
    // Fresh banks, so S and n are rebuilt from scratch each time; M = 5000
    // spans five parts, whose partial sums are merged in a fixed order.
    let ctx = ctx();
    let c = Case::new(100, 4, 5000, 40, None, 0.5);
    for method in [
        Method::Poly { delta: 1e-3, degree: None },
        Method::Linear,
        Method::Prf { features: None, seed: 3, orthogonal: false },
    ] {
        let a = ctx.retrieve(&c.bank(ctx), &c.x, &opts(method, 1.0)).unwrap().z;
        let b = ctx.retrieve(&c.bank(ctx), &c.x, &opts(method, 1.0)).unwrap().z;
        let (ab, bb): (Vec<u32>, Vec<u32>) =
            (a.iter().map(|v| v.to_bits()).collect(), b.iter().map(|v| v.to_bits()).collect());
        assert_eq!(ab, bb, "{method:?}: results differ between runs");
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn s_and_n_are_built_once_per_bank() {
    let ctx = ctx();
    let c = Case::new(110, 3, 400, 30, None, 0.5);
    let bank = c.bank(ctx);
    let method = Method::Poly { delta: 1e-3, degree: Some(4) };
    let first = ctx.retrieve(&bank, &c.x[..10 * 3], &opts(method, 1.0)).unwrap();
    assert_eq!(bank.feature_builds(), 1);
    let second = ctx.retrieve(&bank, &c.x[10 * 3..], &opts(method, 1.0)).unwrap();
    assert_eq!(bank.feature_builds(), 1, "the second batch rebuilt S and n");
    // The reused state answers the second batch exactly as a fresh bank does.
    let fresh = ctx.retrieve(&c.bank(ctx), &c.x[10 * 3..], &opts(method, 1.0)).unwrap();
    assert_eq!(second.z, fresh.z);
    let want = cpu::feature::poly(&c.q(), &c.mem(), &c.mem(), 1.0, &taylor(4));
    let mut all = first.z.clone();
    all.extend_from_slice(&second.z);
    assert_close("batched poly", &all, &want.data, POLY_TOL);
    // Another beta is another feature map.
    ctx.retrieve(&bank, &c.x, &opts(method, 0.5)).unwrap();
    assert_eq!(bank.feature_builds(), 2);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn planner_output_is_within_its_tolerance() {
    let ctx = ctx();
    // Small B, d = 2, M = L = 1024: the polynomial path is cheaper and guaranteed.
    let c = Case::new(130, 2, 1024, 1024, None, 0.4);
    let tol = 1e-2;
    let plan = hopfield_gpu::plan(&c.stats(1.0), tol, ctx.max_binding()).unwrap();
    assert!(matches!(plan.choice, Method::Poly { degree: Some(_), .. }), "{plan}");
    let text = plan.to_string();
    for needle in ["B = ", "sqrt(ln tau)", "g = ", "r = ", "flops"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let got = ctx.retrieve(&c.bank(ctx), &c.x, &opts(Method::Auto { tolerance: tol }, 1.0)).unwrap();
    let err = max_err(&got.z, &c.dense(1.0));
    assert!(err <= tol, "{err} > {tol}\n{plan}");
    // Large B (scores over [-32, 32]): no polynomial is possible in f32; dense.
    let big = Case::new(131, 4, 64, 8, None, 4.0);
    let plan = hopfield_gpu::plan(&big.stats(0.5), tol, ctx.max_binding()).unwrap();
    assert_eq!(plan.choice, Method::Dense, "{plan}");
    let got = ctx.retrieve(&big.bank(ctx), &big.x, &opts(Method::Auto { tolerance: tol }, 0.5)).unwrap();
    assert!(max_err(&got.z, &big.dense(0.5)) <= tol);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn bad_input_gets_typed_errors() {
    let ctx = ctx();
    let c = Case::new(140, 4, 20, 3, None, 0.5);
    let bank = c.bank(ctx);
    let run = |m| ctx.retrieve(&bank, &c.x, &opts(m, 1.0)).unwrap_err();
    for delta in [0.0, 1.0, -1e-3, f64::NAN] {
        assert!(matches!(run(Method::Poly { delta, degree: None }), Error::InvalidParameter { name: "delta", .. }));
    }
    assert!(matches!(
        run(Method::Poly { delta: 1e-3, degree: Some(0) }),
        Error::InvalidParameter { name: "degree", .. }
    ));
    assert!(matches!(
        run(Method::Prf { features: Some(0), seed: 0, orthogonal: false }),
        Error::InvalidParameter { name: "features", .. }
    ));
    assert!(matches!(run(Method::Auto { tolerance: 0.0 }), Error::InvalidParameter { name: "tolerance", .. }));
    // A rank beyond the device: d = 64 at degree 12 has r = C(76, 12) ~ 1.8e13.
    let wide = Case::new(141, 64, 4, 2, None, 0.1);
    let err =
        ctx.retrieve(&wide.bank(ctx), &wide.x, &opts(Method::Poly { delta: 1e-3, degree: Some(12) }, 1.0)).unwrap_err();
    assert!(matches!(err, Error::DeviceLimit { .. }), "{err}");
    assert!(err.to_string().contains("rank r = "), "{err}");
    // Support sets do not exist for kernel methods.
    let err = ctx.retrieve(&bank, &c.x, &RetrieveOptions { support: true, ..opts(Method::Linear, 1.0) }).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn chunked_bank_gives_the_same_poly_result() {
    // 4 KiB bindings: the bank becomes several segments and the build runs
    // one round per segment piece, with tiny rounds.
    let small = small_binding_ctx();
    let c = Case::new(150, 2, 700, 10, None, 0.5);
    let chunked = c.bank(&small);
    assert!(chunked.segment_count() > 1);
    let method = Method::Poly { delta: 1e-3, degree: Some(4) };
    let got = small.retrieve(&chunked, &c.x, &opts(method, 1.0)).unwrap();
    let want = cpu::feature::poly(&c.q(), &c.mem(), &c.mem(), 1.0, &taylor(4));
    assert_close("chunked poly", &got.z, &want.data, POLY_TOL);
}

fn bench(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hopfield-gpu"))
        .arg("bench")
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the binary runs")
}

#[test]
fn cli_flags_of_the_kernel_methods_are_checked() {
    // All refused before a device is opened.
    let size = ["--d", "2", "--m", "10", "--l", "10"];
    for (flags, needle) in [
        (&["--method", "poly"][..], "--delta"),
        (&["--method", "poly", "--delta", "1.5"], "--delta"),
        (&["--method", "poly", "--delta", "0"], "(0, 1)"),
        (&["--method", "poly", "--delta", "1e-3", "--degree", "0"], "--degree"),
        (&["--method", "prf", "--features", "0"], "--features"),
        (&["--method", "dense", "--seed", "3"], "--seed"),
        (&["--method", "dense", "--delta", "1e-3"], "--delta"),
        (&["--method", "auto"], "--tolerance"),
        (&["--method", "auto", "--tolerance", "-1"], "--tolerance"),
    ] {
        let out = bench(&[flags, &size[..]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} succeeded");
        assert!(err.contains(needle) && !err.contains("panicked"), "{flags:?}: {err}");
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn bench_runs_poly_and_auto_single_configurations() {
    let out = bench(&[
        "--method",
        "poly",
        "--d",
        "2",
        "--m",
        "300",
        "--l",
        "50",
        "--delta",
        "1e-3",
        "--json",
        "--repeats",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("rank r = ") && err.contains("Lemma 3.2"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rec = &json["records"][0];
    assert_eq!(rec["method"], "poly");
    // Against the exact polynomial kernel (see POLY_TOL).
    assert!(rec["max_abs_err"].as_f64().unwrap() < 3e-5, "{rec}");

    let out = bench(&[
        "--method",
        "auto",
        "--tolerance",
        "1e-2",
        "--d",
        "2",
        "--m",
        "1024",
        "--l",
        "256",
        "--scale",
        "0.4",
        "--repeats",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("sqrt(ln tau)") && err.contains("choice: poly"), "{err}");
}

/// Issue 8 §6.3: `--features 1000000000` tried to allocate W (64 GB) before
/// any size check and aborted; 1e8 spent 25 s and 6.4 GB before refusing,
/// with a message ("m and d must stay below 24968") that read oddly at
/// d = 8. Every size is now checked before W is drawn.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn huge_feature_counts_are_refused_before_drawing_w() {
    let ctx = ctx();
    let c = Case::new(150, 8, 20, 3, None, 0.5);
    let bank = c.bank(ctx);
    for features in [100_000_000, 1_000_000_000, usize::MAX / 2] {
        for orthogonal in [false, true] {
            let method = Method::Prf { features: Some(features), seed: 0, orthogonal };
            let err = ctx.retrieve(&bank, &c.x, &opts(method, 1.0)).unwrap_err();
            assert!(matches!(err, Error::DeviceLimit { .. }), "{features}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(&features.to_string()) && msg.contains("at most"), "{msg}");
            assert!(!msg.contains("m and d"), "{msg}");
        }
    }
    // With bindings of 4 KiB, S and n ([r, d + 1] f32) of 200 features need
    // 7200 bytes, and W of 100 features at d = 8 fits but S (3600) too: the
    // first is refused, the second runs.
    let small = small_binding_ctx();
    let bank = c.bank(&small);
    let err = small
        .retrieve(&bank, &c.x, &opts(Method::Prf { features: Some(200), seed: 0, orthogonal: false }, 1.0))
        .unwrap_err();
    assert!(matches!(err, Error::DeviceLimit { .. }) && err.to_string().contains("at most r = 113"), "{err}");
    small.retrieve(&bank, &c.x, &opts(Method::Prf { features: Some(100), seed: 0, orthogonal: false }, 1.0)).unwrap();
}

/// Issue 8 §6.15: at d = 1 the default was ceil(d ln d) = 1 feature, with
/// which every query gets the same output (S / n). The default now has a
/// floor of 64 features; the GPU matches its reference with that W, and
/// different queries get different answers, as under dense retrieval.
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn prf_default_at_d_1_tells_queries_apart() {
    let ctx = ctx();
    let (xi, x) = ([-1.0f32, -0.5, 0.5, 1.0], [-1.0f32, 1.0]);
    let bank = MemoryBank::new(ctx, &xi, 4, 1).unwrap();
    let got = ctx.retrieve(&bank, &x, &opts(Method::Prf { features: None, seed: 5, orthogonal: false }, 0.5)).unwrap();
    let m = hopfield_gpu::default_feature_count(1);
    assert_eq!(m, 64);
    let w = cpu::feature::prf_projection(1, m, 5, false).unwrap();
    let (q, mem) = (Matrix::from_f32(2, 1, &x), Matrix::from_f32(4, 1, &xi));
    let want = cpu::feature::prf(&q, &mem, &mem, 0.5, &w);
    assert_close("prf d = 1", &got.z, &want.data, Tolerance::new(2e-5, 2e-5));
    // Dense gives -/+0.30 here; one feature gave the same value twice.
    assert!(got.z[0] < -0.1 && got.z[1] > 0.1, "{:?}", got.z);
}
