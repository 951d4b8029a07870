//! hopfield-gpu: modern Hopfield retrieval, `Z = softmax(beta X Xi^T) Xi`, and
//! its sparse and kernelized relatives, as WGSL compute kernels on wgpu, each
//! checked against an f64 CPU reference ([`cpu`]).
//!
//! Start at [`Context`] (the device and its caches), upload memories once into
//! a [`MemoryBank`], then call [`Context::retrieve`] for each batch of queries.
//!
//! ```no_run
//! use hopfield_gpu::{Context, ContextOptions, MemoryBank, RetrieveOptions};
//! # fn main() -> hopfield_gpu::Result<()> {
//! let ctx = Context::new(&ContextOptions::default())?;
//! let memories = vec![1.0f32, 0.0, 0.0, 1.0]; // two patterns, d = 2
//! let bank = MemoryBank::new(&ctx, &memories, 2, 2)?;
//! let out = ctx.retrieve(&bank, &[0.9, 0.2], &RetrieveOptions::dense(8.0).steps(10, 1e-6))?;
//! println!("z = {:?}, energy = {:?}", out.z, out.energy);
//! # Ok(()) }
//! ```

pub mod bank;
pub mod context;
pub mod cpu;
pub mod error;
pub mod feature;
mod kernels;
pub mod npy;
pub mod planner;
pub mod retrieve;
pub mod shaders;
pub mod tolerance;

pub use bank::{BankStats, MemoryBank};
pub use context::{Context, ContextOptions, DeviceReport};
pub use error::{Error, Result};
pub use planner::{plan, Plan, ProblemStats};
pub use retrieve::{Method, Retrieval, RetrieveOptions};
