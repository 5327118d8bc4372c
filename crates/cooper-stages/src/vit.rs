//! The `vit` stage: dense pretraining of the vision tower on stage-1 data.
//!
//! COOPER starts from BAGEL, whose SigLIP ViT was pretrained on billions of image-text pairs;
//! the understanding path reads pictures through features that already name what is where. A
//! model trained from scratch has no such tower, and learning one from the language loss alone
//! is slow: the default model trained that way answered the same with another scene's picture
//! (docs/results.md, the shuffled-images control). This stage stands in for that pretraining
//! with the supervision stage 1 already has: through two linear heads on the ViT's output
//! tokens, each patch learns its semantic-class histogram (from the segmentation maps, whose
//! colours are ADE20K palette entries) and its mean depth (from the depth maps, as stage 1's
//! [−1, 1] pseudo-image value). Linear heads keep the work in the ViT: the features themselves
//! must make class and depth readable, which is what the connector and the LLM then rely on.
//! A third head (`vit.color_weight`) regresses the mean colour of each patch's object pixels:
//! the segmentation classes are shapes, and a ViT trained on shape and depth alone, then frozen,
//! need not keep the hue by which questions name objects ("the red cube").
//!
//! Only `vit_model.*` is trained; the heads live in
//! the run's checkpoints (for resume) but not in the exported folder, whose weights keep the
//! official names and load anywhere a BAGEL checkpoint does.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use cooper_train::config::{TrainConfig, VitTrainConfig};
use cooper_world::palette::{ADE20K_PALETTE, ADE_FLOOR, ADE_SKY, ADE_WALL};
use cooper_world::readers::{read_stage1_index, Stage1Target};
use image::{imageops::FilterType, RgbImage};
use rand::Rng;

use crate::data::{image_root_for, Order};
use crate::driver::{drive, finish, open_loop, Micro, RunOptions, StageReport};
use crate::error::{Result, StageError};
use crate::model::{export_model_folder, sorted_vars, ExportedWeights, TrainableModel};
use crate::pictures::{
    depth_target, load_rgb, patches_of, picture_size, resize_to, resizes, DepthEncoding,
};

/// Classes of the class head: the ADE20K palette (index 0 is "other").
pub const CLASS_COUNT: usize = ADE20K_PALETTE.len();

/// Name prefix of the heads' weights in checkpoints (never exported).
pub const HEAD_PREFIX: &str = "vit_pretrain_head";

/// Palette classes that are not objects for the colour head: ADE20K's "other" (0), sky, floor
/// and wall, the world's background.
pub const BACKGROUND_CLASSES: [usize; 4] =
    [0, ADE_SKY as usize, ADE_FLOOR as usize, ADE_WALL as usize];

/// A patch gets a colour target when at least this share of its pixels are object pixels: below
/// it the mean would be a sliver's edge, blended with the floor by the resize.
pub const MIN_OBJECT_SHARE: f32 = 0.125;

/// One picture and the dense targets the stage-1 files give for it.
#[derive(Debug, Clone, PartialEq)]
pub struct VitPicture {
    pub rgb: PathBuf,
    /// Colour-coded segmentation map (ADE20K palette colours).
    pub seg: Option<PathBuf>,
    pub depth: Option<(PathBuf, DepthEncoding)>,
}

/// Groups the rows of the stage-1 JSONL files in `data.files` by picture (a world writes one
/// depth and one segmentation row per picture), in first-seen order.
pub fn collect_pictures(config: &TrainConfig) -> Result<Vec<VitPicture>> {
    let data = &config.data;
    if data.files.is_empty() {
        return Err(StageError::Input(
            "no training data: set data.files to stage-1 JSONL files (depth and/or segmentation \
             rows)"
                .into(),
        ));
    }
    let mut out: Vec<VitPicture> = Vec::new();
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    for file in &data.files {
        if file.is_dir() {
            return Err(StageError::Input(format!(
                "{}: the vit stage needs stage-1 JSONL files with depth or segmentation targets, \
                 not a folder of pictures",
                file.display()
            )));
        }
        for entry in read_stage1_index(file, &image_root_for(data, file))? {
            let k = *index.entry(entry.rgb.clone()).or_insert_with(|| {
                out.push(VitPicture {
                    rgb: entry.rgb.clone(),
                    seg: None,
                    depth: None,
                });
                out.len() - 1
            });
            let encoding = DepthEncoding::for_row(data, &entry);
            match entry.target {
                Stage1Target::Segmentation(p) => out[k].seg = Some(p),
                Stage1Target::Depth(p) => out[k].depth = Some((p, encoding)),
            }
        }
    }
    if out.is_empty() {
        return Err(StageError::Input("data.files holds no rows".into()));
    }
    Ok(out)
}

