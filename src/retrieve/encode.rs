//! Retrieval on GPU-resident data: [`Context::encode_retrieve`] records a
//! whole retrieval into the caller's command encoder, reading the queries
//! from the caller's buffer and writing z (and optionally the energies and
//! supports) into the caller's buffers. Nothing is read back and nothing is
//! submitted: the caller's next pass can consume z in the same submission.
//!
//! What cannot be known without a readback is decided differently from the
//! host-slice [`Context::retrieve`]:
//! - dynamics: every one of `max_steps` steps is recorded (at most
//!   [`MAX_ENCODED_STEPS`]); a converged query stops changing, so the result
//!   equals the host path's bit for bit, but the batch does not stop early;
//! - `auto` and a polynomial without its degree need the queries'
//!   magnitudes, and are refused (resolve them first with `plan` /
//!   `poly_choice`);
//! - scores are not checked for overflow: the caller vouches that
//!   `beta |x| |xi| < 1e30`, as for a bank built from its buffers;
//! - a kernel method's S and n are built once per bank and map, in the
//!   library's own submission (waited for, before anything is recorded), and
//!   cached: a build recorded into an encoder the caller might submit late,
//!   or never, could not be shared with other calls.
//!
//! Errors in the commands recorded here surface in the caller's error
//! scopes when it finishes and submits the encoder.

use crate::bank::MemoryBank;
use crate::context::{Context, Scratch};
use crate::error::{Error, Result};
use crate::kernels::{update, Recorder};

use super::job::{Job, Passes};
use super::RetrieveOptions;

/// The most steps [`Context::encode_retrieve`] records in one call (every
/// step is recorded: there is no early exit without a readback).
pub const MAX_ENCODED_STEPS: u32 = 1024;

/// The caller's buffers a recorded retrieval writes, from offset 0.
#[derive(Clone, Copy, Debug)]
pub struct RetrieveBuffers<'a> {
    /// `[L, cols]` f32, `COPY_DST`: the retrieved patterns (the final states
    /// when iterating; `cols` is d, or dv for hetero-association).
    pub z: &'a wgpu::Buffer,
    /// `[L]` f32, `COPY_DST`: the dense energy `E(x)` of each final state,
    /// computed in f32 on the device. There is no host to refuse an energy
    /// beyond f32's range here (beta below ~1e-38, states of norm ~1e19):
    /// it arrives as +-inf, where [`Context::retrieve`] fails with
    /// [`crate::Error::OutOfRange`].
    pub energy: Option<&'a wgpu::Buffer>,
    /// `[L, width]` i32, `COPY_DST`: each query's support, -1 padded
    /// (`width` is `Method::support_width`); not for dense or kernel methods.
    pub support: Option<&'a wgpu::Buffer>,
}

impl Context {
    /// Record a retrieval of the `l` queries in `queries` (`[l, d]` f32
    /// row-major from offset 0, `COPY_SRC`) into `encoder`, writing z to
    /// `out` (`[l, cols]` f32, `COPY_DST`). No readback, no submit; see the
    /// module documentation of `retrieve::encode` for what differs from
    /// [`Context::retrieve`]. `opts.energy` and `opts.support` are ignored:
    /// use [`Context::encode_retrieve_with`] for those outputs.
    pub fn encode_retrieve(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bank: &MemoryBank,
        queries: &wgpu::Buffer,
        l: usize,
        out: &wgpu::Buffer,
        opts: &RetrieveOptions,
    ) -> Result<()> {
        self.encode_retrieve_with(
            encoder,
            bank,
            queries,
            l,
            &RetrieveBuffers { z: out, energy: None, support: None },
            opts,
        )
    }

    /// [`Context::encode_retrieve`] with optional energy and support outputs
    /// (each computed when its buffer is given).
    pub fn encode_retrieve_with(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        bank: &MemoryBank,
        queries: &wgpu::Buffer,
        l: usize,
        outputs: &RetrieveBuffers<'_>,
        opts: &RetrieveOptions,
    ) -> Result<()> {
        let opts =
            RetrieveOptions { energy: outputs.energy.is_some(), support: outputs.support.is_some(), ..opts.clone() };
        opts.validate()?;
        if opts.max_steps > MAX_ENCODED_STEPS {
            return Err(Error::unsupported(
                "max_steps",
                None,
                format!(
                    "encode_retrieve records every step (no early exit without a readback), at most \
                     {MAX_ENCODED_STEPS}; call it again on its output for more, or use retrieve"
                ),
            ));
        }
        self.scoped(|| {
            let job = Job::new(self, bank, self.config(), &opts, l, None)?;
            let (d, cols) = (bank.dim(), job.cols);
            check("queries", queries, l * d * 4, wgpu::BufferUsages::COPY_SRC)?;
            check("z", outputs.z, l * cols * 4, wgpu::BufferUsages::COPY_DST)?;
            if let Some(e) = outputs.energy {
                check("energy", e, l * 4, wgpu::BufferUsages::COPY_DST)?;
            }
            if let (Some(s), Some(w)) = (outputs.support, job.support_width) {
                check("support", s, l * w * 4, wgpu::BufferUsages::COPY_DST)?;
            }
            // Detached scratch: the caller submits later, so nothing goes back
            // to the pool. Within this encoder the batches share the buffers
            // (each writes them before reading, in command order).
            let mut rec = Recorder::new(self, Scratch::detached(self));
            let bufs = job.buffers(&mut rec)?;
            let energies = match outputs.energy {
                Some(_) => Some(
                    rec.buffer((job.batch * 4) as u64, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC)?,
                ),
                None => None,
            };
            for start in (0..l).step_by(job.batch) {
                let lb = job.batch.min(l - start);
                encoder.copy_buffer_to_buffer(queries, (start * d * 4) as u64, &bufs.queries, 0, (lb * d * 4) as u64);
                let mut passes = Passes::new(None);
                job.begin(encoder, &bufs, lb);
                job.steps(&mut rec, encoder, &mut passes, &bufs, lb, start, opts.max_steps, false)?;
                job.finish(&mut rec, encoder, &mut passes, &bufs, lb)?;
                encoder.copy_buffer_to_buffer(
                    &bufs.target,
                    0,
                    outputs.z,
                    (start * cols * 4) as u64,
                    (lb * cols * 4) as u64,
                );
                if let (Some(e), Some(tmp)) = (outputs.energy, &energies) {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    update::encode_energies(&mut rec, &mut pass, &bufs.info, tmp, lb)?;
                    drop(pass);
                    encoder.copy_buffer_to_buffer(tmp, 0, e, (start * 4) as u64, (lb * 4) as u64);
                }
                if let (Some(s), Some(w), Some(buf)) = (outputs.support, job.support_width, &bufs.support) {
                    encoder.copy_buffer_to_buffer(buf, 0, s, (start * w * 4) as u64, (lb * w * 4) as u64);
                }
            }
            rec.flush();
            Ok(())
        })
    }
}

/// A caller's buffer must hold `bytes` and have `usage`.
fn check(what: &'static str, buf: &wgpu::Buffer, bytes: usize, usage: wgpu::BufferUsages) -> Result<()> {
    if buf.size() < bytes as u64 {
        return Err(Error::ShapeMismatch {
            what: format!("the {what} buffer's size in bytes"),
            expected: bytes,
            got: usize::try_from(buf.size()).unwrap_or(usize::MAX),
        });
    }
    if !buf.usage().contains(usage) {
        return Err(Error::unsupported(what, None, format!("the buffer lacks {usage:?} usage")));
    }
    Ok(())
}
