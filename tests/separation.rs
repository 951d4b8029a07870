//! The pairwise sweep on the GPU (`Context::separation`, `Context::neighbours`)
//! against the f64 reference (src/cpu/separation.rs).
//!
//! Comparison. On small-integer data every f32 sum the kernel forms is exact
//! (|entries| <= 3, d <= 1024: sums below 2^24), so the GPU must return the
//! reference's indices exactly, ties to the lower index included. On random
//! real data the f32 sums carry rounding, so an index is accepted when its
//! f64 value is within rounding of the reference's best: squared distances
//! and inner products to 1e-5 (d <= 64 terms of size <= 1, u = 6e-8 each,
//! with ample headroom).

mod common;

use common::{ctx, random, small_binding_ctx};
use hopfield_gpu::cpu::separation::{neighbours, neighbours_of};
use hopfield_gpu::cpu::Matrix;
use hopfield_gpu::theory::Neighbours;
use hopfield_gpu::{Context, MemoryBank};
use rand::{Rng, SeedableRng};

/// `m x d` integers in -3..=3, with rows `dups` copied from earlier rows.
fn integers(seed: u64, m: usize, d: usize, dups: &[(usize, usize)]) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut x: Vec<f32> = (0..m * d).map(|_| rng.random_range(-3i32..=3) as f32).collect();
    for &(to, from) in dups {
        if to < m && from < m {
            let row: Vec<f32> = x[from * d..(from + 1) * d].to_vec();
            x[to * d..(to + 1) * d].copy_from_slice(&row);
        }
    }
    x
}

