//! Parity of the f64 layer reference with hopfield-layers itself, and the
//! typed errors of config, weights and inputs. CPU only: no adapter needed.
//!
//! Every case in tests/fixtures/hflayers/ (written by
//! tools/make_hflayers_fixtures.py from hflayers 1.0.2 in PyTorch) goes
//! through `LayerConfig` + `LayerWeights` + `layer::forward_reference` and is
//! compared with PyTorch's output twice:
//!
//! - with `out64.npy`, the same module and inputs run by PyTorch in float64:
//!   both sides then compute in f64 from the same f32 weights, so they differ
//!   only by summation order. [`F64_TOL`]: a dot product of K <= 64 terms in
//!   f64 is within `gamma_K = K u64 ~ 7e-15` of exact, relative to the sum of
//!   magnitudes; through LayerNorm, two projections, the softmax (its weights
//!   move by about the score error), the read-out and `out_proj`, with scores
//!   up to ~10 and up to 12 updates, that stays below ~1e-12 on outputs of
//!   size ~1-5. 1e-10 leaves two orders of margin and is still six orders
//!   tighter than any change of meaning (a wrong beta, bias or step count).
//! - with `out.npy`, PyTorch's float32 output, what users see. [`F32_TOL`]:
//!   with unit roundoff `u = 2^-24 = 6e-8`, a K = 64 dot product in f32 is
//!   within `gamma_64 = 3.8e-6` of exact relative to its magnitude sum. The
//!   scores (|s| <= ~10) then carry up to ~4e-5 absolute error (8e-5 with
//!   the projections' own errors), the softmax weights twice that relatively,
//!   and `z = sum w v` (|v| <= 3) up to ~5e-4: the worst case, every rounding
//!   aligned. Rounding errors are not aligned in practice: PyTorch's own
//!   float32 and float64 runs differ by at most 5.6e-6 over every case
//!   (index.json records each), and this test checks that they stay within
//!   [`F32_TOL`] too. 5e-5 (abs and rel) is ~9x the largest observed
//!   difference, 10x inside the worst-case bound, and 20x below the smallest
//!   semantic change the fixtures are built to show (~1e-3).

mod common;

use std::path::Path;

use common::hflayers::{cases, root, Case};
use hopfield_gpu::cpu::layer::StopRule;
use hopfield_gpu::layer::config::LayerConfig;
use hopfield_gpu::layer::weights::{expected_keys, LayerWeights};
use hopfield_gpu::layer::{forward_reference, LayerInputs, Mask, Sequences};
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::Error;
use safetensors::{Dtype, SafeTensors};

/// f64 reference vs PyTorch float64 (see the module doc).
const F64_TOL: Tolerance = Tolerance::new(1e-10, 1e-10);
/// f64 reference (or PyTorch float64) vs PyTorch float32 (see the module doc).
const F32_TOL: Tolerance = Tolerance::new(5e-5, 5e-5);

#[test]
fn every_fixture_matches_pytorch() {
    let all = cases();
    // The fixture set must be there and cover every class: an empty or
    // half-copied folder must not pass.
    assert!(all.len() >= 50, "only {} fixture cases", all.len());
    for class in ["Hopfield", "HopfieldPooling", "HopfieldLayer"] {
        assert!(all.iter().filter(|(_, v)| v["cls"] == class).count() >= 8, "too few {class} cases");
    }
    let mut compared = 0;
    let (mut worst64, mut worst32) = (0.0f64, 0.0f64);
    let max_diff = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    for (name, meta) in &all {
        let case = Case::load(name);
        if meta["expect"] != "match" {
            continue; // every_nan_fixture_is_an_error, batch_mixing_is_refused
        }
        let (got, updates) = case.run(StopRule::Association).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected_len: usize = case.out_shape.iter().product();
        assert_eq!(got.len(), expected_len, "{name}: output size vs PyTorch's {:?}", case.out_shape);
        F64_TOL.check_f64(&got, &case.out64).unwrap_or_else(|m| panic!("{name}: vs PyTorch float64: {m}"));
        F32_TOL.check_f64(&got, &case.out32).unwrap_or_else(|m| panic!("{name}: vs PyTorch float32: {m}"));
        // The tolerance is for PyTorch's own float32 rounding: its two runs must agree within it.
        F32_TOL.check_f64(&case.out64, &case.out32).unwrap_or_else(|m| panic!("{name}: PyTorch f32 vs f64: {m}"));
        if let Some(k) = meta["updates_until_stop"].as_u64() {
            let most = updates.iter().copied().max().unwrap_or(0);
            assert_eq!(most as u64, k, "{name}: updates per head {updates:?}, hflayers stopped after {k}");
        }
        worst64 = worst64.max(max_diff(&got, &case.out64));
        worst32 = worst32.max(max_diff(&got, &case.out32));
        compared += 1;
    }
    eprintln!(
        "{compared} cases; largest |reference - PyTorch f64| = {worst64:e}, |reference - PyTorch f32| = {worst32:e}"
    );
    assert!(compared >= 50, "compared only {compared} cases");
}

