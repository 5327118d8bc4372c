//! Readers for the real datasets' on-disk formats that COOPER's stage 1 trains and evaluates on:
//! 16-bit depth PNGs (Virtual KITTI 2, KITTI, Hypersim and NYUv2 as preprocessed for Marigold),
//! stage-1 JSONL indexes, Marigold filename lists, and ADE20K annotations.

use std::fs;
use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};

use crate::error::{Result, WorldError};
use crate::palette::ade20k_colorize;

/// A depth dataset and its PNG conventions (scale and valid range from the official configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DepthDataset {
    /// Virtual KITTI 2: centimetres; 65535 marks sky (treated as invalid).
    Vkitti,
    /// KITTI: value / 256 metres; 0 = no measurement.
    Kitti,
    /// NYUv2 (Marigold layout): millimetres.
    Nyu,
    /// Hypersim (Marigold preprocessing, planar depth): millimetres.
    Hypersim,
    /// This crate's world: millimetres.
    World,
}

impl DepthDataset {
    /// PNG value per metre.
    pub fn scale(self) -> f32 {
        match self {
            DepthDataset::Vkitti => 100.0,
            DepthDataset::Kitti => 256.0,
            DepthDataset::Nyu | DepthDataset::Hypersim | DepthDataset::World => 1000.0,
        }
    }

    /// Valid depth range in metres (exclusive), as used for training and evaluation masks.
    pub fn range(self) -> (f32, f32) {
        match self {
            DepthDataset::Vkitti | DepthDataset::Kitti => (1e-5, 80.0),
            DepthDataset::Nyu => (1e-3, 10.0),
            DepthDataset::Hypersim => (1e-5, 65.0),
            DepthDataset::World => (1e-3, crate::render::FAR_CLIP),
        }
    }
}

/// A metric depth map; `0.0` marks pixels without a measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthMap {
    pub width: u32,
    pub height: u32,
    /// Row-major metres.
    pub metres: Vec<f32>,
}

impl DepthMap {
    /// Depth at `(x, y)`.
    pub fn get(&self, x: u32, y: u32) -> f32 {
        self.metres[(y * self.width + x) as usize]
    }

    /// Pixels strictly inside the dataset's valid range.
    pub fn valid_mask(&self, dataset: DepthDataset) -> Vec<bool> {
        let (lo, hi) = dataset.range();
        self.metres.iter().map(|&d| d > lo && d < hi).collect()
    }

    /// The rectangle `(x, y, w, h)`, clipped to the map.
    pub fn crop(&self, x: u32, y: u32, w: u32, h: u32) -> DepthMap {
        let x1 = (x + w).min(self.width);
        let y1 = (y + h).min(self.height);
        let (x, y) = (x.min(x1), y.min(y1));
        let mut metres = Vec::with_capacity(((x1 - x) * (y1 - y)) as usize);
        for row in y..y1 {
            for col in x..x1 {
                metres.push(self.get(col, row));
            }
        }
        DepthMap {
            width: x1 - x,
            height: y1 - y,
            metres,
        }
    }
}

fn open_image(path: &Path) -> Result<DynamicImage> {
    image::open(path).map_err(|e| WorldError::Image {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Reads a 16-bit single-channel depth PNG and converts it to metres with the dataset's scale.
/// 8-bit or multi-channel images are rejected (they are not depth PNGs).
pub fn read_depth_png(path: &Path, dataset: DepthDataset) -> Result<DepthMap> {
    let img = open_image(path)?;
    let DynamicImage::ImageLuma16(buf) = img else {
        return Err(WorldError::ImageFormat {
            path: path.to_path_buf(),
            message: format!(
                "expected a 16-bit grayscale depth PNG, found {:?}",
                img.color()
            ),
        });
    };
    let scale = dataset.scale();
    let metres = buf
        .as_raw()
        .iter()
        .map(|&v| {
            if v == 0 || (dataset == DepthDataset::Vkitti && v == u16::MAX) {
                0.0
            } else {
                v as f32 / scale
            }
        })
        .collect();
    Ok(DepthMap {
        width: buf.width(),
        height: buf.height(),
        metres,
    })
}

/// The KITTI benchmark crop `(x, y, w, h)` for an image of the given size: the bottom 352 rows
/// and the centred 1216 columns (clipped for smaller images), applied to vKITTI/KITTI before
/// training.
pub fn kitti_benchmark_crop(width: u32, height: u32) -> (u32, u32, u32, u32) {
    let (cw, ch) = (1216.min(width), 352.min(height));
    ((width - cw) / 2, height - ch, cw, ch)
}

/// Hypersim's focal length in pixels for its 1024 × 768 renders (60° horizontal field of view).
pub const HYPERSIM_FOCAL_PX: f32 = 886.81;

/// Converts Hypersim's distance-to-camera-centre maps to planar depth:
/// `z = d · f / sqrt(f² + (u − cx)² + (v − cy)²)` with pixel centres at integer + 0.5.
pub fn hypersim_distance_to_planar(
    distance: &[f32],
    width: u32,
    height: u32,
    focal: f32,
) -> Vec<f32> {
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    distance
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let u = (i as u32 % width) as f32 + 0.5 - cx;
            let v = (i as u32 / width) as f32 + 0.5 - cy;
            d * focal / (focal * focal + u * u + v * v).sqrt()
        })
        .collect()
}

/// What a stage-1 row supervises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage1Target {
    Depth(PathBuf),
    Segmentation(PathBuf),
}

