//! Hopfield layers: hopfield-layers' `Hopfield`, `HopfieldPooling` and
//! `HopfieldLayer` modules, run from their `state_dict` and constructor
//! arguments (docs/hflayers.md).
//!
//! Device-free: [`config`] parses the JSON configuration, [`weights`] loads
//! the safetensors weights onto typed tensors checked against it, and this
//! file validates a forward pass's inputs and runs the f64 reference
//! ([`crate::cpu::layer`]). The GPU layer builds on the same three pieces.

pub mod config;
pub mod gpu;
pub mod network;
pub mod weights;

use crate::cpu::layer::{self as reference, Heads, InputPath, Scaling, StopRule, Updates};
use crate::cpu::linalg::{LayerNorm, Linear};
use crate::cpu::Matrix;
use crate::error::{Error, Result};
use config::{LayerClass, LayerConfig, NormArgs, PerHead, ValueHeads};
use weights::{Affine, LayerWeights, Projection, Tensor};

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

/// Where one of the inner `Hopfield` module's three inputs comes from: the
/// caller's batch, or the class's learned patterns (the same for every
/// sequence).
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// One array per sequence, `[N, rows, F]`.
    Input(&'a Sequences),
    /// Learned, `[rows, F]`, shared by every sequence.
    Learned(&'a Tensor),
}

impl Source<'_> {
    /// Patterns per sequence.
    pub fn rows(&self) -> usize {
        match self {
            Source::Input(s) => s.rows,
            Source::Learned(t) => t.shape[0],
        }
    }

    /// Features per pattern.
    pub fn features(&self) -> usize {
        match self {
            Source::Input(s) => s.features,
            Source::Learned(t) => t.shape[1],
        }
    }

    /// The values: `[N, rows, F]` or, learned, `[rows, F]`.
    pub fn data(&self) -> &[f32] {
        match self {
            Source::Input(s) => &s.data,
            Source::Learned(t) => &t.data,
        }
    }

    /// Sequence `n` as an f64 matrix.
    fn matrix(&self, n: usize) -> Matrix {
        match self {
            Source::Input(s) => s.matrix(n),
            Source::Learned(t) => Matrix::from_f32(t.shape[0], t.shape[1], &t.data),
        }
    }
}

/// The inner `Hopfield` module's inputs after the class's learned patterns
/// are filled in and every size is checked (the reference and the GPU
/// layer both start here).
#[derive(Clone, Copy, Debug)]
pub struct Resolved<'a> {
    /// Sequences N.
    pub n: usize,
    /// Stored patterns.
    pub stored: Source<'a>,
    /// State patterns.
    pub state: Source<'a>,
    /// Pattern projections.
    pub projection: Source<'a>,
    /// The key-padding mask, `[N, stored rows]`.
    pub mask: Option<&'a Mask>,
}

/// The three inputs of the inner `Hopfield` module, per sequence, for the reference.
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

fn learned<'a>(t: &'a Option<Tensor>, key: &str) -> Result<&'a Tensor> {
    t.as_ref().ok_or_else(|| Error::LayerWeights { key: key.into(), why: "is missing".into() })
}

