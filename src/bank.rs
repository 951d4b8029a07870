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
    /// Bytes per stored entry (4, or 2 for f16).
    pub elem_bytes: usize,
}

impl Segment {
    /// The segment's keys (`d` per row) as a binding, padded to whole
    /// 16-byte vec4s where the buffer has room (the vec4 kernels read them so).
    pub(crate) fn key_binding(&self, d: usize) -> wgpu::BindingResource<'_> {
        binding(&self.keys, self.key_offset, self.rows * d * self.elem_bytes)
    }

    /// The segment's values, likewise.
    pub(crate) fn value_binding(&self, dv: usize) -> wgpu::BindingResource<'_> {
        binding(&self.values, self.value_offset, self.rows * dv * self.elem_bytes)
    }

    /// Whether both bindings reach whole vec4s (always for banks built
    /// here; a caller's buffer may end mid-vec4).
    fn vec4_bindable(&self, d: usize, dv: usize) -> bool {
        let fits =
            |b: &wgpu::Buffer, offset: u64, bytes: usize| offset + (bytes as u64).next_multiple_of(16) <= b.size();
        fits(&self.keys, self.key_offset, self.rows * d * self.elem_bytes)
            && fits(&self.values, self.value_offset, self.rows * dv * self.elem_bytes)
    }
}

fn binding(buffer: &wgpu::Buffer, offset: u64, bytes: usize) -> wgpu::BindingResource<'_> {
    let bytes = bytes as u64;
    let padded = bytes.next_multiple_of(16);
    let size = if offset + padded <= buffer.size() { padded } else { bytes.next_multiple_of(4) };
    wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer, offset, size: wgpu::BufferSize::new(size.max(4)) })
}

/// How a bank stores its memories on the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum Storage {
    /// 32-bit floats, as given.
    #[default]
    F32,
    /// IEEE half precision (needs `Features::SHADER_F16`): half the bytes
    /// per memory, for the bandwidth-bound few-query case. Every product and
    /// sum is still computed in f32; what changes is the data: each key and
    /// value is rounded to the nearest f16 once, a relative error of at most
    /// 2^-11 per entry (entries must lie within +-65504, and entries below
    /// 6.1e-5 in magnitude lose relative precision as f16 subnormals, an
    /// absolute error of at most 2^-25). Dense retrieval only. The
    /// resulting bound on z is in README.md ("f16 storage").
    F16,
}

impl Storage {
    /// Bytes per stored entry.
    pub fn bytes(self) -> usize {
        match self {
            Storage::F32 => 4,
            Storage::F16 => 2,
        }
    }
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
    storage: Storage,
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

/// Refuse entries beyond the f16 range (they would become infinities).
fn f16_range(what: &'static str, data: &[f32], cols: usize) -> Result<()> {
    const F16_MAX: f32 = 65504.0;
    match data.iter().position(|x| x.abs() > F16_MAX) {
        Some(i) => Err(Error::invalid(
            "storage",
            "f16",
            format!("{what}[{}, {}] = {} is beyond the f16 range (+-65504)", i / cols, i % cols, data[i]),
        )),
        None => Ok(()),
    }
}

/// Most memories per segment: each binding fits the device, and a segment
/// boundary is a valid binding offset for both keys and values.
fn rows_per_segment(ctx: &Context, d: usize, dv: usize, elem: usize) -> Result<usize> {
    let elem = elem as u64;
    let row_bytes = elem * d.max(dv) as u64;
    let align = u64::from(ctx.limits.min_storage_buffer_offset_alignment).max(16);
    let step_k = align / gcd(align, elem * d as u64);
    let step_v = align / gcd(align, elem * dv as u64);
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
        Self::upload(ctx, memories, m, d, None, Storage::F32)
    }

