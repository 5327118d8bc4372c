//! Text corpora for the `tokenizer` stage, gathered from a world folder in the official formats:
//! every text turn of the SFT chains (`sft_interleaved.jsonl`, `sft_text.jsonl`) and every question
//! and answer (`questions.jsonl`).
use std::path::Path;

use serde_json::Value;

use crate::data::{read_sft_jsonl, SftItem};
use crate::error::{Result, TrainError};

/// The texts of a world folder. Errors if none of the three files is there.
pub fn world_corpus(dir: &Path) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    let mut found = false;
    for name in ["sft_interleaved.jsonl", "sft_text.jsonl"] {
        let path = dir.join(name);
        if path.is_file() {
            found = true;
            for chain in read_sft_jsonl(&path)? {
                texts.extend(chain.into_iter().filter_map(|item| match item {
                    SftItem::Text { value, .. } => Some(value),
                    _ => None,
                }));
            }
        }
    }
    let path = dir.join("questions.jsonl");
    if path.is_file() {
        found = true;
        let body = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        for (i, line) in body
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let row: Value = serde_json::from_str(line)
                .map_err(|e| TrainError::json(format!("{}:{}", path.display(), i + 1), e))?;
            for key in ["text", "answer_text"] {
                if let Some(s) = row.get(key).and_then(Value::as_str) {
                    texts.push(s.to_string());
                }
            }
            if let Some(options) = row.get("options").and_then(Value::as_array) {
                texts.extend(options.iter().filter_map(Value::as_str).map(str::to_string));
            }
        }
    }
    if !found {
        return Err(TrainError::Input(format!(
            "{}: no sft_interleaved.jsonl, sft_text.jsonl or questions.jsonl (run `cooper world`)",
            dir.display()
        )));
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::{train_bpe, BpeOptions};

    #[test]
    fn corpus_collects_turns_and_questions_and_trains_a_tokenizer() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| TrainError::io("tempdir", e))?;
        let chain = r#"{"interleaved_reason": [{"type": "text", "value": "Which cube is closer?", "need_loss": "false"}, {"type": "text", "value": "<think> The red cube. </think><answer> \\boxed{A} </answer>", "need_loss": "true"}]}"#;
        std::fs::write(dir.path().join("sft_text.jsonl"), format!("{chain}\n"))
            .map_err(|e| TrainError::io("sft_text.jsonl", e))?;
        let q = r#"{"text": "How tall is the blue cone?", "answer_text": "0.4", "options": ["0.4 m", "1 m"]}"#;
        std::fs::write(dir.path().join("questions.jsonl"), format!("{q}\n\n"))
            .map_err(|e| TrainError::io("questions.jsonl", e))?;
        let texts = world_corpus(dir.path())?;
        assert_eq!(
            texts,
            vec![
                "Which cube is closer?",
                "<think> The red cube. </think><answer> \\boxed{A} </answer>",
                "How tall is the blue cone?",
                "0.4",
                "0.4 m",
                "1 m"
            ]
        );
        let options = BpeOptions {
            vocab_size: 300,
            min_frequency: 1,
            show_progress: false,
        };
        let tok = train_bpe(texts.iter(), &options)?;
        let ids = tok
            .encode("Which cube is closer?", false)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        let back = tok
            .decode(ids.get_ids(), false)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        assert_eq!(back, "Which cube is closer?");

        let empty = tempfile::tempdir().map_err(|e| TrainError::io("tempdir", e))?;
        assert!(world_corpus(empty.path()).is_err());
        Ok(())
    }
}
