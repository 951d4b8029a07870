//! The JSON configuration of a hopfield-layers module:
//! `{"class": "Hopfield" | "HopfieldPooling" | "HopfieldLayer", "args": {...}}`,
//! with every constructor argument of `hflayers` 1.0.2 by its own name and
//! default, plus hopfield-gpu's own `method`.
//!
//! Parsing is strict: an unknown class, an argument the class does not take
//! (`HopfieldPooling` has no `*_eps` arguments, only `Hopfield` has), a value
//! of the wrong JSON type, or a value we do not support
//! (`association_activation` other than null) is a [`Error::LayerConfig`]
//! naming it. [`LayerConfig::geometry`] then applies hopfield-layers' own
//! construction rules (the ones its constructors assert) and derives the
//! sizes every later stage needs. docs/hflayers.md lists every argument.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::method::Method;

/// Updates allowed when `update_steps_max` is None ("until the stop rule"),
/// where hopfield-layers has no limit at all. A head still moving after this
/// many updates is an error, not a hang.
pub const MAX_UNBOUNDED_UPDATES: usize = 1000;

/// The three hopfield-layers module classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerClass {
    /// `hflayers.Hopfield`: stored, state and pattern-projection inputs.
    Hopfield,
    /// `hflayers.HopfieldPooling`: learned static state patterns (queries).
    HopfieldPooling,
    /// `hflayers.HopfieldLayer`: learned static stored patterns and targets.
    HopfieldLayer,
}

impl LayerClass {
    /// The class name as hopfield-layers spells it.
    pub fn name(self) -> &'static str {
        match self {
            LayerClass::Hopfield => "Hopfield",
            LayerClass::HopfieldPooling => "HopfieldPooling",
            LayerClass::HopfieldLayer => "HopfieldLayer",
        }
    }

    /// The state-dict prefix of the inner `Hopfield` module.
    pub fn hopfield_prefix(self) -> &'static str {
        match self {
            LayerClass::Hopfield => "",
            LayerClass::HopfieldPooling | LayerClass::HopfieldLayer => "hopfield.",
        }
    }

    fn parse(name: &str) -> Result<Self> {
        match name {
            "Hopfield" => Ok(LayerClass::Hopfield),
            "HopfieldPooling" => Ok(LayerClass::HopfieldPooling),
            "HopfieldLayer" => Ok(LayerClass::HopfieldLayer),
            other => Err(config_error(
                "class",
                format!("unknown class {other:?}: expected \"Hopfield\", \"HopfieldPooling\" or \"HopfieldLayer\""),
            )),
        }
    }
}

/// A value given once for all heads, or once per head (a 1-D tensor of
/// `num_heads` entries in hopfield-layers).
#[derive(Clone, Debug, PartialEq)]
pub enum PerHead<T> {
    /// The same value for every head.
    All(T),
    /// One value per head.
    Each(Vec<T>),
}

impl<T: Clone> PerHead<T> {
    /// One value per head.
    pub fn per_head(&self, heads: usize) -> Vec<T> {
        match self {
            PerHead::All(v) => vec![v.clone(); heads],
            PerHead::Each(v) => v.clone(),
        }
    }
}

/// One of the LayerNorm flag triples (`normalize_X`, `normalize_X_affine`,
/// `normalize_X_eps`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormArgs {
    /// `normalize_X`.
    pub enabled: bool,
    /// `normalize_X_affine`: learned weight and bias.
    pub affine: bool,
    /// `normalize_X_eps`, added to the variance.
    pub eps: f64,
}

/// hopfield-gpu's own `method` argument: which retrieval method replaces the
/// softmax of each head (the nonparametric paper's NPH layer, Appendix D),
/// as a [`Method`] with the parameters it has for `retrieve` (SEMANTICS.md).
///
/// JSON: a name (`"dense"`, `"sparsemax"`, ...) or an object
/// `{"name": "topk", "k": 8}`; the field names are the `retrieve` flags'
/// (`k`, `seed`, `window`, `delta`, `degree`, `features`, `orthogonal`).
/// `dense-naive` (a bench baseline) and `auto` (which needs the data's
/// magnitudes before the layer has computed its queries) are refused.
fn parse_method(value: &Value) -> Result<Method> {
    let (name, mut fields) = match value {
        Value::String(name) => (name.clone(), Map::new()),
        Value::Object(map) => {
            let mut map = map.clone();
            let name = match map.remove("name") {
                Some(Value::String(name)) => name,
                Some(other) => return Err(config_error("method.name", format!("must be a string, not {other}"))),
                None => return Err(config_error("method", "an object needs a \"name\" (\"dense\", \"topk\", ...)")),
            };
            (name, map)
        }
        other => return Err(config_error("method", format!("must be a name or an object, not {other}"))),
    };
    let mut f = Fields { map: &mut fields, prefix: "method." };
    let method = match name.as_str() {
        "dense" => Method::Dense,
        "topk" => Method::TopK { k: f.required_count("k")? },
        "random" => Method::Random { k: f.required_count("k")?, seed: f.u64_or("seed", 0)? },
        "window" => Method::Window { width: f.opt_count("window")? },
        "sparsemax" => Method::Sparsemax,
        "entmax15" => Method::Entmax15,
        "poly" => {
            let delta = f.required_f64("delta")?;
            if !(delta > 0.0 && delta < 1.0) {
                return Err(config_error("method.delta", format!("{delta}: must lie in (0, 1)")));
            }
            Method::Poly { delta, degree: f.opt_count("degree")? }
        }
        "linear" => Method::Linear,
        "prf" => Method::Prf {
            features: f.opt_count("features")?,
            seed: f.u64_or("seed", 0)?,
            orthogonal: f.bool_or("orthogonal", false)?,
        },
        other => {
            return Err(config_error(
                "method",
                format!(
                    "unknown method {other:?}: expected dense, topk, random, window, sparsemax, entmax15, poly, \
                     linear or prf"
                ),
            ))
        }
    };
    if let Some(extra) = fields.keys().next() {
        return Err(config_error(format!("method.{extra}"), format!("not a parameter of method {name:?}")));
    }
    check_layer_method(&method)?;
    Ok(method)
}

