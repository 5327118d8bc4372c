//! Randomly initialised model folders in the official layout (`cooper init --preset …`).
//!
//! Presets: `tiny` (the size of the reference fixtures), `default` (the size of the embedded default
//! model, trained from scratch on the synthetic world within 90 CPU minutes), `small` (Qwen2-0.5B dimensions for the LLM, a
//! SigLIP-base-sized ViT, the FLUX autoencoder layout) and `bagel-7b` (the real BAGEL-7B-MoT
//! dimensions). Weights come from the modules' own initialisers through a `VarMap`, so every name and
//! shape is the one the loader reads; `llm2vae` starts at zero as in the official `_init_weights`.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::autoencoder::AutoEncoder;
use crate::bagel::Bagel;
use crate::config::{
    special, AeConfig, BagelConfig, LlmConfig, ModelConfig, SpecialTokens, VitConfig,
};
use crate::embeddings::sincos_2d_table;
use crate::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Tiny,
    Default,
    Small,
    Bagel7b,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "tiny" => Ok(Self::Tiny),
            "default" => Ok(Self::Default),
            "small" => Ok(Self::Small),
            "bagel-7b" => Ok(Self::Bagel7b),
            other => Err(format!(
                "unknown preset {other:?} (tiny, default, small, bagel-7b)"
            )),
        }
    }
}

fn llm(h: usize, i: usize, layers: usize, heads: usize, kv: usize, vocab: usize) -> LlmConfig {
    LlmConfig {
        hidden_size: h,
        intermediate_size: i,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv,
        vocab_size: vocab,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        hidden_act: "silu".into(),
        max_position_embeddings: 32768,
        tie_word_embeddings: false,
        extra: serde_json::Map::from_iter([
            ("model_type".to_string(), "qwen2".into()),
            (
                "architectures".to_string(),
                serde_json::json!(["Qwen2ForCausalLM"]),
            ),
        ]),
    }
}

fn vit(h: usize, i: usize, heads: usize, layers: usize, image_size: usize) -> VitConfig {
    VitConfig {
        hidden_size: h,
        intermediate_size: i,
        num_attention_heads: heads,
        num_hidden_layers: layers,
        patch_size: 14,
        image_size,
        layer_norm_eps: 1e-6,
        hidden_act: "gelu_pytorch_tanh".into(),
        num_channels: 3,
        extra: serde_json::Map::from_iter([(
            "model_type".to_string(),
            "siglip_vision_model".into(),
        )]),
    }
}

impl Preset {
    pub fn config(self) -> ModelConfig {
        match self {
            Preset::Tiny => ModelConfig {
                llm: llm(64, 128, 2, 4, 2, 300),
                vit: vit(32, 64, 2, 3, 112),
                ae: AeConfig {
                    ch: 32,
                    ch_mult: vec![1, 2, 2],
                    num_res_blocks: 1,
                    z_channels: 4,
                    ..AeConfig::default()
                },
                bagel: BagelConfig {
                    max_latent_size: 16,
                    vit_max_num_patch_per_side: 8,
                    ..BagelConfig::default()
                },
            },
            // 128-px pictures: 8×8 latent tokens (16 px each) and 8×8 ViT patches at 112 px;
            // about 4 M parameters with a 2k-token BPE, 8 MB in f16.
            Preset::Default => ModelConfig {
                llm: llm(128, 384, 4, 4, 2, 2048),
                vit: vit(64, 192, 2, 4, 112),
                ae: AeConfig {
                    ch: 32,
                    ch_mult: vec![1, 2, 2, 4],
                    num_res_blocks: 1,
                    z_channels: 8,
                    ..AeConfig::default()
                },
                bagel: BagelConfig {
                    max_latent_size: 8,
                    vit_max_num_patch_per_side: 8,
                    ..BagelConfig::default()
                },
            },
            Preset::Small => ModelConfig {
                // Qwen2-0.5B and SigLIP-base (patch 14, 70 positions per side as BAGEL's ViT).
                llm: llm(896, 4864, 24, 14, 2, 151_936),
                vit: vit(768, 3072, 12, 13, 980),
                ae: AeConfig::default(),
                bagel: BagelConfig::default(),
            },
            Preset::Bagel7b => ModelConfig {
                llm: llm(3584, 18944, 28, 28, 4, 152_064),
                vit: vit(1152, 4304, 16, 27, 980),
                ae: AeConfig::default(),
                bagel: BagelConfig::default(),
            },
        }
    }
}

/// The special-token ids of the byte-level tokenizer `init` writes: 0 is `<|endoftext|>`.
pub const INIT_SPECIAL: SpecialTokens = SpecialTokens {
    bos: 1,
    eos: 2,
    start_of_image: 3,
    end_of_image: 4,
};

