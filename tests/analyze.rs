//! `hopfield-gpu analyze`: flags refused before any file or device, the JSON
//! keys users' scripts read, the digits' geometry against an independent
//! NumPy implementation (tests/data/analyze_digits_numpy.json, written by
//! `tools/analyze_numpy.py`, whose command is in the file), and the per-query
//! bounds beside the GPU's measured error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hopfield_gpu::cpu::Matrix;
use hopfield_gpu::{npy, MemoryBank};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hopfield-gpu"))
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

fn analyze(args: &[&str]) -> Output {
    bin().arg("analyze").args(args).output().expect("the binary runs")
}

fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_flags_and_files_name_what_is_wrong_without_a_device() {
    let digits = data("digits.npy");
    let digits = digits.to_str().unwrap();
    let m = ["--memories", digits];
    let run = |extra: &[&str], needles: &[&str]| {
        let args: Vec<&str> = m.iter().chain(extra).copied().collect();
        fails_with(&analyze(&args), needles);
    };
    run(&["--beta", "-1"], &["--beta"]);
    run(&["--beta", "0"], &["--beta"]);
    run(&["--beta", "1", "--delta", "1.5"], &["--delta"]);
    run(&["--beta", "1", "--delta", "-0.1"], &["--delta"]);
    run(&["--beta", "1", "--k", "0"], &["--k"]);
    run(&["--beta", "1", "--k", "-2"], &["--k"]);
    run(&["--beta", "1", "--p", "1"], &["--p"]);
    run(&["--beta", "1", "--p", "-0.5"], &["--p"]);
    run(&["--beta", "1", "--radius", "-3"], &["--radius"]);
    run(&["--beta", "1", "--tolerance", "0"], &["--tolerance"]);
    run(&["--beta", "1e300"], &["--beta"]);
    fails_with(&analyze(&["--memories", "/no/such.npy", "--beta", "1"]), &["/no/such.npy"]);
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q3.npy");
    npy::write_f32_2d(&q, 2, 3, &[0.0; 6]).unwrap();
    run(&["--beta", "1", "--queries", q.to_str().unwrap()], &["--queries", "d = 3"]);
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("valid JSON on stdout")
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter (lavapipe is enough)")]
fn digits_geometry_matches_numpy() {
    let digits = data("digits.npy");
    let rep = json(&analyze(&["--memories", digits.to_str().unwrap(), "--beta", "0.12", "--k", "100", "--json"]));
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/analyze_digits_numpy.json"))
            .unwrap(),
    )
    .unwrap();
    // The digits are small integers: every sum is exact in f32 and f64, so
    // the two implementations agree to the last bit but for the sqrt/ln.
    for key in [
        "m",
        "B",
        "R",
        "duplicates",
        "delta_min",
        "delta_median",
        "delta_positive_fraction",
        "well_separated_fraction",
        "well_separated_fraction_topk",
    ] {
        let (a, b) = (rep[key].as_f64(), golden[key].as_f64());
        match (a, b) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{key}: {a} vs NumPy {b}"),
            _ => panic!("{key}: {:?} vs NumPy {:?}", rep[key], golden[key]),
        }
    }
    for key in ["min_beta_well_separated", "min_beta_well_separated_topk", "capacity_dense"] {
        assert!(rep[key].is_null(), "{key}: {:?}", rep[key]);
    }
    assert!(rep["capacity_topk"].as_f64().unwrap() > 0.0);
    let notes: Vec<&str> = rep["notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(notes.iter().any(|n| n.contains("sqrt(p) - 1")), "{notes:?}");
    assert!(rep["queries"].as_array().unwrap().is_empty());
    // Every pattern's nearest neighbour, from the GPU sweep, against NumPy's.
    let a = npy::read_2d(&digits).unwrap();
    let ctx = common::ctx();
    let bank = MemoryBank::new(ctx, &a.data, a.rows, a.cols).unwrap();
    let sweep = ctx.separation(&bank).unwrap();
    let nearest: Vec<usize> =
        golden["nearest"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let ours: Vec<usize> = sweep.rows.iter().map(|n| n.nearest.unwrap()).collect();
    assert_eq!(ours, nearest);
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter (lavapipe is enough)")]
fn queries_get_bounds_beside_the_measured_error() {
    // 60 z-scored-like patterns of d = 16 and queries near them.
    let (m, d, l) = (60, 16, 40);
    let mem = common::random(1, m, d, 1.0);
    let mut q = mem[..l * d].to_vec();
    for (i, v) in q.iter_mut().enumerate() {
        *v += 0.02 * ((i * 7919 % 13) as f32 - 6.0) / 6.0;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pm, pq) = (dir.path().join("m.npy"), dir.path().join("q.npy"));
    npy::write_f32_2d(&pm, m, d, &mem).unwrap();
    npy::write_f32_2d(&pq, l, d, &q).unwrap();
    let beta = 4.0;
    let rep = json(&analyze(&[
        "--memories",
        pm.to_str().unwrap(),
        "--queries",
        pq.to_str().unwrap(),
        "--beta",
        "4",
        "--k",
        "8",
        "--delta",
        "0.01",
        "--json",
    ]));
    let queries = rep["queries"].as_array().unwrap();
    assert_eq!(queries.len(), l);
    // The measured error is the GPU's; check it against the f64 reference.
    let z = hopfield_gpu::cpu::dense::dense(
        &Matrix::from_f32(l, d, &q),
        &Matrix::from_f32(m, d, &mem),
        &Matrix::from_f32(m, d, &mem),
        beta,
    )
    .z;
    for (i, qr) in queries.iter().enumerate() {
        for key in ["nearest", "in_ball", "bound_dense", "bound_topk", "bound_poly", "measured_error"] {
            assert!(!qr[key].is_null(), "query {i}: {key} missing");
        }
        let mu = qr["nearest"].as_u64().unwrap() as usize;
        assert_eq!(mu, i, "query {i} was made from pattern {i}");
        let want: f64 = z
            .row(i)
            .iter()
            .zip(&mem[mu * d..(mu + 1) * d])
            .map(|(a, &b)| (a - f64::from(b)).powi(2))
            .sum::<f64>()
            .sqrt();
        let got = qr["measured_error"].as_f64().unwrap();
        // f32 retrieval: z entries to abs 1e-5 here (|z| <= 1, d = 16).
        assert!((got - want).abs() <= 1e-4, "query {i}: {got} vs {want}");
        // Lemma A.4's form is a theorem: it holds for every query.
        let a4 = qr["bound_dense_lemma_a4"].as_f64().unwrap();
        assert!(want <= a4 * (1.0 + 1e-9), "query {i}: error {want} > A.4 bound {a4}");
    }
    let checks = rep["bound_checks"].as_array().unwrap();
    let a4 = checks.iter().find(|c| c["bound"] == "bound_dense_lemma_a4").unwrap();
    assert_eq!(a4["holds_fraction"], 1.0);
    for key in ["well_separated_fraction", "min_beta_well_separated", "capacity_dense", "capacity_topk", "m", "B", "R"]
    {
        assert!(rep.get(key).is_some(), "{key} missing");
    }
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter (lavapipe is enough)")]
fn duplicates_make_r_zero_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dup.npy");
    npy::write_f32_2d(&p, 3, 2, &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]).unwrap();
    let rep = json(&analyze(&["--memories", p.to_str().unwrap(), "--beta", "1", "--json"]));
    assert_eq!(rep["R"], 0.0);
    assert_eq!(rep["duplicates"], 1);
    assert!(rep["well_separated_fraction"].is_null());
    assert!(rep["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("duplicated")));
    // The readable report says the same.
    let out = analyze(&["--memories", p.to_str().unwrap(), "--beta", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("duplicates: 1") && text.contains("R = 0"), "{text}");
}
