//! Generates a dataset and reports scenes/s (the library path behind `cooper world`).
//! Usage: `cargo run --release -p cooper-world --example generate -- SEED SCENES OUT`

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: generate SEED SCENES OUT".into());
    }
    let config = cooper_world::WorldConfig {
        seed: args[1].parse()?,
        scenes: args[2].parse()?,
        ..Default::default()
    };
    let start = Instant::now();
    let summary = cooper_world::write_dataset(&config, args[3].as_ref(), &|_| {})?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} scenes, {} questions in {secs:.2} s: {:.1} scenes/s",
        summary.scenes,
        summary.questions,
        summary.scenes as f64 / secs
    );
    Ok(())
}
