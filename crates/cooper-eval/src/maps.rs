//! Folder-level depth and segmentation evaluation over PNG files.
//!
//! Ground-truth and prediction files are paired by file stem: every `*.png` in the ground-truth
//! folder must have a prediction `<stem>.png` in the prediction folder (a missing one is an error;
//! extra predictions are ignored). Files are processed in name order.
//!
//! Depth:
//! - predictions are relative depth in `[0, 1]`: 16-bit grayscale `v / 65535` or 8-bit grayscale
//!   `v / 255` (an RGB file whose three channels are equal is read as grayscale);
//! - ground truth is metric depth as 16-bit (or 8-bit) grayscale `v / scale_factor` (NYUv2: 1000,
//!   KITTI: 256); 0 is invalid through the depth range;
//! - a prediction of another size is resized to the ground truth's (bilinear). COOPER's script
//!   resizes the ground truth to the prediction instead; resizing the prediction keeps ground-truth
//!   values (and invalid zeros) untouched.
//!
//! Segmentation: colour PNGs with a [`Palette`] or class-id PNGs (8- or 16-bit grayscale); a
//! prediction of another size is resized to the ground truth's (nearest neighbour).

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, Luma};

use crate::depth_metrics::{evaluate_image, AlignedEval, Crop, DepthMetrics, DepthRange};
use crate::error::EvalError;
use crate::seg_metrics::{add_color_maps, add_id_maps, Confusion, Palette, SegMetrics};

/// Pairs every ground-truth PNG with the prediction of the same stem: `(name, gt, pred)`.
pub fn pair_files(
    gt_dir: &Path,
    pred_dir: &Path,
) -> Result<Vec<(String, PathBuf, PathBuf)>, EvalError> {
    let entries = std::fs::read_dir(gt_dir).map_err(|e| EvalError::io(gt_dir, e))?;
    let mut gts: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| EvalError::io(gt_dir, e))?.path();
        let is_png = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if is_png && path.is_file() {
            gts.push(path);
        }
    }
    gts.sort();
    if gts.is_empty() {
        return Err(EvalError::Image {
            path: gt_dir.to_path_buf(),
            message: "no .png ground-truth files".into(),
        });
    }
    gts.into_iter()
        .map(|gt| {
            let stem = gt
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let pred = pred_dir.join(format!("{stem}.png"));
            if !pred.is_file() {
                return Err(EvalError::Image {
                    path: pred,
                    message: format!("missing prediction for ground truth {}", gt.display()),
                });
            }
            Ok((stem, gt, pred))
        })
        .collect()
}

fn open(path: &Path) -> Result<DynamicImage, EvalError> {
    image::open(path).map_err(|e| EvalError::Image {
        path: path.to_path_buf(),
        message: format!("cannot decode: {e}"),
    })
}

/// A single-channel map as `(width, height, values)`, row-major; `full` is the value of a
/// full-scale pixel (255 or 65535) for grayscale input.
struct Gray {
    width: u32,
    height: u32,
    values: Vec<f32>,
    full: f32,
}

fn read_gray(path: &Path) -> Result<Gray, EvalError> {
    let img = open(path)?;
    let (width, height) = (img.width(), img.height());
    let (values, full): (Vec<f32>, f32) = match &img {
        DynamicImage::ImageLuma8(b) => (b.pixels().map(|p| f32::from(p.0[0])).collect(), 255.0),
        DynamicImage::ImageLumaA8(b) => (b.pixels().map(|p| f32::from(p.0[0])).collect(), 255.0),
        DynamicImage::ImageLuma16(b) => (b.pixels().map(|p| f32::from(p.0[0])).collect(), 65535.0),
        DynamicImage::ImageLumaA16(b) => (b.pixels().map(|p| f32::from(p.0[0])).collect(), 65535.0),
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => {
            let rgb = img.to_rgb8();
            if rgb.pixels().any(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]) {
                return Err(EvalError::Image {
                    path: path.to_path_buf(),
                    message: "colour image where a grayscale map was expected".into(),
                });
            }
            (rgb.pixels().map(|p| f32::from(p.0[0])).collect(), 255.0)
        }
        DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_) => {
            let rgb = img.to_rgb16();
            if rgb.pixels().any(|p| p.0[0] != p.0[1] || p.0[1] != p.0[2]) {
                return Err(EvalError::Image {
                    path: path.to_path_buf(),
                    message: "colour image where a grayscale map was expected".into(),
                });
            }
            (rgb.pixels().map(|p| f32::from(p.0[0])).collect(), 65535.0)
        }
        _ => {
            return Err(EvalError::Image {
                path: path.to_path_buf(),
                message: "unsupported pixel format (expected 8- or 16-bit grayscale)".into(),
            })
        }
    };
    Ok(Gray {
        width,
        height,
        values,
        full,
    })
}

