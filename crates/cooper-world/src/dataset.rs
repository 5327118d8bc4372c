//! End-to-end generation: sample, render, ask, write every format.
//!
//! Scene `i` under seed `s` uses its own ChaCha8 generator (seed `s`, stream `i`), so the output
//! does not depend on the number of threads; scenes are rendered in parallel (rayon) in chunks
//! and the index files are written in scene order.

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::chains::{
    cells_chain, described_objects_chars, description_chain, description_lookup, interleaved_chain,
    scene_description, text_chain, ChainStyle, Opening,
};
use crate::error::{Result, WorldError};
use crate::formats::{
    cells_row, depth_to_u16, describe_first_row, description_lookup_row, description_row, png_rgb,
    png_u16, restatement_row, rl_row, sft_row, tsv_header, tsv_row, with_given_span, write_atomic,
    AtomicFile, ChainImages, RlRow, SftRow, Stage1DepthRow, Stage1SegRow, WORLD_DEPTH_SCALE,
};
use crate::lookups::{write_lookups, OptionCount};
use crate::palette::SemanticClass;
use crate::questions::{generate_questions, Question};
use crate::render::{render, Frame, FAR_CLIP};
use crate::scene::{sample_scene, Scene, SceneConfig};

/// Option columns in the evaluation TSV (the most options any question has).
pub const TSV_OPTIONS: usize = 4;

/// Settings for a generated dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldConfig {
    pub seed: u64,
    pub scenes: u64,
    pub scene: SceneConfig,
    /// Questions asked per scene (fewer when the scene does not support enough).
    pub questions_per_scene: usize,
    /// SFT chains (interleaved and text-only each) per scene, taken from its first questions.
    pub chains_per_scene: usize,
    /// Open every chain's first thinking turn with the picture's cell listing, and answer counts
    /// and existence from it ([`crate::chains::interleaved_chain`]).
    #[serde(default)]
    pub listing_thoughts: bool,
    /// Open every chain's first thinking turn with the picture's scene description instead, and
    /// answer counts, existence, colour and shape from it (not with `listing_thoughts`).
    #[serde(default)]
    pub description_thoughts: bool,
    /// Multiple-choice chains and RL rows answer with the option's text rather than its letter
    /// ([`crate::chains::ChainStyle::option_text_answers`]).
    #[serde(default)]
    pub option_text_answers: bool,
    /// With `description_thoughts`, spatial-relation and depth-order chains reason from the
    /// description to their verdict ([`crate::chains::ChainStyle::relation_reasons`]).
    #[serde(default)]
    pub relation_reasons: bool,
    /// Yes/no chains open with the question, its objects as the picture shows them and the
    /// verdict ([`crate::chains::ChainStyle::verdict_first`]).
    #[serde(default)]
    pub verdict_first: bool,
    /// Existence and relation chains name what the question looks for before their verdict
    /// ([`crate::chains::ChainStyle::target_first`]).
    #[serde(default)]
    pub target_first: bool,
    /// The objects the scene description of a chain's opening lists are context in its SFT row,
    /// not learnt there (`given_from` and `loss_start`): the model learns to list a picture's
    /// objects from `sft_describe.jsonl` alone, where no question is in view. Learnt inside a
    /// chain, the list follows the question, and the twenty-fourth run's chains wrote the
    /// asked-for object into it whether the picture held it or not (docs/results.md). The chains
    /// still learn to open the description and to read it.
    #[serde(default)]
    pub given_descriptions: bool,
    /// Every chain row is in the describe-first layout ([`crate::formats::describe_first_row`]):
    /// after the picture, the description request and the scene description (learnt), then the
    /// question and the chain, whose first thought reads the description instead of repeating
    /// it. A model trained so is asked the same way (`sft.describe_first`, `reasoning_config.json`).
    /// With the description learnt after the question, the twenty-first to thirty-first runs'
    /// descriptions copied the question's objects (docs/results.md).
    #[serde(default)]
    pub describe_first: bool,
    /// Rows of each text-only lookup file (`sft_lookup_two.jsonl`, `sft_lookup.jsonl`;
    /// [`crate::lookups`]); 0 writes neither.
    #[serde(default)]
    pub lookup_rows: u64,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            scenes: 100,
            scene: SceneConfig::default(),
            questions_per_scene: 6,
            chains_per_scene: 1,
            listing_thoughts: false,
            description_thoughts: false,
            option_text_answers: false,
            relation_reasons: false,
            verdict_first: false,
            target_first: false,
            given_descriptions: false,
            describe_first: false,
            lookup_rows: 0,
        }
    }
}

