//! The engine: a loaded model folder (unified model, autoencoder, tokenizer) implementing
//! [`Backend`] on top of `cooper-model`'s cached forward passes.
//!
//! A context is `cooper_model::Context`, an immutable value whose clone shares the cache tensors:
//! the CFG branches and the loop's three contexts fork without copying the cache.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use cooper_model::packing::{pack_latents, unpack_latents};
use cooper_model::{AutoEncoder, Bagel, Context, ModelFolder, TokenizerFiles};
use image::RgbImage;
use tokenizers::Tokenizer;

use crate::backend::Backend;
use crate::choices::{choice_log_probs, AnswerChoices};
use crate::error::{InferError, Result};
use crate::flow::{initial_noise, sample_flow, step_progress_bar, Branch};
use crate::params::{ImageParams, ReasonParams, ReasoningConfig, TextParams};
use crate::sampling::{sample_choice, sample_token_tensor, seeded_rng, SeededRng};
use crate::transforms::{patchify, to_tensor, ResizeConfig};

fn backend_err(e: impl std::error::Error + Send + Sync + 'static) -> InferError {
    InferError::Backend(Box::new(e))
}

/// The three contexts of a guided generation: full, text-dropped and image-dropped.
#[derive(Debug, Clone, Copy)]
pub struct CfgContexts<'a> {
    pub gen: &'a Context,
    pub cfg_text: &'a Context,
    pub cfg_img: &'a Context,
}

pub struct Engine {
    pub model: Bagel,
    pub ae: AutoEncoder,
    pub tokenizer: Tokenizer,
    pub folder: ModelFolder,
    /// The ViT-side resize (applied to the VAE-resized picture, as the official callers do).
    pub vit_resize: ResizeConfig,
    /// Whether a progress bar is drawn over flow steps.
    pub show_progress: bool,
    /// How the folder wants to be prompted (its `reasoning_config.json`).
    pub reasoning: ReasoningConfig,
}

