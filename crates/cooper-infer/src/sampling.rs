//! The next-token sampler of the official `generate_text` (reference §3.3).
//!
//! Logits are cut to the first [`VOCAB_CUT`] ids; greedy decoding takes the argmax (first
//! index on ties); sampling draws from softmax(logits / T) with T ≥ 1e-6, restricted to the
//! nucleus when `top_p < 1`: tokens sorted by descending probability are kept while the mass
//! *before* them is ≤ `top_p` (so the most likely token is always kept), then renormalised.
//! The official code draws with `torch.multinomial`; here the draw comes from a seeded
//! ChaCha RNG, so sampled (not greedy) sequences are reproducible but not bit-equal to torch.

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};

use crate::error::{InferError, Result};
use crate::params::TextParams;

/// The official hard-coded vocabulary cut (`pred_logits[:, :151665]`).
pub const VOCAB_CUT: usize = 151_665;

/// The RNG used for seeded sampling and noise.
pub type SeededRng = rand_chacha::ChaCha8Rng;

/// A seeded RNG.
pub fn seeded_rng(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

/// The next token id from one logits row.
pub fn sample_token<R: Rng + ?Sized>(
    logits: &[f32],
    params: &TextParams,
    rng: &mut R,
) -> Result<u32> {
    let logits = &logits[..logits.len().min(VOCAB_CUT)];
    if logits.is_empty() {
        return Err(InferError::shape("logits", "at least one entry", &[0]));
    }
    if !params.do_sample {
        return Ok(argmax(logits));
    }
    let probs = softmax(logits, params.temperature.max(1e-6));
    let top_p = if params.top_p <= 0.0 {
        1e-8
    } else {
        params.top_p.min(1.0)
    };
    if top_p < 1.0 {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let mut before = 0f32;
        let mut kept = Vec::new();
        for &id in &order {
            if before > top_p {
                break;
            }
            kept.push((id, probs[id]));
            before += probs[id];
        }
        return Ok(draw(&kept, rng));
    }
    let all: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
    Ok(draw(&all, rng))
}

/// [`sample_token`] on a candle tensor of shape (V) or (1, V).
pub fn sample_token_tensor<R: Rng + ?Sized>(
    logits: &Tensor,
    params: &TextParams,
    rng: &mut R,
) -> Result<u32> {
    let row = match logits.dims() {
        [_] => logits.clone(),
        [1, _] => logits.squeeze(0)?,
        other => return Err(InferError::shape("logits", "(V) or (1, V)", other)),
    };
    let v = row.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    sample_token(&v, params, rng)
}

/// One of several scored continuations (e.g. the choices of a constrained answer, see
/// [`crate::choices`]), given their log-probabilities: the best when decoding greedily (the first
/// on ties), else drawn from softmax(log_probs / T) with the decode's temperature (no nucleus cut:
/// there are only a few).
pub fn sample_choice<R: Rng + ?Sized>(
    log_probs: &[f32],
    params: &TextParams,
    rng: &mut R,
) -> usize {
    if !params.do_sample || log_probs.len() < 2 {
        return argmax(log_probs) as usize;
    }
    let probs = softmax(log_probs, params.temperature.max(1e-6));
    let all: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
    draw(&all, rng) as usize
}

/// Index of the largest value, the first one on ties (NaN counts as largest, as in torch).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate().skip(1) {
        let b = v[best];
        if !b.is_nan() && (x.is_nan() || x > b) {
            best = i;
        }
    }
    best as u32
}

