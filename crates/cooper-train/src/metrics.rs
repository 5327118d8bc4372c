//! Training metrics: a JSONL log (one object per step), PNG curves drawn from it, and the
//! progress bar.
//!
//! Each line of `metrics.jsonl` is `{"step": N, "<name>": value, …}` with the names TRL logs
//! for GRPO (`loss`, `reward`, `reward_std`, `rewards/<name>/mean`, `rewards/<name>/std`,
//! `entropy`, `kl`, `clip_ratio/*`, `completions/mean_length`, …) plus `depth_nums`,
//! `segmentation_nums`, and the supervised stages' `loss`, `ce`, `mse`, `lr`, `grad_norm`.
//! Non-finite values are written as `null`. Lines are flushed one by one, so a crash loses at
//! most the line being written.
//!
//! Plots use `plotters`' bitmap backend with DejaVu Sans embedded in the binary (no system
//! fonts needed); the PNG is encoded with `image`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Once;

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;

use crate::error::{Result, TrainError};

/// One line of the metrics log.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRecord {
    /// Optimiser step.
    pub step: u64,
    /// Named values (NaN where the log has `null`).
    pub values: BTreeMap<String, f64>,
}

/// Appends one JSON object per step to a JSONL file.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, e))?;
        Ok(Self { path, file })
    }

    /// Opens `path` for a resumed run at `step`: lines of later steps (written after the
    /// checkpoint the run resumes from) are dropped first, so the log has no duplicates.
    pub fn resume(path: impl Into<PathBuf>, step: u64) -> Result<Self> {
        let path = path.into();
        if path.is_file() {
            let text = fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
            let mut kept = String::with_capacity(text.len());
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let value: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| TrainError::json(path.display().to_string(), e))?;
                let line_step = value.get("step").and_then(|s| s.as_u64());
                if line_step.is_none_or(|s| s <= step) {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            let mut tmp = tempfile::NamedTempFile::new_in(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            )
            .map_err(|e| TrainError::io(&path, e))?;
            tmp.write_all(kept.as_bytes())
                .map_err(|e| TrainError::io(&path, e))?;
            tmp.persist(&path)
                .map_err(|e| TrainError::io(&path, e.error))?;
        }
        Self::open(path)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line for `step` and flushes it.
    pub fn log(&mut self, step: u64, values: &BTreeMap<String, f64>) -> Result<()> {
        // Written by hand so that `step` comes first (serde_json's map sorts its keys).
        let mut line = format!("{{\"step\":{step}");
        for (name, &value) in values {
            if name == "step" {
                return Err(TrainError::Input("a metric may not be named `step`".into()));
            }
            let key =
                serde_json::to_string(name).map_err(|e| TrainError::json("metric name", e))?;
            let json = serde_json::Number::from_f64(value)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null);
            line.push(',');
            line.push_str(&key);
            line.push(':');
            line.push_str(&json.to_string());
        }
        line.push_str("}\n");
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Reads a metrics log (blank lines skipped; `null` becomes NaN; non-numeric fields ignored).
pub fn read_jsonl(path: &Path) -> Result<Vec<MetricRecord>> {
    let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut records = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| TrainError::json(format!("{} line {}", path.display(), i + 1), e))?;
        let object = value.as_object().ok_or_else(|| {
            TrainError::Input(format!(
                "{} line {} is not an object",
                path.display(),
                i + 1
            ))
        })?;
        let step = object.get("step").and_then(|s| s.as_u64()).ok_or_else(|| {
            TrainError::Input(format!("{} line {} has no step", path.display(), i + 1))
        })?;
        let values = object
            .iter()
            .filter(|(k, _)| k.as_str() != "step")
            .filter_map(|(k, v)| match v {
                serde_json::Value::Number(n) => n.as_f64().map(|f| (k.clone(), f)),
                serde_json::Value::Null => Some((k.clone(), f64::NAN)),
                _ => None,
            })
            .collect();
        records.push(MetricRecord { step, values });
    }
    Ok(records)
}

