//! The `grpo` stage (stage 2b, reference §4.3): rollouts through the inference engine's
//! reasoning loop, the CPR rewards, group-normalised advantages and the clipped surrogate.
//!
//! One optimiser step is one generation round: `optim.grad_accum_steps` completions, i.e.
//! `grad_accum_steps / num_generations` prompts × `num_generations` rollouts each (the
//! official run: 128 completions per step per GPU, batch 1). Each completion is one
//! micro-batch: it is re-packed as a training sequence and its generated text tokens are
//! scored with `logits / temperature`.
//!
//! Where we differ from the official trainer, on purpose (see reference §6):
//! - log-probabilities score the tokens the model actually sampled (labels `ids, eos`, as in
//!   SFT), not each slot's own input token (pitfall 1);
//! - the re-packed sequence is the rollout's context: generated maps enter through the ViT only,
//!   the `re` input picture through the ViT only, and turns the loop dropped are left out of
//!   both the rewards and the sequence (pitfall 2);
//! - `num_iterations` must be 1 (then ρ = 1 and old log-probs are the detached current ones,
//!   exactly as the official run); more passes per round are not implemented.
use std::collections::{BTreeMap, HashMap, VecDeque};

use candle_core::{Tensor, Var};
use cooper_infer::params::{ImageParams, Mode, ReasonParams, TextParams};
use cooper_infer::trace::{ImageRole, TraceEntry, TurnOutcome};
use cooper_infer::transforms::to_tensor;
use cooper_infer::{reason, Engine, ReasonTrace};
use cooper_model::{Bagel, SequenceBuilder};
use cooper_train::config::TrainConfig;
use cooper_train::data::{read_rl_jsonl, reward_columns, RlRow};
use cooper_train::grpo::{
    completion_length_metrics, grpo_loss, mean_token_entropy, pad_completions, score_round,
    token_log_probs, GrpoLossConfig, GrpoLossInputs,
};
use cooper_train::rewards::{Completion, CompletionItem, RewardSet};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::data::{image_root_for, Order};
use crate::driver::{drive, finish, open_loop, Micro, RunOptions, StageReport};
use crate::error::{Result, StageError};
use crate::model::TrainableModel;
use crate::packed::export_run;
use crate::pictures::{load_rgb, moments, resizes, sample_latent_tokens, vit_patches};

/// The reward view of a trace: the official output list (system prompt if any, picture,
/// question, then turns, maps and prompts), without the turns the loop dropped. The prompt is
/// everything before the model's first turn after the question, so it is right whether or not
/// the model is asked with a system prompt, and a describe-first model's description is part of
/// it: the rewards grade the answer to the question. (Its tokens are still trained: [`repack`]
/// puts the rollout's advantage on every kept model turn.)
pub fn completion(trace: &ReasonTrace) -> Completion<'_> {
    let prompt_len = trace
        .entries
        .iter()
        .position(|e| {
            matches!(e, TraceEntry::ModelTurn { outcome, .. } if *outcome != TurnOutcome::Description)
        })
        .unwrap_or(trace.entries.len());
    let items = trace
        .entries
        .iter()
        .filter_map(|e| match e {
            TraceEntry::Text { text, .. } => Some(CompletionItem::Text(text)),
            TraceEntry::Image { .. } => Some(CompletionItem::Image),
            TraceEntry::ModelTurn { outcome, .. } if *outcome == TurnOutcome::Dropped => None,
            TraceEntry::ModelTurn { text, .. } => Some(CompletionItem::Text(text)),
        })
        .collect();
    Completion::new(items, prompt_len)
}

/// A rollout ready for its micro-batch.
pub struct Rollout {
    pub trace: ReasonTrace,
    pub advantage: f32,
    /// Metrics of its round (rewards, lengths, tool use), logged with every micro-batch.
    pub round_metrics: BTreeMap<String, f64>,
}

