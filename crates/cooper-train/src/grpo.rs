//! The GRPO objective: group-normalised advantages, the clipped surrogate, the optional KL term,
//! the three loss reductions, and the metrics TRL logs for them.
//!
//! Shapes follow TRL: per-token log-probabilities are `[B, T]` (B completions, right-padded to
//! the longest, T positions) with a `[B, T]` 0/1 mask of the real generated-text tokens, and one
//! advantage per completion. The loss is built from differentiable candle ops, so log-probs that
//! carry gradients (from the policy's forward pass) give a loss whose backward pass reaches the
//! policy.
//!
//! For completion i and token t (ρ = exp(logp − logp_old), A the completion's advantage):
//! ```text
//! ℓ_it = −min(ρ·A, clip(ρ, 1 − ε_low, 1 + ε_high)·A) + β·KL_it
//! KL_it = exp(ref − logp) − (ref − logp) − 1        (the k3 estimator)
//! grpo:    mean_i ( Σ_t m_it ℓ_it / max(Σ_t m_it, 1) )
//! bnpo:    Σ_it m_it ℓ_it / max(Σ_it m_it, 1)
//! dr_grpo: Σ_it m_it ℓ_it / (B · max_completion_length)
//! ```
//! With one optimisation pass per generation round, logp_old is logp detached, so ρ = 1 in value
//! while its gradient is that of logp.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, D};

use crate::config::LossType;
use crate::error::{Result, TrainError};

/// Added to the group standard deviation before dividing (as TRL).
pub const ADVANTAGE_STD_EPS: f64 = 1e-4;

/// Group statistics of one generation round.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupAdvantages {
    /// One advantage per completion.
    pub advantages: Vec<f32>,
    /// The mean reward of each completion's group (repeated per completion).
    pub group_means: Vec<f32>,
    /// The unbiased standard deviation of each completion's group (repeated per completion).
    pub group_stds: Vec<f32>,
}

impl GroupAdvantages {
    /// `reward` (mean of the group means) and `reward_std` (mean of the group stds), as TRL logs them.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mean = |v: &[f32]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
            }
        };
        BTreeMap::from([
            ("reward".to_string(), mean(&self.group_means)),
            ("reward_std".to_string(), mean(&self.group_stds)),
        ])
    }
}

/// Group-normalised advantages: completions `g·k .. g·k + k − 1` (k = `num_generations`) form a
/// group; A = r − mean_g, divided by (std_g + 1e-4) when `scale_rewards` (unbiased std).
///
/// A group of one has no unbiased std; we take it as 0 (its advantage is 0 either way, where
/// PyTorch would give NaN). A group whose rewards are all equal gets advantages 0.
pub fn group_advantages(
    rewards: &[f32],
    num_generations: usize,
    scale_rewards: bool,
) -> Result<GroupAdvantages> {
    if num_generations == 0 {
        return Err(TrainError::Input("num_generations must be ≥ 1".to_string()));
    }
    if rewards.len() % num_generations != 0 {
        return Err(TrainError::Input(format!(
            "{} rewards do not split into groups of {num_generations}",
            rewards.len()
        )));
    }
    if let Some(bad) = rewards.iter().find(|r| !r.is_finite()) {
        return Err(TrainError::Input(format!("non-finite reward {bad}")));
    }
    let mut out = GroupAdvantages {
        advantages: Vec::with_capacity(rewards.len()),
        group_means: Vec::with_capacity(rewards.len()),
        group_stds: Vec::with_capacity(rewards.len()),
    };
    for group in rewards.chunks(num_generations) {
        let k = group.len() as f64;
        let mean = group.iter().map(|&r| r as f64).sum::<f64>() / k;
        let std = if group.len() > 1 {
            let ss = group
                .iter()
                .map(|&r| (r as f64 - mean).powi(2))
                .sum::<f64>();
            (ss / (k - 1.0)).sqrt()
        } else {
            0.0
        };
        for &r in group {
            let centred = r as f64 - mean;
            let a = if scale_rewards {
                centred / (std + ADVANTAGE_STD_EPS)
            } else {
                centred
            };
            out.advantages.push(a as f32);
            out.group_means.push(mean as f32);
            out.group_stds.push(std as f32);
        }
    }
    Ok(out)
}

