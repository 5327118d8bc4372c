//! Colour palettes: the ADE20K segmentation palette, the world's semantic classes, and the
//! matplotlib-compatible `Spectral` colouring of relative depth.

use image::RgbImage;

/// The ADE20K (SceneParsing, 150 classes) colour palette, indexed by the raw annotation value:
/// entry 0 is "other/unlabelled" (black), entry 1 wall, 3 sky, 4 floor, and so on. These are the
/// colours of the colour-coded segmentation maps that COOPER's stage 1 trains on.
pub const ADE20K_PALETTE: [[u8; 3]; 151] = [
    [0, 0, 0],
    [120, 120, 120],
    [180, 120, 120],
    [6, 230, 230],
    [80, 50, 50],
    [4, 200, 3],
    [120, 120, 80],
    [140, 140, 140],
    [204, 5, 255],
    [230, 230, 230],
    [4, 250, 7],
    [224, 5, 255],
    [235, 255, 7],
    [150, 5, 61],
    [120, 120, 70],
    [8, 255, 51],
    [255, 6, 82],
    [143, 255, 140],
    [204, 255, 4],
    [255, 51, 7],
    [204, 70, 3],
    [0, 102, 200],
    [61, 230, 250],
    [255, 6, 51],
    [11, 102, 255],
    [255, 7, 71],
    [255, 9, 224],
    [9, 7, 230],
    [220, 220, 220],
    [255, 9, 92],
    [112, 9, 255],
    [8, 255, 214],
    [7, 255, 224],
    [255, 184, 6],
    [10, 255, 71],
    [255, 41, 10],
    [7, 255, 255],
    [224, 255, 8],
    [102, 8, 255],
    [255, 61, 6],
    [255, 194, 7],
    [255, 122, 8],
    [0, 255, 20],
    [255, 8, 41],
    [255, 5, 153],
    [6, 51, 255],
    [235, 12, 255],
    [160, 150, 20],
    [0, 163, 255],
    [140, 140, 140],
    [250, 10, 15],
    [20, 255, 0],
    [31, 255, 0],
    [255, 31, 0],
    [255, 224, 0],
    [153, 255, 0],
    [0, 0, 255],
    [255, 71, 0],
    [0, 235, 255],
    [0, 173, 255],
    [31, 0, 255],
    [11, 200, 200],
    [255, 82, 0],
    [0, 255, 245],
    [0, 61, 255],
    [0, 255, 112],
    [0, 255, 133],
    [255, 0, 0],
    [255, 163, 0],
    [255, 102, 0],
    [194, 255, 0],
    [0, 143, 255],
    [51, 255, 0],
    [0, 82, 255],
    [0, 255, 41],
    [0, 255, 173],
    [10, 0, 255],
    [173, 255, 0],
    [0, 255, 153],
    [255, 92, 0],
    [255, 0, 255],
    [255, 0, 245],
    [255, 0, 102],
    [255, 173, 0],
    [255, 0, 20],
    [255, 184, 184],
    [0, 31, 255],
    [0, 255, 61],
    [0, 71, 255],
    [255, 0, 204],
    [0, 255, 194],
    [0, 255, 82],
    [0, 10, 255],
    [0, 112, 255],
    [51, 0, 255],
    [0, 194, 255],
    [0, 122, 255],
    [0, 255, 163],
    [255, 153, 0],
    [0, 255, 10],
    [255, 112, 0],
    [143, 255, 0],
    [82, 0, 255],
    [163, 255, 0],
    [255, 235, 0],
    [8, 184, 170],
    [133, 0, 255],
    [0, 255, 92],
    [184, 0, 255],
    [255, 0, 31],
    [0, 184, 255],
    [0, 214, 255],
    [255, 0, 112],
    [92, 255, 0],
    [0, 224, 255],
    [112, 224, 255],
    [70, 184, 160],
    [163, 0, 255],
    [153, 0, 255],
    [71, 255, 0],
    [255, 0, 163],
    [255, 204, 0],
    [255, 0, 143],
    [0, 255, 235],
    [133, 255, 0],
    [255, 0, 235],
    [245, 0, 255],
    [255, 0, 122],
    [255, 245, 0],
    [10, 190, 212],
    [214, 255, 0],
    [0, 204, 255],
    [20, 0, 255],
    [255, 255, 0],
    [0, 153, 255],
    [0, 41, 255],
    [0, 255, 204],
    [41, 0, 255],
    [41, 255, 0],
    [173, 0, 255],
    [0, 245, 255],
    [71, 0, 255],
    [122, 0, 255],
    [0, 255, 184],
    [0, 92, 255],
    [184, 255, 0],
    [0, 133, 255],
    [255, 214, 0],
    [25, 194, 194],
    [102, 255, 0],
    [92, 0, 255],
];

