//! Writers for the official pipeline's data formats (see `docs/data-formats.md`).
//!
//! Every file is written atomically: to `<name>.tmp` in the same folder, then renamed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use image::{ImageBuffer, Luma, RgbImage};
use serde::{Deserialize, Serialize};

use crate::chains::{Chain, ChainImage, ChainItem};
use crate::error::{Result, WorldError};
use crate::questions::{option_letter, Flag, Question};
use crate::render::Frame;

/// Depth scale of our world's 16-bit depth PNGs: value = metres × 1000 (millimetres).
pub const WORLD_DEPTH_SCALE: f32 = 1000.0;

/// Writes `bytes` to `path` atomically, creating parent folders.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| WorldError::io(dir, e))?;
    }
    let tmp = tmp_path(path);
    fs::write(&tmp, bytes).map_err(|e| WorldError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| WorldError::io(path, e))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// A line-oriented file written to `<path>.tmp` and renamed into place by [`AtomicFile::commit`].
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    out: std::io::BufWriter<fs::File>,
}

impl AtomicFile {
    /// Opens the temporary file.
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| WorldError::io(dir, e))?;
        }
        let tmp = tmp_path(path);
        let file = fs::File::create(&tmp).map_err(|e| WorldError::io(&tmp, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            out: std::io::BufWriter::new(file),
        })
    }

    /// Appends raw bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| WorldError::io(&self.tmp, e))
    }

    /// Appends one JSON value and a newline.
    pub fn write_json_line<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let mut line = serde_json::to_vec(value).map_err(|e| WorldError::Json {
            path: self.path.clone(),
            line: 0,
            source: e,
        })?;
        line.push(b'\n');
        self.write(&line)
    }

    /// Flushes and renames the file into place.
    pub fn commit(self) -> Result<()> {
        let Self { path, tmp, out } = self;
        let file = out
            .into_inner()
            .map_err(|e| WorldError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| WorldError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| WorldError::io(&path, e))
    }
}

fn encode_err(path: &str, e: image::ImageError) -> WorldError {
    WorldError::Image {
        path: PathBuf::from(path),
        source: e,
    }
}

/// PNG bytes of an RGB image.
pub fn png_rgb(img: &RgbImage) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| encode_err("<rgb png>", e))?;
    Ok(buf.into_inner())
}

/// PNG bytes of a 16-bit grayscale image.
pub fn png_u16(width: u32, height: u32, values: Vec<u16>) -> Result<Vec<u8>> {
    let img: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_raw(width, height, values)
        .ok_or_else(|| WorldError::ImageFormat {
            path: PathBuf::from("<u16 png>"),
            message: "buffer size does not match the image size".into(),
        })?;
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)
        .map_err(|e| encode_err("<u16 png>", e))?;
    Ok(buf.into_inner())
}

/// Metric depth (metres, 0 = invalid) as 16-bit values `round(d · scale)`, clamped to 65535.
pub fn depth_to_u16(depth_m: &[f32], scale: f32) -> Vec<u16> {
    depth_m
        .iter()
        .map(|&d| {
            if d.is_finite() && d > 0.0 {
                (d * scale).round().clamp(0.0, 65535.0) as u16
            } else {
                0
            }
        })
        .collect()
}

/// Base64 (standard alphabet, no prefix) of PNG bytes.
pub fn base64_png(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A stage-1 depth training row (keys as read by the official `parse_row`; the extra keys
/// `depth_scale`, `min_depth`, `max_depth` record how to turn PNG values into metres).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage1DepthRow {
    pub rgb_image: String,
    pub depth_image: String,
    pub data_id: String,
    pub depth_scale: f32,
    pub min_depth: f32,
    pub max_depth: f32,
}

/// A stage-1 segmentation training row (`seg_image` is the colour map; `instance_image` our
/// 16-bit instance ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage1SegRow {
    pub rgb_image: String,
    pub seg_image: String,
    pub instance_image: String,
    pub data_id: String,
}

/// One entry of an `interleaved_reason` list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    /// `"true"` or `"false"` (strings, as the official reader compares them).
    pub need_loss: String,
    /// A project extension on learnt text: the first this many characters of `value` are given,
    /// not learnt (`cooper_train::data`); absent in official rows and in most of ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_start: Option<usize>,
    /// A project extension with `loss_start`: the given characters start here instead of at 0;
    /// the ones before are learnt too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_from: Option<usize>,
}

impl SftEntry {
    /// A text entry.
    pub fn text(value: impl Into<String>, need_loss: bool) -> Self {
        Self {
            kind: "text".into(),
            value: value.into(),
            need_loss: need_loss.to_string(),
            loss_start: None,
            given_from: None,
        }
    }
}

/// One SFT JSONL row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftRow {
    pub interleaved_reason: Vec<SftEntry>,
    pub data_id: String,
    pub category: String,
    pub flag: String,
}