/// One row of a stage-1 JSONL index, paths resolved against the data folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage1Entry {
    pub rgb: PathBuf,
    pub target: Stage1Target,
    pub data_id: Option<String>,
    /// Depth PNG value per metre, when the row records it (`depth_scale`, our rows do).
    pub depth_scale: Option<f32>,
    /// Valid depth range in metres, when the row records it (`min_depth`, `max_depth`).
    pub depth_range: Option<(f32, f32)>,
}

fn read_lines(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| WorldError::io(path, e))
}

/// Reads a stage-1 index (`rgb_image` plus `depth_image` or `seg_image`, optional `data_id`),
/// the layout of the official `train.jsonl`/`filename_list_*.jsonl` files and of our own.
pub fn read_stage1_index(jsonl: &Path, data_dir: &Path) -> Result<Vec<Stage1Entry>> {
    let text = read_lines(jsonl)?;
    let mut out = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let line_no = k + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| WorldError::Json {
            path: jsonl.to_path_buf(),
            line: line_no,
            source: e,
        })?;
        let field = |name: &str| {
            v.get(name)
                .and_then(|x| x.as_str())
                .map(|s| data_dir.join(s))
        };
        let err = |field: &str, message: &str| WorldError::Field {
            path: jsonl.to_path_buf(),
            line: line_no,
            field: field.into(),
            message: message.into(),
        };
        let rgb = field("rgb_image").ok_or_else(|| err("rgb_image", "missing or not a string"))?;
        let target = match (field("depth_image"), field("seg_image")) {
            (Some(d), _) => Stage1Target::Depth(d),
            (None, Some(s)) => Stage1Target::Segmentation(s),
            (None, None) => {
                return Err(err(
                    "depth_image",
                    "neither depth_image nor seg_image is present",
                ))
            }
        };
        let number = |name: &str| v.get(name).and_then(|x| x.as_f64()).map(|x| x as f32);
        let depth_range = match (number("min_depth"), number("max_depth")) {
            (Some(lo), Some(hi)) if lo < hi => Some((lo, hi)),
            (None, None) => None,
            _ => {
                return Err(err(
                    "max_depth",
                    "min_depth and max_depth must both be given, min < max",
                ))
            }
        };
        out.push(Stage1Entry {
            rgb,
            target,
            depth_scale: number("depth_scale"),
            depth_range,
            data_id: v.get("data_id").map(|d| match d.as_str() {
                Some(s) => s.to_string(),
                None => d.to_string(),
            }),
        });
    }
    Ok(out)
}

/// One line of a Marigold filename list (`rgb depth [filled]`, whitespace separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarigoldEntry {
    pub rgb: PathBuf,
    pub depth: PathBuf,
    /// NYUv2's inpainted depth, when listed.
    pub filled: Option<PathBuf>,
}

