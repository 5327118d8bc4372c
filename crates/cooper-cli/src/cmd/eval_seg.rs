//! `cooper eval-seg`: mean IoU and pixel accuracy of a folder of predicted segmentation PNGs
//! against a folder of ground-truth PNGs, either colour maps with a palette (predicted colours
//! snapped to the nearest palette colour) or class-id maps.

use std::path::PathBuf;

use anyhow::Context;
use cooper_eval::maps::{evaluate_seg_folders, SegEncoding, SegEvalConfig};
use cooper_eval::seg_metrics::Palette;

#[derive(clap::Args, Debug)]
pub struct EvalSegArgs {
    /// Folder of predicted segmentation PNGs.
    #[arg(long)]
    pub pred: PathBuf,
    /// Folder of ground-truth PNGs; paired with predictions by file name.
    #[arg(long)]
    pub gt: PathBuf,
    /// Palette for colour maps: a JSON array of [r, g, b], or one `r g b` / `r,g,b` / `#rrggbb`
    /// per line; class i is the i-th colour. Ground-truth colours outside it are ignored.
    /// Without a palette the maps are read as class ids.
    #[arg(long, conflicts_with = "num_classes")]
    pub palette: Option<PathBuf>,
    /// With a palette: count off-palette predicted colours as wrong instead of snapping them to
    /// the nearest palette colour.
    #[arg(long, requires = "palette")]
    pub no_snap: bool,
    /// Number of classes of class-id maps (required without --palette).
    #[arg(long, required_unless_present = "palette")]
    pub num_classes: Option<usize>,
    /// Ground-truth class id to ignore in class-id maps.
    #[arg(long, default_value_t = 255)]
    pub ignore_index: u16,
    /// Also write the report (with per-class IoU) as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: EvalSegArgs) -> anyhow::Result<()> {
    let encoding = match (&args.palette, args.num_classes) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading palette {}", path.display()))?;
            let palette =
                Palette::parse(&text).with_context(|| format!("palette {}", path.display()))?;
            SegEncoding::Palette {
                palette,
                snap: !args.no_snap,
            }
        }
        (None, Some(classes)) => SegEncoding::ClassIds {
            classes,
            ignore: Some(args.ignore_index),
        },
        (None, None) => {
            anyhow::bail!("give --palette for colour maps or --num-classes for class ids")
        }
    };
    let cfg = SegEvalConfig {
        pred_dir: args.pred,
        gt_dir: args.gt,
        encoding,
    };
    let report = evaluate_seg_folders(&cfg).context("segmentation evaluation failed")?;
    print!("{}", report.render_markdown());
    if let Some(out) = args.out {
        cooper_eval::report::write_json(&out, &report)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
