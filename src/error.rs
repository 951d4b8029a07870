//! The crate's one error type. Every way a caller's input can be wrong gets its
//! own variant with structured fields, so that library users can match on it
//! and the CLI can print a message that names the offending flag or file.
//! Library errors name library fields (`beta`, `max_steps`, `delta`, ...);
//! the command line maps them to its flags (`--beta`, `--steps`, ...).

use std::fmt;
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

    /// wgpu reported an error for this call's work (each call captures its
    /// own errors, so one thread never sees another's), or the device was lost.
    #[error("GPU error ({kind}): {message}")]
    Gpu {
        /// What kind of failure.
        kind: GpuErrorKind,
        /// wgpu's message, on one line.
        message: String,
    },

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

    /// A numeric parameter is outside its domain (beta <= 0, eps < 0, k = 0, ...).
    #[error("invalid {name} = {value}: {why}")]
    InvalidParameter {
        /// The library field or parameter (`beta`, `eps`, `max_steps`, `k`,
        /// `width`, `delta`, `degree`, `features`, `tolerance`, ...), or the
        /// environment variable (`WGPU_BACKEND`).
        name: &'static str,
        /// The value given, as text.
        value: String,
        /// The rule it broke.
        why: String,
    },

    /// The problem does not fit the device and cannot be split further.
    #[error("does not fit the device: {what}: needs {} {resource}, the limit is {limit}", need.map_or("more than 2^64".to_string(), |n| n.to_string()))]
    DeviceLimit {
        /// What was being sized ("top-K selection over 20000 memories", ...).
        what: String,
        /// Which limit it hit.
        resource: Resource,
        /// How much it needs (`None`: more than `u64` can count).
        need: Option<u64>,
        /// The most the device (or the engine on it) allows.
        limit: u64,
    },

    /// A requested option or combination is not implemented.
    #[error("unsupported: {option}{}: {reason}", method.map(|m| format!(" with method {m}")).unwrap_or_default())]
    Unsupported {
        /// The library field or feature asked for (`support`, `max_steps`,
        /// `keys`, `degree`, `queries`, ...).
        option: &'static str,
        /// The method it was asked of, if the refusal is specific to one.
        method: Option<&'static str>,
        /// Why not, and what to do instead.
        reason: String,
    },

    /// The device lacks a feature the request needs (f16 storage without
    /// `Features::SHADER_F16`, a configuration that asks for subgroups on a
    /// device without them).
    #[error("the device lacks {feature}, which {needed_for} needs")]
    MissingFeature {
        /// The wgpu feature, e.g. "Features::SHADER_F16".
        feature: &'static str,
        /// What asked for it.
        needed_for: String,
    },

    /// A progress observer asked the retrieval to stop
    /// ([`crate::Context::retrieve_observed`]).
    #[error("cancelled after {steps_done} steps")]
    Cancelled {
        /// Steps of the batch that was running when the observer stopped it.
        steps_done: u32,
    },

    /// An internal invariant failed: a bug in hopfield-gpu, not in the input.
    #[error("internal error (a bug in hopfield-gpu, please report it): {0}")]
    Internal(String),

    /// A size taken from a file or a flag needs more host memory than is
    /// available ([`crate::available_memory`]), or more than u64 can count.
    #[error(
        "{what} needs {}, more than the {} of memory available",
        needed.map_or("more than 2^64 bytes".to_string(), show_bytes),
        available.map_or("unknown amount".to_string(), show_bytes)
    )]
    HostMemory {
        /// What would have been allocated.
        what: String,
        /// Bytes it needs; `None` when that overflows u64.
        needed: Option<u64>,
        /// Bytes available when it was checked, where the system says.
        available: Option<u64>,
    },

    /// A result is finite in f64 but does not fit the f32 it is returned
    /// in (an energy beyond +-3.4e38), or is not finite at all. Never
    /// returned as +-inf instead.
    #[error("{what} is {value:e}, outside the range of f32 (+-3.4e38)")]
    OutOfRange {
        /// Which quantity, and what it was computed from.
        what: String,
        /// Its value in f64.
        value: f64,
    },

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

    /// A layer configuration cannot be run as it is: an unknown class or
    /// argument, a value of the wrong type, a combination hopfield-layers
    /// itself refuses, or a value hopfield-gpu does not support. Never
    /// ignored silently.
    #[error("layer config: {arg}: {why}")]
    LayerConfig {
        /// The argument (or `class`), by its hopfield-layers name.
        arg: String,
        /// What is wrong with it.
        why: String,
    },

    /// A network model file cannot be run as it is: an unknown block type or
    /// field, a missing field, or a size that does not follow from the
    /// block before.
    #[error("network model: {at}: {why}")]
    Model {
        /// Where, as a JSON path (`blocks[2].hidden`).
        at: String,
        /// What is wrong with it.
        why: String,
    },

    /// A weights file disagrees with its layer configuration: a tensor is
    /// missing, unexpected, of the wrong shape or dtype, or not finite.
    #[error("layer weights: tensor {key:?}: {why}")]
    LayerWeights {
        /// The state-dict key, as hopfield-layers writes it.
        key: String,
        /// What is wrong with it.
        why: String,
    },
}

