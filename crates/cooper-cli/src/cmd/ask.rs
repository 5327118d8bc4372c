//! `cooper ask`: answer a spatial question about a picture, streaming the reasoning, and write a
//! trace folder (trace.json, PNGs, index.html).
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use cooper_infer::image_io::{load_image, LoadLimits};
use cooper_infer::trace::TextRole;
use cooper_infer::{reason, write_trace, Mode, ReasonEvent};

use super::common::ModelArgs;

#[derive(clap::Args)]
pub struct AskArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The picture (any common format).
    #[arg(long)]
    image: PathBuf,
    /// cooper (adaptive interleaved reasoning), pe (depth and segmentation first), re (text-only
    /// reasoning) or direct (answer only).
    #[arg(long, default_value = "cooper")]
    mode: String,
    /// Write the trace folder here (must not exist or be empty).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Sample with this temperature instead of greedy decoding.
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus sampling mass (with --temperature).
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed of text sampling and image noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most tokens per model turn.
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Flow steps per generated map.
    #[arg(long)]
    steps: Option<usize>,
    /// Box only one of the question's options (lines `A. ...`) or, when it asks to answer with
    /// Yes or No, one of those: the one the model scores likeliest inside the box.
    #[arg(long)]
    constrain_answers: bool,
    /// The question.
    question: String,
}

pub fn run(args: AskArgs) -> Result<()> {
    if args.question.trim().is_empty() {
        bail!("the question is empty");
    }
    let mode: Mode = args.mode.parse()?;
    let image = load_image(&args.image, &LoadLimits::default())?;
    let engine = args.model.load()?;
    let mut params = engine.default_reason_params();
    params.mode = mode;
    params.text.seed = args.seed;
    params.image.seed = args.seed;
    if let Some(t) = args.temperature {
        params.text.do_sample = true;
        params.text.temperature = t;
    }
    if let Some(p) = args.top_p {
        params.text.top_p = p;
    }
    if let Some(n) = args.max_tokens {
        params.text.max_new_tokens = n;
    }
    if let Some(n) = args.steps {
        params.image.num_timesteps = n;
    }
    params.constrain_answers = args.constrain_answers;
    if args.constrain_answers
        && cooper_infer::AnswerChoices::from_question(&args.question).is_none()
    {
        eprintln!(
            "note: --constrain-answers found no options (lines `A. ...`) and no \"Answer with Yes \
             or No\" in the question; the answer is decoded freely"
        );
    }
    let mut out = std::io::stdout().lock();
    let mut events = |e: ReasonEvent<'_>| {
        let _ = match e {
            ReasonEvent::Prompt {
                role: TextRole::Question,
                text,
            } => writeln!(out, "question: {text}"),
            ReasonEvent::Prompt { .. } => Ok(()),
            // A describe-first model's description is decode 0.
            ReasonEvent::TurnStart { turn: 0 } => write!(out, "\n[description] "),
            ReasonEvent::TurnStart { turn } => write!(out, "\n[turn {turn}] "),
            ReasonEvent::TextPiece(piece) => write!(out, "{piece}"),
            ReasonEvent::TurnEnd { outcome, .. } => writeln!(out, "\n  -> {outcome:?}"),
            ReasonEvent::ImageStart { tool } => writeln!(out, "  generating {tool:?} map..."),
            ReasonEvent::ImageDone { tool, elapsed } => {
                writeln!(out, "  {tool:?} map done in {:.1} s", elapsed.as_secs_f32())
            }
        };
        let _ = out.flush();
    };
    let trace = reason(&engine, &image, &args.question, &params, &mut events)?;
    println!();
    match &trace.final_answer {
        Some(a) => {
            let said = trace.boxed_answer.as_deref().unwrap_or(a.trim());
            println!("answer: {}", answer_line(&args.question, said));
        }
        None => println!("no answer within {} interactions", params.max_inter_num),
    }
    if let Some(dir) = &args.out {
        let files = write_trace(&trace, dir)
            .with_context(|| format!("writing trace to {}", dir.display()))?;
        println!("trace: {}", files.dir.display());
    }
    Ok(())
}

/// What `answer:` prints: the box as written (trimmed), or, when it holds an option's text
/// (models trained with `cooper world --option-text-answers` answer in words), that option's
/// letter and the text ("B (red)"), as the evaluation scores it.
fn answer_line(question: &str, boxed: &str) -> String {
    let label = cooper_infer::AnswerChoices::from_question(question)
        .and_then(|c| c.label_of(boxed).map(str::to_string));
    match label {
        Some(label) if label != boxed.trim() => format!("{label} ({})", boxed.trim()),
        _ => boxed.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::answer_line;

    #[test]
    fn answers_in_words_are_named_by_their_option_letter() {
        let q = "What colour is the cube?\nOptions:\nA. red\nB. cyan\nAnswer with the letter of the correct option.";
        assert_eq!(answer_line(q, " cyan"), "B (cyan)");
        assert_eq!(answer_line(q, "cyan"), "B (cyan)");
        assert_eq!(answer_line(q, "B"), "B");
        assert_eq!(answer_line(q, " blue"), "blue");
        let yes_no = "Is the cube red?\nAnswer with Yes or No.";
        assert_eq!(answer_line(yes_no, " No"), "No");
        assert_eq!(answer_line("How far is it?", "2.5"), "2.5");
    }
}
