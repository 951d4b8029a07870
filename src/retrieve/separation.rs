//! The driver of the pairwise sweep (`shaders/separation.wgsl`): for every
//! memory against the others ([`Context::separation`]), or every query
//! against the memories ([`Context::neighbours`]), the nearest memory, the
//! two largest inner products and the exact duplicates, as
//! [`crate::theory::Neighbours`]. This is the O(M^2 d) part of the theory
//! quantities; [`crate::theory`] does the rest on the host.
//!
//! Plan: the memory segments are cut into splits that keep every invocation
//! inside the driver's loop budget (and, on GPUs, give enough workgroups);
//! the rows go in batches whose partial summaries (`rows x splits`) fit one
//! storage binding and one dispatch dimension. One submission per batch:
//! (norms of every segment, first batch only) + one sweep per segment + the
//! merge, then a readback of 32 bytes per row.

use super::query_rows;
use crate::bank::MemoryBank;
use crate::context::{Context, Scratch};
use crate::error::{Error, Resource, Result};
use crate::kernels::separation::{self as sep, Rows, Summary, BR, NONE};
use crate::kernels::{entire, Recorder, MAX_GROUPS};
use crate::stats::Magnitudes;
use crate::theory::Neighbours;

/// What a sweep found, one entry per row, and how it was planned.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// Per row (memory or query), in order.
    pub rows: Vec<Neighbours>,
    /// Splits of the memories per row (over all segments).
    pub splits: usize,
    /// Memories per split.
    pub split_cols: usize,
    /// Row batches (submissions).
    pub batches: usize,
}

/// Squared distances are summed in f32: refuse data whose `d (2 B)^2` could
/// leave f32's range (the kernel's sentinel is 3e38).
const MAX_D2: f64 = 1e37;

impl Context {
    /// For every memory mu of `bank`: its nearest other memory, the two
    /// other memories with the largest `<xi_mu, xi_nu>`, and how many other
    /// memories equal it exactly (SEMANTICS.md, "Theory quantities").
    ///
    /// A bank wrapping a caller's buffer ([`MemoryBank::from_buffer`]) is
    /// swept as it is: the caller vouches that `d (2 max |xi|)^2 < 1e37`.
    pub fn separation(&self, bank: &MemoryBank) -> Result<Sweep> {
        if let Some(s) = bank.stats() {
            check_range(bank.dim(), s.keys.max_abs)?;
        }
        self.scoped(|| self.sweep(bank, None))
    }

    /// For every query (`[L, d]` row-major): its nearest memory, the two
    /// memories with the largest `<x, xi_nu>`, and how many memories equal it.
    pub fn neighbours(&self, bank: &MemoryBank, queries: &[f32]) -> Result<Sweep> {
        let d = bank.dim();
        query_rows(queries, d)?;
        let q = Magnitudes::of(queries, d);
        check_range(d, bank.stats().map_or(q.max_abs, |s| s.keys.max_abs.max(q.max_abs)))?;
        self.scoped(|| self.sweep(bank, Some(queries)))
    }

