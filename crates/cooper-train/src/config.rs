//! Training configuration: one [`TrainConfig`] per run, read from TOML with per-stage defaults.
//!
//! A config file only needs the keys it changes: [`TrainConfig::from_toml_str`] lays the file over
//! the defaults of its stage ([`TrainConfig::for_stage`], the values of the official scripts), and
//! command-line flags can be laid over that with [`TrainConfig::apply_overrides`]
//! (`section.key=value`, the value written as in TOML). Unknown keys are rejected so a typo
//! cannot silently fall back to a default.
//!
//! ```toml
//! stage = "grpo"
//! [optim]
//! lr = 1e-6
//! [grpo]
//! num_generations = 4
//! loss_type = "dr_grpo"
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The training stages of `cooper train <stage>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Train a byte-level BPE tokenizer carrying BAGEL's special tokens.
    Tokenizer,
    /// Train or fine-tune the FLUX-style autoencoder.
    Ae,
    /// Pretrain the ViT on dense per-patch targets (semantic class, depth) from stage-1 data:
    /// our stand-in for the pretrained SigLIP that a model trained from scratch lacks.
    Vit,
    /// Stage 1: auxiliary modality generation (image to depth / segmentation, flow loss).
    Amg,
    /// Stage 2a: supervised fine-tuning on interleaved reasoning chains.
    Sft,
    /// Stage 2b: GRPO with the CPR reward.
    Grpo,
}

impl std::str::FromStr for Stage {
    type Err = TrainError;

    fn from_str(name: &str) -> Result<Self> {
        Self::parse(name)
    }
}

impl Stage {
    /// Parses a stage name as given on the command line.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "tokenizer" => Ok(Self::Tokenizer),
            "ae" => Ok(Self::Ae),
            "vit" => Ok(Self::Vit),
            "amg" => Ok(Self::Amg),
            "sft" => Ok(Self::Sft),
            "grpo" => Ok(Self::Grpo),
            other => Err(TrainError::Config(format!(
                "unknown stage {other:?} (expected tokenizer, ae, vit, amg, sft or grpo)"
            ))),
        }
    }

    /// The name used on the command line and in config files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tokenizer => "tokenizer",
            Self::Ae => "ae",
            Self::Vit => "vit",
            Self::Amg => "amg",
            Self::Sft => "sft",
            Self::Grpo => "grpo",
        }
    }
}

/// Learning-rate schedule after the linear warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Hold the peak learning rate.
    Constant,
    /// Half-cosine from the peak down to `min_lr` at `total_steps`.
    Cosine,
}

/// How GRPO reduces per-token losses to a scalar (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossType {
    /// Mean over each sequence's valid tokens, then mean over sequences.
    Grpo,
    /// Sum over all valid tokens divided by their count (the official default).
    Bnpo,
    /// Sum over all valid tokens divided by `batch * max_completion_length`.
    DrGrpo,
}

/// How the accuracy reward decides whether an answer is right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccuracyMode {
    /// Rule-based matching only (no network).
    Rules,
    /// The LLM judge only (the official behaviour; needs `judge.endpoint`).
    Judge,
    /// Rules first; the judge is asked only when the rules say "wrong".
    RulesThenJudge,
}

/// Run bookkeeping: where, how long, how often to save.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Output folder: checkpoints, `metrics.jsonl`, plots.
    pub out_dir: PathBuf,
    /// Seed of the run's RNG (timesteps, noise, shuffling).
    pub seed: u64,
    /// Number of optimiser steps.
    pub total_steps: u64,
    /// Write a checkpoint every this many optimiser steps (0: only at the end).
    pub save_every: u64,
    /// Keep this many most recent checkpoints (at least 1).
    pub keep_last: usize,
    /// Write a metrics line every this many steps.
    pub log_every: u64,
}

/// Optimiser, schedule and gradient handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine schedule.
    pub min_lr: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// AdamW ε (the official scripts use 1e-15).
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Linear warm-up steps.
    pub warmup_steps: u64,
    /// Schedule after warm-up.
    pub schedule: ScheduleKind,
    /// Global gradient-norm clip (≤ 0 disables clipping).
    pub max_grad_norm: f64,
    /// Micro-batches accumulated per optimiser step.
    pub grad_accum_steps: usize,
}

/// Exponential moving average of the trained weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaConfig {
    /// Keep an EMA copy and save it as `ema.safetensors`.
    pub enabled: bool,
    /// θ_ema ← decay·θ_ema + (1 − decay)·θ after every optimiser step.
    pub decay: f64,
}

/// Training data and token-budget packing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// JSONL files (stage 1, SFT, GRPO) or text files (tokenizer).
    pub files: Vec<PathBuf>,
    /// Folder that relative image paths in the data are resolved against.
    pub image_root: Option<PathBuf>,
    /// A pack is emitted once it holds at least this many tokens.
    pub expected_num_tokens: usize,
    /// A pack never exceeds this many tokens.
    pub max_num_tokens: usize,
    /// Samples longer than this are skipped.
    pub max_num_tokens_per_sample: usize,
    /// Cap on the picture side of the VAE and ViT resizes (beyond the official 1024 / 518 and
    /// the model's position tables); small values train small models on small pictures.
    pub max_image_size: Option<u32>,
    /// Encode pictures with a sample of the autoencoder's Gaussian (official) rather than its
    /// mean (what inference uses).
    pub sample_latents: bool,
    /// Probability of flipping a stage-1 picture and its target horizontally (official 0.5).
    pub flip_prob: f64,
    /// Depth PNG value per metre, when a stage-1 row does not say (`depth_scale`); default 1000.
    pub depth_scale: Option<f32>,
    /// Near end of the depth range mapped to pseudo-RGB −1 (row `min_depth`, else 1e-3 m).
    pub min_depth: Option<f32>,
    /// Far end of the depth range mapped to pseudo-RGB +1 (overrides the row's `max_depth`).
    pub max_depth: Option<f32>,
}

/// Loss weights and flow-matching settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    /// Weight of the text cross-entropy.
    pub ce_weight: f64,
    /// Weight of the flow-matching MSE.
    pub mse_weight: f64,
    /// Timestep shift s in s·t/(1+(s−1)·t) for training (1.0: logit-normal t, no shift).
    pub timestep_shift: f64,
}

/// Which parts of the model receive no updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeConfig {
    /// Freeze the whole language model (both experts).
    pub llm: bool,
    /// Freeze the SigLIP ViT.
    pub vit: bool,
    /// Freeze the autoencoder.
    pub vae: bool,
    /// Freeze the ViT connector and its position table.
    pub connector: bool,
    /// Additional parameter-name prefixes to freeze.
    pub extra_prefixes: Vec<String>,
}

impl FreezeConfig {
    /// Parameter-name prefixes (official checkpoint names) that these settings freeze.
    /// The autoencoder lives in its own file, so `vae` contributes no prefix here; the stage loop
    /// simply never hands autoencoder weights to the optimiser when it is set.
    pub fn frozen_prefixes(&self) -> Vec<String> {
        let mut prefixes = Vec::new();
        if self.llm {
            prefixes.push("language_model.".to_string());
        }
        if self.vit {
            prefixes.push("vit_model.".to_string());
        }
        if self.connector {
            prefixes.push("connector.".to_string());
        }
        prefixes.extend(self.extra_prefixes.iter().cloned());
        prefixes
    }

    /// Whether the parameter with this official name is trained.
    pub fn is_trainable(&self, name: &str) -> bool {
        !self
            .frozen_prefixes()
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()))
    }
}

/// Model and initial weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInitConfig {
    /// Folder of the base checkpoint (configs, tokenizer, `ae.safetensors`).
    pub model_path: PathBuf,
    /// Folder whose weights initialise the run (defaults to `model_path`).
    pub init_from: Option<PathBuf>,
    /// Initialise from `ema.safetensors` rather than `model.safetensors`.
    pub from_ema: bool,
}

/// GRPO (stage 2b) settings, named as in TRL's `GRPOConfig` where one exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpoConfig {
    /// Completions sampled per prompt (the group size).
    pub num_generations: usize,
    /// Sampling temperature of the rollouts; log-probs divide logits by it too.
    pub temperature: f64,
    /// Nucleus mass of the rollouts.
    pub top_p: f64,
    /// Token limit per generated text turn.
    pub max_think_tokens: usize,
    /// Denominator length of `dr_grpo`.
    pub max_completion_length: usize,
    /// Lower clip ε (ratio floor 1 − ε_low).
    pub epsilon_low: f64,
    /// Upper clip ε (ratio ceiling 1 + ε_high).
    pub epsilon_high: f64,
    /// KL weight β (0: no reference model).
    pub beta: f64,
    /// Loss reduction.
    pub loss_type: LossType,
    /// Divide advantages by the group's standard deviation.
    pub scale_rewards: bool,
    /// Optimisation passes per generation round.
    pub num_iterations: usize,
    /// Reward functions by name, summed with `reward_weights`.
    pub reward_funcs: Vec<String>,
    /// One weight per reward function (empty: all 1).
    pub reward_weights: Vec<f64>,
    /// Reproduce the official in-place slice of `format_reward` (see `rewards`).
    pub official_slice_quirk: bool,
    /// Group count of exploring completions that separates bonus from penalty.
    pub exploration_threshold: usize,
    /// Size of the exploration bonus / penalty.
    pub exploration_bonus: f64,
    /// How the accuracy reward judges answers.
    pub accuracy_mode: AccuracyMode,
    /// Relative tolerance of the rule-based numeric match.
    pub numeric_rel_tol: f64,
    /// Flow steps of image generation inside rollouts.
    pub flow_steps: usize,
    /// Timestep shift of image generation inside rollouts.
    pub rollout_timestep_shift: f64,
    /// Rollout procedure: `cooper` (interleaved, official), `re` (text-only reasoning), `pe` or
    /// `direct`.
    pub rollout_mode: String,
    /// Most model turns per rollout in `cooper` mode.
    pub max_inter_num: usize,
}

/// The optional LLM judge behind an OpenAI-compatible `/v1/chat/completions` endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// Base URL up to and including `/v1` (e.g. `http://127.0.0.1:8000/v1`); `None` disables it.
    pub endpoint: Option<String>,
    /// Model name sent with each request.
    pub model: String,
    /// Environment variable holding the API key (sent as a bearer token when set).
    pub api_key_env: String,
    /// Per-request timeout in seconds.
    pub timeout_s: f64,
    /// Attempts per question before scoring it 0.
    pub max_retries: usize,
    /// Wait before retry k is `backoff_ms · 2^k`.
    pub backoff_ms: u64,
    /// Concurrent requests.
    pub max_workers: usize,
    /// `max_tokens` of each request.
    pub max_tokens: usize,
}

