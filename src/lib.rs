//! hopfield-gpu: modern Hopfield retrieval, `Z = softmax(beta X Xi^T) Xi`, and
//! its sparse and kernelized relatives, as WGSL compute kernels on wgpu, each
//! checked against an f64 CPU reference ([`cpu`]).
//!
//! Start at [`Context`] (the device and its caches), upload memories once into
//! a [`MemoryBank`], then call [`Context::retrieve`] for each batch of queries,
//! or [`Context::encode_retrieve`] to record a retrieval on your own buffers
//! into your own command encoder.
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
//!
//! Modules, in the order they depend on each other (ARCHITECTURE.md): the
//! error type; what a [`Method`] is; the device-free math (feature maps,
//! [`plan`]ner, the [`cpu`] reference); the [`Context`] and the shaders; the
//! [`MemoryBank`]; the kernels; retrieval, and on top of it the shards of a
//! memory set ([`Context::retrieve_partial`], [`Partial::merge`],
//! [`ShardedBank`]). Only the types below, [`cpu`],
//! [`npy`] and [`tolerance`] are public.

mod bank;
pub mod config;
mod context;
pub mod cpu;
mod error;
pub mod experiment;
mod feature;
mod host;
mod kernels;
pub mod layer;
pub mod linalg;
mod method;
pub mod npy;
mod partial;
mod planner;
mod retrieve;
mod shaders;
mod sharded;
mod stats;
pub mod theory;
pub mod tolerance;
mod tune;

pub use bank::{BankStats, MemoryBank, Storage};
pub use context::{list_adapters, Context, ContextOptions, DeviceReport};
pub use error::{Error, ErrorKind, GpuErrorKind, Resource, Result};
pub use feature::plan::Efficiency;
pub use host::{available_memory, check_allocation as check_host_memory};
pub use method::{default_feature_count, default_window, random_rank_key, window_range, Method, MAX_DEGREE};
pub use partial::{Partial, PartialData};
pub use planner::{f32_rounding_bound, plan, poly_choice, Candidate, Plan, PolyReport};
pub use retrieve::encode::MAX_ENCODED_STEPS;
pub use retrieve::{
    Batch, BatchGroup, BatchMemories, BatchOptions, BatchProblem, BatchRetrieval, BatchSpace, BatchStop, GroupResult,
    ProblemResult, Progress, Retrieval, RetrieveBuffers, RetrieveOptions, SupportSets, Sweep, MAX_STEPS,
};
pub use sharded::ShardedBank;
pub use stats::{Magnitudes, ProblemStats};
pub use tune::{Trial, TuneOptions, TuneReport, TuneShapes, Verdict};
