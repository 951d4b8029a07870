//! hopfield-layers modules on the GPU (layer::gpu) against PyTorch and the
//! f64 reference: every parity fixture of tests/fixtures/hflayers/ (written
//! by tools/make_hflayers_fixtures.py from hflayers 1.0.2) through
//! `Hopfield` / `HopfieldPooling` / `HopfieldLayer`, compared with
//! PyTorch's float32 output (what users see) and its float64 output; the
//! NPH layer (every retrieval method in place of the softmax) and the
//! engine's stop rule against the reference's; bad input.
//!
//! Tolerances. [`F32_TOL`] is tests/layer_reference.rs's bound for an f32
//! computation of these modules against an exact one (5e-5, abs and rel:
//! ~10x inside the worst case of f32 dot products of <= 64 terms through the
//! projections, the softmax, the read-out and out_proj, and ~9x the largest
//! float32-vs-float64 difference PyTorch itself shows). The GPU is such an
//! f32 computation, with other summation orders, so it is checked against
//! PyTorch's float64 output with it, and against PyTorch's float32 output
//! with twice it (each side carries its own f32 rounding). The NPH methods
//! are compared with the f64 reference, as tests/batch.rs compares the
//! batched retrieval (2e-4: sparse weights move with the scores' rounding,
//! and up to 12 updates compound it), through the layer's LayerNorms and
//! projections, whose f32 error is far below that.

mod common;

use common::ctx;
use common::hflayers::{cases, Case};
use hopfield_gpu::cpu::layer::StopRule;
use hopfield_gpu::layer::gpu::{Hopfield, HopfieldLayer, HopfieldPooling, Layer};
use hopfield_gpu::layer::{forward_reference, LayerInputs, Mask, Sequences};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{BatchStop, Error, Method};

const F32_TOL: Tolerance = Tolerance::new(5e-5, 5e-5);
const VS_F32_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);
const NPH_TOL: Tolerance = Tolerance::new(2e-4, 2e-4);

