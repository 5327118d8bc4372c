//! Model-independent inference for COOPER.
//!
//! This crate owns everything of `cooper ask` that does not need the network weights:
//! - [`prompts`]: the official prompt strings, byte for byte;
//! - [`sampling`]: the next-token sampler of the official `generate_text`;
//! - [`choices`]: answers constrained to a question's options (an option, off by default);
//! - [`flow`]: the rectified-flow schedule, Euler sampler and three-branch CFG combination,
//!   generic over a velocity callback;
//! - [`decode`]: raw autoencoder output to RGB pictures, relative depth and Spectral colours;
//! - [`image_io`]: loading and validating the user's picture (any common format);
//! - [`transforms`]: the official resize rule, normalisation and ViT patchify;
//! - [`engine`]: the loaded model folder implementing [`Backend`]; [`perceive`]: single-shot
//!   depth / segmentation; [`bench`]: speed and memory; [`parity`]: the generation parity cases;
//! - [`backend`]: the [`Backend`] trait, the seam to the engine that runs the model;
//! - [`reasoning`]: the reasoning procedures (`cooper`, `pe`, `re`, `direct`) over a backend;
//! - [`trace`]: the structured record of a run and its writer (JSON, PNGs, HTML).
//!
//! Only the engine knows the model (weights, tokenizer, cached forward passes from `cooper-model`);
//! the loop, sampler, CFG and decoders talk to it through [`Backend`], so they are tested with a
//! scripted backend.

pub mod backend;
pub mod bench;
pub mod choices;
pub mod decode;
pub mod engine;
pub mod error;
pub mod flow;
pub mod image_io;
pub mod params;
pub mod parity;
pub mod perceive;
pub mod prompts;
pub mod reasoning;
pub mod sampling;
pub mod trace;
pub mod transforms;

pub use backend::Backend;
pub use choices::AnswerChoices;
pub use engine::Engine;
pub use error::{InferError, Result};
pub use params::{CfgRenorm, ImageParams, Mode, ReasonParams, ReasoningConfig, TextParams};
pub use reasoning::{reason, reason_described, ReasonEvent};
pub use trace::{write_trace, ReasonTrace};
