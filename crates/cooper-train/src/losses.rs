//! The supervised losses of stage 1 and SFT, and the flow-matching noising that feeds them.
//!
//! * Flow matching (rectified flow): for a target image with clean latent tokens x₀, draw one
//!   timestep t per image, t = σ(n) with n ~ N(0, 1) (logit-normal), optionally shifted to
//!   s·t / (1 + (s − 1)·t); draw ε ~ N(0, I) per token; the model sees x_t = (1 − t)·x₀ + t·ε and
//!   must predict the velocity ε − x₀ (pointing from data to noise).
//! * [`flow_matching_mse`]: Σ over tokens of the mean over channels of (pred − target)², divided by
//!   the flow-token count (the global count under data parallelism).
//! * [`masked_cross_entropy`]: Σ over loss tokens of −log p(label), divided by their count (or
//!   by the sum of per-token weights).
//!
//! All losses are built from differentiable candle ops and computed in f32, whatever the input
//! dtype. Noise comes from a caller-owned seeded RNG, so a resumed run draws the same numbers.

use candle_core::{DType, Device, Tensor, D};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::config::LossConfig;
use crate::error::{Result, TrainError};

/// Logistic sigmoid.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The timestep shift s·t / (1 + (s − 1)·t); s = 1 is the identity, s > 1 moves t towards 1
/// (more noise).
pub fn shift_timestep(t: f64, shift: f64) -> f64 {
    shift * t / (1.0 + (shift - 1.0) * t)
}

/// Draws one training timestep: t = shift(σ(n)), n ~ N(0, 1).
pub fn sample_timestep<R: Rng + ?Sized>(rng: &mut R, shift: f64) -> f64 {
    let n: f64 = rng.sample(StandardNormal);
    shift_timestep(sigmoid(n), shift)
}

/// A tensor of independent N(0, 1) draws (f32) taken from `rng` in row-major order.
pub fn standard_normal<R: Rng + ?Sized>(
    rng: &mut R,
    dims: &[usize],
    device: &Device,
) -> Result<Tensor> {
    let count: usize = dims.iter().product();
    let values: Vec<f32> = (0..count).map(|_| rng.sample(StandardNormal)).collect();
    Ok(Tensor::from_vec(values, dims, device)?)
}

/// The flow-matching input and regression target for latent tokens `x0` `[N, C]` with noise
/// `noise` `[N, C]` and per-token timesteps `t` `[N]`: returns (x_t, ε − x₀).
pub fn flow_interpolate(x0: &Tensor, noise: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n, c) = x0.dims2()?;
    if noise.dims() != [n, c] {
        return Err(TrainError::Input(format!(
            "noise shape {:?} differs from latent shape [{n}, {c}]",
            noise.dims()
        )));
    }
    if t.dims() != [n] {
        return Err(TrainError::Input(format!(
            "timesteps shape {:?}, expected [{n}]",
            t.dims()
        )));
    }
    let x0 = x0.to_dtype(DType::F32)?;
    let noise = noise.to_dtype(DType::F32)?;
    let t = t.to_dtype(DType::F32)?.unsqueeze(1)?;
    let one_minus_t = t.affine(-1.0, 1.0)?;
    let x_t = (x0.broadcast_mul(&one_minus_t)? + noise.broadcast_mul(&t)?)?;
    let target = (noise - x0)?;
    Ok((x_t, target))
}

/// Everything the model needs for the flow loss of a batch of target images.
#[derive(Debug, Clone)]
pub struct FlowBatch {
    /// Noised latents x_t, `[N, C]` f32.
    pub x_t: Tensor,
    /// Velocity target ε − x₀, `[N, C]` f32.
    pub target: Tensor,
    /// Timestep of each token (one value per image, repeated over its tokens), `[N]` f32.
    pub timesteps: Tensor,
    /// The timestep drawn for each image.
    pub image_timesteps: Vec<f64>,
}

/// Noises the packed latent tokens `x0` `[N, C]` of consecutive target images with
/// `tokens_per_image` tokens each: one timestep per image (see [`sample_timestep`]), then one
/// N(0, 1) draw per token and channel, all from `rng`.
pub fn noise_latents<R: Rng + ?Sized>(
    rng: &mut R,
    x0: &Tensor,
    tokens_per_image: &[usize],
    shift: f64,
) -> Result<FlowBatch> {
    let (n, c) = x0.dims2()?;
    let total: usize = tokens_per_image.iter().sum();
    if total != n {
        return Err(TrainError::Input(format!(
            "tokens_per_image sums to {total}, but the latent has {n} tokens"
        )));
    }
    let image_timesteps: Vec<f64> = tokens_per_image
        .iter()
        .map(|_| sample_timestep(rng, shift))
        .collect();
    let per_token: Vec<f32> = tokens_per_image
        .iter()
        .zip(&image_timesteps)
        .flat_map(|(&count, &t)| std::iter::repeat_n(t as f32, count))
        .collect();
    let timesteps = Tensor::from_vec(per_token, n, x0.device())?;
    let noise = standard_normal(rng, &[n, c], x0.device())?;
    let (x_t, target) = flow_interpolate(x0, &noise, &timesteps)?;
    Ok(FlowBatch {
        x_t,
        target,
        timesteps,
        image_timesteps,
    })
}

