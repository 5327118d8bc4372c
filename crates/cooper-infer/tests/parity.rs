//! Parity with the official code's tensors on the tiny random model
//! (`tests/fixtures/bagel-tiny`, see its README): schedule, Euler update, CFG combination
//! (all three renorm types), latent pack / unpack, image and depth decode, ViT to-tensor,
//! patchify and position ids.

use cooper_model::packing::{pack_latents, unpack_latents};
use std::collections::HashMap;

use candle_core::{DType, Device, IndexOp, Tensor};
use image::RgbImage;

use cooper_infer::decode::{decode_depth, decode_image};
use cooper_infer::flow::{cfg_active, combine_guidance, euler_step, timesteps};
use cooper_infer::params::CfgRenorm;
use cooper_infer::transforms::{flattened_position_ids, patchify, to_tensor};

const TOL: f32 = 1e-4;

fn load(case: &str) -> HashMap<String, Tensor> {
    let path = format!(
        "{}/../../tests/fixtures/bagel-tiny/cases/{case}.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot load {path}: {e}"))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    a.to_dtype(DType::F32)
        .unwrap()
        .sub(&b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn hwc_image(t: &Tensor) -> RgbImage {
    let (h, w, c) = t.dims3().unwrap();
    assert_eq!(c, 3);
    let data = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    RgbImage::from_raw(w as u32, h as u32, data).unwrap()
}

#[test]
fn guidance_matches_all_three_renorm_types() {
    let f = load("image_generate");
    let (vc, vt, vi) = (
        &f["step0_v_cond"],
        &f["step0_v_cfg_text"],
        &f["step0_v_cfg_img"],
    );
    for (kind, name) in [
        (CfgRenorm::Global, "step0_v_guided_global"),
        (CfgRenorm::Channel, "step0_v_guided_channel"),
        (CfgRenorm::TextChannel, "step0_v_guided_text_channel"),
    ] {
        let got = combine_guidance(vc, Some(vt), Some(vi), 4.0, 2.0, kind, 0.0).unwrap();
        let err = max_abs(&got, &f[name]);
        println!("{name}: max abs error {err:e}");
        assert!(err <= TOL, "{name}: {err}");
    }
    // Step 0 of the stored run used `global`.
    assert!(
        max_abs(
            &f["step0_v_guided_global"],
            &f["step_velocity"].i(0).unwrap()
        ) <= TOL
    );
}

#[test]
fn schedule_and_euler_updates_reproduce_the_run() {
    let f = load("image_generate");
    let ts = timesteps(5, 3.0);
    let stored = f["step_timesteps"].to_vec1::<f32>().unwrap();
    assert_eq!(stored.len(), ts.len() - 1);
    for (a, b) in ts.iter().zip(&stored) {
        assert!((a - b).abs() <= 1e-6, "{ts:?} vs {stored:?}");
        assert!(cfg_active(*a, [0.4, 1.0]));
    }
    let xs = &f["step_x"];
    let vs = &f["step_velocity"];
    assert!(max_abs(&xs.i(0).unwrap(), &f["init_noise"]) == 0.0);
    let mut worst = 0f32;
    for i in 0..stored.len() {
        let next = euler_step(&xs.i(i).unwrap(), &vs.i(i).unwrap(), ts[i], ts[i + 1]).unwrap();
        let want = if i + 1 < stored.len() {
            xs.i(i + 1).unwrap()
        } else {
            f["final_latent"].clone()
        };
        worst = worst.max(max_abs(&next, &want));
    }
    println!("euler: max abs error {worst:e}");
    assert!(worst <= TOL, "{worst}");
}

#[test]
fn unpack_and_decode_match() {
    let f = load("image_generate");
    let nchw = unpack_latents(&f["final_latent"], 8, 8, 2).unwrap();
    let err = max_abs(&nchw, &f["final_latent_nchw"]);
    println!("unpack: max abs error {err:e}");
    assert_eq!(err, 0.0);
    // And back.
    assert_eq!(
        max_abs(&pack_latents(&nchw, 2).unwrap(), &f["final_latent"]),
        0.0
    );

    let img = decode_image(&f["decoded_raw"]).unwrap();
    let want = hwc_image(&f["image_u8_hwc"]);
    let worst = img
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    println!("decode_image: max abs error {worst}");
    assert!(worst <= 1);

    let depth = decode_depth(&f["decoded_raw"]).unwrap();
    let want = Tensor::from_vec(depth.data.clone(), (64, 64), &Device::Cpu).unwrap();
    let err = max_abs(&want, &f["depth"]);
    println!("decode_depth: max abs error {err:e}");
    assert!(err <= TOL);
    // The Spectral picture has the map's size and only LUT colours.
    let coloured = depth.to_spectral();
    assert_eq!(coloured.dimensions(), (64, 64));
}

#[test]
fn vae_latent_packing_matches() {
    let f = load("vae");
    let got = pack_latents(&f["latent_mean"], 2).unwrap();
    let err = max_abs(&got, &f["packed_latent_tokens"]);
    println!("pack: max abs error {err:e}");
    assert_eq!(err, 0.0);
    let pixels = to_tensor(&hwc_image(&f["vae_image_u8"]), &Device::Cpu).unwrap();
    assert!(max_abs(&pixels, &f["vae_pixels"]) <= 1e-6);
}

#[test]
fn vit_tensor_patchify_and_position_ids_match() {
    let f = load("vit");
    let img = hwc_image(&f["vit_image_u8"]);
    let pixels = to_tensor(&img, &Device::Cpu).unwrap();
    let err = max_abs(&pixels, &f["vit_pixels"]);
    println!("to_tensor: max abs error {err:e}");
    assert!(err <= 1e-6);
    let tokens = patchify(&f["vit_pixels"], 14).unwrap();
    assert_eq!(max_abs(&tokens, &f["packed_vit_tokens"]), 0.0);
    let ids = flattened_position_ids(4, 4, 8, &Device::Cpu).unwrap();
    assert_eq!(
        ids.to_vec1::<i64>().unwrap(),
        f["vit_position_ids"].to_vec1::<i64>().unwrap()
    );
}