/// Reads a Marigold evaluation filename list (e.g. NYUv2's
/// `test/bathroom/rgb_0045.png test/bathroom/depth_0045.png test/bathroom/filled_0045.png`).
pub fn read_marigold_filename_list(list: &Path, data_dir: &Path) -> Result<Vec<MarigoldEntry>> {
    let text = read_lines(list)?;
    let mut out = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.is_empty() {
            continue;
        }
        if parts.len() < 2 {
            return Err(WorldError::Field {
                path: list.to_path_buf(),
                line: k + 1,
                field: "depth".into(),
                message: "expected `rgb depth [filled]`".into(),
            });
        }
        out.push(MarigoldEntry {
            rgb: data_dir.join(parts[0]),
            depth: data_dir.join(parts[1]),
            filled: parts.get(2).map(|p| data_dir.join(p)),
        });
    }
    Ok(out)
}

/// Finds Virtual KITTI 2 depth/RGB pairs under `root`:
/// `<Scene>/<variation>/frames/depth/Camera_<k>/depth_<n>.png` with its
/// `frames/rgb/Camera_<k>/rgb_<n>.jpg`. Pairs are sorted by path; missing RGB files are skipped.
pub fn scan_vkitti2(root: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut pairs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| WorldError::io(&dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| WorldError::io(&dir, e))?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(num) = name
                .strip_prefix("depth_")
                .and_then(|n| n.strip_suffix(".png"))
            else {
                continue;
            };
            let Some(camera_dir) = path.parent() else {
                continue;
            };
            let Some(frames) = camera_dir.parent().and_then(|d| d.parent()) else {
                continue;
            };
            if camera_dir.parent().and_then(|d| d.file_name()) != Some("depth".as_ref()) {
                continue;
            }
            let Some(camera) = camera_dir.file_name() else {
                continue;
            };
            let rgb = frames
                .join("rgb")
                .join(camera)
                .join(format!("rgb_{num}.jpg"));
            if rgb.is_file() {
                pairs.push((rgb, path));
            }
        }
    }
    pairs.sort();
    Ok(pairs)
}

/// An ADE20K class-index map (0 = other, 1..=150 classes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegLabels {
    pub width: u32,
    pub height: u32,
    pub labels: Vec<u8>,
}

impl SegLabels {
    /// The ADE20K colour map of these labels (the stage-1 segmentation target).
    pub fn colorize(&self) -> RgbImage {
        ade20k_colorize(&self.labels, self.width, self.height)
    }
}

/// Reads an ADE20K SceneParsing annotation: an 8-bit single-channel PNG of class indices.
pub fn read_ade20k_annotation(path: &Path) -> Result<SegLabels> {
    let img = open_image(path)?;
    let DynamicImage::ImageLuma8(buf) = img else {
        return Err(WorldError::ImageFormat {
            path: path.to_path_buf(),
            message: format!(
                "expected an 8-bit single-channel ADE20K annotation, found {:?}",
                img.color()
            ),
        });
    };
    if let Some(bad) = buf.as_raw().iter().find(|&&v| v > 150) {
        return Err(WorldError::ImageFormat {
            path: path.to_path_buf(),
            message: format!("class index {bad} is outside ADE20K's 0..=150"),
        });
    }
    Ok(SegLabels {
        width: buf.width(),
        height: buf.height(),
        labels: buf.into_raw(),
    })
}

