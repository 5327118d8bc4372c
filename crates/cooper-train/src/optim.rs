//! Optimisation: AdamW, the learning-rate schedule, gradient clipping and accumulation, EMA.
//!
//! Parameters are handled as `(name, Var)` pairs under their official checkpoint names, so
//! optimiser and EMA state can be saved and restored by name.
//!
//! **Why our own AdamW.** `candle_nn::AdamW` keeps its moment estimates and step counter in
//! private fields, so they can be neither written to a checkpoint nor restored, and `--resume`
//! could not continue a run exactly. [`AdamW`] below is the same algorithm (PyTorch's
//! `torch.optim.AdamW`: decoupled weight decay, bias-corrected moments, ε added after the square
//! root) with its state exposed through [`AdamW::state_tensors`] / [`AdamW::load_state_tensors`].
//! Moments are kept in f32 whatever the parameter dtype, and the update is computed in f32.

use std::collections::{HashMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::config::{OptimConfig, ScheduleKind};
use crate::error::{Result, TrainError};

/// Named trainable parameters.
pub type NamedParams = [(String, Var)];

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate of the next step (the schedule updates it).
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε added to √v̂.
    pub eps: f64,
    /// Decoupled weight decay λ: θ ← θ·(1 − lr·λ) before the Adam step.
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// From the run config (the learning rate is the peak; the schedule scales it).
    pub fn from_config(optim: &OptimConfig) -> Self {
        Self {
            lr: optim.lr,
            beta1: optim.beta1,
            beta2: optim.beta2,
            eps: optim.eps,
            weight_decay: optim.weight_decay,
        }
    }
}

struct ParamState {
    name: String,
    var: Var,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
}

/// AdamW over named `Var`s with checkpointable state (see the module docs).
pub struct AdamW {
    params: Vec<ParamState>,
    config: AdamWConfig,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("params", &self.params.len())
            .field("config", &self.config)
            .finish()
    }
}

impl AdamW {
    /// Creates the optimiser with zero moments. Names must be unique and dtypes floating.
    pub fn new(params: &NamedParams, config: AdamWConfig) -> Result<Self> {
        let mut seen = HashSet::new();
        let mut states = Vec::with_capacity(params.len());
        for (name, var) in params {
            if !seen.insert(name.as_str()) {
                return Err(TrainError::Input(format!(
                    "duplicate parameter name {name}"
                )));
            }
            if !var.dtype().is_float() {
                return Err(TrainError::Input(format!(
                    "parameter {name} has non-float dtype {:?}",
                    var.dtype()
                )));
            }
            let zeros = Tensor::zeros(var.shape(), DType::F32, var.device())?;
            states.push(ParamState {
                name: name.clone(),
                var: var.clone(),
                exp_avg: zeros.clone(),
                exp_avg_sq: zeros,
                step: 0,
            });
        }
        Ok(Self {
            params: states,
            config,
        })
    }

    /// Current hyper-parameters.
    pub fn config(&self) -> AdamWConfig {
        self.config
    }

    /// Sets the learning rate of the next step.
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Steps taken (by the parameter updated most often).
    pub fn steps_taken(&self) -> u64 {
        self.params.iter().map(|p| p.step).max().unwrap_or(0)
    }

