//! Reference for the Hopfield layers: the eval-mode forward pass of
//! hopfield-layers' `Hopfield` module (and so of `HopfieldPooling` and
//! `HopfieldLayer`, which feed it learned patterns) and the hopfield-layers
//! update dynamics, built from the dense blocks of [`super::linalg`]
//! (LayerNorm, linear maps) and the association of [`super::batch`]. Written from
//! SEMANTICS.md ("Hopfield layers and networks", "hopfield-layers
//! compatibility") and docs/hflayers.md, not from hopfield-layers' code.
//!
//! One sequence `n` of a batch and one head `h` form one retrieval problem:
//! its queries are the projected state patterns, its memories the projected
//! stored patterns (the keys), its values the projected pattern projections.
//! Per problem:
//!
//! 1. `x = LN_h(R W_q^T + b_q)`, `k = LN_h(Y W_k^T + b_k)`,
//!    `v = P W_v^T + b_v`, each split into heads (or, for a static input,
//!    the input itself, given whole to every head); `LN_h` is the optional
//!    per-head Hopfield-space LayerNorm;
//! 2. `xi = A(x, k)`: the association at beta, softmax of `beta x k^T` for
//!    hopfield-layers (its `q` is `beta x`), or another method's weights
//!    ([`super::batch::association`]) for the NPH layer; a per-head scaling
//!    tensor multiplies feature j of the concatenated heads by
//!    `beta[j mod H]` (hopfield-layers tiles the betas); masked memories get
//!    weight exactly 0, `add_zero_association` appends a zero key and a zero
//!    value;
//! 3. updates in key space: `x <- xi k`, `xi <- A(x, k)`, with the keys as
//!    values, until [`Updates`] says stop;
//! 4. read out once, `z = xi v`; the heads are concatenated and `out_proj`
//!    maps them to the output.
//!
//! The networks of the expressive-power paper (MHN, Defs 3.3-3.4, and the
//! kernelized KHN, Defs 3.5-3.7) are built from these pieces in
//! [`super::network`].

use super::batch::association;
use super::dense::weighted_sum;
use super::linalg::{map_rows, LayerNorm, Linear};
use super::Matrix;
use crate::error::{Error, Result};
use crate::method::Method;

pub use crate::layer::config::MAX_UNBOUNDED_UPDATES;

/// How an input (projected or not) is given to the heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heads {
    /// Features `[h * F/H, (h + 1) * F/H)` go to head h.
    Split,
    /// Every head gets all features (a static input, hopfield-layers'
    /// `repeat` over heads).
    Tile,
}

/// One input's way into the heads: zero, one or two affine maps, then
/// [`Heads`]. A static input has no map; `pattern_projection_as_connected`
/// values go through the key's map and then their own.
#[derive(Clone, Debug, PartialEq)]
pub struct InputPath {
    /// Applied in order.
    pub linears: Vec<Linear>,
    /// How the result reaches the heads.
    pub heads: Heads,
}

impl InputPath {
    /// The per-head matrices of one sequence's input `x` (`[rows, F]`).
    fn apply(&self, x: &Matrix, heads: usize, what: &'static str) -> Result<Vec<Matrix>> {
        let mut y = x.clone();
        for lin in &self.linears {
            if y.cols != lin.in_features() {
                return Err(Error::ShapeMismatch {
                    what: format!("{what} features vs the projection's input features"),
                    expected: lin.in_features(),
                    got: y.cols,
                });
            }
            y = lin.apply(&y);
        }
        match self.heads {
            Heads::Tile => Ok(vec![y; heads]),
            Heads::Split => {
                if !y.cols.is_multiple_of(heads) {
                    return Err(Error::ShapeMismatch {
                        what: format!("{what} features split across {heads} heads (a multiple of the heads)"),
                        expected: y.cols.div_ceil(heads) * heads,
                        got: y.cols,
                    });
                }
                let d = y.cols / heads;
                Ok((0..heads).map(|h| map_rows(&y, d, |row| row[h * d..(h + 1) * d].to_vec())).collect())
            }
        }
    }
}

