//! Hopfield networks (expressive-power paper, Defs 3.3-3.7) as a model file:
//! one JSON listing the blocks, one safetensors file of every weight under
//! the blocks' names. Device-free: parsing, checking every size along the
//! chain, and the f64 reference of the whole network ([`Model::reference`],
//! built from `cpu::network`). The GPU network is `layer::gpu::network`.
//!
//! ```json
//! {"input": 8,
//!  "blocks": [
//!   {"type": "feedforward", "name": "f0", "hidden": 16, "output": 8},
//!   {"type": "hopfield", "name": "hop1", "memories": "bank",
//!    "layer": {"class": "Hopfield", "args": {"input_size": 8, "num_heads": 2}}},
//!   {"type": "residual", "blocks": [
//!     {"type": "layernorm", "name": "ln1", "eps": 1e-5, "affine": true},
//!     {"type": "hopfield", "name": "hop2", "memories": "hidden",
//!      "layer": {"class": "Hopfield", "args": {"input_size": 8}}}]},
//!   {"type": "khn", "name": "k1", "beta": 2.0, "features": 6, "memories": "bank", "steps": 1},
//!   {"type": "feedforward", "name": "f1", "hidden": 16, "output": 4}]}
//! ```
//!
//! Blocks and their tensors (`name.` + key):
//! - `feedforward`: `f(x) = W2 relu(W1 x + b1) + b2` (Def. 3.4): `w1`
//!   `[hidden, in]`, `b1` `[hidden]`, `w2` `[output, hidden]`, `b2`
//!   `[output]` (`"bias": false`: no `b1`, `b2`);
//! - `layernorm`: over the features, `eps` (default 1e-5), `weight`, `bias`
//!   `[features]` when `"affine"` (default true);
//! - `residual`: `x + g(x)`, `g` its `blocks` (which must keep the features);
//! - `hopfield`: a hopfield-layers `Hopfield` module (`layer`: its config,
//!   as `hopfield-gpu layer` takes it; its state dict under `name.`) whose
//!   queries are the hidden state and whose stored patterns (and pattern
//!   projections) are the hidden state (`"memories": "hidden"`: self-
//!   association) or a fixed bank (`"bank"`: tensor `bank` `[M, input_size]`);
//! - `khn`: the kernelized Hopfield layer (Defs 3.5-3.7, Lemma 5.1):
//!   `T_K(x) = sum_mu softmax(beta <Phi x, Phi xi_mu>) xi_mu`, `Phi u = W u`
//!   with `phi` `[features, in]`, over a bank (`bank` `[M, in]`) or the
//!   hidden state, applied `steps` times (default 1). Its energy is
//!   `E_K(x) = 0.5 K(x, x) - lse(beta, (K(x, xi_mu))_mu)`, `K(x, y) =
//!   <Phi x, Phi y>` (the paper prints `+ lse`, a sign typo: `cpu::network`).
//!
//! An unknown block type or field, a size that does not follow from the one
//! before, a missing, misshapen or unused tensor is an error naming it.

use std::path::Path;

use serde_json::{Map, Value};

use super::config::{LayerClass, LayerConfig};
use super::weights::{read_tensors, LayerWeights, Tensor, TensorMap};
use crate::cpu::layer::{Module, StopRule};
use crate::cpu::linalg::{FeedForward, LayerNorm, Linear};
use crate::cpu::network::{kernelized, Block, Memories};
use crate::cpu::Matrix;
use crate::error::{Error, Result};
use crate::method::Method;

/// Where a Hopfield or KHN block's memories come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Bank {
    /// The block's own input (self-association).
    Hidden,
    /// A fixed bank, `[M, features]`.
    Fixed(Tensor),
}

/// One block of a [`Model`], with its weights.
#[derive(Clone, Debug)]
pub enum ModelBlock {
    /// `W2 relu(W1 x + b1) + b2`.
    FeedForward {
        /// `[hidden, in]`.
        w1: Tensor,
        /// `[hidden]`.
        b1: Option<Tensor>,
        /// `[out, hidden]`.
        w2: Tensor,
        /// `[out]`.
        b2: Option<Tensor>,
    },
    /// LayerNorm over the features.
    LayerNorm {
        /// Added to the variance.
        eps: f64,
        /// `(weight, bias)`.
        affine: Option<(Tensor, Tensor)>,
    },
    /// `x + g(x)`.
    Residual(Vec<ModelBlock>),
    /// A hopfield-layers `Hopfield` module over a bank or the hidden state.
    Hopfield {
        /// Its config.
        config: Box<LayerConfig>,
        /// Its weights.
        weights: Box<LayerWeights>,
        /// Its stored patterns.
        memories: Bank,
    },
    /// The kernelized Hopfield layer, `steps` times.
    Khn {
        /// Inverse temperature (> 0).
        beta: f64,
        /// `[features, in]`.
        phi: Tensor,
        /// The memories (`[M, in]`) or the hidden state.
        memories: Bank,
        /// Applications (>= 1).
        steps: usize,
    },
}

