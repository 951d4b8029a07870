//! Hopfield layers: hopfield-layers' `Hopfield`, `HopfieldPooling` and
//! `HopfieldLayer` modules, run from their `state_dict` and constructor
//! arguments (docs/hflayers.md).
//!
//! Device-free: [`config`] parses the JSON configuration, [`weights`] loads
//! the safetensors weights onto typed tensors checked against it, and this
//! file validates a forward pass's inputs and runs the f64 reference
//! ([`crate::cpu::layer`]). The GPU layer builds on the same three pieces.

pub mod config;
pub mod weights;

use crate::cpu::layer::{self as reference, Heads, InputPath, Scaling, StopRule, Updates};
use crate::cpu::linalg::{LayerNorm, Linear};
use crate::cpu::Matrix;
use crate::error::{Error, Result};
use config::{LayerClass, LayerConfig, NormArgs, PerHead, ValueHeads};
use weights::{Affine, LayerWeights, Projection};

/// A batch of sequences, batch first: `n` sequences of `rows` patterns of
/// `features` floats, row-major `[n, rows, features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequences {
    /// Sequences N.
    pub n: usize,
    /// Patterns per sequence S (or L).
    pub rows: usize,
    /// Features per pattern F.
    pub features: usize,
    /// `n * rows * features` values.
    pub data: Vec<f32>,
}

impl Sequences {
    /// A batch from an array's shape: `[N, S, F]`, or `[S, F]` for one
    /// sequence. Any other rank, an empty axis, a length that does not match
    /// or a non-finite value is an error naming `what` (`"stored"`, ...).
    pub fn new(what: &'static str, shape: &[usize], data: Vec<f32>) -> Result<Self> {
        let (n, rows, features) = match *shape {
            [s, f] => (1, s, f),
            [n, s, f] => (n, s, f),
            _ => {
                return Err(Error::invalid(
                    what,
                    format!("{}-D array of shape {shape:?}", shape.len()),
                    "must be 3-D [N, S, F] (batch first) or 2-D [S, F]",
                ))
            }
        };
        if n == 0 || rows == 0 || features == 0 {
            return Err(Error::Empty { what });
        }
        let len = n.checked_mul(rows).and_then(|v| v.checked_mul(features));
        if len != Some(data.len()) {
            return Err(Error::ShapeMismatch {
                what: format!("{what} values vs its shape {shape:?}"),
                expected: len.unwrap_or(usize::MAX),
                got: data.len(),
            });
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            // Rows counted through the whole batch: row r of sequence n is n * S + r.
            return Err(Error::NonFinite { what, row: i / features, col: i % features, value: data[i] });
        }
        Ok(Sequences { n, rows, features, data })
    }

    /// Sequence `i` as an f64 matrix `[rows, features]`.
    pub fn matrix(&self, i: usize) -> Matrix {
        let per = self.rows * self.features;
        Matrix::from_f32(self.rows, self.features, &self.data[i * per..(i + 1) * per])
    }
}

/// A key-padding mask `[N, S]`: `masked[n * S + s]` is true where stored
/// pattern s of sequence n is absent (hopfield-layers'
/// `stored_pattern_padding_mask`, True = ignored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    /// Sequences N.
    pub n: usize,
    /// Stored patterns per sequence S.
    pub s: usize,
    /// `n * s` flags, row-major.
    pub masked: Vec<bool>,
}

/// The inputs of one forward pass. Which ones a class takes:
/// - `Hopfield`: `stored` and `state`; `projection` defaults to `stored`;
/// - `HopfieldPooling`: `stored`; `projection` defaults to `stored`;
/// - `HopfieldLayer`: `state`.
///
/// Giving an input the class does not take is an error.
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerInputs<'a> {
    /// Stored patterns (memories), `[N, S, F]`.
    pub stored: Option<&'a Sequences>,
    /// State patterns (queries), `[N, L, F]`.
    pub state: Option<&'a Sequences>,
    /// Pattern projections (values), `[N, S, F]`.
    pub projection: Option<&'a Sequences>,
    /// Key-padding mask over the stored patterns, `[N, S]`.
    pub mask: Option<&'a Mask>,
}

/// The three inputs of the inner `Hopfield` module, per sequence, after the
/// class's learned patterns are filled in and every size is checked.
struct CoreInputs {
    stored: Vec<Matrix>,
    state: Vec<Matrix>,
    projection: Vec<Matrix>,
    mask: Option<Vec<Vec<bool>>>,
}

fn check_features(what: &'static str, got: usize, want: Option<usize>) -> Result<()> {
    match want {
        Some(w) if w != got => {
            Err(Error::ShapeMismatch { what: format!("{what} features vs the layer config"), expected: w, got })
        }
        _ => Ok(()),
    }
}

