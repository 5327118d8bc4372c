//! Scene description and deterministic scene sampling.
//!
//! World frame: metres, `+Y` up, the floor is the plane `y = 0`, `+X` is the camera's right and
//! `+Z` points away from the camera (the camera sits at `x = z = 0` looking along `+Z`, pitched
//! down). Camera frame (OpenCV convention): `x` right, `y` down, `z` forward; depth is the
//! camera-frame `z` (planar depth, as in NYUv2 and the preprocessed Hypersim/vKITTI sets).

use parry3d::math::{Pose, Rot3, Vec3};
use parry3d::shape::SharedShape;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::palette::SemanticClass;

/// Object shapes the world can place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeKind {
    Cube,
    /// A box with unequal sides (called "box" in questions).
    Cuboid,
    Sphere,
    Cylinder,
    Cone,
    Capsule,
    /// Square-based pyramid.
    Pyramid,
}

impl ShapeKind {
    /// All shapes.
    pub const ALL: [ShapeKind; 7] = [
        ShapeKind::Cube,
        ShapeKind::Cuboid,
        ShapeKind::Sphere,
        ShapeKind::Cylinder,
        ShapeKind::Cone,
        ShapeKind::Capsule,
        ShapeKind::Pyramid,
    ];

    /// The noun used in questions.
    pub fn noun(self) -> &'static str {
        match self {
            ShapeKind::Cube => "cube",
            ShapeKind::Cuboid => "box",
            ShapeKind::Sphere => "sphere",
            ShapeKind::Cylinder => "cylinder",
            ShapeKind::Cone => "cone",
            ShapeKind::Capsule => "capsule",
            ShapeKind::Pyramid => "pyramid",
        }
    }

    /// Plural noun.
    pub fn plural(self) -> &'static str {
        match self {
            ShapeKind::Cube => "cubes",
            ShapeKind::Cuboid => "boxes",
            ShapeKind::Sphere => "spheres",
            ShapeKind::Cylinder => "cylinders",
            ShapeKind::Cone => "cones",
            ShapeKind::Capsule => "capsules",
            ShapeKind::Pyramid => "pyramids",
        }
    }

    /// The semantic (segmentation) class of this shape.
    pub fn semantic(self) -> SemanticClass {
        match self {
            ShapeKind::Cube => SemanticClass::Cube,
            ShapeKind::Cuboid => SemanticClass::Cuboid,
            ShapeKind::Sphere => SemanticClass::Sphere,
            ShapeKind::Cylinder => SemanticClass::Cylinder,
            ShapeKind::Cone => SemanticClass::Cone,
            ShapeKind::Capsule => SemanticClass::Capsule,
            ShapeKind::Pyramid => SemanticClass::Pyramid,
        }
    }
}

/// Named object colours (the words used in questions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjColor {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
    Cyan,
    White,
}

impl ObjColor {
    /// All colours.
    pub const ALL: [ObjColor; 8] = [
        ObjColor::Red,
        ObjColor::Green,
        ObjColor::Blue,
        ObjColor::Yellow,
        ObjColor::Purple,
        ObjColor::Orange,
        ObjColor::Cyan,
        ObjColor::White,
    ];

    /// The word used in questions.
    pub fn name(self) -> &'static str {
        match self {
            ObjColor::Red => "red",
            ObjColor::Green => "green",
            ObjColor::Blue => "blue",
            ObjColor::Yellow => "yellow",
            ObjColor::Purple => "purple",
            ObjColor::Orange => "orange",
            ObjColor::Cyan => "cyan",
            ObjColor::White => "white",
        }
    }

    /// Diffuse albedo in [0, 1].
    pub fn albedo(self) -> [f32; 3] {
        match self {
            ObjColor::Red => [0.85, 0.12, 0.10],
            ObjColor::Green => [0.15, 0.70, 0.20],
            ObjColor::Blue => [0.12, 0.25, 0.90],
            ObjColor::Yellow => [0.92, 0.85, 0.12],
            ObjColor::Purple => [0.55, 0.18, 0.75],
            ObjColor::Orange => [0.95, 0.50, 0.08],
            ObjColor::Cyan => [0.10, 0.80, 0.85],
            ObjColor::White => [0.92, 0.92, 0.92],
        }
    }
}

