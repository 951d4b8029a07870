//! Host side of `shaders/entmax.wgsl`: exact sparsemax and 1.5-entmax
//! retrieval. Per sub-batch of queries whose score rows fit one storage
//! binding it records the scoring (one dispatch per memory segment), the
//! per-query threshold, and the weighted sum of values (per segment, cut
//! into runs that keep each invocation inside the driver's loop budget).

use bytemuck::{Pod, Zeroable};

use super::dense::MAX_GROUPS;
use super::{bind_group, entire, uniform, StepArgs};
use crate::context::Context;
use crate::error::{Error, Result};

/// Keep in sync with `Params` in shaders/entmax.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub(crate) struct EntmaxParams {
    pub l: u32,
    pub q_off: u32,
    pub d: u32,
    pub dv: u32,
    pub m: u32,
    pub seg_row0: u32,
    pub seg_rows: u32,
    pub r0: u32,
    pub r1: u32,
    pub first: u32,
    pub entmax: u32,
    pub width: u32,
    pub groups_x: u32,
    pub beta: f32,
    pub _pad: [u32; 2],
}

/// Bisection steps at most (`MAX_IT` in entmax.wgsl).
const MAX_IT: usize = 64;

/// Loop iterations one invocation of `threshold` runs for `m` memories, each
/// loop counted with one more for its exit: the max pass, `MAX_IT` bisection
/// passes, two closed-form passes and the weight pass over ceil(m/64)
/// entries, each followed by a 6-step reduction, then the support scan.
fn threshold_cost(m: usize) -> usize {
    let pass = m.div_ceil(64) + 1;
    (MAX_IT + 4) * (pass + 7) + 1 + 3 * pass + 65
}

/// Which map replaces softmax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Map {
    Sparsemax = 0,
    Entmax15 = 1,
}

/// Record one sparsemax / 1.5-entmax step: z (and the support) for `args.l` queries.
pub(crate) fn encode(
    ctx: &Context,
    pass: &mut wgpu::ComputePass<'_>,
    args: &StepArgs<'_>,
    map: Map,
    scratch: &mut Vec<wgpu::Buffer>,
) -> Result<()> {
    let bank = args.bank;
    let (m, d, dv) = (bank.len(), bank.dim(), bank.value_dim());
    let name = if map == Map::Sparsemax { "sparsemax" } else { "entmax15" };
    // Rows of one `weighted` dispatch: ceil(dv/64) columns per thread, each a
    // loop over the rows.
    let run_rows = match ctx.loop_budget() {
        Some(budget) => {
            if threshold_cost(m) > budget || d + 2 > budget {
                return Err(Error::Unsupported(format!(
                    "{name} on this driver handles at most {} memories (its loop limiter; M = {m})",
                    (1..).map(|k| k * 64).take_while(|&mm| threshold_cost(mm) <= budget).last().unwrap_or(0)
                )));
            }
            (budget / dv.div_ceil(64)).saturating_sub(2).max(1)
        }
        None => usize::MAX,
    };
    let max_bind = ctx.max_binding() as usize;
    let sub = (max_bind / (m * 4)).min(MAX_GROUPS * MAX_GROUPS / m.div_ceil(64)).min(args.l);
    if sub == 0 || m > u32::MAX as usize / 2 {
        return Err(Error::DeviceLimit(format!(
            "{name}: one query's {m} scores do not fit a storage binding of {max_bind} bytes"
        )));
    }
    let rows = ctx.acquire((sub * m * 4) as u64, wgpu::BufferUsages::STORAGE)?;
    scratch.push(rows.clone());
    let dummy;
    let support = match args.support {
        Some(s) => s,
        None => {
            dummy = ctx.acquire(16, wgpu::BufferUsages::STORAGE)?;
            scratch.push(dummy.clone());
            &dummy
        }
    };
    let width = if args.support.is_some() { m } else { 0 };
    let score = ctx.pipeline("entmax", "score", &[])?;
    let threshold = ctx.pipeline("entmax", "threshold", &[])?;
    let weighted = ctx.pipeline("entmax", "weighted", &[])?;
    for q_off in (0..args.l).step_by(sub) {
        let lq = sub.min(args.l - q_off);
        let params = |seg: usize, r0: usize, r1: usize, first: bool, groups_x: usize| EntmaxParams {
            l: lq as u32,
            q_off: q_off as u32,
            d: d as u32,
            dv: dv as u32,
            m: m as u32,
            seg_row0: bank.segments[seg].row0 as u32,
            seg_rows: bank.segments[seg].rows as u32,
            r0: r0 as u32,
            r1: r1 as u32,
            first: first as u32,
            entmax: map as u32,
            width: width as u32,
            groups_x: groups_x as u32,
            beta: args.beta,
            _pad: [0; 2],
        };
        pass.set_pipeline(&score);
        for (seg, s) in bank.segments.iter().enumerate() {
            let units = lq * s.rows.div_ceil(64);
            let gx = units.min(MAX_GROUPS);
            let pbuf = uniform(ctx, &params(seg, 0, 0, false, gx));
            let group = bind_group(
                ctx,
                &score.get_bind_group_layout(0),
                "entmax score",
                &[(0, entire(&pbuf)), (1, entire(args.queries)), (2, s.key_binding(d)), (4, entire(&rows))],
            );
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(gx as u32, units.div_ceil(gx) as u32, 1);
        }
        let gx = lq.min(MAX_GROUPS);
        let gy = lq.div_ceil(gx) as u32;
        let pbuf = uniform(ctx, &params(0, 0, 0, false, gx));
        let group = bind_group(
            ctx,
            &threshold.get_bind_group_layout(0),
            "entmax threshold",
            &[(0, entire(&pbuf)), (4, entire(&rows)), (6, entire(support))],
        );
        pass.set_pipeline(&threshold);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(gx as u32, gy, 1);

        pass.set_pipeline(&weighted);
        let mut first = true;
        for (seg, s) in bank.segments.iter().enumerate() {
            for r0 in (0..s.rows).step_by(run_rows.min(s.rows)) {
                let r1 = (r0 + run_rows).min(s.rows);
                let pbuf = uniform(ctx, &params(seg, r0, r1, first, gx));
                first = false;
                let group = bind_group(
                    ctx,
                    &weighted.get_bind_group_layout(0),
                    "entmax weighted",
                    &[(0, entire(&pbuf)), (3, s.value_binding(dv)), (4, entire(&rows)), (5, entire(args.z))],
                );
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(gx as u32, gy, 1);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_cost_grows_with_m() {
        // The bench shape fits llvmpipe's budget; a million memories does not.
        assert!(threshold_cost(4096) < 50_000);
        assert!(threshold_cost(1_000_000) > 50_000);
    }
}
