//! The crate's one error type. Every way a caller's input can be wrong gets its
//! own variant, so that library users can match on it and the CLI can print a
//! message that names the offending flag or file.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in hopfield-gpu.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter matched the request (backend, name filter), or none exists.
    #[error("no GPU adapter found{}: {reason}", filter.as_ref().map(|f| format!(" matching {f:?}")).unwrap_or_default())]
    NoAdapter {
        /// The adapter-name filter that was asked for, if any.
        filter: Option<String>,
        /// What the driver said, or which adapters were seen.
        reason: String,
    },

    /// The adapter refused to create a device.
    #[error("could not create a device on adapter {adapter:?}: {reason}")]
    DeviceRequest {
        /// Adapter name.
        adapter: String,
        /// Driver's message.
        reason: String,
    },

    /// wgpu reported a validation or out-of-memory error, or the device was lost.
    #[error("GPU error: {0}")]
    Gpu(String),

    /// Two inputs disagree on a dimension (`d` of memories vs queries, rows of
    /// memories vs values, buffer sizes vs declared shapes).
    #[error("shape mismatch: {what} (expected {expected}, got {got})")]
    ShapeMismatch {
        /// Which two things disagree.
        what: String,
        /// The size one of them implies.
        expected: usize,
        /// The size the other one has.
        got: usize,
    },

    /// An input set has no rows or no columns.
    #[error("{what} is empty: retrieval needs at least one row and one column")]
    Empty {
        /// Which input ("memories", "queries", "values").
        what: &'static str,
    },

    /// An input holds NaN or +-Inf.
    #[error("{what} contains a non-finite value ({value}) at row {row}, column {col}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Row of the first offending value.
        row: usize,
        /// Column of the first offending value.
        col: usize,
        /// The value itself.
        value: f32,
    },

    /// A numeric parameter is outside its domain (beta <= 0, eps < 0, K = 0, ...).
    #[error("invalid {name} = {value}: {why}")]
    InvalidParameter {
        /// Flag or field name, as the user spells it (`--beta`, `eps`, ...).
        name: &'static str,
        /// The value given, as text.
        value: String,
        /// The rule it broke.
        why: String,
    },

    /// The problem does not fit the device and cannot be split further.
    #[error("does not fit the device: {0}")]
    DeviceLimit(String),

    /// A requested feature or combination is not supported.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A file exists but is not what it claims to be (not `.npy`, wrong rank,
    /// unsupported dtype, truncated data, Fortran order).
    #[error("{}: {why}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl Error {
    pub(crate) fn invalid(name: &'static str, value: impl ToString, why: impl Into<String>) -> Self {
        Error::InvalidParameter { name, value: value.to_string(), why: why.into() }
    }
}
