//! A memory set split over several contexts (adapters): each shard's bank
//! lives on its own device, every retrieval runs the shards concurrently (one
//! thread each) and merges their partials exactly ([`crate::partial`]).
//! Iterated dynamics send the merged state back to every shard each step.

use std::sync::Arc;

use crate::bank::MemoryBank;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::method::Method;
use crate::partial::{check_mergeable, Partial};
use crate::retrieve::query_rows;
use crate::retrieve::{energy_from_lse, Retrieval, RetrieveOptions, SupportSets};
use crate::stats::validate_matrix;

/// One shard: its device, its memories, and where they sit in the whole set.
#[derive(Debug)]
struct Shard {
    ctx: Arc<Context>,
    bank: MemoryBank,
    offset: usize,
}

/// One memory set of M patterns, cut into contiguous shards, each resident
/// on its own [`Context`]. Dense and top-K retrieval (the methods with an
/// exact merge) with dynamics and energies, as one bank would give them.
#[derive(Debug)]
pub struct ShardedBank {
    shards: Vec<Shard>,
    m: usize,
    d: usize,
    dv: usize,
}

impl ShardedBank {
    /// Split `m` patterns of dimension `d` (row-major) evenly over
    /// `contexts` (one shard each; fewer if there are fewer memories than
    /// contexts) and upload each shard to its device. The same context may
    /// appear more than once.
    pub fn new(contexts: &[Arc<Context>], memories: &[f32], m: usize, d: usize) -> Result<Self> {
        Self::build(contexts, memories, m, d, None)
    }

    /// As [`ShardedBank::new`], with separate values `[m, dv]`.
    pub fn with_values(
        contexts: &[Arc<Context>],
        memories: &[f32],
        m: usize,
        d: usize,
        values: &[f32],
        dv: usize,
    ) -> Result<Self> {
        Self::build(contexts, memories, m, d, Some((values, dv)))
    }

    fn build(
        contexts: &[Arc<Context>],
        memories: &[f32],
        m: usize,
        d: usize,
        values: Option<(&[f32], usize)>,
    ) -> Result<Self> {
        if contexts.is_empty() {
            return Err(Error::Empty { what: "contexts" });
        }
        // Whole-set checks first, so errors name rows of the whole set.
        validate_matrix("memories", memories, m, d)?;
        if let Some((v, dv)) = values {
            validate_matrix("values", v, m, dv)?;
        }
        let n = contexts.len().min(m);
        let mut shards = Vec::with_capacity(n);
        for (i, ctx) in contexts.iter().take(n).enumerate() {
            let (a, b) = (i * m / n, (i + 1) * m / n);
            let keys = &memories[a * d..b * d];
            let bank = match values {
                None => MemoryBank::new(ctx, keys, b - a, d)?,
                Some((v, dv)) => MemoryBank::with_values(ctx, keys, b - a, d, &v[a * dv..b * dv], dv)?,
            };
            shards.push(Shard { ctx: ctx.clone(), bank, offset: a });
        }
        let dv = values.map_or(d, |v| v.1);
        Ok(ShardedBank { shards, m, d, dv })
    }

    /// Banks already uploaded, in order: the first holds memories
    /// `[0, len)`, the next the following ones, and so on.
    pub fn from_banks(banks: Vec<(Arc<Context>, MemoryBank)>) -> Result<Self> {
        let Some((_, first)) = banks.first() else { return Err(Error::Empty { what: "banks" }) };
        let (d, dv) = (first.dim(), first.value_dim());
        let mut shards = Vec::with_capacity(banks.len());
        let mut offset = 0;
        for (ctx, bank) in banks {
            if bank.dim() != d || bank.value_dim() != dv {
                return Err(Error::ShapeMismatch {
                    what: "every shard's bank must have the same d and dv (d + dv shown)".into(),
                    expected: d + dv,
                    got: bank.dim() + bank.value_dim(),
                });
            }
            let len = bank.len();
            shards.push(Shard { ctx, bank, offset });
            offset += len;
        }
        Ok(ShardedBank { shards, m: offset, d, dv })
    }

    /// Memories M over all shards.
    pub fn len(&self) -> usize {
        self.m
    }

