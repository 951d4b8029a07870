//! Sharded retrieval: shard partials merged on the host (`Partial::merge`)
//! and `ShardedBank` over two contexts on the same adapter, against the f64
//! reference of the whole memory set (src/cpu/dense.rs, src/cpu/topk.rs,
//! src/cpu/update.rs) and against one bank holding every memory.
//!
//! Tolerances. Each shard's z and log-sum-exp carry the dense kernel's f32
//! error (tests/dense.rs: z abs 1e-4 + rel 1e-4, lse abs 1e-4 + rel 1e-5).
//! The merge runs in f64: its weights e^(lse_s - lse) inherit the shards'
//! lse error as a relative error of ~1e-4, on a convex combination of
//! outputs bounded by 1, so merged z is within abs 2e-4 + rel 1e-4 of the
//! reference; merged lse within the shards' (the log of a sum of terms each
//! off by a relative 1e-4 is off by 1e-4 absolute). Top-K cases use grid
//! data (multiples of 1/8, beta a power of two), whose f32 scores are exact,
//! so supports are compared exactly, as in tests/topk.rs.

mod common;

use std::sync::Arc;

use common::{assert_close, ctx, random, small_binding_ctx};
use hopfield_gpu::config::KernelConfig;
use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{
    Context, ContextOptions, Error, MemoryBank, Method, Partial, PartialData, RetrieveOptions, ShardedBank,
};

const Z_TOL: Tolerance = Tolerance::new(2e-4, 1e-4);
const LSE_TOL: Tolerance = Tolerance::new(1e-4, 1e-5);
// Energies (|E| ~ 10) as in tests/dense.rs, plus the merge's lse error / beta.
const E_TOL: Tolerance = Tolerance::new(2e-4, 1e-5);

/// One update of `method` at `beta`, without energies (what a partial takes).
fn one(beta: f32, method: Method) -> RetrieveOptions {
    RetrieveOptions { method, beta, max_steps: 1, eps: 0.0, energy: false, support: false }
}

fn grid(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    random(seed, rows, cols, 1.0).into_iter().map(|v| (v * 8.0).round() / 8.0).collect()
}

/// Two contexts on the one adapter there is (lavapipe here): two devices.
fn two_contexts() -> Vec<Arc<Context>> {
    (0..2).map(|_| Arc::new(Context::new(&ContextOptions::default()).expect("a GPU adapter"))).collect()
}

