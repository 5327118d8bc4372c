//! SigLIP NaViT vision encoder (`vit_model.vision_model.*`): packed images of any size.
//!
//! Patches arrive already flattened to rows of 3·p² values in (py, px, channel) order, so the patch
//! embedding is a Linear (the official loader converts the conv; checkpoints store the Linear). A
//! learned position table is indexed by row·max_side + col; pre-LN encoder layers attend only within
//! their own image; the last layer's output goes through `post_layernorm`. The official loader drops
//! the last `-vit_select_layer - 1` layers, so the checkpoint holds only the layers that run.
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{embedding, linear, Embedding, Linear, VarBuilder};

use crate::config::VitConfig;
use crate::norm::LayerNorm;

#[derive(Debug, Clone)]
struct VitAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl VitAttention {
    fn new(cfg: &VitConfig, vb: VarBuilder) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            q_proj: linear(h, h, vb.pp("q_proj"))?,
            k_proj: linear(h, h, vb.pp("k_proj"))?,
            v_proj: linear(h, h, vb.pp("v_proj"))?,
            out_proj: linear(h, h, vb.pp("out_proj"))?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// `xs`: (N, H) tokens of one image → (N, H), full attention.
    fn forward_one(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, h) = xs.dims2()?;
        let split = |t: Tensor| {
            t.reshape((n, self.heads, self.head_dim))?
                .transpose(0, 1)?
                .contiguous()
        };
        let q = split(self.q_proj.forward(xs)?)?;
        let k = split(self.k_proj.forward(xs)?)?;
        let v = split(self.v_proj.forward(xs)?)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (self.head_dim as f64).sqrt()))?;
        let attn = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = attn.matmul(&v)?.transpose(0, 1)?.reshape((n, h))?;
        self.out_proj.forward(&out)
    }

    /// Attention restricted to each image of the pack (`seqlens` tokens each).
    fn forward(&self, xs: &Tensor, seqlens: &[usize]) -> Result<Tensor> {
        if seqlens.len() == 1 {
            return self.forward_one(xs);
        }
        let mut outs = Vec::with_capacity(seqlens.len());
        let mut start = 0;
        for &len in seqlens {
            outs.push(self.forward_one(&xs.narrow(0, start, len)?)?);
            start += len;
        }
        Tensor::cat(&outs, 0)
    }
}

#[derive(Debug, Clone)]
struct VitMlp {
    fc1: Linear,
    fc2: Linear,
}

impl Module for VitMlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // candle's `gelu` is the tanh approximation (`gelu_pytorch_tanh`).
        self.fc2.forward(&self.fc1.forward(xs)?.gelu()?)
    }
}

#[derive(Debug, Clone)]
struct VitEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: VitAttention,
    layer_norm2: LayerNorm,
    mlp: VitMlp,
}

impl VitEncoderLayer {
    fn new(cfg: &VitConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        Ok(Self {
            layer_norm1: LayerNorm::new(h, eps, vb.pp("layer_norm1"))?,
            self_attn: VitAttention::new(cfg, vb.pp("self_attn"))?,
            layer_norm2: LayerNorm::new(h, eps, vb.pp("layer_norm2"))?,
            mlp: VitMlp {
                fc1: linear(h, i, vb.pp("mlp").pp("fc1"))?,
                fc2: linear(i, h, vb.pp("mlp").pp("fc2"))?,
            },
        })
    }

    fn forward(&self, xs: &Tensor, seqlens: &[usize]) -> Result<Tensor> {
        let h = (xs
            + self
                .self_attn
                .forward(&self.layer_norm1.forward(xs)?, seqlens)?)?;
        &h + self.mlp.forward(&self.layer_norm2.forward(&h)?)?
    }
}

/// The vision tower, weights under `vit_model.vision_model`.
#[derive(Debug, Clone)]
pub struct SiglipVisionModel {
    patch_embedding: Linear,
    position_embedding: Embedding,
    layers: Vec<VitEncoderLayer>,
    post_layernorm: LayerNorm,
}

impl SiglipVisionModel {
    /// `num_layers`: the layers actually built (`ModelConfig::vit_layers`).
    pub fn new(cfg: &VitConfig, num_layers: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("vision_model");
        let emb = vb.pp("embeddings");
        let side = cfg.num_patches_per_side();
        let layers = (0..num_layers)
            .map(|j| VitEncoderLayer::new(cfg, vb.pp("encoder").pp("layers").pp(j)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embedding: linear(cfg.patch_dim(), cfg.hidden_size, emb.pp("patch_embedding"))?,
            position_embedding: embedding(
                side * side,
                cfg.hidden_size,
                emb.pp("position_embedding"),
            )?,
            layers,
            post_layernorm: LayerNorm::new(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                vb.pp("post_layernorm"),
            )?,
        })
    }

    /// `patches`: (N, 3·p²); `position_ids`: (N,) u32 → (N, H_v) embeddings before the encoder.
    pub fn embeddings(&self, patches: &Tensor, position_ids: &Tensor) -> Result<Tensor> {
        let x = self.patch_embedding.forward(patches)?;
        x + self.position_embedding.forward(position_ids)?
    }

    /// Packed images → (N, H_v) features after `post_layernorm`.
    pub fn forward(
        &self,
        patches: &Tensor,
        position_ids: &Tensor,
        seqlens: &[usize],
    ) -> Result<Tensor> {
        let mut h = self.embeddings(patches, position_ids)?;
        for layer in &self.layers {
            h = layer.forward(&h, seqlens)?;
        }
        self.post_layernorm.forward(&h)
    }
}

/// `connector`: fc1 (H_v → H) → gelu-tanh → fc2 (H → H).
#[derive(Debug, Clone)]
pub struct Connector {
    fc1: Linear,
    fc2: Linear,
}

impl Connector {
    pub fn new(vit_hidden: usize, llm_hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: linear(vit_hidden, llm_hidden, vb.pp("fc1"))?,
            fc2: linear(llm_hidden, llm_hidden, vb.pp("fc2"))?,
        })
    }
}

impl Module for Connector {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(xs)?.gelu()?)
    }
}
