//! Configuration files of a checkpoint folder, deserialised as the official files hold them.
//!
//! A BAGEL/COOPER checkpoint ships `llm_config.json` (Qwen2) and `vit_config.json` (SigLIP). The
//! official scripts hard-code everything else; our folders may carry `bagel_config.json` and
//! `ae_config.json` to override those defaults (the fixtures and every small model we train do).
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Qwen2 language-model config (`llm_config.json`), field names as in the HF file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LlmConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub vocab_size: usize,
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Everything else in the file, kept so that a config we write back loses nothing.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_rms_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    1e6
}
fn default_silu() -> String {
    "silu".into()
}
fn default_max_pos() -> usize {
    32768
}

impl LlmConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| ModelError::Config {
            file: "llm_config.json".into(),
            field: field.into(),
            why,
        };
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return Err(bad("hidden_size", "must be positive".into()));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(bad(
                "num_attention_heads",
                format!(
                    "hidden_size {} is not divisible by {} heads",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if self.head_dim() % 2 != 0 {
            return Err(bad(
                "hidden_size",
                "RoPE needs an even head dimension".into(),
            ));
        }
        if self.num_key_value_heads == 0 || self.num_attention_heads % self.num_key_value_heads != 0
        {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{} attention heads cannot be grouped over {} key/value heads",
                    self.num_attention_heads, self.num_key_value_heads
                ),
            ));
        }
        if self.hidden_act != "silu" {
            return Err(bad(
                "hidden_act",
                format!("only silu is supported, found {:?}", self.hidden_act),
            ));
        }
        Ok(())
    }
}

/// SigLIP vision config (`vit_config.json`), with the defaults of the HF class for absent fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VitConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    /// As written in the file; the loader builds `num_hidden_layers + 1 + vit_select_layer` layers.
    pub num_hidden_layers: usize,
    pub patch_size: usize,
    pub image_size: usize,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_gelu_tanh")]
    pub hidden_act: String,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_ln_eps() -> f64 {
    1e-6
}
fn default_gelu_tanh() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_channels() -> usize {
    3
}

impl VitConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// Side of the learned position table in patches.
    pub fn num_patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }
    pub fn patch_dim(&self) -> usize {
        self.num_channels * self.patch_size * self.patch_size
    }
}

/// FLUX autoencoder parameters (`ae_config.json`). Absent file: the FLUX values `load_ae` hard-codes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AeConfig {
    #[serde(default = "default_resolution")]
    pub resolution: usize,
    #[serde(default = "default_channels")]
    pub in_channels: usize,
    #[serde(default = "default_ae_ch")]
    pub ch: usize,
    #[serde(default = "default_channels")]
    pub out_ch: usize,
    #[serde(default = "default_ch_mult")]
    pub ch_mult: Vec<usize>,
    #[serde(default = "default_res_blocks")]
    pub num_res_blocks: usize,
    #[serde(default = "default_z")]
    pub z_channels: usize,
    #[serde(default = "default_scale")]
    pub scale_factor: f64,
    #[serde(default = "default_shift")]
    pub shift_factor: f64,
    /// GroupNorm groups; FLUX uses 32 everywhere.
    #[serde(default = "default_groups")]
    pub norm_groups: usize,
}

fn default_resolution() -> usize {
    256
}
fn default_ae_ch() -> usize {
    128
}
fn default_ch_mult() -> Vec<usize> {
    vec![1, 2, 4, 4]
}
fn default_res_blocks() -> usize {
    2
}
fn default_z() -> usize {
    16
}
fn default_scale() -> f64 {
    0.3611
}
fn default_shift() -> f64 {
    0.1159
}
fn default_groups() -> usize {
    32
}

impl Default for AeConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every AeConfig field has a default")
    }
}

impl AeConfig {
    /// Pixels per latent cell: 2^(levels - 1).
    pub fn downsample(&self) -> usize {
        1 << (self.ch_mult.len().saturating_sub(1))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| ModelError::Config {
            file: "ae_config.json".into(),
            field: field.into(),
            why,
        };
        if self.ch_mult.is_empty() {
            return Err(bad("ch_mult", "needs at least one level".into()));
        }
        for m in &self.ch_mult {
            let c = self.ch * m;
            if c % self.norm_groups != 0 {
                return Err(bad(
                    "ch_mult",
                    format!(
                        "{c} channels cannot be split into {} GroupNorm groups",
                        self.norm_groups
                    ),
                ));
            }
        }
        if self.ch % self.norm_groups != 0 {
            return Err(bad(
                "ch",
                format!(
                    "{} is not divisible by {} groups",
                    self.ch, self.norm_groups
                ),
            ));
        }
        Ok(())
    }
}