/// beta.
#[derive(Clone, Debug, PartialEq)]
pub enum Scaling {
    /// One beta for every head.
    Uniform(f64),
    /// hopfield-layers' per-head tensor, tiled over features: at the first
    /// step feature j of the concatenated heads (`j = h * d + i`) gets
    /// `beta[j mod H]`; at every update, feature i of each head gets
    /// `beta[i mod H]` (the two agree when H divides the head dimension d;
    /// otherwise hopfield-layers fails at the first update and so do we).
    Tiled(Vec<f64>),
}

impl Scaling {
    /// Scale head `h`'s queries (`[L, d]`) in place, at the first step
    /// (`first`) or at an update.
    fn scale(&self, q: &mut Matrix, h: usize, heads: usize, first: bool) -> Result<()> {
        match self {
            Scaling::Uniform(b) => q.data.iter_mut().for_each(|v| *v *= b),
            Scaling::Tiled(betas) => {
                let d = q.cols;
                if !first && !d.is_multiple_of(heads) {
                    return Err(Error::LayerConfig {
                        arg: "scaling".into(),
                        why: format!(
                            "a per-head scaling with head dimension {d} not divisible by {heads} heads cannot be \
                             applied at an update (hopfield-layers fails here)"
                        ),
                    });
                }
                for l in 0..q.rows {
                    for (i, v) in q.row_mut(l).iter_mut().enumerate() {
                        let j = if first { h * d + i } else { i };
                        *v *= betas[j % heads];
                    }
                }
            }
        }
        Ok(())
    }
}

/// When the updates of a head stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopRule {
    /// hopfield-layers' rule: per head, when the Frobenius norm over
    /// (queries, memories) of the change of the association matrix,
    /// maximised over the sequences of the batch, is at most eps.
    Association,
    /// The engine's rule (SEMANTICS.md, "Energy and iterated dynamics"): per
    /// query, when no coordinate of its state changes by more than eps. The
    /// state is the key-space pattern before beta (the normalised query,
    /// then `xi k`), as SEMANTICS.md applies beta to the scores, not to the
    /// state; hopfield-layers' `q` is beta times it.
    State,
}

/// The update dynamics.
#[derive(Clone, Debug, PartialEq)]
pub struct Updates {
    /// Per head: at most this many updates (`Some(0)`: plain attention), or
    /// None: until the stop rule ([`MAX_UNBOUNDED_UPDATES`] at most).
    pub max: Vec<Option<usize>>,
    /// Per head: the stop threshold (> 0).
    pub eps: Vec<f64>,
    /// Which stop rule.
    pub rule: StopRule,
}

/// A `Hopfield` module's association core (hopfield-layers' `HopfieldCore`).
#[derive(Clone, Debug, PartialEq)]
pub struct Core {
    /// `num_heads`.
    pub heads: usize,
    /// State patterns -> queries.
    pub query: InputPath,
    /// Stored patterns -> keys.
    pub key: InputPath,
    /// Pattern projections -> values.
    pub value: InputPath,
    /// `normalize_hopfield_space`: per-head LayerNorm of q and k at the first step.
    pub hopfield_norm: Option<LayerNorm>,
    /// beta.
    pub scaling: Scaling,
    /// The dynamics.
    pub updates: Updates,
    /// `add_zero_association`.
    pub zero_association: bool,
    /// `out_proj`, unless disabled.
    pub out: Option<Linear>,
}

/// A whole `Hopfield` module: the input LayerNorms and the core.
#[derive(Clone, Debug, PartialEq)]
pub struct Module {
    /// `norm_stored_pattern`.
    pub norm_stored: Option<LayerNorm>,
    /// `norm_state_pattern`.
    pub norm_state: Option<LayerNorm>,
    /// `norm_pattern_projection`.
    pub norm_projection: Option<LayerNorm>,
    /// The association core.
    pub core: Core,
}