/// The `ae` stage: a FLUX-architecture autoencoder trained on pictures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AeTrainConfig {
    /// Weight of the KL term against N(0, I) (mean over latent elements).
    pub kl_weight: f64,
    /// Side of the square random crops trained on (a multiple of the downsample).
    pub crop_size: u32,
    /// Crops per micro-batch.
    pub batch_size: usize,
    /// Pictures used to measure the latent shift and scale written to `ae_config.json`.
    pub stats_images: usize,
}

/// The `vit` stage: the ViT learns, through linear heads on its output tokens, each patch's
/// semantic-class histogram (from segmentation maps) and mean depth (from depth maps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitTrainConfig {
    /// Pictures per micro-batch.
    pub batch_size: usize,
    /// Weight of the per-patch class cross-entropy (soft targets: the patch's class histogram).
    pub class_weight: f64,
    /// Weight of the per-patch depth MSE (depth as stage 1's [-1, 1] pseudo-image value).
    pub depth_weight: f64,
    /// Class balance α of the cross-entropy: class c weighs f_c^−α (f_c: its pixel share in
    /// the segmentation maps, measured on up to 512 of them before training), scaled so that a
    /// pixel weighs 1 on average. 0 weighs every pixel alike; 1 weighs every class alike.
    #[serde(default)]
    pub class_balance: f64,
    /// Weight of the per-patch object-colour MSE: the mean RGB (in [-1, 1]) of the patch's
    /// object pixels (palette classes other than sky, floor and wall), on patches that are at
    /// least an eighth object. Class and depth alone let a frozen ViT drop hue, by which the
    /// questions name objects. 0 (the default) leaves the head out.
    #[serde(default)]
    pub color_weight: f64,
}

