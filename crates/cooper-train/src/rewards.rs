//! Reward functions for GRPO in TRL's shape, and the CPR reward of COOPER.
//!
//! A reward function receives every completion of a generation round together with the dataset
//! columns (`solution`, `question`, `flag`, `data_id`), and returns one `f32` per completion.
//! `NaN` means "not applicable" and is skipped by the weighted sum, as TRL does with `None`. A
//! [`Completion`] is the full output list of the interleaved loop (the system prompt if the model
//! is asked with one, the inputs, then generated text turns, generated images and
//! [`REFLECTION_PROMPT`] items) with the length of its prompt. The official code slices a fixed
//! three prompt items off every list; here each completion says how many it has, so that a model
//! asked without a system prompt, or with two pictures, is scored on its own turns.
//!
//! The CPR reward (`accuracy`, `format`, `exploration_guided`, summed with weight 1):
//! * [`AccuracyReward`]: the last item's `<answer>…</answer>` content (or the whole text) against
//!   `solution`, by rules ([`AnswerMatcher`]), by an LLM judge ([`LlmJudge`], the official
//!   choice), or rules first and the judge for what the rules reject.
//! * [`FormatReward`]: after the prompt, every text item but the last must, trimmed, fully
//!   match `<think>…</think>` followed by a `<segmentation>` or `<depth-estimation>` call
//!   (DOTALL); [`REFLECTION_PROMPT`] items are skipped and images ignored; the last item must fully
//!   match `<think>…</think>` then `<answer>…</answer>`. 1 or 0.
//! * [`ExplorationReward`]: a completion explores if a non-final text item fully matches a tool
//!   call. Within each `data_id` group, with c exploring completions: c < threshold (3) gives the
//!   exploring completions flagged `positive` +0.2; c > threshold gives the exploring ones
//!   flagged `negative` −0.2; everything else 0.
//!
//! **The official slice quirk.** The official `format_reward` replaces each completion list by
//! its slice after the prompt *in place*, so the exploration reward, which runs next and slices
//! again, skips three more items and never sees the first tool call. We implement the intended
//! behaviour (both look past the prompt only). [`ExplorationReward::official_slice_quirk`]
//! reproduces the official run (skip twice the prompt); [`RewardSet::from_config`] turns it
//! on only when `grpo.official_slice_quirk` is set *and* `format` comes before
//! `exploration_guided` in the reward list, which is when the official code is affected.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use regex::Regex;

use crate::config::{AccuracyMode, GrpoConfig, JudgeConfig};
use crate::error::{Result, TrainError};

/// The text the interleaved loop appends after each generated image. Matched by string equality,
/// so it must stay byte-identical to the official `REFLECTION_PROMPT` (`inferencer.py:62`).
pub const REFLECTION_PROMPT: &str = "\nHere is the result of the depth-estimation/segmentation. Please note that the result of the depth-estimation/segmentation is not always accurate. Please check it carefully. \nNow please continue to think in <think>...</think> and then decide whether to continue to generate the depth-estimation/segmentation in <depth-estimation>...</depth-estimation>/<segmentation>...</segmentation> or give the answer in <answer>...</answer>.\n";

/// Full-match patterns (DOTALL) of a tool turn and of an answer turn.
static SEGMENTATION_TURN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)\A<think>.*?</think>\s*<segmentation>.*?</segmentation>\z")
        .expect("static pattern")
});
static DEPTH_TURN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)\A<think>.*?</think>\s*<depth-estimation>.*?</depth-estimation>\z")
        .expect("static pattern")
});
static ANSWER_TURN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)\A<think>.*?</think>\s*<answer>.*?</answer>\z").expect("static pattern")
});
/// Search patterns (not anchored) used to count tool calls for the metrics.
static SEGMENTATION_SEARCH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)<think>.*?</think>\s*<segmentation>.*?</segmentation>")
        .expect("static pattern")
});
static DEPTH_SEARCH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)<think>.*?</think>\s*<depth-estimation>.*?</depth-estimation>")
        .expect("static pattern")
});
static ANSWER_SPAN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<answer>(.*?)</answer>").expect("static pattern"));
static OPTION_LETTER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:\(([A-Ea-e])\)|([A-Ea-e])(?:[.:)]|$))").expect("static pattern")
});
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?").expect("static pattern")
});
static FRACTION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([-+]?\d+)\s*/\s*(\d+)$").expect("static pattern"));

/// One item of a completion, as the interleaved loop returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionItem<'a> {
    /// A text item (prompt, generated turn, or [`REFLECTION_PROMPT`]).
    Text(&'a str),
    /// An image (input or generated); rewards never look inside.
    Image,
}

impl<'a> CompletionItem<'a> {
    /// The text, if this is a text item.
    pub fn text(&self) -> Option<&'a str> {
        match self {
            Self::Text(s) => Some(s),
            Self::Image => None,
        }
    }
}

/// One completion as the rewards see it: the interleaved loop's whole output list and how many
/// of its leading items are the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion<'a> {
    /// Every item, prompt first.
    pub items: Vec<CompletionItem<'a>>,
    /// Leading items that are the prompt (system prompt if any, pictures, question).
    pub prompt_len: usize,
}

impl<'a> Completion<'a> {
    /// A completion whose first `prompt_len` items are the prompt.
    pub fn new(items: Vec<CompletionItem<'a>>, prompt_len: usize) -> Self {
        Self { items, prompt_len }
    }

    /// The items after the prompt: what the model produced (and the reflection prompts between).
    pub fn generated(&self) -> &[CompletionItem<'a>] {
        self.after(self.prompt_len)
    }

    fn after(&self, skip: usize) -> &[CompletionItem<'a>] {
        self.items.get(skip..).unwrap_or(&[])
    }
}

/// The per-row `flag` column of the RL data (`positive` / `negative`; anything else, including a
/// missing value, is the official default `boundary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// Tool use should be encouraged for this question.
    Positive,
    /// Tool use should be discouraged for this question.
    Negative,
    /// Neither.
    Boundary,
}

impl Flag {
    /// Reads the column value.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("positive") => Self::Positive,
            Some("negative") => Self::Negative,
            _ => Self::Boundary,
        }
    }
}

