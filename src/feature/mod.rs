//! Host-side math for kernel (feature-map) retrieval, SEMANTICS.md "Kernel
//! (feature-map) retrieval": everything the GPU needs to be told before it can
//! run `z_l = S^T phi_q(x_l) / <n, phi_q(x_l)>` with
//! `S = sum_mu phi_k(xi_mu) v_mu^T` and `n = sum_mu phi_k(xi_mu)`.
//!
//! - [`poly`]: the polynomial low-rank path of the fine-grained complexity
//!   paper (Section 3, Lemma 3.1, Lemma 3.2, Algorithm 1): data bounds, the
//!   choice of a polynomial `P ~ exp` with a *verified* relative error, and
//!   the monomial table and coefficients that define its feature maps.
//! - [`prf`]: Performer's positive random features (FAVOR+) and the linear
//!   `elu(x) + 1` map.
//! - [`plan`]: the efficiency criterion (`B` against `sqrt(ln tau)`) and flop
//!   estimates a planner compares.
//!
//! One note applies to every method here. The paper's Algorithm 1 normalises
//! with `diag(U1 (U2^T 1))`; that is a typo. Each query is normalised by its
//! own sum over memories, `<n, phi_q(x_l)>`, which is what the formula above
//! (and [`crate::cpu::feature`]) computes.
//!
//! Nothing here touches the GPU: the WGSL kernels consume these tables.

pub mod plan;
pub mod poly;
pub mod prf;

/// Memories one thread of `shaders/feature_reduce.wgsl` sums (a part).
/// Fixed, so the summation order, and with it every bit of S and n, depends
/// only on M; the f32 rounding bound of the planner counts these chains.
pub const PART_ROWS: usize = 1024;
