//! The benchmark loop: load a TSV, ask the [`Answerer`] every item not yet answered, extract and
//! score, append to `predictions.jsonl`, and write `results.json` and `report.md`.
//!
//! Resuming: an item whose `index` already has a line in `predictions.jsonl` is not asked again
//! (a line from another reasoning mode is an error rather than a silent mix).
//! The summary is recomputed from all recorded predictions (re-scored against the TSV) at the end
//! of every run, so a rerun after a crash or with a larger `--limit` produces complete reports.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};

use crate::answerer::{Answerer, ReasoningMode};
use crate::error::EvalError;
use crate::extract::{extract, Prediction, Source};
use crate::judge::{Judge, JudgeConfig};
use crate::prompt::format_question;
use crate::report::{write_markdown, write_results_json, PredictionLog, PredictionRecord, Results};
use crate::score::{score_item, summarize, Summary};
use crate::tsv::{AnswerKind, Bench, BenchItem};

/// When the judge (if configured) is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum JudgePolicy {
    /// Only when the rules extract nothing.
    #[default]
    Fallback,
    /// For every non-open item; the judge's mapping replaces the rules' (VLMEvalKit's way).
    Always,
}

/// Which picture each question is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ImageControl {
    /// The item's own picture.
    #[default]
    Own,
    /// Another item's picture (the next one in the file with a different picture): a control
    /// for how much the answers depend on the picture at all. A model that reads its input
    /// scores near chance here; one that scores as well as with its own pictures answers from
    /// the question text alone.
    Shuffled,
}

impl ImageControl {
    /// The lower-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Own => "own",
            Self::Shuffled => "shuffled",
        }
    }
}

/// Everything a benchmark run needs besides the model.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// The benchmark TSV.
    pub bench: PathBuf,
    /// Folder that `image_path` values are relative to (default: the TSV's folder).
    pub image_root: Option<PathBuf>,
    /// Folder for `predictions.jsonl`, `results.json` and `report.md` (created if needed).
    pub out_dir: PathBuf,
    pub mode: ReasoningMode,
    /// Own pictures, or the shuffled-images control.
    pub images: ImageControl,
    /// The answerer boxes only the question's options (`cooper eval --constrain-answers`):
    /// recorded with every prediction and in the results, so that runs are not mixed.
    pub constrained_answers: bool,
    pub judge: Option<JudgeConfig>,
    pub judge_policy: JudgePolicy,
    /// Evaluate only the first `limit` items of the TSV.
    pub limit: Option<usize>,
    /// Draw a progress bar on the terminal.
    pub progress: bool,
}

impl EvalConfig {
    /// A configuration with no judge, no limit and a progress bar.
    pub fn new(
        bench: impl Into<PathBuf>,
        out_dir: impl Into<PathBuf>,
        mode: ReasoningMode,
    ) -> Self {
        Self {
            bench: bench.into(),
            image_root: None,
            out_dir: out_dir.into(),
            mode,
            images: ImageControl::Own,
            constrained_answers: false,
            judge: None,
            judge_policy: JudgePolicy::Fallback,
            limit: None,
            progress: true,
        }
    }
}

/// What a run did and where it wrote.
#[derive(Debug, Clone)]
pub struct EvalOutcome {
    pub summary: Summary,
    /// Items asked in this run.
    pub asked: usize,
    /// Items skipped because they already had a prediction.
    pub skipped: usize,
    pub predictions_path: PathBuf,
    pub results_path: PathBuf,
    pub report_path: PathBuf,
}

/// A prediction (if any) with its source, and the judge's error if the judge failed.
type Predicted = (Option<(Prediction, Source)>, Option<String>);

/// Extracts a prediction from an output, consulting the judge as the policy says. A judge that
/// fails after its retries does not lose the (expensive) model output: the rule-based result is
/// kept and the failure returned for the record.
fn predict(
    item: &BenchItem,
    output: &str,
    judge: Option<&Judge>,
    policy: JudgePolicy,
) -> Predicted {
    let ruled = extract(output, item.kind, &item.options);
    let Some(judge) = judge.filter(|_| item.kind != AnswerKind::Open) else {
        return (ruled, None);
    };
    if policy == JudgePolicy::Fallback && ruled.is_some() {
        return (ruled, None);
    }
    match judge.map(item, output) {
        Ok(mapped) => (mapped.map(|p| (p, Source::Judge)), None),
        Err(e) => (ruled, Some(e.to_string())),
    }
}