/// ADE20K palette colour → class index (the first index where colours repeat).
fn palette_lookup() -> HashMap<[u8; 3], usize> {
    let mut map = HashMap::new();
    for (k, rgb) in ADE20K_PALETTE.iter().enumerate() {
        map.entry(*rgb).or_insert(k);
    }
    map
}

/// Per-patch class histograms of a segmentation map already at the ViT input size:
/// (rows·cols·CLASS_COUNT) shares, row-major by patch, and a per-patch 1/0 mask (0 where no
/// pixel of the patch has a palette colour). An error when no pixel at all does.
pub fn class_histograms(
    seg: &RgbImage,
    patch: usize,
    lookup: &HashMap<[u8; 3], usize>,
    what: &str,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let (w, h) = (seg.width() as usize, seg.height() as usize);
    let (rows, cols) = (h / patch, w / patch);
    let mut hist = vec![0f32; rows * cols * CLASS_COUNT];
    let mut counted = vec![0f32; rows * cols];
    for (x, y, px) in seg.enumerate_pixels() {
        let (r, c) = (y as usize / patch, x as usize / patch);
        if r >= rows || c >= cols {
            continue;
        }
        if let Some(&class) = lookup.get(&px.0) {
            hist[(r * cols + c) * CLASS_COUNT + class] += 1.0;
            counted[r * cols + c] += 1.0;
        }
    }
    if counted.iter().all(|&n| n == 0.0) {
        return Err(StageError::Input(format!(
            "{what}: no pixel has an ADE20K palette colour (is it a colour-coded segmentation map?)"
        )));
    }
    for (k, &n) in counted.iter().enumerate() {
        if n > 0.0 {
            for v in &mut hist[k * CLASS_COUNT..(k + 1) * CLASS_COUNT] {
                *v /= n;
            }
        }
    }
    let mask = counted
        .iter()
        .map(|&n| f32::from(u8::from(n > 0.0)))
        .collect();
    Ok((hist, mask))
}

/// Per-patch mean colour of the object pixels of a picture and its segmentation map, both at
/// the ViT input size: (rows·cols·3) values in [−1, 1], row-major by patch, and a per-patch 1/0
/// mask (1 where at least [`MIN_OBJECT_SHARE`] of the patch's pixels are object pixels, i.e.
/// have a palette colour whose class is not in [`BACKGROUND_CLASSES`]).
pub fn object_colors(
    rgb: &RgbImage,
    seg: &RgbImage,
    patch: usize,
    lookup: &HashMap<[u8; 3], usize>,
    what: &str,
) -> Result<(Vec<f32>, Vec<f32>)> {
    if rgb.dimensions() != seg.dimensions() {
        return Err(StageError::Input(format!(
            "{what}: the segmentation map is {:?} px at the ViT size but the picture is {:?}",
            seg.dimensions(),
            rgb.dimensions()
        )));
    }
    let (w, h) = (seg.width() as usize, seg.height() as usize);
    let (rows, cols) = (h / patch, w / patch);
    let mut sums = vec![0f32; rows * cols * 3];
    let mut counts = vec![0f32; rows * cols];
    for (x, y, px) in seg.enumerate_pixels() {
        let (r, c) = (y as usize / patch, x as usize / patch);
        if r >= rows || c >= cols {
            continue;
        }
        match lookup.get(&px.0) {
            Some(class) if !BACKGROUND_CLASSES.contains(class) => {
                let k = r * cols + c;
                for (ch, v) in rgb.get_pixel(x, y).0.iter().enumerate() {
                    sums[k * 3 + ch] += f32::from(*v);
                }
                counts[k] += 1.0;
            }
            _ => {}
        }
    }
    let min = MIN_OBJECT_SHARE * (patch * patch) as f32;
    let mut mask = vec![0f32; rows * cols];
    for (k, &n) in counts.iter().enumerate() {
        if n >= min {
            mask[k] = 1.0;
            for v in &mut sums[k * 3..(k + 1) * 3] {
                *v = *v / n / 127.5 - 1.0;
            }
        } else {
            sums[k * 3..(k + 1) * 3].fill(0.0);
        }
    }
    Ok((sums, mask))
}

