//! `hopfield-gpu layer`: a trained hopfield-layers module (config JSON +
//! safetensors state dict, as tools/export_hflayers.py writes them) run on
//! .npy inputs, its output to .npy. docs/hflayers.md says what is supported.

use std::path::PathBuf;

use hopfield_gpu::layer::config::LayerConfig;
use hopfield_gpu::layer::gpu::Layer;
use hopfield_gpu::layer::weights::LayerWeights;
use hopfield_gpu::layer::{LayerInputs, Mask, Sequences};
use hopfield_gpu::{npy, BatchStop};

use super::paths::{self, Named};
use super::{CliError, MethodArg, MethodFlags};

/// The stop rule of the layer's updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StopArg {
    /// hopfield-layers': per head, the Frobenius norm of the change of the
    /// association matrix, maximised over the batch, at most eps.
    Hflayers,
    /// The engine's: per query, no coordinate of its state moves by more than eps.
    PerQuery,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The module's config, `{"class": ..., "args": {...}}` (tools/export_hflayers.py).
    #[arg(long, value_name = "C.json")]
    config: PathBuf,
    /// Its state dict, saved with safetensors.torch.save_file.
    #[arg(long, value_name = "W.safetensors")]
    weights: PathBuf,
    /// Stored patterns: [N, S, F] (batch first) or [S, F]. Hopfield and
    /// HopfieldPooling (its input).
    #[arg(long, value_name = "Y.npy")]
    stored: Option<PathBuf>,
    /// State patterns: [N, L, F] or [L, F]. Hopfield and HopfieldLayer (its input).
    #[arg(long, value_name = "R.npy")]
    state: Option<PathBuf>,
    /// Pattern projections: [N, S, F] or [S, F]; default: the stored patterns.
    /// Hopfield and HopfieldPooling.
    #[arg(long, value_name = "P.npy")]
    projection: Option<PathBuf>,
    /// Key-padding mask over the stored patterns, nonzero = absent: [N, S]
    /// (or [S] for 2-D inputs), uint8 or float.
    #[arg(long, value_name = "K.npy")]
    mask: Option<PathBuf>,
    /// Where to write the output, float32 [N, L, out] ([L, out] for 2-D
    /// inputs; L = quantity for HopfieldPooling).
    #[arg(long, value_name = "Z.npy")]
    out: PathBuf,
    /// Replace the config's retrieval method (the NPH layer); default: the
    /// config's `method`, dense if it has none.
    #[arg(long, value_enum)]
    method: Option<MethodArg>,
    #[command(flatten)]
    flags: MethodFlags,
    /// Stop rule of the updates (update_steps_max > 0).
    #[arg(long, value_enum, default_value = "hflayers")]
    stop: StopArg,
}

/// Read a layer input, 2-D or 3-D.
fn sequences(path: &std::path::Path, what: &'static str) -> Result<(Sequences, bool), CliError> {
    let a = npy::read_array(path, 2..=3)?;
    let three = a.shape.len() == 3;
    Ok((Sequences::new(what, &a.shape, a.data)?, three))
}

