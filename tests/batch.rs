//! Batched retrieval on the GPU (shaders/batch*.wgsl, retrieve::batch)
//! against the f64 reference (src/cpu/batch.rs): many small problems (bags
//! of 5 to 100 memories, head dimension up to 64) with distinct and shared
//! memory sets, key-padding masks, the zero memory and per-problem betas,
//! for every method, under the engine's dynamics and hopfield-layers'
//! (key space, per-group Frobenius stop); chunking with small bindings; bad
//! input.
//!
//! Tolerances. The kernels score in f32 (~sqrt(d) 6e-8 beta |x| |xi|, below
//! 1e-5 here); weights inherit that error (sparsemax/entmax as in
//! tests/entmax.rs, softmax relatively), z sums at most ~100 of them times
//! |v| <= 1, and up to three updates compound it: abs 2e-4, rel 2e-4. Steps
//! and convergence are compared exactly, after checking that the
//! reference's stop decisions are the same at 0.8 eps and 1.25 eps (a sparse
//! method can reach an exact fixed point, a change of 0 that f32 reproduces
//! only to ~1e-7: eps is 1e-5, far above that and below the real changes).

mod common;

use common::{assert_close, ctx, random, small_binding_ctx};
use hopfield_gpu::cpu::batch::{self as reference, Group, Memories, Problem, Space, Stop};
use hopfield_gpu::cpu::Matrix;
use hopfield_gpu::tolerance::Tolerance;
use hopfield_gpu::{
    Batch, BatchGroup, BatchMemories, BatchOptions, BatchProblem, BatchSpace, BatchStop, Context, Error, Method,
};

const Z_TOL: Tolerance = Tolerance::new(2e-4, 2e-4);
const E_TOL: Tolerance = Tolerance::new(2e-4, 1e-4);

/// One memory set's host data: keys, values, mask (true = absent), zero memory.
type Set = (Vec<f32>, Option<Vec<f32>>, Option<Vec<bool>>, bool);

/// Host data of one batch: memory sets and problems (set, queries, beta, group).
#[derive(Clone)]
struct Data {
    d: usize,
    dv: usize,
    sets: Vec<Set>,
    problems: Vec<(usize, Vec<f32>, f32, usize)>,
    groups: Vec<(u32, f32)>,
}

impl Data {
    /// Bags of 5 to 100 memories: `n` sets (every third one shared by two
    /// problems), masks on some, the zero memory on others, betas per problem.
    fn bags(seed: u64, n: usize, d: usize, dv: Option<usize>, groups: usize) -> Data {
        let sizes = [5, 17, 64, 100, 9, 33];
        let mut sets = Vec::new();
        let mut problems = Vec::new();
        for i in 0..n {
            let m = sizes[i % sizes.len()];
            let keys = random(seed * 100 + i as u64, m, d, 1.0);
            let values = dv.map(|dv| random(seed * 100 + 50 + i as u64, m, dv, 1.0));
            let mask = (i % 2 == 1).then(|| (0..m).map(|j| (j * 7 + i) % 5 == 0).collect());
            sets.push((keys, values, mask, i % 3 == 2));
            let l = 1 + (i * 5) % 7;
            problems.push((i, random(seed * 1000 + i as u64, l, d, 1.0), 0.5 + 0.4 * i as f32, i % groups));
            if i % 3 == 0 {
                problems.push((i, random(seed * 1000 + 500 + i as u64, 3, d, 1.0), 1.7, (i + 1) % groups));
            }
        }
        Data { d, dv: dv.unwrap_or(d), sets, problems, groups: vec![(1, 1e-5); groups] }
    }

