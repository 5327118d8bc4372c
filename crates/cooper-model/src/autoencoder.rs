//! The FLUX autoencoder (`ae.safetensors`): a convolutional VAE with GroupNorm/swish ResNet blocks and
//! one single-head attention block in the middle of encoder and decoder. Its latents are scaled and
//! shifted (`z' = scale·(z − shift)`) before the LLM sees them.
//!
//! candle-transformers has a FLUX autoencoder, but it hides the encoder moments and always samples;
//! parity, deterministic evaluation and training need the moments, the mean, and a sample drawn from a
//! caller-supplied ε, so the module is written here with the same parameter names.
use candle_core::{Module, Result, Tensor, D};
use candle_nn::{group_norm, GroupNorm, VarBuilder};

use crate::config::AeConfig;
use crate::conv::Conv2d;

fn conv3x3(c_in: usize, c_out: usize, stride: usize, pad: usize, vb: VarBuilder) -> Result<Conv2d> {
    Conv2d::new(c_in, c_out, 3, stride, pad, vb)
}

fn conv1x1(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Conv2d> {
    Conv2d::new(c_in, c_out, 1, 1, 0, vb)
}

#[derive(Debug, Clone)]
struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    fn new(c: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(groups, c, 1e-6, vb.pp("norm"))?,
            q: conv1x1(c, c, vb.pp("q"))?,
            k: conv1x1(c, c, vb.pp("k"))?,
            v: conv1x1(c, c, vb.pp("v"))?,
            proj_out: conv1x1(c, c, vb.pp("proj_out"))?,
        })
    }
}

impl Module for AttnBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        let x = self.norm.forward(xs)?;
        // (B, C, H, W) → (B, HW, C)
        let flat = |t: Tensor| t.flatten_from(2)?.transpose(1, 2);
        let q = flat(self.q.forward(&x)?)?;
        let k = flat(self.k.forward(&x)?)?;
        let v = flat(self.v.forward(&x)?)?;
        let scores = (q.matmul(&k.transpose(1, 2)?)? * (1.0 / (c as f64).sqrt()))?;
        let attn = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        xs + self.proj_out.forward(&out)?
    }
}

#[derive(Debug, Clone)]
struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn new(c_in: usize, c_out: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        let nin_shortcut = if c_in != c_out {
            Some(conv1x1(c_in, c_out, vb.pp("nin_shortcut"))?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(groups, c_in, 1e-6, vb.pp("norm1"))?,
            conv1: conv3x3(c_in, c_out, 1, 1, vb.pp("conv1"))?,
            norm2: group_norm(groups, c_out, 1e-6, vb.pp("norm2"))?,
            conv2: conv3x3(c_out, c_out, 1, 1, vb.pp("conv2"))?,
            nin_shortcut,
        })
    }
}

impl Module for ResnetBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(xs)?.silu()?)?;
        let h = self.conv2.forward(&self.norm2.forward(&h)?.silu()?)?;
        match &self.nin_shortcut {
            Some(s) => s.forward(xs)? + h,
            None => xs + h,
        }
    }
}

/// A resolution level: ResNet blocks, then an optional resampling conv (stride-2 after right/bottom
/// zero padding in the encoder; after nearest ×2 upsampling in the decoder).
#[derive(Debug, Clone)]
struct Level {
    blocks: Vec<ResnetBlock>,
    resample: Option<Conv2d>,
}

impl Level {
    fn blocks(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = xs.clone();
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        Ok(h)
    }
}

#[derive(Debug, Clone)]
struct Mid {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl Mid {
    fn new(c: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::new(c, c, groups, vb.pp("block_1"))?,
            attn_1: AttnBlock::new(c, groups, vb.pp("attn_1"))?,
            block_2: ResnetBlock::new(c, c, groups, vb.pp("block_2"))?,
        })
    }
}

impl Module for Mid {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.apply(&self.block_1)?
            .apply(&self.attn_1)?
            .apply(&self.block_2)
    }
}

