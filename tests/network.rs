//! Hopfield networks (layer::network, layer::gpu::network) against the f64
//! reference (cpu::network): a model JSON and one safetensors file written
//! here, read back through `Model::from_files`, run on the GPU and by
//! `network_forward` on `Model::reference`. The network chains every block
//! kind: feed-forward maps (with and without biases), a Hopfield module over
//! a fixed bank, a residual block around a LayerNorm and a self-associative
//! Hopfield module with updates, KHN layers over a bank (twice) and over the
//! hidden state, whose energies E_K are checked too; then bad model files.
//!
//! Tolerance. Each block is an f32 computation whose error relative to the
//! reference is that of tests/linalg.rs (products of <= 16 terms) or
//! tests/layer.rs (a layer: 5e-5); the LayerNorm rescales by the rows'
//! standard deviation (~0.5 here, so x2) and six blocks add up: abs 3e-4,
//! rel 3e-4. Energies are sums of ~10 terms of size ~1 after the same
//! chain: abs 3e-4, rel 1e-4.

mod common;

use std::path::Path;

use common::{ctx, random};
use hopfield_gpu::cpu::network::{khn_energy, network_forward};
use hopfield_gpu::cpu::Matrix;
use hopfield_gpu::layer::config::LayerConfig;
use hopfield_gpu::layer::gpu::network::Network;
use hopfield_gpu::layer::network::Model;
use hopfield_gpu::layer::weights::expected_keys;
use hopfield_gpu::layer::Sequences;
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::Error;
use serde_json::json;

const TOL: Tolerance = Tolerance::new(3e-4, 3e-4);
const E_TOL: Tolerance = Tolerance::new(3e-4, 1e-4);

/// Tensors by name, random in [-scale, scale] from the seed.
struct Tensors(Vec<(String, Vec<usize>, Vec<f32>)>);

impl Tensors {
    fn add(&mut self, name: &str, shape: &[usize], scale: f32) {
        let n: usize = shape.iter().product();
        let seed = 1000 + self.0.len() as u64;
        self.0.push((name.to_string(), shape.to_vec(), random(seed, 1, n, scale)));
    }

    /// Every tensor a hopfield-layers config implies, under `prefix`.
    fn layer(&mut self, prefix: &str, layer: &serde_json::Value) {
        let config = LayerConfig::from_value(layer).unwrap();
        for (k, shape) in expected_keys(&config).unwrap() {
            self.add(&format!("{prefix}{k}"), &shape, 0.5);
        }
    }