/// softmax(v / t) in f32.
fn softmax(v: &[f32], t: f32) -> Vec<f32> {
    let scaled: Vec<f32> = v.iter().map(|&x| x / t).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scaled.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Draws an id from (id, weight) pairs proportionally to the weights (renormalising them).
fn draw<R: Rng + ?Sized>(weights: &[(usize, f32)], rng: &mut R) -> u32 {
    let total: f64 = weights.iter().map(|&(_, w)| f64::from(w)).sum();
    let mut u = rng.random::<f64>() * total;
    for &(id, w) in weights {
        let w = f64::from(w);
        if u < w {
            return id as u32;
        }
        u -= w;
    }
    // Rounding left u just past the end: the last token with weight wins.
    weights
        .iter()
        .rev()
        .find(|&&(_, w)| w > 0.0)
        .map_or(weights[0].0, |&(id, _)| id) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn sampling(t: f32, top_p: f32) -> TextParams {
        TextParams {
            do_sample: true,
            temperature: t,
            top_p,
            ..TextParams::default()
        }
    }

    #[test]
    fn choices_are_taken_greedily_or_drawn() {
        let mut rng = seeded_rng(3);
        let lp = [-2.0f32, -0.1, -0.1, -5.0];
        assert_eq!(sample_choice(&lp, &TextParams::default(), &mut rng), 1);
        let p = sampling(1.0, 1.0);
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[sample_choice(&lp, &p, &mut rng)] += 1;
        }
        // exp(-0.1) / (exp(-2) + 2 exp(-0.1) + exp(-5)) = 0.457 each for 1 and 2.
        assert!(
            seen[1] > 800 && seen[2] > 800 && seen[0] > 50 && seen[3] < 40,
            "{seen:?}"
        );
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut rng = seeded_rng(0);
        let p = TextParams::default();
        assert_eq!(
            sample_token(&[0.1, 3.0, 3.0, -1.0], &p, &mut rng).unwrap(),
            1
        );
        let t = Tensor::new(&[[0.0f32, -2.0, 5.0]], &Device::Cpu).unwrap();
        assert_eq!(sample_token_tensor(&t, &p, &mut rng).unwrap(), 2);
        assert!(sample_token(&[], &p, &mut rng).is_err());
    }

    #[test]
    fn logits_beyond_the_cut_are_never_chosen() {
        let mut logits = vec![0f32; VOCAB_CUT + 10];
        logits[VOCAB_CUT + 3] = 100.0;
        logits[5] = 1.0;
        let mut rng = seeded_rng(1);
        assert_eq!(
            sample_token(&logits, &TextParams::default(), &mut rng).unwrap(),
            5
        );
    }

    #[test]
    fn nucleus_keeps_tokens_while_the_mass_before_them_fits() {
        // probs ≈ [0.5, 0.3, 0.2] (logits ln p, T = 1).
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut rng = seeded_rng(7);
        // top_p 0.4: mass before token 1 is 0.5 > 0.4 -> only token 0.
        for _ in 0..200 {
            assert_eq!(
                sample_token(&logits, &sampling(1.0, 0.4), &mut rng).unwrap(),
                0
            );
        }
        // top_p 0.6: tokens 0 and 1 (mass before token 2 is 0.8).
        let mut seen = [0usize; 3];
        for _ in 0..2000 {
            seen[sample_token(&logits, &sampling(1.0, 0.6), &mut rng).unwrap() as usize] += 1;
        }
        assert_eq!(seen[2], 0);
        assert!(seen[0] > 1000 && seen[1] > 600, "{seen:?}");
        // top_p <= 0 still keeps the most likely token.
        assert_eq!(
            sample_token(&logits, &sampling(1.0, 0.0), &mut rng).unwrap(),
            0
        );
    }

    #[test]
    fn sampling_is_seeded_and_temperature_sharpens() {
        let logits = [1.0f32, 1.5, 0.5, 1.2];
        let draw_seq = |seed| {
            let mut rng = seeded_rng(seed);
            (0..32)
                .map(|_| sample_token(&logits, &sampling(1.0, 1.0), &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw_seq(3), draw_seq(3));
        assert_ne!(draw_seq(3), draw_seq(4));
        // T -> 0 (clamped to 1e-6) is greedy.
        let mut rng = seeded_rng(5);
        for _ in 0..50 {
            assert_eq!(
                sample_token(&logits, &sampling(0.0, 1.0), &mut rng).unwrap(),
                1
            );
        }
    }
}
