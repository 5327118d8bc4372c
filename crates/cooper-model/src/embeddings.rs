//! Fixed and learned embeddings that join the modalities to the LLM: the 2-D sin-cos position tables
//! of ViT and latent grids, the flow-timestep embedder, and the 1-D rotary tables of the decoder.
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};

/// The 2-D sin-cos table of MAE, `grid`×`grid` rows of `dim` values, row id = r·grid + c.
///
/// The first half of each row encodes the column, the second half the row (numpy meshgrid order);
/// each half is `[sin(p·ω_k)…, cos(p·ω_k)…]` with ω_k = 10000^(−k/(dim/4)). Built in f64 like the
/// original, returned as f32. Checkpoints store these tables, but every official loader recomputes
/// them, and so do we.
pub fn sincos_2d_table(grid: usize, dim: usize) -> Vec<f32> {
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let mut table = Vec::with_capacity(grid * grid * dim);
    for r in 0..grid {
        for c in 0..grid {
            for p in [c as f64, r as f64] {
                table.extend(omega.iter().map(|w| (p * w).sin() as f32));
                table.extend(omega.iter().map(|w| (p * w).cos() as f32));
            }
        }
    }
    table
}

/// A frozen 2-D sin-cos table looked up by flattened position id (`vit_pos_embed`, `latent_pos_embed`).
#[derive(Debug, Clone)]
pub struct PositionEmbedding {
    pos_embed: Tensor, // (grid², dim)
    grid: usize,
}

impl PositionEmbedding {
    pub fn new(grid: usize, dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        let pos_embed = Tensor::from_vec(sincos_2d_table(grid, dim), (grid * grid, dim), device)?
            .to_dtype(dtype)?;
        Ok(Self { pos_embed, grid })
    }

    pub fn grid(&self) -> usize {
        self.grid
    }

    pub fn table(&self) -> &Tensor {
        &self.pos_embed
    }

    /// `ids`: (N,) u32 flattened ids → (N, dim).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.pos_embed.index_select(ids, 0)
    }
}

/// Flattened ids of an `h`×`w` grid placed in the top-left corner of a `max_side`² table
/// (the official "extrapolate" variant): id = row·max_side + col.
pub fn flattened_position_ids(h: usize, w: usize, max_side: usize) -> Vec<u32> {
    (0..h)
        .flat_map(|r| (0..w).map(move |c| (r * max_side + c) as u32))
        .collect()
}

/// Timestep embedder: 256 sinusoidal features of the unscaled flow time t ∈ [0, 1], cos first,
/// then Linear → SiLU → Linear (`time_embedder.mlp.0`, `time_embedder.mlp.2`).
#[derive(Debug, Clone)]
pub struct TimestepEmbedder {
    fc0: Linear,
    fc2: Linear,
}

pub const TIMESTEP_FREQ_DIM: usize = 256;

impl TimestepEmbedder {
    pub fn new(hidden: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("mlp");
        Ok(Self {
            fc0: linear(TIMESTEP_FREQ_DIM, hidden, vb.pp("0"))?,
            fc2: linear(hidden, hidden, vb.pp("2"))?,
        })
    }

    /// `t`: (N,) f32 → (N, 256) features `[cos(t f_k)…, sin(t f_k)…]`, f_k = exp(−ln(10⁴)·k/128).
    pub fn frequencies(t: &Tensor) -> Result<Tensor> {
        let half = TIMESTEP_FREQ_DIM / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|k| (-(10000f64.ln()) * k as f64 / half as f64).exp() as f32)
            .collect();
        let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&freqs)?;
        Tensor::cat(&[args.cos()?, args.sin()?], 1)
    }

    /// `t`: (N,) → (N, hidden).
    pub fn forward(&self, t: &Tensor, dtype: DType) -> Result<Tensor> {
        let x = Self::frequencies(t)?.to_dtype(dtype)?;
        self.fc2.forward(&self.fc0.forward(&x)?.silu()?)
    }
}

/// Rotary embedding of the Qwen2 decoder (HF default type, rotate-half).
#[derive(Debug, Clone)]
pub struct Rotary {
    inv_freq: Tensor, // (1, head_dim / 2), f32
}

impl Rotary {
    pub fn new(head_dim: usize, theta: f64, device: &Device) -> Result<Self> {
        let inv: Vec<f32> = (0..head_dim / 2)
            .map(|j| 1.0 / theta.powf(2.0 * j as f64 / head_dim as f64) as f32)
            .collect();
        let n = inv.len();
        Ok(Self {
            inv_freq: Tensor::from_vec(inv, (1, n), device)?,
        })
    }

    /// cos and sin tables of shape (T, head_dim) for the given positions (T,) u32.
    pub fn tables(&self, positions: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
        let pos = positions.to_dtype(DType::F32)?.unsqueeze(1)?;
        let freqs = pos.broadcast_mul(&self.inv_freq)?;
        let emb = Tensor::cat(&[&freqs, &freqs], 1)?;
        Ok((emb.cos()?.to_dtype(dtype)?, emb.sin()?.to_dtype(dtype)?))
    }

    /// Rotates `x` of shape (T, heads, head_dim) with tables of shape (T, head_dim).
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let d = x.dim(2)?;
        let x1 = x.narrow(2, 0, d / 2)?;
        let x2 = x.narrow(2, d / 2, d / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], 2)?;
        let cos = cos.unsqueeze(1)?;
        let sin = sin.unsqueeze(1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sincos_first_half_encodes_the_column() {
        // grid 3, dim 8 → ω = [1, 0.01]; row 1, col 2 (id 5): col half = sin 2, sin 0.02, cos 2, cos 0.02.
        let t = sincos_2d_table(3, 8);
        let row = &t[5 * 8..6 * 8];
        let expect = [
            2f64.sin(),
            0.02f64.sin(),
            2f64.cos(),
            0.02f64.cos(),
            1f64.sin(),
            0.01f64.sin(),
            1f64.cos(),
            0.01f64.cos(),
        ];
        for (a, b) in row.iter().zip(expect) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn flattened_ids_use_the_table_corner() {
        assert_eq!(flattened_position_ids(2, 3, 10), vec![0, 1, 2, 10, 11, 12]);
    }
}