/// The kinds of GPU failure [`Error::Gpu`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GpuErrorKind {
    /// wgpu validation failed (a destroyed or too small buffer, a bad binding).
    Validation,
    /// The device ran out of memory.
    OutOfMemory,
    /// wgpu or the driver failed internally (e.g. a pipeline did not compile).
    Internal,
    /// The device was lost.
    DeviceLost,
    /// Waiting for the GPU or mapping a readback buffer failed.
    Readback,
}

impl fmt::Display for GpuErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GpuErrorKind::Validation => "validation",
            GpuErrorKind::OutOfMemory => "out of memory",
            GpuErrorKind::Internal => "internal",
            GpuErrorKind::DeviceLost => "device lost",
            GpuErrorKind::Readback => "readback",
        })
    }
}

/// The device limits [`Error::DeviceLimit`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resource {
    /// Bytes in one storage binding (`max_storage_buffer_binding_size`, or
    /// `ContextOptions::max_binding_bytes`).
    BindingBytes,
    /// Bytes in one buffer (`max_buffer_size`).
    BufferBytes,
    /// Bytes of workgroup memory (`max_compute_workgroup_storage_size`).
    WorkgroupBytes,
    /// Loop iterations one shader invocation may run (llvmpipe's limiter,
    /// see `Context::loop_budget`).
    LoopIterations,
    /// Splits of the memories one selection pass can merge.
    Splits,
    /// Indices a kernel addresses with u32.
    Indices,
    /// Bytes the host can address (`usize`).
    HostBytes,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::BindingBytes => "bytes in one storage binding",
            Resource::BufferBytes => "bytes in one buffer",
            Resource::WorkgroupBytes => "bytes of workgroup memory",
            Resource::LoopIterations => "loop iterations per shader invocation",
            Resource::Splits => "splits",
            Resource::Indices => "u32 indices",
            Resource::HostBytes => "bytes of host memory",
        })
    }
}

/// `n` bytes in the largest binary unit that keeps it >= 1, for messages.
pub(crate) fn show_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The broad class of an [`Error`], for callers that translate errors into
/// another vocabulary (the Python bindings' exception types, exit codes).
/// [`Error`] is `#[non_exhaustive]`, so code outside this crate cannot match
/// it exhaustively; this enum deliberately is not, so that a binding which
/// matches on it learns about a new class at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller's input or options are wrong: shapes, empty sets,
    /// non-finite values, parameters out of their domain, files that are not
    /// what they claim to be, layer configurations, models and weights
    /// files that disagree with each other.
    InvalidInput,
    /// The request is well formed but cannot be done here: an option the
    /// method lacks, or a problem beyond this device's limits.
    Unsupported,
    /// A result does not fit the f32 it is returned in (an energy beyond
    /// +-3.4e38): the data or beta are outside the range f32 can report.
    OutOfRange,
    /// The host has not enough memory for a size taken from a file or a flag.
    HostMemory,
    /// The device failed or is missing: no adapter, no device, a GPU error.
    Device,
    /// A progress observer stopped the retrieval.
    Cancelled,
    /// A bug in hopfield-gpu (an internal invariant failed).
    Internal,
    /// A file could not be read or written (the operating system's error).
    Io,
}

