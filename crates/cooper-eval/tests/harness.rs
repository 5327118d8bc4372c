//! End to end: a small VLMEvalKit-style TSV with base64 PNGs, a scripted answerer, the reports, and
//! resuming.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use cooper_eval::extract::{Prediction, Source};
use cooper_eval::judge::JudgeConfig;
use cooper_eval::report::PredictionLog;
use cooper_eval::{
    run_with, Answerer, BoxError, EvalConfig, ImageControl, JudgePolicy, ModelAnswer, ReasoningMode,
};
use image::{Rgb, RgbImage};

fn png_b64(rgb: [u8; 3]) -> String {
    let img = RgbImage::from_pixel(3, 2, Rgb(rgb));
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .expect("encode png");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const RED: [u8; 3] = [200, 0, 0];
const BLUE: [u8; 3] = [0, 0, 200];

/// Writes the benchmark. Items 2–7 reuse item 1's image by index; item 8 has its own.
fn write_bench(dir: &Path) -> std::path::PathBuf {
    let red = png_b64(RED);
    let blue = png_b64(BLUE);
    let rows = [
        format!("1\t{red}\tWhich is closer?\tthe chair\tthe lamp\tB\trelation\tMCQ\t"),
        "2\t1\tWhich is taller?\tthe door\tthe cup\tA\trelation\tMCQ\t".to_string(),
        "3\t1\tIs there a cup?\t\t\tYes\texistence\tYN\t".to_string(),
        "4\t1\tIs there a dog?\t\t\tNo\texistence\tYN\t".to_string(),
        "5\t1\tHow far is the door?\t\t\t2\tdistance\tNumber\tm".to_string(),
        "6\t1\tHow tall is the cup?\t\t\t(45, 'centimeters')\tdistance\t\t".to_string(),
        "7\t1\tHow wide is the rug?\t\t\t3\tdistance\tNumber\t".to_string(),
        format!("8\t{blue}\tHow many cups?\t\t\t3\tcount\tNumber_Int\t"),
    ];
    let body = format!(
        "index\timage\tquestion\tA\tB\tanswer\tcategory\ttype\tunit\n{}\n",
        rows.join("\n")
    );
    let path = dir.join("bench.tsv");
    std::fs::write(&path, body).expect("write tsv");
    path
}

/// Answers by the question's first line; records what it was asked; fails on unknown questions.
struct Script {
    answers: HashMap<&'static str, (&'static str, [u8; 3])>,
    asked: Vec<String>,
}

impl Script {
    fn full() -> Self {
        let answers = HashMap::from([
            (
                "Which is closer?",
                (
                    "<think>the lamp is nearer</think><answer>The lamp. \\boxed{B}</answer>",
                    RED,
                ),
            ),
            ("Which is taller?", ("<answer>B</answer>", RED)),
            ("Is there a cup?", ("Yes, there is.", RED)),
            ("Is there a dog?", ("I cannot tell", RED)),
            (
                "How far is the door?",
                ("<answer>\\boxed{250 cm}</answer>", RED),
            ),
            ("How tall is the cup?", ("about 1.5 feet", RED)),
            ("How wide is the rug?", ("I think 9", RED)),
            ("How many cups?", ("</think>there are three cups", BLUE)),
        ]);
        Self {
            answers,
            asked: Vec::new(),
        }
    }

    fn empty() -> Self {
        Self {
            answers: HashMap::new(),
            asked: Vec::new(),
        }
    }
}

impl Answerer for Script {
    fn answer(
        &mut self,
        image: &RgbImage,
        question: &str,
        mode: ReasoningMode,
    ) -> Result<ModelAnswer, BoxError> {
        assert_eq!(mode, ReasoningMode::Cooper);
        let first = question.lines().next().unwrap_or("").to_string();
        self.asked.push(first.clone());
        let (text, colour) = self
            .answers
            .get(first.as_str())
            .ok_or_else(|| format!("unexpected question {first:?}"))?;
        assert_eq!(image.get_pixel(0, 0).0, *colour, "wrong image for {first}");
        Ok(ModelAnswer {
            text: (*text).to_string(),
            turns: 2,
            depth_calls: 1,
            segmentation_calls: 0,
            // As a describe-first model would, for one question.
            description: (first == "How far is the door?")
                .then(|| "<think> I can see a door. </think>".to_string()),
        })
    }
}

