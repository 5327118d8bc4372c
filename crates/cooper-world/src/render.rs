//! Ray-cast rendering of a [`Scene`]: RGB with diffuse shading, cast shadows and texture noise,
//! and, from the same primary rays, exact planar depth, instance ids and semantic classes.
//!
//! All intersections are computed by `parry3d` (`RayCast` on the object shapes, the walls and a
//! half-space floor); world-space AABBs reject most rays before the exact test. Rendering one scene
//! is sequential and uses no random generator (texture noise is a hash of the pixel), so the
//! output is identical whatever thread renders it.

use image::RgbImage;
use parry3d::bounding_volume::Aabb;
use parry3d::math::{Pose, Vec3};
use parry3d::query::{Ray, RayCast};
use parry3d::shape::{HalfSpace, SharedShape};

use crate::palette::SemanticClass;
use crate::scene::Scene;

/// Floor hits beyond this planar depth (metres) are treated as background, so every valid depth
/// fits a 16-bit millimetre PNG.
pub const FAR_CLIP: f32 = 50.0;

/// Per-object pixel statistics of a rendered frame.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjectStats {
    pub id: u16,
    /// Pixels where this object is the nearest surface.
    pub visible_px: u32,
    /// Pixels whose ray hits this object at all (what it would cover if nothing occluded it).
    pub full_px: u32,
    /// Mean pixel position `(u, v)` of the visible pixels (pixel centres at +0.5).
    pub centroid: [f32; 2],
    /// Visible bounding box `[min_x, min_y, max_x, max_y]` (inclusive); zeros when invisible.
    pub bbox: [u32; 4],
    /// True when the object's whole bounding box projects inside the image.
    pub in_frame: bool,
}

impl ObjectStats {
    /// Fraction of the object's in-image pixels hidden by other objects.
    pub fn occluded_fraction(&self) -> f32 {
        if self.full_px == 0 {
            1.0
        } else {
            1.0 - self.visible_px as f32 / self.full_px as f32
        }
    }
}

/// The rendered images and maps of one scene. All per-pixel vectors are row-major.
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub rgb: RgbImage,
    /// Planar depth in metres; `0.0` where no surface is hit (sky/background).
    pub depth: Vec<f32>,
    /// Instance id of the nearest object (0 = floor, wall or sky).
    pub instance: Vec<u16>,
    /// Semantic class of the nearest surface.
    pub semantic: Vec<SemanticClass>,
    /// One entry per scene object, in the scene's object order.
    pub stats: Vec<ObjectStats>,
}

impl Frame {
    /// The ADE20K-style colour map of the semantic classes.
    pub fn semantic_colors(&self) -> RgbImage {
        RgbImage::from_fn(self.width, self.height, |x, y| {
            image::Rgb(self.semantic[(y * self.width + x) as usize].color())
        })
    }

    /// Relative depth in [0, 1] (per-image min-max; background = 1).
    pub fn relative_depth(&self) -> Vec<f32> {
        crate::palette::normalize_depth(&self.depth)
    }

    /// The Spectral-coloured relative depth that the reasoning loop feeds back to the model.
    pub fn depth_colors(&self) -> RgbImage {
        crate::palette::spectral_colorize(&self.relative_depth(), self.width, self.height)
    }

    /// Statistics of object `id`.
    pub fn stats_of(&self, id: u16) -> Option<&ObjectStats> {
        self.stats.iter().find(|s| s.id == id)
    }
}

/// Something a ray can hit.
struct Target {
    shape: SharedShape,
    pose: Pose,
    aabb: Aabb,
    /// Object instance id, or 0 for walls.
    id: u16,
    albedo: [f32; 3],
}

