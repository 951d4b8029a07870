//! `Context.load_layer` and the `Layer` class: a trained hopfield-layers
//! module (config JSON + safetensors state dict, as tools/export_hflayers.py
//! writes them) run on NumPy arrays, with the inputs of the CLI's `layer`
//! command (docs/hflayers.md).
//!
//! The library's GPU layer borrows its `Context`, so it cannot live in a
//! Python object beside the `Arc` that owns the context. The Python `Layer`
//! keeps the checked config and weights instead and builds the GPU layer for
//! each `forward` call: its weights are uploaded again each time, which costs
//! one buffer write of the state dict's size (small next to the forward pass
//! itself). Building it once at load time makes every config error and
//! weights error surface in `load_layer`, not in the first `forward`.

use std::path::PathBuf;
use std::sync::Arc;

use hopfield_gpu::layer::config::{LayerClass, LayerConfig};
use hopfield_gpu::layer::gpu::Layer;
use hopfield_gpu::layer::weights::LayerWeights;
use hopfield_gpu::layer::{LayerInputs, Mask, Sequences};
use hopfield_gpu::{BatchStop, Context};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrays::{array, output};
use crate::errors::detached;
use crate::options;

/// A hopfield-layers module on one context's device.
#[pyclass(name = "Layer", module = "hopfield_gpu", frozen)]
pub struct PyLayer {
    ctx: Arc<Context>,
    config: LayerConfig,
    weights: LayerWeights,
    stop: BatchStop,
}

/// The stop rule by its CLI name (`--stop`).
fn stop_rule(stop: &str) -> PyResult<BatchStop> {
    match stop {
        "hflayers" => Ok(BatchStop::Association),
        "per-query" => Ok(BatchStop::PerQuery),
        other => Err(PyValueError::new_err(format!(
            "unknown stop rule {other:?}: \"hflayers\" (per head, the change of the association matrix) or \
             \"per-query\" (the engine's rule on the key-space state)"
        ))),
    }
}

