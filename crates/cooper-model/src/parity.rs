//! Parity against reference outputs of the official implementation.
//!
//! A fixture set is a model folder with a `cases/` folder of `<case>.safetensors` + `<case>.json`
//! pairs (the layout of `tests/fixtures/bagel-tiny`). Every size, setting and id comes from the set
//! itself, so another set in the same layout runs unchanged. Each case is run by a `CaseRunner`
//! registered for its name; this crate provides the model-level ones (`vit`, `vae`,
//! `forward_train`), the inference crate adds the generation cases.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Module, Tensor};

use crate::autoencoder::AutoEncoder;
use crate::bagel::{Bagel, PackedBatch, PackedVae, PackedVit};
use crate::checkpoint::{read_json, ModelFolder};
use crate::context::Context;
use crate::error::{ModelError, Result};
use crate::packing::{attention_allowed, pack_latents, SplitMode};
use crate::qwen2_mot::AttnMask;
use crate::sequence::SequenceBuilder;

/// Max-abs-error tolerance for float tensors (the fixtures' README).
pub const FLOAT_TOLERANCE: f32 = 1e-4;

/// One compared tensor.
#[derive(Debug, Clone)]
pub struct TensorCheck {
    pub name: String,
    pub max_abs_err: f32,
    pub tolerance: f32,
}

impl TensorCheck {
    pub fn pass(&self) -> bool {
        self.max_abs_err <= self.tolerance
    }
}

#[derive(Debug)]
pub enum CaseOutcome {
    Checked(Vec<TensorCheck>),
    Skipped(String),
    Failed(String),
}

impl CaseOutcome {
    pub fn is_failure(&self) -> bool {
        match self {
            CaseOutcome::Checked(c) => c.iter().any(|c| !c.pass()),
            CaseOutcome::Failed(_) => true,
            CaseOutcome::Skipped(_) => false,
        }
    }
}

/// A fixture set: the model folder plus lazily loaded f32 CPU weights shared by the cases.
pub struct FixtureSet {
    pub folder: ModelFolder,
    bagel: OnceLock<Bagel>,
    ae: OnceLock<AutoEncoder>,
}

