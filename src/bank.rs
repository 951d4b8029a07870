//! A memory bank: the stored patterns (keys) and optional separate values,
//! resident on the device, so that one upload serves any number of query
//! batches. A bank larger than one storage binding is held as several
//! segments, each bound on its own; the kernels split their work along them.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::context::Context;
use crate::error::{Error, Resource, Result};
use crate::method::FeatureKey;
use crate::stats::{validate_matrix, Magnitudes, ProblemStats};

/// One contiguous run of memories that fits a single storage binding.
#[derive(Clone, Debug)]
pub(crate) struct Segment {
    pub keys: wgpu::Buffer,
    pub key_offset: u64,
    pub values: wgpu::Buffer,
    pub value_offset: u64,
    /// Global index of the segment's first memory.
    pub row0: usize,
    /// Memories in the segment.
    pub rows: usize,
}

impl Segment {
    pub(crate) fn key_binding(&self, d: usize) -> wgpu::BindingResource<'_> {
        binding(&self.keys, self.key_offset, self.rows * d)
    }

    pub(crate) fn value_binding(&self, dv: usize) -> wgpu::BindingResource<'_> {
        binding(&self.values, self.value_offset, self.rows * dv)
    }
}

fn binding(buffer: &wgpu::Buffer, offset: u64, floats: usize) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset,
        size: wgpu::BufferSize::new((floats as u64 * 4).max(4)),
    })
}

/// Magnitudes of the stored patterns, known when the bank was built from host
/// data. The overflow check uses them to rule out scores beyond f32; the
/// planners of the approximate methods use them for their error bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BankStats {
    /// Of the keys `Xi`.
    pub keys: Magnitudes,
    /// Of the values `V` (the keys' own without separate values).
    pub values: Magnitudes,
}

/// Per-bank state built on first use (the S and n of each feature map),
/// shared by clones of the bank. The bank does not know what it holds: the
/// kernels store and fetch their own type under a [`FeatureKey`].
#[derive(Clone, Default)]
pub(crate) struct BankCache {
    slots: Arc<Mutex<HashMap<FeatureKey, Slot>>>,
    builds: Arc<AtomicUsize>,
}

/// One key's entry, locked while it is being built so that concurrent
/// callers wait for one build instead of each running their own.
type Slot = Arc<Mutex<Option<Arc<dyn Any + Send + Sync>>>>;

impl std::fmt::Debug for BankCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankCache").field("builds", &self.builds.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl BankCache {
    fn slot(&self, key: FeatureKey) -> Slot {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().clone()
    }

    /// The value under `key`, built by `build` if there is none yet (under
    /// the key's lock: one build per key, whatever the number of callers).
    pub(crate) fn get_or_build<T: Any + Send + Sync>(
        &self,
        key: FeatureKey,
        build: impl FnOnce() -> Result<T>,
    ) -> Result<Arc<T>> {
        let slot = self.slot(key);
        let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = guard.as_ref() {
            return v.clone().downcast::<T>().map_err(|_| Error::internal("a bank cache entry has another type"));
        }
        let v = Arc::new(build()?);
        self.builds.fetch_add(1, Ordering::Relaxed);
        *guard = Some(v.clone());
        Ok(v)
    }

    /// The value under `key`, if built.
    pub(crate) fn get<T: Any + Send + Sync>(&self, key: FeatureKey) -> Option<Arc<T>> {
        let slot = self.slot(key);
        let v = slot.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
        v.downcast::<T>().ok()
    }
}

/// Memories resident on the device.
#[derive(Clone, Debug)]
pub struct MemoryBank {
    m: usize,
    d: usize,
    dv: usize,
    hetero: bool,
    pub(crate) segments: Vec<Segment>,
    stats: Option<BankStats>,
    cache: BankCache,
}

// Banks are shared across threads like the context they live on.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<MemoryBank>();
};

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Most memories per segment: each binding fits the device, and a segment
/// boundary is a valid binding offset for both keys and values.
fn rows_per_segment(ctx: &Context, d: usize, dv: usize) -> Result<usize> {
    let row_bytes = 4 * d.max(dv) as u64;
    let align = u64::from(ctx.limits.min_storage_buffer_offset_alignment).max(4);
    let step_k = align / gcd(align, 4 * d as u64);
    let step_v = align / gcd(align, 4 * dv as u64);
    let step = step_k / gcd(step_k, step_v) * step_v;
    let rows = (ctx.max_binding() / row_bytes) / step * step;
    if rows == 0 {
        return Err(Error::limit(
            format!("one pattern of {} floats", d.max(dv)),
            Resource::BindingBytes,
            row_bytes * step,
            ctx.max_binding(),
        ));
    }
    Ok(rows as usize)
}

impl MemoryBank {
    /// Upload `m` patterns of dimension `d` (row-major), used as keys and values.
    pub fn new(ctx: &Context, memories: &[f32], m: usize, d: usize) -> Result<Self> {
        Self::upload(ctx, memories, m, d, None)
    }

    /// Upload keys `[m, d]` with separate values `[m, dv]` (hetero-association).
    pub fn with_values(ctx: &Context, memories: &[f32], m: usize, d: usize, values: &[f32], dv: usize) -> Result<Self> {
        Self::upload(ctx, memories, m, d, Some((values, dv)))
    }