/// Flow-matching loss: Σ_tokens mean_channels (pred − target)² / `token_count`.
///
/// `pred` and `target` are `[N, C]`. `token_count` is the normaliser (the global number of flow
/// tokens when several workers each hold part of the batch); `None` uses N. With no tokens the
/// loss is a zero that is still connected to `pred`, so a backward pass stays valid.
pub fn flow_matching_mse(
    pred: &Tensor,
    target: &Tensor,
    token_count: Option<usize>,
) -> Result<Tensor> {
    let (n, c) = pred.dims2()?;
    if target.dims() != [n, c] {
        return Err(TrainError::Input(format!(
            "target shape {:?} differs from prediction shape [{n}, {c}]",
            target.dims()
        )));
    }
    let pred = pred.to_dtype(DType::F32)?;
    if n == 0 || c == 0 {
        return Ok((pred.sum_all()? * 0.0)?);
    }
    let count = token_count.unwrap_or(n);
    if count == 0 {
        return Err(TrainError::Input(
            "flow loss normaliser is 0 but there are flow tokens".to_string(),
        ));
    }
    let target = target.to_dtype(DType::F32)?;
    let per_token = (pred - target)?.sqr()?.mean(D::Minus1)?;
    Ok((per_token.sum_all()? / count as f64)?)
}

/// Per-token cross-entropy `−log softmax(logits)[label]`, `[N]` f32, for logits `[N, V]` and integer
/// labels `[N]`.
pub fn token_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    if labels.dims() != [n] {
        return Err(TrainError::Input(format!(
            "labels shape {:?}, expected [{n}]",
            labels.dims()
        )));
    }
    let labels = labels.to_dtype(DType::U32)?;
    let max_label = if n == 0 {
        0
    } else {
        labels.max(0)?.to_scalar::<u32>()?
    };
    if n > 0 && max_label as usize >= v {
        return Err(TrainError::Input(format!(
            "label {max_label} outside a vocabulary of {v}"
        )));
    }
    let log_probs = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let picked = log_probs.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?;
    Ok(picked.neg()?)
}

/// Masked (optionally weighted) cross-entropy: Σ wᵢ·CEᵢ / Σ wᵢ over tokens i.
///
/// `weights` `[N]` is a 0/1 mask of the loss tokens (or per-token weights, as with the official
/// `ce_loss_reweighting`); `None` means every row is a loss token. `normaliser` replaces Σ wᵢ
/// (the global loss-token count under data parallelism). With no loss tokens the result is a
/// zero connected to `logits`.
pub fn masked_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    weights: Option<&Tensor>,
    normaliser: Option<f64>,
) -> Result<Tensor> {
    let ce = token_cross_entropy(logits, labels)?;
    let n = ce.dims1()?;
    let (total, weight_sum) = match weights {
        Some(w) => {
            if w.dims() != [n] {
                return Err(TrainError::Input(format!(
                    "loss weights shape {:?}, expected [{n}]",
                    w.dims()
                )));
            }
            let w = w.to_dtype(DType::F32)?;
            let weight_sum = w.sum_all()?.to_scalar::<f32>()? as f64;
            ((ce * w)?.sum_all()?, weight_sum)
        }
        None => (ce.sum_all()?, n as f64),
    };
    let denominator = normaliser.unwrap_or(weight_sum);
    if denominator == 0.0 {
        if weight_sum == 0.0 {
            return Ok((logits.to_dtype(DType::F32)?.sum_all()? * 0.0)?);
        }
        return Err(TrainError::Input(
            "cross-entropy normaliser is 0 but there are loss tokens".to_string(),
        ));
    }
    if !denominator.is_finite() {
        return Err(TrainError::Input(format!(
            "cross-entropy normaliser is {denominator}"
        )));
    }
    Ok((total / denominator)?)
}

