//! The hopfield-layers parity fixtures (tests/fixtures/hflayers/, written by
//! tools/make_hflayers_fixtures.py): loading a case and running the f64
//! reference on it, for tests/layer_reference.rs and tests/layer.rs.

use std::fs::File;
use std::path::{Path, PathBuf};

use hopfield_gpu::cpu::layer::StopRule;
use hopfield_gpu::layer::config::LayerConfig;
use hopfield_gpu::layer::weights::LayerWeights;
use hopfield_gpu::layer::{forward_reference, LayerInputs, Mask, Sequences};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hflayers")
}

pub fn index() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("index.json")).expect("fixture index");
    serde_json::from_str(&text).expect("fixture index is JSON")
}

/// An .npy file's shape and values (f32, f64 or u8 data, converted to f64).
pub fn npy(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let file = npyz::NpyFile::new(File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap();
    let shape: Vec<usize> = file.shape().iter().map(|&v| v as usize).collect();
    let data = match file.dtype() {
        npyz::DType::Plain(t) if t.to_string() == "<f4" => {
            file.into_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
        }
        npyz::DType::Plain(t) if t.to_string() == "<f8" => file.into_vec::<f64>().unwrap(),
        npyz::DType::Plain(t) if t.to_string() == "|u1" => {
            file.into_vec::<u8>().unwrap().into_iter().map(f64::from).collect()
        }
        other => panic!("{}: unexpected dtype {other:?}", path.display()),
    };
    (shape, data)
}

pub fn sequences(dir: &Path, name: &'static str) -> Option<Sequences> {
    let path = dir.join(format!("{name}.npy"));
    path.exists().then(|| {
        let (shape, data) = npy(&path);
        Sequences::new(name, &shape, data.into_iter().map(|v| v as f32).collect()).unwrap()
    })
}

/// Everything one fixture case holds.
pub struct Case {
    pub config: LayerConfig,
    pub weights: LayerWeights,
    pub stored: Option<Sequences>,
    pub state: Option<Sequences>,
    pub projection: Option<Sequences>,
    pub mask: Option<Mask>,
    pub out32: Vec<f64>,
    pub out64: Vec<f64>,
    pub out_shape: Vec<usize>,
}

impl Case {
    pub fn load(name: &str) -> Case {
        let dir = root().join(name);
        let config = LayerConfig::from_file(&dir.join("config.json")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let weights = LayerWeights::from_file(&dir.join("weights.safetensors"), &config)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mask = dir.join("mask.npy").exists().then(|| {
            let (shape, data) = npy(&dir.join("mask.npy"));
            Mask { n: shape[0], s: shape[1], masked: data.iter().map(|&v| v != 0.0).collect() }
        });
        let (out_shape, out32) = npy(&dir.join("out.npy"));
        let (_, out64) = npy(&dir.join("out64.npy"));
        let mut case = Case {
            config,
            weights,
            stored: sequences(&dir, "stored"),
            state: sequences(&dir, "state"),
            projection: sequences(&dir, "projection"),
            mask,
            out32,
            out64,
            out_shape,
        };
        // The fixtures write every input a case uses; the classes that take
        // the projection from the stored input are given it only when it differs.
        if case.projection.is_some() && case.projection == case.stored {
            case.projection = None;
        }
        case
    }

    pub fn inputs(&self) -> LayerInputs<'_> {
        LayerInputs {
            stored: self.stored.as_ref(),
            state: self.state.as_ref(),
            projection: self.projection.as_ref(),
            mask: self.mask.as_ref(),
        }
    }

    pub fn run(&self, rule: StopRule) -> hopfield_gpu::Result<(Vec<f64>, Vec<usize>)> {
        let f = forward_reference(&self.config, &self.weights, &self.inputs(), rule)?;
        let flat = f.out.iter().flat_map(|m| m.data.iter().copied()).collect();
        Ok((flat, f.updates))
    }
}

pub fn cases() -> Vec<(String, serde_json::Value)> {
    let index = index();
    let cases = index["cases"].as_object().expect("cases").clone();
    cases.into_iter().collect()
}