impl Default for VitTrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 16,
            class_weight: 1.0,
            depth_weight: 1.0,
            class_balance: 0.0,
            color_weight: 0.0,
        }
    }
}

/// The `sft` stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// System prompt prepended to each chain: `interleave` (official), `text`
    /// (`TEXT_REASON_SYSTEM_PROMPT`), `vlm_think` (the prompt `re` inference uses) or `none`.
    pub system_prompt: String,
    /// Feed chain pictures as the inference loop does (the input picture VAE + ViT, or ViT
    /// only under a text system prompt; generated maps ViT only) instead of the official
    /// VAE + ViT for every picture.
    pub match_inference_context: bool,
    /// Leave the system prompt's text out while keeping the picture layout it names. The
    /// exported model folder then says, in its `reasoning_config.json`, that it is to be asked
    /// without system prompts (as does one trained with `system_prompt = "none"`).
    #[serde(default)]
    pub omit_system_prompt: bool,
    /// Also train the stage-1 rows (depth and segmentation generation, flow-matching loss)
    /// found in `data.files`, packed beside the chains. The official SFT trains chains only;
    /// on a small model trained from scratch, chains alone undo stage 1 (the generated maps
    /// turn to noise within a few hundred steps: docs/results.md, seventeenth run), and the
    /// chains' turns after a map then read noise.
    #[serde(default)]
    pub rehearse_generation: bool,
    /// The chains were written describe-first (`cooper world --describe-first`: the picture, the
    /// description request and the scene description, then the question). The exported model
    /// folder then says, in its `reasoning_config.json`, that it is to be asked that way too.
    #[serde(default)]
    pub describe_first: bool,
}

