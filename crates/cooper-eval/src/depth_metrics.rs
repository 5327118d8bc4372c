//! Monocular depth metrics after least-squares scale-and-shift alignment, as COOPER's depth
//! evaluation (Marigold's protocol) computes them (§5.1 of the design reference).
//!
//! Per image:
//! 1. **Valid mask**: ground-truth pixels with `min < d < max`, inside the evaluation crop.
//! 2. **Alignment**: the least-squares fit of `[pred, 1]` to the ground truth over valid pixels gives
//!    `scale` and `shift`; the whole prediction becomes `pred · scale + shift`, clamped to
//!    `[min, max]` and then to at least `1e-6`.
//! 3. **Metrics** over valid pixels: AbsRel `mean |p − g| / g`; SqRel `mean (p − g)² / g`; RMSE
//!    `√mean (p − g)²`; RMSE-log `√mean (ln p − ln g)²`; log10 `mean |log₁₀ p − log₁₀ g|`; δₖ the
//!    share with `max(p/g, g/p) < 1.25ᵏ`, k = 1, 2, 3; iRMSE `√mean (1/p − 1/g)²`; SILog
//!    `100 · √(mean e² − (mean e)²)` with `e = ln p − ln g`.
//!
//! The dataset figure is the mean of the per-image values. Images without valid pixels have no
//! metrics (the official code would produce NaN) and are reported separately by the caller.

use std::str::FromStr;

use crate::error::EvalError;

/// The depth range of a dataset, in metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DepthRange {
    pub min: f64,
    pub max: f64,
}

impl DepthRange {
    /// NYUv2: (1e-3, 10).
    pub const NYU: Self = Self {
        min: 1e-3,
        max: 10.0,
    };
    /// KITTI and vKITTI: (1e-5, 80).
    pub const KITTI: Self = Self {
        min: 1e-5,
        max: 80.0,
    };
}

/// The evaluation crop: pixels outside it are never valid.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Crop {
    /// The whole image.
    #[default]
    None,
    /// Rows `top..bottom` and columns `left..right` (end exclusive, clipped to the image).
    Pixels {
        top: usize,
        bottom: usize,
        left: usize,
        right: usize,
    },
    /// Rows `⌊top·H⌋..⌊bottom·H⌋` and columns `⌊left·W⌋..⌊right·W⌋`.
    Fraction {
        top: f64,
        bottom: f64,
        left: f64,
        right: f64,
    },
}

impl Crop {
    /// NYUv2's Eigen crop: rows 45..471, columns 41..601 (for 480 × 640 images).
    pub const NYU: Self = Self::Pixels {
        top: 45,
        bottom: 471,
        left: 41,
        right: 601,
    };
    /// The Eigen crop of KITTI (and vKITTI) as fractions of the image size:
    /// rows 0.3324324·H … 0.91351351·H, columns 0.0359477·W … 0.96405229·W.
    pub const KITTI: Self = Self::Fraction {
        top: 0.332_432_4,
        bottom: 0.913_513_51,
        left: 0.035_947_7,
        right: 0.964_052_29,
    };

    /// The `(top, bottom, left, right)` pixel bounds for an image of `height × width`.
    pub fn bounds(&self, height: usize, width: usize) -> (usize, usize, usize, usize) {
        match *self {
            Crop::None => (0, height, 0, width),
            Crop::Pixels {
                top,
                bottom,
                left,
                right,
            } => (
                top.min(height),
                bottom.min(height),
                left.min(width),
                right.min(width),
            ),
            Crop::Fraction {
                top,
                bottom,
                left,
                right,
            } => {
                let f = |v: f64, n: usize| ((v * n as f64) as usize).min(n);
                (
                    f(top, height),
                    f(bottom, height),
                    f(left, width),
                    f(right, width),
                )
            }
        }
    }
}

impl FromStr for Crop {
    type Err = EvalError;

