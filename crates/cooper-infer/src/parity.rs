//! Parity cases that need the inference engine (`image_generate`), and the full runner list that
//! `cooper parity` uses (the model crate's cases plus these).
use candle_core::{DType, Device, Tensor};
use cooper_model::parity::{
    model_runners, replay_context, CaseData, CaseRunner, FixtureSet, TensorCheck, FLOAT_TOLERANCE,
};
use cooper_model::{Context, ModelError};

use crate::decode::{decode_depth, decode_image};
use crate::engine::{CfgContexts, Engine};
use crate::flow::{cfg_active, combine_guidance, timesteps};
use crate::params::{CfgRenorm, ImageParams};

/// Every runner: model-level cases and generation cases.
pub fn all_runners() -> Vec<&'static dyn CaseRunner> {
    let mut r = model_runners();
    r.push(&ImageGenerateCase);
    r
}

fn model_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Input(e.to_string())
}

fn exact(name: impl Into<String>, ok: bool) -> TensorCheck {
    TensorCheck {
        name: name.into(),
        max_abs_err: if ok { 0.0 } else { f32::INFINITY },
        tolerance: 0.0,
    }
}

/// Image generation over the three CFG contexts of a depth request: every step's guided velocity,
/// the step-0 branch velocities under each renorm type, the final latent and its decodes.
pub struct ImageGenerateCase;

