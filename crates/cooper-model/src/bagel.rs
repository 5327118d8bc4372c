//! BAGEL's top level: the language model with its two experts, the vision tower and connector, the
//! latent projections (`vae2llm`, `llm2vae`), the timestep embedder and the two fixed position
//! tables, plus the two computation paths of the official code:
//! - `forward_train`: one packed sequence of text, ViT and VAE spans with their attention modes,
//!   giving CE logits and velocity predictions;
//! - `forward_chunk`: one chunk (text, a ViT image, a VAE image or a flow query) appended to a
//!   caller-owned `KvCache`.
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

use crate::config::{ModelConfig, SpecialTokens};
use crate::embeddings::{flattened_position_ids, PositionEmbedding, TimestepEmbedder};
use crate::qwen2_mot::{AttnMask, KvCache, LayerKv, Qwen2MoT, Routing};
use crate::vit::{Connector, SiglipVisionModel};

#[derive(Debug, Clone)]
pub struct Bagel {
    pub language_model: Qwen2MoT,
    pub vit_model: SiglipVisionModel,
    pub connector: Connector,
    pub vit_pos_embed: PositionEmbedding,
    pub latent_pos_embed: PositionEmbedding,
    pub vae2llm: Linear,
    pub llm2vae: Linear,
    pub time_embedder: TimestepEmbedder,
    pub config: ModelConfig,
    pub special: SpecialTokens,
}

impl Bagel {
    /// Builds the model from a `VarBuilder` rooted at the checkpoint's top level.
    pub fn new(config: &ModelConfig, special: SpecialTokens, vb: VarBuilder) -> Result<Self> {
        let h = config.llm.hidden_size;
        let latent_dim = config.latent_token_dim();
        let (dtype, device) = (vb.dtype(), vb.device().clone());
        Ok(Self {
            language_model: Qwen2MoT::new(&config.llm, vb.pp("language_model"))?,
            vit_model: SiglipVisionModel::new(
                &config.vit,
                config
                    .vit_layers()
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
                vb.pp("vit_model"),
            )?,
            connector: Connector::new(config.vit.hidden_size, h, vb.pp("connector"))?,
            vit_pos_embed: PositionEmbedding::new(
                config.bagel.vit_max_num_patch_per_side,
                h,
                dtype,
                &device,
            )?,
            latent_pos_embed: PositionEmbedding::new(
                config.bagel.max_latent_size,
                h,
                dtype,
                &device,
            )?,
            vae2llm: linear(latent_dim, h, vb.pp("vae2llm"))?,
            llm2vae: linear(h, latent_dim, vb.pp("llm2vae"))?,
            time_embedder: TimestepEmbedder::new(h, vb.pp("time_embedder"))?,
            config: config.clone(),
            special,
        })
    }

    pub fn device(&self) -> &Device {
        self.vit_pos_embed.table().device()
    }

    pub fn dtype(&self) -> DType {
        self.vit_pos_embed.table().dtype()
    }

    /// ViT patches → LLM inputs: connector(ViT(patches)) + vit_pos_embed. (N, 3p²) → (N, H).
    pub fn embed_vit(
        &self,
        patches: &Tensor,
        position_ids: &Tensor,
        seqlens: &[usize],
    ) -> Result<Tensor> {
        let feats = self.vit_model.forward(patches, position_ids, seqlens)?;
        self.connector.forward(&feats)? + self.vit_pos_embed.forward(position_ids)?
    }

    /// Latent tokens at flow time `t` → LLM inputs: vae2llm(x_t) + time_embedder(t) + latent_pos_embed.
    /// x_t: (N, p²z); t: (N,) f32; position_ids: (N,) u32 → (N, H).
    pub fn embed_latents(&self, x_t: &Tensor, t: &Tensor, position_ids: &Tensor) -> Result<Tensor> {
        let x = self.vae2llm.forward(&x_t.to_dtype(self.dtype())?)?;
        let time = self.time_embedder.forward(t, self.dtype())?;
        (x + time)? + self.latent_pos_embed.forward(position_ids)?
    }

    /// Flattened latent-table ids of an image of `height`×`width` pixels.
    pub fn latent_position_ids(&self, height: usize, width: usize) -> Result<Tensor> {
        let ld = self.config.latent_downsample();
        let ids =
            flattened_position_ids(height / ld, width / ld, self.config.bagel.max_latent_size);
        let n = ids.len();
        Tensor::from_vec(ids, n, self.device())
    }

    /// Flattened ViT-table ids of an image of `height`×`width` pixels.
    pub fn vit_position_ids(&self, height: usize, width: usize) -> Result<Tensor> {
        let p = self.config.vit.patch_size;
        let ids = flattened_position_ids(
            height / p,
            width / p,
            self.config.bagel.vit_max_num_patch_per_side,
        );
        let n = ids.len();
        Tensor::from_vec(ids, n, self.device())
    }