impl WorldConfig {
    /// How this world's chains are written; an error when both openings are asked for.
    pub fn chain_style(&self) -> Result<ChainStyle> {
        let opening = match (self.listing_thoughts, self.description_thoughts) {
            (false, false) => Opening::Plain,
            (true, false) => Opening::CellListing,
            (false, true) => Opening::Description,
            (true, true) => return Err(WorldError::Config(
                "listing_thoughts and description_thoughts both open the first thought; choose one"
                    .into(),
            )),
        };
        // The settings that work on the scene description a chain opens with.
        let need_description = [
            (
                self.given_descriptions,
                "given_descriptions leaves the scene description unlearnt in the chains: it needs description_thoughts",
            ),
            (
                self.describe_first,
                "describe_first moves the scene description before the question: it needs description_thoughts",
            ),
            (
                self.relation_reasons,
                "relation_reasons reads the scene description: it needs description_thoughts",
            ),
        ];
        if let Some((_, why)) = need_description
            .iter()
            .find(|(set, _)| *set && opening != Opening::Description)
        {
            return Err(WorldError::Config((*why).into()));
        }
        if self.describe_first && self.given_descriptions {
            return Err(WorldError::Config(
                "describe_first learns the description before the question and given_descriptions leaves it unlearnt in the chains; choose one"
                    .into(),
            ));
        }
        Ok(ChainStyle {
            opening,
            option_text_answers: self.option_text_answers,
            relation_reasons: self.relation_reasons,
            verdict_first: self.verdict_first,
            target_first: self.target_first,
        })
    }
}

/// The generator of scene `index` under `seed`; `stream` separates its uses (0 = scene,
/// 1 = questions, 2 = chains).
pub fn scene_rng(seed: u64, index: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.set_stream(index);
    rng
}

/// A scene with its rendering and questions.
#[derive(Debug, Clone)]
pub struct GeneratedScene {
    pub scene: Scene,
    pub frame: Frame,
    pub questions: Vec<Question>,
}

/// Samples, renders and questions scene `index` (deterministic in `config.seed` and `index`).
/// Settings from users should pass [`SceneConfig::validate`] first ([`write_dataset`] does).
pub fn generate_scene(config: &WorldConfig, index: u64) -> GeneratedScene {
    let scene = sample_scene(
        &config.scene,
        config.seed,
        index,
        &mut scene_rng(config.seed, index, 0),
    );
    let frame = render(&scene);
    let questions = generate_questions(
        &scene,
        &frame,
        config.questions_per_scene,
        &mut scene_rng(config.seed, index, 1),
    );
    GeneratedScene {
        scene,
        frame,
        questions,
    }
}

/// Counts of what [`write_dataset`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    pub scenes: u64,
    pub objects: u64,
    pub questions: u64,
    pub sft_interleaved: u64,
    pub sft_text: u64,
    /// Scene descriptions (`sft_describe.jsonl`, one per scene).
    #[serde(default)]
    pub sft_describe: u64,
    /// Cell listings (`sft_cells.jsonl`, one per scene).
    #[serde(default)]
    pub sft_cells: u64,
    /// Rows of each lookup file (`WorldConfig::lookup_rows`).
    #[serde(default)]
    pub sft_lookup: u64,
    /// Option restatements (`sft_restate.jsonl`, one per multiple-choice question; written only
    /// with `WorldConfig::option_text_answers`).
    #[serde(default)]
    pub sft_restate: u64,
    /// Description lookups (`sft_description_lookups.jsonl`, one per question whose answer the
    /// chains read off the description; written only with `WorldConfig::description_thoughts`).
    #[serde(default)]
    pub sft_description_lookups: u64,
}

/// Everything one scene contributes to the index files, prepared in parallel.
struct SceneOutput {
    scene: Scene,
    objects: u64,
    depth_row: Stage1DepthRow,
    seg_row: Stage1SegRow,
    questions: Vec<Question>,
    rl: Vec<RlRow>,
    sft_interleaved: Vec<SftRow>,
    sft_text: Vec<SftRow>,
    sft_describe: SftRow,
    sft_cells: SftRow,
    sft_lookups: Vec<SftRow>,
    tsv_image: String,
}

