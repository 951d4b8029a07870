//! Reference for Hopfield networks (expressive-power paper, Defs 3.3-3.7):
//! the modern Hopfield network `f_m o Hop_m o ... o f_1 o Hop_1 o f_0`
//! (MHN, Defs 3.3-3.4) as a list of [`Block`]s, and the kernelized Hopfield
//! network (KHN, Defs 3.5-3.7, Lemma 5.1) with the linear feature map
//! `Phi(u) = W u`.
//!
//! The blocks reuse [`super::layer`]: a `Hop_i` is a [`Module`] whose
//! stored patterns are either a fixed bank or the current hidden state, and
//! `f_i` is a [`FeedForward`] map `W2 relu(W1 x + b1) + b2`. LayerNorm and
//! residual connections are blocks too.
//!
//! KHN energy. With `K(x, y) = <Phi(x), Phi(y)>` the energy is
//! `E_K(x) = 0.5 K(x, x) - lse(beta, (K(x, xi_mu))_mu)`,
//! `lse(beta, z) = log(sum_mu exp(beta z_mu)) / beta`. The paper prints
//! `+ lse` there; that is a sign typo: with `+` the function is convex,
//! memories are not its minima, and the retrieval
//! `x <- sum_mu softmax(beta K(x, xi))_mu xi_mu` (which moves towards them)
//! increases it. With `-` it is the dense energy of SEMANTICS.md when `Phi` is the identity,
//! and the retrieval is its CCCP step (convex `0.5 |W x|^2`, concave `-lse`
//! of a linear map of x), so it never increases for a full-rank W; the tests
//! check both.

use super::dense::{log_sum_exp, softmax, weighted_sum};
use super::layer::{forward, Module};
use super::linalg::{FeedForward, LayerNorm, Linear};
use super::{dot, Matrix};
use crate::error::Result;
use crate::method::Method;

/// Where a Hopfield block's stored patterns come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Memories {
    /// A fixed bank `[M, d]` (a learned or given memory).
    Bank(Matrix),
    /// The block's own input: self-association over the hidden state.
    Hidden,
}

/// One block of a network, applied to a hidden state `[L, d]`.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// `f_i(x) = W2 relu(W1 x + b1) + b2`.
    FeedForward(FeedForward),
    /// LayerNorm of each row.
    LayerNorm(LayerNorm),
    /// `x + g(x)` with `g` the blocks inside, in order.
    Residual(Vec<Block>),
    /// `Hop_i`: a Hopfield layer whose queries are the hidden state and
    /// whose stored patterns (and pattern projections) are `memories`.
    Hopfield {
        /// The layer (boxed: it is far larger than the other blocks).
        module: Box<Module>,
        /// Its stored patterns.
        memories: Memories,
        /// Its retrieval (softmax for the MHN of the paper).
        association: Method,
    },
}

/// Run `blocks` in order on `x` (`[L, d]`).
pub fn network_forward(blocks: &[Block], x: &Matrix) -> Result<Matrix> {
    let mut h = x.clone();
    for block in blocks {
        h = match block {
            Block::FeedForward(ff) => ff.apply(&h),
            Block::LayerNorm(ln) => ln.apply(&h),
            Block::Residual(inner) => {
                let g = network_forward(inner, &h)?;
                super::linalg::residual_add(&h, &g)
            }
            Block::Hopfield { module, memories, association } => {
                let stored = match memories {
                    Memories::Bank(bank) => bank.clone(),
                    Memories::Hidden => h.clone(),
                };
                let stored = std::slice::from_ref(&stored);
                let f = forward(module, stored, &[h], stored, None, association)?;
                f.out.into_iter().next().expect("one sequence in, one out")
            }
        };
    }
    Ok(h)
}

/// The KHN layer (Def. 3.5, Lemma 5.1): `module` with the linear feature map
/// `phi` applied after the query and key projections, so its scores are
/// `beta <Phi(R W_Q), Phi(Y W_K)>`; the values are unchanged.
pub fn kernelized(module: &Module, phi: &Linear) -> Module {
    let mut m = module.clone();
    m.core.query.linears.push(phi.clone());
    m.core.key.linears.push(phi.clone());
    m
}

/// `K(x, y) = <Phi x, Phi y>` with `Phi u = W u` (`w`: `[r, d]`).
pub fn kernel(w: &Matrix, x: &[f64], y: &[f64]) -> f64 {
    let (px, py) = (feature(w, x), feature(w, y));
    dot(&px, &py)
}

fn feature(w: &Matrix, x: &[f64]) -> Vec<f64> {
    (0..w.rows).map(|i| dot(w.row(i), x)).collect()
}

/// KHN energy `E_K(x) = 0.5 K(x, x) - lse(beta, (K(x, xi_mu))_mu)` (the
/// paper's `+ lse` is a sign typo; see the module doc).
pub fn khn_energy(x: &[f64], memories: &Matrix, w: &Matrix, beta: f64) -> f64 {
    let s: Vec<f64> = (0..memories.rows).map(|mu| beta * kernel(w, x, memories.row(mu))).collect();
    0.5 * kernel(w, x, x) - log_sum_exp(&s) / beta
}

/// KHN retrieval `T_K(x) = sum_mu softmax(beta K(x, xi))_mu xi_mu`.
pub fn khn_update(x: &[f64], memories: &Matrix, w: &Matrix, beta: f64) -> Vec<f64> {
    let s: Vec<f64> = (0..memories.rows).map(|mu| beta * kernel(w, x, memories.row(mu))).collect();
    weighted_sum(&softmax(&s), memories)
}

