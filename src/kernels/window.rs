//! Host side of `shaders/window.wgsl`: sliding-window retrieval. The host
//! computes each query's window with [`crate::cpu::sparse::window_range`] (the
//! centre `floor(l M / L)` needs more than u32), cuts it into chunks that keep
//! every invocation inside the driver's loop budget and into the memory
//! segments it straddles, and records one `part` dispatch per segment and one
//! `merge` dispatch, per sub-batch of queries whose partial results fit a
//! storage binding.

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use super::dense::MAX_GROUPS;
use super::{bind_group, entire, uniform, StepArgs};
use crate::context::Context;
use crate::error::{Error, Result};

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

/// Window positions per workgroup at most: the size of `sc` in window.wgsl.
const CH_MAX: usize = 2048;

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
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    args: &StepArgs<'_>,
    width: usize,
    scratch: &mut Vec<wgpu::Buffer>,
) -> Result<()> {
    let bank = args.bank;
    let (m, d, dv) = (bank.len(), bank.dim(), bank.value_dim());
    if m > u32::MAX as usize || args.l0 + args.l > u32::MAX as usize {
        return Err(Error::DeviceLimit("window retrieval indexes memories and queries with u32".into()));
    }
    let chunk = chunk_rows(ctx.loop_budget(), d, dv).ok_or_else(|| {
        Error::Unsupported(format!("window retrieval cannot fit d = {d}, dv = {dv} into this driver's loop limit"))
    })?;
    // (a, b, first segment, last segment) per query of the batch.
    let wins: Vec<[u32; 4]> = (args.l0..args.l0 + args.l)
        .map(|gl| {
            let r = crate::cpu::sparse::window_range(gl, args.l_total, m, width);
            [r.start as u32, r.end as u32, segment_of(args, r.start) as u32, segment_of(args, r.end - 1) as u32]
        })
        .collect();
    let n_chunks = wins.iter().map(|w| (w[1] - w[0]) as usize).max().unwrap_or(1).div_ceil(chunk);
    let n_segs = wins.iter().map(|w| (w[3] - w[2]) as usize + 1).max().unwrap_or(1);
    let support_cols = if args.support.is_some() {
        super::support_width(&crate::Method::Window { width: Some(width) }, m).unwrap_or(0)
    } else {
        0
    };
    if let Some(budget) = ctx.loop_budget() {
        // merge: two passes over the slots, then ceil(dv/64) more, then the support columns.
        let slots = n_chunks * n_segs;
        let cost = 2 * (slots + n_segs + 1) + dv.div_ceil(64) * (slots + n_segs + 1) + support_cols.div_ceil(64) + 4;
        if cost > budget {
            return Err(Error::Unsupported(format!(
                "a window of {width} memories over {n_segs} segments exceeds this driver's loop limit"
            )));
        }
    }
    let slots = n_chunks * n_segs;
    let max_bind = ctx.max_binding() as usize;
    let sub = (max_bind / (slots * dv * 4)).min(max_bind / (slots * 8)).min(MAX_GROUPS * MAX_GROUPS).min(args.l);
    if sub == 0 {
        return Err(Error::DeviceLimit(format!(
            "the partial results of one query's window ({slots} chunks of {dv} floats) do not fit a storage binding"
        )));
    }
    let win = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("windows"),
        contents: bytemuck::cast_slice(&wins),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let part_o = ctx.acquire((sub * slots * dv * 4) as u64, wgpu::BufferUsages::STORAGE)?;
    let part_stats = ctx.acquire((sub * slots * 8) as u64, wgpu::BufferUsages::STORAGE)?;
    let dummy;
    let support = match args.support {
        Some(s) => s,
        None => {
            dummy = ctx.acquire(16, wgpu::BufferUsages::STORAGE)?;
            scratch.push(dummy.clone());
            &dummy
        }
    };
    scratch.push(part_o.clone());
    scratch.push(part_stats.clone());

    let part = ctx.pipeline("window", "part", &[])?;
    let merge = ctx.pipeline("window", "merge", &[])?;
    for q_off in (0..args.l).step_by(sub) {
        let lq = sub.min(args.l - q_off);
        let groups_x = lq.min(MAX_GROUPS);
        let groups_y = lq.div_ceil(groups_x);
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
            groups_x: groups_x as u32,
            beta: args.beta,
            _pad: [0; 3],
        };
        pass.set_pipeline(&part);
        for seg in s_first..=s_last {
            let s = &bank.segments[seg];
            let pbuf = uniform(ctx, &params(seg));
            let group = bind_group(
                ctx,
                &part.get_bind_group_layout(0),
                "window part",
                &[
                    (0, entire(&pbuf)),
                    (1, entire(args.queries)),
                    (2, entire(&win)),
                    (3, s.key_binding(d)),
                    (4, s.value_binding(dv)),
                    (5, entire(&part_o)),
                    (6, entire(&part_stats)),
                ],
            );
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(groups_x as u32, groups_y as u32, n_chunks as u32);
        }
        let pbuf = uniform(ctx, &params(s_first));
        let group = bind_group(
            ctx,
            &merge.get_bind_group_layout(0),
            "window merge",
            &[
                (0, entire(&pbuf)),
                (2, entire(&win)),
                (5, entire(&part_o)),
                (6, entire(&part_stats)),
                (7, entire(args.z)),
                (8, entire(support)),
            ],
        );
        pass.set_pipeline(&merge);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(groups_x as u32, groups_y as u32, 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