#[test]
fn every_nan_fixture_is_an_error() {
    let nan_cases: Vec<_> = cases().into_iter().filter(|(_, v)| v["expect"] == "nan").collect();
    assert!(!nan_cases.is_empty(), "the fully masked fixture is missing");
    for (name, _) in nan_cases {
        let case = Case::load(&name);
        assert!(case.out32.iter().any(|v| v.is_nan()), "{name}: hflayers' output was expected to hold NaN");
        match case.run(StopRule::Association) {
            Err(Error::InvalidParameter { name: "mask", .. }) => {}
            other => panic!("{name}: expected a mask error, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn batch_mixing_is_refused() {
    let mixing: Vec<_> = cases().into_iter().filter(|(_, v)| v["expect"] == "mixing").collect();
    assert!(!mixing.is_empty(), "the batch-mixing fixture is missing");
    for (name, _) in mixing {
        let case = Case::load(&name);
        match case.run(StopRule::Association) {
            Err(Error::LayerConfig { arg, .. }) => assert!(arg.ends_with("_as_static"), "{name}: {arg}"),
            other => panic!("{name}: expected a refusal, got {:?}", other.map(|_| ())),
        }
        // One sequence at a time is what hopfield-layers gets right, and so do we.
        let stored = case.stored.as_ref().unwrap();
        let one = |s: &Sequences, i: usize| {
            let per = s.rows * s.features;
            Sequences::new("one", &[s.rows, s.features], s.data[i * per..(i + 1) * per].to_vec()).unwrap()
        };
        for i in 0..stored.n {
            let (y, r) = (one(stored, i), one(case.state.as_ref().unwrap(), i));
            let p = case.projection.as_ref().map(|p| one(p, i));
            let inputs = LayerInputs { stored: Some(&y), state: Some(&r), projection: p.as_ref(), mask: None };
            let f = forward_reference(&case.config, &case.weights, &inputs, StopRule::Association).unwrap();
            assert!(f.out[0].data.iter().all(|v| v.is_finite()));
        }
    }
}

#[test]
fn a_perturbed_weight_is_caught() {
    // The comparison compares real values: nudge one out_proj bias by 1e-3
    // and the float64 and float32 checks must both fail.
    let mut case = Case::load("hopfield_default");
    let out = case.weights.hopfield.out_proj.as_mut().expect("out_proj");
    out.bias.as_mut().expect("bias")[3] += 1e-3;
    let (got, _) = case.run(StopRule::Association).unwrap();
    assert!(F64_TOL.check_f64(&got, &case.out64).is_err());
    assert!(F32_TOL.check_f64(&got, &case.out32).is_err());
}

#[test]
fn the_stop_rule_matters_on_the_stop_rule_fixtures() {
    // The engine's per-query rule on the state is not hflayers' rule on the
    // association matrix maximised over the batch; on these fixtures the two
    // give different outputs, so the fixtures test which rule runs.
    // (On hopfield_steps_none the two rules happen to land within 7e-6 of
    // each other, so it is not listed.)
    for name in ["hopfield_steps_eps", "pooling_steps_none"] {
        let case = Case::load(name);
        let (got, _) = case.run(StopRule::State).unwrap();
        assert!(F32_TOL.check_f64(&got, &case.out64).is_err(), "{name}: both stop rules agree");
    }
}

#[test]
fn nph_methods_swap_the_softmax() {
    // The NPH layer: the same module with another normaliser. top-K with K =
    // every memory is the softmax; sparsemax is not.
    let case = Case::load("pooling_mask");
    let mut config = case.config.clone();
    config.method = hopfield_gpu::Method::TopK { k: 64 };
    let inputs = case.inputs();
    let f = forward_reference(&config, &case.weights, &inputs, StopRule::Association).unwrap();
    let got: Vec<f64> = f.out.iter().flat_map(|m| m.data.iter().copied()).collect();
    F64_TOL.check_f64(&got, &case.out64).unwrap();
    config.method = hopfield_gpu::Method::Sparsemax;
    let f = forward_reference(&config, &case.weights, &inputs, StopRule::Association).unwrap();
    let got: Vec<f64> = f.out.iter().flat_map(|m| m.data.iter().copied()).collect();
    assert!(got.iter().all(|v| v.is_finite()));
    assert!(F32_TOL.check_f64(&got, &case.out64).is_err(), "sparsemax gave the softmax output");
    // Masked memories get weight exactly 0 whatever the normaliser.
    for (n, heads) in f.association.iter().enumerate() {
        for xi in heads {
            for l in 0..xi.rows {
                for s in 0..xi.cols {
                    if case.mask.as_ref().unwrap().masked[n * xi.cols + s] {
                        assert_eq!(xi.row(l)[s], 0.0);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input: each a typed error naming the problem.

fn config_arg(e: Error) -> String {
    match e {
        Error::LayerConfig { arg, .. } => arg,
        other => panic!("expected a config error, got {other}"),
    }
}

fn weights_key(e: Error) -> String {
    match e {
        Error::LayerWeights { key, .. } => key,
        other => panic!("expected a weights error, got {other}"),
    }
}

#[test]
fn unknown_class_and_argument_are_named() {
    let e = LayerConfig::from_json(r#"{"class": "HopfieldPool", "args": {"input_size": 8}}"#).unwrap_err();
    assert_eq!(config_arg(e), "class");
    let e = LayerConfig::from_json(r#"{"class": "Hopfield", "args": {"input_size": 8, "num_head": 2}}"#).unwrap_err();
    assert_eq!(config_arg(e), "num_head");
    let e =
        LayerConfig::from_json(r#"{"class": "Hopfield", "args": {"input_size": 8, "association_activation": "relu"}}"#)
            .unwrap_err();
    assert_eq!(config_arg(e), "association_activation");
    let e = LayerConfig::from_json("{not json").unwrap_err();
    assert!(matches!(e, Error::LayerConfig { .. }), "{e}");
}

/// The tensors of a fixture's weights file, to rewrite.
fn tensors(name: &str) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(root().join(name).join("weights.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors().into_iter().map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect()
}

fn serialize(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(k, d, s, b)| (k.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn load_bytes(name: &str, bytes: &[u8]) -> hopfield_gpu::Result<LayerWeights> {
    let config = LayerConfig::from_file(&root().join(name).join("config.json")).unwrap();
    LayerWeights::from_bytes(bytes, &config, Path::new("test.safetensors"))
}

#[test]
fn missing_unexpected_and_misshapen_tensors_are_named() {
    let name = "pooling_heads4_quantity3";
    let all = tensors(name);
    assert!(load_bytes(name, &serialize(&all)).is_ok(), "the rewritten file itself loads");

    let without: Vec<_> = all.iter().filter(|t| t.0 != "hopfield.association_core.out_proj.bias").cloned().collect();
    assert_eq!(
        weights_key(load_bytes(name, &serialize(&without)).unwrap_err()),
        "hopfield.association_core.out_proj.bias"
    );

    let mut extra = all.clone();
    extra.push(("hopfield.association_core.bias_k".into(), Dtype::F32, vec![1, 1, 8], vec![0; 32]));
    assert_eq!(weights_key(load_bytes(name, &serialize(&extra)).unwrap_err()), "hopfield.association_core.bias_k");

    let mut wrong = all.clone();
    let t = wrong.iter_mut().find(|t| t.0 == "pooling_weights").unwrap();
    t.2 = vec![1, 2, 12]; // same 24 values, the wrong shape
    assert_eq!(weights_key(load_bytes(name, &serialize(&wrong)).unwrap_err()), "pooling_weights");

    let mut ints = all.clone();
    let t = ints.iter_mut().find(|t| t.0 == "pooling_weights").unwrap();
    t.1 = Dtype::I32;
    assert_eq!(weights_key(load_bytes(name, &serialize(&ints)).unwrap_err()), "pooling_weights");

    let mut nan = all.clone();
    let t = nan.iter_mut().find(|t| t.0 == "pooling_weights").unwrap();
    t.3[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(weights_key(load_bytes(name, &serialize(&nan)).unwrap_err()), "pooling_weights");

    // A config that disagrees with the file: one head fewer.
    let config = LayerConfig::from_json(
        r#"{"class": "HopfieldPooling", "args": {"input_size": 8, "num_heads": 4, "quantity": 2}}"#,
    )
    .unwrap();
    let e = LayerWeights::from_file(&root().join(name).join("weights.safetensors"), &config);
    assert!(matches!(e, Err(Error::LayerWeights { .. })), "{e:?}");
}

#[test]
fn truncated_and_foreign_files_are_bad_files() {
    let name = "hopfield_default";
    let bytes = std::fs::read(root().join(name).join("weights.safetensors")).unwrap();
    for cut in [bytes.len() - 7, 40, 5] {
        match load_bytes(name, &bytes[..cut]) {
            Err(Error::BadFile { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    let npy_bytes = std::fs::read(root().join(name).join("out.npy")).unwrap();
    assert!(matches!(load_bytes(name, &npy_bytes), Err(Error::BadFile { .. })));
    let missing = LayerWeights::from_file(
        Path::new("/nonexistent/w.safetensors"),
        &LayerConfig::from_json(r#"{"class": "Hopfield", "args": {"input_size": 8}}"#).unwrap(),
    );
    assert!(matches!(missing, Err(Error::Io { .. })));
}

#[test]
fn other_float_dtypes_are_converted() {
    // float64 holding the same f32 values gives the same output; float16 and
    // bfloat16 load (rounded) and run.
    let name = "hopfield_sizes";
    let case = Case::load(name);
    let convert = |dtype: Dtype| {
        let all: Vec<_> = tensors(name)
            .into_iter()
            .map(|(k, _, s, b)| {
                let vals = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                let bytes: Vec<u8> = match dtype {
                    Dtype::F64 => vals.flat_map(|v| f64::from(v).to_le_bytes()).collect(),
                    Dtype::F16 => vals.flat_map(|v| half::f16::from_f32(v).to_le_bytes()).collect(),
                    _ => vals.flat_map(|v| half::bf16::from_f32(v).to_le_bytes()).collect(),
                };
                (k, dtype, s, bytes)
            })
            .collect();
        load_bytes(name, &serialize(&all)).unwrap()
    };
    assert_eq!(convert(Dtype::F64), case.weights);
    for dtype in [Dtype::F16, Dtype::BF16] {
        let w = convert(dtype);
        let f = forward_reference(&case.config, &w, &case.inputs(), StopRule::Association).unwrap();
        let got: Vec<f64> = f.out.iter().flat_map(|m| m.data.iter().copied()).collect();
        // Half-precision weights (8 or 11 mantissa bits): only roughly PyTorch's output.
        Tolerance::new(0.1, 0.1).check_f64(&got, &case.out64).unwrap();
    }
}

#[test]
fn bad_inputs_are_refused() {
    let case = Case::load("hopfield_default");
    // 4-D input.
    let e = Sequences::new("stored", &[1, 2, 5, 8], vec![0.0; 80]).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter { name: "stored", .. }), "{e}");
    // Values that do not fill the shape, empty axes, NaN.
    assert!(matches!(Sequences::new("state", &[2, 3, 8], vec![0.0; 47]), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(Sequences::new("state", &[0, 3, 8], vec![]), Err(Error::Empty { what: "state" })));
    let mut data = vec![0.5; 48];
    data[13] = f32::INFINITY;
    assert!(matches!(
        Sequences::new("state", &[2, 3, 8], data),
        Err(Error::NonFinite { what: "state", row: 1, col: 5, .. })
    ));
    // A 2-D input is one sequence.
    assert_eq!(Sequences::new("state", &[3, 8], vec![0.0; 24]).unwrap().n, 1);
    // Feature size that differs from the config.
    let narrow = Sequences::new("stored", &[2, 5, 7], vec![0.25; 70]).unwrap();
    let inputs = LayerInputs { stored: Some(&narrow), ..case.inputs() };
    let e = forward_reference(&case.config, &case.weights, &inputs, StopRule::Association).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { expected: 8, got: 7, .. }), "{e}");
    // A batch that disagrees across inputs.
    let one = Sequences::new("state", &[3, 8], vec![0.1; 24]).unwrap();
    let inputs = LayerInputs { state: Some(&one), ..case.inputs() };
    assert!(matches!(
        forward_reference(&case.config, &case.weights, &inputs, StopRule::Association),
        Err(Error::ShapeMismatch { .. })
    ));
    // A mask of the wrong size.
    let mask = Mask { n: 2, s: 4, masked: vec![false; 8] };
    let inputs = LayerInputs { mask: Some(&mask), ..case.inputs() };
    assert!(matches!(
        forward_reference(&case.config, &case.weights, &inputs, StopRule::Association),
        Err(Error::ShapeMismatch { .. })
    ));
    // A mask that hides every memory of a sequence: an error, not NaN...
    let mask = Mask { n: 2, s: 5, masked: [vec![false; 5], vec![true; 5]].concat() };
    let inputs = LayerInputs { mask: Some(&mask), ..case.inputs() };
    assert!(matches!(
        forward_reference(&case.config, &case.weights, &inputs, StopRule::Association),
        Err(Error::InvalidParameter { name: "mask", .. })
    ));
    // ...unless add_zero_association gives it the zero memory.
    let zero = Case::load("hopfield_zero_association");
    let (out, _) = zero.run(StopRule::Association).unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    // An input the class does not take, or a missing one.
    let pooling = Case::load("pooling_default");
    let inputs = LayerInputs { state: case.state.as_ref(), ..pooling.inputs() };
    assert!(forward_reference(&pooling.config, &pooling.weights, &inputs, StopRule::Association).is_err());
    let inputs = LayerInputs { state: None, ..case.inputs() };
    assert!(matches!(
        forward_reference(&case.config, &case.weights, &inputs, StopRule::Association),
        Err(Error::InvalidParameter { name: "state", .. })
    ));
}

#[test]
fn expected_keys_follow_hflayers_names() {
    // The mapping the weights loader checks against, spelled out for one
    // separate-projection module (hopfield_sizes: every size differs).
    let config = LayerConfig::from_file(&root().join("hopfield_sizes/config.json")).unwrap();
    let keys = expected_keys(&config).unwrap();
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("association_core.q_proj_weight", vec![10, 8]),
        ("association_core.k_proj_weight", vec![10, 7]),
        ("association_core.v_proj_weight", vec![6, 4]),
        ("association_core.in_proj_bias", vec![26]),
        ("association_core.out_proj.weight", vec![6, 6]),
        ("association_core.out_proj.bias", vec![6]),
        ("norm_stored_pattern.weight", vec![7]),
        ("norm_stored_pattern.bias", vec![7]),
        ("norm_state_pattern.weight", vec![8]),
        ("norm_state_pattern.bias", vec![8]),
        ("norm_pattern_projection.weight", vec![4]),
        ("norm_pattern_projection.bias", vec![4]),
    ];
    let got: Vec<(&str, Vec<usize>)> = keys.iter().map(|(k, s)| (k.as_str(), s.clone())).collect();
    assert_eq!(got, want);
    // And every fixture's file holds exactly the keys its config implies.
    for (name, _) in cases() {
        let config = LayerConfig::from_file(&root().join(&name).join("config.json")).unwrap();
        let mut want: Vec<_> = expected_keys(&config).unwrap().into_iter().map(|(k, _)| k).collect();
        let mut got: Vec<_> = tensors(&name).into_iter().map(|t| t.0).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{name}");
    }
}
