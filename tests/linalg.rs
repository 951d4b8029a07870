//! The dense algebra of the layers on the GPU (shaders/linalg*.wgsl) against
//! the f64 reference (src/cpu/linalg.rs): the batched strided matmul in both
//! B layouts, with bias, alpha and ReLU, several entries writing disjoint
//! heads of one output (the head concatenation as strides), a reduction
//! long enough to be split along k; LayerNorm with and without affine
//! parameters; the element-wise maps.
//!
//! Tolerances. An f32 dot product of length k carries at most
//! `gamma_k sum |a_i b_i|`, `gamma_k ~ k 6e-8` (Higham, Thm 3.1); the data
//! below lie in [-1, 1] with k <= 40, so `sum |a b| <= 40` and the bound is
//! 1e-4, while the sums of random signs actually seen are ~sqrt(k) smaller:
//! abs 2e-5, rel 1e-5. The split reduction is checked exactly, on integer
//! data whose partial sums are exact in f32 (< 2^24). LayerNorm divides by
//! a standard deviation of ~0.6 here: abs 1e-5, rel 1e-5.

mod common;

use common::{assert_close, ctx, random};
use hopfield_gpu::cpu::linalg::{relu, residual_add, LayerNorm, Linear};
use hopfield_gpu::cpu::Matrix;
use hopfield_gpu::linalg::{At, BLayout, MapOp, MatmulEntry, MatmulInputs};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::Error;

const MM_TOL: Tolerance = Tolerance::new(2e-5, 1e-5);
const LN_TOL: Tolerance = Tolerance::new(1e-5, 1e-5);

