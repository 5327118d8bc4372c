//! Qwen2 decoder with Mixture-of-Transformers experts (`language_model.*`), as BAGEL uses it.
//!
//! - Two experts per layer: understanding (plain names) and generation (`*_moe_gen`), each with its own
//!   q/k/v/o projections, per-head QK RMSNorm, layer norms and SwiGLU MLP; final `norm` / `norm_moe_gen`.
//! - One joint attention over all tokens: grouped-query (query head j reads KV head j / group), q/k/v
//!   biases, QK-norm before RoPE (rotate-half, `rope_theta`), scale 1/√d.
//! - Routing (which rows go to which expert) is decided once per call and passed to every layer.
//! - The KV cache is a value owned by the caller (`KvCache`): forward functions take `&self`, a cache to
//!   read, and return the new keys/values instead of mutating state, so contexts fork for free.
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{embedding, linear, linear_no_bias, Embedding, Linear, VarBuilder};

use crate::config::LlmConfig;
use crate::embeddings::Rotary;
use crate::norm::RmsNorm;
use crate::packing::{attention_allowed, SplitMode};
use crate::softmax::scaled_masked_softmax;

/// Which expert each row of a packed call uses.
#[derive(Debug, Clone)]
pub struct Routing {
    len: usize,
    und: Option<Tensor>,
    gen: Option<Tensor>,
    /// Permutation taking `cat([und rows, gen rows])` back to sequence order.
    restore: Option<Tensor>,
}

impl Routing {
    /// `is_gen[i]`: row i uses the generation expert.
    pub fn new(is_gen: &[bool], device: &Device) -> Result<Self> {
        let und: Vec<u32> = (0..is_gen.len() as u32)
            .filter(|&i| !is_gen[i as usize])
            .collect();
        let gen: Vec<u32> = (0..is_gen.len() as u32)
            .filter(|&i| is_gen[i as usize])
            .collect();
        let len = is_gen.len();
        if gen.is_empty() || und.is_empty() {
            return Ok(Self {
                len,
                und: None,
                gen: if gen.is_empty() {
                    None
                } else {
                    Some(Tensor::from_vec(gen, len, device)?)
                },
                restore: None,
            });
        }
        let mut restore = vec![0u32; len];
        for (slot, &row) in und.iter().chain(gen.iter()).enumerate() {
            restore[row as usize] = slot as u32;
        }
        let (nu, ng) = (und.len(), gen.len());
        Ok(Self {
            len,
            und: Some(Tensor::from_vec(und, nu, device)?),
            gen: Some(Tensor::from_vec(gen, ng, device)?),
            restore: Some(Tensor::from_vec(restore, len, device)?),
        })
    }

