//! Rule-based answer extraction: from a model's raw output to an option letter, Yes/No, a number
//! (with its unit) or a free-text answer.
//!
//! Extraction first narrows the output to its final answer, then applies the rules of the item's
//! [`AnswerKind`]:
//!
//! 1. **Answer region.** The content of the last `<answer>…</answer>` (an unclosed `<answer>` runs
//!    to the end); otherwise the text after the last `</think>`; otherwise the whole output.
//! 2. **Boxed.** Inside that region, the content of the last `\boxed{…}` (braces balanced; `\text{}`,
//!    `\mathrm{}`, `\textbf{}` wrappers and `$` removed) is tried first; when the kind's rules find
//!    nothing in it, the whole region is tried.
//! 3. **Kind rules.**
//!    - Multiple choice ([`extract_letter`]): a bare letter (`B`, `(B)`, `B.`, `**B**`, `b`); a letter
//!      opening the text (`B. red car`, `B) …`); the last "answer/option/choice (is) X"; exactly one
//!      option letter standing alone as a word (a leading article "A" followed by a lower-case word
//!      does not count); exactly one option whose text occurs in the answer (options contained in
//!      another matching option are dropped).
//!    - Yes/No ([`extract_yes_no`]): "yes" or "no" as a word, exactly one of the two.
//!    - Numbers ([`extract_quantity`]): Q-Spatial's `scalar{…}` / `distance_unit{…}` pair; else the
//!      last quantity in the text: a number (`1,234.5`, `-2`, `.5`) or a range (`2-3`, `2 to 3`,
//!      averaged), optionally followed by a unit (see [`crate::units`]); a feet-and-inches pair
//!      (`5 feet 4 inches`, `5'4"`) becomes inches. The word "in" counts as inches only at the end of
//!      the text or before punctuation. Without any digit, a number word (`zero` … `twenty`).
//!    - Open answers: the trimmed text.

use std::sync::OnceLock;

use regex::Regex;

use crate::tsv::AnswerKind;
use crate::units::{LengthUnit, Quantity};

/// An extracted (or ground-truth) answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Prediction {
    /// An option letter, upper case.
    Letter(char),
    /// Yes (`true`) or No (`false`).
    YesNo(bool),
    /// A number, possibly with a length unit.
    Number(Quantity),
    /// A free-text answer.
    Text(String),
}

impl std::fmt::Display for Prediction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prediction::Letter(c) => write!(f, "{c}"),
            Prediction::YesNo(true) => f.write_str("Yes"),
            Prediction::YesNo(false) => f.write_str("No"),
            Prediction::Number(q) => write!(f, "{q}"),
            Prediction::Text(t) => f.write_str(t),
        }
    }
}

/// Where in the output the prediction was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Inside `\boxed{}`.
    Boxed,
    /// In the answer region (see the module docs) outside any box.
    Region,
    /// Mapped by the LLM judge.
    Judge,
}

/// The options of a multiple-choice item: letter and option text.
pub type Options<'a> = &'a [(char, String)];

/// Extracts a prediction of `kind` from a raw model output. `options` are used for
/// multiple-choice items only. Returns `None` when no rule applies.
pub fn extract(raw: &str, kind: AnswerKind, options: Options<'_>) -> Option<(Prediction, Source)> {
    let region = answer_region(raw);
    let boxed = boxed_content(region);
    let candidates = boxed
        .as_deref()
        .map(|b| (b, Source::Boxed))
        .into_iter()
        .chain(std::iter::once((region, Source::Region)));
    for (text, source) in candidates {
        let found = match kind {
            AnswerKind::MultipleChoice => extract_letter(text, options).map(Prediction::Letter),
            AnswerKind::YesNo => extract_yes_no(text).map(Prediction::YesNo),
            AnswerKind::Number | AnswerKind::NumberInt => {
                extract_quantity(text).map(Prediction::Number)
            }
            AnswerKind::Open => {
                let t = text.trim();
                (!t.is_empty()).then(|| Prediction::Text(t.to_string()))
            }
        };
        if let Some(p) = found {
            return Some((p, source));
        }
    }
    None
}