/// The linear heads on the ViT's output tokens: class and depth, and the object colour when its
/// weight is not 0.
pub struct DenseHeads {
    class: Linear,
    depth: Linear,
    color: Option<Linear>,
}

impl DenseHeads {
    /// Zero-initialised heads (deterministic; the ViT's gradient starts once they move); the
    /// colour head only `with_color`.
    pub fn new(
        vit_hidden: usize,
        with_color: bool,
        varmap: &VarMap,
        device: &Device,
    ) -> Result<Self> {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, device).pp(HEAD_PREFIX);
        let zeros = candle_nn::Init::Const(0.0);
        let linear = |out: usize, name: &str| -> Result<Linear> {
            let vb = vb.pp(name);
            let w = vb.get_with_hints((out, vit_hidden), "weight", zeros)?;
            let b = vb.get_with_hints(out, "bias", zeros)?;
            Ok(Linear::new(w, Some(b)))
        };
        Ok(Self {
            class: linear(CLASS_COUNT, "class")?,
            depth: linear(1, "depth")?,
            color: if with_color {
                Some(linear(3, "color")?)
            } else {
                None
            },
        })
    }
}

/// Dense targets of a micro-batch, row-aligned with the packed ViT tokens.
pub struct PatchTargets {
    /// (N, CLASS_COUNT) class shares.
    pub classes: Tensor,
    /// (N,) 1 where `classes` is defined.
    pub class_mask: Tensor,
    /// (N,) mean depth as a [−1, 1] pseudo-image value.
    pub depth: Tensor,
    /// (N,) 1 where `depth` is defined.
    pub depth_mask: Tensor,
    /// (N, 3) mean RGB of the patch's object pixels, in [−1, 1].
    pub colors: Tensor,
    /// (N,) 1 where `colors` is defined.
    pub color_mask: Tensor,
}

/// Class weights f_c^−α from pixel shares `shares` (CLASS_COUNT), scaled so that Σ f_c·w_c = 1;
/// classes never seen get the largest weight of those seen.
pub fn class_weights(shares: &[f64], alpha: f64) -> Vec<f32> {
    let raw: Vec<f64> = shares
        .iter()
        .map(|&f| if f > 0.0 { f.powf(-alpha) } else { 0.0 })
        .collect();
    let mean: f64 = shares.iter().zip(&raw).map(|(f, w)| f * w).sum();
    let top = raw.iter().copied().fold(0.0, f64::max);
    raw.iter()
        .map(|&w| {
            let w = if w > 0.0 { w } else { top };
            if mean > 0.0 {
                (w / mean) as f32
            } else {
                1.0
            }
        })
        .collect()
}

