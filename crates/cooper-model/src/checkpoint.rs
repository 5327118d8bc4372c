//! A checkpoint folder in the official layout, loaded as it is.
//!
//! ```text
//! llm_config.json   vit_config.json   ema.safetensors | model.safetensors   ae.safetensors
//! tokenizer.json | vocab.json + merges.txt   [special_tokens.json] [bagel_config.json] [ae_config.json]
//! ```
//! Weights are memory-mapped and converted to the compute dtype tensor by tensor; f32, bf16 and f16
//! files load alike. The two sin-cos tables are recomputed, never read (as every official loader does).
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use serde::Deserialize;

use crate::autoencoder::AutoEncoder;
use crate::bagel::Bagel;
use crate::config::{
    special, AeConfig, BagelConfig, LlmConfig, ModelConfig, SpecialTokens, VitConfig,
};
use crate::error::{ModelError, Result};

/// The files of a model folder, located and its configs parsed.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub special: SpecialTokens,
    /// `ema.safetensors`, else `model.safetensors`.
    pub weights: PathBuf,
    pub ae_weights: PathBuf,
    pub tokenizer: TokenizerFiles,
}

#[derive(Debug, Clone)]
pub enum TokenizerFiles {
    Json(PathBuf),
    VocabMerges { vocab: PathBuf, merges: PathBuf },
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn required(dir: &Path, name: &str, what: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(ModelError::MissingFile {
            path: p,
            what: what.into(),
        })
    }
}

fn optional_json<T: serde::de::DeserializeOwned + Default>(dir: &Path, name: &str) -> Result<T> {
    let p = dir.join(name);
    if p.is_file() {
        read_json(&p)
    } else {
        Ok(T::default())
    }
}

/// `special_tokens.json` as we (and the fixtures) write it.
#[derive(Deserialize)]
struct SpecialTokensFile {
    bos_token_id: IdEntry,
    eos_token_id: IdEntry,
    start_of_image: IdEntry,
    end_of_image: IdEntry,
}

#[derive(Deserialize)]
struct IdEntry {
    id: u32,
}

impl ModelFolder {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                path: dir,
                what: "model folder".into(),
            });
        }
        let llm: LlmConfig = read_json(&required(&dir, "llm_config.json", "LLM config")?)?;
        let vit: VitConfig = read_json(&required(&dir, "vit_config.json", "ViT config")?)?;
        let ae: AeConfig = optional_json(&dir, "ae_config.json")?;
        let bagel: BagelConfig = optional_json(&dir, "bagel_config.json")?;
        let config = ModelConfig {
            llm,
            vit,
            ae,
            bagel,
        };
        config.validate()?;
        let weights = ["ema.safetensors", "model.safetensors"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| ModelError::MissingFile {
                path: dir.join("ema.safetensors"),
                what: "model weights (ema.safetensors or model.safetensors)".into(),
            })?;
        let ae_weights = required(&dir, "ae.safetensors", "autoencoder weights")?;
        let tokenizer = if dir.join("tokenizer.json").is_file() {
            TokenizerFiles::Json(dir.join("tokenizer.json"))
        } else if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
            TokenizerFiles::VocabMerges {
                vocab: dir.join("vocab.json"),
                merges: dir.join("merges.txt"),
            }
        } else {
            return Err(ModelError::MissingFile {
                path: dir.join("tokenizer.json"),
                what: "tokenizer (tokenizer.json, or vocab.json + merges.txt)".into(),
            });
        };
        let special = find_special_tokens(&dir)?;
        if let Some(bad) = [
            special.bos,
            special.eos,
            special.start_of_image,
            special.end_of_image,
        ]
        .into_iter()
        .find(|&id| id as usize >= config.llm.vocab_size)
        {
            return Err(ModelError::Config {
                file: "special tokens".into(),
                field: "id".into(),
                why: format!(
                    "token id {bad} is outside the vocabulary of {}",
                    config.llm.vocab_size
                ),
            });
        }
        Ok(Self {
            dir,
            config,
            special,
            weights,
            ae_weights,
            tokenizer,
        })
    }

    /// Loads the unified model (memory-mapped, converted to `dtype` on `device`).
    pub fn load_bagel(&self, dtype: DType, device: &Device) -> Result<Bagel> {
        // SAFETY: the file is mapped read-only; we never mutate it while the map lives, and a file
        // changed underneath us by another process is outside what any loader can defend against.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&self.weights], dtype, device) }
            .map_err(|e| weights_error(&self.weights, e))?;
        Bagel::new(&self.config, self.special, vb).map_err(|e| weights_error(&self.weights, e))
    }

    /// Loads the autoencoder.
    pub fn load_ae(&self, dtype: DType, device: &Device) -> Result<AutoEncoder> {
        // SAFETY: as in `load_bagel`.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&self.ae_weights], dtype, device) }
            .map_err(|e| weights_error(&self.ae_weights, e))?;
        AutoEncoder::new(&self.config.ae, vb).map_err(|e| weights_error(&self.ae_weights, e))
    }
}

impl ModelFolder {
    /// Loads the unified model with every weight a trainable `Var` (in `dtype` on `device`), for the
    /// training stages. The sin-cos tables stay fixed, as in the official code. Which variables are
    /// then optimised (freezing) is the trainer's choice, by name.
    pub fn load_trainable(&self, dtype: DType, device: &Device) -> Result<(Bagel, VarMap)> {
        self.load_trainable_layered(std::slice::from_ref(&self.weights), dtype, device)
    }

