//! Writes a [`ReasonTrace`] as a folder: `trace.json`, the PNGs and a self-contained
//! `index.html`. Everything is written into a temporary folder beside the target, which is
//! then renamed into place, so an interrupted write leaves no partial trace behind.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageFormat, RgbImage};
use serde::Serialize;

use super::{html, ImageRole, ReasonTrace, StopReason, TextRole, TraceEntry, TurnOutcome};
use crate::error::{InferError, Result};
use crate::params::{Mode, ReasonParams};

/// Version tag of the `trace.json` layout.
pub const TRACE_FORMAT: &str = "cooper-trace/1";

/// What [`write_trace`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceFiles {
    /// The trace folder.
    pub dir: PathBuf,
    /// `trace.json`.
    pub json: PathBuf,
    /// `index.html`.
    pub html: PathBuf,
    /// Every PNG, in chain order.
    pub images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct TraceDoc<'a> {
    format: &'static str,
    mode: Mode,
    question: &'a str,
    settings: &'a ReasonParams,
    original_size: [u32; 2],
    entries: Vec<EntryDoc<'a>>,
    final_answer: Option<&'a str>,
    boxed_answer: Option<&'a str>,
    stop_reason: StopReason,
    total_ms: f64,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum EntryDoc<'a> {
    Text {
        role: TextRole,
        text: &'a str,
    },
    ModelTurn {
        turn: usize,
        text: &'a str,
        outcome: TurnOutcome,
        seed: u64,
        elapsed_ms: f64,
    },
    Image {
        role: ImageRole,
        path: String,
        width: u32,
        height: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        depth16_path: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        elapsed_ms: Option<f64>,
    },
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A picture to put in the folder and the HTML.
pub(super) struct Picture {
    pub name: String,
    pub png: Vec<u8>,
}

