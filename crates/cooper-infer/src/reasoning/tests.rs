//! The loop driven by a scripted backend: every branch of the tag protocol and every mode.

use std::cell::RefCell;
use std::collections::VecDeque;

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};

use super::*;
use crate::error::InferError;
use crate::params::{ImageParams, Mode, ReasonParams, TextParams};
use crate::transforms::ResizeConfig;

/// A context is the log of what was appended to it.
type Log = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
struct ImageCall {
    gen: Log,
    cfg_text: Log,
    cfg_img: Log,
    height: u32,
    width: u32,
    seed: u64,
}

/// Replies with scripted turns and records every call.
#[derive(Default)]
struct Scripted {
    replies: RefCell<VecDeque<String>>,
    text_calls: RefCell<Vec<(Log, u64)>>,
    /// The choices each text decode was given.
    choice_calls: RefCell<Vec<Option<AnswerChoices>>>,
    image_calls: RefCell<Vec<ImageCall>>,
}

impl Scripted {
    fn new(replies: &[&str]) -> Self {
        Self {
            replies: RefCell::new(replies.iter().map(|s| s.to_string()).collect()),
            ..Self::default()
        }
    }
}

impl Backend for Scripted {
    type Context = Log;

    fn empty_context(&self) -> Log {
        Vec::new()
    }

    fn append_text(&self, ctx: &mut Log, text: &str) -> Result<()> {
        ctx.push(format!("text:{text}"));
        Ok(())
    }

    fn append_image(&self, ctx: &mut Log, image: &RgbImage, vae: bool, vit: bool) -> Result<()> {
        let p = image.get_pixel(0, 0).0;
        ctx.push(format!(
            "image:{}{}:{}x{}:{:?}",
            if vae { "vae" } else { "" },
            if vit { "+vit" } else { "" },
            image.width(),
            image.height(),
            p
        ));
        Ok(())
    }

    fn generate_text(
        &self,
        ctx: &Log,
        params: &TextParams,
        choices: Option<&AnswerChoices>,
        on_piece: &mut dyn FnMut(&str),
    ) -> Result<String> {
        self.choice_calls.borrow_mut().push(choices.cloned());
        self.text_calls
            .borrow_mut()
            .push((ctx.clone(), params.seed));
        let reply = self
            .replies
            .borrow_mut()
            .pop_front()
            .ok_or_else(|| InferError::Backend("script exhausted".into()))?;
        // Stream it in two pieces.
        let mid = reply
            .char_indices()
            .nth(reply.chars().count() / 2)
            .map_or(0, |(i, _)| i);
        on_piece(&reply[..mid]);
        on_piece(&reply[mid..]);
        Ok(reply)
    }

    fn generate_image(
        &self,
        gen: &Log,
        cfg_text: &Log,
        cfg_img: &Log,
        height: u32,
        width: u32,
        params: &ImageParams,
    ) -> Result<Tensor> {
        self.image_calls.borrow_mut().push(ImageCall {
            gen: gen.clone(),
            cfg_text: cfg_text.clone(),
            cfg_img: cfg_img.clone(),
            height,
            width,
            seed: params.seed,
        });
        // Raw AE output 0.2 everywhere: RGB 153, depth 0.6.
        Ok(Tensor::full(
            0.2f32,
            (1, 3, height as usize, width as usize),
            &Device::Cpu,
        )?)
    }
}

const Q: &str = "Which is closer?";
const THINK: &str = "<think> check depth </think>";

fn small_params(mode: Mode) -> ReasonParams {
    ReasonParams {
        mode,
        vae_resize: ResizeConfig {
            max_size: 64,
            min_size: 32,
            stride: 16,
            max_pixels: 1 << 20,
        },
        ..ReasonParams::default()
    }
}

fn picture() -> RgbImage {
    RgbImage::from_pixel(40, 30, Rgb([10, 20, 30]))
}

fn run(backend: &Scripted, mode: Mode) -> (ReasonTrace, Vec<String>) {
    let mut events = Vec::new();
    let trace = reason(backend, &picture(), Q, &small_params(mode), &mut |e| {
        events.push(match e {
            ReasonEvent::Prompt { role, .. } => format!("prompt:{role:?}"),
            ReasonEvent::TurnStart { turn } => format!("start:{turn}"),
            ReasonEvent::TextPiece(p) => format!("piece:{p}"),
            ReasonEvent::TurnEnd { turn, outcome } => format!("end:{turn}:{outcome:?}"),
            ReasonEvent::ImageStart { tool } => format!("image:{tool:?}"),
            ReasonEvent::ImageDone { tool, .. } => format!("done:{tool:?}"),
        })
    })
    .unwrap();
    (trace, events)
}

