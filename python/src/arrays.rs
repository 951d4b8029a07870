//! NumPy arrays in and out. Inputs are any array-like that `numpy.asarray`
//! accepts (NumPy arrays, PyTorch CPU tensors through `__array__`, nested
//! lists) in float32, float64 or uint8; each is copied once, with the GIL held,
//! into the f32 row-major buffer the kernels read (contiguous or not: a
//! strided view is gathered in that one copy). Holding our own copy is what
//! lets the GPU work run with the GIL released while other Python threads
//! may write to the caller's array.

use numpy::{dtype, PyArray1, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// Row-major f32 data with its shape.
#[derive(Debug)]
pub struct Matrix {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    /// The input was 1-D (one query): results drop the query axis.
    pub one_d: bool,
}

/// Which ranks an input may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rank {
    /// `[rows, cols]` only (memories, values).
    Two,
    /// `[cols]` (one row) or `[rows, cols]` (queries).
    OneOrTwo,
}

fn numpy_fn<'py>(py: Python<'py>, cell: &'static PyOnceLock<Py<PyAny>>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let f = cell.get_or_try_init(py, || -> PyResult<_> { Ok(py.import("numpy")?.getattr(name)?.unbind()) })?;
    Ok(f.bind(py).clone())
}

fn asarray<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyUntypedArray>> {
    static ASARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static REQUIRE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = obj.py();
    let a = match obj.cast::<PyUntypedArray>() {
        Ok(a) => a.clone(),
        Err(_) => numpy_fn(py, &ASARRAY, "asarray")?.call1((obj,))?.cast_into::<PyUntypedArray>()?,
    };
    let aligned: bool = a.getattr(intern!(py, "flags"))?.getattr(intern!(py, "aligned"))?.extract()?;
    if aligned {
        return Ok(a);
    }
    // Unaligned data (an array unpickled from a byte buffer, as Dask sends
    // them) cannot be viewed from Rust: NumPy makes an aligned copy first.
    Ok(numpy_fn(py, &REQUIRE, "require")?.call1((a, py.None(), "A"))?.cast_into::<PyUntypedArray>()?)
}

fn gather<T: numpy::Element + Copy>(a: &Bound<'_, PyUntypedArray>, f: impl Fn(T) -> f32) -> PyResult<Vec<f32>> {
    let typed = a.cast::<PyArrayDyn<T>>()?;
    let view = typed.try_readonly().map_err(|e| PyValueError::new_err(e.to_string()))?;
    // `as_slice` also accepts Fortran order (memory in column-major order),
    // so C order is checked first; anything else is gathered by ndarray,
    // which iterates in logical (row-major) order.
    Ok(match view.as_slice() {
        Ok(s) if a.is_c_contiguous() => s.iter().map(|&v| f(v)).collect(),
        _ => view.as_array().iter().map(|&v| f(v)).collect(),
    })
}

/// Convert `obj` (named `what` in errors) to f32 row-major data. A panic in
/// the conversion (a NumPy layout the code did not foresee) becomes
/// `RuntimeError`, never an unwind into Python.
pub fn matrix(obj: &Bound<'_, PyAny>, what: &str, rank: Rank) -> PyResult<Matrix> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| convert(obj, what, rank)))
        .map_err(crate::errors::panic_to_py)?
}

fn convert(obj: &Bound<'_, PyAny>, what: &str, rank: Rank) -> PyResult<Matrix> {
    let a = asarray(obj)?;
    let shape = a.shape().to_vec();
    let (rows, cols, one_d) = match (shape.as_slice(), rank) {
        (&[r, c], _) => (r, c, false),
        (&[c], Rank::OneOrTwo) => (1, c, true),
        (_, Rank::Two) => {
            return Err(PyValueError::new_err(format!("{what} must be a 2-D array [rows, dim], got shape {shape:?}")))
        }
        (_, Rank::OneOrTwo) => {
            return Err(PyValueError::new_err(format!(
                "{what} must be a 1-D array [dim] (one query) or 2-D [rows, dim], got shape {shape:?}"
            )))
        }
    };
    let data = f32_data(&a, what, false)?;
    Ok(Matrix { data, rows, cols, one_d })
}

/// `a`'s values as f32, in logical (row-major) order; bool arrays (True =
/// 1) only where `bools` (masks), so that patterns keep their three dtypes.
fn f32_data(a: &Bound<'_, PyUntypedArray>, what: &str, bools: bool) -> PyResult<Vec<f32>> {
    let py = a.py();
    let dt = a.dtype();
    if dt.is_equiv_to(&dtype::<f32>(py)) {
        gather::<f32>(a, |v| v)
    } else if dt.is_equiv_to(&dtype::<f64>(py)) {
        // Out-of-range f64 becomes +-inf here and is refused by the library
        // as a non-finite value, naming its row and column.
        gather::<f64>(a, |v| v as f32)
    } else if dt.is_equiv_to(&dtype::<u8>(py)) {
        gather::<u8>(a, f32::from)
    } else if bools && dt.is_equiv_to(&dtype::<bool>(py)) {
        gather::<bool>(a, |v| if v { 1.0 } else { 0.0 })
    } else {
        Err(PyTypeError::new_err(format!(
            "{what} has dtype {dt}; hopfield_gpu takes float32, float64 or uint8 (convert with .astype(numpy.float32))"
        )))
    }
}

/// Convert `obj` (named `what` in errors) of a rank in `ranks` to its shape
/// and f32 row-major data (the layers' 2-D and 3-D inputs, their masks;
/// `bools`: bool arrays are taken too, as for a mask).
/// Panics in the conversion become `RuntimeError`, as in [`matrix`].
pub fn array(
    obj: &Bound<'_, PyAny>,
    what: &str,
    ranks: std::ops::RangeInclusive<usize>,
    bools: bool,
) -> PyResult<(Vec<usize>, Vec<f32>)> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let a = asarray(obj)?;
        let shape = a.shape().to_vec();
        if !ranks.contains(&shape.len()) {
            return Err(PyValueError::new_err(format!(
                "{what} must be a {}-D to {}-D array, got shape {shape:?}",
                ranks.start(),
                ranks.end()
            )));
        }
        Ok((shape, f32_data(&a, what, bools)?))
    }))
    .map_err(crate::errors::panic_to_py)?
}

/// A 1-D array, a 2-D `[rows, cols]` one, or a 3-D `[n, rows, cols]` one.
pub fn output<'py, T: numpy::Element>(py: Python<'py>, data: Vec<T>, shape: &[usize]) -> PyResult<Bound<'py, PyAny>> {
    let flat = PyArray1::from_vec(py, data);
    match *shape {
        [_] => Ok(flat.into_any()),
        [r, c] => Ok(flat.reshape([r, c])?.into_any()),
        [n, r, c] => Ok(flat.reshape([n, r, c])?.into_any()),
        [] => Ok(flat.reshape(())?.into_any()),
        _ => Err(PyValueError::new_err(format!("internal: unsupported output rank {}", shape.len()))),
    }
}