/// One object standing on the floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Instance id, 1-based (0 means "no object" in instance maps).
    pub id: u16,
    pub kind: ShapeKind,
    pub color: ObjColor,
    /// Extents in metres along the object's local x (width), y (height) and z (depth) axes.
    pub size: [f32; 3],
    /// Centre of the object's bounding box in world coordinates; `y` is half the height, so the
    /// object rests on the floor.
    pub position: [f32; 3],
    /// Rotation about the vertical axis, radians.
    pub yaw: f32,
}

impl Object {
    /// "red cube".
    pub fn name(&self) -> String {
        format!("{} {}", self.color.name(), self.kind.noun())
    }

    /// Height in metres.
    pub fn height(&self) -> f32 {
        self.size[1]
    }

    /// Width in metres (local x extent; the diameter for round shapes).
    pub fn width(&self) -> f32 {
        self.size[0]
    }

    /// Radius of the smallest vertical cylinder around the object's footprint.
    pub fn footprint_radius(&self) -> f32 {
        0.5 * (self.size[0].powi(2) + self.size[2].powi(2)).sqrt()
    }

    /// World position of the centre, as a vector.
    pub fn center(&self) -> Vec3 {
        Vec3::from_array(self.position)
    }

    /// The collision/ray-cast shape in the object's local frame (centred at the origin, `+Y` up).
    pub fn shape(&self) -> SharedShape {
        let [w, h, d] = self.size;
        match self.kind {
            ShapeKind::Cube | ShapeKind::Cuboid => SharedShape::cuboid(w / 2.0, h / 2.0, d / 2.0),
            ShapeKind::Sphere => SharedShape::ball(h / 2.0),
            ShapeKind::Cylinder => SharedShape::cylinder(h / 2.0, w / 2.0),
            ShapeKind::Cone => SharedShape::cone(h / 2.0, w / 2.0),
            ShapeKind::Capsule => {
                let r = w / 2.0;
                SharedShape::capsule_y((h / 2.0 - r).max(0.0), r)
            }
            ShapeKind::Pyramid => {
                let (hw, hh, hd) = (w / 2.0, h / 2.0, d / 2.0);
                let pts = [
                    Vec3::new(-hw, -hh, -hd),
                    Vec3::new(hw, -hh, -hd),
                    Vec3::new(hw, -hh, hd),
                    Vec3::new(-hw, -hh, hd),
                    Vec3::new(0.0, hh, 0.0),
                ];
                // Five points in general position always have a hull; fall back to a box if
                // degenerate sizes ever make it fail.
                SharedShape::convex_hull(&pts).unwrap_or_else(|| SharedShape::cuboid(hw, hh, hd))
            }
        }
    }

    /// World pose of the shape.
    pub fn pose(&self) -> Pose {
        Pose::from_parts(self.center(), Rot3::from_rotation_y(self.yaw))
    }
}

/// A pinhole camera at `position`, looking along `+Z` and pitched down by `pitch` radians.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    pub position: [f32; 3],
    /// Downward pitch in radians (0 = horizontal).
    pub pitch: f32,
    /// Focal lengths in pixels.
    pub fx: f32,
    pub fy: f32,
    /// Principal point in pixels (pixel centres are at integer + 0.5).
    pub cx: f32,
    pub cy: f32,
    pub width: u32,
    pub height: u32,
}

impl Camera {
    /// A camera with a vertical field of view `fov_y` (radians), square pixels and the principal
    /// point at the image centre.
    pub fn new(position: [f32; 3], pitch: f32, fov_y: f32, width: u32, height: u32) -> Self {
        let f = 0.5 * height as f32 / (0.5 * fov_y).tan();
        Self {
            position,
            pitch,
            fx: f,
            fy: f,
            cx: 0.5 * width as f32,
            cy: 0.5 * height as f32,
            width,
            height,
        }
    }

    /// World-frame directions of the camera's `x` (right), `y` (down) and `z` (forward) axes.
    pub fn basis(&self) -> [Vec3; 3] {
        let (s, c) = self.pitch.sin_cos();
        [
            Vec3::new(1.0, 0.0, 0.0),
            Vec3::new(0.0, -c, -s),
            Vec3::new(0.0, -s, c),
        ]
    }

    /// Camera centre.
    pub fn origin(&self) -> Vec3 {
        Vec3::from_array(self.position)
    }