/// Settings of the clipped objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoLossConfig {
    /// Ratio floor is 1 − ε_low.
    pub epsilon_low: f64,
    /// Ratio ceiling is 1 + ε_high.
    pub epsilon_high: f64,
    /// Weight of the KL term (0 disables it; reference log-probs are then not needed).
    pub beta: f64,
    /// Reduction to a scalar.
    pub loss_type: LossType,
    /// Denominator length of `dr_grpo`.
    pub max_completion_length: usize,
}

impl Default for GrpoLossConfig {
    /// The official run: ε 0.2/0.2, β 0, `bnpo`, 16384.
    fn default() -> Self {
        Self {
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.0,
            loss_type: LossType::Bnpo,
            max_completion_length: 16_384,
        }
    }
}

impl GrpoLossConfig {
    /// Builds the loss settings from the run config's `[grpo]` section.
    pub fn from_config(grpo: &crate::config::GrpoConfig) -> Self {
        Self {
            epsilon_low: grpo.epsilon_low,
            epsilon_high: grpo.epsilon_high,
            beta: grpo.beta,
            loss_type: grpo.loss_type,
            max_completion_length: grpo.max_completion_length,
        }
    }
}

/// Inputs of [`grpo_loss`] for one micro-batch.
#[derive(Debug, Clone, Copy)]
pub struct GrpoLossInputs<'a> {
    /// Policy log-probs of the generated text tokens, `[B, T]` (may carry gradients).
    pub logps: &'a Tensor,
    /// 1 for real generated-text tokens, 0 for padding, `[B, T]`.
    pub mask: &'a Tensor,
    /// One advantage per completion, `[B]`.
    pub advantages: &'a Tensor,
    /// Log-probs of the policy that generated the rollouts (`[B, T]`); `None` uses `logps`
    /// detached (one pass per round).
    pub old_logps: Option<&'a Tensor>,
    /// Log-probs of the frozen reference model (`[B, T]`); required when β ≠ 0.
    pub ref_logps: Option<&'a Tensor>,
}

/// Scalar metrics of one loss evaluation (TRL names in [`GrpoLossMetrics::to_map`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoLossMetrics {
    /// Share of valid tokens with ρ < 1 − ε_low and A < 0.
    pub clip_low: f64,
    /// Share of valid tokens with ρ > 1 + ε_high and A > 0.
    pub clip_high: f64,
    /// Share of valid tokens clipped either way.
    pub clip_region: f64,
    /// Mean k3 KL over valid tokens (only when β ≠ 0).
    pub kl: Option<f64>,
    /// Number of valid tokens.
    pub num_tokens: f64,
}

impl GrpoLossMetrics {
    /// The metrics under TRL's names. With one process `low_min`/`high_max` equal the means.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let mut map = BTreeMap::from([
            ("clip_ratio/low_mean".to_string(), self.clip_low),
            ("clip_ratio/low_min".to_string(), self.clip_low),
            ("clip_ratio/high_mean".to_string(), self.clip_high),
            ("clip_ratio/high_max".to_string(), self.clip_high),
            ("clip_ratio/region_mean".to_string(), self.clip_region),
        ]);
        if let Some(kl) = self.kl {
            map.insert("kl".to_string(), kl);
        }
        map
    }
}

/// The loss and its metrics.
#[derive(Debug, Clone)]
pub struct GrpoLossOutput {
    /// Scalar f32 loss (differentiable w.r.t. `logps`).
    pub loss: Tensor,
    /// Per-token loss before masking and reduction, `[B, T]`.
    pub per_token_loss: Tensor,
    /// Clip ratios and KL.
    pub metrics: GrpoLossMetrics,
}

fn check_shape(name: &str, t: &Tensor, dims: &[usize]) -> Result<()> {
    if t.dims() != dims {
        return Err(TrainError::Input(format!(
            "{name} has shape {:?}, expected {dims:?}",
            t.dims()
        )));
    }
    Ok(())
}