    /// As [`Self::load_trainable`], each weight taken from the first of `layers` that holds it.
    /// A training checkpoint saves only the weights its run trained; laid over the weights its
    /// run started from, it makes a complete model again.
    pub fn load_trainable_layered(
        &self,
        layers: &[PathBuf],
        dtype: DType,
        device: &Device,
    ) -> Result<(Bagel, VarMap)> {
        let first = layers
            .first()
            .ok_or_else(|| ModelError::Input("no weights file to load".into()))?;
        let varmap = VarMap::new();
        let model = Bagel::new(
            &self.config,
            self.special,
            VarBuilder::from_varmap(&varmap, dtype, device),
        )?;
        let files = layers
            .iter()
            .map(|path| {
                // SAFETY: read-only map of a file we do not modify, as in `load_bagel`.
                unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
                    .map_err(|e| weights_error(path, e))
            })
            .collect::<Result<Vec<_>>>()?;
        assign_vars(&varmap, dtype, first, |name| {
            let holder = files.iter().find(|f| f.get(name).is_ok()).ok_or_else(|| {
                let searched: Vec<String> =
                    layers.iter().map(|p| p.display().to_string()).collect();
                format!("not found in {}", searched.join(" nor "))
            })?;
            holder.load(name, device).map_err(|e| e.to_string())
        })?;
        Ok((model, varmap))
    }
}

/// Sets every variable of `varmap` (converted to `dtype`) from `lookup(name)`, checking shapes.
/// `source` names where the tensors come from in errors (a file, or a description).
pub fn assign_vars(
    varmap: &VarMap,
    dtype: DType,
    source: &Path,
    mut lookup: impl FnMut(&str) -> std::result::Result<candle_core::Tensor, String>,
) -> Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Input("weight map lock poisoned".into()))?;
    let error = |name: &str, why: String| ModelError::Tensor {
        file: source.to_path_buf(),
        name: name.to_string(),
        why,
    };
    for (name, var) in vars.iter() {
        let tensor = lookup(name).map_err(|why| error(name, why))?;
        if tensor.dims() != var.dims() {
            return Err(error(
                name,
                format!("shape {:?} expected, found {:?}", var.dims(), tensor.dims()),
            ));
        }
        var.set(&tensor.to_dtype(dtype)?.to_device(var.device())?)?;
    }
    Ok(())
}

/// Writes a trainable model's weights under their official names (plus the two fixed sin-cos
/// tables, which checkpoints carry) to `path`, atomically, in `dtype`.
pub fn save_trainable(model: &Bagel, varmap: &VarMap, path: &Path, dtype: DType) -> Result<()> {
    let mut tensors: std::collections::HashMap<String, candle_core::Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Input("weight map lock poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    tensors.insert(
        "vit_pos_embed.pos_embed".into(),
        model.vit_pos_embed.table().clone(),
    );
    tensors.insert(
        "latent_pos_embed.pos_embed".into(),
        model.latent_pos_embed.table().clone(),
    );
    crate::init::save_tensors(path, &tensors, dtype)
}

fn weights_error(file: &Path, e: candle_core::Error) -> ModelError {
    // candle names the tensor and both shapes in its message ("shape mismatch for X, expected …").
    let msg = e.to_string();
    let name = msg
        .split_whitespace()
        .find(|w| w.contains('.') && !w.ends_with('.'))
        .unwrap_or("?")
        .trim_matches(|c| c == ',' || c == '"' || c == '`')
        .to_string();
    ModelError::Tensor {
        file: file.to_path_buf(),
        name,
        why: msg,
    }
}

/// Looks the four special tokens up: `special_tokens.json`, else the tokenizer's added tokens, else
/// `tokenizer_config.json`'s `added_tokens_decoder`, else `vocab.json`.
pub(crate) fn find_special_tokens(dir: &Path) -> Result<SpecialTokens> {
    let path = dir.join("special_tokens.json");
    if path.is_file() {
        let f: SpecialTokensFile = read_json(&path)?;
        return Ok(SpecialTokens {
            bos: f.bos_token_id.id,
            eos: f.eos_token_id.id,
            start_of_image: f.start_of_image.id,
            end_of_image: f.end_of_image.id,
        });
    }
    let mut table: Vec<(String, u32)> = Vec::new();
    let tok = dir.join("tokenizer.json");
    if tok.is_file() {
        let v: serde_json::Value = read_json(&tok)?;
        for t in v["added_tokens"].as_array().into_iter().flatten() {
            if let (Some(c), Some(id)) = (t["content"].as_str(), t["id"].as_u64()) {
                table.push((c.to_string(), id as u32));
            }
        }
        if let Some(vocab) = v["model"]["vocab"].as_object() {
            for (k, id) in vocab {
                if let Some(id) = id.as_u64() {
                    table.push((k.clone(), id as u32));
                }
            }
        }
    }
    let cfg = dir.join("tokenizer_config.json");
    if cfg.is_file() {
        let v: serde_json::Value = read_json(&cfg)?;
        for (id, t) in v["added_tokens_decoder"].as_object().into_iter().flatten() {
            if let (Some(c), Ok(id)) = (t["content"].as_str(), id.parse::<u32>()) {
                table.push((c.to_string(), id));
            }
        }
    }
    let vocab = dir.join("vocab.json");
    if vocab.is_file() {
        let v: std::collections::HashMap<String, u32> = read_json(&vocab)?;
        table.extend(v);
    }
    let find = |s: &str| {
        table
            .iter()
            .find(|(c, _)| c == s)
            .map(|(_, id)| *id)
            .ok_or_else(|| ModelError::Config {
                file: dir.join("tokenizer.json").display().to_string(),
                field: "added_tokens".into(),
                why: format!("special token {s} not found (BAGEL needs it)"),
            })
    };
    Ok(SpecialTokens {
        bos: find(special::BOS)?,
        eos: find(special::EOS)?,
        start_of_image: find(special::START_OF_IMAGE)?,
        end_of_image: find(special::END_OF_IMAGE)?,
    })
}
