//! The packed-sequence stages: `amg` (stage 1, reference §4.1) and `sft` (stage 2a, §4.2).
//!
//! Both pack samples into one sequence per micro-batch with `SequenceBuilder` and run
//! `Bagel::forward_train`:
//! - a stage-1 sample is picture (clean VAE + ViT), prompt (no loss), target (noised VAE, flow
//!   loss); t = σ(n), n ~ N(0, 1), shifted by `loss.timestep_shift`; ε ~ N(0, I); the model
//!   regresses ε − x₀;
//! - a chain is the system prompt (no loss), then its turns (CE on `need_loss` turns and their
//!   `<|im_end|>`) and pictures (clean).
//!
//! The loss is `ce_weight·CE + mse_weight·MSE` over the terms present. Pictures are encoded with
//! the official sampled AE encode; the frozen autoencoder's moments are cached by the picture's
//! content, so each distinct picture costs one encoder pass per run, however many rows hold it (a
//! scene's picture reaches SFT in its chains, its description, its listing and its stage-1 rows:
//! keyed by row, the encodes were most of an SFT step).
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use cooper_infer::transforms::to_tensor;
use cooper_model::SequenceBuilder;
use cooper_train::config::{Stage, TrainConfig};
use cooper_train::losses::{
    combine_losses, flow_matching_mse, masked_cross_entropy, standard_normal,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::data::{
    next_pack, ChainPart, GenerationTarget, Order, Sample, SampleReader, TokenGeometry,
};
use crate::driver::{drive, finish, open_loop, Micro, RunOptions, StageReport};
use crate::error::{Result, StageError};
use crate::model::{export_model_folder, ExportedWeights, TrainableModel};
use crate::pictures::{
    decode_rgb, depth_target, load_rgb, moments, resize_to, resizes, sample_latent_tokens,
    vit_patches,
};

/// Builds packed batches and their losses for one run.
pub struct PackedTrainer<'a> {
    pub model: &'a TrainableModel,
    pub config: &'a TrainConfig,
    pub samples: Vec<Sample>,
    pub tokens: Vec<usize>,
    vit_resize: cooper_infer::transforms::ResizeConfig,
    /// AE moments by [`content_key`] of the encoded pixels; interior mutability lets `loss`
    /// borrow the samples while filling it.
    moments: RefCell<HashMap<u64, Tensor>>,
}

