//! How a benchmark item becomes the question string given to the model.
//!
//! Layout (lines joined with `\n`; bracketed parts only when present):
//!
//! ```text
//! [Hint: {hint}]
//! {question}
//! [Options:
//! A. {text of A}
//! B. {text of B}
//! …]                       (not repeated when the options are written in the question)
//! {answer-format instruction}
//! ```
//!
//! The instruction depends on the answer kind:
//! - multiple choice: `Answer with the letter of the correct option.`
//! - Yes/No: `Answer with Yes or No.`
//! - number with a unit: `Answer with a single number in {unit name}.` (e.g. `meters`)
//! - number without unit, integer: `Answer with a single number.`
//! - open: no instruction.
//!
//! The model's own system prompt asks for `<answer>` and `\boxed{}`; the instruction only says what
//! goes inside.

use crate::tsv::{AnswerKind, BenchItem};
use crate::units::LengthUnit;

/// The unit's name in an instruction.
fn unit_name(unit: LengthUnit) -> &'static str {
    match unit {
        LengthUnit::Millimeter => "millimeters",
        LengthUnit::Centimeter => "centimeters",
        LengthUnit::Meter => "meters",
        LengthUnit::Inch => "inches",
        LengthUnit::Foot => "feet",
    }
}

/// The answer-format instruction for an item, if any.
pub fn format_instruction(item: &BenchItem) -> Option<String> {
    match item.kind {
        AnswerKind::MultipleChoice => Some("Answer with the letter of the correct option.".into()),
        AnswerKind::YesNo => Some("Answer with Yes or No.".into()),
        AnswerKind::Number => Some(match item.unit {
            Some(u) => format!("Answer with a single number in {}.", unit_name(u)),
            None => "Answer with a single number.".into(),
        }),
        AnswerKind::NumberInt => Some("Answer with a single number.".into()),
        AnswerKind::Open => None,
    }
}

/// Formats an item as the question string for the model (see the module docs).
pub fn format_question(item: &BenchItem) -> String {
    let mut lines: Vec<String> = Vec::new();
    if let Some(h) = &item.hint {
        lines.push(format!("Hint: {h}"));
    }
    lines.push(item.question.trim().to_string());
    if !item.options.is_empty() && !item.options_in_question {
        lines.push("Options:".into());
        lines.extend(
            item.options
                .iter()
                .map(|(l, t)| format!("{l}. {}", t.trim())),
        );
    }
    if let Some(i) = format_instruction(item) {
        lines.push(i);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_choice_with_hint() {
        let mut item = BenchItem::for_test(
            AnswerKind::MultipleChoice,
            "Which is closer? ",
            vec![('A', "the chair".into()), ('B', " the lamp".into())],
        );
        item.hint = Some("Look at the floor.".into());
        assert_eq!(
            format_question(&item),
            "Hint: Look at the floor.\nWhich is closer?\nOptions:\nA. the chair\nB. the lamp\n\
             Answer with the letter of the correct option."
        );
    }

    #[test]
    fn other_kinds() {
        let item = BenchItem::for_test(AnswerKind::YesNo, "Is the cup on the table?", vec![]);
        assert_eq!(
            format_question(&item),
            "Is the cup on the table?\nAnswer with Yes or No."
        );
        let mut item = BenchItem::for_test(AnswerKind::Number, "How tall is the door?", vec![]);
        item.unit = Some(LengthUnit::Meter);
        assert_eq!(
            format_question(&item),
            "How tall is the door?\nAnswer with a single number in meters."
        );
        item.unit = None;
        assert_eq!(
            format_question(&item),
            "How tall is the door?\nAnswer with a single number."
        );
        let item = BenchItem::for_test(AnswerKind::NumberInt, "How many cups?", vec![]);
        assert_eq!(
            format_question(&item),
            "How many cups?\nAnswer with a single number."
        );
        let item = BenchItem::for_test(AnswerKind::Open, "Describe it.", vec![]);
        assert_eq!(format_question(&item), "Describe it.");
    }
}
