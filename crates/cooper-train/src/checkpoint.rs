//! Checkpoint folders, written atomically, and `--resume`.
//!
//! A checkpoint is a folder `<root>/<step:07>/` (the official layout) holding:
//! * `model.safetensors`: the trained weights under their official names;
//! * `ema.safetensors`: the EMA weights, when the run keeps them;
//! * `optimizer.safetensors`: the optimiser state ([`crate::optim::AdamW::state_tensors`]);
//! * `state.json`: [`TrainState`]: step, RNG state, data cursor, the run's config, last loss.
//!
//! Every file is written into a hidden temporary folder beside the final one, synced, and the
//! folder is then renamed into place, so a crash leaves either the complete new checkpoint or
//! none; leftovers of interrupted writes are hidden (`.tmp-…`) and removed by the next save.
//! [`Checkpointer::save`] first refuses a non-finite loss ([`check_finite`]) so a diverged run
//! never overwrites or prunes good checkpoints. After a save, only the newest `keep_last`
//! checkpoints are kept.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Weights file name.
pub const MODEL_FILE: &str = "model.safetensors";
/// EMA weights file name.
pub const EMA_FILE: &str = "ema.safetensors";
/// Optimiser state file name.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Run state file name.
pub const STATE_FILE: &str = "state.json";
/// Version of the `state.json` layout.
pub const STATE_VERSION: u32 = 1;

const TMP_PREFIX: &str = ".tmp-checkpoint-";
const OLD_PREFIX: &str = ".old-checkpoint-";

/// Refuses NaN and infinities with a clear error.
pub fn check_finite(what: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(TrainError::NonFinite {
            what: what.to_string(),
            value,
        })
    }
}

/// The exact position of a ChaCha8 stream, serialisable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte key, hex.
    pub seed_hex: String,
    /// Stream id.
    pub stream: u64,
    /// Word position (a u128, as a decimal string: JSON numbers cannot hold it).
    pub word_pos: String,
}

impl RngState {
    /// Records where `rng` is.
    pub fn capture(rng: &ChaCha8Rng) -> Self {
        Self {
            seed_hex: rng.get_seed().iter().map(|b| format!("{b:02x}")).collect(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// Rebuilds a generator that continues exactly where the captured one was.
    pub fn restore(&self) -> Result<ChaCha8Rng> {
        use rand::SeedableRng;
        let bad = |what: &str| TrainError::Checkpoint(format!("bad RNG state: {what}"));
        if self.seed_hex.len() != 64 {
            return Err(bad("seed must be 64 hex digits"));
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&self.seed_hex[2 * i..2 * i + 2], 16)
                .map_err(|_| bad("seed is not hex"))?;
        }
        let word_pos: u128 = self.word_pos.parse().map_err(|_| bad("word_pos"))?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(word_pos);
        Ok(rng)
    }
}

/// Where the data iterator stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataCursor {
    /// Completed passes over the data.
    pub epoch: u64,
    /// Samples consumed in the current pass.
    pub position: u64,
}

/// Everything besides tensors needed to continue a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Layout version of this file.
    pub version: u32,
    /// Completed optimiser steps.
    pub step: u64,
    /// The run's RNG.
    pub rng: RngState,
    /// The data position.
    pub data: DataCursor,
    /// Loss of the last step.
    pub last_loss: Option<f64>,
    /// The run's configuration (as JSON).
    pub config: serde_json::Value,
}

impl TrainState {
    /// A state at `step` with the given RNG, data cursor and config.
    pub fn new(
        step: u64,
        rng: &ChaCha8Rng,
        data: DataCursor,
        config: &crate::config::TrainConfig,
    ) -> Result<Self> {
        Ok(Self {
            version: STATE_VERSION,
            step,
            rng: RngState::capture(rng),
            data,
            last_loss: None,
            config: serde_json::to_value(config).map_err(|e| TrainError::json("config", e))?,
        })
    }

    /// The stored config.
    pub fn train_config(&self) -> Result<crate::config::TrainConfig> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| TrainError::json("state.json config", e))
    }
}