/// The clipped GRPO surrogate with optional KL, reduced by `config.loss_type`.
pub fn grpo_loss(inputs: GrpoLossInputs<'_>, config: &GrpoLossConfig) -> Result<GrpoLossOutput> {
    let (b, t) = inputs.logps.dims2()?;
    if b == 0 {
        return Err(TrainError::Input("empty batch".to_string()));
    }
    check_shape("mask", inputs.mask, &[b, t])?;
    check_shape("advantages", inputs.advantages, &[b])?;
    if let Some(old) = inputs.old_logps {
        check_shape("old_logps", old, &[b, t])?;
    }
    if !(config.epsilon_low >= 0.0 && config.epsilon_low < 1.0 && config.epsilon_high >= 0.0) {
        return Err(TrainError::Input(format!(
            "clip epsilons must satisfy 0 ≤ ε_low < 1 and ε_high ≥ 0, got {} and {}",
            config.epsilon_low, config.epsilon_high
        )));
    }
    let logps = inputs.logps.to_dtype(DType::F32)?;
    let mask = inputs.mask.to_dtype(DType::F32)?;
    let adv = inputs.advantages.to_dtype(DType::F32)?.unsqueeze(1)?;
    let old = match inputs.old_logps {
        Some(old) => old.to_dtype(DType::F32)?.detach(),
        None => logps.detach(),
    };

    let ratio = (&logps - &old)?.exp()?;
    let clipped = ratio.clamp(1.0 - config.epsilon_low, 1.0 + config.epsilon_high)?;
    let surrogate1 = ratio.broadcast_mul(&adv)?;
    let surrogate2 = clipped.broadcast_mul(&adv)?;
    let mut per_token = surrogate1.minimum(&surrogate2)?.neg()?;

    let mut kl_tokens = None;
    if config.beta != 0.0 {
        let reference = inputs
            .ref_logps
            .ok_or_else(|| TrainError::Input("beta ≠ 0 needs reference log-probs".to_string()))?;
        check_shape("ref_logps", reference, &[b, t])?;
        let delta = (reference.to_dtype(DType::F32)?.detach() - &logps)?;
        let kl = ((delta.exp()? - &delta)? - 1.0)?;
        let kl = (kl * &mask)?;
        per_token = (per_token + (&kl * config.beta)?)?;
        kl_tokens = Some(kl);
    }

    let valid_per_seq = mask.sum(D::Minus1)?; // [B]
    let num_tokens = valid_per_seq.sum_all()?.to_scalar::<f32>()? as f64;
    let masked = (&per_token * &mask)?;
    let loss = match config.loss_type {
        LossType::Grpo => {
            let per_seq = masked.sum(D::Minus1)?;
            let counts = valid_per_seq.clamp(1.0, f64::INFINITY)?;
            (per_seq / counts)?.mean_all()?
        }
        LossType::Bnpo => (masked.sum_all()? / num_tokens.max(1.0))?,
        LossType::DrGrpo => {
            let denom = (b * config.max_completion_length) as f64;
            if denom == 0.0 {
                return Err(TrainError::Input(
                    "dr_grpo needs max_completion_length ≥ 1".to_string(),
                ));
            }
            (masked.sum_all()? / denom)?
        }
    };

    // Metrics (no gradients).
    let ratio_d = ratio.detach();
    let adv_b = adv.broadcast_as((b, t))?;
    let zeros = adv_b.zeros_like()?;
    let low = ratio_d
        .lt(1.0 - config.epsilon_low)?
        .to_dtype(DType::F32)?
        .mul(&adv_b.lt(&zeros)?.to_dtype(DType::F32)?)?;
    let high = ratio_d
        .gt(1.0 + config.epsilon_high)?
        .to_dtype(DType::F32)?
        .mul(&adv_b.gt(&zeros)?.to_dtype(DType::F32)?)?;
    let region = (&low + &high)?.clamp(0.0, 1.0)?;
    let denom = num_tokens.max(1.0);
    let share = |x: &Tensor| -> Result<f64> {
        Ok((x * &mask)?.sum_all()?.to_scalar::<f32>()? as f64 / denom)
    };
    let kl = match &kl_tokens {
        Some(kl) => Some(kl.detach().sum_all()?.to_scalar::<f32>()? as f64 / denom),
        None => None,
    };
    let metrics = GrpoLossMetrics {
        clip_low: share(&low)?,
        clip_high: share(&high)?,
        clip_region: share(&region)?,
        kl,
        num_tokens,
    };
    Ok(GrpoLossOutput {
        loss,
        per_token_loss: per_token,
        metrics,
    })
}