    fn upload(ctx: &Context, memories: &[f32], m: usize, d: usize, values: Option<(&[f32], usize)>) -> Result<Self> {
        validate_matrix("memories", memories, m, d)?;
        let dv = match values {
            Some((v, dv)) => {
                if dv == 0 {
                    return Err(Error::Empty { what: "values" });
                }
                if Some(v.len()) != m.checked_mul(dv) {
                    return Err(Error::ShapeMismatch {
                        what: format!("values must have one row per memory ({m} rows of {dv})"),
                        expected: m.saturating_mul(dv),
                        got: v.len(),
                    });
                }
                validate_matrix("values", v, m, dv)?;
                dv
            }
            None => d,
        };
        let per = rows_per_segment(ctx, d, dv)?;
        let segments = ctx.scoped(|| {
            let mut segments = Vec::new();
            let mut row0 = 0;
            while row0 < m {
                let rows = per.min(m - row0);
                let keys = ctx.upload(
                    "memories",
                    bytemuck::cast_slice(&memories[row0 * d..(row0 + rows) * d]),
                    wgpu::BufferUsages::empty(),
                )?;
                let vals = match values {
                    Some((v, dv)) => ctx.upload(
                        "values",
                        bytemuck::cast_slice(&v[row0 * dv..(row0 + rows) * dv]),
                        wgpu::BufferUsages::empty(),
                    )?,
                    None => keys.clone(),
                };
                segments.push(Segment { keys, key_offset: 0, values: vals, value_offset: 0, row0, rows });
                row0 += rows;
            }
            Ok(segments)
        })?;
        let keys = Magnitudes::of(memories, d);
        let stats = BankStats { keys, values: values.map_or(keys, |(v, dv)| Magnitudes::of(v, dv)) };
        Ok(MemoryBank { m, d, dv, hetero: values.is_some(), segments, stats: Some(stats), cache: BankCache::default() })
    }

    /// Use memories that already live in the caller's buffers: `keys` holds
    /// `[m, d]` f32 row-major from offset 0, `values` (if given) `[m, dv]`.
    /// Nothing is copied. The buffers need `STORAGE` usage; a buffer larger
    /// than one storage binding is bound piecewise.
    ///
    /// The library cannot inspect device-resident data without a copy, so the
    /// caller vouches that it is finite and that `beta |x| |xi|` (and, when
    /// iterating, `beta |v| |xi|`) stays below 1e30 (host-built banks are
    /// checked instead).
    pub fn from_buffer(
        ctx: &Context,
        keys: &wgpu::Buffer,
        m: usize,
        d: usize,
        values: Option<(&wgpu::Buffer, usize)>,
    ) -> Result<Self> {
        if m == 0 || d == 0 {
            return Err(Error::Empty { what: "memories" });
        }
        let check = |what: &'static str, buf: &wgpu::Buffer, cols: usize| -> Result<()> {
            // m, cols and the byte count are the caller's: checked arithmetic,
            // so a huge m is an error here rather than an abort later.
            let need = (m as u64).checked_mul(cols as u64).and_then(|n| n.checked_mul(4)).ok_or_else(|| {
                Error::limit(format!("{what}: {m} rows of {cols} f32"), Resource::BufferBytes, u128::MAX, buf.size())
            })?;
            if buf.size() < need {
                return Err(Error::ShapeMismatch {
                    what: format!("{what} buffer size in bytes for {m} rows of {cols} f32"),
                    expected: usize::try_from(need).unwrap_or(usize::MAX),
                    got: usize::try_from(buf.size()).unwrap_or(usize::MAX),
                });
            }
            if !buf.usage().contains(wgpu::BufferUsages::STORAGE) {
                return Err(Error::unsupported(what, None, "the buffer lacks STORAGE usage"));
            }
            Ok(())
        };
        check("keys", keys, d)?;
        let dv = match values {
            Some((v, dv)) => {
                if dv == 0 {
                    return Err(Error::Empty { what: "values" });
                }
                check("values", v, dv)?;
                dv
            }
            None => d,
        };
        let per = rows_per_segment(ctx, d, dv)?;
        let segments = (0..m)
            .step_by(per)
            .map(|row0| Segment {
                keys: keys.clone(),
                key_offset: (row0 * d * 4) as u64,
                values: values.map_or(keys, |v| v.0).clone(),
                value_offset: (row0 * dv * 4) as u64,
                row0,
                rows: per.min(m - row0),
            })
            .collect();
        Ok(MemoryBank { m, d, dv, hetero: values.is_some(), segments, stats: None, cache: BankCache::default() })
    }

    /// Number of stored patterns M.
    pub fn len(&self) -> usize {
        self.m
    }

    /// Always false: a bank holds at least one pattern.
    pub fn is_empty(&self) -> bool {
        self.m == 0
    }

    /// Pattern dimension d.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Value dimension dv (d unless separate values were given).
    pub fn value_dim(&self) -> usize {
        self.dv
    }

    /// Whether separate values were given.
    pub fn is_hetero(&self) -> bool {
        self.hetero
    }

    /// Number of storage-binding segments the bank is split into.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// How many times S and n of a feature-map method (poly, linear, prf)
    /// were built for this bank. They are built once per feature map and
    /// reused by every later retrieval with the same map.
    pub fn feature_builds(&self) -> usize {
        self.cache.builds.load(Ordering::Relaxed)
    }

    /// Magnitudes of the keys and values, when the bank was built from host data.
    pub fn stats(&self) -> Option<BankStats> {
        self.stats
    }

    /// The statistics of `queries` (already validated, `[L, d]`) against
    /// this bank at `beta` over `steps`, when the bank knows its magnitudes.
    pub fn problem_stats(&self, queries: &[f32], beta: f64, steps: u32) -> Option<ProblemStats> {
        let stats = self.stats?;
        let shape = (queries.len() / self.d, self.m, self.d, self.dv);
        Some(ProblemStats::from_magnitudes(
            Magnitudes::of(queries, self.d),
            stats.keys,
            stats.values,
            shape,
            beta,
            steps,
        ))
    }

    pub(crate) fn cache(&self) -> &BankCache {
        &self.cache
    }
}