    /// Whether there are no memories (never true: banks are non-empty).
    pub fn is_empty(&self) -> bool {
        self.m == 0
    }

    /// Pattern dimension d.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Value dimension dv.
    pub fn value_dim(&self) -> usize {
        self.dv
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Every shard's partial for `states`, computed concurrently.
    fn partials(&self, states: &[f32], opts: &RetrieveOptions) -> Result<Vec<Partial>> {
        let run = |s: &Shard| s.ctx.retrieve_partial(&s.bank, states, opts).map(|p| p.at_offset(s.offset));
        if self.shards.len() == 1 {
            return self.shards.iter().map(run).collect();
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = self.shards.iter().map(|s| scope.spawn(move || run(s))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::internal("a shard's thread panicked"))))
                .collect()
        })
    }

    /// Retrieve for `queries` (`[L, d]`) from the whole set, as
    /// [`Context::retrieve`] does from one bank: same options, same result
    /// fields (within f32 rounding of the merge; see [`Partial::merge`]).
    /// Methods: dense and top-K; the others are refused with the reason.
    pub fn retrieve(&self, queries: &[f32], opts: &RetrieveOptions) -> Result<Retrieval> {
        opts.validate()?;
        check_mergeable(&opts.method)?;
        let (d, dv) = (self.d, self.dv);
        let l = query_rows(queries, d)?;
        let iterate = dv == d;
        if opts.max_steps > 1 && !iterate {
            return Err(Error::ShapeMismatch {
                what: "iterated dynamics need values of the pattern dimension (dv == d)".into(),
                expected: d,
                got: dv,
            });
        }
        let one = RetrieveOptions { max_steps: 1, energy: false, support: false, ..opts.clone() };
        let mut states = queries.to_vec();
        let mut out = Retrieval {
            rows: l,
            cols: dv,
            z: if iterate { Vec::new() } else { vec![0.0; l * dv] },
            steps: vec![0; l],
            converged: vec![false; l],
            log_sum_exp: vec![0.0; l],
            argmax: vec![0; l],
            energy: None,
            gpu_time: None,
            support: None,
        };
        if let (Method::TopK { k }, true) = (opts.method, opts.support) {
            let width = k.min(self.m);
            out.support = Some(SupportSets { width, indices: vec![-1; l * width] });
        }
        let mut active: Vec<usize> = (0..l).collect();
        for _ in 0..opts.max_steps {
            if active.is_empty() {
                break;
            }
            let sub: Vec<f32> = active.iter().flat_map(|&q| states[q * d..(q + 1) * d].iter().copied()).collect();
            let merged = Partial::merge(&self.partials(&sub, &one)?)?;
            for (j, &q) in active.iter().enumerate() {
                let z = &merged.z[j * dv..(j + 1) * dv];
                out.steps[q] += 1;
                out.log_sum_exp[q] = merged.log_sum_exp[j];
                out.argmax[q] = merged.argmax[j];
                if let (Some(s), Some(m)) = (out.support.as_mut(), merged.support.as_ref()) {
                    s.indices[q * s.width..(q + 1) * s.width]
                        .copy_from_slice(&m.indices[j * m.width..(j + 1) * m.width]);
                }
                if iterate {
                    let x = &mut states[q * d..(q + 1) * d];
                    let delta = x.iter().zip(z).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                    x.copy_from_slice(z);
                    out.converged[q] = delta <= opts.eps;
                } else {
                    out.z[q * dv..(q + 1) * dv].copy_from_slice(z);
                }
            }
            active.retain(|&q| !out.converged[q]);
        }
        if opts.energy {
            // The dense energy of each final state (the query itself for
            // hetero-association), with its log-sum-exp and argmax, as one bank reports.
            let dense = RetrieveOptions { method: Method::Dense, ..one };
            let merged = Partial::merge(&self.partials(&states, &dense)?)?;
            let energy = (0..l)
                .map(|q| energy_from_lse(merged.log_sum_exp[q], &states[q * d..(q + 1) * d], opts.beta, q))
                .collect::<Result<Vec<f32>>>()?;
            out.energy = Some(energy);
            out.log_sum_exp = merged.log_sum_exp;
            out.argmax = merged.argmax;
        }
        if iterate {
            out.z = states;
        }
        Ok(out)
    }
}