impl Module {
    /// One head, no projection, no LayerNorm, beta: `softmax(beta R Y^T) Y`
    /// (the plain Hopfield block of a network; `kernelized` turns it into
    /// the KHN layer).
    pub fn plain(beta: f64) -> Module {
        let tile = InputPath { linears: vec![], heads: Heads::Tile };
        Module {
            norm_stored: None,
            norm_state: None,
            norm_projection: None,
            core: Core {
                heads: 1,
                query: tile.clone(),
                key: tile.clone(),
                value: tile,
                hopfield_norm: None,
                scaling: Scaling::Uniform(beta),
                updates: Updates { max: vec![Some(0)], eps: vec![1e-4], rule: StopRule::Association },
                zero_association: false,
                out: None,
            },
        }
    }
}

/// The result of [`forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// Per sequence, `[L, out]`.
    pub out: Vec<Matrix>,
    /// Per head, the updates applied (the most over its queries for
    /// [`StopRule::State`]).
    pub updates: Vec<usize>,
    /// Per head, whether the stop rule (rather than the limit) ended its updates.
    pub converged: Vec<bool>,
    /// Per sequence and head, the final association matrix `[L, S]` (with
    /// the zero memory last when `add_zero_association`).
    pub association: Vec<Vec<Matrix>>,
}

/// One problem: per sequence and head.
struct Problem {
    /// The state in key space before beta: the (normalised) query, then `xi k`.
    x: Matrix,
    k: Matrix,
    v: Matrix,
    xi: Matrix,
}