/// ADE20K index of "wall".
pub const ADE_WALL: u8 = 1;
/// ADE20K index of "sky".
pub const ADE_SKY: u8 = 3;
/// ADE20K index of "floor".
pub const ADE_FLOOR: u8 = 4;

/// Semantic class of a pixel in a rendered world scene.
///
/// Background classes keep their ADE20K meaning (sky, floor, wall); each object shape gets a
/// distinct, saturated ADE20K palette entry so that the colour map reads like an ADE20K target.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SemanticClass {
    /// Nothing hit: the sky/background behind an open scene.
    Sky,
    Floor,
    Wall,
    Cube,
    Cuboid,
    Sphere,
    Cylinder,
    Cone,
    Capsule,
    Pyramid,
}

impl SemanticClass {
    /// All classes, in id order.
    pub const ALL: [SemanticClass; 10] = [
        SemanticClass::Sky,
        SemanticClass::Floor,
        SemanticClass::Wall,
        SemanticClass::Cube,
        SemanticClass::Cuboid,
        SemanticClass::Sphere,
        SemanticClass::Cylinder,
        SemanticClass::Cone,
        SemanticClass::Capsule,
        SemanticClass::Pyramid,
    ];

    /// Dense class id (0 = sky, 1 = floor, 2 = wall, 3.. objects).
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The class with dense id `id`, if any.
    pub fn from_id(id: u8) -> Option<Self> {
        Self::ALL.get(id as usize).copied()
    }

    /// Index into [`ADE20K_PALETTE`] whose colour this class is drawn with.
    pub fn ade_index(self) -> u8 {
        match self {
            SemanticClass::Sky => ADE_SKY,
            SemanticClass::Floor => ADE_FLOOR,
            SemanticClass::Wall => ADE_WALL,
            SemanticClass::Cube => 8,
            SemanticClass::Cuboid => 12,
            SemanticClass::Sphere => 21,
            SemanticClass::Cylinder => 16,
            SemanticClass::Cone => 15,
            SemanticClass::Capsule => 19,
            SemanticClass::Pyramid => 36,
        }
    }

    /// The colour of this class in segmentation maps.
    pub fn color(self) -> [u8; 3] {
        ADE20K_PALETTE[self.ade_index() as usize]
    }

    /// The class whose segmentation colour is exactly `rgb`, if any.
    pub fn from_color(rgb: [u8; 3]) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.color() == rgb)
    }
}

/// Colours a row-major map of ADE20K class indices with [`ADE20K_PALETTE`] (indices above 150 and
/// missing entries are drawn black, like "other").
pub fn ade20k_colorize(labels: &[u8], width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let label = labels.get((y * width + x) as usize).copied().unwrap_or(0) as usize;
        image::Rgb(ADE20K_PALETTE.get(label).copied().unwrap_or([0, 0, 0]))
    })
}

/// Number of entries in matplotlib's default colormap lookup table.
const LUT_SIZE: usize = 256;

/// The 256-entry `Spectral` lookup table, as floats in [0, 1], built the way matplotlib builds
/// `LinearSegmentedColormap.from_list("Spectral", anchors, N=256)`: the 11 ColorBrewer anchors
/// (taken from `colorous::SPECTRAL`) sit at equally spaced positions k/10, and entry i is the
/// linear interpolation at i/255.
pub fn spectral_lut() -> [[f64; 3]; LUT_SIZE] {
    let anchors: Vec<[f64; 3]> = (0..11)
        .map(|k| {
            let c = colorous::SPECTRAL.eval_rational(k, 11);
            [c.r as f64 / 255.0, c.g as f64 / 255.0, c.b as f64 / 255.0]
        })
        .collect();
    let mut lut = [[0.0; 3]; LUT_SIZE];
    for (i, entry) in lut.iter_mut().enumerate() {
        let x = i as f64 / (LUT_SIZE - 1) as f64;
        let pos = x * 10.0;
        let k = (pos.floor() as usize).min(9);
        let frac = pos - k as f64;
        for ch in 0..3 {
            entry[ch] = anchors[k][ch] + frac * (anchors[k + 1][ch] - anchors[k][ch]);
        }
    }
    lut
}