/// Whether `method` can replace a layer's softmax: every method but the
/// naive baseline and `auto`, with valid parameters. The error names
/// `method` (or `method.<field>`).
pub fn check_layer_method(method: &Method) -> Result<()> {
    match method {
        Method::DenseNaive | Method::Auto { .. } => {
            return Err(config_error(
                "method",
                format!(
                    "{} cannot run inside a layer (dense-naive is a bench baseline; auto needs the queries' \
                     magnitudes before the layer has computed them): name a method",
                    method.name()
                ),
            ))
        }
        Method::Dense
        | Method::TopK { .. }
        | Method::Random { .. }
        | Method::Window { .. }
        | Method::Sparsemax
        | Method::Entmax15
        | Method::Poly { .. }
        | Method::Linear
        | Method::Prf { .. } => {}
    }
    method.validate().map_err(|e| match e {
        Error::InvalidParameter { name, why, .. } => {
            let field = if name == "width" { "window" } else { name };
            config_error(format!("method.{field}"), why)
        }
        other => other,
    })
}

/// Every constructor argument of `hflayers.Hopfield`, with its default. The
/// wrappers pass theirs through to an inner `Hopfield`.
#[derive(Clone, Debug, PartialEq)]
pub struct HopfieldArgs {
    /// `input_size`: features of the state pattern (default None; the
    /// wrappers require it).
    pub input_size: Option<usize>,
    /// `hidden_size`: head dimension of the association space (default
    /// `input_size / num_heads`).
    pub hidden_size: Option<usize>,
    /// `output_size`: features of the output projection (default `input_size`).
    pub output_size: Option<usize>,
    /// `pattern_size`: head dimension of the projected values (default
    /// `hidden_size`).
    pub pattern_size: Option<usize>,
    /// `num_heads` (default 1).
    pub num_heads: usize,
    /// `scaling`, beta (default None: `1 / sqrt(head dim)`, or 1 for a
    /// static-only module). A per-head list is tiled across features the
    /// way hopfield-layers does it (docs/hflayers.md).
    pub scaling: Option<PerHead<f64>>,
    /// `update_steps_max` (default 0): `Some(n)` = n updates, `None` = until
    /// the stop rule (null or a negative integer in the JSON).
    pub update_steps_max: PerHead<Option<usize>>,
    /// `update_steps_eps` (default 1e-4), > 0.
    pub update_steps_eps: PerHead<f64>,
    /// `normalize_stored_pattern*` (default on, affine, eps 1e-5).
    pub normalize_stored_pattern: NormArgs,
    /// `normalize_state_pattern*` (default on, affine, eps 1e-5).
    pub normalize_state_pattern: NormArgs,
    /// `normalize_pattern_projection*` (default on, affine, eps 1e-5).
    pub normalize_pattern_projection: NormArgs,
    /// `normalize_hopfield_space*` (default off, not affine, eps 1e-5).
    pub normalize_hopfield_space: NormArgs,
    /// `stored_pattern_as_static` (default false).
    pub stored_pattern_as_static: bool,
    /// `state_pattern_as_static` (default false).
    pub state_pattern_as_static: bool,
    /// `pattern_projection_as_static` (default false).
    pub pattern_projection_as_static: bool,
    /// `pattern_projection_as_connected` (default false).
    pub pattern_projection_as_connected: bool,
    /// `stored_pattern_size` (default `input_size`).
    pub stored_pattern_size: Option<usize>,
    /// `pattern_projection_size` (default `input_size`).
    pub pattern_projection_size: Option<usize>,
    /// `batch_first` (default true). hopfield-gpu's arrays are always batch
    /// first; this only changes the learned patterns' stored shape.
    pub batch_first: bool,
    /// `dropout` (default 0): no effect in eval mode.
    pub dropout: f64,
    /// `input_bias` (default true).
    pub input_bias: bool,
    /// `concat_bias_pattern` (default false): has no effect in hopfield-layers.
    pub concat_bias_pattern: bool,
    /// `add_zero_association` (default false).
    pub add_zero_association: bool,
    /// `disable_out_projection` (default false).
    pub disable_out_projection: bool,
}

