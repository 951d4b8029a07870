//! Top-K and random-mask retrieval on the GPU against the f64 CPU reference
//! (src/cpu/topk.rs), and the command line's `--k` / `--support-out`.
//! Their dynamics are in tests/update.rs.
//!
//! Data. Supports are compared exactly, so the top-K cases use keys and
//! queries on a grid of multiples of 1/8 in [-1, 1] with beta a power of two:
//! every product is a multiple of 1/64 and every partial sum of d <= 64 of
//! them is exact in f32, so the GPU's scores equal the reference's bit for
//! bit whatever the summation order. Ties are then real ties (many of them,
//! with 17 levels per coordinate) and the rule "lower index wins" is tested,
//! not a lucky ordering of rounding errors. Random masks depend on the hash
//! only, so they use plain random data.
//!
//! Tolerances. As in tests/dense.rs: a softmax weight over the support
//! inherits the scores' f32 rounding (zero here for top-K, about
//! sqrt(d) * 6e-8 * |beta <x, xi>| < 1e-5 for random masks, which score the
//! chosen memories in f32) as a relative error, and z is a convex combination
//! of values bounded by 1; sums over <= 1500 terms add ~1e-4 relative in the
//! worst case. Hence z: abs 1e-4 + rel 1e-4.

mod common;

use std::process::Command;

use std::sync::Arc;

use common::{assert_close, bank, checked_ctx, ctx, default_config, random, small_binding_ctx};
use hopfield_gpu::config::{candidates, KernelConfig};
use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{Context, MemoryBank, Method, RetrieveOptions};

const Z_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);

/// `rows x cols` values on the grid {-1, -7/8, ..., 7/8, 1}.
fn grid(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    random(seed, rows, cols, 1.0).into_iter().map(|v| (v * 8.0).round() / 8.0).collect()
}

/// Retrieve with `method` on the GPU (with support output) and compare z and
/// the supports with the reference. `values` are separate values (hetero).
#[expect(clippy::too_many_arguments, reason = "a test case is its data, its method and what to check")]
fn check_with(
    ctx: &Context,
    what: &str,
    xi: &[f32],
    x: &[f32],
    values: Option<(&[f32], usize)>,
    m: usize,
    d: usize,
    beta: f32,
    method: Method,
    want_support: bool,
) {
    check_on(ctx, ctx.config(), what, xi, x, values, m, d, beta, method, want_support);
}

/// [`check_with`] on the kernels of `cfg`.
#[allow(clippy::too_many_arguments)]
fn check_on(
    ctx: &Context,
    cfg: Arc<KernelConfig>,
    what: &str,
    xi: &[f32],
    x: &[f32],
    values: Option<(&[f32], usize)>,
    m: usize,
    d: usize,
    beta: f32,
    method: Method,
    want_support: bool,
) {
    let l = x.len() / d;
    let (bank, v) = bank(ctx, xi, m, d, values);
    let opts = RetrieveOptions { method, beta, max_steps: 1, eps: 0.0, energy: false, support: want_support };
    let what = format!("{what} [{}]", cfg.name);
    let got = ctx
        .retrieve_with(cfg, &bank, x, &opts, &mut |_| std::ops::ControlFlow::Continue(()))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let want =
        cpu::retrieve(&method, &Matrix::from_f32(l, d, x), &Matrix::from_f32(m, d, xi), &v, f64::from(beta)).unwrap();
    assert_close(&format!("{what}: z"), &got.z, &want.z.data, Z_TOL);
    // Every step of top-K and random masks is one retrieval, and so is the
    // step count reported (hetero-association included).
    assert_eq!(got.steps, vec![1; l], "{what}: steps");
    if want_support {
        let s = got.support.as_ref().unwrap_or_else(|| panic!("{what}: no support returned"));
        let width = method.support_width(m).expect("a sparse method");
        assert_eq!(s.width, width, "{what}: support width");
        for (q, want_q) in want.support.as_ref().expect("a support").iter().enumerate() {
            let got_q: Vec<usize> = s.indices[q * width..(q + 1) * width].iter().map(|&i| i as usize).collect();
            assert_eq!(&got_q, want_q, "{what}: support of query {q}");
        }
    } else {
        assert!(got.support.is_none(), "{what}: support returned though not asked for");
    }
}

