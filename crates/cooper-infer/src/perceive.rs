//! Single-shot perception: a depth or segmentation map of a picture, as the official
//! `depth_map_generation` / `image_generation_edit` compute it.
//!
//! Contexts: gen = picture (VAE + ViT) then the tool prompt; text-CFG = the picture alone;
//! image-CFG = the tool prompt alone. Defaults: 50 steps, cfg 3.0 / 1.5, interval [0.4, 1],
//! shift 3, renorm `global`.
use candle_core::Tensor;
use image::RgbImage;

use crate::backend::Backend;
use crate::error::Result;
use crate::params::ImageParams;
use crate::prompts::{DEPTH_PROMPT, SEGMENTATION_PROMPT};
use crate::reasoning::tags::Tool;
use crate::transforms::ResizeConfig;

/// The official settings of the single-shot perception entry points.
pub fn perception_params(seed: u64) -> ImageParams {
    ImageParams {
        num_timesteps: 50,
        cfg_text_scale: 3.0,
        cfg_img_scale: 1.5,
        cfg_interval: [0.4, 1.0],
        timestep_shift: 3.0,
        seed,
        ..ImageParams::default()
    }
}

/// Generates the map of `tool` for `image` (original size; resized with `vae_resize` here).
/// Returns the raw autoencoder output (values around [-1, 1]) at the resized size.
pub fn perceive<B: Backend>(
    backend: &B,
    image: &RgbImage,
    tool: Tool,
    vae_resize: &ResizeConfig,
    params: &ImageParams,
) -> Result<Tensor> {
    let input = vae_resize.resize(image)?;
    let prompt = match tool {
        Tool::Depth => DEPTH_PROMPT,
        Tool::Segmentation => SEGMENTATION_PROMPT,
    };
    let mut with_image = backend.empty_context();
    backend.append_image(&mut with_image, &input, true, true)?;
    let mut gen = with_image.clone();
    backend.append_text(&mut gen, prompt)?;
    let mut prompt_only = backend.empty_context();
    backend.append_text(&mut prompt_only, prompt)?;
    backend.generate_image(
        &gen,
        &with_image,
        &prompt_only,
        input.height(),
        input.width(),
        params,
    )
}