impl Default for HopfieldArgs {
    fn default() -> Self {
        let norm = NormArgs { enabled: true, affine: true, eps: 1e-5 };
        HopfieldArgs {
            input_size: None,
            hidden_size: None,
            output_size: None,
            pattern_size: None,
            num_heads: 1,
            scaling: None,
            update_steps_max: PerHead::All(Some(0)),
            update_steps_eps: PerHead::All(1e-4),
            normalize_stored_pattern: norm,
            normalize_state_pattern: norm,
            normalize_pattern_projection: norm,
            normalize_hopfield_space: NormArgs { enabled: false, affine: false, eps: 1e-5 },
            stored_pattern_as_static: false,
            state_pattern_as_static: false,
            pattern_projection_as_static: false,
            pattern_projection_as_connected: false,
            stored_pattern_size: None,
            pattern_projection_size: None,
            batch_first: true,
            dropout: 0.0,
            input_bias: true,
            concat_bias_pattern: false,
            add_zero_association: false,
            disable_out_projection: false,
        }
    }
}

/// A parsed layer configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerConfig {
    /// The module class.
    pub class: LayerClass,
    /// The arguments of the (inner) `Hopfield` module.
    pub hopfield: HopfieldArgs,
    /// `quantity` (wrappers; default 1): learned state patterns
    /// (`HopfieldPooling`) or stored patterns (`HopfieldLayer`). 1 for `Hopfield`.
    pub quantity: usize,
    /// `trainable` (wrappers; default true): no effect on the forward pass.
    pub trainable: bool,
    /// `lookup_weights_as_separated` (`HopfieldLayer`; default false): learned
    /// targets (`target_weights`) separate from the learned stored patterns.
    pub lookup_weights_as_separated: bool,
    /// `lookup_targets_as_trainable` (`HopfieldLayer`; default true): no effect
    /// on the forward pass.
    pub lookup_targets_as_trainable: bool,
    /// hopfield-gpu's `method` (default dense).
    pub method: Method,
}

/// The arguments every class takes (hflayers 1.0.2 `__init__.py`).
const COMMON_ARGS: &[&str] = &[
    "input_size",
    "hidden_size",
    "output_size",
    "pattern_size",
    "num_heads",
    "scaling",
    "update_steps_max",
    "update_steps_eps",
    "normalize_stored_pattern",
    "normalize_stored_pattern_affine",
    "normalize_state_pattern",
    "normalize_state_pattern_affine",
    "normalize_pattern_projection",
    "normalize_pattern_projection_affine",
    "normalize_hopfield_space",
    "normalize_hopfield_space_affine",
    "stored_pattern_as_static",
    "state_pattern_as_static",
    "pattern_projection_as_static",
    "pattern_projection_as_connected",
    "stored_pattern_size",
    "pattern_projection_size",
    "batch_first",
    "association_activation",
    "dropout",
    "input_bias",
    "concat_bias_pattern",
    "add_zero_association",
    "disable_out_projection",
    "method",
];
/// Only `Hopfield` takes these.
const HOPFIELD_ONLY_ARGS: &[&str] = &[
    "normalize_stored_pattern_eps",
    "normalize_state_pattern_eps",
    "normalize_pattern_projection_eps",
    "normalize_hopfield_space_eps",
];
/// Only the wrappers take these.
const WRAPPER_ARGS: &[&str] = &["quantity", "trainable"];
/// Only `HopfieldLayer` takes these.
const LAYER_ONLY_ARGS: &[&str] = &["lookup_weights_as_separated", "lookup_targets_as_trainable"];

/// Arguments parsed from one JSON object; every `take` removes its key, so
/// that what is left at the end is unknown.
struct Fields<'a> {
    map: &'a mut Map<String, Value>,
    prefix: &'static str,
}

