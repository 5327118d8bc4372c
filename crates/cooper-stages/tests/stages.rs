//! Each stage on a tiny model and a tiny synthetic world: it overfits, resumes exactly, and
//! stops cleanly on a non-finite loss.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::DType;
use cooper_model::init::{init_folder, Preset};
use cooper_stages::{run_stage, RunOptions, StageReport};
use cooper_train::config::{Stage, TrainConfig};
use cooper_world::{write_dataset, SceneConfig, WorldConfig};

struct Fixture {
    _dir: tempfile::TempDir,
    world: PathBuf,
    model: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let world = dir.path().join("world");
        let config = WorldConfig {
            seed: 11,
            scenes: 4,
            scene: SceneConfig {
                width: 32,
                height: 32,
                ..SceneConfig::default()
            },
            questions_per_scene: 4,
            chains_per_scene: 1,
            ..WorldConfig::default()
        };
        write_dataset(&config, &world, &|_| {}).unwrap();
        let model = dir.path().join("tiny");
        init_folder(&model, Preset::Tiny, true, DType::F32, 3).unwrap();
        Fixture {
            _dir: dir,
            world,
            model,
        }
    })
}

fn config(stage: Stage, out: &Path, files: &[PathBuf]) -> TrainConfig {
    let f = fixture();
    let mut c = TrainConfig::for_stage(stage);
    c.run.out_dir = out.to_path_buf();
    c.run.save_every = 0;
    c.run.seed = 5;
    c.model.model_path = f.model.clone();
    c.data.files = files.to_vec();
    c.data.max_image_size = Some(32);
    c.data.expected_num_tokens = 1;
    c.optim.warmup_steps = 0;
    c.optim.lr = 2e-3;
    c.ema.enabled = false;
    c
}

fn first_rows(src: &Path, n: usize, dst: &Path) -> PathBuf {
    let text = std::fs::read_to_string(src).unwrap();
    let rows: Vec<&str> = text.lines().take(n).collect();
    std::fs::write(dst, rows.join("\n") + "\n").unwrap();
    dst.to_path_buf()
}

/// The first stage-1 depth row of the world, as its own index file in `dir`.
fn one_depth_row(dir: &Path) -> PathBuf {
    let world = &fixture().world;
    // Relative paths resolve against the index's folder, so the row is re-rooted at the world.
    let text = std::fs::read_to_string(world.join("stage1_depth.jsonl")).unwrap();
    let mut row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    for key in ["rgb_image", "depth_image"] {
        let abs = world.join(row[key].as_str().unwrap());
        row[key] = abs.display().to_string().into();
    }
    let out = dir.join("depth1.jsonl");
    std::fs::write(&out, row.to_string() + "\n").unwrap();
    out
}

