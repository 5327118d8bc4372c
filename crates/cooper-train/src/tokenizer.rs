//! The `tokenizer` stage: a byte-level BPE trained with the `tokenizers` crate, carrying BAGEL's
//! special tokens.
//!
//! Layout (as `tests/fixtures/bagel-tiny/tokenizer.json`): no normaliser; `ByteLevel`
//! pre-tokenizer without a prefix space (GPT-2 regex); `ByteLevel` decoder; BPE model whose
//! vocabulary starts with the special tokens [`SPECIAL_TOKENS`] at ids 0–4, then the 256-symbol
//! byte alphabet, then the learned merges. The special tokens are registered as added special
//! tokens, so they are never split. [`save_tokenizer`] writes `tokenizer.json` and
//! `special_tokens.json` (the ids BAGEL's `add_special_tokens` returns: bos `<|im_start|>`, eos
//! `<|im_end|>`, start/end of image `<|vision_start|>` / `<|vision_end|>`), each atomically.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Result, TrainError};

/// End of text (id 0).
pub const ENDOFTEXT: &str = "<|endoftext|>";
/// Start of a text turn, BAGEL's bos (id 1).
pub const IM_START: &str = "<|im_start|>";
/// End of a text turn, BAGEL's eos (id 2).
pub const IM_END: &str = "<|im_end|>";
/// Start of an image (id 3).
pub const VISION_START: &str = "<|vision_start|>";
/// End of an image (id 4).
pub const VISION_END: &str = "<|vision_end|>";
/// The special tokens in id order.
pub const SPECIAL_TOKENS: [&str; 5] = [ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END];

/// Training settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpeOptions {
    /// Final vocabulary size (special tokens and the 256-symbol alphabet included).
    pub vocab_size: usize,
    /// Pairs seen fewer times are not merged.
    pub min_frequency: u64,
    /// Show the `tokenizers` progress bars.
    pub show_progress: bool,
}

impl BpeOptions {
    /// From the run config's `[tokenizer]` section.
    pub fn from_config(config: &crate::config::TokenizerConfig) -> Self {
        Self {
            vocab_size: config.vocab_size,
            min_frequency: config.min_frequency,
            show_progress: false,
        }
    }
}

fn tok_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Tokenizer(e.to_string())
}

fn untrained(options: &BpeOptions) -> Result<(Tokenizer, TrainerWrapper)> {
    let minimum = SPECIAL_TOKENS.len() + 256;
    if options.vocab_size < minimum {
        return Err(TrainError::Config(format!(
            "vocab_size {} cannot hold the {} special tokens and 256 byte symbols",
            options.vocab_size,
            SPECIAL_TOKENS.len()
        )));
    }
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(options.vocab_size)
        .min_frequency(options.min_frequency)
        .show_progress(options.show_progress)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .initial_alphabet(alphabet)
        .build();
    Ok((tokenizer, TrainerWrapper::BpeTrainer(trainer)))
}

fn check_special_ids(tokenizer: &Tokenizer) -> Result<()> {
    for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
        let got = tokenizer.token_to_id(token);
        if got != Some(id as u32) {
            return Err(TrainError::Tokenizer(format!(
                "{token} has id {got:?} after training, expected {id}"
            )));
        }
    }
    Ok(())
}

/// Trains on an iterator of texts.
pub fn train_bpe<I, S>(texts: I, options: &BpeOptions) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    let (mut tokenizer, mut trainer) = untrained(options)?;
    tokenizer.train(&mut trainer, texts).map_err(tok_err)?;
    check_special_ids(&tokenizer)?;
    Ok(tokenizer)
}

/// Trains on text files (read line by line, line endings kept).
pub fn train_bpe_from_files(files: &[PathBuf], options: &BpeOptions) -> Result<Tokenizer> {
    if files.is_empty() {
        return Err(TrainError::Config(
            "no training files for the tokenizer".into(),
        ));
    }
    for file in files {
        if !file.is_file() {
            return Err(TrainError::io(
                file,
                std::io::Error::new(std::io::ErrorKind::NotFound, "training file not found"),
            ));
        }
    }
    let (mut tokenizer, mut trainer) = untrained(options)?;
    let names = files
        .iter()
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    tokenizer
        .train_from_files(&mut trainer, names)
        .map_err(tok_err)?;
    check_special_ids(&tokenizer)?;
    Ok(tokenizer)
}

/// An id and its token, as in `special_tokens.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenId {
    /// Token id.
    pub id: u32,
    /// Token text.
    pub token: String,
}

/// The content of `special_tokens.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokenIds {
    /// `<|im_start|>`.
    pub bos_token_id: TokenId,
    /// `<|im_end|>`.
    pub eos_token_id: TokenId,
    /// `<|vision_start|>`.
    pub start_of_image: TokenId,
    /// `<|vision_end|>`.
    pub end_of_image: TokenId,
}

impl SpecialTokenIds {
    /// Looks the four BAGEL tokens up in `tokenizer`.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self> {
        let get = |token: &str| {
            tokenizer
                .token_to_id(token)
                .map(|id| TokenId {
                    id,
                    token: token.to_string(),
                })
                .ok_or_else(|| TrainError::Tokenizer(format!("tokenizer lacks {token}")))
        };
        Ok(Self {
            bos_token_id: get(IM_START)?,
            eos_token_id: get(IM_END)?,
            start_of_image: get(VISION_START)?,
            end_of_image: get(VISION_END)?,
        })
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| TrainError::io(dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| TrainError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| TrainError::io(path, e.error))?;
    Ok(())
}

