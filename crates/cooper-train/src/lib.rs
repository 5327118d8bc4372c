//! Training building blocks for COOPER: everything the training stages need that does not
//! depend on the model's forward pass.
//!
//! This crate owns:
//! * [`config`]: the run configuration (`TrainConfig`, TOML with per-stage defaults);
//! * [`data`]: readers of the GRPO prompt and interleaved-SFT JSONL files;
//! * [`losses`]: flow-matching noising and MSE, masked cross-entropy;
//! * [`grpo`]: group-normalised advantages, the clipped GRPO surrogate (`grpo`, `bnpo`,
//!   `dr_grpo`), the k3 KL term and TRL's metrics;
//! * [`rewards`]: the TRL-shaped reward interface and the CPR rewards (accuracy with rules or an
//!   LLM judge, format, exploration-guided);
//! * [`optim`]: AdamW with exportable state, warm-up + constant/cosine schedule, global
//!   gradient-norm clipping, gradient accumulation, EMA;
//! * [`checkpoint`]: atomic checkpoint folders (weights, optimiser state, `state.json`),
//!   resume, keep-last-N, the non-finite-loss guard;
//! * [`packing`]: token-budget packing of samples into batches;
//! * [`run`]: `TrainLoop`, which ties accumulation, clipping, schedule, AdamW, EMA, metrics and
//!   checkpoints together and resumes a run exactly;
//! * [`metrics`]: the JSONL metrics log, PNG curves, and the progress bar;
//! * [`tokenizer`]: the `tokenizer` stage (byte-level BPE with BAGEL's special tokens).
//!
//! It must not know about the model: no dependency on `cooper-model` or `cooper-infer`.
//! Parameters arrive as named `candle_core::Var`s, log-probabilities and predictions as
//! `Tensor`s, completions as lists of [`rewards::CompletionItem`]s; the stage loops that run
//! the model and call into this crate live in `cooper-stages`.

pub mod checkpoint;
pub mod config;
pub mod corpus;
pub mod data;
pub mod error;
pub mod grpo;
pub mod losses;
pub mod metrics;
pub mod optim;
pub mod packing;
pub mod rewards;
pub mod run;
pub mod tokenizer;

pub use error::{Result, TrainError};