fn produce(config: &WorldConfig, index: u64, out: &Path) -> Result<SceneOutput> {
    let g = generate_scene(config, index);
    let id = g.scene.id.clone();
    let (w, h) = (g.frame.width, g.frame.height);
    let rgb_rel = format!("images/{id}.png");
    let depth_rel = format!("depth/{id}.png");
    let seg_rel = format!("seg/{id}.png");
    let inst_rel = format!("instance/{id}.png");
    let rgb_png = png_rgb(&g.frame.rgb)?;
    write_atomic(&out.join(&rgb_rel), &rgb_png)?;
    write_atomic(
        &out.join(&depth_rel),
        &png_u16(w, h, depth_to_u16(&g.frame.depth, WORLD_DEPTH_SCALE))?,
    )?;
    write_atomic(&out.join(&seg_rel), &png_rgb(&g.frame.semantic_colors())?)?;
    write_atomic(
        &out.join(&inst_rel),
        &png_u16(w, h, g.frame.instance.clone())?,
    )?;

    let images = ChainImages {
        input: crate::formats::base64_png(&rgb_png),
        depth: crate::formats::base64_png(&png_rgb(&g.frame.depth_colors())?),
        segmentation: crate::formats::base64_png(&png_rgb(&g.frame.semantic_colors())?),
    };
    let style = config.chain_style()?;
    let mut chain_rng = scene_rng(config.seed, index, 2);
    let mut sft_interleaved = Vec::new();
    let mut sft_text = Vec::new();
    let sft_describe = description_row(&description_chain(&id, &g.scene, &g.frame), &images);
    let description = scene_description(&g.scene, &g.frame);
    let layout = |row: SftRow| {
        if config.describe_first {
            describe_first_row(row, &sft_describe, &description)
        } else {
            row
        }
    };
    for q in g.questions.iter().take(config.chains_per_scene) {
        let given = config
            .given_descriptions
            .then(|| described_objects_chars(q, &g.scene, &g.frame, style))
            .flatten();
        let c = interleaved_chain(q, &g.scene, &g.frame, style, &mut chain_rng);
        sft_interleaved.push(layout(with_given_span(
            sft_row(&c, q, &images),
            given.clone(),
        )));
        let t = text_chain(q, &g.scene, &g.frame, style, &mut chain_rng);
        sft_text.push(layout(with_given_span(sft_row(&t, q, &images), given)));
    }
    // Their own stream, so that writing them changes no other row.
    let mut lookup_rng = scene_rng(config.seed, index, 3);
    let sft_lookups = g
        .questions
        .iter()
        .filter_map(|q| {
            let (chain, given) = description_lookup(q, &g.scene, &g.frame, style, &mut lookup_rng)?;
            Some(layout(description_lookup_row(&chain, given, q)))
        })
        .collect();
    let sft_cells = cells_row(&cells_chain(&id, &g.scene, &g.frame), &images);
    Ok(SceneOutput {
        objects: g.scene.objects.len() as u64,
        depth_row: Stage1DepthRow {
            rgb_image: rgb_rel.clone(),
            depth_image: depth_rel,
            data_id: id.clone(),
            depth_scale: WORLD_DEPTH_SCALE,
            min_depth: 1e-3,
            max_depth: FAR_CLIP,
        },
        seg_row: Stage1SegRow {
            rgb_image: rgb_rel.clone(),
            seg_image: seg_rel,
            instance_image: inst_rel,
            data_id: id,
        },
        rl: g
            .questions
            .iter()
            .map(|q| rl_row(q, style.answer(q), &rgb_rel))
            .collect(),
        questions: g.questions,
        sft_interleaved,
        sft_text,
        sft_describe,
        sft_cells,
        sft_lookups,
        tsv_image: images.input,
        scene: g.scene,
    })
}

/// Writes `value` as pretty JSON to `path`, atomically.
fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| WorldError::Json {
        path: path.to_path_buf(),
        line: 0,
        source: e,
    })?;
    write_atomic(path, &bytes)
}

/// Scenes rendered in parallel per chunk (bounds memory; order is restored per chunk).
const CHUNK: u64 = 64;