/// The loss of ViT features (N, H_v) against `targets`: (weighted total, metrics).
/// `class_weights` (CLASS_COUNT) weigh each class in the cross-entropy; `weights` holds each
/// head's weight in the total.
pub fn dense_loss(
    heads: &DenseHeads,
    feats: &Tensor,
    targets: &PatchTargets,
    class_weights: &Tensor,
    weights: &VitTrainConfig,
) -> Result<(Tensor, BTreeMap<String, f64>)> {
    let (class_weight, depth_weight) = (weights.class_weight, weights.depth_weight);
    let feats = feats.to_dtype(DType::F32)?;
    let scalar = |t: &Tensor| -> Result<f64> { Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
    let mut metrics = BTreeMap::new();
    let mut total = Tensor::zeros((), DType::F32, feats.device())?;
    let class_n = scalar(&targets.class_mask.sum_all()?)?;
    if class_n > 0.0 && class_weight > 0.0 {
        let logits = heads.class.forward(&feats)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        // Soft-target cross-entropy per patch, averaged over the patches with a target.
        let weighted = targets
            .classes
            .broadcast_mul(&class_weights.unsqueeze(0)?)?;
        let ce = (logp * weighted)?.sum(D::Minus1)?.neg()?;
        let ce = ((ce * &targets.class_mask)?.sum_all()? / class_n)?;
        let predicted: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
        let truth: Vec<u32> = targets.classes.argmax(D::Minus1)?.to_vec1()?;
        let mask: Vec<f32> = targets.class_mask.to_vec1()?;
        let (accuracy, mean_recall) = patch_accuracy(&predicted, &truth, &mask);
        metrics.insert("class_ce".to_string(), scalar(&ce)?);
        metrics.insert("class_acc".to_string(), accuracy);
        metrics.insert("class_mean_recall".to_string(), mean_recall);
        total = (total + (ce * class_weight)?)?;
    }
    let depth_n = scalar(&targets.depth_mask.sum_all()?)?;
    if depth_n > 0.0 && depth_weight > 0.0 {
        let pred = heads.depth.forward(&feats)?.squeeze(1)?;
        let err = (pred - &targets.depth)?.sqr()?;
        let mse = ((err * &targets.depth_mask)?.sum_all()? / depth_n)?;
        metrics.insert("depth_mse".to_string(), scalar(&mse)?);
        total = (total + (mse * depth_weight)?)?;
    }
    let color_n = scalar(&targets.color_mask.sum_all()?)?;
    if let (Some(head), true) = (&heads.color, color_n > 0.0 && weights.color_weight > 0.0) {
        // Summed over the three channels: the squared colour distance per patch.
        let err = (head.forward(&feats)? - &targets.colors)?
            .sqr()?
            .sum(D::Minus1)?;
        let mse = ((err * &targets.color_mask)?.sum_all()? / color_n)?;
        metrics.insert("color_mse".to_string(), scalar(&mse)?);
        total = (total + (mse * weights.color_weight)?)?;
    }
    Ok((total, metrics))
}

/// Over the patches with a target (`mask` 1), the share whose predicted class is their majority
/// class, and the mean over the majority classes present of that share (each class counted
/// alike, so that a few small objects weigh as much as the floor around them).
pub fn patch_accuracy(predicted: &[u32], truth: &[u32], mask: &[f32]) -> (f64, f64) {
    let mut per_class: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for ((&p, &t), &m) in predicted.iter().zip(truth).zip(mask) {
        if m > 0.0 {
            let e = per_class.entry(t).or_default();
            e.0 += usize::from(p == t);
            e.1 += 1;
        }
    }
    let (hits, total) = per_class
        .values()
        .fold((0, 0), |(h, n), &(ch, cn)| (h + ch, n + cn));
    if total == 0 {
        return (0.0, 0.0);
    }
    let recall: f64 = per_class
        .values()
        .map(|&(h, n)| h as f64 / n as f64)
        .sum::<f64>()
        / per_class.len() as f64;
    (hits as f64 / total as f64, recall)
}

/// Mean of each `patch`×`patch` block of a (H, W) plane, row-major: (rows·cols).
fn patch_means(plane: &Tensor, patch: usize) -> Result<Tensor> {
    let (h, w) = plane.dims2()?;
    let (rows, cols) = (h / patch, w / patch);
    Ok(plane
        .narrow(0, 0, rows * patch)?
        .narrow(1, 0, cols * patch)?
        .reshape((rows, patch, cols, patch))?
        .mean(3)?
        .mean(1)?
        .flatten_all()?)
}

/// One picture at the ViT input size: patches (n, 3p²), position ids (n,) and its targets.
struct Sample {
    patches: Tensor,
    position_ids: Tensor,
    classes: Vec<f32>,
    class_mask: Vec<f32>,
    depth: Tensor,
    depth_mask: Vec<f32>,
    colors: Vec<f32>,
    color_mask: Vec<f32>,
}

struct Loader<'a> {
    model: &'a TrainableModel,
    vae_resize: cooper_infer::transforms::ResizeConfig,
    vit_resize: cooper_infer::transforms::ResizeConfig,
    lookup: HashMap<[u8; 3], usize>,
    device: &'a Device,
}