    /// `none`, `nyu`, `kitti`, or `TOP:BOTTOM,LEFT:RIGHT` in pixels (e.g. `45:471,41:601`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |message: &str| EvalError::InvalidValue {
            what: "crop",
            value: s.to_string(),
            message: message.to_string(),
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => return Ok(Crop::None),
            "nyu" | "eigen-nyu" => return Ok(Crop::NYU),
            "kitti" | "garg" | "eigen-kitti" => return Ok(Crop::KITTI),
            _ => {}
        }
        let (rows, cols) = s
            .split_once(',')
            .ok_or_else(|| bad("expected none, nyu, kitti or TOP:BOTTOM,LEFT:RIGHT"))?;
        let range = |r: &str| -> Result<(usize, usize), EvalError> {
            let (a, b) = r.split_once(':').ok_or_else(|| bad("a range needs `:`"))?;
            let a = a.trim().parse().map_err(|_| bad("not a pixel index"))?;
            let b = b.trim().parse().map_err(|_| bad("not a pixel index"))?;
            if a >= b {
                return Err(bad("empty range"));
            }
            Ok((a, b))
        };
        let (top, bottom) = range(rows)?;
        let (left, right) = range(cols)?;
        Ok(Crop::Pixels {
            top,
            bottom,
            left,
            right,
        })
    }
}

/// The valid mask of a ground-truth depth map (row-major, `width × height`).
pub fn valid_mask(
    gt: &[f32],
    width: usize,
    height: usize,
    range: DepthRange,
    crop: Crop,
) -> Vec<bool> {
    let (top, bottom, left, right) = crop.bounds(height, width);
    gt.iter()
        .enumerate()
        .map(|(i, &d)| {
            let (y, x) = (i / width, i % width);
            let d = f64::from(d);
            y >= top && y < bottom && x >= left && x < right && d > range.min && d < range.max
        })
        .collect()
}

/// Least-squares `(scale, shift)` minimising `Σ (scale·p + shift − g)²` over valid pixels; `None`
/// without valid pixels. A constant prediction gets scale 0 and the mean ground truth as shift
/// (the same aligned values as NumPy's minimum-norm solution).
pub fn align_least_squares(pred: &[f32], gt: &[f32], mask: &[bool]) -> Option<(f64, f64)> {
    let valid = || {
        pred.iter()
            .zip(gt)
            .zip(mask)
            .filter(|(_, &m)| m)
            .map(|((&p, &g), _)| (f64::from(p), f64::from(g)))
    };
    let n = valid().count();
    if n == 0 {
        return None;
    }
    let (sp, sg) = valid().fold((0.0, 0.0), |(a, b), (p, g)| (a + p, b + g));
    let (mp, mg) = (sp / n as f64, sg / n as f64);
    let (cov, var) = valid().fold((0.0, 0.0), |(c, v), (p, g)| {
        (c + (p - mp) * (g - mg), v + (p - mp) * (p - mp))
    });
    if var <= f64::EPSILON * mp.abs().max(1.0) * n as f64 {
        return Some((0.0, mg));
    }
    let scale = cov / var;
    Some((scale, mg - scale * mp))
}

/// The ten depth metrics of one image (or their mean over images).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct DepthMetrics {
    pub abs_rel: f64,
    pub sq_rel: f64,
    pub rmse: f64,
    pub rmse_log: f64,
    pub log10: f64,
    pub delta1: f64,
    pub delta2: f64,
    pub delta3: f64,
    pub i_rmse: f64,
    pub silog: f64,
}