fn sweep_memories(ctx: &Context, x: &[f32], m: usize, d: usize) -> (hopfield_gpu::Sweep, Vec<Neighbours>) {
    let bank = MemoryBank::new(ctx, x, m, d).unwrap();
    let got = ctx.separation(&bank).unwrap();
    let mat = Matrix::from_f32(m, d, x);
    (got, neighbours(&mat, &mat, true))
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter (lavapipe is enough)")]
fn exact_on_integer_data_with_ties_and_duplicates() {
    let ctx = ctx();
    for d in [1, 3, 64] {
        for m in [1, 2, 17, 100, 130] {
            let x = integers(d as u64 * 1000 + m as u64, m, d, &[(5, 1), (16, 1), (99, 3), (129, 0)]);
            let (got, want) = sweep_memories(ctx, &x, m, d);
            assert_eq!(got.rows, want, "d = {d}, M = {m}");
            if m > 16 {
                assert!(want[1].duplicates >= 2, "the planted duplicates are there");
            }
        }
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter (lavapipe is enough)")]
fn queries_against_memories() {
    let ctx = ctx();
    for d in [1, 3, 64] {
        let (m, l) = (70, 33);
        let x = integers(7 + d as u64, m, d, &[(40, 2)]);
        let mut q = integers(8 + d as u64, l, d, &[]);
        // Query 0 equals memory 2 and its copy 40 (at d = 64 no other memory).
        q[..d].copy_from_slice(&x[2 * d..3 * d]);
        let bank = MemoryBank::new(ctx, &x, m, d).unwrap();
        let got = ctx.neighbours(&bank, &q).unwrap();
        let want = neighbours(&Matrix::from_f32(l, d, &q), &Matrix::from_f32(m, d, &x), false);
        assert_eq!(got.rows, want, "d = {d}");
        if d == 64 {
            assert_eq!(got.rows[0].duplicates, 2);
            assert_eq!(got.rows[0].nearest, Some(2));
        }
    }
}

/// Accept `got` where it is the reference's choice or ties it within rounding.
fn assert_equivalent(
    x: &[f32],
    rows: &[f32],
    m: usize,
    d: usize,
    got: &[Neighbours],
    want: &[Neighbours],
    exclude: bool,
) {
    let row = |data: &[f32], i: usize| data[i * d..(i + 1) * d].iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
    let d2 = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum::<f64>();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let a = row(rows, i);
        let val = |idx: Option<usize>, f: &dyn Fn(&[f64], &[f64]) -> f64| idx.map(|j| f(&a, &row(x, j)));
        let close = |p: Option<f64>, q: Option<f64>| match (p, q) {
            (Some(p), Some(q)) => (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
            (None, None) => true,
            _ => false,
        };
        assert!(close(val(g.nearest, &d2), val(w.nearest, &d2)), "row {i}: nearest {g:?} vs {w:?}");
        assert!(close(val(g.best, &dot), val(w.best, &dot)), "row {i}: best {g:?} vs {w:?}");
        assert!(close(val(g.second, &dot), val(w.second, &dot)), "row {i}: second {g:?} vs {w:?}");
        assert_ne!(g.best, g.second, "row {i}");
        if exclude {
            assert!(g.nearest != Some(i) && g.best != Some(i) && g.second != Some(i), "row {i} found itself: {g:?}");
        }
        assert_eq!(g.duplicates, w.duplicates, "row {i}");
    }
    assert_eq!(got.len(), want.len());
    let _ = m;
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter (lavapipe is enough)")]
fn within_rounding_on_real_data() {
    let ctx = ctx();
    for (m, d) in [(300, 64), (257, 3)] {
        let x = random(11, m, d, 1.0);
        let (got, want) = sweep_memories(ctx, &x, m, d);
        assert_equivalent(&x, &x, m, d, &got.rows, &want, true);
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter (lavapipe is enough)")]
fn many_segments_and_batches() {
    // 4 KiB bindings: d = 64 puts 16 memories in a segment, and the rows'
    // partial summaries go in several batches.
    let ctx = small_binding_ctx();
    for (m, d) in [(100, 64), (401, 3)] {
        let x = integers(3, m, d, &[(90, 4), (33, 32)]);
        let bank = MemoryBank::new(&ctx, &x, m, d).unwrap();
        assert!(bank.segment_count() > 1, "M = {m}, d = {d}: one segment");
        let got = ctx.separation(&bank).unwrap();
        assert!(got.batches > 1, "M = {m}, d = {d}: {got:?}");
        let mat = Matrix::from_f32(m, d, &x);
        assert_eq!(got.rows, neighbours(&mat, &mat, true), "M = {m}, d = {d}");
        let q = integers(4, 50, d, &[]);
        let got = ctx.neighbours(&bank, &q).unwrap();
        assert_eq!(got.rows, neighbours(&Matrix::from_f32(50, d, &q), &mat, false), "queries, d = {d}");
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter (lavapipe is enough)")]
fn splits_keep_lavapipe_inside_its_loop_limit() {
    // d = 4096: one 64-memory tile costs ~9,470 loop iterations, so 460
    // memories (8 tiles) in one split would run ~75,800 per invocation, past
    // llvmpipe's silent limit of 65,535 (the engine plans for 50,000). The
    // planted twin of row 0 sits last, where a loop that stopped early
    // would never look. The reference checks a sample of 40 rows, the first
    // and the last among them.
    let ctx = ctx();
    let (m, d) = (460, 4096);
    let x = integers(21, m, d, &[(m - 1, 0)]);
    let bank = MemoryBank::new(ctx, &x, m, d).unwrap();
    let got = ctx.separation(&bank).unwrap();
    if ctx.adapter_info().name.to_lowercase().contains("llvmpipe") {
        assert!(got.splits >= 2, "the plan must split: {got:?}");
    }
    assert_eq!(got.rows[0].nearest, Some(m - 1));
    assert_eq!(got.rows[0].duplicates, 1);
    let sample: Vec<usize> = (0..40).map(|i| i * (m - 1) / 39).collect();
    let want = neighbours_of(&Matrix::from_f32(m, d, &x), &sample);
    for (&i, w) in sample.iter().zip(&want) {
        assert_eq!(&got.rows[i], w, "row {i}");
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter (lavapipe is enough)")]
fn bad_input_is_a_typed_error() {
    let ctx = ctx();
    let bank = MemoryBank::new(ctx, &[1.0, 2.0, 3.0, 4.0], 2, 2).unwrap();
    assert!(matches!(ctx.neighbours(&bank, &[]), Err(hopfield_gpu::Error::Empty { .. })));
    assert!(matches!(ctx.neighbours(&bank, &[1.0, 2.0, 3.0]), Err(hopfield_gpu::Error::ShapeMismatch { .. })));
    assert!(matches!(ctx.neighbours(&bank, &[f32::NAN, 1.0]), Err(hopfield_gpu::Error::NonFinite { .. })));
    // Entries of 1e18 at d = 2: d (2B)^2 = 8e36 is fine, 2e19 is not.
    let big = MemoryBank::new(ctx, &[2e19, 0.0, 0.0, 1.0], 2, 2).unwrap();
    assert!(matches!(ctx.separation(&big), Err(hopfield_gpu::Error::InvalidParameter { .. })));
}
