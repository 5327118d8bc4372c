//! Readers for the training JSONL files that need no model: the GRPO prompts (`RL_data.jsonl`)
//! and the interleaved SFT chains (`Interleaved_SFT.jsonl`).
//!
//! * RL rows: `image` (path under an image root), `question`, `answer` (the `solution` column),
//!   `data_id` (string or number), optional `flag` (`positive` / `negative`; default `boundary`).
//! * SFT rows: only `interleaved_reason` is read, a list of `{"type": "text", "value": …,
//!   "need_loss": "true" | "false"}` or `{"type": <image kind>, "value": <base64, optionally
//!   with a `data:…;base64,` prefix>}`. Cross-entropy covers exactly the text items whose
//!   `need_loss` is the string `"true"`. A project extension, absent from official rows: a
//!   learnt text item may carry `"loss_start": N`, and then its first N characters are context
//!   the turn is given, not learnt (a thought whose opening the row supplies, see
//!   docs/data-formats.md); with `"given_from": K` as well (K < N), only characters K..N are
//!   given, and the turn is learnt before and after them.
//!
//! Malformed lines are errors naming the file and line. The RL rows are shuffled with a seeded
//! ChaCha RNG (seed 42 by default, like the official loader; the permutation differs from
//! Python's `random.shuffle`).

use std::path::{Path, PathBuf};

use base64::Engine;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::error::{Result, TrainError};
use crate::rewards::{Flag, RewardColumns};

/// One GRPO prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct RlRow {
    /// The image file (image root joined with the row's `image`).
    pub image: PathBuf,
    /// The question.
    pub question: String,
    /// The reference answer (`answer` in the file).
    pub solution: String,
    /// Group id shared by the completions of this prompt.
    pub data_id: String,
    /// Exploration flag.
    pub flag: Flag,
}

/// One item of an SFT chain.
#[derive(Debug, Clone, PartialEq)]
pub enum SftItem {
    /// A text turn; `need_loss` marks the turns the model learns to produce.
    Text {
        /// The text.
        value: String,
        /// Cross-entropy on this turn (and its closing `<|im_end|>`).
        need_loss: bool,
        /// Byte index in `value` where the learnt part of a `need_loss` turn starts (0: all of
        /// it); the text from `given_from` to it is context, in the same turn.
        loss_start: usize,
        /// Byte index in `value` where that context starts (0 but for `"given_from"`); the text
        /// before it is learnt too.
        given_from: usize,
    },
    /// An image (input or a depth / segmentation result), decoded from base64.
    Image {
        /// The row's `type` value.
        kind: String,
        /// Encoded image bytes (PNG, JPEG, …).
        bytes: Vec<u8>,
    },
}

fn line_err(path: &Path, line: usize, msg: impl std::fmt::Display) -> TrainError {
    TrainError::Input(format!("{} line {line}: {msg}", path.display()))
}

fn read_lines(path: &Path) -> Result<Vec<(usize, Value)>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map(|v| (i + 1, v))
                .map_err(|e| line_err(path, i + 1, e))
        })
        .collect()
}

fn string_field(row: &Value, key: &str, path: &Path, line: usize) -> Result<String> {
    match row.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(line_err(
            path,
            line,
            format!("`{key}` is {other}, not a string"),
        )),
        None => Err(line_err(path, line, format!("missing `{key}`"))),
    }
}

/// Reads the GRPO prompts, resolving images against `image_root`.
pub fn read_rl_jsonl(path: &Path, image_root: &Path) -> Result<Vec<RlRow>> {
    read_lines(path)?
        .into_iter()
        .map(|(line, row)| {
            let flag = match row.get("flag") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(other) => {
                    return Err(line_err(path, line, format!("`flag` is {other}")));
                }
            };
            Ok(RlRow {
                image: image_root.join(string_field(&row, "image", path, line)?),
                question: string_field(&row, "question", path, line)?,
                solution: string_field(&row, "answer", path, line)?,
                data_id: string_field(&row, "data_id", path, line)?,
                flag: Flag::parse(flag),
            })
        })
        .collect()
}

/// A seeded permutation of `0..n`.
pub fn shuffled_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// The reward columns of a round in which each row was completed `num_generations` times in a
/// row (the layout GRPO groups assume).
pub fn reward_columns(rows: &[&RlRow], num_generations: usize) -> RewardColumns {
    let repeat = |f: &dyn Fn(&RlRow) -> String| -> Vec<String> {
        rows.iter()
            .flat_map(|r| std::iter::repeat_n(f(r), num_generations))
            .collect()
    };
    RewardColumns {
        solution: repeat(&|r| r.solution.clone()),
        question: repeat(&|r| r.question.clone()),
        data_id: repeat(&|r| r.data_id.clone()),
        flag: rows
            .iter()
            .flat_map(|r| std::iter::repeat_n(r.flag, num_generations))
            .collect(),
    }
}

