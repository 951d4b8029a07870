//! `hopfield-gpu bench --layer pooling|hopfield`: a hopfield-layers module's
//! forward pass timed end to end (upload, every kernel, readback), the time
//! split between the projections (input LayerNorms, q/k/v projections), the
//! retrieval (every sequence and head in one batched retrieval) and the rest
//! (out_proj and the readback) from separately submitted phases, and the
//! output checked against the f64 reference on a few sequences.
//!
//! The shapes are the issue's: `pooling` is HopfieldPooling over 1024 bags
//! of 64 instances, input 64, 4 heads; `hopfield` is Hopfield
//! self-association on 16 sequences of 1024 tokens, d = 256, 8 heads.
//! tools/bench_hflayers_torch.py times the same modules in PyTorch.
//! Weights are random (seeded), as PyTorch initialises them in scale.

use std::time::{Duration, Instant};

use hopfield_gpu::cpu::layer::StopRule;
use hopfield_gpu::layer::config::LayerConfig;
use hopfield_gpu::layer::gpu::{Layer, PhaseTimes};
use hopfield_gpu::layer::weights::{expected_keys, LayerWeights, Tensor, TensorMap};
use hopfield_gpu::layer::{forward_reference, LayerInputs, Sequences};
use hopfield_gpu::Method;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::CliError;

/// Which module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayerKind {
    /// HopfieldPooling: learned queries pool each bag.
    Pooling,
    /// Hopfield self-association: stored = state = projection.
    Hopfield,
}

/// The shape of one layer benchmark.
#[derive(Clone, Debug)]
pub struct LayerBench {
    pub kind: LayerKind,
    /// Sequences (bags).
    pub n: usize,
    /// Rows per sequence (instances, tokens).
    pub s: usize,
    /// input_size.
    pub features: usize,
    /// num_heads.
    pub heads: usize,
    pub method: Method,
    pub repeats: usize,
}

impl LayerBench {
    /// The issue's shape for `kind`; `None` fields keep it.
    pub fn new(
        kind: LayerKind,
        n: Option<usize>,
        s: Option<usize>,
        features: Option<usize>,
        heads: Option<usize>,
    ) -> Self {
        let (n0, s0, f0, h0) = match kind {
            LayerKind::Pooling => (1024, 64, 64, 4),
            LayerKind::Hopfield => (16, 1024, 256, 8),
        };
        LayerBench {
            kind,
            n: n.unwrap_or(n0),
            s: s.unwrap_or(s0),
            features: features.unwrap_or(f0),
            heads: heads.unwrap_or(h0),
            method: Method::Dense,
            repeats: 3,
        }
    }

    fn config(&self) -> Result<LayerConfig, CliError> {
        let class = match self.kind {
            LayerKind::Pooling => "HopfieldPooling",
            LayerKind::Hopfield => "Hopfield",
        };
        let json = format!(
            r#"{{"class": "{class}", "args": {{"input_size": {}, "num_heads": {}}}}}"#,
            self.features, self.heads
        );
        let mut config = LayerConfig::from_json(&json)?;
        config.method = self.method;
        hopfield_gpu::layer::config::check_layer_method(&config.method)?;
        Ok(config)
    }
}

/// One measured layer, as printed and as `--json` emits it.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRecord {
    layer: &'static str,
    method: &'static str,
    n: usize,
    s: usize,
    features: usize,
    heads: usize,
    repeats: usize,
    /// Median wall time of the whole forward pass (one submission).
    median_ms: f64,
    /// Medians of the phases, each submitted and waited for on its own.
    projections_ms: f64,
    retrieval_ms: f64,
    rest_ms: f64,
    /// Largest |GPU - f64 reference| over the checked sequences.
    max_abs_err: f64,
    checked_sequences: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Random weights for `config`, in PyTorch's initial scale (uniform within
/// 1/sqrt(fan-in); LayerNorm weights near 1).
fn weights(config: &LayerConfig, seed: u64) -> Result<LayerWeights, CliError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tensors = TensorMap::new();
    for (key, shape) in expected_keys(config)? {
        let n: usize = shape.iter().product();
        let fan_in = *shape.last().unwrap_or(&1) as f32;
        let data: Vec<f32> = if key.ends_with("norm_stored_pattern.weight")
            || key.ends_with("norm_state_pattern.weight")
            || key.ends_with("norm_pattern_projection.weight")
        {
            (0..n).map(|_| 1.0 + rng.random_range(-0.1..0.1)).collect()
        } else {
            let bound = 1.0 / fan_in.sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        tensors.insert(key, Tensor { shape, data });
    }
    Ok(LayerWeights::from_tensors(&mut tensors, "", config)?)
}