/// Colours a relative depth map (values in [0, 1], near = 0) with matplotlib's `Spectral`
/// colormap exactly as the official inference loop does before feeding depth back to the model
/// (`colorize_depth_maps(d, 0, 1)`, then `× 255` truncated to `u8`): values are clipped to
/// [0, 1], the LUT index is `floor(v · 256)` clamped to 255, near is red and far is violet.
/// Non-finite values are drawn black (matplotlib's "bad" colour).
///
/// `depth01` is row-major with `width · height` entries; missing entries are drawn black.
pub fn spectral_colorize(depth01: &[f32], width: u32, height: u32) -> RgbImage {
    let lut = spectral_lut();
    let bytes: Vec<[u8; 3]> = lut
        .iter()
        .map(|c| [0, 1, 2].map(|ch| (c[ch] * 255.0) as u8))
        .collect();
    RgbImage::from_fn(width, height, |x, y| {
        let v = depth01
            .get((y * width + x) as usize)
            .copied()
            .unwrap_or(f32::NAN);
        if !v.is_finite() {
            return image::Rgb([0, 0, 0]);
        }
        let idx = ((v.clamp(0.0, 1.0) as f64 * LUT_SIZE as f64) as usize).min(LUT_SIZE - 1);
        image::Rgb(bytes[idx])
    })
}

/// Normalises metric depth to relative depth in [0, 1] by the min and max over valid pixels
/// (finite and > 0); invalid pixels (no surface hit) become 1.0, i.e. farthest.
pub fn normalize_depth(depth_m: &[f32]) -> Vec<f32> {
    let valid = || {
        depth_m
            .iter()
            .copied()
            .filter(|d| d.is_finite() && *d > 0.0)
    };
    let lo = valid().fold(f32::INFINITY, f32::min);
    let hi = valid().fold(f32::NEG_INFINITY, f32::max);
    let span = (hi - lo).max(1e-6);
    depth_m
        .iter()
        .map(|&d| {
            if d.is_finite() && d > 0.0 {
                ((d - lo) / span).clamp(0.0, 1.0)
            } else {
                1.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spectral_matches_matplotlib_anchors_and_ends() {
        let img = spectral_colorize(&[0.0, 0.5, 1.0, f32::NAN], 4, 1);
        // matplotlib: Spectral(0.0) = (0.6196, 0.0039, 0.2588) -> (158, 1, 66) as bytes.
        assert_eq!(img.get_pixel(0, 0).0, [158, 1, 66]);
        // Spectral(1.0) = #5e4fa2 = (94, 79, 162).
        assert_eq!(img.get_pixel(2, 0).0, [94, 79, 162]);
        // v = 0.5 -> index 128 -> x = 128/255, slightly past the #ffffbf anchor towards #e6f598:
        // r = 1 + (0.0196)(0.902-1) = 0.99808 -> 254; g = 1 + 0.0196*(0.9608-1) = 0.99923 -> 254.
        assert_eq!(img.get_pixel(1, 0).0, [254, 254, 190]);
        assert_eq!(img.get_pixel(3, 0).0, [0, 0, 0]);
    }

    #[test]
    fn semantic_colours_are_distinct_and_invertible() {
        for c in SemanticClass::ALL {
            assert_eq!(SemanticClass::from_color(c.color()), Some(c));
            assert_eq!(SemanticClass::from_id(c.id()), Some(c));
        }
    }

    #[test]
    fn normalize_depth_maps_range_and_invalid() {
        let n = normalize_depth(&[2.0, 4.0, 3.0, 0.0]);
        assert_eq!(n, vec![0.0, 1.0, 0.5, 1.0]);
    }
}
