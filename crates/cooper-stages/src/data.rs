//! Training samples of the packed-sequence stages (`amg`, `sft`), read from the official
//! files, with their token counts, and the resumable shuffled order that packs them.
//!
//! A file is recognised by its first row: `interleaved_reason` (an SFT chain file) or
//! `rgb_image` (a stage-1 index). Stage 1 may mix in chain files, which then add cross-entropy
//! on their loss turns to the flow loss ("CE on text where present").
use std::path::{Path, PathBuf};

use cooper_infer::prompts::{
    DEPTH_PROMPT, INTERLEAVE_REASON_SYSTEM_PROMPT, SEGMENTATION_PROMPT, TEXT_REASON_SYSTEM_PROMPT,
    VLM_THINK_SYSTEM_PROMPT,
};
use cooper_infer::transforms::ResizeConfig;
use cooper_model::ModelConfig;
use cooper_train::checkpoint::DataCursor;
use cooper_train::config::{DataConfig, SftConfig};
use cooper_train::data::{read_sft_jsonl, shuffled_order, SftItem};
use cooper_world::readers::{read_stage1_index, Stage1Target};

use crate::error::{Result, StageError};
use crate::pictures::{encoded_size, picture_size, DepthEncoding};

/// What a stage-1 sample generates.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationTarget {
    /// A 16-bit depth PNG, encoded to pseudo-RGB.
    Depth {
        path: PathBuf,
        encoding: DepthEncoding,
    },
    /// A colour-coded segmentation map (the RGB path).
    Segmentation { path: PathBuf },
}

/// One part of a chain.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainPart {
    /// A text turn, tokenised. With `loss`, the ids in `given` are context (no loss) and the
    /// rest learnt; `given` is empty for a turn learnt whole.
    Text {
        ids: Vec<u32>,
        loss: bool,
        given: std::ops::Range<usize>,
    },
    /// A picture: encoded bytes, its VAE-resized size, and which encoders see it.
    Image {
        bytes: Vec<u8>,
        size: (u32, u32),
        vae: bool,
        vit: bool,
    },
}

/// One training sample.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// Stage 1: picture (VAE + ViT), prompt (no loss), target (flow loss).
    Generation {
        rgb: PathBuf,
        target: GenerationTarget,
        /// VAE-resized (width, height) of the picture; the target is brought to it.
        size: (u32, u32),
        prompt_ids: Vec<u32>,
    },
    /// An interleaved chain (system prompt included).
    Chain { parts: Vec<ChainPart> },
}

/// Token counts the packer needs, from the model's strides.
#[derive(Debug, Clone, Copy)]
pub struct TokenGeometry {
    pub latent_downsample: u32,
    pub vit_patch: u32,
    pub vit_resize: ResizeConfig,
}

impl TokenGeometry {
    pub fn new(config: &ModelConfig, vit_resize: ResizeConfig) -> Self {
        Self {
            latent_downsample: config.latent_downsample() as u32,
            vit_patch: config.vit.patch_size as u32,
            vit_resize,
        }
    }

    fn vae(&self, (w, h): (u32, u32)) -> usize {
        ((w / self.latent_downsample) * (h / self.latent_downsample)) as usize + 2
    }

    fn vit(&self, (w, h): (u32, u32)) -> Result<usize> {
        let (vw, vh) = self.vit_resize.target_size(w, h)?;
        Ok(((vw / self.vit_patch) * (vh / self.vit_patch)) as usize + 2)
    }

    /// Tokens of a sample in a pack.
    pub fn tokens(&self, sample: &Sample) -> Result<usize> {
        Ok(match sample {
            Sample::Generation {
                size, prompt_ids, ..
            } => 2 * self.vae(*size) + self.vit(*size)? + prompt_ids.len() + 2,
            Sample::Chain { parts } => {
                let mut n = 0;
                for p in parts {
                    n += match p {
                        ChainPart::Text { ids, .. } => ids.len() + 2,
                        ChainPart::Image { size, vae, vit, .. } => {
                            (if *vae { self.vae(*size) } else { 0 })
                                + (if *vit { self.vit(*size)? } else { 0 })
                        }
                    };
                }
                n
            }
        })
    }
}

/// Everything needed to turn rows into samples.
pub struct SampleReader<'a> {
    pub data: &'a DataConfig,
    pub sft: &'a SftConfig,
    pub vae_resize: ResizeConfig,
    pub encode: &'a dyn Fn(&str) -> Result<Vec<u32>>,
}

