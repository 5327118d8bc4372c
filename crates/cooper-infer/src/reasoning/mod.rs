//! The reasoning procedures of `cooper ask`, generic over a [`Backend`].
//!
//! Three contexts are kept as in the official code (reference §3.6): G (main), T
//! (text-dropped, for text CFG) and I (image-dropped, for image CFG). Entry point: [`reason`].
//!
//! | mode | official function | procedure |
//! |---|---|---|
//! | `cooper` | `interleave_reason_tool_condition` | the model decides: `<answer>` ends; a depth / segmentation tag generates a map that enters G and I through the ViT only, followed by `REFLECTION_PROMPT`; a turn with neither is dropped and decoded again; at most `max_inter_num` decodes |
//! | `pe` | `image_reason_tool_condition` | `DEPTH_PROMPT` → depth map, `SEGMENTATION_PROMPT` → segmentation map (each ViT-only), then an `<answer>` turn and one decode |
//! | `re` | `text_reason` (thinking on) | `VLM_THINK_SYSTEM_PROMPT`, picture ViT-only, question, one decode |
//! | `direct` | (ours) | `pe` without the maps: `IMAGE_REASON_SYSTEM_PROMPT`, picture (VAE + ViT), question, `<answer>` turn, one decode |
//!
//! Seeds: decode k (1-based) uses `text.seed + k − 1`; generated map j (0-based) uses
//! `image.seed + j`. Both are recorded in the trace.
//!
//! With [`ReasonParams::describe_first`] (a model trained on this project's describe-first
//! chains; never the official procedure), every mode asks [`DESCRIBE_PROMPT`] right after the
//! picture and lets the model write its description, decode 0 (seed `text.seed − 1`, free even
//! with `constrain_answers`), into every context that holds the question, before the question.

pub mod tags;

use std::time::{Duration, Instant};

use image::RgbImage;

use crate::backend::Backend;
use crate::choices::AnswerChoices;
use crate::decode::{decode_depth, decode_image, DepthMap};
use crate::error::Result;
use crate::params::{Mode, ReasonParams, TextParams};
use crate::prompts::{
    ANSWER_OPEN, DEPTH_PROMPT, DESCRIBE_PROMPT, IMAGE_REASON_SYSTEM_PROMPT,
    INTERLEAVE_REASON_SYSTEM_PROMPT, REFLECTION_PROMPT, SEGMENTATION_PROMPT,
    VLM_THINK_SYSTEM_PROMPT,
};
use crate::trace::{ImageRole, ReasonTrace, StopReason, TextRole, TraceEntry, TurnOutcome};
use tags::{Tool, TurnRequest};

/// Progress notifications for streaming the chain to a terminal.
#[derive(Debug, Clone, Copy)]
pub enum ReasonEvent<'a> {
    /// Text the procedure wrote into the context (system prompt, question, reflection, ...).
    Prompt {
        /// Whose text.
        role: TextRole,
        /// The text.
        text: &'a str,
    },
    /// A model decode starts.
    TurnStart {
        /// 1-based decode counter.
        turn: usize,
    },
    /// A newly decoded piece of the current turn.
    TextPiece(&'a str),
    /// The current decode ended.
    TurnEnd {
        /// 1-based decode counter.
        turn: usize,
        /// What the loop does with it.
        outcome: TurnOutcome,
    },
    /// A map generation starts.
    ImageStart {
        /// Depth or segmentation.
        tool: Tool,
    },
    /// A map was generated.
    ImageDone {
        /// Depth or segmentation.
        tool: Tool,
        /// Wall time of the generation.
        elapsed: Duration,
    },
}

