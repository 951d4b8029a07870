//! The tuner on the GPU: a candidate whose output disagrees with the f64
//! reference is rejected and never timed; a tuned choice is cached per
//! device and kernel sources (a hit skips measuring; another source hash
//! finds nothing); the cache lives where the context is told (a temporary
//! directory here, never the user's). Pruning by the device's limits has
//! unit tests in src/config.rs; here every candidate this device keeps must
//! fit it.
//!
//! The tuner runs on tiny shapes with two candidates per family, so the
//! whole file costs a few pipelines.

mod common;

use common::ctx;
use hopfield_gpu::config::cache::{self, CacheEntry, CacheKey};
use hopfield_gpu::config::{candidates, Candidates, DenseKernel, KernelConfig};
use hopfield_gpu::{Context, ContextOptions, TuneOptions, TuneShapes, Verdict};

/// A context whose tuner cache is `dir`.
fn ctx_in(dir: &std::path::Path) -> Context {
    Context::new(&ContextOptions { cache_dir: Some(dir.to_path_buf()), ..Default::default() }).expect("an adapter")
}

/// Two candidates per family: the device's default and the legacy kernels.
fn two_each(ctx: &Context) -> Candidates {
    let d = KernelConfig::defaults(ctx.caps());
    let l = KernelConfig::legacy();
    Candidates {
        dense: vec![d.dense, l.dense],
        decode: vec![d.decode, l.decode],
        topk: vec![d.topk, l.topk],
        pruned: Vec::new(),
    }
}

fn quick(ctx: &Context) -> TuneOptions {
    TuneOptions {
        force: true,
        repeats: 1,
        shapes: Some(TuneShapes::tiny()),
        candidates: Some(two_each(ctx)),
        split_targets: Some(vec![4, 8]),
        ..TuneOptions::default()
    }
}

/// The label the tuner gives the legacy dense candidate.
fn is_legacy_dense(label: &str) -> bool {
    label == "dense [legacy]"
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn a_wrong_candidate_is_rejected_and_reported_and_the_rest_are_timed() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx_in(dir.path());
    // Inject a wrong candidate: the legacy dense kernel's check output is
    // perturbed by 1e-2 in one entry (far beyond the check's tolerance).
    let opts = TuneOptions {
        fault: Some(|label, z| {
            if is_legacy_dense(label) {
                z[0] += 1e-2;
            }
        }),
        write_cache: false,
        ..quick(&ctx)
    };
    let report = ctx.tune(&opts).unwrap();
    let trial = |family: &str, f: &dyn Fn(&str) -> bool| {
        report.trials.iter().find(|t| t.family == family && f(&t.candidate)).cloned().expect("a trial")
    };
    let bad = trial("dense", &|c| c == "legacy");
    assert!(
        matches!(&bad.verdict, Verdict::Rejected { why } if why.contains("disagrees with the reference")),
        "{bad:?}"
    );
    // The other dense candidate passed and was timed, and it is the choice.
    let good = trial("dense", &|c| c != "legacy");
    assert!(matches!(good.verdict, Verdict::Timed { median_ms } if median_ms > 0.0), "{good:?}");
    assert_ne!(report.config.dense, DenseKernel::Legacy);
    assert_eq!(*ctx.config(), report.config, "the choice is installed");
    // Every family and the split targets were tried.
    for family in ["decode", "topk", "splits"] {
        assert!(report.trials.iter().any(|t| t.family == family), "{family}: {:?}", report.trials);
    }
    assert!(report.cache_file.is_none() && !report.cache_hit);
    assert!(std::fs::read_dir(dir.path()).map_or(true, |mut d| d.next().is_none()), "nothing was cached");
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn a_tuned_choice_is_cached_found_again_and_lost_with_the_shaders() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx_in(dir.path());
    let report = ctx.tune(&quick(&ctx)).unwrap();
    let file = report.cache_file.clone().expect("written");
    assert!(file.starts_with(&*dir.path().to_string_lossy()), "{file}");
    // Cache hit: a second tune measures nothing and installs the same.
    let again = ctx_in(dir.path());
    let hit = again.tune(&TuneOptions { force: false, ..quick(&again) }).unwrap();
    assert!(hit.cache_hit && hit.trials.is_empty(), "{hit:?}");
    assert_eq!(hit.config, report.config);
    // A new context on this device starts from the cached choice.
    assert_eq!(*ctx_in(dir.path()).config(), report.config);

    // Invalidation: an entry made for other kernel sources (another hash)
    // is not used; a context falls back to the defaults table.
    let other = tempfile::tempdir().unwrap();
    let key = ctx.cache_key();
    let stale = CacheKey { shaders: format!("{}-edited", key.shaders), ..key.clone() };
    let entry = |key: CacheKey| CacheEntry { key, config: KernelConfig::legacy(), report: serde_json::Value::Null };
    cache::store(other.path(), &entry(stale)).unwrap();
    let fresh = ctx_in(other.path());
    assert_eq!(*fresh.config(), KernelConfig::defaults(fresh.caps()), "a stale entry must not be used");
    // The same entry under this build's key is used.
    cache::store(other.path(), &entry(key)).unwrap();
    assert_eq!(*ctx_in(other.path()).config(), KernelConfig::legacy());
}

#[test]
#[cfg_attr(skip_gpu_tests, ignore = "GPU tests switched off with --cfg skip_gpu_tests")]
fn every_candidate_kept_fits_the_device_and_a_misfit_is_refused() {
    let ctx = ctx();
    let caps = ctx.caps();
    let all = candidates(caps);
    assert!(!all.dense.is_empty() && !all.decode.is_empty() && !all.topk.is_empty());
    for k in &all.dense {
        assert!(k.check(caps).is_ok(), "{k}");
    }
    for (what, why) in &all.pruned {
        assert!(!why.is_empty(), "{what}");
    }
    // A configuration asking for more workgroup memory than the device has
    // is refused with a typed error, before any kernel runs.
    let mut big = KernelConfig::defaults(caps);
    if let DenseKernel::Tiled(t) = &mut big.dense {
        t.queries = 512;
        t.threads = 1024;
        t.mems = 1;
    }
    let e = ctx.set_config(big).unwrap_err();
    assert!(matches!(e, hopfield_gpu::Error::Unsupported { option: "config", .. }), "{e}");
}