/// A Hopfield network: `f_m o Hop_m o ... o f_1 o Hop_1 o f_0` and relatives.
#[derive(Clone, Debug)]
pub struct Model {
    /// Features of the input rows.
    pub input: usize,
    /// Features of the output rows.
    pub output: usize,
    /// The blocks, in order.
    pub blocks: Vec<ModelBlock>,
}

fn model_error(at: impl Into<String>, why: impl Into<String>) -> Error {
    Error::Model { at: at.into(), why: why.into() }
}

fn weights_error(key: &str, why: impl Into<String>) -> Error {
    Error::LayerWeights { key: key.to_string(), why: why.into() }
}

/// A block's JSON object, its fields taken one by one so that leftovers can be named.
struct Obj {
    at: String,
    map: Map<String, Value>,
}

impl Obj {
    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    fn here(&self, key: &str) -> String {
        format!("{}.{key}", self.at)
    }

    fn count(&mut self, key: &str, default: Option<usize>) -> Result<usize> {
        match (self.take(key), default) {
            (None, Some(d)) => Ok(d),
            (None, None) => Err(model_error(self.here(key), "is required")),
            (Some(v), _) => match v.as_u64() {
                Some(n) if n >= 1 => usize::try_from(n).map_err(|_| model_error(self.here(key), "is too large")),
                _ => Err(model_error(self.here(key), format!("{v} is not a positive integer"))),
            },
        }
    }

    fn number(&mut self, key: &str, default: Option<f64>) -> Result<f64> {
        match (self.take(key), default) {
            (None, Some(d)) => Ok(d),
            (None, None) => Err(model_error(self.here(key), "is required")),
            (Some(v), _) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| model_error(self.here(key), format!("{v} is not a finite number"))),
        }
    }

    fn flag(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.take(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(v) => Err(model_error(self.here(key), format!("{v} is not true or false"))),
        }
    }

    fn string(&mut self, key: &str) -> Result<String> {
        match self.take(key) {
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(model_error(self.here(key), format!("{v} is not a string"))),
            None => Err(model_error(self.here(key), "is required")),
        }
    }

    fn done(self) -> Result<()> {
        match self.map.keys().next() {
            Some(k) => Err(model_error(format!("{}.{k}", self.at), "is not a field of this block")),
            None => Ok(()),
        }
    }
}

/// Tensor `key` (`name.` + the block's key) of exactly this shape.
fn tensor(tensors: &mut TensorMap, key: &str, shape: &[usize]) -> Result<Tensor> {
    let t =
        tensors.remove(key).ok_or_else(|| weights_error(key, format!("is missing from the file (shape {shape:?})")))?;
    if t.shape != shape {
        return Err(weights_error(key, format!("has shape {:?}; the model implies {shape:?}", t.shape)));
    }
    Ok(t)
}

/// A bank's tensor, `[M, features]` with any M >= 1.
fn bank(tensors: &mut TensorMap, key: &str, features: usize) -> Result<Tensor> {
    let t = tensors
        .remove(key)
        .ok_or_else(|| weights_error(key, format!("is missing from the file (shape [M, {features}])")))?;
    if t.shape.len() != 2 || t.shape[1] != features || t.shape[0] == 0 {
        return Err(weights_error(key, format!("has shape {:?}; the model implies [M >= 1, {features}]", t.shape)));
    }
    Ok(t)
}

fn memories(o: &mut Obj) -> Result<bool> {
    match o.string("memories")?.as_str() {
        "bank" => Ok(true),
        "hidden" => Ok(false),
        other => Err(model_error(o.here("memories"), format!("{other:?}: expected \"bank\" or \"hidden\""))),
    }
}

