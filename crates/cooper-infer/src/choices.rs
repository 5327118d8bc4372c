//! Answers constrained to a question's options: what may stand inside `\boxed{}`.
//!
//! The official loop decodes freely, and a small model often boxes something no option says
//! (an object the question does not offer, a colour word for a letter question); the benchmark
//! then counts the item unanswered. With [`crate::ReasonParams::constrain_answers`] the engine
//! lets the model write its chain as it likes, but when it opens a box it scores each option as
//! the box's content and writes the most likely one (the likelihood ranking of the multiple-choice
//! evaluations of lm-evaluation-harness, made at the point where this model states its answer).
//! The choice is the model's own: nothing about the right answer enters, only which strings are
//! allowed.
//!
//! An option may be written several ways (`B`, ` B`, `green pyramid`, ` green pyramid`: models
//! trained on this project's worlds box letters without a space and words after one); the option's
//! probability is the sum over its forms.

/// One allowed answer and the strings that write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// What the answer means: an option letter (`A`), or `Yes` / `No`.
    pub label: String,
    /// The box contents that give this answer, each distinct.
    pub forms: Vec<String>,
}

/// The answers a question allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerChoices {
    /// In the question's order.
    pub choices: Vec<Choice>,
}

/// The instruction a yes/no question ends with (the evaluation's prompt layout).
const YES_NO_INSTRUCTION: &str = "answer with yes or no";

impl AnswerChoices {
    /// The choices a question offers, read from its text: option lines `A. text` (or `A) text`),
    /// at least two, lettered from `A` in order, each allowing its letter and its text; or, for a
    /// question that asks to answer with Yes or No, those two. `None` for any other question
    /// (numbers, open answers), whose answers stay unconstrained.
    pub fn from_question(question: &str) -> Option<Self> {
        let mut choices: Vec<Choice> = Vec::new();
        for line in question.lines() {
            let Some((letter, text)) = option_line(line) else {
                continue;
            };
            let expected = char::from(b'A' + choices.len().min(25) as u8);
            if letter == 'A' {
                // A new option list starts (a hint may have held an earlier one).
                choices.clear();
            } else if letter != expected {
                continue;
            }
            choices.push(Choice {
                label: letter.to_string(),
                forms: distinct(vec![
                    letter.to_string(),
                    format!(" {letter}"),
                    text.to_string(),
                    format!(" {text}"),
                ]),
            });
        }
        if choices.len() >= 2 {
            return Some(Self { choices });
        }
        if question.to_lowercase().contains(YES_NO_INSTRUCTION) {
            let yes_no = ["Yes", "No"]
                .into_iter()
                .map(|word| Choice {
                    label: word.to_string(),
                    forms: vec![word.to_string(), format!(" {word}")],
                })
                .collect();
            return Some(Self { choices: yes_no });
        }
        None
    }

    /// The choice a box content writes, if any.
    pub fn label_of(&self, content: &str) -> Option<&str> {
        self.choices
            .iter()
            .find(|c| c.forms.iter().any(|f| f == content))
            .map(|c| c.label.as_str())
    }
}

/// `A. text` or `A) text` (leading spaces allowed) as (letter, trimmed text).
fn option_line(line: &str) -> Option<(char, &str)> {
    let line = line.trim_start();
    let mut chars = line.chars();
    let letter = chars.next().filter(char::is_ascii_uppercase)?;
    let rest = chars.as_str();
    let text = rest
        .strip_prefix(". ")
        .or_else(|| rest.strip_prefix(") "))?
        .trim();
    (!text.is_empty()).then_some((letter, text))
}

fn distinct(forms: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(forms.len());
    for f in forms {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// The log-probability of each choice from the log-probabilities of its forms (logsumexp: the
/// forms are different strings, so their probabilities add).
pub fn choice_log_probs(form_log_probs: &[Vec<f32>]) -> Vec<f32> {
    form_log_probs
        .iter()
        .map(|forms| {
            let max = forms.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if max == f32::NEG_INFINITY {
                return max;
            }
            max + forms.iter().map(|&l| (l - max).exp()).sum::<f32>().ln()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_from_the_prompt_layout() {
        let q = "Hint: look closely\nWhich is nearer?\nOptions:\nA. green pyramid\nB. cyan cube\n\
                 Answer with the letter of the correct option.";
        let c = AnswerChoices::from_question(q).unwrap();
        assert_eq!(c.choices.len(), 2);
        assert_eq!(c.choices[0].label, "A");
        assert_eq!(
            c.choices[0].forms,
            vec!["A", " A", "green pyramid", " green pyramid"]
        );
        assert_eq!(c.label_of(" cyan cube"), Some("B"));
        assert_eq!(c.label_of("B"), Some("B"));
        assert_eq!(c.label_of("red"), None);
    }

    #[test]
    fn yes_no_and_unconstrained_questions() {
        let c =
            AnswerChoices::from_question("Is there a red box?\nAnswer with Yes or No.").unwrap();
        assert_eq!(c.choices.len(), 2);
        assert_eq!(c.label_of(" No"), Some("No"));
        assert!(AnswerChoices::from_question(
            "How far is it?\nAnswer with a single number in meters."
        )
        .is_none());
        // One option line alone is not a list; letters out of order are skipped.
        assert!(AnswerChoices::from_question("A. only one").is_none());
        let c = AnswerChoices::from_question("A) one\nC) skipped\nB) two").unwrap();
        assert_eq!(c.choices.len(), 2);
        assert_eq!(c.choices[1].forms[2], "two");
        // A word that merely starts with a capital is not an option line.
        assert!(AnswerChoices::from_question("A.B. testing\nBe brief").is_none());
    }

    #[test]
    fn forms_add_up_per_choice() {
        let lp = choice_log_probs(&[vec![0.25f32.ln(), 0.25f32.ln()], vec![0.4f32.ln()]]);
        assert!((lp[0] - 0.5f32.ln()).abs() < 1e-6);
        assert!((lp[1] - 0.4f32.ln()).abs() < 1e-6);
        assert_eq!(
            choice_log_probs(&[vec![f32::NEG_INFINITY]])[0],
            f32::NEG_INFINITY
        );
    }
}