impl SftConfig {
    /// Whether chains begin with a system prompt.
    pub fn uses_system_prompt(&self) -> bool {
        !self.omit_system_prompt && self.system_prompt != "none"
    }
}

/// The `tokenizer` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Target vocabulary size (special tokens and the 256-byte alphabet included).
    pub vocab_size: usize,
    /// Pairs seen fewer times are not merged.
    pub min_frequency: u64,
}

/// The whole configuration of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Which stage this run trains.
    pub stage: Stage,
    /// Output, length, saving.
    pub run: RunConfig,
    /// Optimiser and schedule.
    pub optim: OptimConfig,
    /// EMA weights.
    pub ema: EmaConfig,
    /// Data and packing.
    pub data: DataConfig,
    /// Loss weights.
    pub loss: LossConfig,
    /// Freezing.
    pub freeze: FreezeConfig,
    /// Initial weights.
    pub model: ModelInitConfig,
    /// GRPO settings (used by `grpo`).
    pub grpo: GrpoConfig,
    /// LLM judge (used by `grpo` when the accuracy mode asks for it).
    pub judge: JudgeConfig,
    /// Tokenizer training (used by `tokenizer`).
    pub tokenizer: TokenizerConfig,
    /// Autoencoder training (used by `ae`).
    pub ae: AeTrainConfig,
    /// ViT pretraining (used by `vit`); absent from configs written before the stage existed.
    #[serde(default)]
    pub vit: VitTrainConfig,
    /// Chain settings (used by `sft`).
    pub sft: SftConfig,
}