/// Top-K on grid data (exact scores), support compared too.
fn check_topk(ctx: &Context, d: usize, m: usize, l: usize, k: usize, seed: u64) {
    let xi = grid(seed, m, d);
    let x = grid(seed + 1, l, d);
    let what = format!("topk k={k} d={d} m={m} l={l}");
    check_with(ctx, &what, &xi, &x, None, m, d, 0.5, Method::TopK { k }, true);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn topk_matches_reference_over_shapes() {
    let ctx = ctx();
    // M = 197 and 130 are multiples of no tile size; k = 1, small, one list
    // of 64, and 65 (two rounds, the second of one entry).
    for (i, &(d, m, l, k)) in
        [(8, 197, 7, 1), (8, 197, 7, 5), (3, 130, 33, 64), (16, 300, 5, 65), (70, 90, 17, 7), (1, 40, 3, 9)]
            .iter()
            .enumerate()
    {
        check_topk(ctx, d, m, l, k, 200 + i as u64);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn topk_breaks_ties_by_lower_index() {
    let ctx = ctx();
    let (d, base) = (4, 10);
    // Every memory appears three times (rows i, i + 10, i + 20): each score
    // comes in tied triples, and k = 4, 5, 7 cut through them.
    let one = grid(301, base, d);
    let xi: Vec<f32> = one.iter().chain(&one).chain(&one).copied().collect();
    let x = grid(302, 6, d);
    for k in [1, 4, 5, 7, 29] {
        check_with(ctx, &format!("duplicates k={k}"), &xi, &x, None, 3 * base, d, 1.0, Method::TopK { k }, true);
    }
    // A zero query scores every memory 0 (as +0 or -0): the first k indices win.
    let zero = vec![0.0f32; 2 * d];
    check_with(ctx, "zero query", &xi, &zero, None, 3 * base, d, 1.0, Method::TopK { k: 6 }, true);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn topk_with_k_of_m_or_more_is_dense() {
    let ctx = ctx();
    let (d, m, l) = (8, 70, 9);
    let xi = grid(401, m, d);
    let x = grid(402, l, d);
    let xim = Matrix::from_f32(m, d, &xi);
    let dense = cpu::dense::dense(&Matrix::from_f32(l, d, &x), &xim, &xim, 0.5);
    for k in [m, m + 1, 10 * m] {
        // With a support output: the selection path, all M in ranking order.
        check_with(ctx, &format!("k={k} with support"), &xi, &x, None, m, d, 0.5, Method::TopK { k }, true);
        // Without: routed to the dense kernels.
        check_with(ctx, &format!("k={k} no support"), &xi, &x, None, m, d, 0.5, Method::TopK { k }, false);
        let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
        let got = ctx.retrieve(&bank, &x, &RetrieveOptions::dense(0.5).method(Method::TopK { k })).unwrap();
        assert_close(&format!("k={k} vs dense reference"), &got.z, &dense.z.data, Z_TOL);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn topk_large_k_matches_reference() {
    // K = 1024 of M = 1500: one threshold-then-collect sweep on the default
    // kernels (the `legacy` ones ran 16 rounds of 64 here, each admitting
    // only what came after the previous round's last pick).
    check_topk(ctx(), 16, 1500, 3, 1024, 501);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn one_query_many_memories_uses_many_splits() {
    // 20000 memories: split into chunks whose lists are merged; on lavapipe
    // the worst-case selection cost also caps each split's length (the
    // driver's loop limiter).
    check_topk(ctx(), 64, 20_000, 1, 64, 601);
    // Adversarial order: scores rise with the index, so every candidate is
    // the new best and sifts through the whole heap (the worst case the
    // split length is planned for; without that cap lavapipe drops memories).
    // 60000 memories: long enough that the default split (M / 8 on a
    // 2-core lavapipe) would exceed the limiter in the worst case.
    let (m, d) = (60_000, 4);
    let xi: Vec<f32> = (0..m).flat_map(|mu| [mu as f32 / 65536.0, 0.0, 0.0, 0.0]).collect();
    let x = [1.0f32, 0.0, 0.0, 0.0];
    check_with(ctx(), "ascending scores", &xi, &x, None, m, d, 1.0, Method::TopK { k: 64 }, true);
    check_topk(ctx(), 8, 5000, 2, 3, 602);
    let xi = random(603, 20_000, 8, 1.0);
    let x = random(604, 2, 8, 1.0);
    check_with(ctx(), "random one query", &xi, &x, None, 20_000, 8, 1.0, Method::Random { k: 100, seed: 9 }, true);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn random_mask_matches_reference_and_seed_changes_the_draw() {
    let ctx = ctx();
    let (d, m, l) = (12, 333, 21);
    let xi = random(701, m, d, 1.0);
    let x = random(702, l, d, 1.0);
    for (k, seed) in [(1, 0), (17, 0), (17, 1), (64, u64::MAX), (100, 0x1234_5678_9abc_def0), (m, 3), (m + 5, 3)] {
        check_with(
            ctx,
            &format!("random k={k} seed={seed}"),
            &xi,
            &x,
            None,
            m,
            d,
            0.7,
            Method::Random { k, seed },
            true,
        );
    }
    // Another seed draws other memories; another query draws other memories.
    let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
    let draw = |seed| {
        let opts = RetrieveOptions {
            method: Method::Random { k: 17, seed },
            beta: 0.7,
            max_steps: 1,
            eps: 0.0,
            energy: false,
            support: true,
        };
        ctx.retrieve(&bank, &x, &opts).unwrap().support.unwrap().indices
    };
    let (a, b) = (draw(0), draw(1));
    assert_ne!(a[..17], b[..17], "seeds 0 and 1 drew the same support for query 0");
    assert_ne!(a[..17], a[17..34], "queries 0 and 1 drew the same support");
    assert_eq!(a, draw(0), "the same seed must give the same draw");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn hetero_values_match_reference() {
    let ctx = ctx();
    let (d, m, l, dv) = (8, 150, 10, 70);
    let xi = grid(801, m, d);
    let x = grid(802, l, d);
    let v = random(803, m, dv, 1.0);
    check_with(ctx, "topk hetero", &xi, &x, Some((&v, dv)), m, d, 0.5, Method::TopK { k: 12 }, true);
    check_with(ctx, "topk hetero, 2 rounds", &xi, &x, Some((&v, dv)), m, d, 0.5, Method::TopK { k: 100 }, false);
    let v1 = random(804, m, 1, 1.0);
    check_with(ctx, "random hetero", &xi, &x, Some((&v1, 1)), m, d, 0.5, Method::Random { k: 9, seed: 5 }, true);
    check_with(ctx, "random hetero dv=70", &xi, &x, Some((&v, dv)), m, d, 0.5, Method::Random { k: 80, seed: 6 }, true);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn queries_in_several_batches_keep_their_global_index() {
    // A 4 KiB binding limit cuts 600 queries into batches (retrieve.rs) and
    // sub-batches (the partial lists): the random draw of query l depends on
    // its global index, which both must carry through.
    let small = small_binding_ctx();
    let (d, m, l) = (4, 100, 600);
    let xi = grid(901, m, d);
    let x = grid(902, l, d);
    check_with(&small, "random, batched", &xi, &x, None, m, d, 1.0, Method::Random { k: 8, seed: 77 }, true);
    check_with(&small, "topk, batched", &xi, &x, None, m, d, 1.0, Method::TopK { k: 8 }, true);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn banks_of_several_segments_match_reference() {
    // A 4 KiB binding limit cuts 300 memories of d = 24 into segments: the
    // selection runs per segment, and each segment's merge folds in the
    // winners it holds (values and, for random, keys are bound per segment).
    let small = small_binding_ctx();
    let (d, m, l) = (24, 300, 9);
    let xi = grid(951, m, d);
    let x = grid(952, l, d);
    assert!(MemoryBank::new(&small, &xi, m, d).unwrap().segment_count() > 1);
    for k in [1, 10, 70] {
        check_with(&small, &format!("segments topk k={k}"), &xi, &x, None, m, d, 0.5, Method::TopK { k }, true);
        let method = Method::Random { k, seed: 11 };
        check_with(&small, &format!("segments random k={k}"), &xi, &x, None, m, d, 0.5, method, true);
    }
    let v = random(953, m, 3, 1.0);
    check_with(&small, "segments hetero", &xi, &x, Some((&v, 3)), m, d, 0.5, Method::TopK { k: 20 }, true);
}

/// Decode an int32 C-order .npy: (shape, data).
fn read_i32_npy(bytes: &[u8]) -> (Vec<usize>, Vec<i32>) {
    assert_eq!(&bytes[..6], b"\x93NUMPY", "not a .npy file");
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).unwrap();
    assert!(header.contains("'descr': '<i4'"), "not int32: {header}");
    assert!(header.contains("'fortran_order': False"), "not C order: {header}");
    let shape_text = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = shape_text.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let data = bytes[start + hlen..].chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    (shape, data)
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn cli_rejects_k_zero_and_writes_the_support() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, m, l, k) = (6, 50, 7, 5);
    let xi = grid(1101, m, d);
    let x = grid(1102, l, d);
    let (mp, qp, zp, sp) =
        (dir.path().join("m.npy"), dir.path().join("q.npy"), dir.path().join("z.npy"), dir.path().join("s.npy"));
    hopfield_gpu::npy::write_f32_2d(&mp, m, d, &xi).unwrap();
    hopfield_gpu::npy::write_f32_2d(&qp, l, d, &x).unwrap();
    let run = |method: &str, k: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hopfield-gpu"))
            .args(["retrieve", "--memories", mp.to_str().unwrap(), "--queries", qp.to_str().unwrap()])
            .args(["--beta", "0.5", "--out", zp.to_str().unwrap(), "--method", method, "--k", k])
            .args(extra)
            .output()
            .expect("the binary runs")
    };

    let bad = run("topk", "0", &[]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "k = 0 must fail; stderr: {err}");
    assert!(err.contains("k = 0") && !err.contains("panicked"), "the message must name k: {err}");
    assert!(!zp.exists(), "no output on failure");

    for (name, method) in [("topk", Method::TopK { k }), ("random", Method::Random { k, seed: 0 })] {
        let ok = run(name, &k.to_string(), &["--support-out", sp.to_str().unwrap()]);
        assert!(ok.status.success(), "{name}: {}", String::from_utf8_lossy(&ok.stderr));
        let (shape, got) = read_i32_npy(&std::fs::read(&sp).unwrap());
        assert_eq!(shape, vec![l, k], "{name}: support shape");
        let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
        let want = cpu::retrieve(&method, &xs, &xim, &xim, 0.5).unwrap().support.unwrap();
        let want: Vec<i32> = want.iter().flatten().map(|&i| i as i32).collect();
        assert_eq!(got, want, "{name}: --support-out vs the reference");
        // And the library gives the same.
        let bank = MemoryBank::new(ctx(), &xi, m, d).unwrap();
        let opts = RetrieveOptions { method, beta: 0.5, max_steps: 1, eps: 1e-5, energy: false, support: true };
        assert_eq!(ctx().retrieve(&bank, &x, &opts).unwrap().support.unwrap().indices, got);
    }
}

/// The adversarial orders of a threshold-then-collect selection (the
/// survivor count depends on the order): d = 4, every query a multiple of
/// e_1 by a power of two, so each score is the memory's first coordinate
/// times it, exactly; the other coordinates are grid noise that changes the
/// values, not the scores.
/// - ascending: scores rise along the memories, so every score beats the
///   threshold of its time (the most survivors there can be), and the
///   negative query sees them falling (the fewest);
/// - all equal: every score ties, and the K lowest indices must win;
/// - last tile: the true top K are the last K memories, after every
///   threshold has settled on the wrong ones.
fn adversarial(ctx: &Context, cfg: &Arc<KernelConfig>, m: usize, ks: &[usize]) {
    let d = 4;
    let noise = grid(601, m, d);
    let queries: Vec<f32> = [1.0 / 64.0, 1.0 / 32.0, -1.0 / 64.0].iter().flat_map(|&a| [a, 0.0, 0.0, 0.0]).collect();
    let with_first = |f: &dyn Fn(usize) -> f32| -> Vec<f32> {
        (0..m * d).map(|i| if i % d == 0 { f(i / d) } else { noise[i] }).collect()
    };
    let k_max = ks.iter().copied().max().unwrap_or(1).min(m);
    let orders: [(&str, Vec<f32>); 3] = [
        ("ascending", with_first(&|mu| mu as f32 / 8.0)),
        ("all equal", with_first(&|_| 0.5)),
        (
            "top K last",
            with_first(&|mu| if mu + k_max >= m { 4.0 + (mu % 7) as f32 / 8.0 } else { -((mu % 5) as f32) / 8.0 }),
        ),
    ];
    for (name, xi) in &orders {
        for &k in ks {
            let what = format!("{name} k={k} m={m}");
            check_on(ctx, cfg.clone(), &what, xi, &queries, None, m, d, 1.0, Method::TopK { k }, true);
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn adversarial_orders_keep_the_exact_top_k() {
    // K from one to a thousand in one sweep, and K >= M (every memory, in
    // ranking order) through the same selection.
    let ctx = ctx();
    adversarial(ctx, &default_config(ctx), 2048, &[1, 16, 64, 65, 256, 1024]);
    adversarial(ctx, &default_config(ctx), 300, &[300, 301]);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn checked_shaders_keep_the_exact_top_k() {
    // The same kernels with wgpu's runtime checks on (HOPFIELD_CHECKED_SHADERS=1).
    let ctx = checked_ctx();
    adversarial(ctx, &default_config(ctx), 700, &[16, 256]);
    check_topk(ctx, 8, 197, 7, 65, 700);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn every_candidate_keeps_the_exact_top_k() {
    // Every top-K configuration the tuner may choose here, on ragged data
    // with ties (grid) and on rising scores, top-K and random masks.
    let ctx = ctx();
    let base = (*default_config(ctx)).clone();
    let all = candidates(ctx.caps());
    assert!(all.topk.len() >= 2, "{all:?}");
    for (i, k) in all.topk.iter().enumerate() {
        let cfg = Arc::new(KernelConfig { name: format!("topk [{k}]"), topk: *k, ..base.clone() });
        let (d, m, l) = (20, 301, 37);
        let xi = grid(800 + i as u64, m, d);
        let x = grid(820 + i as u64, l, d);
        check_on(ctx, cfg.clone(), "grid k=70", &xi, &x, None, m, d, 0.5, Method::TopK { k: 70 }, true);
        let random_mask = Method::Random { k: 33, seed: 4 };
        check_on(ctx, cfg.clone(), "random k=33", &xi, &x, None, m, d, 0.5, random_mask, true);
        adversarial(ctx, &cfg, 500, &[65]);
    }
}