/// One PNG: a title and the metrics drawn on it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSpec {
    /// Chart caption.
    pub title: String,
    /// Metric names, one line each.
    pub metrics: Vec<String>,
}

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The embedded font is a valid TrueType file; if registration failed anyway, text would
        // be missing from the plot but drawing would still report the error.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn plot_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Plot(e.to_string())
}

/// Draws `spec.metrics` over steps from `records` into a `width`×`height` PNG at `out`
/// (written atomically). Non-finite points are skipped; a metric with no points is left out
/// of the legend; an error is returned if no metric has any point.
pub fn plot_metrics(
    records: &[MetricRecord],
    spec: &PlotSpec,
    out: &Path,
    (width, height): (u32, u32),
) -> Result<()> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = spec
        .metrics
        .iter()
        .map(|name| {
            let points = records
                .iter()
                .filter_map(|r| {
                    r.values
                        .get(name)
                        .filter(|v| v.is_finite())
                        .map(|&v| (r.step as f64, v))
                })
                .collect::<Vec<_>>();
            (name.as_str(), points)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    if series.is_empty() {
        return Err(TrainError::Plot(format!(
            "no finite values for {:?}",
            spec.metrics
        )));
    }
    if width < 64 || height < 64 {
        return Err(TrainError::Plot(format!(
            "image {width}×{height} is too small"
        )));
    }
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    let pad = if y1 > y0 {
        (y1 - y0) * 0.05
    } else {
        y0.abs().max(1.0) * 0.1
    };
    let (y0, y1) = (y0 - pad, y1 + pad);

    register_font();
    let mut buffer = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&spec.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer)
        .ok_or_else(|| TrainError::Plot("plot buffer has the wrong size".into()))?;
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let tmp = tempfile::Builder::new()
        .suffix(".png")
        .tempfile_in(dir)
        .map_err(|e| TrainError::io(dir, e))?;
    image
        .save_with_format(tmp.path(), image::ImageFormat::Png)
        .map_err(plot_err)?;
    tmp.persist(out).map_err(|e| TrainError::io(out, e.error))?;
    Ok(())
}

/// The standard plots of a run: `loss.png` (every metric whose name contains `loss`, plus `ce`
/// and `mse`), `reward.png` (`reward` and every `rewards/<name>/mean`) and `lr.png` (`lr`).
/// Plots with no data are skipped. Returns the files written.
pub fn plot_run(jsonl: &Path, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let records = read_jsonl(jsonl)?;
    let mut names: Vec<&String> = records.iter().flat_map(|r| r.values.keys()).collect();
    names.sort();
    names.dedup();
    let pick = |f: &dyn Fn(&str) -> bool| -> Vec<String> {
        names
            .iter()
            .filter(|n| f(n))
            .map(|n| n.to_string())
            .collect()
    };
    let specs = [
        (
            "loss.png",
            PlotSpec {
                title: "loss".into(),
                metrics: pick(&|n| n.contains("loss") || n == "ce" || n == "mse"),
            },
        ),
        (
            "reward.png",
            PlotSpec {
                title: "reward".into(),
                metrics: pick(&|n| {
                    n == "reward" || (n.starts_with("rewards/") && n.ends_with("/mean"))
                }),
            },
        ),
        (
            "lr.png",
            PlotSpec {
                title: "learning rate".into(),
                metrics: pick(&|n| n == "lr"),
            },
        ),
    ];
    let mut written = Vec::new();
    for (file, spec) in specs {
        let has_data = spec.metrics.iter().any(|m| {
            records
                .iter()
                .any(|r| r.values.get(m).is_some_and(|v| v.is_finite()))
        });
        if !has_data {
            continue;
        }
        let out = out_dir.join(file);
        plot_metrics(&records, &spec, &out, (960, 540))?;
        written.push(out);
    }
    Ok(written)
}

/// A progress bar over `total` steps starting at `start` (hidden when stderr is not a
/// terminal, as indicatif does).
pub fn progress_bar(total: u64, start: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} steps ({eta}) {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(start.min(total));
    bar
}

