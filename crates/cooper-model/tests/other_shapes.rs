//! A model of other head counts, GQA ratio, layer counts, autoencoder multipliers and a non-square
//! picture runs through the same code, and the cached inference path agrees with the packed training
//! forward on the same sequence.
use candle_core::{DType, Device, Tensor};
use cooper_model::init::{
    init_folder, random_ae_weights, random_bagel_weights, save_tensors, write_configs, Preset,
    INIT_SPECIAL,
};
use cooper_model::packing::{attention_allowed, pack_latents, SplitMode};
use cooper_model::{AttnMask, Context, ModelFolder, PackedBatch, PackedVae};

fn odd_config() -> cooper_model::ModelConfig {
    let mut c = Preset::Tiny.config();
    c.llm.hidden_size = 96;
    c.llm.num_attention_heads = 6;
    c.llm.num_key_value_heads = 2;
    c.llm.num_hidden_layers = 3;
    c.llm.intermediate_size = 80;
    c.vit.hidden_size = 48;
    c.vit.num_attention_heads = 3;
    c.vit.num_hidden_layers = 4;
    c.ae.ch_mult = vec![1, 1, 2, 2];
    c.ae.num_res_blocks = 2;
    c.ae.z_channels = 3;
    c.bagel.max_latent_size = 12;
    c.bagel.vit_max_num_patch_per_side = 8;
    c
}

#[test]
fn cached_path_matches_packed_forward_on_other_shapes() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("cooper-odd-{}", std::process::id()));
    let cfg = odd_config();
    cfg.validate()?;
    // Configs, tokenizer and weights written like any folder; llm2vae made non-zero so velocities differ.
    init_folder(&dir, Preset::Tiny, false, DType::F32, 0)?;
    write_configs(&dir, &cfg, INIT_SPECIAL)?;
    let mut weights = random_bagel_weights(&cfg, 3)?;
    let w = weights["llm2vae.weight"].ones_like()?.affine(0.01, 0.0)?;
    weights.insert("llm2vae.weight".into(), w);
    save_tensors(&dir.join("ema.safetensors"), &weights, DType::F32)?;
    save_tensors(
        &dir.join("ae.safetensors"),
        &random_ae_weights(&cfg.ae, 4)?,
        DType::F32,
    )?;

    let folder = ModelFolder::open(&dir)?;
    let dev = Device::Cpu;
    let m = folder.load_bagel(DType::F32, &dev)?;
    let ae = folder.load_ae(DType::F32, &dev)?;

    // A non-square picture: 48×80 pixels → latent grid 3×5 (downsample 8 × patch 2).
    let (h, w) = (48usize, 80usize);
    let pixels = Tensor::randn(0f32, 0.5, (1, 3, h, w), &dev)?;
    let latents = ae.encode_mean(&pixels)?;
    assert_eq!(latents.dims(), &[1, 3, 6, 10]);
    assert_eq!(ae.decode(&latents)?.dims(), &[1, 3, 48, 80]);
    let packed = pack_latents(&latents, 2)?; // (15, 12)
    assert_eq!(packed.dims(), &[15, 12]);

    // Cached: text A, clean VAE picture, then text B read as a chunk.
    let a = [20u32, 21, 22, 23];
    let b = [30u32, 31, 32];
    let ctx = m.update_text(&Context::new(), &a)?;
    let ctx = m.update_vae(&ctx, &packed, h, w)?;
    assert_eq!((ctx.kv_len(), ctx.rope), (6 + 17, 7));
    let framed_b: Vec<u32> = [INIT_SPECIAL.bos]
        .into_iter()
        .chain(b)
        .chain([INIT_SPECIAL.eos])
        .collect();
    let chunk = m.text_chunk(&framed_b, ctx.rope)?;
    let (hidden_cached, _) = m.forward_chunk(&ctx.cache, &chunk)?;

    // Packed: the same three splits in one forward with the training mask.
    let text_a: Vec<u32> = [INIT_SPECIAL.bos]
        .into_iter()
        .chain(a)
        .chain([INIT_SPECIAL.eos])
        .collect();
    let mut text_ids = text_a.clone();
    text_ids.extend([INIT_SPECIAL.start_of_image, INIT_SPECIAL.end_of_image]);
    text_ids.extend(&framed_b);
    let mut text_idx: Vec<u32> = (0..6).collect();
    text_idx.extend([6, 22]);
    text_idx.extend(23..28);
    let mut pos: Vec<u32> = (0..6).collect();
    pos.extend(std::iter::repeat_n(6, 17));
    pos.extend(7..12);
    let allowed = attention_allowed(
        &[vec![
            (6, SplitMode::Causal),
            (17, SplitMode::Full),
            (5, SplitMode::Causal),
        ]],
        &dev,
    )?;
    let n = text_ids.len();
    let batch = PackedBatch {
        sequence_length: 28,
        packed_text_ids: Tensor::from_vec(text_ids, n, &dev)?,
        packed_text_indexes: Tensor::from_vec(text_idx, n, &dev)?,
        packed_position_ids: Tensor::from_vec(pos, 28, &dev)?,
        attention: AttnMask::from_allowed(&allowed)?,
        vit: None,
        vae: Some(PackedVae {
            packed_latent_clean: packed.clone(),
            noise: packed.zeros_like()?,
            packed_timesteps: Tensor::full(f32::NEG_INFINITY, 15, &dev)?,
            packed_latent_position_ids: m.latent_position_ids(h, w)?,
            packed_vae_token_indexes: Tensor::from_vec((7u32..22).collect::<Vec<_>>(), 15, &dev)?,
        }),
        ce_loss_indexes: None,
        packed_label_ids: None,
        mse_loss_indexes: None,
    };
    let out = m.forward_train(&batch)?;
    let hidden_packed = out.last_hidden_state.narrow(0, 23, 5)?;
    let err = cooper_model::parity::max_abs_diff(&hidden_cached, &hidden_packed)?;
    assert!(err < 1e-4, "cached vs packed hidden states differ by {err}");

    // A flow step on the non-square grid gives one velocity row per latent token.
    let v = m.flow_velocity(&ctx, &packed, 0.5, h, w)?;
    assert_eq!(v.dims(), &[15, 12]);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
