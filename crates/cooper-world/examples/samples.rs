//! Writes sample images (RGB, Spectral-coloured depth, segmentation) of a few scenes.
//! Usage: `cargo run -p cooper-world --example samples -- OUT_DIR`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).ok_or("usage: samples OUT_DIR")?;
    let out = std::path::Path::new(&out);
    let config = cooper_world::WorldConfig {
        seed: 1,
        ..Default::default()
    };
    for i in 0..3 {
        let g = cooper_world::generate_scene(&config, i);
        let id = &g.scene.id;
        let write = |name: &str, img: &image::RgbImage| {
            cooper_world::formats::write_atomic(
                &out.join(format!("{id}_{name}.png")),
                &cooper_world::formats::png_rgb(img)?,
            )
        };
        write("rgb", &g.frame.rgb)?;
        write("depth", &g.frame.depth_colors())?;
        write("seg", &g.frame.semantic_colors())?;
        for q in &g.questions {
            println!(
                "{id}: {} -> {} ({})",
                q.prompt().replace('\n', " | "),
                q.answer,
                q.flag.name()
            );
        }
    }
    Ok(())
}