    fn sweep(&self, bank: &MemoryBank, queries: Option<&[f32]>) -> Result<Sweep> {
        let (m, d) = (bank.len(), bank.dim());
        let n_rows = queries.map_or(m, |q| q.len() / d);
        if m > u32::MAX as usize || n_rows > u32::MAX as usize {
            return Err(Error::limit(
                "the sweep's row and memory indices",
                Resource::Indices,
                m.max(n_rows),
                u64::from(u32::MAX),
            ));
        }
        let budget = self.loop_budget();
        if let Some(b) = budget {
            // norms_main sums d squares per invocation.
            if d + 1 > b {
                return Err(Error::limit(
                    format!("one pattern norm at d = {d}"),
                    Resource::LoopIterations,
                    d + 1,
                    b as u64,
                ));
            }
        }
        // Splits: on a GPU, enough for the row blocks to fill it; never more
        // iterations per invocation than the budget allows. The device's
        // default split target (0): the tuned one is measured for retrieval.
        let largest = bank.segments.iter().map(|s| s.rows).max().unwrap_or(1);
        let want = crate::kernels::split_rows(self, 0, largest, n_rows.div_ceil(BR), sep::BC);
        let split_cols = sep::split_cols(budget, d, want).ok_or_else(|| {
            Error::limit(
                format!("one 64-memory tile of the pairwise sweep at d = {d}"),
                Resource::LoopIterations,
                budget.unwrap_or(0),
                budget.unwrap_or(0) as u64,
            )
        })?;
        let firsts: Vec<usize> = bank
            .segments
            .iter()
            .scan(0, |acc, s| {
                let first = *acc;
                *acc += s.rows.div_ceil(split_cols);
                Some(first)
            })
            .collect();
        let n_splits: usize = bank.segments.iter().map(|s| s.rows.div_ceil(split_cols)).sum();
        if let Some(b) = budget {
            if n_splits + 1 > b {
                return Err(Error::limit("merging the sweep's splits", Resource::Splits, n_splits, b as u64));
            }
        }
        let summary = std::mem::size_of::<Summary>();
        let max_bind = self.max_binding() as usize;
        let batch = (max_bind / (n_splits * summary)).min(max_bind / summary).min(MAX_GROUPS * BR);
        let batch = match queries {
            // A batch of queries is uploaded as one buffer.
            Some(_) => batch.min(max_bind / (4 * d)),
            None => batch,
        };
        if batch == 0 {
            return Err(Error::limit(
                format!("one row's {n_splits} partial summaries"),
                Resource::BindingBytes,
                n_splits * summary,
                self.max_binding(),
            ));
        }

        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let mut rec = Recorder::new(self, Scratch::pooled(self));
        let norms: Vec<wgpu::Buffer> =
            bank.segments.iter().map(|s| rec.buffer((s.rows * 4) as u64, usage)).collect::<Result<_>>()?;
        let part = rec.buffer((batch.min(n_rows) * n_splits * summary) as u64, wgpu::BufferUsages::STORAGE)?;
        let out = rec.buffer((batch.min(n_rows) * summary) as u64, usage)?;
        let qbuf = match queries {
            Some(_) => Some(rec.buffer((batch.min(n_rows) * d * 4) as u64, usage)?),
            None => None,
        };
        // The row ranges of each batch: query batches, or runs of memories
        // that stay inside one segment (a segment is bound whole, the batch
        // addressed by its offset in it).
        let mut ranges: Vec<(usize, usize, Option<usize>)> = Vec::new();
        match queries {
            Some(_) => ranges.extend((0..n_rows).step_by(batch).map(|r0| (r0, batch.min(n_rows - r0), None))),
            None => {
                for (si, s) in bank.segments.iter().enumerate() {
                    ranges.extend(
                        (0..s.rows).step_by(batch).map(|off| (s.row0 + off, batch.min(s.rows - off), Some(si))),
                    );
                }
            }
        }
        let mut rows_out = Vec::with_capacity(n_rows);
        for (bi, &(r0, count, seg_of_rows)) in ranges.iter().enumerate() {
            if let (Some(q), Some(qb)) = (queries, &qbuf) {
                self.queue().write_buffer(qb, 0, bytemuck::cast_slice(&q[r0 * d..(r0 + count) * d]));
            }
            let mut encoder = self.device().create_command_encoder(&Default::default());
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("separation"),
                    timestamp_writes: None,
                });
                if bi == 0 {
                    for (s, nb) in bank.segments.iter().zip(&norms) {
                        sep::encode_norms(&mut rec, &mut pass, s, d, nb)?;
                    }
                }
                let rows = match (seg_of_rows, &qbuf) {
                    (Some(si), _) => {
                        let s = &bank.segments[si];
                        Rows { binding: s.key_binding(d), offset: r0 - s.row0, count, row0: r0, exclude_self: true }
                    }
                    (None, Some(qb)) => Rows { binding: entire(qb), offset: 0, count, row0: r0, exclude_self: false },
                    (None, None) => return Err(Error::internal("a query batch without its buffer")),
                };
                for ((s, nb), &first) in bank.segments.iter().zip(&norms).zip(&firsts) {
                    sep::encode_sweep(&mut rec, &mut pass, &rows, s, nb, d, split_cols, first, n_splits, &part)?;
                }
                sep::encode_merge(&mut rec, &mut pass, &part, count, n_splits, &out)?;
            }
            rec.flush();
            let bytes = self.submit_and_read(encoder, &[(&out, 0, (count * summary) as u64)])?;
            let sums: Vec<Summary> = bytemuck::pod_collect_to_vec(&bytes[0]);
            for s in &sums {
                rows_out.push(neighbours_of(s, m)?);
            }
        }
        Ok(Sweep { rows: rows_out, splits: n_splits, split_cols, batches: ranges.len() })
    }
}

fn check_range(d: usize, max_abs: f64) -> Result<()> {
    let worst = d as f64 * (2.0 * max_abs).powi(2);
    if worst >= MAX_D2 {
        return Err(Error::invalid(
            "memories",
            format!("max |entry| = {max_abs:e}"),
            format!("squared distances up to d (2 B)^2 = {worst:e} would overflow the f32 sweep (limit {MAX_D2:e})"),
        ));
    }
    Ok(())
}

fn neighbours_of(s: &Summary, m: usize) -> Result<Neighbours> {
    let idx = |i: u32| -> Result<Option<usize>> {
        match i {
            NONE => Ok(None),
            i if (i as usize) < m => Ok(Some(i as usize)),
            i => Err(Error::internal(format!("the sweep returned memory {i} of {m}"))),
        }
    };
    Ok(Neighbours { nearest: idx(s.near)?, best: idx(s.best)?, second: idx(s.second)?, duplicates: s.dups as usize })
}