/// The dataset columns handed to reward functions, one entry per completion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RewardColumns {
    /// Reference answers.
    pub solution: Vec<String>,
    /// Questions (used by the judge prompt).
    pub question: Vec<String>,
    /// Exploration flags.
    pub flag: Vec<Flag>,
    /// Group ids: completions of the same prompt share one.
    pub data_id: Vec<String>,
}

impl RewardColumns {
    fn require(&self, name: &str, len: usize, n: usize) -> Result<()> {
        if len != n {
            return Err(TrainError::Input(format!(
                "reward column `{name}` has {len} entries for {n} completions"
            )));
        }
        Ok(())
    }
}

/// A TRL-style reward function.
pub trait RewardFunction: Send + Sync {
    /// The name used in metrics (`rewards/<name>/mean`).
    fn name(&self) -> &str;

    /// One reward per completion (NaN: not applicable).
    fn score(&self, completions: &[Completion<'_>], columns: &RewardColumns) -> Result<Vec<f32>>;
}

fn is_tool_turn(text: &str) -> bool {
    let t = text.trim();
    SEGMENTATION_TURN.is_match(t) || DEPTH_TURN.is_match(t)
}

fn is_reflection(text: &str) -> bool {
    text == REFLECTION_PROMPT || text.trim() == REFLECTION_PROMPT.trim()
}

/// The `format` reward (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct FormatReward;

impl FormatReward {
    /// Whether one completion is well formed.
    ///
    /// As in the official code, "last" means the last item of the list; if that is an image no
    /// answer is required, and a completion with nothing after the prompt passes.
    pub fn is_well_formed(&self, completion: &Completion<'_>) -> bool {
        let items = completion.generated();
        let last = items.len().saturating_sub(1);
        items.iter().enumerate().all(|(j, item)| match item.text() {
            None => true,
            Some(text) if j == last => ANSWER_TURN.is_match(text.trim()),
            Some(text) if is_reflection(text) => true,
            Some(text) => is_tool_turn(text),
        })
    }
}

impl RewardFunction for FormatReward {
    fn name(&self) -> &str {
        "format"
    }

    fn score(&self, completions: &[Completion<'_>], _columns: &RewardColumns) -> Result<Vec<f32>> {
        Ok(completions
            .iter()
            .map(|c| if self.is_well_formed(c) { 1.0 } else { 0.0 })
            .collect())
    }
}

/// The `exploration_guided` reward (see the module docs).
#[derive(Debug, Clone)]
pub struct ExplorationReward {
    /// Group count of exploring completions that separates bonus from penalty (3).
    pub threshold: usize,
    /// Bonus / penalty size (0.2).
    pub bonus: f32,
    /// Skip the prompt twice, as the official run does after `format_reward` has sliced
    /// the lists in place (so the first tool turn is never seen).
    pub official_slice_quirk: bool,
}

impl Default for ExplorationReward {
    fn default() -> Self {
        Self {
            threshold: 3,
            bonus: 0.2,
            official_slice_quirk: false,
        }
    }
}

impl ExplorationReward {
    /// Whether a completion called a tool in a non-final text item.
    pub fn explores(&self, completion: &Completion<'_>) -> bool {
        let items = if self.official_slice_quirk {
            completion.after(2 * completion.prompt_len)
        } else {
            completion.generated()
        };
        let last = items.len().saturating_sub(1);
        items.iter().enumerate().any(|(j, item)| match item.text() {
            Some(text) if j != last && !is_reflection(text) => is_tool_turn(text),
            _ => false,
        })
    }
}

impl RewardFunction for ExplorationReward {
    fn name(&self) -> &str {
        "exploration_guided"
    }

    fn score(&self, completions: &[Completion<'_>], columns: &RewardColumns) -> Result<Vec<f32>> {
        let n = completions.len();
        columns.require("flag", columns.flag.len(), n)?;
        columns.require("data_id", columns.data_id.len(), n)?;
        let explores: Vec<bool> = completions.iter().map(|c| self.explores(c)).collect();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (id, &e) in columns.data_id.iter().zip(&explores) {
            *counts.entry(id.as_str()).or_default() += usize::from(e);
        }
        Ok((0..n)
            .map(|i| {
                let count = counts[columns.data_id[i].as_str()];
                match columns.flag[i] {
                    Flag::Positive if explores[i] && count < self.threshold => self.bonus,
                    Flag::Negative if explores[i] && count > self.threshold => -self.bonus,
                    _ => 0.0,
                }
            })
            .collect())
    }
}

/// The content of the first `<answer>…</answer>` span (trimmed), or the whole text trimmed.
pub fn extract_answer(text: &str) -> &str {
    let text = text.trim();
    match ANSWER_SPAN.captures(text).and_then(|c| c.get(1)) {
        Some(m) => m.as_str().trim(),
        None => text,
    }
}

/// The content of the last `\boxed{…}` (braces balanced), if any.
pub fn extract_boxed(text: &str) -> Option<&str> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (offset, ch) in text[start..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(text[start..start + offset].trim());
                }
            }
            _ => {}
        }
    }
    None
}