    /// Training flow time from the packed logits: t = σ(n), then the training shift s·t/(1+(s−1)t).
    /// Clean images carry −∞ and get t = 0.
    pub fn shifted_timesteps(&self, logits: &Tensor) -> Result<Tensor> {
        let t = candle_nn::ops::sigmoid(&logits.to_dtype(DType::F32)?)?;
        let s = self.config.bagel.timestep_shift;
        if (s - 1.0).abs() < f64::EPSILON {
            return Ok(t);
        }
        (&t * s)?.broadcast_div(&((&t * (s - 1.0))? + 1.0)?)
    }

    /// The packed training forward of `Bagel.forward`.
    pub fn forward_train(&self, batch: &PackedBatch) -> Result<TrainOutputs> {
        let t_len = batch.sequence_length;
        let h = self.config.llm.hidden_size;
        let dev = self.device();
        let mut sequence = Tensor::zeros((t_len, h), self.dtype(), dev)?;
        let text = self.language_model.embed(&batch.packed_text_ids)?;
        sequence = sequence.index_add(&batch.packed_text_indexes, &text, 0)?;
        if let Some(vit) = &batch.vit {
            let emb = self.embed_vit(
                &vit.packed_vit_tokens,
                &vit.packed_vit_position_ids,
                &vit.vit_token_seqlens,
            )?;
            sequence = sequence.index_add(&vit.packed_vit_token_indexes, &emb, 0)?;
        }
        let mut is_gen = vec![false; t_len];
        let mut timesteps = None;
        if let Some(vae) = &batch.vae {
            let t = self.shifted_timesteps(&vae.packed_timesteps)?;
            let t_col = t.unsqueeze(1)?;
            // x_t = (1 − t)·x₀ + t·ε; clean images (t = 0) stay x₀.
            let x0 = vae.packed_latent_clean.to_dtype(DType::F32)?;
            let x_t = (x0.broadcast_mul(&(1.0 - &t_col)?)?
                + vae.noise.to_dtype(DType::F32)?.broadcast_mul(&t_col)?)?;
            let emb = self.embed_latents(&x_t, &t, &vae.packed_latent_position_ids)?;
            sequence = sequence.index_add(&vae.packed_vae_token_indexes, &emb, 0)?;
            for i in vae.packed_vae_token_indexes.to_vec1::<u32>()? {
                is_gen[i as usize] = true;
            }
            timesteps = Some(t);
        }
        let routing = Routing::new(&is_gen, dev)?;
        let (hidden, _) = self.language_model.forward(
            &sequence,
            &batch.packed_position_ids,
            &routing,
            &KvCache::new(),
            &batch.attention,
        )?;
        let ce_logits = match &batch.ce_loss_indexes {
            Some(idx) => Some(self.language_model.lm_head(&hidden.index_select(idx, 0)?)?),
            None => None,
        };
        let velocity_pred = match &batch.mse_loss_indexes {
            Some(idx) => Some(self.llm2vae.forward(&hidden.index_select(idx, 0)?)?),
            None => None,
        };
        Ok(TrainOutputs {
            sequence,
            last_hidden_state: hidden,
            ce_logits,
            velocity_pred,
            timesteps,
        })
    }

    /// Runs one chunk over `cache`; returns final hidden states (T, H) and the chunk's keys/values.
    pub fn forward_chunk(&self, cache: &KvCache, chunk: &Chunk) -> Result<(Tensor, Vec<LayerKv>)> {
        self.language_model.forward(
            &chunk.embeddings,
            &chunk.positions,
            &chunk.routing,
            cache,
            &chunk.mask,
        )
    }

    fn positions(&self, n: usize, start: u32, same: bool) -> Result<Tensor> {
        let v: Vec<u32> = if same {
            vec![start; n]
        } else {
            (start..start + n as u32).collect()
        };
        Tensor::from_vec(v, n, self.device())
    }

    /// A text chunk (ids already framed as the caller wants, e.g. bos … eos) at consecutive positions
    /// from `rope`; understanding expert, causal.
    pub fn text_chunk(&self, ids: &[u32], rope: u32) -> Result<Chunk> {
        let n = ids.len();
        let ids_t = Tensor::from_vec(ids.to_vec(), n, self.device())?;
        Ok(Chunk {
            embeddings: self.language_model.embed(&ids_t)?,
            positions: self.positions(n, rope, false)?,
            routing: Routing::all_und(n),
            mask: AttnMask::Causal,
        })
    }