    fn batch(&self) -> Batch<'_> {
        Batch {
            d: self.d,
            dv: self.dv,
            memories: self
                .sets
                .iter()
                .map(|(k, v, mask, zero)| BatchMemories {
                    keys: k,
                    values: v.as_deref(),
                    mask: mask.as_deref(),
                    zero: *zero,
                })
                .collect(),
            problems: self
                .problems
                .iter()
                .map(|(s, q, beta, g)| BatchProblem { memories: *s, queries: q, beta: *beta, group: *g })
                .collect(),
            groups: self.groups.iter().map(|&(max_updates, eps)| BatchGroup { max_updates, eps }).collect(),
        }
    }

    fn reference(&self, method: &Method, space: Space, stop: Stop) -> reference::BatchOut {
        let sets: Vec<Memories> = self
            .sets
            .iter()
            .map(|(k, v, mask, zero)| {
                let m = k.len() / self.d;
                Memories {
                    keys: Matrix::from_f32(m, self.d, k),
                    values: Matrix::from_f32(m, self.dv, v.as_deref().unwrap_or(k)),
                    keep: mask.as_ref().map(|mask| mask.iter().map(|&x| !x).collect()),
                    zero: *zero,
                }
            })
            .collect();
        let problems: Vec<Problem> = self
            .problems
            .iter()
            .map(|(s, q, beta, g)| Problem {
                memories: *s,
                queries: Matrix::from_f32(q.len() / self.d, self.d, q),
                beta: f64::from(*beta),
                group: *g,
            })
            .collect();
        let groups: Vec<Group> =
            self.groups.iter().map(|&(m, e)| Group { max_updates: m as usize, eps: f64::from(e) }).collect();
        reference::batch(method, &sets, &problems, &groups, space, stop).unwrap()
    }
}

fn check(ctx: &Context, what: &str, data: &Data, method: Method, space: BatchSpace, stop: BatchStop) {
    let (rs, rt) = match (space, stop) {
        (BatchSpace::Values, _) => {
            (Space::Values, if stop == BatchStop::PerQuery { Stop::PerQuery } else { Stop::Association })
        }
        (BatchSpace::Keys, BatchStop::PerQuery) => (Space::Keys, Stop::PerQuery),
        (BatchSpace::Keys, BatchStop::Association) => (Space::Keys, Stop::Association),
    };
    let want = data.reference(&method, rs, rt);
    // No stop decision may hinge on rounding: the reference decides the
    // same at 0.8 eps and 1.25 eps (f32 changes are within ~1e-7 of the
    // reference's, 1% of eps = 1e-5).
    let decisions = |out: &reference::BatchOut| {
        out.problems.iter().map(|p| (p.steps.clone(), p.converged.clone())).collect::<Vec<_>>()
    };
    for factor in [0.8f32, 1.25] {
        let scaled = Data { groups: data.groups.iter().map(|&(m, e)| (m, e * factor)).collect(), ..data.clone() };
        assert_eq!(
            decisions(&scaled.reference(&method, rs, rt)),
            decisions(&want),
            "{what} {method:?}: ambiguous test data (a stop decision depends on eps within 25%)"
        );
    }
    let got = ctx
        .retrieve_batch(&data.batch(), &BatchOptions { method, space, stop })
        .unwrap_or_else(|e| panic!("{what} {method:?}: {e}"));
    assert_eq!(got.problems.len(), want.problems.len());
    for (i, (g, w)) in got.problems.iter().zip(&want.problems).enumerate() {
        let tag = format!("{what} {} problem {i}", method.name());
        assert_close(&format!("{tag} z"), &g.z, &w.z.data, Z_TOL);
        assert_eq!(g.steps, w.steps.iter().map(|&s| s as u32).collect::<Vec<_>>(), "{tag} steps");
        assert_eq!(g.converged, w.converged, "{tag} converged");
        assert_close(&format!("{tag} energy"), &g.energy, &w.energy, E_TOL);
        assert_close(&format!("{tag} lse"), &g.log_sum_exp, &w.log_sum_exp, E_TOL);
        assert_eq!(g.argmax, w.argmax.iter().map(|&a| a as u32).collect::<Vec<_>>(), "{tag} argmax");
    }
    for (gi, (g, w)) in got.groups.iter().zip(&want.groups).enumerate() {
        assert_eq!((g.updates as usize, g.converged), *w, "{what} {} group {gi}", method.name());
    }
}

