//! A benchmark path for python/bench/bench_python.py: the Rust call that
//! `Context.retrieve` wraps, timed inside the extension, in the same process,
//! on the same context, bank and queries, so that the Python-over-Rust
//! overhead is a ratio from one run. Not part of the API (underscore name).

use std::time::Instant;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::detached;
use crate::objects::{query_matrix, retrieve_options, PyContext, PyMemoryBank};

/// Seconds of each of `repeats` calls of `Context::retrieve(bank, queries,
/// opts)` with the arguments of `Context.retrieve`. The queries are
/// converted once, before the timing; each timed call runs the library
/// alone (GIL released, no conversion, no NumPy result arrays).
#[pyfunction]
#[pyo3(signature = (ctx, bank, queries, beta, repeats, method="dense", steps=1, eps=1e-5, energy=false, support=false, **params))]
#[expect(clippy::too_many_arguments, reason = "the Python signature of Context.retrieve, plus repeats")]
pub fn _time_retrieve(
    py: Python<'_>,
    ctx: &Bound<'_, PyContext>,
    bank: &Bound<'_, PyMemoryBank>,
    queries: &Bound<'_, PyAny>,
    beta: f64,
    repeats: usize,
    method: &str,
    steps: i64,
    eps: f64,
    energy: bool,
    support: bool,
    params: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<f64>> {
    if repeats == 0 {
        return Err(PyValueError::new_err("invalid repeats = 0: at least one call is timed"));
    }
    let (ctx, bank) = (ctx.get(), bank.get());
    bank.check_context(&ctx.ctx)?;
    let opts = retrieve_options(beta, method, steps, eps, energy, support, params)?;
    let q = query_matrix(queries, bank.bank.dim())?;
    let (c, b) = (ctx.ctx.clone(), bank.bank.clone());
    detached(py, || {
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            let t = Instant::now();
            let r = c.retrieve(&b, &q.data, &opts)?;
            times.push(t.elapsed().as_secs_f64());
            drop(r);
        }
        Ok(times)
    })
}