/// Decodes a base64 image, dropping a `data:…;base64,` prefix.
pub fn decode_base64_image(value: &str) -> std::result::Result<Vec<u8>, String> {
    let payload = match value.find("base64,") {
        Some(i) => &value[i + "base64,".len()..],
        None => value,
    };
    base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| format!("bad base64 image: {e}"))
}

/// A text item's character count under `key` (`loss_start`, `given_from`), if it has one.
fn char_count(item: &Value, key: &str) -> std::result::Result<Option<usize>, String> {
    let Some(raw) = item.get(key) else {
        return Ok(None);
    };
    let chars = raw
        .as_u64()
        .ok_or_else(|| format!("`{key}` is {raw}, not a character count"))?;
    usize::try_from(chars)
        .map(Some)
        .map_err(|_| format!("`{key}` {chars} is too large"))
}

/// The byte index of a text item's `given_from` (counted in characters in the file), which must
/// come before its `loss_start` (`loss_start`, a byte index); 0 without one.
fn given_from(item: &Value, value: &str, loss_start: usize) -> std::result::Result<usize, String> {
    let Some(chars) = char_count(item, "given_from")? else {
        return Ok(0);
    };
    if item.get("loss_start").is_none() {
        return Err("`given_from` without a `loss_start` to end the given text".into());
    }
    value
        .char_indices()
        .nth(chars)
        .map(|(byte, _)| byte)
        .filter(|byte| *byte < loss_start)
        .ok_or_else(|| format!("`given_from` {chars} is not before `loss_start`"))
}

/// The byte index of a text item's `loss_start` (counted in characters in the file); 0 without
/// one.
fn loss_start(item: &Value, value: &str, need_loss: bool) -> std::result::Result<usize, String> {
    let Some(chars) = char_count(item, "loss_start")? else {
        return Ok(0);
    };
    if !need_loss {
        return Err("`loss_start` on a turn whose `need_loss` is not \"true\"".into());
    }
    match value.char_indices().nth(chars) {
        Some((byte, _)) => Ok(byte),
        None => Err(format!(
            "`loss_start` {chars} leaves nothing to learn in a text of {} characters",
            value.chars().count()
        )),
    }
}