/// Writes `tokenizer.json` and `special_tokens.json` into `dir` (created if needed), each via a
/// temporary file and a rename. Returns the two paths.
pub fn save_tokenizer(tokenizer: &Tokenizer, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let ids = SpecialTokenIds::from_tokenizer(tokenizer)?;
    let json = tokenizer.to_string(true).map_err(tok_err)?;
    let special =
        serde_json::to_string_pretty(&ids).map_err(|e| TrainError::json("special tokens", e))?;
    let tokenizer_path = dir.join("tokenizer.json");
    let special_path = dir.join("special_tokens.json");
    write_atomic(&tokenizer_path, json.as_bytes())?;
    write_atomic(&special_path, special.as_bytes())?;
    Ok((tokenizer_path, special_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORPUS: &[&str] = &[
        "The chair is closer to the camera than the table.",
        "Estimate the depth of the image and generate the depth map.",
        "Segment the objects in the image with different colors.",
        "<think>The depth map shows the chair in red, so it is near.</think>",
        "There are three chairs, two tables and one lamp in the room.",
        "Which object is farther away: the lamp or the sofa? The sofa.",
        "the the the then there these those this that thin thing",
        "Ünïcödé bytes: naïve café — 深度 估计 ✓",
    ];

    fn options() -> BpeOptions {
        BpeOptions {
            vocab_size: 300,
            min_frequency: 2,
            show_progress: false,
        }
    }

    #[test]
    fn trained_tokenizer_round_trips_and_keeps_special_ids() {
        let tok = train_bpe(CORPUS.iter().copied(), &options()).unwrap();
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(tok.token_to_id(token), Some(id as u32));
        }
        let size = tok.get_vocab_size(true);
        assert!(size > 261 && size <= 300, "vocab size {size}");
        // Learned merges make common words shorter than their bytes.
        let enc = tok.encode("the chair", false).unwrap();
        assert!(enc.get_ids().len() < "the chair".len());

        for text in CORPUS.iter().chain(["never seen: zebra ☂ 42"].iter()) {
            let ids = tok.encode(*text, false).unwrap().get_ids().to_vec();
            assert_eq!(tok.decode(&ids, false).unwrap(), *text);
        }
        // A turn's given part and learnt part (`loss_start`) are tokenised apart; split before a
        // space, the two encodings join into the whole text's.
        let ids = |t: &str| tok.encode(t, false).unwrap().get_ids().to_vec();
        let whole = "<think> I can see the sofa, about 2.1 m away. The sofa is closer. </think>";
        let split = whole.find(" The").unwrap();
        assert_eq!(
            [ids(&whole[..split]), ids(&whole[split..])].concat(),
            ids(whole)
        );
        // Special tokens are single ids inside text.
        let text = format!("{IM_START}hi{IM_END}{VISION_START}{VISION_END}{ENDOFTEXT}");
        let ids = tok.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        assert_eq!(ids[0], 1);
        assert_eq!(&ids[ids.len() - 4..], &[2, 3, 4, 0]);
        assert!(tok.decode(&ids, true).unwrap() == "hi");
    }

    #[test]
    fn files_are_written_and_reload_like_the_fixture() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = dir.path().join("corpus.txt");
        std::fs::write(&corpus, CORPUS.join("\n")).unwrap();
        let tok = train_bpe_from_files(std::slice::from_ref(&corpus), &options()).unwrap();
        let out = dir.path().join("tok");
        let (tok_path, special_path) = save_tokenizer(&tok, &out).unwrap();

        let reloaded = Tokenizer::from_file(&tok_path).unwrap();
        let text = "The chair is closer.";
        assert_eq!(
            reloaded.encode(text, false).unwrap().get_ids(),
            tok.encode(text, false).unwrap().get_ids()
        );
        // special_tokens.json has the fixture's exact shape.
        let ours: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&special_path).unwrap()).unwrap();
        let fixture_dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bagel-tiny");
        let fixture: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture_dir.join("special_tokens.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(ours, fixture);
        // tokenizer.json has the fixture's pipeline: no normaliser, ByteLevel without prefix
        // space, ByteLevel decoder, the five added special tokens at 0–4.
        let ours: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&tok_path).unwrap()).unwrap();
        let fixture: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture_dir.join("tokenizer.json")).unwrap(),
        )
        .unwrap();
        for key in [
            "normalizer",
            "pre_tokenizer",
            "post_processor",
            "decoder",
            "added_tokens",
        ] {
            assert_eq!(ours[key], fixture[key], "{key}");
        }
        assert_eq!(ours["model"]["type"], "BPE");
        // The fixture's own tokenizer loads with our constants.
        let fixture_tok = Tokenizer::from_file(fixture_dir.join("tokenizer.json")).unwrap();
        assert_eq!(
            SpecialTokenIds::from_tokenizer(&fixture_tok).unwrap(),
            SpecialTokenIds::from_tokenizer(&tok).unwrap()
        );
        // No temporary files are left behind.
        let entries = std::fs::read_dir(&out).unwrap().count();
        assert_eq!(entries, 2);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let small = BpeOptions {
            vocab_size: 100,
            ..options()
        };
        assert!(train_bpe(CORPUS.iter().copied(), &small).is_err());
        assert!(train_bpe_from_files(&[], &options()).is_err());
        assert!(train_bpe_from_files(&[PathBuf::from("/nonexistent/x.txt")], &options()).is_err());
    }
}