pub fn run(args: &Args, device: &Option<String>) -> Result<(), CliError> {
    let mut config = LayerConfig::from_file(&args.config)?;
    match args.method {
        Some(m) => config.method = args.flags.method(m)?,
        None => {
            // Method flags without --method would be ignored: refuse them.
            args.flags.none_given("--method")?;
        }
    }
    hopfield_gpu::layer::config::check_layer_method(&config.method)?;
    if let hopfield_gpu::Method::Poly { degree: None, .. } = config.method {
        return Err(CliError::Usage {
            flag: "--degree",
            why: "a layer's queries are computed on the device, so --method poly needs its --degree".into(),
        });
    }
    let class = config.class.name();
    let refuse = |flag: &'static str, given: bool, why: &str| -> Result<(), CliError> {
        if given {
            return Err(CliError::Usage { flag, why: format!("{class} {why}") });
        }
        Ok(())
    };
    use hopfield_gpu::layer::config::LayerClass;
    match config.class {
        LayerClass::Hopfield => {
            refuse("--stored", args.stored.is_none(), "needs its stored patterns")?;
            refuse("--state", args.state.is_none(), "needs its state patterns")?;
        }
        LayerClass::HopfieldPooling => {
            refuse("--state", args.state.is_some(), "learns its state patterns: give its input as --stored")?;
            refuse("--stored", args.stored.is_none(), "takes its input as --stored")?;
        }
        LayerClass::HopfieldLayer => {
            refuse("--stored", args.stored.is_some(), "learns its stored patterns: give its input as --state")?;
            refuse("--projection", args.projection.is_some(), "learns its pattern projections")?;
            refuse("--state", args.state.is_none(), "takes its input as --state")?;
        }
    }
    paths::check(
        &[Some(Named { flag: "--out", path: &args.out })],
        &[
            Some(Named { flag: "--config", path: &args.config }),
            Some(Named { flag: "--weights", path: &args.weights }),
            Named::opt("--stored", &args.stored),
            Named::opt("--state", &args.state),
            Named::opt("--projection", &args.projection),
            Named::opt("--mask", &args.mask),
        ],
    )?;
    let weights = LayerWeights::from_file(&args.weights, &config)?;
    let stored = args.stored.as_ref().map(|p| sequences(p, "stored")).transpose()?;
    let state = args.state.as_ref().map(|p| sequences(p, "state")).transpose()?;
    let projection = args.projection.as_ref().map(|p| sequences(p, "projection")).transpose()?;
    let ranks: Vec<bool> = [&stored, &state, &projection].iter().filter_map(|s| s.as_ref().map(|x| x.1)).collect();
    if ranks.windows(2).any(|w| w[0] != w[1]) {
        return Err(CliError::Usage {
            flag: "--stored",
            why: "the inputs mix 2-D [S, F] and 3-D [N, S, F] arrays: give all of them one way".into(),
        });
    }
    let three = ranks.first().copied().unwrap_or(false);
    let mask = match &args.mask {
        None => None,
        Some(path) => {
            let a = npy::read_array(path, 1..=2)?;
            let (n, s) = match (three, a.shape.as_slice()) {
                (true, &[n, s]) => (n, s),
                (false, &[s]) => (1, s),
                (_, shape) => {
                    return Err(CliError::Usage {
                        flag: "--mask",
                        why: format!(
                            "{}: shape {shape:?}; with {} inputs the mask is {}",
                            path.display(),
                            if three { "3-D" } else { "2-D" },
                            if three { "[N, S]" } else { "[S]" }
                        ),
                    })
                }
            };
            if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
                return Err(CliError::Usage {
                    flag: "--mask",
                    why: format!("{}: value {} at {i}", path.display(), a.data[i]),
                });
            }
            Some(Mask { n, s, masked: a.data.iter().map(|&v| v != 0.0).collect() })
        }
    };
    let inputs = LayerInputs {
        stored: stored.as_ref().map(|s| &s.0),
        state: state.as_ref().map(|s| &s.0),
        projection: projection.as_ref().map(|s| &s.0),
        mask: mask.as_ref(),
    };
    // The inputs against the config, before the device.
    hopfield_gpu::layer::resolve(&config, &weights, &inputs)?;
    let ctx = super::context(device)?;
    let stop = match args.stop {
        StopArg::Hflayers => BatchStop::Association,
        StopArg::PerQuery => BatchStop::PerQuery,
    };
    let layer = Layer::new(&ctx, &config, &weights)?.with_stop(stop);
    let out = layer.forward(&inputs)?;
    let shape: Vec<usize> = if three { vec![out.n, out.rows, out.features] } else { vec![out.rows, out.features] };
    npy::stage_f32(&args.out, &shape, &out.data)?.commit()?;
    eprintln!(
        "{class} ({}): {:?} -> {} (updates per head {:?})",
        config.method.name(),
        shape,
        args.out.display(),
        out.updates
    );
    Ok(())
}