    /// A world point in camera coordinates (`x` right, `y` down, `z` forward).
    pub fn to_camera(&self, p: Vec3) -> Vec3 {
        let [r, d, f] = self.basis();
        let q = p - self.origin();
        Vec3::new(q.dot(r), q.dot(d), q.dot(f))
    }

    /// Projects a world point to pixel coordinates `(u, v)` and its depth; `None` behind the camera.
    pub fn project(&self, p: Vec3) -> Option<(f32, f32, f32)> {
        let c = self.to_camera(p);
        (c.z > 1e-6).then(|| {
            (
                self.fx * c.x / c.z + self.cx,
                self.fy * c.y / c.z + self.cy,
                c.z,
            )
        })
    }

    /// The unit world direction through the centre of pixel `(px, py)` and the factor that turns
    /// a distance along it into planar depth.
    pub fn pixel_ray(&self, px: u32, py: u32) -> (Vec3, f32) {
        let [r, d, f] = self.basis();
        let x = (px as f32 + 0.5 - self.cx) / self.fx;
        let y = (py as f32 + 0.5 - self.cy) / self.fy;
        let dir = r * x + d * y + f;
        let len = dir.length();
        (dir / len, 1.0 / len)
    }

    /// Horizontal half field of view, radians.
    pub fn half_fov_x(&self) -> f32 {
        (0.5 * self.width as f32 / self.fx).atan()
    }

    /// Vertical half field of view, radians.
    pub fn half_fov_y(&self) -> f32 {
        (0.5 * self.height as f32 / self.fy).atan()
    }
}

/// A directional light with ambient fill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Light {
    /// Unit vector from the surface towards the light.
    pub direction: [f32; 3],
    /// Direct light strength.
    pub intensity: f32,
    /// Ambient light strength.
    pub ambient: f32,
    /// Light colour (multiplies albedo).
    pub color: [f32; 3],
}

/// Walls behind and beside the objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Room {
    /// `z` of the back wall's inner face.
    pub back_z: f32,
    /// `|x|` of the side walls' inner faces.
    pub half_width: f32,
    pub wall_height: f32,
    pub wall_color: [f32; 3],
}

/// Half thickness of walls.
const WALL_HALF_THICKNESS: f32 = 0.1;

impl Room {
    /// The wall shapes and poses (back, left, right).
    pub fn walls(&self) -> Vec<(SharedShape, Pose)> {
        let t = WALL_HALF_THICKNESS;
        let hh = 0.5 * self.wall_height;
        let side_len = 0.5 * (self.back_z + 2.0);
        vec![
            (
                SharedShape::cuboid(self.half_width + 2.0 * t, hh, t),
                Pose::from_translation(Vec3::new(0.0, hh, self.back_z + t)),
            ),
            (
                SharedShape::cuboid(t, hh, side_len),
                Pose::from_translation(Vec3::new(-self.half_width - t, hh, side_len - 2.0)),
            ),
            (
                SharedShape::cuboid(t, hh, side_len),
                Pose::from_translation(Vec3::new(self.half_width + t, hh, side_len - 2.0)),
            ),
        ]
    }
}

/// Colours and texture of floor and background.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appearance {
    /// The two tones of the floor's checker pattern.
    pub floor_colors: [[f32; 3]; 2],
    /// Checker tile size, metres.
    pub tile: f32,
    /// Sky colour at the top and at the horizon (open scenes).
    pub sky_top: [f32; 3],
    pub sky_horizon: [f32; 3],
    /// Amplitude of per-pixel texture noise (fraction of albedo).
    pub noise: f32,
}

/// One scene: camera, light, optional room, objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    /// Stable name, e.g. `s1_000042`.
    pub id: String,
    /// The generation seed and the scene's index under it.
    pub seed: u64,
    pub index: u64,
    pub camera: Camera,
    pub light: Light,
    pub room: Option<Room>,
    pub appearance: Appearance,
    pub objects: Vec<Object>,
}

impl Scene {
    /// The object with instance id `id`.
    pub fn object(&self, id: u16) -> Option<&Object> {
        self.objects.iter().find(|o| o.id == id)
    }

