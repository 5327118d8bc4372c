//! The model-independent part of a stage loop: micro-batch backward passes, gradient
//! accumulation, clipping, the learning-rate schedule, AdamW, EMA, metrics, checkpoints and
//! exact resume, bundled in [`TrainLoop`].
//!
//! A stage loop owns the model and data; per micro-batch it computes a loss tensor and hands it
//! to [`TrainLoop::backward`], which does the rest:
//!
//! ```text
//! let mut run = TrainLoop::resume_or_new(config, params, &device)?;
//! while !run.is_done() {
//!     let batch = data.next_for(run.data_cursor());      // the loop's own data code
//!     let loss = model_loss(&batch, run.rng())?;          // noise/timesteps from run.rng()
//!     run.data_cursor_mut().position += 1;
//!     run.backward(&loss, extra_metrics)?;                // steps, logs, saves when due
//! }
//! ```
//!
//! Everything that influences later steps (weights, optimiser moments, EMA, RNG position, data
//! cursor, step) is in the checkpoint, so a resumed run reproduces an uninterrupted one exactly.
//! Checkpoints hold the trained parameters (`model.safetensors`) and, when enabled, their EMA
//! (`ema.safetensors`); frozen weights are not copied (they equal the initial checkpoint).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{check_finite, CheckpointData, Checkpointer, DataCursor, TrainState};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::metrics::MetricsWriter;
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig, Ema, GradAccumulator, LrSchedule};

/// Name of the metrics log inside the run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What one optimiser step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Steps completed, this one included.
    pub step: u64,
    /// Learning rate used by this step.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    /// Everything logged for this step.
    pub metrics: BTreeMap<String, f64>,
    /// The checkpoint written after this step, if one was due.
    pub saved: Option<PathBuf>,
}

/// Optimiser, schedule, EMA, accumulation, metrics and checkpoints of one run.
pub struct TrainLoop {
    config: TrainConfig,
    params: Vec<(String, Var)>,
    optimizer: AdamW,
    schedule: LrSchedule,
    ema: Option<Ema>,
    accumulator: GradAccumulator,
    checkpointer: Checkpointer,
    metrics: MetricsWriter,
    rng: ChaCha8Rng,
    data: DataCursor,
    step: u64,
    loss_sum: f64,
    extra_sums: BTreeMap<String, f64>,
}

impl std::fmt::Debug for TrainLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainLoop")
            .field("stage", &self.config.stage)
            .field("params", &self.params.len())
            .field("step", &self.step)
            .field("data", &self.data)
            .finish()
    }
}

impl TrainLoop {
    /// A fresh run: RNG seeded from `run.seed`, step 0, output folder `run.out_dir` (metric
    /// lines left there by an earlier run are dropped).
    pub fn new(config: TrainConfig, params: Vec<(String, Var)>) -> Result<Self> {
        Self::init(config, params, 0)
    }

    fn init(config: TrainConfig, params: Vec<(String, Var)>, start_step: u64) -> Result<Self> {
        config.validate()?;
        let out = config.run.out_dir.clone();
        let checkpointer = Checkpointer::new(&out, config.run.keep_last)?;
        let metrics = MetricsWriter::resume(out.join(METRICS_FILE), start_step)?;
        let optimizer = AdamW::new(&params, AdamWConfig::from_config(&config.optim))?;
        let ema = if config.ema.enabled {
            Some(Ema::new(&params, config.ema.decay)?)
        } else {
            None
        };
        Ok(Self {
            schedule: LrSchedule::from_config(&config.optim, config.run.total_steps),
            accumulator: GradAccumulator::new(config.optim.grad_accum_steps),
            rng: ChaCha8Rng::seed_from_u64(config.run.seed),
            data: DataCursor::default(),
            step: start_step,
            loss_sum: 0.0,
            extra_sums: BTreeMap::new(),
            config,
            params,
            optimizer,
            ema,
            checkpointer,
            metrics,
        })
    }

