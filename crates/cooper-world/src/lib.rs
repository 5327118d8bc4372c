//! Synthetic spatial world: COOPER's own data engine.
//!
//! # What this crate owns
//! - Deterministic scenes of primitive objects on a floor, optionally in a room, seen by a
//!   pinhole camera ([`scene`]).
//! - Ray-cast rendering with `parry3d`: RGB, exact metric depth, instance and semantic
//!   segmentation ([`mod@render`]); palettes, including the matplotlib-compatible Spectral depth
//!   colouring ([`palette`]).
//! - Spatial questions with exact answers, categories and `positive`/`negative`/`boundary`
//!   flags ([`questions`]) and template reasoning chains ([`chains`]); text-only option
//!   lookups, a curriculum for a from-scratch LLM ([`lookups`]).
//! - Writers for the official pipeline's formats ([`formats`], driven by [`dataset`]) and readers
//!   for the real datasets stage 1 trains and evaluates on ([`readers`]).
//!
//! # What it must not know about
//! Models, tensors, tokenizers, training and scoring. It depends on no other cooper crate; the
//! trainers and evaluators read what it writes (or call [`dataset::generate_scene`]).
//!
//! # Generating data from code
//! ```
//! let config = cooper_world::WorldConfig { seed: 3, scenes: 2, ..Default::default() };
//! let g = cooper_world::generate_scene(&config, 0);
//! assert_eq!(g.frame.depth.len(), 128 * 128);
//! for q in &g.questions {
//!     assert!(!q.answer.is_empty());
//! }
//! ```
//! or write a whole dataset with [`write_dataset`].

pub mod chains;
pub mod dataset;
pub mod error;
pub mod formats;
pub mod lookups;
pub mod palette;
pub mod questions;
pub mod readers;
pub mod render;
pub mod scene;

pub use chains::{Chain, ChainImage, ChainItem};
pub use dataset::{generate_scene, write_dataset, DatasetSummary, GeneratedScene, WorldConfig};
pub use error::{Result, WorldError};
pub use palette::{spectral_colorize, SemanticClass};
pub use questions::{AnswerKind, Category, Flag, Query, Question};
pub use render::{render, Frame, ObjectStats};
pub use scene::{Scene, SceneConfig};
