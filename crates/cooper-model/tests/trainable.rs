//! A model folder loads as trainable variables: the loss of a packed text sample back-propagates
//! into the understanding expert only (no generation tokens), one gradient step lowers it, and the
//! saved weights load back as an ordinary folder giving the same logits.
use candle_core::{DType, Device, Tensor};
use cooper_model::init::{init_folder, Preset};
use cooper_model::packing::{attention_allowed, SplitMode};
use cooper_model::parity::cross_entropy_per_token;
use cooper_model::{save_trainable, AttnMask, Bagel, ModelFolder, PackedBatch};

fn text_batch(dev: &Device) -> anyhow::Result<PackedBatch> {
    // [bos] 10 11 12 13 [eos]; labels: next tokens at slots 0..=4.
    let ids = vec![1u32, 10, 11, 12, 13, 2];
    let allowed = attention_allowed(&[vec![(6, SplitMode::Causal)]], dev)?;
    Ok(PackedBatch {
        sequence_length: 6,
        packed_text_ids: Tensor::new(ids.as_slice(), dev)?,
        packed_text_indexes: Tensor::new(&[0u32, 1, 2, 3, 4, 5], dev)?,
        packed_position_ids: Tensor::new(&[0u32, 1, 2, 3, 4, 5], dev)?,
        attention: AttnMask::from_allowed(&allowed)?,
        vit: None,
        vae: None,
        ce_loss_indexes: Some(Tensor::new(&[0u32, 1, 2, 3, 4], dev)?),
        packed_label_ids: Some(Tensor::new(&[10u32, 11, 12, 13, 2], dev)?),
        mse_loss_indexes: None,
    })
}

fn loss(m: &Bagel, b: &PackedBatch) -> anyhow::Result<Tensor> {
    let out = m.forward_train(b)?;
    let logits = out.ce_logits.expect("CE slots");
    Ok(
        cross_entropy_per_token(&logits, b.packed_label_ids.as_ref().expect("labels"))?
            .mean_all()?,
    )
}

/// A fresh `tiny` folder under the temp dir (named by `tag`), opened and loaded as f32 Vars.
fn tiny_trainable(
    tag: &str,
    seed: u64,
) -> anyhow::Result<(std::path::PathBuf, Bagel, candle_nn::VarMap)> {
    let dir = std::env::temp_dir().join(format!("cooper-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    init_folder(&dir, Preset::Tiny, true, DType::BF16, seed)?;
    let (model, varmap) = ModelFolder::open(&dir)?.load_trainable(DType::F32, &Device::Cpu)?;
    Ok((dir, model, varmap))
}

#[test]
fn trainable_folder_learns_and_saves() -> anyhow::Result<()> {
    let (dir, model, varmap) = tiny_trainable("trainable", 5)?;
    let dev = Device::Cpu;
    let batch = text_batch(&dev)?;

    let before = loss(&model, &batch)?;
    let grads = before.backward()?;
    let vars = varmap.data().lock().unwrap().clone();
    let grad_norm = |name: &str| -> anyhow::Result<Option<f32>> {
        Ok(match grads.get(vars[name].as_tensor()) {
            Some(g) => Some(g.sqr()?.sum_all()?.to_scalar::<f32>()?),
            None => None,
        })
    };
    let und = "language_model.model.layers.0.self_attn.q_proj.weight";
    let gen = "language_model.model.layers.0.self_attn.q_proj_moe_gen.weight";
    assert!(
        grad_norm(und)?.is_some_and(|g| g > 0.0),
        "understanding expert gets a gradient"
    );
    assert!(
        grad_norm(gen)?.is_none_or(|g| g == 0.0),
        "generation expert untouched by text"
    );

    // One plain gradient step on every variable lowers the loss.
    for var in vars.values() {
        if let Some(g) = grads.get(var.as_tensor()) {
            var.set(&(var.as_tensor() - (g * 0.5)?)?)?;
        }
    }
    let after = loss(&model, &batch)?;
    let (b, a) = (before.to_scalar::<f32>()?, after.to_scalar::<f32>()?);
    assert!(a < b, "loss {b} -> {a}");

    // Saved weights load back as a normal folder with the same outputs.
    save_trainable(&model, &varmap, &dir.join("ema.safetensors"), DType::F32)?;
    let reloaded = ModelFolder::open(&dir)?.load_bagel(DType::F32, &dev)?;
    let again = loss(&reloaded, &batch)?.to_scalar::<f32>()?;
    assert!((again - a).abs() < 1e-5, "{again} vs {a}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// A pack of two text samples: per-sample block attention gives the dense block-diagonal mask's
/// loss and gradients.
#[test]
fn block_attention_equals_the_dense_pack_mask() -> anyhow::Result<()> {
    let (dir, model, varmap) = tiny_trainable("blocks", 7)?;
    let dev = Device::Cpu;
    let samples = vec![vec![(4, SplitMode::Causal)], vec![(5, SplitMode::Causal)]];
    let batch = |attention: AttnMask| -> anyhow::Result<PackedBatch> {
        Ok(PackedBatch {
            sequence_length: 9,
            packed_text_ids: Tensor::new(&[1u32, 10, 11, 2, 1, 12, 13, 14, 2], &dev)?,
            packed_text_indexes: Tensor::arange(0u32, 9, &dev)?,
            packed_position_ids: Tensor::new(&[0u32, 1, 2, 3, 0, 1, 2, 3, 4], &dev)?,
            attention,
            vit: None,
            vae: None,
            ce_loss_indexes: Some(Tensor::new(&[0u32, 1, 2, 4, 5, 6, 7], &dev)?),
            packed_label_ids: Some(Tensor::new(&[10u32, 11, 2, 12, 13, 14, 2], &dev)?),
            mse_loss_indexes: None,
        })
    };
    let dense = batch(AttnMask::from_allowed(&attention_allowed(&samples, &dev)?)?)?;
    let blocks = batch(AttnMask::blocks(&samples, &dev)?)?;
    let same_pattern = (dense.attention.allowed()?.unwrap().to_dtype(DType::F32)?
        - blocks.attention.allowed()?.unwrap().to_dtype(DType::F32)?)?
    .abs()?
    .sum_all()?
    .to_scalar::<f32>()?;
    assert_eq!(same_pattern, 0.0);
    let (l_dense, l_blocks) = (loss(&model, &dense)?, loss(&model, &blocks)?);
    let diff = (l_dense.to_scalar::<f32>()? - l_blocks.to_scalar::<f32>()?).abs();
    assert!(diff < 1e-5, "losses differ by {diff}");
    let (g_dense, g_blocks) = (l_dense.backward()?, l_blocks.backward()?);
    let mut worst = 0f32;
    for var in varmap.all_vars() {
        if let (Some(a), Some(b)) = (g_dense.get(&var), g_blocks.get(&var)) {
            worst = worst.max((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?);
        }
    }
    assert!(worst < 1e-5, "gradients differ by up to {worst}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