/// The stage loss `ce_weight·CE + mse_weight·MSE` over the terms present (stage 1 has no CE
/// tokens, SFT no flow tokens). At least one term is required.
pub fn combine_losses(
    ce: Option<&Tensor>,
    mse: Option<&Tensor>,
    weights: &LossConfig,
) -> Result<Tensor> {
    match (ce, mse) {
        (Some(ce), Some(mse)) => Ok(((ce * weights.ce_weight)? + (mse * weights.mse_weight)?)?),
        (Some(ce), None) => Ok((ce * weights.ce_weight)?),
        (None, Some(mse)) => Ok((mse * weights.mse_weight)?),
        (None, None) => Err(TrainError::Input(
            "a step needs a cross-entropy or a flow loss".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn flow_mse_matches_hand_computation() {
        let dev = Device::Cpu;
        // Two tokens, two channels.
        // token 0: diff (1, 1) → squares (1, 1) → mean 1
        // token 1: diff (2, 0) → squares (4, 0) → mean 2
        // Σ = 3; / 2 tokens = 1.5; / 4 global tokens = 0.75.
        let pred = Tensor::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap();
        let target = Tensor::new(&[[0f32, 1.], [1., 4.]], &dev).unwrap();
        let loss = flow_matching_mse(&pred, &target, None).unwrap();
        assert!(close(loss.to_scalar::<f32>().unwrap() as f64, 1.5, 1e-6));
        let loss = flow_matching_mse(&pred, &target, Some(4)).unwrap();
        assert!(close(loss.to_scalar::<f32>().unwrap() as f64, 0.75, 1e-6));
    }

    #[test]
    fn flow_mse_rejects_mismatch_and_handles_empty() {
        let dev = Device::Cpu;
        let pred = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let target = Tensor::zeros((3, 2), DType::F32, &dev).unwrap();
        assert!(flow_matching_mse(&pred, &target, None).is_err());
        let empty = Tensor::zeros((0, 4), DType::F32, &dev).unwrap();
        let loss = flow_matching_mse(&empty, &empty, None).unwrap();
        assert_eq!(loss.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn flow_mse_gradient() {
        let dev = Device::Cpu;
        // d/dpred of Σ_i mean_c (p − y)² / N = 2 (p − y) / (C·N) = 2·diff / 4 = diff / 2.
        let pred = Var::new(&[[1f32, 2.], [3., 4.]], &dev).unwrap();
        let target = Tensor::new(&[[0f32, 1.], [1., 4.]], &dev).unwrap();
        let loss = flow_matching_mse(pred.as_tensor(), &target, None).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads
            .get(pred.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(g, vec![vec![0.5, 0.5], vec![1.0, 0.0]]);
    }

    #[test]
    fn masked_ce_matches_hand_computation() {
        let dev = Device::Cpu;
        // Row 0: logits (0, ln 3) → p = (1/4, 3/4); label 1 → CE = −ln(3/4) = 0.287682.
        // Row 1: logits (0, 0)    → p = (1/2, 1/2); label 0 → CE = ln 2 = 0.693147.
        // Row 2: logits (5, −5)   → masked out.
        // Σ over the two loss tokens = 0.980829; / 2 = 0.490415.
        let logits = Tensor::new(&[[0f32, 3f32.ln()], [0., 0.], [5., -5.]], &dev).unwrap();
        let labels = Tensor::new(&[1u32, 0, 1], &dev).unwrap();
        let mask = Tensor::new(&[1f32, 1., 0.], &dev).unwrap();
        let loss = masked_cross_entropy(&logits, &labels, Some(&mask), None).unwrap();
        let expected = (-(0.75f64).ln() + 2f64.ln()) / 2.0;
        assert!(close(
            loss.to_scalar::<f32>().unwrap() as f64,
            expected,
            1e-6
        ));
        // Global normaliser 4: 0.980829 / 4.
        let loss = masked_cross_entropy(&logits, &labels, Some(&mask), Some(4.0)).unwrap();
        assert!(close(
            loss.to_scalar::<f32>().unwrap() as f64,
            expected / 2.0,
            1e-6
        ));
        // No mask: row 2 adds −ln σ(−10) = ln(1 + e^10) = 10.0000454; (0.980829 + 10.0000454)/3.
        let loss = masked_cross_entropy(&logits, &labels, None, None).unwrap();
        let row2 = (1.0 + 10f64.exp()).ln();
        assert!(close(
            loss.to_scalar::<f32>().unwrap() as f64,
            (expected * 2.0 + row2) / 3.0,
            1e-5
        ));
    }

    #[test]
    fn masked_ce_gradient_and_empty_mask() {
        let dev = Device::Cpu;
        // dCE/dlogits = softmax − onehot; one token, logits (0, 0), label 0 → (−0.5, 0.5).
        let logits = Var::new(&[[0f32, 0.]], &dev).unwrap();
        let labels = Tensor::new(&[0u32], &dev).unwrap();
        let loss = masked_cross_entropy(logits.as_tensor(), &labels, None, None).unwrap();
        let g = loss.backward().unwrap();
        let g = g.get(logits.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert!(close(g[0][0] as f64, -0.5, 1e-6) && close(g[0][1] as f64, 0.5, 1e-6));

        let mask = Tensor::new(&[0f32], &dev).unwrap();
        let loss = masked_cross_entropy(logits.as_tensor(), &labels, Some(&mask), None).unwrap();
        assert_eq!(loss.to_scalar::<f32>().unwrap(), 0.0);
        let bad_label = Tensor::new(&[2u32], &dev).unwrap();
        assert!(masked_cross_entropy(logits.as_tensor(), &bad_label, None, None).is_err());
    }

    #[test]
    fn combined_loss_uses_the_weights() {
        let dev = Device::Cpu;
        let ce = Tensor::new(2f32, &dev).unwrap();
        let mse = Tensor::new(3f32, &dev).unwrap();
        let w = LossConfig {
            ce_weight: 0.5,
            mse_weight: 2.0,
            timestep_shift: 1.0,
        };
        // 0.5·2 + 2·3 = 7
        let both = combine_losses(Some(&ce), Some(&mse), &w).unwrap();
        assert_eq!(both.to_scalar::<f32>().unwrap(), 7.0);
        let only_mse = combine_losses(None, Some(&mse), &w).unwrap();
        assert_eq!(only_mse.to_scalar::<f32>().unwrap(), 6.0);
        assert!(combine_losses(None, None, &w).is_err());
    }

    #[test]
    fn timestep_shift_and_sampling() {
        // shift 3 at t = 0.5: 3·0.5 / (1 + 2·0.5) = 0.75; shift 1 is the identity.
        assert!(close(shift_timestep(0.5, 3.0), 0.75, 1e-12));
        assert!(close(shift_timestep(0.3, 1.0), 0.3, 1e-12));
        assert!(close(sigmoid(0.0), 0.5, 1e-12));
        // Same seed → same draws; every t lies in (0, 1).
        let mut a = ChaCha8Rng::seed_from_u64(7);
        let mut b = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100 {
            let ta = sample_timestep(&mut a, 1.0);
            assert_eq!(ta, sample_timestep(&mut b, 1.0));
            assert!(ta > 0.0 && ta < 1.0);
        }
        // The shifted draw is the shift of the unshifted one from the same stream.
        let mut a = ChaCha8Rng::seed_from_u64(9);
        let mut b = ChaCha8Rng::seed_from_u64(9);
        let plain = sample_timestep(&mut a, 1.0);
        assert!(close(
            sample_timestep(&mut b, 3.0),
            shift_timestep(plain, 3.0),
            1e-12
        ));
    }

    #[test]
    fn interpolation_matches_hand_computation() {
        let dev = Device::Cpu;
        // token 0, t = 0.25: x_t = 0.75·(2, 4) + 0.25·(6, 0) = (3, 3); target = (6−2, 0−4) = (4, −4)
        // token 1, t = 1.0:  x_t = noise = (1, 1);                     target = (1−0, 1−0) = (1, 1)
        let x0 = Tensor::new(&[[2f32, 4.], [0., 0.]], &dev).unwrap();
        let noise = Tensor::new(&[[6f32, 0.], [1., 1.]], &dev).unwrap();
        let t = Tensor::new(&[0.25f32, 1.0], &dev).unwrap();
        let (x_t, target) = flow_interpolate(&x0, &noise, &t).unwrap();
        assert_eq!(
            x_t.to_vec2::<f32>().unwrap(),
            vec![vec![3., 3.], vec![1., 1.]]
        );
        assert_eq!(
            target.to_vec2::<f32>().unwrap(),
            vec![vec![4., -4.], vec![1., 1.]]
        );
    }

    #[test]
    fn noise_latents_shares_one_timestep_per_image() {
        let dev = Device::Cpu;
        let x0 = Tensor::zeros((5, 3), DType::F32, &dev).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let batch = noise_latents(&mut rng, &x0, &[2, 3], 1.0).unwrap();
        let t = batch.timesteps.to_vec1::<f32>().unwrap();
        assert_eq!(t[0], t[1]);
        assert_eq!(t[2], t[3]);
        assert_eq!(t[3], t[4]);
        assert_eq!(batch.image_timesteps.len(), 2);
        assert_eq!(t[0], batch.image_timesteps[0] as f32);
        // With x0 = 0 the target is the noise itself and x_t = t·noise.
        let target = batch.target.to_vec2::<f32>().unwrap();
        let x_t = batch.x_t.to_vec2::<f32>().unwrap();
        for (i, row) in x_t.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert!(close(*v as f64, (t[i] * target[i][j]) as f64, 1e-6));
            }
        }
        let mut rng2 = ChaCha8Rng::seed_from_u64(1);
        let again = noise_latents(&mut rng2, &x0, &[2, 3], 1.0).unwrap();
        assert_eq!(again.target.to_vec2::<f32>().unwrap(), target);
        assert!(noise_latents(&mut rng2, &x0, &[2, 2], 1.0).is_err());
    }
}
