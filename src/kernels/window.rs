//! Host side of `shaders/window.wgsl`: sliding-window retrieval (reference:
//! `src/cpu/window.rs`). The host computes each query's window with
//! [`crate::method::window_range`] (the
//! centre `floor(l M / L)` needs more than u32), cuts it into chunks that keep
//! every invocation inside the driver's loop budget and into the memory
//! segments it straddles, and records one `part` dispatch per segment and one
//! `merge` dispatch, per sub-batch of queries whose partial results fit a
//! storage binding.

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use super::{entire, grid, Kernel, Recorder, StepArgs, MAX_GROUPS};
use crate::error::{Error, Resource, Result};
use crate::method::window_range;
use crate::shaders::Shader;

/// Keep in sync with `Params` in shaders/window.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct WindowParams {
    pub l: u32,
    pub q_off: u32,
    pub d: u32,
    pub dv: u32,
    pub seg: u32,
    pub seg_row0: u32,
    pub seg_rows: u32,
    pub chunk: u32,
    pub n_chunks: u32,
    pub n_segs: u32,
    pub width: u32,
    pub groups_x: u32,
    pub beta: f32,
    pub _pad: [u32; 3],
}

/// Window positions per workgroup at most: the size of `sc` in window.wgsl,
/// handed to it as the override `CH_MAX`.
const CH_MAX: usize = 2048;