/// Answers `question` about `image` with the procedure of `params.mode`.
///
/// `image` is the user's picture at its original size; it is resized with
/// `params.vae_resize` here (the backend applies the ViT resize itself), and generated maps
/// have that resized size. `events` receives progress as it happens.
pub fn reason<B: Backend>(
    backend: &B,
    image: &RgbImage,
    question: &str,
    params: &ReasonParams,
    events: &mut dyn FnMut(ReasonEvent<'_>),
) -> Result<ReasonTrace> {
    reason_described(backend, image, question, params, None, events)
}

/// [`reason`], with a describe-first model's description of `image` already known: `described`
/// (the text of an earlier trace's [`TurnOutcome::Description`] turn for the same picture and
/// settings) is put into the contexts instead of being decoded again. What precedes the
/// description, and its seed, do not depend on the question, so the result is the same as
/// [`reason`]'s; `cooper eval` asks each picture's questions this way, decoding the description
/// once a picture. Ignored unless `params.describe_first`.
pub fn reason_described<B: Backend>(
    backend: &B,
    image: &RgbImage,
    question: &str,
    params: &ReasonParams,
    described: Option<&str>,
    events: &mut dyn FnMut(ReasonEvent<'_>),
) -> Result<ReasonTrace> {
    params.validate()?;
    let start = Instant::now();
    let input = params.vae_resize.resize(image)?;
    let mut run = Run {
        backend,
        params,
        events,
        entries: Vec::new(),
        maps: 0,
        choices: params
            .constrain_answers
            .then(|| AnswerChoices::from_question(question))
            .flatten(),
        described,
        height: input.height(),
        width: input.width(),
    };
    let (final_text, stop) = match params.mode {
        Mode::Cooper => run.cooper(&input, question)?,
        Mode::Pe => run.perception_first(&input, question, true)?,
        Mode::Direct => run.perception_first(&input, question, false)?,
        Mode::Re => run.text_only(&input, question)?,
    };
    let final_answer = final_text.map(|t| extract_answer(params.mode, &t));
    let boxed_answer = final_answer
        .as_deref()
        .and_then(tags::boxed_content)
        .map(str::to_string);
    Ok(ReasonTrace {
        mode: params.mode,
        question: question.to_string(),
        params: *params,
        original_size: image.dimensions(),
        entries: run.entries,
        final_answer,
        boxed_answer,
        stop,
        elapsed: start.elapsed(),
    })
}

/// The answer text of the final model text (see [`ReasonTrace::final_answer`]).
fn extract_answer(mode: Mode, text: &str) -> String {
    match mode {
        Mode::Re => tags::after_think(text).to_string(),
        Mode::Cooper | Mode::Pe | Mode::Direct => match tags::answer_content(text) {
            Some(a) => a.trim().to_string(),
            None => text
                .strip_prefix(ANSWER_OPEN)
                .unwrap_or(text)
                .trim()
                .to_string(),
        },
    }
}

/// State of one procedure run.
struct Run<'a, B: Backend> {
    backend: &'a B,
    params: &'a ReasonParams,
    events: &'a mut dyn FnMut(ReasonEvent<'_>),
    entries: Vec<TraceEntry>,
    /// Maps generated so far (for their seeds).
    maps: u64,
    /// What a box may hold, with [`ReasonParams::constrain_answers`] and a question that offers
    /// options or asks for Yes / No.
    choices: Option<AnswerChoices>,
    /// The description, when it is known already ([`reason_described`]).
    described: Option<&'a str>,
    height: u32,
    width: u32,
}

