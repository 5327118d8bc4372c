//! The `ae` stage: a FLUX-architecture autoencoder trained on the pictures the unified model
//! will read and write (RGB, depth pseudo-RGB, segmentation maps).
//!
//! The official recipe freezes the pretrained FLUX AE (trained with perceptual and adversarial
//! losses we cannot reproduce without their networks); a model trained from scratch here needs
//! its own. We train the VAE objective: MSE reconstruction of random crops through the sampled
//! latent, plus `ae.kl_weight` × KL(q(z|x) ‖ N(0, I)). At the end the latent shift and scale
//! (FLUX's `shift_factor`, `scale_factor`) are measured on `ae.stats_images` whole pictures so
//! that the LLM sees latents of zero mean and unit variance, and written to `ae_config.json`.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarBuilder, VarMap};
use cooper_infer::transforms::{to_tensor, ResizeConfig};
use cooper_model::init::random_ae_weights;
use cooper_model::{assign_vars, AeConfig, AutoEncoder, ModelFolder};
use cooper_train::config::TrainConfig;
use cooper_train::losses::standard_normal;
use cooper_world::readers::{read_stage1_index, Stage1Target};
use image::RgbImage;
use rand::Rng;

use crate::data::{image_root_for, Order};
use crate::driver::{drive, finish, open_loop, Micro, RunOptions, StageReport};
use crate::error::{Result, StageError};
use crate::model::{export_model_folder, sorted_vars, ExportedWeights};
use crate::pictures::{depth_target, load_rgb, resizes, DepthEncoding};

/// A picture the autoencoder learns to reconstruct.
#[derive(Debug, Clone, PartialEq)]
pub enum AePicture {
    /// An RGB (or colour-coded segmentation) file.
    Rgb(PathBuf),
    /// A 16-bit depth PNG, as the pseudo-RGB target stage 1 generates.
    Depth(PathBuf, DepthEncoding),
}

/// Collects the pictures of `data.files`: stage-1 JSONL indexes contribute their RGB pictures
/// and targets, folders every PNG / JPEG / WebP in them (sorted).
pub fn collect_pictures(config: &TrainConfig) -> Result<Vec<AePicture>> {
    let data = &config.data;
    if data.files.is_empty() {
        return Err(StageError::Input(
            "no training pictures: set data.files (stage-1 JSONL files or picture folders)".into(),
        ));
    }
    let mut out = Vec::new();
    for file in &data.files {
        if file.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(file)
                .map_err(|e| StageError::io(file, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        ["png", "jpg", "jpeg", "webp"].contains(&e.to_ascii_lowercase().as_str())
                    })
                })
                .collect();
            found.sort();
            out.extend(found.into_iter().map(AePicture::Rgb));
            continue;
        }
        for entry in read_stage1_index(file, &image_root_for(data, file))? {
            out.push(AePicture::Rgb(entry.rgb.clone()));
            let encoding = DepthEncoding::for_row(data, &entry);
            match entry.target {
                Stage1Target::Segmentation(p) => out.push(AePicture::Rgb(p)),
                Stage1Target::Depth(p) => out.push(AePicture::Depth(p, encoding)),
            }
        }
    }
    out.dedup();
    if out.is_empty() {
        return Err(StageError::Input("data.files holds no pictures".into()));
    }
    Ok(out)
}

/// (3, H, W) pixels of a picture at the VAE resize, upscaled when needed so that both sides
/// are at least `min_side`.
fn load_picture(
    picture: &AePicture,
    resize: &ResizeConfig,
    min_side: u32,
    device: &Device,
) -> Result<Tensor> {
    let path = match picture {
        AePicture::Rgb(p) | AePicture::Depth(p, _) => p,
    };
    let (w, h) = crate::pictures::picture_size(path)?;
    let (mut tw, mut th) = resize.target_size(w, h)?;
    if tw.min(th) < min_side {
        let s = f64::from(min_side) / f64::from(tw.min(th));
        let snap =
            |v: u32| ((f64::from(v) * s / f64::from(resize.stride)).ceil() as u32) * resize.stride;
        (tw, th) = (snap(tw).max(min_side), snap(th).max(min_side));
    }
    match picture {
        AePicture::Rgb(p) => {
            let img: RgbImage = crate::pictures::resize_to(&load_rgb(p)?, (tw, th), false);
            Ok(to_tensor(&img, device)?)
        }
        AePicture::Depth(p, enc) => depth_target(p, *enc, (tw, th), false, device),
    }
}

fn random_crop<R: Rng + ?Sized>(px: &Tensor, side: usize, rng: &mut R) -> Result<Tensor> {
    let (_, h, w) = px.dims3()?;
    let y = rng.random_range(0..=h - side);
    let x = rng.random_range(0..=w - side);
    Ok(px.narrow(1, y, side)?.narrow(2, x, side)?)
}