/// A byte-level BPE `tokenizer.json` with no merges: the five special tokens at ids 0..=4 and the 256
/// byte symbols after them. A stand-in so that a fresh folder is complete; `cooper train tokenizer`
/// trains a real one, and real checkpoints bring their own.
pub fn byte_level_tokenizer_json() -> serde_json::Value {
    let specials = [
        "<|endoftext|>",
        special::BOS,
        special::EOS,
        special::START_OF_IMAGE,
        special::END_OF_IMAGE,
    ];
    let mut vocab = serde_json::Map::new();
    for (i, s) in specials.iter().enumerate() {
        vocab.insert((*s).into(), i.into());
    }
    for (i, ch) in byte_alphabet().into_iter().enumerate() {
        vocab.insert(ch.to_string(), (specials.len() + i).into());
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": []}
    })
}

/// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100 onwards.
fn byte_alphabet() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut n = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("printable byte is a char")
            } else {
                n += 1;
                char::from_u32(255 + n).expect("U+0100.. are chars")
            }
        })
        .collect()
}

/// Writes `bytes` to `path` through a temporary file in the same folder, then renames it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            ModelError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Saves named tensors as safetensors atomically, converted to `dtype`.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>, dtype: DType) -> Result<()> {
    let converted = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_dtype(dtype)?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    let tmp = tmp_path(path);
    candle_core::safetensors::save(&converted, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::Tensor {
            file: path.to_path_buf(),
            name: "*".into(),
            why: e.to_string(),
        }
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn json_bytes<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|source| ModelError::Json {
        path: PathBuf::from("<memory>"),
        source,
    })
}

/// Writes the configuration files of a model folder (everything but the weights).
pub fn write_configs(dir: &Path, config: &ModelConfig, special: SpecialTokens) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_atomic(&dir.join("llm_config.json"), &json_bytes(&config.llm)?)?;
    write_atomic(&dir.join("vit_config.json"), &json_bytes(&config.vit)?)?;
    write_atomic(&dir.join("ae_config.json"), &json_bytes(&config.ae)?)?;
    write_atomic(&dir.join("bagel_config.json"), &json_bytes(&config.bagel)?)?;
    let entry = |id: u32, token: &str| serde_json::json!({"id": id, "token": token});
    let specials = serde_json::json!({
        "bos_token_id": entry(special.bos, special::BOS),
        "eos_token_id": entry(special.eos, special::EOS),
        "start_of_image": entry(special.start_of_image, special::START_OF_IMAGE),
        "end_of_image": entry(special.end_of_image, special::END_OF_IMAGE),
    });
    write_atomic(&dir.join("special_tokens.json"), &json_bytes(&specials)?)
}

/// Names and shapes of every parameter a module declares, read off a `VarMap` build.
fn declared(
    build: impl FnOnce(VarBuilder) -> candle_core::Result<()>,
) -> Result<Vec<(String, Vec<usize>)>> {
    let varmap = VarMap::new();
    build(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Input("weight map lock poisoned".into()))?;
    let mut shapes: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    shapes.sort();
    Ok(shapes)
}

/// Seeded draws for every declared parameter (candle's CPU generator cannot be seeded): 1-D weights
/// (all norm scales) are one, biases zero, matrices and kernels N(0, 1/fan_in).
fn draw(shapes: Vec<(String, Vec<usize>)>, seed: u64) -> Result<HashMap<String, Tensor>> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::with_capacity(shapes.len());
    for (name, dims) in shapes {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if dims.len() == 1 && name.ends_with("weight") {
            vec![1.0; n]
        } else if name.ends_with("bias") {
            vec![0.0; n]
        } else {
            let fan_in: usize = dims[1..].iter().product::<usize>().max(1);
            let std = 1.0 / (fan_in as f32).sqrt();
            (0..n)
                .map(|_| {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    z * std
                })
                .collect()
        };
        out.insert(name, Tensor::from_vec(values, dims, &Device::Cpu)?);
    }
    Ok(out)
}

/// Randomly initialised weights of the unified model (official names, sin-cos tables included).
pub fn random_bagel_weights(config: &ModelConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    let shapes = declared(|vb| Bagel::new(config, INIT_SPECIAL, vb).map(|_| ()))?;
    let mut out = draw(shapes, seed)?;
    for name in ["llm2vae.weight", "llm2vae.bias"] {
        if let Some(t) = out.get(name) {
            let z = t.zeros_like()?;
            out.insert(name.into(), z);
        }
    }
    let h = config.llm.hidden_size;
    let table = |grid: usize| -> Result<Tensor> {
        Ok(Tensor::from_vec(
            sincos_2d_table(grid, h),
            (grid * grid, h),
            &Device::Cpu,
        )?)
    };
    out.insert(
        "vit_pos_embed.pos_embed".into(),
        table(config.bagel.vit_max_num_patch_per_side)?,
    );
    out.insert(
        "latent_pos_embed.pos_embed".into(),
        table(config.bagel.max_latent_size)?,
    );
    Ok(out)
}