/// Lower-cases, trims, drops surrounding `$…$`, `\text{…}`, quotes and a final period, and
/// collapses runs of whitespace.
fn normalise(text: &str) -> String {
    let mut s = text.trim();
    loop {
        let before = s;
        if let Some(inner) = s.strip_prefix('$').and_then(|x| x.strip_suffix('$')) {
            s = inner.trim();
        }
        if let Some(inner) = s.strip_prefix("\\text{").and_then(|x| x.strip_suffix('}')) {
            s = inner.trim();
        }
        for q in ['"', '\''] {
            if let Some(inner) = s.strip_prefix(q).and_then(|x| x.strip_suffix(q)) {
                s = inner.trim();
            }
        }
        if let Some(inner) = s.strip_suffix('.') {
            s = inner.trim_end();
        }
        if s == before {
            break;
        }
    }
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn option_letter(text: &str) -> Option<char> {
    let caps = OPTION_LETTER.captures(text.trim())?;
    caps.get(1)
        .or_else(|| caps.get(2))
        .and_then(|m| m.as_str().chars().next())
        .map(|c| c.to_ascii_lowercase())
}

fn yes_no(text: &str) -> Option<bool> {
    let first: String = text
        .trim()
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    match first.as_str() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

fn first_number(text: &str) -> Option<f64> {
    if let Some(c) = FRACTION.captures(text.trim()) {
        let num: f64 = c[1].parse().ok()?;
        let den: f64 = c[2].parse().ok()?;
        return (den != 0.0).then(|| num / den);
    }
    let m = NUMBER.find(text)?;
    m.as_str().replace(',', "").parse().ok()
}

fn starts_with_number(text: &str) -> bool {
    let t = text.trim_start_matches(['+', '-', '$', ' ']);
    t.starts_with(|c: char| c.is_ascii_digit()) || (t.starts_with('.') && t.len() > 1)
}

/// Rule-based answer matching.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnswerMatcher {
    /// Relative tolerance of numeric answers.
    pub numeric_rel_tol: f64,
}

impl Default for AnswerMatcher {
    fn default() -> Self {
        Self {
            numeric_rel_tol: 1e-4,
        }
    }
}

impl AnswerMatcher {
    /// Whether `prediction` (a model's final text) answers like `solution`.
    ///
    /// Both sides are reduced to their `<answer>` content and then to their last `\boxed{}`
    /// content when present, and normalised. Then, in order: equal text; if the solution is an
    /// option letter (`A`, `(b)`, `C.`), the prediction's leading option letter must equal it; if
    /// the solution starts with the word yes / no, the prediction's first word must agree; if
    /// the solution starts with a number, the prediction's first number must be within the
    /// relative tolerance.
    pub fn is_correct(&self, prediction: &str, solution: &str) -> bool {
        let reduce = |text: &str| -> String {
            let answer = extract_answer(text);
            normalise(extract_boxed(answer).unwrap_or(answer))
        };
        let pred = reduce(prediction);
        let gold = reduce(solution);
        if pred.is_empty() || gold.is_empty() {
            return false;
        }
        if pred == gold {
            return true;
        }
        if let Some(letter) = option_letter(&gold) {
            return option_letter(&pred) == Some(letter);
        }
        if let Some(answer) = yes_no(&gold) {
            return yes_no(&pred) == Some(answer);
        }
        if starts_with_number(&gold) {
            if let (Some(g), Some(p)) = (first_number(&gold), first_number(&pred)) {
                let diff = (p - g).abs();
                return diff <= self.numeric_rel_tol * g.abs().max(p.abs()) || diff < 1e-12;
            }
        }
        false
    }
}

/// An LLM judge behind an OpenAI-compatible chat-completions endpoint.
///
/// Each question is one request (temperature 0); the reply must be exactly `true` or `false`
/// (case-insensitive, surrounding whitespace ignored). Transport and HTTP errors are retried
/// after `backoff · 2^attempt`; other replies are retried at once; after `max_retries` attempts
/// the answer counts as wrong. Environment proxy settings are ignored.
#[derive(Clone)]
pub struct LlmJudge {
    url: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
    max_retries: usize,
    backoff: Duration,
    max_workers: usize,
    max_tokens: usize,
}

impl std::fmt::Debug for LlmJudge {
    /// The API key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmJudge")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("max_workers", &self.max_workers)
            .finish()
    }
}

const JUDGE_SYSTEM_PROMPT: &str = "You grade answers to visual questions. You are shown a question about an image, the reference answer and a model's answer. Decide whether the model's answer means the same as the reference: accept paraphrases, synonyms and equivalent numbers or units; for a definite reference (an option, yes/no, a number) require the same result. Reply with exactly one word: true if the model's answer is correct, false otherwise.";

impl LlmJudge {
    /// Builds a judge from the config; `None` when no endpoint is set. The API key is read from
    /// the environment variable named in the config, if it is set.
    pub fn from_config(config: &JudgeConfig) -> Result<Option<Self>> {
        let Some(endpoint) = config.endpoint.as_deref() else {
            return Ok(None);
        };
        let api_key = std::env::var(&config.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        Self::new(endpoint, &config.model, api_key, config).map(Some)
    }

    /// Builds a judge for `base_url` (up to `/v1`; `/chat/completions` is appended).
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        config: &JudgeConfig,
    ) -> Result<Self> {
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(TrainError::Config(format!(
                "judge endpoint {base_url:?} must start with http:// or https://"
            )));
        }
        if !(config.timeout_s.is_finite() && config.timeout_s > 0.0) {
            return Err(TrainError::Config(format!(
                "judge.timeout_s must be > 0, got {}",
                config.timeout_s
            )));
        }
        Ok(Self {
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_string(),
            api_key,
            timeout: Duration::from_secs_f64(config.timeout_s),
            max_retries: config.max_retries.max(1),
            backoff: Duration::from_millis(config.backoff_ms),
            max_workers: config.max_workers.max(1),
            max_tokens: config.max_tokens,
        })
    }

    fn user_prompt(question: &str, solution: &str, prediction: &str) -> String {
        format!(
            "Question: {question}\nReference answer: {solution}\nModel answer: {prediction}\n\nIs the model answer correct? Reply true or false."
        )
    }

    /// One attempt: `Ok(Some(verdict))`, `Ok(None)` for a reply that is neither word, or an
    /// error for transport / HTTP / JSON failures.
    fn ask_once(&self, agent: &ureq::Agent, body: &str) -> Result<Option<bool>> {
        let mut request = agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let mut response = request
            .send(body)
            .map_err(|e| TrainError::Judge(format!("request to {} failed: {e}", self.url)))?;
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| TrainError::Judge(format!("cannot read reply: {e}")))?;
        let reply: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TrainError::json("judge reply", e))?;
        let content = reply
            .pointer("/choices/0/message/content")
            .and_then(|c| c.as_str())
            .ok_or_else(|| TrainError::Judge("reply has no choices[0].message.content".into()))?;
        Ok(match content.trim().to_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(true)
            .proxy(None)
            .build()
            .into()
    }

    /// Judges one answer; `false` after every attempt failed.
    pub fn judge(&self, question: &str, solution: &str, prediction: &str) -> bool {
        self.judge_with(&self.agent(), question, solution, prediction)
    }

    fn judge_with(
        &self,
        agent: &ureq::Agent,
        question: &str,
        solution: &str,
        prediction: &str,
    ) -> bool {
        let body = serde_json::json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
                {"role": "user", "content": Self::user_prompt(question, solution, prediction)},
            ],
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "n": 1,
        })
        .to_string();
        for attempt in 0..self.max_retries {
            match self.ask_once(agent, &body) {
                Ok(Some(verdict)) => return verdict,
                Ok(None) => {}
                Err(_) if attempt + 1 < self.max_retries => {
                    let factor = 1u32 << attempt.min(16);
                    std::thread::sleep(self.backoff.saturating_mul(factor));
                }
                Err(_) => {}
            }
        }
        false
    }

    /// Judges many `(question, solution, prediction)` triples with up to `max_workers`
    /// concurrent requests; results keep the input order.
    pub fn judge_many(&self, items: &[(&str, &str, &str)]) -> Vec<bool> {
        let results = Mutex::new(vec![false; items.len()]);
        let next = AtomicUsize::new(0);
        let workers = self.max_workers.min(items.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    let agent = self.agent();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(q, s, p)) = items.get(i) else {
                            break;
                        };
                        let verdict = self.judge_with(&agent, q, s, p);
                        if let Ok(mut r) = results.lock() {
                            r[i] = verdict;
                        }
                    }
                });
            }
        });
        results.into_inner().unwrap_or_default()
    }
}

