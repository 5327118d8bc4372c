//! Speed and memory of the engine on a model folder: load time, prefill and decode throughput, and
//! seconds per image-generation step with all three CFG branches, and the autoencoder's encode and
//! decode of one picture (what stage 1 and every map cost besides the LLM). Used by `cooper bench`.
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use cooper_model::Context;
use serde::Serialize;

use crate::engine::Engine;
use crate::error::Result;
use crate::flow::initial_noise;

#[derive(Debug, Clone, Serialize)]
pub struct BenchSettings {
    /// Tokens fed in one prefill chunk.
    pub prefill_tokens: usize,
    /// Tokens decoded one by one after the prefill.
    pub decode_tokens: usize,
    /// Side of the square picture generated (pixels).
    pub image_side: usize,
    /// Flow steps timed (each runs the conditional, text-CFG and image-CFG passes).
    pub flow_steps: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub dtype: String,
    pub settings: BenchSettings,
    pub load_seconds: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    /// Latent tokens of the generated picture.
    pub image_tokens: usize,
    pub seconds_per_flow_step: f64,
    /// One autoencoder encode (moments) and decode of an `image_side` picture, mean of `flow_steps`.
    pub seconds_per_ae_encode: f64,
    pub seconds_per_ae_decode: f64,
    /// Peak resident memory of the process (VmHWM), bytes; None where /proc is not available.
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident set size of this process (Linux `/proc/self/status` VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Runs the benchmark on the folder `dir`. Token ids are drawn deterministically from the vocabulary;
/// the picture size is capped by the model's latent table.
pub fn run_bench(
    dir: &Path,
    device: &Device,
    dtype: DType,
    s: &BenchSettings,
) -> Result<BenchReport> {
    let t0 = Instant::now();
    let engine = Engine::load(dir, device, dtype)?;
    let load = t0.elapsed();
    let m = &engine.model;
    let vocab = m.config.llm.vocab_size as u32;
    let ids: Vec<u32> = (0..s.prefill_tokens as u32)
        .map(|i| 5 + (i * 7919) % (vocab - 5))
        .collect();

    let t = Instant::now();
    let ctx = m.update_text(&Context::new(), &ids)?;
    let prefill = t.elapsed();

    let t = Instant::now();
    let mut dctx = ctx.clone();
    let mut token = m.special.bos;
    for _ in 0..s.decode_tokens {
        let (logits, next) = m.decode_step(&dctx, token)?;
        dctx = next;
        token = logits.argmax(0)?.to_scalar::<u32>()?;
    }
    let decode = t.elapsed();

    // Three contexts as in a depth request: full, text-dropped (a shorter prefix), image-dropped.
    let ld = m.config.latent_downsample();
    let side = (s.image_side / ld).clamp(1, m.config.bagel.max_latent_size) * ld;
    let tokens = (side / ld) * (side / ld);
    let half = m.update_text(&Context::new(), &ids[..ids.len() / 2])?;
    let x = initial_noise(tokens, m.config.latent_token_dim(), 0, device)?.to_dtype(m.dtype())?;
    let repeats = s.flow_steps.max(1);
    let t = Instant::now();
    for i in 0..s.flow_steps {
        let tt = 1.0 - i as f32 / s.flow_steps as f32;
        for c in [&ctx, &half, &dctx] {
            m.flow_velocity(c, &x, tt, side, side)?;
        }
    }
    let flow = t.elapsed();

    let pixels = Tensor::rand(-1f32, 1f32, (1, 3, side, side), device)?.to_dtype(m.dtype())?;
    let t = Instant::now();
    for _ in 0..repeats {
        engine.ae.moments(&pixels)?;
    }
    let encode = t.elapsed();
    let t = Instant::now();
    for _ in 0..repeats {
        engine.decode_latents(&x, side, side)?;
    }
    let decode_picture = t.elapsed();

    Ok(BenchReport {
        model: dir.display().to_string(),
        dtype: format!("{dtype:?}"),
        settings: s.clone(),
        load_seconds: load.as_secs_f64(),
        prefill_tokens_per_second: per_second(ids.len() + 2, prefill),
        decode_tokens_per_second: per_second(s.decode_tokens, decode),
        image_tokens: tokens,
        seconds_per_flow_step: flow.as_secs_f64() / repeats as f64,
        seconds_per_ae_encode: encode.as_secs_f64() / repeats as f64,
        seconds_per_ae_decode: decode_picture.as_secs_f64() / repeats as f64,
        peak_rss_bytes: peak_rss_bytes(),
    })
}