fn t(s: &str) -> String {
    format!("text:{s}")
}

/// The VAE-resized input (40x30 -> 48x32 here) as the scripted backend logs it.
const INPUT_VAE: &str = "image:vae+vit:48x32:[10, 20, 30]";
const DEPTH_VIT: &str = "image:+vit:48x32:[";

fn outcomes(trace: &ReasonTrace) -> Vec<TurnOutcome> {
    trace.model_turns().map(|(_, o)| o).collect()
}

#[test]
fn answer_at_once() {
    let reply = format!("{THINK}<answer>The cube. \\boxed{{A}}</answer>");
    let b = Scripted::new(&[&reply]);
    let (trace, events) = run(&b, Mode::Cooper);
    assert_eq!(trace.stop, StopReason::Answered);
    assert_eq!(outcomes(&trace), vec![TurnOutcome::Answer]);
    assert_eq!(trace.final_answer.as_deref(), Some("The cube. \\boxed{A}"));
    assert_eq!(trace.boxed_answer.as_deref(), Some("A"));
    let calls = b.text_calls.borrow();
    assert_eq!(
        calls[0].0,
        vec![
            t(INTERLEAVE_REASON_SYSTEM_PROMPT),
            INPUT_VAE.to_string(),
            t(Q)
        ]
    );
    assert_eq!(calls[0].1, 0, "turn 1 decodes with the base seed");
    assert!(b.image_calls.borrow().is_empty());
    // The streamed pieces reassemble the turn.
    let streamed: String = events
        .iter()
        .filter_map(|e| e.strip_prefix("piece:"))
        .collect();
    assert_eq!(streamed, reply);
    assert!(events.contains(&"end:1:Answer".to_string()));
}

#[test]
fn depth_then_answer_builds_the_three_contexts() {
    let turn1 = format!("{THINK}{DEPTH_PROMPT}");
    let turn2 = "<think> red is near </think><answer>red \\boxed{red}</answer>";
    let b = Scripted::new(&[&turn1, turn2]);
    let (trace, _) = run(&b, Mode::Cooper);
    assert_eq!(trace.stop, StopReason::Answered);
    assert_eq!(
        outcomes(&trace),
        vec![TurnOutcome::ToolCall(Tool::Depth), TurnOutcome::Answer]
    );

    let images = b.image_calls.borrow();
    assert_eq!(images.len(), 1);
    let call = &images[0];
    assert_eq!((call.height, call.width), (32, 48));
    assert_eq!(call.seed, 0);
    let sys = t(INTERLEAVE_REASON_SYSTEM_PROMPT);
    assert_eq!(
        call.gen,
        vec![sys.clone(), INPUT_VAE.into(), t(Q), t(&turn1)]
    );
    // T: the turn without its tool request.
    assert_eq!(
        call.cfg_text,
        vec![sys.clone(), INPUT_VAE.into(), t(Q), t(THINK)]
    );
    // I: no input picture.
    assert_eq!(call.cfg_img, vec![sys.clone(), t(Q), t(&turn1)]);

    // The second decode sees the Spectral-coloured map through the ViT only, then the
    // reflection prompt.
    let calls = b.text_calls.borrow();
    let ctx2 = &calls[1].0;
    assert_eq!(ctx2.len(), 6);
    let colour = crate::decode::spectral(0.6);
    assert_eq!(
        ctx2[4],
        format!("{DEPTH_VIT}{}, {}, {}]", colour[0], colour[1], colour[2])
    );
    assert_eq!(ctx2[5], t(REFLECTION_PROMPT));
    assert_eq!(calls[1].1, 1, "turn 2 decodes with seed + 1");

    // The trace holds the map, its depth values and the reflection prompt in order.
    let kinds: Vec<String> = trace
        .entries
        .iter()
        .map(|e| match e {
            TraceEntry::Text { role, .. } => format!("{role:?}"),
            TraceEntry::ModelTurn { outcome, .. } => format!("{outcome:?}"),
            TraceEntry::Image { role, depth, .. } => format!("{role:?}:{}", depth.is_some()),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "System",
            "Input:false",
            "Question",
            "ToolCall(Depth)",
            "Depth:true",
            "Reflection",
            "Answer"
        ]
    );
    let TraceEntry::Image { depth: Some(d), .. } = &trace.entries[4] else {
        panic!("expected the depth map")
    };
    assert!(d.data.iter().all(|&v| (v - 0.6).abs() < 1e-6));
}