    fn write(&self, path: &Path) {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
            self.0.iter().map(|(k, s, d)| (k.clone(), s.clone(), bytemuck::cast_slice(d).to_vec())).collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(k, s, b)| {
                (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
            })
            .collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    fn get(&self, name: &str) -> Matrix {
        let (_, s, d) = self.0.iter().find(|(k, _, _)| k == name).unwrap();
        Matrix::from_f32(s[0], s[1], d)
    }
}

/// The test network: JSON and tensors.
fn network() -> (serde_json::Value, Tensors) {
    let bank_layer = json!({"class": "Hopfield", "args": {"input_size": 8, "num_heads": 2}});
    let self_layer = json!({"class": "Hopfield", "args": {"input_size": 8, "update_steps_max": 2, "scaling": 0.7}});
    let model = json!({
        "input": 6,
        "blocks": [
            {"type": "feedforward", "name": "f0", "hidden": 12, "output": 8},
            {"type": "hopfield", "name": "hop1", "memories": "bank", "layer": bank_layer},
            {"type": "residual", "blocks": [
                {"type": "layernorm", "name": "ln1", "eps": 1e-5, "affine": true},
                {"type": "hopfield", "name": "hop2", "memories": "hidden", "layer": self_layer}
            ]},
            {"type": "khn", "name": "k1", "beta": 1.5, "features": 5, "memories": "bank", "steps": 2},
            {"type": "khn", "name": "k2", "beta": 0.8, "features": 8, "memories": "hidden"},
            {"type": "feedforward", "name": "f1", "hidden": 10, "output": 3, "bias": false}
        ]
    });
    let mut t = Tensors(Vec::new());
    t.add("f0.w1", &[12, 6], 0.5);
    t.add("f0.b1", &[12], 0.5);
    t.add("f0.w2", &[8, 12], 0.5);
    t.add("f0.b2", &[8], 0.5);
    t.layer("hop1.", &bank_layer);
    t.add("hop1.bank", &[10, 8], 1.0);
    t.add("ln1.weight", &[8], 1.0);
    t.add("ln1.bias", &[8], 0.5);
    t.layer("hop2.", &self_layer);
    t.add("k1.phi", &[5, 8], 0.6);
    t.add("k1.bank", &[7, 8], 1.0);
    t.add("k2.phi", &[8, 8], 0.4);
    t.add("f1.w1", &[10, 8], 0.5);
    t.add("f1.w2", &[3, 10], 0.5);
    (model, t)
}

fn load(dir: &Path, model: &serde_json::Value, tensors: &Tensors) -> hopfield_gpu::Result<Model> {
    let (m, w) = (dir.join("net.json"), dir.join("net.safetensors"));
    std::fs::write(&m, serde_json::to_string_pretty(model).unwrap()).unwrap();
    tensors.write(&w);
    Model::from_files(&m, &w)
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn a_network_of_every_block_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (json, tensors) = network();
    let model = load(dir.path(), &json, &tensors).unwrap();
    assert_eq!((model.input, model.output), (6, 3));
    let (n, l) = (2, 5);
    let x = random(7, n * l, 6, 1.0);
    let net = Network::new(ctx(), &model).unwrap();
    let got = net.forward(&Sequences::new("input", &[n, l, 6], x.clone()).unwrap()).unwrap();
    assert_eq!((got.n, got.rows, got.features), (n, l, 3));
    let blocks = model.reference().unwrap();
    // f0, hop1, residual, k1 (twice), k2, f1.
    assert_eq!(blocks.len(), 7);
    assert_eq!(got.khn_energy.len(), 3);
    let k1 = (tensors.get("k1.phi"), tensors.get("k1.bank"));
    let k2 = tensors.get("k2.phi");
    for s in 0..n {
        let xs = Matrix::from_f32(l, 6, &x[s * l * 6..(s + 1) * l * 6]);
        let want = network_forward(&blocks, &xs).unwrap();
        let rows = &got.data[s * l * 3..(s + 1) * l * 3];
        TOL.check(rows, &want.data).unwrap_or_else(|m| panic!("sequence {s}: {m}"));
        // E_K of each KHN application's input, from the reference's hidden states.
        for (k, (start, phi, bank, beta)) in
            [(3, &k1.0, Some(&k1.1), 1.5), (4, &k1.0, Some(&k1.1), 1.5), (5, &k2, None, 0.8)].into_iter().enumerate()
        {
            let h = network_forward(&blocks[..start], &xs).unwrap();
            let memories = bank.unwrap_or(&h);
            let want: Vec<f64> = (0..l).map(|i| khn_energy(h.row(i), memories, phi, beta)).collect();
            let energies = &got.khn_energy[k][s * l..(s + 1) * l];
            E_TOL.check(energies, &want).unwrap_or_else(|m| panic!("KHN application {k}, sequence {s}: {m}"));
        }
    }
}

#[test]
fn bad_models_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (json, tensors) = network();
    let with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut j = json.clone();
        edit(&mut j);
        load(dir.path(), &j, &tensors)
    };
    let at = |e: Error| match e {
        Error::Model { at, .. } => at,
        Error::LayerWeights { key, .. } => key,
        Error::LayerConfig { arg, .. } => arg,
        other => panic!("unexpected error {other:?}"),
    };
    assert_eq!(at(with(&|j| j["blocks"][0]["type"] = json!("convolution")).unwrap_err()), "blocks[0].type");
    assert_eq!(at(with(&|j| j["blocks"][0]["widht"] = json!(3)).unwrap_err()), "blocks[0].widht");
    assert_eq!(at(with(&|j| j["blocks"][0]["hidden"] = json!(11)).unwrap_err()), "f0.w1");
    assert_eq!(at(with(&|j| j["input"] = json!(7)).unwrap_err()), "f0.w1");
    assert_eq!(
        at(with(&|j| j["blocks"][2]["blocks"][1]["memories"] = json!("both")).unwrap_err()),
        "blocks[2].blocks[1].memories"
    );
    assert_eq!(
        at(with(&|j| j["blocks"][1]["layer"]["class"] = json!("HopfieldPooling")).unwrap_err()),
        "blocks[1].layer.class"
    );
    assert_eq!(at(with(&|j| j["blocks"][3]["beta"] = json!(0)).unwrap_err()), "blocks[3].beta");
    // A residual block must keep its features.
    let residual =
        with(&|j| j["blocks"][2]["blocks"] = json!([{"type": "feedforward", "name": "f0", "hidden": 12, "output": 4}]));
    assert!(matches!(residual, Err(Error::Model { .. }) | Err(Error::LayerWeights { .. })), "{residual:?}");
    // A tensor no block uses, a missing one, a misshapen one.
    let mut extra = Tensors(tensors.0.clone());
    extra.add("f9.w1", &[2, 2], 1.0);
    assert_eq!(at(load(dir.path(), &json, &extra).unwrap_err()), "f9.w1");
    let missing = Tensors(tensors.0.iter().filter(|(k, _, _)| k != "k1.bank").cloned().collect());
    assert_eq!(at(load(dir.path(), &json, &missing).unwrap_err()), "k1.bank");
    let mut wrong = Tensors(tensors.0.clone());
    if let Some(t) = wrong.0.iter_mut().find(|(k, _, _)| k == "hop1.association_core.out_proj.weight") {
        t.1 = vec![4, 16];
    }
    assert_eq!(at(load(dir.path(), &json, &wrong).unwrap_err()), "hop1.association_core.out_proj.weight");
    // Not JSON; not safetensors.
    let m = dir.path().join("bad.json");
    std::fs::write(&m, "{not json").unwrap();
    assert!(matches!(Model::from_files(&m, &dir.path().join("net.safetensors")), Err(Error::BadFile { .. })));
    let w = dir.path().join("bad.safetensors");
    std::fs::write(&w, b"definitely not").unwrap();
    assert!(matches!(Model::from_files(&dir.path().join("net.json"), &w), Err(Error::BadFile { .. })));
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn input_features_must_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (json, tensors) = network();
    let model = load(dir.path(), &json, &tensors).unwrap();
    let net = Network::new(ctx(), &model).unwrap();
    let x = Sequences::new("input", &[3, 5], vec![0.1; 15]).unwrap();
    assert!(matches!(net.forward(&x), Err(Error::ShapeMismatch { expected: 6, got: 5, .. })));
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn the_forward_command_writes_the_networks_output() {
    let dir = tempfile::tempdir().unwrap();
    let (json, tensors) = network();
    let model = load(dir.path(), &json, &tensors).unwrap();
    let (n, l) = (2, 4);
    let x = random(8, n * l, 6, 1.0);
    let input = dir.path().join("x.npy");
    hopfield_gpu::npy::stage_f32(&input, &[n, l, 6], &x).unwrap().commit().unwrap();
    let out = dir.path().join("y.npy");
    let run = |input: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hopfield-gpu"))
            .arg("forward")
            .arg("--model")
            .arg(dir.path().join("net.json"))
            .arg("--weights")
            .arg(dir.path().join("net.safetensors"))
            .arg("--input")
            .arg(input)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    let r = run(&input);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let got = hopfield_gpu::npy::read_array(&out, 3..=3).unwrap();
    assert_eq!(got.shape, [n, l, 3]);
    let blocks = model.reference().unwrap();
    for s in 0..n {
        let want = network_forward(&blocks, &Matrix::from_f32(l, 6, &x[s * l * 6..(s + 1) * l * 6])).unwrap();
        TOL.check(&got.data[s * l * 3..(s + 1) * l * 3], &want.data).unwrap();
    }
    // An input of the wrong width: one line naming the flag, nothing written.
    std::fs::remove_file(&out).unwrap();
    let narrow = dir.path().join("narrow.npy");
    hopfield_gpu::npy::stage_f32(&narrow, &[4, 5], &[0.0; 20]).unwrap().commit().unwrap();
    let r = run(&narrow);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("--input") && err.contains("6"), "{err}");
    assert!(!out.exists());
}
