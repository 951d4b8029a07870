//! `hopfield-gpu forward`: a Hopfield network (model JSON + one safetensors
//! file of its weights; docs/networks.md) run on a .npy input.

use std::path::PathBuf;

use hopfield_gpu::layer::gpu::network::Network;
use hopfield_gpu::layer::network::Model;
use hopfield_gpu::layer::Sequences;
use hopfield_gpu::npy;

use super::paths::{self, Named};
use super::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The network: `{"input": d, "blocks": [...]}` (docs/networks.md).
    #[arg(long, value_name = "net.json")]
    model: PathBuf,
    /// Every block's weights, under the blocks' names.
    #[arg(long, value_name = "net.safetensors")]
    weights: PathBuf,
    /// Input rows: [N, L, d] (N independent sequences) or [L, d].
    #[arg(long, value_name = "X.npy")]
    input: PathBuf,
    /// Where to write the output, float32, [N, L', out] or [L', out].
    #[arg(long, value_name = "Y.npy")]
    out: PathBuf,
}

pub fn run(args: &Args, device: &Option<String>) -> Result<(), CliError> {
    paths::check(
        &[Some(Named { flag: "--out", path: &args.out })],
        &[
            Some(Named { flag: "--model", path: &args.model }),
            Some(Named { flag: "--weights", path: &args.weights }),
            Some(Named { flag: "--input", path: &args.input }),
        ],
    )?;
    let model = Model::from_files(&args.model, &args.weights)?;
    let a = npy::read_array(&args.input, 2..=3)?;
    let three = a.shape.len() == 3;
    let x = Sequences::new("input", &a.shape, a.data)?;
    if x.features != model.input {
        return Err(CliError::Usage {
            flag: "--input",
            why: format!("{}: {} features, the model takes {}", args.input.display(), x.features, model.input),
        });
    }
    let ctx = super::context(device)?;
    let net = Network::new(&ctx, &model)?;
    let out = net.forward(&x)?;
    let shape: Vec<usize> = if three { vec![out.n, out.rows, out.features] } else { vec![out.rows, out.features] };
    npy::stage_f32(&args.out, &shape, &out.data)?.commit()?;
    eprintln!("network of {} blocks: {:?} -> {:?} -> {}", model.blocks.len(), a.shape, shape, args.out.display());
    Ok(())
}