/// Re-packs a rollout as a training sequence: loss on the kept model turns. `rng` draws the
/// sampled AE encode of the input picture.
pub fn repack(
    model: &TrainableModel,
    trace: &ReasonTrace,
    vit_resize: &cooper_infer::transforms::ResizeConfig,
    mut rng: Option<&mut ChaCha8Rng>,
) -> Result<cooper_model::PackedBatch> {
    let m = &model.model;
    let mut builder = SequenceBuilder::new(&m.config, m.special);
    let mut noise_rows = Vec::new();
    for entry in &trace.entries {
        match entry {
            TraceEntry::Text { text, .. } => builder.text(&model.encode(text)?, false),
            TraceEntry::ModelTurn { outcome, .. } if *outcome == TurnOutcome::Dropped => {}
            TraceEntry::ModelTurn { text, .. } => builder.text(&model.encode(text)?, true),
            TraceEntry::Image { role, image, .. } => {
                let vae = *role == ImageRole::Input && trace.mode != Mode::Re;
                if vae {
                    let mo = moments(&model.ae, &to_tensor(image, m.device())?, m.dtype())?;
                    let p = m.config.bagel.latent_patch_size;
                    let x0 = sample_latent_tokens(&model.ae, &mo, p, rng.as_deref_mut())?;
                    noise_rows.push(x0.zeros_like()?);
                    builder.vae_image(x0, image.height() as usize, image.width() as usize, None)?;
                }
                let (patches, h, w) = vit_patches(
                    image,
                    vit_resize,
                    m.config.vit.patch_size,
                    m.dtype(),
                    m.device(),
                )?;
                builder.vit_image(patches, h, w)?;
            }
        }
    }
    let noise = if noise_rows.is_empty() {
        None
    } else {
        Some(Tensor::cat(&noise_rows, 0)?)
    };
    Ok(builder.finish(noise, m.device())?)
}

/// Log-probabilities (`[T]`) and logits of the generated tokens of a packed rollout (`None`
/// when it holds no generated text).
pub fn generated_log_probs(
    model: &Bagel,
    batch: &cooper_model::PackedBatch,
    temperature: f64,
) -> Result<Option<(Tensor, Tensor)>> {
    let out = model.forward_train(batch)?;
    match (out.ce_logits, &batch.packed_label_ids) {
        (Some(logits), Some(labels)) => {
            let logps = token_log_probs(&logits, labels, temperature)?;
            Ok(Some((logps, logits)))
        }
        _ => Ok(None),
    }
}

/// The prompts of the run: every file of `data.files`, images resolved against
/// `data.image_root` or the file's folder.
pub fn read_prompts(config: &TrainConfig) -> Result<Vec<RlRow>> {
    if config.data.files.is_empty() {
        return Err(StageError::Input(
            "no prompts: set data.files to RL JSONL files (image, question, answer, data_id)"
                .into(),
        ));
    }
    let mut rows = Vec::new();
    for file in &config.data.files {
        rows.extend(read_rl_jsonl(file, &image_root_for(&config.data, file))?);
    }
    if rows.is_empty() {
        return Err(StageError::Input("the RL files hold no prompts".into()));
    }
    Ok(rows)
}

struct Roller<'a> {
    config: &'a TrainConfig,
    engine: Engine,
    rows: Vec<RlRow>,
    order: Order,
    rewards: RewardSet,
    mode: Mode,
    vae_resize: cooper_infer::transforms::ResizeConfig,
    vit_resize: cooper_infer::transforms::ResizeConfig,
    pictures: HashMap<usize, image::RgbImage>,
}

