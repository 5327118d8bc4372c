//! The COOPER / BAGEL-7B-MoT model in tensors: configuration files, checkpoint loading, the Qwen2
//! Mixture-of-Transformers decoder, the SigLIP NaViT vision encoder, the FLUX autoencoder and the small
//! embedders that join them. It owns the two computation paths of the official code (the packed training
//! forward and the cached inference forward) and knows nothing about prompts, sampling, data or files
//! beyond a checkpoint folder.

pub mod autoencoder;
pub mod bagel;
pub mod checkpoint;
pub mod config;
pub mod context;
pub mod conv;
pub mod embeddings;
pub mod error;
pub mod init;
pub mod norm;
pub mod packing;
pub mod parity;
pub mod qwen2_mot;
pub mod sequence;
pub mod softmax;
pub mod vit;

pub use autoencoder::AutoEncoder;
pub use bagel::{Bagel, Chunk, PackedBatch, PackedVae, PackedVit, TrainOutputs};
pub use checkpoint::{assign_vars, save_trainable, ModelFolder, TokenizerFiles};
pub use config::{AeConfig, BagelConfig, LlmConfig, ModelConfig, SpecialTokens, VitConfig};
pub use context::{Context, GENERATION_VOCAB_LIMIT};
pub use error::{ModelError, Result};
pub use qwen2_mot::{AttnMask, KvCache, LayerKv, MaskBlock, Routing};
pub use sequence::SequenceBuilder;