/// Every method of the engine; a polynomial with its degree.
fn methods() -> Vec<Method> {
    vec![
        Method::Dense,
        Method::TopK { k: 4 },
        Method::Sparsemax,
        Method::Entmax15,
        Method::Random { k: 3, seed: 11 },
        Method::Window { width: None },
        Method::Window { width: Some(4) },
        Method::Poly { delta: 1e-3, degree: Some(6) },
        Method::Linear,
        Method::Prf { features: Some(24), seed: 5, orthogonal: false },
    ]
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn every_method_on_many_small_bags_one_step() {
    // Hetero-association (dv != d): one update, read out. Dense without
    // updates takes the fused one-thread-per-query path for these bags; with
    // a 900-memory set, too wide for it, the batch goes the materialised way.
    let mut data = Data::bags(1, 9, 16, Some(5), 2);
    for method in methods() {
        check(ctx(), "hetero", &data, method, BatchSpace::Values, BatchStop::PerQuery);
    }
    data.sets.push((random(90, 900, 16, 1.0), Some(random(91, 900, 5, 1.0)), None, true));
    data.problems.push((9, random(92, 3, 16, 1.0), 0.6, 1));
    data.groups = vec![(0, 1e-5), (0, 1e-5)];
    for method in [Method::Dense, Method::TopK { k: 40 }, Method::Entmax15] {
        check(ctx(), "wide", &data, method, BatchSpace::Keys, BatchStop::Association);
    }
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn hopfield_layers_dynamics_in_key_space() {
    // n updates, n + 1 associations, values read once; the limit ends them
    // (eps far below any change) or the first update does (eps far above).
    for (groups, label) in [(vec![(0, 1e-5), (3, 1e-5)], "limit"), (vec![(1, 1e-5), (40, 10.0)], "eps")] {
        let mut data = Data::bags(2, 8, 8, Some(6), 2);
        data.groups = groups;
        for method in [Method::Dense, Method::TopK { k: 5 }, Method::Sparsemax, Method::Entmax15, Method::Linear] {
            check(ctx(), label, &data, method, BatchSpace::Keys, BatchStop::Association);
            check(ctx(), label, &data, method, BatchSpace::Keys, BatchStop::PerQuery);
        }
    }
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn engine_dynamics_match_the_reference_and_converge() {
    // dv == d: x <- A(x) V, z the final state. At beta ~ 8 on unit-scale
    // data the states settle on memories: most queries converge early.
    let mut data = Data::bags(3, 6, 8, None, 1);
    data.groups = vec![(2, 1e-5)];
    for method in [Method::Dense, Method::TopK { k: 3 }, Method::Entmax15, Method::Window { width: Some(5) }] {
        check(ctx(), "values", &data, method, BatchSpace::Values, BatchStop::PerQuery);
    }
    // At beta 8 on unit-scale data the states settle on memories; a few
    // problems (about ten queries), so that a threshold clear of every
    // query's changes exists.
    data.problems.truncate(4);
    for p in &mut data.problems {
        p.2 = 8.0;
    }
    // The decisive changes are away from eps: the reference stops after the
    // same updates at 0.8 eps and 1.25 eps, so f32 rounding cannot flip
    // them. Geometric convergence spreads the changes over every scale, so
    // the test takes the first of a few thresholds that is unambiguous.
    let steps = |data: &mut Data, eps: f32| {
        data.groups = vec![(40, eps)];
        let want = data.reference(&Method::Dense, Space::Values, Stop::PerQuery);
        assert!(want.problems.iter().flat_map(|p| &p.converged).all(|&c| c), "the converging case did not converge");
        want.problems.iter().map(|p| p.steps.clone()).collect::<Vec<_>>()
    };
    let eps = [1e-4f32, 3e-4, 1e-3, 3e-3, 3e-5]
        .into_iter()
        .find(|&e| {
            let at = steps(&mut data, e);
            steps(&mut data, 0.8 * e) == at && steps(&mut data, 1.25 * e) == at
        })
        .expect("no unambiguous threshold for the converging case: pick other data");
    let at = steps(&mut data, eps);
    assert!(at.iter().flatten().any(|&s| s > 1), "every query converged at once: a weak test");
    data.groups = vec![(40, eps)];
    check(ctx(), "converging", &data, Method::Dense, BatchSpace::Values, BatchStop::PerQuery);
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn chunks_and_split_problems_give_the_same_results() {
    // 4 KiB bindings: 1024 floats per chunk, so the 100-memory bags of 7
    // queries and the large problem below are spread over many chunks and
    // the large one is cut into blocks of queries.
    let small = small_binding_ctx();
    let mut data = Data::bags(4, 7, 8, Some(4), 2);
    data.sets.push((random(77, 90, 8, 1.0), Some(random(78, 90, 4, 1.0)), None, true));
    data.problems.push((7, random(79, 40, 8, 1.0), 0.9, 0));
    data.groups = vec![(2, 1e-5), (1, 1e-5)];
    for method in [Method::Dense, Method::Random { k: 4, seed: 2 }, Method::Window { width: None }, Method::Linear] {
        check(&small, "chunked", &data, method, BatchSpace::Keys, BatchStop::Association);
    }
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn masked_memories_get_weight_exactly_zero() {
    // A masked memory whose value is huge would dominate z if it kept any
    // weight: z stays within the range of the kept values.
    let d = 4;
    let keys = random(5, 6, d, 1.0);
    let mut values = random(6, 6, 2, 1.0);
    values[2] = 1e6;
    values[3] = -1e6;
    let mask = [false, true, false, false, false, false];
    for method in methods() {
        let batch = Batch {
            d,
            dv: 2,
            memories: vec![BatchMemories { keys: &keys, values: Some(&values), mask: Some(&mask), zero: false }],
            problems: vec![BatchProblem { memories: 0, queries: &keys[4..8], beta: 2.0, group: 0 }],
            groups: vec![BatchGroup { max_updates: 1, eps: 0.0 }],
        };
        let opts = BatchOptions { method, space: BatchSpace::Values, stop: BatchStop::PerQuery };
        let z = &ctx().retrieve_batch(&batch, &opts).unwrap().problems[0].z;
        assert!(z.iter().all(|v| v.abs() <= 1.0), "{method:?}: {z:?}");
    }
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn bad_batches_are_typed_errors() {
    let keys = random(7, 3, 2, 1.0);
    let q = random(8, 1, 2, 1.0);
    let all = [true, true, true];
    let run = |mask: Option<&[bool]>, zero: bool, method: Method, memories: usize, beta: f32| {
        let batch = Batch {
            d: 2,
            dv: 2,
            memories: vec![BatchMemories { keys: &keys, values: None, mask, zero }],
            problems: vec![BatchProblem { memories, queries: &q, beta, group: 0 }],
            groups: vec![BatchGroup { max_updates: 1, eps: 0.0 }],
        };
        ctx().retrieve_batch(&batch, &BatchOptions { method, space: BatchSpace::Keys, stop: BatchStop::Association })
    };
    assert!(matches!(run(Some(&all), false, Method::Dense, 0, 1.0), Err(Error::InvalidParameter { name: "mask", .. })));
    // The zero memory is never masked: a fully masked set with it is fine.
    assert!(run(Some(&all), true, Method::Dense, 0, 1.0).is_ok());
    assert!(matches!(run(None, false, Method::Dense, 1, 1.0), Err(Error::InvalidParameter { name: "memories", .. })));
    assert!(matches!(run(None, false, Method::Dense, 0, 0.0), Err(Error::InvalidParameter { name: "beta", .. })));
    assert!(matches!(
        run(None, false, Method::Poly { delta: 0.1, degree: None }, 0, 1.0),
        Err(Error::Unsupported { option: "degree", .. })
    ));
    assert!(matches!(run(None, false, Method::Auto { tolerance: 0.1 }, 0, 1.0), Err(Error::Unsupported { .. })));
    assert!(matches!(run(None, false, Method::TopK { k: 0 }, 0, 1.0), Err(Error::InvalidParameter { name: "k", .. })));
    let nan = [f32::NAN, 0.0];
    let batch = Batch {
        d: 2,
        dv: 2,
        memories: vec![BatchMemories { keys: &keys, values: None, mask: None, zero: false }],
        problems: vec![BatchProblem { memories: 0, queries: &nan, beta: 1.0, group: 0 }],
        groups: vec![BatchGroup { max_updates: 1, eps: 0.0 }],
    };
    let opts = BatchOptions { method: Method::Dense, space: BatchSpace::Values, stop: BatchStop::PerQuery };
    assert!(matches!(ctx().retrieve_batch(&batch, &opts), Err(Error::NonFinite { what: "queries", .. })));
}

#[cfg_attr(skip_gpu_tests, ignore = "needs a GPU adapter")]
#[test]
fn rows_too_long_for_one_thread_take_a_workgroup() {
    // On a CPU device the plain normalisers (dense, prf, poly, linear) take
    // one thread per score row while the row fits one invocation's loops;
    // 13,000 memories do not (on llvmpipe), so these rows take the
    // workgroup kernel that GPUs use for every row.
    let mut data = Data::bags(5, 1, 4, Some(3), 1);
    data.sets = vec![(random(93, 13_000, 4, 1.0), Some(random(94, 13_000, 3, 1.0)), None, true)];
    data.problems = vec![(0, random(95, 3, 4, 1.0), 1.3, 0)];
    data.groups = vec![(1, 1e-5)];
    for method in [Method::Dense, Method::Poly { delta: 1e-3, degree: Some(6) }, Method::Linear] {
        check(ctx(), "long rows", &data, method, BatchSpace::Keys, BatchStop::Association);
    }
}