fn refuse(class: LayerClass, what: &str) -> Error {
    Error::invalid("inputs", what, format!("{} does not take this input", class.name()))
}

fn learned(t: &weights::Tensor, n: usize) -> Vec<Matrix> {
    let m = Matrix::from_f32(t.shape[0], t.shape[1], &t.data);
    vec![m; n]
}

fn resolve_inputs(config: &LayerConfig, w: &LayerWeights, inputs: &LayerInputs) -> Result<CoreInputs> {
    let g = config.geometry()?;
    let class = config.class;
    let missing = |what: &'static str| Error::invalid(what, "none", format!("{} needs this input", class.name()));
    let all = |s: &Sequences| (0..s.n).map(|i| s.matrix(i)).collect::<Vec<_>>();
    let (stored, state, projection, n) = match class {
        LayerClass::Hopfield => {
            let y = inputs.stored.ok_or_else(|| missing("stored"))?;
            let r = inputs.state.ok_or_else(|| missing("state"))?;
            let p = inputs.projection.unwrap_or(y);
            (all(y), all(r), all(p), y.n)
        }
        LayerClass::HopfieldPooling => {
            if inputs.state.is_some() {
                return Err(refuse(class, "state (the learned pooling_weights are the state patterns)"));
            }
            let y = inputs.stored.ok_or_else(|| missing("stored"))?;
            let p = inputs.projection.unwrap_or(y);
            let q = w
                .pooling_weights
                .as_ref()
                .ok_or_else(|| Error::LayerWeights { key: "pooling_weights".into(), why: "is missing".into() })?;
            (all(y), learned(q, y.n), all(p), y.n)
        }
        LayerClass::HopfieldLayer => {
            if inputs.stored.is_some() || inputs.projection.is_some() {
                return Err(refuse(class, "stored/projection (the learned lookup weights are the stored patterns)"));
            }
            let r = inputs.state.ok_or_else(|| missing("state"))?;
            let y = w
                .lookup_weights
                .as_ref()
                .ok_or_else(|| Error::LayerWeights { key: "lookup_weights".into(), why: "is missing".into() })?;
            let p = w.target_weights.as_ref().unwrap_or(y);
            (learned(y, r.n), all(r), learned(p, r.n), r.n)
        }
    };
    for (what, seqs) in
        [("stored sequences", &stored), ("state sequences", &state), ("projection sequences", &projection)]
    {
        if seqs.len() != n {
            return Err(Error::ShapeMismatch { what: format!("{what} vs the batch"), expected: n, got: seqs.len() });
        }
    }
    let (fy, fr, fp) = (stored[0].cols, state[0].cols, projection[0].cols);
    check_features("stored", fy, g.stored_features)?;
    check_features("state", fr, g.state_features)?;
    check_features("projection", fp, g.projection_features)?;
    // The input LayerNorms have their own sizes (they apply to static inputs too).
    check_features("stored", fy, g.norm_stored)?;
    check_features("state", fr, g.norm_state)?;
    check_features("projection", fp, g.norm_projection)?;
    if g.static_execution && stored[0].cols != state[0].cols {
        return Err(Error::ShapeMismatch {
            what: "state features vs stored features (static-only execution)".into(),
            expected: stored[0].cols,
            got: state[0].cols,
        });
    }
    if projection[0].rows != stored[0].rows {
        return Err(Error::ShapeMismatch {
            what: "pattern projections vs stored patterns per sequence".into(),
            expected: stored[0].rows,
            got: projection[0].rows,
        });
    }
    // hopfield-layers gives a static input to the heads with
    // `x.repeat(1, num_heads, 1)` on its sequence-first [S, N, F] layout,
    // which tiles along the batch axis: head h of sequence n then sees the
    // static patterns of sequence (n H + h) mod N. One sequence, one head, or
    // patterns that are the same for every sequence (the wrappers' learned
    // ones) are unaffected; otherwise refuse rather than mix sequences.
    let a = &config.hopfield;
    if n > 1 && g.heads > 1 {
        let per_sequence_static = [
            ("stored_pattern_as_static", a.stored_pattern_as_static && class != LayerClass::HopfieldLayer),
            ("state_pattern_as_static", a.state_pattern_as_static && class != LayerClass::HopfieldPooling),
            (
                "pattern_projection_as_static",
                a.pattern_projection_as_static
                    && g.value_heads == ValueHeads::Tile
                    && class != LayerClass::HopfieldLayer,
            ),
        ];
        if let Some((arg, _)) = per_sequence_static.iter().find(|(_, tiled)| *tiled) {
            return Err(Error::LayerConfig {
                arg: (*arg).into(),
                why: format!(
                    "with {n} sequences and {} heads, hopfield-layers tiles a static input along the batch axis,                      so each sequence's heads see other sequences' patterns; hopfield-gpu refuses to reproduce                      that: pass one sequence at a time (which hopfield-layers computes correctly)",
                    g.heads
                ),
            });
        }
    }
    let mask = match inputs.mask {
        None => None,
        Some(m) => {
            let s = stored[0].rows;
            if m.n != n || m.s != s || m.masked.len() != n * s {
                return Err(Error::ShapeMismatch {
                    what: format!("mask [{}, {}] vs [sequences, stored patterns] = [{n}, {s}]", m.n, m.s),
                    expected: n * s,
                    got: m.masked.len(),
                });
            }
            Some(m.masked.chunks(s).map(<[bool]>::to_vec).collect())
        }
    };
    Ok(CoreInputs { stored, state, projection, mask })
}

