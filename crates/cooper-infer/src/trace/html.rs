//! The self-contained `index.html` of a trace: the chain top to bottom, pictures inline as
//! base64 PNG data URLs.

use std::fmt::Write;

use base64::Engine;

use super::writer::Picture;
use super::{ImageRole, ReasonTrace, TextRole, TraceEntry, TurnOutcome};

/// Escapes text for HTML element content and attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
.entry{border-left:4px solid #ccc;margin:1rem 0;padding:.5rem 1rem;background:#fafafa}\
.model{border-color:#3288bd}.dropped{border-color:#f46d43;opacity:.7}.prompt{border-color:#999}\
.image{border-color:#66c2a5}pre{white-space:pre-wrap;word-wrap:break-word;margin:.3rem 0}\
img{max-width:100%;image-rendering:pixelated}.meta{color:#666;font-size:.85rem}\
.answer{font-size:1.2rem;background:#e6f598;padding:.5rem 1rem}";

/// Renders the page. `pictures` are the PNGs in chain order (each generated depth map is
/// followed by its 16-bit version, which is not shown).
pub(super) fn render(trace: &ReasonTrace, pictures: &[Picture]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut shown = pictures.iter().filter(|p| !p.name.ends_with("16.png"));
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>COOPER trace</title><style>{STYLE}</style></head><body>\n\
         <h1>COOPER trace</h1>\n<p class=\"meta\">mode <b>{}</b> · stop: {:?} · {:.1} s</p>\n<h2>Question</h2><pre>{}</pre>\n",
        trace.mode,
        trace.stop,
        trace.elapsed.as_secs_f64(),
        escape(&trace.question)
    );
    if let Some(a) = &trace.final_answer {
        let _ = write!(h, "<div class=\"answer\">Answer: <b>{}</b>", escape(a));
        if let Some(b) = &trace.boxed_answer {
            let _ = write!(h, " (boxed: <b>{}</b>)", escape(b));
        }
        h.push_str("</div>\n");
    }
    h.push_str("<h2>Chain</h2>\n");
    for entry in &trace.entries {
        match entry {
            TraceEntry::Text { role, text } => {
                let title = match role {
                    TextRole::System => "system prompt",
                    TextRole::Question => "question",
                    TextRole::Reflection => "reflection prompt",
                    TextRole::ToolPrompt => "tool prompt",
                    TextRole::AnswerPrefix => "answer prefix",
                    TextRole::DescribePrompt => "description request",
                };
                let body = if *role == TextRole::System {
                    format!(
                        "<details><summary>show</summary><pre>{}</pre></details>",
                        escape(text)
                    )
                } else {
                    format!("<pre>{}</pre>", escape(text))
                };
                let _ = writeln!(
                    h,
                    "<div class=\"entry prompt\"><div class=\"meta\">{title}</div>{body}</div>"
                );
            }
            TraceEntry::ModelTurn {
                turn,
                text,
                outcome,
                seed,
                elapsed,
            } => {
                let class = if *outcome == TurnOutcome::Dropped {
                    "dropped"
                } else {
                    "model"
                };
                let _ = writeln!(
                    h,
                    "<div class=\"entry {class}\"><div class=\"meta\">model turn {turn} · {} · seed {seed} · {:.0} ms</div><pre>{}</pre></div>",
                    escape(&format!("{outcome:?}")),
                    elapsed.as_secs_f64() * 1e3,
                    escape(text)
                );
            }
            TraceEntry::Image {
                role,
                image,
                seed,
                elapsed,
                ..
            } => {
                let title = match role {
                    ImageRole::Input => "input picture (after the VAE resize)",
                    ImageRole::Depth => "generated depth map (Spectral, near = red)",
                    ImageRole::Segmentation => "generated segmentation map",
                };
                let _ = write!(
                    h,
                    "<div class=\"entry image\"><div class=\"meta\">{title} · {}x{}",
                    image.width(),
                    image.height()
                );
                if let Some(s) = seed {
                    let _ = write!(h, " · seed {s}");
                }
                if let Some(e) = elapsed {
                    let _ = write!(h, " · {:.0} ms", e.as_secs_f64() * 1e3);
                }
                h.push_str("</div>");
                if let Some(p) = shown.next() {
                    let _ = write!(
                        h,
                        "<img alt=\"{}\" src=\"data:image/png;base64,{}\">",
                        escape(&p.name),
                        b64.encode(&p.png)
                    );
                }
                h.push_str("</div>\n");
            }
        }
    }
    h.push_str("</body></html>\n");
    h
}