impl DepthMetrics {
    /// Computes the metrics of an (already aligned, positive) prediction over valid pixels; `None`
    /// without valid pixels.
    pub fn compute(pred: &[f64], gt: &[f32], mask: &[bool]) -> Option<Self> {
        let mut n = 0usize;
        let mut s = DepthMetrics::default();
        let (mut e_sum, mut e2_sum) = (0.0, 0.0);
        for ((&p, &g), _) in pred.iter().zip(gt).zip(mask).filter(|(_, &m)| m) {
            let g = f64::from(g);
            n += 1;
            let diff = p - g;
            s.abs_rel += diff.abs() / g;
            s.sq_rel += diff * diff / g;
            s.rmse += diff * diff;
            let e = p.ln() - g.ln();
            e_sum += e;
            e2_sum += e * e;
            s.log10 += (p.log10() - g.log10()).abs();
            let ratio = (p / g).max(g / p);
            s.delta1 += f64::from(u8::from(ratio < 1.25));
            s.delta2 += f64::from(u8::from(ratio < 1.25f64.powi(2)));
            s.delta3 += f64::from(u8::from(ratio < 1.25f64.powi(3)));
            let inv = 1.0 / p - 1.0 / g;
            s.i_rmse += inv * inv;
        }
        if n == 0 {
            return None;
        }
        let n = n as f64;
        let (mean_e, mean_e2) = (e_sum / n, e2_sum / n);
        Some(Self {
            abs_rel: s.abs_rel / n,
            sq_rel: s.sq_rel / n,
            rmse: (s.rmse / n).sqrt(),
            rmse_log: mean_e2.sqrt(),
            log10: s.log10 / n,
            delta1: s.delta1 / n,
            delta2: s.delta2 / n,
            delta3: s.delta3 / n,
            i_rmse: (s.i_rmse / n).sqrt(),
            silog: 100.0 * (mean_e2 - mean_e * mean_e).max(0.0).sqrt(),
        })
    }

    /// The mean over images; all zeros for an empty slice.
    pub fn mean(all: &[DepthMetrics]) -> DepthMetrics {
        if all.is_empty() {
            return DepthMetrics::default();
        }
        let n = all.len() as f64;
        let sum = |f: fn(&DepthMetrics) -> f64| all.iter().map(f).sum::<f64>() / n;
        DepthMetrics {
            abs_rel: sum(|m| m.abs_rel),
            sq_rel: sum(|m| m.sq_rel),
            rmse: sum(|m| m.rmse),
            rmse_log: sum(|m| m.rmse_log),
            log10: sum(|m| m.log10),
            delta1: sum(|m| m.delta1),
            delta2: sum(|m| m.delta2),
            delta3: sum(|m| m.delta3),
            i_rmse: sum(|m| m.i_rmse),
            silog: sum(|m| m.silog),
        }
    }
}

/// The result of evaluating one image.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlignedEval {
    pub scale: f64,
    pub shift: f64,
    pub valid_pixels: usize,
    pub metrics: DepthMetrics,
}