fn layer_norm(args: NormArgs, affine: &Option<Affine>) -> Option<LayerNorm> {
    args.enabled.then(|| LayerNorm {
        eps: args.eps,
        affine: affine.as_ref().map(|a| {
            (a.weight.iter().map(|&v| f64::from(v)).collect(), a.bias.iter().map(|&v| f64::from(v)).collect())
        }),
    })
}

fn linear(p: &Projection) -> Linear {
    Linear {
        weight: Matrix::from_f32(p.out_features, p.in_features, &p.weight),
        bias: p.bias.as_ref().map(|b| b.iter().map(|&v| f64::from(v)).collect()),
    }
}

/// The reference's description of the module: which maps each input goes
/// through, how it reaches the heads, beta, the dynamics. `rule` picks the
/// stop rule (hopfield-layers': [`StopRule::Association`]).
pub fn reference_module(config: &LayerConfig, w: &LayerWeights, rule: StopRule) -> Result<reference::Module> {
    let g = config.geometry()?;
    let a = &config.hopfield;
    let hw = &w.hopfield;
    let path = |proj: &Option<Projection>| match proj {
        Some(p) => InputPath { linears: vec![linear(p)], heads: Heads::Split },
        None => InputPath { linears: vec![], heads: Heads::Tile },
    };
    let query = path(&hw.q_proj);
    let key = path(&hw.k_proj);
    let connected_key = (a.pattern_projection_as_connected && !a.stored_pattern_as_static)
        .then(|| hw.k_proj.as_ref().map(linear))
        .flatten();
    let value = match g.value_heads {
        ValueHeads::Split => InputPath {
            linears: connected_key.into_iter().chain(hw.v_proj.as_ref().map(linear)).collect(),
            heads: Heads::Split,
        },
        ValueHeads::SplitRaw => InputPath { linears: vec![], heads: Heads::Split },
        ValueHeads::Tile => InputPath { linears: vec![], heads: Heads::Tile },
    };
    let scaling = match &g.scaling {
        PerHead::All(b) => Scaling::Uniform(*b),
        PerHead::Each(b) => Scaling::Tiled(b.clone()),
    };
    Ok(reference::Module {
        norm_stored: layer_norm(a.normalize_stored_pattern, &hw.norm_stored_pattern),
        norm_state: layer_norm(a.normalize_state_pattern, &hw.norm_state_pattern),
        norm_projection: layer_norm(a.normalize_pattern_projection, &hw.norm_pattern_projection),
        core: reference::Core {
            heads: g.heads,
            query,
            key,
            value,
            hopfield_norm: layer_norm(a.normalize_hopfield_space, &hw.p_norm),
            scaling,
            updates: Updates {
                max: a.update_steps_max.per_head(g.heads),
                eps: a.update_steps_eps.per_head(g.heads),
                rule,
            },
            zero_association: a.add_zero_association,
            out: hw.out_proj.as_ref().map(linear),
        },
    })
}

/// The f64 reference forward pass of the module: hopfield-layers' eval-mode
/// output, batch first `[N, L, out]` (for `HopfieldPooling`, L = `quantity`:
/// hopfield-layers' flattened `[N, quantity * out]` is the same memory).
/// The retrieval is the config's `method`, the stop rule `rule`.
pub fn forward_reference(
    config: &LayerConfig,
    w: &LayerWeights,
    inputs: &LayerInputs,
    rule: StopRule,
) -> Result<reference::Forward> {
    let module = reference_module(config, w, rule)?;
    let x = resolve_inputs(config, w, inputs)?;
    reference::forward(&module, &x.stored, &x.state, &x.projection, x.mask.as_deref(), &config.method)
}
