//! Builds packed training sequences the way the official `PackedDataset.pack_sequence` lays them out,
//! so the training stages (stage-1 generation, SFT, GRPO re-packing) feed `Bagel::forward_train`.
//!
//! Layout per sample: a text split is `[bos] ids [eos]` at consecutive positions (CE on `ids, eos`
//! from the `bos … last id` slots when it has loss); an image split is `<|vision_start|>`, its tokens,
//! `<|vision_end|>`, all at one position; a clean image advances the position by one, a noised
//! target (flow loss) does not. Each sample starts at position 0; samples are block-diagonal.
use candle_core::{DType, Device, Result, Tensor};

use crate::bagel::{PackedBatch, PackedVae, PackedVit};
use crate::config::{ModelConfig, SpecialTokens};
use crate::embeddings::flattened_position_ids;
use crate::packing::SplitMode;
use crate::qwen2_mot::AttnMask;

/// Accumulates one or more samples into a `PackedBatch`.
pub struct SequenceBuilder {
    special: SpecialTokens,
    latent_downsample: usize,
    max_latent_size: usize,
    vit_patch: usize,
    vit_max_side: usize,
    samples: Vec<Vec<(usize, SplitMode)>>,
    len: usize,
    rope: u32,
    text_ids: Vec<u32>,
    text_idx: Vec<u32>,
    positions: Vec<u32>,
    ce_idx: Vec<u32>,
    labels: Vec<u32>,
    vit_tokens: Vec<Tensor>,
    vit_idx: Vec<u32>,
    vit_pos: Vec<u32>,
    vit_seqlens: Vec<usize>,
    vae_latents: Vec<Tensor>,
    vae_idx: Vec<u32>,
    vae_pos: Vec<u32>,
    timestep_logits: Vec<f32>,
    mse_idx: Vec<u32>,
}

impl SequenceBuilder {
    pub fn new(config: &ModelConfig, special: SpecialTokens) -> Self {
        Self {
            special,
            latent_downsample: config.latent_downsample(),
            max_latent_size: config.bagel.max_latent_size,
            vit_patch: config.vit.patch_size,
            vit_max_side: config.bagel.vit_max_num_patch_per_side,
            samples: vec![Vec::new()],
            len: 0,
            rope: 0,
            text_ids: Vec::new(),
            text_idx: Vec::new(),
            positions: Vec::new(),
            ce_idx: Vec::new(),
            labels: Vec::new(),
            vit_tokens: Vec::new(),
            vit_idx: Vec::new(),
            vit_pos: Vec::new(),
            vit_seqlens: Vec::new(),
            vae_latents: Vec::new(),
            vae_idx: Vec::new(),
            vae_pos: Vec::new(),
            timestep_logits: Vec::new(),
            mse_idx: Vec::new(),
        }
    }

    /// Tokens so far (the pack's `sequence_length`).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Starts a new sample (positions restart at 0; no attention across samples).
    pub fn next_sample(&mut self) {
        if self.samples.last().is_some_and(|s| !s.is_empty()) {
            self.samples.push(Vec::new());
        }
        self.rope = 0;
    }

    fn split(&mut self, len: usize, mode: SplitMode) {
        if let Some(s) = self.samples.last_mut() {
            s.push((len, mode));
        }
    }

    fn push_text_token(&mut self, id: u32, position: u32) {
        self.text_ids.push(id);
        self.text_idx.push(self.len as u32);
        self.positions.push(position);
        self.len += 1;
    }

    /// A text turn `[bos] ids [eos]`; with `loss`, CE predicts `ids, eos`.
    pub fn text(&mut self, ids: &[u32], loss: bool) {
        self.text_with_given(ids, loss.then_some(0..0));
    }

