//! hopfield-gpu: modern Hopfield retrieval, `Z = softmax(beta X Xi^T) Xi`, and
//! its sparse and kernelized relatives, as WGSL compute kernels on wgpu, each
//! checked against an f64 CPU reference ([`cpu`]).
//!
//! Start at [`Context`] (the device and its caches), upload memories once into
//! a [`MemoryBank`], then call [`Context::retrieve`] for each batch of queries.

pub mod cpu;
pub mod error;
pub mod npy;
pub mod tolerance;

pub use error::{Error, Result};