/// Parse `blocks` (at JSON path `at`), taking their tensors; returns the blocks
/// and the features after them.
fn parse_blocks(
    value: Value,
    at: &str,
    mut features: usize,
    tensors: &mut TensorMap,
) -> Result<(Vec<ModelBlock>, usize)> {
    let Value::Array(items) = value else {
        return Err(model_error(at, "must be a list of blocks"));
    };
    if items.is_empty() {
        return Err(model_error(at, "is empty"));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let here = format!("{at}[{i}]");
        let Value::Object(map) = item else {
            return Err(model_error(here, "must be an object"));
        };
        let mut o = Obj { at: here.clone(), map };
        let kind = o.string("type")?;
        let block = match kind.as_str() {
            "feedforward" => {
                let name = o.string("name")?;
                let hidden = o.count("hidden", None)?;
                let output = o.count("output", Some(features))?;
                let bias = o.flag("bias", true)?;
                let w1 = tensor(tensors, &format!("{name}.w1"), &[hidden, features])?;
                let b1 = bias.then(|| tensor(tensors, &format!("{name}.b1"), &[hidden])).transpose()?;
                let w2 = tensor(tensors, &format!("{name}.w2"), &[output, hidden])?;
                let b2 = bias.then(|| tensor(tensors, &format!("{name}.b2"), &[output])).transpose()?;
                features = output;
                ModelBlock::FeedForward { w1, b1, w2, b2 }
            }
            "layernorm" => {
                let name = o.string("name")?;
                let eps = o.number("eps", Some(1e-5))?;
                if eps < 0.0 {
                    return Err(model_error(o.here("eps"), format!("{eps}: must be >= 0")));
                }
                let affine = if o.flag("affine", true)? {
                    Some((
                        tensor(tensors, &format!("{name}.weight"), &[features])?,
                        tensor(tensors, &format!("{name}.bias"), &[features])?,
                    ))
                } else {
                    None
                };
                ModelBlock::LayerNorm { eps, affine }
            }
            "residual" => {
                let inner = o.take("blocks").ok_or_else(|| model_error(o.here("blocks"), "is required"))?;
                let (blocks, after) = parse_blocks(inner, &o.here("blocks"), features, tensors)?;
                if after != features {
                    return Err(model_error(
                        o.here("blocks"),
                        format!("end with {after} features; a residual block must keep its {features}"),
                    ));
                }
                ModelBlock::Residual(blocks)
            }
            "hopfield" => {
                let name = o.string("name")?;
                let fixed = memories(&mut o)?;
                let layer = o.take("layer").ok_or_else(|| model_error(o.here("layer"), "is required"))?;
                let config = LayerConfig::from_value(&layer)?;
                if config.class != LayerClass::Hopfield {
                    return Err(model_error(
                        o.here("layer.class"),
                        format!(
                            "{}: a network's Hopfield block is a Hopfield module over a bank or the hidden state",
                            config.class.name()
                        ),
                    ));
                }
                let g = config.geometry()?;
                for (what, need) in [("input_size", g.state_features), ("stored_pattern_size", g.stored_features)] {
                    if let Some(n) = need {
                        if n != features && (what == "input_size" || !fixed) {
                            return Err(model_error(
                                o.here("layer"),
                                format!("{what} is {n}, but the hidden state has {features} features"),
                            ));
                        }
                    }
                }
                if !fixed && g.projection_features.is_some_and(|n| n != features) {
                    return Err(model_error(
                        o.here("layer"),
                        "pattern_projection_size must be the hidden state's features",
                    ));
                }
                // The bank first: the layer's state dict claims every other key under the name.
                let memories = if fixed {
                    let f = g.stored_features.unwrap_or(features);
                    if g.projection_features.is_some_and(|p| p != f) {
                        return Err(model_error(
                            o.here("layer"),
                            "a bank is also the pattern projection: pattern_projection_size must equal stored_pattern_size",
                        ));
                    }
                    Bank::Fixed(bank(tensors, &format!("{name}.bank"), f)?)
                } else {
                    Bank::Hidden
                };
                let weights = LayerWeights::from_tensors(tensors, &format!("{name}."), &config)?;
                features = match (g.out_dim, g.pattern_dim) {
                    (Some(o), _) => o,
                    (None, Some(p)) => g.heads * p,
                    (None, None) => features,
                };
                ModelBlock::Hopfield { config: Box::new(config), weights: Box::new(weights), memories }
            }
            "khn" => {
                let name = o.string("name")?;
                let beta = o.number("beta", None)?;
                if beta <= 0.0 {
                    return Err(model_error(o.here("beta"), format!("{beta}: must be > 0")));
                }
                let r = o.count("features", None)?;
                let steps = o.count("steps", Some(1))?;
                let fixed = memories(&mut o)?;
                let phi = tensor(tensors, &format!("{name}.phi"), &[r, features])?;
                let memories =
                    if fixed { Bank::Fixed(bank(tensors, &format!("{name}.bank"), features)?) } else { Bank::Hidden };
                ModelBlock::Khn { beta, phi, memories, steps }
            }
            other => {
                return Err(model_error(
                    o.here("type"),
                    format!("unknown block type {other:?}: expected feedforward, layernorm, residual, hopfield or khn"),
                ))
            }
        };
        o.done()?;
        out.push(block);
    }
    Ok((out, features))
}