impl FixtureSet {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(Self {
            folder: ModelFolder::open(dir)?,
            bagel: OnceLock::new(),
            ae: OnceLock::new(),
        })
    }

    pub fn bagel(&self) -> Result<&Bagel> {
        if let Some(b) = self.bagel.get() {
            return Ok(b);
        }
        let b = self.folder.load_bagel(DType::F32, &Device::Cpu)?;
        Ok(self.bagel.get_or_init(|| b))
    }

    pub fn ae(&self) -> Result<&AutoEncoder> {
        if let Some(a) = self.ae.get() {
            return Ok(a);
        }
        let a = self.folder.load_ae(DType::F32, &Device::Cpu)?;
        Ok(self.ae.get_or_init(|| a))
    }

    /// `<dir>/cases/*.json`, sorted by name.
    pub fn case_names(&self) -> Result<Vec<String>> {
        let dir = self.folder.dir.join("cases");
        let rd = std::fs::read_dir(&dir).map_err(|source| ModelError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter(|p| p.with_extension("safetensors").is_file())
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn load_case(&self, name: &str) -> Result<CaseData> {
        let base = self.folder.dir.join("cases").join(name);
        let json_path = base.with_extension("json");
        let st_path = base.with_extension("safetensors");
        let json: serde_json::Value = read_json(&json_path)?;
        let tensors = candle_core::safetensors::load(&st_path, &Device::Cpu).map_err(|e| {
            ModelError::Tensor {
                file: st_path.clone(),
                name: "*".into(),
                why: e.to_string(),
            }
        })?;
        Ok(CaseData {
            name: json["case"].as_str().unwrap_or(name).to_string(),
            json,
            tensors,
            path: st_path,
        })
    }
}

/// One case's stored inputs, outputs and settings.
pub struct CaseData {
    pub name: String,
    pub json: serde_json::Value,
    pub tensors: HashMap<String, Tensor>,
    pub path: PathBuf,
}

impl CaseData {
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| ModelError::Tensor {
            file: self.path.clone(),
            name: name.into(),
            why: "missing from the case".into(),
        })
    }

    /// A stored float tensor as f32.
    pub fn f32(&self, name: &str) -> Result<Tensor> {
        Ok(self.tensor(name)?.to_dtype(DType::F32)?)
    }

    /// A stored index tensor (int64 in the fixtures) as u32.
    pub fn index(&self, name: &str) -> Result<Tensor> {
        Ok(self.tensor(name)?.to_dtype(DType::U32)?)
    }

    pub fn usize_list(&self, key: &str) -> Result<Vec<usize>> {
        self.json[key]
            .as_array()
            .ok_or_else(|| self.missing_key(key))?
            .iter()
            .map(|v| {
                v.as_u64()
                    .map(|x| x as usize)
                    .ok_or_else(|| self.missing_key(key))
            })
            .collect()
    }

    pub fn missing_key(&self, key: &str) -> ModelError {
        ModelError::Config {
            file: self.path.with_extension("json").display().to_string(),
            field: key.into(),
            why: "missing or of the wrong type".into(),
        }
    }

    /// Compares `got` with the stored tensor `name` (shapes must agree).
    pub fn check(&self, name: &str, got: &Tensor, tolerance: f32) -> Result<TensorCheck> {
        let want = self.f32(name)?;
        let got = got.to_dtype(DType::F32)?;
        let max_abs_err = if got.dims() != want.dims() {
            // Squeeze-insensitive: same element count and order is acceptable.
            if got.elem_count() != want.elem_count() {
                return Err(ModelError::Tensor {
                    file: self.path.clone(),
                    name: name.into(),
                    why: format!(
                        "shape {:?} expected, computed {:?}",
                        want.dims(),
                        got.dims()
                    ),
                });
            }
            max_abs_diff(&got.flatten_all()?, &want.flatten_all()?)?
        } else {
            max_abs_diff(&got, &want)?
        };
        Ok(TensorCheck {
            name: name.into(),
            max_abs_err,
            tolerance,
        })
    }
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let d = (a - b)?.abs()?.flatten_all()?;
    if d.elem_count() == 0 {
        return Ok(0.0);
    }
    // NaN anywhere must fail, never pass silently.
    let v: Vec<f32> = d.to_vec1()?;
    Ok(v.into_iter().fold(
        0f32,
        |m, x| if x.is_nan() { f32::INFINITY } else { m.max(x) },
    ))
}

/// Runs one named case of a set.
pub trait CaseRunner: Sync {
    fn case(&self) -> &'static str;
    fn run(&self, set: &FixtureSet, data: &CaseData) -> Result<Vec<TensorCheck>>;
}

/// Runs every case of the set with the matching runner; unknown cases are reported as skipped.
pub fn run_all(
    set: &FixtureSet,
    runners: &[&dyn CaseRunner],
) -> Result<Vec<(String, CaseOutcome)>> {
    let mut out = Vec::new();
    for name in set.case_names()? {
        let outcome = match set.load_case(&name) {
            Err(e) => CaseOutcome::Failed(e.to_string()),
            Ok(data) => match runners.iter().find(|r| r.case() == data.name) {
                None => CaseOutcome::Skipped(format!("no runner for case `{}`", data.name)),
                Some(r) => match r.run(set, &data) {
                    Ok(checks) => CaseOutcome::Checked(checks),
                    Err(e) => CaseOutcome::Failed(e.to_string()),
                },
            },
        };
        out.push((name, outcome));
    }
    Ok(out)
}

/// The runners this crate provides.
pub fn model_runners() -> Vec<&'static dyn CaseRunner> {
    vec![&VitCase, &VaeCase, &ForwardTrainCase, &TextGenerateCase]
}

/// ViT embeddings, features, connector and position table for one packed picture.
pub struct VitCase;

