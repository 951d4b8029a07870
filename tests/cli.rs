//! The command line, run as a user would: bad input gets one clear line and a
//! non-zero exit; a retrieval on the real digits data matches the reference.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hopfield_gpu::cpu::{self, Matrix};
use hopfield_gpu::npy;
use hopfield_gpu::tolerance::Tolerance;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hopfield-gpu"))
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

fn retrieve(args: &[&str]) -> Output {
    bin().arg("retrieve").args(args).output().expect("the binary runs")
}

/// Assert a failed run whose stderr mentions every one of `needles`.
fn assert_fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "a panic is not an error message: {err}");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p.to_string_lossy().into_owned()
}

/// A minimal .npy v1.0 file with the given header dict and payload.
fn npy_bytes(dict: &str, payload: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn bad_files_and_flags_are_reported_without_a_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = data("digits.npy");
    let good = good.to_str().unwrap();
    let out = dir.path().join("z.npy");
    let out = out.to_str().unwrap();
    let not_npy = write(dir.path(), "text.npy", b"these are not the bytes you are looking for");
    let full = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", &[0u8; 24]);
    let truncated = write(dir.path(), "short.npy", &full[..full.len() - 8]);
    let three_d = write(
        dir.path(),
        "cube.npy",
        &npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", &[0u8; 32]),
    );
    let other_d = write(dir.path(), "d3.npy", &full);

    assert_fails_with(
        &retrieve(&["--memories", "/no/such/file.npy", "--queries", good, "--beta", "1", "--out", out]),
        &["/no/such/file.npy"],
    );
    assert_fails_with(
        &retrieve(&["--memories", &not_npy, "--queries", good, "--beta", "1", "--out", out]),
        &["text.npy"],
    );
    assert_fails_with(
        &retrieve(&["--memories", &truncated, "--queries", good, "--beta", "1", "--out", out]),
        &["short.npy"],
    );
    assert_fails_with(
        &retrieve(&["--memories", &three_d, "--queries", good, "--beta", "1", "--out", out]),
        &["cube.npy", "2, 2, 2"],
    );
    assert_fails_with(
        &retrieve(&["--memories", good, "--queries", &other_d, "--beta", "1", "--out", out]),
        &["--queries", "d = 3", "d = 64"],
    );
    assert_fails_with(
        &retrieve(&["--memories", good, "--queries", good, "--values", &other_d, "--beta", "1", "--out", out]),
        &["--values", "2 rows"],
    );
    for beta in ["0", "-1", "nan", "inf"] {
        assert_fails_with(&retrieve(&["--memories", good, "--queries", good, "--beta", beta, "--out", out]), &["beta"]);
    }
    assert_fails_with(
        &retrieve(&["--memories", good, "--queries", good, "--beta", "1", "--eps", "-1", "--out", out]),
        &["eps"],
    );
    assert_fails_with(
        &retrieve(&["--memories", good, "--queries", good, "--beta", "1", "--steps", "0", "--out", out]),
        &["steps"],
    );
    assert_fails_with(&bin().args(["bench", "--d", "0"]).output().unwrap(), &["--d"]);
    let sparse = |extra: &[&str]| {
        let mut args = vec!["--memories", good, "--queries", good, "--beta", "1", "--out", out];
        args.extend_from_slice(extra);
        retrieve(&args)
    };
    assert_fails_with(&sparse(&["--method", "random", "--k", "3", "--seed", "-3"]), &["--seed", "-3"]);
    assert_fails_with(&sparse(&["--method", "random", "--k", "3", "--seed", "x"]), &["--seed"]);
    assert_fails_with(&sparse(&["--method", "topk"]), &["--k", "required"]);
    assert_fails_with(&sparse(&["--method", "topk", "--k", "0"]), &["k"]);
    assert_fails_with(&sparse(&["--method", "window", "--window", "0"]), &["window"]);
    assert_fails_with(&sparse(&["--method", "dense", "--support-out", out]), &["--support-out"]);
    assert_fails_with(&sparse(&["--method", "dense", "--seed", "1"]), &["--seed", "random"]);
    assert!(!Path::new(out).exists(), "no output is written on failure");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn retrieve_on_digits_matches_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let digits = npy::read_2d(&data("digits.npy")).expect("digits");
    // Queries: the first 20 digits with a quarter of their pixels blanked.
    let (l, d) = (20, digits.cols);
    let mut q = digits.data[..l * d].to_vec();
    for (i, v) in q.iter_mut().enumerate() {
        if i % 4 == 0 {
            *v = 0.0;
        }
    }
    let qpath = dir.path().join("q.npy");
    npy::write_f32_2d(&qpath, l, d, &q).unwrap();
    let (zpath, epath) = (dir.path().join("z.npy"), dir.path().join("e.npy"));
    let beta = 0.01f32;
    let out = retrieve(&[
        "--memories",
        data("digits.npy").to_str().unwrap(),
        "--queries",
        qpath.to_str().unwrap(),
        "--beta",
        &beta.to_string(),
        "--out",
        zpath.to_str().unwrap(),
        "--steps",
        "5",
        "--eps",
        "0",
        "--energy-out",
        epath.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let z = npy::read_2d(&zpath).unwrap();
    assert_eq!((z.rows, z.cols), (l, d));
    let xi = Matrix::from_f32(digits.rows, d, &digits.data);
    let want = cpu::dynamics(&hopfield_gpu::Method::Dense, &Matrix::from_f32(l, d, &q), &xi, f64::from(beta), 5, 0.0)
        .expect("a concrete method");
    // Pixels are 0..16 and scores reach beta * 16^2 * 64 ~ 160: f32 keeps ~1e-5 relative.
    let tol = Tolerance::new(1e-3, 1e-4);
    tol.check(&z.data, &want.state.data).unwrap_or_else(|m| panic!("z: {m}"));
    let e = std::fs::read(&epath).unwrap();
    assert!(e.len() > 80, "energy file written");
}

/// Issue 8 §6.2: every output is staged before any is committed. Under a
/// 1 KiB file-size limit the support file (300 int32 entries) cannot be
/// written: the run fails, and the existing `--out` file is as it was, with
/// no temporary file left beside it.
#[cfg(unix)]
#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn a_failed_output_leaves_every_output_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let [m, q, z, s] = ["m.npy", "q.npy", "z.npy", "s.npy"].map(|n| dir.path().join(n));
    let memories: Vec<f32> = (0..300).map(|i| i as f32 / 300.0).collect();
    npy::write_f32_2d(&m, 300, 1, &memories).unwrap();
    npy::write_f32_2d(&q, 1, 1, &[1.0]).unwrap();
    std::fs::write(&z, b"the previous run's z").unwrap();
    let out = Command::new("bash")
        .args(["-c", "trap '' XFSZ; ulimit -f 1; exec \"$@\"", "bash", env!("CARGO_BIN_EXE_hopfield-gpu"), "retrieve"])
        .args(["--method", "sparsemax", "--beta", "1", "--memories"])
        .args([&m, Path::new("--queries"), &q, Path::new("--out"), &z, Path::new("--support-out"), &s])
        .output()
        .expect("bash runs");
    assert_fails_with(&out, &["s.npy"]);
    assert_eq!(std::fs::read(&z).unwrap(), b"the previous run's z");
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["m.npy", "q.npy", "z.npy"]);
}