/// The final-answer part of an output: the last `<answer>` block, else the text after the last
/// `</think>`, else everything.
pub fn answer_region(raw: &str) -> &str {
    if let Some(start) = raw.rfind("<answer>") {
        let rest = &raw[start + "<answer>".len()..];
        return match rest.find("</answer>") {
            Some(end) => &rest[..end],
            None => rest,
        };
    }
    if let Some(pos) = raw.rfind("</think>") {
        return &raw[pos + "</think>".len()..];
    }
    raw
}

/// The content of the last `\boxed{…}` with balanced braces, cleaned of LaTeX text wrappers and `$`.
/// An unbalanced last box yields `None`.
pub fn boxed_content(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (i, ch) in text[start..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(clean_latex(&text[start..start + i]));
                }
            }
            _ => {}
        }
    }
    None
}

fn clean_latex(s: &str) -> String {
    static WRAP: OnceLock<Regex> = OnceLock::new();
    let wrap = WRAP.get_or_init(|| {
        Regex::new(r"\\(?:text|mathrm|textbf|mathbf|textit)\{([^{}]*)\}").expect("static regex")
    });
    let mut out = s.to_string();
    // Nested wrappers (`\textbf{\text{B}}`) unwrap one level per pass.
    loop {
        let next = wrap.replace_all(&out, "$1").into_owned();
        if next == out {
            break;
        }
        out = next;
    }
    out.replace('$', "").trim().to_string()
}

