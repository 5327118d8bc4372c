//! The cached inference path: a `Context` (KV cache, kv length, RoPE position) and the updates the
//! official `Bagel` class performs on it (`forward_cache_update_text/vit/vae`, a decoding step, a flow
//! step). A context is an immutable value: every update returns a new one, and cloning shares the
//! cache tensors, so the reasoning loop and the CFG branches fork without copying the cache.
use candle_core::{Result, Tensor};

use crate::bagel::Bagel;
use crate::qwen2_mot::KvCache;

/// Vocabulary cut the official `generate_text` applies to the logits.
pub const GENERATION_VOCAB_LIMIT: usize = 151_665;

#[derive(Debug, Clone, Default)]
pub struct Context {
    pub cache: KvCache,
    /// Next RoPE position (the official `ropes`).
    pub rope: u32,
}

impl Context {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tokens in the cache (the official `kv_lens`).
    pub fn kv_len(&self) -> usize {
        self.cache.len()
    }
}

impl Bagel {
    fn append(
        &self,
        ctx: &Context,
        chunk: &crate::bagel::Chunk,
        rope_advance: u32,
    ) -> Result<Context> {
        let (_, kv) = self.forward_chunk(&ctx.cache, chunk)?;
        Ok(Context {
            cache: ctx.cache.extended(kv)?,
            rope: ctx.rope + rope_advance,
        })
    }

    /// `update_context_text`: feeds `[bos] ids [eos]` at consecutive positions.
    pub fn update_text(&self, ctx: &Context, ids: &[u32]) -> Result<Context> {
        let mut framed = Vec::with_capacity(ids.len() + 2);
        framed.push(self.special.bos);
        framed.extend_from_slice(ids);
        framed.push(self.special.eos);
        let chunk = self.text_chunk(&framed, ctx.rope)?;
        self.append(ctx, &chunk, framed.len() as u32)
    }

    /// ViT part of `update_context_image`: patches (N, 3p²) of a `height`×`width` picture.
    pub fn update_vit(
        &self,
        ctx: &Context,
        patches: &Tensor,
        height: usize,
        width: usize,
    ) -> Result<Context> {
        let chunk = self.vit_chunk(patches, height, width, ctx.rope)?;
        self.append(ctx, &chunk, 1)
    }

    /// VAE part of `update_context_image`: clean packed latents (N, p²z) at t = 0.
    pub fn update_vae(
        &self,
        ctx: &Context,
        latents: &Tensor,
        height: usize,
        width: usize,
    ) -> Result<Context> {
        let chunk = self.vae_chunk(latents, 0.0, height, width, ctx.rope)?;
        self.append(ctx, &chunk, 1)
    }

    /// One decoding step: feeds `token` at the context's position and returns its logits (cut to the
    /// official vocabulary limit) and the extended context.
    pub fn decode_step(&self, ctx: &Context, token: u32) -> Result<(Tensor, Context)> {
        let chunk = self.text_chunk(&[token], ctx.rope)?;
        let (hidden, kv) = self.forward_chunk(&ctx.cache, &chunk)?;
        let logits = self.language_model.lm_head(&hidden)?.squeeze(0)?;
        let v = logits.dim(0)?.min(GENERATION_VOCAB_LIMIT);
        let next = Context {
            cache: ctx.cache.extended(kv)?,
            rope: ctx.rope + 1,
        };
        Ok((logits.narrow(0, 0, v)?, next))
    }

    /// One flow evaluation: the latent x_t (N, p²z) of a `height`×`width` picture at time `t` as a
    /// query at the context's position (never cached) → velocity (N, p²z).
    pub fn flow_velocity(
        &self,
        ctx: &Context,
        x_t: &Tensor,
        t: f32,
        height: usize,
        width: usize,
    ) -> Result<Tensor> {
        let chunk = self.vae_chunk(x_t, t, height, width, ctx.rope)?;
        let (hidden, _) = self.forward_chunk(&ctx.cache, &chunk)?;
        self.velocity(&hidden)
    }
}
