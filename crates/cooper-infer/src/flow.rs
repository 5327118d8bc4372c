//! Rectified-flow image generation (reference §3.4): the shifted schedule, the Euler
//! sampler, the guidance interval and the three-branch classifier-free guidance combination.
//!
//! The model is abstracted as a velocity callback `FnMut(&x, t, Branch) -> v` over packed
//! latent tokens (h·w, 4·z_channels); the engine evaluates it with the context of the
//! requested [`Branch`].

use candle_core::{DType, Device, Tensor, D};
use indicatif::{ProgressBar, ProgressStyle};
use rand_distr::{Distribution, StandardNormal};

use crate::error::{InferError, Result};
use crate::params::{CfgRenorm, ImageParams};
use crate::sampling::seeded_rng;

/// Which context a velocity evaluation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Branch {
    /// The full context (conditional velocity v_c).
    Cond,
    /// The text-dropped context (`cfg_text_precontext`, velocity v_t).
    CfgText,
    /// The image-dropped context (`cfg_img_precontext`, velocity v_i).
    CfgImg,
}

/// `torch.linspace(1, 0, n)` in f32 (torch fills the first half forward from the start and
/// the second half backward from the end), each point shifted t' = s·t / (1 + (s − 1)·t).
/// All `n` points are returned; the sampler evaluates the first `n − 1`.
pub fn timesteps(n: usize, shift: f32) -> Vec<f32> {
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![1.0];
    }
    let (start, end) = (1f32, 0f32);
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            let t = if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            };
            shift * t / (1.0 + (shift - 1.0) * t)
        })
        .collect()
}

/// Whether guidance applies at time `t`: `interval[0] < t <= interval[1]`.
pub fn cfg_active(t: f32, interval: [f32; 2]) -> bool {
    t > interval[0] && t <= interval[1]
}

/// ‖v‖ over everything (1x1 tensor) or per token row (N x 1).
fn norm(v: &Tensor, per_row: bool) -> Result<Tensor> {
    let sq = v.sqr()?;
    let s = if per_row {
        sq.sum_keepdim(D::Minus1)?
    } else {
        sq.sum_all()?.reshape((1, 1))?
    };
    Ok(s.sqrt()?)
}

/// `v_new · clamp(‖v_ref‖ / (‖v_new‖ + 1e-8), min, 1)`.
fn renorm(v_new: &Tensor, v_ref: &Tensor, per_row: bool, min: f32) -> Result<Tensor> {
    let ratio = norm(v_ref, per_row)?.div(&norm(v_new, per_row)?.affine(1.0, 1e-8)?)?;
    let scale = ratio.clamp(f64::from(min), 1.0)?;
    Ok(v_new.broadcast_mul(&scale)?)
}

/// `u + s · (v − u)`.
fn guide(u: &Tensor, v: &Tensor, s: f32) -> Result<Tensor> {
    Ok(u.add(&(v.sub(u)?.affine(f64::from(s), 0.0)?))?)
}

