//! `cooper eval`: answer a VLMEvalKit-layout benchmark TSV with the model and score it.
//!
//! The engine is adapted to `cooper_eval::Answerer` here; the harness itself is model-independent.
//! Outputs go to `--out` (default `eval/<bench file stem>-<mode>/`): `predictions.jsonl`,
//! `results.json`, `report.md`. Rerunning with the same `--out` resumes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cooper_eval::judge::JudgeConfig;
use cooper_eval::{Answerer, EvalConfig, ImageControl, JudgePolicy, ReasoningMode};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Benchmark TSV in VLMEvalKit layout (base64 `image`, `question`, options `A`..., `answer`,
    /// `category`, optional `type`/`answer_type`, `unit`, `hint`).
    #[arg(long)]
    pub bench: PathBuf,
    /// Folder that an `image_path` column is relative to (default: the TSV's folder).
    #[arg(long)]
    pub image_root: Option<PathBuf>,
    /// Reasoning mode.
    #[arg(long, value_enum, default_value_t = ReasoningMode::Cooper)]
    pub mode: ReasoningMode,
    /// `shuffled`: ask every question about another item's picture, a control for how much the
    /// answers depend on the picture (report it next to the run with `own` pictures).
    #[arg(long, value_enum, default_value_t = ImageControl::Own)]
    pub images: ImageControl,
    /// Output folder (default: eval/<bench file stem>-<mode>, with `-shuffled` for the control).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Evaluate only the first N items.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Most tokens per model turn (the official `max_think_token_n`; 2048 by default).
    #[arg(long)]
    pub max_think_tokens: Option<usize>,
    /// Flow steps per generated map (30 by default).
    #[arg(long)]
    pub flow_steps: Option<usize>,
    /// Box only one of each question's options (or Yes / No), the one the model scores
    /// likeliest inside the box; the chain is otherwise decoded as usual. Off by default (the
    /// official evaluation decodes freely); recorded in the results.
    #[arg(long)]
    pub constrain_answers: bool,
    /// Base URL of an OpenAI-compatible judge, e.g. https://host/v1 (default: $COOPER_JUDGE_URL;
    /// no judge when neither is set).
    #[arg(long)]
    pub judge_url: Option<String>,
    /// Judge model name.
    #[arg(long, default_value = "deepseek-v3")]
    pub judge_model: String,
    /// Environment variable holding the judge's API key (sent as a bearer token when set).
    #[arg(long, default_value = "COOPER_JUDGE_API_KEY")]
    pub judge_key_env: String,
    /// When to ask the judge: only when the rules extract nothing, or always.
    #[arg(long, value_enum, default_value_t = JudgePolicy::Fallback)]
    pub judge_policy: JudgePolicy,
    /// Judge request timeout in seconds.
    #[arg(long, default_value_t = 60)]
    pub judge_timeout: u64,
    /// Judge retries after a failed request.
    #[arg(long, default_value_t = 3)]
    pub judge_retries: u32,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl EvalArgs {
    /// The harness configuration these arguments describe.
    pub fn config(&self) -> EvalConfig {
        let out = self.out.clone().unwrap_or_else(|| {
            let stem = self
                .bench
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "bench".into());
            let control = match self.images {
                ImageControl::Own => String::new(),
                other => format!("-{}", other.name()),
            };
            PathBuf::from("eval").join(format!("{stem}-{}{control}", self.mode))
        });
        let url = self
            .judge_url
            .clone()
            .or_else(|| std::env::var("COOPER_JUDGE_URL").ok())
            .filter(|u| !u.trim().is_empty());
        let judge = url.map(|url| JudgeConfig {
            timeout: Duration::from_secs(self.judge_timeout),
            retries: self.judge_retries,
            ..JudgeConfig::new(
                url,
                self.judge_model.clone(),
                std::env::var(&self.judge_key_env)
                    .ok()
                    .filter(|k| !k.is_empty()),
            )
        });
        EvalConfig {
            bench: self.bench.clone(),
            image_root: self.image_root.clone(),
            out_dir: out,
            mode: self.mode,
            images: self.images,
            constrained_answers: self.constrain_answers,
            judge,
            judge_policy: self.judge_policy,
            limit: self.limit,
            progress: !self.no_progress,
        }
    }
}