/// Nearest hit of a primary ray.
struct Hit {
    toi: f32,
    normal: Vec3,
    /// Index into the target list, or `None` for the floor.
    target: Option<usize>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Deterministic per-pixel noise in [-1, 1].
fn pixel_noise(scene: &Scene, x: u32, y: u32) -> f32 {
    let h = splitmix(scene.seed ^ splitmix(scene.index ^ (((y as u64) << 32) | x as u64)));
    (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// Renders a scene at its camera's resolution.
pub fn render(scene: &Scene) -> Frame {
    let cam = &scene.camera;
    let (w, h) = (cam.width, cam.height);
    let mut targets: Vec<Target> = scene
        .objects
        .iter()
        .map(|o| {
            let shape = o.shape();
            let pose = o.pose();
            Target {
                aabb: shape.compute_aabb(&pose),
                shape,
                pose,
                id: o.id,
                albedo: o.color.albedo(),
            }
        })
        .collect();
    let n_objects = targets.len();
    if let Some(room) = &scene.room {
        for (shape, pose) in room.walls() {
            targets.push(Target {
                aabb: shape.compute_aabb(&pose),
                shape,
                pose,
                id: 0,
                albedo: room.wall_color,
            });
        }
    }
    let floor = HalfSpace::new(Vec3::Y);
    let identity = Pose::IDENTITY;
    let light_dir = Vec3::from_array(scene.light.direction).normalize();
    let origin = cam.origin();

    let npx = (w * h) as usize;
    let mut rgb = RgbImage::new(w, h);
    let mut depth = vec![0.0f32; npx];
    let mut instance = vec![0u16; npx];
    let mut semantic = vec![SemanticClass::Sky; npx];
    let mut visible = vec![0u32; n_objects];
    let mut full = vec![0u32; n_objects];
    let mut sum_uv = vec![[0f64; 2]; n_objects];
    let mut bbox = vec![[u32::MAX, u32::MAX, 0, 0]; n_objects];

    for py in 0..h {
        for px in 0..w {
            let (dir, to_depth) = cam.pixel_ray(px, py);
            let ray = Ray::new(origin, dir);
            let mut best: Option<Hit> = floor
                .cast_ray_and_get_normal(&identity, &ray, f32::MAX, true)
                .filter(|hit| hit.time_of_impact * to_depth <= FAR_CLIP)
                .map(|hit| Hit {
                    toi: hit.time_of_impact,
                    normal: hit.normal,
                    target: None,
                });
            // Background first (walls may hide the floor), then objects. An object hit within
            // 1 mm of the background still wins, so the rim where a shape meets the floor
            // belongs to the object despite ray-casting tolerances.
            for (k, t) in targets.iter().enumerate().skip(n_objects) {
                let limit = best.as_ref().map_or(f32::MAX, |b| b.toi);
                if t.aabb.cast_local_ray(&ray, limit, true).is_none() {
                    continue;
                }
                if let Some(hit) = t.shape.cast_ray_and_get_normal(&t.pose, &ray, limit, true) {
                    best = Some(Hit {
                        toi: hit.time_of_impact,
                        normal: hit.normal,
                        target: Some(k),
                    });
                }
            }
            let background = best.as_ref().map_or(f32::MAX, |b| b.toi + 1e-3);
            let mut nearest_object = f32::MAX;
            for (k, t) in targets.iter().enumerate().take(n_objects) {
                if t.aabb.cast_local_ray(&ray, background, true).is_none() {
                    continue;
                }
                if let Some(hit) = t
                    .shape
                    .cast_ray_and_get_normal(&t.pose, &ray, background, true)
                {
                    full[k] += 1;
                    if hit.time_of_impact < nearest_object {
                        nearest_object = hit.time_of_impact;
                        best = Some(Hit {
                            toi: hit.time_of_impact,
                            normal: hit.normal,
                            target: Some(k),
                        });
                    }
                }
            }
            let i = (py * w + px) as usize;
            let color = match best {
                None => {
                    let t = dir.y.clamp(0.0, 1.0).sqrt();
                    let a = &scene.appearance;
                    [0, 1, 2].map(|c| a.sky_horizon[c] + t * (a.sky_top[c] - a.sky_horizon[c]))
                }
                Some(hit) => {
                    let p = origin + dir * hit.toi;
                    depth[i] = hit.toi * to_depth;
                    let albedo = match hit.target {
                        None => {
                            semantic[i] = SemanticClass::Floor;
                            let a = &scene.appearance;
                            let cell =
                                (p.x / a.tile).floor() as i64 + (p.z / a.tile).floor() as i64;
                            a.floor_colors[cell.rem_euclid(2) as usize]
                        }
                        Some(k) => {
                            let t = &targets[k];
                            if k < n_objects {
                                instance[i] = t.id;
                                semantic[i] = scene.objects[k].kind.semantic();
                                visible[k] += 1;
                                sum_uv[k][0] += px as f64 + 0.5;
                                sum_uv[k][1] += py as f64 + 0.5;
                                let b = &mut bbox[k];
                                *b = [b[0].min(px), b[1].min(py), b[2].max(px), b[3].max(py)];
                            } else {
                                semantic[i] = SemanticClass::Wall;
                            }
                            t.albedo
                        }
                    };
                    let n = hit.normal.normalize_or_zero();
                    let lambert = n.dot(light_dir).max(0.0);
                    let lit = if lambert > 0.0 {
                        let shadow_ray = Ray::new(p + n * 1e-3, light_dir);
                        let blocked = targets.iter().any(|t| {
                            t.aabb.cast_local_ray(&shadow_ray, f32::MAX, true).is_some()
                                && t.shape.intersects_ray(&t.pose, &shadow_ray, f32::MAX)
                        });
                        if blocked {
                            0.0
                        } else {
                            lambert
                        }
                    } else {
                        0.0
                    };
                    let noise = 1.0 + scene.appearance.noise * pixel_noise(scene, px, py);
                    let shade = scene.light.ambient + scene.light.intensity * lit;
                    [0, 1, 2].map(|c| albedo[c] * scene.light.color[c] * shade * noise)
                }
            };
            // Display gamma (approximately sRGB).
            let px_rgb = color.map(|c| (c.clamp(0.0, 1.0).powf(1.0 / 2.2) * 255.0 + 0.5) as u8);
            rgb.put_pixel(px, py, image::Rgb(px_rgb));
        }
    }

    let stats = scene
        .objects
        .iter()
        .enumerate()
        .map(|(k, o)| {
            let aabb = targets[k].aabb;
            let in_frame = (0..8).all(|c| {
                let corner = Vec3::new(
                    if c & 1 == 0 { aabb.mins.x } else { aabb.maxs.x },
                    if c & 2 == 0 { aabb.mins.y } else { aabb.maxs.y },
                    if c & 4 == 0 { aabb.mins.z } else { aabb.maxs.z },
                );
                cam.project(corner)
                    .is_some_and(|(u, v, _)| u >= 0.0 && v >= 0.0 && u <= w as f32 && v <= h as f32)
            });
            let vis = visible[k];
            ObjectStats {
                id: o.id,
                visible_px: vis,
                full_px: full[k],
                centroid: if vis > 0 {
                    [
                        (sum_uv[k][0] / vis as f64) as f32,
                        (sum_uv[k][1] / vis as f64) as f32,
                    ]
                } else {
                    [0.0, 0.0]
                },
                bbox: if vis > 0 { bbox[k] } else { [0; 4] },
                in_frame,
            }
        })
        .collect();

    Frame {
        width: w,
        height: h,
        rgb,
        depth,
        instance,
        semantic,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::{Appearance, Camera, Light, ObjColor, Object, ShapeKind};

    fn bare_scene(camera: Camera, objects: Vec<Object>) -> Scene {
        Scene {
            id: "test".into(),
            seed: 0,
            index: 0,
            camera,
            light: Light {
                direction: [0.3, 0.8, -0.5],
                intensity: 0.8,
                ambient: 0.3,
                color: [1.0; 3],
            },
            room: None,
            appearance: Appearance {
                floor_colors: [[0.5; 3], [0.4; 3]],
                tile: 1.0,
                sky_top: [0.4, 0.6, 0.9],
                sky_horizon: [0.9; 3],
                noise: 0.03,
            },
            objects,
        }
    }

    fn object(id: u16, kind: ShapeKind, size: [f32; 3], x: f32, z: f32) -> Object {
        Object {
            id,
            kind,
            color: ObjColor::Red,
            size,
            position: [x, size[1] / 2.0, z],
            yaw: 0.0,
        }
    }

    #[test]
    fn cube_face_depth_is_analytic() {
        // Level camera at the height of the cube's centre: every pixel on the front face has
        // planar depth equal to the face's z.
        let cube = object(1, ShapeKind::Cube, [1.0, 1.0, 1.0], 0.0, 4.0);
        let cam = Camera::new([0.0, 0.5, 0.0], 0.0, 1.0, 33, 33);
        let frame = render(&bare_scene(cam, vec![cube]));
        let centre = (16 * 33 + 16) as usize;
        assert_eq!(frame.instance[centre], 1);
        assert!(
            (frame.depth[centre] - 3.5).abs() < 1e-4,
            "{}",
            frame.depth[centre]
        );
        // An off-centre pixel still on the face.
        let off = (14 * 33 + 18) as usize;
        assert_eq!(frame.instance[off], 1);
        assert!((frame.depth[off] - 3.5).abs() < 1e-4);
    }

    #[test]
    fn sphere_and_floor_depth_are_analytic() {
        let sphere = object(1, ShapeKind::Sphere, [0.8, 0.8, 0.8], 0.0, 5.0);
        let pitch = 0.2f32;
        let cam_h = 1.4;
        let cam = Camera::new([0.0, cam_h, 0.0], pitch, 0.9, 41, 41);
        let scene = bare_scene(cam.clone(), vec![sphere.clone()]);
        let frame = render(&scene);
        // The ray through the sphere's projected centre hits it at (distance - r).
        let (u, v, _) = cam.project(sphere.center()).unwrap();
        let (px, py) = (u.floor() as u32, v.floor() as u32);
        let (dir, to_depth) = cam.pixel_ray(px, py);
        // Exact ray-sphere intersection for this pixel.
        let oc = cam.origin() - sphere.center();
        let b = oc.dot(dir);
        let c = oc.length_squared() - 0.16;
        let t = -b - (b * b - c).sqrt();
        let i = (py * 41 + px) as usize;
        assert_eq!(frame.instance[i], 1);
        assert!((frame.depth[i] - t * to_depth).abs() < 1e-3);
        // Bottom-left floor pixel: intersection with y = 0.
        let (dir, to_depth) = cam.pixel_ray(0, 40);
        let t = cam_h / -dir.y;
        let i = (40 * 41) as usize;
        assert_eq!(frame.semantic[i], SemanticClass::Floor);
        assert!((frame.depth[i] - t * to_depth).abs() < 1e-3);
    }

    #[test]
    fn segmentation_pixel_is_the_object_the_ray_hits_first() {
        // Two objects where the nearer one partially hides the farther one.
        let near = object(1, ShapeKind::Cylinder, [0.6, 1.0, 0.6], -0.2, 3.0);
        let far = object(2, ShapeKind::Cuboid, [1.6, 0.8, 0.5], 0.2, 6.0);
        let cam = Camera::new([0.0, 1.2, 0.0], 0.15, 0.9, 48, 48);
        let scene = bare_scene(cam.clone(), vec![near.clone(), far.clone()]);
        let frame = render(&scene);
        let mut checked = 0;
        for py in 0..48 {
            for px in 0..48 {
                let (dir, _) = cam.pixel_ray(px, py);
                let ray = Ray::new(cam.origin(), dir);
                let toi = |o: &Object| o.shape().cast_ray(&o.pose(), &ray, f32::MAX, true);
                let floor_t = if dir.y < 0.0 {
                    -cam.origin().y / dir.y
                } else {
                    f32::MAX
                };
                let first = toi(&near)
                    .unwrap_or(f32::MAX)
                    .min(toi(&far).unwrap_or(f32::MAX));
                if (first - floor_t).abs() < 1e-3 {
                    // Grazing the line where an object meets the floor: either answer is exact.
                    continue;
                }
                let toi = |o: &Object| toi(o).filter(|t| *t < floor_t);
                let expect = match (toi(&near), toi(&far)) {
                    (Some(a), Some(b)) => {
                        checked += 1;
                        if a < b {
                            1
                        } else {
                            2
                        }
                    }
                    (Some(_), None) => 1,
                    (None, Some(_)) => 2,
                    (None, None) => 0,
                };
                assert_eq!(
                    frame.instance[(py * 48 + px) as usize],
                    expect,
                    "pixel {px},{py}"
                );
            }
        }
        assert!(
            checked > 0,
            "the test scene should contain overlapping objects"
        );
        let far_stats = frame.stats_of(2).unwrap();
        assert!(far_stats.occluded_fraction() > 0.0);
        assert_eq!(frame.stats_of(1).unwrap().occluded_fraction(), 0.0);
    }

    #[test]
    fn shadows_darken_the_floor_behind_an_object() {
        let cube = object(1, ShapeKind::Cube, [1.0, 1.0, 1.0], 0.0, 4.0);
        let cam = Camera::new([0.0, 2.0, 0.0], 0.45, 1.0, 32, 32);
        let mut scene = bare_scene(cam, vec![cube]);
        scene.appearance.noise = 0.0;
        scene.appearance.floor_colors = [[0.5; 3], [0.5; 3]];
        // Light from the right: the shadow falls on the floor left of the cube, in view.
        scene.light.direction = [0.8, 0.6, 0.0];
        let lit = render(&scene);
        let dark = lit
            .semantic
            .iter()
            .zip(lit.rgb.pixels())
            .filter(|(s, _)| **s == SemanticClass::Floor)
            .map(|(_, p)| p.0[0])
            .collect::<std::collections::BTreeSet<_>>();
        // Floor pixels come in (at least) a lit and a shadowed brightness.
        assert!(dark.len() >= 2, "{dark:?}");
    }
}
