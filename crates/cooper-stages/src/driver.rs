//! What every stage shares: opening (or resuming) the run, the step loop with its progress
//! bar and timing, and the closing report.
//!
//! A stage hands [`drive`] a closure that builds one micro-batch and returns its loss; the
//! loop reads top to bottom as nanoGPT's does: micro-batch, backward (accumulate, clip, step,
//! schedule, EMA, log, checkpoint: `TrainLoop::backward`), until `run.total_steps`.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use cooper_train::checkpoint::Checkpointer;
use cooper_train::config::{Stage, TrainConfig};
use cooper_train::metrics::{plot_run, progress_bar, progress_message};
use cooper_train::run::{TrainLoop, METRICS_FILE};
use serde::Serialize;

use crate::error::{Result, StageError};

/// How a stage runs, besides its config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub device: Device,
    /// Compute dtype of the model.
    pub dtype: DType,
    /// Continue the newest checkpoint in `run.out_dir` (without it, an existing run there is
    /// an error, so a typo cannot overwrite one).
    pub resume: bool,
    /// Draw a progress bar.
    pub progress: bool,
    /// Dtype of the exported model folder's weights.
    pub export_dtype: DType,
    /// Stop after this many optimiser steps in this invocation (a time-sliced run; `--resume`
    /// continues it from its last checkpoint).
    pub stop_after: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            resume: false,
            progress: false,
            export_dtype: DType::F32,
            stop_after: None,
        }
    }
}

/// What a finished stage reports.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: Stage,
    /// Optimiser steps taken in this invocation.
    pub steps_run: u64,
    /// Steps completed in total (after a resume, more than `steps_run`).
    pub final_step: u64,
    /// Loss of the first and last step of this invocation.
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    /// Wall time of the step loop.
    pub seconds: f64,
    /// Mean wall time per optimiser step.
    pub mean_step_seconds: f64,
    /// Sequence tokens (or pixels / 256 for `ae`) processed per second.
    pub tokens_per_second: f64,
    pub out_dir: PathBuf,
    /// The exported model folder.
    pub model_dir: PathBuf,
    /// Loss / reward / learning-rate plots.
    pub plots: Vec<PathBuf>,
}

/// One micro-batch's loss, the metrics to log with it, and its size in tokens.
pub struct Micro {
    pub loss: Tensor,
    pub metrics: BTreeMap<String, f64>,
    pub tokens: usize,
}

/// Starts the run in `run.out_dir`, or resumes it when asked.
pub fn open_loop(
    config: &TrainConfig,
    params: Vec<(String, Var)>,
    opts: &RunOptions,
) -> Result<TrainLoop> {
    let existing = Checkpointer::new(&config.run.out_dir, config.run.keep_last)?.list()?;
    if opts.resume {
        return Ok(TrainLoop::resume_or_new(
            config.clone(),
            params,
            &opts.device,
        )?);
    }
    if let Some((step, dir)) = existing.last() {
        return Err(StageError::Input(format!(
            "{} already holds a run (checkpoint at step {step}: {}); pass --resume to continue \
             it, or choose another run.out_dir",
            config.run.out_dir.display(),
            dir.display()
        )));
    }
    Ok(TrainLoop::new(config.clone(), params)?)
}

/// Timing and losses of the step loop.
#[derive(Debug, Clone, Default)]
pub struct DriveStats {
    pub steps: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub seconds: f64,
    pub tokens: usize,
}

impl DriveStats {
    fn mean_step_seconds(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.seconds / self.steps as f64
        }
    }

    fn tokens_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Runs micro-batches until the run has taken `run.total_steps` optimiser steps.
pub fn drive(
    run: &mut TrainLoop,
    opts: &RunOptions,
    mut micro: impl FnMut(&mut TrainLoop) -> Result<Micro>,
) -> Result<DriveStats> {
    let total = run.config().run.total_steps;
    let bar = if opts.progress {
        progress_bar(total, run.step())
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut stats = DriveStats::default();
    let start = Instant::now();
    while !run.is_done() && opts.stop_after.is_none_or(|n| stats.steps < n) {
        let m = micro(run)?;
        stats.tokens += m.tokens;
        if let Some(outcome) = run.backward(&m.loss, &m.metrics)? {
            stats.steps += 1;
            stats.first_loss.get_or_insert(outcome.loss);
            stats.last_loss = Some(outcome.loss);
            bar.set_position(outcome.step);
            bar.set_message(progress_message(
                &outcome.metrics,
                &["loss", "ce", "mse", "reward", "grad_norm"],
            ));
            if let Some(dir) = &outcome.saved {
                tracing::info!(step = outcome.step, dir = %dir.display(), "checkpoint");
            }
        }
    }
    bar.finish_and_clear();
    stats.seconds = start.elapsed().as_secs_f64();
    Ok(stats)
}

/// Plots the run's metrics and assembles the report.
pub fn finish(
    config: &TrainConfig,
    run: &TrainLoop,
    stats: &DriveStats,
    model_dir: PathBuf,
) -> Result<StageReport> {
    let jsonl = config.run.out_dir.join(METRICS_FILE);
    let plots = if jsonl.is_file() {
        plot_run(&jsonl, &config.run.out_dir)?
    } else {
        Vec::new()
    };
    Ok(StageReport {
        stage: config.stage,
        steps_run: stats.steps,
        final_step: run.step(),
        first_loss: stats.first_loss,
        last_loss: stats.last_loss,
        seconds: stats.seconds,
        mean_step_seconds: stats.mean_step_seconds(),
        tokens_per_second: stats.tokens_per_second(),
        out_dir: config.run.out_dir.clone(),
        model_dir,
        plots,
    })
}

/// Runs the stage `config.stage` names.
pub fn run_stage(config: &TrainConfig, opts: &RunOptions) -> Result<StageReport> {
    match config.stage {
        Stage::Amg | Stage::Sft => crate::packed::train(config, opts),
        Stage::Ae => crate::ae::train(config, opts),
        Stage::Vit => crate::vit::train(config, opts),
        Stage::Grpo => crate::grpo::train(config, opts),
        Stage::Tokenizer => Err(StageError::Input(
            "the tokenizer stage has no model loop (cooper train tokenizer)".into(),
        )),
    }
}
