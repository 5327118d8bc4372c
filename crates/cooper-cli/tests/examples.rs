//! The README's main command: the embedded default model answers the example scenes as
//! `examples/README.md` says (greedy decoding and fixed seeds make this deterministic).
use std::path::Path;
use std::process::Command;

fn ask(scene: &str, cache: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let question = std::fs::read_to_string(root.join(format!("examples/{scene}.txt")))
        .expect("example question");
    let out = Command::new(env!("CARGO_BIN_EXE_cooper"))
        .arg("ask")
        .arg("--image")
        .arg(root.join(format!("examples/{scene}.png")))
        .arg(question)
        .env("COOPER_CACHE", cache)
        .env_remove("COOPER_MODEL")
        .output()
        .expect("run cooper ask");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "cooper ask failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_default_model_answers_the_examples() {
    let cache = tempfile::tempdir().expect("tempdir");
    for (scene, answer) in [("scene-1", "B"), ("scene-2", "A"), ("scene-3", "No")] {
        let stdout = ask(scene, cache.path());
        let last = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with("answer:"))
            .unwrap_or_default();
        assert_eq!(last, format!("answer: {answer}"), "{scene}:\n{stdout}");
    }
}