/// Load and check a layer on `ctx` (what `Context.load_layer` does).
pub fn load(
    ctx: &Arc<Context>,
    py: Python<'_>,
    config: PathBuf,
    weights: PathBuf,
    method: Option<&str>,
    stop: &str,
    params: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyLayer> {
    // Method parameters without a method would be ignored: refuse them.
    let method = match method {
        Some(name) => Some(options::method(name, params)?),
        None if params.is_some_and(|p| !p.is_empty()) => {
            return Err(PyValueError::new_err(
                "method parameters given without method=...: name the method they belong to",
            ))
        }
        None => None,
    };
    let stop = stop_rule(stop)?;
    let ctx = ctx.clone();
    let (config, weights) = detached(py, || {
        let mut config = LayerConfig::from_file(&config)?;
        if let Some(m) = method {
            config.method = m;
        }
        let weights = LayerWeights::from_file(&weights, &config)?;
        // Every config, weights and method error now rather than at the first forward.
        Layer::new(&ctx, &config, &weights)?;
        Ok((config, weights))
    })?;
    Ok(PyLayer { ctx, config, weights, stop })
}

/// A layer input `[N, S, F]` or `[S, F]`; whether it was 3-D.
fn sequences(obj: &Bound<'_, PyAny>, what: &'static str) -> PyResult<(Sequences, bool)> {
    let (shape, data) = array(obj, what, 2..=3, false)?;
    let seq = Sequences::new(what, &shape, data).map_err(crate::errors::to_py)?;
    Ok((seq, shape.len() == 3))
}

/// The key-padding mask, nonzero (or True) = absent: `[N, S]` with 3-D
/// inputs, `[S]` with 2-D ones.
fn mask(obj: &Bound<'_, PyAny>, three: bool) -> PyResult<Mask> {
    let (shape, data) = array(obj, "mask", 1..=2, true)?;
    let (n, s) = match (three, shape.as_slice()) {
        (true, &[n, s]) => (n, s),
        (false, &[s]) => (1, s),
        (_, shape) => {
            return Err(PyValueError::new_err(format!(
                "mask: shape {shape:?}; with {} inputs the mask is {}",
                if three { "3-D" } else { "2-D" },
                if three { "[N, S]" } else { "[S]" }
            )))
        }
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(PyValueError::new_err(format!("mask: value {} at {i} is not finite", data[i])));
    }
    Ok(Mask { n, s, masked: data.iter().map(|&v| v != 0.0).collect() })
}

#[pymethods]
impl PyLayer {
    /// The module's class: "Hopfield", "HopfieldPooling" or "HopfieldLayer".
    #[getter]
    fn class_name(&self) -> &'static str {
        self.config.class.name()
    }

    /// The retrieval method in place of the softmax (its CLI name).
    #[getter]
    fn method(&self) -> String {
        self.config.method.name().to_string()
    }

    /// The eval-mode forward pass. Inputs as the CLI's `layer` command:
    /// `Hopfield` takes `stored` and `state` (`projection` defaults to
    /// `stored`), `HopfieldPooling` its input as `stored`, `HopfieldLayer`
    /// its input as `state`. Arrays are `[N, S, F]` (batch first) or
    /// `[S, F]` (one sequence), all of one rank; `mask` marks absent stored
    /// patterns (nonzero / True), `[N, S]` or `[S]`. Returns float32
    /// `[N, L, out]` (`[L, out]` for 2-D inputs).
    #[pyo3(signature = (stored=None, state=None, projection=None, mask=None))]
    fn forward<'py>(
        &self,
        py: Python<'py>,
        stored: Option<&Bound<'py, PyAny>>,
        state: Option<&Bound<'py, PyAny>>,
        projection: Option<&Bound<'py, PyAny>>,
        mask: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let class = self.config.class.name();
        let need = |name: &str, given: bool, want: bool, why: &str| -> PyResult<()> {
            if given == want {
                Ok(())
            } else {
                Err(PyValueError::new_err(format!("{class} {why} (argument {name})")))
            }
        };
        match self.config.class {
            LayerClass::Hopfield => {
                need("stored", stored.is_some(), true, "needs its stored patterns")?;
                need("state", state.is_some(), true, "needs its state patterns")?;
            }
            LayerClass::HopfieldPooling => {
                need("state", state.is_some(), false, "learns its state patterns: give its input as stored")?;
                need("stored", stored.is_some(), true, "takes its input as stored")?;
            }
            LayerClass::HopfieldLayer => {
                need("stored", stored.is_some(), false, "learns its stored patterns: give its input as state")?;
                need("projection", projection.is_some(), false, "learns its pattern projections")?;
                need("state", state.is_some(), true, "takes its input as state")?;
            }
        }
        let stored = stored.map(|a| sequences(a, "stored")).transpose()?;
        let state = state.map(|a| sequences(a, "state")).transpose()?;
        let projection = projection.map(|a| sequences(a, "projection")).transpose()?;
        let ranks: Vec<bool> = [&stored, &state, &projection].iter().filter_map(|s| s.as_ref().map(|x| x.1)).collect();
        if ranks.windows(2).any(|w| w[0] != w[1]) {
            return Err(PyValueError::new_err(
                "the inputs mix 2-D [S, F] and 3-D [N, S, F] arrays: give all of them one way",
            ));
        }
        let three = ranks.first().copied().unwrap_or(false);
        let mask = mask.map(|m| self::mask(m, three)).transpose()?;
        let (ctx, config, weights, stop) = (self.ctx.clone(), &self.config, &self.weights, self.stop);
        let out = detached(py, || {
            let inputs = LayerInputs {
                stored: stored.as_ref().map(|s| &s.0),
                state: state.as_ref().map(|s| &s.0),
                projection: projection.as_ref().map(|s| &s.0),
                mask: mask.as_ref(),
            };
            // The inputs against the config before anything goes to the device.
            hopfield_gpu::layer::resolve(config, weights, &inputs)?;
            Layer::new(&ctx, config, weights)?.with_stop(stop).forward(&inputs)
        })?;
        let shape: Vec<usize> = if three { vec![out.n, out.rows, out.features] } else { vec![out.rows, out.features] };
        output(py, out.data, &shape)
    }

    fn __repr__(&self) -> String {
        format!(
            "Layer(class={:?}, method={:?}, adapter={:?})",
            self.config.class.name(),
            self.config.method.name(),
            self.ctx.adapter_info().name
        )
    }
}
