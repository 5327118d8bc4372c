//! The interface between the harness and a model: [`Answerer`], [`ReasoningMode`], [`ModelAnswer`].
//!
//! The harness knows nothing about how answers are produced; the CLI implements [`Answerer`] with
//! the real engine and tests implement it with scripts.

use std::fmt;
use std::str::FromStr;

use image::RgbImage;

use crate::error::BoxError;

/// How the model reasons about a question (§3.6 of the design reference).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningMode {
    /// Interleaved reasoning: the model may request depth or segmentation maps over up to three
    /// turns before answering (COOPER).
    #[default]
    Cooper,
    /// Perception-enhanced: always a depth map, then a segmentation map, then one answer (BAGEL-PE).
    Pe,
    /// Reasoning-enhanced: text-only thinking, the answer after the last `</think>` (BAGEL-RE).
    Re,
    /// A direct answer with no thinking and no auxiliary maps.
    Direct,
}

impl ReasoningMode {
    /// The lower-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cooper => "cooper",
            Self::Pe => "pe",
            Self::Re => "re",
            Self::Direct => "direct",
        }
    }
}

impl fmt::Display for ReasoningMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReasoningMode {
    type Err = crate::EvalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cooper" | "interleave" => Ok(Self::Cooper),
            "pe" | "image" => Ok(Self::Pe),
            "re" | "text" => Ok(Self::Re),
            "direct" => Ok(Self::Direct),
            _ => Err(crate::EvalError::InvalidValue {
                what: "reasoning mode",
                value: s.to_string(),
                message: "expected cooper, pe, re or direct".into(),
            }),
        }
    }
}

/// What a model returned for one question.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelAnswer {
    /// The final output string (for COOPER and PE the last output of the loop; for RE the text after
    /// the last `</think>` may be given, or the whole output: extraction handles both).
    pub text: String,
    /// Text-generation turns used.
    pub turns: usize,
    /// Depth maps generated.
    pub depth_calls: usize,
    /// Segmentation maps generated.
    pub segmentation_calls: usize,
    /// A describe-first model's scene description, written before the question was put (not
    /// counted in `turns`).
    #[serde(default)]
    pub description: Option<String>,
}

impl ModelAnswer {
    /// A one-turn answer with no tool calls.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            turns: 1,
            depth_calls: 0,
            segmentation_calls: 0,
            description: None,
        }
    }
}

/// Something that answers a question about an image.
pub trait Answerer {
    /// Answers `question` (already formatted by [`crate::prompt::format_question`]) about `image`.
    fn answer(
        &mut self,
        image: &RgbImage,
        question: &str,
        mode: ReasoningMode,
    ) -> Result<ModelAnswer, BoxError>;
}

impl<A: Answerer + ?Sized> Answerer for &mut A {
    fn answer(
        &mut self,
        image: &RgbImage,
        question: &str,
        mode: ReasoningMode,
    ) -> Result<ModelAnswer, BoxError> {
        (**self).answer(image, question, mode)
    }
}

impl<A: Answerer + ?Sized> Answerer for Box<A> {
    fn answer(
        &mut self,
        image: &RgbImage,
        question: &str,
        mode: ReasoningMode,
    ) -> Result<ModelAnswer, BoxError> {
        (**self).answer(image, question, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for m in [
            ReasoningMode::Cooper,
            ReasoningMode::Pe,
            ReasoningMode::Re,
            ReasoningMode::Direct,
        ] {
            assert_eq!(m.name().parse::<ReasoningMode>().expect("parse"), m);
        }
        assert_eq!(
            "interleave".parse::<ReasoningMode>().expect("alias"),
            ReasoningMode::Cooper
        );
        assert!("fast".parse::<ReasoningMode>().is_err());
    }
}