/// What the official scripts pass to `BagelConfig` and the loaders (`bagel_config.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BagelConfig {
    #[serde(default = "default_latent_patch")]
    pub latent_patch_size: usize,
    #[serde(default = "default_max_latent")]
    pub max_latent_size: usize,
    #[serde(default = "default_vit_max_patch")]
    pub vit_max_num_patch_per_side: usize,
    #[serde(default = "default_gelu_tanh")]
    pub connector_act: String,
    #[serde(default)]
    pub interpolate_pos: bool,
    /// The TRAINING flow shift; inference passes its own.
    #[serde(default = "default_train_shift")]
    pub timestep_shift: f64,
    #[serde(default = "default_select_layer")]
    pub vit_select_layer: i64,
    #[serde(default = "default_true")]
    pub llm_qk_norm: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_layer_module")]
    pub layer_module: String,
    #[serde(default)]
    pub vit_rope: bool,
}

fn default_latent_patch() -> usize {
    2
}
fn default_max_latent() -> usize {
    64
}
fn default_vit_max_patch() -> usize {
    70
}
fn default_train_shift() -> f64 {
    1.0
}
fn default_select_layer() -> i64 {
    -2
}
fn default_true() -> bool {
    true
}
fn default_layer_module() -> String {
    "Qwen2MoTDecoderLayer".into()
}

impl Default for BagelConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every BagelConfig field has a default")
    }
}

impl BagelConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| ModelError::Config {
            file: "bagel_config.json".into(),
            field: field.into(),
            why,
        };
        if self.layer_module != "Qwen2MoTDecoderLayer" {
            return Err(bad(
                "layer_module",
                format!(
                    "only Qwen2MoTDecoderLayer is supported (COOPER's layer), found {:?}",
                    self.layer_module
                ),
            ));
        }
        if !self.llm_qk_norm {
            return Err(bad("llm_qk_norm", "COOPER checkpoints use QK-norm".into()));
        }
        if self.interpolate_pos {
            return Err(bad(
                "interpolate_pos",
                "the interpolated position ids are not used by any COOPER script".into(),
            ));
        }
        if self.vit_rope {
            return Err(bad(
                "vit_rope",
                "the 2-D ViT RoPE is dead code upstream".into(),
            ));
        }
        if self.connector_act != "gelu_pytorch_tanh" {
            return Err(bad(
                "connector_act",
                format!(
                    "only gelu_pytorch_tanh is supported, found {:?}",
                    self.connector_act
                ),
            ));
        }
        if self.vit_select_layer >= 0 {
            return Err(bad(
                "vit_select_layer",
                "must be negative (counted from the end)".into(),
            ));
        }
        Ok(())
    }
}

/// The four token ids BAGEL adds (or finds) in the tokenizer (`special_tokens.json`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: u32,
    pub eos: u32,
    pub start_of_image: u32,
    pub end_of_image: u32,
}

/// The spellings of the special tokens, shared with the tokenizer side.
pub mod special {
    pub const BOS: &str = "<|im_start|>";
    pub const EOS: &str = "<|im_end|>";
    pub const START_OF_IMAGE: &str = "<|vision_start|>";
    pub const END_OF_IMAGE: &str = "<|vision_end|>";
}

/// Everything a model folder configures.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub llm: LlmConfig,
    pub vit: VitConfig,
    pub ae: AeConfig,
    pub bagel: BagelConfig,
}

impl ModelConfig {
    /// ViT layers actually built: the official loader drops the last `-vit_select_layer - 1`.
    pub fn vit_layers(&self) -> Result<usize> {
        let n = self.vit.num_hidden_layers as i64 + 1 + self.bagel.vit_select_layer;
        if n <= 0 {
            return Err(ModelError::Config {
                file: "vit_config.json".into(),
                field: "num_hidden_layers".into(),
                why: format!(
                    "{} layers with vit_select_layer {} leave none to run",
                    self.vit.num_hidden_layers, self.bagel.vit_select_layer
                ),
            });
        }
        Ok(n as usize)
    }

    /// Pixels per latent token: autoencoder downsample times the latent patch size.
    pub fn latent_downsample(&self) -> usize {
        self.ae.downsample() * self.bagel.latent_patch_size
    }

    /// Width of one packed latent token: p² · z_channels.
    pub fn latent_token_dim(&self) -> usize {
        self.bagel.latent_patch_size * self.bagel.latent_patch_size * self.ae.z_channels
    }

    pub fn validate(&self) -> Result<()> {
        self.llm.validate()?;
        self.ae.validate()?;
        self.bagel.validate()?;
        self.vit_layers()?;
        if self.vit.hidden_size % self.vit.num_attention_heads != 0 {
            return Err(ModelError::Config {
                file: "vit_config.json".into(),
                field: "num_attention_heads".into(),
                why: "hidden_size is not divisible by the head count".into(),
            });
        }
        if self.llm.hidden_size % 4 != 0 {
            return Err(ModelError::Config {
                file: "llm_config.json".into(),
                field: "hidden_size".into(),
                why: "the 2-D sin-cos tables need a multiple of 4".into(),
            });
        }
        Ok(())
    }
}