    /// `<|vision_start|>`, `inner` rows, `<|vision_end|>`, all at position `rope`, full attention.
    fn image_chunk(&self, inner: &Tensor, rope: u32, gen_expert: bool) -> Result<Chunk> {
        let n = inner.dim(0)?;
        let markers = Tensor::new(
            &[self.special.start_of_image, self.special.end_of_image],
            self.device(),
        )?;
        let m = self.language_model.embed(&markers)?;
        let embeddings = Tensor::cat(&[&m.narrow(0, 0, 1)?, inner, &m.narrow(0, 1, 1)?], 0)?;
        let routing = if gen_expert {
            let mut is_gen = vec![true; n + 2];
            is_gen[0] = false;
            is_gen[n + 1] = false;
            Routing::new(&is_gen, self.device())?
        } else {
            Routing::all_und(n + 2)
        };
        Ok(Chunk {
            embeddings,
            positions: self.positions(n + 2, rope, true)?,
            routing,
            mask: AttnMask::Full,
        })
    }

    /// A ViT image chunk: patches (N, 3p²) of one image of `height`×`width` pixels.
    pub fn vit_chunk(
        &self,
        patches: &Tensor,
        height: usize,
        width: usize,
        rope: u32,
    ) -> Result<Chunk> {
        let ids = self.vit_position_ids(height, width)?;
        let n = ids.dim(0)?;
        let emb = self.embed_vit(patches, &ids, &[n])?;
        self.image_chunk(&emb, rope, false)
    }

    /// A VAE latent chunk: packed latents x_t (N, p²z) at flow time `t` of an image of
    /// `height`×`width` pixels (t = 0 for a clean context image, the current t for a flow query).
    pub fn vae_chunk(
        &self,
        x_t: &Tensor,
        t: f32,
        height: usize,
        width: usize,
        rope: u32,
    ) -> Result<Chunk> {
        let ids = self.latent_position_ids(height, width)?;
        let n = ids.dim(0)?;
        let ts = Tensor::full(t, n, self.device())?;
        let emb = self.embed_latents(x_t, &ts, &ids)?;
        self.image_chunk(&emb, rope, true)
    }

    /// Velocity of the latent rows of a flow-query chunk's output: llm2vae(hidden[1..=N]).
    pub fn velocity(&self, hidden: &Tensor) -> Result<Tensor> {
        let n = hidden.dim(0)? - 2;
        self.llm2vae.forward(&hidden.narrow(0, 1, n)?)
    }
}

/// A chunk of new tokens for `forward_chunk`.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// (T, H)
    pub embeddings: Tensor,
    /// (T,) u32 RoPE positions
    pub positions: Tensor,
    pub routing: Routing,
    pub mask: AttnMask,
}

/// One packed training sequence, field names as `PackedDataset.to_tensor` produces them.
/// Index tensors are u32; float tensors f32.
#[derive(Debug, Clone)]
pub struct PackedBatch {
    pub sequence_length: usize,
    /// (N_text,) ids of every text-like token (text, bos/eos, image markers).
    pub packed_text_ids: Tensor,
    pub packed_text_indexes: Tensor,
    /// (T,) RoPE position of every slot.
    pub packed_position_ids: Tensor,
    /// Attention over the whole pack (block-diagonal across samples).
    pub attention: AttnMask,
    pub vit: Option<PackedVit>,
    pub vae: Option<PackedVae>,
    pub ce_loss_indexes: Option<Tensor>,
    pub packed_label_ids: Option<Tensor>,
    pub mse_loss_indexes: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub struct PackedVit {
    /// (N, 3p²)
    pub packed_vit_tokens: Tensor,
    pub packed_vit_token_indexes: Tensor,
    pub packed_vit_position_ids: Tensor,
    pub vit_token_seqlens: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct PackedVae {
    /// (N, p²z) clean latents x₀ of every VAE token (already encoded and packed).
    pub packed_latent_clean: Tensor,
    /// (N, p²z) ε for every VAE token (rows of clean images are ignored).
    pub noise: Tensor,
    /// (N,) timestep logits: −∞ for clean images, the N(0,1) draw for noised ones.
    pub packed_timesteps: Tensor,
    pub packed_latent_position_ids: Tensor,
    pub packed_vae_token_indexes: Tensor,
}

#[derive(Debug, Clone)]
pub struct TrainOutputs {
    /// (T, H) the packed input sequence handed to the LLM.
    pub sequence: Tensor,
    pub last_hidden_state: Tensor,
    /// (N_ce, V)
    pub ce_logits: Option<Tensor>,
    /// (N_mse, p²z)
    pub velocity_pred: Option<Tensor>,
    /// (N_vae,) shifted flow times.
    pub timesteps: Option<Tensor>,
}
