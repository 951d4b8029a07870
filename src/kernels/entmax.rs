//! Host side of `shaders/entmax.wgsl`: exact sparsemax and 1.5-entmax
//! retrieval. Per sub-batch of queries whose score rows fit one storage
//! binding it records the scoring (one dispatch per memory segment), the
//! per-query threshold, and the weighted sum of values (per segment, cut
//! into runs that keep each invocation inside the driver's loop budget).

use bytemuck::{Pod, Zeroable};

use super::{entire, Kernel, Recorder, StepArgs, MAX_GROUPS};
use crate::error::{Error, Resource, Result};
use crate::shaders::Shader;

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

/// Bisection steps at most, handed to entmax.wgsl as the override `MAX_IT`.
const MAX_IT: usize = 64;

/// The override constants of entmax.wgsl.
fn constants() -> [(&'static str, f64); 1] {
    [("MAX_IT", MAX_IT as f64)]
}

/// Loop iterations one invocation of `threshold` runs for `m` memories, each
/// loop counted with one more for its exit: the max pass, `MAX_IT` bisection
/// passes, two closed-form passes and the weight pass over ceil(m/64)
/// entries, each followed by a 6-step reduction, then the support scan.
fn threshold_cost(m: usize) -> usize {
    let pass = m.div_ceil(64) + 1;
    (MAX_IT + 4) * (pass + 7) + 1 + 3 * pass + 65
}

/// Record one sparsemax (`entmax15` false) or 1.5-entmax step: z (and the
/// support) for `args.l` queries.
pub(crate) fn encode(
    rec: &mut Recorder<'_>,
    pass: &mut wgpu::ComputePass<'_>,
    args: &StepArgs<'_>,
    entmax15: bool,
) -> Result<()> {
    let ctx = rec.ctx;
    let bank = args.bank;
    let (m, d, dv) = (bank.len(), bank.dim(), bank.value_dim());
    let name = if entmax15 { "entmax15" } else { "sparsemax" };
    // Rows of one `weighted` dispatch: ceil(dv/64) columns per thread, each a
    // loop over the rows.
    let run_rows = match ctx.loop_budget() {
        Some(budget) => {
            if threshold_cost(m) > budget || d + 2 > budget {
                let most = (1..).map(|k| k * 64).take_while(|&mm| threshold_cost(mm) <= budget).last().unwrap_or(0);
                return Err(Error::limit(
                    format!("{name}'s threshold search over M = {m} memories (this driver handles at most {most})"),
                    Resource::LoopIterations,
                    threshold_cost(m).max(d + 2),
                    budget as u64,
                ));
            }
            (budget / dv.div_ceil(64)).saturating_sub(2).max(1)
        }
        None => usize::MAX,
    };
    let max_bind = ctx.max_binding() as usize;
    let sub = (max_bind / (m * 4)).min(MAX_GROUPS * MAX_GROUPS / m.div_ceil(64)).min(args.l);
    if sub == 0 || m > u32::MAX as usize / 2 {
        return Err(Error::limit(
            format!("{name}: one query's {m} scores"),
            Resource::BindingBytes,
            (m as u64).saturating_mul(4),
            ctx.max_binding(),
        ));
    }
    let rows = rec.buffer((sub * m * 4) as u64, wgpu::BufferUsages::STORAGE)?;
    let support = args.support.unwrap_or(ctx.placeholder());
    let width = if args.support.is_some() { m } else { 0 };
    let score = Kernel::new(ctx, Shader::Entmax, "score", &constants())?;
    let threshold = Kernel::new(ctx, Shader::Entmax, "threshold", &constants())?;
    let weighted = Kernel::new(ctx, Shader::Entmax, "weighted", &constants())?;
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
            entmax: entmax15 as u32,
            width: width as u32,
            groups_x: groups_x as u32,
            beta: args.beta,
            _pad: [0; 2],
        };
        for (seg, s) in bank.segments.iter().enumerate() {
            let units = lq * s.rows.div_ceil(64);
            let gx = units.min(MAX_GROUPS);
            let bindings = [(1, entire(args.queries)), (2, s.key_binding(d)), (4, entire(&rows))];
            rec.dispatch(
                pass,
                &score,
                &params(seg, 0, 0, false, gx),
                &bindings,
                (gx as u32, units.div_ceil(gx) as u32, 1),
            )?;
        }
        let gx = lq.min(MAX_GROUPS);
        let gy = lq.div_ceil(gx) as u32;
        let bindings = [(4, entire(&rows)), (6, entire(support))];
        rec.dispatch(pass, &threshold, &params(0, 0, 0, false, gx), &bindings, (gx as u32, gy, 1))?;

        let mut first = true;
        for (seg, s) in bank.segments.iter().enumerate() {
            for r0 in (0..s.rows).step_by(run_rows.min(s.rows)) {
                let r1 = (r0 + run_rows).min(s.rows);
                let bindings = [(3, s.value_binding(dv)), (4, entire(&rows)), (5, entire(args.z))];
                rec.dispatch(pass, &weighted, &params(seg, r0, r1, first, gx), &bindings, (gx as u32, gy, 1))?;
                first = false;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaders::{check_constants, wgsl_struct_size};

    #[test]
    fn structs_match_the_wgsl_layouts() {
        assert_eq!(wgsl_struct_size(Shader::Entmax, "Params"), size_of::<EntmaxParams>());
        for entry in ["score", "threshold", "weighted"] {
            check_constants(Shader::Entmax, entry, &constants());
        }
    }

    #[test]
    fn threshold_cost_grows_with_m() {
        // The bench shape fits llvmpipe's budget; a million memories does not.
        assert!(threshold_cost(4096) < 50_000);
        assert!(threshold_cost(1_000_000) > 50_000);
    }
}
