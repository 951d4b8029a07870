//! What the authors' public code (MAGICS-LAB/NonparametricHopfield,
//! `layers.py`, `trainers/memory_retrieval_trainer.py`) computes where it
//! differs from the paper's equations, reproduced on the host in f64 so that
//! their curves can be laid beside ours (`--variant authors`).
//!
//! These are deliberately not [`crate::Method`]s: they are not eq. (3.9)
//! (every excluded memory keeps weight `e^0 / Z`), and the engine computes
//! only what SEMANTICS.md defines. The experiment sizes (M <= a few hundred)
//! make a plain host loop fast enough. What is reproduced:
//! - top-K: the logits outside the `int(f M)` largest scores are set to 0,
//!   not removed, then a softmax over all M (`top_k_attn`);
//! - random masks: `F.dropout(beta * scores, p)` before the softmax: each
//!   logit is zeroed with probability p and the kept ones are scaled by
//!   `1 / (1 - p)`; a new mask every update step (`rand_masked_attn`). Their
//!   `--prob` is the *dropped* fraction here but the *kept* fraction for
//!   top-K, so "random f = 0.2" keeps about 80% of the memories;
//! - the success criterion and the row-broadcast noise (in the parent module).
//!
//! - optionally (`sign_scores`, `--authors-sign-scores`), their
//!   `F.normalize(scores)` over a head axis of size 1, which replaces every
//!   score by its sign before the scale, the mask and the softmax.

use super::data::Stream;

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
}

/// `z = softmax(logits) Xi` for one query, in f64.
fn softmax_sum(logits: &[f64], memories: &[f32], d: usize) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logits.iter().map(|&s| (s - max).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut z = vec![0.0; d];
    for (mu, &wm) in w.iter().enumerate() {
        for (zc, &v) in z.iter_mut().zip(&memories[mu * d..(mu + 1) * d]) {
            *zc += wm / total * f64::from(v);
        }
    }
    z
}

/// Which of the authors' score treatments to apply before the softmax.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mask {
    /// All M logits (their `softmax` mode, and their `sparsemax` mode, which calls softmax).
    None,
    /// Logits outside the `k` largest scores set to 0 (`top_k_attn`).
    ZeroLogitTopK {
        /// Scores kept.
        k: usize,
    },
    /// `F.dropout(beta * scores, p)`, a new mask every step (`rand_masked_attn`).
    Dropout {
        /// Probability of dropping a logit.
        p: f64,
    },
}

/// Their `F.normalize(scores)` over the head axis (dim 1 of `[B, H, L, S]`,
/// of size 1): `s / max(|s|, 1e-12)`, the sign of every score.
fn sign(s: f64) -> f64 {
    s / s.abs().max(1e-12)
}

/// `steps` updates of every query (`[L, d]`) as the authors' code computes
/// them. With `sign_scores` every score first becomes its sign (their
/// `norm=True` with one head). Also returns, for dropout, whether memory l
/// (query l's own pattern in the experiments) was kept in the last step.
#[expect(clippy::too_many_arguments, reason = "the data, the step count and the authors' switches")]
pub fn retrieve(
    queries: &[f32],
    memories: &[f32],
    d: usize,
    beta: f64,
    steps: u32,
    mask: Mask,
    sign_scores: bool,
    stream: &mut Stream,
) -> (Vec<f32>, Vec<bool>) {
    let m = memories.len() / d;
    let mut state = queries.to_vec();
    let mut kept_own = vec![true; state.len() / d];
    for _ in 0..steps {
        let mut next = Vec::with_capacity(state.len());
        for (l, x) in state.chunks_exact(d).enumerate() {
            let s: Vec<f64> = (0..m)
                .map(|mu| {
                    let v = dot(x, &memories[mu * d..(mu + 1) * d]);
                    if sign_scores {
                        sign(v)
                    } else {
                        v
                    }
                })
                .collect();
            let logits: Vec<f64> = match mask {
                Mask::None => s.iter().map(|&v| beta * v).collect(),
                Mask::ZeroLogitTopK { k } => {
                    let mut order: Vec<usize> = (0..m).collect();
                    // Largest first, lower index on ties (torch.topk's order on ties is unspecified).
                    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
                    let mut logits = vec![0.0; m];
                    for &mu in order.iter().take(k) {
                        logits[mu] = beta * s[mu];
                    }
                    logits
                }
                Mask::Dropout { p } => (0..m)
                    .map(|mu| {
                        let keep = stream.unit() > p;
                        if mu == l {
                            kept_own[l] = keep;
                        }
                        if keep {
                            beta * s[mu] / (1.0 - p)
                        } else {
                            0.0
                        }
                    })
                    .collect(),
            };
            next.extend(softmax_sum(&logits, memories, d).into_iter().map(|v| v as f32));
        }
        state = next;
    }
    (state, kept_own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_logits_keep_weight_on_excluded_memories() {
        // Three memories on the axes of R^3, query = e0, beta = 10, k = 1:
        // logits (10, 0, 0): z = (e^10 e0 + e1 + e2) / (e^10 + 2).
        let mem = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let mut s = Stream::new(0, &[]);
        let (z, _) = retrieve(&[1.0, 0.0, 0.0], &mem, 3, 10.0, 1, Mask::ZeroLogitTopK { k: 1 }, false, &mut s);
        let e = 10f64.exp();
        let want = [e / (e + 2.0), 1.0 / (e + 2.0), 1.0 / (e + 2.0)];
        for (g, w) in z.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{z:?}");
        }
    }

    #[test]
    fn dropout_rescales_kept_logits_and_p_zero_is_dense() {
        let mem = [1.0, 0.0, 0.0, 1.0];
        let mut s = Stream::new(1, &[]);
        // p = 0: nothing dropped, plain softmax: z_0 = e^2 / (e^2 + 1).
        let (z, kept) = retrieve(&[1.0, 0.0], &mem, 2, 2.0, 1, Mask::Dropout { p: 0.0 }, false, &mut s);
        let e = 2f64.exp();
        assert!((f64::from(z[0]) - e / (e + 1.0)).abs() < 1e-6 && kept == vec![true]);
        // p = 0.5 over many draws: memory 0 is kept about half the time, and
        // when kept its logit is 2 / 0.5 = 4.
        let mut kept_count = 0;
        for _ in 0..2000 {
            let (z, kept) = retrieve(&[1.0, 0.0], &mem, 2, 2.0, 1, Mask::Dropout { p: 0.5 }, false, &mut s);
            if kept[0] {
                kept_count += 1;
                let e4 = 4f64.exp();
                assert!((f64::from(z[0]) - e4 / (e4 + 1.0)).abs() < 1e-6, "{z:?}");
            } else {
                assert!((f64::from(z[0]) - 0.5).abs() < 1e-6, "{z:?}");
            }
        }
        // Binomial(2000, 0.5): sd 22.4; 6 sd.
        assert!((kept_count as f64 - 1000.0).abs() < 135.0, "{kept_count}");
    }

    #[test]
    fn sign_scores_flatten_the_softmax() {
        // Scores 5 and -0.5 become +1 and -1: with beta = 1, z_0 = e / (e + e^-1).
        let mem = [5.0, 0.0, -0.5, 0.0];
        let mut s = Stream::new(0, &[]);
        let (z, _) = retrieve(&[1.0, 0.0], &mem, 2, 1.0, 1, Mask::None, true, &mut s);
        let (e, ei) = (1f64.exp(), (-1f64).exp());
        let want = (5.0 * e - 0.5 * ei) / (e + ei);
        assert!((f64::from(z[0]) - want).abs() < 1e-5, "{z:?} vs {want}");
    }
}