    /// One update of every parameter that has a gradient in `grads` (others are untouched,
    /// including their step counts, as in PyTorch).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        for p in &mut self.params {
            let Some(grad) = grads.get(p.var.as_tensor()) else {
                continue;
            };
            let grad = grad.to_dtype(DType::F32)?;
            p.step += 1;
            let t = i32::try_from(p.step).unwrap_or(i32::MAX);
            let bias1 = 1.0 - beta1.powi(t);
            let bias2 = 1.0 - beta2.powi(t);
            let m = ((&p.exp_avg * beta1)? + (&grad * (1.0 - beta1))?)?;
            let v = ((&p.exp_avg_sq * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&m / bias1)?;
            let denom = ((&v / bias2)?.sqrt()? + eps)?;
            let theta = p.var.as_tensor().to_dtype(DType::F32)?;
            let theta = (theta * (1.0 - lr * weight_decay))?;
            let theta = (theta - ((m_hat / denom)? * lr)?)?;
            p.var.set(&theta.to_dtype(p.var.dtype())?)?;
            p.exp_avg = m;
            p.exp_avg_sq = v;
        }
        Ok(())
    }

    /// The state as tensors: `exp_avg.<name>`, `exp_avg_sq.<name>` (f32) and `step.<name>`
    /// (an i64 scalar), ready for safetensors.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::with_capacity(self.params.len() * 3);
        for p in &self.params {
            out.insert(format!("exp_avg.{}", p.name), p.exp_avg.clone());
            out.insert(format!("exp_avg_sq.{}", p.name), p.exp_avg_sq.clone());
            let step = i64::try_from(p.step).unwrap_or(i64::MAX);
            out.insert(
                format!("step.{}", p.name),
                Tensor::new(step, p.var.device())?,
            );
        }
        Ok(out)
    }

    /// Restores the state saved by [`Self::state_tensors`]. Every parameter must be present
    /// with matching shapes.
    pub fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let get = |key: String| {
            state
                .get(&key)
                .ok_or_else(|| TrainError::Checkpoint(format!("optimizer state lacks {key}")))
        };
        let mut loaded = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let m = get(format!("exp_avg.{}", p.name))?;
            let v = get(format!("exp_avg_sq.{}", p.name))?;
            let step = get(format!("step.{}", p.name))?;
            for (what, t) in [("exp_avg", m), ("exp_avg_sq", v)] {
                if t.dims() != p.var.dims() {
                    return Err(TrainError::Checkpoint(format!(
                        "{what}.{} has shape {:?}, parameter has {:?}",
                        p.name,
                        t.dims(),
                        p.var.dims()
                    )));
                }
            }
            let step = step.to_dtype(DType::I64)?.to_scalar::<i64>()?;
            let step = u64::try_from(step).map_err(|_| {
                TrainError::Checkpoint(format!("negative step {step} for {}", p.name))
            })?;
            let device = p.var.device();
            loaded.push((
                m.to_dtype(DType::F32)?.to_device(device)?,
                v.to_dtype(DType::F32)?.to_device(device)?,
                step,
            ));
        }
        for (p, (m, v, step)) in self.params.iter_mut().zip(loaded) {
            p.exp_avg = m;
            p.exp_avg_sq = v;
            p.step = step;
        }
        Ok(())
    }
}

/// Linear warm-up, then constant or half-cosine (as `transformers`' schedules with warm-up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Floor of the cosine.
    pub min_lr: f64,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Total steps (end of the cosine).
    pub total_steps: u64,
    /// Shape after warm-up.
    pub kind: ScheduleKind,
}

impl LrSchedule {
    /// From the run config.
    pub fn from_config(optim: &OptimConfig, total_steps: u64) -> Self {
        Self {
            peak: optim.lr,
            min_lr: optim.min_lr,
            warmup_steps: optim.warmup_steps,
            total_steps,
            kind: optim.schedule,
        }
    }

    /// The learning rate of the optimiser step that follows `step` completed steps (so the
    /// first step, `step = 0`, has learning rate 0 when there is a warm-up, as with PyTorch's
    /// `LambdaLR`).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps.max(1) as f64;
        }
        match self.kind {
            ScheduleKind::Constant => self.peak,
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
                let factor = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                self.min_lr + (self.peak - self.min_lr) * factor
            }
        }
    }
}

/// Global L2 norm of the gradients of `params` in `grads` (parameters without a gradient count
/// as zero).
pub fn grad_norm(grads: &GradStore, params: &NamedParams) -> Result<f64> {
    let mut total = 0.0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g
                .to_dtype(DType::F32)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()? as f64;
        }
    }
    Ok(total.sqrt())
}

