//! COOPER's training stages as loops over the model: `ae` (a FLUX-architecture autoencoder
//! from pictures), `vit` (dense pretraining of the ViT on stage-1 targets, for models trained
//! from scratch), `amg` (stage 1: picture → depth / segmentation by rectified flow), `sft`
//! (stage 2a: interleaved chains, masked cross-entropy) and `grpo` (stage 2b: rollouts through
//! the inference loop, CPR rewards, the clipped surrogate).
//!
//! Each stage reads the official data formats, trains through `cooper_train::run::TrainLoop`
//! (accumulation, clipping, schedule, AdamW, EMA, atomic checkpoints, exact resume, JSONL
//! metrics) and ends by exporting a complete model folder in the official layout
//! (`<out_dir>/model/`), which `cooper ask` and the official loaders read as it is.
//!
//! This crate owns how a stage turns data into model inputs and losses; it does not own the
//! model (`cooper-model`), the reasoning loop (`cooper-infer`), the rewards and optimiser
//! (`cooper-train`) or the data writers (`cooper-world`).

pub mod ae;
pub mod data;
pub mod driver;
pub mod error;
pub mod grpo;
pub mod model;
pub mod packed;
pub mod pictures;
pub mod vit;

pub use driver::{run_stage, RunOptions, StageReport};
pub use error::{Result, StageError};