/// Fill in the class's learned patterns and check every input against the
/// config and against each other: which inputs the class takes, feature
/// sizes, rows, the mask's shape, and the batch-mixing static inputs that
/// hopfield-gpu refuses (docs/hflayers.md).
pub fn resolve<'a>(config: &LayerConfig, w: &'a LayerWeights, inputs: &LayerInputs<'a>) -> Result<Resolved<'a>> {
    let g = config.geometry()?;
    let class = config.class;
    let missing = |what: &'static str| Error::invalid(what, "none", format!("{} needs this input", class.name()));
    let (stored, state, projection, n) = match class {
        LayerClass::Hopfield => {
            let y = inputs.stored.ok_or_else(|| missing("stored"))?;
            let r = inputs.state.ok_or_else(|| missing("state"))?;
            let p = inputs.projection.unwrap_or(y);
            for (what, s) in [("state", r), ("projection", p)] {
                if s.n != y.n {
                    return Err(Error::ShapeMismatch {
                        what: format!("{what} sequences vs stored sequences"),
                        expected: y.n,
                        got: s.n,
                    });
                }
            }
            (Source::Input(y), Source::Input(r), Source::Input(p), y.n)
        }
        LayerClass::HopfieldPooling => {
            if inputs.state.is_some() {
                return Err(refuse(class, "state (the learned pooling_weights are the state patterns)"));
            }
            let y = inputs.stored.ok_or_else(|| missing("stored"))?;
            let p = inputs.projection.unwrap_or(y);
            if p.n != y.n {
                return Err(Error::ShapeMismatch {
                    what: "projection sequences vs stored sequences".into(),
                    expected: y.n,
                    got: p.n,
                });
            }
            let q = learned(&w.pooling_weights, "pooling_weights")?;
            (Source::Input(y), Source::Learned(q), Source::Input(p), y.n)
        }
        LayerClass::HopfieldLayer => {
            if inputs.stored.is_some() || inputs.projection.is_some() {
                return Err(refuse(class, "stored/projection (the learned lookup weights are the stored patterns)"));
            }
            let r = inputs.state.ok_or_else(|| missing("state"))?;
            let y = learned(&w.lookup_weights, "lookup_weights")?;
            let p = w.target_weights.as_ref().unwrap_or(y);
            (Source::Learned(y), Source::Input(r), Source::Learned(p), r.n)
        }
    };
    let (fy, fr, fp) = (stored.features(), state.features(), projection.features());
    check_features("stored", fy, g.stored_features)?;
    check_features("state", fr, g.state_features)?;
    check_features("projection", fp, g.projection_features)?;
    // The input LayerNorms have their own sizes (they apply to static inputs too).
    check_features("stored", fy, g.norm_stored)?;
    check_features("state", fr, g.norm_state)?;
    check_features("projection", fp, g.norm_projection)?;
    if g.static_execution && fy != fr {
        return Err(Error::ShapeMismatch {
            what: "state features vs stored features (static-only execution)".into(),
            expected: fy,
            got: fr,
        });
    }
    if projection.rows() != stored.rows() {
        return Err(Error::ShapeMismatch {
            what: "pattern projections vs stored patterns per sequence".into(),
            expected: stored.rows(),
            got: projection.rows(),
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
                    "with {n} sequences and {} heads, hopfield-layers tiles a static input along the batch axis, \
                     so each sequence's heads see other sequences' patterns; hopfield-gpu refuses to reproduce \
                     that: pass one sequence at a time (which hopfield-layers computes correctly)",
                    g.heads
                ),
            });
        }
    }
    if let Some(m) = inputs.mask {
        let s = stored.rows();
        if m.n != n || m.s != s || m.masked.len() != n * s {
            return Err(Error::ShapeMismatch {
                what: format!("mask [{}, {}] vs [sequences, stored patterns] = [{n}, {s}]", m.n, m.s),
                expected: n * s,
                got: m.masked.len(),
            });
        }
        if !a.add_zero_association {
            if let Some(seq) = m.masked.chunks(s).position(|row| row.iter().all(|&x| x)) {
                return Err(Error::invalid(
                    "mask",
                    format!("sequence {seq}"),
                    "masks every stored pattern of the sequence, so its queries have nothing to attend to \
                     (hopfield-layers gives NaN here; add_zero_association gives them the zero pattern)",
                ));
            }
        }
    }
    Ok(Resolved { n, stored, state, projection, mask: inputs.mask })
}

fn resolve_inputs(config: &LayerConfig, w: &LayerWeights, inputs: &LayerInputs) -> Result<CoreInputs> {
    let r = resolve(config, w, inputs)?;
    let all = |s: &Source| (0..r.n).map(|i| s.matrix(i)).collect::<Vec<_>>();
    let mask = r.mask.map(|m| m.masked.chunks(m.s).map(<[bool]>::to_vec).collect());
    Ok(CoreInputs { stored: all(&r.stored), state: all(&r.state), projection: all(&r.projection), mask })
}

/// An input LayerNorm (or the Hopfield-space one): its eps and, if affine,
/// its learned weight and bias.
#[derive(Clone, Copy, Debug)]
pub struct NormSpec<'w> {
    /// Added to the variance.
    pub eps: f64,
    /// Weight and bias.
    pub affine: Option<&'w Affine>,
}

/// How one input reaches the heads: the affine maps it goes through, in
/// order, then split into heads (`split`) or given whole to every head.
#[derive(Clone, Debug)]
pub struct PathSpec<'w> {
    /// Applied in order.
    pub linears: Vec<&'w Projection>,
    /// Split the result across the heads (else every head gets all of it).
    pub split: bool,
}