/// Issue 8 §6.12: `--eps -1e-3`, `--beta -1e-3`, `--steps -1` and `--k -3`
/// gave "unexpected argument '-1' found", naming no flag. Every numeric flag
/// now takes a value in any spelling, and the error names the flag.
#[test]
fn negative_numbers_in_any_spelling_name_their_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = data("digits.npy");
    let good = good.to_str().unwrap();
    let out = dir.path().join("z.npy");
    let out = out.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--beta", "1", "--eps", "-1e-3"], &["eps", "-0.001"]),
        (&["--beta", "-1e-3"], &["beta", "-0.001"]),
        (&["--beta", "-inf"], &["beta"]),
        (&["--beta", "1e-300"], &["--beta", "smallest f32"]),
        (&["--beta", "1e300"], &["--beta", "range of f32"]),
        (&["--beta", "1", "--steps", "-1"], &["--steps", "whole number"]),
        (&["--beta", "1", "--steps", "-1e3"], &["--steps", "whole number"]),
        (&["--beta", "1", "--method", "topk", "--k", "-3"], &["--k", "whole number"]),
        (&["--beta", "1", "--method", "window", "--window", "-3"], &["--window"]),
        (&["--beta", "1", "--method", "poly", "--delta", "-1e-3"], &["delta"]),
        (&["--beta", "1", "--method", "auto", "--tolerance", "-1e-3"], &["tolerance"]),
        (&["--beta", "1", "--method", "prf", "--features", "-2"], &["--features"]),
    ];
    for (flags, needles) in cases {
        let mut args = vec!["--memories", good, "--queries", good, "--out", out];
        args.extend_from_slice(flags);
        let r = retrieve(&args);
        assert_fails_with(&r, needles);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!err.contains("unexpected argument"), "{flags:?}: {err}");
    }
    for (flags, needle) in [(&["--d", "-1"][..], "--d"), (&["--d", "2", "--beta", "-1e-3"], "beta")] {
        assert_fails_with(&bin().arg("bench").args(flags).output().unwrap(), &[needle]);
    }
    assert!(!Path::new(out).exists());
}