    /// A text turn `[bos] ids [eos]` learnt but for `ids[given]`, which is context: CE predicts
    /// every other id and `eos`; `None` learns nothing. `Some(0..0)` is [`Self::text`] with loss,
    /// `Some(0..n)` learns from `ids[n]` on.
    pub fn text_with_given(&mut self, ids: &[u32], given: Option<std::ops::Range<usize>>) {
        let start = self.len as u32;
        self.push_text_token(self.special.bos, self.rope);
        for (i, &id) in ids.iter().enumerate() {
            self.push_text_token(id, self.rope + 1 + i as u32);
        }
        self.push_text_token(self.special.eos, self.rope + 1 + ids.len() as u32);
        if let Some(given) = given {
            // Position start + i predicts ids[i] (start holds the bos), start + len the eos.
            let (from, to) = (given.start.min(ids.len()), given.end.min(ids.len()));
            let to = to.max(from);
            self.ce_idx.extend(start..start + from as u32);
            self.labels.extend(&ids[..from]);
            self.ce_idx
                .extend(start + to as u32..start + ids.len() as u32 + 1);
            self.labels.extend(&ids[to..]);
            self.labels.push(self.special.eos);
        }
        self.rope += ids.len() as u32 + 2;
        self.split(ids.len() + 2, SplitMode::Causal);
    }

    /// Places the markers around `n` image tokens at one position; returns the tokens' slots.
    fn image_slots(&mut self, n: usize) -> std::ops::Range<u32> {
        let pos = self.rope;
        self.push_text_token(self.special.start_of_image, pos);
        let first = self.len as u32;
        self.positions.extend(std::iter::repeat_n(pos, n));
        self.len += n;
        self.push_text_token(self.special.end_of_image, pos);
        first..first + n as u32
    }

    /// A clean ViT image: patches (N, 3p²) of a `height`×`width` picture.
    pub fn vit_image(&mut self, patches: Tensor, height: usize, width: usize) -> Result<()> {
        let (gh, gw) = (height / self.vit_patch, width / self.vit_patch);
        let n = patches.dim(0)?;
        if n != gh * gw {
            candle_core::bail!("ViT image: {n} patches for a {gh}×{gw} grid");
        }
        let slots = self.image_slots(n);
        self.vit_idx.extend(slots);
        self.vit_pos
            .extend(flattened_position_ids(gh, gw, self.vit_max_side));
        self.vit_tokens.push(patches);
        self.vit_seqlens.push(n);
        self.rope += 1;
        self.split(n + 2, SplitMode::Full);
        Ok(())
    }

    /// A VAE image: packed clean latents (N, p²z) of a `height`×`width` picture. With
    /// `noised = Some(logit)` it is a flow target at time σ(logit) (then shifted by the model),
    /// gets the flow loss, and does not advance the position.
    pub fn vae_image(
        &mut self,
        latents: Tensor,
        height: usize,
        width: usize,
        noised: Option<f32>,
    ) -> Result<()> {
        let (gh, gw) = (
            height / self.latent_downsample,
            width / self.latent_downsample,
        );
        let n = latents.dim(0)?;
        if n != gh * gw {
            candle_core::bail!("VAE image: {n} latent tokens for a {gh}×{gw} grid");
        }
        let slots = self.image_slots(n);
        self.vae_idx.extend(slots.clone());
        self.vae_pos
            .extend(flattened_position_ids(gh, gw, self.max_latent_size));
        self.vae_latents.push(latents);
        match noised {
            Some(logit) => {
                self.timestep_logits.extend(std::iter::repeat_n(logit, n));
                self.mse_idx.extend(slots);
                self.split(n + 2, SplitMode::Noise);
            }
            None => {
                self.timestep_logits
                    .extend(std::iter::repeat_n(f32::NEG_INFINITY, n));
                self.rope += 1;
                self.split(n + 2, SplitMode::Full);
            }
        }
        Ok(())
    }

    /// Split lengths and modes per sample (the official `split_lens` / `attn_modes`).
    pub fn splits(&self) -> &[Vec<(usize, SplitMode)>] {
        &self.samples
    }

