//! The autoencoder's k×k convolutions on CPU, as one matrix product over shifted views.
//!
//! candle 0.11's CPU `conv2d` builds each im2col tile by scattering single elements with a stride
//! of the tile width; on the default model's autoencoder (32–128 channels, 128-pixel pictures) that
//! copy costs more than the matrix product, and autoencoder encodes are most of an `amg` step and
//! about a quarter of an SFT step that rehearses stage 1. Here the patch matrix is k·k block
//! copies of the padded input's stride phases, multiplied once by the flattened kernel: an encode
//! of a 128-pixel picture takes about 2.5 times less time on 2 cores. Every op is an ordinary
//! differentiable tensor op, so the `ae` stage trains through it too. Other devices keep candle's
//! convolution (cuDNN on CUDA).
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

/// A 2-D convolution with square kernel, zero padding and stride; official `weight` (c_out, c_in,
/// k, k) and `bias` (c_out) names.
#[derive(Debug, Clone)]
pub struct Conv2d {
    inner: candle_nn::Conv2d,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding,
            stride,
            ..Default::default()
        };
        Ok(Self {
            inner: candle_nn::conv2d(c_in, c_out, kernel, cfg, vb)?,
            kernel,
            stride,
            padding,
        })
    }

    /// The convolution as shifted views and one matrix product. xs: (B, C, H, W) → (B, C_out, H', W').
    fn forward_shifted(&self, xs: &Tensor) -> Result<Tensor> {
        // The kernel as (C_out, k·k·C), rows ordered (dy, dx, channel): flattened once per call.
        let weight = self.inner.weight();
        let (c_out, c_in, k, _) = weight.dims4()?;
        let flat = weight
            .permute((0, 2, 3, 1))?
            .reshape((c_out, k * k * c_in))?;
        let bias = self
            .inner
            .bias()
            .map(|b| b.reshape((c_out, 1, 1)))
            .transpose()?;
        let items = (0..xs.dim(0)?)
            .map(|i| self.forward_one(&xs.get(i)?, &flat, bias.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&items, 0)
    }

    /// One picture (C, H, W) → (C_out, H', W'), given the flattened kernel and the bias (C_out, 1, 1).
    ///
    /// The zero-padded input is split into its s·s stride phases (planes of every s-th row and
    /// column), so that kernel tap (dy, dx) reads phase (dy mod s, dx mod s) at offset (dy / s,
    /// dx / s) with stride 1. Flattened, the tap's view of a phase is one contiguous run per channel
    /// if each output row also reads the plane's columns past W' (garbage columns, cut from the
    /// product), so the patch matrix (k·k·C, H'·W₂) is k·k block copies.
    fn forward_one(&self, x: &Tensor, flat: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        let (c, h, w) = x.dims3()?;
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        if hp < k || wp < k {
            candle_core::bail!(
                "conv2d: input {h}x{w} (padding {p}) is smaller than the {k}x{k} kernel"
            );
        }
        let (ho, wo) = ((hp - k) / s + 1, (wp - k) / s + 1);
        let reach = (k - 1) / s;
        // Plane sizes: every tap's rows fit, plus one spare row for the last row's garbage columns.
        let h2 = hp.div_ceil(s).max(reach + ho) + 1;
        let w2 = wp.div_ceil(s).max(reach + wo);
        let padded =
            x.pad_with_zeros(1, p, s * h2 - h - p)?
                .pad_with_zeros(2, p, s * w2 - w - p)?;
        // (s·s, C, H₂·W₂): phase (a, b) holds rows a, a + s, … and columns b, b + s, ….
        let phases = if s == 1 {
            padded.reshape((1, c, h2 * w2))?
        } else {
            padded
                .reshape((c, h2, s, w2, s))?
                .permute((2, 4, 0, 1, 3))?
                .contiguous()?
                .reshape((s * s, c, h2 * w2))?
        };
        let mut taps = Vec::with_capacity(k * k);
        for dy in 0..k {
            for dx in 0..k {
                let phase = phases.get((dy % s) * s + dx % s)?;
                taps.push(phase.narrow(1, (dy / s) * w2 + dx / s, ho * w2)?);
            }
        }
        // Rows ordered (dy, dx, channel), as the flattened kernel's columns.
        let patches = Tensor::stack(&taps, 0)?.reshape((k * k * c, ho * w2))?;
        let c_out = flat.dim(0)?;
        let out = flat
            .matmul(&patches)?
            .reshape((c_out, ho, w2))?
            .narrow(2, 0, wo)?;
        match bias {
            Some(bias) => out.broadcast_add(bias),
            None => out.contiguous(),
        }
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // 1×1 kernels already have a plain-matmul path in candle.
        if xs.device().is_cpu() && self.kernel > 1 {
            self.forward_shifted(xs)
        } else {
            self.inner.forward(xs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, pad: usize) -> Result<Conv2d> {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let conv = Conv2d::new(c_in, c_out, k, stride, pad, vb)?;
        // A non-zero bias, so that a dropped bias would show.
        for var in map.all_vars() {
            if var.dims().len() == 1 {
                var.set(&Tensor::randn(0f32, 1.0, var.dims(), &Device::Cpu)?)?;
            }
        }
        Ok(conv)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    #[test]
    fn shifted_views_match_candle_conv2d_and_its_gradients() -> Result<()> {
        // (c_in, c_out, k, stride, padding, h, w): the encoder's 3×3 pad-1 convs, its stride-2
        // downsampling (no padding, odd input after its right/bottom pad), and uneven sizes.
        let cases = [
            (3, 8, 3, 1, 1, 9, 7),
            (4, 5, 3, 2, 0, 9, 9),
            (4, 5, 3, 2, 0, 8, 6),
            (2, 3, 3, 2, 1, 7, 9),
            (3, 2, 5, 1, 2, 6, 6),
        ];
        for (c_in, c_out, k, s, p, h, w) in cases {
            let conv = conv(c_in, c_out, k, s, p)?;
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, c_in, h, w), &Device::Cpu)?)?;
            let ours = conv.forward_shifted(x.as_tensor())?;
            let theirs = conv.inner.forward(x.as_tensor())?;
            assert_eq!(
                ours.dims(),
                theirs.dims(),
                "case {:?}",
                (c_in, c_out, k, s, p, h, w)
            );
            let d = max_diff(&ours, &theirs)?;
            assert!(
                d < 1e-4,
                "forward differs by {d} in case {:?}",
                (k, s, p, h, w)
            );
            // Same upstream gradient through both: input and weight gradients agree (candle's
            // own backward only handles sizes the stride divides).
            if (h + 2 * p - k) % s != 0 || (w + 2 * p - k) % s != 0 {
                continue;
            }
            let up = Tensor::randn(0f32, 1.0, ours.dims(), &Device::Cpu)?;
            let g_ours = (ours * &up)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &up)?.sum_all()?.backward()?;
            for t in [x.as_tensor(), conv.inner.weight()] {
                let (a, b) = (g_ours.get(t).unwrap(), g_theirs.get(t).unwrap());
                let d = max_diff(a, b)?;
                assert!(
                    d < 1e-3,
                    "gradient differs by {d} in case {:?}",
                    (k, s, p, h, w)
                );
            }
        }
        Ok(())
    }

    #[test]
    fn a_kernel_larger_than_the_padded_input_is_an_error() -> Result<()> {
        let conv = conv(1, 1, 3, 1, 0)?;
        let x = Tensor::zeros((1, 1, 2, 5), DType::F32, &Device::Cpu)?;
        let err = conv.forward(&x).unwrap_err().to_string();
        assert!(err.contains("smaller than the 3x3 kernel"), "{err}");
        Ok(())
    }
}