impl Fields<'_> {
    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    fn bad(&self, key: &str, value: &Value, want: &str) -> Error {
        config_error(self.name(key), format!("{value} is not {want}"))
    }

    fn count(&self, key: &str, value: &Value) -> Result<usize> {
        match value.as_u64() {
            Some(v) if v >= 1 => usize::try_from(v).map_err(|_| self.bad(key, value, "a size this machine can hold")),
            _ => Err(self.bad(key, value, "a positive integer")),
        }
    }

    fn opt_count(&mut self, key: &str) -> Result<Option<usize>> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.count(key, &v).map(Some),
        }
    }

    fn count_or(&mut self, key: &str, default: usize) -> Result<usize> {
        Ok(self.opt_count(key)?.unwrap_or(default))
    }

    fn required_count(&mut self, key: &str) -> Result<usize> {
        self.opt_count(key)?.ok_or_else(|| config_error(self.name(key), "is required"))
    }

    fn bool_or(&mut self, key: &str, default: bool) -> Result<bool> {
        match self.take(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(v) => Err(self.bad(key, &v, "true or false")),
        }
    }

    fn u64_or(&mut self, key: &str, default: u64) -> Result<u64> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| self.bad(key, &v, "a non-negative integer")),
        }
    }

    fn number(&self, key: &str, value: &Value) -> Result<f64> {
        match value.as_f64() {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(self.bad(key, value, "a finite number")),
        }
    }

    fn required_f64(&mut self, key: &str) -> Result<f64> {
        match self.take(key) {
            None | Some(Value::Null) => Err(config_error(self.name(key), "is required")),
            Some(v) => self.number(key, &v),
        }
    }

    fn f64_or(&mut self, key: &str, default: f64) -> Result<f64> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => self.number(key, &v),
        }
    }

    /// A number or a list of numbers (a per-head tensor).
    fn per_head_f64(&mut self, key: &str) -> Result<Option<PerHead<f64>>> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                items.iter().map(|v| self.number(key, v)).collect::<Result<Vec<_>>>().map(|v| Some(PerHead::Each(v)))
            }
            Some(v) => self.number(key, &v).map(|x| Some(PerHead::All(x))),
        }
    }

    /// `update_steps_max`: null, an integer or a list of integers; a
    /// negative integer means "until the stop rule", as in hopfield-layers.
    fn steps(&mut self, key: &str) -> Result<PerHead<Option<usize>>> {
        let prefix = self.prefix;
        let one = |v: &Value| -> Result<Option<usize>> {
            let bad = |want: &str| config_error(format!("{prefix}{key}"), format!("{v} is not {want}"));
            match (v.as_i64(), v.as_u64()) {
                (Some(n), _) if n < 0 => Ok(None),
                (_, Some(n)) => usize::try_from(n).map(Some).map_err(|_| bad("a step count")),
                _ => Err(bad("an integer or null")),
            }
        };
        match self.take(key) {
            None => Ok(PerHead::All(Some(0))),
            Some(Value::Null) => Ok(PerHead::All(None)),
            Some(Value::Array(items)) => items.iter().map(one).collect::<Result<Vec<_>>>().map(PerHead::Each),
            Some(v) => one(&v).map(PerHead::All),
        }
    }
}

fn config_error(arg: impl Into<String>, why: impl Into<String>) -> Error {
    Error::LayerConfig { arg: arg.into(), why: why.into() }
}