/// Issue 8 §6.6: `bench --scale NaN` (or -1, inf) panicked, and sizes whose
/// buffers overflow or exceed the machine aborted. Every flag is validated
/// before any allocation or device.
#[test]
fn bench_refuses_bad_sizes_before_allocating() {
    let bench = |args: &[&str]| bin().arg("bench").args(args).output().expect("the binary runs");
    for scale in ["NaN", "-1", "inf", "0"] {
        assert_fails_with(&bench(&["--d", "2", "--m", "10", "--l", "10", "--scale", scale]), &["--scale"]);
        assert_fails_with(&bench(&["--scaling", "--scale", scale]), &["--scale"]);
    }
    let max = u64::MAX.to_string();
    for sizes in [
        &["--d", &max, "--m", &max][..],
        &["--m", "100000000000", "--d", "64"],
        &["--l", "100000000000", "--d", "64", "--m", "4"],
        &["--scaling", "--max-tau", &max],
    ] {
        let t = std::time::Instant::now();
        assert_fails_with(&bench(sizes), &["memory"]);
        // Refused up front: no buffer was filled (a 25.6 TB one would take hours).
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "{sizes:?} took {:?}", t.elapsed());
    }
    assert_fails_with(&bench(&["--scaling", "--min-tau", &max]), &["--max-tau"]);
    assert_fails_with(&bench(&["--repeats", "0"]), &["--repeats"]);
    assert_fails_with(&bench(&["--scale", "0.5"]), &["--scale", "single configuration"]);
}

/// Issue 8 §6.8 and §6.14: outputs that are one file (the run said it wrote
/// z while the file held energies), an output that is an input, and an
/// output whose directory does not exist are all refused before any input
/// is read, and nothing is written or harmed.
#[test]
fn output_paths_are_checked_before_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("m.npy");
    npy::write_f32_2d(&m, 2, 2, &[1.0, 0.0, 0.0, 1.0]).unwrap();
    let before = std::fs::read(&m).unwrap();
    let (m, z, s) = (
        m.to_str().unwrap().to_string(),
        dir.path().join("z.npy").to_str().unwrap().to_string(),
        dir.path().join("s.npy").to_str().unwrap().to_string(),
    );
    let via_dot = dir.path().join(".").join("m.npy").to_str().unwrap().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["--memories", &m, "--queries", &m, "--beta", "1"];
        args.extend_from_slice(extra);
        retrieve(&args)
    };
    assert_fails_with(&run(&["--out", &z, "--energy-out", &z]), &["--energy-out", "same file as --out"]);
    assert_fails_with(
        &run(&["--out", &s, "--method", "topk", "--k", "1", "--support-out", &s]),
        &["--support-out", "same file as --out"],
    );
    assert_fails_with(&run(&["--out", &m]), &["--out", "is the input --memories"]);
    assert_fails_with(&run(&["--out", &via_dot]), &["--out", "is the input --memories"]);
    assert_fails_with(&run(&["--out", &z, "--energy-out", &m]), &["--energy-out", "is the input"]);
    // A missing directory is reported before the inputs are even read.
    let missing = dir.path().join("no/such/dir/z.npy").to_str().unwrap().to_string();
    let out = retrieve(&["--memories", "/no/such/m.npy", "--queries", &m, "--beta", "1", "--out", &missing]);
    assert_fails_with(&out, &["--out", "does not exist"]);
    assert_fails_with(&run(&["--out", &z, "--energy-out", &missing]), &["--energy-out", "does not exist"]);
    assert_fails_with(&run(&["--out", dir.path().to_str().unwrap()]), &["--out", "is a directory"]);
    assert_eq!(std::fs::read(&m).unwrap(), before, "the input is untouched");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["m.npy"], "nothing was written");
}