#[test]
fn segmentation_then_depth_then_answer() {
    let turn1 = format!("{THINK}{SEGMENTATION_PROMPT}");
    let turn2 = format!("<think> now depth </think>{DEPTH_PROMPT}");
    let turn3 = "<think>done</think><answer>\\boxed{B}</answer>";
    let b = Scripted::new(&[&turn1, &turn2, turn3]);
    let (trace, events) = run(&b, Mode::Cooper);
    assert_eq!(trace.stop, StopReason::Answered);
    assert_eq!(
        outcomes(&trace),
        vec![
            TurnOutcome::ToolCall(Tool::Segmentation),
            TurnOutcome::ToolCall(Tool::Depth),
            TurnOutcome::Answer
        ]
    );
    let roles: Vec<ImageRole> = trace.generated_images().map(|(r, _)| r).collect();
    assert_eq!(roles, [ImageRole::Segmentation, ImageRole::Depth]);
    let images = b.image_calls.borrow();
    assert_eq!(images.len(), 2);
    assert_eq!((images[0].seed, images[1].seed), (0, 1));
    // The segmentation map is fed back as decoded RGB (0.2 -> 153).
    let seg_vit = "image:+vit:48x32:[153, 153, 153]".to_string();
    assert_eq!(images[1].gen[4], seg_vit);
    // Second call: T forks from G (which holds the first map) and drops the depth tag.
    assert_eq!(images[1].cfg_text.len(), 7);
    assert_eq!(images[1].cfg_text[6], t("<think> now depth </think>"));
    assert_eq!(images[1].cfg_text[4], seg_vit);
    // I keeps earlier generated maps but never the input picture.
    assert_eq!(images[1].cfg_img[3], seg_vit);
    assert!(!images[1].cfg_img.iter().any(|e| e.starts_with("image:vae")));
    assert_eq!(events.iter().filter(|e| e.starts_with("done:")).count(), 2);
}

#[test]
fn turns_without_tag_are_dropped_and_count_against_the_limit() {
    // Malformed and unclosed tags request nothing.
    let b = Scripted::new(&[
        "<think> hmm </think><depth-estimation>unclosed",
        "<answer>open answer",
        "<think> still nothing </think>",
    ]);
    let (trace, _) = run(&b, Mode::Cooper);
    assert_eq!(trace.stop, StopReason::InteractionLimit);
    assert_eq!(
        outcomes(&trace),
        vec![
            TurnOutcome::Dropped,
            TurnOutcome::Dropped,
            TurnOutcome::LimitReached
        ]
    );
    assert_eq!(trace.final_answer, None);
    // Every decode ran on the same, unextended context, with its own seed.
    let calls = b.text_calls.borrow();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|(ctx, _)| ctx == &calls[0].0));
    assert_eq!(calls.iter().map(|c| c.1).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(b.image_calls.borrow().is_empty());
}

#[test]
fn a_tool_request_on_the_last_turn_is_not_served() {
    let tool = format!("{THINK}{DEPTH_PROMPT}");
    let b = Scripted::new(&[&tool, &tool, &tool]);
    let (trace, _) = run(&b, Mode::Cooper);
    assert_eq!(trace.stop, StopReason::InteractionLimit);
    assert_eq!(
        outcomes(&trace),
        vec![
            TurnOutcome::ToolCall(Tool::Depth),
            TurnOutcome::ToolCall(Tool::Depth),
            TurnOutcome::LimitReached
        ]
    );
    assert_eq!(b.image_calls.borrow().len(), 2);
    assert!(b.replies.borrow().is_empty());
}