/// Masks, aligns, clamps and scores one relative-depth prediction against metric ground truth
/// (both row-major `width × height`). `None` when no pixel is valid.
pub fn evaluate_image(
    pred: &[f32],
    gt: &[f32],
    width: usize,
    height: usize,
    range: DepthRange,
    crop: Crop,
) -> Option<AlignedEval> {
    let mask = valid_mask(gt, width, height, range, crop);
    let (scale, shift) = align_least_squares(pred, gt, &mask)?;
    let aligned: Vec<f64> = pred
        .iter()
        .map(|&p| {
            (f64::from(p) * scale + shift)
                .clamp(range.min, range.max)
                .max(1e-6)
        })
        .collect();
    let metrics = DepthMetrics::compute(&aligned, gt, &mask)?;
    Some(AlignedEval {
        scale,
        shift,
        valid_pixels: mask.iter().filter(|&&m| m).count(),
        metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn least_squares_hand_computed() {
        // p = [0, 0.5, 1], g = [1, 2, 3]: exactly g = 2p + 1.
        let (s, t) =
            align_least_squares(&[0.0, 0.5, 1.0], &[1.0, 2.0, 3.0], &[true; 3]).expect("fit");
        assert!(close(s, 2.0) && close(t, 1.0), "{s} {t}");
        // p = [0, 1, 2], g = [1, 2, 4]: p̄ = 1, ḡ = 7/3, Σ(p−p̄)(g−ḡ) = 4/3 + 5/3 = 3, Σ(p−p̄)² = 2,
        // scale = 1.5, shift = 7/3 − 1.5 = 0.8333…; the masked-out 9.0 is ignored.
        let (s, t) = align_least_squares(
            &[0.0, 1.0, 2.0, 9.0],
            &[1.0, 2.0, 4.0, 0.0],
            &[true, true, true, false],
        )
        .expect("fit");
        assert!(close(s, 1.5) && close(t, 7.0 / 3.0 - 1.5), "{s} {t}");
        // Constant prediction: scale 0, shift = mean g = 2.
        assert_eq!(
            align_least_squares(&[0.5; 3], &[1.0, 2.0, 3.0], &[true; 3]),
            Some((0.0, 2.0))
        );
        assert_eq!(align_least_squares(&[0.5], &[1.0], &[false]), None);
    }

    #[test]
    fn metrics_hand_computed() {
        // p = [1, 2], g = [2, 2].
        let m = DepthMetrics::compute(&[1.0, 2.0], &[2.0, 2.0], &[true, true]).expect("metrics");
        let ln2 = 2f64.ln();
        assert!(close(m.abs_rel, 0.25)); // (|1−2|/2 + 0) / 2
        assert!(close(m.sq_rel, 0.25)); // (1/2 + 0) / 2
        assert!(close(m.rmse, 0.5f64.sqrt())); // √((1 + 0)/2)
        assert!(close(m.rmse_log, (ln2 * ln2 / 2.0).sqrt())); // √((ln ½)² / 2)
        assert!(close(m.log10, 2f64.log10() / 2.0)); // (log₁₀ 2 + 0) / 2
                                                     // ratios [2, 1]: 2 ≥ 1.25, 1.5625, 1.953125 → each δ = 1/2
        assert!(close(m.delta1, 0.5) && close(m.delta2, 0.5) && close(m.delta3, 0.5));
        assert!(close(m.i_rmse, (0.25f64 / 2.0).sqrt())); // √((1 − ½)² / 2)
                                                          // e = [−ln 2, 0]: mean e² = (ln 2)²/2, (mean e)² = (ln 2)²/4 → 100·√((ln 2)²/4) = 50 ln 2
        assert!(close(m.silog, 50.0 * ln2), "{}", m.silog);
        // ratio 1.3: fails δ1 (< 1.25), passes δ2 (< 1.5625)
        let m = DepthMetrics::compute(&[1.3], &[1.0], &[true]).expect("metrics");
        assert_eq!((m.delta1, m.delta2, m.delta3), (0.0, 1.0, 1.0));
    }

    #[test]
    fn evaluate_masks_aligns_and_clamps() {
        // 2 × 2 image, gt [1, 2, 3, 0]: the 0 is invalid (not > min). pred = (gt − 1) / 2 on valid
        // pixels, so alignment recovers scale 2, shift 1 and all metrics are perfect.
        let gt = [1.0, 2.0, 3.0, 0.0];
        let pred = [0.0, 0.5, 1.0, 0.9];
        let r = evaluate_image(&pred, &gt, 2, 2, DepthRange::NYU, Crop::None).expect("eval");
        assert!(close(r.scale, 2.0) && close(r.shift, 1.0));
        assert_eq!(r.valid_pixels, 3);
        assert!(close(r.metrics.abs_rel, 0.0) && close(r.metrics.delta1, 1.0));
        // Range (0.5, 2.5): gt 3 is not < max, so only gt [1, 2] are valid; they fit exactly.
        let r = evaluate_image(
            &pred,
            &gt,
            2,
            2,
            DepthRange { min: 0.5, max: 2.5 },
            Crop::None,
        )
        .expect("eval");
        assert_eq!(r.valid_pixels, 2);
        assert!(close(r.metrics.abs_rel, 0.0));
        // A crop keeping only the first column leaves pixels 0 and 2 (gt 1 and 3).
        let crop = Crop::Pixels {
            top: 0,
            bottom: 2,
            left: 0,
            right: 1,
        };
        let r = evaluate_image(&pred, &gt, 2, 2, DepthRange::NYU, crop).expect("eval");
        assert_eq!(r.valid_pixels, 2);
        // Nothing valid.
        assert!(evaluate_image(&pred, &[0.0; 4], 2, 2, DepthRange::NYU, Crop::None).is_none());
    }

    #[test]
    fn clamp_applies_to_aligned_values() {
        // gt [1, 2, 2], pred [0, 1, 3] (1 × 3 image): p̄ = 4/3, ḡ = 5/3,
        // Σ(p−p̄)(g−ḡ) = 8/9 − 1/9 + 5/9 = 12/9, Σ(p−p̄)² = 16/9 + 1/9 + 25/9 = 42/9
        // → scale = 2/7, shift = 5/3 − (2/7)(4/3) = 9/7; aligned [9/7, 11/7, 15/7].
        let (pred, gt) = ([0.0f32, 1.0, 3.0], [1.0f32, 2.0, 2.0]);
        let wide = DepthRange {
            min: 1e-3,
            max: 10.0,
        };
        let r = evaluate_image(&pred, &gt, 3, 1, wide, Crop::None).expect("eval");
        assert!(close(r.scale, 2.0 / 7.0) && close(r.shift, 9.0 / 7.0));
        // AbsRel = (2/7 + (3/7)/2 + (1/7)/2) / 3 = (4/7) / 3 = 4/21
        assert!(
            close(r.metrics.abs_rel, 4.0 / 21.0),
            "{}",
            r.metrics.abs_rel
        );
        // With max 2.1 the aligned 15/7 ≈ 2.143 is clamped to 2.1 (gt 2 < 2.1 stays valid):
        // AbsRel = (2/7 + 3/14 + 0.1/2) / 3 = 0.55 / 3
        let tight = DepthRange {
            min: 1e-3,
            max: 2.1,
        };
        let r = evaluate_image(&pred, &gt, 3, 1, tight, Crop::None).expect("eval");
        assert_eq!(r.valid_pixels, 3);
        assert!(
            close(r.metrics.abs_rel, 0.55 / 3.0),
            "{}",
            r.metrics.abs_rel
        );
    }

    #[test]
    fn crop_parsing_and_bounds() {
        assert_eq!("none".parse::<Crop>().expect("none"), Crop::None);
        assert_eq!("nyu".parse::<Crop>().expect("nyu"), Crop::NYU);
        assert_eq!(
            "1:3, 2:4".parse::<Crop>().expect("pixels"),
            Crop::Pixels {
                top: 1,
                bottom: 3,
                left: 2,
                right: 4
            }
        );
        assert!("3:1,0:2".parse::<Crop>().is_err());
        assert!("abc".parse::<Crop>().is_err());
        // 0.5 · 10 = 5, 0.25 · 8 = 2
        let c = Crop::Fraction {
            top: 0.5,
            bottom: 1.0,
            left: 0.25,
            right: 0.75,
        };
        assert_eq!(c.bounds(10, 8), (5, 10, 2, 6));
        assert_eq!(Crop::NYU.bounds(100, 100), (45, 100, 41, 100));
    }

    #[test]
    fn mean_over_images() {
        let a = DepthMetrics {
            abs_rel: 0.1,
            delta1: 1.0,
            ..Default::default()
        };
        let b = DepthMetrics {
            abs_rel: 0.3,
            delta1: 0.5,
            ..Default::default()
        };
        let m = DepthMetrics::mean(&[a, b]);
        assert!(close(m.abs_rel, 0.2) && close(m.delta1, 0.75));
    }
}
