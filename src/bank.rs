//! A memory bank: the stored patterns (keys) and optional separate values,
//! resident on the device, so that one upload serves any number of query
//! batches. A bank larger than one storage binding is held as several
//! segments, each bound on its own; the kernels split their work along them.

use crate::context::Context;
use crate::error::{Error, Result};

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
/// data. The kernels use them to rule out overflowing scores; the planners of
/// the approximate methods use them for their error bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BankStats {
    /// `max |xi_mu,i|` over all keys (the max-norm bound B of the papers).
    pub max_abs: f32,
    /// `max_mu |xi_mu|_2` over all keys.
    pub max_norm: f32,
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
    /// S and n of the feature-map methods, built once per map (kernels::feature).
    pub(crate) features: crate::kernels::feature::FeatureCache,
}

/// Reject empty, mis-sized or non-finite row-major data.
pub(crate) fn validate_matrix(what: &'static str, data: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::Empty { what });
    }
    let want =
        rows.checked_mul(cols).ok_or_else(|| Error::DeviceLimit(format!("{what}: {rows} x {cols} overflows")))?;
    if data.len() != want {
        return Err(Error::ShapeMismatch {
            what: format!("{what}: data length vs rows x cols ({rows} x {cols})"),
            expected: want,
            got: data.len(),
        });
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { what, row: i / cols, col: i % cols, value: data[i] });
    }
    Ok(())
}

/// Max-abs and max row 2-norm of row-major data.
pub(crate) fn magnitudes(data: &[f32], cols: usize) -> BankStats {
    let mut max_abs = 0.0f32;
    let mut max_norm = 0.0f64;
    for row in data.chunks_exact(cols) {
        let mut n = 0.0f64;
        for &v in row {
            max_abs = max_abs.max(v.abs());
            n += f64::from(v) * f64::from(v);
        }
        max_norm = max_norm.max(n);
    }
    BankStats { max_abs, max_norm: max_norm.sqrt() as f32 }
}

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
        return Err(Error::DeviceLimit(format!(
            "one pattern of {} floats does not fit a storage binding of {} bytes",
            d.max(dv),
            ctx.max_binding()
        )));
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
                if v.len() != m * dv {
                    return Err(Error::ShapeMismatch {
                        what: format!("values must have one row per memory ({m} rows of {dv})"),
                        expected: m * dv,
                        got: v.len(),
                    });
                }
                validate_matrix("values", v, m, dv)?;
                dv
            }
            None => d,
        };
        let per = rows_per_segment(ctx, d, dv)?;
        let mut segments = Vec::new();
        let mut row0 = 0;
        while row0 < m {
            let rows = per.min(m - row0);
            let keys = ctx.upload(
                "memories",
                bytemuck::cast_slice(&memories[row0 * d..(row0 + rows) * d]),
                wgpu::BufferUsages::empty(),
            );
            let vals = match values {
                Some((v, dv)) => ctx.upload(
                    "values",
                    bytemuck::cast_slice(&v[row0 * dv..(row0 + rows) * dv]),
                    wgpu::BufferUsages::empty(),
                ),
                None => keys.clone(),
            };
            segments.push(Segment { keys, key_offset: 0, values: vals, value_offset: 0, row0, rows });
            row0 += rows;
        }
        ctx.check_gpu_error()?;
        Ok(MemoryBank {
            m,
            d,
            dv,
            hetero: values.is_some(),
            segments,
            stats: Some(magnitudes(memories, d)),
            features: Default::default(),
        })
    }

    /// Use memories that already live in the caller's buffers: `keys` holds
    /// `[m, d]` f32 row-major from offset 0, `values` (if given) `[m, dv]`.
    /// Nothing is copied. The buffers need `STORAGE` usage; a buffer larger
    /// than one storage binding is bound piecewise.
    ///
    /// The library cannot inspect device-resident data without a copy, so the
    /// caller vouches that it is finite and that `beta |x| |xi|` stays below
    /// 1e30 (host-built banks are checked instead).
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
        let check = |what: &str, buf: &wgpu::Buffer, cols: usize| -> Result<()> {
            let need = (m * cols * 4) as u64;
            if buf.size() < need {
                return Err(Error::ShapeMismatch {
                    what: format!("{what} buffer size in bytes for {m} rows of {cols} f32"),
                    expected: need as usize,
                    got: buf.size() as usize,
                });
            }
            if !buf.usage().contains(wgpu::BufferUsages::STORAGE) {
                return Err(Error::Unsupported(format!("the {what} buffer lacks STORAGE usage")));
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
        Ok(MemoryBank { m, d, dv, hetero: values.is_some(), segments, stats: None, features: Default::default() })
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
        self.features.builds()
    }

    /// Magnitudes of the keys, when the bank was built from host data.
    pub fn stats(&self) -> Option<BankStats> {
        self.stats
    }
}