#[derive(Debug, Clone)]
pub struct Encoder {
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    pub fn new(cfg: &AeConfig, vb: VarBuilder) -> Result<Self> {
        let g = cfg.norm_groups;
        let conv_in = conv3x3(cfg.in_channels, cfg.ch, 1, 1, vb.pp("conv_in"))?;
        let mut c_in = cfg.ch;
        let mut down = Vec::with_capacity(cfg.ch_mult.len());
        for (i, m) in cfg.ch_mult.iter().enumerate() {
            let vb_l = vb.pp("down").pp(i);
            let c_out = cfg.ch * m;
            let mut blocks = Vec::with_capacity(cfg.num_res_blocks);
            for b in 0..cfg.num_res_blocks {
                blocks.push(ResnetBlock::new(c_in, c_out, g, vb_l.pp("block").pp(b))?);
                c_in = c_out;
            }
            let resample = if i + 1 < cfg.ch_mult.len() {
                Some(conv3x3(c_in, c_in, 2, 0, vb_l.pp("downsample").pp("conv"))?)
            } else {
                None
            };
            down.push(Level { blocks, resample });
        }
        Ok(Self {
            conv_in,
            down,
            mid: Mid::new(c_in, g, vb.pp("mid"))?,
            norm_out: group_norm(g, c_in, 1e-6, vb.pp("norm_out"))?,
            conv_out: conv3x3(c_in, 2 * cfg.z_channels, 1, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Encoder {
    /// (B, 3, H, W) in [−1, 1] → (B, 2·z, H/ds, W/ds) moments (mean then log-variance).
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(xs)?;
        for level in &self.down {
            h = level.blocks(&h)?;
            if let Some(conv) = &level.resample {
                let padded = h
                    .pad_with_zeros(D::Minus1, 0, 1)?
                    .pad_with_zeros(D::Minus2, 0, 1)?;
                h = conv.forward(&padded)?;
            }
        }
        let h = self.mid.forward(&h)?;
        self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)
    }
}

#[derive(Debug, Clone)]
pub struct Decoder {
    conv_in: Conv2d,
    mid: Mid,
    /// Indexed as in the checkpoint (`up.0` is the last applied, at full resolution).
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    pub fn new(cfg: &AeConfig, vb: VarBuilder) -> Result<Self> {
        let g = cfg.norm_groups;
        let levels = cfg.ch_mult.len();
        let mut c_in = cfg.ch * cfg.ch_mult[levels - 1];
        let conv_in = conv3x3(cfg.z_channels, c_in, 1, 1, vb.pp("conv_in"))?;
        let mid = Mid::new(c_in, g, vb.pp("mid"))?;
        let mut up: Vec<Option<Level>> = (0..levels).map(|_| None).collect();
        for i in (0..levels).rev() {
            let vb_l = vb.pp("up").pp(i);
            let c_out = cfg.ch * cfg.ch_mult[i];
            let mut blocks = Vec::with_capacity(cfg.num_res_blocks + 1);
            for b in 0..=cfg.num_res_blocks {
                blocks.push(ResnetBlock::new(c_in, c_out, g, vb_l.pp("block").pp(b))?);
                c_in = c_out;
            }
            let resample = if i != 0 {
                Some(conv3x3(c_in, c_in, 1, 1, vb_l.pp("upsample").pp("conv"))?)
            } else {
                None
            };
            up[i] = Some(Level { blocks, resample });
        }
        Ok(Self {
            conv_in,
            mid,
            up: up
                .into_iter()
                .map(|l| l.expect("every level built"))
                .collect(),
            norm_out: group_norm(g, c_in, 1e-6, vb.pp("norm_out"))?,
            conv_out: conv3x3(c_in, cfg.out_ch, 1, 1, vb.pp("conv_out"))?,
        })
    }
}

impl Module for Decoder {
    /// (B, z, h, w) unscaled latents → (B, 3, h·ds, w·ds) pixels around [−1, 1].
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.mid.forward(&self.conv_in.forward(z)?)?;
        for level in self.up.iter().rev() {
            h = level.blocks(&h)?;
            if let Some(conv) = &level.resample {
                let (_, _, hh, ww) = h.dims4()?;
                h = conv.forward(&h.upsample_nearest2d(2 * hh, 2 * ww)?)?;
            }
        }
        self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)
    }
}

/// The autoencoder with its latent scale and shift.
#[derive(Debug, Clone)]
pub struct AutoEncoder {
    pub encoder: Encoder,
    pub decoder: Decoder,
    cfg: AeConfig,
}

impl AutoEncoder {
    pub fn new(cfg: &AeConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &AeConfig {
        &self.cfg
    }

    /// (B, 3, H, W) → (B, 2z, h, w) Gaussian moments. H and W must be multiples of the downsample.
    pub fn moments(&self, pixels: &Tensor) -> Result<Tensor> {
        self.encoder.forward(pixels)
    }

    fn scale(&self, z: &Tensor) -> Result<Tensor> {
        (z - self.cfg.shift_factor)? * self.cfg.scale_factor
    }

    /// Deterministic encode: scale·(mean − shift).
    pub fn encode_mean(&self, pixels: &Tensor) -> Result<Tensor> {
        let m = self.moments(pixels)?;
        self.scale(&m.narrow(1, 0, self.cfg.z_channels)?)
    }

    /// The official (sampling) encode with a caller-supplied ε ~ N(0, I) of the latent shape:
    /// scale·(mean + exp(logvar/2)·ε − shift).
    pub fn encode_with_noise(&self, pixels: &Tensor, eps: &Tensor) -> Result<Tensor> {
        let m = self.moments(pixels)?;
        let z = self.cfg.z_channels;
        let mean = m.narrow(1, 0, z)?;
        let std = (m.narrow(1, z, z)? * 0.5)?.exp()?;
        self.scale(&(mean + std.mul(eps)?)?)
    }

    /// (B, z, h, w) scaled latents → (B, 3, H, W) raw pixels (no clamp).
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let z = ((latents / self.cfg.scale_factor)? + self.cfg.shift_factor)?;
        self.decoder.forward(&z)
    }
}
