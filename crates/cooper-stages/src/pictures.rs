//! Pictures as the stages feed them: loading with clear errors, the VAE resize (capped for
//! small models), depth maps as pseudo-RGB targets (reference §4.1), horizontal flips, and the
//! sampled autoencoder encode of the official training code.
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use cooper_infer::image_io::{decode_image_bytes, load_image, LoadLimits};
use cooper_infer::transforms::{patchify, to_tensor, ResizeConfig};
use cooper_model::packing::pack_latents;
use cooper_model::{AutoEncoder, ModelFolder};
use cooper_world::readers::Stage1Entry;
use image::{imageops::FilterType, ImageBuffer, Luma, RgbImage};
use rand::Rng;

use crate::error::{Result, StageError};

/// The VAE and ViT resize rules of a model folder (the official rules capped by its position
/// tables). With `max_image_size`, both rules are further capped at that side (rounded down to
/// their strides), so small models train on small pictures: the VAE rule then gives pictures
/// of at most that side, and the ViT rule no longer upscales them to 224 px.
pub fn resizes(folder: &ModelFolder, max_image_size: Option<u32>) -> (ResizeConfig, ResizeConfig) {
    let (mut vae, mut vit) = cooper_infer::engine::default_resizes(folder);
    if let Some(cap) = max_image_size {
        for rule in [&mut vae, &mut vit] {
            let cap = (cap / rule.stride).max(1) * rule.stride;
            rule.max_size = rule.max_size.min(cap);
            rule.min_size = rule.min_size.min(rule.max_size);
        }
    }
    (vae, vit)
}

/// Decodes a 16-bit depth PNG (any format the `image` crate reads).
fn decode_depth_file(path: &Path) -> Result<image::DynamicImage> {
    image::ImageReader::open(path)
        .map_err(|e| StageError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| StageError::io(path, e))?
        .decode()
        .map_err(|e| StageError::Input(format!("{}: cannot decode depth PNG: {e}", path.display())))
}

/// Reads an RGB picture with the inference loader (format from the content, alpha composited on
/// white, size limits checked).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    Ok(load_image(path, &LoadLimits::default())?)
}

/// [`load_rgb`] on encoded bytes; `what` names them in errors.
pub fn decode_rgb(bytes: &[u8], what: &str) -> Result<RgbImage> {
    Ok(decode_image_bytes(
        bytes,
        Path::new(what),
        &LoadLimits::default(),
    )?)
}

/// (width, height) of a picture file, read from its header only.
pub fn picture_size(path: &Path) -> Result<(u32, u32)> {
    image::image_dimensions(path).map_err(|e| {
        StageError::Input(format!("{}: cannot read picture size: {e}", path.display()))
    })
}

/// (width, height) of an encoded picture, from its header only.
pub fn encoded_size(bytes: &[u8], what: &str) -> Result<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| StageError::Input(format!("{what}: {e}")))?
        .into_dimensions()
        .map_err(|e| StageError::Input(format!("{what}: cannot read picture size: {e}")))
}

/// How a depth PNG becomes a pseudo-RGB target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DepthEncoding {
    /// PNG value per metre.
    pub scale: f32,
    /// Depth mapped to −1 (near).
    pub min_depth: f32,
    /// Depth mapped to +1 (far).
    pub max_depth: f32,
}

impl DepthEncoding {
    /// The encoding of a stage-1 row: its own scale and range where it records them, the
    /// `data.` overrides where set, else millimetres over this project's world range.
    pub fn for_row(data: &cooper_train::config::DataConfig, entry: &Stage1Entry) -> Self {
        let (lo, hi) = entry.depth_range.unwrap_or((1e-3, 50.0));
        Self {
            scale: data.depth_scale.or(entry.depth_scale).unwrap_or(1000.0),
            min_depth: data.min_depth.unwrap_or(lo),
            max_depth: data.max_depth.unwrap_or(hi),
        }
    }
}

