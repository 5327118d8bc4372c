//! Semantic-segmentation metrics: mean IoU and pixel accuracy from a confusion matrix accumulated
//! over a whole dataset (the usual mmseg convention).
//!
//! Class maps come either as colour maps with a [`Palette`] (class `i` is the palette's `i`-th
//! colour; ground-truth pixels whose colour is not in the palette are ignored; predicted colours are
//! snapped to the nearest palette colour, since generated maps are never exactly on the palette) or
//! as class-id maps (pixel value = class id; an ignore id, 255 by default, is skipped).
//!
//! - IoU of class c = TP / (TP + FP + FN); classes that occur neither in the ground truth nor in the
//!   prediction have no IoU and are left out of the mean.
//! - Pixel accuracy = correctly classified / all non-ignored ground-truth pixels.
//! - Predictions that are no class (an out-of-range id, or an off-palette colour without snapping)
//!   count as wrong.

use std::collections::HashMap;

use crate::error::EvalError;

/// An ordered list of distinct class colours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Palette {
    colors: Vec<[u8; 3]>,
    lookup: HashMap<[u8; 3], usize>,
}

impl Palette {
    /// A palette from distinct colours (class `i` = `colors[i]`).
    pub fn new(colors: Vec<[u8; 3]>) -> Result<Self, EvalError> {
        let mut lookup = HashMap::new();
        for (i, c) in colors.iter().enumerate() {
            if let Some(first) = lookup.insert(*c, i) {
                return Err(EvalError::InvalidValue {
                    what: "palette",
                    value: format!("{c:?}"),
                    message: format!("colour repeated (classes {first} and {i})"),
                });
            }
        }
        if colors.is_empty() {
            return Err(EvalError::InvalidValue {
                what: "palette",
                value: String::new(),
                message: "no colours".into(),
            });
        }
        Ok(Self { colors, lookup })
    }

    /// Parses a palette file: either a JSON array of `[r, g, b]` triples, or one colour per line as
    /// `r g b`, `r,g,b` or `#rrggbb`. Empty lines and lines starting with `//` are skipped.
    pub fn parse(text: &str) -> Result<Self, EvalError> {
        let bad = |line: &str, message: &str| EvalError::InvalidValue {
            what: "palette entry",
            value: line.to_string(),
            message: message.to_string(),
        };
        let trimmed = text.trim_start();
        if trimmed.starts_with('[') {
            let colors: Vec<[u8; 3]> = serde_json::from_str(trimmed)
                .map_err(|e| bad(trimmed.lines().next().unwrap_or(""), &e.to_string()))?;
            return Self::new(colors);
        }
        let mut colors = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            if let Some(hex) = line.strip_prefix('#') {
                let v = u32::from_str_radix(hex, 16)
                    .ok()
                    .filter(|_| hex.len() == 6)
                    .ok_or_else(|| bad(line, "expected #rrggbb"))?;
                colors.push([(v >> 16) as u8, (v >> 8) as u8, v as u8]);
                continue;
            }
            let parts: Vec<u8> = line
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.parse::<u8>()
                        .map_err(|_| bad(line, "expected three values 0–255"))
                })
                .collect::<Result<_, _>>()?;
            match parts.as_slice() {
                [r, g, b] => colors.push([*r, *g, *b]),
                _ => return Err(bad(line, "expected three values 0–255")),
            }
        }
        Self::new(colors)
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.colors.len()
    }

    /// Whether the palette is empty (never true for a constructed palette).
    pub fn is_empty(&self) -> bool {
        self.colors.is_empty()
    }

    /// The class of an exact palette colour.
    pub fn exact(&self, rgb: [u8; 3]) -> Option<usize> {
        self.lookup.get(&rgb).copied()
    }

    /// The class whose colour is nearest in squared RGB distance (ties: the lower class).
    pub fn nearest(&self, rgb: [u8; 3]) -> usize {
        let d = |c: &[u8; 3]| -> u32 {
            c.iter()
                .zip(rgb)
                .map(|(&a, b)| (i32::from(a) - i32::from(b)).unsigned_abs().pow(2))
                .sum()
        };
        self.colors
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| d(c))
            .map_or(0, |(i, _)| i)
    }
}