/// The folder relative image paths of `file` resolve against: `data.image_root`, else the
/// file's own folder.
pub fn image_root_for(data: &DataConfig, file: &Path) -> PathBuf {
    data.image_root.clone().unwrap_or_else(|| {
        file.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

/// The system prompt an SFT setting names.
pub fn system_prompt(name: &str) -> Option<&'static str> {
    match name {
        "interleave" => Some(INTERLEAVE_REASON_SYSTEM_PROMPT),
        "text" => Some(TEXT_REASON_SYSTEM_PROMPT),
        "vlm_think" => Some(VLM_THINK_SYSTEM_PROMPT),
        _ => None,
    }
}

fn first_row(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| StageError::io(path, e))?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| StageError::Input(format!("{} is empty", path.display())))?;
    serde_json::from_str(line)
        .map_err(|e| StageError::Input(format!("{} line 1: {e}", path.display())))
}

impl SampleReader<'_> {
    /// Reads every file of `data.files`.
    pub fn read_all(&self) -> Result<Vec<Sample>> {
        if self.data.files.is_empty() {
            return Err(StageError::Input(
                "no training data: set data.files (stage-1 JSONL and/or SFT JSONL files)".into(),
            ));
        }
        let mut out = Vec::new();
        for file in &self.data.files {
            let row = first_row(file)?;
            if row.get("interleaved_reason").is_some() {
                out.extend(self.read_chains(file)?);
            } else if row.get("rgb_image").is_some() {
                out.extend(self.read_stage1(file)?);
            } else {
                return Err(StageError::Input(format!(
                    "{}: rows have neither `interleaved_reason` (SFT chains) nor `rgb_image` \
                     (stage-1 index)",
                    file.display()
                )));
            }
        }
        Ok(out)
    }

    fn read_stage1(&self, file: &Path) -> Result<Vec<Sample>> {
        let root = image_root_for(self.data, file);
        let depth_ids = (self.encode)(DEPTH_PROMPT)?;
        let seg_ids = (self.encode)(SEGMENTATION_PROMPT)?;
        let mut out = Vec::new();
        for entry in read_stage1_index(file, &root)? {
            let (w, h) = picture_size(&entry.rgb)?;
            let size = self.vae_resize.target_size(w, h)?;
            let encoding = DepthEncoding::for_row(self.data, &entry);
            let (target, prompt_ids) = match entry.target {
                Stage1Target::Depth(path) => {
                    if !(encoding.min_depth < encoding.max_depth && encoding.scale > 0.0) {
                        return Err(StageError::Input(format!(
                            "{}: depth range {}..{} m with scale {} cannot be encoded",
                            file.display(),
                            encoding.min_depth,
                            encoding.max_depth,
                            encoding.scale
                        )));
                    }
                    (
                        GenerationTarget::Depth { path, encoding },
                        depth_ids.clone(),
                    )
                }
                Stage1Target::Segmentation(path) => {
                    (GenerationTarget::Segmentation { path }, seg_ids.clone())
                }
            };
            out.push(Sample::Generation {
                rgb: entry.rgb,
                target,
                size,
                prompt_ids,
            });
        }
        Ok(out)
    }

    fn read_chains(&self, file: &Path) -> Result<Vec<Sample>> {
        let system = self
            .sft
            .uses_system_prompt()
            .then(|| system_prompt(&self.sft.system_prompt))
            .flatten();
        let system_ids = system.map(|s| (self.encode)(s)).transpose()?;
        let text_mode = matches!(self.sft.system_prompt.as_str(), "text" | "vlm_think");
        let matched = self.sft.match_inference_context;
        let mut out = Vec::new();
        for (row, items) in read_sft_jsonl(file)?.into_iter().enumerate() {
            let mut parts = Vec::with_capacity(items.len() + 1);
            if let Some(ids) = &system_ids {
                parts.push(ChainPart::Text {
                    ids: ids.clone(),
                    loss: false,
                    given: 0..0,
                });
            }
            let mut images = 0;
            for item in items {
                match item {
                    SftItem::Text {
                        value,
                        need_loss,
                        loss_start,
                        given_from,
                    } => {
                        // Context and learnt parts are tokenised apart, so that the loss starts
                        // and stops on token boundaries; the world splits before a space, where
                        // the byte-level pre-tokenizer splits the whole text too.
                        let (head, rest) = value.split_at(given_from);
                        let (given, learnt) = rest.split_at(loss_start - given_from);
                        let mut ids = (self.encode)(head)?;
                        let from = ids.len();
                        ids.extend((self.encode)(given)?);
                        let to = ids.len();
                        ids.extend((self.encode)(learnt)?);
                        parts.push(ChainPart::Text {
                            ids,
                            loss: need_loss,
                            given: from..to,
                        })
                    }
                    SftItem::Image { bytes, .. } => {
                        let what =
                            format!("{} row {} image {}", file.display(), row + 1, images + 1);
                        let (w, h) = encoded_size(&bytes, &what)?;
                        let size = self.vae_resize.target_size(w, h)?;
                        let vae = !matched || (images == 0 && !text_mode);
                        parts.push(ChainPart::Image {
                            bytes,
                            size,
                            vae,
                            vit: true,
                        });
                        images += 1;
                    }
                }
            }
            if !parts
                .iter()
                .any(|p| matches!(p, ChainPart::Text { loss: true, .. }))
            {
                return Err(StageError::Input(format!(
                    "{} row {}: no turn has need_loss \"true\"; nothing to learn",
                    file.display(),
                    row + 1
                )));
            }
            out.push(Sample::Chain { parts });
        }
        Ok(out)
    }
}