/// Extracts an option letter; `options` lists the valid letters and their texts.
pub fn extract_letter(text: &str, options: Options<'_>) -> Option<char> {
    let valid = |c: char| options.iter().any(|(l, _)| *l == c);
    let t = text.trim();

    // Rule 1: the whole answer is a letter, possibly decorated.
    let bare = t.trim_matches(|c: char| "()[]*.:'\"` \n\t".contains(c));
    let mut chars = bare.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        // A lone letter is an answer in either case ("b").
        let c = c.to_ascii_uppercase();
        if valid(c) {
            return Some(c);
        }
    }

    // Rule 2: a letter opening the answer, followed by `.`, `)` or `:` ("B. the red chair").
    static LEAD: OnceLock<Regex> = OnceLock::new();
    let lead = LEAD.get_or_init(|| Regex::new(r"^[\(\[*]*([A-Z])[\.\):\]]").expect("static regex"));
    if let Some(c) = lead.captures(t).and_then(|c| c[1].chars().next()) {
        if valid(c) {
            return Some(c);
        }
    }

    // Rule 3: "the answer is (C)", "Option C", "choice: C" — the last such phrase.
    static PHRASE: OnceLock<Regex> = OnceLock::new();
    let phrase = PHRASE.get_or_init(|| {
        Regex::new(r"(?i:answer|option|choice)\s*(?i:is)?\s*:?\s*[\(\[*]*([A-Z])\b")
            .expect("static regex")
    });
    if let Some(c) = phrase
        .captures_iter(t)
        .filter_map(|c| c[1].chars().next())
        .filter(|c| valid(*c))
        .last()
    {
        return Some(c);
    }

    // Rule 4: exactly one option letter standing alone as a word.
    let cleaned: String = t
        .chars()
        .map(|c| {
            if ".()[],:;!*#{}\"'`".contains(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    let mut found: Vec<char> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let mut cs = w.chars();
        let (Some(c), None) = (cs.next(), cs.next()) else {
            continue;
        };
        if !valid(c) {
            continue;
        }
        let next_is_lower_word = words
            .get(i + 1)
            .and_then(|n| n.chars().next())
            .is_some_and(|n| n.is_lowercase());
        if c == 'A' && next_is_lower_word {
            continue; // the article "A red chair …"
        }
        if !found.contains(&c) {
            found.push(c);
        }
    }
    if found.len() == 1 {
        return Some(found[0]);
    }

    // Rule 5: exactly one option text occurs in the answer.
    let lower = t.to_lowercase();
    let hits: Vec<&(char, String)> = options
        .iter()
        .filter(|(_, o)| {
            let o = o.trim().to_lowercase();
            !o.is_empty() && lower.contains(&o)
        })
        .collect();
    let maximal: Vec<char> = hits
        .iter()
        .filter(|(l, o)| {
            let o = o.trim().to_lowercase();
            !hits.iter().any(|(l2, o2)| {
                let o2 = o2.trim().to_lowercase();
                l2 != l && o2.len() > o.len() && o2.contains(&o)
            })
        })
        .map(|(l, _)| *l)
        .collect();
    if maximal.len() == 1 {
        return Some(maximal[0]);
    }
    None
}

/// Extracts Yes/No: exactly one of the words "yes" and "no" occurs (case-insensitive).
pub fn extract_yes_no(text: &str) -> Option<bool> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let yes = words.contains(&"yes");
    let no = words.contains(&"no");
    match (yes, no) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

const NUM: &str = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+";
const UNIT: &str = r#"(?i:millimeters?|millimetres?|mm|centimeters?|centimetres?|cm|meters?|metres?|m|inches|inch|in|feet|foot|ft)\b\.?|["″'′]"#;

fn parse_num(s: &str) -> Option<f64> {
    s.replace(',', "").parse().ok()
}

/// Extracts the last quantity (number with optional unit) of a text; see the module docs.
pub fn extract_quantity(text: &str) -> Option<Quantity> {
    if let Some(q) = scalar_box(text) {
        return Some(q);
    }
    static FEET_INCHES: OnceLock<Regex> = OnceLock::new();
    static SIMPLE: OnceLock<Regex> = OnceLock::new();
    let feet_inches = FEET_INCHES.get_or_init(|| {
        Regex::new(&format!(
            r#"(?P<ft>{NUM})\s*(?i:feet|foot|ft\.?|'|′)\s*(?i:and\s+)?(?P<inch>{NUM})\s*(?i:inches|inch|in\b\.?|"|″|'')"#
        ))
        .expect("static regex")
    });
    let simple = SIMPLE.get_or_init(|| {
        Regex::new(&format!(
            r"(?P<a>{NUM})(?:\s*(?:-|–|~|(?i:to))\s*(?P<b>{NUM}))?(?:\s*(?P<u>{UNIT}))?"
        ))
        .expect("static regex")
    });

    let mut found: Vec<(usize, usize, Quantity)> = Vec::new();
    for c in feet_inches.captures_iter(text) {
        let m = c.get(0).expect("group 0");
        if let (Some(ft), Some(inch)) = (parse_num(&c["ft"]), parse_num(&c["inch"])) {
            found.push((
                m.start(),
                m.end(),
                Quantity::length(ft * 12.0 + inch, LengthUnit::Inch),
            ));
        }
    }
    for c in simple.captures_iter(text) {
        let m = c.get(0).expect("group 0");
        if found.iter().any(|(s, e, _)| m.start() < *e && *s < m.end()) {
            continue;
        }
        let Some(a) = parse_num(&c["a"]) else {
            continue;
        };
        let value = match c.name("b").and_then(|b| parse_num(b.as_str())) {
            Some(b) => (a + b) / 2.0,
            None => a,
        };
        let unit = c.name("u").and_then(|u| {
            let word = u.as_str();
            let unit = LengthUnit::parse(word)?;
            // "in" is inches only at the end or before punctuation ("3 in the box" is not).
            let rest = text[u.end()..].trim_start();
            let is_in = word.trim_end_matches('.').eq_ignore_ascii_case("in");
            if is_in && rest.chars().next().is_some_and(char::is_alphanumeric) {
                return None;
            }
            Some(unit)
        });
        found.push((m.start(), m.end(), Quantity { value, unit }));
    }
    if let Some((_, _, q)) = found.into_iter().max_by_key(|(s, _, _)| *s) {
        return Some(q);
    }
    number_word(text).map(Quantity::number)
}

/// Q-Spatial's structured answer `\scalar{1.5} \distance_unit{meters}` (the last of each; the mean
/// of the numbers inside the scalar box).
fn scalar_box(text: &str) -> Option<Quantity> {
    static SCALAR: OnceLock<Regex> = OnceLock::new();
    static UNIT_BOX: OnceLock<Regex> = OnceLock::new();
    static DIGITS: OnceLock<Regex> = OnceLock::new();
    let scalar = SCALAR.get_or_init(|| Regex::new(r"scalar\{([^}]*)\}").expect("static regex"));
    let unit_box =
        UNIT_BOX.get_or_init(|| Regex::new(r"distance_unit\{([^}]*)\}").expect("static regex"));
    let digits = DIGITS.get_or_init(|| Regex::new(r"\d+\.?\d*").expect("static regex"));
    let inside = scalar.captures_iter(text).last()?.get(1)?.as_str();
    let values: Vec<f64> = digits
        .find_iter(inside)
        .filter_map(|m| m.as_str().parse().ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    let value = values.iter().sum::<f64>() / values.len() as f64;
    let unit = unit_box
        .captures_iter(text)
        .last()
        .and_then(|c| LengthUnit::parse(&c[1]));
    Some(Quantity { value, unit })
}

const NUMBER_WORDS: [&str; 21] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

/// The last number word (`zero` … `twenty`) of a text.
fn number_word(text: &str) -> Option<f64> {
    let lower = text.to_lowercase();
    lower
        .split(|c: char| !c.is_alphabetic())
        .rev()
        .find_map(|w| NUMBER_WORDS.iter().position(|n| *n == w))
        .map(|i| i as f64)
}

/// Parses a ground-truth numeric answer: `150`, `1.5 m`, `(45, 'centimeters')` (Q-Spatial's tuple),
/// `5 feet 4 inches`. `default_unit` (from a `unit` column) applies when the answer has none.
/// Returns `None` unless the whole answer is one quantity.
pub fn parse_ground_truth_number(
    answer: &str,
    default_unit: Option<LengthUnit>,
) -> Option<Quantity> {
    static TUPLE: OnceLock<Regex> = OnceLock::new();
    let tuple = TUPLE.get_or_init(|| {
        Regex::new(&format!(r#"^\(\s*({NUM})\s*,\s*['"]?([^'"]+?)['"]?\s*\)$"#))
            .expect("static regex")
    });
    let a = answer.trim();
    if let Some(c) = tuple.captures(a) {
        let value = parse_num(&c[1])?;
        let unit = LengthUnit::parse(&c[2])?;
        return Some(Quantity::length(value, unit));
    }
    // Whole-answer check: the answer must consist of digits, separators and at most a unit.
    static WHOLE: OnceLock<Regex> = OnceLock::new();
    let whole = WHOLE.get_or_init(|| {
        Regex::new(&format!(
            r#"^(?:{NUM})(?:\s*(?:-|to)\s*(?:{NUM}))?\s*(?:{UNIT})?(?:\s*(?:{NUM})\s*(?:{UNIT}))?$"#
        ))
        .expect("static regex")
    });
    if !whole.is_match(a) {
        return None;
    }
    let mut q = extract_quantity(a)?;
    if q.unit.is_none() {
        q.unit = default_unit;
    }
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Vec<(char, String)> {
        vec![
            ('A', "the red chair".into()),
            ('B', "the blue table".into()),
            ('C', "left".into()),
            ('D', "left front".into()),
        ]
    }

    fn q(value: f64, unit: Option<LengthUnit>) -> Quantity {
        Quantity { value, unit }
    }

    #[test]
    fn region_prefers_answer_tag_then_think() {
        assert_eq!(answer_region("<think>x</think><answer> B </answer>"), " B ");
        assert_eq!(
            answer_region("<answer>A</answer> retry <answer>C</answer>"),
            "C"
        );
        assert_eq!(answer_region("<think>so A</think> final: C"), " final: C");
        assert_eq!(answer_region("<answer>unclosed D"), "unclosed D");
        assert_eq!(answer_region("plain"), "plain");
    }

    #[test]
    fn boxed_takes_last_balanced_box_and_unwraps_text() {
        assert_eq!(
            boxed_content(r"\boxed{A} then \boxed{B}").as_deref(),
            Some("B")
        );
        assert_eq!(boxed_content(r"\boxed{\text{C}}").as_deref(), Some("C"));
        assert_eq!(
            boxed_content(r"\boxed{\textbf{\text{D}}}").as_deref(),
            Some("D")
        );
        assert_eq!(boxed_content(r"\boxed{$2.5$ m}").as_deref(), Some("2.5 m"));
        assert_eq!(
            boxed_content(r"\boxed{\frac{1}{2}}").as_deref(),
            Some(r"\frac{1}{2}")
        );
        assert_eq!(boxed_content(r"\boxed{open"), None);
        assert_eq!(boxed_content("none"), None);
    }

    #[test]
    fn letter_rule_bare() {
        for s in ["B", "(B)", "B.", "**B**", " [B] "] {
            assert_eq!(extract_letter(s, &opts()), Some('B'), "{s}");
        }
        assert_eq!(extract_letter("E", &opts()), None, "E is not an option");
        assert_eq!(
            extract_letter("(c)", &opts()),
            Some('C'),
            "lone lower-case letter"
        );
    }

    #[test]
    fn letter_rule_leading() {
        assert_eq!(extract_letter("B. the blue table", &opts()), Some('B'));
        assert_eq!(extract_letter("(C) left, because ...", &opts()), Some('C'));
    }

    #[test]
    fn letter_rule_phrase() {
        assert_eq!(
            extract_letter("I think the answer is (D) here, not A or B", &opts()),
            Some('D')
        );
        assert_eq!(
            extract_letter("Option C fits best; x C", &opts()),
            Some('C')
        );
        assert_eq!(extract_letter("Correct choice: B", &opts()), Some('B'));
    }

    #[test]
    fn letter_rule_single_word() {
        assert_eq!(
            extract_letter("It must be C given the shadows", &opts()),
            Some('C')
        );
        // The article "A" before a lower-case word is not an option.
        assert_eq!(
            extract_letter("A chair stands left of D", &opts()),
            Some('D')
        );
        // Two different letters: ambiguous.
        assert_eq!(
            extract_letter("between C and D we pick neither", &opts()),
            None
        );
    }

    #[test]
    fn letter_rule_option_text() {
        assert_eq!(extract_letter("It is the blue table.", &opts()), Some('B'));
        // "left" is contained in "left front": the longer option wins.
        assert_eq!(
            extract_letter("the object is at the left front", &opts()),
            Some('D')
        );
        assert_eq!(extract_letter("no idea", &opts()), None);
    }

    #[test]
    fn yes_no_rule() {
        assert_eq!(extract_yes_no("Yes."), Some(true));
        assert_eq!(extract_yes_no("no, it is behind"), Some(false));
        assert_eq!(extract_yes_no("YES"), Some(true));
        assert_eq!(extract_yes_no("yes and no"), None);
        assert_eq!(extract_yes_no("nothing known"), None);
    }

    #[test]
    fn quantity_rules() {
        assert_eq!(extract_quantity("about 3 chairs"), Some(q(3.0, None)));
        assert_eq!(
            extract_quantity("1,234.5 mm"),
            Some(q(1234.5, Some(LengthUnit::Millimeter)))
        );
        assert_eq!(
            extract_quantity("-2 m"),
            Some(q(-2.0, Some(LengthUnit::Meter)))
        );
        assert_eq!(
            extract_quantity("roughly .5m"),
            Some(q(0.5, Some(LengthUnit::Meter)))
        );
        // The last quantity wins.
        assert_eq!(
            extract_quantity("the table is 2 m away, the chair 150 cm"),
            Some(q(150.0, Some(LengthUnit::Centimeter)))
        );
        // Ranges are averaged: (2 + 3) / 2 = 2.5.
        assert_eq!(
            extract_quantity("2-3 meters"),
            Some(q(2.5, Some(LengthUnit::Meter)))
        );
        assert_eq!(
            extract_quantity("2 to 4 feet"),
            Some(q(3.0, Some(LengthUnit::Foot)))
        );
        // 5 ft 4 in = 5 * 12 + 4 = 64 in.
        assert_eq!(
            extract_quantity("5 feet 4 inches tall"),
            Some(q(64.0, Some(LengthUnit::Inch)))
        );
        assert_eq!(
            extract_quantity(r#"it is 5'4" tall"#),
            Some(q(64.0, Some(LengthUnit::Inch)))
        );
        assert_eq!(
            extract_quantity("6 ft and 1 in."),
            Some(q(73.0, Some(LengthUnit::Inch)))
        );
        // "in" followed by a word is a preposition.
        assert_eq!(extract_quantity("3 in the box"), Some(q(3.0, None)));
        assert_eq!(
            extract_quantity("about 12 in"),
            Some(q(12.0, Some(LengthUnit::Inch)))
        );
        assert_eq!(extract_quantity("3 more"), Some(q(3.0, None)));
        assert_eq!(extract_quantity("there are two cups"), Some(q(2.0, None)));
        assert_eq!(extract_quantity("nothing"), None);
    }

    #[test]
    fn quantity_rule_scalar_box() {
        // (1 + 2) / 2 = 1.5
        assert_eq!(
            extract_quantity(r"\scalar{1 - 2} \distance_unit{meters}"),
            Some(q(1.5, Some(LengthUnit::Meter)))
        );
    }

    #[test]
    fn ground_truth_numbers() {
        assert_eq!(parse_ground_truth_number("150", None), Some(q(150.0, None)));
        assert_eq!(
            parse_ground_truth_number("150", Some(LengthUnit::Centimeter)),
            Some(q(150.0, Some(LengthUnit::Centimeter)))
        );
        assert_eq!(
            parse_ground_truth_number("(45.0, 'centimeters')", None),
            Some(q(45.0, Some(LengthUnit::Centimeter)))
        );
        assert_eq!(
            parse_ground_truth_number("1.5 m", None),
            Some(q(1.5, Some(LengthUnit::Meter)))
        );
        assert_eq!(
            parse_ground_truth_number("5 feet 4 inches", None),
            Some(q(64.0, Some(LengthUnit::Inch)))
        );
        assert_eq!(parse_ground_truth_number("left of the chair", None), None);
        assert_eq!(parse_ground_truth_number("B", None), None);
    }

    #[test]
    fn extract_tries_box_then_region() {
        let o = opts();
        let raw = "<think>maybe A</think><answer>The blue one. \\boxed{B}</answer>";
        assert_eq!(
            extract(raw, AnswerKind::MultipleChoice, &o),
            Some((Prediction::Letter('B'), Source::Boxed))
        );
        // Box content is not a letter, the region still gives one.
        let raw = "<answer>Option C \\boxed{??}</answer>";
        assert_eq!(
            extract(raw, AnswerKind::MultipleChoice, &o),
            Some((Prediction::Letter('C'), Source::Region))
        );
        let raw = "<answer>\\boxed{Yes}</answer>";
        assert_eq!(
            extract(raw, AnswerKind::YesNo, &o),
            Some((Prediction::YesNo(true), Source::Boxed))
        );
        // An answer in words, as the chains of `cooper world --option-text-answers` write it
        // (the box opens with a space): the option whose text it is.
        let raw = "<answer> So the answer is \\boxed{ left front}. </answer>";
        assert_eq!(
            extract(raw, AnswerKind::MultipleChoice, &o),
            Some((Prediction::Letter('D'), Source::Boxed))
        );
        let raw = "<answer> The answer is \\boxed{ No}. </answer>";
        assert_eq!(
            extract(raw, AnswerKind::YesNo, &o),
            Some((Prediction::YesNo(false), Source::Boxed))
        );
        let raw = "</think>The distance is \\boxed{1.2 m}";
        assert_eq!(
            extract(raw, AnswerKind::Number, &o),
            Some((
                Prediction::Number(q(1.2, Some(LengthUnit::Meter))),
                Source::Boxed
            ))
        );
        assert_eq!(extract("<answer>  </answer>", AnswerKind::Open, &o), None);
        assert_eq!(
            extract("<answer>a cat</answer>", AnswerKind::Open, &o),
            Some((Prediction::Text("a cat".into()), Source::Region))
        );
    }
}