/// The eval-mode forward pass of a `Hopfield` module over a batch: per
/// sequence n, stored patterns `stored[n]` (`[S, F]`), state patterns
/// `state[n]` (`[L, F]`), pattern projections `projection[n]` (`[S, F]`),
/// and optionally a key-padding mask `mask[n][s]` (true = masked).
///
/// A sequence whose memories are all masked, with no zero association to
/// fall back on, is an error (hopfield-layers gives NaN there).
pub fn forward(
    module: &Module,
    stored: &[Matrix],
    state: &[Matrix],
    projection: &[Matrix],
    mask: Option<&[Vec<bool>]>,
    method: &Method,
) -> Result<Forward> {
    let core = &module.core;
    let heads = core.heads;
    let n_seq = stored.len();
    for (what, len) in [("state sequences", state.len()), ("projection sequences", projection.len())] {
        if len != n_seq {
            return Err(Error::ShapeMismatch {
                what: format!("{what} vs stored sequences"),
                expected: n_seq,
                got: len,
            });
        }
    }
    if let Some(m) = mask {
        if m.len() != n_seq {
            return Err(Error::ShapeMismatch { what: "mask rows vs sequences".into(), expected: n_seq, got: m.len() });
        }
    }
    if core.updates.max.len() != heads || core.updates.eps.len() != heads {
        return Err(Error::ShapeMismatch {
            what: "per-head update limits vs heads".into(),
            expected: heads,
            got: core.updates.max.len().min(core.updates.eps.len()),
        });
    }
    let norm = |n: &Option<LayerNorm>, x: &Matrix| n.as_ref().map_or_else(|| x.clone(), |n| n.apply(x));

    // Steps 1-2: projections, heads, first association.
    let mut problems: Vec<Vec<Problem>> = Vec::with_capacity(n_seq);
    let mut keeps: Vec<Vec<bool>> = Vec::with_capacity(n_seq);
    for n in 0..n_seq {
        let y = norm(&module.norm_stored, &stored[n]);
        let r = norm(&module.norm_state, &state[n]);
        let p = norm(&module.norm_projection, &projection[n]);
        if p.rows != y.rows {
            return Err(Error::ShapeMismatch {
                what: format!("pattern projections vs stored patterns of sequence {n}"),
                expected: y.rows,
                got: p.rows,
            });
        }
        let mut keep: Vec<bool> = match mask {
            None => vec![true; y.rows],
            Some(m) => {
                if m[n].len() != y.rows {
                    return Err(Error::ShapeMismatch {
                        what: format!("mask columns vs stored patterns of sequence {n}"),
                        expected: y.rows,
                        got: m[n].len(),
                    });
                }
                m[n].iter().map(|&masked| !masked).collect()
            }
        };
        if core.zero_association {
            keep.push(true);
        }
        if !keep.iter().any(|&k| k) {
            return Err(Error::invalid(
                "mask",
                format!("sequence {n}"),
                "masks every stored pattern of the sequence, so its queries have nothing to attend to \
                 (hopfield-layers gives NaN here; add_zero_association gives them the zero pattern)",
            ));
        }
        let qs = core.query.apply(&r, heads, "state pattern")?;
        let ks = core.key.apply(&y, heads, "stored pattern")?;
        let vs = core.value.apply(&p, heads, "pattern projection")?;
        let mut row = Vec::with_capacity(heads);
        for (h, ((mut q, mut k), mut v)) in qs.into_iter().zip(ks).zip(vs).enumerate() {
            if q.cols != k.cols {
                return Err(Error::ShapeMismatch {
                    what: "query head dimension vs key head dimension".into(),
                    expected: k.cols,
                    got: q.cols,
                });
            }
            if let Some(ln) = &core.hopfield_norm {
                q = ln.apply(&q);
                k = ln.apply(&k);
            }
            if core.zero_association {
                k.data.extend(std::iter::repeat_n(0.0, k.cols));
                k.rows += 1;
                v.data.extend(std::iter::repeat_n(0.0, v.cols));
                v.rows += 1;
            }
            let xi = weights(core, method, &q, h, true, &k, &keep)?;
            row.push(Problem { x: q, k, v, xi });
        }
        problems.push(row);
        keeps.push(keep);
    }

    // Step 3: updates in key space, the keys as values.
    let mut updates = vec![0usize; heads];
    let mut converged = vec![false; heads];
    for h in 0..heads {
        let limit = core.updates.max[h];
        let eps = core.updates.eps[h];
        let cap = limit.unwrap_or(MAX_UNBOUNDED_UPDATES);
        match core.updates.rule {
            StopRule::Association => {
                while updates[h] < cap {
                    let mut change: f64 = 0.0;
                    for (n, seq) in problems.iter_mut().enumerate() {
                        let pr = &mut seq[h];
                        pr.x = next_state(&pr.xi, &pr.k);
                        let xi = weights(core, method, &pr.x, h, false, &pr.k, &keeps[n])?;
                        let diff: f64 = xi.data.iter().zip(&pr.xi.data).map(|(a, b)| (a - b) * (a - b)).sum();
                        change = change.max(diff.sqrt());
                        pr.xi = xi;
                    }
                    updates[h] += 1;
                    if change <= eps {
                        converged[h] = true;
                        break;
                    }
                }
            }
            StopRule::State => {
                let mut all_converged = true;
                for (n, seq) in problems.iter_mut().enumerate() {
                    let pr = &mut seq[h];
                    let mut active = vec![true; pr.x.rows];
                    let mut steps = 0;
                    while steps < cap && active.iter().any(|&a| a) {
                        let x = next_state(&pr.xi, &pr.k);
                        for (l, act) in active.iter_mut().enumerate() {
                            if *act {
                                let moved =
                                    x.row(l).iter().zip(pr.x.row(l)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                                pr.x.row_mut(l).copy_from_slice(x.row(l));
                                *act = moved > eps;
                            }
                        }
                        // Rows of queries that had stopped keep their state, so
                        // their association rows come out as before.
                        pr.xi = weights(core, method, &pr.x, h, false, &pr.k, &keeps[n])?;
                        steps += 1;
                    }
                    all_converged &= !active.iter().any(|&a| a);
                    updates[h] = updates[h].max(steps);
                }
                converged[h] = all_converged;
            }
        }
        if limit.is_none() && !converged[h] {
            return Err(Error::invalid(
                "update_steps_max",
                "None",
                format!("head {h} still moved after {MAX_UNBOUNDED_UPDATES} updates (hopfield-layers would loop on)"),
            ));
        }
    }

    // Step 4: read out once, concatenate the heads, project.
    let mut out = Vec::with_capacity(n_seq);
    for seq in &problems {
        let width: usize = seq.iter().map(|p| p.v.cols).sum();
        let rows = seq[0].x.rows;
        let mut z = Matrix::zeros(rows, width);
        let mut offset = 0;
        for pr in seq {
            for l in 0..rows {
                let zl = weighted_sum(pr.xi.row(l), &pr.v);
                z.row_mut(l)[offset..offset + pr.v.cols].copy_from_slice(&zl);
            }
            offset += pr.v.cols;
        }
        let y = match &core.out {
            None => z,
            Some(lin) => {
                if lin.in_features() != width {
                    return Err(Error::ShapeMismatch {
                        what: "concatenated head outputs vs out_proj input features".into(),
                        expected: lin.in_features(),
                        got: width,
                    });
                }
                lin.apply(&z)
            }
        };
        out.push(y);
    }
    let association = problems.into_iter().map(|seq| seq.into_iter().map(|p| p.xi).collect()).collect();
    Ok(Forward { out, updates, converged, association })
}

/// The association of head `h`'s key-space states `x` at the layer's beta
/// (SEMANTICS.md applies beta to the scores: `beta <x, k>`, and the kernel
/// methods take it as their own retrieval does). A per-head scaling tensor
/// scales the features of the queries, tiled as hopfield-layers tiles it
/// (`first`: at the first step).
fn weights(
    core: &Core,
    method: &Method,
    x: &Matrix,
    h: usize,
    first: bool,
    k: &Matrix,
    keep: &[bool],
) -> Result<Matrix> {
    match &core.scaling {
        Scaling::Uniform(beta) => association(method, x, k, *beta, keep),
        Scaling::Tiled(_) => {
            if matches!(method, Method::Linear | Method::Prf { .. }) {
                return Err(Error::LayerConfig {
                    arg: "scaling".into(),
                    why: format!(
                        "a per-head scaling tensor scales each feature of the queries differently, which the {} \
                         kernel has no beta for: give one scaling for all heads",
                        method.name()
                    ),
                });
            }
            let mut q = x.clone();
            core.scaling.scale(&mut q, h, core.heads, first)?;
            association(method, &q, k, 1.0, keep)
        }
    }
}

/// `xi k`: the new state of every query, before scaling.
fn next_state(xi: &Matrix, k: &Matrix) -> Matrix {
    map_rows(xi, k.cols, |row| weighted_sum(row, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: usize, cols: usize, data: &[f64]) -> Matrix {
        Matrix { rows, cols, data: data.to_vec() }
    }

    #[test]
    fn one_head_no_projection_is_plain_softmax_attention() {
        // Static everything, beta 2: out = softmax(2 R Y^T) P.
        let core = Core {
            heads: 1,
            query: InputPath { linears: vec![], heads: Heads::Tile },
            key: InputPath { linears: vec![], heads: Heads::Tile },
            value: InputPath { linears: vec![], heads: Heads::Tile },
            hopfield_norm: None,
            scaling: Scaling::Uniform(2.0),
            updates: Updates { max: vec![Some(0)], eps: vec![1e-4], rule: StopRule::Association },
            zero_association: false,
            out: None,
        };
        let module = Module { norm_stored: None, norm_state: None, norm_projection: None, core };
        let y = m(2, 2, &[1.0, 0.0, 0.0, 1.0]);
        let r = m(1, 2, &[0.5, 0.25]);
        let p = m(2, 1, &[10.0, 20.0]);
        let f = forward(&module, &[y], &[r], &[p], None, &Method::Dense).unwrap();
        let w0 = 1.0 / (1.0 + (-0.5f64).exp()); // softmax([1.0, 0.5])[0]
        assert!((f.out[0].data[0] - (10.0 * w0 + 20.0 * (1.0 - w0))).abs() < 1e-12);
        assert_eq!(f.updates, vec![0]);
    }
}
