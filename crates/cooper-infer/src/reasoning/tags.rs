//! The tag protocol of the reasoning turns: `<answer>`, `<depth-estimation>`,
//! `<segmentation>`, `\boxed{}` and `<think>`.
//!
//! Matching follows the official loop: the first non-greedy, dot-matches-newline match of
//! `<tag>(.*?)</tag>` anywhere in the turn; an opening tag without its closing tag does not
//! match.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

static ANSWER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<answer>(.*?)</answer>").expect("valid regex"));
static DEPTH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)<depth-estimation>(.*?)</depth-estimation>").expect("valid regex")
});
static SEGMENTATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<segmentation>(.*?)</segmentation>").expect("valid regex"));

/// A perception tool the model can call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    /// `<depth-estimation>...</depth-estimation>`: a depth map, fed back Spectral-coloured.
    Depth,
    /// `<segmentation>...</segmentation>`: a colour-coded segmentation map.
    Segmentation,
}

/// A tool request found in a turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// Which tool.
    pub tool: Tool,
    /// Byte range of the whole tag span (opening tag to closing tag) in the turn.
    pub span: Range<usize>,
    /// The text between the tags.
    pub request: String,
}

/// What a turn asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnRequest {
    /// The turn contains a closed `<answer>` tag; holds its content.
    Answer(String),
    /// The turn requests a map (depth wins when both tags are present).
    Tool(ToolCall),
    /// Neither: the official loop drops such a turn and decodes again.
    Nothing,
}

/// Classifies a turn the way the official loop does (answer first, then depth, then
/// segmentation).
pub fn parse_turn(text: &str) -> TurnRequest {
    if let Some(c) = ANSWER.captures(text) {
        return TurnRequest::Answer(c[1].to_string());
    }
    for (tool, re) in [(Tool::Depth, &*DEPTH), (Tool::Segmentation, &*SEGMENTATION)] {
        if let Some(c) = re.captures(text) {
            let whole = c.get(0).expect("group 0 always exists");
            return TurnRequest::Tool(ToolCall {
                tool,
                span: whole.range(),
                request: c[1].to_string(),
            });
        }
    }
    TurnRequest::Nothing
}

/// The turn as the text-dropped CFG context sees it: every occurrence of the matched tag
/// span removed (the official code uses `str.replace`, which removes all occurrences).
pub fn without_tool_call(text: &str, call: &ToolCall) -> String {
    text.replace(&text[call.span.clone()], "")
}

/// Content of the first closed `<answer>...</answer>`, if any.
pub fn answer_content(text: &str) -> Option<&str> {
    ANSWER
        .captures(text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str())
}

/// The content of the last `\boxed{...}` with balanced braces, if any.
pub fn boxed_content(text: &str) -> Option<&str> {
    const OPEN: &str = "\\boxed{";
    let mut found = None;
    let mut search_from = 0;
    while let Some(pos) = text[search_from..].find(OPEN) {
        let start = search_from + pos + OPEN.len();
        let mut depth = 1usize;
        let mut end = None;
        for (i, ch) in text[start..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(start + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        if let Some(end) = end {
            found = Some(&text[start..end]);
        }
        search_from = start;
    }
    found
}

/// The text after the last `</think>` (how the text-reasoning mode's prediction is read),
/// or the whole text when there is none; trimmed.
pub fn after_think(text: &str) -> &str {
    match text.rfind("</think>") {
        Some(i) => text[i + "</think>".len()..].trim(),
        None => text.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::{DEPTH_PROMPT, SEGMENTATION_PROMPT};

    #[test]
    fn answer_wins_over_tools() {
        let t = format!("<think>x</think>{DEPTH_PROMPT}<answer>A \\boxed{{B}}</answer>");
        assert_eq!(parse_turn(&t), TurnRequest::Answer("A \\boxed{B}".into()));
    }

    #[test]
    fn depth_wins_over_segmentation_even_when_later() {
        let t = format!("<think>x</think>{SEGMENTATION_PROMPT}{DEPTH_PROMPT}");
        match parse_turn(&t) {
            TurnRequest::Tool(c) => {
                assert_eq!(c.tool, Tool::Depth);
                assert_eq!(&t[c.span.clone()], DEPTH_PROMPT);
                assert_eq!(
                    without_tool_call(&t, &c),
                    format!("<think>x</think>{SEGMENTATION_PROMPT}")
                );
            }
            other => panic!("expected a depth call, got {other:?}"),
        }
    }

    #[test]
    fn tags_match_across_lines_and_non_greedily() {
        let t = "<segmentation>a\nb</segmentation> and <segmentation>c</segmentation>";
        match parse_turn(t) {
            TurnRequest::Tool(c) => {
                assert_eq!(c.tool, Tool::Segmentation);
                assert_eq!(c.request, "a\nb");
                assert_eq!(c.span, 0..32);
            }
            other => panic!("expected a segmentation call, got {other:?}"),
        }
    }

    #[test]
    fn unclosed_or_malformed_tags_request_nothing() {
        for t in [
            "<think>hmm</think>",
            "<answer>unfinished",
            "<depth-estimation>no end",
            "<depth-estimation>x</segmentation>",
            "</answer>backwards<answer>",
            "<Answer>case</Answer>",
        ] {
            assert_eq!(parse_turn(t), TurnRequest::Nothing, "{t}");
        }
    }

    #[test]
    fn removal_drops_every_copy_of_the_span() {
        let t = format!("a{DEPTH_PROMPT}b{DEPTH_PROMPT}c");
        let TurnRequest::Tool(c) = parse_turn(&t) else {
            panic!("expected a tool call")
        };
        assert_eq!(without_tool_call(&t, &c), "abc");
    }

    #[test]
    fn boxed_and_think_helpers() {
        assert_eq!(boxed_content("x \\boxed{a} y \\boxed{{b}c}"), Some("{b}c"));
        assert_eq!(boxed_content("\\boxed{unbalanced"), None);
        assert_eq!(boxed_content("none"), None);
        assert_eq!(after_think("<think>a</think> B </think> C "), "C");
        assert_eq!(after_think(" plain "), "plain");
        assert_eq!(answer_content("<answer> yes </answer>"), Some(" yes "));
    }
}