    /// Camera-frame depth (planar `z`) of an object's centre.
    pub fn center_depth(&self, id: u16) -> Option<f32> {
        self.object(id).map(|o| self.camera.to_camera(o.center()).z)
    }
}

/// Settings for sampling scenes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneConfig {
    /// Image size in pixels.
    pub width: u32,
    pub height: u32,
    /// Inclusive range of the number of objects.
    pub min_objects: usize,
    pub max_objects: usize,
    /// Probability that a scene is enclosed by walls.
    pub room_probability: f64,
    /// Camera height range, metres.
    pub camera_height: (f32, f32),
    /// Camera pitch range, degrees (down).
    pub pitch_deg: (f32, f32),
    /// Vertical field of view range, degrees.
    pub fov_y_deg: (f32, f32),
    /// Minimum free gap between objects, metres.
    pub min_gap: f32,
    /// Farthest an object's centre is placed from the camera along the floor, metres (a room's
    /// back wall may bring it nearer). Nearer objects cover more of the picture.
    #[serde(default = "default_max_distance")]
    pub max_distance: f32,
}

fn default_max_distance() -> f32 {
    8.0
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            width: 128,
            height: 128,
            min_objects: 3,
            max_objects: 7,
            room_probability: 0.5,
            camera_height: (1.0, 2.0),
            pitch_deg: (10.0, 30.0),
            fov_y_deg: (50.0, 65.0),
            min_gap: 0.12,
            max_distance: default_max_distance(),
        }
    }
}

impl SceneConfig {
    /// Checks the ranges are usable.
    pub fn validate(&self) -> crate::Result<()> {
        let err = |m: &str| Err(crate::WorldError::Config(m.to_string()));
        if self.width < 16 || self.height < 16 || self.width > 4096 || self.height > 4096 {
            return err("image size must be between 16 and 4096 pixels per side");
        }
        if self.min_objects == 0 || self.min_objects > self.max_objects || self.max_objects > 12 {
            return err("object count must satisfy 1 <= min_objects <= max_objects <= 12");
        }
        if !(0.0..=1.0).contains(&self.room_probability) {
            return err("room_probability must be in [0, 1]");
        }
        let ordered = |r: (f32, f32)| r.0.is_finite() && r.1.is_finite() && r.0 <= r.1;
        if !ordered(self.camera_height) || self.camera_height.0 <= 0.2 {
            return err("camera_height must be an ordered range above 0.2 m");
        }
        if !ordered(self.pitch_deg) || self.pitch_deg.0 < 0.0 || self.pitch_deg.1 > 60.0 {
            return err("pitch_deg must be an ordered range within [0, 60]");
        }
        if !ordered(self.fov_y_deg) || self.fov_y_deg.0 < 20.0 || self.fov_y_deg.1 > 100.0 {
            return err("fov_y_deg must be an ordered range within [20, 100]");
        }
        if self.min_gap.is_nan() || self.min_gap < 0.0 {
            return err("min_gap must be non-negative");
        }
        if !(2.5..=50.0).contains(&self.max_distance) {
            return err("max_distance must be between 2.5 and 50 m");
        }
        Ok(())
    }
}

fn uniform(rng: &mut ChaCha8Rng, (lo, hi): (f32, f32)) -> f32 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

fn jitter_color(rng: &mut ChaCha8Rng, base: [f32; 3], amount: f32) -> [f32; 3] {
    base.map(|c| (c + rng.random_range(-amount..amount)).clamp(0.0, 1.0))
}

/// Samples object extents `[width, height, depth]` for a shape.
fn sample_size(rng: &mut ChaCha8Rng, kind: ShapeKind) -> [f32; 3] {
    match kind {
        ShapeKind::Cube => {
            let s = rng.random_range(0.25..0.8);
            [s, s, s]
        }
        ShapeKind::Cuboid => loop {
            let s = [0.2f32, 0.2, 0.2].map(|lo| rng.random_range(lo..1.0));
            let max = s.iter().copied().fold(0.0, f32::max);
            let min = s.iter().copied().fold(f32::INFINITY, f32::min);
            if max / min >= 1.4 {
                break s;
            }
        },
        ShapeKind::Sphere => {
            let d = rng.random_range(0.3..0.9);
            [d, d, d]
        }
        ShapeKind::Cylinder => {
            let d = rng.random_range(0.2..0.7);
            [d, rng.random_range(0.3..1.2), d]
        }
        ShapeKind::Cone => {
            let d = rng.random_range(0.3..0.8);
            [d, rng.random_range(0.3..1.0), d]
        }
        ShapeKind::Capsule => {
            let d = rng.random_range(0.2..0.5);
            [d, d + rng.random_range(0.2..0.7), d]
        }
        ShapeKind::Pyramid => {
            let b = rng.random_range(0.3..0.8);
            [b, rng.random_range(0.3..0.9), b]
        }
    }
}

