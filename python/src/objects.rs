//! The Python classes: `Context` (one device), `MemoryBank` (memories
//! resident on it) and `Retrieval` (NumPy results). All are immutable from
//! Python (`frozen`), so one `Context` and its banks are shared by any number
//! of threads; the GPU work of each call runs with the GIL released.

use std::sync::Arc;

use hopfield_gpu::{Context, ContextOptions, MemoryBank, Retrieval, RetrieveOptions};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::arrays::{matrix, output, Matrix, Rank};
use crate::errors::detached;
use crate::options;

/// One adapter's description as a dict (the shape `adapters()` returns).
pub fn adapter_dict<'py>(py: Python<'py>, info: &wgpu::AdapterInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &info.name)?;
    d.set_item("backend", format!("{:?}", info.backend))?;
    d.set_item("device_type", format!("{:?}", info.device_type))?;
    d.set_item("driver", format!("{} {}", info.driver, info.driver_info).trim())?;
    Ok(d)
}

/// A GPU device with its compiled pipelines and buffer pool.
#[pyclass(name = "Context", module = "hopfield_gpu", frozen)]
pub struct PyContext {
    pub(crate) ctx: Arc<Context>,
}

/// Memories (and optional values) uploaded once to one context's device.
#[pyclass(name = "MemoryBank", module = "hopfield_gpu", frozen)]
pub struct PyMemoryBank {
    pub(crate) ctx: Arc<Context>,
    pub(crate) bank: Arc<MemoryBank>,
}

/// What `Context.retrieve` returns: NumPy arrays, one entry per query.
#[pyclass(name = "Retrieval", module = "hopfield_gpu", frozen, get_all)]
pub struct PyRetrieval {
    /// Retrieved patterns `[L, dv]` (the final states when iterating), float32.
    z: Py<PyAny>,
    /// Updates applied per query, uint32.
    steps: Py<PyAny>,
    /// Whether the last update moved the query by at most eps, bool.
    converged: Py<PyAny>,
    /// `log sum exp(beta <x, xi>)` of the state the last update started from
    /// (of the final state with energy=True), float32; None for non-dense
    /// methods without energy=True (not computed there; `auto` counts as
    /// non-dense, since the method it picks is not reported).
    log_sum_exp: Py<PyAny>,
    /// Index of the most similar memory (lowest on ties), uint32; None where
    /// log_sum_exp is None.
    argmax: Py<PyAny>,
    /// Dense energy of each final state (float32), or None unless asked for.
    energy: Py<PyAny>,
    /// Support indices `[L, width]` (int32, -1 padding), or None unless asked for.
    support: Py<PyAny>,
    /// Seconds the GPU spent (timestamps), or None where the device has none.
    gpu_time: Py<PyAny>,
}

#[pymethods]
impl PyRetrieval {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let shape = self.z.bind(py).getattr("shape")?;
        Ok(format!("Retrieval(z.shape={shape})"))
    }
}

/// A library `Retrieval` as NumPy arrays; `one_d` drops the query axis.
/// `stats` says whether `log_sum_exp` and `argmax` were computed: the
/// library leaves them 0 for non-dense methods run without energies, and
/// Python gets None there rather than zeros that look like results.
pub fn retrieval_to_py(py: Python<'_>, r: Retrieval, one_d: bool, stats: bool) -> PyResult<PyRetrieval> {
    let per_query: &[usize] = if one_d { &[] } else { &[r.rows] };
    let z_shape: &[usize] = if one_d { &[r.cols] } else { &[r.rows, r.cols] };
    let support = match r.support {
        Some(s) => {
            let shape: &[usize] = if one_d { &[s.width] } else { &[r.rows, s.width] };
            output(py, s.indices, shape)?.unbind()
        }
        None => py.None(),
    };
    Ok(PyRetrieval {
        z: output(py, r.z, z_shape)?.unbind(),
        steps: output(py, r.steps, per_query)?.unbind(),
        converged: output(py, r.converged, per_query)?.unbind(),
        log_sum_exp: if stats { output(py, r.log_sum_exp, per_query)?.unbind() } else { py.None() },
        argmax: if stats { output(py, r.argmax, per_query)?.unbind() } else { py.None() },
        energy: match r.energy {
            Some(e) => output(py, e, per_query)?.unbind(),
            None => py.None(),
        },
        support,
        gpu_time: match r.gpu_time {
            Some(t) => t.as_secs_f64().into_pyobject(py)?.into_any().unbind(),
            None => py.None(),
        },
    })
}