/// Generates `config.scenes` scenes into `out` with every output format (layout in
/// `docs/data-formats.md`). `progress(1)` is called (from worker threads) as each scene finishes.
pub fn write_dataset(
    config: &WorldConfig,
    out: &Path,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<DatasetSummary> {
    config.scene.validate()?;
    config.chain_style()?;
    if config.questions_per_scene == 0 {
        return Err(WorldError::Config(
            "questions_per_scene must be at least 1".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| WorldError::io(out, e))?;
    let mut scenes_f = AtomicFile::create(&out.join("scenes.jsonl"))?;
    let mut depth_f = AtomicFile::create(&out.join("stage1_depth.jsonl"))?;
    let mut seg_f = AtomicFile::create(&out.join("stage1_seg.jsonl"))?;
    let mut questions_f = AtomicFile::create(&out.join("questions.jsonl"))?;
    let mut rl_f = AtomicFile::create(&out.join("rl.jsonl"))?;
    let mut sft_f = AtomicFile::create(&out.join("sft_interleaved.jsonl"))?;
    let mut sft_text_f = AtomicFile::create(&out.join("sft_text.jsonl"))?;
    let mut sft_describe_f = AtomicFile::create(&out.join("sft_describe.jsonl"))?;
    let mut sft_cells_f = AtomicFile::create(&out.join("sft_cells.jsonl"))?;
    // Answering in words, chains open by restating the options; these rows teach that copy alone.
    let mut sft_restate_f = config
        .option_text_answers
        .then(|| AtomicFile::create(&out.join("sft_restate.jsonl")))
        .transpose()?;
    // Chains that read their answers off the description: these rows teach that reading alone.
    let style = config.chain_style()?;
    let mut sft_lookups_f = style
        .reads_description()
        .then(|| AtomicFile::create(&out.join("sft_description_lookups.jsonl")))
        .transpose()?;
    let tsv_path = out.join("eval.tsv");
    let mut tsv_f = AtomicFile::create(&tsv_path)?;
    let tsv_line = |fields: Vec<String>| -> Result<Vec<u8>> {
        let mut w = csv::WriterBuilder::new()
            .delimiter(b'\t')
            .from_writer(Vec::new());
        w.write_record(&fields).map_err(|e| WorldError::Csv {
            path: tsv_path.clone(),
            source: e,
        })?;
        w.into_inner().map_err(|e| WorldError::Csv {
            path: tsv_path.clone(),
            source: e.into_error().into(),
        })
    };
    tsv_f.write(&tsv_line(tsv_header(TSV_OPTIONS))?)?;

    let mut summary = DatasetSummary::default();
    let mut tsv_index = 0usize;
    let mut start = 0u64;
    while start < config.scenes {
        let end = (start + CHUNK).min(config.scenes);
        let outputs: Vec<SceneOutput> = (start..end)
            .into_par_iter()
            .map(|i| {
                let r = produce(config, i, out);
                progress(1);
                r
            })
            .collect::<Result<_>>()?;
        for o in outputs {
            scenes_f.write_json_line(&o.scene)?;
            depth_f.write_json_line(&o.depth_row)?;
            seg_f.write_json_line(&o.seg_row)?;
            let first_index = tsv_index;
            for (k, q) in o.questions.iter().enumerate() {
                questions_f.write_json_line(q)?;
                if let (Some(f), Some(row)) = (sft_restate_f.as_mut(), restatement_row(q)) {
                    f.write_json_line(&row)?;
                    summary.sft_restate += 1;
                }
                let image = if k == 0 {
                    o.tsv_image.clone()
                } else {
                    first_index.to_string()
                };
                tsv_f.write(&tsv_line(tsv_row(tsv_index, &image, q, TSV_OPTIONS))?)?;
                tsv_index += 1;
            }
            for r in &o.rl {
                rl_f.write_json_line(r)?;
            }
            for r in &o.sft_interleaved {
                sft_f.write_json_line(r)?;
            }
            for r in &o.sft_text {
                sft_text_f.write_json_line(r)?;
            }
            sft_describe_f.write_json_line(&o.sft_describe)?;
            sft_cells_f.write_json_line(&o.sft_cells)?;
            if let Some(f) = sft_lookups_f.as_mut() {
                for r in &o.sft_lookups {
                    f.write_json_line(r)?;
                }
                summary.sft_description_lookups += o.sft_lookups.len() as u64;
            }
            summary.scenes += 1;
            summary.objects += o.objects;
            summary.questions += o.questions.len() as u64;
            summary.sft_interleaved += o.sft_interleaved.len() as u64;
            summary.sft_text += o.sft_text.len() as u64;
            summary.sft_describe += 1;
            summary.sft_cells += 1;
        }
        start = end;
    }
    for f in [
        scenes_f,
        depth_f,
        seg_f,
        questions_f,
        rl_f,
        sft_f,
        sft_text_f,
        sft_describe_f,
        sft_cells_f,
        tsv_f,
    ] {
        f.commit()?;
    }
    for f in [sft_restate_f, sft_lookups_f].into_iter().flatten() {
        f.commit()?;
    }
    if config.lookup_rows > 0 {
        for (name, count) in [
            ("sft_lookup_two.jsonl", OptionCount::Two),
            ("sft_lookup.jsonl", OptionCount::TwoToFour),
        ] {
            write_lookups(&out.join(name), config.lookup_rows, count, config.seed)?;
        }
        summary.sft_lookup = config.lookup_rows;
    }
    // The segmentation classes' colours in id order: the `--palette` of `cooper eval-seg`.
    let palette: Vec<[u8; 3]> = SemanticClass::ALL.iter().map(|c| c.color()).collect();
    write_json(&out.join("palette.json"), &palette)?;
    let manifest = serde_json::json!({
        "generator": "cooper-world",
        "config": config,
        "summary": summary,
        "depth_scale": WORLD_DEPTH_SCALE,
        "image_root": ".",
    });
    write_json(&out.join("manifest.json"), &manifest)?;
    Ok(summary)
}