fn check(what: &str, got: &[f32], want: &[f64], tol: Tolerance) {
    if let Err(m) = tol.check(got, want) {
        panic!("{what}: {m}");
    }
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn every_fixture_matches_pytorch_on_the_gpu() {
    let all = cases();
    assert!(all.len() >= 50, "only {} fixture cases", all.len());
    let mut compared = 0;
    let mut worst = 0.0f64;
    for (name, meta) in &all {
        if meta["expect"] != "match" {
            continue;
        }
        let case = Case::load(name);
        let layer = Layer::new(ctx(), &case.config, &case.weights).unwrap_or_else(|e| panic!("{name}: {e}"));
        let out = layer.forward(&case.inputs()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected: usize = case.out_shape.iter().product();
        assert_eq!(out.data.len(), expected, "{name}: output size vs PyTorch's {:?}", case.out_shape);
        check(&format!("{name} vs PyTorch float64"), &out.data, &case.out64, F32_TOL);
        check(&format!("{name} vs PyTorch float32"), &out.data, &case.out32, VS_F32_TOL);
        if let Some(k) = meta["updates_until_stop"].as_u64() {
            let most = out.updates.iter().copied().max().unwrap_or(0);
            assert_eq!(u64::from(most), k, "{name}: updates per head {:?}, hflayers stopped after {k}", out.updates);
        }
        worst = worst.max(hopfield_gpu::tolerance::max_abs_diff(&out.data, &case.out64));
        compared += 1;
    }
    eprintln!("{compared} cases on the GPU; largest |GPU - PyTorch f64| = {worst:e}");
    assert!(compared >= 50, "compared only {compared} cases");
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn the_typed_layers_take_their_class_inputs() {
    let case = Case::load("pooling_mask");
    let pooling = HopfieldPooling::new(ctx(), &case.config, &case.weights).unwrap();
    let out = pooling.forward(case.stored.as_ref().unwrap(), case.projection.as_ref(), case.mask.as_ref()).unwrap();
    check("HopfieldPooling", &out.data, &case.out64, F32_TOL);
    assert!(matches!(Hopfield::new(ctx(), &case.config, &case.weights), Err(Error::LayerConfig { .. })));
    let case = Case::load("layer_mask");
    let layer = HopfieldLayer::new(ctx(), &case.config, &case.weights).unwrap();
    let out = layer.forward(case.state.as_ref().unwrap(), case.mask.as_ref()).unwrap();
    check("HopfieldLayer", &out.data, &case.out64, F32_TOL);
    let case = Case::load("hopfield_mask");
    let hop = Hopfield::new(ctx(), &case.config, &case.weights).unwrap();
    let out = hop
        .forward(
            case.stored.as_ref().unwrap(),
            case.state.as_ref().unwrap(),
            case.projection.as_ref(),
            case.mask.as_ref(),
        )
        .unwrap();
    check("Hopfield", &out.data, &case.out64, F32_TOL);
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn every_method_swaps_the_softmax_as_the_reference_does() {
    // The NPH layer: the module with another normaliser, on the GPU and in
    // the reference, across the three classes, masks, several heads, the
    // zero memory and updates.
    let methods = [
        Method::TopK { k: 3 },
        Method::Sparsemax,
        Method::Entmax15,
        Method::Random { k: 2, seed: 7 },
        Method::Window { width: None },
        Method::Window { width: Some(2) },
        Method::Linear,
        Method::Prf { features: Some(16), seed: 3, orthogonal: false },
        Method::Poly { delta: 1e-2, degree: Some(4) },
    ];
    for name in ["pooling_mask", "hopfield_heads2", "hopfield_steps1", "layer_mask", "hopfield_zero_association"] {
        let case = Case::load(name);
        for method in methods {
            let mut config = case.config.clone();
            config.method = method;
            let want = forward_reference(&config, &case.weights, &case.inputs(), StopRule::Association)
                .unwrap_or_else(|e| panic!("{name} {method:?}: reference: {e}"));
            let flat: Vec<f64> = want.out.iter().flat_map(|m| m.data.iter().copied()).collect();
            let layer = Layer::new(ctx(), &config, &case.weights).unwrap();
            let got = layer.forward(&case.inputs()).unwrap_or_else(|e| panic!("{name} {method:?}: {e}"));
            check(&format!("{name} {method:?}"), &got.data, &flat, NPH_TOL);
            assert_eq!(got.updates, want.updates.iter().map(|&u| u as u32).collect::<Vec<_>>(), "{name} {method:?}");
        }
    }
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn the_engine_stop_rule_is_the_references_state_rule() {
    for name in ["hopfield_steps3", "pooling_steps_none", "hopfield_steps_eps"] {
        let case = Case::load(name);
        let want = forward_reference(&case.config, &case.weights, &case.inputs(), StopRule::State).unwrap();
        let flat: Vec<f64> = want.out.iter().flat_map(|m| m.data.iter().copied()).collect();
        let layer = Layer::new(ctx(), &case.config, &case.weights).unwrap().with_stop(BatchStop::PerQuery);
        let got = layer.forward(&case.inputs()).unwrap();
        check(name, &got.data, &flat, NPH_TOL);
        assert_eq!(got.updates, want.updates.iter().map(|&u| u as u32).collect::<Vec<_>>(), "{name}");
    }
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn bad_inputs_are_typed_errors_on_the_gpu() {
    // hflayers gives NaN for a fully masked row; we refuse, naming the mask.
    for (name, meta) in cases() {
        if meta["expect"] == "nan" {
            let case = Case::load(&name);
            let layer = Layer::new(ctx(), &case.config, &case.weights).unwrap();
            assert!(
                matches!(layer.forward(&case.inputs()), Err(Error::InvalidParameter { name: "mask", .. })),
                "{name}"
            );
        }
        if meta["expect"] == "mixing" {
            let case = Case::load(&name);
            let layer = Layer::new(ctx(), &case.config, &case.weights).unwrap();
            assert!(matches!(layer.forward(&case.inputs()), Err(Error::LayerConfig { .. })), "{name}");
        }
    }
    let case = Case::load("hopfield_default");
    let layer = Layer::new(ctx(), &case.config, &case.weights).unwrap();
    let stored = case.stored.as_ref().unwrap();
    // Features that differ from the config.
    let wide = Sequences::new(
        "stored",
        &[stored.n, stored.rows, stored.features + 1],
        vec![0.5; stored.n * stored.rows * (stored.features + 1)],
    )
    .unwrap();
    let inputs = LayerInputs { stored: Some(&wide), ..case.inputs() };
    assert!(matches!(layer.forward(&inputs), Err(Error::ShapeMismatch { .. })));
    // A mask over every stored pattern of one sequence.
    let mask = Mask { n: stored.n, s: stored.rows, masked: vec![true; stored.n * stored.rows] };
    let inputs = LayerInputs { mask: Some(&mask), ..case.inputs() };
    assert!(matches!(layer.forward(&inputs), Err(Error::InvalidParameter { name: "mask", .. })));
    // An input the class does not take; a missing one.
    let pooling = Case::load("pooling_default");
    let p = Layer::new(ctx(), &pooling.config, &pooling.weights).unwrap();
    let inputs = LayerInputs { state: case.state.as_ref(), ..pooling.inputs() };
    assert!(matches!(p.forward(&inputs), Err(Error::InvalidParameter { name: "inputs", .. })));
    assert!(matches!(layer.forward(&LayerInputs::default()), Err(Error::InvalidParameter { name: "stored", .. })));
    // A polynomial without its degree cannot be chosen from device data.
    let mut config = case.config.clone();
    config.method = Method::Poly { delta: 1e-2, degree: None };
    assert!(matches!(Layer::new(ctx(), &config, &case.weights), Err(Error::Unsupported { option: "degree", .. })));
}