fn resize_f32(values: Vec<f32>, from: (u32, u32), to: (u32, u32), nearest: bool) -> Vec<f32> {
    if from == to {
        return values;
    }
    let buf: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(from.0, from.1, values)
        .unwrap_or_else(|| ImageBuffer::new(from.0, from.1));
    let filter = if nearest {
        image::imageops::FilterType::Nearest
    } else {
        image::imageops::FilterType::Triangle
    };
    image::imageops::resize(&buf, to.0, to.1, filter).into_raw()
}

/// Settings of a depth evaluation.
#[derive(Debug, Clone)]
pub struct DepthEvalConfig {
    pub pred_dir: PathBuf,
    pub gt_dir: PathBuf,
    /// Ground-truth PNG value per metre (NYUv2 1000, KITTI 256).
    pub scale_factor: f64,
    pub range: DepthRange,
    pub crop: Crop,
}

/// One image's depth result.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DepthImageResult {
    pub name: String,
    #[serde(flatten)]
    pub eval: AlignedEval,
}

/// The result of a depth evaluation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DepthReport {
    /// Images with metrics.
    pub images: usize,
    /// Mean over those images.
    pub mean: DepthMetrics,
    /// Images left out because no pixel was valid.
    pub skipped: Vec<String>,
    pub per_image: Vec<DepthImageResult>,
}

impl DepthReport {
    /// A markdown table of the mean metrics (δ in %, SILog as computed).
    pub fn render_markdown(&self) -> String {
        let m = &self.mean;
        let mut s = format!(
            "| images | AbsRel | SqRel | RMSE | RMSE-log | log10 | δ1 % | δ2 % | δ3 % | iRMSE | SILog |\n\
             | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
             | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.2} | {:.2} | {:.2} | {:.4} | {:.4} |\n",
            self.images,
            m.abs_rel,
            m.sq_rel,
            m.rmse,
            m.rmse_log,
            m.log10,
            100.0 * m.delta1,
            100.0 * m.delta2,
            100.0 * m.delta3,
            m.i_rmse,
            m.silog
        );
        if !self.skipped.is_empty() {
            s.push_str(&format!(
                "\n{} image(s) without valid pixels skipped: {}\n",
                self.skipped.len(),
                self.skipped.join(", ")
            ));
        }
        s
    }
}

/// Evaluates every prediction against its ground truth (see the module docs).
pub fn evaluate_depth_folders(cfg: &DepthEvalConfig) -> Result<DepthReport, EvalError> {
    if cfg.scale_factor <= 0.0 || !cfg.scale_factor.is_finite() {
        return Err(EvalError::InvalidValue {
            what: "depth scale factor",
            value: cfg.scale_factor.to_string(),
            message: "must be positive".into(),
        });
    }
    let mut per_image = Vec::new();
    let mut skipped = Vec::new();
    for (name, gt_path, pred_path) in pair_files(&cfg.gt_dir, &cfg.pred_dir)? {
        let gt = read_gray(&gt_path)?;
        let pred = read_gray(&pred_path)?;
        let gt_values: Vec<f32> = gt
            .values
            .iter()
            .map(|&v| (f64::from(v) / cfg.scale_factor) as f32)
            .collect();
        let pred_values: Vec<f32> = pred.values.iter().map(|&v| v / pred.full).collect();
        let pred_values = resize_f32(
            pred_values,
            (pred.width, pred.height),
            (gt.width, gt.height),
            false,
        );
        let (w, h) = (gt.width as usize, gt.height as usize);
        match evaluate_image(&pred_values, &gt_values, w, h, cfg.range, cfg.crop) {
            Some(eval) => per_image.push(DepthImageResult { name, eval }),
            None => skipped.push(name),
        }
    }
    let all: Vec<DepthMetrics> = per_image.iter().map(|r| r.eval.metrics).collect();
    Ok(DepthReport {
        images: per_image.len(),
        mean: DepthMetrics::mean(&all),
        skipped,
        per_image,
    })
}

/// How segmentation maps encode classes.
#[derive(Debug, Clone)]
pub enum SegEncoding {
    /// Colour maps; predicted colours snapped to the nearest palette colour when `snap`.
    Palette { palette: Palette, snap: bool },
    /// Grayscale class ids; ground-truth pixels equal to `ignore` are skipped.
    ClassIds { classes: usize, ignore: Option<u16> },
}

