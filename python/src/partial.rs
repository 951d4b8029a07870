//! Shards from Python: `Context.retrieve_partial` (one shard's partial, as a
//! `hopfield_gpu.Partial` of plain NumPy arrays, so it pickles and travels
//! between processes and machines), `merge` (the exact merge), and
//! `ShardedBank` (several contexts in one process).

use std::sync::Arc;

use hopfield_gpu::{Context, Partial, PartialData, ShardedBank};
use numpy::PyReadonlyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::arrays::{matrix, output, Rank};
use crate::errors::detached;
use crate::objects::{query_matrix, retrieval_to_py, retrieve_options, PyContext, PyMemoryBank, PyRetrieval};

/// A partial as the keyword arguments of `hopfield_gpu.Partial`.
fn partial_to_py<'py>(py: Python<'py>, p: Partial, one_d: bool) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let (l, dv) = (p.rows, p.value_dim);
    d.set_item("method", p.data.method_name())?;
    d.set_item("rows", l)?;
    d.set_item("value_dim", dv)?;
    d.set_item("offset", p.offset)?;
    d.set_item("memories", p.memories)?;
    d.set_item("beta", p.beta)?;
    d.set_item("one_d", one_d)?;
    match p.data {
        PartialData::Dense { z, log_sum_exp, max_score, argmax } => {
            d.set_item("k", py.None())?;
            d.set_item("z", output(py, z, &[l, dv])?)?;
            d.set_item("log_sum_exp", output(py, log_sum_exp, &[l])?)?;
            d.set_item("max_score", output(py, max_score, &[l])?)?;
            d.set_item("argmax", output(py, argmax, &[l])?)?;
        }
        PartialData::TopK { k, width, scores, indices, values } => {
            d.set_item("k", k)?;
            d.set_item("scores", output(py, scores, &[l, width])?)?;
            d.set_item("indices", output(py, indices, &[l, width])?)?;
            let flat = output(py, values, &[l * width * dv])?;
            d.set_item("values", flat.call_method1("reshape", ((l, width, dv),))?)?;
        }
    }
    Ok(d)
}

fn field<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    obj.getattr(name).map_err(|_| PyValueError::new_err(format!("a partial must have the field {name:?}")))
}

fn vec_of<T: numpy::Element + Copy>(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<T>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_vec(obj, name)))
        .map_err(crate::errors::panic_to_py)?
}