/// Reads a 16-bit depth PNG and turns it into the official pseudo-RGB target at `size`
/// (width, height): resize (bicubic) in metres, clamp to [min, max], map linearly to
/// [−1, 1] (near −1), replicate to three channels; returns (3, H, W) f32.
///
/// Pixels without a measurement (value 0: sky, beyond the far clip) are set to `max_depth`
/// before resizing, i.e. "far". The official transform clamps them to `min_depth` ("nearest"),
/// which teaches the model that the sky touches the camera; this is a deliberate deviation.
pub fn depth_target(
    path: &Path,
    encoding: DepthEncoding,
    size: (u32, u32),
    flip: bool,
    device: &Device,
) -> Result<Tensor> {
    let raw = decode_depth_file(path)?.into_luma16();
    let (w, h) = raw.dimensions();
    let metres: Vec<f32> = raw
        .pixels()
        .map(|p| {
            if p.0[0] == 0 {
                encoding.max_depth
            } else {
                f32::from(p.0[0]) / encoding.scale
            }
        })
        .collect();
    let map: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(w, h, metres)
        .ok_or_else(|| StageError::Input(format!("{}: bad depth buffer", path.display())))?;
    let mut map = if (w, h) == size {
        map
    } else {
        image::imageops::resize(&map, size.0, size.1, FilterType::CatmullRom)
    };
    if flip {
        image::imageops::flip_horizontal_in_place(&mut map);
    }
    let (lo, hi) = (encoding.min_depth, encoding.max_depth);
    let plane: Vec<f32> = map
        .pixels()
        .map(|p| {
            let d = p.0[0].clamp(lo, hi);
            ((d - lo) / (hi - lo) - 0.5) / 0.5
        })
        .collect();
    let (tw, th) = (size.0 as usize, size.1 as usize);
    let one = Tensor::from_vec(plane, (1, th, tw), device)?;
    Ok(Tensor::cat(&[&one, &one, &one], 0)?)
}

/// Resizes an RGB picture to exactly `size` (bicubic), optionally flipped.
pub fn resize_to(img: &RgbImage, size: (u32, u32), flip: bool) -> RgbImage {
    let mut out = if img.dimensions() == size {
        img.clone()
    } else {
        image::imageops::resize(img, size.0, size.1, FilterType::CatmullRom)
    };
    if flip {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    out
}

/// ViT patches of a VAE-resized picture after the ViT resize: (N, 3p²), height, width.
pub fn vit_patches(
    img: &RgbImage,
    vit_resize: &ResizeConfig,
    patch: usize,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, usize, usize)> {
    patches_of(&vit_resize.resize(img)?, patch, dtype, device)
}

/// ViT patches of a picture already at the ViT input size: (N, 3p²), height, width.
pub fn patches_of(
    resized: &RgbImage,
    patch: usize,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, usize, usize)> {
    let px = to_tensor(resized, device)?;
    let (_, h, w) = px.dims3()?;
    Ok((patchify(&px, patch)?.to_dtype(dtype)?, h, w))
}

/// Gaussian moments (1, 2z, h, w) of a (3, H, W) picture under the frozen autoencoder.
pub fn moments(ae: &AutoEncoder, pixels: &Tensor, dtype: DType) -> Result<Tensor> {
    Ok(ae.moments(&pixels.unsqueeze(0)?.to_dtype(dtype)?)?.detach())
}

/// The official sampled encode from cached moments: z = mean + exp(logvar/2)·ε with ε from
/// `rng` (or z = mean when `rng` is `None`), then scale·(z − shift), packed to (N, p²z) f32.
pub fn sample_latent_tokens<R: Rng + ?Sized>(
    ae: &AutoEncoder,
    moments: &Tensor,
    latent_patch: usize,
    rng: Option<&mut R>,
) -> Result<Tensor> {
    let cfg = ae.config();
    let z = cfg.z_channels;
    let mean = moments.narrow(1, 0, z)?.to_dtype(DType::F32)?;
    let sample = match rng {
        Some(rng) => {
            let std = (moments.narrow(1, z, z)?.to_dtype(DType::F32)? * 0.5)?.exp()?;
            let eps = cooper_train::losses::standard_normal(rng, mean.dims(), mean.device())?;
            (mean + std.mul(&eps)?)?
        }
        None => mean,
    };
    let scaled = ((sample - cfg.shift_factor)? * cfg.scale_factor)?;
    Ok(pack_latents(&scaled, latent_patch)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_maps_to_minus_one_near_and_plus_one_far() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.png");
        // 1 m, 3 m, 5 m and an invalid pixel, in millimetres.
        let img: ImageBuffer<Luma<u16>, Vec<u16>> =
            ImageBuffer::from_raw(4, 1, vec![1000, 3000, 5000, 0]).unwrap();
        img.save(&path).unwrap();
        let enc = DepthEncoding {
            scale: 1000.0,
            min_depth: 1.0,
            max_depth: 5.0,
        };
        let t = depth_target(&path, enc, (4, 1), false, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 1, 4]);
        let v: Vec<f32> = t.get(0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![-1.0, 0.0, 1.0, 1.0]);
        let flipped = depth_target(&path, enc, (4, 1), true, &Device::Cpu).unwrap();
        let f: Vec<f32> = flipped
            .get(2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(f, vec![1.0, 1.0, 0.0, -1.0]);
    }
}