    /// The batch, with `noise` (one ε row per VAE token, same width as the latents; rows of clean
    /// images are ignored). `noise` may be `None` when the pack has no VAE image.
    pub fn finish(self, noise: Option<Tensor>, device: &Device) -> Result<PackedBatch> {
        let u32s = |v: &[u32]| Tensor::from_vec(v.to_vec(), v.len(), device);
        let samples: Vec<_> = self.samples.into_iter().filter(|s| !s.is_empty()).collect();
        let vit = if self.vit_tokens.is_empty() {
            None
        } else {
            Some(PackedVit {
                packed_vit_tokens: Tensor::cat(&self.vit_tokens, 0)?,
                packed_vit_token_indexes: u32s(&self.vit_idx)?,
                packed_vit_position_ids: u32s(&self.vit_pos)?,
                vit_token_seqlens: self.vit_seqlens,
            })
        };
        let vae = if self.vae_latents.is_empty() {
            None
        } else {
            let clean = Tensor::cat(&self.vae_latents, 0)?.to_dtype(DType::F32)?;
            let noise = match noise {
                Some(n) if n.dims() == clean.dims() => n,
                Some(n) => candle_core::bail!(
                    "noise {:?} does not match the VAE tokens {:?}",
                    n.dims(),
                    clean.dims()
                ),
                None => clean.zeros_like()?,
            };
            let n = self.timestep_logits.len();
            Some(PackedVae {
                packed_latent_clean: clean,
                noise,
                packed_timesteps: Tensor::from_vec(self.timestep_logits, n, device)?,
                packed_latent_position_ids: u32s(&self.vae_pos)?,
                packed_vae_token_indexes: u32s(&self.vae_idx)?,
            })
        };
        let opt = |v: &[u32]| -> Result<Option<Tensor>> {
            if v.is_empty() {
                Ok(None)
            } else {
                u32s(v).map(Some)
            }
        };
        Ok(PackedBatch {
            sequence_length: self.len,
            packed_text_ids: u32s(&self.text_ids)?,
            packed_text_indexes: u32s(&self.text_idx)?,
            packed_position_ids: u32s(&self.positions)?,
            attention: AttnMask::blocks(&samples, device)?,
            vit,
            vae,
            ce_loss_indexes: opt(&self.ce_idx)?,
            packed_label_ids: opt(&self.labels)?,
            mse_loss_indexes: opt(&self.mse_idx)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::Preset;

    #[test]
    fn a_turn_with_given_ids_predicts_only_the_rest() -> Result<()> {
        let special = SpecialTokens {
            bos: 1,
            eos: 2,
            start_of_image: 3,
            end_of_image: 4,
        };
        let config = Preset::Tiny.config();
        let labels_and_positions = |given| -> Result<(Vec<u32>, Vec<u32>)> {
            let mut b = SequenceBuilder::new(&config, special);
            b.text(&[20, 21], false);
            b.text_with_given(&[30, 31, 32, 33], given);
            let batch = b.finish(None, &Device::Cpu)?;
            let get = |t: Option<Tensor>| -> Result<Vec<u32>> {
                t.map_or(Ok(Vec::new()), |t| t.to_vec1::<u32>())
            };
            Ok((get(batch.packed_label_ids)?, get(batch.ce_loss_indexes)?))
        };
        // The second turn fills positions 4 ([bos]) to 9 ([eos]); position p predicts token p + 1.
        assert_eq!(
            labels_and_positions(Some(0..0))?,
            (vec![30, 31, 32, 33, 2], vec![4, 5, 6, 7, 8])
        );
        assert_eq!(
            labels_and_positions(Some(0..2))?,
            (vec![32, 33, 2], vec![6, 7, 8])
        );
        // Given in the middle: 31 and 32 are context, 30 and 33 learnt.
        assert_eq!(
            labels_and_positions(Some(1..3))?,
            (vec![30, 33, 2], vec![4, 7, 8])
        );
        assert_eq!(labels_and_positions(None)?, (vec![], vec![]));
        Ok(())
    }
}