/// Log-probabilities of `targets` `[T]` under `logits` `[T, V]` divided by `temperature`, `[T]` f32
/// (differentiable). This is how the policy's generated-text tokens are scored.
pub fn token_log_probs(logits: &Tensor, targets: &Tensor, temperature: f64) -> Result<Tensor> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(TrainError::Input(format!(
            "temperature must be > 0, got {temperature}"
        )));
    }
    let scaled = (logits.to_dtype(DType::F32)? / temperature)?;
    let ce = crate::losses::token_cross_entropy(&scaled, targets)?;
    Ok(ce.neg()?)
}

/// Mean entropy (nats) of the softmax over `logits` `[T, V]` across the T positions (TRL's
/// `entropy` metric), computed without gradients.
pub fn mean_token_entropy(logits: &Tensor) -> Result<f64> {
    let (t, _) = logits.dims2()?;
    if t == 0 {
        return Ok(0.0);
    }
    let logits = logits.detach().to_dtype(DType::F32)?;
    let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let entropy = (log_p.exp()? * &log_p)?.sum(D::Minus1)?.neg()?;
    Ok(entropy.mean_all()?.to_scalar::<f32>()? as f64)
}

/// Everything a GRPO round needs from its rewards.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundScores {
    /// Per-function and total rewards.
    pub rewards: crate::rewards::RewardBreakdown,
    /// Advantages and group statistics.
    pub advantages: GroupAdvantages,
    /// `reward`, `reward_std`, `rewards/<name>/{mean,std}`, `depth_nums`, `segmentation_nums`,
    /// `total_gen_nums`, `completions/clipped_ratio`.
    pub metrics: BTreeMap<String, f64>,
}