#[cfg(test)]
mod tests {
    use super::super::dense::{dense, energy, update};
    use super::*;

    fn rand_matrix(seed: u64, rows: usize, cols: usize) -> Matrix {
        // A small LCG: these tests need spread-out values, not a quality stream.
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let data = (0..rows * cols)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect();
        Matrix { rows, cols, data }
    }

    fn max_diff(a: &Matrix, b: &Matrix) -> f64 {
        a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn a_bank_block_is_dense_retrieval_and_a_hidden_block_self_association() {
        let x = rand_matrix(1, 3, 4);
        let bank = rand_matrix(2, 6, 4);
        let a = Method::Dense;
        let out = network_forward(
            &[Block::Hopfield {
                module: Box::new(Module::plain(1.7)),
                memories: Memories::Bank(bank.clone()),
                association: a,
            }],
            &x,
        )
        .unwrap();
        assert!(max_diff(&out, &dense(&x, &bank, &bank, 1.7).z) < 1e-14);
        let out = network_forward(
            &[Block::Hopfield { module: Box::new(Module::plain(0.9)), memories: Memories::Hidden, association: a }],
            &x,
        )
        .unwrap();
        assert!(max_diff(&out, &dense(&x, &x, &x, 0.9).z) < 1e-14);
    }

    #[test]
    fn blocks_compose_in_order_with_residuals() {
        let x = rand_matrix(3, 2, 3);
        let ff = FeedForward {
            first: Linear { weight: rand_matrix(4, 5, 3), bias: Some(vec![0.1; 5]) },
            second: Linear { weight: rand_matrix(5, 3, 5), bias: None },
        };
        let ln = LayerNorm { eps: 1e-5, affine: None };
        let out =
            network_forward(&[Block::Residual(vec![Block::FeedForward(ff.clone())]), Block::LayerNorm(ln.clone())], &x)
                .unwrap();
        let want = ln.apply(&super::super::linalg::residual_add(&x, &ff.apply(&x)));
        assert!(max_diff(&out, &want) < 1e-15);
    }

    #[test]
    fn khn_with_the_identity_map_is_the_dense_model() {
        let xi = rand_matrix(6, 5, 3);
        let eye = Matrix { rows: 3, cols: 3, data: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0] };
        let x = [0.3, -0.7, 0.2];
        assert!((khn_energy(&x, &xi, &eye, 2.5) - energy(&x, &xi, 2.5)).abs() < 1e-14);
        let (a, b) = (khn_update(&x, &xi, &eye, 2.5), update(&x, &xi, &xi, 2.5));
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-15));
    }

    #[test]
    fn khn_energy_never_increases_along_its_retrieval() {
        // CCCP with a full-rank W: E_K(T_K(x)) <= E_K(x). With the paper's
        // printed "+ lse" this fails (checked below), which is how the sign
        // typo shows.
        let xi = rand_matrix(7, 6, 4);
        let w = rand_matrix(8, 5, 4);
        // Full rank: W^T W positive definite (every Gaussian-elimination pivot > 0).
        let mut g: Vec<Vec<f64>> =
            (0..4).map(|i| (0..4).map(|j| (0..5).map(|r| w.row(r)[i] * w.row(r)[j]).sum()).collect()).collect();
        for p in 0..4 {
            assert!(g[p][p] > 1e-3, "W is (nearly) rank-deficient");
            let pivot = g[p].clone();
            for row in g.iter_mut().skip(p + 1) {
                let f = row[p] / pivot[p];
                row.iter_mut().zip(&pivot).skip(p).for_each(|(v, q)| *v -= f * q);
            }
        }
        let plus = |x: &[f64]| {
            let s: Vec<f64> = (0..xi.rows).map(|mu| 3.0 * kernel(&w, x, xi.row(mu))).collect();
            0.5 * kernel(&w, x, x) + log_sum_exp(&s) / 3.0
        };
        let mut plus_increased = false;
        for start in 0..10 {
            let mut x = rand_matrix(100 + start, 1, 4).data;
            for _ in 0..10 {
                let next = khn_update(&x, &xi, &w, 3.0);
                assert!(khn_energy(&next, &xi, &w, 3.0) <= khn_energy(&x, &xi, &w, 3.0) + 1e-12);
                plus_increased |= plus(&next) > plus(&x) + 1e-9;
                x = next;
            }
        }
        assert!(plus_increased, "the '+ lse' energy should not be a Lyapunov function of the retrieval");
    }

    #[test]
    fn a_kernelized_layer_scores_through_phi() {
        // KHN layer with Phi = W: softmax(beta <W r, W y>) Y, one head, no projections.
        let w = Linear { weight: rand_matrix(9, 4, 3), bias: None };
        let r = rand_matrix(10, 2, 3);
        let y = rand_matrix(11, 5, 3);
        let m = kernelized(&Module::plain(1.3), &w);
        let ys = std::slice::from_ref(&y);
        let f = forward(&m, ys, std::slice::from_ref(&r), ys, None, &Method::Dense).unwrap();
        for l in 0..2 {
            let z = khn_update(r.row(l), &y, &w.weight, 1.3);
            assert!(f.out[0].row(l).iter().zip(&z).all(|(a, b)| (a - b).abs() < 1e-14));
        }
    }
}
