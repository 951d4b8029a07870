//! Rust errors and panics as Python exceptions. The library's [`ErrorKind`]
//! decides the exception type; its message is the library's own. A panic
//! inside the library is caught here and raised as `RuntimeError`, so that no
//! unwinding ever crosses the FFI boundary and the interpreter never aborts.

use std::panic::{catch_unwind, AssertUnwindSafe};

use hopfield_gpu::{Error, ErrorKind};
use pyo3::exceptions::{PyMemoryError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// The Python exception for a library error. The match is exhaustive over
/// [`ErrorKind`] (which is exhaustive over [`Error`]'s variants inside the
/// library), so a new kind of failure cannot reach Python unmapped.
pub fn to_py(err: Error) -> PyErr {
    let msg = err.to_string();
    match err.kind() {
        // Bad shapes, NaN, beta <= 0, K = 0, a method that cannot do what
        // was asked, a problem beyond this device's limits, an energy beyond
        // f32 (beta or the data out of range): the caller can fix each of
        // these by changing the call.
        ErrorKind::InvalidInput | ErrorKind::Unsupported | ErrorKind::OutOfRange => PyValueError::new_err(msg),
        ErrorKind::HostMemory => PyMemoryError::new_err(msg),
        // The device failed; a bug in the library; a cancellation (Python
        // has no progress observer, so none reaches it today).
        ErrorKind::Device | ErrorKind::Internal | ErrorKind::Cancelled => PyRuntimeError::new_err(msg),
        ErrorKind::Io => PyOSError::new_err(msg),
    }
}

/// Run `f` without the GIL (other Python threads run meanwhile), turning a
/// library error into its exception and a panic into `RuntimeError`.
pub fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> hopfield_gpu::Result<T> + Send) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f))).map_err(panic_to_py)?.map_err(to_py)
}

/// A caught panic as `RuntimeError`, with the panic's message where it has one.
pub fn panic_to_py(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    PyRuntimeError::new_err(format!(
        "internal error in hopfield_gpu (a Rust panic, caught): {what}; this is a bug, please report it"
    ))
}
