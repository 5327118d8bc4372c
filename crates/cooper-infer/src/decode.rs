//! From the raw autoencoder output to pictures: RGB (segmentation maps, images), relative
//! depth in [0, 1], its 16-bit PNG form, and the Spectral colouring fed back to the reasoner.

use std::sync::LazyLock;

use candle_core::{DType, Tensor};
use image::{ImageBuffer, Luma, RgbImage};

use crate::error::{InferError, Result};

/// A relative depth map: row-major `height x width` values in [0, 1] (near = small).
#[derive(Debug, Clone, PartialEq)]
pub struct DepthMap {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl DepthMap {
    /// The value at (x, y).
    pub fn get(&self, x: u32, y: u32) -> f32 {
        self.data[(y as usize) * (self.width as usize) + x as usize]
    }

    /// A 16-bit grey picture: round(clamp(d, 0, 1) * 65535).
    pub fn to_luma16(&self) -> ImageBuffer<Luma<u16>, Vec<u16>> {
        let data = self
            .data
            .iter()
            .map(|&d| (d.clamp(0.0, 1.0) * 65535.0).round() as u16)
            .collect();
        ImageBuffer::from_raw(self.width, self.height, data)
            .expect("buffer length equals width * height")
    }

    /// The official `colorize_depth_maps(d, 0, 1)` with matplotlib's `Spectral`, then ×255
    /// truncated to u8.
    pub fn to_spectral(&self) -> RgbImage {
        let mut out = RgbImage::new(self.width, self.height);
        for (px, &d) in out.pixels_mut().zip(&self.data) {
            px.0 = spectral(d);
        }
        out
    }
}

/// Reads the raw AE output, (1, 3, H, W) or (3, H, W), as f32 (3, H, W) values.
fn raw_chw(raw: &Tensor) -> Result<(usize, usize, Vec<f32>)> {
    let t = match raw.dims() {
        [1, 3, _, _] => raw.squeeze(0)?,
        [3, _, _] => raw.clone(),
        other => {
            return Err(InferError::shape(
                "decoded image",
                "(1, 3, H, W) or (3, H, W)",
                other,
            ))
        }
    };
    let (_, h, w) = t.dims3()?;
    if h == 0 || w == 0 {
        return Err(InferError::shape(
            "decoded image",
            "a non-empty picture",
            t.dims(),
        ));
    }
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((h, w, v))
}

/// clamp(x * 0.5 + 0.5, 0, 1), in f32 as the official code computes it.
fn unit(x: f32) -> f32 {
    (x * 0.5 + 0.5).clamp(0.0, 1.0)
}

/// The official `decode_image` after the AE: clamp(x·0.5+0.5, 0, 1)·255 truncated to u8, HWC.
pub fn decode_image(raw: &Tensor) -> Result<RgbImage> {
    let (h, w, v) = raw_chw(raw)?;
    let plane = h * w;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (i, px) in out.pixels_mut().enumerate() {
        for c in 0..3 {
            px.0[c] = (unit(v[c * plane + i]) * 255.0) as u8;
        }
    }
    Ok(out)
}

/// The official `decode_depth` after the AE: the same clamp, then the mean of the channels.
pub fn decode_depth(raw: &Tensor) -> Result<DepthMap> {
    let (h, w, v) = raw_chw(raw)?;
    let plane = h * w;
    let data = (0..plane)
        .map(|i| (unit(v[i]) + unit(v[plane + i]) + unit(v[2 * plane + i])) / 3.0)
        .collect();
    Ok(DepthMap {
        width: w as u32,
        height: h as u32,
        data,
    })
}

/// Entries of matplotlib's colormap lookup tables.
const LUT_SIZE: usize = 256;

/// numpy's `linspace(0, 1, n)[i]`: `i * (1 / (n - 1))`, the last point exactly 1.
fn linspace01(i: usize, n: usize) -> f64 {
    if i + 1 == n {
        1.0
    } else {
        i as f64 * (1.0 / (n - 1) as f64)
    }
}

/// matplotlib's 256-entry `Spectral` table as u8 after the official ×255 truncation.
///
/// matplotlib builds `Spectral` with `LinearSegmentedColormap.from_list` over the 11
/// ColorBrewer anchors at `linspace(0, 1, 11)` and samples it at `linspace(0, 1, 256)` by
/// linear interpolation (`_create_lookup_table`, in float64). The anchors are taken from
/// `colorous::SPECTRAL` (its 11-class scheme is the same ColorBrewer data); only the
/// interpolation is matplotlib's (colorous itself interpolates with a B-spline, which is
/// not what the model saw in training).
static SPECTRAL_LUT: LazyLock<[[u8; 3]; LUT_SIZE]> = LazyLock::new(|| {
    const ANCHORS: usize = 11;
    let anchors: Vec<[f64; 3]> = (0..ANCHORS)
        .map(|k| {
            let c = colorous::SPECTRAL.eval_rational(k, ANCHORS);
            [c.r, c.g, c.b].map(|v| f64::from(v) / 255.0)
        })
        .collect();
    let last = (LUT_SIZE - 1) as f64;
    let xs: Vec<f64> = (0..ANCHORS)
        .map(|k| linspace01(k, ANCHORS) * last)
        .collect();
    let mut lut = [[0u8; 3]; LUT_SIZE];
    for (i, entry) in lut.iter_mut().enumerate() {
        let xi = last * linspace01(i, LUT_SIZE);
        for (c, out) in entry.iter_mut().enumerate() {
            let v = if i == 0 {
                anchors[0][c]
            } else if i == LUT_SIZE - 1 {
                anchors[ANCHORS - 1][c]
            } else {
                // numpy searchsorted (side "left"): first anchor at or after xi.
                let k = xs
                    .iter()
                    .position(|&x| x >= xi)
                    .unwrap_or(ANCHORS - 1)
                    .max(1);
                let dist = (xi - xs[k - 1]) / (xs[k] - xs[k - 1]);
                dist * (anchors[k][c] - anchors[k - 1][c]) + anchors[k - 1][c]
            };
            *out = (v.clamp(0.0, 1.0) * 255.0) as u8;
        }
    }
    lut
});

/// The Spectral colour of a relative depth `d` (clamped to [0, 1]; NaN gives black, as
/// matplotlib's "bad" colour does): LUT entry ⌊d·256⌋ clamped to 255.
pub fn spectral(d: f32) -> [u8; 3] {
    if d.is_nan() {
        return [0, 0, 0];
    }
    let idx = ((d.clamp(0.0, 1.0) * LUT_SIZE as f32) as usize).min(LUT_SIZE - 1);
    SPECTRAL_LUT[idx]
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn spectral_endpoints_and_midpoint() {
        // Anchors 9e0142 and 5e4fa2 at the ends ((c/255)·255 is exact in f64 for these).
        assert_eq!(spectral(0.0), [0x9e, 0x01, 0x42]);
        assert_eq!(spectral(1.0), [0x5e, 0x4f, 0xa2]);
        // LUT[128] lies 0.5/25.5 of the way from ffffbf to e6f598: 254.51, 254.80, 190.24.
        assert_eq!(spectral(0.5), [254, 254, 190]);
        assert_eq!(spectral(0.999), spectral(1.0));
        assert_eq!(spectral(-3.0), spectral(0.0));
        assert_eq!(spectral(f32::NAN), [0, 0, 0]);
    }

    #[test]
    fn decode_rejects_bad_shapes() {
        let t = Tensor::zeros((2, 4, 4), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(decode_image(&t), Err(InferError::Shape { .. })));
        assert!(decode_depth(&t).is_err());
    }

    #[test]
    fn depth_png_is_rounded_and_clamped() {
        let d = DepthMap {
            width: 3,
            height: 1,
            data: vec![-1.0, 0.5, 2.0],
        };
        let p = d.to_luma16();
        assert_eq!(p.as_raw(), &vec![0, 32768, 65535]);
        assert_eq!(d.get(1, 0), 0.5);
    }
}