impl TrainConfig {
    /// Defaults for a stage: the official scripts' values (stage 1 `train_mix.sh`, SFT
    /// `train_reason_interleave_sft.sh`, GRPO `train_reason_interleave_grpo.sh`), scaled to
    /// whatever data is given.
    pub fn for_stage(stage: Stage) -> Self {
        let (lr, total_steps, save_every, warmup_steps, schedule) = match stage {
            Stage::Tokenizer => (0.0, 0, 0, 0, ScheduleKind::Constant),
            Stage::Ae => (1e-5, 1000, 500, 100, ScheduleKind::Constant),
            // Our own stage (no official counterpart): a from-scratch pretraining schedule.
            Stage::Vit => (1e-3, 2000, 500, 100, ScheduleKind::Cosine),
            Stage::Amg => (5e-6, 6000, 2000, 500, ScheduleKind::Constant),
            Stage::Sft => (5e-6, 600, 300, 500, ScheduleKind::Constant),
            Stage::Grpo => (3e-6, 1000, 10, 0, ScheduleKind::Cosine),
        };
        let grpo = stage == Stage::Grpo;
        Self {
            stage,
            run: RunConfig {
                out_dir: PathBuf::from(format!("runs/{}", stage.name())),
                seed: 4396,
                total_steps,
                save_every,
                keep_last: 3,
                log_every: 1,
            },
            optim: OptimConfig {
                lr,
                min_lr: if grpo { 0.0 } else { 1e-7 },
                beta1: 0.9,
                beta2: if grpo { 0.999 } else { 0.95 },
                eps: if grpo { 1e-8 } else { 1e-15 },
                weight_decay: 0.0,
                warmup_steps,
                schedule,
                max_grad_norm: 1.0,
                grad_accum_steps: if grpo { 128 } else { 1 },
            },
            ema: EmaConfig {
                enabled: matches!(stage, Stage::Amg | Stage::Sft),
                decay: 0.995,
            },
            data: DataConfig {
                files: Vec::new(),
                image_root: None,
                expected_num_tokens: 10_240,
                max_num_tokens: if grpo { 36_864 } else { 10_240 },
                max_num_tokens_per_sample: 10_240,
                max_image_size: None,
                sample_latents: true,
                flip_prob: if stage == Stage::Amg { 0.5 } else { 0.0 },
                depth_scale: None,
                min_depth: None,
                max_depth: None,
            },
            loss: LossConfig {
                ce_weight: 1.0,
                mse_weight: 1.0,
                timestep_shift: 1.0,
            },
            freeze: FreezeConfig {
                llm: false,
                vit: matches!(stage, Stage::Amg | Stage::Sft),
                vae: stage != Stage::Ae,
                connector: false,
                extra_prefixes: Vec::new(),
            },
            model: ModelInitConfig {
                model_path: PathBuf::from("models/BAGEL-7B-MoT"),
                init_from: None,
                from_ema: true,
            },
            grpo: GrpoConfig {
                num_generations: 8,
                temperature: 1.0,
                top_p: 1.0,
                max_think_tokens: 4096,
                max_completion_length: 16_384,
                epsilon_low: 0.2,
                epsilon_high: 0.2,
                beta: 0.0,
                loss_type: LossType::Bnpo,
                scale_rewards: true,
                num_iterations: 1,
                reward_funcs: vec![
                    "accuracy".to_string(),
                    "format".to_string(),
                    "exploration_guided".to_string(),
                ],
                reward_weights: Vec::new(),
                official_slice_quirk: false,
                exploration_threshold: 3,
                exploration_bonus: 0.2,
                accuracy_mode: AccuracyMode::Rules,
                numeric_rel_tol: 1e-4,
                flow_steps: 30,
                rollout_timestep_shift: 3.0,
                rollout_mode: "cooper".to_string(),
                max_inter_num: 3,
            },
            judge: JudgeConfig {
                endpoint: None,
                model: "qwen2.5-vl-72b".to_string(),
                api_key_env: "COOPER_JUDGE_API_KEY".to_string(),
                timeout_s: 30.0,
                max_retries: 5,
                backoff_ms: 1000,
                max_workers: 32,
                max_tokens: 512,
            },
            tokenizer: TokenizerConfig {
                vocab_size: 32_000,
                min_frequency: 2,
            },
            ae: AeTrainConfig {
                kl_weight: 1e-6,
                crop_size: 64,
                batch_size: 4,
                stats_images: 64,
            },
            vit: VitTrainConfig::default(),
            sft: SftConfig {
                system_prompt: "interleave".to_string(),
                match_inference_context: false,
                omit_system_prompt: false,
                rehearse_generation: false,
                describe_first: false,
            },
        }
    }

