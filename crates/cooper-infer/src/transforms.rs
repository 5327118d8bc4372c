//! Picture preprocessing as the official transforms do it (reference §3.2) and the token
//! layouts the model reads: the `MaxLongEdgeMinShortEdgeResize` rule, to-tensor
//! normalisation, ViT patchify with flattened position ids (latent packing lives in `cooper_model::packing`).

use candle_core::{Device, Tensor};
use image::{imageops::FilterType, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{InferError, Result};

/// The official `max_pixels` default, 14·14·9·1024.
pub const DEFAULT_MAX_PIXELS: u64 = 14 * 14 * 9 * 1024;

/// Size rule of `MaxLongEdgeMinShortEdgeResize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeConfig {
    /// Longest side bound.
    pub max_size: u32,
    /// Shortest side target.
    pub min_size: u32,
    /// Both sides become multiples of this.
    pub stride: u32,
    /// Pixel budget.
    pub max_pixels: u64,
}

impl ResizeConfig {
    /// The VAE side: (1024, 512, 16).
    pub const VAE: Self = Self {
        max_size: 1024,
        min_size: 512,
        stride: 16,
        max_pixels: DEFAULT_MAX_PIXELS,
    };
    /// The ViT side: (518, 224, 14).
    pub const VIT: Self = Self {
        max_size: 518,
        min_size: 224,
        stride: 14,
        max_pixels: DEFAULT_MAX_PIXELS,
    };

    /// Checks that every bound is positive.
    pub fn validate(&self, field: &'static str) -> Result<()> {
        if self.max_size == 0 || self.min_size == 0 || self.stride == 0 || self.max_pixels == 0 {
            return Err(InferError::setting(
                field,
                format!("sizes, stride and max_pixels must be positive, got {self:?}"),
            ));
        }
        Ok(())
    }

    fn snap(&self, v: f64) -> u32 {
        let s = f64::from(self.stride);
        let snapped = ((v / s).round_ties_even() * s) as u32;
        snapped.max(self.stride)
    }

    fn apply(&self, width: u32, height: u32, scale: f64) -> (u32, u32) {
        // Python's round() rounds half to even; so does `round_ties_even`.
        let w = (f64::from(width) * scale).round_ties_even();
        let h = (f64::from(height) * scale).round_ties_even();
        (self.snap(w), self.snap(h))
    }

    /// The (width, height) the rule gives a `width x height` picture:
    /// s = max(min(max/long, 1), min/short); each side round(side·s) snapped to
    /// max(stride, round(x/stride)·stride); if the area exceeds `max_pixels`, both sides are
    /// rescaled by the area ratio (not its square root, as the official code does); if the
    /// long side still exceeds `max_size`, rescale it to `max_size`.
    pub fn target_size(&self, width: u32, height: u32) -> Result<(u32, u32)> {
        self.validate("resize")?;
        if width == 0 || height == 0 {
            return Err(InferError::setting(
                "resize",
                format!("cannot resize an empty {width}x{height} picture"),
            ));
        }
        let long = f64::from(width.max(height));
        let short = f64::from(width.min(height));
        let scale = (f64::from(self.max_size) / long)
            .min(1.0)
            .max(f64::from(self.min_size) / short);
        let (mut w, mut h) = self.apply(width, height, scale);
        let area = u64::from(w) * u64::from(h);
        if area > self.max_pixels {
            let scale = self.max_pixels as f64 / area as f64;
            (w, h) = self.apply(w, h, scale);
        }
        if w.max(h) > self.max_size {
            let scale = f64::from(self.max_size) / f64::from(w.max(h));
            (w, h) = self.apply(w, h, scale);
        }
        Ok((w, h))
    }

    /// Resizes a picture to [`Self::target_size`], bicubic (Catmull-Rom). The official code
    /// uses PIL's antialiased bicubic, which is not bit-reproducible outside PIL: results
    /// agree in size exactly and in values only approximately. A picture already at the
    /// target size is returned unchanged, as PIL does.
    pub fn resize(&self, img: &RgbImage) -> Result<RgbImage> {
        let (w, h) = self.target_size(img.width(), img.height())?;
        if (w, h) == img.dimensions() {
            return Ok(img.clone());
        }
        Ok(image::imageops::resize(img, w, h, FilterType::CatmullRom))
    }
}

/// ToTensor then Normalize(0.5, 0.5): (u8/255 − 0.5)/0.5 in f32, CHW, values in [−1, 1].
pub fn to_tensor(img: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = w * h;
    let mut data = vec![0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            data[c * plane + i] = (f32::from(px.0[c]) / 255.0 - 0.5) / 0.5;
        }
    }
    Ok(Tensor::from_vec(data, (3, h, w), device)?)
}