impl Roller<'_> {
    /// Generates and scores one round.
    fn round(&mut self, run: &mut cooper_train::run::TrainLoop) -> Result<VecDeque<Rollout>> {
        let g = &self.config.grpo;
        let prompts = self.config.optim.grad_accum_steps / g.num_generations;
        let mut picked = Vec::with_capacity(prompts);
        for _ in 0..prompts {
            let mut cursor = run.data_cursor().clone();
            picked.push(self.order.at(&cursor));
            self.order.advance(&mut cursor);
            *run.data_cursor_mut() = cursor;
        }
        let mut traces = Vec::with_capacity(prompts * g.num_generations);
        for &idx in &picked {
            if !self.pictures.contains_key(&idx) {
                let img = load_rgb(&self.rows[idx].image)?;
                self.pictures.insert(idx, img);
            }
            let picture = &self.pictures[&idx];
            for _ in 0..g.num_generations {
                let params = ReasonParams {
                    mode: self.mode,
                    max_inter_num: g.max_inter_num,
                    text: TextParams {
                        max_new_tokens: g.max_think_tokens,
                        do_sample: true,
                        temperature: g.temperature as f32,
                        top_p: g.top_p as f32,
                        seed: run.rng().random(),
                    },
                    image: ImageParams {
                        num_timesteps: g.flow_steps,
                        timestep_shift: g.rollout_timestep_shift as f32,
                        seed: run.rng().random(),
                        ..ImageParams::default()
                    },
                    vae_resize: self.vae_resize,
                    vit_resize: self.vit_resize,
                    system_prompt: self.engine.reasoning.system_prompt,
                    describe_first: self.engine.reasoning.describe_first,
                    // Rollouts box what they like: the format and accuracy rewards grade it.
                    constrain_answers: false,
                };
                traces.push(reason(
                    &self.engine,
                    picture,
                    &self.rows[idx].question,
                    &params,
                    &mut |_| {},
                )?);
            }
        }
        let completions: Vec<Completion<'_>> = traces.iter().map(completion).collect();
        let row_refs: Vec<&RlRow> = picked.iter().map(|&i| &self.rows[i]).collect();
        let columns = reward_columns(&row_refs, g.num_generations);
        let scores = score_round(
            &completions,
            &columns,
            &self.rewards,
            g.num_generations,
            g.scale_rewards,
        )?;
        let lengths: Vec<usize> = traces
            .iter()
            .map(|t| {
                t.entries
                    .iter()
                    .filter_map(|e| match e {
                        TraceEntry::ModelTurn { text, outcome, .. }
                            if *outcome != TurnOutcome::Dropped =>
                        {
                            self.engine.encode(text).ok().map(|ids| ids.len() + 1)
                        }
                        _ => None,
                    })
                    .sum()
            })
            .collect();
        let mut metrics = scores.metrics.clone();
        metrics.extend(completion_length_metrics(&lengths));
        drop(completions);
        Ok(traces
            .into_iter()
            .zip(scores.advantages.advantages.iter())
            .map(|(trace, &advantage)| Rollout {
                trace,
                advantage,
                round_metrics: metrics.clone(),
            })
            .collect())
    }
}