#[test]
fn perception_enhancement_generates_both_maps_then_answers() {
    let b = Scripted::new(&["red \\boxed{red}</answer>"]);
    let (trace, _) = run(&b, Mode::Pe);
    assert_eq!(trace.stop, StopReason::SingleDecode);
    assert_eq!(trace.final_answer.as_deref(), Some("red \\boxed{red}"));
    assert_eq!(trace.boxed_answer.as_deref(), Some("red"));
    let sys = t(IMAGE_REASON_SYSTEM_PROMPT);
    let images = b.image_calls.borrow();
    assert_eq!(images.len(), 2);
    assert_eq!(
        images[0].gen,
        vec![sys.clone(), INPUT_VAE.into(), t(Q), t(DEPTH_PROMPT)]
    );
    assert_eq!(
        images[0].cfg_text,
        vec![sys.clone(), INPUT_VAE.into(), t(Q)]
    );
    assert_eq!(images[0].cfg_img, vec![sys.clone(), t(Q), t(DEPTH_PROMPT)]);
    assert_eq!(images[1].gen.len(), 6);
    assert!(images[1].gen[4].starts_with(DEPTH_VIT));
    assert_eq!(images[1].gen[5], t(SEGMENTATION_PROMPT));
    assert_eq!(images[1].cfg_text.len(), 5);
    let calls = b.text_calls.borrow();
    assert_eq!(calls.len(), 1);
    let ctx = &calls[0].0;
    assert_eq!(ctx.len(), 8);
    assert_eq!(ctx[6], "image:+vit:48x32:[153, 153, 153]");
    assert_eq!(ctx[7], t(ANSWER_OPEN));
    // No reflection prompt in this mode.
    assert!(!ctx.contains(&t(REFLECTION_PROMPT)));
}

#[test]
fn direct_answers_without_maps() {
    let b = Scripted::new(&["\\boxed{7}</answer>"]);
    let (trace, _) = run(&b, Mode::Direct);
    assert!(b.image_calls.borrow().is_empty());
    let calls = b.text_calls.borrow();
    assert_eq!(
        calls[0].0,
        vec![
            t(IMAGE_REASON_SYSTEM_PROMPT),
            INPUT_VAE.into(),
            t(Q),
            t(ANSWER_OPEN)
        ]
    );
    assert_eq!(trace.boxed_answer.as_deref(), Some("7"));
    assert_eq!(outcomes(&trace), vec![TurnOutcome::Final]);
}

#[test]
fn text_reasoning_feeds_the_picture_through_the_vit_only() {
    let b = Scripted::new(&["<think> far </think> The sphere."]);
    let (trace, _) = run(&b, Mode::Re);
    let calls = b.text_calls.borrow();
    assert_eq!(
        calls[0].0,
        vec![
            t(VLM_THINK_SYSTEM_PROMPT),
            "image:+vit:48x32:[10, 20, 30]".to_string(),
            t(Q)
        ]
    );
    assert_eq!(trace.final_answer.as_deref(), Some("The sphere."));
    assert!(b.image_calls.borrow().is_empty());
}

#[test]
fn backend_errors_and_bad_settings_propagate() {
    let b = Scripted::new(&[]);
    let err = reason(&b, &picture(), Q, &small_params(Mode::Cooper), &mut |_| {});
    assert!(matches!(err, Err(InferError::Backend(_))));
    let mut p = small_params(Mode::Cooper);
    p.max_inter_num = 0;
    let b = Scripted::new(&["x"]);
    assert!(matches!(
        reason(&b, &picture(), Q, &p, &mut |_| {}),
        Err(InferError::InvalidSetting {
            field: "max_inter_num",
            ..
        })
    ));
}

#[test]
fn choices_reach_every_decode_only_when_asked_for() {
    let mcq = "Which is closer?\nOptions:\nA. red box\nB. cyan cone\nAnswer with the letter of the correct option.";
    let depth_then_answer = [
        format!("{THINK}<depth-estimation> depth </depth-estimation>"),
        format!("{THINK}<answer>\\boxed{{ red box}}</answer>"),
    ];
    let replies: Vec<&str> = depth_then_answer.iter().map(String::as_str).collect();
    let ask = |question: &str, constrain: bool| {
        let b = Scripted::new(&replies);
        let params = ReasonParams {
            constrain_answers: constrain,
            ..small_params(Mode::Cooper)
        };
        reason(&b, &picture(), question, &params, &mut |_| {}).unwrap();
        b.choice_calls.into_inner()
    };
    let calls = ask(mcq, true);
    assert_eq!(calls.len(), 2);
    for c in &calls {
        let c = c.as_ref().expect("choices on every turn");
        assert_eq!(c.label_of(" cyan cone"), Some("B"));
    }
    assert_eq!(ask(mcq, false), vec![None, None]);
    // A question with no options and no Yes / No instruction is not constrained.
    assert_eq!(ask("How far is the red box?", true), vec![None, None]);
}

