//! A hopfield-layers `state_dict`, saved with
//! `safetensors.torch.save_file(module.state_dict(), path)`, loaded onto typed
//! weights whose every shape is checked against the [`LayerConfig`].
//!
//! The keys are hopfield-layers' own (under `hopfield.` inside
//! `HopfieldPooling` and `HopfieldLayer`):
//!
//! | key | shape | present when |
//! |---|---|---|
//! | `norm_stored_pattern.weight`, `.bias` | `[stored size]` | `normalize_stored_pattern_affine` |
//! | `norm_state_pattern.weight`, `.bias` | `[input_size]` | `normalize_state_pattern_affine` |
//! | `norm_pattern_projection.weight`, `.bias` | `[projection size]` | `normalize_pattern_projection_affine` |
//! | `association_core.in_proj_weight` | `[rows of q, k, v not static, input_size]` | packed, some input not static |
//! | `association_core.q_proj_weight` | `[H hd, input_size]` | separate, state not static |
//! | `association_core.k_proj_weight` | `[H hd, stored size]` | separate, stored not static |
//! | `association_core.v_proj_weight` | `[H pd, projection size or H hd if connected]` | separate, projection not static |
//! | `association_core.in_proj_bias` | `[q?, k?, v]` | `input_bias`, some input not static |
//! | `association_core.p_norm_weight`, `p_norm_bias` | `[hidden_size]` | `normalize_hopfield_space_affine` |
//! | `association_core.out_proj.weight`, `.bias` | `[out, H pd]`, `[out]` | not `disable_out_projection` (bias: `input_bias`) |
//! | `association_core.bias_k`, `bias_v` | `[1, 1, H hd]` | `concat_bias_pattern` (no effect) |
//! | `pooling_weights` | `[1, Q, F]` (`[Q, 1, F]` if not `batch_first`) | `HopfieldPooling` |
//! | `lookup_weights`, `target_weights` | the same | `HopfieldLayer` (`target_weights`: separated) |
//!
//! `in_proj_bias` always holds the value part, even for a static pattern
//! projection (hopfield-layers sizes it that way). Tensors may be float32,
//! float64, float16 or bfloat16; they are converted to f32, the engine's
//! precision. A key the config does not expect, a missing key, a wrong shape,
//! a non-float dtype, a non-finite value, or a file that is not safetensors is
//! an error naming it.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::config::{Geometry, LayerClass, LayerConfig};
use crate::error::{Error, Result};

/// A tensor converted to f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Shape as stored.
    pub shape: Vec<usize>,
    /// Values.
    pub data: Vec<f32>,
}

/// The learned weight and bias of a LayerNorm.
#[derive(Clone, Debug, PartialEq)]
pub struct Affine {
    /// Per-feature scale.
    pub weight: Vec<f32>,
    /// Per-feature shift.
    pub bias: Vec<f32>,
}

/// An affine map `y = x W^T + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    /// Output features (rows of W).
    pub out_features: usize,
    /// Input features (columns of W).
    pub in_features: usize,
    /// W, `[out, in]` row-major, as PyTorch stores it.
    pub weight: Vec<f32>,
    /// b, `[out]`, if any.
    pub bias: Option<Vec<f32>>,
}

/// The weights of one `Hopfield` module (the inner one of a wrapper).
#[derive(Clone, Debug, PartialEq)]
pub struct HopfieldWeights {
    /// `norm_stored_pattern` (affine only).
    pub norm_stored_pattern: Option<Affine>,
    /// `norm_state_pattern` (affine only).
    pub norm_state_pattern: Option<Affine>,
    /// `norm_pattern_projection` (affine only).
    pub norm_pattern_projection: Option<Affine>,
    /// State -> queries, rows `[H hd]`: a slice of the packed
    /// `in_proj_weight` or `q_proj_weight`, with its slice of `in_proj_bias`.
    /// None for a static state.
    pub q_proj: Option<Projection>,
    /// Stored -> keys, likewise. None for a static stored pattern.
    pub k_proj: Option<Projection>,
    /// Pattern projection -> values, likewise. None for a static projection.
    pub v_proj: Option<Projection>,
    /// `p_norm_weight`, `p_norm_bias`: the Hopfield-space LayerNorm (affine only).
    pub p_norm: Option<Affine>,
    /// `out_proj`, unless disabled.
    pub out_proj: Option<Projection>,
    /// `bias_k`, `bias_v` (`concat_bias_pattern`): loaded and checked, but
    /// hopfield-layers never uses them, and neither do we.
    pub bias_kv: Option<(Vec<f32>, Vec<f32>)>,
}

