//! The model side of a stage: a model folder loaded with trainable weights, the choice of
//! which of them the optimiser sees, a gradient-free view of the same weights for rollouts, and
//! the export of a finished run as a complete model folder in the official layout.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use cooper_infer::ReasoningConfig;
use cooper_model::init::{save_tensors, write_configs};
use cooper_model::{AeConfig, AutoEncoder, Bagel, ModelFolder, TokenizerFiles};
use cooper_train::config::{FreezeConfig, ModelInitConfig, Stage, TrainConfig};
use tokenizers::Tokenizer;

use crate::error::{Result, StageError};

/// A model folder whose unified-model weights are `Var`s (the autoencoder stays frozen).
pub struct TrainableModel {
    /// Built on the variables of `varmap`; its forward passes record gradients.
    pub model: Bagel,
    /// Every unified-model weight under its official name.
    pub varmap: VarMap,
    /// The frozen autoencoder of the folder.
    pub ae: AutoEncoder,
    pub tokenizer: Tokenizer,
    /// Where configs, tokenizer and autoencoder come from.
    pub folder: ModelFolder,
    /// How the weights' folder wants to be prompted (kept by stages that do not change it).
    pub reasoning: ReasoningConfig,
}

/// Picks the weights file of `dir`: `ema.safetensors` or `model.safetensors` as asked, else
/// whichever exists.
fn weights_file(dir: &Path, from_ema: bool) -> Result<PathBuf> {
    let (first, second) = if from_ema {
        ("ema.safetensors", "model.safetensors")
    } else {
        ("model.safetensors", "ema.safetensors")
    };
    [first, second]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            StageError::Input(format!(
                "{} holds neither ema.safetensors nor model.safetensors",
                dir.display()
            ))
        })
}

/// How deep a chain of checkpoints started from checkpoints may go before it is taken for a loop.
const MAX_CHECKPOINT_CHAIN: usize = 8;

/// Where a run's starting weights come from: weights files, first to last, and how the model
/// they make is prompted.
struct WeightSource {
    layers: Vec<PathBuf>,
    reasoning: ReasoningConfig,
}

/// The weights of `init_from` (else `model_path`) and, when that folder is a training
/// checkpoint (it holds its run's `state.json`), the weights that checkpoint's run started
/// from, and so on. A checkpoint saves only the weights its run trained (none of a frozen ViT),
/// so the rest come from its own run's starting point, not from this run's `model_path`; and
/// it is prompted as its run would have exported it.
fn weight_source(init: &ModelInitConfig) -> Result<WeightSource> {
    let mut layers = Vec::new();
    let mut reasoning = None;
    let mut source = init.clone();
    loop {
        let dir = source
            .init_from
            .clone()
            .unwrap_or(source.model_path.clone());
        layers.push(weights_file(&dir, source.from_ema)?);
        let state_file = dir.join(cooper_train::checkpoint::STATE_FILE);
        if !state_file.is_file() {
            let reasoning = match reasoning {
                Some(r) => r,
                None => ReasoningConfig::read(&dir)?,
            };
            return Ok(WeightSource { layers, reasoning });
        }
        if layers.len() > MAX_CHECKPOINT_CHAIN {
            return Err(StageError::Input(format!(
                "{}: more than {MAX_CHECKPOINT_CHAIN} checkpoints started from one another",
                dir.display()
            )));
        }
        let run = checkpoint_run(&state_file)?;
        if reasoning.is_none() {
            reasoning = chosen_reasoning(&run);
        }
        source = run.model;
    }
}

/// The configuration a checkpoint's run was trained with (its `state.json`).
fn checkpoint_run(state_file: &Path) -> Result<TrainConfig> {
    let bad = |field: &str, e: serde_json::Error| {
        StageError::Input(format!("{}: {field}{e}", state_file.display()))
    };
    let text = std::fs::read_to_string(state_file).map_err(|e| StageError::io(state_file, e))?;
    let state: cooper_train::checkpoint::TrainState =
        serde_json::from_str(&text).map_err(|e| bad("", e))?;
    serde_json::from_value(state.config).map_err(|e| bad("field config: ", e))
}

/// How a run's model is to be prompted when the run decides it: SFT chooses (with or without
/// the system prompt); every other stage keeps what its weights came with (`None`).
pub fn chosen_reasoning(config: &TrainConfig) -> Option<ReasoningConfig> {
    (config.stage == Stage::Sft).then(|| ReasoningConfig {
        system_prompt: config.sft.uses_system_prompt(),
        describe_first: config.sft.describe_first,
    })
}

impl TrainableModel {
    /// Opens `model_path` (configs, tokenizer, autoencoder) and takes the weights from
    /// `init_from` when given: a model folder, a folder holding a full weights file, or a
    /// training checkpoint (completed from the weights its run started from).
    pub fn load(init: &ModelInitConfig, dtype: DType, device: &Device) -> Result<Self> {
        let mut folder = ModelFolder::open(&init.model_path)?;
        let WeightSource { layers, reasoning } = weight_source(init)?;
        folder.weights = layers[0].clone();
        let (model, varmap) = folder.load_trainable_layered(&layers, dtype, device)?;
        let ae = folder.load_ae(dtype, device)?;
        let tokenizer = cooper_infer::engine::load_tokenizer(&folder.tokenizer)?;
        Ok(Self {
            model,
            varmap,
            ae,
            tokenizer,
            folder,
            reasoning,
        })
    }

    /// Text → ids (no special tokens), as the inference engine encodes.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| StageError::Input(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Every weight, sorted by name (a fixed order keeps optimiser state and resume stable).
    pub fn all_vars(&self) -> Result<Vec<(String, Var)>> {
        sorted_vars(&self.varmap)
    }