/// The guided velocity of one step from the conditional `v_cond` and the text- and
/// image-dropped velocities, as the official `_forward_flow` combines them.
///
/// With `text_scale <= 1` no guidance is applied at all (whatever `img_scale` is) and
/// `v_cond` is returned. Otherwise `v_text` is required, and `v_img` when `img_scale > 1`:
/// - `global` / `channel`: v' = v_i + s_i·(v_t + s_t·(v_c − v_t) − v_i) (image step only if
///   s_i > 1), then v'·clamp(‖v_c‖/(‖v'‖+1e-8), min, 1), norms over the whole tensor or per row;
/// - `text_channel`: u = v_t + s_t·(v_c − v_t) renormalised per row against v_c, then
///   v_i + s_i·(u − v_i) without renormalisation (if s_i > 1).
pub fn combine_guidance(
    v_cond: &Tensor,
    v_text: Option<&Tensor>,
    v_img: Option<&Tensor>,
    text_scale: f32,
    img_scale: f32,
    renorm_type: CfgRenorm,
    renorm_min: f32,
) -> Result<Tensor> {
    if text_scale <= 1.0 {
        return Ok(v_cond.clone());
    }
    let v_text = v_text.ok_or_else(|| {
        InferError::setting(
            "cfg_text_scale",
            "text guidance needs the text-dropped velocity",
        )
    })?;
    let v_img = if img_scale > 1.0 {
        Some(v_img.ok_or_else(|| {
            InferError::setting(
                "cfg_img_scale",
                "image guidance needs the image-dropped velocity",
            )
        })?)
    } else {
        None
    };
    for (name, v) in [("v_text", Some(v_text)), ("v_img", v_img)] {
        if let Some(v) = v {
            if v.dims() != v_cond.dims() {
                return Err(InferError::shape(
                    name,
                    format!("{:?} like v_cond", v_cond.dims()),
                    v.dims(),
                ));
            }
        }
    }
    if v_cond.rank() != 2 {
        return Err(InferError::shape(
            "v_cond",
            "(tokens, channels)",
            v_cond.dims(),
        ));
    }
    let text_guided = guide(v_text, v_cond, text_scale)?;
    match renorm_type {
        CfgRenorm::TextChannel => {
            let u = renorm(&text_guided, v_cond, true, renorm_min)?;
            match v_img {
                Some(vi) => guide(vi, &u, img_scale),
                None => Ok(u),
            }
        }
        CfgRenorm::Global | CfgRenorm::Channel => {
            let guided = match v_img {
                Some(vi) => guide(vi, &text_guided, img_scale)?,
                None => text_guided,
            };
            renorm(
                &guided,
                v_cond,
                renorm_type == CfgRenorm::Channel,
                renorm_min,
            )
        }
    }
}

/// One Euler step x_{i+1} = x_i − v_i·(t_i − t_{i+1}) (v points from data to noise).
pub fn euler_step(x: &Tensor, v: &Tensor, t: f32, t_next: f32) -> Result<Tensor> {
    Ok(x.sub(&v.affine(f64::from(t - t_next), 0.0)?)?)
}

/// Standard-normal initial noise of shape (tokens, channels), f32, seeded.
pub fn initial_noise(tokens: usize, channels: usize, seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = seeded_rng(seed);
    let data: Vec<f32> = (0..tokens * channels)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    Ok(Tensor::from_vec(data, (tokens, channels), device)?)
}

/// Pixels per latent token side: the FLUX AE downsample (8) times the latent patch (2).
pub const LATENT_DOWNSAMPLE: u32 = 16;

/// The (rows, cols) latent token grid of a `height x width` picture, h = H/16, w = W/16.
pub fn latent_grid(height: u32, width: u32) -> Result<(usize, usize)> {
    if height == 0
        || width == 0
        || height % LATENT_DOWNSAMPLE != 0
        || width % LATENT_DOWNSAMPLE != 0
    {
        return Err(InferError::setting(
            "image size",
            format!(
                "{width}x{height} is not a positive multiple of {LATENT_DOWNSAMPLE} on both sides"
            ),
        ));
    }
    Ok((
        (height / LATENT_DOWNSAMPLE) as usize,
        (width / LATENT_DOWNSAMPLE) as usize,
    ))
}

/// A terminal progress bar over the Euler steps, labelled `label`, for [`sample_flow`]
/// (indicatif hides it when stderr is not a terminal).
pub fn step_progress_bar(label: &str) -> ProgressBar {
    let style = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(0)
        .with_style(style)
        .with_message(label.to_string())
}

