//! `cooper depth` and `cooper segment`: a depth or segmentation map of a picture from the unified
//! model's image head.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use cooper_infer::decode::{decode_depth, decode_image};
use cooper_infer::image_io::{load_image, LoadLimits};
use cooper_infer::perceive::{perceive, perception_params};
use cooper_infer::reasoning::tags::Tool;

use super::common::ModelArgs;

#[derive(clap::Args)]
pub struct PerceiveArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The picture (any common format).
    #[arg(long)]
    image: PathBuf,
    /// Output PNG (depth: Spectral-coloured, near = red; segmentation: the RGB map).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Depth only: also write relative depth in [0, 1] as a 16-bit grayscale PNG here.
    #[arg(long)]
    depth16: Option<PathBuf>,
    /// Flow steps (official: 50).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Seed of the initial noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Saves through a temporary file in the same folder, so no partial PNG is left behind.
fn save_png<P, C>(img: &image::ImageBuffer<P, C>, path: &Path) -> Result<()>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let tmp = path.with_extension(format!("tmp{}.png", std::process::id()));
    img.save_with_format(&tmp, image::ImageFormat::Png)
        .and_then(|_| std::fs::rename(&tmp, path).map_err(image::ImageError::IoError))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: PerceiveArgs, tool: Tool) -> Result<()> {
    let image = load_image(&args.image, &LoadLimits::default())?;
    let engine = args.model.load()?;
    let mut params = perception_params(args.seed);
    params.num_timesteps = args.steps;
    let resize = engine.default_reason_params().vae_resize;
    let raw = perceive(&engine, &image, tool, &resize, &params)?;
    match tool {
        Tool::Depth => {
            let depth = decode_depth(&raw)?;
            save_png(&depth.to_spectral(), &args.out)?;
            if let Some(p) = &args.depth16 {
                save_png(&depth.to_luma16(), p)?;
            }
        }
        Tool::Segmentation => save_png(&decode_image(&raw)?, &args.out)?,
    }
    println!("wrote {}", args.out.display());
    Ok(())
}