/// Reads a colour-coded segmentation map (what COOPER's ADE20K_SEG set and our `seg/` hold).
pub fn read_segmentation_colors(path: &Path) -> Result<RgbImage> {
    Ok(open_image(path)?.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Luma};

    fn write_u16(path: &Path, w: u32, h: u32, v: Vec<u16>) {
        let img: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_raw(w, h, v).unwrap();
        img.save(path).unwrap();
    }

    #[test]
    fn depth_pngs_convert_with_dataset_scales() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.png");
        write_u16(&p, 2, 2, vec![0, 1500, 65535, 256]);
        let v = read_depth_png(&p, DepthDataset::Vkitti).unwrap();
        assert_eq!(v.metres, vec![0.0, 15.0, 0.0, 2.56]);
        let k = read_depth_png(&p, DepthDataset::Kitti).unwrap();
        assert_eq!(k.get(1, 1), 1.0);
        let n = read_depth_png(&p, DepthDataset::Nyu).unwrap();
        assert_eq!(n.get(1, 0), 1.5);
        assert_eq!(
            n.valid_mask(DepthDataset::Nyu),
            vec![false, true, false, true]
        );
        // 8-bit images are not depth maps.
        let p8 = dir.path().join("e.png");
        GrayImage::new(2, 2).save(&p8).unwrap();
        let err = read_depth_png(&p8, DepthDataset::Nyu).unwrap_err();
        assert!(err.to_string().contains("e.png"), "{err}");
    }

    #[test]
    fn stage1_index_and_marigold_list() {
        let dir = tempfile::tempdir().unwrap();
        let idx = dir.path().join("train.jsonl");
        fs::write(
            &idx,
            "{\"rgb_image\": \"a/rgb.png\", \"depth_image\": \"a/d.png\", \"data_id\": 7}\n\n{\"rgb_image\": \"b.jpg\", \"seg_image\": \"b.png\"}\n",
        )
        .unwrap();
        let rows = read_stage1_index(&idx, Path::new("/data")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].target, Stage1Target::Depth("/data/a/d.png".into()));
        assert_eq!(rows[0].data_id.as_deref(), Some("7"));
        assert_eq!(
            rows[1].target,
            Stage1Target::Segmentation("/data/b.png".into())
        );
        fs::write(&idx, "{\"rgb_image\": \"x\"}\n").unwrap();
        let err = read_stage1_index(&idx, Path::new(".")).unwrap_err();
        assert!(err.to_string().contains(":1: field `depth_image`"), "{err}");

        let list = dir.path().join("filename_list_test.txt");
        fs::write(
            &list,
            "test/bathroom/rgb_0045.png test/bathroom/depth_0045.png test/bathroom/filled_0045.png\n",
        )
        .unwrap();
        let l = read_marigold_filename_list(&list, Path::new("nyu")).unwrap();
        assert_eq!(
            l[0].depth,
            PathBuf::from("nyu/test/bathroom/depth_0045.png")
        );
        assert_eq!(
            l[0].filled.as_deref(),
            Some(Path::new("nyu/test/bathroom/filled_0045.png"))
        );
    }

    #[test]
    fn vkitti2_tree_is_paired() {
        let dir = tempfile::tempdir().unwrap();
        let frames = dir.path().join("Scene01/clone/frames");
        fs::create_dir_all(frames.join("depth/Camera_0")).unwrap();
        fs::create_dir_all(frames.join("rgb/Camera_0")).unwrap();
        write_u16(
            &frames.join("depth/Camera_0/depth_00000.png"),
            1,
            1,
            vec![100],
        );
        write_u16(
            &frames.join("depth/Camera_0/depth_00001.png"),
            1,
            1,
            vec![100],
        );
        fs::write(frames.join("rgb/Camera_0/rgb_00000.jpg"), b"x").unwrap();
        let pairs = scan_vkitti2(dir.path()).unwrap();
        assert_eq!(pairs.len(), 1);
        assert!(pairs[0].0.ends_with("rgb/Camera_0/rgb_00000.jpg"));
        assert_eq!(kitti_benchmark_crop(1242, 375), (13, 23, 1216, 352));
    }

    #[test]
    fn ade20k_annotations_colorize_with_the_palette() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ADE_val_00000001.png");
        GrayImage::from_raw(3, 1, vec![0, 1, 4])
            .unwrap()
            .save(&p)
            .unwrap();
        let labels = read_ade20k_annotation(&p).unwrap();
        let rgb = labels.colorize();
        assert_eq!(rgb.get_pixel(1, 0).0, [120, 120, 120]);
        assert_eq!(rgb.get_pixel(2, 0).0, [80, 50, 50]);
        GrayImage::from_raw(1, 1, vec![200])
            .unwrap()
            .save(&p)
            .unwrap();
        assert!(read_ade20k_annotation(&p).is_err());
    }

    #[test]
    fn hypersim_planar_conversion_matches_geometry() {
        // A fronto-parallel wall at z = 2: distance at pixel offset r is 2·sqrt(f²+r²)/f.
        let (w, h, f) = (4u32, 2u32, 3.0f32);
        let dist: Vec<f32> = (0..w * h)
            .map(|i| {
                let u = (i % w) as f32 + 0.5 - 2.0;
                let v = (i / w) as f32 + 0.5 - 1.0;
                2.0 * (f * f + u * u + v * v).sqrt() / f
            })
            .collect();
        for z in hypersim_distance_to_planar(&dist, w, h, f) {
            assert!((z - 2.0).abs() < 1e-5);
        }
    }
}
