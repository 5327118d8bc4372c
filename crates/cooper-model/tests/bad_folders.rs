//! A folder that is not a usable model gives an error naming the file, field or tensor.
use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use cooper_model::init::{init_folder, random_bagel_weights, save_tensors, Preset};
use cooper_model::{ModelError, ModelFolder};

fn tiny(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cooper-bad-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    init_folder(&dir, Preset::Tiny, true, DType::F32, 1).expect("tiny folder");
    dir
}

fn message(e: ModelError) -> String {
    e.to_string()
}

#[test]
fn missing_folder_and_files_are_named() {
    let e = ModelFolder::open("/nonexistent/cooper").unwrap_err();
    assert!(message(e).contains("model folder not found"));

    let dir = tiny("missing");
    std::fs::remove_file(dir.join("ae.safetensors")).unwrap();
    let e = message(ModelFolder::open(&dir).unwrap_err());
    assert!(
        e.contains("ae.safetensors") && e.contains("autoencoder"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unsupported_config_values_name_the_field() {
    let dir = tiny("config");
    let path = dir.join("llm_config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"silu\"", "\"gelu\"")).unwrap();
    let e = message(ModelFolder::open(&dir).unwrap_err());
    assert!(
        e.contains("llm_config.json") && e.contains("hidden_act"),
        "{e}"
    );

    std::fs::write(&path, "{ not json").unwrap();
    let e = message(ModelFolder::open(&dir).unwrap_err());
    assert!(
        e.contains("llm_config.json") && e.contains("invalid JSON"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_or_misshaped_tensors_are_named_with_shapes() {
    let dir = tiny("tensors");
    let cfg = Preset::Tiny.config();
    let mut weights: HashMap<String, Tensor> = random_bagel_weights(&cfg, 2).unwrap();
    let name = "language_model.model.layers.1.self_attn.k_proj_moe_gen.weight";
    weights.insert(
        name.into(),
        Tensor::zeros((31, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    save_tensors(&dir.join("ema.safetensors"), &weights, DType::F32).unwrap();
    let folder = ModelFolder::open(&dir).unwrap();
    let e = message(folder.load_bagel(DType::F32, &Device::Cpu).unwrap_err());
    assert!(e.contains(name) && e.contains("ema.safetensors"), "{e}");
    assert!(
        e.contains("31") && e.contains("32"),
        "expected and found shapes: {e}"
    );

    weights.remove(name);
    save_tensors(&dir.join("ema.safetensors"), &weights, DType::F32).unwrap();
    let e = message(folder.load_bagel(DType::F32, &Device::Cpu).unwrap_err());
    assert!(e.contains(name), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
