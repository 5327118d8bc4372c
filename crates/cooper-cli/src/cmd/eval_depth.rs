//! `cooper eval-depth`: depth metrics (AbsRel, δ1 … after least-squares scale-and-shift alignment)
//! of a folder of predicted relative-depth PNGs against a folder of metric ground-truth PNGs.
//! The defaults are NYUv2's (scale factor 1000, depth range 1e-3 … 10 m); for KITTI use
//! `--scale-factor 256 --min-depth 1e-5 --max-depth 80 --crop kitti`.

use std::path::PathBuf;

use anyhow::Context;
use cooper_eval::depth_metrics::{Crop, DepthRange};
use cooper_eval::maps::{evaluate_depth_folders, DepthEvalConfig};

#[derive(clap::Args, Debug)]
pub struct EvalDepthArgs {
    /// Folder of predicted relative-depth PNGs (16-bit: value / 65535; 8-bit: value / 255).
    #[arg(long)]
    pub pred: PathBuf,
    /// Folder of ground-truth metric-depth PNGs; paired with predictions by file name.
    #[arg(long)]
    pub gt: PathBuf,
    /// Ground-truth PNG value per metre (NYUv2 1000, KITTI 256).
    #[arg(long, default_value_t = 1000.0)]
    pub scale_factor: f64,
    /// Smallest valid ground-truth depth in metres (exclusive).
    #[arg(long, default_value_t = 1e-3)]
    pub min_depth: f64,
    /// Largest valid ground-truth depth in metres (exclusive); also the clamp of aligned predictions.
    #[arg(long, default_value_t = 10.0)]
    pub max_depth: f64,
    /// Evaluation crop: `none`, `nyu` (rows 45..471, cols 41..601), `kitti` (Eigen crop), or
    /// `TOP:BOTTOM,LEFT:RIGHT` in pixels.
    #[arg(long, default_value = "none")]
    pub crop: Crop,
    /// Also write the full report (mean and per-image metrics, scale and shift) as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: EvalDepthArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.min_depth < args.max_depth,
        "--min-depth ({}) must be below --max-depth ({})",
        args.min_depth,
        args.max_depth
    );
    let cfg = DepthEvalConfig {
        pred_dir: args.pred,
        gt_dir: args.gt,
        scale_factor: args.scale_factor,
        range: DepthRange {
            min: args.min_depth,
            max: args.max_depth,
        },
        crop: args.crop,
    };
    let report = evaluate_depth_folders(&cfg).context("depth evaluation failed")?;
    print!("{}", report.render_markdown());
    if let Some(out) = args.out {
        cooper_eval::report::write_json(&out, &report)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