impl<'a> PackedTrainer<'a> {
    /// Reads `config.data.files` for `model`.
    pub fn new(model: &'a TrainableModel, config: &'a TrainConfig) -> Result<Self> {
        let (vae_resize, vit_resize) = resizes(&model.folder, config.data.max_image_size);
        let encode = |s: &str| model.encode(s);
        let samples = SampleReader {
            data: &config.data,
            sft: &config.sft,
            vae_resize,
            encode: &encode,
        }
        .read_all()?;
        let generation = samples
            .iter()
            .filter(|s| matches!(s, Sample::Generation { .. }))
            .count();
        match config.stage {
            Stage::Amg if generation == 0 => return Err(StageError::Input(
                "amg needs stage-1 rows (rgb_image with depth_image or seg_image) in data.files"
                    .into(),
            )),
            Stage::Sft if generation > 0 && !config.sft.rehearse_generation => {
                return Err(StageError::Input(format!(
                    "sft trains on chains only, but data.files holds {generation} stage-1 rows \
                     (train those with amg, or set sft.rehearse_generation = true to keep \
                     training them beside the chains)"
                )))
            }
            Stage::Sft if generation == 0 && config.sft.rehearse_generation => {
                return Err(StageError::Input(
                    "sft.rehearse_generation is set, but data.files holds no stage-1 rows \
                     (rgb_image with depth_image or seg_image) to rehearse"
                        .into(),
                ))
            }
            _ => {}
        }
        let geometry = TokenGeometry::new(&model.model.config, vit_resize);
        let tokens = samples
            .iter()
            .map(|s| geometry.tokens(s))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            model,
            config,
            samples,
            tokens,
            vit_resize,
            moments: RefCell::new(HashMap::new()),
        })
    }

    /// Distinct pictures encoded so far (the moments cache's size).
    pub fn encoded_pictures(&self) -> usize {
        self.moments.borrow().len()
    }

    fn device(&self) -> &Device {
        self.model.model.device()
    }

    /// AE moments of `pixels` (3, H, W), from the cache when the same pixels were encoded before.
    fn moments_of(&self, pixels: &Tensor) -> Result<Tensor> {
        let key = content_key(pixels)?;
        if let Some(m) = self.moments.borrow().get(&key) {
            return Ok(m.clone());
        }
        let m = moments(&self.model.ae, pixels, self.model.model.dtype())?;
        self.moments.borrow_mut().insert(key, m.clone());
        Ok(m)
    }

    fn clean_vae(
        &self,
        builder: &mut SequenceBuilder,
        noise_rows: &mut Vec<Tensor>,
        m: &Tensor,
        size: (u32, u32),
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        let p = self.model.model.config.bagel.latent_patch_size;
        let sampled = self.config.data.sample_latents.then_some(rng);
        let x0 = sample_latent_tokens(&self.model.ae, m, p, sampled)?;
        noise_rows.push(x0.zeros_like()?);
        builder.vae_image(x0, size.1 as usize, size.0 as usize, None)?;
        Ok(())
    }

    fn vit(&self, builder: &mut SequenceBuilder, img: &image::RgbImage) -> Result<()> {
        let m = &self.model.model;
        let (patches, h, w) = vit_patches(
            img,
            &self.vit_resize,
            m.config.vit.patch_size,
            m.dtype(),
            m.device(),
        )?;
        builder.vit_image(patches, h, w)?;
        Ok(())
    }

    /// The loss of the samples `pack`, with noise, timesteps, flips and AE samples from `rng`.
    pub fn loss(
        &self,
        pack: &[usize],
        rng: &mut ChaCha8Rng,
    ) -> Result<(Tensor, BTreeMap<String, f64>)> {
        let model = self.model;
        let mut builder = SequenceBuilder::new(&model.model.config, model.model.special);
        let mut noise_rows: Vec<Tensor> = Vec::new();
        let mut targets: Vec<Tensor> = Vec::new();
        let p = model.model.config.bagel.latent_patch_size;
        let flip_prob = self.config.data.flip_prob;
        for &i in pack {
            builder.next_sample();
            match &self.samples[i] {
                Sample::Generation {
                    rgb,
                    target,
                    size,
                    prompt_ids,
                } => {
                    let size = *size;
                    let flip = flip_prob > 0.0 && rng.random::<f64>() < flip_prob;
                    let picture = resize_to(&load_rgb(rgb)?, size, flip);
                    let dev = self.device();
                    let m = self.moments_of(&to_tensor(&picture, dev)?)?;
                    self.clean_vae(&mut builder, &mut noise_rows, &m, size, rng)?;
                    self.vit(&mut builder, &picture)?;
                    builder.text(prompt_ids, false);
                    let target_pixels = match target {
                        GenerationTarget::Depth { path, encoding } => {
                            depth_target(path, *encoding, size, flip, dev)?
                        }
                        GenerationTarget::Segmentation { path } => {
                            to_tensor(&resize_to(&load_rgb(path)?, size, flip), dev)?
                        }
                    };
                    let tm = self.moments_of(&target_pixels)?;
                    let sampled = self.config.data.sample_latents.then_some(&mut *rng);
                    let x0 = sample_latent_tokens(&model.ae, &tm, p, sampled)?;
                    let logit: f32 = rng.sample(rand_distr::StandardNormal);
                    let eps = standard_normal(rng, x0.dims(), x0.device())?;
                    targets.push((&eps - &x0)?);
                    noise_rows.push(eps);
                    builder.vae_image(x0, size.1 as usize, size.0 as usize, Some(logit))?;
                }
                Sample::Chain { parts } => {
                    for (k, part) in parts.iter().enumerate() {
                        match part {
                            ChainPart::Text { ids, loss, given } => {
                                builder.text_with_given(ids, loss.then(|| given.clone()))
                            }
                            ChainPart::Image {
                                bytes,
                                size,
                                vae,
                                vit,
                            } => {
                                let what = format!("chain {i} picture {k}");
                                let picture = resize_to(&decode_rgb(bytes, &what)?, *size, false);
                                if *vae {
                                    let m =
                                        self.moments_of(&to_tensor(&picture, self.device())?)?;
                                    self.clean_vae(&mut builder, &mut noise_rows, &m, *size, rng)?;
                                }
                                if *vit {
                                    self.vit(&mut builder, &picture)?;
                                }
                            }
                        }
                    }
                }
            }
        }
        let sequence_tokens = builder.len();
        let noise = if noise_rows.is_empty() {
            None
        } else {
            Some(Tensor::cat(&noise_rows, 0)?)
        };
        let batch = builder.finish(noise, self.device())?;
        let out = model.model.forward_train(&batch)?;
        let mut metrics = BTreeMap::from([("num_tokens".to_string(), sequence_tokens as f64)]);
        let ce = match (&out.ce_logits, &batch.packed_label_ids) {
            (Some(logits), Some(labels)) => {
                let ce = masked_cross_entropy(logits, labels, None, None)?;
                metrics.insert("ce".into(), scalar(&ce)?);
                metrics.insert("ce_tokens".into(), labels.dim(0)? as f64);
                Some(ce)
            }
            _ => None,
        };
        let mse = match &out.velocity_pred {
            Some(pred) => {
                let target = Tensor::cat(&targets, 0)?;
                let mse = flow_matching_mse(pred, &target, None)?;
                metrics.insert("mse".into(), scalar(&mse)?);
                metrics.insert("mse_tokens".into(), target.dim(0)? as f64);
                Some(mse)
            }
            None => None,
        };
        let loss = combine_losses(ce.as_ref(), mse.as_ref(), &self.config.loss)?;
        Ok((loss, metrics))
    }
}

