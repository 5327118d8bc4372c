//! Output files: the append-only `predictions.jsonl`, and `results.json` / `report.md` written
//! atomically (a temporary file in the same folder, then a rename).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::error::EvalError;
use crate::extract::{Prediction, Source};
use crate::score::{GroupScores, ItemScore, Summary};
use crate::tsv::AnswerKind;

/// One line of `predictions.jsonl`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PredictionRecord {
    pub index: String,
    /// The reasoning mode that produced the output (`cooper`, `pe`, `re`, `direct`).
    pub mode: String,
    pub category: String,
    pub kind: AnswerKind,
    /// The question string given to the model.
    pub question: String,
    /// The ground truth as written in the TSV.
    pub answer: String,
    /// The model's final output.
    pub raw_output: String,
    /// The extracted prediction, if any.
    pub prediction: Option<Prediction>,
    /// Where the prediction came from.
    pub source: Option<Source>,
    #[serde(flatten)]
    pub score: ItemScore,
    pub turns: usize,
    pub depth_calls: usize,
    pub segmentation_calls: usize,
    /// Why the judge could not map this output (the rule-based extraction was kept).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub judge_error: Option<String>,
    /// Under the shuffled-images control: the index of the item whose picture was shown.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub image_from: Option<String>,
    /// A describe-first model's description of the picture, written before the question.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
    /// The answer was constrained to the question's options (`--constrain-answers`).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub constrained: bool,
}

/// The predictions file: existing records are read on open and new ones appended, one JSON object
/// per line, flushed after each.
pub struct PredictionLog {
    path: PathBuf,
    file: File,
    records: Vec<PredictionRecord>,
    by_index: HashMap<String, usize>,
}

impl PredictionLog {
    /// Opens (creating if needed) `path`. A last line without its newline — a write cut short — is
    /// dropped and the file truncated to the end of the last complete line; any other unreadable
    /// line is an error. When an index appears twice, the later record wins.
    pub fn open(path: &Path) -> Result<Self, EvalError> {
        let io = |e| EvalError::io(path, e);
        let mut records = Vec::new();
        let mut by_index = HashMap::new();
        let mut good_len: u64 = 0;
        if path.exists() {
            let mut reader = BufReader::new(File::open(path).map_err(io)?);
            let mut line = String::new();
            let mut number = 0;
            loop {
                line.clear();
                let n = reader.read_line(&mut line).map_err(io)?;
                if n == 0 {
                    break;
                }
                number += 1;
                if !line.ends_with('\n') {
                    break; // cut-off last line: dropped
                }
                good_len += n as u64;
                if line.trim().is_empty() {
                    continue;
                }
                let rec: PredictionRecord =
                    serde_json::from_str(&line).map_err(|e| EvalError::Predictions {
                        path: path.to_path_buf(),
                        line: number,
                        message: e.to_string(),
                    })?;
                by_index.insert(rec.index.clone(), records.len());
                records.push(rec);
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(io)?;
        if file.metadata().map_err(io)?.len() != good_len {
            file.set_len(good_len).map_err(io)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            records,
            by_index,
        })
    }

    /// The record for an index, if one was read or appended.
    pub fn get(&self, index: &str) -> Option<&PredictionRecord> {
        self.by_index.get(index).map(|&i| &self.records[i])
    }

    /// Number of distinct indices recorded.
    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    /// Appends a record and flushes it to disk.
    pub fn append(&mut self, rec: PredictionRecord) -> Result<(), EvalError> {
        let mut line = serde_json::to_string(&rec).map_err(|source| EvalError::Json {
            path: self.path.clone(),
            source,
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| EvalError::io(&self.path, e))?;
        self.by_index.insert(rec.index.clone(), self.records.len());
        self.records.push(rec);
        Ok(())
    }
}

/// Writes `contents` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), EvalError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let io = |e| EvalError::io(&tmp, e);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| EvalError::io(path, e))
}

/// The content of `results.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Results {
    pub bench: String,
    pub mode: String,
    /// `own`, or `shuffled` for the shuffled-images control (see `ImageControl`).
    #[serde(default = "own_images")]
    pub images: String,
    /// Boxes were constrained to the questions' options (`--constrain-answers`).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub constrained_answers: bool,
    #[serde(flatten)]
    pub summary: Summary,
}

fn own_images() -> String {
    "own".into()
}