/// Runs the sampler from `x` (the initial noise, (tokens, channels)): for each of the first
/// `num_timesteps − 1` points of [`timesteps`], evaluates the velocity (the guidance branches
/// only when [`cfg_active`] and their scale is above 1; the official code also evaluates the
/// image branch when text guidance is off and then ignores it), combines with
/// [`combine_guidance`] and takes an [`euler_step`]. `progress` advances by one per step.
/// Returns the final latent tokens.
pub fn sample_flow<F>(
    init: Tensor,
    params: &ImageParams,
    progress: &ProgressBar,
    mut velocity: F,
) -> Result<Tensor>
where
    F: FnMut(&Tensor, f32, Branch) -> Result<Tensor>,
{
    params.validate()?;
    let ts = timesteps(params.num_timesteps, params.timestep_shift);
    progress.set_length((ts.len() - 1) as u64);
    let mut x = init.to_dtype(DType::F32)?;
    for (i, pair) in ts.windows(2).enumerate() {
        let (t, t_next) = (pair[0], pair[1]);
        let (st, si) = if cfg_active(t, params.cfg_interval) {
            (params.cfg_text_scale, params.cfg_img_scale)
        } else {
            (1.0, 1.0)
        };
        let v_cond = velocity(&x, t, Branch::Cond)?;
        let v_text = if st > 1.0 {
            Some(velocity(&x, t, Branch::CfgText)?)
        } else {
            None
        };
        let v_img = if st > 1.0 && si > 1.0 {
            Some(velocity(&x, t, Branch::CfgImg)?)
        } else {
            None
        };
        let v = combine_guidance(
            &v_cond,
            v_text.as_ref(),
            v_img.as_ref(),
            st,
            si,
            params.cfg_renorm_type,
            params.cfg_renorm_min,
        )?;
        x = euler_step(&x, &v, t, t_next)?;
        progress.set_position(i as u64 + 1);
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_endpoints_and_shift() {
        let ts = timesteps(5, 3.0);
        assert_eq!(ts.len(), 5);
        assert_eq!(ts[0], 1.0);
        assert_eq!(ts[4], 0.0);
        assert!((ts[1] - 0.9).abs() < 1e-6);
        assert!((ts[2] - 0.75).abs() < 1e-6);
        assert!((ts[3] - 0.5).abs() < 1e-6);
        // shift 1 is the plain linspace.
        assert_eq!(timesteps(3, 1.0), vec![1.0, 0.5, 0.0]);
    }

    #[test]
    fn interval_is_half_open() {
        assert!(cfg_active(1.0, [0.4, 1.0]));
        assert!(!cfg_active(0.4, [0.4, 1.0]));
        assert!(cfg_active(0.41, [0.4, 1.0]));
        assert!(!cfg_active(0.0, [0.0, 1.0]));
    }

    #[test]
    fn sampler_calls_branches_only_when_needed() {
        let dev = Device::Cpu;
        let params = ImageParams {
            num_timesteps: 5,
            ..ImageParams::default()
        };
        let mut calls = Vec::new();
        let init = Tensor::ones((4, 2), DType::F32, &dev).unwrap();
        let out = sample_flow(init, &params, &ProgressBar::hidden(), |x, t, b| {
            calls.push((t, b));
            // A constant field: every branch agrees, so guidance changes nothing.
            Ok(x.ones_like()?)
        })
        .unwrap();
        // t = 1, 0.9, 0.75, 0.5 are all inside (0.4, 1]: 3 branches each.
        assert_eq!(calls.len(), 12);
        assert_eq!(calls[2], (1.0, Branch::CfgImg));
        // x goes from 1 to 1 - (1 - 0) = 0.
        let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|&z| z.abs() < 1e-6), "{v:?}");

        let mut n = 0;
        let no_cfg = ImageParams {
            num_timesteps: 5,
            cfg_text_scale: 1.0,
            ..ImageParams::default()
        };
        let init = Tensor::ones((4, 2), DType::F32, &dev).unwrap();
        sample_flow(init, &no_cfg, &ProgressBar::hidden(), |x, _, b| {
            assert_eq!(b, Branch::Cond);
            n += 1;
            Ok(x.zeros_like()?)
        })
        .unwrap();
        assert_eq!(n, 4);
    }

    #[test]
    fn missing_branches_are_errors_and_scale_one_is_identity() {
        let dev = Device::Cpu;
        let v = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &dev).unwrap();
        assert!(combine_guidance(&v, None, None, 4.0, 1.0, CfgRenorm::Global, 0.0).is_err());
        assert!(combine_guidance(&v, Some(&v), None, 4.0, 2.0, CfgRenorm::Global, 0.0).is_err());
        let same = combine_guidance(&v, None, None, 1.0, 2.0, CfgRenorm::Global, 0.0).unwrap();
        assert_eq!(same.to_vec2::<f32>().unwrap(), v.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn latent_grid_needs_multiples_of_16() {
        assert_eq!(latent_grid(64, 32).unwrap(), (4, 2));
        assert!(latent_grid(64, 40).is_err());
        assert!(latent_grid(0, 16).is_err());
    }

    #[test]
    fn noise_is_seeded() {
        let dev = Device::Cpu;
        let a = initial_noise(3, 4, 9, &dev)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let b = initial_noise(3, 4, 9, &dev)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let c = initial_noise(3, 4, 10, &dev)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