/// Runs `config`, which must be refused with a message containing `expected`.
fn assert_refused(config: &EvalConfig, answerer: impl Answerer, expected: &str) {
    let err = run_with(config, answerer).expect_err(expected).to_string();
    assert!(err.contains(expected), "{err}");
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// The benchmark written into `dir`, run in `cooper` mode into `dir/out_name`, without a progress
/// bar.
fn quiet_config(dir: &Path, out_name: &str) -> EvalConfig {
    let bench = write_bench(dir);
    let mut config = EvalConfig::new(&bench, dir.join(out_name), ReasoningMode::Cooper);
    config.progress = false;
    config
}

#[test]
fn harness_scores_reports_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = quiet_config(dir.path(), "out");

    let mut script = Script::full();
    let outcome = run_with(&config, &mut script).expect("first run");
    assert_eq!((outcome.asked, outcome.skipped), (8, 0));
    assert_eq!(script.asked.len(), 8);
    // The MCQ question string carries the options and the format instruction.
    let log = PredictionLog::open(&outcome.predictions_path).expect("log");
    let q1 = &log.get("1").expect("item 1").question;
    assert_eq!(
        q1,
        "Which is closer?\nOptions:\nA. the chair\nB. the lamp\nAnswer with the letter of the correct option."
    );

    let s = &outcome.summary;
    // relation: item 1 right (boxed B), item 2 wrong (B vs A) → 1/2.
    let rel = &s.categories["relation"];
    assert_eq!((rel.n, rel.accuracy), (2, Some(0.5)));
    // existence: item 3 right, item 4 unanswered → 1/2, one unanswered.
    let ex = &s.categories["existence"];
    assert_eq!((ex.n, ex.accuracy, ex.unanswered), (2, Some(0.5), 1));
    // distance:
    //   item 5: 250 cm vs 2 m → 2.5 vs 2, rel 0.25: passes tolerances 0.30 … 0.50 → MRA 5/10;
    //           ratio 1.25 ≤ 2 → success.
    //   item 6: 1.5 ft = 45.72 cm vs 45 cm, rel 0.016 → MRA 1; ratio 1.016 → success.
    //   item 7: 9 vs 3, rel 2 → MRA 0; ratio 3 > 2 → failure.
    //   MRA = (0.5 + 1 + 0) / 3 = 0.5; success = 2/3.
    let dist = &s.categories["distance"];
    assert_eq!(dist.n, 3);
    assert!(close(dist.mra.expect("mra"), 0.5));
    assert!(close(dist.success_rate.expect("success"), 2.0 / 3.0));
    assert_eq!(dist.accuracy, None);
    // count: "three" → 3 = 3.
    assert_eq!(s.categories["count"].accuracy, Some(1.0));
    // overall: hits 1 + 0 + 1 + 0 + 0.5 + 1 + 0 + 1 = 4.5 over 8 = 0.5625; accuracy 3/5.
    assert_eq!(s.overall.n, 8);
    assert!(close(s.overall.score, 0.5625));
    assert_eq!(s.overall.accuracy, Some(0.6));
    assert_eq!(s.overall.unanswered, 1);
    // Chance: two options → 1/2; yes/no → 1/2; none for numbers and counts. Overall over the four
    // items where it is defined.
    assert_eq!(rel.chance, Some(0.5));
    assert_eq!(ex.chance, Some(0.5));
    assert_eq!((dist.chance, s.categories["count"].chance), (None, None));
    assert_eq!(s.overall.chance, Some(0.5));
    // p vs chance: relation 1 of 2 fair guesses → P(X ≥ 1) = 3/4; overall 2 of 4 → 11/16.
    assert!(close(rel.p_vs_chance.expect("p"), 0.75));
    assert!(close(s.overall.p_vs_chance.expect("p"), 11.0 / 16.0));
    assert_eq!(dist.p_vs_chance, None);

    // The JSON and markdown reports carry the same numbers.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&outcome.results_path).expect("read json"))
            .expect("parse json");
    assert_eq!(json["overall"]["n"], 8);
    assert!(close(
        json["overall"]["score"].as_f64().expect("score"),
        0.5625
    ));
    assert!(close(
        json["categories"]["distance"]["mra"].as_f64().expect("mra"),
        0.5
    ));
    assert_eq!(json["mode"], "cooper");
    let md = std::fs::read_to_string(&outcome.report_path).expect("read md");
    assert!(
        md.contains("| distance | 3 | 50.00 | – | – | – | 50.00 | 66.67 | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("| relation | 2 | 50.00 | 50.00 | 50.00 | 0.750 | – | – | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("| **overall** | 8 | 56.25 | 60.00 | 50.00 | 0.688 | 50.00 | 66.67 | 1 |"),
        "{md}"
    );
    // Per-item predictions record the raw output, the extraction and the tool counts.
    let item5 = log.get("5").expect("item 5");
    assert_eq!(item5.raw_output, "<answer>\\boxed{250 cm}</answer>");
    assert_eq!(item5.score.mra, Some(0.5));
    assert_eq!((item5.turns, item5.depth_calls), (2, 1));
    // ... and a describe-first model's description, where there is one.
    assert_eq!(
        item5.description.as_deref(),
        Some("<think> I can see a door. </think>")
    );
    assert_eq!(log.get("4").expect("item 4").description, None);

    // Rerun: everything is answered, nothing is asked, the summary is unchanged.
    let mut idle = Script::empty();
    let again = run_with(&config, &mut idle).expect("resumed run");
    assert!(idle.asked.is_empty(), "re-asked {:?}", idle.asked);
    assert_eq!((again.asked, again.skipped), (0, 8));
    assert_eq!(again.summary, outcome.summary);

    // A crash mid-write leaves a cut-off last line: it is dropped and only that item is re-asked.
    let path = &outcome.predictions_path;
    let text = std::fs::read_to_string(path).expect("read predictions");
    let lines: Vec<&str> = text.lines().collect();
    let last = lines[7];
    let cut = format!("{}\n{}", lines[..7].join("\n"), &last[..last.len() / 2]);
    std::fs::write(path, cut).expect("cut predictions");
    let mut script = Script::full();
    let third = run_with(&config, &mut script).expect("recovering run");
    assert_eq!(script.asked, ["How many cups?"]);
    assert_eq!((third.asked, third.skipped), (1, 7));
    assert_eq!(third.summary, outcome.summary);
    assert_eq!(
        std::fs::read_to_string(path).expect("read").lines().count(),
        8
    );
}

#[test]
fn limit_and_model_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bench = write_bench(dir.path());
    let mut config = EvalConfig::new(&bench, dir.path().join("out"), ReasoningMode::Cooper);
    config.progress = false;
    config.limit = Some(2);
    let mut script = Script::full();
    let outcome = run_with(&config, &mut script).expect("limited run");
    assert_eq!(outcome.summary.overall.n, 2);
    assert_eq!(script.asked.len(), 2);

    // The same output folder refuses answers of another mode.
    let mut other = config.clone();
    other.mode = ReasoningMode::Pe;
    assert_refused(
        &other,
        Script::empty(),
        "holds mode `cooper` answers, not `pe`",
    );

    // A failing model stops the run with the item's index; what was answered stays recorded.
    config.limit = None;
    let mut failing = Script::empty();
    let err = run_with(&config, &mut failing)
        .expect_err("model fails")
        .to_string();
    assert!(
        err.contains("answering item 3") && err.contains("unexpected question"),
        "{err}"
    );
}