impl Engine {
    /// Loads a model folder onto `device` with compute dtype `dtype`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let folder = ModelFolder::open(dir).map_err(backend_err)?;
        let model = folder.load_bagel(dtype, device).map_err(backend_err)?;
        let ae = folder.load_ae(dtype, device).map_err(backend_err)?;
        let tokenizer = load_tokenizer(&folder.tokenizer)?;
        let vit_resize = default_resizes(&folder).1;
        let reasoning = ReasoningConfig::read(dir)?;
        Ok(Self {
            model,
            ae,
            tokenizer,
            folder,
            vit_resize,
            show_progress: true,
            reasoning,
        })
    }

    /// Reasoning settings fitted to this model: the official transforms, capped so that a picture
    /// never exceeds the model's latent and ViT position tables, with strides from its config;
    /// system prompts and the description turn as the folder's `reasoning_config.json` says.
    pub fn default_reason_params(&self) -> ReasonParams {
        let (vae_resize, vit_resize) = default_resizes(&self.folder);
        ReasonParams {
            vae_resize,
            vit_resize,
            system_prompt: self.reasoning.system_prompt,
            describe_first: self.reasoning.describe_first,
            ..ReasonParams::default()
        }
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// Text → ids, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(InferError::Backend)?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(InferError::Backend)
    }

    /// Clean VAE latents of a picture, packed (N, p²z). Deterministic: the Gaussian mean (the
    /// official encode samples; the mean gives reproducible runs and equals the fixtures).
    pub fn vae_tokens(&self, image: &RgbImage) -> Result<(Tensor, usize, usize)> {
        let ld = self.model.config.latent_downsample();
        let (w, h) = (image.width() as usize, image.height() as usize);
        let (hc, wc) = (h / ld * ld, w / ld * ld);
        if hc == 0 || wc == 0 {
            return Err(InferError::setting(
                "image size",
                format!("{w}x{h} is smaller than one latent token ({ld} px)"),
            ));
        }
        let pixels = to_tensor(image, self.device())?
            .narrow(1, 0, hc)?
            .narrow(2, 0, wc)?
            .unsqueeze(0)?
            .to_dtype(self.model.dtype())?;
        let latents = self.ae.encode_mean(&pixels).map_err(InferError::Tensor)?;
        let tokens = pack_latents(&latents, self.model.config.bagel.latent_patch_size)?;
        Ok((tokens, hc, wc))
    }

    /// ViT patches of a picture after the ViT resize: (N, 3p²), height, width.
    pub fn vit_tokens(&self, image: &RgbImage) -> Result<(Tensor, usize, usize)> {
        let resized = self.vit_resize.resize(image)?;
        let p = self.model.config.vit.patch_size;
        let pixels = to_tensor(&resized, self.device())?;
        let (_, h, w) = pixels.dims3()?;
        let patches = patchify(&pixels, p)?.to_dtype(self.model.dtype())?;
        Ok((patches, h, w))
    }

    /// Decodes packed latents of an `h`×`w` picture to raw pixels (1, 3, H, W).
    pub fn decode_latents(&self, tokens: &Tensor, height: usize, width: usize) -> Result<Tensor> {
        let ld = self.model.config.latent_downsample();
        let p = self.model.config.bagel.latent_patch_size;
        let latents = unpack_latents(
            &tokens.to_dtype(self.model.dtype())?,
            height / ld,
            width / ld,
            p,
        )?;
        Ok(self.ae.decode(&latents)?)
    }

    /// The rectified-flow sampler from a given initial noise (N, p²z) over the three contexts, for a
    /// picture of `size` = (height, width) pixels.
    pub fn sample_latents(
        &self,
        init: Tensor,
        contexts: CfgContexts<'_>,
        size: (usize, usize),
        params: &ImageParams,
    ) -> Result<Tensor> {
        let (height, width) = size;
        let pb = if self.show_progress {
            step_progress_bar("image")
        } else {
            indicatif::ProgressBar::hidden()
        };
        let out = sample_flow(init, params, &pb, |x, t, branch| {
            let ctx = match branch {
                Branch::Cond => contexts.gen,
                Branch::CfgText => contexts.cfg_text,
                Branch::CfgImg => contexts.cfg_img,
            };
            let x = x.to_dtype(self.model.dtype())?;
            let v = self.model.flow_velocity(ctx, &x, t, height, width)?;
            Ok(v.to_dtype(DType::F32)?)
        });
        pb.finish_and_clear();
        out
    }
}

/// What precedes a box whose content a constrained answer chooses. The brace is scored with the
/// content: a byte-level BPE with Qwen2's pre-tokenizer writes `{A` as one token, so a box
/// opening that includes the brace would never be seen before its content.
const BOX_COMMAND: &str = "\\boxed";

/// A box filled with a choice by [`Engine::fill_box`].
#[derive(Debug, Clone)]
pub struct FilledBox {
    /// The tokens written after `\boxed`: the opening brace and the chosen form.
    pub ids: Vec<u32>,
    /// The context with the box opening and all of `ids` but the last.
    pub context: Context,
    /// The last of `ids`, which decoding feeds next.
    pub next: u32,
}