/// A confusion matrix: rows are ground-truth classes, columns predicted classes plus a last column
/// for "no class".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    classes: usize,
    counts: Vec<u64>,
}

impl Confusion {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * (classes + 1)],
        }
    }

    /// Counts one pixel. `gt = None` (ignored) does nothing; `pred = None` (no class) or an
    /// out-of-range prediction counts as wrong.
    pub fn add(&mut self, gt: Option<usize>, pred: Option<usize>) {
        let Some(g) = gt.filter(|&g| g < self.classes) else {
            return;
        };
        let p = pred.filter(|&p| p < self.classes).unwrap_or(self.classes);
        self.counts[g * (self.classes + 1) + p] += 1;
    }

    /// Adds another matrix of the same size.
    pub fn merge(&mut self, other: &Confusion) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// The metrics of everything counted so far.
    pub fn metrics(&self) -> SegMetrics {
        let k = self.classes;
        let at = |g: usize, p: usize| self.counts[g * (k + 1) + p];
        let mut per_class = Vec::with_capacity(k);
        let (mut correct, mut total) = (0u64, 0u64);
        for c in 0..k {
            let tp = at(c, c);
            let gt_total: u64 = (0..=k).map(|p| at(c, p)).sum();
            let pred_total: u64 = (0..k).map(|g| at(g, c)).sum();
            let union = gt_total + pred_total - tp;
            per_class.push((union > 0).then(|| tp as f64 / union as f64));
            correct += tp;
            total += gt_total;
        }
        let present: Vec<f64> = per_class.iter().flatten().copied().collect();
        SegMetrics {
            miou: if present.is_empty() {
                0.0
            } else {
                present.iter().sum::<f64>() / present.len() as f64
            },
            pixel_accuracy: if total == 0 {
                0.0
            } else {
                correct as f64 / total as f64
            },
            pixels: total,
            per_class_iou: per_class,
        }
    }
}

/// Dataset-level segmentation metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegMetrics {
    /// Mean IoU over classes that occur in the ground truth or the prediction.
    pub miou: f64,
    /// Correct pixels / counted ground-truth pixels.
    pub pixel_accuracy: f64,
    /// Counted (non-ignored) ground-truth pixels.
    pub pixels: u64,
    /// IoU per class; `None` for classes absent from both.
    pub per_class_iou: Vec<Option<f64>>,
}

/// Accumulates a pair of colour maps (`rgb` triples, row-major, same size). Ground-truth colours
/// must be exact palette colours (others are ignored); predicted colours are snapped to the nearest
/// palette colour when `snap`, else they must be exact.
pub fn add_color_maps(conf: &mut Confusion, palette: &Palette, gt: &[u8], pred: &[u8], snap: bool) {
    let mut cache: HashMap<[u8; 3], Option<usize>> = HashMap::new();
    for (g, p) in gt.chunks_exact(3).zip(pred.chunks_exact(3)) {
        let g = palette.exact([g[0], g[1], g[2]]);
        if g.is_none() {
            continue;
        }
        let p = [p[0], p[1], p[2]];
        let pc = *cache.entry(p).or_insert_with(|| {
            if snap {
                Some(palette.nearest(p))
            } else {
                palette.exact(p)
            }
        });
        conf.add(g, pc);
    }
}