impl Model {
    /// Read a model JSON and its safetensors weights.
    ///
    /// # Errors
    /// Unreadable files ([`Error::Io`], [`Error::BadFile`]), an invalid model
    /// ([`Error::Model`], [`Error::LayerConfig`] for a block's layer), weights
    /// that do not fit it ([`Error::LayerWeights`]).
    pub fn from_files(model: &Path, weights: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(model).map_err(|source| Error::Io { path: model.to_path_buf(), source })?;
        let bytes = std::fs::read(weights).map_err(|source| Error::Io { path: weights.to_path_buf(), source })?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| Error::BadFile { path: model.to_path_buf(), why: format!("not valid JSON: {e}") })?;
        let mut tensors = read_tensors(&bytes, weights)?;
        Self::from_parts(value, &mut tensors)
    }

    /// A model from its parsed JSON and its tensors (every one must be used).
    ///
    /// # Errors
    /// As [`Model::from_files`].
    pub fn from_parts(value: Value, tensors: &mut TensorMap) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(model_error("model", "must be an object {\"input\": ..., \"blocks\": [...]}"));
        };
        let mut o = Obj { at: "model".into(), map };
        let input = o.count("input", None)?;
        let blocks = o.take("blocks").ok_or_else(|| model_error("model.blocks", "is required"))?;
        let (blocks, output) = parse_blocks(blocks, "blocks", input, tensors)?;
        o.done()?;
        if let Some(unused) = tensors.keys().next() {
            return Err(weights_error(unused, "is in the file but no block of the model uses it"));
        }
        Ok(Model { input, output, blocks })
    }

    /// The f64 reference of the network (`cpu::network::network_forward` runs it).
    ///
    /// # Errors
    /// A block the reference cannot build (it checks what the model checked).
    pub fn reference(&self) -> Result<Vec<Block>> {
        reference_blocks(&self.blocks)
    }
}

fn matrix(t: &Tensor) -> Matrix {
    Matrix::from_f32(t.shape[0], t.shape[1], &t.data)
}

fn vector(t: &Option<Tensor>) -> Option<Vec<f64>> {
    t.as_ref().map(|t| t.data.iter().map(|&v| f64::from(v)).collect())
}

fn reference_blocks(blocks: &[ModelBlock]) -> Result<Vec<Block>> {
    let mut out = Vec::new();
    for b in blocks {
        match b {
            ModelBlock::FeedForward { w1, b1, w2, b2 } => out.push(Block::FeedForward(FeedForward {
                first: Linear { weight: matrix(w1), bias: vector(b1) },
                second: Linear { weight: matrix(w2), bias: vector(b2) },
            })),
            ModelBlock::LayerNorm { eps, affine } => out.push(Block::LayerNorm(LayerNorm {
                eps: *eps,
                affine: affine.as_ref().map(|(w, b)| {
                    (w.data.iter().map(|&v| f64::from(v)).collect(), b.data.iter().map(|&v| f64::from(v)).collect())
                }),
            })),
            ModelBlock::Residual(inner) => out.push(Block::Residual(reference_blocks(inner)?)),
            ModelBlock::Hopfield { config, weights, memories } => out.push(Block::Hopfield {
                module: Box::new(super::reference_module(config, weights, StopRule::Association)?),
                memories: match memories {
                    Bank::Hidden => Memories::Hidden,
                    Bank::Fixed(t) => Memories::Bank(matrix(t)),
                },
                association: config.method,
            }),
            ModelBlock::Khn { beta, phi, memories, steps } => {
                let module = kernelized(&Module::plain(*beta), &Linear { weight: matrix(phi), bias: None });
                for _ in 0..*steps {
                    out.push(Block::Hopfield {
                        module: Box::new(module.clone()),
                        memories: match memories {
                            Bank::Hidden => Memories::Hidden,
                            Bank::Fixed(t) => Memories::Bank(matrix(t)),
                        },
                        association: Method::Dense,
                    });
                }
            }
        }
    }
    Ok(out)
}