/// Partials of `xi` cut at `cuts` (shard boundaries), all on `ctx`.
fn partials(ctx: &Context, xi: &[f32], d: usize, cuts: &[usize], x: &[f32], opts: &RetrieveOptions) -> Vec<Partial> {
    cuts.windows(2)
        .map(|w| {
            let bank = MemoryBank::new(ctx, &xi[w[0] * d..w[1] * d], w[1] - w[0], d).unwrap();
            ctx.retrieve_partial(&bank, x, opts).unwrap().at_offset(w[0])
        })
        .collect()
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn dense_partials_merge_to_the_whole_set() {
    let ctx = ctx();
    let (d, m, l) = (64, 700, 9);
    let beta = 0.5;
    let xi = random(1, m, d, 1.0);
    let x = random(2, l, d, 1.0);
    let want = cpu::dense::dense(
        &Matrix::from_f32(l, d, &x),
        &Matrix::from_f32(m, d, &xi),
        &Matrix::from_f32(m, d, &xi),
        f64::from(beta),
    );
    let mut parts = partials(ctx, &xi, d, &[0, 100, 101, 450, 700], &x, &one(beta, Method::Dense));
    // Shards may arrive in any order.
    parts.reverse();
    let got = Partial::merge(&parts).unwrap();
    assert_close("merged z", &got.z, &want.z.data, Z_TOL);
    assert_close("merged lse", &got.log_sum_exp, &want.log_sum_exp, LSE_TOL);
    assert_eq!(got.argmax.iter().map(|&a| a as usize).collect::<Vec<_>>(), want.argmax);
    // And against one bank holding everything.
    let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
    let one = ctx.retrieve(&bank, &x, &one(beta, Method::Dense)).unwrap();
    let one_z: Vec<f64> = one.z.iter().map(|&v| f64::from(v)).collect();
    assert_close("merged z vs one bank", &got.z, &one_z, Z_TOL);
    assert_eq!(got.argmax, one.argmax);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn topk_partials_merge_to_the_whole_set() {
    let ctx = ctx();
    let (d, m, l) = (16, 300, 7);
    let beta = 1.0;
    let xi = grid(3, m, d);
    let x = grid(4, l, d);
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    // k below, equal to and above the shards' sizes (50, 130, 120), and >= M.
    for k in [1, 5, 50, 64, 200, 300, 400] {
        let want = cpu::topk::topk(&xs, &xim, &xim, f64::from(beta), k);
        let opts = one(beta, Method::TopK { k });
        let got = Partial::merge(&partials(ctx, &xi, d, &[0, 50, 180, 300], &x, &opts)).unwrap();
        assert_close(&format!("k = {k}: z"), &got.z, &want.z.data, Z_TOL);
        let s = got.support.expect("top-K merge returns supports");
        assert_eq!(s.width, k.min(m));
        for q in 0..l {
            let row: Vec<usize> = s.indices[q * s.width..(q + 1) * s.width].iter().map(|&i| i as usize).collect();
            assert_eq!(row, want.support[q], "k = {k}, query {q}: support");
        }
        // As from one bank: not computed for top-K.
        assert!(got.log_sum_exp.iter().all(|&v| v == 0.0) && got.argmax.iter().all(|&a| a == 0), "k = {k}");
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn sharded_bank_on_two_contexts_matches_one_bank_with_dynamics() {
    let ctxs = two_contexts();
    let (d, m, l) = (16, 90, 10);
    let (beta, eps) = (2.0, 1e-5);
    let xi = random(5, m, d, 1.0);
    let x = random(6, l, d, 1.0);
    let sharded = ShardedBank::new(&ctxs, &xi, m, d).unwrap();
    assert_eq!((sharded.shard_count(), sharded.len()), (2, m));
    let opts = RetrieveOptions::dense(beta).steps(50, eps);
    let got = sharded.retrieve(&x, &opts).unwrap();
    let xim = Matrix::from_f32(m, d, &xi);
    let want =
        cpu::dynamics(&Method::Dense, &Matrix::from_f32(l, d, &x), &xim, f64::from(beta), 50, f64::from(eps)).unwrap();
    assert_close("sharded states", &got.z, &want.state.data, Z_TOL);
    assert_close("sharded energies", got.energy.as_ref().unwrap(), &want.energy, E_TOL);
    for (q, (&g, &w)) in got.steps.iter().zip(&want.steps).enumerate() {
        // As in tests/dense.rs: a step count may differ by one where the
        // change lands within f32 rounding of eps.
        assert!((g as i64 - w as i64).abs() <= 1, "query {q}: {g} steps sharded, {w} in the reference");
    }
    assert!(got.steps.iter().any(|&s| s > 1), "the case must iterate: {:?}", got.steps);
    assert_eq!(got.converged, want.converged);
    // One bank on one context: same answer within f32.
    let bank = MemoryBank::new(&ctxs[0], &xi, m, d).unwrap();
    let one = ctxs[0].retrieve(&bank, &x, &opts).unwrap();
    let one_z: Vec<f64> = one.z.iter().map(|&v| f64::from(v)).collect();
    assert_close("sharded vs one bank", &got.z, &one_z, Z_TOL);
    assert_eq!(got.argmax, one.argmax);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn sharded_topk_dynamics_and_hetero_values() {
    let ctxs = two_contexts();
    let (d, m, l, k) = (16, 120, 6, 8);
    let beta = 1.0;
    let xi = grid(7, m, d);
    let x = grid(8, l, d);
    let xim = Matrix::from_f32(m, d, &xi);
    let sharded = ShardedBank::new(&ctxs, &xi, m, d).unwrap();
    let opts =
        RetrieveOptions { method: Method::TopK { k }, beta, max_steps: 5, eps: 0.0, energy: true, support: true };
    let got = sharded.retrieve(&x, &opts).unwrap();
    let want = cpu::dynamics(&Method::TopK { k }, &Matrix::from_f32(l, d, &x), &xim, f64::from(beta), 5, 0.0).unwrap();
    assert_close("top-K states", &got.z, &want.state.data, Z_TOL);
    assert_close("top-K energies", got.energy.as_ref().unwrap(), &want.energy, E_TOL);
    assert_eq!(got.support.as_ref().unwrap().width, k);

    // Hetero-association: values [M, 3], one step.
    let dv = 3;
    let v = random(9, m, dv, 1.0);
    let hs = ShardedBank::with_values(&ctxs, &xi, m, d, &v, dv).unwrap();
    let got = hs.retrieve(&x, &RetrieveOptions::dense(beta)).unwrap();
    let want = cpu::dense::dense(&Matrix::from_f32(l, d, &x), &xim, &Matrix::from_f32(m, dv, &v), f64::from(beta));
    assert_close("hetero z", &got.z, &want.z.data, Z_TOL);
    assert!(matches!(hs.retrieve(&x, &RetrieveOptions::dense(beta).steps(2, 0.0)), Err(Error::ShapeMismatch { .. })));
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn methods_without_an_exact_merge_are_refused() {
    let ctx = ctx();
    let (d, m) = (8, 20);
    let xi = random(10, m, d, 1.0);
    let x = random(11, 2, d, 1.0);
    let bank = MemoryBank::new(ctx, &xi, m, d).unwrap();
    for method in [
        Method::DenseNaive,
        Method::Random { k: 3, seed: 1 },
        Method::Window { width: None },
        Method::Sparsemax,
        Method::Entmax15,
        Method::Poly { delta: 1e-2, degree: None },
        Method::Linear,
        Method::Prf { features: None, seed: 0, orthogonal: false },
        Method::Auto { tolerance: 1e-2 },
    ] {
        let opts = one(1.0, method);
        match ctx.retrieve_partial(&bank, &x, &opts) {
            Err(e @ Error::Unsupported { option: "method", .. }) => {
                assert!(e.to_string().contains(method.name()), "{e}")
            }
            other => panic!("{}: expected Unsupported, got {other:?}", method.name()),
        }
    }
    let dense = one(1.0, Method::Dense);
    assert!(matches!(
        ctx.retrieve_partial(&bank, &x, &dense.clone().steps(2, 0.0)),
        Err(Error::Unsupported { option: "max_steps", .. })
    ));
    assert!(matches!(
        ctx.retrieve_partial(&bank, &x, &RetrieveOptions::dense(1.0)),
        Err(Error::Unsupported { option: "energy", .. })
    ));
    assert!(matches!(
        ctx.retrieve_partial(&bank, &x, &RetrieveOptions { beta: 0.0, ..dense.clone() }),
        Err(Error::InvalidParameter { name: "beta", .. })
    ));

    // Merging: nothing, a gap, an overlap, mixed methods, mixed beta.
    let part = ctx.retrieve_partial(&bank, &x, &dense).unwrap();
    assert!(matches!(Partial::merge(&[]), Err(Error::Empty { what: "partials" })));
    assert!(matches!(
        Partial::merge(&[part.clone().at_offset(1)]),
        Err(Error::InvalidParameter { name: "offset", .. })
    ));
    assert!(matches!(
        Partial::merge(&[part.clone(), part.clone()]),
        Err(Error::InvalidParameter { name: "offset", .. })
    ));
    let topk = ctx.retrieve_partial(&bank, &x, &dense.clone().method(Method::TopK { k: 2 })).unwrap();
    assert!(matches!(
        Partial::merge(&[part.clone(), topk.at_offset(m)]),
        Err(Error::InvalidParameter { name: "method", .. })
    ));
    let other_beta = ctx.retrieve_partial(&bank, &x, &RetrieveOptions { beta: 2.0, ..dense.clone() }).unwrap();
    assert!(matches!(
        Partial::merge(&[part.clone(), other_beta.at_offset(m)]),
        Err(Error::InvalidParameter { name: "beta", .. })
    ));
    // A corrupted partial (as one could arrive from another machine).
    let mut bad = part.clone();
    if let PartialData::Dense { z, .. } = &mut bad.data {
        z.pop();
    }
    assert!(matches!(Partial::merge(&[bad]), Err(Error::ShapeMismatch { .. })));
    // Sharding needs at least one context; unmergeable methods are refused up front.
    assert!(matches!(ShardedBank::new(&[], &xi, m, d), Err(Error::Empty { what: "contexts" })));
    let sb = ShardedBank::new(&[Arc::new(Context::new(&ContextOptions::default()).unwrap())], &xi, m, d).unwrap();
    assert!(matches!(
        sb.retrieve(&x, &dense.clone().method(Method::Sparsemax)),
        Err(Error::Unsupported { option: "method", .. })
    ));
}

/// The merge alone, without a device: partials written from the f64
/// reference of each shard must merge to the reference of the whole set
/// (to f32 storage rounding, 1e-6 relative).
#[test]
fn merge_of_reference_partials_is_exact() {
    let (d, m, l) = (8, 50, 4);
    let beta = 1.5f64;
    let xi = random(12, m, d, 1.0);
    let x = random(13, l, d, 1.0);
    let xs = Matrix::from_f32(l, d, &x);
    let whole = cpu::dense::dense(&xs, &Matrix::from_f32(m, d, &xi), &Matrix::from_f32(m, d, &xi), beta);
    let parts: Vec<Partial> = [(0, 17), (17, 18), (18, 50)]
        .iter()
        .map(|&(a, b)| {
            let sh = Matrix::from_f32(b - a, d, &xi[a * d..b * d]);
            let r = cpu::dense::dense(&xs, &sh, &sh, beta);
            let max_score = (0..l).map(|q| cpu::dense::scores(xs.row(q), &sh, beta)[r.argmax[q]] as f32).collect();
            Partial {
                rows: l,
                value_dim: d,
                offset: a,
                memories: b - a,
                beta: beta as f32,
                data: PartialData::Dense {
                    z: r.z.data.iter().map(|&v| v as f32).collect(),
                    log_sum_exp: r.log_sum_exp.iter().map(|&v| v as f32).collect(),
                    max_score,
                    argmax: r.argmax.iter().map(|&a| a as u32).collect(),
                },
            }
        })
        .collect();
    let got = Partial::merge(&parts).unwrap();
    let tight = Tolerance::new(1e-6, 1e-6);
    assert_close("z", &got.z, &whole.z.data, tight);
    assert_close("lse", &got.log_sum_exp, &whole.log_sum_exp, tight);
    assert_eq!(got.argmax.iter().map(|&a| a as usize).collect::<Vec<_>>(), whole.argmax);
    // The comparison can fail: one shard's lse moved by 1 shifts z.
    let mut off = parts.clone();
    if let PartialData::Dense { log_sum_exp, .. } = &mut off[1].data {
        log_sum_exp[0] += 1.0;
    }
    let moved = Partial::merge(&off).unwrap();
    assert!(tight.check(&moved.z, &whole.z.data).is_err());
}

/// A dense partial of `rows` queries over `memories` memories with dv = 1,
/// every query's statistics given: (lse, max score, local argmax, z).
fn dense_part(offset: usize, memories: usize, per_query: &[(f32, f32, u32, f32)]) -> Partial {
    Partial {
        rows: per_query.len(),
        value_dim: 1,
        offset,
        memories,
        beta: 1.0,
        data: PartialData::Dense {
            z: per_query.iter().map(|p| p.3).collect(),
            log_sum_exp: per_query.iter().map(|p| p.0).collect(),
            max_score: per_query.iter().map(|p| p.1).collect(),
            argmax: per_query.iter().map(|p| p.2).collect(),
        },
    }
}

/// Without a device: equal best scores in two shards go to the lower global
/// index (as one bank breaks ties), whatever order the shards arrive in; a
/// corrupted partial (as one could arrive from another machine) is refused.
#[test]
fn merge_breaks_ties_to_the_lower_index_and_checks_its_input() {
    // Query 0: both shards' best score is 2.0 (shard 0 at 7, shard 1 at its 3 = global 13).
    // Query 1: shard 1 is better.
    let a = dense_part(0, 10, &[(3.0, 2.0, 7, 0.5), (1.0, 0.5, 2, 0.0)]);
    let b = dense_part(10, 6, &[(3.0, 2.0, 3, -0.5), (2.0, 1.5, 4, 1.0)]);
    for parts in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
        let got = Partial::merge(&parts).unwrap();
        assert_eq!(got.argmax, vec![7, 14]);
        // Equal weights e^(3 - lse) = 1/2 each: z = (0.5 - 0.5) / 2.
        assert!(got.z[0].abs() < 1e-7, "{:?}", got.z);
        assert!((got.log_sum_exp[0] - (3.0 + 2f32.ln())).abs() < 1e-6);
    }

    let with = |f: &dyn Fn(&mut PartialData)| {
        let mut p = a.clone();
        f(&mut p.data);
        Partial::merge(&[p, b.clone()])
    };
    assert!(matches!(
        with(&|d| if let PartialData::Dense { z, .. } = d {
            z[1] = f32::NAN
        }),
        Err(Error::NonFinite { row: 1, .. })
    ));
    assert!(matches!(
        with(&|d| if let PartialData::Dense { log_sum_exp, .. } = d {
            log_sum_exp[0] = f32::NEG_INFINITY
        }),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        with(&|d| if let PartialData::Dense { argmax, .. } = d {
            argmax[0] = 10
        }),
        Err(Error::InvalidParameter { name: "argmax", .. })
    ));
    let topk = |width: usize, index: i32| Partial {
        rows: 1,
        value_dim: 1,
        offset: 0,
        memories: 4,
        beta: 1.0,
        data: PartialData::TopK {
            k: 2,
            width,
            scores: vec![1.0; width],
            indices: vec![index; width],
            values: vec![0.0; width],
        },
    };
    assert!(Partial::merge(&[topk(2, 1)]).is_ok());
    assert!(matches!(Partial::merge(&[topk(1, 1)]), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(Partial::merge(&[topk(2, 4)]), Err(Error::InvalidParameter { name: "indices", .. })));
    assert!(matches!(Partial::merge(&[topk(2, -1)]), Err(Error::InvalidParameter { name: "indices", .. })));
    let mut k3 = topk(2, 1).at_offset(4);
    if let PartialData::TopK { k, .. } = &mut k3.data {
        *k = 3;
    }
    assert!(matches!(Partial::merge(&[topk(2, 1), k3]), Err(Error::InvalidParameter { name: "k", .. })));
}

/// Shards whose banks are cut into several segments (4 KiB bindings): the
/// dense partial over segments, and the top-K gather with one dispatch per
/// segment and its rows in several batches (5 x 16 floats per query, 12
/// queries to a 4 KiB binding).
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn partials_of_segmented_banks_in_batches() {
    let ctx = small_binding_ctx();
    let (d, m, l) = (16, 300, 40);
    let beta = 1.0;
    let xi = grid(14, m, d);
    let x = grid(15, l, d);
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    let cuts = [0, 130, 300];
    for w in cuts.windows(2) {
        let bank = MemoryBank::new(&ctx, &xi[w[0] * d..w[1] * d], w[1] - w[0], d).unwrap();
        assert!(bank.segment_count() > 1, "the case must cut the shard into segments");
    }
    let dense = Partial::merge(&partials(&ctx, &xi, d, &cuts, &x, &one(beta, Method::Dense))).unwrap();
    let want = cpu::dense::dense(&xs, &xim, &xim, f64::from(beta));
    assert_close("segmented dense z", &dense.z, &want.z.data, Z_TOL);
    assert_close("segmented dense lse", &dense.log_sum_exp, &want.log_sum_exp, LSE_TOL);
    let k = 5;
    let got = Partial::merge(&partials(&ctx, &xi, d, &cuts, &x, &one(beta, Method::TopK { k }))).unwrap();
    let want = cpu::topk::topk(&xs, &xim, &xim, f64::from(beta), k);
    assert_close("segmented top-K z", &got.z, &want.z.data, Z_TOL);
    let s = got.support.expect("a support");
    for q in 0..l {
        let row: Vec<usize> = s.indices[q * k..(q + 1) * k].iter().map(|&i| i as usize).collect();
        assert_eq!(row, want.support[q], "query {q}: support");
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn legacy_kernels_give_partials_that_merge_too() {
    // The legacy configuration has its own merge (dense_merge_legacy.wgsl):
    // it must record each query's best score as the default one does, or the
    // host merge picks the wrong shard's argmax. One shard from each
    // configuration, merged, against the reference of the whole set.
    let opts = ContextOptions { config: Some(KernelConfig::legacy()), ..ContextOptions::default() };
    let legacy = Context::new(&opts).expect("a GPU adapter");
    assert_eq!(legacy.config().name, "legacy");
    let ctx = ctx();
    let (d, m, l, cut) = (20, 400, 16, 150);
    let beta = 0.5;
    let xi = random(11, m, d, 1.0);
    let x = random(12, l, d, 1.0);
    let (xs, xim) = (Matrix::from_f32(l, d, &x), Matrix::from_f32(m, d, &xi));
    let want = cpu::dense::dense(&xs, &xim, &xim, f64::from(beta));
    let a = MemoryBank::new(&legacy, &xi[..cut * d], cut, d).unwrap();
    let b = MemoryBank::new(ctx, &xi[cut * d..], m - cut, d).unwrap();
    let pa = legacy.retrieve_partial(&a, &x, &one(beta, Method::Dense)).unwrap();
    // The legacy shard's best scores, against beta max <x, xi> over it (f32
    // scores of |.| <= 10: the dense kernel's lse tolerance covers them).
    let PartialData::Dense { max_score, .. } = &pa.data else { panic!("a dense partial") };
    let best: Vec<f64> = x
        .chunks(d)
        .map(|q| {
            xi[..cut * d]
                .chunks(d)
                .map(|k| f64::from(beta) * q.iter().zip(k).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>())
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect();
    assert_close("legacy max_score", max_score, &best, LSE_TOL);
    let pb = ctx.retrieve_partial(&b, &x, &one(beta, Method::Dense)).unwrap().at_offset(cut);
    let got = Partial::merge(&[pa, pb]).unwrap();
    assert_close("merged z", &got.z, &want.z.data, Z_TOL);
    assert_close("merged lse", &got.log_sum_exp, &want.log_sum_exp, LSE_TOL);
    assert_eq!(got.argmax.iter().map(|&a| a as usize).collect::<Vec<_>>(), want.argmax);
    // Both shards hold some query's best memory, so the choice is exercised.
    assert!(want.argmax.iter().any(|&a| a < cut) && want.argmax.iter().any(|&a| a >= cut), "{:?}", want.argmax);
}
