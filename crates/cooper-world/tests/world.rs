//! End-to-end checks: answers agree with geometry, answers are balanced, output is
//! byte-identical for a seed, and the written formats parse.

use std::collections::BTreeMap;
use std::path::Path;

use cooper_world::questions::{AnswerKind, Query, Relation, GRID_NAMES};
use cooper_world::scene::{Object, Scene};
use cooper_world::{generate_scene, write_dataset, Frame, Question, WorldConfig};

fn small_config(seed: u64) -> WorldConfig {
    let mut c = WorldConfig {
        seed,
        questions_per_scene: 8,
        ..Default::default()
    };
    c.scene.width = 64;
    c.scene.height = 64;
    c
}

/// The chosen option's text (multiple choice) or the answer itself.
fn answer_text(q: &Question) -> String {
    if q.kind == AnswerKind::Mcq {
        let k = (q.answer.as_bytes()[0] - b'A') as usize;
        q.options[k].clone()
    } else {
        q.answer.clone()
    }
}

// Independent geometry, written without the crate's helpers.
fn cam_xyz(s: &Scene, o: &Object) -> [f32; 3] {
    let (sp, cp) = s.camera.pitch.sin_cos();
    let [x, y, z] = o.position;
    let dy = y - s.camera.position[1];
    // right = +X; down = (0, -cos, -sin); forward = (0, -sin, cos)
    [x, -cp * dy - sp * z, -sp * dy + cp * z]
}
fn pixel_u(s: &Scene, o: &Object) -> f32 {
    let c = cam_xyz(s, o);
    s.camera.fx * c[0] / c[2] + s.camera.cx
}
fn pixel_v(s: &Scene, o: &Object) -> f32 {
    let c = cam_xyz(s, o);
    s.camera.fy * c[1] / c[2] + s.camera.cy
}
fn eye_dist(s: &Scene, o: &Object) -> f32 {
    let c = cam_xyz(s, o);
    (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt()
}
fn dist(a: &Object, b: &Object) -> f32 {
    a.position
        .iter()
        .zip(b.position)
        .map(|(p, q)| (p - q) * (p - q))
        .sum::<f32>()
        .sqrt()
}
fn obj(s: &Scene, id: u16) -> &Object {
    s.objects.iter().find(|o| o.id == id).unwrap()
}
fn arg_min(ids: &[u16], f: impl Fn(u16) -> f32) -> u16 {
    *ids.iter().min_by(|a, b| f(**a).total_cmp(&f(**b))).unwrap()
}

fn check(q: &Question, s: &Scene, f: &Frame) {
    let ans = answer_text(q);
    let yes = |b: bool| if b { "Yes" } else { "No" };
    let name = |id: u16| obj(s, id).name();
    match &q.query {
        Query::Count { color, kind } => {
            let n = s
                .objects
                .iter()
                .filter(|o| color.is_none_or(|c| o.color == c) && kind.is_none_or(|k| o.kind == k))
                .count();
            assert_eq!(ans, n.to_string());
        }
        Query::Exists { color, kind } => {
            let any = s
                .objects
                .iter()
                .any(|o| color.is_none_or(|c| o.color == c) && kind.is_none_or(|k| o.kind == k));
            assert_eq!(ans, yes(any));
        }
        Query::Relation { a, b, relation } => {
            let (a, b) = (obj(s, *a), obj(s, *b));
            let truth = match relation {
                Relation::LeftOf => pixel_u(s, a) < pixel_u(s, b),
                Relation::RightOf => pixel_u(s, a) > pixel_u(s, b),
                Relation::Above => pixel_v(s, a) < pixel_v(s, b),
                Relation::Below => pixel_v(s, a) > pixel_v(s, b),
                Relation::InFrontOf => eye_dist(s, a) < eye_dist(s, b),
                Relation::Behind => eye_dist(s, a) > eye_dist(s, b),
            };
            assert_eq!(ans, yes(truth));
        }
        Query::ClosestToCamera { candidates } => {
            assert_eq!(ans, name(arg_min(candidates, |id| eye_dist(s, obj(s, id)))));
        }
        Query::NearestTo { anchor, candidates } => {
            let a = obj(s, *anchor);
            assert_eq!(ans, name(arg_min(candidates, |id| dist(a, obj(s, id)))));
        }
        Query::Distance { a, b } => {
            let d = dist(obj(s, *a), obj(s, *b));
            let scale = if q.unit.unwrap().symbol() == "cm" {
                100.0
            } else {
                1.0
            };
            let got: f32 = ans.parse().unwrap();
            assert!(
                (got - d * scale).abs() <= 0.0051 * scale.max(100.0),
                "{got} vs {d}"
            );
        }
        Query::CameraDistance { a } => {
            let got: f32 = ans.parse().unwrap();
            assert!((got - eye_dist(s, obj(s, *a))).abs() <= 0.0051);
        }
        Query::Height { a } | Query::Width { a } => {
            let o = obj(s, *a);
            let v = if matches!(q.query, Query::Height { .. }) {
                o.size[1]
            } else {
                o.size[0]
            };
            let scale = if q.unit.unwrap().symbol() == "cm" {
                100.0
            } else {
                1.0
            };
            let got: f32 = ans.parse().unwrap();
            assert!(
                (got - v * scale).abs() <= 0.51 * scale / 100.0 + 1e-3,
                "{got} vs {v}"
            );
        }
        Query::Tallest { candidates } => {
            assert_eq!(ans, name(arg_min(candidates, |id| -obj(s, id).size[1])));
        }
        Query::Occluded { a } => {
            // Independently: cast every pixel's ray at this object alone (parry) and at the floor,
            // and compare with the pixels where the instance map shows it.
            use parry3d::query::Ray;
            let o = obj(s, *a);
            let (shape, pose) = (o.shape(), o.pose());
            let mut alone = 0usize;
            for py in 0..f.height {
                for px in 0..f.width {
                    let (dir, _) = s.camera.pixel_ray(px, py);
                    let ray = Ray::new(s.camera.origin(), dir);
                    if let Some(t) = shape.cast_ray(&pose, &ray, f32::MAX, true) {
                        let floor = if dir.y < 0.0 {
                            -s.camera.position[1] / dir.y
                        } else {
                            f32::MAX
                        };
                        if t <= floor + 1e-3 {
                            alone += 1;
                        }
                    }
                }
            }
            let visible = f.instance.iter().filter(|&&i| i == *a).count();
            let hidden = 1.0 - visible as f32 / alone as f32;
            if ans == "Yes" {
                assert!(hidden >= 0.19, "{} hidden {hidden}", o.name());
            } else {
                assert!(hidden <= 0.01, "{} hidden {hidden}", o.name());
            }
        }
        Query::GridCell { a, rows, cols } => {
            let (mut su, mut sv, mut n) = (0f64, 0f64, 0f64);
            for (i, &id) in f.instance.iter().enumerate() {
                if id == *a {
                    su += (i as u32 % f.width) as f64 + 0.5;
                    sv += (i as u32 / f.width) as f64 + 0.5;
                    n += 1.0;
                }
            }
            let col = ((su / n) * *cols as f64 / f.width as f64) as usize;
            let row = ((sv / n) * *rows as f64 / f.height as f64) as usize;
            assert_eq!(ans, GRID_NAMES[row][col]);
        }
        Query::ColorOf { a } => assert_eq!(ans, obj(s, *a).color.name()),
        Query::ShapeOf { a } => assert_eq!(ans, obj(s, *a).kind.noun()),
    }
}

#[test]
fn every_answer_agrees_with_the_geometry_and_answers_are_balanced() {
    let cfg = small_config(11);
    let mut letters: BTreeMap<usize, BTreeMap<String, usize>> = BTreeMap::new();
    let mut yes_no: BTreeMap<String, usize> = BTreeMap::new();
    let mut yes_no_by_category: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut categories: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..150 {
        let g = generate_scene(&cfg, i);
        for q in &g.questions {
            check(q, &g.scene, &g.frame);
            *categories.entry(q.category.name()).or_default() += 1;
            match q.kind {
                AnswerKind::Mcq => {
                    *letters
                        .entry(q.options.len())
                        .or_default()
                        .entry(q.answer.clone())
                        .or_default() += 1
                }
                AnswerKind::YesNo => {
                    *yes_no.entry(q.answer.clone()).or_default() += 1;
                    let e = yes_no_by_category.entry(q.category.name()).or_default();
                    e.0 += usize::from(q.answer == "Yes");
                    e.1 += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!(
        categories.len(),
        13,
        "every category occurs: {categories:?}"
    );
    let yes = yes_no["Yes"] as f64 / (yes_no["Yes"] + yes_no["No"]) as f64;
    let n_yn = (yes_no["Yes"] + yes_no["No"]) as f64;
    assert!(
        (yes - 0.5).abs() < 3.0 * (0.25 / n_yn).sqrt(),
        "yes share {yes} of {n_yn}"
    );
    for (cat, (y, n)) in &yes_no_by_category {
        let share = *y as f64 / *n as f64;
        assert!(
            (share - 0.5).abs() < 3.0 * (0.25 / *n as f64).sqrt(),
            "{cat}: {y} Yes of {n}"
        );
    }
    for (n, counts) in &letters {
        let total: usize = counts.values().sum();
        if total < 60 {
            continue;
        }
        assert_eq!(counts.len(), *n, "{n}-option letters: {counts:?}");
        for c in counts.values() {
            let share = *c as f64 / total as f64;
            let fair = 1.0 / *n as f64;
            // Within three standard deviations of a uniform letter distribution.
            let tol = 3.0 * (fair * (1.0 - fair) / total as f64).sqrt();
            assert!((share - fair).abs() < tol, "{n}-option letters {counts:?}");
        }
    }
}

fn read_all(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn same_seed_gives_byte_identical_output_across_thread_counts() {
    let cfg = WorldConfig {
        scenes: 6,
        ..small_config(5)
    };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_dataset(&cfg, a.path(), &|_| {}).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| write_dataset(&cfg, b.path(), &|_| {}).unwrap());
    let (fa, fb) = (read_all(a.path()), read_all(b.path()));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        assert!(v == &fb[k], "{k} differs");
    }
    // A different seed gives different images.
    let c = tempfile::tempdir().unwrap();
    write_dataset(&WorldConfig { seed: 6, ..cfg }, c.path(), &|_| {}).unwrap();
    assert_ne!(
        read_all(c.path())["images/s6_000000.png"],
        fa["images/s5_000000.png"]
    );
}

#[test]
fn written_formats_parse_and_agree() {
    use cooper_world::readers::{read_depth_png, read_stage1_index, DepthDataset, Stage1Target};
    let cfg = WorldConfig {
        scenes: 3,
        chains_per_scene: 2,
        ..small_config(2)
    };
    let dir = tempfile::tempdir().unwrap();
    let summary = write_dataset(&cfg, dir.path(), &|_| {}).unwrap();
    assert_eq!(summary.scenes, 3);
    // Stage-1 depth rows round-trip to the rendered depth (millimetre precision).
    let rows = read_stage1_index(&dir.path().join("stage1_depth.jsonl"), dir.path()).unwrap();
    assert_eq!(rows.len(), 3);
    let g = generate_scene(&cfg, 0);
    let Stage1Target::Depth(p) = &rows[0].target else {
        panic!("depth row expected")
    };
    let d = read_depth_png(p, DepthDataset::World).unwrap();
    for (a, b) in d.metres.iter().zip(&g.frame.depth) {
        assert!((a - b).abs() <= 0.0005 + 2e-5, "{a} vs {b}");
    }
    // SFT rows: image/text items, need_loss strings, exact tool tags and a boxed answer.
    let sft = std::fs::read_to_string(dir.path().join("sft_interleaved.jsonl")).unwrap();
    let mut saw_tool = false;
    for line in sft.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let items = v["interleaved_reason"].as_array().unwrap();
        assert_eq!(items[0]["type"], "image");
        assert_eq!(items[1]["need_loss"], "false");
        let last = items.last().unwrap()["value"].as_str().unwrap();
        assert!(
            last.starts_with("<think>") && last.contains("\\boxed{") && last.ends_with("</answer>")
        );
        for it in items {
            let t = it["value"].as_str().unwrap();
            if t.contains(cooper_world::chains::DEPTH_PROMPT)
                || t.contains(cooper_world::chains::SEGMENTATION_PROMPT)
            {
                saw_tool = true;
                assert_eq!(it["need_loss"], "true");
                assert!(t.starts_with("<think>"));
            }
        }
    }
    assert!(saw_tool, "some chain calls a tool");
    // One scene description and one cell listing per scene, in scene order, with the same input
    // image as its chains.
    let first_chain: serde_json::Value = serde_json::from_str(sft.lines().next().unwrap()).unwrap();
    for (file, suffix, category, count) in [
        (
            "sft_describe.jsonl",
            "describe",
            "description",
            summary.sft_describe,
        ),
        ("sft_cells.jsonl", "cells", "cells", summary.sft_cells),
    ] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let rows: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len() as u64, summary.scenes, "{file}");
        assert_eq!(count, summary.scenes, "{file}");
        assert_eq!(rows[0]["data_id"], format!("{}-{suffix}", g.scene.id));
        assert_eq!(rows[0]["category"], category);
        assert_eq!(
            rows[0]["interleaved_reason"][0]["value"],
            first_chain["interleaved_reason"][0]["value"]
        );
    }
    // RL rows name an existing image.
    let rl = std::fs::read_to_string(dir.path().join("rl.jsonl")).unwrap();
    for line in rl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(dir.path().join(v["image"].as_str().unwrap()).is_file());
        assert!(["positive", "negative", "boundary"].contains(&v["flag"].as_str().unwrap()));
    }
    // TSV: header, one row per question, the image cell is base64 or an earlier index.
    let mut r = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .from_path(dir.path().join("eval.tsv"))
        .unwrap();
    let header = r.headers().unwrap().clone();
    assert_eq!(&header[0], "index");
    assert_eq!(&header[3], "A");
    let n = r
        .records()
        .map(|rec| rec.unwrap())
        .filter(|rec| rec[1].len() > 64 || rec[1].parse::<usize>().is_ok())
        .count();
    assert_eq!(n as u64, summary.questions);
}