/// All weights of a module.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// The (inner) `Hopfield` module's weights.
    pub hopfield: HopfieldWeights,
    /// `pooling_weights` of `HopfieldPooling`: the learned state patterns, `[Q, F]`.
    pub pooling_weights: Option<Tensor>,
    /// `lookup_weights` of `HopfieldLayer`: the learned stored patterns, `[Q, F]`.
    pub lookup_weights: Option<Tensor>,
    /// `target_weights` of `HopfieldLayer` (`lookup_weights_as_separated`):
    /// the learned pattern projections, `[Q, F]`.
    pub target_weights: Option<Tensor>,
}

/// Every state-dict key the config implies, with its shape, in the order
/// hopfield-layers registers them.
pub fn expected_keys(config: &LayerConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let g = config.geometry()?;
    let a = &config.hopfield;
    let p = config.class.hopfield_prefix();
    let c = format!("{p}association_core.");
    let mut keys: Vec<(String, Vec<usize>)> = Vec::new();
    let mut push = |k: String, shape: Vec<usize>| keys.push((k, shape));
    let (qs, ks, vs) = (a.state_pattern_as_static, a.stored_pattern_as_static, a.pattern_projection_as_static);
    let heads = g.heads;
    let hd = g.head_dim.unwrap_or(0);
    let pd = g.pattern_dim.unwrap_or(0);
    let embed = g.embed_dim.unwrap_or(0);
    if a.normalize_hopfield_space.affine {
        let h = a.hidden_size.unwrap_or(0);
        push(format!("{c}p_norm_weight"), vec![h]);
        push(format!("{c}p_norm_bias"), vec![h]);
    }
    let non_static = !(qs && ks && vs);
    if g.packed {
        if non_static {
            let rows = usize::from(!qs) * heads * hd + usize::from(!ks) * heads * hd + usize::from(!vs) * heads * pd;
            push(format!("{c}in_proj_weight"), vec![rows, embed]);
        }
    } else {
        if !qs {
            push(format!("{c}q_proj_weight"), vec![heads * hd, embed]);
        }
        if !ks {
            push(format!("{c}k_proj_weight"), vec![heads * hd, g.kdim.unwrap_or(0)]);
        }
        if !vs {
            let cols = if a.pattern_projection_as_connected && !ks { heads * hd } else { g.vdim.unwrap_or(0) };
            push(format!("{c}v_proj_weight"), vec![heads * pd, cols]);
        }
    }
    if a.input_bias && non_static {
        push(
            format!("{c}in_proj_bias"),
            vec![usize::from(!qs) * heads * hd + usize::from(!ks) * heads * hd + heads * pd],
        );
    }
    if let Some(out) = g.out_dim {
        push(format!("{c}out_proj.weight"), vec![out, heads * pd]);
        if a.input_bias {
            push(format!("{c}out_proj.bias"), vec![out]);
        }
    }
    if a.concat_bias_pattern {
        push(format!("{c}bias_k"), vec![1, 1, heads * hd]);
        push(format!("{c}bias_v"), vec![1, 1, heads * hd]);
    }
    for (stem, args, size) in [
        ("norm_stored_pattern", a.normalize_stored_pattern, g.norm_stored),
        ("norm_state_pattern", a.normalize_state_pattern, g.norm_state),
        ("norm_pattern_projection", a.normalize_pattern_projection, g.norm_projection),
    ] {
        if let (true, Some(size)) = (args.affine, size) {
            push(format!("{p}{stem}.weight"), vec![size]);
            push(format!("{p}{stem}.bias"), vec![size]);
        }
    }
    let learned = |f: usize| if a.batch_first { vec![1, config.quantity, f] } else { vec![config.quantity, 1, f] };
    match config.class {
        LayerClass::Hopfield => {}
        LayerClass::HopfieldPooling => push("pooling_weights".into(), learned(g.pooling_size)),
        LayerClass::HopfieldLayer => {
            push("lookup_weights".into(), learned(g.lookup_size));
            if config.lookup_weights_as_separated {
                push("target_weights".into(), learned(g.target_size));
            }
        }
    }
    Ok(keys)
}