/// Reads the SFT chains, one `Vec<SftItem>` per line.
pub fn read_sft_jsonl(path: &Path) -> Result<Vec<Vec<SftItem>>> {
    read_lines(path)?
        .into_iter()
        .map(|(line, row)| {
            let items = row
                .get("interleaved_reason")
                .and_then(Value::as_array)
                .ok_or_else(|| line_err(path, line, "missing `interleaved_reason` list"))?;
            items
                .iter()
                .enumerate()
                .map(|(k, item)| {
                    let kind = item
                        .get("type")
                        .and_then(Value::as_str)
                        .ok_or_else(|| line_err(path, line, format!("item {k} has no `type`")))?;
                    let value = item
                        .get("value")
                        .and_then(Value::as_str)
                        .ok_or_else(|| line_err(path, line, format!("item {k} has no `value`")))?;
                    if kind == "text" {
                        let need_loss =
                            item.get("need_loss").and_then(Value::as_str) == Some("true");
                        let loss_start = loss_start(item, value, need_loss)
                            .map_err(|e| line_err(path, line, format!("item {k}: {e}")))?;
                        let given_from = given_from(item, value, loss_start)
                            .map_err(|e| line_err(path, line, format!("item {k}: {e}")))?;
                        Ok(SftItem::Text {
                            value: value.to_string(),
                            need_loss,
                            loss_start,
                            given_from,
                        })
                    } else {
                        let bytes = decode_base64_image(value)
                            .map_err(|e| line_err(path, line, format!("item {k}: {e}")))?;
                        Ok(SftItem::Image {
                            kind: kind.to_string(),
                            bytes,
                        })
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rl_rows_and_reward_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rl.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"image": "a.jpg", "question": "Q1", "answer": "B", "data_id": 7, "flag": "positive"}"#,
                "\n\n",
                r#"{"image": "b.jpg", "question": "Q2", "answer": "yes", "data_id": "x2"}"#,
                "\n"
            ),
        )
        .unwrap();
        let rows = read_rl_jsonl(&path, Path::new("/imgs")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].image, PathBuf::from("/imgs/a.jpg"));
        assert_eq!(rows[0].data_id, "7");
        assert_eq!(rows[0].flag, Flag::Positive);
        assert_eq!(rows[1].flag, Flag::Boundary);
        let cols = reward_columns(&[&rows[0], &rows[1]], 2);
        assert_eq!(cols.solution, vec!["B", "B", "yes", "yes"]);
        assert_eq!(cols.data_id, vec!["7", "7", "x2", "x2"]);
        assert_eq!(
            cols.flag,
            vec![
                Flag::Positive,
                Flag::Positive,
                Flag::Boundary,
                Flag::Boundary
            ]
        );

        std::fs::write(&path, r#"{"image": "a.jpg", "question": "Q1"}"#).unwrap();
        let err = read_rl_jsonl(&path, Path::new("/imgs")).unwrap_err();
        assert!(err.to_string().contains("line 1") && err.to_string().contains("answer"));
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled_order(50, 42);
        assert_eq!(a, shuffled_order(50, 42));
        assert_ne!(a, shuffled_order(50, 43));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn sft_chains_parse_need_loss_and_images() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sft.jsonl");
        // "iVBORw==" is base64 of the bytes 0x89 'P' 'N' 'G'.
        let row = r#"{"interleaved_reason": [
            {"type": "image", "value": "data:image/png;base64,iVBORw=="},
            {"type": "text", "value": "Q?", "need_loss": "false"},
            {"type": "text", "value": "<think>a</think><answer>b</answer>", "need_loss": "true"},
            {"type": "depth", "value": "iVBORw=="}
        ], "other": 1}"#
            .replace('\n', " ");
        std::fs::write(&path, row).unwrap();
        let chains = read_sft_jsonl(&path).unwrap();
        assert_eq!(chains.len(), 1);
        let png = vec![0x89u8, b'P', b'N', b'G'];
        assert_eq!(
            chains[0],
            vec![
                SftItem::Image {
                    kind: "image".into(),
                    bytes: png.clone()
                },
                SftItem::Text {
                    value: "Q?".into(),
                    need_loss: false,
                    loss_start: 0,
                    given_from: 0
                },
                SftItem::Text {
                    value: "<think>a</think><answer>b</answer>".into(),
                    need_loss: true,
                    loss_start: 0,
                    given_from: 0
                },
                SftItem::Image {
                    kind: "depth".into(),
                    bytes: png
                },
            ]
        );
        std::fs::write(
            &path,
            r#"{"interleaved_reason": [{"type": "image", "value": "!!notbase64"}]}"#,
        )
        .unwrap();
        assert!(read_sft_jsonl(&path).is_err());
        std::fs::write(&path, "{not json").unwrap();
        assert!(read_sft_jsonl(&path).is_err());
    }

    #[test]
    fn given_from_opens_the_given_text_inside_the_turn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sft.jsonl");
        // "é" is two bytes: characters 3..7 are bytes 4..8.
        std::fs::write(
            &path,
            r#"{"interleaved_reason": [{"type": "text", "value": "<é> map rest", "need_loss": "true", "given_from": 3, "loss_start": 7}]}"#,
        )
        .unwrap();
        let chains = read_sft_jsonl(&path).unwrap();
        let SftItem::Text {
            value,
            loss_start,
            given_from,
            ..
        } = &chains[0][0]
        else {
            panic!("not text: {:?}", chains[0][0]);
        };
        assert_eq!(
            (
                &value[..*given_from],
                &value[*given_from..*loss_start],
                &value[*loss_start..]
            ),
            ("<é>", " map", " rest")
        );
    }

    #[test]
    fn loss_start_counts_characters_and_must_leave_something_to_learn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sft.jsonl");
        let row = |item: &str| {
            format!(
                r#"{{"interleaved_reason": [{{"type": "text", "value": "Q", "need_loss": "false"}}, {item}]}}"#
            )
        };
        // "é" is two bytes: 3 characters in is byte 4.
        std::fs::write(
            &path,
            row(r#"{"type": "text", "value": "<é> rest", "need_loss": "true", "loss_start": 3}"#),
        )
        .unwrap();
        let chains = read_sft_jsonl(&path).unwrap();
        let SftItem::Text {
            value, loss_start, ..
        } = &chains[0][1]
        else {
            panic!("not text: {:?}", chains[0][1]);
        };
        assert_eq!(
            (&value[..*loss_start], &value[*loss_start..]),
            ("<é>", " rest")
        );
        for (item, says) in [
            (
                r#"{"type": "text", "value": "abc", "need_loss": "true", "loss_start": 3}"#,
                "leaves nothing to learn",
            ),
            (
                r#"{"type": "text", "value": "abc", "need_loss": "false", "loss_start": 1}"#,
                "need_loss",
            ),
            (
                r#"{"type": "text", "value": "abc", "need_loss": "true", "loss_start": -1}"#,
                "not a character count",
            ),
            (
                r#"{"type": "text", "value": "abc", "need_loss": "true", "loss_start": 1, "given_from": 1}"#,
                "not before `loss_start`",
            ),
            (
                r#"{"type": "text", "value": "abc", "need_loss": "true", "given_from": 1}"#,
                "without a `loss_start`",
            ),
        ] {
            std::fs::write(&path, row(item)).unwrap();
            let err = read_sft_jsonl(&path).unwrap_err().to_string();
            assert!(
                err.contains("line 1") && err.contains("item 1") && err.contains(says),
                "{err}"
            );
        }
    }
}