impl Loader<'_> {
    fn patch_size(&self) -> usize {
        self.model.model.config.vit.patch_size
    }

    /// The segmentation map at `path`, resized to the ViT input size `(w, h)` (nearest, so that
    /// every pixel keeps a palette colour).
    fn seg_at(&self, path: &Path, size: (u32, u32), flip: bool) -> Result<RgbImage> {
        let mut seg =
            image::imageops::resize(&load_rgb(path)?, size.0, size.1, FilterType::Nearest);
        if flip {
            image::imageops::flip_horizontal_in_place(&mut seg);
        }
        Ok(seg)
    }

    /// Per-patch class histograms and their mask from the segmentation map at `path`, resized
    /// to the ViT input size `(w, h)`.
    fn class_targets(
        &self,
        path: &Path,
        size: (u32, u32),
        flip: bool,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        class_histograms(
            &self.seg_at(path, size, flip)?,
            self.patch_size(),
            &self.lookup,
            &path.display().to_string(),
        )
    }

    /// The picture's size at the ViT input (the VAE resize, then the ViT resize), read from the
    /// picture file's header.
    fn vit_size(&self, picture: &VitPicture) -> Result<(u32, u32)> {
        let (w0, h0) = picture_size(&picture.rgb)?;
        let vae_size = self.vae_resize.target_size(w0, h0)?;
        Ok(self.vit_resize.target_size(vae_size.0, vae_size.1)?)
    }

    /// One picture and its targets; the object colours only `with_color`.
    fn load(&self, picture: &VitPicture, flip: bool, with_color: bool) -> Result<Sample> {
        let p = self.patch_size();
        let rgb = load_rgb(&picture.rgb)?;
        let vae_size = self.vae_resize.target_size(rgb.width(), rgb.height())?;
        // Flipped before the ViT resize: the resize filter is symmetric, so this is the flip of
        // what inference sees, up to rounding.
        let vit_rgb = self.vit_resize.resize(&resize_to(&rgb, vae_size, flip))?;
        let (patches, h, w) = patches_of(&vit_rgb, p, self.model.model.dtype(), self.device)?;
        let n = patches.dim(0)?;
        let position_ids = self.model.model.vit_position_ids(h, w)?;
        let seg = match &picture.seg {
            Some(path) => Some((self.seg_at(path, (w as u32, h as u32), flip)?, path)),
            None => None,
        };
        let (classes, class_mask) = match &seg {
            Some((map, path)) => {
                class_histograms(map, p, &self.lookup, &path.display().to_string())?
            }
            None => (vec![0.0; n * CLASS_COUNT], vec![0.0; n]),
        };
        let (colors, color_mask) = match &seg {
            Some((map, path)) if with_color => {
                object_colors(&vit_rgb, map, p, &self.lookup, &path.display().to_string())?
            }
            _ => (vec![0.0; n * 3], vec![0.0; n]),
        };
        let (depth, depth_mask) = match &picture.depth {
            Some((path, enc)) => {
                let plane = depth_target(path, *enc, (w as u32, h as u32), flip, self.device)?;
                (patch_means(&plane.get(0)?, p)?, vec![1.0; n])
            }
            None => (Tensor::zeros(n, DType::F32, self.device)?, vec![0.0; n]),
        };
        if classes.len() != n * CLASS_COUNT || depth.dim(0)? != n {
            return Err(StageError::Input(format!(
                "{}: {w}x{h} px at the ViT size gives {n} patches of {p} px, but its targets \
                 cover {} (the picture's sides must be multiples of the patch size)",
                picture.rgb.display(),
                class_mask.len()
            )));
        }
        Ok(Sample {
            patches,
            position_ids,
            classes,
            class_mask,
            depth,
            depth_mask,
            colors,
            color_mask,
        })
    }
}

/// Pixel share of each class over up to `limit` segmentation maps of `pictures` (evenly
/// spaced), at the ViT input size. Reads only the maps (and the pictures' headers for their size).
fn class_shares(loader: &Loader<'_>, pictures: &[VitPicture], limit: usize) -> Result<Vec<f64>> {
    let with_seg: Vec<(&VitPicture, &PathBuf)> = pictures
        .iter()
        .filter_map(|p| p.seg.as_ref().map(|seg| (p, seg)))
        .collect();
    let step = with_seg.len().div_ceil(limit.max(1)).max(1);
    let mut totals = vec![0f64; CLASS_COUNT];
    for (picture, seg) in with_seg.iter().step_by(step) {
        let (classes, _) = loader.class_targets(seg, loader.vit_size(picture)?, false)?;
        for (k, v) in classes.iter().enumerate() {
            totals[k % CLASS_COUNT] += f64::from(*v);
        }
    }
    let sum: f64 = totals.iter().sum();
    if sum > 0.0 {
        totals.iter_mut().for_each(|t| *t /= sum);
    }
    Ok(totals)
}

