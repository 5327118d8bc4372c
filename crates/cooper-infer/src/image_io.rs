//! Loading the user's picture: any common format, validated, converted to RGB.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageError, ImageReader, Limits, RgbImage, RgbaImage};

use crate::error::{InferError, Result};

/// Bounds on an input picture, checked before its pixels are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Largest accepted width or height.
    pub max_side: u32,
    /// Largest accepted decoder allocation, in bytes.
    pub max_alloc: u64,
}

impl Default for LoadLimits {
    fn default() -> Self {
        Self {
            max_side: 16_384,
            max_alloc: 1 << 30,
        }
    }
}

/// Reads and decodes a picture file (format guessed from its content) into RGB.
///
/// Pictures with an alpha channel are composited onto white, as the official `pil_img2rgb`
/// does for transparent pictures; others are converted to 8-bit RGB. Unreadable, empty,
/// truncated or corrupt files and pictures beyond `limits` give an error naming the file.
pub fn load_image(path: &Path, limits: &LoadLimits) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| InferError::ImageRead {
        path: path.to_path_buf(),
        source,
    })?;
    decode_image_bytes(&bytes, path, limits)
}

/// [`load_image`] on bytes already in memory; `path` is only used in messages.
pub fn decode_image_bytes(bytes: &[u8], path: &Path, limits: &LoadLimits) -> Result<RgbImage> {
    let decode_err = |reason: String| InferError::ImageDecode {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(decode_err("the file is empty".into()));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(decode_err("unrecognised image format".into()));
    }
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| decode_err(e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(InferError::ImageEmpty {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(InferError::ImageTooLarge {
            path: path.to_path_buf(),
            reason: format!(
                "{width}x{height} pixels, the limit is {} per side",
                limits.max_side
            ),
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(e.to_string()))?;
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let img = reader.decode().map_err(|e| match e {
        ImageError::Limits(l) => InferError::ImageTooLarge {
            path: path.to_path_buf(),
            reason: l.to_string(),
        },
        other => decode_err(other.to_string()),
    })?;
    Ok(to_rgb(img))
}

/// RGB, with transparent pictures composited onto white.
fn to_rgb(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba: RgbaImage = img.to_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let a = u32::from(a);
        let over = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([over(r), over(g), over(b)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageFormat;

    fn png_bytes(img: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn loads_png_and_composites_alpha_on_white() {
        let mut rgba = RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, image::Rgba([10, 20, 30, 255]));
        let bytes = png_bytes(&DynamicImage::ImageRgba8(rgba));
        let img = decode_image_bytes(&bytes, Path::new("a.png"), &LoadLimits::default()).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(1, 0).0, [10, 20, 30]);
    }

    #[test]
    fn the_fixture_picture_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/bagel-tiny/cases/image.png");
        let img = load_image(&path, &LoadLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (64, 64));
    }

    #[test]
    fn bad_files_give_clear_errors() {
        let limits = LoadLimits::default();
        let p = Path::new("x.png");
        assert!(matches!(
            load_image(Path::new("/nonexistent/x.png"), &limits),
            Err(InferError::ImageRead { .. })
        ));
        assert!(matches!(
            decode_image_bytes(&[], p, &limits),
            Err(InferError::ImageDecode { .. })
        ));
        assert!(matches!(
            decode_image_bytes(b"definitely not a picture", p, &limits),
            Err(InferError::ImageDecode { .. })
        ));
        let bytes = png_bytes(&DynamicImage::ImageRgb8(RgbImage::new(64, 64)));
        let truncated = &bytes[..bytes.len() / 2];
        let err = decode_image_bytes(truncated, p, &limits).unwrap_err();
        assert!(matches!(err, InferError::ImageDecode { .. }), "{err}");
        assert!(err.to_string().contains("x.png"));
        let small = LoadLimits {
            max_side: 32,
            ..limits
        };
        assert!(matches!(
            decode_image_bytes(&bytes, p, &small),
            Err(InferError::ImageTooLarge { .. })
        ));
    }
}