impl LayerConfig {
    /// Read and parse a config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_json(&text).map_err(|e| match e {
            Error::LayerConfig { arg, why } => {
                Error::LayerConfig { arg, why: format!("{why} (in {})", path.display()) }
            }
            other => other,
        })
    }

    /// Parse a config from JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| config_error("(file)", format!("not valid JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// Parse a config from a JSON value.
    pub fn from_value(value: &Value) -> Result<Self> {
        let Value::Object(top) = value else {
            return Err(config_error("(file)", "must be an object {\"class\": ..., \"args\": {...}}"));
        };
        let class = match top.get("class") {
            Some(Value::String(name)) => LayerClass::parse(name)?,
            Some(other) => return Err(config_error("class", format!("must be a string, not {other}"))),
            None => return Err(config_error("class", "is missing")),
        };
        if let Some(extra) = top.keys().find(|k| *k != "class" && *k != "args") {
            return Err(config_error(extra.clone(), "unknown top-level key (expected \"class\" and \"args\")"));
        }
        let mut args = match top.get("args") {
            Some(Value::Object(map)) => map.clone(),
            None => Map::new(),
            Some(other) => return Err(config_error("args", format!("must be an object, not {other}"))),
        };
        // Names the class does not take: say which class would.
        for key in args.keys() {
            let known = COMMON_ARGS.contains(&key.as_str())
                || match class {
                    LayerClass::Hopfield => HOPFIELD_ONLY_ARGS.contains(&key.as_str()),
                    LayerClass::HopfieldPooling => WRAPPER_ARGS.contains(&key.as_str()),
                    LayerClass::HopfieldLayer => {
                        WRAPPER_ARGS.contains(&key.as_str()) || LAYER_ONLY_ARGS.contains(&key.as_str())
                    }
                };
            if !known {
                let elsewhere = if HOPFIELD_ONLY_ARGS.contains(&key.as_str()) {
                    " (only Hopfield takes it)"
                } else if WRAPPER_ARGS.contains(&key.as_str()) {
                    " (only HopfieldPooling and HopfieldLayer take it)"
                } else if LAYER_ONLY_ARGS.contains(&key.as_str()) {
                    " (only HopfieldLayer takes it)"
                } else {
                    ""
                };
                return Err(config_error(key.clone(), format!("{} has no such argument{elsewhere}", class.name())));
            }
        }
        let mut f = Fields { map: &mut args, prefix: "" };
        match f.take("association_activation") {
            None | Some(Value::Null) => {}
            Some(v) => {
                return Err(config_error(
                    "association_activation",
                    format!(
                        "{v} is not supported (only null): hopfield-gpu does not apply an activation to the output"
                    ),
                ))
            }
        }
        let d = HopfieldArgs::default();
        let norm = |f: &mut Fields, stem: &str, default: NormArgs| -> Result<NormArgs> {
            Ok(NormArgs {
                enabled: f.bool_or(stem, default.enabled)?,
                affine: f.bool_or(&format!("{stem}_affine"), default.affine)?,
                eps: f.f64_or(&format!("{stem}_eps"), default.eps)?,
            })
        };
        let hopfield = HopfieldArgs {
            input_size: f.opt_count("input_size")?,
            hidden_size: f.opt_count("hidden_size")?,
            output_size: f.opt_count("output_size")?,
            pattern_size: f.opt_count("pattern_size")?,
            num_heads: f.count_or("num_heads", d.num_heads)?,
            scaling: f.per_head_f64("scaling")?,
            update_steps_max: f.steps("update_steps_max")?,
            update_steps_eps: f.per_head_f64("update_steps_eps")?.unwrap_or(d.update_steps_eps.clone()),
            normalize_stored_pattern: norm(&mut f, "normalize_stored_pattern", d.normalize_stored_pattern)?,
            normalize_state_pattern: norm(&mut f, "normalize_state_pattern", d.normalize_state_pattern)?,
            normalize_pattern_projection: norm(&mut f, "normalize_pattern_projection", d.normalize_pattern_projection)?,
            normalize_hopfield_space: norm(&mut f, "normalize_hopfield_space", d.normalize_hopfield_space)?,
            stored_pattern_as_static: f.bool_or("stored_pattern_as_static", false)?,
            state_pattern_as_static: f.bool_or("state_pattern_as_static", false)?,
            pattern_projection_as_static: f.bool_or("pattern_projection_as_static", false)?,
            pattern_projection_as_connected: f.bool_or("pattern_projection_as_connected", false)?,
            stored_pattern_size: f.opt_count("stored_pattern_size")?,
            pattern_projection_size: f.opt_count("pattern_projection_size")?,
            batch_first: f.bool_or("batch_first", true)?,
            dropout: f.f64_or("dropout", 0.0)?,
            input_bias: f.bool_or("input_bias", true)?,
            concat_bias_pattern: f.bool_or("concat_bias_pattern", false)?,
            add_zero_association: f.bool_or("add_zero_association", false)?,
            disable_out_projection: f.bool_or("disable_out_projection", false)?,
        };
        let quantity = f.count_or("quantity", 1)?;
        let trainable = f.bool_or("trainable", true)?;
        let lookup_weights_as_separated = f.bool_or("lookup_weights_as_separated", false)?;
        let lookup_targets_as_trainable = f.bool_or("lookup_targets_as_trainable", true)?;
        let method = match f.take("method") {
            None | Some(Value::Null) => Method::Dense,
            Some(v) => parse_method(&v)?,
        };
        // Every name was checked against the class's list above and taken since.
        debug_assert!(args.is_empty(), "argument table and parser disagree: {args:?}");
        let config = LayerConfig {
            class,
            hopfield,
            quantity,
            trainable,
            lookup_weights_as_separated,
            lookup_targets_as_trainable,
            method,
        };
        config.geometry()?;
        Ok(config)
    }

    /// The sizes hopfield-layers derives from these arguments, after its own
    /// construction rules and the ones hopfield-gpu adds (beta > 0, eps > 0);
    /// an argument that breaks one is a [`Error::LayerConfig`] naming it.
    pub fn geometry(&self) -> Result<Geometry> {
        let a = &self.hopfield;
        let heads = a.num_heads;
        let wrapper = self.class != LayerClass::Hopfield;
        if wrapper && a.input_size.is_none() {
            return Err(config_error("input_size", format!("{} requires it", self.class.name())));
        }
        for (stem, n) in [
            ("normalize_stored_pattern", a.normalize_stored_pattern),
            ("normalize_state_pattern", a.normalize_state_pattern),
            ("normalize_pattern_projection", a.normalize_pattern_projection),
            ("normalize_hopfield_space", a.normalize_hopfield_space),
        ] {
            if n.affine && !n.enabled {
                return Err(config_error(
                    format!("{stem}_affine"),
                    format!("true needs {stem} = true (hopfield-layers asserts this)"),
                ));
            }
            if n.eps <= 0.0 {
                return Err(config_error(format!("{stem}_eps"), format!("{}: must be > 0", n.eps)));
            }
        }
        if !(0.0..=1.0).contains(&a.dropout) {
            return Err(config_error("dropout", format!("{}: must lie in [0, 1]", a.dropout)));
        }
        let (qs, ks, vs) = (a.state_pattern_as_static, a.stored_pattern_as_static, a.pattern_projection_as_static);
        let connected = a.pattern_projection_as_connected;
        let static_execution = qs
            && ks
            && vs
            && !connected
            && !a.normalize_hopfield_space.enabled
            && !a.normalize_hopfield_space.affine
            && a.disable_out_projection;
        // The three input LayerNorms are sized from the Hopfield arguments
        // even in static-only execution.
        let norm_size = |n: NormArgs, size: Option<usize>, arg: &str| -> Result<Option<usize>> {
            match (n.enabled, size) {
                (false, _) => Ok(None),
                (true, Some(s)) => Ok(Some(s)),
                (true, None) => Err(config_error(arg, "a LayerNorm on this input needs its size (input_size)")),
            }
        };
        let norm_stored =
            norm_size(a.normalize_stored_pattern, a.stored_pattern_size.or(a.input_size), "normalize_stored_pattern")?;
        let norm_state = norm_size(a.normalize_state_pattern, a.input_size, "normalize_state_pattern")?;
        let norm_projection = norm_size(
            a.normalize_pattern_projection,
            a.pattern_projection_size.or(a.input_size),
            "normalize_pattern_projection",
        )?;

        let (embed, kdim, vdim) = if static_execution {
            (None, None, None)
        } else {
            let embed = a.input_size.ok_or_else(|| {
                config_error(
                    "input_size",
                    "is required unless every input is static, nothing is normalised in Hopfield space and the \
                     output projection is disabled (static-only execution)",
                )
            })?;
            (
                Some(embed),
                Some(a.stored_pattern_size.unwrap_or(embed)),
                Some(a.pattern_projection_size.unwrap_or(embed)),
            )
        };
        let packed = kdim == embed && vdim == embed && a.pattern_size.is_none() && !connected;
        if connected && kdim != vdim {
            return Err(config_error(
                "pattern_projection_as_connected",
                format!(
                    "needs stored_pattern_size == pattern_projection_size (the projection goes through the \
                     stored-pattern projection), got {kdim:?} and {vdim:?}"
                ),
            ));
        }
        let (head_dim, pattern_dim) = match embed {
            None => (None, None),
            Some(embed) => {
                let head_dim = match a.hidden_size {
                    Some(h) => h,
                    None if embed.is_multiple_of(heads) => embed / heads,
                    None => {
                        return Err(config_error(
                            "num_heads",
                            format!("input_size {embed} is not divisible by {heads} heads (give hidden_size)"),
                        ))
                    }
                };
                (Some(head_dim), Some(a.pattern_size.unwrap_or(head_dim)))
            }
        };
        if connected && pattern_dim != head_dim {
            return Err(config_error(
                "pattern_size",
                "pattern_projection_as_connected needs pattern_size == hidden_size (hopfield-layers asserts this)",
            ));
        }
        if a.normalize_hopfield_space.affine && a.hidden_size.is_none() {
            return Err(config_error(
                "normalize_hopfield_space_affine",
                "needs hidden_size (hopfield-layers sizes the parameters from that argument and fails without it)",
            ));
        }
        // Not disabled means not static-only, so embed is known.
        let out_dim = if a.disable_out_projection { None } else { embed.map(|e| a.output_size.unwrap_or(e)) };
        if a.concat_bias_pattern && (ks || vs) {
            return Err(config_error(
                "concat_bias_pattern",
                "with a static stored pattern or pattern projection, hopfield-layers fails in forward (it asserts \
                 that no bias is added to a static input)",
            ));
        }
        // How the values reach the heads (docs/hflayers.md: the packed and the
        // separate projection paths treat static values differently).
        let value_heads = match (vs, packed) {
            (false, _) => ValueHeads::Split,
            (true, true) => ValueHeads::Tile,
            (true, false) if connected && !ks => ValueHeads::Split,
            (true, false) if connected || ks => ValueHeads::SplitRaw,
            (true, false) => ValueHeads::Tile,
        };
        if value_heads == ValueHeads::SplitRaw && !a.disable_out_projection && heads > 1 {
            return Err(config_error(
                "pattern_projection_as_static",
                "static values with a static stored pattern (or connected) are split across the heads, which \
                 leaves out_proj the wrong width; hopfield-layers fails here too (disable_out_projection or use \
                 one head)",
            ));
        }

        if connected && vs && !ks && !a.disable_out_projection && kdim != pattern_dim {
            return Err(config_error(
                "pattern_projection_as_static",
                format!(
                    "connected static values go through the stored-pattern projection, so they need \
                     stored_pattern_size features, and hopfield-layers also asserts pattern_size features: \
                     {kdim:?} != {pattern_dim:?}"
                ),
            ));
        }
        // Feature sizes of the three inputs (None: taken from the input itself).
        let state_features = if qs { head_dim } else { embed };
        let stored_features = if ks { head_dim } else { kdim };
        let projection_features = match (vs, value_heads) {
            (false, _) => vdim,
            (true, ValueHeads::Split) => kdim,
            (true, ValueHeads::Tile | ValueHeads::SplitRaw) if a.disable_out_projection => None,
            (true, ValueHeads::Tile | ValueHeads::SplitRaw) => pattern_dim,
        };

        let scaling = match &a.scaling {
            None => PerHead::All(match head_dim {
                Some(hd) => 1.0 / (hd as f64).sqrt(),
                None => 1.0,
            }),
            Some(s) => s.clone(),
        };
        check_per_head(&scaling, heads, "scaling", |b| b > 0.0, "every beta must be > 0")?;
        check_per_head(&a.update_steps_eps, heads, "update_steps_eps", |e| e > 0.0, "must be > 0")?;
        check_per_head(&a.update_steps_max, heads, "update_steps_max", |_| true, "")?;
        let updates_possible = a.update_steps_max.per_head(heads).iter().any(|m| *m != Some(0));
        if let (PerHead::Each(_), Some(hd)) = (&scaling, head_dim) {
            if updates_possible && !hd.is_multiple_of(heads) {
                return Err(config_error(
                    "scaling",
                    format!(
                        "a per-head scaling with head dimension {hd} not divisible by {heads} heads fails in \
                         hopfield-layers at the first update (it re-tiles the betas over each head's features)"
                    ),
                ));
            }
        }
        let pooling_size = if qs { head_dim.or(a.input_size) } else { a.input_size };
        let lookup_size = if ks { head_dim.or(a.input_size) } else { kdim.or(a.input_size) };
        let target_size = a.pattern_projection_size.or(lookup_size);
        Ok(Geometry {
            heads,
            embed_dim: embed,
            kdim,
            vdim,
            head_dim,
            pattern_dim,
            out_dim,
            packed,
            static_execution,
            value_heads,
            state_features,
            stored_features,
            projection_features,
            norm_stored,
            norm_state,
            norm_projection,
            scaling,
            pooling_size: pooling_size.unwrap_or(0),
            lookup_size: lookup_size.unwrap_or(0),
            target_size: target_size.unwrap_or(0),
        })
    }
}