#[test]
fn describe_first_puts_the_description_between_the_picture_and_the_question() {
    let yes_no = "Is there a red box in the image?\nAnswer with Yes or No.";
    let description =
        "<think> I can see 1 object. </think>\n<answer> The image shows \\boxed{1} object. </answer>";
    let turn1 = format!("{THINK}{DEPTH_PROMPT}");
    let turn2 = "<think> red is near </think><answer>\\boxed{ Yes}</answer>";
    let b = Scripted::new(&[description, &turn1, turn2]);
    let params = ReasonParams {
        describe_first: true,
        system_prompt: false,
        constrain_answers: true,
        text: TextParams {
            seed: 10,
            ..TextParams::default()
        },
        ..small_params(Mode::Cooper)
    };
    let mut events = Vec::new();
    let trace = reason(&b, &picture(), yes_no, &params, &mut |e| {
        if let ReasonEvent::TurnStart { turn } = e {
            events.push(turn)
        }
    })
    .unwrap();
    assert_eq!(events, [0, 1, 2]);
    assert_eq!(
        outcomes(&trace),
        vec![
            TurnOutcome::Description,
            TurnOutcome::ToolCall(Tool::Depth),
            TurnOutcome::Answer
        ]
    );
    assert_eq!(trace.boxed_answer.as_deref(), Some(" Yes"));
    let calls = b.text_calls.borrow();
    // The description is decoded from the picture and the request alone, with seed − 1.
    assert_eq!(calls[0], (vec![INPUT_VAE.into(), t(DESCRIBE_PROMPT)], 9));
    // Then the question follows it, and the first turn keeps the base seed.
    assert_eq!(
        calls[1],
        (
            vec![
                INPUT_VAE.into(),
                t(DESCRIBE_PROMPT),
                t(description),
                t(yes_no)
            ],
            10
        )
    );
    // The image-dropped context holds the description too.
    let images = b.image_calls.borrow();
    assert_eq!(
        images[0].cfg_img,
        vec![t(DESCRIBE_PROMPT), t(description), t(yes_no), t(&turn1)]
    );
    // The description's box holds a count: the Yes / No constraint is not applied to it.
    let choices = b.choice_calls.borrow();
    assert!(choices[0].is_none());
    assert!(choices[1].is_some() && choices[2].is_some());
    // Every mode describes first; `re` has only its one context.
    for mode in [Mode::Pe, Mode::Direct, Mode::Re] {
        let b = Scripted::new(&[description, "<think> x </think><answer>\\boxed{A}</answer>"]);
        let trace = reason(
            &b,
            &picture(),
            Q,
            &ReasonParams {
                describe_first: true,
                ..small_params(mode)
            },
            &mut |_| {},
        )
        .unwrap();
        let kinds: Vec<TurnOutcome> = outcomes(&trace);
        assert_eq!(kinds, [TurnOutcome::Description, TurnOutcome::Final]);
        let ctx = &b.text_calls.borrow()[1].0;
        let at = ctx.iter().position(|c| *c == t(description)).unwrap();
        assert_eq!(ctx[at - 1], t(DESCRIBE_PROMPT));
        assert_eq!(ctx[at + 1], t(Q));
    }
}

#[test]
fn a_known_description_is_put_in_place_not_decoded_again() {
    let description = "<think> I can see 1 object. </think>";
    let answer = "<think> x </think><answer>\\boxed{A}</answer>";
    let params = ReasonParams {
        describe_first: true,
        ..small_params(Mode::Cooper)
    };
    let decoded = Scripted::new(&[description, answer]);
    let first = reason(&decoded, &picture(), Q, &params, &mut |_| {}).unwrap();
    let known = Scripted::new(&[answer]);
    let again = reason_described(
        &known,
        &picture(),
        Q,
        &params,
        Some(description),
        &mut |_| {},
    )
    .unwrap();
    // One decode fewer, the same contexts, the same trace but for the description's time.
    assert_eq!(known.text_calls.borrow().len(), 1);
    assert_eq!(known.text_calls.borrow()[0], decoded.text_calls.borrow()[1]);
    let turns = |t: &ReasonTrace| -> Vec<(String, u64)> {
        t.entries
            .iter()
            .filter_map(|e| match e {
                TraceEntry::ModelTurn { text, seed, .. } => Some((text.clone(), *seed)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(turns(&first), turns(&again));
    assert_eq!(first.final_answer, again.final_answer);
    // A model that does not describe first ignores it.
    let plain = Scripted::new(&[answer]);
    let p = ReasonParams {
        describe_first: false,
        ..params
    };
    let t = reason_described(&plain, &picture(), Q, &p, Some(description), &mut |_| {}).unwrap();
    assert_eq!(outcomes(&t), vec![TurnOutcome::Answer]);
}