/// Serves exactly one HTTP request on 127.0.0.1 with a chat completion whose content is `reply`,
/// then stops listening; returns the base URL and a receiver for the request body.
fn one_shot_judge(reply: &'static str) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        let json = serde_json::json!({"choices": [{"message": {"content": reply}}]}).to_string();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        );
    });
    (url, rx)
}

#[test]
fn judge_is_asked_only_when_rules_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bench = write_bench(dir.path());
    let (url, requests) = one_shot_judge("No");
    let mut config = EvalConfig::new(&bench, dir.path().join("out"), ReasoningMode::Cooper);
    config.progress = false;
    config.judge_policy = JudgePolicy::Fallback;
    config.judge = Some(JudgeConfig {
        retries: 0,
        backoff: std::time::Duration::from_millis(1),
        timeout: std::time::Duration::from_secs(5),
        ..JudgeConfig::new(url, "judge", None)
    });
    let outcome = run_with(&config, Script::full()).expect("run with judge");
    // Only item 4 ("I cannot tell") defeats the rules; the judge maps it to No, which is right.
    let body = requests.recv().expect("one judge request");
    assert!(
        body.contains("Is there a dog?") && body.contains("I cannot tell"),
        "{body}"
    );
    let ex = &outcome.summary.categories["existence"];
    assert_eq!((ex.accuracy, ex.unanswered), (Some(1.0), 0));
    let log = PredictionLog::open(&outcome.predictions_path).expect("log");
    let item4 = log.get("4").expect("item 4");
    assert_eq!(item4.prediction, Some(Prediction::YesNo(false)));
    assert_eq!(item4.source, Some(Source::Judge));
    // overall: 4.5 hits before + 1 = 5.5 over 8.
    assert!(close(outcome.summary.overall.score, 5.5 / 8.0));
    assert_eq!(item4.judge_error, None);
}

#[test]
fn unreachable_judge_keeps_the_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bench = write_bench(dir.path());
    // A port that was just free and is closed again: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut config = EvalConfig::new(&bench, dir.path().join("out"), ReasoningMode::Cooper);
    config.progress = false;
    config.judge = Some(JudgeConfig {
        retries: 1,
        backoff: std::time::Duration::from_millis(1),
        timeout: std::time::Duration::from_secs(2),
        ..JudgeConfig::new(format!("http://127.0.0.1:{port}/v1"), "judge", None)
    });
    let outcome = run_with(&config, Script::full()).expect("run survives the judge");
    let log = PredictionLog::open(&outcome.predictions_path).expect("log");
    let item4 = log.get("4").expect("item 4");
    assert_eq!(item4.prediction, None);
    assert!(
        item4
            .judge_error
            .as_deref()
            .is_some_and(|e| e.contains("2 attempts failed")),
        "{item4:?}"
    );
    assert_eq!(item4.raw_output, "I cannot tell");
    // Everything else was extracted by the rules, as without a judge: 4.5 / 8.
    assert!(close(outcome.summary.overall.score, 0.5625));
}