    /// Reads a TOML config. The stage is `stage` if given (the command line wins), else the
    /// file's `stage` key; the file's keys are laid over that stage's defaults.
    pub fn from_toml_str(text: &str, stage: Option<Stage>) -> Result<Self> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| TrainError::Config(format!("cannot parse TOML: {e}")))?;
        let stage = match (stage, table.get("stage")) {
            (Some(stage), _) => stage,
            (None, Some(toml::Value::String(name))) => Stage::parse(name)?,
            (None, Some(other)) => {
                return Err(TrainError::Config(format!(
                    "`stage` must be a string, got {other}"
                )))
            }
            (None, None) => {
                return Err(TrainError::Config(
                    "no stage given (pass one or set `stage = \"...\"`)".to_string(),
                ))
            }
        };
        table.insert(
            "stage".to_string(),
            toml::Value::String(stage.name().to_string()),
        );
        let mut base = Self::for_stage(stage).to_table()?;
        merge_tables(&mut base, table);
        let config = Self::from_table(base)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML config file (see [`Self::from_toml_str`]).
    pub fn from_toml_file(path: &std::path::Path, stage: Option<Stage>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        Self::from_toml_str(&text, stage)
    }

    /// Applies `section.key=value` overrides (value in TOML syntax; a bare word is taken as a
    /// string), e.g. `optim.lr=1e-5`, `grpo.loss_type=dr_grpo`, `data.files=["a.jsonl"]`.
    pub fn apply_overrides<S: AsRef<str>>(&mut self, overrides: &[S]) -> Result<()> {
        let mut table = self.to_table()?;
        for item in overrides {
            let item = item.as_ref();
            let (path, raw) = item.split_once('=').ok_or_else(|| {
                TrainError::Config(format!("override {item:?} is not of the form key=value"))
            })?;
            let value = parse_toml_value(raw.trim());
            set_path(&mut table, path.trim(), value)?;
        }
        let config = Self::from_table(table)?;
        config.validate()?;
        *self = config;
        Ok(())
    }

    /// Serialises the config to TOML (written into every checkpoint's `state.json` as JSON too).
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string_pretty(self)
            .map_err(|e| TrainError::Config(format!("cannot serialise config: {e}")))
    }

    /// Checks values that would make a run meaningless or crash later.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(TrainError::Config(msg));
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr >= 0.0) {
            return bad(format!("optim.lr must be finite and ≥ 0, got {}", o.lr));
        }
        if !(o.min_lr.is_finite() && o.min_lr >= 0.0) {
            return bad(format!(
                "optim.min_lr must be finite and ≥ 0, got {}",
                o.min_lr
            ));
        }
        for (name, b) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("optim.{name} must lie in [0, 1), got {b}"));
            }
        }
        if !(o.eps.is_finite() && o.eps >= 0.0) {
            return bad(format!("optim.eps must be finite and ≥ 0, got {}", o.eps));
        }
        if o.grad_accum_steps == 0 {
            return bad("optim.grad_accum_steps must be ≥ 1".to_string());
        }
        if !(0.0..=1.0).contains(&self.ema.decay) {
            return bad(format!(
                "ema.decay must lie in [0, 1], got {}",
                self.ema.decay
            ));
        }
        if self.run.keep_last == 0 {
            return bad("run.keep_last must be ≥ 1".to_string());
        }
        let d = &self.data;
        if d.expected_num_tokens > d.max_num_tokens {
            return bad(format!(
                "data.expected_num_tokens ({}) exceeds data.max_num_tokens ({})",
                d.expected_num_tokens, d.max_num_tokens
            ));
        }
        if !(self.loss.timestep_shift.is_finite() && self.loss.timestep_shift > 0.0) {
            return bad(format!(
                "loss.timestep_shift must be > 0, got {}",
                self.loss.timestep_shift
            ));
        }
        let g = &self.grpo;
        if self.stage == Stage::Grpo && g.num_generations < 2 {
            return bad(format!(
                "grpo.num_generations must be ≥ 2 (group statistics), got {}",
                g.num_generations
            ));
        }
        for (name, e) in [
            ("epsilon_low", g.epsilon_low),
            ("epsilon_high", g.epsilon_high),
        ] {
            if !(e.is_finite() && e >= 0.0) {
                return bad(format!("grpo.{name} must be finite and ≥ 0, got {e}"));
            }
        }
        if g.epsilon_low >= 1.0 {
            return bad(format!(
                "grpo.epsilon_low must be < 1, got {}",
                g.epsilon_low
            ));
        }
        if !g.reward_weights.is_empty() && g.reward_weights.len() != g.reward_funcs.len() {
            return bad(format!(
                "grpo.reward_weights has {} entries for {} reward functions",
                g.reward_weights.len(),
                g.reward_funcs.len()
            ));
        }
        if !(0.0..=1.0).contains(&self.data.flip_prob) {
            return bad(format!(
                "data.flip_prob must lie in [0, 1], got {}",
                self.data.flip_prob
            ));
        }
        if let (Some(lo), Some(hi)) = (self.data.min_depth, self.data.max_depth) {
            if lo >= hi || lo.is_nan() || hi.is_nan() {
                return bad(format!(
                    "data.min_depth ({lo}) must be below data.max_depth ({hi})"
                ));
            }
        }
        if !["cooper", "re", "pe", "direct"].contains(&g.rollout_mode.as_str()) {
            return bad(format!(
                "grpo.rollout_mode must be cooper, re, pe or direct, got {:?}",
                g.rollout_mode
            ));
        }
        if !["interleave", "text", "vlm_think", "none"].contains(&self.sft.system_prompt.as_str()) {
            return bad(format!(
                "sft.system_prompt must be interleave, text, vlm_think or none, got {:?}",
                self.sft.system_prompt
            ));
        }
        if self.ae.batch_size == 0 || self.ae.crop_size == 0 {
            return bad("ae.batch_size and ae.crop_size must be ≥ 1".to_string());
        }
        if g.max_completion_length == 0 {
            return bad("grpo.max_completion_length must be ≥ 1".to_string());
        }
        if matches!(
            g.accuracy_mode,
            AccuracyMode::Judge | AccuracyMode::RulesThenJudge
        ) && self.judge.endpoint.is_none()
            && self.stage == Stage::Grpo
            && g.reward_funcs.iter().any(|f| f == "accuracy")
        {
            return bad("grpo.accuracy_mode asks for the judge but judge.endpoint is unset".into());
        }
        let v = &self.vit;
        if self.stage == Stage::Vit {
            if v.batch_size == 0 {
                return bad("vit.batch_size must be at least 1".to_string());
            }
            let weight_ok = |w: f64| w.is_finite() && w >= 0.0;
            if !(weight_ok(v.class_weight)
                && weight_ok(v.depth_weight)
                && weight_ok(v.color_weight))
                || v.class_weight + v.depth_weight + v.color_weight == 0.0
            {
                return bad(format!(
                    "vit.class_weight, vit.depth_weight and vit.color_weight must be finite, ≥ 0 \
                     and not all 0, got {}, {} and {}",
                    v.class_weight, v.depth_weight, v.color_weight
                ));
            }
            if !(0.0..=1.0).contains(&v.class_balance) {
                return bad(format!(
                    "vit.class_balance must be in [0, 1], got {}",
                    v.class_balance
                ));
            }
        }
        if self.stage == Stage::Tokenizer && self.tokenizer.vocab_size < 256 + 5 {
            return bad(format!(
                "tokenizer.vocab_size must hold the 256 bytes and 5 special tokens, got {}",
                self.tokenizer.vocab_size
            ));
        }
        Ok(())
    }

    fn to_table(&self) -> Result<toml::Table> {
        match toml::Value::try_from(self) {
            Ok(toml::Value::Table(table)) => Ok(table),
            Ok(other) => Err(TrainError::Config(format!(
                "config serialised to a non-table: {other}"
            ))),
            Err(e) => Err(TrainError::Config(format!("cannot serialise config: {e}"))),
        }
    }

    fn from_table(table: toml::Table) -> Result<Self> {
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config(e.to_string()))
    }
}