fn m64(rows: usize, cols: usize, data: &[f32]) -> Matrix {
    Matrix::from_f32(rows, cols, data)
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn a_linear_map_is_x_w_transposed_plus_bias_for_odd_shapes() {
    // Shapes that are not multiples of the 32 x 32 tile, in both layouts.
    for &(m, k, n) in &[(1, 1, 1), (5, 3, 7), (33, 40, 31), (70, 17, 65)] {
        let x = random(1, m, k, 1.0);
        let w = random(2, n, k, 1.0); // [out, in]
        let b = random(3, 1, n, 1.0);
        let want = Linear { weight: m64(n, k, &w), bias: Some(b.iter().map(|&v| f64::from(v)).collect()) }
            .apply(&m64(m, k, &x));
        let e = MatmulEntry { m, n, k, a: At::new(0, k), b: At::new(0, k), c: At::new(0, n), bias_off: 0, alpha: 1.0 };
        let inputs = MatmulInputs { a: &x, b: &w, bias: Some(&b), layout: BLayout::Rows, relu: false, c_len: m * n };
        let got = ctx().matmul(&inputs, &[e]).unwrap();
        assert_close(&format!("x W^T + b, {m}x{k}x{n}"), &got, &want.data, MM_TOL);
        // The same product with W^T stored [k, n] (values' layout), alpha 0.5 and ReLU.
        let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let inputs = MatmulInputs { b: &wt, layout: BLayout::Cols, relu: true, ..inputs };
        let e = MatmulEntry { b: At::new(0, n), alpha: 0.5, ..e };
        let got = ctx().matmul(&inputs, &[e]).unwrap();
        let z = Linear { weight: m64(n, k, &w), bias: None }.apply(&m64(m, k, &x));
        let want: Vec<f64> =
            z.data.iter().enumerate().map(|(i, &v)| (0.5 * v + f64::from(b[i % n])).max(0.0)).collect();
        assert_close(&format!("relu(0.5 x W + b), {m}x{k}x{n}"), &got, &want, MM_TOL);
    }
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn heads_are_strided_regions_of_one_product() {
    // Per-head attention-shaped products: head h of q [L, H d] times head h
    // of k [S, H d], each written to head h's columns of one [L, H S] output.
    let (l, s, heads, d) = (9, 6, 3, 5);
    let q = random(4, l, heads * d, 1.0);
    let k = random(5, s, heads * d, 1.0);
    let entries: Vec<MatmulEntry> = (0..heads)
        .map(|h| MatmulEntry {
            m: l,
            n: s,
            k: d,
            a: At::new(h * d, heads * d),
            b: At::new(h * d, heads * d),
            c: At::new(h * s, heads * s),
            bias_off: 0,
            alpha: 0.25 * (h + 1) as f32,
        })
        .collect();
    let inputs = MatmulInputs { a: &q, b: &k, bias: None, layout: BLayout::Rows, relu: false, c_len: l * heads * s };
    let got = ctx().matmul(&inputs, &entries).unwrap();
    let mut want = vec![0.0; l * heads * s];
    for h in 0..heads {
        for i in 0..l {
            for j in 0..s {
                let dot: f64 = (0..d)
                    .map(|c| f64::from(q[i * heads * d + h * d + c]) * f64::from(k[j * heads * d + h * d + c]))
                    .sum();
                want[i * heads * s + h * s + j] = 0.25 * (h + 1) as f64 * dot;
            }
        }
    }
    assert_close("strided heads", &got, &want, MM_TOL);
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn a_long_reduction_is_split_and_exact_on_integers() {
    // k = 60000 exceeds what one llvmpipe invocation may loop over, so the
    // product runs as several dispatches adding to C. Entries in {-1, 0, 1}:
    // every partial sum is an integer below 2^24, exact in f32.
    let (m, k, n) = (3, 60_000, 2);
    let tri = |seed: u64, len: usize| -> Vec<f32> { random(seed, 1, len, 1.49).iter().map(|v| v.round()).collect() };
    let a = tri(6, m * k);
    let b = tri(7, n * k);
    let bias = [0.5f32, -2.0];
    let e = MatmulEntry { m, n, k, a: At::new(0, k), b: At::new(0, k), c: At::new(0, n), bias_off: 0, alpha: 1.0 };
    let inputs = MatmulInputs { a: &a, b: &b, bias: Some(&bias), layout: BLayout::Rows, relu: false, c_len: m * n };
    let got = ctx().matmul(&inputs, &[e]).unwrap();
    let want = Linear { weight: m64(n, k, &b), bias: Some(vec![0.5, -2.0]) }.apply(&m64(m, k, &a));
    assert_close("split reduction", &got, &want.data, Tolerance::new(0.0, 0.0));
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn layer_norm_with_and_without_affine() {
    // Up to 256 features a thread normalises a row; beyond, a workgroup does.
    for &(rows, cols, eps) in
        &[(1, 1, 1e-5), (7, 16, 1e-5), (5, 100, 1e-3), (3, 200, 0.0), (4, 300, 1e-5), (2, 1000, 0.0)]
    {
        // A large mean: the two-pass variance must not cancel.
        let x: Vec<f32> = random(8, rows, cols, 1.0).iter().map(|v| v + 30.0).collect();
        let w = random(9, 1, cols, 1.0);
        let b = random(10, 1, cols, 1.0);
        let xm = m64(rows, cols, &x);
        let plain = LayerNorm { eps: f64::from(eps), affine: None };
        if cols > 1 || eps > 0.0 {
            let got = ctx().layer_norm(&x, rows, cols, eps, None).unwrap();
            assert_close(&format!("layer norm {rows}x{cols}"), &got, &plain.apply(&xm).data, LN_TOL);
        }
        let affine = LayerNorm {
            eps: f64::from(eps),
            affine: Some((w.iter().map(|&v| f64::from(v)).collect(), b.iter().map(|&v| f64::from(v)).collect())),
        };
        if cols > 1 || eps > 0.0 {
            let got = ctx().layer_norm(&x, rows, cols, eps, Some((&w, &b))).unwrap();
            assert_close(&format!("affine layer norm {rows}x{cols}"), &got, &affine.apply(&xm).data, LN_TOL);
        }
    }
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn element_wise_maps() {
    let (rows, cols) = (13, 11);
    let u = random(11, rows, cols, 2.0);
    let v = random(12, rows, cols, 2.0);
    let s = random(13, 1, cols, 2.0);
    let (um, vm) = (m64(rows, cols, &u), m64(rows, cols, &v));
    let exact = Tolerance::new(0.0, 0.0);
    assert_close("relu", &ctx().map(MapOp::Relu, &u, None, rows, cols).unwrap(), &relu(&um).data, exact);
    // The sum of two f32 is rounded once too: compare with f32 addition.
    let sum: Vec<f64> = residual_add(&um, &vm).data.iter().map(|&x| f64::from(x as f32)).collect();
    assert_close("add", &ctx().map(MapOp::Add, &u, Some(&v), rows, cols).unwrap(), &sum, exact);
    assert_close("copy", &ctx().map(MapOp::Copy, &u, None, rows, cols).unwrap(), &um.data, exact);
    // The f32 product, rounded once as the kernel rounds it.
    let scaled: Vec<f64> = u.iter().enumerate().map(|(i, &x)| f64::from(x * s[i % cols])).collect();
    assert_close("column scaling", &ctx().map(MapOp::Mul, &u, Some(&s), rows, cols).unwrap(), &scaled, exact);
    // elu(x) + 1 = exp(x) for x <= 0: f32 exp is within a few ulps.
    let elu: Vec<f64> = um.data.iter().map(|&x| if x > 0.0 { x + 1.0 } else { x.exp() }).collect();
    assert_close("elu + 1", &ctx().map(MapOp::Elu1, &u, None, rows, cols).unwrap(), &elu, Tolerance::new(1e-7, 1e-6));
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn bad_operands_are_typed_errors() {
    // A region past the end of its slice, and a non-finite value.
    let e =
        MatmulEntry { m: 2, n: 2, k: 3, a: At::new(0, 3), b: At::new(0, 3), c: At::new(0, 2), bias_off: 0, alpha: 1.0 };
    let a = [0.0f32; 5];
    let b = [0.0f32; 6];
    let inputs = MatmulInputs { a: &a, b: &b, bias: None, layout: BLayout::Rows, relu: false, c_len: 4 };
    match ctx().matmul(&inputs, &[e]) {
        Err(Error::ShapeMismatch { expected: 6, got: 5, .. }) => {}
        other => panic!("expected a shape mismatch, got {other:?}"),
    }
    let a = [0.0f32, 0.0, f32::NAN, 0.0, 0.0, 0.0];
    let inputs = MatmulInputs { a: &a, ..inputs };
    assert!(matches!(ctx().matmul(&inputs, &[e]), Err(Error::NonFinite { .. })));
    assert!(matches!(ctx().map(MapOp::Add, &b, None, 2, 3), Err(Error::InvalidParameter { name: "v", .. })));
}
