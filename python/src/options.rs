//! `method="..."` and its keyword parameters, turned into a
//! [`hopfield_gpu::Method`]. Each method names the parameters it takes; an
//! unknown keyword, or one that the chosen method does not take, is a
//! `ValueError` naming it (never silently ignored). The values' own domains
//! (K >= 1, delta in (0, 1), ...) are checked by the library.

use hopfield_gpu::Method;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Every keyword parameter any method takes.
pub const PARAMS: [&str; 8] = ["k", "seed", "window", "delta", "degree", "features", "tolerance", "orthogonal"];

/// Every method name, as on the command line.
pub const METHODS: [&str; 11] =
    ["dense", "dense-naive", "topk", "random", "window", "sparsemax", "entmax15", "poly", "linear", "prf", "auto"];

/// The parameters as given (None where absent).
#[derive(Debug, Default)]
struct Given {
    k: Option<usize>,
    seed: Option<u64>,
    window: Option<usize>,
    delta: Option<f64>,
    degree: Option<usize>,
    features: Option<usize>,
    tolerance: Option<f64>,
    orthogonal: Option<bool>,
    names: Vec<String>,
}

fn count(name: &str, v: &Bound<'_, PyAny>) -> PyResult<usize> {
    let n: i64 = v.extract().map_err(|_| PyValueError::new_err(format!("{name} must be an integer, got {v}")))?;
    usize::try_from(n).map_err(|_| PyValueError::new_err(format!("invalid {name} = {n}: must be >= 0")))
}

fn real(name: &str, v: &Bound<'_, PyAny>) -> PyResult<f64> {
    v.extract().map_err(|_| PyValueError::new_err(format!("{name} must be a number, got {v}")))
}

fn parse(params: Option<&Bound<'_, PyDict>>) -> PyResult<Given> {
    let mut g = Given::default();
    let Some(params) = params else { return Ok(g) };
    let mut unknown = Vec::new();
    for (key, v) in params.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "k" => g.k = Some(count("k", &v)?),
            "seed" => g.seed = Some(count("seed", &v)? as u64),
            "window" => g.window = Some(count("window", &v)?),
            "delta" => g.delta = Some(real("delta", &v)?),
            "degree" => g.degree = Some(count("degree", &v)?),
            "features" => g.features = Some(count("features", &v)?),
            "tolerance" => g.tolerance = Some(real("tolerance", &v)?),
            "orthogonal" => {
                g.orthogonal = Some(v.extract().map_err(|_| PyValueError::new_err("orthogonal must be a bool"))?)
            }
            _ => unknown.push(key.clone()),
        }
        g.names.push(key);
    }
    if !unknown.is_empty() {
        return Err(PyValueError::new_err(format!(
            "unknown parameter(s) {}; the method parameters are {}",
            unknown.join(", "),
            PARAMS.join(", ")
        )));
    }
    Ok(g)
}

fn required<T>(v: Option<T>, name: &str, method: &str) -> PyResult<T> {
    v.ok_or_else(|| PyValueError::new_err(format!("method {method:?} needs the parameter {name}")))
}

/// The method `name` with the keyword parameters `params`.
pub fn method(name: &str, params: Option<&Bound<'_, PyDict>>) -> PyResult<Method> {
    let g = parse(params)?;
    // Per method: the parameters it takes, and how it is built from them.
    let (takes, method): (&[&str], PyResult<Method>) = match name {
        "dense" => (&[], Ok(Method::Dense)),
        "dense-naive" => (&[], Ok(Method::DenseNaive)),
        "topk" => (&["k"], required(g.k, "k", name).map(|k| Method::TopK { k })),
        "random" => (&["k", "seed"], required(g.k, "k", name).map(|k| Method::Random { k, seed: g.seed.unwrap_or(0) })),
        "window" => (&["window"], Ok(Method::Window { width: g.window })),
        "sparsemax" => (&[], Ok(Method::Sparsemax)),
        "entmax15" => (&[], Ok(Method::Entmax15)),
        "poly" => (
            &["delta", "degree"],
            required(g.delta, "delta", name).map(|delta| Method::Poly { delta, degree: g.degree }),
        ),
        "linear" => (&[], Ok(Method::Linear)),
        "prf" => (
            &["features", "seed", "orthogonal"],
            Ok(Method::Prf {
                features: g.features,
                seed: g.seed.unwrap_or(0),
                orthogonal: g.orthogonal.unwrap_or(false),
            }),
        ),
        "auto" => {
            (&["tolerance"], required(g.tolerance, "tolerance", name).map(|tolerance| Method::Auto { tolerance }))
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown method {other:?}; the methods are {}",
                METHODS.join(", ")
            )))
        }
    };
    let stray: Vec<&str> = g.names.iter().map(String::as_str).filter(|n| !takes.contains(n)).collect();
    if !stray.is_empty() {
        let takes = if takes.is_empty() { "no parameters".to_string() } else { takes.join(", ") };
        return Err(PyValueError::new_err(format!(
            "parameter(s) {} do not apply to method {name:?} (it takes {takes})",
            stray.join(", ")
        )));
    }
    method
}