/// Lays `over` onto `base`: tables merge key by key, anything else replaces.
fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Parses an override's value as a TOML value; text that is not valid TOML becomes a string.
fn parse_toml_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut table) => table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Sets `a.b.c` in a table; every section on the way must already exist (no new sections).
fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<()> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts
        .pop()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| TrainError::Config(format!("empty override key {path:?}")))?;
    let mut current = table;
    for part in parts {
        current = match current.get_mut(part) {
            Some(toml::Value::Table(next)) => next,
            _ => {
                return Err(TrainError::Config(format!(
                    "override {path:?}: no section {part:?}"
                )))
            }
        };
    }
    current.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_default_is_valid_and_round_trips() {
        for stage in [
            Stage::Tokenizer,
            Stage::Ae,
            Stage::Vit,
            Stage::Amg,
            Stage::Sft,
            Stage::Grpo,
        ] {
            let config = TrainConfig::for_stage(stage);
            config.validate().unwrap();
            let text = config.to_toml_string().unwrap();
            let back = TrainConfig::from_toml_str(&text, None).unwrap();
            assert_eq!(back, config, "stage {}", stage.name());
        }
    }

    #[test]
    fn file_keys_override_stage_defaults() {
        let text = r#"
            stage = "grpo"
            [optim]
            lr = 1e-6
            [grpo]
            num_generations = 4
            loss_type = "dr_grpo"
        "#;
        let config = TrainConfig::from_toml_str(text, None).unwrap();
        assert_eq!(config.stage, Stage::Grpo);
        assert_eq!(config.optim.lr, 1e-6);
        assert_eq!(config.grpo.num_generations, 4);
        assert_eq!(config.grpo.loss_type, LossType::DrGrpo);
        // Untouched keys keep the GRPO defaults.
        assert_eq!(config.optim.schedule, ScheduleKind::Cosine);
        assert_eq!(config.grpo.epsilon_high, 0.2);
        assert_eq!(config.run.save_every, 10);
    }

    #[test]
    fn stage_argument_wins_and_amg_defaults_match_the_scripts() {
        let config = TrainConfig::from_toml_str("stage = \"sft\"", Some(Stage::Amg)).unwrap();
        assert_eq!(config.stage, Stage::Amg);
        assert_eq!(config.optim.lr, 5e-6);
        assert_eq!(config.optim.eps, 1e-15);
        assert_eq!(config.optim.beta2, 0.95);
        assert_eq!(config.optim.warmup_steps, 500);
        assert_eq!(config.ema.decay, 0.995);
        assert!(config.freeze.vit && config.freeze.vae && !config.freeze.llm);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let err = TrainConfig::from_toml_str("[optim]\nlearning_rate = 1.0", Some(Stage::Sft))
            .unwrap_err();
        assert!(err.to_string().contains("learning_rate"), "{err}");
        let err = TrainConfig::from_toml_str("[grpo]\nnum_generations = 1", Some(Stage::Grpo))
            .unwrap_err();
        assert!(err.to_string().contains("num_generations"), "{err}");
        assert!(TrainConfig::from_toml_str("", None).is_err());
        assert!(TrainConfig::from_toml_str("stage = \"pretrain\"", None).is_err());
    }

    #[test]
    fn overrides_use_toml_syntax() {
        let mut config = TrainConfig::for_stage(Stage::Grpo);
        config
            .apply_overrides(&[
                "optim.lr=2e-5",
                "grpo.loss_type=grpo",
                "data.files=[\"a.jsonl\", \"b.jsonl\"]",
                "judge.endpoint=http://127.0.0.1:9/v1",
            ])
            .unwrap();
        assert_eq!(config.optim.lr, 2e-5);
        assert_eq!(config.grpo.loss_type, LossType::Grpo);
        assert_eq!(config.data.files.len(), 2);
        assert_eq!(
            config.judge.endpoint.as_deref(),
            Some("http://127.0.0.1:9/v1")
        );
        assert!(config.apply_overrides(&["nosection.x=1"]).is_err());
        assert!(config.apply_overrides(&["optim.lr"]).is_err());
        // A failed override leaves the config unchanged.
        assert_eq!(config.optim.lr, 2e-5);
    }

    #[test]
    fn freeze_prefixes_select_parameters() {
        let freeze = FreezeConfig {
            llm: false,
            vit: true,
            vae: true,
            connector: false,
            extra_prefixes: vec!["time_embedder.".to_string()],
        };
        assert!(!freeze.is_trainable("vit_model.vision_model.post_layernorm.weight"));
        assert!(!freeze.is_trainable("time_embedder.mlp.0.weight"));
        assert!(freeze.is_trainable("language_model.model.norm.weight"));
        assert!(freeze.is_trainable("connector.fc1.weight"));
    }
}
