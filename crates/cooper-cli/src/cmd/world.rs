//! `cooper world`: generate a synthetic spatial dataset in every training/evaluation format.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use cooper_world::{write_dataset, SceneConfig, WorldConfig};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct WorldArgs {
    /// Generation seed; the same seed gives byte-identical output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of scenes.
    #[arg(long, default_value_t = 100)]
    pub scenes: u64,
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Image width in pixels.
    #[arg(long, default_value_t = 128)]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 128)]
    pub height: u32,
    /// Questions per scene.
    #[arg(long, default_value_t = 6)]
    pub questions: usize,
    /// SFT chains (interleaved and text-only each) per scene.
    #[arg(long, default_value_t = 1)]
    pub chains: usize,
    /// Fewest objects per scene.
    #[arg(long, default_value_t = 3)]
    pub min_objects: usize,
    /// Most objects per scene.
    #[arg(long, default_value_t = 7)]
    pub max_objects: usize,
    /// Probability that a scene has walls.
    #[arg(long, default_value_t = 0.5)]
    pub room_probability: f64,
    /// Farthest an object is placed from the camera, metres (nearer objects look larger).
    #[arg(long, default_value_t = 8.0)]
    pub max_distance: f32,
    /// Open every SFT chain's first thinking turn with the picture's cell-by-cell listing, and
    /// answer counting and existence questions from it.
    #[arg(long)]
    pub listing_thoughts: bool,
    /// Open every SFT chain's first thinking turn with the picture's scene description (the text
    /// of `sft_describe.jsonl`), and answer counting, existence, colour and shape from it.
    #[arg(long, conflicts_with = "listing_thoughts")]
    pub description_thoughts: bool,
    /// Multiple-choice chains (and RL rows) answer with the option's text, `\boxed{ red}` (every
    /// box opening with a space), which the evaluation maps to its letter, instead of the letter;
    /// their first thought restates the options.
    #[arg(long)]
    pub option_text_answers: bool,
    /// With --description-thoughts, spatial-relation and depth-order chains reason from the
    /// description: both objects' places or distances, the relation that holds, then the
    /// question's own phrase and the verdict.
    #[arg(long, requires = "description_thoughts")]
    pub relation_reasons: bool,
    /// Yes/no chains (existence, occlusion, spatial relation, depth order) open their first
    /// thought with the question word for word, where the picture puts its objects, and the
    /// verdict, in place of the description or listing.
    #[arg(long)]
    pub verdict_first: bool,
    /// Existence and spatial-relation (and depth-order yes/no) chains say what the question looks
    /// for, in its words, right before their verdict ("The question looks for a cyan object.").
    #[arg(long)]
    pub target_first: bool,
    /// With --description-thoughts, the objects the scene description of a chain's opening
    /// lists are given to the model as context in its SFT row, not learnt there: the lists are
    /// learnt from `sft_describe.jsonl`, where no question is in view to copy objects from.
    #[arg(long, requires = "description_thoughts")]
    pub given_descriptions: bool,
    /// With --description-thoughts, every chain row is describe-first: after the picture, the
    /// description request and the scene description (learnt before the question is in view),
    /// then the question and a chain that reads that description. Train with
    /// `--set sft.describe_first=true`, so that the model is asked the same way.
    #[arg(
        long,
        requires = "description_thoughts",
        conflicts_with = "given_descriptions"
    )]
    pub describe_first: bool,
    /// Also write this many text-only option lookups, two options each
    /// (`sft_lookup_two.jsonl`) and two to four (`sft_lookup.jsonl`): the curriculum that
    /// teaches a from-scratch LLM to find an option by its text.
    #[arg(long, default_value_t = 0)]
    pub lookup_rows: u64,
}

pub fn run(args: WorldArgs) -> anyhow::Result<()> {
    let config = WorldConfig {
        seed: args.seed,
        scenes: args.scenes,
        scene: SceneConfig {
            width: args.width,
            height: args.height,
            min_objects: args.min_objects,
            max_objects: args.max_objects,
            room_probability: args.room_probability,
            max_distance: args.max_distance,
            ..SceneConfig::default()
        },
        questions_per_scene: args.questions,
        chains_per_scene: args.chains,
        listing_thoughts: args.listing_thoughts,
        description_thoughts: args.description_thoughts,
        option_text_answers: args.option_text_answers,
        relation_reasons: args.relation_reasons,
        verdict_first: args.verdict_first,
        target_first: args.target_first,
        given_descriptions: args.given_descriptions,
        describe_first: args.describe_first,
        lookup_rows: args.lookup_rows,
    };
    let bar = ProgressBar::new(args.scenes);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} scenes  {per_sec}  eta {eta}")
            .context("progress bar template")?,
    );
    let start = Instant::now();
    let summary = write_dataset(&config, &args.out, &|n| bar.inc(n))
        .with_context(|| format!("generating the world into {}", args.out.display()))?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "wrote {} scenes ({} objects, {} questions, {} + {} SFT chains, {} descriptions, {} cell listings, {} lookups a file, {} option restatements, {} description lookups) to {} in {:.1} s: {:.1} scenes/s",
        summary.scenes,
        summary.objects,
        summary.questions,
        summary.sft_interleaved,
        summary.sft_text,
        summary.sft_describe,
        summary.sft_cells,
        summary.sft_lookup,
        summary.sft_restate,
        summary.sft_description_lookups,
        args.out.display(),
        secs,
        summary.scenes as f64 / secs.max(1e-9)
    );
    Ok(())
}