impl CaseRunner for VitCase {
    fn case(&self) -> &'static str {
        "vit"
    }

    fn run(&self, set: &FixtureSet, d: &CaseData) -> Result<Vec<TensorCheck>> {
        let m = set.bagel()?;
        let tokens = d.f32("packed_vit_tokens")?;
        let ids = d.index("vit_position_ids")?;
        let n = tokens.dim(0)?;
        let tol = FLOAT_TOLERANCE;
        let emb = m.vit_model.embeddings(&tokens, &ids)?;
        let feats = m.vit_model.forward(&tokens, &ids, &[n])?;
        let conn = m.connector.forward(&feats)?;
        let pos = m.vit_pos_embed.forward(&ids)?;
        let llm_input = m.embed_vit(&tokens, &ids, &[n])?;
        Ok(vec![
            d.check("vit_embeddings", &emb, tol)?,
            d.check("vit_features", &feats, tol)?,
            d.check("connector_out", &conn, tol)?,
            d.check("vit_pos_embed", &pos, tol)?,
            d.check("llm_input", &llm_input, tol)?,
        ])
    }
}

/// Autoencoder encode (moments, mean, sampled) and decode, and latent packing.
pub struct VaeCase;

impl CaseRunner for VaeCase {
    fn case(&self) -> &'static str {
        "vae"
    }

    fn run(&self, set: &FixtureSet, d: &CaseData) -> Result<Vec<TensorCheck>> {
        let ae = set.ae()?;
        let p = set.folder.config.bagel.latent_patch_size;
        let pixels = d.f32("vae_pixels")?.unsqueeze(0)?;
        let tol = FLOAT_TOLERANCE;
        let moments = ae.moments(&pixels)?;
        let mean = ae.encode_mean(&pixels)?;
        let decoded = ae.decode(&d.f32("latent_mean")?)?;
        let sampled = ae.encode_with_noise(&pixels, &d.f32("sample_eps")?)?;
        let packed = pack_latents(&mean, p)?;
        Ok(vec![
            d.check("encoder_moments", &moments, tol)?,
            d.check("latent_mean", &mean, tol)?,
            d.check("decoded_from_latent_mean", &decoded, tol)?,
            d.check("latent_sampled", &sampled, tol)?,
            d.check("packed_latent_tokens", &packed, tol)?,
        ])
    }
}

/// The packed training forward: inputs, hidden states, logits, velocities and both losses.
pub struct ForwardTrainCase;

impl ForwardTrainCase {
    fn splits(d: &CaseData) -> Result<Vec<(usize, SplitMode)>> {
        let lens = d.usize_list("split_lens")?;
        let modes = d.json["attn_modes"]
            .as_array()
            .ok_or_else(|| d.missing_key("attn_modes"))?;
        if modes.len() != lens.len() {
            return Err(d.missing_key("attn_modes"));
        }
        lens.into_iter()
            .zip(modes)
            .map(|(l, m)| {
                let mode = m
                    .as_str()
                    .ok_or_else(|| d.missing_key("attn_modes"))?
                    .parse::<SplitMode>()
                    .map_err(|why| ModelError::Config {
                        file: d.path.with_extension("json").display().to_string(),
                        field: "attn_modes".into(),
                        why,
                    })?;
                Ok((l, mode))
            })
            .collect()
    }
}