/// The message shown beside the bar: a few metrics, compactly.
pub fn progress_message(values: &BTreeMap<String, f64>, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|k| values.get(*k).map(|v| format!("{k} {v:.4}")))
        .collect::<Vec<_>>()
        .join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn writer_appends_flushed_lines_and_nan_becomes_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/metrics.jsonl");
        let mut w = MetricsWriter::open(&path).unwrap();
        w.log(1, &values(&[("loss", 2.5), ("reward", f64::NAN)]))
            .unwrap();
        // Flushed: readable before the writer is dropped.
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"step\":1,\"loss\":2.5,\"reward\":null}\n");
        drop(w);
        let mut w = MetricsWriter::open(&path).unwrap();
        w.log(2, &values(&[("loss", 1.5)])).unwrap();
        let records = read_jsonl(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].step, 2);
        assert_eq!(records[1].values["loss"], 1.5);
        assert!(records[0].values["reward"].is_nan());
        assert!(w.log(3, &values(&[("step", 1.0)])).is_err());
    }

    #[test]
    fn resume_drops_lines_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut w = MetricsWriter::open(&path).unwrap();
        for step in 1..=5 {
            w.log(step, &values(&[("loss", step as f64)])).unwrap();
        }
        drop(w);
        let mut w = MetricsWriter::resume(&path, 3).unwrap();
        w.log(4, &values(&[("loss", 40.0)])).unwrap();
        let steps: Vec<u64> = read_jsonl(&path).unwrap().iter().map(|r| r.step).collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        assert_eq!(read_jsonl(&path).unwrap()[3].values["loss"], 40.0);
    }

    #[test]
    fn plots_are_valid_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut w = MetricsWriter::open(&path).unwrap();
        for step in 0..50u64 {
            let s = step as f64;
            w.log(
                step,
                &values(&[
                    ("loss", 2.0 * (-s / 15.0).exp() + 0.1),
                    ("reward", 0.2 + 0.6 * (1.0 - (-s / 20.0).exp())),
                    (
                        "rewards/accuracy/mean",
                        0.1 + 0.5 * (1.0 - (-s / 25.0).exp()),
                    ),
                    ("rewards/format/mean", (s / 40.0).min(1.0)),
                    ("rewards/format/std", 0.3),
                    ("lr", 1e-5 * (s / 10.0).min(1.0)),
                ]),
            )
            .unwrap();
        }
        drop(w);
        let out = dir.path().join("plots");
        let written = plot_run(&path, &out).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec!["loss.png", "reward.png", "lr.png"]);
        for file in &written {
            let img = image::open(file).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (960, 540));
            // Not blank: some pixels are far from white (lines, text, axes).
            let dark = img
                .pixels()
                .filter(|p| p.0.iter().all(|&c| c < 128))
                .count();
            assert!(dark > 500, "{} has only {dark} dark pixels", file.display());
        }
        if let Ok(keep) = std::env::var("COOPER_TRAIN_KEEP_PLOT") {
            fs::copy(&written[1], keep).unwrap();
        }
        // A metric that never appears cannot be plotted.
        let records = read_jsonl(&path).unwrap();
        let spec = PlotSpec {
            title: "missing".into(),
            metrics: vec!["entropy".into()],
        };
        assert!(plot_metrics(&records, &spec, &out.join("x.png"), (300, 200)).is_err());
        // A constant series still gets a usable range.
        let spec = PlotSpec {
            title: "flat".into(),
            metrics: vec!["rewards/format/std".into()],
        };
        plot_metrics(&records, &spec, &out.join("flat.png"), (300, 200)).unwrap();
        assert!(image::open(out.join("flat.png")).is_ok());
    }

    #[test]
    fn progress_helpers() {
        let bar = progress_bar(10, 3);
        assert_eq!(bar.position(), 3);
        let msg = progress_message(&values(&[("loss", 0.5), ("lr", 1e-5)]), &["loss", "reward"]);
        assert_eq!(msg, "loss 0.5000");
    }
}