fn fixture(case: &str, file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hflayers")
        .join(case)
        .join(file)
        .to_string_lossy()
        .into_owned()
}

fn layer(args: &[&str]) -> Output {
    bin().arg("layer").args(args).output().expect("the binary runs")
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn layer_runs_trained_modules_of_every_class() {
    // Against PyTorch's float64 output, within tests/layer.rs's f32 tolerance.
    let dir = tempfile::tempdir().expect("tempdir");
    let z = dir.path().join("z.npy");
    let zs = z.to_str().unwrap();
    let tol = Tolerance::new(5e-5, 5e-5);
    let f = |case: &str, file: &str| fixture(case, file);
    for (case, inputs) in [
        (
            "hopfield_mask",
            vec![
                ("--stored", "stored.npy"),
                ("--state", "state.npy"),
                ("--projection", "projection.npy"),
                ("--mask", "mask.npy"),
            ],
        ),
        ("pooling_mask", vec![("--stored", "stored.npy"), ("--mask", "mask.npy")]),
        ("layer_default", vec![("--state", "state.npy")]),
    ] {
        let (config, weights) = (f(case, "config.json"), f(case, "weights.safetensors"));
        let mut args = vec!["--config".to_string(), config, "--weights".into(), weights, "--out".into(), zs.into()];
        for (flag, file) in inputs {
            args.push(flag.into());
            args.push(f(case, file));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = layer(&args);
        assert!(out.status.success(), "{case}: {}", String::from_utf8_lossy(&out.stderr));
        let got = npy::read_array(&z, 3..=3).unwrap();
        let want = npy::read_array(Path::new(&f(case, "out64.npy")), 1..=3).unwrap();
        assert_eq!(got.shape.iter().product::<usize>(), want.data.len(), "{case}: {:?}", got.shape);
        let want: Vec<f64> = want.data.iter().map(|&v| f64::from(v)).collect();
        tol.check(&got.data, &want).unwrap_or_else(|m| panic!("{case}: {m}"));
    }
    // 2-D inputs are one sequence: sequence 0 of hopfield_default alone.
    let case = "hopfield_default";
    let first = |file: &str| {
        let a = npy::read_array(Path::new(&fixture(case, file)), 3..=3).unwrap();
        let per = a.shape[1] * a.shape[2];
        let p = dir.path().join(file);
        npy::stage_f32(&p, &a.shape[1..], &a.data[..per]).unwrap().commit().unwrap();
        p.to_string_lossy().into_owned()
    };
    let (y, r, p) = (first("stored.npy"), first("state.npy"), first("projection.npy"));
    let (config, weights) = (fixture(case, "config.json"), fixture(case, "weights.safetensors"));
    let out = layer(&[
        "--config",
        &config,
        "--weights",
        &weights,
        "--stored",
        &y,
        "--state",
        &r,
        "--projection",
        &p,
        "--out",
        zs,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = npy::read_array(&z, 2..=2).unwrap();
    let want = npy::read_array(Path::new(&fixture(case, "out64.npy")), 3..=3).unwrap();
    let per = got.data.len();
    let want: Vec<f64> = want.data[..per].iter().map(|&v| f64::from(v)).collect();
    tol.check(&got.data, &want).unwrap();
    // The NPH layer from the command line: a method flag replaces the softmax.
    let out = layer(&[
        "--config",
        &config,
        "--weights",
        &weights,
        "--stored",
        &y,
        "--state",
        &r,
        "--out",
        zs,
        "--method",
        "topk",
        "--k",
        "2",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("topk"));
}

#[test]
fn layer_bad_input_is_one_clear_error_before_the_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let z = dir.path().join("z.npy").to_string_lossy().into_owned();
    let case = "hopfield_default";
    let (config, weights) = (fixture(case, "config.json"), fixture(case, "weights.safetensors"));
    let (y, r) = (fixture(case, "stored.npy"), fixture(case, "state.npy"));
    let run = |c: &str, w: &str, extra: &[&str]| {
        let mut args = vec!["--config", c, "--weights", w, "--out", &z];
        args.extend_from_slice(extra);
        layer(&args)
    };
    // A 4-D input; retrieve still refuses 3-D arrays.
    let four = write(
        dir.path(),
        "four.npy",
        &npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2, 2), }", &[0u8; 32]),
    );
    assert_fails_with(&run(&config, &weights, &["--stored", &four, "--state", &r]), &["four.npy", "2-D or 3-D"]);
    let cube = write(
        dir.path(),
        "cube.npy",
        &npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", &[0u8; 32]),
    );
    assert_fails_with(
        &retrieve(&["--memories", &cube, "--queries", &cube, "--beta", "1", "--out", &z]),
        &["2-D array"],
    );
    // Input features differing from the config (8 here).
    let wide = dir.path().join("wide.npy");
    npy::stage_f32(&wide, &[2, 5, 9], &[0.25; 90]).unwrap().commit().unwrap();
    let wide = wide.to_string_lossy().into_owned();
    assert_fails_with(&run(&config, &weights, &["--stored", &wide, "--state", &r]), &["stored features", "9"]);
    // Unknown class, unknown argument.
    let bad_class = write(dir.path(), "c1.json", br#"{"class": "Hopfeld", "args": {"input_size": 8}}"#);
    assert_fails_with(&run(&bad_class, &weights, &["--stored", &y, "--state", &r]), &["class", "Hopfeld"]);
    let bad_arg = write(dir.path(), "c2.json", br#"{"class": "Hopfield", "args": {"input_sise": 8}}"#);
    assert_fails_with(&run(&bad_arg, &weights, &["--stored", &y, "--state", &r]), &["input_sise"]);
    // Weights that are not safetensors, truncated, or of another module.
    let text = write(dir.path(), "w.safetensors", b"not a safetensors file at all");
    assert_fails_with(&run(&config, &text, &["--stored", &y, "--state", &r]), &["w.safetensors"]);
    let full = std::fs::read(&weights).unwrap();
    let short = write(dir.path(), "short.safetensors", &full[..full.len() / 2]);
    assert_fails_with(&run(&config, &short, &["--stored", &y, "--state", &r]), &["short.safetensors"]);
    // (hopfield_no_bias lacks in_proj_bias; hopfield_sizes has other shapes.)
    for other in ["hopfield_no_bias", "hopfield_sizes"] {
        let other = fixture(other, "weights.safetensors");
        assert_fails_with(&run(&config, &other, &["--stored", &y, "--state", &r]), &["layer weights"]);
    }
    // A mask over every stored pattern of a sequence (hflayers gives NaN).
    let all = write(
        dir.path(),
        "mask.npy",
        &npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 5), }", &[1u8; 10]),
    );
    let full_mask = run(&config, &weights, &["--stored", &y, "--state", &r, "--mask", &all]);
    assert_fails_with(&full_mask, &["mask", "every stored pattern"]);
    // Inputs the class does not take; method flags without --method.
    let (pc, pw) = (fixture("pooling_default", "config.json"), fixture("pooling_default", "weights.safetensors"));
    assert_fails_with(&run(&pc, &pw, &["--stored", &y, "--state", &r]), &["--state", "HopfieldPooling"]);
    assert_fails_with(&run(&config, &weights, &["--stored", &y]), &["--state", "needs"]);
    assert_fails_with(&run(&config, &weights, &["--stored", &y, "--state", &r, "--k", "3"]), &["--k", "--method"]);
    assert!(!Path::new(&z).exists(), "nothing was written");
}