/// Time one layer configuration.
pub fn measure(ctx: &hopfield_gpu::Context, b: &LayerBench) -> Result<LayerRecord, CliError> {
    let config = b.config()?;
    let w = weights(&config, 7)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let x: Vec<f32> = (0..b.n * b.s * b.features).map(|_| rng.random_range(-1.0..1.0)).collect();
    let seqs = Sequences::new("input", &[b.n, b.s, b.features], x)?;
    let inputs = match b.kind {
        LayerKind::Pooling => LayerInputs { stored: Some(&seqs), ..Default::default() },
        LayerKind::Hopfield => LayerInputs { stored: Some(&seqs), state: Some(&seqs), ..Default::default() },
    };
    let layer = Layer::new(ctx, &config, &w)?;
    let first = layer.forward(&inputs)?; // warm-up: lavapipe compiles pipelines on first use
    let mut total = Vec::with_capacity(b.repeats);
    for _ in 0..b.repeats {
        let t = Instant::now();
        layer.forward(&inputs)?;
        total.push(t.elapsed());
    }
    let mut phases: Vec<PhaseTimes> = Vec::with_capacity(b.repeats);
    for _ in 0..b.repeats {
        phases.push(layer.forward_profiled(&inputs)?.1);
    }
    // The reference on the first sequences (a few seconds of f64 at most).
    let per_seq = 4.0 * (b.s * b.s.max(1) * b.features) as f64 + 8.0 * (b.s * b.features * b.features) as f64;
    let checked = ((2e9 / per_seq) as usize).clamp(1, b.n.min(8));
    let sub = Sequences::new("input", &[checked, b.s, b.features], seqs.data[..checked * b.s * b.features].to_vec())?;
    let sub_inputs = match b.kind {
        LayerKind::Pooling => LayerInputs { stored: Some(&sub), ..Default::default() },
        LayerKind::Hopfield => LayerInputs { stored: Some(&sub), state: Some(&sub), ..Default::default() },
    };
    let want = forward_reference(&config, &w, &sub_inputs, StopRule::Association)?;
    let want: Vec<f64> = want.out.iter().flat_map(|m| m.data.iter().copied()).collect();
    let got = &first.data[..want.len()];
    let max_abs_err = hopfield_gpu::tolerance::max_abs_diff(got, &want);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(LayerRecord {
        layer: match b.kind {
            LayerKind::Pooling => "HopfieldPooling",
            LayerKind::Hopfield => "Hopfield",
        },
        method: b.method.name(),
        n: b.n,
        s: b.s,
        features: b.features,
        heads: b.heads,
        repeats: b.repeats,
        median_ms: ms(median(total)),
        projections_ms: ms(median(phases.iter().map(|p| p.projections).collect())),
        retrieval_ms: ms(median(phases.iter().map(|p| p.retrieval).collect())),
        rest_ms: ms(median(phases.iter().map(|p| p.rest).collect())),
        max_abs_err,
        checked_sequences: checked,
    })
}

pub fn print_table(records: &[LayerRecord]) {
    println!(
        "{:<16} {:<9} {:>5} {:>5} {:>5} {:>5} {:>11} {:>12} {:>12} {:>9} {:>10}",
        "layer", "method", "N", "S", "F", "heads", "median ms", "projections", "retrieval", "rest", "max|err|"
    );
    for r in records {
        println!(
            "{:<16} {:<9} {:>5} {:>5} {:>5} {:>5} {:>11.1} {:>12.1} {:>12.1} {:>9.1} {:>10.2e}",
            r.layer,
            r.method,
            r.n,
            r.s,
            r.features,
            r.heads,
            r.median_ms,
            r.projections_ms,
            r.retrieval_ms,
            r.rest_ms,
            r.max_abs_err
        );
    }
    println!(
        "median ms: the whole forward pass (upload, one submission, readback); projections / retrieval / rest: \
         the same work with each phase submitted and waited for alone (medians, ms); max|err| against the f64 \
         reference on the first sequences."
    );
}