fn check_per_head<T: Copy + std::fmt::Debug>(
    v: &PerHead<T>,
    heads: usize,
    arg: &str,
    ok: impl Fn(T) -> bool,
    why: &str,
) -> Result<()> {
    let values = match v {
        PerHead::All(x) => vec![*x],
        PerHead::Each(xs) => {
            if xs.len() != heads {
                return Err(config_error(arg, format!("{} entries for {heads} heads: one per head", xs.len())));
            }
            xs.clone()
        }
    };
    match values.into_iter().find(|&x| !ok(x)) {
        Some(x) => Err(config_error(arg, format!("{x:?}: {why}"))),
        None => Ok(()),
    }
}

/// How the (possibly projected) pattern projection reaches the heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueHeads {
    /// Projected to `num_heads * pattern_dim` features and split per head.
    Split,
    /// Static, every head gets the whole input (the packed path, or the
    /// separate path with neither a static stored pattern nor `connected`).
    Tile,
    /// Static and unprojected, but split across the heads like a projection
    /// (the separate path with a static stored pattern or `connected`).
    SplitRaw,
}

/// Sizes derived from a [`LayerConfig`], as hopfield-layers derives them.
#[derive(Clone, Debug, PartialEq)]
pub struct Geometry {
    /// `num_heads`.
    pub heads: usize,
    /// Features of the state input when projected (`input_size`); None in
    /// static-only execution.
    pub embed_dim: Option<usize>,
    /// Features of the stored input when projected.
    pub kdim: Option<usize>,
    /// Features of the pattern-projection input when projected.
    pub vdim: Option<usize>,
    /// Head dimension of queries and keys; None in static-only execution
    /// (then it is the inputs' own feature size).
    pub head_dim: Option<usize>,
    /// Head dimension of projected values.
    pub pattern_dim: Option<usize>,
    /// Output features of `out_proj`; None when it is disabled.
    pub out_dim: Option<usize>,
    /// One packed `in_proj_weight` (true) or separate `q/k/v_proj_weight`.
    pub packed: bool,
    /// Every input static, no projection at all.
    pub static_execution: bool,
    /// How values reach the heads.
    pub value_heads: ValueHeads,
    /// Features the state input must have (None: any, static-only execution).
    pub state_features: Option<usize>,
    /// Features the stored input must have (None: any, static-only execution).
    pub stored_features: Option<usize>,
    /// Features the pattern-projection input must have (None: any).
    pub projection_features: Option<usize>,
    /// Size of the stored-pattern LayerNorm, if any.
    pub norm_stored: Option<usize>,
    /// Size of the state-pattern LayerNorm, if any.
    pub norm_state: Option<usize>,
    /// Size of the pattern-projection LayerNorm, if any.
    pub norm_projection: Option<usize>,
    /// beta, resolved (the default filled in).
    pub scaling: PerHead<f64>,
    /// Features of `pooling_weights` (`HopfieldPooling`).
    pub pooling_size: usize,
    /// Features of `lookup_weights` (`HopfieldLayer`).
    pub lookup_size: usize,
    /// Features of `target_weights` (`HopfieldLayer`, separated).
    pub target_size: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LayerConfig> {
        LayerConfig::from_json(text)
    }