/// log-softmax of one logits row, as f32 values (`decode_step` has cut it to the sampler's
/// vocabulary).
fn log_softmax_row(logits: &Tensor) -> Result<Vec<f32>> {
    let logits = logits.to_dtype(DType::F32)?;
    Ok(candle_nn::ops::log_softmax(&logits, D::Minus1)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// The log-probability of `id` in a [`log_softmax_row`]; an id past the sampler's cut (which
/// decoding never writes) has none.
fn log_prob(row: &[f32], id: u32) -> f32 {
    row.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY)
}

/// Decode steps inside a box, keyed by the tokens fed after the box's first token: the
/// log-probabilities of the next token and the context holding the key. Forms that begin alike
/// (every one with `{`) share their steps.
type BoxSteps = HashMap<Vec<u32>, (Vec<f32>, Context)>;

impl Engine {
    /// Ids whose text starts with `}`: any of them closes a box. (The model may have learnt the
    /// brace merged with what follows it, `}.` or `}}`, so one `}` token is not enough.)
    pub fn box_closers(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self
            .tokenizer
            .get_vocab(true)
            .into_iter()
            .filter(|(token, _)| token.contains('}'))
            .filter(|&(_, id)| self.decode(&[id]).is_ok_and(|t| t.starts_with('}')))
            .map(|(_, id)| id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Scores every form of every choice as the content of the box that `pending` (`\boxed`'s last
    /// token, not yet fed to `ctx`) begins: the sum of the log-probabilities of the tokens of `{`
    /// and the form, plus that of closing the box right after it (any of
    /// [`Engine::box_closers`]). Picks a choice with [`sample_choice`], and within it its
    /// likeliest form. [`Backend::generate_text`] calls it when a box begins.
    pub fn fill_box(
        &self,
        ctx: &Context,
        pending: u32,
        choices: &AnswerChoices,
        params: &TextParams,
        rng: &mut SeededRng,
    ) -> Result<FilledBox> {
        let closers = self.box_closers();
        let (logits, opened) = self.model.decode_step(ctx, pending)?;
        let mut steps = BoxSteps::from([(Vec::new(), (log_softmax_row(&logits)?, opened))]);
        let mut scored: Vec<Vec<(f32, Vec<u32>, Context)>> = Vec::new();
        for choice in &choices.choices {
            let mut forms = Vec::new();
            for form in &choice.forms {
                let ids = self.encode(&format!("{{{form}"))?;
                if ids.is_empty() {
                    continue;
                }
                for k in 1..=ids.len() {
                    if !steps.contains_key(&ids[..k]) {
                        let (lg, next) = self
                            .model
                            .decode_step(&steps[&ids[..k - 1]].1, ids[k - 1])?;
                        steps.insert(ids[..k].to_vec(), (log_softmax_row(&lg)?, next));
                    }
                }
                let log_p: f32 = (0..ids.len())
                    .map(|k| log_prob(&steps[&ids[..k]].0, ids[k]))
                    .sum();
                let after = &steps[&ids[..]].0;
                let close = closers
                    .iter()
                    .filter_map(|&id| after.get(id as usize))
                    .map(|&l| l.exp())
                    .sum::<f32>();
                let context = steps[&ids[..ids.len() - 1]].1.clone();
                forms.push((log_p + close.ln(), ids, context));
            }
            scored.push(forms);
        }
        let per_choice: Vec<Vec<f32>> = scored
            .iter()
            .map(|forms| forms.iter().map(|f| f.0).collect())
            .collect();
        let pick = sample_choice(&choice_log_probs(&per_choice), params, rng);
        let (_, ids, context) = scored
            .swap_remove(pick)
            .into_iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .ok_or_else(|| {
                InferError::setting(
                    "answer choices",
                    "a choice has no form the tokenizer can write",
                )
            })?;
        let next = *ids.last().expect("forms with no tokens were skipped");
        Ok(FilledBox { ids, context, next })
    }
}

/// VAE and ViT resize rules for a model folder: the official (1024, 512, 16) and (518, 224, 14),
/// capped by the position tables and with the model's own strides.
pub fn default_resizes(folder: &ModelFolder) -> (ResizeConfig, ResizeConfig) {
    let cfg = &folder.config;
    let ld = cfg.latent_downsample() as u32;
    let vae_cap = (cfg.bagel.max_latent_size as u32) * ld;
    let mut vae = ResizeConfig::VAE;
    vae.stride = ld;
    vae.max_size = vae.max_size.min(vae_cap);
    vae.min_size = vae.min_size.min(vae.max_size);
    let p = cfg.vit.patch_size as u32;
    let vit_cap = (cfg
        .bagel
        .vit_max_num_patch_per_side
        .min(cfg.vit.num_patches_per_side()) as u32)
        * p;
    let mut vit = ResizeConfig::VIT;
    vit.stride = p;
    vit.max_size = vit.max_size.min(vit_cap);
    vit.min_size = vit.min_size.min(vit.max_size);
    (vae, vit)
}

pub fn load_tokenizer(files: &TokenizerFiles) -> Result<Tokenizer> {
    match files {
        TokenizerFiles::Json(path) => Tokenizer::from_file(path)
            .map_err(|e| InferError::setting("tokenizer", format!("{}: {e}", path.display()))),
        TokenizerFiles::VocabMerges { vocab, merges } => {
            use tokenizers::models::bpe::BPE;
            use tokenizers::pre_tokenizers::byte_level::ByteLevel;
            let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                .build()
                .map_err(|e| {
                    InferError::setting("tokenizer", format!("{}: {e}", vocab.display()))
                })?;
            let mut tok = Tokenizer::new(bpe);
            tok.with_pre_tokenizer(Some(ByteLevel::default()));
            tok.with_decoder(Some(ByteLevel::default()));
            Ok(tok)
        }
    }
}

impl Backend for Engine {
    type Context = Context;

    fn empty_context(&self) -> Context {
        Context::new()
    }

    fn append_text(&self, ctx: &mut Context, text: &str) -> Result<()> {
        let ids = self.encode(text)?;
        *ctx = self.model.update_text(ctx, &ids)?;
        Ok(())
    }

    fn append_image(
        &self,
        ctx: &mut Context,
        image: &RgbImage,
        vae: bool,
        vit: bool,
    ) -> Result<()> {
        if vae {
            let (tokens, h, w) = self.vae_tokens(image)?;
            *ctx = self.model.update_vae(ctx, &tokens, h, w)?;
        }
        if vit {
            let (patches, h, w) = self.vit_tokens(image)?;
            *ctx = self.model.update_vit(ctx, &patches, h, w)?;
        }
        Ok(())
    }

    fn generate_text(
        &self,
        ctx: &Context,
        params: &TextParams,
        choices: Option<&AnswerChoices>,
        on_piece: &mut dyn FnMut(&str),
    ) -> Result<String> {
        params.validate()?;
        let mut rng = seeded_rng(params.seed);
        let (bos, eos) = (self.model.special.bos, self.model.special.eos);
        let mut ctx = ctx.clone();
        let mut token = bos;
        let mut ids: Vec<u32> = Vec::new();
        let mut emitted = 0usize; // bytes of the decoded text already handed to `on_piece`
                                  // The start token counts as one of the `max_new_tokens` steps, as in the official loop.
        for _ in 1..params.max_new_tokens.max(1) {
            let (logits, next) = self.model.decode_step(&ctx, token)?;
            ctx = next;
            token = sample_token_tensor(&logits, params, &mut rng)?;
            if token == eos {
                break;
            }
            ids.push(token);
            let mut text = self.decode(&ids)?;
            if let Some(choices) = choices.filter(|_| text.ends_with(BOX_COMMAND)) {
                // A box begins: `{` and the likeliest choice are written, then decoding goes on.
                let filled = self.fill_box(&ctx, token, choices, params, &mut rng)?;
                ids.extend_from_slice(&filled.ids);
                ctx = filled.context;
                token = filled.next;
                text = self.decode(&ids)?;
            }
            // Hold back a piece that ends inside a multi-byte character.
            if !text.ends_with('\u{FFFD}') && text.len() > emitted && text.is_char_boundary(emitted)
            {
                on_piece(&text[emitted..]);
                emitted = text.len();
            }
        }
        let text = self.decode(&ids)?;
        if text.len() > emitted && text.is_char_boundary(emitted) {
            on_piece(&text[emitted..]);
        }
        Ok(text)
    }

    fn generate_image(
        &self,
        gen: &Context,
        cfg_text: &Context,
        cfg_img: &Context,
        height: u32,
        width: u32,
        params: &ImageParams,
    ) -> Result<Tensor> {
        let ld = self.model.config.latent_downsample();
        let (h, w) = (height as usize / ld * ld, width as usize / ld * ld);
        if h == 0 || w == 0 {
            return Err(InferError::setting(
                "image size",
                format!("{width}x{height} is smaller than one latent token ({ld} px)"),
            ));
        }
        let tokens = (h / ld) * (w / ld);
        let init = initial_noise(
            tokens,
            self.model.config.latent_token_dim(),
            params.seed,
            self.device(),
        )?;
        let contexts = CfgContexts {
            gen,
            cfg_text,
            cfg_img,
        };
        let latents = self.sample_latents(init, contexts, (h, w), params)?;
        Ok(self.decode_latents(&latents, h, w)?.to_dtype(DType::F32)?)
    }
}