impl CaseRunner for ImageGenerateCase {
    fn case(&self) -> &'static str {
        "image_generate"
    }

    fn run(&self, set: &FixtureSet, d: &CaseData) -> cooper_model::Result<Vec<TensorCheck>> {
        let mut engine =
            Engine::load(&set.folder.dir, &Device::Cpu, DType::F32).map_err(model_err)?;
        engine.show_progress = false;
        let m = &engine.model;
        let tol = FLOAT_TOLERANCE;
        let (base, mut checks) = replay_context(set, d, "context_steps")?;

        // Our tokenizer must give the ids the reference fed for every text step.
        let steps = d.json["context_steps"]
            .as_array()
            .ok_or_else(|| d.missing_key("context_steps"))?;
        let mut texts = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            if step["op"] == "text" {
                let text = step["text"].as_str().ok_or_else(|| d.missing_key("text"))?;
                let want: Vec<u32> = step["packed_ids"]
                    .as_array()
                    .ok_or_else(|| d.missing_key("packed_ids"))?
                    .iter()
                    .filter_map(|v| v.as_u64().map(|x| x as u32))
                    .collect();
                let got = engine.encode(text).map_err(model_err)?;
                checks.push(exact(
                    format!("step{i}_token_ids"),
                    want.len() >= 2 && got == want[1..want.len() - 1],
                ));
                texts.push(got);
            }
        }
        let text_ids = |key: &str| -> cooper_model::Result<Vec<u32>> {
            let s = d.json[key].as_str().ok_or_else(|| d.missing_key(key))?;
            engine.encode(s).map_err(model_err)
        };
        let reply = text_ids("gen_text")?;
        let thinking = text_ids("cfg_text_extra_text")?;
        let gen = m.update_text(&base, &reply)?;
        let cfg_text = m.update_text(&base, &thinking)?;
        let mut cfg_img = Context::new();
        for ids in texts.iter().chain([&reply]) {
            cfg_img = m.update_text(&cfg_img, ids)?;
        }
        for (name, ctx) in [
            ("gen", &gen),
            ("cfg_text", &cfg_text),
            ("cfg_img", &cfg_img),
        ] {
            let want = &d.json["contexts"][name];
            let ok = want["kv_lens"][0].as_u64() == Some(ctx.kv_len() as u64)
                && want["ropes"][0].as_u64() == Some(ctx.rope as u64);
            checks.push(exact(format!("{name}_context_len_and_rope"), ok));
        }

        let params: ImageParams =
            serde_json::from_value(d.json["settings"].clone()).map_err(model_err)?;
        let hw = d.usize_list("image_hw")?;
        let (h, w) = (hw[0], hw[1]);
        let init = d.f32("init_noise")?;

        // Step by step with the branch velocities exposed.
        let ts = timesteps(params.num_timesteps, params.timestep_shift);
        let ts_t = Tensor::new(&ts[..ts.len() - 1], &Device::Cpu)?;
        checks.push(d.check("step_timesteps", &ts_t, tol)?);
        let mut x = init.clone();
        let (mut xs, mut vs) = (Vec::new(), Vec::new());
        for (i, pair) in ts.windows(2).enumerate() {
            let t = pair[0];
            let (st, si) = if cfg_active(t, params.cfg_interval) {
                (params.cfg_text_scale, params.cfg_img_scale)
            } else {
                (1.0, 1.0)
            };
            let v_c = m.flow_velocity(&gen, &x, t, h, w)?;
            let v_t = if st > 1.0 {
                Some(m.flow_velocity(&cfg_text, &x, t, h, w)?)
            } else {
                None
            };
            let v_i = if st > 1.0 && si > 1.0 {
                Some(m.flow_velocity(&cfg_img, &x, t, h, w)?)
            } else {
                None
            };
            let guide = |renorm| {
                combine_guidance(
                    &v_c,
                    v_t.as_ref(),
                    v_i.as_ref(),
                    st,
                    si,
                    renorm,
                    params.cfg_renorm_min,
                )
                .map_err(model_err)
            };
            if i == 0 {
                checks.push(d.check("step0_v_cond", &v_c, tol)?);
                if let (Some(vt), Some(vi)) = (&v_t, &v_i) {
                    checks.push(d.check("step0_v_cfg_text", vt, tol)?);
                    checks.push(d.check("step0_v_cfg_img", vi, tol)?);
                }
                for (name, r) in [
                    ("step0_v_guided_global", CfgRenorm::Global),
                    ("step0_v_guided_channel", CfgRenorm::Channel),
                    ("step0_v_guided_text_channel", CfgRenorm::TextChannel),
                ] {
                    checks.push(d.check(name, &guide(r)?, tol)?);
                }
            }
            let v = guide(params.cfg_renorm_type)?;
            xs.push(x.clone());
            vs.push(v.clone());
            x = (x - (v * f64::from(pair[0] - pair[1]))?)?;
        }
        checks.push(d.check("step_x", &Tensor::stack(&xs, 0)?, tol)?);
        checks.push(d.check("step_velocity", &Tensor::stack(&vs, 0)?, tol)?);
        checks.push(d.check("final_latent", &x, tol)?);

        // The engine's own sampler (the path `cooper ask` takes) must land on the same latent.
        let sampled = engine
            .sample_latents(
                init,
                CfgContexts {
                    gen: &gen,
                    cfg_text: &cfg_text,
                    cfg_img: &cfg_img,
                },
                (h, w),
                &params,
            )
            .map_err(model_err)?;
        checks.push(TensorCheck {
            name: "final_latent (engine sampler)".into(),
            ..d.check("final_latent", &sampled, tol)?
        });

        let raw = engine.decode_latents(&x, h, w).map_err(model_err)?;
        checks.push(d.check("decoded_raw", &raw, tol)?);
        let img = decode_image(&raw).map_err(model_err)?;
        let img_t = Tensor::from_vec(img.into_raw(), (h, w, 3), &Device::Cpu)?;
        checks.push(d.check("image_u8_hwc", &img_t, 1.0)?);
        let depth = decode_depth(&raw).map_err(model_err)?;
        let depth_t = Tensor::from_vec(depth.data, (h, w), &Device::Cpu)?;
        checks.push(d.check("depth", &depth_t, 1e-3)?);
        Ok(checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_generate_matches_reference() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/bagel-tiny");
        let set = FixtureSet::open(dir).expect("fixture set");
        let data = set.load_case("image_generate").expect("case");
        let checks = ImageGenerateCase.run(&set, &data).expect("runs");
        assert!(checks.len() > 20);
        for c in &checks {
            assert!(c.pass(), "{}: {} > {}", c.name, c.max_abs_err, c.tolerance);
        }
    }
}