/// Accumulates a pair of class-id maps; ground-truth pixels equal to `ignore` are skipped.
pub fn add_id_maps(conf: &mut Confusion, gt: &[u16], pred: &[u16], ignore: Option<u16>) {
    for (&g, &p) in gt.iter().zip(pred) {
        if Some(g) == ignore {
            continue;
        }
        conf.add(Some(usize::from(g)), Some(usize::from(p)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn palette_formats() {
        let a = Palette::parse("[[0,0,0],[255,0,0]]").expect("json");
        let b = Palette::parse("// background\n0 0 0\n255,0,0\n").expect("lines");
        let c = Palette::parse("#000000\n#ff0000\n").expect("hex");
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert!(Palette::parse("0 0 0\n0 0 0\n").is_err(), "duplicate");
        assert!(Palette::parse("1 2\n").is_err());
        assert!(Palette::parse("#12345\n").is_err());
        assert!(Palette::parse("").is_err());
    }

    #[test]
    fn nearest_snapping() {
        let p = Palette::new(vec![[0, 0, 0], [255, 0, 0], [0, 0, 255]]).expect("palette");
        assert_eq!(p.nearest([250, 10, 5]), 1);
        assert_eq!(p.nearest([20, 20, 200]), 2);
        assert_eq!(p.nearest([30, 30, 30]), 0);
        assert_eq!(p.exact([255, 0, 0]), Some(1));
        assert_eq!(p.exact([254, 0, 0]), None);
    }

    #[test]
    fn id_maps_hand_computed() {
        // gt   = [0, 0, 1, 1, 2, 255]   pred = [0, 1, 1, 1, 0, 2]
        // class 0: TP 1, FN 1 (gt0→1), FP 1 (gt2→0)  → IoU 1/3
        // class 1: TP 2, FP 1 (gt0→1)                → IoU 2/3
        // class 2: TP 0, FN 1 (gt2→0); the pred 2 sits on an ignored pixel → IoU 0/1 = 0
        // class 3: absent everywhere → no IoU
        // mIoU = (1/3 + 2/3 + 0) / 3 = 1/3; pixel accuracy = 3 / 5
        let mut conf = Confusion::new(4);
        add_id_maps(
            &mut conf,
            &[0, 0, 1, 1, 2, 255],
            &[0, 1, 1, 1, 0, 2],
            Some(255),
        );
        let m = conf.metrics();
        assert_eq!(m.pixels, 5);
        assert!(close(m.pixel_accuracy, 0.6));
        assert!(close(m.miou, 1.0 / 3.0), "{}", m.miou);
        assert_eq!(m.per_class_iou[3], None);
        assert!(close(m.per_class_iou[1].expect("class 1"), 2.0 / 3.0));
    }

    #[test]
    fn out_of_range_prediction_is_wrong() {
        // gt [0, 0], pred [0, 9] with 2 classes: class 0 TP 1, FN 1 → IoU 1/2; accuracy 1/2.
        let mut conf = Confusion::new(2);
        add_id_maps(&mut conf, &[0, 0], &[0, 9], None);
        let m = conf.metrics();
        assert!(close(m.miou, 0.5) && close(m.pixel_accuracy, 0.5));
    }

    #[test]
    fn color_maps_with_snapping_and_ignored_gt() {
        let p = Palette::new(vec![[0, 0, 0], [255, 0, 0]]).expect("palette");
        // gt: black, red, red, (9,9,9 = not in palette → ignored)
        let gt = [0, 0, 0, 255, 0, 0, 255, 0, 0, 9, 9, 9];
        // pred: near-black, near-red, near-black, anything
        let pred = [10, 5, 0, 240, 20, 10, 3, 3, 3, 255, 0, 0];
        let mut conf = Confusion::new(2);
        add_color_maps(&mut conf, &p, &gt, &pred, true);
        let m = conf.metrics();
        // class 0: TP 1, FP 1 → 1/2; class 1: TP 1, FN 1 → 1/2; mIoU 1/2; accuracy 2/3
        assert_eq!(m.pixels, 3);
        assert!(close(m.miou, 0.5) && close(m.pixel_accuracy, 2.0 / 3.0));
        // Without snapping no predicted colour is exact: everything wrong.
        let mut conf = Confusion::new(2);
        add_color_maps(&mut conf, &p, &gt, &pred, false);
        assert!(close(conf.metrics().pixel_accuracy, 0.0));
    }
}
