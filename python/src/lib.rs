//! `hopfield_gpu._native`: the Python extension module over the
//! `hopfield-gpu` crate's public API (PyO3 + rust-numpy, built by maturin).
//! The package `hopfield_gpu` (python/hopfield_gpu/) re-exports it and adds
//! the pure-Python parts (the one-shot `retrieve`, the default context).
//!
//! Rules kept here: no library call runs with the GIL held (each goes
//! through `errors::detached`), no panic crosses into Python, and every
//! library error becomes the exception its [`hopfield_gpu::ErrorKind`] says.

mod arrays;
mod bench;
mod errors;
mod layer;
mod objects;
mod options;
mod partial;

use pyo3::prelude::*;
use pyo3::types::PyList;

/// Every adapter the instance can see (honours WGPU_BACKEND), as dicts with
/// name, backend, device_type and driver.
#[pyfunction]
fn adapters(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let infos = errors::detached(py, || hopfield_gpu::list_adapters(None))?;
    let list = PyList::empty(py);
    for info in &infos {
        list.append(objects::adapter_dict(py, info)?)?;
    }
    Ok(list)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(adapters, m)?)?;
    m.add_class::<objects::PyContext>()?;
    m.add_class::<objects::PyMemoryBank>()?;
    m.add_class::<objects::PyRetrieval>()?;
    m.add_class::<partial::PyShardedBank>()?;
    m.add_class::<layer::PyLayer>()?;
    m.add_function(wrap_pyfunction!(partial::_merge, m)?)?;
    m.add_function(wrap_pyfunction!(bench::_time_retrieve, m)?)?;
    m.add("METHODS", options::METHODS.to_vec())?;
    m.add("METHOD_PARAMS", options::PARAMS.to_vec())?;
    Ok(())
}
