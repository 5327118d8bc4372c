//! Layout helpers shared by training and inference: latent patch packing and the attention mask of a
//! packed training sample.
use candle_core::{DType, Device, Result, Tensor};

/// (B, C, H', W') latents → (B·h·w, p²C) tokens, h = H'/p, w = W'/p, each row the p×p patch flattened in
/// (py, px, channel) order ('chpwq->hwpqc'); rows of a crop to (h·p, w·p) when H', W' are not multiples.
pub fn pack_latents(latents: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, hh, ww) = latents.dims4()?;
    let (h, w) = (hh / p, ww / p);
    latents
        .narrow(2, 0, h * p)?
        .narrow(3, 0, w * p)?
        .reshape((b, c, h, p, w, p))?
        .permute((0, 2, 4, 3, 5, 1))? // b h w py px c
        .reshape((b * h * w, p * p * c))
}

/// (h·w, p²C) tokens → (1, C, h·p, w·p) latents, the inverse of `pack_latents` ('nhwpqc->nchpwq').
pub fn unpack_latents(tokens: &Tensor, h: usize, w: usize, p: usize) -> Result<Tensor> {
    let (_, dim) = tokens.dims2()?;
    let c = dim / (p * p);
    tokens
        .reshape((1, h, w, p, p, c))?
        .permute((0, 5, 1, 3, 2, 4))? // n c h py w px
        .reshape((1, c, h * p, w * p))
}

/// How a split of a packed sample attends (`attn_modes` of the official packer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitMode {
    /// Text: lower-triangular inside the split.
    Causal,
    /// A clean ViT or VAE image with its markers: all-to-all inside the split.
    Full,
    /// A noised VAE target: all-to-all inside, and invisible to every later token.
    Noise,
}

impl std::str::FromStr for SplitMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "causal" => Ok(Self::Causal),
            "full" => Ok(Self::Full),
            "noise" => Ok(Self::Noise),
            other => Err(format!("unknown attention mode {other:?}")),
        }
    }
}

/// Allowed-matrix (T, T) of 0/1 u8 (row = query) for a pack of samples, each a list of
/// (split length, mode); samples are block-diagonal.
pub fn attention_allowed(samples: &[Vec<(usize, SplitMode)>], device: &Device) -> Result<Tensor> {
    let total: usize = samples.iter().flatten().map(|(l, _)| l).sum();
    let mut m = vec![0u8; total * total];
    let mut sample_start = 0;
    for splits in samples {
        let sample_len: usize = splits.iter().map(|(l, _)| l).sum();
        // Every split sees all earlier splits of its sample and itself per its mode.
        let mut start = sample_start;
        for &(len, mode) in splits {
            for i in start..start + len {
                for j in sample_start..start {
                    m[i * total + j] = 1;
                }
                let last = match mode {
                    SplitMode::Causal => i + 1,
                    SplitMode::Full | SplitMode::Noise => start + len,
                };
                for j in start..last {
                    m[i * total + j] = 1;
                }
            }
            start += len;
        }
        // A noise split is hidden as a key from every query outside it.
        let mut start = sample_start;
        for &(len, mode) in splits {
            if mode == SplitMode::Noise {
                for i in sample_start..sample_start + sample_len {
                    if i < start || i >= start + len {
                        for j in start..start + len {
                            m[i * total + j] = 0;
                        }
                    }
                }
            }
            start += len;
        }
        sample_start += sample_len;
    }
    Tensor::from_vec(m, (total, total), device)?.to_dtype(DType::U8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_then_unpack_is_identity() -> Result<()> {
        let x = Tensor::arange(0f32, 2. * 4. * 6., &Device::Cpu)?.reshape((1, 2, 4, 6))?;
        let tokens = pack_latents(&x, 2)?;
        assert_eq!(tokens.dims(), &[6, 8]);
        // Token (0,0) = patch rows 0..2, cols 0..2, flattened (py, px, c): x[c, py, px].
        let first: Vec<f32> = tokens.get(0)?.to_vec1()?;
        assert_eq!(first, vec![0., 24., 1., 25., 6., 30., 7., 31.]);
        let back = unpack_latents(&tokens, 2, 3, 2)?;
        assert_eq!(
            back.flatten_all()?.to_vec1::<f32>()?,
            x.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn noise_split_is_hidden_from_later_tokens() -> Result<()> {
        use SplitMode::*;
        let m = attention_allowed(&[vec![(2, Causal), (2, Noise), (1, Causal)]], &Device::Cpu)?;
        let m: Vec<Vec<u8>> = m.to_vec2()?;
        assert_eq!(m[0], vec![1, 0, 0, 0, 0]);
        assert_eq!(m[1], vec![1, 1, 0, 0, 0]);
        assert_eq!(m[2], vec![1, 1, 1, 1, 0]);
        assert_eq!(m[4], vec![1, 1, 0, 0, 1]);
        Ok(())
    }
}