/// Clips the global gradient norm to `max_norm` like `torch.nn.utils.clip_grad_norm_`: when the
/// norm exceeds it, every gradient is scaled by `max_norm / (norm + 1e-6)`. Returns the norm
/// before clipping. A non-finite norm is returned without scaling (check it before stepping);
/// `max_norm ≤ 0` only measures.
pub fn clip_grad_norm(grads: &mut GradStore, params: &NamedParams, max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads, params)?;
    if max_norm > 0.0 && norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for (_, var) in params {
                if let Some(g) = grads.get(var.as_tensor()) {
                    let scaled = (g * coef)?;
                    grads.insert(var.as_tensor(), scaled);
                }
            }
        }
    }
    Ok(norm)
}

/// Sums the gradients of several micro-batches, each scaled by 1 / `steps` (the mean, as the
/// `transformers` trainer gets by dividing each micro-batch loss), keeping only the gradients of
/// the trained parameters (a backward pass also returns gradients for every intermediate
/// tensor).
#[derive(Debug)]
pub struct GradAccumulator {
    steps: usize,
    seen: usize,
    store: GradStore,
}

impl GradAccumulator {
    /// Accumulates over `steps` micro-batches (at least 1).
    pub fn new(steps: usize) -> Self {
        Self {
            steps: steps.max(1),
            seen: 0,
            store: GradStore::default(),
        }
    }

    /// Micro-batches added since the last [`Self::take`].
    pub fn micro_steps(&self) -> usize {
        self.seen
    }

    /// Adds one micro-batch's gradients; returns whether an optimiser step is due.
    pub fn add(&mut self, grads: &GradStore, params: &NamedParams) -> Result<bool> {
        let scale = 1.0 / self.steps as f64;
        for (_, var) in params {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = (g.to_dtype(DType::F32)? * scale)?.detach();
            let sum = match self.store.get(var.as_tensor()) {
                Some(prev) => (prev + g)?.detach(),
                None => g,
            };
            self.store.insert(var.as_tensor(), sum);
        }
        self.seen += 1;
        Ok(self.is_ready())
    }

    /// Whether `steps` micro-batches have been added.
    pub fn is_ready(&self) -> bool {
        self.seen >= self.steps
    }

    /// Returns the accumulated gradients and starts over.
    pub fn take(&mut self) -> GradStore {
        self.seen = 0;
        std::mem::take(&mut self.store)
    }
}