impl ForwardTrainCase {
    /// Rebuilds the sample with `SequenceBuilder` from the case's plan and ids, and compares every
    /// layout tensor with the reference exactly.
    fn builder_layout(
        set: &FixtureSet,
        d: &CaseData,
        stored: &PackedBatch,
    ) -> Result<Vec<TensorCheck>> {
        let cfg = &set.folder.config;
        let ld = cfg.latent_downsample();
        let ids = |key: &str| -> Result<Vec<u32>> {
            Ok(d.usize_list(key)?.into_iter().map(|x| x as u32).collect())
        };
        let mut texts = vec![ids("prompt_ids")?, ids("answer_ids")?].into_iter();
        let shapes = d.json["patchified_vae_latent_shapes"]
            .as_array()
            .ok_or_else(|| d.missing_key("patchified_vae_latent_shapes"))?;
        let latents = d.f32("packed_latent_clean")?;
        let logit = d.f32("timestep_logit")?.flatten_all()?.to_vec1::<f32>()?[0];
        let vit = d.f32("packed_vit_tokens")?;
        let vit_ids = d.index("packed_vit_position_ids")?.to_vec1::<u32>()?;
        let side = cfg.bagel.vit_max_num_patch_per_side as u32;
        let vit_rows = vit_ids.iter().map(|i| i / side).max().unwrap_or(0) as usize + 1;
        let vit_cols = vit_ids.iter().map(|i| i % side).max().unwrap_or(0) as usize + 1;
        let mut b = SequenceBuilder::new(cfg, set.folder.special);
        let (mut vae_i, mut row) = (0, 0);
        let plan = d.json["sequence_plan"]
            .as_array()
            .ok_or_else(|| d.missing_key("sequence_plan"))?;
        for item in plan {
            let loss = item["loss"].as_u64() == Some(1);
            match item["type"].as_str() {
                Some("text") => b.text(
                    &texts.next().ok_or_else(|| d.missing_key("prompt_ids"))?,
                    loss,
                ),
                Some("vit_image") => {
                    let p = cfg.vit.patch_size;
                    b.vit_image(vit.clone(), vit_rows * p, vit_cols * p)?
                }
                Some("vae_image") => {
                    let hw = &shapes[vae_i];
                    let (h, w) = (
                        hw[0].as_u64().unwrap_or(0) as usize,
                        hw[1].as_u64().unwrap_or(0) as usize,
                    );
                    let n = h * w;
                    b.vae_image(
                        latents.narrow(0, row, n)?,
                        h * ld,
                        w * ld,
                        loss.then_some(logit),
                    )?;
                    vae_i += 1;
                    row += n;
                }
                _ => return Err(d.missing_key("sequence_plan[].type")),
            }
        }
        let built = b.finish(Some(d.f32("noise")?), &Device::Cpu)?;
        let same = |name: &str, a: &Tensor, b: &Tensor| -> Result<TensorCheck> {
            // Element equality, so −∞ (clean-image timesteps) compares equal to itself.
            let ok = a.dims() == b.dims()
                && a.to_dtype(DType::F32)?
                    .eq(&b.to_dtype(DType::F32)?)?
                    .to_dtype(DType::F32)?
                    .min_all()?
                    .to_scalar::<f32>()?
                    == 1.0;
            Ok(TensorCheck {
                name: format!("builder {name}"),
                max_abs_err: if ok { 0.0 } else { f32::INFINITY },
                tolerance: 0.0,
            })
        };
        let (sv, bv) = (stored.vae.as_ref(), built.vae.as_ref());
        let missing = || d.missing_key("vae");
        // Compare the allowed pattern: −∞ − (−∞) is NaN.
        let mask = |m: &AttnMask| m.allowed()?.ok_or_else(|| d.missing_key("attention"));
        Ok(vec![
            TensorCheck {
                name: "builder sequence_length".into(),
                max_abs_err: if built.sequence_length == stored.sequence_length {
                    0.0
                } else {
                    f32::INFINITY
                },
                tolerance: 0.0,
            },
            same(
                "packed_text_ids",
                &built.packed_text_ids,
                &stored.packed_text_ids,
            )?,
            same(
                "packed_text_indexes",
                &built.packed_text_indexes,
                &stored.packed_text_indexes,
            )?,
            same(
                "packed_position_ids",
                &built.packed_position_ids,
                &stored.packed_position_ids,
            )?,
            same(
                "attention",
                &mask(&built.attention)?,
                &mask(&stored.attention)?,
            )?,
            same(
                "packed_vit_token_indexes",
                &built
                    .vit
                    .as_ref()
                    .ok_or_else(missing)?
                    .packed_vit_token_indexes,
                &stored
                    .vit
                    .as_ref()
                    .ok_or_else(missing)?
                    .packed_vit_token_indexes,
            )?,
            same(
                "packed_vae_token_indexes",
                &bv.ok_or_else(missing)?.packed_vae_token_indexes,
                &sv.ok_or_else(missing)?.packed_vae_token_indexes,
            )?,
            same(
                "packed_latent_position_ids",
                &bv.ok_or_else(missing)?.packed_latent_position_ids,
                &sv.ok_or_else(missing)?.packed_latent_position_ids,
            )?,
            same(
                "packed_timesteps",
                &bv.ok_or_else(missing)?.packed_timesteps,
                &sv.ok_or_else(missing)?.packed_timesteps,
            )?,
            same(
                "ce_loss_indexes",
                built.ce_loss_indexes.as_ref().ok_or_else(missing)?,
                stored.ce_loss_indexes.as_ref().ok_or_else(missing)?,
            )?,
            same(
                "packed_label_ids",
                built.packed_label_ids.as_ref().ok_or_else(missing)?,
                stored.packed_label_ids.as_ref().ok_or_else(missing)?,
            )?,
            same(
                "mse_loss_indexes",
                built.mse_loss_indexes.as_ref().ok_or_else(missing)?,
                stored.mse_loss_indexes.as_ref().ok_or_else(missing)?,
            )?,
        ])
    }
}