/// One RL JSONL row (`image` relative to the image root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RlRow {
    pub image: String,
    pub question: String,
    pub answer: String,
    pub data_id: String,
    pub flag: String,
    pub category: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// Base64 PNGs of the images a chain can refer to, encoded once per scene.
pub struct ChainImages {
    pub input: String,
    pub depth: String,
    pub segmentation: String,
}

impl ChainImages {
    /// Encodes the three images of a frame.
    pub fn from_frame(frame: &Frame) -> Result<Self> {
        Ok(Self {
            input: base64_png(&png_rgb(&frame.rgb)?),
            depth: base64_png(&png_rgb(&frame.depth_colors())?),
            segmentation: base64_png(&png_rgb(&frame.semantic_colors())?),
        })
    }
}

/// Turns a chain into an SFT row.
pub fn sft_row(chain: &Chain, q: &Question, images: &ChainImages) -> SftRow {
    chain_row(chain, q.category.name(), q.flag.name(), images)
}

/// An SFT row for a chain that answers no benchmark question (a scene description): its
/// category is `description`, and its flag `negative`, since it calls no tool.
pub fn description_row(chain: &Chain, images: &ChainImages) -> SftRow {
    chain_row(chain, "description", Flag::Negative.name(), images)
}

/// An SFT row for a cell listing (category `cells`, flag `negative`: it calls no tool).
pub fn cells_row(chain: &Chain, images: &ChainImages) -> SftRow {
    chain_row(chain, "cells", Flag::Negative.name(), images)
}

/// A text-only description lookup row (category `lookup`, the question's flag) from
/// [`crate::chains::description_lookup`]: the prompt, then the thinking turn, learnt from
/// `given` characters on.
pub fn description_lookup_row(chain: &Chain, given: usize, q: &Question) -> SftRow {
    let row = chain_row(
        chain,
        "lookup",
        q.flag.name(),
        &ChainImages {
            input: String::new(),
            depth: String::new(),
            segmentation: String::new(),
        },
    );
    with_given_span(row, Some(0..given))
}

/// `row` with the characters `given` of its first learnt turn (the chain's first thought) given
/// as context, not learnt (`WorldConfig::given_descriptions`, the description lookups); unchanged
/// for `None`.
pub fn with_given_span(mut row: SftRow, given: Option<std::ops::Range<usize>>) -> SftRow {
    if let Some(given) = given {
        if let Some(thought) = row
            .interleaved_reason
            .iter_mut()
            .find(|e| e.kind == "text" && e.need_loss == "true")
        {
            thought.given_from = (given.start > 0).then_some(given.start);
            thought.loss_start = Some(given.end);
        }
    }
    row
}

/// `row` in the describe-first layout (`WorldConfig::describe_first`): the request and the scene
/// description of `describe` (a [`description_row`]) come right after the picture, before the
/// question, and the chain's first thought no longer opens with `description` (the text that
/// thought repeats; a thought without it is kept as it is). The description turn is learnt where
/// the row has a picture; in a text-only row (a description lookup) it is context, and the whole
/// thought after the question is learnt. Learnt under its own request, the description cannot
/// copy the question's objects, which it has not seen yet.
pub fn describe_first_row(mut row: SftRow, describe: &SftRow, description: &str) -> SftRow {
    let has_picture = row
        .interleaved_reason
        .first()
        .is_some_and(|e| e.kind == "image");
    let mut described: Vec<SftEntry> = describe
        .interleaved_reason
        .iter()
        .filter(|e| e.kind == "text")
        .cloned()
        .collect();
    if !has_picture {
        for e in &mut described {
            e.need_loss = false.to_string();
        }
    }
    if let Some(thought) = row
        .interleaved_reason
        .iter_mut()
        .find(|e| e.kind == "text" && e.need_loss == "true")
    {
        thought.value = thought.value.replacen(&format!("{description} "), "", 1);
        thought.loss_start = None;
        thought.given_from = None;
    }
    let at = usize::from(has_picture);
    row.interleaved_reason.splice(at..at, described);
    row
}

/// A text-only row that restates a multiple-choice question's options (category `restate`, flag
/// `negative`): the prompt, then a thinking turn holding [`crate::chains::restatement`]. The copy
/// a chain answering in words opens with, on its own: learnt in a few hundred steps from short rows
/// like these, while the chains alone never taught it (`docs/results.md`). `None` for other
/// questions.
pub fn restatement_row(q: &Question) -> Option<SftRow> {
    let restated = crate::chains::restatement(q)?;
    Some(SftRow {
        interleaved_reason: vec![
            SftEntry::text(q.prompt(), false),
            SftEntry::text(format!("<think> {restated} </think>"), true),
        ],
        data_id: format!("{}-restate", q.id),
        category: "restate".into(),
        flag: Flag::Negative.name().into(),
    })
}