/// The `accuracy` reward.
#[derive(Debug, Clone)]
pub struct AccuracyReward {
    /// Rules, judge, or rules then judge.
    pub mode: AccuracyMode,
    /// Rule-based matcher.
    pub matcher: AnswerMatcher,
    /// The judge (required by the judge modes).
    pub judge: Option<LlmJudge>,
}

impl AccuracyReward {
    /// A rules-only accuracy reward.
    pub fn rules(matcher: AnswerMatcher) -> Self {
        Self {
            mode: AccuracyMode::Rules,
            matcher,
            judge: None,
        }
    }
}

impl RewardFunction for AccuracyReward {
    fn name(&self) -> &str {
        "accuracy"
    }

    fn score(&self, completions: &[Completion<'_>], columns: &RewardColumns) -> Result<Vec<f32>> {
        let n = completions.len();
        columns.require("solution", columns.solution.len(), n)?;
        // The final item must be text; an image there scores 0, as in the official code. The
        // official code reads the last item of the whole list, so a rollout that produced nothing
        // is scored on the question's text; here it has no prediction.
        let predictions: Vec<Option<&str>> = completions
            .iter()
            .map(|c| {
                c.generated()
                    .last()
                    .and_then(|item| item.text())
                    .map(extract_answer)
            })
            .collect();
        let mut correct: Vec<bool> = predictions
            .iter()
            .zip(&columns.solution)
            .map(|(pred, sol)| match (self.mode, pred) {
                (AccuracyMode::Judge, _) | (_, None) => false,
                (_, Some(p)) => self.matcher.is_correct(p, sol),
            })
            .collect();
        if self.mode != AccuracyMode::Rules {
            let judge = self.judge.as_ref().ok_or_else(|| {
                TrainError::Config("accuracy mode needs a judge endpoint".to_string())
            })?;
            columns.require("question", columns.question.len(), n)?;
            let pending: Vec<usize> = (0..n)
                .filter(|&i| !correct[i] && predictions[i].is_some())
                .collect();
            let items: Vec<(&str, &str, &str)> = pending
                .iter()
                .map(|&i| {
                    (
                        columns.question[i].as_str(),
                        columns.solution[i].as_str(),
                        predictions[i].unwrap_or_default(),
                    )
                })
                .collect();
            for (&i, verdict) in pending.iter().zip(judge.judge_many(&items)) {
                correct[i] = verdict;
            }
        }
        Ok(correct
            .into_iter()
            .map(|c| if c { 1.0 } else { 0.0 })
            .collect())
    }
}

/// Rewards of a round: per function, and their weighted sum.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardBreakdown {
    /// Function names, in order.
    pub names: Vec<String>,
    /// `per_func[k][i]`: reward of function k for completion i (NaN: not applicable).
    pub per_func: Vec<Vec<f32>>,
    /// Weighted sum over functions, NaNs skipped.
    pub total: Vec<f32>,
}

impl RewardBreakdown {
    /// `rewards/<name>/mean` and `rewards/<name>/std` (NaNs ignored; unbiased std, as TRL).
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (name, values) in self.names.iter().zip(&self.per_func) {
            let finite: Vec<f64> = values
                .iter()
                .filter(|v| !v.is_nan())
                .map(|&v| v as f64)
                .collect();
            let n = finite.len() as f64;
            let mean = if finite.is_empty() {
                f64::NAN
            } else {
                finite.iter().sum::<f64>() / n
            };
            let std = if finite.len() < 2 {
                f64::NAN
            } else {
                (finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
            };
            out.insert(format!("rewards/{name}/mean"), mean);
            out.insert(format!("rewards/{name}/std"), std);
        }
        out
    }
}

/// Weighted reward functions, evaluated together.
pub struct RewardSet {
    entries: Vec<(Box<dyn RewardFunction>, f32)>,
}

impl std::fmt::Debug for RewardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(func, w)| (func.name(), w)))
            .finish()
    }
}

impl RewardSet {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Adds a function with a weight.
    pub fn push(&mut self, func: Box<dyn RewardFunction>, weight: f32) {
        self.entries.push((func, weight));
    }

