//! `hopfield-gpu analyze`: the seed papers' quantities for a memory set
//! (and queries): geometry, well-separation, capacity, the efficiency
//! criterion, and each query's one-step error bounds beside the error the
//! engine measures ([`hopfield_gpu::theory`]). The O(M^2 d) sweep runs on
//! the GPU (`Context::separation`); a readable report, or JSON with `--json`.

use std::path::PathBuf;
use std::time::Instant;

use hopfield_gpu::theory::{self, Measured, Params, QueryInputs};
use hopfield_gpu::{npy, MemoryBank, Method, RetrieveOptions};

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stored patterns, a 2-D [M, d] .npy (float32, float64 or uint8).
    #[arg(long, value_name = "M.npy")]
    memories: PathBuf,
    /// Queries [L, d]: each gets its nearest pattern, its bounds and the measured one-step error.
    #[arg(long, value_name = "X.npy")]
    queries: Option<PathBuf>,
    /// Inverse temperature (> 0).
    #[arg(long, value_name = "B", allow_negative_numbers = true)]
    beta: f64,
    /// delta_A of the polynomial path (Lemma B.1, Thm 3.2, Thm B.1), in (0, 1); default: exact dense.
    #[arg(long, value_name = "D", allow_negative_numbers = true)]
    delta: Option<f64>,
    /// K of top-K (Thm 4.1, Thm 4.2, Lemma 4.2).
    #[arg(long, value_name = "K", allow_negative_numbers = true)]
    k: Option<usize>,
    /// Failure probability p of the capacity bounds, in (0, 1).
    #[arg(long, value_name = "P", default_value_t = 0.01, allow_negative_numbers = true)]
    p: f64,
    /// Radius r of the balls S_mu (default R = half the smallest pairwise distance).
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    radius: Option<f64>,
    /// Tolerance for the planner's verdict (max-norm distance to dense, one step).
    #[arg(long, value_name = "T", default_value_t = 1e-2, allow_negative_numbers = true)]
    tolerance: f64,
    /// Print the report as JSON (stable keys) instead of text.
    #[arg(long)]
    json: bool,
}

/// `|z_l - xi_{nearest(l)}|_2` per query, in f64.
fn errors(z: &[f32], memories: &[f32], d: usize, nearest: &[theory::QueryGeometry]) -> Vec<f64> {
    nearest
        .iter()
        .enumerate()
        .map(|(l, q)| {
            let xi = &memories[q.nearest * d..(q.nearest + 1) * d];
            z[l * d..(l + 1) * d]
                .iter()
                .zip(xi)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect()
}

pub fn run(args: &Args, device: &Option<String>) -> Result<(), CliError> {
    let mut prm = Params {
        beta: args.beta,
        delta: args.delta,
        k: args.k,
        p: args.p,
        radius: args.radius,
        tolerance: args.tolerance,
        max_state_bytes: u64::MAX,
    };
    // Every flag is checked before a file is read or a device opened.
    prm.validate()?;
    let mem = npy::read_2d(&args.memories)?;
    let q = args.queries.as_ref().map(|p| npy::read_2d(p)).transpose()?;
    if let (Some(q), Some(path)) = (&q, &args.queries) {
        if q.cols != mem.cols {
            return Err(CliError::Usage {
                flag: "--queries",
                why: format!("{} has d = {}, but the memories have d = {}", path.display(), q.cols, mem.cols),
            });
        }
        if q.rows == 0 {
            return Err(CliError::Usage { flag: "--queries", why: format!("{} has no rows", path.display()) });
        }
    }
    if f64::from(args.beta as f32) <= 0.0 || !(args.beta as f32).is_finite() {
        return Err(CliError::Usage { flag: "--beta", why: format!("{} does not fit an f32 > 0", args.beta) });
    }
    let (m, d) = (mem.rows, mem.cols);
    let t0 = Instant::now();
    let ctx = super::context(device)?;
    prm.max_state_bytes = ctx.max_binding();
    let bank = MemoryBank::new(&ctx, &mem.data, m, d)?;
    let t_sweep = Instant::now();
    let sweep = ctx.separation(&bank)?;
    let sweep_s = t_sweep.elapsed().as_secs_f64();
    let g = theory::geometry(&mem.data, m, d, &sweep.rows)?;
    let report = match &q {
        None => theory::report(&g, &mem.data, None, &prm)?,
        Some(q) => {
            let qs = ctx.neighbours(&bank, &q.data)?;
            let qg = theory::query_geometry(&mem.data, d, &q.data, &qs.rows)?;
            let beta = args.beta as f32;
            let one_step = |method: Method, support: bool| {
                let opts = RetrieveOptions { method, beta, max_steps: 1, eps: 0.0, energy: false, support };
                ctx.retrieve(&bank, &q.data, &opts)
            };
            let dense = one_step(Method::Dense, false)?;
            let topk = match args.k {
                Some(k) => {
                    let r = one_step(Method::TopK { k }, true)?;
                    let s = r.support.as_ref().ok_or_else(|| CliError::Usage {
                        flag: "--k",
                        why: "top-K retrieval returned no support".into(),
                    })?;
                    let inside = qg
                        .iter()
                        .enumerate()
                        .map(|(l, g)| s.indices[l * s.width..(l + 1) * s.width].contains(&(g.nearest as i32)))
                        .collect();
                    Some((errors(&r.z, &mem.data, d, &qg), inside))
                }
                None => None,
            };
            let poly = args.delta.map(|delta| {
                one_step(Method::Poly { delta, degree: None }, false)
                    .map(|r| errors(&r.z, &mem.data, d, &qg))
                    .map_err(|e| super::lib_message(&e))
            });
            // f32 rounding of z: a few units in the last place of entries
            // up to m (16 u m, u = 2^-24); below it an error is unresolved.
            let floor = 1e-6 * g.m.max(1.0);
            let measured = Measured { dense: errors(&dense.z, &mem.data, d, &qg), topk, poly, floor };
            theory::report(
                &g,
                &mem.data,
                Some(QueryInputs { queries: &q.data, geometry: &qg, measured: &measured }),
                &prm,
            )?
        }
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| CliError::Usage { flag: "--json", why: format!("could not serialise the report: {e}") })?;
        println!("{text}");
    } else {
        print!("{report}");
    }
    eprintln!(
        "analyze on {}: M = {m}, d = {d}; pairwise sweep {:.3} s ({} splits of {} memories, {} batches); total {:.3} s",
        ctx.report().name,
        sweep_s,
        sweep.splits,
        sweep.split_cols,
        sweep.batches,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