/// Scores a generation round: runs the reward functions, normalises the totals per group of
/// `num_generations` consecutive completions, and gathers the round's metrics.
pub fn score_round(
    completions: &[crate::rewards::Completion<'_>],
    columns: &crate::rewards::RewardColumns,
    rewards: &crate::rewards::RewardSet,
    num_generations: usize,
    scale_rewards: bool,
) -> Result<RoundScores> {
    let breakdown = rewards.evaluate(completions, columns)?;
    let advantages = group_advantages(&breakdown.total, num_generations, scale_rewards)?;
    let mut metrics = breakdown.metrics();
    metrics.extend(advantages.metrics());
    metrics.extend(crate::rewards::rollout_metrics(completions));
    Ok(RoundScores {
        rewards: breakdown,
        advantages,
        metrics,
    })
}

/// TRL's `completions/mean_length`, `completions/min_length` and `completions/max_length` over
/// the generated-text token counts of a round (all 0 for an empty round).
pub fn completion_length_metrics(lengths: &[usize]) -> BTreeMap<String, f64> {
    let n = lengths.len().max(1) as f64;
    let mean = lengths.iter().sum::<usize>() as f64 / n;
    let min = lengths.iter().copied().min().unwrap_or(0) as f64;
    let max = lengths.iter().copied().max().unwrap_or(0) as f64;
    BTreeMap::from([
        ("completions/mean_length".to_string(), mean),
        ("completions/min_length".to_string(), min),
        ("completions/max_length".to_string(), max),
    ])
}

/// Right-pads per-completion log-prob vectors (`[Tᵢ]` each, possibly with gradients) into a `[B, T]`
/// tensor (T = max Tᵢ, at least 1) and the matching 0/1 mask.
pub fn pad_completions(logps: &[Tensor]) -> Result<(Tensor, Tensor)> {
    let first = logps
        .first()
        .ok_or_else(|| TrainError::Input("no completions to pad".to_string()))?;
    let device = first.device().clone();
    let lengths = logps
        .iter()
        .map(|l| l.dims1().map_err(TrainError::from))
        .collect::<Result<Vec<_>>>()?;
    let max_len = lengths.iter().copied().max().unwrap_or(0).max(1);
    let rows = logps
        .iter()
        .zip(&lengths)
        .map(|(l, &n)| {
            l.to_dtype(DType::F32)?
                .pad_with_zeros(0, 0, max_len - n)
                .map_err(TrainError::from)
        })
        .collect::<Result<Vec<_>>>()?;
    let padded = Tensor::stack(&rows, 0)?;
    let mask: Vec<f32> = lengths
        .iter()
        .flat_map(|&n| (0..max_len).map(move |j| if j < n { 1.0 } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (logps.len(), max_len), &device)?;
    Ok((padded, mask))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn advantages_match_hand_computation() {
        // Group 1: rewards (1, 0, 0, 1): mean 0.5; deviations ±0.5; unbiased var = 4·0.25/3 = 1/3;
        // std = 0.577350; A = ±0.5 / (0.577350 + 1e-4) = ±0.865875.
        // Group 2: all rewards 2: mean 2, std 0 → A = 0 / 1e-4 = 0.
        let rewards = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0];
        let out = group_advantages(&rewards, 4, true).unwrap();
        let std = (1.0f64 / 3.0).sqrt();
        let a = 0.5 / (std + 1e-4);
        let expected = [a, -a, -a, a, 0.0, 0.0, 0.0, 0.0];
        for (got, want) in out.advantages.iter().zip(expected) {
            assert!(close(*got as f64, want, 1e-6), "{got} vs {want}");
        }
        assert_eq!(
            out.group_means,
            vec![0.5, 0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0]
        );
        assert!(close(out.group_stds[0] as f64, std, 1e-6));
        assert_eq!(out.group_stds[4], 0.0);
        // reward = mean of per-completion group means = (4·0.5 + 4·2)/8 = 1.25.
        let m = out.metrics();
        assert!(close(m["reward"], 1.25, 1e-9));
        assert!(close(m["reward_std"], std / 2.0, 1e-6));
        // Without scaling: plain centring.
        let out = group_advantages(&rewards, 4, false).unwrap();
        assert_eq!(out.advantages, vec![0.5, -0.5, -0.5, 0.5, 0., 0., 0., 0.]);
    }

    #[test]
    fn advantages_reject_bad_input() {
        assert!(group_advantages(&[1.0, 2.0, 3.0], 2, true).is_err());
        assert!(group_advantages(&[1.0], 0, true).is_err());
        assert!(group_advantages(&[f32::NAN, 1.0], 2, true).is_err());
        assert_eq!(
            group_advantages(&[3.0], 1, true).unwrap().advantages,
            vec![0.0]
        );
    }

    /// Two completions of lengths 2 and 1 (padded to 2), with old log-probs making the ratios
    /// ρ = (1.5, 0.5 | 1.1, pad). Advantages (+1, −2).
    ///
    /// completion 0 (A = +1): ρ 1.5 → min(1.5, 1.2) = 1.2 → ℓ = −1.2 (high-clipped);
    ///                        ρ 0.5 → min(0.5, 0.8) = 0.5 → ℓ = −0.5 (not clipped: A > 0)
    /// completion 1 (A = −2): ρ 1.1 → min(−2.2, −2.2) = −2.2 → ℓ = 2.2
    /// grpo:    mean(( −1.2 − 0.5)/2, 2.2/1) = mean(−0.85, 2.2) = 0.675
    /// bnpo:    (−1.2 − 0.5 + 2.2) / 3 = 0.5/3 = 0.166667
    /// dr_grpo: 0.5 / (2 · 4) = 0.0625
    fn fixture(dev: &Device) -> (Var, Tensor, Tensor, Tensor) {
        let logps = Var::new(&[[-1.0f32, -2.0], [-0.5, -3.0]], dev).unwrap();
        let old = Tensor::new(
            &[
                [-1.0f32 - 1.5f32.ln(), -2.0 - 0.5f32.ln()],
                [-0.5 - 1.1f32.ln(), -7.0],
            ],
            dev,
        )
        .unwrap();
        let mask = Tensor::new(&[[1f32, 1.], [1., 0.]], dev).unwrap();
        let adv = Tensor::new(&[1f32, -2.], dev).unwrap();
        (logps, old, mask, adv)
    }

    fn run(loss_type: LossType) -> GrpoLossOutput {
        let dev = Device::Cpu;
        let (logps, old, mask, adv) = fixture(&dev);
        let config = GrpoLossConfig {
            loss_type,
            max_completion_length: 4,
            ..GrpoLossConfig::default()
        };
        grpo_loss(
            GrpoLossInputs {
                logps: logps.as_tensor(),
                mask: &mask,
                advantages: &adv,
                old_logps: Some(&old),
                ref_logps: None,
            },
            &config,
        )
        .unwrap()
    }

    #[test]
    fn clipped_loss_for_each_loss_type() {
        let loss = |lt| run(lt).loss.to_scalar::<f32>().unwrap() as f64;
        assert!(close(loss(LossType::Grpo), 0.675, 1e-5));
        assert!(close(loss(LossType::Bnpo), 0.5 / 3.0, 1e-5));
        assert!(close(loss(LossType::DrGrpo), 0.0625, 1e-5));
    }

    #[test]
    fn clip_metrics_count_valid_tokens_only() {
        // Of 3 valid tokens: one high-clipped (ρ 1.5, A > 0); ρ 0.5 has A > 0 so it is not
        // low-clipped; the padded slot (ρ = e^4) is masked. → high 1/3, low 0, region 1/3.
        let m = run(LossType::Bnpo).metrics;
        assert!(close(m.clip_high, 1.0 / 3.0, 1e-6));
        assert_eq!(m.clip_low, 0.0);
        assert!(close(m.clip_region, 1.0 / 3.0, 1e-6));
        assert_eq!(m.num_tokens, 3.0);
        assert_eq!(m.kl, None);
        let map = m.to_map();
        assert!(map.contains_key("clip_ratio/region_mean"));
        assert!(map.contains_key("clip_ratio/low_mean"));
        assert!(map.contains_key("clip_ratio/high_mean"));
    }

    #[test]
    fn gradient_flows_to_log_probs() {
        // bnpo: ∂L/∂logp_it = −(1/3)·A_i·ρ_it where the unclipped branch is the minimum, 0 where
        // the clipped branch is (its ratio is constant there).
        // token (0,0): clipped at 1.2 → 0.  token (0,1): −(1/3)·1·0.5 = −0.166667.
        // token (1,0): ρ = 1.1 inside the clip range; both branches equal, and candle (like
        // PyTorch) splits a tie in min() evenly, but the clipped branch passes through clamp
        // with slope 1 here, so the full gradient arrives: −(1/3)·(−2)·1.1 = 0.733333.
        // token (1,1): padding → 0.
        let dev = Device::Cpu;
        let (logps, old, mask, adv) = fixture(&dev);
        let out = grpo_loss(
            GrpoLossInputs {
                logps: logps.as_tensor(),
                mask: &mask,
                advantages: &adv,
                old_logps: Some(&old),
                ref_logps: None,
            },
            &GrpoLossConfig::default(),
        )
        .unwrap();
        let grads = out.loss.backward().unwrap();
        let g = grads
            .get(logps.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let expected = [[0.0, -0.5 / 3.0], [2.2 / 3.0, 0.0]];
        for (row, want_row) in g.iter().zip(expected) {
            for (got, want) in row.iter().zip(want_row) {
                assert!(close(*got as f64, want, 1e-5), "{g:?}");
            }
        }
    }

    #[test]
    fn on_policy_ratio_is_one_and_gradient_is_minus_advantage() {
        // old = logp.detach(): ρ = 1, nothing clipped; bnpo over 2 tokens of one completion with
        // A = 0.5: L = −(0.5 + 0.5)/2 = −0.5; ∂L/∂logp = −A/2 = −0.25 each.
        let dev = Device::Cpu;
        let logps = Var::new(&[[-1.0f32, -2.0]], &dev).unwrap();
        let mask = Tensor::new(&[[1f32, 1.]], &dev).unwrap();
        let adv = Tensor::new(&[0.5f32], &dev).unwrap();
        let out = grpo_loss(
            GrpoLossInputs {
                logps: logps.as_tensor(),
                mask: &mask,
                advantages: &adv,
                old_logps: None,
                ref_logps: None,
            },
            &GrpoLossConfig::default(),
        )
        .unwrap();
        assert!(close(
            out.loss.to_scalar::<f32>().unwrap() as f64,
            -0.5,
            1e-6
        ));
        let g = out.loss.backward().unwrap();
        let g = g.get(logps.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert!(close(g[0][0] as f64, -0.25, 1e-6) && close(g[0][1] as f64, -0.25, 1e-6));
        assert_eq!(out.metrics.clip_region, 0.0);
    }

    #[test]
    fn kl_term_uses_k3_estimator() {
        // One token, A = 0, ρ = 1, β = 0.1. ref − logp = ln 2 → KL = 2 − ln 2 − 1 = 0.306853.
        // L = 0 + 0.1·0.306853 = 0.0306853 (bnpo over one token). ∂KL/∂logp = 1 − e^{ref−logp}
        // = −1 → ∂L/∂logp = −0.1.
        let dev = Device::Cpu;
        let logps = Var::new(&[[-1.0f32]], &dev).unwrap();
        let reference = Tensor::new(&[[-1.0f32 + 2f32.ln()]], &dev).unwrap();
        let mask = Tensor::new(&[[1f32]], &dev).unwrap();
        let adv = Tensor::new(&[0f32], &dev).unwrap();
        let config = GrpoLossConfig {
            beta: 0.1,
            ..GrpoLossConfig::default()
        };
        let inputs = GrpoLossInputs {
            logps: logps.as_tensor(),
            mask: &mask,
            advantages: &adv,
            old_logps: None,
            ref_logps: Some(&reference),
        };
        let out = grpo_loss(inputs, &config).unwrap();
        let kl = 2.0 - 2f64.ln() - 1.0;
        assert!(close(
            out.loss.to_scalar::<f32>().unwrap() as f64,
            0.1 * kl,
            1e-6
        ));
        assert!(close(out.metrics.kl.unwrap(), kl, 1e-6));
        let g = out.loss.backward().unwrap();
        let g = g.get(logps.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert!(close(g[0][0] as f64, -0.1, 1e-5));
        // β ≠ 0 without reference log-probs is an error.
        let missing = GrpoLossInputs {
            ref_logps: None,
            ..inputs
        };
        assert!(grpo_loss(missing, &config).is_err());
    }

    #[test]
    fn asymmetric_epsilons_and_low_clipping() {
        // ε_low 0.1, ε_high 0.3; A = −1. ρ = 0.5 → clip 0.9; min(−0.5, −0.9) = −0.9 → ℓ = 0.9,
        // low-clipped. ρ = 1.25 → within (0.9, 1.3): ℓ = 1.25. bnpo: (0.9 + 1.25)/2 = 1.075.
        let dev = Device::Cpu;
        let logps = Tensor::new(&[[0.5f32.ln(), 1.25f32.ln()]], &dev).unwrap();
        let old = Tensor::zeros((1, 2), DType::F32, &dev).unwrap();
        let mask = Tensor::ones((1, 2), DType::F32, &dev).unwrap();
        let adv = Tensor::new(&[-1f32], &dev).unwrap();
        let config = GrpoLossConfig {
            epsilon_low: 0.1,
            epsilon_high: 0.3,
            ..GrpoLossConfig::default()
        };
        let out = grpo_loss(
            GrpoLossInputs {
                logps: &logps,
                mask: &mask,
                advantages: &adv,
                old_logps: Some(&old),
                ref_logps: None,
            },
            &config,
        )
        .unwrap();
        assert!(close(
            out.loss.to_scalar::<f32>().unwrap() as f64,
            1.075,
            1e-5
        ));
        assert!(close(out.metrics.clip_low, 0.5, 1e-6));
        assert_eq!(out.metrics.clip_high, 0.0);
    }

    #[test]
    fn a_round_is_scored_end_to_end() {
        use crate::rewards::{
            AccuracyReward, AnswerMatcher, Completion, CompletionItem::Text, Flag, FormatReward,
            RewardColumns, RewardSet,
        };
        let good = "<think>x</think><answer>\\boxed{B}</answer>";
        let wrong = "<think>x</think><answer>\\boxed{C}</answer>";
        let prompt = [
            Text("sys"),
            crate::rewards::CompletionItem::Image,
            Text("q"),
        ];
        let make = |last: &'static str| {
            let mut c = prompt.to_vec();
            c.push(Text(last));
            Completion::new(c, prompt.len())
        };
        let completions = vec![make(good), make(wrong), make("B"), make(good)];
        let mut set = RewardSet::new();
        set.push(
            Box::new(AccuracyReward::rules(AnswerMatcher::default())),
            1.0,
        );
        set.push(Box::new(FormatReward), 1.0);
        let columns = RewardColumns {
            solution: vec!["B".into(); 4],
            question: vec!["q".into(); 4],
            flag: vec![Flag::Boundary; 4],
            data_id: vec!["a".into(), "a".into(), "b".into(), "b".into()],
        };
        let round = score_round(&completions, &columns, &set, 2, true).unwrap();
        // totals: good 1+1 = 2, wrong 0+1 = 1 | bare "B" 1+0 = 1, good 2.
        assert_eq!(round.rewards.total, vec![2.0, 1.0, 1.0, 2.0]);
        // Each group (2, 1) / (1, 2): mean 1.5, std √0.5 = 0.707107; A = ±0.5/(0.707107+1e-4).
        let a = 0.5 / (0.5f64.sqrt() + 1e-4);
        let want = [a, -a, -a, a];
        for (got, w) in round.advantages.advantages.iter().zip(want) {
            assert!(close(*got as f64, w, 1e-6));
        }
        assert!(close(round.metrics["reward"], 1.5, 1e-9));
        assert!(close(round.metrics["rewards/accuracy/mean"], 0.75, 1e-9));
        assert!(close(round.metrics["rewards/format/mean"], 0.75, 1e-9));
        assert_eq!(round.metrics["depth_nums"], 0.0);
        // One of four completions does not end in a well-formed answer.
        assert!(close(
            round.metrics["completions/clipped_ratio"],
            0.25,
            1e-9
        ));
    }

    #[test]
    fn completion_lengths() {
        // (10 + 20 + 60) / 3 = 30
        let m = completion_length_metrics(&[10, 20, 60]);
        assert_eq!(m["completions/mean_length"], 30.0);
        assert_eq!(m["completions/min_length"], 10.0);
        assert_eq!(m["completions/max_length"], 60.0);
        assert_eq!(
            completion_length_metrics(&[])["completions/mean_length"],
            0.0
        );
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let dev = Device::Cpu;
        let logps = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let mask = Tensor::zeros((2, 2), DType::F32, &dev).unwrap();
        let adv = Tensor::zeros(2, DType::F32, &dev).unwrap();
        let inputs = GrpoLossInputs {
            logps: &logps,
            mask: &mask,
            advantages: &adv,
            old_logps: None,
            ref_logps: None,
        };
        assert!(grpo_loss(inputs, &GrpoLossConfig::default()).is_err());
    }

    #[test]
    fn token_log_probs_entropy_and_padding() {
        let dev = Device::Cpu;
        // logits (0, ln 3) at temperature 1: log p(1) = ln 0.75; at temperature 2 the logits are
        // (0, ln 3 / 2) → p(1) = √3 / (1 + √3) = 0.633975.
        let logits = Tensor::new(&[[0f32, 3f32.ln()]], &dev).unwrap();
        let targets = Tensor::new(&[1u32], &dev).unwrap();
        let lp = token_log_probs(&logits, &targets, 1.0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(close(lp[0] as f64, 0.75f64.ln(), 1e-6));
        let lp = token_log_probs(&logits, &targets, 2.0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let s3 = 3f64.sqrt();
        assert!(close(lp[0] as f64, (s3 / (1.0 + s3)).ln(), 1e-6));
        assert!(token_log_probs(&logits, &targets, 0.0).is_err());
        // Entropy of (1/4, 3/4) = −(0.25 ln 0.25 + 0.75 ln 0.75) = 0.562335; of (1/2, 1/2) = ln 2.
        let two = Tensor::new(&[[0f32, 3f32.ln()], [0., 0.]], &dev).unwrap();
        let h = mean_token_entropy(&two).unwrap();
        let h0 = -(0.25 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
        assert!(close(h, (h0 + 2f64.ln()) / 2.0, 1e-6));
        // Padding: lengths 2 and 1.
        let a = Tensor::new(&[-1f32, -2.], &dev).unwrap();
        let b = Tensor::new(&[-3f32], &dev).unwrap();
        let (padded, mask) = pad_completions(&[a, b]).unwrap();
        assert_eq!(
            padded.to_vec2::<f32>().unwrap(),
            vec![vec![-1., -2.], vec![-3., 0.]]
        );
        assert_eq!(
            mask.to_vec2::<f32>().unwrap(),
            vec![vec![1., 1.], vec![1., 0.]]
        );
        assert!(pad_completions(&[]).is_err());
    }
}