/// Cuts a (C, H, W) picture into p×p patches: (N, p·p·C) rows, patches row-major, each row
/// flattened in (py, px, channel) order (the official `patchify`).
pub fn patchify(pixels: &Tensor, patch: usize) -> Result<Tensor> {
    let (c, h, w) = pixels
        .dims3()
        .map_err(|_| InferError::shape("pixels", "(C, H, W)", pixels.dims()))?;
    if patch == 0 || h % patch != 0 || w % patch != 0 {
        return Err(InferError::shape(
            "pixels",
            format!("H and W divisible by the patch size {patch}"),
            pixels.dims(),
        ));
    }
    let (gh, gw) = (h / patch, w / patch);
    Ok(pixels
        .reshape((c, gh, patch, gw, patch))?
        .permute((1, 3, 2, 4, 0))?
        .contiguous()?
        .reshape((gh * gw, patch * patch * c))?)
}

/// Flattened position ids of an `rows x cols` patch grid: row·`max_per_side` + col,
/// row-major (the official `get_flattened_position_ids_extrapolate`), as an I64 tensor.
pub fn flattened_position_ids(
    rows: usize,
    cols: usize,
    max_per_side: usize,
    device: &Device,
) -> Result<Tensor> {
    if rows > max_per_side || cols > max_per_side {
        return Err(InferError::setting(
            "position ids",
            format!("a {rows}x{cols} grid exceeds {max_per_side} patches per side"),
        ));
    }
    let ids: Vec<i64> = (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r * max_per_side + c) as i64))
        .collect();
    Ok(Tensor::from_vec(ids, rows * cols, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_rule_matches_hand_computed_cases() {
        let vae = ResizeConfig::VAE;
        // Identity-sized pictures stay.
        assert_eq!(vae.target_size(512, 512).unwrap(), (512, 512));
        // Upscale the short side to 512: 640x480 -> s = 512/480.
        assert_eq!(vae.target_size(640, 480).unwrap(), (688, 512));
        // A long panorama: short side forced up to 512, long side capped at 1024 afterwards.
        assert_eq!(vae.target_size(4000, 1000).unwrap(), (1024, 256));
        // Tiny pictures still get at least one stride.
        let vit = ResizeConfig::VIT;
        assert_eq!(vit.target_size(224, 224).unwrap(), (224, 224));
        // s = 518/1920: 518 x round(291.375)=291 -> snapped to 294.
        assert_eq!(vit.target_size(1920, 1080).unwrap(), (518, 294));
        // The fixture's sizes.
        let tiny_vae = ResizeConfig {
            max_size: 64,
            min_size: 64,
            stride: 8,
            max_pixels: DEFAULT_MAX_PIXELS,
        };
        assert_eq!(tiny_vae.target_size(64, 64).unwrap(), (64, 64));
        let tiny_vit = ResizeConfig {
            max_size: 56,
            min_size: 56,
            stride: 14,
            max_pixels: DEFAULT_MAX_PIXELS,
        };
        assert_eq!(tiny_vit.target_size(64, 64).unwrap(), (56, 56));
        assert!(vae.target_size(0, 10).is_err());
    }

    #[test]
    fn area_budget_uses_the_area_ratio() {
        let c = ResizeConfig {
            max_size: 10_000,
            min_size: 10,
            stride: 10,
            max_pixels: 10_000,
        };
        // 200x200 = 40000 > 10000: scale = 0.25 on each side -> 50x50.
        assert_eq!(c.target_size(200, 200).unwrap(), (50, 50));
    }

    #[test]
    fn resize_produces_target_size() {
        let img = RgbImage::from_fn(30, 20, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let c = ResizeConfig {
            max_size: 64,
            min_size: 32,
            stride: 8,
            max_pixels: DEFAULT_MAX_PIXELS,
        };
        let out = c.resize(&img).unwrap();
        assert_eq!(out.dimensions(), c.target_size(30, 20).unwrap());
        assert_eq!(out.dimensions(), (48, 32));
    }

    #[test]
    fn position_ids_are_row_major_offsets() {
        let ids = flattened_position_ids(2, 3, 70, &Device::Cpu).unwrap();
        assert_eq!(ids.to_vec1::<i64>().unwrap(), vec![0, 1, 2, 70, 71, 72]);
        assert!(flattened_position_ids(71, 1, 70, &Device::Cpu).is_err());
    }
}