/// Randomly initialised autoencoder weights.
pub fn random_ae_weights(config: &AeConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    draw(
        declared(|vb| AutoEncoder::new(config, vb).map(|_| ()))?,
        seed,
    )
}

/// Writes a complete model folder for `preset`: configs, tokenizer, and (if `weights`) random weights.
pub fn init_folder(
    dir: &Path,
    preset: Preset,
    weights: bool,
    dtype: DType,
    seed: u64,
) -> Result<()> {
    init_folder_with_tokenizer(dir, preset, None, weights, dtype, seed)
}

/// Ids a `tokenizer.json` can produce: one past the largest id of its vocabulary and added tokens.
fn tokenizer_id_count(path: &Path) -> Result<usize> {
    let v: serde_json::Value = crate::checkpoint::read_json(path)?;
    let vocab = v["model"]["vocab"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, id)| id.as_u64());
    let added = v["added_tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_u64());
    vocab
        .chain(added)
        .max()
        .map(|m| m as usize + 1)
        .ok_or_else(|| ModelError::Config {
            file: path.display().to_string(),
            field: "model.vocab".into(),
            why: "the tokenizer has no tokens".into(),
        })
}

/// As [`init_folder`], with the tokenizer of `tokenizer_dir` (its `tokenizer.json`, e.g. from
/// `cooper train tokenizer`) instead of the byte-level stand-in; the vocabulary is sized to it
/// (rounded up to a multiple of 64) and the special tokens are looked up in it.
pub fn init_folder_with_tokenizer(
    dir: &Path,
    preset: Preset,
    tokenizer_dir: Option<&Path>,
    weights: bool,
    dtype: DType,
    seed: u64,
) -> Result<()> {
    let mut config = preset.config();
    config.validate()?;
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let special = match tokenizer_dir {
        Some(src) => {
            let from = src.join("tokenizer.json");
            let bytes = std::fs::read(&from).map_err(|source| ModelError::Io {
                path: from.clone(),
                source,
            })?;
            write_atomic(&dir.join("tokenizer.json"), &bytes)?;
            config.llm.vocab_size = tokenizer_id_count(&from)?.div_ceil(64) * 64;
            // Only the tokenizer is in `dir` yet, so the lookup reads its added tokens.
            crate::checkpoint::find_special_tokens(dir)?
        }
        None => {
            if config.llm.vocab_size < 261 {
                config.llm.vocab_size = 261;
            }
            let tok = serde_json::to_vec(&byte_level_tokenizer_json()).map_err(|source| {
                ModelError::Json {
                    path: dir.join("tokenizer.json"),
                    source,
                }
            })?;
            write_atomic(&dir.join("tokenizer.json"), &tok)?;
            INIT_SPECIAL
        }
    };
    write_configs(dir, &config, special)?;
    if weights {
        save_tensors(
            &dir.join("ema.safetensors"),
            &random_bagel_weights(&config, seed)?,
            dtype,
        )?;
        save_tensors(
            &dir.join("ae.safetensors"),
            &random_ae_weights(&config.ae, seed + 1)?,
            dtype,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::ModelFolder;

    #[test]
    fn tiny_preset_round_trips_through_the_loader() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("cooper-init-{}", std::process::id()));
        init_folder(&dir, Preset::Tiny, true, DType::F32, 7)?;
        let folder = ModelFolder::open(&dir)?;
        assert_eq!(folder.config, {
            let mut c = Preset::Tiny.config();
            c.llm.vocab_size = 300;
            c
        });
        let m = folder.load_bagel(DType::F32, &Device::Cpu)?;
        let ctx = m.update_text(&crate::Context::new(), &[10, 11, 12])?;
        assert_eq!((ctx.kv_len(), ctx.rope), (5, 5));
        // bf16 files load into an f32 model too.
        init_folder(&dir, Preset::Tiny, true, DType::BF16, 7)?;
        ModelFolder::open(&dir)?.load_bagel(DType::F32, &Device::Cpu)?;
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn byte_tokenizer_has_every_byte() {
        let v = byte_level_tokenizer_json();
        assert_eq!(v["model"]["vocab"].as_object().map(|m| m.len()), Some(261));
    }
}
