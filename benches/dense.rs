//! Criterion benchmark of dense retrieval: the tiled kernel against the naive
//! one, and a few queries against many memories (the split path). Device
//! creation and uploads stay outside the timed region; each iteration waits
//! for the GPU (retrieve reads its result back) before the clock stops.
//!
//! Sizes are chosen for lavapipe (`cargo bench` on a machine without a GPU);
//! `hopfield-gpu bench` has the larger suite.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hopfield_gpu::{Context, ContextOptions, MemoryBank, Method, RetrieveOptions};
use rand::{Rng, SeedableRng};

fn random(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..=1.0)).collect()
}

fn dense(c: &mut Criterion) {
    let ctx = Context::new(&ContextOptions::default()).expect("benchmarks need an adapter (lavapipe will do)");
    let mut group = c.benchmark_group("dense");
    group.sample_size(10);
    for &(d, m, l) in &[(64usize, 1024usize, 1024usize), (64, 2048, 256), (16, 65536, 4)] {
        let memories = random(1, m * d);
        let queries = random(2, l * d);
        let bank = MemoryBank::new(&ctx, &memories, m, d).expect("bank");
        group.throughput(Throughput::Elements((4 * d * m * l) as u64));
        for method in [Method::Dense, Method::DenseNaive] {
            let opts =
                RetrieveOptions { energy: false, ..RetrieveOptions::dense(1.0 / (d as f32).sqrt()) }.method(method);
            group.bench_with_input(BenchmarkId::new(method.name(), format!("d{d}_m{m}_l{l}")), &opts, |b, opts| {
                b.iter(|| ctx.retrieve(&bank, &queries, opts).expect("retrieve"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, dense);
criterion_main!(benches);