fn chain_row(chain: &Chain, category: &str, flag_name: &str, images: &ChainImages) -> SftRow {
    SftRow {
        interleaved_reason: chain
            .items
            .iter()
            .map(|item| match item {
                ChainItem::Text { value, need_loss } => SftEntry::text(value.clone(), *need_loss),
                ChainItem::Image { image } => SftEntry {
                    kind: "image".into(),
                    value: match image {
                        ChainImage::Input => images.input.clone(),
                        ChainImage::Depth => images.depth.clone(),
                        ChainImage::Segmentation => images.segmentation.clone(),
                    },
                    need_loss: false.to_string(),
                    loss_start: None,
                    given_from: None,
                },
            })
            .collect(),
        data_id: chain.question_id.clone(),
        category: category.into(),
        flag: flag_name.into(),
    }
}

/// An RL row for a question whose image is at `image` (relative to the image root), graded
/// against `answer` (the question's answer, or its option's text in a world whose chains answer in
/// words).
pub fn rl_row(q: &Question, answer: &str, image: &str) -> RlRow {
    RlRow {
        image: image.to_string(),
        question: q.prompt(),
        answer: answer.to_string(),
        data_id: q.id.clone(),
        flag: q.flag.name().into(),
        category: q.category.name().into(),
        kind: q.kind.type_name().into(),
    }
}

/// Header of the evaluation TSV with `n_options` option columns.
pub fn tsv_header(n_options: usize) -> Vec<String> {
    let mut h: Vec<String> = ["index", "image", "question"].map(String::from).to_vec();
    h.extend((0..n_options).map(|k| option_letter(k).to_string()));
    h.extend(
        [
            "answer",
            "category",
            "type",
            "unit",
            "flag",
            "benchmark_group",
            "data_id",
        ]
        .map(String::from),
    );
    h
}

/// One evaluation TSV row. `image` is the base64 PNG, or (VLMEvalKit's space saving) the
/// `index` of an earlier row holding the same image.
pub fn tsv_row(index: usize, image: &str, q: &Question, n_options: usize) -> Vec<String> {
    let mut r = vec![index.to_string(), image.to_string(), q.text.clone()];
    r.extend((0..n_options).map(|k| q.options.get(k).cloned().unwrap_or_default()));
    r.push(q.answer.clone());
    r.push(q.category.name().into());
    r.push(q.kind.type_name().into());
    r.push(q.unit.map(|u| u.symbol().to_string()).unwrap_or_default());
    r.push(q.flag.name().into());
    r.push(q.category.benchmark_group().into());
    r.push(q.id.clone());
    r
}

/// Writes a complete evaluation TSV atomically. `rows` are `(image cell, question)` pairs.
pub fn write_eval_tsv(path: &Path, rows: &[(String, Question)]) -> Result<()> {
    let n_options = rows.iter().map(|(_, q)| q.options.len()).max().unwrap_or(0);
    let mut w = csv::WriterBuilder::new()
        .delimiter(b'\t')
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(Vec::new());
    let csv_err = |e: csv::Error| WorldError::Csv {
        path: path.to_path_buf(),
        source: e,
    };
    w.write_record(tsv_header(n_options)).map_err(csv_err)?;
    for (k, (img, q)) in rows.iter().enumerate() {
        w.write_record(tsv_row(k, img, q, n_options))
            .map_err(csv_err)?;
    }
    let bytes = w.into_inner().map_err(|e| WorldError::Csv {
        path: path.to_path_buf(),
        source: e.into_error().into(),
    })?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn depth_png_values_round_trip_to_half_a_millimetre(d in 0.001f32..65.0) {
            let v = depth_to_u16(&[d], WORLD_DEPTH_SCALE)[0];
            // Half a millimetre of rounding plus f32 precision at tens of metres.
            prop_assert!((v as f32 / WORLD_DEPTH_SCALE - d).abs() <= 0.0005 + 2e-5);
        }

        #[test]
        fn pixel_rays_project_back_to_their_pixel(
            px in 0u32..64, py in 0u32..48, pitch in 0.0f32..1.0, t in 0.5f32..30.0
        ) {
            let cam = crate::scene::Camera::new([0.0, 1.5, 0.0], pitch, 1.0, 64, 48);
            let (dir, to_depth) = cam.pixel_ray(px, py);
            let (u, v, z) = cam.project(cam.origin() + dir * t).unwrap();
            prop_assert!((u - px as f32 - 0.5).abs() < 1e-2 && (v - py as f32 - 0.5).abs() < 1e-2);
            prop_assert!((z - t * to_depth).abs() < 1e-3 * t);
        }
    }

    #[test]
    fn invalid_depth_is_zero_and_far_depth_saturates() {
        assert_eq!(
            depth_to_u16(&[0.0, f32::NAN, -1.0, 70.0], 1000.0),
            vec![0, 0, 0, 65535]
        );
    }
}