fn read_vec<T: numpy::Element + Copy>(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<T>> {
    // hopfield_gpu.merge has already made each field an aligned, C-contiguous,
    // flat array of the right dtype (numpy.require).
    let a: PyReadonlyArray1<'_, T> = field(obj, name)?
        .extract()
        .map_err(|_| PyValueError::new_err(format!("partial field {name:?} has the wrong dtype or shape")))?;
    Ok(a.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?.to_vec())
}

fn count(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<usize> {
    field(obj, name)?
        .extract()
        .map_err(|_| PyValueError::new_err(format!("partial field {name:?} must be an int >= 0")))
}

/// A `hopfield_gpu.Partial` (flattened by `merge`) back into the library's.
fn partial_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Partial> {
    let method: String = field(obj, "method")?.extract()?;
    let data = match method.as_str() {
        "dense" => PartialData::Dense {
            z: vec_of(obj, "z")?,
            log_sum_exp: vec_of(obj, "log_sum_exp")?,
            max_score: vec_of(obj, "max_score")?,
            argmax: vec_of(obj, "argmax")?,
        },
        "topk" => {
            let (rows, k) = (count(obj, "rows")?, count(obj, "k")?);
            let indices: Vec<i32> = vec_of(obj, "indices")?;
            PartialData::TopK {
                k,
                width: indices.len().checked_div(rows).unwrap_or(0),
                scores: vec_of(obj, "scores")?,
                indices,
                values: vec_of(obj, "values")?,
            }
        }
        other => return Err(PyValueError::new_err(format!("unknown partial method {other:?} (dense or topk)"))),
    };
    Ok(Partial {
        rows: count(obj, "rows")?,
        value_dim: count(obj, "value_dim")?,
        offset: count(obj, "offset")?,
        memories: count(obj, "memories")?,
        beta: field(obj, "beta")?.extract()?,
        data,
    })
}

/// Merge flattened partials (see `hopfield_gpu.merge`).
#[pyfunction]
pub fn _merge(py: Python<'_>, parts: &Bound<'_, PyList>) -> PyResult<PyRetrieval> {
    let mut rust = Vec::with_capacity(parts.len());
    let mut one_d = true;
    for p in parts.iter() {
        one_d &= field(&p, "one_d")?.extract::<bool>()?;
        rust.push(partial_from_py(&p)?);
    }
    let r = detached(py, || Partial::merge(&rust))?;
    // As from one bank: log_sum_exp and argmax are computed for dense only.
    let stats = rust.first().is_some_and(|p| matches!(p.data, PartialData::Dense { .. }));
    retrieval_to_py(py, r, one_d && !rust.is_empty(), stats)
}

/// `Context.retrieve_partial` (registered in objects.rs: one `#[pymethods]`
/// block per class).
#[expect(clippy::too_many_arguments, reason = "the Python signature")]
pub fn retrieve_partial<'py>(
    this: &PyContext,
    py: Python<'py>,
    bank: &Bound<'py, PyMemoryBank>,
    queries: &Bound<'py, PyAny>,
    beta: f64,
    method: &str,
    offset: usize,
    params: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let bank = bank.get();
    bank.check_context(&this.ctx)?;
    let opts = retrieve_options(beta, method, 1, 0.0, false, false, params)?;
    let q = query_matrix(queries, bank.bank.dim())?;
    let (ctx, b) = (this.ctx.clone(), bank.bank.clone());
    let part = detached(py, || ctx.retrieve_partial(&b, &q.data, &opts))?.at_offset(offset);
    let kwargs = partial_to_py(py, part, q.one_d)?;
    py.import("hopfield_gpu")?.getattr("Partial")?.call((), Some(&kwargs))
}

/// One memory set split over several contexts in this process.
#[pyclass(name = "ShardedBank", module = "hopfield_gpu", frozen)]
pub struct PyShardedBank {
    bank: Arc<ShardedBank>,
}

#[pymethods]
impl PyShardedBank {
    /// Split `memories` [M, d] (and `values` [M, dv]) evenly over `contexts`
    /// (a list of Context; the same one may appear several times).
    #[new]
    #[pyo3(signature = (contexts, memories, values=None))]
    fn new(
        py: Python<'_>,
        contexts: Vec<Bound<'_, PyContext>>,
        memories: &Bound<'_, PyAny>,
        values: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let ctxs: Vec<Arc<Context>> = contexts.iter().map(|c| c.get().ctx.clone()).collect();
        let keys = matrix(memories, "memories", Rank::Two)?;
        let values = values.map(|v| matrix(v, "values", Rank::Two)).transpose()?;
        let bank = detached(py, || match &values {
            None => ShardedBank::new(&ctxs, &keys.data, keys.rows, keys.cols),
            Some(v) if v.rows != keys.rows => Err(hopfield_gpu::Error::ShapeMismatch {
                what: "values must have one row per memory".into(),
                expected: keys.rows,
                got: v.rows,
            }),
            Some(v) => ShardedBank::with_values(&ctxs, &keys.data, keys.rows, keys.cols, &v.data, v.cols),
        })?;
        Ok(PyShardedBank { bank: Arc::new(bank) })
    }

    /// Retrieve from the whole set; the arguments of `Context.retrieve`.
    /// Methods: dense and topk (the ones with an exact merge).
    #[pyo3(signature = (queries, beta, method="dense", steps=1, eps=1e-5, energy=false, support=false, **params))]
    #[expect(clippy::too_many_arguments, reason = "the Python signature")]
    fn retrieve(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        beta: f64,
        method: &str,
        steps: i64,
        eps: f64,
        energy: bool,
        support: bool,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyRetrieval> {
        let opts = retrieve_options(beta, method, steps, eps, energy, support, params)?;
        let q = query_matrix(queries, self.bank.dim())?;
        let bank = self.bank.clone();
        let r = detached(py, || bank.retrieve(&q.data, &opts))?;
        let stats = opts.method.is_dense() || opts.energy;
        retrieval_to_py(py, r, q.one_d, stats)
    }

    /// Memories M over all shards.
    fn __len__(&self) -> usize {
        self.bank.len()
    }

    /// Number of shards.
    #[getter]
    fn shard_count(&self) -> usize {
        self.bank.shard_count()
    }

    /// Pattern dimension d.
    #[getter]
    fn dim(&self) -> usize {
        self.bank.dim()
    }

    fn __repr__(&self) -> String {
        format!("ShardedBank(M={}, d={}, shards={})", self.bank.len(), self.bank.dim(), self.bank.shard_count())
    }
}