impl CaseRunner for ForwardTrainCase {
    fn case(&self) -> &'static str {
        "forward_train"
    }

    fn run(&self, set: &FixtureSet, d: &CaseData) -> Result<Vec<TensorCheck>> {
        let m = set.bagel()?;
        let ae = set.ae()?;
        let tol = FLOAT_TOLERANCE;
        let p = set.folder.config.bagel.latent_patch_size;
        let mut checks = Vec::new();

        // The attention mask from the split description must equal the official dense mask.
        let allowed = attention_allowed(&[Self::splits(d)?], &Device::Cpu)?;
        checks.push(d.check("attention_allowed", &allowed, 0.0)?);

        // Encode and pack the padded images: each cropped to its own latent grid.
        let padded = d.f32("padded_images")?;
        let latents = ae.encode_mean(&padded)?;
        checks.push(d.check("padded_latent", &latents, tol)?);
        let shapes = d.json["patchified_vae_latent_shapes"]
            .as_array()
            .ok_or_else(|| d.missing_key("patchified_vae_latent_shapes"))?;
        let mut packed = Vec::new();
        for (i, hw) in shapes.iter().enumerate() {
            let h = hw[0]
                .as_u64()
                .ok_or_else(|| d.missing_key("patchified_vae_latent_shapes"))?
                as usize;
            let w = hw[1]
                .as_u64()
                .ok_or_else(|| d.missing_key("patchified_vae_latent_shapes"))?
                as usize;
            let one = latents
                .narrow(0, i, 1)?
                .narrow(2, 0, h * p)?
                .narrow(3, 0, w * p)?;
            packed.push(pack_latents(&one, p)?);
        }
        let packed = Tensor::cat(&packed, 0)?;
        checks.push(d.check("packed_latent_clean", &packed, tol)?);

        let batch = PackedBatch {
            sequence_length: d.json["sequence_length"]
                .as_u64()
                .ok_or_else(|| d.missing_key("sequence_length"))?
                as usize,
            packed_text_ids: d.index("packed_text_ids")?,
            packed_text_indexes: d.index("packed_text_indexes")?,
            packed_position_ids: d.index("packed_position_ids")?,
            attention: AttnMask::from_allowed(&allowed)?,
            vit: Some(PackedVit {
                packed_vit_tokens: d.f32("packed_vit_tokens")?,
                packed_vit_token_indexes: d.index("packed_vit_token_indexes")?,
                packed_vit_position_ids: d.index("packed_vit_position_ids")?,
                vit_token_seqlens: d
                    .index("vit_token_seqlens")?
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|x| x as usize)
                    .collect(),
            }),
            vae: Some(PackedVae {
                packed_latent_clean: d.f32("packed_latent_clean")?,
                noise: d.f32("noise")?,
                packed_timesteps: d.f32("packed_timesteps_raw")?,
                packed_latent_position_ids: d.index("packed_latent_position_ids")?,
                packed_vae_token_indexes: d.index("packed_vae_token_indexes")?,
            }),
            ce_loss_indexes: Some(d.index("ce_loss_indexes")?),
            packed_label_ids: Some(d.index("packed_label_ids")?),
            mse_loss_indexes: Some(d.index("mse_loss_indexes")?),
        };
        checks.extend(Self::builder_layout(set, d, &batch)?);
        let out = m.forward_train(&batch)?;
        let timesteps = out
            .timesteps
            .as_ref()
            .ok_or_else(|| d.missing_key("packed_timesteps_raw"))?;
        checks.push(d.check("packed_timesteps_shifted", timesteps, tol)?);
        checks.push(d.check("llm_input_sequence", &out.sequence, tol)?);
        checks.push(d.check("last_hidden_state", &out.last_hidden_state, tol)?);
        let logits = out
            .ce_logits
            .as_ref()
            .ok_or_else(|| d.missing_key("ce_loss_indexes"))?;
        let velocity = out
            .velocity_pred
            .as_ref()
            .ok_or_else(|| d.missing_key("mse_loss_indexes"))?;
        checks.push(d.check("ce_logits", logits, tol)?);
        checks.push(d.check("velocity_pred", velocity, tol)?);

        // Flow target on the noised rows: ε − x₀, where the noised rows are the VAE tokens at
        // `mse_loss_indexes`.
        let vae_slots = d.index("packed_vae_token_indexes")?.to_vec1::<u32>()?;
        let mse_slots = d.index("mse_loss_indexes")?.to_vec1::<u32>()?;
        let rows: Vec<u32> = mse_slots
            .iter()
            .map(|s| {
                vae_slots
                    .iter()
                    .position(|v| v == s)
                    .map(|r| r as u32)
                    .ok_or_else(|| d.missing_key("mse_loss_indexes"))
            })
            .collect::<Result<_>>()?;
        let rows = Tensor::from_vec(rows.clone(), rows.len(), &Device::Cpu)?;
        let target = (d.f32("noise")?.index_select(&rows, 0)?
            - d.f32("packed_latent_clean")?.index_select(&rows, 0)?)?;
        checks.push(d.check("velocity_target", &target, tol)?);

        let labels = d.index("packed_label_ids")?;
        let ce_per_token = cross_entropy_per_token(logits, &labels)?;
        checks.push(d.check("ce_per_token", &ce_per_token, tol)?);
        let mse = (velocity - &target)?.sqr()?;
        checks.push(d.check("mse_per_element", &mse, tol)?);
        let n_ce = ce_per_token.dim(0)? as f64;
        let n_mse = mse.dim(0)? as f64;
        checks.push(d.check("ce_loss", &(ce_per_token.sum_all()? / n_ce)?, tol)?);
        checks.push(d.check("mse_loss", &(mse.mean(1)?.sum_all()? / n_mse)?, tol)?);
        Ok(checks)
    }
}