/// A resumable shuffled order over `n` samples: pass `epoch` is the permutation seeded by
/// `seed + epoch`, and a [`DataCursor`] says where the run stands.
#[derive(Debug, Clone)]
pub struct Order {
    n: usize,
    seed: u64,
    epoch: Option<u64>,
    perm: Vec<usize>,
}

impl Order {
    pub fn new(n: usize, seed: u64) -> Self {
        Self {
            n,
            seed,
            epoch: None,
            perm: Vec::new(),
        }
    }

    /// The sample under the cursor.
    pub fn at(&mut self, cursor: &DataCursor) -> usize {
        if self.epoch != Some(cursor.epoch) {
            self.perm = shuffled_order(self.n, self.seed.wrapping_add(cursor.epoch));
            self.epoch = Some(cursor.epoch);
        }
        self.perm[(cursor.position as usize).min(self.n - 1)]
    }

    /// Moves the cursor past one sample.
    pub fn advance(&self, cursor: &mut DataCursor) {
        cursor.position += 1;
        if cursor.position as usize >= self.n {
            cursor.epoch += 1;
            cursor.position = 0;
        }
    }
}

/// The next pack of sample indices: consecutive samples of the order until the pack holds at
/// least `expected` tokens, never exceeding `max` (the sample that would overflow waits for
/// the next pack); samples over `max_per_sample` are skipped. Returns the indices and the
/// number of tokens.
pub fn next_pack(
    order: &mut Order,
    cursor: &mut DataCursor,
    tokens: &[usize],
    data: &DataConfig,
) -> Result<(Vec<usize>, usize)> {
    let max_per_sample = data.max_num_tokens_per_sample.min(data.max_num_tokens);
    let mut pack = Vec::new();
    let mut total = 0;
    let mut skipped_in_a_row = 0;
    loop {
        let idx = order.at(cursor);
        let t = tokens[idx];
        if t > max_per_sample {
            order.advance(cursor);
            skipped_in_a_row += 1;
            if skipped_in_a_row >= tokens.len() {
                return Err(StageError::Input(format!(
                    "every sample is longer than {max_per_sample} tokens \
                     (data.max_num_tokens_per_sample / data.max_num_tokens)"
                )));
            }
            continue;
        }
        skipped_in_a_row = 0;
        if !pack.is_empty() && total + t > data.max_num_tokens {
            break;
        }
        pack.push(idx);
        total += t;
        order.advance(cursor);
        if total >= data.expected_num_tokens {
            break;
        }
    }
    Ok((pack, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cooper_train::config::{Stage, TrainConfig};

    #[test]
    fn packs_respect_the_budget_and_resume_from_the_cursor() {
        let mut data = TrainConfig::for_stage(Stage::Sft).data;
        data.expected_num_tokens = 10;
        data.max_num_tokens = 12;
        data.max_num_tokens_per_sample = 12;
        let tokens = vec![4, 4, 4, 13, 6, 2];
        let mut order = Order::new(tokens.len(), 7);
        let mut cursor = DataCursor::default();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let (pack, total) = next_pack(&mut order, &mut cursor, &tokens, &data).unwrap();
            assert!(total <= 12 && !pack.is_empty());
            assert_eq!(total, pack.iter().map(|&i| tokens[i]).sum::<usize>());
            assert!(!pack.contains(&3), "the 13-token sample is skipped");
            seen.push(pack);
        }
        // A second order resumed from a saved cursor continues identically.
        let saved = cursor.clone();
        let mut a = order.clone();
        let mut b = Order::new(tokens.len(), 7);
        let mut ca = saved.clone();
        let mut cb = saved;
        for _ in 0..4 {
            assert_eq!(
                next_pack(&mut a, &mut ca, &tokens, &data).unwrap(),
                next_pack(&mut b, &mut cb, &tokens, &data).unwrap()
            );
        }
        assert!(cursor.epoch >= 1);
    }

    #[test]
    fn an_all_oversized_set_is_an_error() {
        let mut data = TrainConfig::for_stage(Stage::Sft).data;
        data.max_num_tokens_per_sample = 3;
        let mut order = Order::new(2, 0);
        let err = next_pack(&mut order, &mut DataCursor::default(), &[5, 9], &data).unwrap_err();
        assert!(err.to_string().contains("longer than 3"));
    }
}