/// Settings of a segmentation evaluation.
#[derive(Debug, Clone)]
pub struct SegEvalConfig {
    pub pred_dir: PathBuf,
    pub gt_dir: PathBuf,
    pub encoding: SegEncoding,
}

/// The result of a segmentation evaluation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SegReport {
    pub images: usize,
    #[serde(flatten)]
    pub metrics: SegMetrics,
}

impl SegReport {
    /// A markdown table of mIoU and pixel accuracy (in %).
    pub fn render_markdown(&self) -> String {
        let present = self.metrics.per_class_iou.iter().flatten().count();
        format!(
            "| images | pixels | classes present | mIoU % | pixel acc. % |\n\
             | ---: | ---: | ---: | ---: | ---: |\n\
             | {} | {} | {} | {:.2} | {:.2} |\n",
            self.images,
            self.metrics.pixels,
            present,
            100.0 * self.metrics.miou,
            100.0 * self.metrics.pixel_accuracy
        )
    }
}

fn read_ids(path: &Path) -> Result<(u32, u32, Vec<u16>), EvalError> {
    let img = open(path)?;
    let (w, h) = (img.width(), img.height());
    let ids = match img {
        DynamicImage::ImageLuma8(b) => b.into_raw().into_iter().map(u16::from).collect(),
        DynamicImage::ImageLuma16(b) => b.into_raw(),
        _ => {
            return Err(EvalError::Image {
                path: path.to_path_buf(),
                message: "class-id maps must be 8- or 16-bit grayscale".into(),
            })
        }
    };
    Ok((w, h, ids))
}