/// The override constants of window.wgsl.
fn constants() -> [(&'static str, f64); 1] {
    [("CH_MAX", CH_MAX as f64)]
}

/// The largest chunk (window positions per `part` workgroup) whose loops
/// stay inside `budget` iterations per invocation: per chunk, each thread
/// scores ceil(ch/64) memories of d products (plus one exit each), runs the
/// exp pass and two 6-step reductions, and accumulates ceil(dv/64) columns
/// over ch memories.
fn chunk_rows(budget: Option<usize>, d: usize, dv: usize) -> Option<usize> {
    let cost = |ch: usize| {
        let per = ch.div_ceil(64);
        per * (d + 1) + 1 + (per + 1) + 2 * 7 + dv.div_ceil(64) * (ch + 1) + 1
    };
    let mut ch = CH_MAX;
    match budget {
        None => Some(ch),
        Some(b) => {
            while cost(ch) > b {
                if ch == 1 {
                    return None;
                }
                ch /= 2;
            }
            Some(ch)
        }
    }
}

/// Index of the segment holding memory `g`.
fn segment_of(args: &StepArgs<'_>, g: usize) -> usize {
    args.bank.segments.partition_point(|s| s.row0 <= g) - 1
}

/// Record one window step: z (and the support) for `args.l` queries.
pub(crate) fn encode(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    args: &StepArgs<'_>,
    width: usize,
) -> Result<()> {
    let ctx = rec.ctx;
    let bank = args.bank;
    let (m, d, dv) = (bank.len(), bank.dim(), bank.value_dim());
    if m > u32::MAX as usize || args.l0 + args.l > u32::MAX as usize {
        return Err(Error::limit(
            "window retrieval's memory and query indices",
            Resource::Indices,
            m.max(args.l0 + args.l),
            u64::from(u32::MAX),
        ));
    }
    let chunk = chunk_rows(ctx.loop_budget(), d, dv).ok_or_else(|| {
        Error::limit(
            format!("one window position at d = {d}, dv = {dv}"),
            Resource::LoopIterations,
            d + dv,
            ctx.loop_budget().unwrap_or(0) as u64,
        )
    })?;
    // (a, b, first segment, last segment) per query of the batch.
    let wins: Vec<[u32; 4]> = (args.l0..args.l0 + args.l)
        .map(|gl| {
            let r = window_range(gl, args.l_total, m, width);
            [r.start as u32, r.end as u32, segment_of(args, r.start) as u32, segment_of(args, r.end - 1) as u32]
        })
        .collect();
    let n_chunks = wins.iter().map(|w| (w[1] - w[0]) as usize).max().unwrap_or(1).div_ceil(chunk);
    let n_segs = wins.iter().map(|w| (w[3] - w[2]) as usize + 1).max().unwrap_or(1);
    let support_cols = if args.support.is_some() { width.min(m) } else { 0 };
    if let Some(budget) = ctx.loop_budget() {
        // merge: two passes over the slots, then ceil(dv/64) more, then the support columns.
        let slots = n_chunks * n_segs;
        let cost = 2 * (slots + n_segs + 1) + dv.div_ceil(64) * (slots + n_segs + 1) + support_cols.div_ceil(64) + 4;
        if cost > budget {
            return Err(Error::limit(
                format!("merging a window of {width} memories over {n_segs} segments"),
                Resource::LoopIterations,
                cost,
                budget as u64,
            ));
        }
    }
    let slots = n_chunks * n_segs;
    let max_bind = ctx.max_binding() as usize;
    let sub = (max_bind / (slots * dv * 4)).min(max_bind / (slots * 8)).min(MAX_GROUPS * MAX_GROUPS).min(args.l);
    if sub == 0 {
        return Err(Error::limit(
            format!("the partial results of one query's window ({slots} chunks of {dv} floats)"),
            Resource::BindingBytes,
            slots * dv.max(2) * 4,
            ctx.max_binding(),
        ));
    }
    let win = ctx.device().create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("windows"),
        contents: bytemuck::cast_slice(&wins),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let part_o = rec.buffer((sub * slots * dv * 4) as u64, wgpu::BufferUsages::STORAGE)?;
    let part_stats = rec.buffer((sub * slots * 8) as u64, wgpu::BufferUsages::STORAGE)?;
    let support = args.support.unwrap_or(ctx.placeholder());

    let part = Kernel::new(ctx, Shader::Window, "part", &constants())?;
    let merge = Kernel::new(ctx, Shader::Window, "merge", &constants())?;
    for q_off in (0..args.l).step_by(sub) {
        let lq = sub.min(args.l - q_off);
        let (gx, gy) = grid(lq);
        let batch = &wins[q_off..q_off + lq];
        let s_first = batch.iter().map(|w| w[2]).min().unwrap_or(0) as usize;
        let s_last = batch.iter().map(|w| w[3]).max().unwrap_or(0) as usize;
        let params = |seg: usize| WindowParams {
            l: lq as u32,
            q_off: q_off as u32,
            d: d as u32,
            dv: dv as u32,
            seg: seg as u32,
            seg_row0: bank.segments[seg].row0 as u32,
            seg_rows: bank.segments[seg].rows as u32,
            chunk: chunk as u32,
            n_chunks: n_chunks as u32,
            n_segs: n_segs as u32,
            width: support_cols as u32,
            groups_x: gx,
            beta: args.beta,
            _pad: [0; 3],
        };
        for seg in s_first..=s_last {
            let s = &bank.segments[seg];
            let bindings = [
                (1, entire(args.queries)),
                (2, entire(&win)),
                (3, s.key_binding(d)),
                (4, s.value_binding(dv)),
                (5, entire(&part_o)),
                (6, entire(&part_stats)),
            ];
            rec.dispatch(pass, &part, &params(seg), &bindings, (gx, gy, n_chunks as u32))?;
        }
        let bindings = [
            (2, entire(&win)),
            (5, entire(&part_o)),
            (6, entire(&part_stats)),
            (7, entire(args.z)),
            (8, entire(support)),
        ];
        rec.dispatch(pass, &merge, &params(s_first), &bindings, (gx, gy, 1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaders::{check_constants, wgsl_struct_size};

    #[test]
    fn structs_match_the_wgsl_layouts() {
        assert_eq!(wgsl_struct_size(Shader::Window, "Params"), size_of::<WindowParams>());
        for entry in ["part", "merge"] {
            check_constants(Shader::Window, entry, &constants());
        }
    }

    #[test]
    fn chunks_respect_the_loop_budget() {
        assert_eq!(chunk_rows(None, 3072, 3072), Some(CH_MAX));
        for (d, dv) in [(1, 1), (64, 64), (784, 784), (3072, 3072), (64, 70)] {
            let ch = chunk_rows(Some(50_000), d, dv).unwrap();
            assert!((1..=CH_MAX).contains(&ch), "d {d}: {ch}");
        }
        assert_eq!(chunk_rows(Some(50_000), 64, 64), Some(CH_MAX));
        assert!(chunk_rows(Some(50_000), 3072, 3072).unwrap() < 1024);
        assert_eq!(chunk_rows(Some(10), 64, 64), None);
    }
}