/// Packs samples into one ViT batch: (patches, position ids, seqlens, targets).
fn pack(
    samples: Vec<Sample>,
    device: &Device,
) -> Result<(Tensor, Tensor, Vec<usize>, PatchTargets)> {
    let seqlens: Vec<usize> = samples.iter().map(|s| s.class_mask.len()).collect();
    let n: usize = seqlens.iter().sum();
    let cat = |f: &dyn Fn(&Sample) -> &Tensor| -> Result<Tensor> {
        Ok(Tensor::cat(&samples.iter().map(f).collect::<Vec<_>>(), 0)?)
    };
    let patches = cat(&|s| &s.patches)?;
    let ids = cat(&|s| &s.position_ids)?;
    let depth = cat(&|s| &s.depth)?;
    let flat = |f: &dyn Fn(&Sample) -> &Vec<f32>| -> Vec<f32> {
        samples.iter().flat_map(|s| f(s).iter().copied()).collect()
    };
    let targets = PatchTargets {
        classes: Tensor::from_vec(flat(&|s| &s.classes), (n, CLASS_COUNT), device)?,
        class_mask: Tensor::from_vec(flat(&|s| &s.class_mask), n, device)?,
        depth,
        depth_mask: Tensor::from_vec(flat(&|s| &s.depth_mask), n, device)?,
        colors: Tensor::from_vec(flat(&|s| &s.colors), (n, 3), device)?,
        color_mask: Tensor::from_vec(flat(&|s| &s.color_mask), n, device)?,
    };
    Ok((patches, ids, seqlens, targets))
}

