//! `cooper bench`: speed and memory of the engine on one or more model folders, as a table.
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use cooper_infer::bench::{run_bench, BenchSettings};

use super::common::{parse_device, parse_dtype};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Model folder to measure (see `cooper init`).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value_t = 256)]
    prefill_tokens: usize,
    #[arg(long, default_value_t = 32)]
    decode_tokens: usize,
    /// Side of the generated square picture in pixels (capped by the model's latent table).
    #[arg(long, default_value_t = 256)]
    image_side: usize,
    #[arg(long, default_value_t = 3)]
    flow_steps: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    let settings = BenchSettings {
        prefill_tokens: args.prefill_tokens,
        decode_tokens: args.decode_tokens,
        image_side: args.image_side,
        flow_steps: args.flow_steps,
    };
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let r = run_bench(&args.model, &device, dtype, &settings)
        .with_context(|| format!("benchmarking {}", args.model.display()))?;
    println!("| model | dtype | load s | prefill tok/s | decode tok/s | image tokens | s / flow step (3 CFG passes) | s / AE encode | s / AE decode | peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.2} | {:.1} | {:.2} | {} | {:.3} | {:.3} | {:.3} | {} |",
        r.model,
        r.dtype,
        r.load_seconds,
        r.prefill_tokens_per_second,
        r.decode_tokens_per_second,
        r.image_tokens,
        r.seconds_per_flow_step,
        r.seconds_per_ae_encode,
        r.seconds_per_ae_decode,
        r.peak_rss_bytes
            .map_or("n/a".into(), |b| format!("{:.0}", b as f64 / 1048576.0)),
    );
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&r)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