    /// Names in order.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(f, _)| f.name().to_string())
            .collect()
    }

    /// Builds the functions named in `grpo.reward_funcs` (`accuracy`, `format`,
    /// `exploration_guided`) with `grpo.reward_weights` (default 1 each).
    pub fn from_config(grpo: &GrpoConfig, judge: &JudgeConfig) -> Result<Self> {
        let mut set = Self::new();
        let mut format_seen = false;
        for (k, name) in grpo.reward_funcs.iter().enumerate() {
            let weight = grpo.reward_weights.get(k).copied().unwrap_or(1.0) as f32;
            let func: Box<dyn RewardFunction> = match name.as_str() {
                "accuracy" => {
                    let judge = match grpo.accuracy_mode {
                        AccuracyMode::Rules => None,
                        _ => Some(LlmJudge::from_config(judge)?.ok_or_else(|| {
                            TrainError::Config(
                                "grpo.accuracy_mode needs judge.endpoint".to_string(),
                            )
                        })?),
                    };
                    Box::new(AccuracyReward {
                        mode: grpo.accuracy_mode,
                        matcher: AnswerMatcher {
                            numeric_rel_tol: grpo.numeric_rel_tol,
                        },
                        judge,
                    })
                }
                "format" => {
                    format_seen = true;
                    Box::new(FormatReward)
                }
                "exploration_guided" => Box::new(ExplorationReward {
                    threshold: grpo.exploration_threshold,
                    bonus: grpo.exploration_bonus as f32,
                    official_slice_quirk: grpo.official_slice_quirk && format_seen,
                }),
                other => {
                    return Err(TrainError::Config(format!(
                        "unknown reward function {other:?} (expected accuracy, format or exploration_guided)"
                    )))
                }
            };
            set.push(func, weight);
        }
        Ok(set)
    }

    /// Runs every function and sums them with their weights (NaN entries skipped).
    pub fn evaluate(
        &self,
        completions: &[Completion<'_>],
        columns: &RewardColumns,
    ) -> Result<RewardBreakdown> {
        let n = completions.len();
        let mut per_func = Vec::with_capacity(self.entries.len());
        for (func, _) in &self.entries {
            let scores = func.score(completions, columns)?;
            if scores.len() != n {
                return Err(TrainError::Input(format!(
                    "reward `{}` returned {} values for {n} completions",
                    func.name(),
                    scores.len()
                )));
            }
            per_func.push(scores);
        }
        let total = (0..n)
            .map(|i| {
                per_func
                    .iter()
                    .zip(&self.entries)
                    .map(|(scores, (_, weight))| (scores[i], *weight))
                    .filter(|(r, _)| !r.is_nan())
                    .map(|(r, w)| r * w)
                    .sum()
            })
            .collect();
        Ok(RewardBreakdown {
            names: self.names(),
            per_func,
            total,
        })
    }
}

impl Default for RewardSet {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-completion counts the GRPO metrics report (`depth_nums`, `segmentation_nums`) and whether
/// the final item is a well-formed answer turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RolloutStats {
    /// Text items after the prompt that contain a depth-estimation call.
    pub depth_calls: usize,
    /// Text items after the prompt that contain a segmentation call.
    pub segmentation_calls: usize,
    /// The last item is text that fully matches the answer pattern (TRL's `is_eos`).
    pub answered: bool,
}

/// Counts tool calls (searching each generated text item, as the official metrics do) and checks
/// the final answer.
pub fn rollout_stats(completion: &Completion<'_>) -> RolloutStats {
    let mut stats = RolloutStats::default();
    for text in completion.generated().iter().filter_map(|i| i.text()) {
        stats.depth_calls += usize::from(DEPTH_SEARCH.is_match(text));
        stats.segmentation_calls += usize::from(SEGMENTATION_SEARCH.is_match(text));
    }
    stats.answered = completion
        .generated()
        .last()
        .and_then(|i| i.text())
        .is_some_and(|t| ANSWER_TURN.is_match(t));
    stats
}