/// Trains the ViT of `model.init_from` (else of `model.model_path`) and exports the folder
/// with it; everything else is carried over unchanged.
pub fn train(config: &TrainConfig, opts: &RunOptions) -> Result<StageReport> {
    let device = &opts.device;
    let model = TrainableModel::load(&config.model, opts.dtype, device)?;
    // The ViT's weights, less any the freeze settings hold (the rest of the model is untouched).
    let mut params: Vec<(String, Var)> = model
        .all_vars()?
        .into_iter()
        .filter(|(name, _)| name.starts_with("vit_model.") && config.freeze.is_trainable(name))
        .collect();
    if params.is_empty() {
        return Err(StageError::Input(
            "the vit stage trains the ViT, but freeze.vit (or freeze.extra_prefixes) freezes \
             all of it"
                .into(),
        ));
    }
    let heads_map = VarMap::new();
    let with_color = config.vit.color_weight > 0.0;
    let heads = DenseHeads::new(
        model.model.config.vit.hidden_size,
        with_color,
        &heads_map,
        device,
    )?;
    params.extend(sorted_vars(&heads_map)?);

    let pictures = collect_pictures(config)?;
    let (vae_resize, vit_resize) = resizes(&model.folder, config.data.max_image_size);
    let loader = Loader {
        model: &model,
        vae_resize,
        vit_resize,
        lookup: palette_lookup(),
        device,
    };
    let vit_cfg = &config.vit;
    let weights = if vit_cfg.class_balance > 0.0 {
        class_weights(
            &class_shares(&loader, &pictures, 512)?,
            vit_cfg.class_balance,
        )
    } else {
        vec![1.0; CLASS_COUNT]
    };
    let class_weights_t = Tensor::from_vec(weights, CLASS_COUNT, device)?;
    let mut run = open_loop(config, params, opts)?;
    let mut order = Order::new(pictures.len(), config.run.seed);
    let stats = drive(&mut run, opts, |run| {
        let mut samples = Vec::with_capacity(vit_cfg.batch_size);
        for _ in 0..vit_cfg.batch_size {
            let mut cursor = run.data_cursor().clone();
            let idx = order.at(&cursor);
            order.advance(&mut cursor);
            *run.data_cursor_mut() = cursor;
            let flip = run.rng().random::<f64>() < config.data.flip_prob;
            samples.push(loader.load(&pictures[idx], flip, with_color)?);
        }
        let (patches, ids, seqlens, targets) = pack(samples, device)?;
        let feats = model.model.vit_model.forward(&patches, &ids, &seqlens)?;
        let (loss, metrics) = dense_loss(&heads, &feats, &targets, &class_weights_t, vit_cfg)?;
        Ok(Micro {
            loss,
            metrics,
            tokens: seqlens.iter().sum(),
        })
    })?;

    // The EMA where kept (its head entries are ignored: only the model's names are looked up).
    let overrides = run.ema().map(|e| e.tensors()).unwrap_or_default();
    let exported = model.weights_with(&overrides)?;
    let model_dir = export_model_folder(
        &model.folder,
        &config.run.out_dir.join("model"),
        ExportedWeights {
            model: None,
            ema: Some(&exported),
            ae: None,
            reasoning: model.reasoning,
        },
        opts.export_dtype,
    )?;
    finish(config, &run, &stats, model_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_histograms_share_each_patch_among_its_palette_colours() {
        let lookup = palette_lookup();
        let (a, b) = (ADE20K_PALETTE[3], ADE20K_PALETTE[8]);
        // A 4×2 map in 2-px patches: patch 0 is 3/4 class 3 and 1/4 class 8; patch 1 has one
        // class-8 pixel and three colours outside the palette.
        let mut img = RgbImage::new(4, 2);
        let odd = image::Rgb([1, 2, 3]);
        assert!(!lookup.contains_key(&odd.0));
        for (x, y, px) in img.enumerate_pixels_mut() {
            *px = match (x, y) {
                (0, 0) | (1, 0) | (0, 1) => image::Rgb(a),
                (1, 1) | (2, 0) => image::Rgb(b),
                _ => odd,
            };
        }
        let (hist, mask) = class_histograms(&img, 2, &lookup, "m").unwrap();
        assert_eq!(mask, vec![1.0, 1.0]);
        assert_eq!(hist[3], 0.75);
        assert_eq!(hist[8], 0.25);
        assert_eq!(hist[CLASS_COUNT + 8], 1.0);
        assert_eq!(hist.iter().sum::<f32>(), 2.0);

        let blank = RgbImage::from_pixel(4, 2, odd);
        let err = class_histograms(&blank, 2, &lookup, "blank.png").unwrap_err();
        assert!(err.to_string().contains("blank.png"), "{err}");
    }

    #[test]
    fn object_colors_average_object_pixels_of_patches_that_are_enough_object() {
        let lookup = palette_lookup();
        let cube = ADE20K_PALETTE[8];
        let floor = ADE20K_PALETTE[ADE_FLOOR as usize];
        // 8×4 in 4-px patches. Patch 0: four cube pixels (a quarter), two red and two black;
        // patch 1: one cube pixel (1/16, under MIN_OBJECT_SHARE) and floor.
        let mut seg = RgbImage::from_pixel(8, 4, image::Rgb(floor));
        let mut rgb = RgbImage::from_pixel(8, 4, image::Rgb([0, 0, 255]));
        for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1), (5, 3)] {
            seg.put_pixel(x, y, image::Rgb(cube));
        }
        for (x, y) in [(0, 0), (1, 0)] {
            rgb.put_pixel(x, y, image::Rgb([255, 0, 0]));
        }
        for (x, y) in [(0, 1), (1, 1)] {
            rgb.put_pixel(x, y, image::Rgb([0, 0, 0]));
        }
        let (colors, mask) = object_colors(&rgb, &seg, 4, &lookup, "m").unwrap();
        assert_eq!(mask, vec![1.0, 0.0]);
        // Mean (127.5, 0, 0) → (0, −1, −1); the floor's blue is not counted.
        assert_eq!(colors, vec![0.0, -1.0, -1.0, 0.0, 0.0, 0.0]);

        let small = RgbImage::new(4, 4);
        let err = object_colors(&small, &seg, 4, &lookup, "map.png").unwrap_err();
        assert!(err.to_string().contains("map.png"), "{err}");
    }

    #[test]
    fn patch_accuracy_weighs_each_class_alike() {
        // Class 1: 3 of 4 right; class 2: 0 of 1; the last patch has no target.
        let (acc, recall) = patch_accuracy(
            &[1, 1, 1, 2, 1, 2],
            &[1, 1, 1, 1, 2, 2],
            &[1., 1., 1., 1., 1., 0.],
        );
        assert_eq!(acc, 0.6);
        assert_eq!(recall, 0.375);
        assert_eq!(patch_accuracy(&[1], &[1], &[0.0]), (0.0, 0.0));
    }

    #[test]
    fn patch_means_average_each_block() {
        let plane = Tensor::from_vec(
            vec![0f32, 2.0, 4.0, 4.0, 2.0, 0.0, 8.0, 8.0],
            (2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let m: Vec<f32> = patch_means(&plane, 2).unwrap().to_vec1().unwrap();
        assert_eq!(m, vec![1.0, 6.0]);
    }

    #[test]
    fn dense_loss_is_zero_weighted_away_and_masks_missing_targets() {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let heads = DenseHeads::new(4, true, &map, &dev).unwrap();
        let feats = Tensor::ones((2, 4), DType::F32, &dev).unwrap();
        let mut classes = vec![0f32; 2 * CLASS_COUNT];
        classes[5] = 1.0;
        let targets = PatchTargets {
            classes: Tensor::from_vec(classes, (2, CLASS_COUNT), &dev).unwrap(),
            class_mask: Tensor::new(&[1f32, 0.0], &dev).unwrap(),
            depth: Tensor::new(&[0.5f32, -0.5], &dev).unwrap(),
            depth_mask: Tensor::new(&[1f32, 1.0], &dev).unwrap(),
            colors: Tensor::new(&[[0.5f32, -0.5, 1.0], [9.0, 9.0, 9.0]], &dev).unwrap(),
            color_mask: Tensor::new(&[1f32, 0.0], &dev).unwrap(),
        };
        let weights = |class_weight, depth_weight, color_weight| VitTrainConfig {
            class_weight,
            depth_weight,
            color_weight,
            ..VitTrainConfig::default()
        };
        // Zero heads: uniform logits (CE = ln C over the one masked-in patch), depth 0.
        let ones = Tensor::ones(CLASS_COUNT, DType::F32, &dev).unwrap();
        let (loss, m) =
            dense_loss(&heads, &feats, &targets, &ones, &weights(1.0, 2.0, 0.0)).unwrap();
        let ln_c = (CLASS_COUNT as f64).ln();
        assert!((m["class_ce"] - ln_c).abs() < 1e-5, "{m:?}");
        assert!((m["depth_mse"] - 0.25).abs() < 1e-6, "{m:?}");
        let total = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((total - (ln_c + 0.5)).abs() < 1e-5);
        assert!(!m.contains_key("color_mse"));
        let (_, m) = dense_loss(&heads, &feats, &targets, &ones, &weights(0.0, 1.0, 0.0)).unwrap();
        assert!(!m.contains_key("class_ce"));
        // Zero colour head: squared distance 0.25 + 0.25 + 1 on the one masked-in patch (the
        // second patch's 9s would add 243).
        let (loss, m) =
            dense_loss(&heads, &feats, &targets, &ones, &weights(0.0, 0.0, 2.0)).unwrap();
        assert!((m["color_mse"] - 1.5).abs() < 1e-6, "{m:?}");
        assert!((loss.to_scalar::<f32>().unwrap() - 3.0).abs() < 1e-6);
        let no_color = DenseHeads::new(4, false, &VarMap::new(), &dev).unwrap();
        let (_, m) =
            dense_loss(&no_color, &feats, &targets, &ones, &weights(0.0, 1.0, 2.0)).unwrap();
        assert!(!m.contains_key("color_mse"));
        // Class 5 weighed twice: twice the cross-entropy.
        let mut w = vec![1f32; CLASS_COUNT];
        w[5] = 2.0;
        let w = Tensor::from_vec(w, CLASS_COUNT, &dev).unwrap();
        let (_, m) = dense_loss(&heads, &feats, &targets, &w, &weights(1.0, 0.0, 0.0)).unwrap();
        assert!((m["class_ce"] - 2.0 * ln_c).abs() < 1e-5, "{m:?}");
    }

    #[test]
    fn class_weights_scale_to_one_per_pixel() {
        let mut shares = vec![0.0; CLASS_COUNT];
        shares[1] = 0.8;
        shares[2] = 0.2;
        let w = class_weights(&shares, 1.0);
        // Inverse frequency: 1.25 and 5, then scaled by 1 / (0.8·1.25 + 0.2·5) = 1/2.
        assert!(
            (w[1] - 0.625).abs() < 1e-6 && (w[2] - 2.5).abs() < 1e-6,
            "{:?}",
            &w[..3]
        );
        assert!((w[0] - 2.5).abs() < 1e-6);
        let flat = class_weights(&shares, 0.0);
        assert!(flat.iter().all(|&x| (x - 1.0).abs() < 1e-6));
    }
}