/// What a module computes, read from its config and weights: which maps
/// each input goes through and how it reaches the heads, the LayerNorms,
/// beta, the dynamics, the output projection. The reference
/// ([`reference_module`]) and the GPU layer are both built from it.
#[derive(Clone, Debug)]
pub struct Structure<'w> {
    /// `num_heads`.
    pub heads: usize,
    /// `norm_stored_pattern`, `norm_state_pattern`, `norm_pattern_projection`.
    pub norm_stored: Option<NormSpec<'w>>,
    /// See `norm_stored`.
    pub norm_state: Option<NormSpec<'w>>,
    /// See `norm_stored`.
    pub norm_projection: Option<NormSpec<'w>>,
    /// State patterns -> queries.
    pub query: PathSpec<'w>,
    /// Stored patterns -> keys.
    pub key: PathSpec<'w>,
    /// Pattern projections -> values.
    pub value: PathSpec<'w>,
    /// `normalize_hopfield_space`: per-head LayerNorm of q and k.
    pub hopfield_norm: Option<NormSpec<'w>>,
    /// beta, once or per head (hopfield-layers tiles a per-head tensor).
    pub scaling: PerHead<f64>,
    /// Per head: updates at most, None = until the stop rule.
    pub max_updates: Vec<Option<usize>>,
    /// Per head: the stop threshold.
    pub eps: Vec<f64>,
    /// `add_zero_association`.
    pub zero: bool,
    /// `out_proj`, unless disabled.
    pub out: Option<&'w Projection>,
}

impl<'w> Structure<'w> {
    /// The structure of the module `config` describes, with the tensors of `w`.
    pub fn new(config: &LayerConfig, w: &'w LayerWeights) -> Result<Self> {
        let g = config.geometry()?;
        let a = &config.hopfield;
        let hw = &w.hopfield;
        let path = |proj: &'w Option<Projection>| match proj {
            Some(p) => PathSpec { linears: vec![p], split: true },
            None => PathSpec { linears: vec![], split: false },
        };
        let connected_key =
            (a.pattern_projection_as_connected && !a.stored_pattern_as_static).then_some(hw.k_proj.as_ref()).flatten();
        let value = match g.value_heads {
            ValueHeads::Split => {
                PathSpec { linears: connected_key.into_iter().chain(hw.v_proj.as_ref()).collect(), split: true }
            }
            ValueHeads::SplitRaw => PathSpec { linears: vec![], split: true },
            ValueHeads::Tile => PathSpec { linears: vec![], split: false },
        };
        let norm = |args: NormArgs, affine: &'w Option<Affine>| {
            args.enabled.then_some(NormSpec { eps: args.eps, affine: affine.as_ref() })
        };
        Ok(Structure {
            heads: g.heads,
            norm_stored: norm(a.normalize_stored_pattern, &hw.norm_stored_pattern),
            norm_state: norm(a.normalize_state_pattern, &hw.norm_state_pattern),
            norm_projection: norm(a.normalize_pattern_projection, &hw.norm_pattern_projection),
            query: path(&hw.q_proj),
            key: path(&hw.k_proj),
            value,
            hopfield_norm: norm(a.normalize_hopfield_space, &hw.p_norm),
            scaling: g.scaling.clone(),
            max_updates: a.update_steps_max.per_head(g.heads),
            eps: a.update_steps_eps.per_head(g.heads),
            zero: a.add_zero_association,
            out: hw.out_proj.as_ref(),
        })
    }
}

fn layer_norm(n: Option<NormSpec<'_>>) -> Option<LayerNorm> {
    n.map(|n| LayerNorm {
        eps: n.eps,
        affine: n.affine.map(|a| {
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

/// The reference's description of the module ([`Structure`] in f64). `rule`
/// picks the stop rule (hopfield-layers': [`StopRule::Association`]).
pub fn reference_module(config: &LayerConfig, w: &LayerWeights, rule: StopRule) -> Result<reference::Module> {
    let st = Structure::new(config, w)?;
    let path = |p: &PathSpec<'_>| InputPath {
        linears: p.linears.iter().map(|l| linear(l)).collect(),
        heads: if p.split { Heads::Split } else { Heads::Tile },
    };
    let scaling = match &st.scaling {
        PerHead::All(b) => Scaling::Uniform(*b),
        PerHead::Each(b) => Scaling::Tiled(b.clone()),
    };
    Ok(reference::Module {
        norm_stored: layer_norm(st.norm_stored),
        norm_state: layer_norm(st.norm_state),
        norm_projection: layer_norm(st.norm_projection),
        core: reference::Core {
            heads: st.heads,
            query: path(&st.query),
            key: path(&st.key),
            value: path(&st.value),
            hopfield_norm: layer_norm(st.hopfield_norm),
            scaling,
            updates: Updates { max: st.max_updates.clone(), eps: st.eps.clone(), rule },
            zero_association: st.zero,
            out: st.out.map(linear),
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