    /// Continues from the newest checkpoint in `run.out_dir` if there is one (restoring
    /// parameter values, optimiser, EMA, RNG, data cursor and step, and dropping metric lines
    /// written after it), else starts fresh.
    pub fn resume_or_new(
        config: TrainConfig,
        params: Vec<(String, Var)>,
        device: &Device,
    ) -> Result<Self> {
        let checkpointer = Checkpointer::new(&config.run.out_dir, config.run.keep_last)?;
        let Some(ckpt) = checkpointer.resume(device)? else {
            return Self::new(config, params);
        };
        let mut run = Self::init(config, params, ckpt.state.step)?;
        for (name, var) in &run.params {
            let saved = ckpt.weights.get(name).ok_or_else(|| {
                TrainError::Checkpoint(format!("{} lacks weight {name}", ckpt.dir.display()))
            })?;
            if saved.dims() != var.dims() {
                return Err(TrainError::Checkpoint(format!(
                    "weight {name} has shape {:?} in the checkpoint, {:?} in the model",
                    saved.dims(),
                    var.dims()
                )));
            }
            var.set(&saved.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        let optimizer_state = ckpt.optimizer.as_ref().ok_or_else(|| {
            TrainError::Checkpoint(format!("{} has no optimizer state", ckpt.dir.display()))
        })?;
        run.optimizer.load_state_tensors(optimizer_state)?;
        if run.config.ema.enabled {
            let saved = ckpt.ema.as_ref().ok_or_else(|| {
                TrainError::Checkpoint(format!("{} has no EMA weights", ckpt.dir.display()))
            })?;
            run.ema = Some(Ema::from_tensors(&run.params, run.config.ema.decay, saved)?);
        }
        run.rng = ckpt.state.rng.restore()?;
        run.data = ckpt.state.data.clone();
        Ok(run)
    }

    /// The run's RNG (timesteps, noise, sampling): draw from it so resume is exact.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Where the data stands.
    pub fn data_cursor(&self) -> &DataCursor {
        &self.data
    }

    /// Advance this as samples are consumed.
    pub fn data_cursor_mut(&mut self) -> &mut DataCursor {
        &mut self.data
    }

    /// Completed optimiser steps.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Whether `run.total_steps` steps are done.
    pub fn is_done(&self) -> bool {
        self.step >= self.config.run.total_steps
    }

    /// The config.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The trained parameters.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// The EMA weights, if kept.
    pub fn ema(&self) -> Option<&Ema> {
        self.ema.as_ref()
    }

    /// Backward pass of one micro-batch loss; every `grad_accum_steps` micro-batches an
    /// optimiser step follows (clip, schedule, AdamW, EMA, metrics, checkpoint when due).
    /// `extra` metrics are averaged over the step's micro-batches and logged with it.
    ///
    /// A non-finite loss is refused before anything changes. A non-finite gradient norm is an
    /// error too: the accumulated micro-batches are discarded, and parameters, optimiser, EMA
    /// and step stay as they were.
    pub fn backward(
        &mut self,
        loss: &Tensor,
        extra: &BTreeMap<String, f64>,
    ) -> Result<Option<StepOutcome>> {
        if self.is_done() {
            return Err(TrainError::Input(format!(
                "the run already completed its {} steps",
                self.config.run.total_steps
            )));
        }
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        check_finite(&format!("loss at step {}", self.step + 1), value)?;
        let grads = loss.backward()?;
        self.loss_sum += value;
        for (k, v) in extra {
            *self.extra_sums.entry(k.clone()).or_default() += v;
        }
        if !self.accumulator.add(&grads, &self.params)? {
            return Ok(None);
        }
        let micro = self.accumulator.micro_steps() as f64;
        let mut grads = self.accumulator.take();
        let grad_norm = clip_grad_norm(&mut grads, &self.params, self.config.optim.max_grad_norm)?;
        let mean_loss = self.loss_sum / micro;
        let mut metrics: BTreeMap<String, f64> = std::mem::take(&mut self.extra_sums)
            .into_iter()
            .map(|(k, v)| (k, v / micro))
            .collect();
        self.loss_sum = 0.0;
        check_finite(
            &format!("gradient norm at step {}", self.step + 1),
            grad_norm,
        )?;

        let lr = self.schedule.lr_at(self.step);
        self.optimizer.set_lr(lr);
        self.optimizer.step(&grads)?;
        if let Some(ema) = &mut self.ema {
            ema.update(&self.params)?;
        }
        self.step += 1;

        metrics.insert("loss".to_string(), mean_loss);
        metrics.insert("lr".to_string(), lr);
        metrics.insert("grad_norm".to_string(), grad_norm);
        let log_every = self.config.run.log_every.max(1);
        if self.step % log_every == 0 || self.is_done() {
            self.metrics.log(self.step, &metrics)?;
        }
        let save_every = self.config.run.save_every;
        let due = (save_every > 0 && self.step % save_every == 0) || self.is_done();
        let saved = if due {
            Some(self.save_with_loss(mean_loss)?)
        } else {
            None
        };
        Ok(Some(StepOutcome {
            step: self.step,
            lr,
            grad_norm,
            loss: mean_loss,
            metrics,
            saved,
        }))
    }

    /// Writes a checkpoint of the current state (refusing a non-finite `loss`).
    pub fn save_with_loss(&self, loss: f64) -> Result<PathBuf> {
        let weights: HashMap<String, Tensor> = self
            .params
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect();
        let ema = self.ema.as_ref().map(Ema::tensors);
        let optimizer = self.optimizer.state_tensors()?;
        let state = TrainState::new(self.step, &self.rng, self.data.clone(), &self.config)?;
        self.checkpointer.save(
            CheckpointData {
                state: &state,
                weights: &weights,
                ema: ema.as_ref(),
                optimizer: Some(&optimizer),
            },
            loss,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Stage;
    use crate::losses::standard_normal;
    use crate::metrics::read_jsonl;
    use rand::Rng;

    fn params() -> Vec<(String, Var)> {
        let dev = Device::Cpu;
        vec![
            (
                "w".to_string(),
                Var::new(&[0.5f32, -0.25, 0.0], &dev).unwrap(),
            ),
            (
                "b".to_string(),
                Var::zeros(1, candle_core::DType::F32, &dev).unwrap(),
            ),
        ]
    }

    fn config(out: &std::path::Path) -> TrainConfig {
        let mut c = TrainConfig::for_stage(Stage::Amg);
        c.run.out_dir = out.to_path_buf();
        c.run.total_steps = 6;
        c.run.save_every = 3;
        c.run.keep_last = 2;
        c.optim.lr = 0.05;
        c.optim.warmup_steps = 2;
        c.optim.grad_accum_steps = 2;
        c.ema.enabled = true;
        c.ema.decay = 0.9;
        c
    }

    /// One micro-batch of a linear regression y = x·(1, 2, 3) + 0.5, with inputs drawn from the
    /// run's RNG (so resume must restore it) and an MSE loss.
    fn micro_loss(run: &mut TrainLoop) -> Tensor {
        let dev = Device::Cpu;
        let x = standard_normal(run.rng(), &[4, 3], &dev).unwrap();
        let noise: f32 = run.rng().random_range(-0.01..0.01);
        let true_w = Tensor::new(&[[1f32], [2.], [3.]], &dev).unwrap();
        let y = ((x.matmul(&true_w).unwrap() + 0.5).unwrap() + noise as f64).unwrap();
        let w = run.params()[0].1.as_tensor().unsqueeze(1).unwrap();
        let b = run.params()[1].1.as_tensor().clone();
        let pred = x.matmul(&w).unwrap().broadcast_add(&b).unwrap();
        run.data_cursor_mut().position += 1;
        (pred - y).unwrap().sqr().unwrap().mean_all().unwrap()
    }

    fn train(run: &mut TrainLoop, until: u64) -> Vec<StepOutcome> {
        let mut outcomes = Vec::new();
        while run.step() < until {
            let loss = micro_loss(run);
            let extra = BTreeMap::from([("mse".to_string(), 1.0)]);
            if let Some(o) = run.backward(&loss, &extra).unwrap() {
                outcomes.push(o);
            }
        }
        outcomes
    }

    fn values(run: &TrainLoop) -> Vec<Vec<f32>> {
        let mut out: Vec<Vec<f32>> = run
            .params()
            .iter()
            .map(|(_, v)| v.as_tensor().to_vec1::<f32>().unwrap())
            .collect();
        let ema = run.ema().unwrap().tensors();
        out.push(ema["w"].to_vec1::<f32>().unwrap());
        out.push(ema["b"].to_vec1::<f32>().unwrap());
        out
    }

    #[test]
    fn steps_follow_schedule_and_checkpoints_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = TrainLoop::new(config(dir.path()), params()).unwrap();
        let outcomes = train(&mut run, 6);
        assert_eq!(outcomes.len(), 6);
        // Warm-up 2 then constant 0.05: 0, 0.025, 0.05, …
        let lrs: Vec<f64> = outcomes.iter().map(|o| o.lr).collect();
        assert_eq!(lrs, vec![0.0, 0.025, 0.05, 0.05, 0.05, 0.05]);
        // Saved at 3 and 6; the loss went down.
        let saved: Vec<u64> = outcomes
            .iter()
            .filter(|o| o.saved.is_some())
            .map(|o| o.step)
            .collect();
        assert_eq!(saved, vec![3, 6]);
        assert!(outcomes[5].loss < outcomes[1].loss);
        assert_eq!(run.data_cursor().position, 12); // 6 steps × 2 micro-batches
        let log = read_jsonl(&dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(log.len(), 6);
        assert_eq!(log[0].values["mse"], 1.0);
        assert!(log[5].values.contains_key("grad_norm"));
        // A finished run refuses more work.
        let loss = micro_loss(&mut run);
        assert!(run.backward(&loss, &BTreeMap::new()).is_err());
    }

    #[test]
    fn resume_reproduces_an_uninterrupted_run_exactly() {
        let straight_dir = tempfile::tempdir().unwrap();
        let mut straight = TrainLoop::new(config(straight_dir.path()), params()).unwrap();
        train(&mut straight, 6);

        let dir = tempfile::tempdir().unwrap();
        let mut first = TrainLoop::new(config(dir.path()), params()).unwrap();
        train(&mut first, 3);
        // Work after the checkpoint that is lost in a "crash": one more micro-batch.
        let loss = micro_loss(&mut first);
        first.backward(&loss, &BTreeMap::new()).unwrap();
        drop(first);

        // Fresh parameter values: resume must overwrite them from the checkpoint.
        let mut resumed =
            TrainLoop::resume_or_new(config(dir.path()), params(), &Device::Cpu).unwrap();
        assert_eq!(resumed.step(), 3);
        assert_eq!(resumed.data_cursor().position, 6);
        train(&mut resumed, 6);
        assert_eq!(values(&resumed), values(&straight));
        let a = read_jsonl(&dir.path().join(METRICS_FILE)).unwrap();
        let b = read_jsonl(&straight_dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn non_finite_loss_is_refused_without_side_effects() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = TrainLoop::new(config(dir.path()), params()).unwrap();
        let before = values(&run);
        let nan = (params()[0].1.as_tensor().sum_all().unwrap() * f64::NAN).unwrap();
        let err = run.backward(&nan, &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, TrainError::NonFinite { .. }));
        assert_eq!(values(&run), before);
        assert_eq!(run.step(), 0);
    }
}
