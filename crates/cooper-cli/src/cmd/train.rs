//! `cooper train <stage>`: the training stages (`tokenizer` here; the model stages run in
//! `cooper-stages`).
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

use super::common::{parse_device, parse_dtype};
use cooper_train::config::{Stage, TrainConfig};
use cooper_train::corpus::world_corpus;
use cooper_train::tokenizer::{save_tokenizer, train_bpe, BpeOptions};

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(subcommand)]
    stage: TrainStage,
}

#[derive(clap::Subcommand)]
enum TrainStage {
    /// A byte-level BPE tokenizer with BAGEL's special tokens at ids 0-4, trained on a world folder's
    /// chains and questions and/or text files.
    Tokenizer(TokenizerArgs),
    /// A FLUX-architecture autoencoder on pictures (stage-1 JSONL files or picture folders).
    Ae(StageArgs),
    /// Dense ViT pretraining on stage-1 JSONL files (per-patch semantic class and depth): the
    /// stand-in for SigLIP's pretraining in a model trained from scratch.
    Vit(StageArgs),
    /// Stage 1, auxiliary modality generation: picture -> depth / segmentation, flow loss.
    Amg(StageArgs),
    /// Stage 2a: supervised fine-tuning on interleaved reasoning chains.
    Sft(StageArgs),
    /// Stage 2b: GRPO with the CPR reward, rollouts through the reasoning loop.
    Grpo(StageArgs),
}

#[derive(clap::Args)]
struct StageArgs {
    /// Run config (TOML); keys not given keep the stage's defaults (the official scripts').
    #[arg(long)]
    config: Option<PathBuf>,
    /// Base model folder (configs, tokenizer, autoencoder): `model.model_path`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Folder whose weights initialise the run: `model.init_from`.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Training files (replace `data.files`).
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Run folder: `run.out_dir` (checkpoints, metrics.jsonl, plots, model/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Optimiser steps: `run.total_steps`.
    #[arg(long)]
    steps: Option<u64>,
    /// Any config value, as `section.key=value` (TOML syntax for the value); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the newest checkpoint in the run folder.
    #[arg(long)]
    resume: bool,
    /// Stop after this many steps in this invocation (continue later with --resume).
    #[arg(long)]
    stop_after: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Dtype of the exported model folder: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    export_dtype: String,
    /// Print the resolved config and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(clap::Args)]
struct TokenizerArgs {
    /// Run config (TOML); its `[tokenizer]` section sets the vocabulary size and minimum frequency.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A `cooper world` output folder to read texts from.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Extra text files (one text per line).
    #[arg(long)]
    files: Vec<PathBuf>,
    /// Vocabulary size (overrides the config).
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Output folder: tokenizer.json and special_tokens.json.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: TrainArgs) -> Result<()> {
    match args.stage {
        TrainStage::Tokenizer(a) => tokenizer(a),
        TrainStage::Ae(a) => model_stage(Stage::Ae, a),
        TrainStage::Vit(a) => model_stage(Stage::Vit, a),
        TrainStage::Amg(a) => model_stage(Stage::Amg, a),
        TrainStage::Sft(a) => model_stage(Stage::Sft, a),
        TrainStage::Grpo(a) => model_stage(Stage::Grpo, a),
    }
}

fn model_stage(stage: Stage, a: StageArgs) -> Result<()> {
    let mut config = match &a.config {
        Some(path) => TrainConfig::from_toml_file(path, Some(stage))
            .with_context(|| format!("reading {}", path.display()))?,
        None => TrainConfig::for_stage(stage),
    };
    let mut flags: Vec<String> = Vec::new();
    let quoted = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    if let Some(m) = &a.model {
        flags.push(format!("model.model_path={}", quoted(m)));
    }
    if let Some(m) = &a.init_from {
        flags.push(format!("model.init_from={}", quoted(m)));
    }
    if !a.data.is_empty() {
        let files: Vec<String> = a.data.iter().map(|p| quoted(p)).collect();
        flags.push(format!("data.files=[{}]", files.join(", ")));
    }
    if let Some(o) = &a.out {
        flags.push(format!("run.out_dir={}", quoted(o)));
    }
    if let Some(n) = a.steps {
        flags.push(format!("run.total_steps={n}"));
    }
    flags.extend(a.overrides.iter().cloned());
    config
        .apply_overrides(&flags)
        .context("applying command-line settings")?;
    if a.print_config {
        print!("{}", config.to_toml_string()?);
        return Ok(());
    }
    let opts = cooper_stages::RunOptions {
        device: parse_device(&a.device)?,
        dtype: parse_dtype(&a.dtype)?,
        resume: a.resume,
        progress: true,
        export_dtype: parse_dtype(&a.export_dtype)?,
        stop_after: a.stop_after,
    };
    let report = cooper_stages::run_stage(&config, &opts)
        .with_context(|| format!("cooper train {}", stage.name()))?;
    let json = serde_json::to_vec_pretty(&report)?;
    cooper_model::init::write_atomic(&config.run.out_dir.join("report.json"), &json)?;
    let loss = |l: Option<f64>| l.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!(
        "{}: {} steps this run (step {} of {}), loss {} -> {}, {:.3} s/step, {:.0} tokens/s",
        stage.name(),
        report.steps_run,
        report.final_step,
        config.run.total_steps,
        loss(report.first_loss),
        loss(report.last_loss),
        report.mean_step_seconds,
        report.tokens_per_second
    );
    println!("model folder: {}", report.model_dir.display());
    for p in &report.plots {
        println!("plot: {}", p.display());
    }
    Ok(())
}

fn tokenizer(a: TokenizerArgs) -> Result<()> {
    let config = match &a.config {
        Some(path) => TrainConfig::from_toml_file(path, Some(Stage::Tokenizer))
            .with_context(|| format!("reading {}", path.display()))?,
        None => TrainConfig::for_stage(Stage::Tokenizer),
    };
    let mut options = BpeOptions::from_config(&config.tokenizer);
    if let Some(v) = a.vocab_size {
        options.vocab_size = v;
    }
    let mut texts = Vec::new();
    if let Some(dir) = &a.data {
        texts.extend(world_corpus(dir)?);
    }
    for f in &a.files {
        let body =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        texts.extend(
            body.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    if texts.is_empty() {
        bail!("no training text: pass --data WORLD_DIR and/or --files FILE...");
    }
    let tok = train_bpe(texts.iter(), &options)?;
    let (json, special) = save_tokenizer(&tok, &a.out)?;
    println!(
        "trained a {}-token BPE on {} texts: {} and {}",
        tok.get_vocab_size(true),
        texts.len(),
        json.display(),
        special.display()
    );
    Ok(())
}