/// What one save writes.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointData<'a> {
    /// Run state.
    pub state: &'a TrainState,
    /// Weights by official name.
    pub weights: &'a HashMap<String, Tensor>,
    /// EMA weights by official name.
    pub ema: Option<&'a HashMap<String, Tensor>>,
    /// Optimiser state tensors.
    pub optimizer: Option<&'a HashMap<String, Tensor>>,
}

/// A checkpoint read back.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// The folder.
    pub dir: PathBuf,
    /// Run state.
    pub state: TrainState,
    /// Weights (empty map if the folder has none).
    pub weights: HashMap<String, Tensor>,
    /// EMA weights, if saved.
    pub ema: Option<HashMap<String, Tensor>>,
    /// Optimiser state, if saved.
    pub optimizer: Option<HashMap<String, Tensor>>,
}

/// Writes, lists, prunes and reloads the checkpoints of one run.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    root: PathBuf,
    keep_last: usize,
}

fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| TrainError::io(path, e))
}

fn sync_dir(path: &Path) {
    // Directory fsync is not supported everywhere; the rename itself is what matters.
    if let Ok(dir) = fs::File::open(path) {
        let _ = dir.sync_all();
    }
}

fn save_tensors(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    candle_core::safetensors::save(map, path)?;
    sync_file(path)
}

fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device)
        .map_err(|e| TrainError::Checkpoint(format!("cannot read {}: {e}", path.display())))
}

