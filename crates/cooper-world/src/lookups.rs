//! Text-only option lookups: a curriculum that teaches a from-scratch LLM to write the letter of
//! the option a text names.
//!
//! A multiple-choice answer needs that step, and the default model does not learn it from the
//! chains alone; one lookup a row, two options first, then 2–4, does teach it
//! (`docs/results.md`, "Why every run answers one letter per category"). The options come from
//! the words the world's questions use, and the prompt is worded as the questions are.

use std::path::Path;

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::dataset::scene_rng;
use crate::error::Result;
use crate::formats::{AtomicFile, SftEntry, SftRow};
use crate::questions::{mcq_prompt, option_letter, GRID_NAMES};
use crate::scene::{ObjColor, ShapeKind};

/// How many options a lookup offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionCount {
    Two,
    /// Two, three or four (four three times in five, as the benchmark's questions mostly have).
    TwoToFour,
}

/// The world's option vocabularies: colours, shapes, grid cells, counts, coloured shapes.
fn pools() -> Vec<Vec<String>> {
    let colors: Vec<String> = ObjColor::ALL.iter().map(|c| c.name().to_string()).collect();
    let shapes: Vec<String> = ShapeKind::ALL
        .iter()
        .map(|s| s.noun().to_string())
        .collect();
    let cells = GRID_NAMES.iter().flatten().map(|c| c.to_string()).collect();
    let counts = (0..=10).map(|n| n.to_string()).collect();
    let pairs = colors
        .iter()
        .flat_map(|c| shapes.iter().map(move |s| format!("{c} {s}")))
        .collect();
    vec![colors, shapes, cells, counts, pairs]
}

/// One lookup row: the hint names one option's text; the learnt answer is its letter.
fn lookup_row(
    rng: &mut ChaCha8Rng,
    pools: &[Vec<String>],
    count: OptionCount,
    id: String,
) -> SftRow {
    let pool = &pools[rng.random_range(0..pools.len())];
    let n = match count {
        OptionCount::Two => 2,
        OptionCount::TwoToFour => [2, 3, 4, 4, 4][rng.random_range(0..5)],
    };
    let options: Vec<&String> = pool.choose_multiple(rng, n).collect();
    let k = rng.random_range(0..n);
    let prompt = mcq_prompt(
        &format!("Hint: it is {}.\nWhich option is it?", options[k]),
        &options,
    );
    let answer = format!(
        "<answer> The answer is \\boxed{{{}}}. </answer>",
        option_letter(k)
    );
    SftRow {
        interleaved_reason: vec![SftEntry::text(prompt, false), SftEntry::text(answer, true)],
        data_id: id,
        category: "lookup".into(),
        flag: "negative".into(),
    }
}

/// Writes `rows` lookup rows to `path` (atomically), deterministic in `seed`.
pub fn write_lookups(path: &Path, rows: u64, count: OptionCount, seed: u64) -> Result<()> {
    let stream = match count {
        OptionCount::Two => 3,
        OptionCount::TwoToFour => 4,
    };
    let mut rng = scene_rng(seed, 0, stream);
    let pools = pools();
    let mut f = AtomicFile::create(path)?;
    for i in 0..rows {
        f.write_json_line(&lookup_row(
            &mut rng,
            &pools,
            count,
            format!("lookup_{stream}_{i}"),
        ))?;
    }
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn letter_and_options(row: &SftRow) -> (char, Vec<String>, String) {
        let prompt = &row.interleaved_reason[0].value;
        let hint = prompt
            .strip_prefix("Hint: it is ")
            .and_then(|r| r.split_once(".\n"))
            .map(|(h, _)| h.to_string())
            .unwrap();
        let options: Vec<String> = prompt
            .lines()
            .filter_map(|l| l.split_once(". ").filter(|(a, _)| a.len() == 1))
            .map(|(_, o)| o.to_string())
            .collect();
        let answer = &row.interleaved_reason[1].value;
        let letter = answer
            .split("boxed{")
            .nth(1)
            .unwrap()
            .chars()
            .next()
            .unwrap();
        (letter, options, hint)
    }

    #[test]
    fn the_answer_is_the_letter_of_the_hinted_option() {
        let pools = pools();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut seen = [0usize; 5];
        for i in 0..300 {
            let count = if i % 2 == 0 {
                OptionCount::Two
            } else {
                OptionCount::TwoToFour
            };
            let row = lookup_row(&mut rng, &pools, count, format!("r{i}"));
            assert_eq!(row.interleaved_reason[0].need_loss, "false");
            assert_eq!(row.interleaved_reason[1].need_loss, "true");
            let (letter, options, hint) = letter_and_options(&row);
            let k = (letter as u8 - b'A') as usize;
            assert_eq!(options[k], hint, "{row:?}");
            assert_eq!(options.iter().filter(|o| **o == hint).count(), 1);
            if count == OptionCount::Two {
                assert_eq!(options.len(), 2);
            }
            seen[options.len()] += 1;
        }
        assert!(seen[2] > 0 && seen[3] > 0 && seen[4] > 0, "{seen:?}");
    }

    #[test]
    fn rows_are_deterministic_and_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        write_lookups(&a, 50, OptionCount::TwoToFour, 5).unwrap();
        write_lookups(&b, 50, OptionCount::TwoToFour, 5).unwrap();
        let text = std::fs::read_to_string(&a).unwrap();
        assert_eq!(text, std::fs::read_to_string(&b).unwrap());
        assert_eq!(text.lines().count(), 50);
        let row: SftRow = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(row.category, "lookup");
        assert!(!dir.path().join("a.jsonl.tmp").exists());
        write_lookups(&b, 50, OptionCount::Two, 5).unwrap();
        assert_ne!(text, std::fs::read_to_string(&b).unwrap());
    }
}
