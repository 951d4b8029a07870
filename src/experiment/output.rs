//! Writing an experiment's folder: `results.csv`, `results.json`,
//! `plot.png`, `plot.svg` and a `README.md` with the exact command and the
//! device. Every file is written atomically: to a temporary file in the same
//! folder, then renamed over the target, so a reader never sees half a file
//! and an interrupted run leaves the previous results intact.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{plot, Results, Row};
use crate::error::{Error, Result};

/// Write `bytes` to `path` atomically (temporary file + rename, same folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

fn cell(v: Option<f64>) -> String {
    // `{}` prints the shortest text that reads back to the same f64.
    v.map_or(String::new(), |v| format!("{v}"))
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV text: one row per (method, parameter, x value).
pub fn csv(r: &Results) -> String {
    let mut out = String::from(
        "experiment,variant,method,parameter,x_name,x,trials,mean,std,success_cosine_mean,success_cosine_std,\
         success_sqdist_mean,success_sqdist_std,success_authors_mean,success_authors_std,p_in_support,\
         p_in_support_measured,success_given_in_support,median_ms,gpu_median_ms,ratio_to_dense,skipped\n",
    );
    for row in &r.rows {
        let Row {
            method,
            parameter,
            x,
            trials,
            mean,
            std,
            success_cosine_mean,
            success_cosine_std,
            success_sqdist_mean,
            success_sqdist_std,
            success_authors_mean,
            success_authors_std,
            p_in_support,
            p_in_support_measured,
            success_given_in_support,
            median_ms,
            gpu_median_ms,
            ratio_to_dense,
            skipped,
        } = row;
        let cells = [
            r.experiment.name().to_string(),
            r.variant.name().to_string(),
            quote(method),
            quote(parameter),
            r.x_name.to_string(),
            format!("{x}"),
            trials.to_string(),
            cell(*mean),
            cell(*std),
            cell(*success_cosine_mean),
            cell(*success_cosine_std),
            cell(*success_sqdist_mean),
            cell(*success_sqdist_std),
            cell(*success_authors_mean),
            cell(*success_authors_std),
            cell(*p_in_support),
            cell(*p_in_support_measured),
            cell(*success_given_in_support),
            cell(*median_ms),
            cell(*gpu_median_ms),
            cell(*ratio_to_dense),
            quote(skipped.as_deref().unwrap_or("")),
        ];
        out += &cells.join(",");
        out.push('\n');
    }
    out
}

/// The folder's README: what ran, where, and how to read the files.
pub fn readme(r: &Results, wall_s: f64) -> String {
    let dev = &r.device;
    let mut s = String::new();
    let _ = writeln!(s, "# hopfield-gpu experiment: {} (variant {})\n", r.experiment.name(), r.variant.name());
    let _ = writeln!(s, "Made by this command (hopfield-gpu {}):\n", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "    {}\n", r.command);
    let _ = writeln!(
        s,
        "Device: {} ({}, {}, driver {}). Wall time of the whole run: {:.1} s.\n",
        dev.name, dev.backend, dev.device_type, dev.driver, wall_s
    );
    let _ = writeln!(
        s,
        "Data: {}; normalisation: {}; beta = {}; steps = {}; seed = {}; trials per point = {}{}.\n",
        r.data,
        r.normalize,
        r.beta,
        r.steps,
        r.seed,
        r.trials,
        match (r.noise_broadcast, r.authors_sign_scores) {
            (false, false) => "",
            (true, false) => "; the authors' row-broadcast noise",
            (false, true) => "; the authors' sign scores (F.normalize)",
            (true, true) => "; the authors' row-broadcast noise and sign scores (F.normalize)",
        }
    );
    let _ = writeln!(s, "Primary measure (`mean`, `std` over trials; std is the sample deviation): {}.\n", r.metric);
    let _ = writeln!(s, "Files:");
    let _ = writeln!(s, "- `results.csv`, `results.json`: one row per (method, parameter, {} value);", r.x_name);
    let _ = writeln!(s, "- `plot.png`, `plot.svg`: one line per method, a band of one standard deviation.");
    if !r.fits.is_empty() {
        let _ = writeln!(s, "\nFitted exponents (time ~ n^e, least squares on log-log):\n");
        for f in &r.fits {
            let _ = writeln!(s, "- {} {}: e = {:.2} ({} points)", f.method, f.parameter, f.exponent, f.points);
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\nNotes:\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// Write every file of the experiment into `dir` (created if needed).
/// Returns the paths written.
pub fn write_all(dir: &Path, r: &Results, wall_s: f64) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io { path: dir.to_path_buf(), source: e })?;
    let json = serde_json::to_string_pretty(r).map_err(|e| Error::internal(format!("results.json: {e}")))?;
    let files: [(&str, Vec<u8>); 5] = [
        ("results.csv", csv(r).into_bytes()),
        ("results.json", json.into_bytes()),
        ("plot.png", plot::png(r)?),
        ("plot.svg", plot::svg(r)?.into_bytes()),
        ("README.md", readme(r, wall_s).into_bytes()),
    ];
    let mut out = Vec::new();
    for (name, bytes) in files {
        let p = dir.join(name);
        write_atomic(&p, &bytes)?;
        out.push(p);
    }
    Ok(out)
}
