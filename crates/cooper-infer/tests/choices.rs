//! Constrained answers on a real (tiny, random) model: the box is filled with the choice the
//! model scores highest, scored independently here token by token, and decoding goes on from a
//! context equal to one that was fed the same tokens.

use candle_core::{DType, Device, Tensor};
use cooper_infer::choices::choice_log_probs;
use cooper_infer::{AnswerChoices, Engine, TextParams};
use cooper_model::init::{init_folder, Preset};

fn log_softmax(logits: &Tensor) -> Vec<f32> {
    let v = logits.to_vec1::<f32>().unwrap();
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f32 = v.iter().map(|x| (x - max).exp()).sum();
    v.iter().map(|x| x - max - z.ln()).collect()
}

#[test]
fn the_box_holds_the_likeliest_choice() {
    let dir = tempfile::tempdir().unwrap();
    init_folder(dir.path(), Preset::Tiny, true, DType::F32, 11).unwrap();
    let engine = Engine::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    let prefix = engine.encode("<answer> The answer is \\boxed").unwrap();
    let (pending, fed) = prefix.split_last().unwrap();
    // The prompt as decoding leaves it: tokens fed one by one, no turn delimiters.
    let mut ctx = cooper_model::Context::new();
    for &id in fed {
        ctx = engine.model.decode_step(&ctx, id).unwrap().1;
    }
    let choices = AnswerChoices::from_question(
        "Which is nearer?\nA. red box\nB. cyan cone\nC. green ball\nAnswer with the letter.",
    )
    .unwrap();
    let closers = engine.box_closers();
    assert!(!closers.is_empty());
    for &id in &closers {
        assert!(engine.decode(&[id]).unwrap().starts_with('}'));
    }

    // Every form scored from scratch: feed the opening, then the form, then ask for a closer.
    let score = |form: &str| {
        let ids = engine.encode(&format!("{{{form}")).unwrap();
        let mut c = ctx.clone();
        let mut token = *pending;
        let mut lp = 0.0f32;
        for &id in &ids {
            let (logits, next) = engine.model.decode_step(&c, token).unwrap();
            lp += log_softmax(&logits)[id as usize];
            c = next;
            token = id;
        }
        let (logits, _) = engine.model.decode_step(&c, token).unwrap();
        let after = log_softmax(&logits);
        lp + closers
            .iter()
            .map(|&i| after[i as usize].exp())
            .sum::<f32>()
            .ln()
    };
    let per_choice: Vec<Vec<f32>> = choices
        .choices
        .iter()
        .map(|c| c.forms.iter().map(|f| score(f)).collect())
        .collect();
    let totals = choice_log_probs(&per_choice);
    let best = (0..totals.len())
        .max_by(|&a, &b| totals[a].total_cmp(&totals[b]))
        .unwrap();

    let mut rng = cooper_infer::sampling::seeded_rng(0);
    let filled = engine
        .fill_box(&ctx, *pending, &choices, &TextParams::default(), &mut rng)
        .unwrap();
    let written = engine.decode(&filled.ids).unwrap();
    let content = written.strip_prefix('{').expect("the box is opened");
    assert_eq!(
        choices.label_of(content),
        Some(choices.choices[best].label.as_str()),
        "boxed {content:?}; choice log-probs {totals:?}"
    );
    // Within the choice, its likeliest form.
    let forms = &per_choice[best];
    let form = forms
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(content, choices.choices[best].forms[form]);

    // Decoding resumes from a context equal to one fed, token by token as decoding feeds them,
    // the opening and the form but its last token.
    assert_eq!(filled.next, *filled.ids.last().unwrap());
    let mut direct = ctx.clone();
    for &id in std::iter::once(pending).chain(&filled.ids[..filled.ids.len() - 1]) {
        direct = engine.model.decode_step(&direct, id).unwrap().1;
    }
    assert_eq!(direct.kv_len(), filled.context.kv_len());
    let (a, _) = engine
        .model
        .decode_step(&filled.context, filled.next)
        .unwrap();
    let (b, _) = engine.model.decode_step(&direct, filled.next).unwrap();
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-4, "logits differ by {diff}");
}