impl<B: Backend> Run<'_, B> {
    /// Appends procedure text to the given contexts and records it once.
    fn prompt(&mut self, role: TextRole, text: &str, ctxs: &mut [&mut B::Context]) -> Result<()> {
        if role == TextRole::System && !self.params.system_prompt {
            return Ok(());
        }
        for ctx in ctxs.iter_mut() {
            self.backend.append_text(ctx, text)?;
        }
        (self.events)(ReasonEvent::Prompt { role, text });
        self.entries.push(TraceEntry::Text {
            role,
            text: text.to_string(),
        });
        Ok(())
    }

    fn record_input(&mut self, input: &RgbImage) {
        self.entries.push(TraceEntry::Image {
            role: ImageRole::Input,
            image: input.clone(),
            depth: None,
            seed: None,
            elapsed: None,
        });
    }

    /// Decodes turn `turn` from `ctx`, streaming it.
    fn decode(&mut self, ctx: &B::Context, turn: usize) -> Result<(String, TextParams, Duration)> {
        let choices = self.choices.clone();
        self.decode_with(ctx, turn, choices.as_ref())
    }

    /// The decoding settings of turn `turn` (0: the description): seed `text.seed + turn − 1`.
    fn turn_params(&self, turn: usize) -> TextParams {
        TextParams {
            seed: self
                .params
                .text
                .seed
                .wrapping_add(turn as u64)
                .wrapping_sub(1),
            ..self.params.text
        }
    }

    /// Decodes turn `turn` (0: the description) from `ctx` with `choices`, streaming it.
    fn decode_with(
        &mut self,
        ctx: &B::Context,
        turn: usize,
        choices: Option<&AnswerChoices>,
    ) -> Result<(String, TextParams, Duration)> {
        let text_params = self.turn_params(turn);
        (self.events)(ReasonEvent::TurnStart { turn });
        let start = Instant::now();
        let events = &mut *self.events;
        let text = self
            .backend
            .generate_text(ctx, &text_params, choices, &mut |piece: &str| {
                events(ReasonEvent::TextPiece(piece))
            })?;
        Ok((text, text_params, start.elapsed()))
    }

    /// For a describe-first model, asks for the picture's description and adds the model's
    /// answer to `ctxs` (the first is decoded from). Its box holds an object count, so the
    /// question's answer choices do not constrain it.
    fn describe(&mut self, ctxs: &mut [&mut B::Context]) -> Result<()> {
        if !self.params.describe_first {
            return Ok(());
        }
        self.prompt(TextRole::DescribePrompt, DESCRIBE_PROMPT, ctxs)?;
        let (text, tp, elapsed) = match self.described {
            Some(known) => {
                (self.events)(ReasonEvent::TurnStart { turn: 0 });
                (self.events)(ReasonEvent::TextPiece(known));
                (known.to_string(), self.turn_params(0), Duration::ZERO)
            }
            None => self.decode_with(&*ctxs[0], 0, None)?,
        };
        for ctx in ctxs.iter_mut() {
            self.backend.append_text(ctx, &text)?;
        }
        self.record_turn(0, text, TurnOutcome::Description, tp.seed, elapsed);
        Ok(())
    }

    fn record_turn(
        &mut self,
        turn: usize,
        text: String,
        outcome: TurnOutcome,
        seed: u64,
        elapsed: Duration,
    ) {
        (self.events)(ReasonEvent::TurnEnd { turn, outcome });
        self.entries.push(TraceEntry::ModelTurn {
            turn,
            text,
            outcome,
            seed,
            elapsed,
        });
    }

    /// Generates a map from (G, T, I), records it, and returns the picture as it is fed back
    /// (depth Spectral-coloured, resized by the VAE rule as the official loop does).
    fn generate_map(
        &mut self,
        tool: Tool,
        gen: &B::Context,
        cfg_text: &B::Context,
        cfg_img: &B::Context,
    ) -> Result<RgbImage> {
        let image_params = crate::params::ImageParams {
            seed: self.params.image.seed.wrapping_add(self.maps),
            ..self.params.image
        };
        self.maps += 1;
        (self.events)(ReasonEvent::ImageStart { tool });
        let start = Instant::now();
        let raw = self.backend.generate_image(
            gen,
            cfg_text,
            cfg_img,
            self.height,
            self.width,
            &image_params,
        )?;
        let (image, depth): (RgbImage, Option<DepthMap>) = match tool {
            Tool::Depth => {
                let d = decode_depth(&raw)?;
                (d.to_spectral(), Some(d))
            }
            Tool::Segmentation => (decode_image(&raw)?, None),
        };
        let elapsed = start.elapsed();
        (self.events)(ReasonEvent::ImageDone { tool, elapsed });
        let fed = self.params.vae_resize.resize(&image)?;
        self.entries.push(TraceEntry::Image {
            role: tool.into(),
            image,
            depth,
            seed: Some(image_params.seed),
            elapsed: Some(elapsed),
        });
        Ok(fed)
    }

    /// `cooper` mode (official `interleave_reason_tool_condition` with inputs [image, question]).
    fn cooper(&mut self, input: &RgbImage, question: &str) -> Result<(Option<String>, StopReason)> {
        let b = self.backend;
        let mut g = b.empty_context();
        let mut i = b.empty_context();
        self.prompt(
            TextRole::System,
            INTERLEAVE_REASON_SYSTEM_PROMPT,
            &mut [&mut g, &mut i],
        )?;
        // The picture: G gets VAE + ViT, T forks from G, I never sees it.
        b.append_image(&mut g, input, true, true)?;
        self.record_input(input);
        self.describe(&mut [&mut g, &mut i])?;
        // The question: G and I get it. (The official code also forks T from G here and after
        // the picture, but T is only read after a tool turn has re-forked it.)
        self.prompt(TextRole::Question, question, &mut [&mut g, &mut i])?;

        let mut turn = 0;
        loop {
            turn += 1;
            let (text, tp, elapsed) = self.decode(&g, turn)?;
            let request = tags::parse_turn(&text);
            if let TurnRequest::Answer(_) = request {
                self.record_turn(turn, text.clone(), TurnOutcome::Answer, tp.seed, elapsed);
                return Ok((Some(text), StopReason::Answered));
            }
            if turn >= self.params.max_inter_num {
                self.record_turn(turn, text, TurnOutcome::LimitReached, tp.seed, elapsed);
                return Ok((None, StopReason::InteractionLimit));
            }
            let TurnRequest::Tool(call) = request else {
                self.record_turn(turn, text, TurnOutcome::Dropped, tp.seed, elapsed);
                continue;
            };
            // T: G plus the turn without its tool request; G and I: the whole turn.
            let mut t = g.clone();
            b.append_text(&mut t, &tags::without_tool_call(&text, &call))?;
            b.append_text(&mut g, &text)?;
            b.append_text(&mut i, &text)?;
            self.record_turn(
                turn,
                text,
                TurnOutcome::ToolCall(call.tool),
                tp.seed,
                elapsed,
            );
            let fed = self.generate_map(call.tool, &g, &t, &i)?;
            // Generated maps enter G and I through the ViT only, then the reflection prompt.
            b.append_image(&mut g, &fed, false, true)?;
            b.append_image(&mut i, &fed, false, true)?;
            self.prompt(
                TextRole::Reflection,
                REFLECTION_PROMPT,
                &mut [&mut g, &mut i],
            )?;
        }
    }

    /// `pe` mode (official `image_reason_tool_condition`) when `maps`, else `direct` mode.
    fn perception_first(
        &mut self,
        input: &RgbImage,
        question: &str,
        maps: bool,
    ) -> Result<(Option<String>, StopReason)> {
        let b = self.backend;
        let mut g = b.empty_context();
        let mut i = b.empty_context();
        self.prompt(
            TextRole::System,
            IMAGE_REASON_SYSTEM_PROMPT,
            &mut [&mut g, &mut i],
        )?;
        b.append_image(&mut g, input, true, true)?;
        self.record_input(input);
        self.describe(&mut [&mut g, &mut i])?;
        self.prompt(TextRole::Question, question, &mut [&mut g, &mut i])?;
        if maps {
            for (tool, prompt) in [
                (Tool::Depth, DEPTH_PROMPT),
                (Tool::Segmentation, SEGMENTATION_PROMPT),
            ] {
                // T is G before the tool prompt.
                let t = g.clone();
                self.prompt(TextRole::ToolPrompt, prompt, &mut [&mut g, &mut i])?;
                let fed = self.generate_map(tool, &g, &t, &i)?;
                b.append_image(&mut g, &fed, false, true)?;
                b.append_image(&mut i, &fed, false, true)?;
            }
        }
        self.prompt(TextRole::AnswerPrefix, ANSWER_OPEN, &mut [&mut g])?;
        let (text, tp, elapsed) = self.decode(&g, 1)?;
        self.record_turn(1, text.clone(), TurnOutcome::Final, tp.seed, elapsed);
        Ok((
            Some(format!("{ANSWER_OPEN}{text}")),
            StopReason::SingleDecode,
        ))
    }

    /// `re` mode (official `text_reason` with thinking on).
    fn text_only(
        &mut self,
        input: &RgbImage,
        question: &str,
    ) -> Result<(Option<String>, StopReason)> {
        let b = self.backend;
        let mut g = b.empty_context();
        self.prompt(TextRole::System, VLM_THINK_SYSTEM_PROMPT, &mut [&mut g])?;
        b.append_image(&mut g, input, false, true)?;
        self.record_input(input);
        self.describe(&mut [&mut g])?;
        self.prompt(TextRole::Question, question, &mut [&mut g])?;
        let (text, tp, elapsed) = self.decode(&g, 1)?;
        self.record_turn(1, text.clone(), TurnOutcome::Final, tp.seed, elapsed);
        Ok((Some(text), StopReason::SingleDecode))
    }
}

#[cfg(test)]
mod tests;