/// Exponential moving average of parameters, kept in f32:
/// θ_ema ← decay·θ_ema + (1 − decay)·θ.
#[derive(Debug, Clone)]
pub struct Ema {
    decay: f64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts the average at the current parameter values.
    pub fn new(params: &NamedParams, decay: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(TrainError::Input(format!(
                "EMA decay must lie in [0, 1], got {decay}"
            )));
        }
        let shadow = params
            .iter()
            .map(|(name, var)| {
                // `copy`: a same-dtype conversion shares storage, and `Var::set` writes in place.
                Ok((
                    name.clone(),
                    var.as_tensor().to_dtype(DType::F32)?.copy()?.detach(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { decay, shadow })
    }

    /// Restores saved averages (from `ema.safetensors`) for exactly these parameters.
    pub fn from_tensors(
        params: &NamedParams,
        decay: f64,
        saved: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        let mut ema = Self::new(params, decay)?;
        for ((name, var), (_, shadow)) in params.iter().zip(ema.shadow.iter_mut()) {
            let t = saved
                .get(name)
                .ok_or_else(|| TrainError::Checkpoint(format!("EMA weights lack {name}")))?;
            if t.dims() != var.dims() {
                return Err(TrainError::Checkpoint(format!(
                    "EMA weight {name} has shape {:?}, parameter has {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            *shadow = t.to_dtype(DType::F32)?.to_device(var.device())?.copy()?;
        }
        Ok(ema)
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// One update from the current parameter values (same names, same order as at creation).
    pub fn update(&mut self, params: &NamedParams) -> Result<()> {
        if params.len() != self.shadow.len() {
            return Err(TrainError::Input(format!(
                "EMA tracks {} parameters, got {}",
                self.shadow.len(),
                params.len()
            )));
        }
        for ((name, var), (shadow_name, shadow)) in params.iter().zip(self.shadow.iter_mut()) {
            if name != shadow_name {
                return Err(TrainError::Input(format!(
                    "EMA parameter order changed: {name} where {shadow_name} was"
                )));
            }
            let current = var.as_tensor().to_dtype(DType::F32)?.detach();
            *shadow = ((&*shadow * self.decay)? + (current * (1.0 - self.decay))?)?;
        }
        Ok(())
    }

    /// The averaged weights by name (f32), ready for safetensors.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.shadow.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn scalar_param(value: f32) -> Vec<(String, Var)> {
        vec![("w".to_string(), Var::new(&[value], &Device::Cpu).unwrap())]
    }

    fn grads_for(params: &NamedParams, values: &[f32]) -> GradStore {
        let mut g = GradStore::default();
        for ((_, var), v) in params.iter().zip(values) {
            g.insert(var.as_tensor(), Tensor::new(&[*v], &Device::Cpu).unwrap());
        }
        g
    }

    fn value(params: &NamedParams) -> f64 {
        params[0].1.as_tensor().to_vec1::<f32>().unwrap()[0] as f64
    }

    const CONFIG: AdamWConfig = AdamWConfig {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-15,
        weight_decay: 0.0,
    };

    #[test]
    fn adamw_two_steps_match_hand_computation() {
        // Step 1, g = 0.5: m = 0.05, v = 0.05·0.25 = 0.0125; m̂ = 0.05/0.1 = 0.5,
        // v̂ = 0.0125/0.05 = 0.25; θ = 1 − 0.1·0.5/0.5 = 0.9.
        // Step 2, g = −1: m = 0.045 − 0.1 = −0.055, v = 0.011875 + 0.05 = 0.061875;
        // m̂ = −0.055/0.19 = −0.289474, v̂ = 0.061875/0.0975 = 0.634615, √v̂ = 0.796628;
        // θ = 0.9 + 0.1·0.289474/0.796628 = 0.936337.
        let params = scalar_param(1.0);
        let mut opt = AdamW::new(&params, CONFIG).unwrap();
        opt.step(&grads_for(&params, &[0.5])).unwrap();
        assert!(close(value(&params), 0.9, 1e-6));
        opt.step(&grads_for(&params, &[-1.0])).unwrap();
        let expected = 0.9 + 0.1 * (0.055 / 0.19) / (0.061875f64 / 0.0975).sqrt();
        assert!(close(value(&params), expected, 1e-6), "{}", value(&params));
        assert_eq!(opt.steps_taken(), 2);
    }

    #[test]
    fn adamw_decoupled_weight_decay() {
        // θ = 1·(1 − 0.1·0.1) − 0.1·1 = 0.89.
        let params = scalar_param(1.0);
        let mut opt = AdamW::new(
            &params,
            AdamWConfig {
                weight_decay: 0.1,
                ..CONFIG
            },
        )
        .unwrap();
        opt.step(&grads_for(&params, &[0.5])).unwrap();
        assert!(close(value(&params), 0.89, 1e-6));
        // A parameter without a gradient is left alone.
        opt.step(&GradStore::default()).unwrap();
        assert!(close(value(&params), 0.89, 1e-6));
        assert_eq!(opt.steps_taken(), 1);
    }

    #[test]
    fn adamw_state_round_trip_continues_identically() {
        let a = scalar_param(1.0);
        let mut opt_a = AdamW::new(&a, CONFIG).unwrap();
        opt_a.step(&grads_for(&a, &[0.5])).unwrap();
        let state = opt_a.state_tensors().unwrap();

        let b = scalar_param(value(&a) as f32);
        let mut opt_b = AdamW::new(&b, CONFIG).unwrap();
        opt_b.load_state_tensors(&state).unwrap();
        opt_a.step(&grads_for(&a, &[-1.0])).unwrap();
        opt_b.step(&grads_for(&b, &[-1.0])).unwrap();
        assert_eq!(value(&a), value(&b));

        let mut missing = state.clone();
        missing.remove("exp_avg.w");
        assert!(opt_b.load_state_tensors(&missing).is_err());
        let mut wrong = state;
        wrong.insert(
            "exp_avg.w".into(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        );
        assert!(opt_b.load_state_tensors(&wrong).is_err());
    }

    #[test]
    fn adamw_rejects_duplicate_names() {
        let mut params = scalar_param(1.0);
        params.push(params[0].clone());
        assert!(AdamW::new(&params, CONFIG).is_err());
    }

    #[test]
    fn schedule_warmup_constant_and_cosine() {
        let constant = LrSchedule {
            peak: 1.0,
            min_lr: 0.0,
            warmup_steps: 10,
            total_steps: 20,
            kind: ScheduleKind::Constant,
        };
        assert_eq!(constant.lr_at(0), 0.0);
        assert_eq!(constant.lr_at(5), 0.5);
        assert_eq!(constant.lr_at(10), 1.0);
        assert_eq!(constant.lr_at(1000), 1.0);
        let cosine = LrSchedule {
            kind: ScheduleKind::Cosine,
            ..constant
        };
        // progress (15 − 10)/10 = 0.5 → 0.5·(1 + cos(π/2)) = 0.5
        assert!(close(cosine.lr_at(15), 0.5, 1e-12));
        assert!(close(cosine.lr_at(20), 0.0, 1e-12));
        assert!(close(cosine.lr_at(25), 0.0, 1e-12));
        let floor = LrSchedule {
            min_lr: 0.1,
            ..cosine
        };
        // 0.1 + 0.9·0.5 = 0.55
        assert!(close(floor.lr_at(15), 0.55, 1e-12));
        let no_warmup = LrSchedule {
            warmup_steps: 0,
            ..constant
        };
        assert_eq!(no_warmup.lr_at(0), 1.0);
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        // Gradients 3 and 4 → norm 5; max 1 → scale 1/(5 + 1e-6).
        let mut params = scalar_param(0.0);
        params.push(("b".to_string(), Var::new(&[0f32], &Device::Cpu).unwrap()));
        let mut grads = grads_for(&params, &[3.0, 4.0]);
        let norm = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
        assert!(close(norm, 5.0, 1e-6));
        let g0 = grads
            .get(params[0].1.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        let g1 = grads
            .get(params[1].1.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        assert!(close(g0 as f64, 0.6, 1e-6) && close(g1 as f64, 0.8, 1e-6));
        // Below the limit nothing changes.
        let mut grads = grads_for(&params, &[0.3, 0.4]);
        let norm = clip_grad_norm(&mut grads, &params, 1.0).unwrap();
        assert!(close(norm, 0.5, 1e-6));
        let g0 = grads
            .get(params[0].1.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        assert!(close(g0 as f64, 0.3, 1e-7));
    }

    #[test]
    fn accumulation_averages_micro_batches() {
        // (1 + 3) / 2 = 2
        let params = scalar_param(0.0);
        let mut acc = GradAccumulator::new(2);
        assert!(!acc.add(&grads_for(&params, &[1.0]), &params).unwrap());
        assert!(acc.add(&grads_for(&params, &[3.0]), &params).unwrap());
        let g = acc.take();
        let g = g
            .get(params[0].1.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, vec![2.0]);
        assert_eq!(acc.micro_steps(), 0);
        assert!(!acc.is_ready());
    }

    #[test]
    fn ema_update_and_restore() {
        // decay 0.9: 0.9·1 + 0.1·2 = 1.1; then 0.9·1.1 + 0.1·2 = 1.19.
        let params = scalar_param(1.0);
        let mut ema = Ema::new(&params, 0.9).unwrap();
        params[0]
            .1
            .set(&Tensor::new(&[2f32], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(&params).unwrap();
        let w = ema.tensors()["w"].to_vec1::<f32>().unwrap()[0];
        assert!(close(w as f64, 1.1, 1e-6));
        let restored = Ema::from_tensors(&params, 0.9, &ema.tensors()).unwrap();
        let mut restored = restored;
        restored.update(&params).unwrap();
        let w = restored.tensors()["w"].to_vec1::<f32>().unwrap()[0];
        assert!(close(w as f64, 1.19, 1e-6));
        assert!(Ema::new(&params, 1.5).is_err());
        assert!(Ema::from_tensors(&params, 0.9, &HashMap::new()).is_err());
    }
}