    /// The weights the optimiser updates under `freeze`; an error when nothing is left.
    pub fn trainable_params(&self, freeze: &FreezeConfig) -> Result<Vec<(String, Var)>> {
        let params: Vec<_> = self
            .all_vars()?
            .into_iter()
            .filter(|(name, _)| freeze.is_trainable(name))
            .collect();
        if params.is_empty() {
            return Err(StageError::Input(
                "the freeze settings leave no weight to train".into(),
            ));
        }
        Ok(params)
    }

    /// A model over the same storage without gradient tracking, for rollouts: it sees every
    /// optimiser step (updates are written in place) but builds no autograd graph.
    pub fn inference_view(&self) -> Result<Bagel> {
        let tensors: HashMap<String, Tensor> = self
            .all_vars()?
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().detach()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, self.model.dtype(), self.model.device());
        Ok(Bagel::new(&self.model.config, self.model.special, vb)?)
    }

    /// The current weights (detached) under their official names, with `overrides` (EMA
    /// averages) replacing theirs, plus the fixed sin-cos tables: a full checkpoint.
    pub fn weights_with(
        &self,
        overrides: &HashMap<String, Tensor>,
    ) -> Result<HashMap<String, Tensor>> {
        let mut weights: HashMap<String, Tensor> = self
            .all_vars()?
            .into_iter()
            .map(|(k, v)| {
                let t = overrides
                    .get(&k)
                    .cloned()
                    .unwrap_or_else(|| v.as_tensor().detach());
                (k, t)
            })
            .collect();
        // Checkpoints carry the two fixed sin-cos tables too (loaders pop and recompute them).
        weights.insert(
            "vit_pos_embed.pos_embed".into(),
            self.model.vit_pos_embed.table().clone(),
        );
        weights.insert(
            "latent_pos_embed.pos_embed".into(),
            self.model.latent_pos_embed.table().clone(),
        );
        Ok(weights)
    }
}

/// The variables of `varmap`, sorted by name.
pub fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| StageError::Input("weight map lock poisoned".into()))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// What a finished run writes into its model folder.
pub struct ExportedWeights<'a> {
    /// Full unified-model weights for `model.safetensors` (the last step's values; see
    /// [`TrainableModel::weights_with`]).
    pub model: Option<&'a HashMap<String, Tensor>>,
    /// Full unified-model weights for `ema.safetensors` (EMA where kept).
    pub ema: Option<&'a HashMap<String, Tensor>>,
    /// A replacement autoencoder (the `ae` stage), with its config.
    pub ae: Option<(&'a AeConfig, &'a HashMap<String, Tensor>)>,
    /// How the folder is to be prompted (`reasoning_config.json`, written unless official).
    pub reasoning: ReasoningConfig,
}

/// Writes a complete model folder at `out` in the official layout: the configs, special
/// tokens and tokenizer of `base`, its autoencoder unless replaced, and the given weights
/// (weights not given are copied from `base`). It is assembled in a sibling temp folder and
/// renamed into place, so a crash leaves either the old folder or the complete new one (the old
/// one possibly under a `.old<pid>` name).
pub fn export_model_folder(
    base: &ModelFolder,
    out: &Path,
    weights: ExportedWeights<'_>,
    dtype: DType,
) -> Result<PathBuf> {
    let parent = out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| StageError::io(parent, e))?;
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| StageError::io(&tmp, e))?;
    }
    let result = (|| -> Result<()> {
        let mut config = base.config.clone();
        if let Some((ae_config, _)) = weights.ae {
            config.ae = ae_config.clone();
        }
        write_configs(&tmp, &config, base.special)?;
        let copy = |from: &Path, name: &str| -> Result<()> {
            let to = tmp.join(name);
            std::fs::copy(from, &to).map_err(|e| StageError::io(from, e))?;
            Ok(())
        };
        match &base.tokenizer {
            TokenizerFiles::Json(p) => copy(p, "tokenizer.json")?,
            TokenizerFiles::VocabMerges { vocab, merges } => {
                copy(vocab, "vocab.json")?;
                copy(merges, "merges.txt")?;
            }
        }
        let tokenizer_config = base.dir.join("tokenizer_config.json");
        if tokenizer_config.is_file() {
            copy(&tokenizer_config, "tokenizer_config.json")?;
        }
        match weights.ae {
            Some((_, ae)) => save_tensors(&tmp.join("ae.safetensors"), ae, dtype)?,
            None => copy(&base.ae_weights, "ae.safetensors")?,
        }
        if let Some(text) = weights.reasoning.to_file_text() {
            let path = tmp.join(ReasoningConfig::FILE);
            std::fs::write(&path, text).map_err(|e| StageError::io(&path, e))?;
        }
        let mut wrote_any = false;
        if let Some(w) = weights.model {
            save_tensors(&tmp.join("model.safetensors"), w, dtype)?;
            wrote_any = true;
        }
        if let Some(w) = weights.ema {
            save_tensors(&tmp.join("ema.safetensors"), w, dtype)?;
            wrote_any = true;
        }
        if !wrote_any {
            let name = base
                .weights
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("ema.safetensors")
                .to_string();
            copy(&base.weights, &name)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Swap: the old folder steps aside before the new one takes its name, and is removed only
    // once the new one is in place.
    let old = out.with_extension(format!("old{}", std::process::id()));
    if out.exists() {
        std::fs::rename(out, &old).map_err(|e| StageError::io(out, e))?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        if old.exists() {
            let _ = std::fs::rename(&old, out);
        }
        return Err(StageError::io(out, e));
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| StageError::io(&old, e))?;
    }
    Ok(out.to_path_buf())
}