impl Error {
    /// Which [`ErrorKind`] this error belongs to. The match lists every
    /// variant (no wildcard), so a new variant cannot be added unclassified.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ShapeMismatch { .. }
            | Error::Empty { .. }
            | Error::NonFinite { .. }
            | Error::InvalidParameter { .. }
            | Error::BadFile { .. }
            | Error::LayerConfig { .. }
            | Error::Model { .. }
            | Error::LayerWeights { .. } => ErrorKind::InvalidInput,
            Error::DeviceLimit { .. } | Error::Unsupported { .. } | Error::MissingFeature { .. } => {
                ErrorKind::Unsupported
            }
            Error::OutOfRange { .. } => ErrorKind::OutOfRange,
            Error::HostMemory { .. } => ErrorKind::HostMemory,
            Error::NoAdapter { .. } | Error::DeviceRequest { .. } | Error::Gpu { .. } => ErrorKind::Device,
            Error::Cancelled { .. } => ErrorKind::Cancelled,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Io { .. } => ErrorKind::Io,
        }
    }

    pub(crate) fn invalid(name: &'static str, value: impl ToString, why: impl Into<String>) -> Self {
        Error::InvalidParameter { name, value: compact_number(value.to_string()), why: why.into() }
    }

    pub(crate) fn limit(what: impl Into<String>, resource: Resource, need: impl TryInto<u64>, limit: u64) -> Self {
        Error::DeviceLimit { what: what.into(), resource, need: need.try_into().ok(), limit }
    }

    pub(crate) fn unsupported(option: &'static str, method: Option<&'static str>, reason: impl Into<String>) -> Self {
        Error::Unsupported { option, method, reason: reason.into() }
    }

    pub(crate) fn internal(what: impl Into<String>) -> Self {
        Error::Internal(what.into())
    }

    /// A GPU error with wgpu's (often multi-line) message folded onto one line.
    pub(crate) fn gpu(kind: GpuErrorKind, message: impl fmt::Display) -> Self {
        Error::Gpu { kind, message: one_line(&message.to_string()) }
    }
}

/// A number as a message shows it: Rust's `Display` writes floats in full
/// decimal (1e300 as 301 digits), so a long one is rewritten in exponent
/// form. The text round-trips, so parsing it back gives the same value and
/// `{:e}` its shortest exponent form. Integers of up to 20 digits (every
/// u64) and other text are left as they are.
pub(crate) fn compact_number(text: String) -> String {
    let long = if text.contains('.') { text.len() > 16 } else { text.len() > 20 };
    match text.parse::<f64>() {
        Ok(v) if long && v.is_finite() => format!("{v:e}"),
        _ => text,
    }
}

/// `text` with its lines joined by "; " and runs of blanks collapsed.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_numbers_are_shown_in_exponent_form() {
        let e = Error::invalid("delta", 1e300f64, "must lie in (0, 1)");
        assert_eq!(e.to_string(), "invalid delta = 1e300: must lie in (0, 1)");
        assert_eq!(compact_number(1e-300f64.to_string()), "1e-300");
        assert_eq!(compact_number(1e30f32.to_string()), "1e30");
        assert_eq!(compact_number((-1.25e-20f64).to_string()), "-1.25e-20");
        // Short numbers and other text stay as written.
        for s in ["0.5", "-3", "1000000", "0.00000000015", "NaN", "inf", "[]", "18446744073709551615"] {
            assert_eq!(compact_number(s.to_string()), s);
        }
    }

    #[test]
    fn sizes_read_as_units() {
        assert_eq!(show_bytes(512), "512 bytes");
        assert_eq!(show_bytes(4 << 40), "4.0 TiB");
        assert_eq!(show_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn gpu_messages_are_one_line() {
        let e = Error::gpu(
            GpuErrorKind::Validation,
            "Validation Error\n\nCaused by:\n    In a set_bind_group\n      buffer   destroyed\n",
        );
        let text = e.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(text, "GPU error (validation): Validation Error; Caused by:; In a set_bind_group; buffer destroyed");
    }

    #[test]
    fn device_limits_say_what_and_how_much() {
        let e = Error::limit("S and n of rank 70", Resource::BindingBytes, 1400u64, 1000);
        assert_eq!(
            e.to_string(),
            "does not fit the device: S and n of rank 70: needs 1400 bytes in one storage binding, the limit is 1000"
        );
        let e = Error::limit("m * d * 4", Resource::HostBytes, u128::MAX, u64::MAX);
        assert!(e.to_string().contains("needs more than 2^64"), "{e}");
    }
}