fn losses(out: &Path, key: &str) -> Vec<f64> {
    cooper_train::metrics::read_jsonl(&out.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|r| r.values[key])
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn amg_overfits_a_tiny_set() {
    let tmp = tempfile::tempdir().unwrap();
    let depth = one_depth_row(tmp.path());
    let mut c = config(Stage::Amg, &tmp.path().join("run"), &[depth]);
    c.run.total_steps = 400;
    c.optim.lr = 1e-2;
    c.optim.schedule = cooper_train::config::ScheduleKind::Cosine;
    c.optim.min_lr = 0.0;
    c.data.flip_prob = 0.0;
    c.data.sample_latents = false;
    let report = run_stage(&c, &RunOptions::default()).unwrap();
    let l = losses(&c.run.out_dir, "mse");
    let (first, last) = (mean(&l[..10]), mean(&l[l.len() - 20..]));
    eprintln!(
        "amg: mse {first:.4} -> {last:.4}, {:.4} s/step",
        report.mean_step_seconds
    );
    assert!(last < 0.1 * first, "flow loss {first} -> {last}");
    // The exported folder is a complete model folder the inference engine loads.
    let engine =
        cooper_infer::Engine::load(&report.model_dir, &candle_core::Device::Cpu, DType::F32)
            .unwrap();
    assert_eq!(engine.model.config.llm.hidden_size, 64);
    assert!(c.run.out_dir.join("loss.png").is_file());
}

fn sft_config(out: &Path, rows: usize, steps: u64) -> TrainConfig {
    let f = fixture();
    let chains = first_rows(
        &f.world.join("sft_text.jsonl"),
        rows,
        &out.with_extension("chains.jsonl"),
    );
    let mut c = config(Stage::Sft, out, &[chains]);
    c.run.total_steps = steps;
    c.sft.system_prompt = "vlm_think".into();
    c.sft.match_inference_context = true;
    c.data.sample_latents = false;
    c
}

#[test]
fn sft_overfits_a_tiny_set() {
    let tmp = tempfile::tempdir().unwrap();
    let c = sft_config(&tmp.path().join("run"), 2, 60);
    let report = run_stage(&c, &RunOptions::default()).unwrap();
    let l = losses(&c.run.out_dir, "ce");
    let (first, last) = (l[0], mean(&l[l.len() - 5..]));
    eprintln!(
        "sft: ce {first:.4} -> {last:.4}, {:.4} s/step",
        report.mean_step_seconds
    );
    assert!(last < 0.1 * first, "cross-entropy {first} -> {last}");
}

/// The values of `key` in the metrics rows that have it (a pack without a stage-1 row has no
/// `mse`, one without a chain no `ce`).
fn present(out: &Path, key: &str) -> Vec<f64> {
    cooper_train::metrics::read_jsonl(&out.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .filter_map(|r| r.values.get(key).copied())
        .collect()
}

#[test]
fn a_picture_in_several_rows_is_encoded_once() {
    use cooper_stages::model::TrainableModel;
    use cooper_stages::packed::PackedTrainer;
    use rand::SeedableRng;
    let tmp = tempfile::tempdir().unwrap();
    // Scene 0's stage-1 depth row and a chain about scene 0 share its picture.
    let mut c = sft_config(&tmp.path().join("run"), 1, 1);
    let row = |path: &Path| -> serde_json::Value {
        serde_json::from_str(std::fs::read_to_string(path).unwrap().trim()).unwrap()
    };
    let depth = one_depth_row(tmp.path());
    let scene = row(&depth)["data_id"].as_str().unwrap().to_string();
    let chain = row(&c.data.files[0]);
    assert!(
        chain["data_id"].as_str().unwrap().starts_with(&scene),
        "{chain}"
    );
    c.data.files.push(depth);
    c.data.flip_prob = 0.0;
    c.sft.rehearse_generation = true;
    let model = TrainableModel::load(&c.model, DType::F32, &candle_core::Device::Cpu).unwrap();
    let trainer = PackedTrainer::new(&model, &c).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    trainer.loss(&[0, 1], &mut rng).unwrap();
    // The shared picture and the depth target: two encodes, not three.
    assert_eq!(trainer.encoded_pictures(), 2);
    trainer.loss(&[1, 0], &mut rng).unwrap();
    assert_eq!(trainer.encoded_pictures(), 2);
}

#[test]
fn sft_rehearses_generation_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = sft_config(&tmp.path().join("run"), 2, 80);
    c.data.files.push(one_depth_row(tmp.path()));
    c.data.flip_prob = 0.0;
    let err = run_stage(&c, &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 stage-1 rows") && err.contains("sft.rehearse_generation"),
        "{err}"
    );
    c.sft.rehearse_generation = true;
    run_stage(&c, &RunOptions::default()).unwrap();
    // Both losses are trained in the one run: chains and the depth map are both learnt.
    let (ce, mse) = (
        present(&c.run.out_dir, "ce"),
        present(&c.run.out_dir, "mse"),
    );
    assert!(
        ce.len() >= 10 && mse.len() >= 10,
        "{} ce, {} mse rows",
        ce.len(),
        mse.len()
    );
    let tail = |v: &[f64]| mean(&v[v.len() - 5..]);
    assert!(
        tail(&ce) < 0.2 * ce[0],
        "cross-entropy {} -> {}",
        ce[0],
        tail(&ce)
    );
    // The flow loss is noisy (a random timestep a step): compare five-step means.
    assert!(tail(&mse) < 0.8 * mean(&mse[..5]), "flow loss {mse:?}");
    // Asked for without stage-1 rows, the setting is a mistake and says so.
    let mut chains_only = sft_config(&tmp.path().join("chains"), 2, 1);
    chains_only.sft.rehearse_generation = true;
    let err = run_stage(&chains_only, &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no stage-1 rows"), "{err}");
}

#[test]
fn ae_overfits_a_tiny_set() {
    let tmp = tempfile::tempdir().unwrap();
    let depth = one_depth_row(tmp.path());
    let mut c = config(Stage::Ae, &tmp.path().join("run"), &[depth]);
    c.run.total_steps = 150;
    c.optim.lr = 3e-3;
    c.ae.crop_size = 32;
    c.ae.batch_size = 2;
    c.ae.stats_images = 2;
    let report = run_stage(&c, &RunOptions::default()).unwrap();
    let l = losses(&c.run.out_dir, "rec_loss");
    let (first, last) = (mean(&l[..5]), mean(&l[l.len() - 10..]));
    eprintln!(
        "ae: rec {first:.4} -> {last:.4}, {:.4} s/step",
        report.mean_step_seconds
    );
    assert!(last < 0.1 * first, "reconstruction loss {first} -> {last}");
    // The new autoencoder and its measured latent scale are in the exported folder.
    let folder = cooper_model::ModelFolder::open(&report.model_dir).unwrap();
    let base = cooper_model::ModelFolder::open(&fixture().model).unwrap();
    assert_ne!(folder.config.ae.scale_factor, base.config.ae.scale_factor);
    assert!(folder.config.ae.scale_factor > 0.0);
    folder
        .load_ae(DType::F32, &candle_core::Device::Cpu)
        .unwrap();
}

fn vit_config(out: &Path) -> TrainConfig {
    let f = fixture();
    let files = [
        f.world.join("stage1_depth.jsonl"),
        f.world.join("stage1_seg.jsonl"),
    ];
    let mut c = config(Stage::Vit, out, &files);
    c.run.total_steps = 60;
    c.optim.lr = 5e-3;
    c.vit.batch_size = 4;
    c
}

#[test]
fn vit_pretraining_learns_dense_targets_and_changes_only_the_vit() {
    let tmp = tempfile::tempdir().unwrap();
    let c = vit_config(&tmp.path().join("run"));
    let report = run_stage(&c, &RunOptions::default()).unwrap();
    let (ce, depth) = (
        losses(&c.run.out_dir, "class_ce"),
        losses(&c.run.out_dir, "depth_mse"),
    );
    eprintln!(
        "vit: class ce {:.4} -> {:.4}, depth mse {:.4} -> {:.4}, {:.4} s/step",
        ce[0],
        mean(&ce[ce.len() - 5..]),
        depth[0],
        mean(&depth[depth.len() - 5..]),
        report.mean_step_seconds
    );
    assert!(mean(&ce[ce.len() - 5..]) < 0.5 * ce[0], "class CE {ce:?}");
    assert!(
        mean(&depth[depth.len() - 5..]) < 0.5 * depth[0],
        "depth MSE {depth:?}"
    );
    // The export is a full model folder with the official names: the ViT moved, nothing else
    // did, and the heads stayed behind.
    let load = |d: &Path| {
        let file = ["ema.safetensors", "model.safetensors"]
            .iter()
            .map(|n| d.join(n))
            .find(|p| p.is_file())
            .unwrap();
        candle_core::safetensors::load(file, &candle_core::Device::Cpu).unwrap()
    };
    let (before, after) = (load(&fixture().model), load(&report.model_dir));
    let mut names: Vec<&String> = after.keys().collect();
    names.sort();
    assert_eq!(names, {
        let mut b: Vec<&String> = before.keys().collect();
        b.sort();
        b
    });
    for name in names {
        let diff = (&before[name] - &after[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        if name.starts_with("vit_model.vision_model.encoder") {
            assert!(diff > 0.0, "{name} did not move");
        } else if !name.starts_with("vit_model.") {
            assert_eq!(diff, 0.0, "{name} moved");
        }
    }
    cooper_infer::Engine::load(&report.model_dir, &candle_core::Device::Cpu, DType::F32).unwrap();
}

#[test]
fn a_killed_vit_run_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        let mut c = vit_config(&tmp.path().join(name));
        c.run.total_steps = 6;
        c.run.save_every = 2;
        c.data.flip_prob = 0.5;
        c
    };
    let (a, b, _, _) = straight_and_resumed(make);
    assert_eq!((b.final_step, b.steps_run), (6, 4));
    let ema = |d: &Path| std::fs::read(d.join("ema.safetensors")).unwrap();
    assert_eq!(ema(&a.model_dir), ema(&b.model_dir));
}

/// The weights of a model folder (`model.safetensors`, else the `ema.safetensors` that
/// `init_folder` writes), by name.
fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let file = ["model.safetensors", "ema.safetensors"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .unwrap();
    let mut t: Vec<(String, Vec<f32>)> =
        candle_core::safetensors::load(file, &candle_core::Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// Runs `make("straight")` to the end, and `make("interrupted")` for three steps whose last
/// checkpoint is then lost (a killed process), then resumed; checks that a rerun without
/// `--resume` is refused rather than overwriting the run. Returns both reports and configs.
fn straight_and_resumed(
    make: impl Fn(&str) -> TrainConfig,
) -> (StageReport, StageReport, TrainConfig, TrainConfig) {
    let straight = make("straight");
    let a = run_stage(&straight, &RunOptions::default()).unwrap();
    let interrupted = make("interrupted");
    let stopped = RunOptions {
        stop_after: Some(3),
        ..RunOptions::default()
    };
    let partial = run_stage(&interrupted, &stopped).unwrap();
    assert_eq!(partial.final_step, 3);
    let err = run_stage(&interrupted, &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    std::fs::remove_dir_all(interrupted.run.out_dir.join("0000003")).ok();
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    let b = run_stage(&interrupted, &resume).unwrap();
    (a, b, straight, interrupted)
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let depth = f.world.join("stage1_depth.jsonl");
    let seg = f.world.join("stage1_seg.jsonl");
    let chains = f.world.join("sft_interleaved.jsonl");
    let make = |name: &str| {
        let mut c = config(
            Stage::Amg,
            &tmp.path().join(name),
            &[depth.clone(), seg.clone(), chains.clone()],
        );
        c.run.total_steps = 6;
        c.run.save_every = 2;
        c.data.expected_num_tokens = 120;
        c.ema.enabled = true;
        c.optim.grad_accum_steps = 2;
        c.sft.system_prompt = "none".into();
        c
    };
    let (a, b, _, _) = straight_and_resumed(make);
    assert_eq!(b.final_step, 6);
    assert_eq!(b.steps_run, 4);
    assert_eq!(weights(&a.model_dir), weights(&b.model_dir));
    let ema = |d: &Path| std::fs::read(d.join("ema.safetensors")).unwrap();
    assert_eq!(ema(&a.model_dir), ema(&b.model_dir));
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = sft_config(&tmp.path().join("run"), 1, 10);
    c.run.save_every = 1;
    // A learning rate no model survives: the first step writes ~1e30 into every weight.
    c.optim.lr = 1e30;
    c.optim.max_grad_norm = 0.0;
    let err = run_stage(&c, &RunOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("step 2") && msg.contains("loss"), "{msg}");
    let ckpts = cooper_train::checkpoint::Checkpointer::new(&c.run.out_dir, 3)
        .unwrap()
        .list()
        .unwrap();
    assert_eq!(ckpts.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1]);
    cooper_train::checkpoint::Checkpointer::load(&ckpts[0].1, &candle_core::Device::Cpu).unwrap();
}

/// Two SFT chains for the first RL question that differ only in the answer: the first says
/// the right one, the second a wrong one, so the SFT policy answers right about half the time.
fn two_answer_chains(world: &Path, out: &Path) -> (PathBuf, String) {
    let text = std::fs::read_to_string(world.join("sft_text.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let rl = std::fs::read_to_string(world.join("rl.jsonl")).unwrap();
    let prompt: serde_json::Value = serde_json::from_str(rl.lines().next().unwrap()).unwrap();
    let right = prompt["answer"].as_str().unwrap().to_string();
    let wrong = format!("{}9", right);
    let lines: Vec<String> = [&right, &wrong]
        .iter()
        .map(|answer| {
            let mut r = row.clone();
            for e in r["interleaved_reason"].as_array_mut().unwrap() {
                if e["need_loss"] == "true" {
                    e["value"] = format!(
                        "<think> It is about {answer}. </think>\n<answer> \\boxed{{{answer}}} </answer>"
                    )
                    .into();
                }
            }
            r.to_string()
        })
        .collect();
    std::fs::write(out, lines.join("\n") + "\n").unwrap();
    (out.to_path_buf(), right)
}

fn two_answer_policy(tmp: &Path) -> PathBuf {
    let f = fixture();
    let (chains, _) = two_answer_chains(&f.world, &tmp.join("two.jsonl"));
    let mut sft = config(Stage::Sft, &tmp.join("sft"), &[chains]);
    sft.run.total_steps = 60;
    sft.sft.system_prompt = "vlm_think".into();
    sft.sft.match_inference_context = true;
    sft.data.sample_latents = false;
    run_stage(&sft, &RunOptions::default()).unwrap().model_dir
}

fn grpo_config(tmp: &Path, name: &str, policy: &Path) -> TrainConfig {
    let f = fixture();
    let prompts = first_rows(&f.world.join("rl.jsonl"), 1, &tmp.join("rl1.jsonl"));
    let mut c = config(Stage::Grpo, &tmp.join(name), &[prompts]);
    c.data.image_root = Some(f.world.clone());
    c.model.init_from = Some(policy.to_path_buf());
    c.grpo.rollout_mode = "re".into();
    c.grpo.num_generations = 8;
    c.grpo.max_think_tokens = 80;
    c.grpo.reward_funcs = vec!["accuracy".into(), "format".into()];
    c.optim.grad_accum_steps = 8;
    c.optim.lr = 2e-4;
    c.data.sample_latents = false;
    c
}

/// GRPO alone moves a policy that is right half the time towards the rewarded answer.
#[test]
fn grpo_raises_the_reward_of_a_tiny_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = two_answer_policy(tmp.path());
    let mut c = grpo_config(tmp.path(), "grpo", &policy);
    c.run.total_steps = 20;
    let report = run_stage(&c, &RunOptions::default()).unwrap();
    assert_eq!(report.final_step, 20);
    let log = cooper_train::metrics::read_jsonl(&c.run.out_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(log.len(), 20);
    for key in [
        "reward",
        "reward_std",
        "rewards/accuracy/mean",
        "rewards/format/std",
        "entropy",
        "clip_ratio/region_mean",
        "completions/mean_length",
        "depth_nums",
        "segmentation_nums",
        "loss",
    ] {
        assert!(log[0].values.contains_key(key), "missing metric {key}");
    }
    let accuracy: Vec<f64> = log
        .iter()
        .map(|r| r.values["rewards/accuracy/mean"])
        .collect();
    let (first, last) = (mean(&accuracy[..3]), mean(&accuracy[accuracy.len() - 10..]));
    eprintln!(
        "grpo: accuracy {accuracy:?}, {:.3} s/step",
        report.mean_step_seconds
    );
    assert!(
        last > first + 0.15 && last > 0.6,
        "accuracy {first:.3} over the first steps, {last:.3} over the last"
    );
    cooper_infer::Engine::load(&report.model_dir, &candle_core::Device::Cpu, DType::F32).unwrap();
}

/// The re-packed rollout scores each generated token exactly as the cached decoding path that
/// sampled it does: the training sequence is the rollout's context.
#[test]
fn repacked_rollouts_score_what_the_sampler_saw() {
    use cooper_infer::{Backend, Mode, ReasonParams};
    let f = fixture();
    let dev = candle_core::Device::Cpu;
    let init = cooper_train::config::ModelInitConfig {
        model_path: f.model.clone(),
        init_from: None,
        from_ema: true,
    };
    let tm = cooper_stages::model::TrainableModel::load(&init, DType::F32, &dev).unwrap();
    let (vae_resize, vit_resize) = cooper_stages::pictures::resizes(&tm.folder, Some(32));
    let engine = cooper_infer::Engine {
        model: tm.inference_view().unwrap(),
        ae: tm.ae.clone(),
        tokenizer: tm.tokenizer.clone(),
        folder: tm.folder.clone(),
        vit_resize,
        show_progress: false,
        reasoning: tm.reasoning,
    };
    let image = cooper_stages::pictures::load_rgb(&f.world.join("images/s11_000000.png")).unwrap();
    // The last round asks without a system prompt, as a model trained without one is asked.
    let rounds = [Mode::Re, Mode::Direct, Mode::Re, Mode::Direct];
    for (round, mode) in rounds.into_iter().enumerate() {
        if round == 2 {
            // An optimiser writes every weight in place; the rollout view must see it.
            for (_, var) in tm.all_vars().unwrap() {
                let bumped = (var.as_tensor() * 1.05).unwrap();
                var.set(&bumped).unwrap();
            }
        }
        let mut params = ReasonParams {
            mode,
            vae_resize,
            vit_resize,
            system_prompt: round != 3,
            ..ReasonParams::default()
        };
        params.text.do_sample = true;
        params.text.temperature = 1.0;
        params.text.max_new_tokens = 12;
        params.text.seed = 9;
        let trace =
            cooper_infer::reason(&engine, &image, "How many cubes?", &params, &mut |_| {}).unwrap();
        let has_system = trace.entries.iter().any(|e| {
            matches!(e, cooper_infer::trace::TraceEntry::Text { role, .. }
                if *role == cooper_infer::trace::TextRole::System)
        });
        assert_eq!(has_system, round != 3, "round {round}");
        let batch = cooper_stages::grpo::repack(&tm, &trace, &vit_resize, None).unwrap();
        let (logps, _) = cooper_stages::grpo::generated_log_probs(&tm.model, &batch, 1.0)
            .unwrap()
            .unwrap();
        let logps: Vec<f32> = logps.to_vec1().unwrap();

        // The same context through the inference path, then the turn token by token.
        let mut ctx = engine.empty_context();
        let mut turn = String::new();
        for e in &trace.entries {
            match e {
                cooper_infer::trace::TraceEntry::Text { text, .. } => {
                    engine.append_text(&mut ctx, text).unwrap()
                }
                cooper_infer::trace::TraceEntry::Image { image, .. } => engine
                    .append_image(&mut ctx, image, mode != Mode::Re, true)
                    .unwrap(),
                cooper_infer::trace::TraceEntry::ModelTurn { text, .. } => turn = text.clone(),
            }
        }
        let mut targets = engine.encode(&turn).unwrap();
        targets.push(tm.model.special.eos);
        let mut token = tm.model.special.bos;
        let mut expected = Vec::new();
        for &t in &targets {
            let (logits, next) = engine.model.decode_step(&ctx, token).unwrap();
            ctx = next;
            let lp = candle_nn::ops::log_softmax(&logits.flatten_all().unwrap(), 0).unwrap();
            expected.push(lp.get(t as usize).unwrap().to_scalar::<f32>().unwrap());
            token = t;
        }
        assert_eq!(logps.len(), expected.len(), "{mode:?}");
        for (a, b) in logps.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-3, "{mode:?}: {logps:?} vs {expected:?}");
        }
    }
}

/// `init` with a trained tokenizer: the vocabulary fits it, the special tokens are found in it,
/// and the folder loads and tokenises far shorter than bytes.
#[test]
fn a_model_folder_can_start_from_a_trained_tokenizer() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let texts = cooper_train::corpus::world_corpus(&f.world).unwrap();
    let options = cooper_train::tokenizer::BpeOptions {
        vocab_size: 400,
        min_frequency: 2,
        show_progress: false,
    };
    let tok = cooper_train::tokenizer::train_bpe(texts.iter(), &options).unwrap();
    cooper_train::tokenizer::save_tokenizer(&tok, &tmp.path().join("tok")).unwrap();
    let dir = tmp.path().join("model");
    cooper_model::init::init_folder_with_tokenizer(
        &dir,
        Preset::Tiny,
        Some(&tmp.path().join("tok")),
        true,
        DType::F32,
        1,
    )
    .unwrap();
    let folder = cooper_model::ModelFolder::open(&dir).unwrap();
    assert_eq!(folder.config.llm.vocab_size % 64, 0);
    assert!(folder.config.llm.vocab_size >= tok.get_vocab_size(true));
    assert_eq!(folder.special.bos, tok.token_to_id("<|im_start|>").unwrap());
    let engine = cooper_infer::Engine::load(&dir, &candle_core::Device::Cpu, DType::F32).unwrap();
    let text = "<think> The red cube is closer to the camera. </think>";
    assert!(engine.encode(text).unwrap().len() * 2 < text.len());
}

/// GRPO resumes exactly too: rollouts (sampling seeds, maps) come from the run's RNG.
#[test]
fn a_killed_grpo_run_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = two_answer_policy(tmp.path());
    let make = |name: &str| {
        let mut c = grpo_config(tmp.path(), name, &policy);
        c.run.total_steps = 4;
        c.run.save_every = 2;
        c
    };
    let (a, b, straight, interrupted) = straight_and_resumed(make);
    assert_eq!((b.final_step, b.steps_run), (4, 2));
    assert_eq!(weights(&a.model_dir), weights(&b.model_dir));
    let log =
        |c: &TrainConfig| std::fs::read_to_string(c.run.out_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(log(&straight), log(&interrupted));
}

/// SFT rows whose answer only the picture gives: a plain red or blue picture, the same question,
/// the picture's colour as the answer. With `swapped`, each row shows the other colour's picture.
fn colour_rows(path: &Path, swapped: bool) -> PathBuf {
    use base64::Engine;
    let picture = |rgb: [u8; 3]| {
        let img = image::RgbImage::from_pixel(32, 32, image::Rgb(rgb));
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let colours = [("red", [220, 30, 30]), ("blue", [30, 30, 220])];
    let rows: Vec<String> = (0..4)
        .map(|i| {
            let (name, _) = colours[i % 2];
            let (_, shown) = colours[(i + usize::from(swapped)) % 2];
            serde_json::json!({
                "interleaved_reason": [
                    {"type": "image", "value": picture(shown), "need_loss": "false"},
                    {"type": "text", "value": "What color is the picture?", "need_loss": "false"},
                    {"type": "text", "value": format!("<answer> \\boxed{{{name}}} </answer>"),
                     "need_loss": "true"},
                ],
                "data_id": format!("colour-{i}"),
            })
            .to_string()
        })
        .collect();
    std::fs::write(path, rows.join("\n") + "\n").unwrap();
    path.to_path_buf()
}

/// The guard against an SFT data path that loses the picture (the model would then learn
/// answers from the text alone): after training, the answers' cross-entropy with the pictures
/// swapped is many times that with their own pictures.
#[test]
fn sft_learns_answers_that_only_the_picture_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let own = colour_rows(&tmp.path().join("own.jsonl"), false);
    let swapped = colour_rows(&tmp.path().join("swapped.jsonl"), true);
    let mut c = config(
        Stage::Sft,
        &tmp.path().join("train"),
        std::slice::from_ref(&own),
    );
    c.run.total_steps = 60;
    c.sft.match_inference_context = true;
    c.freeze.vit = false;
    c.data.sample_latents = false;
    let report = run_stage(&c, &RunOptions::default()).unwrap();
    let frozen_ce = |name: &str, rows: &Path| {
        let mut e = config(Stage::Sft, &tmp.path().join(name), &[rows.to_path_buf()]);
        e.run.total_steps = 4;
        e.optim.lr = 0.0;
        e.sft.match_inference_context = true;
        e.freeze.vit = false;
        e.data.sample_latents = false;
        e.model.init_from = Some(report.model_dir.clone());
        e.model.from_ema = false;
        run_stage(&e, &RunOptions::default()).unwrap();
        mean(&losses(&e.run.out_dir, "ce"))
    };
    let (with_own, with_swapped) = (frozen_ce("own", &own), frozen_ce("swapped", &swapped));
    eprintln!("answer cross-entropy: own pictures {with_own:.4}, swapped {with_swapped:.4}");
    // The mean runs over every answer token, and only the colour's depends on the picture.
    assert!(
        with_swapped > 0.1 && with_swapped > 10.0 * with_own,
        "own pictures {with_own}, swapped {with_swapped}"
    );
}

/// A model trained without system prompts says so in its folder, and is asked without them; a
/// folder without `reasoning_config.json` (an official checkpoint) keeps the official prompts.
#[test]
fn a_model_trained_without_system_prompts_is_asked_without_them() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = sft_config(&tmp.path().join("run"), 2, 2);
    c.sft.omit_system_prompt = true;
    c.sft.describe_first = true;
    let report = run_stage(&c, &RunOptions::default()).unwrap();
    let file = report.model_dir.join(cooper_infer::ReasoningConfig::FILE);
    assert!(file.is_file(), "{}", file.display());
    let dev = candle_core::Device::Cpu;
    let engine = cooper_infer::Engine::load(&report.model_dir, &dev, DType::F32).unwrap();
    assert!(!engine.reasoning.system_prompt);
    assert!(!engine.default_reason_params().system_prompt);
    // Trained on describe-first chains, it is asked for its description first.
    assert!(engine.default_reason_params().describe_first);
    // ... with the request the world's chains hold, byte for byte.
    assert_eq!(
        cooper_infer::prompts::DESCRIBE_PROMPT,
        cooper_world::chains::DESCRIBE_PROMPT
    );

    let official = cooper_infer::Engine::load(&fixture().model, &dev, DType::F32).unwrap();
    assert!(official.default_reason_params().system_prompt);
    assert!(!official.default_reason_params().describe_first);
    assert!(!fixture()
        .model
        .join(cooper_infer::ReasoningConfig::FILE)
        .exists());
}

/// A checkpoint of a run with the ViT frozen holds no ViT weights; started from with
/// `--init-from`, it is completed from the weights its own run started from, and prompted as
/// that run's SFT settings say.
#[test]
fn a_checkpoint_of_a_run_with_frozen_weights_can_start_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = sft_config(&tmp.path().join("frozen"), 2, 2);
    c.run.save_every = 2;
    c.freeze.vit = true;
    c.sft.omit_system_prompt = true;
    run_stage(&c, &RunOptions::default()).unwrap();
    let checkpoint = c.run.out_dir.join("0000002");
    let saved = candle_core::safetensors::load(
        checkpoint.join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(!saved.keys().any(|k| k.starts_with("vit_model.")));

    // The next run's --model is another folder with another ViT: the checkpoint's run started
    // from the fixture, so the ViT must come from there.
    let other = tmp.path().join("other");
    init_folder(&other, Preset::Tiny, true, DType::F32, 4).unwrap();
    let init = cooper_train::config::ModelInitConfig {
        model_path: other.clone(),
        init_from: Some(checkpoint.clone()),
        from_ema: false,
    };
    let dev = candle_core::Device::Cpu;
    let loaded = cooper_stages::model::TrainableModel::load(&init, DType::F32, &dev).unwrap();
    assert!(!loaded.reasoning.system_prompt);
    let started = weights(&fixture().model);
    let trained = saved;
    for (name, var) in loaded.all_vars().unwrap() {
        let got = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = match trained.get(&name) {
            Some(t) => t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            None => started.iter().find(|(n, _)| *n == name).unwrap().1.clone(),
        };
        assert_eq!(got, want, "{name}");
    }
    // A plain folder missing a tensor is still an error that names the tensor.
    let lost = tmp.path().join("lost");
    std::fs::create_dir(&lost).unwrap();
    std::fs::copy(
        checkpoint.join("model.safetensors"),
        lost.join("model.safetensors"),
    )
    .unwrap();
    let init = cooper_train::config::ModelInitConfig {
        init_from: Some(lost),
        ..init
    };
    let err = cooper_stages::model::TrainableModel::load(&init, DType::F32, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("vit_model."), "{err}");
}