    pub fn all_und(len: usize) -> Self {
        Self {
            len,
            und: None,
            gen: None,
            restore: None,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Applies `f_und` to the understanding rows and `f_gen` to the generation rows of `x` (rows on
    /// dim 0) and returns the results in sequence order.
    pub fn apply(
        &self,
        x: &Tensor,
        f_und: impl Fn(&Tensor) -> Result<Tensor>,
        f_gen: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        match (&self.und, &self.gen, &self.restore) {
            (Some(und), Some(gen), Some(restore)) => {
                let a = f_und(&x.index_select(und, 0)?)?;
                let b = f_gen(&x.index_select(gen, 0)?)?;
                Tensor::cat(&[a, b], 0)?.index_select(restore, 0)
            }
            (None, Some(_), _) => f_gen(x),
            _ => f_und(x),
        }
    }
}

/// Keys (after QK-norm and RoPE) and values of one layer: (S, n_kv, head_dim) each.
#[derive(Debug, Clone)]
pub struct LayerKv {
    pub k: Tensor,
    pub v: Tensor,
}

/// Per-layer keys and values of everything a context has seen. Tensors are reference-counted and
/// never mutated, so cloning a cache is cheap and a fork shares its prefix.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached tokens (the context's `kv_len`).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn layer(&self, i: usize) -> Option<&LayerKv> {
        self.layers.get(i)
    }

    /// A new cache with `new` (one `LayerKv` per layer, T rows each) appended.
    pub fn extended(&self, new: Vec<LayerKv>) -> Result<Self> {
        let added = new.first().map(|l| l.k.dim(0)).transpose()?.unwrap_or(0);
        let layers = if self.layers.is_empty() {
            new
        } else {
            self.layers
                .iter()
                .zip(new)
                .map(|(old, new)| {
                    Ok(LayerKv {
                        k: Tensor::cat(&[&old.k, &new.k], 0)?,
                        v: Tensor::cat(&[&old.v, &new.v], 0)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok(Self {
            layers,
            len: self.len + added,
        })
    }
}

/// Visibility inside a call.
#[derive(Debug, Clone)]
pub enum AttnMask {
    /// New rows see the whole cache and the new rows up to themselves (a text chunk).
    Causal,
    /// New rows see the whole cache and every new row (an image chunk or a flow step).
    Full,
    /// Explicit additive mask of shape (T, S) with 0 where allowed and −∞ elsewhere.
    Additive(Tensor),
    /// A training pack of independent samples: rows `start..start + len` of each block attend only to
    /// each other, through the block's own additive (len, len) mask. Equal to the dense block-diagonal
    /// mask, but attention costs Σ len² instead of T², which is most of a small model's step.
    Blocks(Vec<MaskBlock>),
}

/// One sample of a [`AttnMask::Blocks`] pack.
#[derive(Debug, Clone)]
pub struct MaskBlock {
    pub start: usize,
    pub len: usize,
    /// Additive (len, len) f32 mask: 0 where allowed, −∞ elsewhere.
    pub mask: Tensor,
}

/// 0/1 allowed-matrix → additive f32 mask (0 where allowed, −∞ elsewhere).
fn additive_from_allowed(allowed: &Tensor) -> Result<Tensor> {
    let allowed = allowed.to_dtype(DType::U8)?;
    let zeros = Tensor::zeros(allowed.shape(), DType::F32, allowed.device())?;
    let neg = Tensor::full(f32::NEG_INFINITY, allowed.shape(), allowed.device())?;
    allowed.where_cond(&zeros, &neg)
}

/// The mask of one call, resolved against its cache.
enum Visibility<'a> {
    All,
    Dense(Tensor),
    Blocks(&'a [MaskBlock]),
}

impl AttnMask {
    /// Turns an allowed-matrix (T, S) of 0/1 into an additive f32 mask.
    pub fn from_allowed(allowed: &Tensor) -> Result<Self> {
        additive_from_allowed(allowed).map(Self::Additive)
    }

    /// Block-diagonal mask of independent samples, each a list of (split length, mode).
    pub fn blocks(samples: &[Vec<(usize, SplitMode)>], device: &Device) -> Result<Self> {
        let mut start = 0;
        let mut blocks = Vec::with_capacity(samples.len());
        for splits in samples.iter().filter(|s| !s.is_empty()) {
            let len = splits.iter().map(|(l, _)| l).sum();
            let allowed = attention_allowed(std::slice::from_ref(splits), device)?;
            let mask = additive_from_allowed(&allowed)?;
            blocks.push(MaskBlock { start, len, mask });
            start += len;
        }
        Ok(Self::Blocks(blocks))
    }

    /// The allowed pattern (T, T) as u8 0/1 of an explicit mask (`Additive` or `Blocks`).
    pub fn allowed(&self) -> Result<Option<Tensor>> {
        match self {
            AttnMask::Additive(m) => m.eq(0f32).map(Some),
            AttnMask::Blocks(blocks) => {
                let total: usize = blocks.iter().map(|b| b.len).sum();
                let Some(first) = blocks.first() else {
                    return Ok(None);
                };
                let dev = first.mask.device();
                let rows = blocks
                    .iter()
                    .map(|b| {
                        let parts = [
                            Tensor::zeros((b.len, b.start), DType::U8, dev)?,
                            b.mask.eq(0f32)?,
                            Tensor::zeros((b.len, total - b.start - b.len), DType::U8, dev)?,
                        ];
                        Tensor::cat(&parts, 1)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&rows, 0).map(Some)
            }
            AttnMask::Causal | AttnMask::Full => Ok(None),
        }
    }

    fn visibility(&self, t: usize, cached: usize, device: &Device) -> Result<Visibility<'_>> {
        match self {
            AttnMask::Full => Ok(Visibility::All),
            AttnMask::Additive(m) => Ok(Visibility::Dense(m.clone())),
            AttnMask::Blocks(blocks) => {
                let covered: usize = blocks.iter().map(|b| b.len).sum();
                if cached > 0 || covered != t {
                    candle_core::bail!(
                        "a block mask covers {covered} rows of a {t}-row call over {cached} cached \
                         tokens; it needs an empty cache and every row"
                    );
                }
                Ok(Visibility::Blocks(blocks))
            }
            AttnMask::Causal => {
                if t == 1 {
                    return Ok(Visibility::All);
                }
                let s = cached + t;
                let mask: Vec<f32> = (0..t)
                    .flat_map(|i| {
                        (0..s).map(move |j| {
                            if j <= cached + i {
                                0.0
                            } else {
                                f32::NEG_INFINITY
                            }
                        })
                    })
                    .collect();
                Ok(Visibility::Dense(Tensor::from_vec(mask, (t, s), device)?))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(cfg: &LlmConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: linear_no_bias(h, i, vb.pp("gate_proj"))?,
            up_proj: linear_no_bias(h, i, vb.pp("up_proj"))?,
            down_proj: linear_no_bias(i, h, vb.pp("down_proj"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = self.gate_proj.forward(xs)?.silu()?;
        self.down_proj.forward(&(gate * self.up_proj.forward(xs)?)?)
    }
}

/// One expert's weights of a decoder layer.
#[derive(Debug, Clone)]
struct Expert {
    input_layernorm: RmsNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    o_proj: Linear,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Expert {
    /// `suffix` is "" for the understanding expert and "_moe_gen" for the generation expert.
    fn new(cfg: &LlmConfig, suffix: &str, vb: &VarBuilder) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let (nq, nkv) = (cfg.num_attention_heads * d, cfg.num_key_value_heads * d);
        let eps = cfg.rms_norm_eps;
        let attn = vb.pp("self_attn");
        let name = |base: &str| format!("{base}{suffix}");
        Ok(Self {
            input_layernorm: RmsNorm::new(h, eps, vb.pp(name("input_layernorm")))?,
            q_proj: linear(h, nq, attn.pp(name("q_proj")))?,
            k_proj: linear(h, nkv, attn.pp(name("k_proj")))?,
            v_proj: linear(h, nkv, attn.pp(name("v_proj")))?,
            q_norm: RmsNorm::new(d, eps, attn.pp(name("q_norm")))?,
            k_norm: RmsNorm::new(d, eps, attn.pp(name("k_norm")))?,
            o_proj: linear_no_bias(nq, h, attn.pp(name("o_proj")))?,
            post_attention_layernorm: RmsNorm::new(
                h,
                eps,
                vb.pp(name("post_attention_layernorm")),
            )?,
            mlp: Mlp::new(cfg, vb.pp(name("mlp")))?,
        })
    }

    /// (T, H) → (T, nq + 2·nkv): normalised q and k (per head), raw v, concatenated.
    fn qkv(&self, xs: &Tensor, heads: usize, kv_heads: usize, d: usize) -> Result<Tensor> {
        let t = xs.dim(0)?;
        let a = self.input_layernorm.forward(xs)?;
        let q = self.q_proj.forward(&a)?.reshape((t, heads, d))?;
        let k = self.k_proj.forward(&a)?.reshape((t, kv_heads, d))?;
        let q = self.q_norm.forward(&q)?.reshape((t, heads * d))?;
        let k = self.k_norm.forward(&k)?.reshape((t, kv_heads * d))?;
        let v = self.v_proj.forward(&a)?;
        Tensor::cat(&[q, k, v], 1)
    }

    /// `both`: (T, nq + H) = [attention output, residual] → the layer output (T, H).
    fn finish(&self, both: &Tensor, nq: usize, h: usize) -> Result<Tensor> {
        let attn = both.narrow(1, 0, nq)?;
        let residual = both.narrow(1, nq, h)?;
        let x = (residual + self.o_proj.forward(&attn)?)?;
        &x + self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&x)?)?
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    und: Expert,
    gen: Expert,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    hidden: usize,
}

impl DecoderLayer {
    fn new(cfg: &LlmConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            und: Expert::new(cfg, "", &vb)?,
            gen: Expert::new(cfg, "_moe_gen", &vb)?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg.head_dim(),
            hidden: cfg.hidden_size,
        })
    }

    /// `xs`: (T, H). Returns the layer output (T, H) and this call's keys/values (T, n_kv, d).
    fn forward(
        &self,
        xs: &Tensor,
        routing: &Routing,
        rope: &(Tensor, Tensor),
        past: Option<&LayerKv>,
        visibility: &Visibility,
    ) -> Result<(Tensor, LayerKv)> {
        let (t, _) = xs.dims2()?;
        let (nh, nkv, d) = (self.heads, self.kv_heads, self.head_dim);
        let qkv = routing.apply(
            xs,
            |x| self.und.qkv(x, nh, nkv, d),
            |x| self.gen.qkv(x, nh, nkv, d),
        )?;
        let q = qkv.narrow(1, 0, nh * d)?.reshape((t, nh, d))?;
        let k = qkv.narrow(1, nh * d, nkv * d)?.reshape((t, nkv, d))?;
        let v = qkv
            .narrow(1, (nh + nkv) * d, nkv * d)?
            .reshape((t, nkv, d))?;
        let q = Rotary::apply(&q, &rope.0, &rope.1)?;
        let k = Rotary::apply(&k, &rope.0, &rope.1)?;
        let (k_all, v_all) = match past {
            Some(p) => (Tensor::cat(&[&p.k, &k], 0)?, Tensor::cat(&[&p.v, &v], 0)?),
            None => (k.clone(), v.clone()),
        };
        let attn = match visibility {
            Visibility::All => grouped_attention(&q, &k_all, &v_all, None)?,
            Visibility::Dense(m) => grouped_attention(&q, &k_all, &v_all, Some(m))?,
            Visibility::Blocks(blocks) => {
                let parts = blocks
                    .iter()
                    .map(|b| {
                        let rows = |x: &Tensor| x.narrow(0, b.start, b.len);
                        grouped_attention(&rows(&q)?, &rows(&k_all)?, &rows(&v_all)?, Some(&b.mask))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Tensor::cat(&parts, 0)?
            }
        };
        let both = Tensor::cat(&[&attn, xs], 1)?;
        let out = routing.apply(
            &both,
            |x| self.und.finish(x, nh * d, self.hidden),
            |x| self.gen.finish(x, nh * d, self.hidden),
        )?;
        Ok((out, LayerKv { k, v }))
    }
}

/// Softmax attention with grouped KV heads, computed in f32.
/// q: (T, n_h, d); k, v: (S, n_kv, d); mask: additive (T, S) → (T, n_h·d).
pub fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let (t, nh, d) = q.dims3()?;
    let (_, nkv, _) = k.dims3()?;
    let group = nh / nkv;
    let dtype = q.dtype();
    let f32 = |x: &Tensor| x.to_dtype(DType::F32);
    // Heads j = kv·group + r share KV head kv: fold the group into the row axis.
    let q = f32(q)?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((nkv, group * t, d))?;
    let k = f32(k)?.transpose(0, 1)?.contiguous()?;
    let v = f32(v)?.transpose(0, 1)?.contiguous()?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = q.matmul(&k.t()?)?; // (n_kv, group·T, S)
    let probs = match mask {
        Some(m) => scaled_masked_softmax(&scores, Some(m), scale)?,
        None if scores.track_op() => scaled_masked_softmax(&scores, None, scale)?,
        None => candle_nn::ops::softmax_last_dim(&(scores * scale)?)?,
    };
    probs
        .matmul(&v)? // (n_kv, group·T, d)
        .reshape((nh, t, d))?
        .transpose(0, 1)?
        .reshape((t, nh * d))?
        .to_dtype(dtype)
}

/// The language model: embeddings, MoT layers, final norms and the LM head.
#[derive(Debug, Clone)]
pub struct Qwen2MoT {
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    norm_moe_gen: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
    cfg: LlmConfig,
}

impl Qwen2MoT {
    /// `vb` points at `language_model`.
    pub fn new(cfg: &LlmConfig, vb: VarBuilder) -> Result<Self> {
        let m = vb.pp("model");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, m.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let embed_tokens = embedding(cfg.vocab_size, cfg.hidden_size, m.pp("embed_tokens"))?;
        let lm_head = if cfg.tie_word_embeddings {
            Linear::new(embed_tokens.embeddings().clone(), None)
        } else {
            linear_no_bias(cfg.hidden_size, cfg.vocab_size, vb.pp("lm_head"))?
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm"))?,
            norm_moe_gen: RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, m.pp("norm_moe_gen"))?,
            lm_head,
            rotary: Rotary::new(cfg.head_dim(), cfg.rope_theta, vb.device())?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.cfg
    }

    /// (N,) u32 ids → (N, H).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed_tokens.forward(ids)
    }

    /// (N, H) final hidden states → (N, V) logits.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Runs `xs` (T, H) at `positions` (T,) u32 over `cache`, returning the final hidden states (T, H)
    /// (after `norm` for understanding rows, `norm_moe_gen` for generation rows) and the new keys and
    /// values of every layer.
    pub fn forward(
        &self,
        xs: &Tensor,
        positions: &Tensor,
        routing: &Routing,
        cache: &KvCache,
        mask: &AttnMask,
    ) -> Result<(Tensor, Vec<LayerKv>)> {
        let t = xs.dim(0)?;
        let rope = self.rotary.tables(positions, xs.dtype())?;
        let visibility = mask.visibility(t, cache.len(), xs.device())?;
        let mut h = xs.clone();
        let mut new_kv = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let (out, kv) = layer.forward(&h, routing, &rope, cache.layer(i), &visibility)?;
            h = out;
            new_kv.push(kv);
        }
        let h = routing.apply(
            &h,
            |x| self.norm.forward(x),
            |x| self.norm_moe_gen.forward(x),
        )?;
        Ok((h, new_kv))
    }
}