/// Builds the context a generation case describes in `context_steps` (text ids, the VAE picture of
/// the `vae` case, the ViT patches of the `vit` case), checking kv length and RoPE position after
/// every step (exact integers: a mismatch is reported as an infinite error).
pub fn replay_context(
    set: &FixtureSet,
    d: &CaseData,
    steps_key: &str,
) -> Result<(Context, Vec<TensorCheck>)> {
    let m = set.bagel()?;
    let steps = d.json[steps_key]
        .as_array()
        .ok_or_else(|| d.missing_key(steps_key))?;
    let mut ctx = Context::new();
    let mut checks = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let op = step["op"]
            .as_str()
            .ok_or_else(|| d.missing_key(steps_key))?;
        ctx = match op {
            "text" => {
                let ids: Vec<u32> = step["packed_ids"]
                    .as_array()
                    .ok_or_else(|| d.missing_key("packed_ids"))?
                    .iter()
                    .filter_map(|v| v.as_u64().map(|x| x as u32))
                    .collect();
                // The stored ids are framed [bos] … [eos]; `update_text` frames them itself.
                if ids.len() < 2 || ids[0] != m.special.bos || ids[ids.len() - 1] != m.special.eos {
                    return Err(d.missing_key("packed_ids (framed by bos/eos)"));
                }
                m.update_text(&ctx, &ids[1..ids.len() - 1])?
            }
            "image_vae" => {
                let vae = set.load_case("vae")?;
                let pixels = vae.f32("vae_pixels")?.unsqueeze(0)?;
                let (_, _, h, w) = pixels.dims4()?;
                let latents = set.ae()?.encode_mean(&pixels)?;
                let packed = pack_latents(&latents, set.folder.config.bagel.latent_patch_size)?;
                m.update_vae(&ctx, &packed, h, w)?
            }
            "image_vit" => {
                let vit = set.load_case("vit")?;
                let tokens = vit.f32("packed_vit_tokens")?;
                let hw = vit.usize_list("vit_hw")?;
                m.update_vit(&ctx, &tokens, hw[0], hw[1])?
            }
            other => {
                return Err(ModelError::Config {
                    file: d.path.with_extension("json").display().to_string(),
                    field: format!("{steps_key}[{i}].op"),
                    why: format!("unknown context operation {other:?}"),
                })
            }
        };
        let want_kv = step["kv_lens_after"][0]
            .as_u64()
            .ok_or_else(|| d.missing_key("kv_lens_after"))?;
        let want_rope = step["ropes_after"][0]
            .as_u64()
            .ok_or_else(|| d.missing_key("ropes_after"))?;
        let exact = |name: String, ok: bool| TensorCheck {
            name,
            max_abs_err: if ok { 0.0 } else { f32::INFINITY },
            tolerance: 0.0,
        };
        checks.push(exact(
            format!("step{i}_kv_len"),
            ctx.kv_len() as u64 == want_kv,
        ));
        checks.push(exact(format!("step{i}_rope"), ctx.rope as u64 == want_rope));
    }
    Ok((ctx, checks))
}