/// Runs (or resumes) a benchmark evaluation with `answerer`.
pub fn run_with<A: Answerer>(
    config: &EvalConfig,
    mut answerer: A,
) -> Result<EvalOutcome, EvalError> {
    let bench = Bench::load_with_image_root(&config.bench, config.image_root.as_deref())?;
    std::fs::create_dir_all(&config.out_dir).map_err(|e| EvalError::io(&config.out_dir, e))?;
    let predictions_path = config.out_dir.join("predictions.jsonl");
    let results_path = config.out_dir.join("results.json");
    let report_path = config.out_dir.join("report.md");
    let mut log = PredictionLog::open(&predictions_path)?;
    let judge = config.judge.clone().map(Judge::new);

    let n = config
        .limit
        .map_or(bench.items.len(), |l| l.min(bench.items.len()));
    let items = &bench.items[..n];
    let shown: Vec<usize> = match config.images {
        ImageControl::Own => (0..n).collect(),
        ImageControl::Shuffled => bench.other_pictures(items)?,
    };
    let bar = if config.progress {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}] {msg}",
    ) {
        bar.set_style(style);
    }

    let (mut asked, mut skipped) = (0, 0);
    for (item, &shown) in items.iter().zip(&shown) {
        let image_from =
            (config.images == ImageControl::Shuffled).then(|| items[shown].index.clone());
        if let Some(rec) = log.get(&item.index) {
            // A folder holds one kind of run: answers of another kind are refused, not mixed.
            let mixed = |holds: String, wanted: &str| EvalError::InvalidValue {
                what: "output folder",
                value: config.out_dir.display().to_string(),
                message: format!(
                    "its predictions.jsonl holds {holds}, not {wanted}; use another output folder"
                ),
            };
            if rec.image_from.is_some() != image_from.is_some() {
                let held = if rec.image_from.is_some() {
                    "shuffled"
                } else {
                    "their own"
                };
                let wanted = if image_from.is_some() {
                    "shuffled ones"
                } else {
                    "their own"
                };
                return Err(mixed(format!("answers with {held} pictures"), wanted));
            }
            if rec.constrained != config.constrained_answers {
                let how = |c: bool| {
                    if c {
                        "constrained to the options"
                    } else {
                        "decoded freely"
                    }
                };
                return Err(mixed(
                    format!("answers {}", how(rec.constrained)),
                    how(config.constrained_answers),
                ));
            }
            if rec.mode != config.mode.name() {
                return Err(mixed(
                    format!("mode `{}` answers", rec.mode),
                    &format!("`{}`", config.mode),
                ));
            }
            skipped += 1;
            bar.inc(1);
            continue;
        }
        let image = bench.image(&items[shown])?;
        let question = format_question(item);
        let answer = answerer
            .answer(&image, &question, config.mode)
            .map_err(|source| EvalError::Answer {
                index: item.index.clone(),
                source,
            })?;
        let (found, judge_error) = predict(item, &answer.text, judge.as_ref(), config.judge_policy);
        if let Some(e) = &judge_error {
            let msg = format!(
                "warning: item {}: {e}; kept the rule-based extraction",
                item.index
            );
            if bar.is_hidden() {
                eprintln!("{msg}");
            } else {
                bar.println(msg);
            }
        }
        let (prediction, source) = found.map_or((None, None), |(p, s)| (Some(p), Some(s)));
        let score = score_item(item.kind, &item.answer, prediction.as_ref());
        log.append(PredictionRecord {
            index: item.index.clone(),
            mode: config.mode.name().to_string(),
            category: item.category.clone(),
            kind: item.kind,
            question,
            answer: item.answer_raw.clone(),
            raw_output: answer.text,
            prediction,
            source,
            score,
            turns: answer.turns,
            depth_calls: answer.depth_calls,
            segmentation_calls: answer.segmentation_calls,
            judge_error,
            image_from,
            description: answer.description,
            constrained: config.constrained_answers,
        })?;
        asked += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Re-score every recorded item of this run's range against the TSV.
    let scored: Vec<(&BenchItem, crate::score::ItemScore, bool)> = items
        .iter()
        .filter_map(|item| {
            let rec = log.get(&item.index)?;
            let mut s = score_item(item.kind, &item.answer, rec.prediction.as_ref());
            s.chance = item.chance();
            Some((item, s, rec.prediction.is_some()))
        })
        .collect();
    let summary = summarize(scored.iter().map(|(i, s, a)| (i.category.as_str(), s, *a)));
    let results = Results {
        bench: config.bench.display().to_string(),
        mode: config.mode.name().to_string(),
        images: config.images.name().to_string(),
        constrained_answers: config.constrained_answers,
        summary,
    };
    write_results_json(&results_path, &results)?;
    write_markdown(&report_path, &results)?;
    Ok(EvalOutcome {
        summary: results.summary,
        asked,
        skipped,
        predictions_path,
        results_path,
        report_path,
    })
}