/// A 64-bit hash of a tensor's shape and values: equal pixels, equal key. (std's default hasher,
/// deterministic within a run, which is all the cache needs; ~10⁴ pictures make a collision
/// improbable.)
fn content_key(pixels: &Tensor) -> Result<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pixels.dims().hash(&mut h);
    for v in pixels
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?
    {
        h.write_u32(v.to_bits());
    }
    Ok(h.finish())
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Trains `amg` or `sft` as `config` says and exports `<out_dir>/model`.
pub fn train(config: &TrainConfig, opts: &RunOptions) -> Result<StageReport> {
    let mut model = TrainableModel::load(&config.model, opts.dtype, &opts.device)?;
    // The training shift is the run's setting, not the folder's inference default.
    model.model.config.bagel.timestep_shift = config.loss.timestep_shift;
    let model = model;
    let params = model.trainable_params(&config.freeze)?;
    let trainer = PackedTrainer::new(&model, config)?;
    let mut run = open_loop(config, params, opts)?;
    let mut order = Order::new(trainer.samples.len(), config.run.seed);
    let stats = drive(&mut run, opts, |run| {
        let mut cursor = run.data_cursor().clone();
        let (pack, tokens) = next_pack(&mut order, &mut cursor, &trainer.tokens, &config.data)?;
        *run.data_cursor_mut() = cursor;
        let (loss, metrics) = trainer.loss(&pack, run.rng())?;
        Ok(Micro {
            loss,
            metrics,
            tokens,
        })
    })?;
    let model_dir = export_run(&model, &run, config, opts)?;
    finish(config, &run, &stats, model_dir)
}

/// Exports the run's weights as `<out_dir>/model`: `model.safetensors` (last step) and, when
/// EMA is kept, `ema.safetensors` (the average, which loaders prefer).
pub fn export_run(
    model: &TrainableModel,
    run: &cooper_train::run::TrainLoop,
    config: &TrainConfig,
    opts: &RunOptions,
) -> Result<std::path::PathBuf> {
    let current = model.weights_with(&HashMap::new())?;
    let ema = run
        .ema()
        .map(|e| model.weights_with(&e.tensors()))
        .transpose()?;
    let reasoning = crate::model::chosen_reasoning(config).unwrap_or(model.reasoning);
    export_model_folder(
        &model.folder,
        &config.run.out_dir.join("model"),
        ExportedWeights {
            model: Some(&current),
            ema: ema.as_ref(),
            ae: None,
            reasoning,
        },
        opts.export_dtype,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_keys_follow_the_pixels_and_the_shape() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 12.0, &dev)?.reshape((3, 2, 2))?;
        let same = Tensor::arange(0f32, 12.0, &dev)?.reshape((3, 2, 2))?;
        let reshaped = a.reshape((3, 1, 4))?;
        let mut v = a.flatten_all()?.to_vec1::<f32>()?;
        v[7] += 1e-3;
        let nudged = Tensor::from_vec(v, (3, 2, 2), &dev)?;
        assert_eq!(content_key(&a)?, content_key(&same)?);
        assert_ne!(content_key(&a)?, content_key(&reshaped)?);
        assert_ne!(content_key(&a)?, content_key(&nudged)?);
        Ok(())
    }
}
