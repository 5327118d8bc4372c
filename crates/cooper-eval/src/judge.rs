//! Optional LLM judge over an OpenAI-compatible `POST {base_url}/chat/completions` endpoint.
//!
//! VLMEvalKit lets an LLM (DeepSeek-V3 in COOPER's runs) map a free-form output to an option letter
//! (or "none"), to Yes/No, or to a number. This module does the same with its own prompts: one user
//! message, temperature 0, a small `max_tokens`. The reply is read with the rule extractors of
//! [`crate::extract`]; a reply naming no option (`Z`) or "none" means the output gives no answer.
//! Open-answer items are never sent to the judge.
//!
//! Transport errors, non-2xx statuses and bodies without `choices[0].message.content` are retried
//! (`retries` more attempts, with a linearly growing pause); after that the judge fails with
//! [`EvalError::Judge`]. When the base URL's host is a loopback address no HTTP proxy is used.

use std::time::Duration;

use crate::error::EvalError;
use crate::extract::{answer_region, extract_letter, extract_quantity, extract_yes_no, Prediction};
use crate::tsv::{AnswerKind, BenchItem};

/// Where and how to reach the judge.
#[derive(Debug, Clone)]
pub struct JudgeConfig {
    /// Base URL including the API version path, e.g. `https://api.example.com/v1`.
    /// `/chat/completions` is appended.
    pub base_url: String,
    /// Model name sent in the request.
    pub model: String,
    /// Sent as `Authorization: Bearer …` when present.
    pub api_key: Option<String>,
    /// Time limit for one request.
    pub timeout: Duration,
    /// Extra attempts after a failed one.
    pub retries: u32,
    /// Pause before retry `k` is `k × backoff`.
    pub backoff: Duration,
    /// `max_tokens` of the request.
    pub max_tokens: u32,
}

impl JudgeConfig {
    /// A configuration with defaults: 60 s timeout, 3 retries, 1 s backoff, 64 tokens.
    pub fn new(
        base_url: impl Into<String>,
        model: impl Into<String>,
        api_key: Option<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key,
            timeout: Duration::from_secs(60),
            retries: 3,
            backoff: Duration::from_secs(1),
            max_tokens: 64,
        }
    }
}

/// An HTTP client for the judge.
pub struct Judge {
    config: JudgeConfig,
    url: String,
    agent: ureq::Agent,
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]")
}

impl Judge {
    /// Builds a client; nothing is sent until [`Judge::map`].
    pub fn new(config: JudgeConfig) -> Self {
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        let mut builder = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false);
        if is_loopback(&url) {
            builder = builder.proxy(None);
        }
        let agent = builder.build().into();
        Self { config, url, agent }
    }

    /// The prompt sent for an item and a model output; `None` for open-answer items.
    pub fn prompt(item: &BenchItem, output: &str) -> Option<String> {
        let task = match item.kind {
            AnswerKind::MultipleChoice => {
                let options: String = item
                    .options
                    .iter()
                    .map(|(l, t)| format!("{l}. {t}\n"))
                    .collect();
                format!(
                    "Below are a multiple-choice question and a model's response to it. Decide which \
                     option the response chooses. Reply with that option's letter only. If the response \
                     chooses no option or its meaning matches none of them, reply Z.\n\n\
                     Question: {}\nOptions:\n{options}",
                    item.question
                )
            }
            AnswerKind::YesNo => format!(
                "Below are a yes/no question and a model's response to it. Reply Yes if the response \
                 answers yes, No if it answers no, and Unknown if it does neither.\n\nQuestion: {}\n",
                item.question
            ),
            AnswerKind::Number | AnswerKind::NumberInt => format!(
                "Below are a question asking for a number and a model's response to it. Reply with the \
                 final number the response gives, followed by its unit if it has one (for example \
                 `3`, `1.5 m`, `64 inches`). Reply none if the response gives no number.\n\n\
                 Question: {}\n",
                item.question
            ),
            AnswerKind::Open => return None,
        };
        Some(format!("{task}\nResponse: {output}\n\nYour reply:"))
    }

    /// Asks the judge to map `output` to a prediction of the item's kind. `Ok(None)` means the judge
    /// found no answer in it (or the item is open-answer).
    /// The judge sees the output's answer region ([`answer_region`]) when that is not empty.
    pub fn map(&self, item: &BenchItem, output: &str) -> Result<Option<Prediction>, EvalError> {
        let region = answer_region(output).trim();
        let shown = if region.is_empty() { output } else { region };
        let Some(prompt) = Self::prompt(item, shown) else {
            return Ok(None);
        };
        let reply = self.complete(&prompt)?;
        Ok(read_reply(item, &reply))
    }

    /// Sends one chat completion and returns the reply text, retrying as configured.
    pub fn complete(&self, prompt: &str) -> Result<String, EvalError> {
        let body = serde_json::json!({
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": self.config.max_tokens,
        })
        .to_string();
        let mut last = String::new();
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                std::thread::sleep(self.config.backoff * attempt);
            }
            match self.try_once(&body) {
                Ok(text) => return Ok(text),
                Err(e) => last = e,
            }
        }
        Err(EvalError::Judge {
            url: self.url.clone(),
            message: format!("{} attempts failed; last: {last}", self.config.retries + 1),
        })
    }

    fn try_once(&self, body: &str) -> Result<String, String> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.config.api_key {
            req = req.header("Authorization", &format!("Bearer {key}"));
        }
        let mut resp = req.send(body).map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        if !status.is_success() {
            let snippet: String = text.chars().take(200).collect();
            return Err(format!("HTTP {status}: {snippet}"));
        }
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("reply is not JSON: {e}"))?;
        value["choices"][0]["message"]["content"]
            .as_str()
            .map(|s| s.trim().to_string())
            .ok_or_else(|| "reply has no choices[0].message.content".to_string())
    }
}