    fn arg_of(e: Error) -> String {
        match e {
            Error::LayerConfig { arg, .. } => arg,
            other => panic!("expected LayerConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_hflayers_defaults() {
        let c = parse(r#"{"class": "Hopfield", "args": {"input_size": 8}}"#).unwrap();
        assert_eq!(c.hopfield, HopfieldArgs { input_size: Some(8), ..HopfieldArgs::default() });
        assert_eq!(c.method, Method::Dense);
        let g = c.geometry().unwrap();
        assert_eq!((g.head_dim, g.pattern_dim, g.out_dim, g.packed), (Some(8), Some(8), Some(8), true));
        assert_eq!(g.scaling, PerHead::All(1.0 / 8f64.sqrt()));
    }

    #[test]
    fn unknown_class_and_arguments_are_named() {
        assert_eq!(arg_of(parse(r#"{"class": "Hopfeld", "args": {}}"#).unwrap_err()), "class");
        assert_eq!(arg_of(parse(r#"{"class": "Hopfield", "args": {"input_sise": 8}}"#).unwrap_err()), "input_sise");
        let e = parse(r#"{"class": "HopfieldPooling", "args": {"input_size": 8, "normalize_state_pattern_eps": 0.1}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("only Hopfield takes it"), "{e}");
        assert_eq!(arg_of(parse(r#"{"class": "Hopfield", "args": {"quantity": 2}}"#).unwrap_err()), "quantity");
        assert_eq!(arg_of(parse(r#"{"class": "Hopfield", "extra": 1}"#).unwrap_err()), "extra");
    }

    #[test]
    fn unsupported_values_are_refused() {
        let e = parse(r#"{"class": "Hopfield", "args": {"input_size": 8, "association_activation": "tanh"}}"#);
        assert_eq!(arg_of(e.unwrap_err()), "association_activation");
        for (args, arg) in [
            (r#""input_size": 8.5"#, "input_size"),
            (r#""input_size": 8, "num_heads": 3"#, "num_heads"),
            (r#""input_size": 8, "scaling": 0"#, "scaling"),
            (r#""input_size": 8, "num_heads": 2, "scaling": [1.0]"#, "scaling"),
            (r#""input_size": 8, "update_steps_eps": 0.0"#, "update_steps_eps"),
            (r#""input_size": 8, "normalize_state_pattern": false"#, "normalize_state_pattern_affine"),
            (
                r#""input_size": 8, "normalize_hopfield_space": true, "normalize_hopfield_space_affine": true"#,
                "normalize_hopfield_space_affine",
            ),
            (r#""input_size": 8, "batch_first": 1"#, "batch_first"),
            (r#""input_size": 8, "method": {"name": "topk"}"#, "method.k"),
            (r#""input_size": 8, "method": {"name": "topk", "k": 2, "seed": 1}"#, "method.seed"),
            (r#""input_size": 8, "method": "auto""#, "method"),
            (
                r#""input_size": 8, "num_heads": 2, "hidden_size": 3, "scaling": [1, 2], "update_steps_max": 1"#,
                "scaling",
            ),
        ] {
            let e = parse(&format!(r#"{{"class": "Hopfield", "args": {{{args}}}}}"#)).unwrap_err();
            assert_eq!(arg_of(e), arg, "{args}");
        }
    }

    #[test]
    fn steps_and_methods_parse() {
        let c = parse(
            r#"{"class": "HopfieldLayer", "args": {"input_size": 4, "num_heads": 2, "update_steps_max": [-1, 3],
               "method": {"name": "prf", "features": 16, "seed": 3}}}"#,
        )
        .unwrap();
        assert_eq!(c.hopfield.update_steps_max, PerHead::Each(vec![None, Some(3)]));
        assert_eq!(c.method, Method::Prf { features: Some(16), seed: 3, orthogonal: false });
        let c = parse(r#"{"class": "Hopfield", "args": {"input_size": 4, "update_steps_max": null}}"#).unwrap();
        assert_eq!(c.hopfield.update_steps_max, PerHead::All(None));
    }
}
