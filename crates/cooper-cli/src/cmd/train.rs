//! `cooper train <stage>`: the training stages. Implemented so far: `tokenizer`.
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
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
    }
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
