//! The seam between the model-independent reasoning loop and the engine that runs the model.
//!
//! The engine (in `engine.rs`, owned by the model side) implements [`Backend`] on top of the
//! KV-cached forward passes; the loop in [`crate::reasoning`] only ever talks to this trait,
//! so it can be tested with a scripted backend.

use candle_core::Tensor;
use image::RgbImage;

use crate::choices::AnswerChoices;
use crate::error::Result;
use crate::params::{ImageParams, TextParams};

/// A model that can extend KV-cache contexts and decode text and images from them.
///
/// Semantics follow the official `InterleaveInferencer` (reference §3.1–3.5):
/// - a text append is one `<|im_start|> text <|im_end|>` block;
/// - an image append with `vae` writes the VAE latent block (then, with `vit`, the ViT block);
/// - decoding never modifies the context: callers append the returned text themselves.
pub trait Backend {
    /// A KV-cache context. `Clone` forks it (the official code deep-copies); it should be
    /// cheap, e.g. a shared immutable prefix plus an owned tail.
    type Context: Clone;

    /// A context holding nothing (kv length 0, rope 0).
    fn empty_context(&self) -> Self::Context;

    /// Appends one text turn `[bos] tokens [eos]`.
    fn append_text(&self, ctx: &mut Self::Context, text: &str) -> Result<()>;

    /// Appends a picture. `image` is already resized by the VAE transform
    /// ([`crate::transforms::ResizeConfig::VAE`]); the backend applies the ViT resize
    /// itself for the ViT part. `vae` and `vit` select the parts (VAE first); at least one
    /// is true.
    fn append_image(
        &self,
        ctx: &mut Self::Context,
        image: &RgbImage,
        vae: bool,
        vit: bool,
    ) -> Result<()>;

    /// Decodes text from the context (which is left unchanged), with the sampler of
    /// [`crate::sampling`], stopping at `<|im_end|>` (not included) or after
    /// `params.max_new_tokens` steps. Calls `on_piece` with each newly decoded piece of text,
    /// in order; the returned string is the whole decoded text (the official `gen_text`
    /// string: between `<|im_start|>` and `<|im_end|>`). With `choices`, whatever the text
    /// puts inside a `\boxed{}` is one of their forms (see [`crate::choices`]).
    fn generate_text(
        &self,
        ctx: &Self::Context,
        params: &TextParams,
        choices: Option<&AnswerChoices>,
        on_piece: &mut dyn FnMut(&str),
    ) -> Result<String>;

    /// Generates a picture of `height` x `width` pixels from the main context `gen`, the
    /// text-dropped context `cfg_text` and the image-dropped context `cfg_img`, with
    /// [`crate::flow::sample_flow`] (initial noise seeded by `params.seed`, see
    /// [`crate::flow::initial_noise`]). Returns the raw autoencoder output of shape
    /// (3, H, W) or (1, 3, H, W), values around [-1, 1], before any clamp;
    /// [`crate::decode`] turns it into an RGB picture or a depth map.
    fn generate_image(
        &self,
        gen: &Self::Context,
        cfg_text: &Self::Context,
        cfg_img: &Self::Context,
        height: u32,
        width: u32,
        params: &ImageParams,
    ) -> Result<Tensor>;
}