/// `RetrieveOptions` from the Python arguments.
pub fn retrieve_options(
    beta: f64,
    method: &str,
    steps: i64,
    eps: f64,
    energy: bool,
    support: bool,
    params: Option<&Bound<'_, PyDict>>,
) -> PyResult<RetrieveOptions> {
    let method = options::method(method, params)?;
    let max_steps = u32::try_from(steps)
        .map_err(|_| PyValueError::new_err(format!("invalid steps = {steps}: must lie in 1..=4294967295")))?;
    // beta and eps as f32, the kernels' precision; an f64 beyond f32's range
    // becomes inf and is refused by the library as not finite.
    Ok(RetrieveOptions { method, beta: beta as f32, max_steps, eps: eps as f32, energy, support })
}

/// Queries `[L, d]` or `[d]`, with d checked against the memories' (the
/// library sees only a flat length, which a wrong d can still divide).
pub fn query_matrix(queries: &Bound<'_, PyAny>, d: usize) -> PyResult<Matrix> {
    let q = matrix(queries, "queries", Rank::OneOrTwo)?;
    if q.cols != d && !q.data.is_empty() {
        return Err(PyValueError::new_err(format!(
            "shape mismatch: queries have dimension {} but the memories have d = {d}",
            q.cols
        )));
    }
    Ok(q)
}

impl PyMemoryBank {
    /// The bank's context must be the one asked to retrieve from it.
    pub(crate) fn check_context(&self, ctx: &Arc<Context>) -> PyResult<()> {
        if Arc::ptr_eq(&self.ctx, ctx) {
            Ok(())
        } else {
            Err(PyValueError::new_err(
                "this memory bank lives on another Context's device; build it with this context's memory_bank()",
            ))
        }
    }
}

#[pymethods]
impl PyMemoryBank {
    /// Memories M.
    fn __len__(&self) -> usize {
        self.bank.len()
    }

    /// Pattern dimension d.
    #[getter]
    fn dim(&self) -> usize {
        self.bank.dim()
    }

    /// Value dimension dv (d unless separate values were given).
    #[getter]
    fn value_dim(&self) -> usize {
        self.bank.value_dim()
    }

    /// Whether separate values were given.
    #[getter]
    fn hetero(&self) -> bool {
        self.bank.is_hetero()
    }

    fn __repr__(&self) -> String {
        format!("MemoryBank(M={}, d={}, dv={})", self.bank.len(), self.bank.dim(), self.bank.value_dim())
    }
}

#[pymethods]
impl PyContext {
    /// Open a device. `device`: case-insensitive substring of the adapter
    /// name (e.g. "llvmpipe"); None honours WGPU_ADAPTER_NAME, else picks the
    /// fastest kind present. WGPU_BACKEND (vulkan, metal, dx12) narrows the
    /// backends.
    #[new]
    #[pyo3(signature = (device=None))]
    fn new(py: Python<'_>, device: Option<String>) -> PyResult<Self> {
        let opts = ContextOptions { adapter_name: device, ..ContextOptions::default() };
        let ctx = detached(py, || Context::new(&opts))?;
        Ok(PyContext { ctx: Arc::new(ctx) })
    }

    /// The adapter, its limits and its features, as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("adapter", adapter_dict(py, self.ctx.adapter_info())?)?;
        let l = self.ctx.limits();
        let limits = PyDict::new(py);
        limits.set_item("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size)?;
        limits.set_item("max_buffer_size", l.max_buffer_size)?;
        limits.set_item("max_compute_workgroup_storage_size", l.max_compute_workgroup_storage_size)?;
        limits.set_item("max_compute_invocations_per_workgroup", l.max_compute_invocations_per_workgroup)?;
        limits.set_item("max_compute_workgroups_per_dimension", l.max_compute_workgroups_per_dimension)?;
        limits.set_item("max_storage_buffers_per_shader_stage", l.max_storage_buffers_per_shader_stage)?;
        limits.set_item("min_storage_buffer_offset_alignment", l.min_storage_buffer_offset_alignment)?;
        // What the engine itself uses as one binding (the limits above, rounded).
        limits.set_item("engine_max_binding", self.ctx.max_binding())?;
        d.set_item("limits", limits)?;
        let features: Vec<&str> = self.ctx.device().features().iter_names().map(|(name, _)| name).collect();
        d.set_item("features", PyList::new(py, features)?)?;
        d.set_item("timestamps", self.ctx.has_timestamps())?;
        Ok(d)
    }