/// Greedy text generation over a cached context: KV cache contents, every step's logits, the ids.
pub struct TextGenerateCase;

impl CaseRunner for TextGenerateCase {
    fn case(&self) -> &'static str {
        "text_generate"
    }

    fn run(&self, set: &FixtureSet, d: &CaseData) -> Result<Vec<TensorCheck>> {
        let m = set.bagel()?;
        let tol = FLOAT_TOLERANCE;
        let (mut ctx, mut checks) = replay_context(set, d, "context_steps")?;
        for layer in 0..m.config.llm.num_hidden_layers {
            let kv = ctx
                .cache
                .layer(layer)
                .ok_or_else(|| d.missing_key("context"))?;
            for (what, t) in [("key", &kv.k), ("value", &kv.v)] {
                let name = format!("context_{what}_cache_layer{layer}");
                if d.tensors.contains_key(&name) {
                    checks.push(d.check(&name, t, tol)?);
                }
            }
        }
        let max_length = d.json["max_length"]
            .as_u64()
            .ok_or_else(|| d.missing_key("max_length"))? as usize;
        let want_ids: Vec<i64> = d.tensor("generated_ids")?.to_vec1()?;
        let mut ids = vec![m.special.bos];
        let mut rows = Vec::with_capacity(max_length);
        let mut token = m.special.bos;
        for _ in 0..max_length {
            let (logits, next) = m.decode_step(&ctx, token)?;
            ctx = next;
            token = logits.argmax(0)?.to_scalar::<u32>()?;
            rows.push(logits);
            if ids.len() < max_length {
                ids.push(token);
            }
        }
        checks.push(d.check("step_logits", &Tensor::stack(&rows, 0)?, tol)?);
        let same =
            ids.len() == want_ids.len() && ids.iter().zip(&want_ids).all(|(a, b)| *a as i64 == *b);
        checks.push(TensorCheck {
            name: "generated_ids".into(),
            max_abs_err: if same { 0.0 } else { f32::INFINITY },
            tolerance: 0.0,
        });
        Ok(checks)
    }
}

/// −log softmax(logits)[label] per row. logits: (N, V); labels: (N,) u32 → (N,).
pub fn cross_entropy_per_token(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, 1)?;
    logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bagel-tiny")
    }

    fn run_case(name: &str) {
        let set = FixtureSet::open(fixture_dir()).expect("fixture set opens");
        let data = set.load_case(name).expect("case loads");
        let runner = model_runners()
            .into_iter()
            .find(|r| r.case() == name)
            .expect("runner exists");
        let checks = runner.run(&set, &data).expect("case runs");
        assert!(!checks.is_empty());
        for c in &checks {
            assert!(
                c.pass(),
                "{name}: {} max abs err {} > {}",
                c.name,
                c.max_abs_err,
                c.tolerance
            );
        }
    }

    #[test]
    fn vit_matches_reference() {
        run_case("vit");
    }

    #[test]
    fn vae_matches_reference() {
        run_case("vae");
    }

    #[test]
    fn forward_train_matches_reference() {
        run_case("forward_train");
    }

    #[test]
    fn text_generate_matches_reference() {
        run_case("text_generate");
    }
}
