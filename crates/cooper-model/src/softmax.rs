//! Fused `softmax(scale · scores + mask)` for training on CPU.
//!
//! candle's `softmax_last_dim` has no backward, and the differentiable composite (max, sub, exp, sum,
//! div, plus the scale and the mask add) makes about ten score-sized temporaries per layer and as many
//! passes over them in the backward. For a small model those passes, not the matmuls, are most of a
//! training step, so this module does the forward in one pass per row and the backward in another,
//! as custom ops (written here because candle has none with a backward; CUDA keeps the composite).
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows per rayon task: enough work per task that scheduling does not show.
const MIN_ROWS_PER_TASK: usize = 32;

/// `softmax(scale · scores + mask)` over the last axis. `scores`: (…, S) f32; `mask`: additive (M, S)
/// f32 where score row r uses mask row r mod M (heads stacked on the row axis share one mask).
pub fn scaled_masked_softmax(scores: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let fused = scores.device().is_cpu() && scores.dtype() == DType::F32;
    match mask {
        Some(mask) if fused => {
            let mask = mask.to_dtype(DType::F32)?.contiguous()?;
            scores.contiguous()?.apply_op2(
                &mask,
                ScaledMaskedSoftmax {
                    scale: scale as f32,
                },
            )
        }
        Some(mask) => {
            let s = scores.dim(D::Minus1)?;
            let rows = scores.elem_count() / s;
            let m = mask.dim(0)?;
            let shaped = (scores * scale)?.reshape((rows / m, m, s))?;
            let masked = shaped.broadcast_add(&mask.to_dtype(scores.dtype())?)?;
            candle_nn::ops::softmax(&masked, D::Minus1)?.reshape(scores.shape())
        }
        None => candle_nn::ops::softmax(&(scores * scale)?, D::Minus1),
    }
}

fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("scaled_masked_softmax: {what} must be f32");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("scaled_masked_softmax: {what} must be contiguous"),
    }
}

/// Row length and mask row count, checked.
fn row_shape(scores: &Layout, mask: &Layout) -> Result<(usize, usize)> {
    let s = scores.dims().last().copied().unwrap_or(0);
    let (m, ms) = match mask.dims() {
        [m, ms] => (*m, *ms),
        dims => candle_core::bail!("scaled_masked_softmax: mask must be (M, S), got {dims:?}"),
    };
    let rows = scores.shape().elem_count() / s.max(1);
    if ms != s || m == 0 || rows % m != 0 {
        candle_core::bail!(
            "scaled_masked_softmax: mask {:?} does not fit scores {:?}",
            mask.dims(),
            scores.dims()
        );
    }
    Ok((s, m))
}

struct ScaledMaskedSoftmax {
    scale: f32,
}

impl CustomOp2 for ScaledMaskedSoftmax {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        scores: &CpuStorage,
        scores_layout: &Layout,
        mask: &CpuStorage,
        mask_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (s, m) = row_shape(scores_layout, mask_layout)?;
        let x = f32_slice(scores, scores_layout, "scores")?;
        let mask = f32_slice(mask, mask_layout, "mask")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .enumerate()
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(row, (y, x))| {
                let mask = &mask[(row % m) * s..(row % m + 1) * s];
                let mut max = f32::NEG_INFINITY;
                for ((y, &x), &b) in y.iter_mut().zip(x).zip(mask) {
                    *y = x * self.scale + b;
                    max = max.max(*y);
                }
                if max == f32::NEG_INFINITY {
                    // A row that sees nothing attends to nothing.
                    y.fill(0.0);
                    return;
                }
                let mut sum = 0f32;
                for y in y.iter_mut() {
                    *y = (*y - max).exp();
                    sum += *y;
                }
                let inv = 1.0 / sum;
                y.iter_mut().for_each(|y| *y *= inv);
            });
        Ok((CpuStorage::F32(out), scores_layout.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        probs: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad
            .contiguous()?
            .apply_op2_no_bwd(probs, &SoftmaxGrad { scale: self.scale })?;
        Ok((Some(grad), None))
    }
}

/// d scores = scale · y ⊙ (g − Σ g ⊙ y), per row; arguments (g, y).
struct SoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "scaled-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        grad_layout: &Layout,
        probs: &CpuStorage,
        probs_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if grad_layout.dims() != probs_layout.dims() {
            candle_core::bail!(
                "softmax grad {:?} does not match probabilities {:?}",
                grad_layout.dims(),
                probs_layout.dims()
            );
        }
        let s = grad_layout.dims().last().copied().unwrap_or(1).max(1);
        let g = f32_slice(grad, grad_layout, "gradient")?;
        let y = f32_slice(probs, probs_layout, "probabilities")?;
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(s)
            .zip(g.par_chunks(s).zip(y.par_chunks(s)))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(dx, (g, y))| {
                let dot: f32 = g.iter().zip(y).map(|(g, y)| g * y).sum();
                for ((dx, &g), &y) in dx.iter_mut().zip(g).zip(y) {
                    *dx = self.scale * y * (g - dot);
                }
            });
        Ok((CpuStorage::F32(out), grad_layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The fused op and the composite agree in value and in gradient.
    #[test]
    fn fused_matches_composite() -> Result<()> {
        let dev = Device::Cpu;
        let scores = Var::from_tensor(&Tensor::randn(0f32, 2., (3, 4, 5), &dev)?)?;
        let allowed: Vec<f32> = (0..4 * 5)
            .map(|i| {
                if i % 5 <= i / 5 + 1 {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        let mask = Tensor::from_vec(allowed, (4, 5), &dev)?;
        let weights = Tensor::randn(0f32, 1., (3, 4, 5), &dev)?;
        let fused = scaled_masked_softmax(scores.as_tensor(), Some(&mask), 0.5)?;
        let composite = candle_nn::ops::softmax(
            &(scores.as_tensor() * 0.5)?.broadcast_add(&mask)?,
            D::Minus1,
        )?;
        let diff = (&fused - &composite)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "values differ by {diff}");
        let g_fused = (fused * &weights)?.sum_all()?.backward()?;
        let g_comp = (composite * &weights)?.sum_all()?.backward()?;
        let (a, b) = (g_fused.get(&scores).unwrap(), g_comp.get(&scores).unwrap());
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "gradients differ by {diff}");
        Ok(())
    }
}