/// Runs the benchmark with a ready answerer and prints the markdown report.
pub fn run_with_answerer<A: Answerer>(args: &EvalArgs, answerer: A) -> anyhow::Result<()> {
    let config = args.config();
    let outcome = cooper_eval::run_with(&config, answerer)
        .with_context(|| format!("evaluating {}", config.bench.display()))?;
    let report = std::fs::read_to_string(&outcome.report_path)
        .with_context(|| format!("reading {}", outcome.report_path.display()))?;
    print!("{report}");
    eprintln!(
        "asked {} item(s), {} already answered; wrote {}",
        outcome.asked,
        outcome.skipped,
        config.out_dir.display()
    );
    Ok(())
}

/// The engine as a benchmark answerer: each item runs the reasoning procedure of its mode.
struct EngineAnswerer {
    engine: cooper_infer::Engine,
    params: cooper_infer::ReasonParams,
    /// A describe-first model's description of each picture, by mode and picture: decoded for
    /// a picture's first question, then put in place for the others ([`cooper_infer::reason_described`]).
    descriptions: HashMap<(ReasoningMode, u64), String>,
}

/// A key for a picture's pixels (with its size): a benchmark repeats a scene's picture for each
/// of its questions.
fn picture_key(image: &cooper_eval::image::RgbImage) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    image.dimensions().hash(&mut h);
    image.as_raw().hash(&mut h);
    h.finish()
}

impl Answerer for EngineAnswerer {
    fn answer(
        &mut self,
        image: &cooper_eval::image::RgbImage,
        question: &str,
        mode: ReasoningMode,
    ) -> Result<cooper_eval::ModelAnswer, cooper_eval::BoxError> {
        use cooper_infer::trace::{ImageRole, TraceEntry, TurnOutcome};
        let mut params = self.params;
        params.mode = match mode {
            ReasoningMode::Cooper => cooper_infer::Mode::Cooper,
            ReasoningMode::Pe => cooper_infer::Mode::Pe,
            ReasoningMode::Re => cooper_infer::Mode::Re,
            ReasoningMode::Direct => cooper_infer::Mode::Direct,
        };
        let key = (mode, picture_key(image));
        let known = self.descriptions.get(&key).map(String::as_str);
        let trace = cooper_infer::reason_described(
            &self.engine,
            image,
            question,
            &params,
            known,
            &mut |_| {},
        )?;
        let mut answer = cooper_eval::ModelAnswer {
            text: String::new(),
            turns: 0,
            depth_calls: 0,
            segmentation_calls: 0,
            description: None,
        };
        for e in &trace.entries {
            match e {
                TraceEntry::ModelTurn {
                    text,
                    outcome: TurnOutcome::Description,
                    ..
                } => {
                    answer.description = Some(text.clone());
                    self.descriptions.entry(key).or_insert_with(|| text.clone());
                }
                TraceEntry::ModelTurn { text, .. } => {
                    answer.turns += 1;
                    answer.text = text.clone();
                }
                TraceEntry::Image {
                    role: ImageRole::Depth,
                    ..
                } => answer.depth_calls += 1,
                TraceEntry::Image {
                    role: ImageRole::Segmentation,
                    ..
                } => answer.segmentation_calls += 1,
                _ => {}
            }
        }
        // `pe` and `direct` decode after an opened `<answer>`; the official output keeps the tag.
        if matches!(mode, ReasoningMode::Pe | ReasoningMode::Direct) {
            answer.text = format!("{}{}", cooper_infer::prompts::ANSWER_OPEN, answer.text);
        }
        Ok(answer)
    }
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let model = super::common::ModelArgs {
        model: Some(args.model.clone()),
        device: args.device.clone(),
        dtype: args.dtype.clone(),
    };
    let mut engine = model.load()?;
    engine.show_progress = false;
    let mut params = engine.default_reason_params();
    if let Some(n) = args.max_think_tokens {
        params.text.max_new_tokens = n;
    }
    if let Some(n) = args.flow_steps {
        params.image.num_timesteps = n;
    }
    params.constrain_answers = args.constrain_answers;
    run_with_answerer(
        &args,
        EngineAnswerer {
            engine,
            params,
            descriptions: HashMap::new(),
        },
    )
}