/// Mean `depth_nums` and `segmentation_nums` over a round.
pub fn rollout_metrics(completions: &[Completion<'_>]) -> BTreeMap<String, f64> {
    let n = completions.len().max(1) as f64;
    let (mut depth, mut seg, mut answered) = (0usize, 0usize, 0usize);
    for c in completions {
        let s = rollout_stats(c);
        depth += s.depth_calls;
        seg += s.segmentation_calls;
        answered += usize::from(s.answered);
    }
    BTreeMap::from([
        ("depth_nums".to_string(), depth as f64 / n),
        ("segmentation_nums".to_string(), seg as f64 / n),
        ("total_gen_nums".to_string(), (depth + seg) as f64 / n),
        (
            "completions/clipped_ratio".to_string(),
            1.0 - answered as f64 / n,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Stage, TrainConfig};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;
    use CompletionItem::{Image, Text};

    const SYS: &str = "system prompt";
    const Q: &str = "Which object is closer?";
    const DEPTH: &str = "<think>I need depth.</think>\n<depth-estimation>Estimate the depth of the image and generate the depth map.</depth-estimation>";
    const SEG: &str = "<think>Segment first.</think><segmentation>Segment the objects in the image with different colors.</segmentation>";
    const ANSWER_B: &str =
        "<think>The chair is\ncloser.</think>\n<answer>The chair. \\boxed{B}</answer>";

    fn prompt() -> Vec<CompletionItem<'static>> {
        vec![Text(SYS), Image, Text(Q)]
    }

    fn with(items: &[CompletionItem<'static>]) -> Completion<'static> {
        let mut c = prompt();
        let prompt_len = c.len();
        c.extend_from_slice(items);
        Completion::new(c, prompt_len)
    }

    fn columns(solutions: &[&str], flags: &[Flag], ids: &[&str]) -> RewardColumns {
        RewardColumns {
            solution: solutions.iter().map(|s| s.to_string()).collect(),
            question: solutions.iter().map(|_| Q.to_string()).collect(),
            flag: flags.to_vec(),
            data_id: ids.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn reflection_prompt_is_the_official_string() {
        assert!(REFLECTION_PROMPT.starts_with("\nHere is the result"));
        assert!(REFLECTION_PROMPT.ends_with("<answer>...</answer>.\n"));
        assert!(REFLECTION_PROMPT.contains("Please check it carefully. \nNow please"));
        assert_eq!(REFLECTION_PROMPT.len(), 429);
    }

    #[test]
    fn format_reward_on_crafted_completions() {
        let f = FormatReward;
        let cases: Vec<(Completion<'static>, f32)> = vec![
            // tool turn, image, reflection, answer → well formed
            (
                with(&[Text(DEPTH), Image, Text(REFLECTION_PROMPT), Text(ANSWER_B)]),
                1.0,
            ),
            // two tools, whitespace around the turns, answer only at the end
            (
                with(&[
                    Text("  \n<think>a</think> <segmentation>s</segmentation>\n"),
                    Image,
                    Text(REFLECTION_PROMPT),
                    Text(DEPTH),
                    Image,
                    Text(REFLECTION_PROMPT),
                    Text(" <think>b</think><answer>x</answer>\n"),
                ]),
                1.0,
            ),
            // direct answer
            (with(&[Text(ANSWER_B)]), 1.0),
            // a middle turn that is only thinking
            (with(&[Text("<think>hmm</think>"), Text(ANSWER_B)]), 0.0),
            // the final turn is a tool call, not an answer
            (
                with(&[Text(DEPTH), Image, Text(REFLECTION_PROMPT), Text(SEG)]),
                0.0,
            ),
            // trailing text after </answer>: no full match
            (
                with(&[Text("<think>a</think><answer>b</answer> extra")]),
                0.0,
            ),
            // answer without a think block
            (with(&[Text("<answer>B</answer>")]), 0.0),
            // an answer in a middle turn is not a tool call
            (with(&[Text(ANSWER_B), Text(ANSWER_B)]), 0.0),
        ];
        let completions: Vec<_> = cases.iter().map(|(c, _)| c.clone()).collect();
        let expected: Vec<f32> = cases.iter().map(|(_, r)| *r).collect();
        let scores = f.score(&completions, &RewardColumns::default()).unwrap();
        assert_eq!(scores, expected);
    }

    #[test]
    fn exploration_reward_by_group_and_flag() {
        let e = ExplorationReward::default();
        let explore = with(&[Text(DEPTH), Image, Text(REFLECTION_PROMPT), Text(ANSWER_B)]);
        let direct = with(&[Text(ANSWER_B)]);
        // A tool call in the final item is not exploration.
        let final_tool = with(&[Text(SEG)]);
        assert!(e.explores(&explore));
        assert!(!e.explores(&direct));
        assert!(!e.explores(&final_tool));

        use Flag::{Boundary, Negative, Positive};
        let completions = vec![
            // q1 (positive): 2 of 4 explore → count 2 < 3 → explorers +0.2
            explore.clone(),
            direct.clone(),
            explore.clone(),
            final_tool.clone(),
            // q2 (negative): 4 of 4 explore → count 4 > 3 → explorers −0.2
            explore.clone(),
            explore.clone(),
            explore.clone(),
            explore.clone(),
            // q3 (negative): 3 of 4 explore → count = 3 → 0
            explore.clone(),
            explore.clone(),
            explore.clone(),
            direct.clone(),
            // q4 (boundary): 1 explores → 0
            explore.clone(),
            direct.clone(),
            // q5 (positive) with 4 explorers → count 4 > 3, but only negatives are penalised → 0
            explore.clone(),
            explore.clone(),
            explore.clone(),
            explore.clone(),
        ];
        let flags = [
            vec![Positive; 4],
            vec![Negative; 4],
            vec![Negative; 4],
            vec![Boundary; 2],
            vec![Positive; 4],
        ]
        .concat();
        let ids: Vec<&str> = [
            vec!["q1"; 4],
            vec!["q2"; 4],
            vec!["q3"; 4],
            vec!["q4"; 2],
            vec!["q5"; 4],
        ]
        .concat();
        let cols = columns(&vec!["B"; ids.len()], &flags, &ids);
        let scores = e.score(&completions, &cols).unwrap();
        let expected = [
            vec![0.2, 0.0, 0.2, 0.0],
            vec![-0.2; 4],
            vec![0.0; 4],
            vec![0.0; 2],
            vec![0.0; 4],
        ]
        .concat();
        assert_eq!(scores, expected);
        // Columns of the wrong length are an error, not a panic.
        let short = columns(&["B"], &[Positive], &["q1"]);
        assert!(e.score(&completions, &short).is_err());
    }

    #[test]
    fn each_completion_is_scored_after_its_own_prompt() {
        // Asked without a system prompt, the prompt is the picture and the question.
        let turns = [Text(DEPTH), Image, Text(REFLECTION_PROMPT), Text(ANSWER_B)];
        let mut items = vec![Image, Text(Q)];
        items.extend_from_slice(&turns);
        let no_system = Completion::new(items.clone(), 2);
        assert!(FormatReward.is_well_formed(&no_system));
        assert!(ExplorationReward::default().explores(&no_system));
        assert_eq!(rollout_stats(&no_system).depth_calls, 1);
        // Read with the official fixed three items, the first tool turn would be taken for the
        // prompt and the exploration missed.
        let fixed_three = Completion::new(items, 3);
        assert!(!ExplorationReward::default().explores(&fixed_three));
        assert_eq!(rollout_stats(&fixed_three).depth_calls, 0);

        // A rollout that produced nothing has no prediction: the question's text is not read as
        // the answer, though it names the solution.
        let empty = Completion::new(vec![Image, Text("Is it B? Answer B.")], 2);
        let accuracy = AccuracyReward::rules(AnswerMatcher::default());
        let cols = columns(&["B"], &[Flag::Boundary], &["q"]);
        assert_eq!(
            accuracy.score(std::slice::from_ref(&empty), &cols).unwrap(),
            vec![0.0]
        );
        assert!(!rollout_stats(&empty).answered);
    }

    #[test]
    fn official_slice_quirk_hides_the_first_tool_turn() {
        // Items 3.. are generated. One tool call at index 3 only, and one with calls at 3 and 6.
        let first_only = with(&[Text(DEPTH), Image, Text(REFLECTION_PROMPT), Text(ANSWER_B)]);
        let two_calls = with(&[
            Text(DEPTH),
            Image,
            Text(REFLECTION_PROMPT),
            Text(SEG),
            Image,
            Text(REFLECTION_PROMPT),
            Text(ANSWER_B),
        ]);
        let intended = ExplorationReward::default();
        let quirk = ExplorationReward {
            official_slice_quirk: true,
            ..ExplorationReward::default()
        };
        assert!(intended.explores(&first_only));
        assert!(!quirk.explores(&first_only)); // slice [6:] = [answer]
        assert!(quirk.explores(&two_calls)); // slice [6:] starts at the second call

        // The config only turns the quirk on when format runs before exploration.
        let mut config = TrainConfig::for_stage(Stage::Grpo);
        config.grpo.official_slice_quirk = true;
        let set = RewardSet::from_config(&config.grpo, &config.judge).unwrap();
        let cols = columns(&["B"], &[Flag::Positive], &["q"]);
        let b = set
            .evaluate(std::slice::from_ref(&first_only), &cols)
            .unwrap();
        assert_eq!(b.per_func[2], vec![0.0]);
        config.grpo.reward_funcs = vec!["exploration_guided".into(), "format".into()];
        let set = RewardSet::from_config(&config.grpo, &config.judge).unwrap();
        let b = set.evaluate(&[first_only], &cols).unwrap();
        assert_eq!(b.per_func[0], vec![0.2]);
    }

    #[test]
    fn answer_extraction() {
        assert_eq!(
            extract_answer("<think>x</think><answer> 42 </answer>"),
            "42"
        );
        assert_eq!(extract_answer("  plain  "), "plain");
        assert_eq!(
            extract_boxed("so \\boxed{\\frac{1}{2}} done"),
            Some("\\frac{1}{2}")
        );
        assert_eq!(extract_boxed("\\boxed{a} then \\boxed{ b }"), Some("b"));
        assert_eq!(extract_boxed("\\boxed{unclosed"), None);
        assert_eq!(extract_boxed("nothing"), None);
    }

    #[test]
    fn rule_matcher_cases() {
        let m = AnswerMatcher::default();
        // boxed content inside <answer>
        assert!(m.is_correct(ANSWER_B, "B"));
        assert!(m.is_correct(ANSWER_B, "(B)"));
        assert!(!m.is_correct(ANSWER_B, "C"));
        // option letters with text after a delimiter
        assert!(m.is_correct("<answer>B. the chair</answer>", "B"));
        assert!(m.is_correct("(c) the lamp", "C."));
        // an article is not an option letter
        assert!(!m.is_correct("a chair", "A"));
        // yes / no by first word
        assert!(m.is_correct("<answer>Yes, it is.</answer>", "yes"));
        assert!(!m.is_correct("<answer>No.</answer>", "Yes"));
        assert!(!m.is_correct("yesterday", "yes"));
        // numbers within the relative tolerance (1e-4)
        assert!(m.is_correct("\\boxed{3.50}", "3.5"));
        assert!(m.is_correct("about 2.0 m", "2 meters"));
        assert!(m.is_correct("1000", "1,000"));
        assert!(m.is_correct("0.5", "1/2"));
        assert!(m.is_correct("3.50001", "3.5")); // |Δ| = 1e-5 ≤ 1e-4 · 3.5
        assert!(!m.is_correct("3.6", "3.5"));
        let loose = AnswerMatcher {
            numeric_rel_tol: 0.05,
        };
        assert!(loose.is_correct("3.6", "3.5")); // 0.1 ≤ 0.05 · 3.6 = 0.18
                                                 // exact text after normalisation
        assert!(m.is_correct("<answer>Red.</answer>", "red"));
        assert!(m.is_correct("$\\text{Red}$", "red"));
        assert!(!m.is_correct("", "red"));
        assert!(!m.is_correct("blue", "red"));
        // answers in words, as `cooper world --option-text-answers` chains and RL rows write them
        assert!(m.is_correct(
            "<answer> So the answer is \\boxed{ cyan cone}. </answer>",
            "cyan cone"
        ));
        assert!(!m.is_correct(
            "<answer> So the answer is \\boxed{ cyan}. </answer>",
            "cyan cone"
        ));
    }

    #[test]
    fn accuracy_reward_rules_mode() {
        let r = AccuracyReward::rules(AnswerMatcher::default());
        let completions = vec![
            with(&[Text(ANSWER_B)]),
            with(&[Text("<think>x</think><answer>\\boxed{C}</answer>")]),
            with(&[Text(DEPTH), Image]), // ends with an image → 0
            Completion::new(vec![], 0),  // nothing at all → 0
        ];
        let cols = columns(
            &["B", "B", "B", "B"],
            &[Flag::Boundary; 4],
            &["a", "a", "a", "a"],
        );
        assert_eq!(
            r.score(&completions, &cols).unwrap(),
            vec![1.0, 0.0, 0.0, 0.0]
        );
        let short = columns(&["B"], &[Flag::Boundary], &["a"]);
        assert!(r.score(&completions, &short).is_err());
    }

    #[test]
    fn reward_set_weights_skip_nan_and_report_metrics() {
        struct NotApplicable;
        impl RewardFunction for NotApplicable {
            fn name(&self) -> &str {
                "na"
            }
            fn score(&self, completions: &[Completion<'_>], _: &RewardColumns) -> Result<Vec<f32>> {
                Ok(completions
                    .iter()
                    .enumerate()
                    .map(|(i, _)| if i == 0 { f32::NAN } else { 1.0 })
                    .collect())
            }
        }
        let mut set = RewardSet::new();
        set.push(Box::new(FormatReward), 1.0);
        set.push(
            Box::new(AccuracyReward::rules(AnswerMatcher::default())),
            0.5,
        );
        set.push(Box::new(NotApplicable), 2.0);
        let completions = vec![with(&[Text(ANSWER_B)]), with(&[Text("B")])];
        let cols = columns(&["B", "B"], &[Flag::Boundary; 2], &["a", "a"]);
        let b = set.evaluate(&completions, &cols).unwrap();
        // completion 0: format 1, accuracy 1·0.5, na NaN (skipped) → 1.5
        // completion 1: format 0, accuracy 1·0.5, na 1·2          → 2.5
        assert_eq!(b.total, vec![1.5, 2.5]);
        assert_eq!(b.names, vec!["format", "accuracy", "na"]);
        let m = b.metrics();
        // format (1, 0): mean 0.5, unbiased std √0.5 = 0.707107
        assert_eq!(m["rewards/format/mean"], 0.5);
        assert!((m["rewards/format/std"] - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(m["rewards/accuracy/mean"], 1.0);
        assert_eq!(m["rewards/accuracy/std"], 0.0);
        // na: only one finite value → mean 1, std undefined
        assert_eq!(m["rewards/na/mean"], 1.0);
        assert!(m["rewards/na/std"].is_nan());
    }

    #[test]
    fn reward_set_from_config_rejects_unknown_names() {
        let mut config = TrainConfig::for_stage(Stage::Grpo);
        let set = RewardSet::from_config(&config.grpo, &config.judge).unwrap();
        assert_eq!(
            set.names(),
            vec!["accuracy", "format", "exploration_guided"]
        );
        config.grpo.reward_funcs.push("length".into());
        assert!(RewardSet::from_config(&config.grpo, &config.judge).is_err());
        // Judge mode without an endpoint is a config error.
        config.grpo.reward_funcs = vec!["accuracy".into()];
        config.grpo.accuracy_mode = AccuracyMode::Judge;
        assert!(RewardSet::from_config(&config.grpo, &config.judge).is_err());
    }

    #[test]
    fn rollout_stats_count_calls() {
        let c = with(&[
            Text(DEPTH),
            Image,
            Text(REFLECTION_PROMPT),
            Text(SEG),
            Image,
            Text(REFLECTION_PROMPT),
            Text(ANSWER_B),
        ]);
        let s = rollout_stats(&c);
        assert_eq!(s.depth_calls, 1);
        assert_eq!(s.segmentation_calls, 1);
        assert!(s.answered);
        let unfinished = with(&[Text(DEPTH), Image]);
        let m = rollout_metrics(&[c, unfinished]);
        assert_eq!(m["depth_nums"], 1.0); // (1 + 1) / 2
        assert_eq!(m["segmentation_nums"], 0.5); // (1 + 0) / 2
        assert_eq!(m["completions/clipped_ratio"], 0.5);
    }

    /// A one-thread HTTP server on 127.0.0.1 (port 0) answering up to `max_requests` requests
    /// with `reply(body) -> (status, message content)`, for at most 10 seconds. Returns the base
    /// URL and a handle yielding the request bodies it saw.
    fn judge_server(
        max_requests: usize,
        reply: impl Fn(&str) -> (u16, String) + Send + 'static,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut bodies = Vec::new();
            while bodies.len() < max_requests && Instant::now() < deadline {
                let (stream, _) = match listener.accept() {
                    Ok(conn) => conn,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    Err(_) => break,
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut reader = BufReader::new(stream);
                let mut content_length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        content_length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; content_length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let body = String::from_utf8_lossy(&body).to_string();
                let (status, content) = reply(&body);
                let payload = serde_json::json!({
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
                    payload.len()
                );
                let mut stream = reader.into_inner();
                let _ = stream.write_all(response.as_bytes());
                let _ = stream.flush();
                bodies.push(body);
            }
            bodies
        });
        (format!("http://{addr}/v1"), handle)
    }

    fn judge_config(workers: usize, retries: usize) -> JudgeConfig {
        JudgeConfig {
            endpoint: None,
            model: "judge-model".to_string(),
            api_key_env: "COOPER_TEST_UNSET_KEY".to_string(),
            timeout_s: 5.0,
            max_retries: retries,
            backoff_ms: 1,
            max_workers: workers,
            max_tokens: 8,
        }
    }

    fn user_content(body: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["messages"][1]["content"].as_str().unwrap().to_string()
    }

    #[test]
    fn judge_scores_answers_through_a_loopback_server() {
        // The server says "True" when the model answer is "the chair", "false" otherwise.
        let (url, server) = judge_server(3, |body| {
            let said_chair = user_content(body).contains("Model answer: the chair\n");
            (
                200,
                if said_chair { " True\n" } else { "false" }.to_string(),
            )
        });
        let judge = LlmJudge::new(&url, "judge-model", None, &judge_config(2, 2)).unwrap();
        let reward = AccuracyReward {
            mode: AccuracyMode::Judge,
            matcher: AnswerMatcher::default(),
            judge: Some(judge),
        };
        let completions = vec![
            with(&[Text("<think>x</think><answer>the chair</answer>")]),
            with(&[Text("<think>x</think><answer>the lamp</answer>")]),
            with(&[Text("<think>x</think><answer>B</answer>")]),
        ];
        let cols = columns(&["B", "B", "B"], &[Flag::Boundary; 3], &["a", "a", "a"]);
        // Judge mode asks the judge even where the rules would accept ("B").
        assert_eq!(
            reward.score(&completions, &cols).unwrap(),
            vec![1.0, 0.0, 0.0]
        );
        let bodies = server.join().unwrap();
        assert_eq!(bodies.len(), 3);
        let request: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(request["temperature"], 0.0);
        assert_eq!(request["model"], "judge-model");
        assert_eq!(request["messages"][0]["role"], "system");
        assert!(user_content(&bodies[0]).contains("Reference answer: B"));
    }

    #[test]
    fn rules_then_judge_only_asks_about_rejected_answers() {
        let (url, server) = judge_server(1, |_| (200, "TRUE".to_string()));
        let judge = LlmJudge::new(&url, "m", None, &judge_config(4, 1)).unwrap();
        let reward = AccuracyReward {
            mode: AccuracyMode::RulesThenJudge,
            matcher: AnswerMatcher::default(),
            judge: Some(judge),
        };
        let completions = vec![
            with(&[Text(ANSWER_B)]),
            with(&[Text("<think>x</think><answer>the second one</answer>")]),
        ];
        let cols = columns(&["B", "B"], &[Flag::Boundary; 2], &["a", "a"]);
        assert_eq!(reward.score(&completions, &cols).unwrap(), vec![1.0, 1.0]);
        let bodies = server.join().unwrap();
        assert_eq!(bodies.len(), 1);
        assert!(user_content(&bodies[0]).contains("the second one"));
    }

    #[test]
    fn judge_retries_then_gives_up() {
        // Unrecognised replies are retried at once: 3 attempts, then wrong.
        let (url, server) = judge_server(3, |_| (200, "It is correct.".to_string()));
        let judge = LlmJudge::new(&url, "m", None, &judge_config(1, 3)).unwrap();
        assert!(!judge.judge(Q, "B", "B"));
        assert_eq!(server.join().unwrap().len(), 3);
        // HTTP errors are retried with backoff; the second attempt succeeds.
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let (url, server) = judge_server(2, move |_| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                (500, "overloaded".to_string())
            } else {
                (200, "true".to_string())
            }
        });
        let judge = LlmJudge::new(&url, "m", None, &judge_config(1, 3)).unwrap();
        assert!(judge.judge(Q, "B", "B"));
        assert_eq!(server.join().unwrap().len(), 2);
        // A closed port: every attempt fails, the answer counts as wrong.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let judge = LlmJudge::new(
            &format!("http://127.0.0.1:{port}/v1"),
            "m",
            None,
            &judge_config(1, 2),
        )
        .unwrap();
        assert!(!judge.judge(Q, "B", "B"));
        assert!(LlmJudge::new("ftp://x", "m", None, &judge_config(1, 1)).is_err());
        let keyed = LlmJudge::new(
            "http://127.0.0.1:1/v1",
            "m",
            Some("sk-secret".into()),
            &judge_config(1, 1),
        )
        .unwrap();
        assert!(!format!("{keyed:?}").contains("sk-secret"));
    }
}
