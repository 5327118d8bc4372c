//! `cooper init`: write a randomly initialised model folder in the official layout.
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use cooper_model::init::{init_folder_with_tokenizer, Preset};

#[derive(clap::Args)]
pub struct InitArgs {
    /// tiny (fixture-sized), default (the embedded default's size), small (Qwen2-0.5B + SigLIP-base +
    /// FLUX AE) or bagel-7b (real dimensions).
    #[arg(long)]
    preset: String,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Write random weights too (default: yes for tiny and small, config files only for bagel-7b).
    #[arg(long)]
    weights: Option<bool>,
    /// Dtype of the written weights: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Seed of the weight draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder with a `tokenizer.json` (e.g. from `cooper train tokenizer`) to use instead of the
    /// byte-level stand-in; the vocabulary is sized to it.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

pub fn run(args: InitArgs) -> Result<()> {
    let preset: Preset = args.preset.parse().map_err(anyhow::Error::msg)?;
    let weights = args.weights.unwrap_or(preset != Preset::Bagel7b);
    let dtype = super::common::parse_dtype(&args.dtype)?;
    init_folder_with_tokenizer(
        &args.out,
        preset,
        args.tokenizer.as_deref(),
        weights,
        dtype,
        args.seed,
    )
    .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} model folder to {}{}",
        args.preset,
        args.out.display(),
        if weights { "" } else { " (config files only)" }
    );
    Ok(())
}