/// Samples scene `index` under `seed`. The same `(config, seed, index)` always gives the same
/// scene; `rng` must be the scene's own generator (see [`crate::dataset::scene_rng`]). Call
/// [`SceneConfig::validate`] first for settings that come from users.
pub fn sample_scene(config: &SceneConfig, seed: u64, index: u64, rng: &mut ChaCha8Rng) -> Scene {
    let cam_h = uniform(rng, config.camera_height);
    let pitch = uniform(rng, config.pitch_deg).to_radians();
    let fov_y = uniform(rng, config.fov_y_deg).to_radians();
    let camera = Camera::new([0.0, cam_h, 0.0], pitch, fov_y, config.width, config.height);

    let elevation = rng.random_range(30f32..70.0).to_radians();
    let azimuth = rng.random_range(0f32..std::f32::consts::TAU);
    let light = Light {
        direction: [
            elevation.cos() * azimuth.cos(),
            elevation.sin(),
            elevation.cos() * azimuth.sin(),
        ],
        intensity: rng.random_range(0.6..0.95),
        ambient: rng.random_range(0.2..0.4),
        color: jitter_color(rng, [0.97, 0.95, 0.9], 0.05),
    };

    let half_x = camera.half_fov_x();
    let half_y = camera.half_fov_y();
    // Nearest visible floor distance (bottom image row hits the floor there).
    let bottom = pitch + half_y;
    let near_floor = if bottom >= std::f32::consts::FRAC_PI_2 - 1e-3 {
        0.0
    } else {
        cam_h / bottom.tan()
    };
    let room = rng.random_bool(config.room_probability).then(|| {
        let back_z = rng.random_range(7.0..11.0);
        Room {
            back_z,
            half_width: (back_z * half_x.tan() * rng.random_range(0.7..1.1)).max(2.5),
            wall_height: rng.random_range(2.5..4.0),
            wall_color: jitter_color(rng, [0.75, 0.72, 0.68], 0.15),
        }
    });
    let gray = rng.random_range(0.35..0.6);
    let tint = jitter_color(rng, [gray, gray * 0.95, gray * 0.9], 0.08);
    let appearance = Appearance {
        floor_colors: [tint, tint.map(|c| c * rng.random_range(0.7..0.9))],
        tile: rng.random_range(0.4..1.2),
        sky_top: jitter_color(rng, [0.45, 0.65, 0.9], 0.08),
        sky_horizon: jitter_color(rng, [0.85, 0.88, 0.92], 0.05),
        noise: rng.random_range(0.02..0.06),
    };

    let count = rng.random_range(config.min_objects..=config.max_objects.max(config.min_objects));
    let far_limit = room.as_ref().map_or(config.max_distance, |r| {
        (r.back_z - 0.5).min(config.max_distance)
    });
    let mut objects: Vec<Object> = Vec::with_capacity(count);
    let mut attempts = 0;
    while objects.len() < count && attempts < 60 * count {
        attempts += 1;
        let kind = ShapeKind::ALL[rng.random_range(0..ShapeKind::ALL.len())];
        let color = ObjColor::ALL[rng.random_range(0..ObjColor::ALL.len())];
        if objects.iter().any(|o| o.kind == kind && o.color == color) {
            continue;
        }
        let size = sample_size(rng, kind);
        let yaw = rng.random_range(0f32..std::f32::consts::PI);
        let radius = 0.5 * (size[0].powi(2) + size[2].powi(2)).sqrt();
        let z_lo = (near_floor + radius + 0.3).max(1.2);
        let z_hi = far_limit - radius;
        if z_hi <= z_lo {
            continue;
        }
        let z = rng.random_range(z_lo..z_hi);
        // Keep the footprint roughly inside the horizontal field of view.
        let lateral = (0.85 * (z * pitch.cos()) * half_x.tan() - radius).max(0.0);
        let x = if lateral > 0.0 {
            rng.random_range(-lateral..lateral)
        } else {
            0.0
        };
        if let Some(r) = &room {
            if x.abs() + radius + 0.1 > r.half_width {
                continue;
            }
        }
        let candidate = Object {
            id: objects.len() as u16 + 1,
            kind,
            color,
            size,
            position: [x, size[1] / 2.0, z],
            yaw,
        };
        if objects
            .iter()
            .all(|o| separated(o, &candidate, config.min_gap))
        {
            objects.push(candidate);
        }
    }

    Scene {
        id: scene_id(seed, index),
        seed,
        index,
        camera,
        light,
        room,
        appearance,
        objects,
    }
}