#[test]
fn chain_styles_change_only_the_chains_and_rl_answers() {
    let cfg = WorldConfig {
        scenes: 4,
        ..small_config(8)
    };
    let plain = tempfile::tempdir().unwrap();
    write_dataset(&cfg, plain.path(), &|_| {}).unwrap();
    let styled_cfg = WorldConfig {
        description_thoughts: true,
        option_text_answers: true,
        ..cfg.clone()
    };
    let styled = tempfile::tempdir().unwrap();
    write_dataset(&styled_cfg, styled.path(), &|_| {}).unwrap();
    let (a, mut b) = (read_all(plain.path()), read_all(styled.path()));
    // Answering in words adds the option restatements, one row per multiple-choice question.
    let restated = b.remove("sft_restate.jsonl").expect("sft_restate.jsonl");
    // Opening with the description adds its lookups: text only, each thought learnt after the
    // description it is given.
    let lookups = b
        .remove("sft_description_lookups.jsonl")
        .expect("sft_description_lookups.jsonl");
    let lookups: Vec<serde_json::Value> = String::from_utf8(lookups)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lookups.is_empty());
    for row in &lookups {
        let items = row["interleaved_reason"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{row}");
        assert!(items.iter().all(|i| i["type"] == "text"));
        let given = items[1]["loss_start"].as_u64().unwrap() as usize;
        let thought = items[1]["value"].as_str().unwrap();
        assert!(thought
            .chars()
            .take(given)
            .collect::<String>()
            .contains("I can see"));
        assert!(items[0].get("loss_start").is_none());
    }
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let changed: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert_eq!(
        changed,
        [
            "manifest.json",
            "rl.jsonl",
            "sft_interleaved.jsonl",
            "sft_text.jsonl"
        ]
    );
    // RL rows of multiple-choice questions grade against the option's text; the others as before.
    let rows = |m: &BTreeMap<String, Vec<u8>>| -> Vec<serde_json::Value> {
        String::from_utf8(m["rl.jsonl"].clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let questions: Vec<Question> = String::from_utf8(a["questions.jsonl"].clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (before, after) = (rows(&a), rows(&b));
    assert_eq!(before.len(), questions.len());
    let mut mcq = 0;
    for ((q, x), y) in questions.iter().zip(&before).zip(&after) {
        assert_eq!(x["answer"], q.answer.as_str());
        if q.kind == AnswerKind::Mcq {
            assert_eq!(y["answer"], answer_text(q).as_str());
            mcq += 1;
        } else {
            assert_eq!(x, y);
        }
    }
    assert!(mcq > 0);
    let restated: Vec<serde_json::Value> = String::from_utf8(restated)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let offered: Vec<&Question> = questions
        .iter()
        .filter(|q| q.kind == AnswerKind::Mcq)
        .collect();
    assert_eq!(restated.len(), offered.len());
    for (row, q) in restated.iter().zip(offered) {
        let turns = row["interleaved_reason"].as_array().unwrap();
        assert_eq!(turns.len(), 2, "text only: {row}");
        assert_eq!(turns[0]["value"], q.prompt().as_str());
        assert_eq!(turns[0]["need_loss"], "false");
        let said = format!(
            "<think> The options are: {}. </think>",
            q.options.join(", ")
        );
        assert_eq!(turns[1]["value"], said.as_str());
        assert_eq!(turns[1]["need_loss"], "true");
    }
    // Both openings at once are refused before anything is written.
    let both = WorldConfig {
        listing_thoughts: true,
        ..styled_cfg.clone()
    };
    let out = tempfile::tempdir().unwrap();
    // A refused config names the setting and writes nothing.
    let refused = |cfg: &WorldConfig, says: &str| {
        let err = write_dataset(cfg, &out.path().join("w"), &|_| {}).unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
        assert!(!out.path().join("w").exists());
    };
    refused(&both, "description_thoughts");
    // Relation reasons read the description: without it they are refused the same way.
    let unread = WorldConfig {
        description_thoughts: false,
        relation_reasons: true,
        ..styled_cfg
    };
    refused(&unread, "relation_reasons");
    // So are given descriptions: there is no description to give.
    let undescribed = WorldConfig {
        relation_reasons: false,
        given_descriptions: true,
        ..unread
    };
    refused(&undescribed, "given_descriptions");
}

/// A world folder's files by name ([`read_all`]).
type Files = BTreeMap<String, Vec<u8>>;

/// Small worlds whose chains open with the description, written as they are and with `change`:
/// the second config, and both worlds' files by name.
fn description_worlds(change: fn(WorldConfig) -> WorldConfig) -> (WorldConfig, Files, Files) {
    let cfg = WorldConfig {
        scenes: 3,
        chains_per_scene: 3,
        description_thoughts: true,
        option_text_answers: true,
        relation_reasons: true,
        ..small_config(9)
    };
    let before = tempfile::tempdir().unwrap();
    write_dataset(&cfg, before.path(), &|_| {}).unwrap();
    let changed = change(cfg);
    let after = tempfile::tempdir().unwrap();
    write_dataset(&changed, after.path(), &|_| {}).unwrap();
    (changed, read_all(before.path()), read_all(after.path()))
}

/// The rows of a JSONL file of [`read_all`]'s map.
fn jsonl_rows(files: &Files, file: &str) -> Vec<serde_json::Value> {
    String::from_utf8(files[file].clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn given_descriptions_leave_the_chains_text_and_unlearn_only_the_objects_listed() {
    let (_, a, b) = description_worlds(|cfg| WorldConfig {
        given_descriptions: true,
        ..cfg
    });
    let changed: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert_eq!(
        changed,
        ["manifest.json", "sft_interleaved.jsonl", "sft_text.jsonl"]
    );
    let rows = jsonl_rows;
    for file in ["sft_interleaved.jsonl", "sft_text.jsonl"] {
        let (before, after) = (rows(&a, file), rows(&b, file));
        assert_eq!(before.len(), after.len());
        assert!(!after.is_empty());
        for (x, y) in before.iter().zip(&after) {
            let (xs, ys) = (
                x["interleaved_reason"].as_array().unwrap(),
                y["interleaved_reason"].as_array().unwrap(),
            );
            assert_eq!(xs.len(), ys.len());
            let mut first_learnt = true;
            for (p, q) in xs.iter().zip(ys) {
                assert_eq!(p["value"], q["value"]);
                assert!(p.get("loss_start").is_none());
                let learnt = q["type"] == "text" && q["need_loss"] == "true";
                if !(learnt && first_learnt) {
                    assert!(q.get("loss_start").is_none(), "{file}: {q}");
                    continue;
                }
                first_learnt = false;
                // The given part is the description's list of objects: the turn learns its
                // opening up to "From left to right:" (or "one object:"), and from the space
                // after the list on.
                let n = q["loss_start"].as_u64().expect("loss_start") as usize;
                let k = q["given_from"].as_u64().expect("given_from") as usize;
                let value = q["value"].as_str().unwrap();
                let head: String = value.chars().take(k).collect();
                let list: String = value.chars().skip(k).take(n - k).collect();
                let rest: String = value.chars().skip(n).collect();
                assert!(head.starts_with("<think> "), "{head}");
                assert!(
                    head.ends_with("objects. From left to right:")
                        || head.ends_with("I can see one object:"),
                    "{head}"
                );
                assert!(list.starts_with(" the ") && list.ends_with('.'), "{list}");
                assert!(list.contains(" cell, about "), "{list}");
                assert!(rest.starts_with(' ') && rest.len() > 1, "{rest}");
                assert!(!rest.contains("I can see"), "{rest}");
            }
            assert!(!first_learnt, "no learnt turn in {y}");
        }
    }
}

#[test]
fn describe_first_moves_the_description_before_the_question() {
    let (first_cfg, a, b) = description_worlds(|cfg| WorldConfig {
        describe_first: true,
        ..cfg
    });
    let changed: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert_eq!(
        changed,
        [
            "manifest.json",
            "sft_description_lookups.jsonl",
            "sft_interleaved.jsonl",
            "sft_text.jsonl"
        ]
    );
    let rows = jsonl_rows;
    let describe_turns: Vec<serde_json::Value> = rows(&a, "sft_describe.jsonl")
        .iter()
        .map(|r| r["interleaved_reason"][2].clone())
        .collect();
    let prompt = cooper_world::chains::DESCRIBE_PROMPT;
    for file in [
        "sft_interleaved.jsonl",
        "sft_text.jsonl",
        "sft_description_lookups.jsonl",
    ] {
        let (before, after) = (rows(&a, file), rows(&b, file));
        assert_eq!(before.len(), after.len());
        assert!(!after.is_empty(), "{file}");
        for (x, y) in before.iter().zip(&after) {
            let (xs, ys) = (
                x["interleaved_reason"].as_array().unwrap(),
                y["interleaved_reason"].as_array().unwrap(),
            );
            assert_eq!(ys.len(), xs.len() + 2, "{file}: {y}");
            // The picture (when the row has one), the request, the description, the question.
            let picture = usize::from(xs[0]["type"] == "image");
            assert_eq!(ys[..picture], xs[..picture]);
            assert_eq!(ys[picture]["value"], prompt);
            assert_eq!(ys[picture]["need_loss"], "false");
            let told = &ys[picture + 1];
            assert!(
                describe_turns.iter().any(|d| d["value"] == told["value"]),
                "{file}: {told} is no scene's description"
            );
            // Learnt with the picture in view; context in a text-only lookup.
            let learnt = if picture == 1 { "true" } else { "false" };
            assert_eq!(told["need_loss"], learnt, "{file}");
            assert_eq!(ys[picture + 2], xs[picture], "{file}: the question");
            // The first thought no longer repeats that description; the rest is unchanged.
            let description = told["value"]
                .as_str()
                .unwrap()
                .strip_prefix("<think> ")
                .and_then(|t| t.split(" </think>").next())
                .unwrap();
            let (was, is) = (&xs[picture + 1], &ys[picture + 3]);
            let was_text = was["value"].as_str().unwrap();
            assert!(was_text.contains(description), "{file}: {was_text}");
            assert_eq!(
                is["value"].as_str().unwrap(),
                was_text.replacen(&format!("{description} "), "", 1)
            );
            assert!(!is["value"].as_str().unwrap().contains("I can see"));
            assert_eq!(is["need_loss"], "true");
            assert!(is.get("loss_start").is_none() && is.get("given_from").is_none());
            assert_eq!(ys[picture + 4..], xs[picture + 2..], "{file}");
        }
    }
    // Without a description to move, or with the description given, it is refused.
    let out = tempfile::tempdir().unwrap();
    for (bad, says) in [
        (
            WorldConfig {
                description_thoughts: false,
                relation_reasons: false,
                ..first_cfg.clone()
            },
            "describe_first",
        ),
        (
            WorldConfig {
                given_descriptions: true,
                ..first_cfg.clone()
            },
            "given_descriptions",
        ),
    ] {
        let err = write_dataset(&bad, &out.path().join("w"), &|_| {}).unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
        assert!(!out.path().join("w").exists());
    }
}