    /// Upload keys `[m, d]` with separate values `[m, dv]` (hetero-association).
    pub fn with_values(ctx: &Context, memories: &[f32], m: usize, d: usize, values: &[f32], dv: usize) -> Result<Self> {
        Self::upload(ctx, memories, m, d, Some((values, dv)), Storage::F32)
    }

    /// Upload memories (and optional separate values) stored as `storage`:
    /// [`Storage::F16`] halves the bytes per memory (dense retrieval only;
    /// a device without `Features::SHADER_F16` refuses it with
    /// [`Error::MissingFeature`]).
    pub fn with_storage(
        ctx: &Context,
        memories: &[f32],
        m: usize,
        d: usize,
        values: Option<(&[f32], usize)>,
        storage: Storage,
    ) -> Result<Self> {
        Self::upload(ctx, memories, m, d, values, storage)
    }

    fn upload(
        ctx: &Context,
        memories: &[f32],
        m: usize,
        d: usize,
        values: Option<(&[f32], usize)>,
        storage: Storage,
    ) -> Result<Self> {
        if storage == Storage::F16 && !ctx.caps().shader_f16 {
            return Err(Error::MissingFeature {
                feature: "Features::SHADER_F16",
                needed_for: "memories stored as f16".into(),
            });
        }
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
        if storage == Storage::F16 {
            f16_range("memories", memories, d)?;
            if let Some((v, dv)) = values {
                f16_range("values", v, dv)?;
            }
        }
        let per = rows_per_segment(ctx, d, dv, storage.bytes())?;
        // f32 as given, or rounded to f16 one segment at a time (host
        // memory stays near the data's size).
        let upload = |label: &str, data: &[f32]| match storage {
            Storage::F32 => ctx.upload(label, bytemuck::cast_slice(data), wgpu::BufferUsages::empty()),
            Storage::F16 => {
                let half: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
                ctx.upload(label, bytemuck::cast_slice(&half), wgpu::BufferUsages::empty())
            }
        };
        let segments = ctx.scoped(|| {
            let mut segments = Vec::new();
            let mut row0 = 0;
            while row0 < m {
                let rows = per.min(m - row0);
                let keys = upload("memories", &memories[row0 * d..(row0 + rows) * d])?;
                let vals = match values {
                    Some((v, dv)) => upload("values", &v[row0 * dv..(row0 + rows) * dv])?,
                    None => keys.clone(),
                };
                let elem_bytes = storage.bytes();
                segments.push(Segment { keys, key_offset: 0, values: vals, value_offset: 0, row0, rows, elem_bytes });
                row0 += rows;
            }
            Ok(segments)
        })?;
        let keys = Magnitudes::of(memories, d);
        let stats = BankStats { keys, values: values.map_or(keys, |(v, dv)| Magnitudes::of(v, dv)) };
        Ok(MemoryBank {
            m,
            d,
            dv,
            hetero: values.is_some(),
            storage,
            segments,
            stats: Some(stats),
            cache: BankCache::default(),
        })
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
        let per = rows_per_segment(ctx, d, dv, 4)?;
        let segments = (0..m)
            .step_by(per)
            .map(|row0| Segment {
                keys: keys.clone(),
                key_offset: (row0 * d * 4) as u64,
                values: values.map_or(keys, |v| v.0).clone(),
                value_offset: (row0 * dv * 4) as u64,
                row0,
                rows: per.min(m - row0),
                elem_bytes: 4,
            })
            .collect();
        Ok(MemoryBank {
            m,
            d,
            dv,
            hetero: values.is_some(),
            storage: Storage::F32,
            segments,
            stats: None,
            cache: BankCache::default(),
        })
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

    /// How the memories are stored on the device.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// Whether every segment binds as whole vec4s (the kernels shaped for
    /// GPUs read vec4s; a caller's buffer that ends mid-vec4 runs the legacy
    /// kernels instead).
    pub(crate) fn vec4_bindable(&self) -> bool {
        self.segments.iter().all(|s| s.vec4_bindable(self.d, self.dv))
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