/// Trains GRPO as `config` says and exports `<out_dir>/model`.
pub fn train(config: &TrainConfig, opts: &RunOptions) -> Result<StageReport> {
    let g = &config.grpo;
    if g.num_iterations != 1 {
        return Err(StageError::Input(format!(
            "grpo.num_iterations = {} is not supported (only 1, the official setting)",
            g.num_iterations
        )));
    }
    if config.optim.grad_accum_steps % g.num_generations != 0 {
        return Err(StageError::Input(format!(
            "optim.grad_accum_steps ({}) must be a multiple of grpo.num_generations ({}): a step \
             is a whole number of prompt groups",
            config.optim.grad_accum_steps, g.num_generations
        )));
    }
    let mode: Mode = g
        .rollout_mode
        .parse()
        .map_err(|e| StageError::Input(format!("grpo.rollout_mode: {e}")))?;
    let model = TrainableModel::load(&config.model, opts.dtype, &opts.device)?;
    let params: Vec<(String, Var)> = model.trainable_params(&config.freeze)?;
    let reference = if g.beta != 0.0 {
        Some(model.folder.load_bagel(opts.dtype, &opts.device)?)
    } else {
        None
    };
    let (vae_resize, vit_resize) = resizes(&model.folder, config.data.max_image_size);
    let rows = read_prompts(config)?;
    let mut roller = Roller {
        config,
        engine: Engine {
            model: model.inference_view()?,
            ae: model.ae.clone(),
            tokenizer: model.tokenizer.clone(),
            folder: model.folder.clone(),
            vit_resize,
            show_progress: false,
            reasoning: model.reasoning,
        },
        order: Order::new(rows.len(), config.run.seed),
        rows,
        rewards: RewardSet::from_config(g, &config.judge)?,
        mode,
        vae_resize,
        vit_resize,
        pictures: HashMap::new(),
    };
    let loss_config = GrpoLossConfig::from_config(g);
    let mut run = open_loop(config, params, opts)?;
    let mut queue: VecDeque<Rollout> = VecDeque::new();
    let stats = drive(&mut run, opts, |run| {
        if queue.is_empty() {
            queue = roller.round(run)?;
        }
        let rollout = queue
            .pop_front()
            .ok_or_else(|| StageError::Input("a generation round produced no rollouts".into()))?;
        let sampled = config.data.sample_latents.then_some(run.rng());
        let batch = repack(&model, &rollout.trace, &vit_resize, sampled)?;
        let tokens = batch.sequence_length;
        let mut metrics = rollout.round_metrics.clone();
        let Some((logps, logits)) = generated_log_probs(&model.model, &batch, g.temperature)?
        else {
            return Err(StageError::Input(
                "a rollout has no generated text to score".into(),
            ));
        };
        metrics.insert("entropy".into(), mean_token_entropy(&logits)?);
        let ref_logps = match &reference {
            Some(r) => Some(
                generated_log_probs(r, &batch, g.temperature)?
                    .map(|(l, _)| l.detach())
                    .ok_or_else(|| StageError::Input("reference scored no tokens".into()))?,
            ),
            None => None,
        };
        let (padded, mask) = pad_completions(&[logps])?;
        let ref_padded = match ref_logps {
            Some(r) => Some(pad_completions(&[r])?.0),
            None => None,
        };
        let advantages = Tensor::new(&[rollout.advantage], padded.device())?;
        let out = grpo_loss(
            GrpoLossInputs {
                logps: &padded,
                mask: &mask,
                advantages: &advantages,
                old_logps: None,
                ref_logps: ref_padded.as_ref(),
            },
            &loss_config,
        )?;
        metrics.extend(out.metrics.to_map());
        Ok(Micro {
            loss: out.loss,
            metrics,
            tokens,
        })
    })?;
    let model_dir = export_run(&model, &run, config, opts)?;
    finish(config, &run, &stats, model_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use cooper_infer::trace::{StopReason, TextRole};
    use cooper_train::rewards::{ExplorationReward, FormatReward, REFLECTION_PROMPT};

    fn trace(system_prompt: bool) -> ReasonTrace {
        let text = |role, text: &str| TraceEntry::Text {
            role,
            text: text.to_string(),
        };
        let image = |role| TraceEntry::Image {
            role,
            image: image::RgbImage::new(2, 2),
            depth: None,
            seed: None,
            elapsed: None,
        };
        let turn = |turn, text: &str, outcome| TraceEntry::ModelTurn {
            turn,
            text: text.to_string(),
            outcome,
            seed: 0,
            elapsed: std::time::Duration::ZERO,
        };
        let mut entries = Vec::new();
        if system_prompt {
            entries.push(text(TextRole::System, "system prompt"));
        }
        entries.extend([
            image(ImageRole::Input),
            text(TextRole::Question, "Which is closer?"),
            turn(1, "no tags", TurnOutcome::Dropped),
            turn(
                2,
                "<think>depth</think><depth-estimation>go</depth-estimation>",
                TurnOutcome::ToolCall(cooper_infer::reasoning::tags::Tool::Depth),
            ),
            image(ImageRole::Depth),
            text(TextRole::Reflection, REFLECTION_PROMPT),
            turn(3, "<think>a</think><answer>A</answer>", TurnOutcome::Answer),
        ]);
        ReasonTrace {
            mode: Mode::Cooper,
            question: "Which is closer?".to_string(),
            params: ReasonParams::default(),
            original_size: (2, 2),
            entries,
            final_answer: Some("A".to_string()),
            boxed_answer: None,
            stop: StopReason::Answered,
            elapsed: std::time::Duration::ZERO,
        }
    }

    /// A describe-first model's request and description are prompt to the rewards: they grade
    /// the turns after the question, which must still be well formed on their own.
    #[test]
    fn a_description_before_the_question_is_part_of_the_prompt() {
        let mut t = trace(false);
        let described = [
            TraceEntry::Text {
                role: TextRole::DescribePrompt,
                text: cooper_infer::prompts::DESCRIBE_PROMPT.to_string(),
            },
            TraceEntry::ModelTurn {
                turn: 0,
                text: "<think> I can see 1 object. </think>\n<answer> \\boxed{1} </answer>"
                    .to_string(),
                outcome: TurnOutcome::Description,
                seed: 0,
                elapsed: std::time::Duration::ZERO,
            },
        ];
        t.entries.splice(1..1, described);
        let c = completion(&t);
        assert_eq!(c.prompt_len, 4);
        assert_eq!(c.items.len(), 8);
        assert!(c.generated()[0]
            .text()
            .unwrap()
            .contains("<depth-estimation>"));
        assert!(FormatReward.is_well_formed(&c));
    }

    /// The rewards see the model's own turns whether or not it was asked with a system prompt.
    #[test]
    fn the_prompt_is_what_precedes_the_first_model_turn() {
        for (system_prompt, prompt_len) in [(true, 3), (false, 2)] {
            let t = trace(system_prompt);
            let c = completion(&t);
            assert_eq!(c.prompt_len, prompt_len);
            // The dropped turn is not in the list; the tool turn comes first after the prompt.
            assert_eq!(c.items.len(), prompt_len + 4);
            assert!(c.generated()[0]
                .text()
                .unwrap()
                .contains("<depth-estimation>"));
            assert!(FormatReward.is_well_formed(&c));
            assert!(ExplorationReward::default().explores(&c));
        }
    }

    /// The loss's gradient raises the log-probability of a positively advantaged completion and
    /// lowers that of a negative one (ρ = 1, the official single pass).
    #[test]
    fn advantages_push_log_probs_the_right_way() {
        let dev = Device::Cpu;
        for (adv, rises) in [(1.0f32, true), (-1.0, false)] {
            let logits = Var::zeros((3, 5), DType::F32, &dev).unwrap();
            let targets = Tensor::new(&[1u32, 4, 2], &dev).unwrap();
            let logp = |l: &Tensor| -> f32 {
                token_log_probs(l, &targets, 1.0)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap()
            };
            let before = logp(logits.as_tensor());
            let lp = token_log_probs(logits.as_tensor(), &targets, 1.0).unwrap();
            let (padded, mask) = pad_completions(&[lp]).unwrap();
            let a = Tensor::new(&[adv], &dev).unwrap();
            let out = grpo_loss(
                GrpoLossInputs {
                    logps: &padded,
                    mask: &mask,
                    advantages: &a,
                    old_logps: None,
                    ref_logps: None,
                },
                &GrpoLossConfig::default(),
            )
            .unwrap();
            let grads = out.loss.backward().unwrap();
            let g = grads.get(logits.as_tensor()).unwrap();
            logits
                .set(&(logits.as_tensor() - (g * 0.5).unwrap()).unwrap())
                .unwrap();
            let after = logp(logits.as_tensor());
            assert_eq!(after > before, rises, "A = {adv}: {before} -> {after}");
        }
    }
}