impl Checkpointer {
    /// Checkpoints under `root` (created if missing), keeping the newest `keep_last` (≥ 1).
    pub fn new(root: impl Into<PathBuf>, keep_last: usize) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| TrainError::io(&root, e))?;
        Ok(Self {
            root,
            keep_last: keep_last.max(1),
        })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of the checkpoint at `step`.
    pub fn dir_for(&self, step: u64) -> PathBuf {
        self.root.join(format!("{step:07}"))
    }

    /// Writes a checkpoint atomically after checking that `loss` is finite; then prunes to
    /// `keep_last`. Returns the checkpoint folder.
    pub fn save(&self, data: CheckpointData<'_>, loss: f64) -> Result<PathBuf> {
        check_finite(&format!("loss at step {}", data.state.step), loss)?;
        self.remove_leftovers();
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempdir_in(&self.root)
            .map_err(|e| TrainError::io(&self.root, e))?;
        save_tensors(data.weights, &tmp.path().join(MODEL_FILE))?;
        if let Some(ema) = data.ema {
            save_tensors(ema, &tmp.path().join(EMA_FILE))?;
        }
        if let Some(opt) = data.optimizer {
            save_tensors(opt, &tmp.path().join(OPTIMIZER_FILE))?;
        }
        let mut state = data.state.clone();
        state.last_loss = Some(loss);
        let json =
            serde_json::to_string_pretty(&state).map_err(|e| TrainError::json("state.json", e))?;
        let state_path = tmp.path().join(STATE_FILE);
        fs::write(&state_path, json).map_err(|e| TrainError::io(&state_path, e))?;
        sync_file(&state_path)?;

        let final_dir = self.dir_for(state.step);
        let staged = tmp.keep();
        if final_dir.exists() {
            // Re-saving a step: move the old folder aside first so the name is never empty of a
            // complete checkpoint for longer than two renames.
            let aside = self.root.join(format!("{OLD_PREFIX}{:07}", state.step));
            if aside.exists() {
                fs::remove_dir_all(&aside).map_err(|e| TrainError::io(&aside, e))?;
            }
            fs::rename(&final_dir, &aside).map_err(|e| TrainError::io(&final_dir, e))?;
            fs::rename(&staged, &final_dir).map_err(|e| TrainError::io(&staged, e))?;
            fs::remove_dir_all(&aside).map_err(|e| TrainError::io(&aside, e))?;
        } else {
            fs::rename(&staged, &final_dir).map_err(|e| TrainError::io(&staged, e))?;
        }
        sync_dir(&self.root);
        self.prune()?;
        Ok(final_dir)
    }

    fn remove_leftovers(&self) {
        if let Ok(entries) = fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(TMP_PREFIX) || name.starts_with(OLD_PREFIX) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    /// Complete checkpoints, oldest first.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>> {
        let entries = fs::read_dir(&self.root).map_err(|e| TrainError::io(&self.root, e))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| TrainError::io(&self.root, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let (Ok(step), path) = (name.parse::<u64>(), entry.path()) else {
                continue;
            };
            if path.join(STATE_FILE).is_file() {
                found.push((step, path));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The newest complete checkpoint.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.list()?.pop().map(|(_, p)| p))
    }

    /// Deletes all but the newest `keep_last` checkpoints.
    pub fn prune(&self) -> Result<()> {
        let list = self.list()?;
        let excess = list.len().saturating_sub(self.keep_last);
        for (_, path) in list.into_iter().take(excess) {
            fs::remove_dir_all(&path).map_err(|e| TrainError::io(&path, e))?;
        }
        Ok(())
    }

    /// Reads one checkpoint folder.
    pub fn load(dir: &Path, device: &Device) -> Result<LoadedCheckpoint> {
        let state_path = dir.join(STATE_FILE);
        let text = fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
        let state: TrainState =
            serde_json::from_str(&text).map_err(|e| TrainError::json("state.json", e))?;
        if state.version != STATE_VERSION {
            return Err(TrainError::Checkpoint(format!(
                "{} has state version {}, expected {STATE_VERSION}",
                state_path.display(),
                state.version
            )));
        }
        let optional = |name: &str| -> Result<Option<HashMap<String, Tensor>>> {
            let path = dir.join(name);
            if path.is_file() {
                load_tensors(&path, device).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(LoadedCheckpoint {
            dir: dir.to_path_buf(),
            weights: optional(MODEL_FILE)?.unwrap_or_default(),
            ema: optional(EMA_FILE)?,
            optimizer: optional(OPTIMIZER_FILE)?,
            state,
        })
    }

    /// Loads the newest checkpoint, if there is one (`--resume`).
    pub fn resume(&self, device: &Device) -> Result<Option<LoadedCheckpoint>> {
        match self.latest()? {
            Some(dir) => Self::load(&dir, device).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Stage, TrainConfig};
    use crate::optim::{AdamW, AdamWConfig};
    use candle_core::Var;
    use rand::{Rng, SeedableRng};

    fn weights(value: f32) -> HashMap<String, Tensor> {
        HashMap::from([(
            "llm2vae.bias".to_string(),
            Tensor::new(&[value, value + 1.0], &Device::Cpu).unwrap(),
        )])
    }

    fn state(step: u64, rng: &ChaCha8Rng) -> TrainState {
        TrainState::new(
            step,
            rng,
            DataCursor {
                epoch: 0,
                position: step * 4,
            },
            &TrainConfig::for_stage(Stage::Sft),
        )
        .unwrap()
    }

    #[test]
    fn rng_state_round_trip_continues_the_stream() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        for _ in 0..37 {
            let _: u32 = rng.random();
        }
        let saved = RngState::capture(&rng);
        let json = serde_json::to_string(&saved).unwrap();
        let mut restored = serde_json::from_str::<RngState>(&json)
            .unwrap()
            .restore()
            .unwrap();
        for _ in 0..10 {
            assert_eq!(rng.random::<u64>(), restored.random::<u64>());
        }
        let bad = RngState {
            seed_hex: "zz".into(),
            ..saved
        };
        assert!(bad.restore().is_err());
    }

    #[test]
    fn save_resume_and_keep_last() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = Checkpointer::new(dir.path().join("run"), 2).unwrap();
        let rng = ChaCha8Rng::seed_from_u64(1);
        let params = vec![(
            "llm2vae.bias".to_string(),
            Var::new(&[1f32, 2.], &Device::Cpu).unwrap(),
        )];
        let opt = AdamW::new(
            &params,
            AdamWConfig {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-15,
                weight_decay: 0.0,
            },
        )
        .unwrap();
        let opt_state = opt.state_tensors().unwrap();
        for step in [10u64, 20, 30] {
            let st = state(step, &rng);
            let w = weights(step as f32);
            ckpt.save(
                CheckpointData {
                    state: &st,
                    weights: &w,
                    ema: Some(&w),
                    optimizer: Some(&opt_state),
                },
                0.5,
            )
            .unwrap();
        }
        // keep_last 2: step 10 is gone.
        let steps: Vec<u64> = ckpt.list().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![20, 30]);
        assert!(ckpt.dir_for(30).ends_with("0000030"));

        let loaded = ckpt.resume(&Device::Cpu).unwrap().unwrap();
        assert_eq!(loaded.state.step, 30);
        assert_eq!(loaded.state.data.position, 120);
        assert_eq!(loaded.state.last_loss, Some(0.5));
        assert_eq!(
            loaded.state.train_config().unwrap(),
            TrainConfig::for_stage(Stage::Sft)
        );
        assert_eq!(
            loaded.weights["llm2vae.bias"].to_vec1::<f32>().unwrap(),
            vec![30.0, 31.0]
        );
        assert!(loaded.ema.is_some());
        let mut opt2 = AdamW::new(&params, opt.config()).unwrap();
        opt2.load_state_tensors(loaded.optimizer.as_ref().unwrap())
            .unwrap();
        // No temporary folders remain.
        let hidden = fs::read_dir(ckpt.root())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .count();
        assert_eq!(hidden, 0);
    }

    #[test]
    fn nan_loss_guard_keeps_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = Checkpointer::new(dir.path(), 1).unwrap();
        let rng = ChaCha8Rng::seed_from_u64(3);
        let good = weights(1.0);
        ckpt.save(
            CheckpointData {
                state: &state(5, &rng),
                weights: &good,
                ema: None,
                optimizer: None,
            },
            0.25,
        )
        .unwrap();
        let before = fs::read(ckpt.dir_for(5).join(MODEL_FILE)).unwrap();

        let diverged = weights(f32::NAN);
        for loss in [f64::NAN, f64::INFINITY] {
            let err = ckpt
                .save(
                    CheckpointData {
                        state: &state(6, &rng),
                        weights: &diverged,
                        ema: None,
                        optimizer: None,
                    },
                    loss,
                )
                .unwrap_err();
            assert!(matches!(err, TrainError::NonFinite { .. }), "{err}");
            assert!(err.to_string().contains("loss at step 6"), "{err}");
        }
        // Nothing new was written, nothing was pruned, the old bytes are intact.
        let steps: Vec<u64> = ckpt.list().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![5]);
        assert_eq!(fs::read(ckpt.dir_for(5).join(MODEL_FILE)).unwrap(), before);
        assert!(check_finite("x", 1.0).is_ok());
    }

    #[test]
    fn resaving_a_step_replaces_it_and_incomplete_folders_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = Checkpointer::new(dir.path(), 3).unwrap();
        let rng = ChaCha8Rng::seed_from_u64(3);
        for value in [1.0f32, 2.0] {
            let w = weights(value);
            ckpt.save(
                CheckpointData {
                    state: &state(7, &rng),
                    weights: &w,
                    ema: None,
                    optimizer: None,
                },
                1.0,
            )
            .unwrap();
        }
        let loaded = Checkpointer::load(&ckpt.dir_for(7), &Device::Cpu).unwrap();
        assert_eq!(
            loaded.weights["llm2vae.bias"].to_vec1::<f32>().unwrap(),
            vec![2.0, 3.0]
        );
        // A folder without state.json (an interrupted foreign copy) is not a checkpoint, and a
        // leftover temp folder is removed by the next save.
        fs::create_dir_all(ckpt.dir_for(99)).unwrap();
        fs::create_dir_all(dir.path().join(".tmp-checkpoint-leftover")).unwrap();
        assert_eq!(ckpt.latest().unwrap(), Some(ckpt.dir_for(7)));
        let w = weights(3.0);
        ckpt.save(
            CheckpointData {
                state: &state(8, &rng),
                weights: &w,
                ema: None,
                optimizer: None,
            },
            1.0,
        )
        .unwrap();
        assert!(!dir.path().join(".tmp-checkpoint-leftover").exists());
        // A corrupt state.json is a clear error.
        fs::write(ckpt.dir_for(8).join(STATE_FILE), "{").unwrap();
        assert!(ckpt.resume(&Device::Cpu).is_err());
    }
}