/// Evaluates every predicted segmentation against its ground truth (see the module docs).
pub fn evaluate_seg_folders(cfg: &SegEvalConfig) -> Result<SegReport, EvalError> {
    let classes = match &cfg.encoding {
        SegEncoding::Palette { palette, .. } => palette.len(),
        SegEncoding::ClassIds { classes, .. } => *classes,
    };
    let mut conf = Confusion::new(classes);
    let pairs = pair_files(&cfg.gt_dir, &cfg.pred_dir)?;
    for (_, gt_path, pred_path) in &pairs {
        match &cfg.encoding {
            SegEncoding::Palette { palette, snap } => {
                let gt = open(gt_path)?.to_rgb8();
                let mut pred = open(pred_path)?.to_rgb8();
                if pred.dimensions() != gt.dimensions() {
                    pred = image::imageops::resize(
                        &pred,
                        gt.width(),
                        gt.height(),
                        image::imageops::FilterType::Nearest,
                    );
                }
                add_color_maps(&mut conf, palette, gt.as_raw(), pred.as_raw(), *snap);
            }
            SegEncoding::ClassIds { ignore, .. } => {
                let (gw, gh, gt) = read_ids(gt_path)?;
                let (pw, ph, pred) = read_ids(pred_path)?;
                let pred = if (pw, ph) == (gw, gh) {
                    pred
                } else {
                    let as_f: Vec<f32> = pred.iter().map(|&v| f32::from(v)).collect();
                    resize_f32(as_f, (pw, ph), (gw, gh), true)
                        .into_iter()
                        .map(|v| v as u16)
                        .collect()
                };
                add_id_maps(&mut conf, &gt, &pred, *ignore);
            }
        }
    }
    Ok(SegReport {
        images: pairs.len(),
        metrics: conf.metrics(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Rgb, RgbImage};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn depth_folders_end_to_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (gt_dir, pred_dir) = (dir.path().join("gt"), dir.path().join("pred"));
        std::fs::create_dir_all(&gt_dir).expect("mkdir");
        std::fs::create_dir_all(&pred_dir).expect("mkdir");
        // Image "a": gt 16-bit = metres × 1000: [1 m, 2 m, 3 m, 0 (invalid)].
        let gt = ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(2, 2, vec![1000, 2000, 3000, 0])
            .expect("buf");
        gt.save(gt_dir.join("a.png")).expect("save");
        // Prediction 16-bit: [0, 0.5, 1, x] · 65535 → aligns exactly (scale 2, shift 1).
        let pred = ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(2, 2, vec![0, 32768, 65535, 7])
            .expect("buf");
        pred.save(pred_dir.join("a.png")).expect("save");
        // Image "b": 8-bit prediction [0, 255] against gt [1 m, 3 m] (1 × 2): exact again.
        let gt = ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(2, 1, vec![1000, 3000]).expect("buf");
        gt.save(gt_dir.join("b.png")).expect("save");
        GrayImage::from_raw(2, 1, vec![0, 255])
            .expect("buf")
            .save(pred_dir.join("b.png"))
            .expect("save");
        // Image "c": gt all zero → skipped.
        ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(1, 1, vec![0])
            .expect("buf")
            .save(gt_dir.join("c.png"))
            .expect("save");
        GrayImage::from_raw(1, 1, vec![9])
            .expect("buf")
            .save(pred_dir.join("c.png"))
            .expect("save");

        let cfg = DepthEvalConfig {
            pred_dir: pred_dir.clone(),
            gt_dir: gt_dir.clone(),
            scale_factor: 1000.0,
            range: DepthRange::NYU,
            crop: Crop::None,
        };
        let report = evaluate_depth_folders(&cfg).expect("eval");
        assert_eq!(report.images, 2);
        assert_eq!(report.skipped, ["c"]);
        let md = report.render_markdown();
        assert!(
            md.contains("1 image(s) without valid pixels skipped: c"),
            "{md}"
        );
        assert!(md.contains("| 100.00 | 100.00 | 100.00 |"), "{md}");
        // 32768/65535 is not exactly 0.5, so allow a small AbsRel.
        assert!(report.mean.abs_rel < 1e-4, "{}", report.mean.abs_rel);
        assert!(close(report.mean.delta1, 1.0));
        assert!(
            close(report.per_image[1].eval.scale, 2.0)
                && close(report.per_image[1].eval.shift, 1.0)
        );

        // A missing prediction is an error naming the file.
        std::fs::remove_file(pred_dir.join("b.png")).expect("rm");
        let err = evaluate_depth_folders(&cfg)
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("b.png") && err.contains("missing prediction"),
            "{err}"
        );
    }

    #[test]
    fn colour_depth_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.png");
        RgbImage::from_pixel(1, 1, Rgb([1, 2, 3]))
            .save(&p)
            .expect("save");
        assert!(read_gray(&p).is_err());
        RgbImage::from_pixel(1, 1, Rgb([7, 7, 7]))
            .save(&p)
            .expect("save");
        assert_eq!(read_gray(&p).expect("gray rgb").values, [7.0]);
    }

    #[test]
    fn seg_folders_palette_and_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (gt_dir, pred_dir) = (dir.path().join("gt"), dir.path().join("pred"));
        std::fs::create_dir_all(&gt_dir).expect("mkdir");
        std::fs::create_dir_all(&pred_dir).expect("mkdir");
        // gt: left pixel black (class 0), right pixel red (class 1); pred 4 × 2 (resized by nearest
        // to 2 × 1): near-black everywhere → class 0 right, class 1 wrong.
        let mut gt = RgbImage::new(2, 1);
        gt.put_pixel(1, 0, Rgb([255, 0, 0]));
        gt.save(gt_dir.join("x.png")).expect("save");
        RgbImage::from_pixel(4, 2, Rgb([12, 3, 3]))
            .save(pred_dir.join("x.png"))
            .expect("save");
        let palette = Palette::new(vec![[0, 0, 0], [255, 0, 0]]).expect("palette");
        let cfg = SegEvalConfig {
            pred_dir: pred_dir.clone(),
            gt_dir: gt_dir.clone(),
            encoding: SegEncoding::Palette {
                palette,
                snap: true,
            },
        };
        let r = evaluate_seg_folders(&cfg).expect("eval");
        // class 0: TP 1, FP 1 → 1/2; class 1: FN 1 → 0; mIoU 1/4; accuracy 1/2.
        assert!(close(r.metrics.miou, 0.25) && close(r.metrics.pixel_accuracy, 0.5));
        assert!(
            r.render_markdown()
                .contains("| 1 | 2 | 2 | 25.00 | 50.00 |"),
            "{}",
            r.render_markdown()
        );

        // Class ids: gt [0, 1, 255], pred [0, 1, 1] → both classes perfect, the 255 ignored.
        std::fs::remove_file(gt_dir.join("x.png")).expect("rm");
        GrayImage::from_raw(3, 1, vec![0, 1, 255])
            .expect("buf")
            .save(gt_dir.join("y.png"))
            .expect("save");
        GrayImage::from_raw(3, 1, vec![0, 1, 1])
            .expect("buf")
            .save(pred_dir.join("y.png"))
            .expect("save");
        let cfg = SegEvalConfig {
            encoding: SegEncoding::ClassIds {
                classes: 2,
                ignore: Some(255),
            },
            ..cfg
        };
        let r = evaluate_seg_folders(&cfg).expect("eval");
        assert_eq!(r.metrics.pixels, 2);
        assert!(close(r.metrics.miou, 1.0) && close(r.metrics.pixel_accuracy, 1.0));
    }
}
