//! Host side of the WGSL kernels: one module per kernel family, each with the
//! uniform structs that mirror its shader and `encode_*` functions that record
//! dispatches into a compute pass the caller owns.

pub(crate) mod dense;
