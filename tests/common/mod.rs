//! Shared by the GPU test binaries: one context per binary (lavapipe compiles
//! each pipeline on first use, so sharing it keeps the suite fast), seeded
//! random data, the test bank, and the reference-vs-GPU comparison.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod hflayers;

use std::sync::OnceLock;

use hopfield_gpu::cpu::Matrix;
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{Context, ContextOptions, MemoryBank, Method, Retrieval, RetrieveOptions};
use rand::{Rng, SeedableRng};

/// The shared context. With no adapter this panics, so every GPU test fails
/// loudly; build with `RUSTFLAGS="--cfg skip_gpu_tests"` to mark them ignored instead.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = Context::new(&ContextOptions::default()).unwrap_or_else(|e| {
            panic!(
                "GPU tests need an adapter ({e}). Install lavapipe (apt-get install mesa-vulkan-drivers \
                 libvulkan1), or mark these tests ignored with RUSTFLAGS=\"--cfg skip_gpu_tests\""
            )
        });
        // The defaults table, not a developer's tuned choice: every run of
        // the suite tests the same kernels (the tuner's candidates have a
        // test of their own).
        ctx.set_config(hopfield_gpu::config::KernelConfig::defaults(ctx.caps())).expect("the defaults fit");
        ctx
    })
}

/// A context whose storage bindings hold at most 4 KiB, so that small banks
/// are cut into several segments and batches (the chunked paths).
pub fn small_binding_ctx() -> Context {
    Context::new(&ContextOptions { max_binding_bytes: Some(4096), ..Default::default() }).expect("an adapter")
}

/// `rows x cols` values uniform in `[-scale, scale]`, reproducible from `seed`.
pub fn random(seed: u64, rows: usize, cols: usize, scale: f32) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..rows * cols).map(|_| rng.random_range(-scale..=scale)).collect()
}

/// A bank of the `m` memories `xi` of dimension `d`, with separate values
/// `(v, dv)` if given, and the reference's matrix of its values.
pub fn bank(ctx: &Context, xi: &[f32], m: usize, d: usize, values: Option<(&[f32], usize)>) -> (MemoryBank, Matrix) {
    match values {
        Some((v, dv)) => (MemoryBank::with_values(ctx, xi, m, d, v, dv).unwrap(), Matrix::from_f32(m, dv, v)),
        None => (MemoryBank::new(ctx, xi, m, d).unwrap(), Matrix::from_f32(m, d, xi)),
    }
}

/// Panic with the tolerance's report if `got` is not close to `want`.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: Tolerance) {
    if let Err(m) = tol.check(got, want) {
        panic!("{what}: {m} (tolerance abs {:e}, rel {:e})", tol.abs, tol.rel);
    }
}

/// A context whose every kernel is built with wgpu's runtime checks (as
/// `HOPFIELD_CHECKED_SHADERS=1`), on the default configuration: the suite
/// runs its case tables on both builds.
pub fn checked_ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let opts = ContextOptions { checked_shaders: Some(true), ..Default::default() };
        let ctx = Context::new(&opts).expect("an adapter");
        assert!(ctx.checked_shaders());
        ctx
    })
}

/// The defaults table's configuration for this device (what an untuned
/// device runs), whatever a developer's tuner cache holds.
pub fn default_config(ctx: &Context) -> std::sync::Arc<hopfield_gpu::config::KernelConfig> {
    std::sync::Arc::new(hopfield_gpu::config::KernelConfig::defaults(ctx.caps()))
}

/// Options for one retrieval with `method` at `beta`, supports returned.
pub fn with_support(method: Method, beta: f32) -> RetrieveOptions {
    RetrieveOptions { support: true, ..RetrieveOptions::dense(beta).method(method) }
}

/// Reference supports (ascending) padded with -1 to `width`, row-major.
pub fn padded(support: &[Vec<usize>], width: usize) -> Vec<i32> {
    let mut out = Vec::with_capacity(support.len() * width);
    for s in support {
        let mut row: Vec<i32> = s.iter().map(|&i| i as i32).collect();
        assert!(row.windows(2).all(|w| w[0] < w[1]), "reference support not ascending: {row:?}");
        row.resize(width, -1);
        out.extend(row);
    }
    out
}

/// The retrieval's supports equal the reference's (ascending, -1 padded to `width`).
pub fn assert_support(what: &str, got: &Retrieval, want: &[Vec<usize>], width: usize) {
    let s = got.support.as_ref().expect("support asked for");
    assert_eq!(s.width, width, "{what}: support width");
    let want = padded(want, width);
    for (q, (g, w)) in s.indices.chunks(width).zip(want.chunks(width)).enumerate() {
        assert_eq!(g, w, "{what}: support of query {q}");
    }
    assert_eq!(s.indices.len(), want.len(), "{what}: support length");
}
