//! Evaluation for COOPER: benchmark scoring, depth metrics and segmentation metrics.
//!
//! # What this crate owns
//! - Reading VLMEvalKit-layout benchmark TSVs ([`tsv`]) and turning items into question strings
//!   ([`prompt`]).
//! - Extracting answers from model outputs ([`extract`], with length [`units`]), optionally with an
//!   LLM judge over an OpenAI-compatible endpoint ([`judge`]).
//! - Scoring: accuracy, SIBench's mean relative accuracy and Q-Spatial-Bench's success rate
//!   ([`score`]); reports and resumable per-item predictions ([`report`]); the benchmark loop
//!   ([`harness`]).
//! - Depth metrics after least-squares scale-and-shift alignment ([`depth_metrics`]) and
//!   segmentation mIoU / pixel accuracy ([`seg_metrics`]), with folder-level drivers over PNGs
//!   ([`maps`]).
//!
//! # What it must not know about
//! The model. Answers come through the [`Answerer`] trait, which the CLI implements with the real
//! engine; this crate depends on no model, tensor or other cooper crate, and never loads weights.
//! It contacts no network address except the judge endpoint it is given.
//!
//! # Running a benchmark
//! ```no_run
//! use cooper_eval::{run_with, Answerer, BoxError, EvalConfig, ModelAnswer, ReasoningMode};
//!
//! struct AlwaysA;
//!
//! impl Answerer for AlwaysA {
//!     fn answer(
//!         &mut self,
//!         _image: &cooper_eval::image::RgbImage,
//!         _question: &str,
//!         _mode: ReasoningMode,
//!     ) -> Result<ModelAnswer, BoxError> {
//!         Ok(ModelAnswer::text("<answer>\\boxed{A}</answer>"))
//!     }
//! }
//!
//! let config = EvalConfig::new("bench.tsv", "eval/bench-cooper", ReasoningMode::Cooper);
//! let outcome = run_with(&config, AlwaysA)?;
//! println!("overall score {:.4}", outcome.summary.overall.score);
//! # Ok::<(), cooper_eval::EvalError>(())
//! ```

pub mod answerer;
pub mod depth_metrics;
pub mod error;
pub mod extract;
pub mod harness;
pub mod judge;
pub mod maps;
pub mod prompt;
pub mod report;
pub mod score;
pub mod seg_metrics;
pub mod tsv;
pub mod units;

/// The `image` crate the [`Answerer`] signature uses.
pub use image;

pub use answerer::{Answerer, ModelAnswer, ReasoningMode};
pub use error::{BoxError, EvalError};
pub use harness::{run_with, EvalConfig, EvalOutcome, ImageControl, JudgePolicy};
