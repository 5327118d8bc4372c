//! The synthetic world words its training questions exactly as this harness asks its benchmark
//! items: a small model trained on one wording does not answer another (the default model put
//! option letters on yes/no questions when the two differed).
use cooper_eval::prompt::format_question;
use cooper_eval::tsv::Bench;
use cooper_world::dataset::{generate_scene, write_dataset, WorldConfig};

#[test]
fn world_questions_are_worded_as_the_harness_asks_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WorldConfig {
        seed: 11,
        scenes: 6,
        ..Default::default()
    };
    write_dataset(&config, dir.path(), &|_| {}).expect("world");
    let bench = Bench::load(&dir.path().join("eval.tsv")).expect("eval.tsv");
    let questions: Vec<_> = (0..config.scenes)
        .flat_map(|i| generate_scene(&config, i).questions)
        .collect();
    assert_eq!(bench.items.len(), questions.len());
    let mut kinds = std::collections::BTreeSet::new();
    for (item, q) in bench.items.iter().zip(&questions) {
        assert_eq!(format_question(item), q.prompt(), "question {}", q.id);
        kinds.insert(format!("{:?}", item.kind));
    }
    assert!(kinds.len() >= 3, "only {kinds:?} covered");
}