/// The name of scene `index` under `seed`.
pub fn scene_id(seed: u64, index: u64) -> String {
    format!("s{seed}_{index:06}")
}

/// True when the two objects are at least `gap` apart (exact distance between the shapes,
/// computed by parry; a footprint-circle test skips far pairs).
pub fn separated(a: &Object, b: &Object, gap: f32) -> bool {
    let (pa, pb) = (a.center(), b.center());
    let horizontal = ((pa.x - pb.x).powi(2) + (pa.z - pb.z).powi(2)).sqrt();
    if horizontal > a.footprint_radius() + b.footprint_radius() + gap {
        return true;
    }
    match parry3d::query::distance(&a.pose(), a.shape().as_ref(), &b.pose(), b.shape().as_ref()) {
        Ok(d) => d.distance >= gap,
        // Every shape pair used here is supported; treat the impossible case as a collision.
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn projection_inverts_pixel_ray() {
        let cam = Camera::new([0.0, 1.5, 0.0], 0.3, 1.0, 64, 48);
        let (dir, to_depth) = cam.pixel_ray(10, 30);
        let p = cam.origin() + dir * 5.0;
        let (u, v, z) = cam.project(p).unwrap();
        assert!((u - 10.5).abs() < 1e-3 && (v - 30.5).abs() < 1e-3);
        assert!((z - 5.0 * to_depth).abs() < 1e-4);
    }

    #[test]
    fn sampled_objects_do_not_interpenetrate() {
        let cfg = SceneConfig::default();
        for i in 0..30 {
            let mut rng = ChaCha8Rng::seed_from_u64(i);
            let s = sample_scene(&cfg, 7, i, &mut rng);
            assert!(s.objects.len() >= cfg.min_objects.min(2));
            for (k, a) in s.objects.iter().enumerate() {
                for b in &s.objects[k + 1..] {
                    let d = parry3d::query::distance(
                        &a.pose(),
                        a.shape().as_ref(),
                        &b.pose(),
                        b.shape().as_ref(),
                    )
                    .unwrap();
                    assert!(
                        d.distance >= cfg.min_gap - 1e-4,
                        "{} {} {}",
                        a.name(),
                        b.name(),
                        d.distance
                    );
                }
                // Resting on the floor.
                let aabb = a.shape().compute_aabb(&a.pose());
                assert!(
                    aabb.mins.y.abs() < 1e-3,
                    "{} bottom at {}",
                    a.name(),
                    aabb.mins.y
                );
            }
        }
    }

    #[test]
    fn max_distance_keeps_objects_near_and_scenes_full() {
        let near = SceneConfig {
            max_distance: 4.0,
            ..SceneConfig::default()
        };
        near.validate().unwrap();
        let (mut count, mut farthest) = (0, 0f32);
        for i in 0..40 {
            let mut rng = ChaCha8Rng::seed_from_u64(i);
            let s = sample_scene(&near, 3, i, &mut rng);
            count += s.objects.len();
            for o in &s.objects {
                farthest = farthest.max(o.position[2]);
            }
        }
        assert!(farthest <= 4.0, "an object stands {farthest} m away");
        // Nearer does not mean emptier: the default 3-7 objects still fit (5 on average).
        assert!(count >= 40 * 4, "{count} objects in 40 scenes");
        for bad in [2.0, f32::NAN, 80.0] {
            let cfg = SceneConfig {
                max_distance: bad,
                ..SceneConfig::default()
            };
            assert!(cfg.validate().is_err(), "{bad} accepted");
        }
    }
}
