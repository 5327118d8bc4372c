//! The structured record of one `ask`: every turn, picture, timing, setting and seed, in
//! the order of the official output list; and its writer ([`write_trace`]).

mod html;
mod writer;

use std::time::Duration;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::decode::DepthMap;
use crate::params::{Mode, ReasonParams};
use crate::reasoning::tags::Tool;

pub use writer::{write_trace, TraceFiles};

/// Who wrote a text entry that the model did not generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextRole {
    /// The system prompt of the mode.
    System,
    /// The user's question.
    Question,
    /// `REFLECTION_PROMPT`, appended after a generated map in `cooper` mode.
    Reflection,
    /// A tool prompt the procedure itself appends (`pe` mode's depth / segmentation prompt).
    ToolPrompt,
    /// The `<answer>` turn `pe` and `direct` append before decoding the answer.
    AnswerPrefix,
    /// The description request a describe-first model is asked before the question.
    DescribePrompt,
}

/// What became of a model turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnOutcome {
    /// It contains a closed `<answer>` tag; the loop ends.
    Answer,
    /// It requested a map; the map was generated and fed back.
    ToolCall(Tool),
    /// Neither tag nor answer: not added to the context, decoded again (official behaviour).
    Dropped,
    /// The interaction limit was reached on this turn without an answer.
    LimitReached,
    /// The single decode of `pe`, `re` or `direct` mode.
    Final,
    /// A describe-first model's scene description (turn 0), written before the question is
    /// asked; it stays in the context whatever it holds.
    Description,
}

/// The role of a picture in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageRole {
    /// The user's picture after the VAE resize (what the model saw).
    Input,
    /// A generated depth map (stored Spectral-coloured; the [0, 1] map beside it).
    Depth,
    /// A generated segmentation map.
    Segmentation,
}

impl From<Tool> for ImageRole {
    fn from(t: Tool) -> Self {
        match t {
            Tool::Depth => Self::Depth,
            Tool::Segmentation => Self::Segmentation,
        }
    }
}

/// One element of the chain.
#[derive(Debug, Clone)]
pub enum TraceEntry {
    /// Text the procedure wrote into the context.
    Text {
        /// Whose text.
        role: TextRole,
        /// The exact text.
        text: String,
    },
    /// Text the model generated.
    ModelTurn {
        /// 1-based decode counter (dropped turns count).
        turn: usize,
        /// The decoded text, as appended to the context.
        text: String,
        /// What the loop did with it.
        outcome: TurnOutcome,
        /// Seed of this decode.
        seed: u64,
        /// Wall time of the decode.
        elapsed: Duration,
    },
    /// A picture in the chain.
    Image {
        /// Input or generated map.
        role: ImageRole,
        /// The picture as fed to the model (depth: Spectral-coloured).
        image: RgbImage,
        /// For depth maps, the relative depth in [0, 1].
        depth: Option<DepthMap>,
        /// Seed of the initial noise (generated maps only).
        seed: Option<u64>,
        /// Wall time of the generation (generated maps only).
        elapsed: Option<Duration>,
    },
}

/// Why the procedure stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// A turn contained a closed `<answer>` tag.
    Answered,
    /// `max_inter_num` turns were decoded without an answer.
    InteractionLimit,
    /// The mode decodes once (`pe`, `re`, `direct`).
    SingleDecode,
}

/// The full record of one question.
#[derive(Debug, Clone)]
pub struct ReasonTrace {
    /// The procedure.
    pub mode: Mode,
    /// The user's question.
    pub question: String,
    /// Every setting, seeds included.
    pub params: ReasonParams,
    /// (width, height) of the user's picture before the VAE resize.
    pub original_size: (u32, u32),
    /// The chain, in the order of the official output list.
    pub entries: Vec<TraceEntry>,
    /// The final answer text: the `<answer>` content (`cooper`, `pe`, `direct`; for the
    /// latter two the text after `<answer>` when the tag is left open) or the text after the
    /// last `</think>` (`re`). `None` when `cooper` stopped at the limit.
    pub final_answer: Option<String>,
    /// The last balanced `\boxed{...}` of the final answer, if any.
    pub boxed_answer: Option<String>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Wall time of the whole procedure.
    pub elapsed: Duration,
}

impl ReasonTrace {
    /// The model turns, in order.
    pub fn model_turns(&self) -> impl Iterator<Item = (&str, TurnOutcome)> {
        self.entries.iter().filter_map(|e| match e {
            TraceEntry::ModelTurn { text, outcome, .. } => Some((text.as_str(), *outcome)),
            _ => None,
        })
    }

    /// The generated maps, in order.
    pub fn generated_images(&self) -> impl Iterator<Item = (ImageRole, &RgbImage)> {
        self.entries.iter().filter_map(|e| match e {
            TraceEntry::Image { role, image, .. } if *role != ImageRole::Input => {
                Some((*role, image))
            }
            _ => None,
        })
    }
}