    /// Upload `memories` [M, d] (and optional `values` [M, dv]) once.
    #[pyo3(signature = (memories, values=None))]
    fn memory_bank(
        &self,
        py: Python<'_>,
        memories: &Bound<'_, PyAny>,
        values: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyMemoryBank> {
        let keys = matrix(memories, "memories", Rank::Two)?;
        let values = values.map(|v| matrix(v, "values", Rank::Two)).transpose()?;
        let ctx = self.ctx.clone();
        let bank = detached(py, || match &values {
            None => MemoryBank::new(&ctx, &keys.data, keys.rows, keys.cols),
            Some(v) => {
                if v.rows != keys.rows {
                    return Err(hopfield_gpu::Error::ShapeMismatch {
                        what: "values must have one row per memory".into(),
                        expected: keys.rows,
                        got: v.rows,
                    });
                }
                MemoryBank::with_values(&ctx, &keys.data, keys.rows, keys.cols, &v.data, v.cols)
            }
        })?;
        Ok(PyMemoryBank { ctx: self.ctx.clone(), bank: Arc::new(bank) })
    }

    /// Retrieve for `queries` ([L, d], or [d] for one query) from `bank`.
    #[pyo3(signature = (bank, queries, beta, method="dense", steps=1, eps=1e-5, energy=false, support=false, **params))]
    #[expect(clippy::too_many_arguments, reason = "the Python signature")]
    fn retrieve(
        &self,
        py: Python<'_>,
        bank: &Bound<'_, PyMemoryBank>,
        queries: &Bound<'_, PyAny>,
        beta: f64,
        method: &str,
        steps: i64,
        eps: f64,
        energy: bool,
        support: bool,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyRetrieval> {
        let bank = bank.get();
        bank.check_context(&self.ctx)?;
        let opts = retrieve_options(beta, method, steps, eps, energy, support, params)?;
        let q = query_matrix(queries, bank.bank.dim())?;
        let (ctx, b) = (self.ctx.clone(), bank.bank.clone());
        let r = detached(py, || ctx.retrieve(&b, &q.data, &opts))?;
        let stats = opts.method.is_dense() || opts.energy;
        retrieval_to_py(py, r, q.one_d, stats)
    }

    /// One shard's partial for `queries` from `bank`, whose memories start
    /// at global index `offset` of the whole set: a `hopfield_gpu.Partial`.
    #[pyo3(signature = (bank, queries, beta, method="dense", offset=0, **params))]
    #[expect(clippy::too_many_arguments, reason = "the Python signature")]
    fn retrieve_partial<'py>(
        &self,
        py: Python<'py>,
        bank: &Bound<'py, PyMemoryBank>,
        queries: &Bound<'py, PyAny>,
        beta: f64,
        method: &str,
        offset: usize,
        params: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        crate::partial::retrieve_partial(self, py, bank, queries, beta, method, offset, params)
    }

    /// A trained hopfield-layers module on this device: `config` (JSON,
    /// `{"class": ..., "args": {...}}`) and `weights` (its state dict in
    /// safetensors), as tools/export_hflayers.py writes them. `method`
    /// (with its keyword parameters, as `retrieve` takes them) replaces the
    /// config's retrieval method; `stop` is the updates' stop rule,
    /// "hflayers" or "per-query".
    #[pyo3(signature = (config, weights, method=None, stop="hflayers", **params))]
    fn load_layer(
        &self,
        py: Python<'_>,
        config: std::path::PathBuf,
        weights: std::path::PathBuf,
        method: Option<&str>,
        stop: &str,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<crate::layer::PyLayer> {
        crate::layer::load(&self.ctx, py, config, weights, method, stop, params)
    }

    fn __repr__(&self) -> String {
        format!("Context(adapter={:?})", self.ctx.adapter_info().name)
    }
}