fn weights_error(key: &str, why: impl Into<String>) -> Error {
    Error::LayerWeights { key: key.to_string(), why: why.into() }
}

/// A tensor's values as f32, or an error naming it.
fn to_f32(key: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let values: Vec<f32> = match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => {
            return Err(weights_error(
                key,
                format!("dtype {other:?} is not supported: use float32, float64, float16 or bfloat16"),
            ))
        }
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(weights_error(key, format!("element {i} is {} (after conversion to f32)", values[i])));
    }
    Ok(values)
}

impl LayerWeights {
    /// Load a `.safetensors` file for `config`.
    pub fn from_file(path: &Path, config: &LayerConfig) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes, config, path)
    }

    /// Load the bytes of a `.safetensors` file for `config`; `path` names
    /// the source in errors.
    pub fn from_bytes(bytes: &[u8], config: &LayerConfig, path: &Path) -> Result<Self> {
        let mut tensors = read_tensors(bytes, path)?;
        Self::from_tensors(&mut tensors, "", config)
    }

    /// Take the weights of `config` from `tensors`, under `prefix` (a
    /// network's block name and a dot; "" for a module's own file). Every
    /// key under the prefix must be one the config expects, and every
    /// expected key must be there; the keys taken are removed.
    pub fn from_tensors(tensors: &mut TensorMap, prefix: &str, config: &LayerConfig) -> Result<Self> {
        let expected = expected_keys(config)?;
        let mut present: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
        let names: Vec<String> = tensors.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
        for full in names {
            let name = &full[prefix.len()..];
            let Some((_, shape)) = expected.iter().find(|(k, _)| *k == name) else {
                return Err(weights_error(
                    &full,
                    format!(
                        "is in the file but not expected by this {} config (check the *_as_static, \
                         normalize_*, input_bias, concat_bias_pattern and size arguments; expected: {})",
                        config.class.name(),
                        expected.iter().map(|(k, _)| format!("{prefix}{k}")).collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            let t = tensors.remove(&full).expect("listed above");
            if t.shape != *shape {
                return Err(weights_error(&full, format!("has shape {:?}; the config implies {shape:?}", t.shape)));
            }
            present.insert(name.to_string(), (t.shape, t.data));
        }
        if let Some((missing, shape)) = expected.iter().find(|(k, _)| !present.contains_key(k)) {
            return Err(weights_error(
                &format!("{prefix}{missing}"),
                format!("is missing from the file (the config implies shape {shape:?})"),
            ));
        }
        Ok(assemble(config, &config.geometry()?, present))
    }
}

/// Every tensor of a safetensors file, by name, converted to f32.
pub type TensorMap = BTreeMap<String, Tensor>;

/// Read every tensor of the bytes of a `.safetensors` file (float32,
/// float64, float16 or bfloat16, converted to f32; finite). `path` names
/// the source in errors.
pub fn read_tensors(bytes: &[u8], path: &Path) -> Result<TensorMap> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| Error::BadFile {
        path: path.to_path_buf(),
        why: format!("not a readable safetensors file: {e}"),
    })?;
    let mut out = TensorMap::new();
    for (name, view) in file.tensors() {
        let data = to_f32(&name, view.dtype(), view.data())?;
        out.insert(name, Tensor { shape: view.shape().to_vec(), data });
    }
    Ok(out)
}

/// Build the typed weights from tensors already checked against [`expected_keys`].
fn assemble(config: &LayerConfig, g: &Geometry, mut t: BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> LayerWeights {
    let a = &config.hopfield;
    let p = config.class.hopfield_prefix();
    let c = format!("{p}association_core.");
    let mut take = |k: &str| t.remove(k).map(|(shape, data)| Tensor { shape, data });
    let affine = |w: Option<Tensor>, b: Option<Tensor>| match (w, b) {
        (Some(w), Some(b)) => Some(Affine { weight: w.data, bias: b.data }),
        _ => None,
    };
    let norm_stored_pattern =
        affine(take(&format!("{p}norm_stored_pattern.weight")), take(&format!("{p}norm_stored_pattern.bias")));
    let norm_state_pattern =
        affine(take(&format!("{p}norm_state_pattern.weight")), take(&format!("{p}norm_state_pattern.bias")));
    let norm_pattern_projection =
        affine(take(&format!("{p}norm_pattern_projection.weight")), take(&format!("{p}norm_pattern_projection.bias")));
    let p_norm = affine(take(&format!("{c}p_norm_weight")), take(&format!("{c}p_norm_bias")));

    let (qs, ks, vs) = (a.state_pattern_as_static, a.stored_pattern_as_static, a.pattern_projection_as_static);
    let heads = g.heads;
    let qk_rows = heads * g.head_dim.unwrap_or(0);
    let v_rows = heads * g.pattern_dim.unwrap_or(0);
    // The bias is laid out [q if projected][k if projected][v always].
    let bias = take(&format!("{c}in_proj_bias")).map(|b| b.data);
    let q_bias = (!qs).then_some(0..qk_rows);
    let k_start = if qs { 0 } else { qk_rows };
    let k_bias = (!ks).then_some(k_start..k_start + qk_rows);
    let v_start = k_start + if ks { 0 } else { qk_rows };
    let v_bias = Some(v_start..v_start + v_rows);
    let slice_bias = |range: Option<std::ops::Range<usize>>| match (&bias, range) {
        (Some(b), Some(r)) => Some(b[r].to_vec()),
        _ => None,
    };
    let (q_w, k_w, v_w) = if g.packed {
        match take(&format!("{c}in_proj_weight")) {
            None => (None, None, None),
            Some(w) => {
                // Rows [q if projected][k if projected][v if projected].
                let cols = w.shape[1];
                let mut row = 0;
                let mut cut = |present: bool, rows: usize| {
                    present.then(|| {
                        let part =
                            Tensor { shape: vec![rows, cols], data: w.data[row * cols..(row + rows) * cols].to_vec() };
                        row += rows;
                        part
                    })
                };
                let q = cut(!qs, qk_rows);
                let k = cut(!ks, qk_rows);
                let v = cut(!vs, v_rows);
                (q, k, v)
            }
        }
    } else {
        (take(&format!("{c}q_proj_weight")), take(&format!("{c}k_proj_weight")), take(&format!("{c}v_proj_weight")))
    };
    let projection = |w: Option<Tensor>, b: Option<Vec<f32>>| {
        w.map(|w| Projection { out_features: w.shape[0], in_features: w.shape[1], weight: w.data, bias: b })
    };
    let q_proj = projection(q_w, slice_bias(q_bias));
    let k_proj = projection(k_w, slice_bias(k_bias));
    let v_proj = projection(v_w, slice_bias(v_bias));
    let out_proj = projection(take(&format!("{c}out_proj.weight")), take(&format!("{c}out_proj.bias")).map(|b| b.data));
    let bias_kv = match (take(&format!("{c}bias_k")), take(&format!("{c}bias_v"))) {
        (Some(k), Some(v)) => Some((k.data, v.data)),
        _ => None,
    };
    // The learned patterns lose their axis of 1, whichever side it is on.
    let learned = |t: Option<Tensor>| {
        t.map(|t| Tensor { shape: vec![config.quantity, t.data.len() / config.quantity.max(1)], data: t.data })
    };
    let pooling_weights = learned(take("pooling_weights"));
    let lookup_weights = learned(take("lookup_weights"));
    let target_weights = learned(take("target_weights"));
    LayerWeights {
        hopfield: HopfieldWeights {
            norm_stored_pattern,
            norm_state_pattern,
            norm_pattern_projection,
            q_proj,
            k_proj,
            v_proj,
            p_norm,
            out_proj,
            bias_kv,
        },
        pooling_weights,
        lookup_weights,
        target_weights,
    }
}