/// Reads the judge's reply for an item of the given kind.
fn read_reply(item: &BenchItem, reply: &str) -> Option<Prediction> {
    match item.kind {
        AnswerKind::MultipleChoice => extract_letter(reply, &item.options).map(Prediction::Letter),
        AnswerKind::YesNo => extract_yes_no(reply).map(Prediction::YesNo),
        AnswerKind::Number | AnswerKind::NumberInt => {
            extract_quantity(reply).map(Prediction::Number)
        }
        AnswerKind::Open => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::{LengthUnit, Quantity};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// Serves exactly `responses.len()` HTTP requests on 127.0.0.1 (one per connection), answering
    /// each with the given status and body; sends every request (head and body) back on a channel.
    fn serve(responses: Vec<(u16, String)>) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (status, body) in responses {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut buf = vec![0u8; len];
                if reader.read_exact(&mut buf).is_err() {
                    return;
                }
                let _ = tx.send(format!("{head}\n{}", String::from_utf8_lossy(&buf)));
                let mut stream = stream;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        (format!("http://{addr}/v1"), rx)
    }

    fn chat(content: &str) -> String {
        serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]})
            .to_string()
    }

    fn item(kind: AnswerKind) -> BenchItem {
        BenchItem::for_test(
            kind,
            "Which is closer?",
            vec![('A', "the chair".into()), ('B', "the lamp".into())],
        )
    }

    fn config(url: String) -> JudgeConfig {
        JudgeConfig {
            timeout: Duration::from_secs(5),
            retries: 2,
            backoff: Duration::from_millis(1),
            ..JudgeConfig::new(url, "judge-model", Some("sk-test".into()))
        }
    }

    #[test]
    fn maps_letter_after_a_retry() {
        let (url, rx) = serve(vec![(500, "{\"error\":\"busy\"}".into()), (200, chat("B"))]);
        let judge = Judge::new(config(url));
        let got = judge
            .map(&item(AnswerKind::MultipleChoice), "I'd say the lamp")
            .expect("judge");
        assert_eq!(got, Some(Prediction::Letter('B')));
        let first = rx.recv().expect("first request");
        let second = rx.recv().expect("second request");
        assert!(first.starts_with("POST /v1/chat/completions"), "{first}");
        assert!(
            second
                .to_ascii_lowercase()
                .contains("authorization: bearer sk-test"),
            "{second}"
        );
        let body: serde_json::Value =
            serde_json::from_str(second.split_once("\n\n").expect("body").1).expect("json body");
        assert_eq!(body["model"], "judge-model");
        assert_eq!(body["temperature"], 0);
        assert!(body["messages"][0]["content"]
            .as_str()
            .expect("content")
            .contains("B. the lamp"));
    }

    #[test]
    fn maps_yes_no_number_and_none() {
        let (url, _rx) = serve(vec![
            (200, chat("Yes")),
            (200, chat("1.5 m")),
            (200, chat("Z")),
        ]);
        let judge = Judge::new(config(url));
        assert_eq!(
            judge.map(&item(AnswerKind::YesNo), "sure").expect("yn"),
            Some(Prediction::YesNo(true))
        );
        assert_eq!(
            judge
                .map(&item(AnswerKind::Number), "a meter and a half")
                .expect("num"),
            Some(Prediction::Number(Quantity::length(1.5, LengthUnit::Meter)))
        );
        assert_eq!(
            judge
                .map(&item(AnswerKind::MultipleChoice), "a cat")
                .expect("z"),
            None
        );
        // Open items never reach the server (it would have no response left to give).
        assert_eq!(
            judge.map(&item(AnswerKind::Open), "a cat").expect("open"),
            None
        );
    }

    #[test]
    fn gives_up_after_retries() {
        let (url, _rx) = serve(vec![
            (503, "{}".into()),
            (503, "{}".into()),
            (200, "{\"oops\":1}".into()),
        ]);
        let err = Judge::new(config(url))
            .complete("hi")
            .expect_err("fails")
            .to_string();
        assert!(
            err.contains("3 attempts failed") && err.contains("choices"),
            "{err}"
        );
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("http://127.0.0.1:8080/v1/chat/completions"));
        assert!(is_loopback("http://localhost/v1"));
        assert!(!is_loopback("https://api.example.com/v1"));
    }
}