/// The VAE loss of a batch (B, 3, S, S): (total, reconstruction MSE, KL per latent element).
pub fn ae_loss<R: Rng + ?Sized>(
    ae: &AutoEncoder,
    batch: &Tensor,
    kl_weight: f64,
    rng: &mut R,
) -> Result<(Tensor, f64, f64)> {
    let z = ae.config().z_channels;
    let m = ae.moments(batch)?;
    let mean = m.narrow(1, 0, z)?;
    // The clamp of the LDM Gaussian: keeps exp(logvar) finite early in training.
    let logvar = m.narrow(1, z, z)?.clamp(-30f32, 20f32)?;
    let std = (&logvar * 0.5)?.exp()?;
    let eps = standard_normal(rng, mean.dims(), mean.device())?.to_dtype(mean.dtype())?;
    let sample = (&mean + std.mul(&eps)?)?;
    let recon = ae.decoder.forward(&sample)?;
    let rec = (recon - batch)?.sqr()?.mean_all()?;
    let kl = (((mean.sqr()? + logvar.exp()?)? - 1.0)? - &logvar)?
        .mean_all()?
        .affine(0.5, 0.0)?;
    let loss = (&rec + (&kl * kl_weight)?)?;
    let f = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    Ok((loss, f(&rec)?, f(&kl)?))
}

/// Latent statistics of whole pictures: (shift, scale) with scale·(mean − shift) of zero mean
/// and unit variance over channels and positions.
pub fn latent_statistics(ae: &AutoEncoder, pictures: &[Tensor]) -> Result<(f64, f64)> {
    let z = ae.config().z_channels;
    let mut values: Vec<f32> = Vec::new();
    for px in pictures {
        let m = ae.moments(&px.unsqueeze(0)?)?.detach();
        values.extend(
            m.narrow(1, 0, z)?
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?,
        );
    }
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    if !(std.is_finite() && std > 1e-8) {
        return Err(StageError::Input(format!(
            "latent standard deviation {std} cannot define a scale factor"
        )));
    }
    Ok((mean, 1.0 / std))
}

fn scalar_loss_metrics(rec: f64, kl: f64) -> BTreeMap<String, f64> {
    BTreeMap::from([("rec_loss".to_string(), rec), ("kl".to_string(), kl)])
}

/// Trains the autoencoder of `model.model_path` (from `model.init_from`'s `ae.safetensors`
/// when given, else from a seeded random draw) and exports the folder with it.
pub fn train(config: &TrainConfig, opts: &RunOptions) -> Result<StageReport> {
    let device = &opts.device;
    let folder = ModelFolder::open(&config.model.model_path)?;
    let ae_config: AeConfig = folder.config.ae.clone();
    let varmap = VarMap::new();
    let ae = AutoEncoder::new(
        &ae_config,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
    )?;
    let (init, source): (HashMap<String, Tensor>, PathBuf) = match &config.model.init_from {
        Some(dir) => {
            let path = dir.join("ae.safetensors");
            let tensors = candle_core::safetensors::load(&path, device)
                .map_err(|e| StageError::Input(format!("{}: {e}", path.display())))?;
            (tensors, path)
        }
        None => (
            random_ae_weights(&ae_config, config.run.seed)?,
            PathBuf::from("<random autoencoder initialisation>"),
        ),
    };
    assign_vars(&varmap, DType::F32, &source, |name| {
        init.get(name)
            .cloned()
            .ok_or_else(|| "missing from the initial weights".to_string())
    })?;
    let params = sorted_vars(&varmap)?;

    let pictures = collect_pictures(config)?;
    let (resize, _) = resizes(&folder, config.data.max_image_size);
    let ld = ae_config.downsample() as u32;
    let crop = (config.ae.crop_size / ld).max(1) * ld;
    let mut run = open_loop(config, params.clone(), opts)?;
    let mut order = Order::new(pictures.len(), config.run.seed);
    let batch_size = config.ae.batch_size;
    let stats = drive(&mut run, opts, |run| {
        let mut crops = Vec::with_capacity(batch_size);
        for _ in 0..batch_size {
            let mut cursor = run.data_cursor().clone();
            let idx = order.at(&cursor);
            order.advance(&mut cursor);
            *run.data_cursor_mut() = cursor;
            let px = load_picture(&pictures[idx], &resize, crop, device)?;
            crops.push(random_crop(&px, crop as usize, run.rng())?);
        }
        let batch = Tensor::stack(&crops, 0)?;
        let (loss, rec, kl) = ae_loss(&ae, &batch, config.ae.kl_weight, run.rng())?;
        Ok(Micro {
            loss,
            metrics: scalar_loss_metrics(rec, kl),
            tokens: batch_size * (crop as usize).pow(2) / 256,
        })
    })?;

    // Final weights: the EMA when kept.
    let mut weights: HashMap<String, Tensor> = params
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    if let Some(ema) = run.ema() {
        weights.extend(ema.tensors());
    }
    let final_ae = AutoEncoder::new(
        &ae_config,
        VarBuilder::from_tensors(weights.clone(), DType::F32, device),
    )?;
    let step = (pictures.len() / config.ae.stats_images.max(1)).max(1);
    let sample: Vec<Tensor> = pictures
        .iter()
        .step_by(step)
        .take(config.ae.stats_images.max(1))
        .map(|p| load_picture(p, &resize, ld, device))
        .collect::<Result<_>>()?;
    let (shift, scale) = latent_statistics(&final_ae, &sample)?;
    let mut new_config = ae_config.clone();
    new_config.shift_factor = shift;
    new_config.scale_factor = scale;
    let model_dir = export_model_folder(
        &folder,
        &config.run.out_dir.join("model"),
        ExportedWeights {
            model: None,
            ema: None,
            ae: Some((&new_config, &weights)),
            reasoning: cooper_infer::ReasoningConfig::read(&folder.dir)?,
        },
        opts.export_dtype,
    )?;
    finish(config, &run, &stats, model_dir)
}