fn encode_png<P, C>(img: &image::ImageBuffer<P, C>, name: &str) -> Result<Vec<u8>>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .map_err(|source| InferError::ImageEncode {
            name: name.to_string(),
            source,
        })?;
    Ok(out.into_inner())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    fs::write(path, bytes).map_err(|source| InferError::TraceIo {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `trace` into the folder `dir`, which must not exist yet or be empty.
pub fn write_trace(trace: &ReasonTrace, dir: &Path) -> Result<TraceFiles> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InferError::TraceIo { path, source }
    };
    if dir.exists() {
        let mut it = fs::read_dir(dir).map_err(io_err(dir))?;
        if it.next().is_some() {
            return Err(InferError::TraceIo {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the trace folder exists and is not empty",
                ),
            });
        }
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".cooper-trace-")
        .tempdir_in(&parent)
        .map_err(io_err(&parent))?;

    let mut pictures: Vec<Picture> = Vec::new();
    let mut entries = Vec::with_capacity(trace.entries.len());
    let mut generated = 0usize;
    for entry in &trace.entries {
        entries.push(match entry {
            TraceEntry::Text { role, text } => EntryDoc::Text { role: *role, text },
            TraceEntry::ModelTurn {
                turn,
                text,
                outcome,
                seed,
                elapsed,
            } => EntryDoc::ModelTurn {
                turn: *turn,
                text,
                outcome: *outcome,
                seed: *seed,
                elapsed_ms: ms(*elapsed),
            },
            TraceEntry::Image {
                role,
                image,
                depth,
                seed,
                elapsed,
            } => {
                let stem = match role {
                    ImageRole::Input => "input".to_string(),
                    ImageRole::Depth => {
                        generated += 1;
                        format!("map{generated:02}_depth")
                    }
                    ImageRole::Segmentation => {
                        generated += 1;
                        format!("map{generated:02}_segmentation")
                    }
                };
                let name = format!("{stem}.png");
                pictures.push(Picture {
                    png: encode_png::<image::Rgb<u8>, Vec<u8>>(image as &RgbImage, &name)?,
                    name: name.clone(),
                });
                let depth16_path = match depth {
                    Some(d) => {
                        let n16 = format!("{stem}16.png");
                        pictures.push(Picture {
                            png: encode_png(&d.to_luma16(), &n16)?,
                            name: n16.clone(),
                        });
                        Some(n16)
                    }
                    None => None,
                };
                EntryDoc::Image {
                    role: *role,
                    path: name,
                    width: image.width(),
                    height: image.height(),
                    depth16_path,
                    seed: *seed,
                    elapsed_ms: elapsed.map(ms),
                }
            }
        });
    }
    let doc = TraceDoc {
        format: TRACE_FORMAT,
        mode: trace.mode,
        question: &trace.question,
        settings: &trace.params,
        original_size: [trace.original_size.0, trace.original_size.1],
        entries,
        final_answer: trace.final_answer.as_deref(),
        boxed_answer: trace.boxed_answer.as_deref(),
        stop_reason: trace.stop,
        total_ms: ms(trace.elapsed),
    };

    for p in &pictures {
        write(&tmp.path().join(&p.name), &p.png)?;
    }
    let json = serde_json::to_string_pretty(&doc)?;
    write(&tmp.path().join("trace.json"), json.as_bytes())?;
    let page = html::render(trace, &pictures);
    write(&tmp.path().join("index.html"), page.as_bytes())?;

    if dir.exists() {
        fs::remove_dir(dir).map_err(io_err(dir))?;
    }
    let kept = tmp.keep();
    if let Err(source) = fs::rename(&kept, dir) {
        // Leave nothing half-done behind.
        let _ = fs::remove_dir_all(&kept);
        return Err(InferError::TraceIo {
            path: dir.to_path_buf(),
            source,
        });
    }
    Ok(TraceFiles {
        dir: dir.to_path_buf(),
        json: dir.join("trace.json"),
        html: dir.join("index.html"),
        images: pictures.iter().map(|p| dir.join(&p.name)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::decode::DepthMap;
    use crate::reasoning::tags::Tool;

    fn sample_trace() -> ReasonTrace {
        let depth = DepthMap {
            width: 2,
            height: 2,
            data: vec![0.0, 0.25, 0.5, 1.0],
        };
        ReasonTrace {
            mode: Mode::Cooper,
            question: "Is <b> closer & why?".into(),
            params: ReasonParams::default(),
            original_size: (4, 4),
            entries: vec![
                TraceEntry::Text {
                    role: TextRole::System,
                    text: "sys".into(),
                },
                TraceEntry::Image {
                    role: ImageRole::Input,
                    image: RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3])),
                    depth: None,
                    seed: None,
                    elapsed: None,
                },
                TraceEntry::ModelTurn {
                    turn: 1,
                    text: "<think>x</think><depth-estimation>d</depth-estimation>".into(),
                    outcome: TurnOutcome::ToolCall(Tool::Depth),
                    seed: 0,
                    elapsed: Duration::from_millis(12),
                },
                TraceEntry::Image {
                    role: ImageRole::Depth,
                    image: depth.to_spectral(),
                    depth: Some(depth),
                    seed: Some(5),
                    elapsed: Some(Duration::from_millis(30)),
                },
                TraceEntry::ModelTurn {
                    turn: 2,
                    text: "<answer>\\boxed{A}</answer>".into(),
                    outcome: TurnOutcome::Answer,
                    seed: 1,
                    elapsed: Duration::from_millis(7),
                },
            ],
            final_answer: Some("\\boxed{A}".into()),
            boxed_answer: Some("A".into()),
            stop: StopReason::Answered,
            elapsed: Duration::from_millis(60),
        }
    }

    #[test]
    fn writes_json_pngs_and_inline_html() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run1");
        let files = write_trace(&sample_trace(), &dir).unwrap();
        let names: Vec<_> = files
            .images
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["input.png", "map01_depth.png", "map01_depth16.png"]);
        for p in &files.images {
            image::open(p).unwrap();
        }
        let d16 = image::open(dir.join("map01_depth16.png"))
            .unwrap()
            .to_luma16();
        assert_eq!(d16.as_raw(), &vec![0, 16384, 32768, 65535]);

        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&files.json).unwrap()).unwrap();
        assert_eq!(json["format"], TRACE_FORMAT);
        assert_eq!(json["mode"], "cooper");
        assert_eq!(json["settings"]["image"]["cfg_text_scale"], 4.0);
        assert_eq!(json["entries"][2]["kind"], "model_turn");
        assert_eq!(json["entries"][2]["outcome"]["tool_call"], "depth");
        assert_eq!(json["entries"][3]["depth16_path"], "map01_depth16.png");
        assert_eq!(json["entries"][3]["seed"], 5);
        assert_eq!(json["boxed_answer"], "A");
        assert_eq!(json["stop_reason"], "answered");

        let html = fs::read_to_string(&files.html).unwrap();
        assert_eq!(html.matches("data:image/png;base64,").count(), 2);
        assert!(html.contains("Is &lt;b&gt; closer &amp; why?"));
        assert!(!html.contains("<b> closer"));
        // No temporary folder is left beside the trace.
        let leftovers: Vec<_> = fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn refuses_a_non_empty_folder_and_accepts_an_empty_one() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("busy");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("keep.txt"), b"x").unwrap();
        assert!(matches!(
            write_trace(&sample_trace(), &dir),
            Err(InferError::TraceIo { .. })
        ));
        assert!(dir.join("keep.txt").exists());
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);

        let empty = root.path().join("empty");
        fs::create_dir(&empty).unwrap();
        write_trace(&sample_trace(), &empty).unwrap();
        assert!(empty.join("trace.json").exists());
    }
}