/// Writes any serialisable value as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), EvalError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Writes `results.json`.
pub fn write_results_json(path: &Path, results: &Results) -> Result<(), EvalError> {
    write_json(path, results)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{:.2}", 100.0 * x))
}

/// A p-value to three decimals, or `<0.001`.
fn p_value(v: Option<f64>) -> String {
    match v {
        None => "–".to_string(),
        Some(p) if p < 0.001 => "<0.001".to_string(),
        Some(p) => format!("{p:.3}"),
    }
}

fn row(name: &str, g: &GroupScores) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        g.n,
        pct(Some(g.score)),
        pct(g.accuracy),
        pct(g.chance),
        p_value(g.p_vs_chance),
        pct(g.mra),
        pct(g.success_rate),
        g.unanswered
    )
}

/// Renders the markdown report: one row per category and an overall row; scores in percent.
pub fn render_markdown(results: &Results) -> String {
    let mut md = format!(
        "# Evaluation: {}\n\nMode: `{}`. Score = mean of accuracy (multiple choice, yes/no, integer, open) \
         and mean relative accuracy (numbers); chance = accuracy of a uniform guess (multiple choice, \
         yes/no); p = the chance that uniform guessing scores at least as many of those items \
         (one-sided, exact); success = within a factor of 2 (numbers). Values in %, p excepted.\n\n\
         | category | n | score | accuracy | chance | p | MRA | success | unanswered |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        results.bench, results.mode
    );
    if results.images != "own" {
        md.insert_str(
            md.find("\n\n").map_or(0, |i| i + 2),
            &format!(
                "Images: `{}`: every question was asked about another item's picture (a control \
                 for how much the answers depend on the picture).\n\n",
                results.images
            ),
        );
    }
    if results.constrained_answers {
        md.insert_str(
            md.find("\n\n").map_or(0, |i| i + 2),
            "Answers: constrained (`--constrain-answers`): each box holds the question's option \
             (or Yes / No) that the model scores likeliest there; an item is still unanswered when \
             its output opens no box.\n\n",
        );
    }
    for (name, g) in &results.summary.categories {
        md.push_str(&row(name, g));
    }
    md.push_str(&row("**overall**", &results.summary.overall));
    md
}

/// Writes `report.md`.
pub fn write_markdown(path: &Path, results: &Results) -> Result<(), EvalError> {
    write_atomic(path, render_markdown(results).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: &str) -> PredictionRecord {
        PredictionRecord {
            index: index.into(),
            mode: "cooper".into(),
            category: "c".into(),
            kind: AnswerKind::YesNo,
            question: "q".into(),
            answer: "Yes".into(),
            raw_output: "yes".into(),
            prediction: Some(Prediction::YesNo(true)),
            constrained: false,
            source: Some(Source::Region),
            score: ItemScore {
                correct: Some(true),
                ..Default::default()
            },
            turns: 1,
            depth_calls: 0,
            segmentation_calls: 0,
            judge_error: None,
            image_from: None,
            description: None,
        }
    }

    #[test]
    fn log_survives_a_cut_off_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("predictions.jsonl");
        {
            let mut log = PredictionLog::open(&p).expect("open");
            log.append(rec("1")).expect("append");
            log.append(rec("2")).expect("append");
        }
        // Simulate a crash in the middle of writing a third line.
        let mut f = OpenOptions::new().append(true).open(&p).expect("reopen");
        f.write_all(b"{\"index\":\"3\",\"catego").expect("partial");
        drop(f);
        let mut log = PredictionLog::open(&p).expect("reopen log");
        assert_eq!(log.len(), 2);
        assert!(log.get("1").is_some() && log.get("3").is_none());
        log.append(rec("3")).expect("append after truncation");
        drop(log);
        let text = std::fs::read_to_string(&p).expect("read");
        assert_eq!(text.lines().count(), 3);
        let log = PredictionLog::open(&p).expect("third open");
        assert_eq!(log.len(), 3);
    }

    #[test]
    fn corrupt_middle_line_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("predictions.jsonl");
        std::fs::write(&p, "not json\n{}\n").expect("write");
        let err = PredictionLog::open(&p).err().expect("error").to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("results.json");
        write_atomic(&p, b"one").expect("write");
        write_atomic(&p, b"two").expect("rewrite");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "two");
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "no temp file left"
        );
    }
}