/// Answers from the picture alone: "Yes" on red, "No" on blue; records each question's first line
/// with the colour it was shown.
struct ByColour(Vec<(String, [u8; 3])>);

impl Answerer for ByColour {
    fn answer(
        &mut self,
        image: &RgbImage,
        question: &str,
        _mode: ReasoningMode,
    ) -> Result<ModelAnswer, BoxError> {
        let colour = image.get_pixel(0, 0).0;
        let first = question.lines().next().unwrap_or("").to_string();
        self.0.push((first, colour));
        Ok(ModelAnswer::text(if colour == RED { "Yes" } else { "No" }))
    }
}

#[test]
fn shuffled_images_show_every_question_another_picture() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = quiet_config(dir.path(), "shuffled");
    config.images = ImageControl::Shuffled;
    let mut answerer = ByColour(Vec::new());
    let outcome = run_with(&config, &mut answerer).expect("shuffled run");
    assert_eq!(outcome.asked, 8);
    // Items 1–7 share the red picture, so each is shown item 8's blue one; item 8 is shown the
    // next item after it (cyclically) with another picture: item 1.
    for (i, (question, colour)) in answerer.0.iter().enumerate() {
        let expected = if i < 7 { BLUE } else { RED };
        assert_eq!(*colour, expected, "{question}");
    }
    let log = PredictionLog::open(&outcome.predictions_path).expect("log");
    assert_eq!(
        log.get("3").and_then(|r| r.image_from.as_deref()),
        Some("8")
    );
    assert_eq!(
        log.get("8").and_then(|r| r.image_from.as_deref()),
        Some("1")
    );
    // Item 3 (truth Yes) is now answered No from the blue picture; item 4 (truth No) right.
    assert_eq!(log.get("3").and_then(|r| r.score.correct), Some(false));
    assert_eq!(log.get("4").and_then(|r| r.score.correct), Some(true));
    let results = std::fs::read_to_string(&outcome.results_path).expect("results");
    assert!(results.contains("\"images\": \"shuffled\""), "{results}");
    let report = std::fs::read_to_string(&outcome.report_path).expect("report");
    assert!(report.contains("Images: `shuffled`"), "{report}");

    // The same folder refuses answers with own pictures, and an own-picture folder the control.
    let refused = |config: &EvalConfig, expected: &str| {
        assert_refused(config, ByColour(Vec::new()), expected)
    };
    let mut own = config.clone();
    own.images = ImageControl::Own;
    refused(&own, "with shuffled pictures, not their own");
    own.out_dir = dir.path().join("own");
    run_with(&own, ByColour(Vec::new())).expect("own run");
    let mut back = own.clone();
    back.images = ImageControl::Shuffled;
    refused(&back, "with their own pictures, not shuffled ones");

    // One picture only: no item can be shown another's.
    let mut single = config.clone();
    single.limit = Some(3);
    single.out_dir = dir.path().join("single");
    refused(&single, "fewer than two distinct pictures");
}

#[test]
fn constrained_answers_are_recorded_and_never_mixed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = quiet_config(dir.path(), "constrained");
    config.constrained_answers = true;
    let outcome = run_with(&config, Script::full()).expect("constrained run");
    let log = PredictionLog::open(&outcome.predictions_path).expect("log");
    assert!(log.get("1").expect("item 1").constrained);
    let results = std::fs::read_to_string(&outcome.results_path).expect("results");
    assert!(
        results.contains("\"constrained_answers\": true"),
        "{results}"
    );
    let report = std::fs::read_to_string(&outcome.report_path).expect("report");
    assert!(report.contains("Answers: constrained"), "{report}");

    let mut free = config.clone();
    free.constrained_answers = false;
    assert_refused(
        &free,
        Script::empty(),
        "constrained to the options, not decoded freely",
    );
    // A free run writes nothing about constraints (older folders read the same).
    free.out_dir = dir.path().join("free");
    let outcome = run_with(&free, Script::full()).expect("free run");
    let results = std::fs::read_to_string(&outcome.results_path).expect("results");
    assert!(!results.contains("constrained"), "{results}");
    let mut back = free.clone();
    back.constrained_answers = true;
    assert_refused(&back, Script::empty(), "decoded freely, not constrained");
}
