//! The prompt strings the model was trained on.
//!
//! These are byte-exact copies of the strings of the official COOPER code
//! (`inferencer.py` and `data/interleave_datasets/interleave_reason.py`, commit
//! 639fb6102e24d284920d7f07a215e8f3be2f6313). They are data, not code: the model was
//! trained on exactly these bytes, so they must not be reworded, re-wrapped or formatted.
//! `\boxed{{}}` (doubled braces) is what the official string contains at run time; it is
//! never passed through a formatter.

/// System prompt of the adaptive interleaved reasoning loop (`cooper` mode); also the SFT system prompt.
pub const INTERLEAVE_REASON_SYSTEM_PROMPT: &str = r#"You are a specialized multimodal assistant. Your purpose is to solve visual question answering tasks by thinking step-by-step with your skill of depth estimation and semantic segmentation.

# Skills

You can prompt yourself to generate depth-estimation/segmentation by <depth-estimation>...</depth-estimation> / <segmentation>...</segmentation> as follows:

<depth-estimation>Estimate the depth of the image and generate the depth map.</depth-estimation>
OR
<segmentation>Segment the objects in the image with different colors.</segmentation>

# Instruction

1. In each turn, you should start with <think> tag. In this tag, you need to conduct a step-by-step reasoning process about the image and question and evaluate whether tool use would be helpful and give the reason. If received generated results, you also need to analyze them.
2. Please note that the result of the generated depth-estimation/segmentation are not always accurate. Please carefully check whether they are helpful for answering questions or whether they are accurate.
3. If you think depth-estimation/segmentation is useful, call to generate them by <depth-estimation>...</depth-estimation> / <segmentation>...</segmentation>. 
4. If you think no more to generate, you can answer in <answer> tag. You need to provide a concise summary of your reasoning process that leads to the final answer. Besides, you also need to put a simple and direct answer in \boxed{{}} for verification.
5. Try to use the tools as much as possible.

The structure of your response should be like this:
<think> ... </think>
<depth-estimation> ... </depth-estimation> / <segmentation> ... </segmentation>

OR

<think> ... </think>
<answer> ... </answer>
"#;

/// Text turn appended after every generated map in `cooper` mode. Matched by string equality downstream (format reward, re-packing): keep it byte-exact, leading and trailing newline included.
pub const REFLECTION_PROMPT: &str = r#"
Here is the result of the depth-estimation/segmentation. Please note that the result of the depth-estimation/segmentation is not always accurate. Please check it carefully. 
Now please continue to think in <think>...</think> and then decide whether to continue to generate the depth-estimation/segmentation in <depth-estimation>...</depth-estimation>/<segmentation>...</segmentation> or give the answer in <answer>...</answer>.
"#;

/// The depth tool request (also the stage-1 depth prompt).
pub const DEPTH_PROMPT: &str = r#"<depth-estimation>Estimate the depth of the image and generate the depth map.</depth-estimation>"#;

/// The segmentation tool request (also the stage-1 segmentation prompt).
pub const SEGMENTATION_PROMPT: &str =
    r#"<segmentation>Segment the objects in the image with different colors.</segmentation>"#;

/// System prompt of text-only reasoning (`re` mode). Note the trailing space at the end of its first line.
pub const VLM_THINK_SYSTEM_PROMPT: &str = r#"You should first think about the reasoning process in the mind and then provide the user with the answer. 
The reasoning process is enclosed within <think> </think> tags, i.e. <think> reasoning process here </think> answer here"#;

/// System prompt of perception enhancement (`pe` mode) and of `direct` mode: answer at once inside `<answer>`.
pub const IMAGE_REASON_SYSTEM_PROMPT: &str = r#"You are a specialized multimodal assistant. Your aim is to answer the questions given by users based on the depth estimation and semantic segmentation you have generated.

# Instruction
Please don't thinking and just give the final answer directly in <answer> tag. Besides, you also need to put a simple and direct answer in \boxed{{}} for verification.

The structure of your response should be like this:
<answer> ... </answer>
"#;

/// System prompt of the text-reasoning SFT set; not used by any inference entry point, kept for completeness.
pub const TEXT_REASON_SYSTEM_PROMPT: &str = r#"You are a specialized multimodal language model. Your purpose is to solve visual question answering tasks by thinking step-by-step.

# Instruction

1. You should first think with <think> tag. In this tag, you need to conduct a step-by-step reasoning process about the image and question.
2. If you think that you could find the right answer, you can answer in <answer> tag. You need to provide a concise summary of your reasoning process that leads to the final answer. Besides, you also need to put a simple and direct answer in \boxed{{}} for verification.

The structure of your response should be like this:
<think> thinking process satisfying the Instruction 1 </think>
<answer> answer satisfying the Instruction 2 </answer>
"#;

/// The text turn that `pe` and `direct` modes append before the final answer is generated.
pub const ANSWER_OPEN: &str = "<answer>";

/// The request for a scene description that describe-first models are asked right after the
/// picture ([`crate::ReasoningConfig::describe_first`]). Not official: this project's synthetic
/// world writes it (`cooper_world::chains::DESCRIBE_PROMPT`, the same bytes, tested in
/// `cooper-stages`), and a describe-first model was trained on exactly these bytes.
pub const DESCRIBE_PROMPT: &str = "Describe every object in the image: its color and shape, the cell of a 3x3 grid it is in, and how far it is from the camera.";

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a 64 of the bytes, used to pin the strings to the official ones.
    fn fnv1a(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    #[test]
    fn prompts_are_byte_exact_copies_of_the_official_strings() {
        // Lengths and hashes computed from the official Python string values.
        let expected: [(&str, &str, usize, u64); 7] = [
            (
                "INTERLEAVE_REASON_SYSTEM_PROMPT",
                INTERLEAVE_REASON_SYSTEM_PROMPT,
                1703,
                0x6428303e4d842b74,
            ),
            (
                "REFLECTION_PROMPT",
                REFLECTION_PROMPT,
                429,
                0xef3f6c88b44c48c3,
            ),
            ("DEPTH_PROMPT", DEPTH_PROMPT, 96, 0x82e9cc4d71ca6a39),
            (
                "SEGMENTATION_PROMPT",
                SEGMENTATION_PROMPT,
                84,
                0xdbcc15f47f860a40,
            ),
            (
                "VLM_THINK_SYSTEM_PROMPT",
                VLM_THINK_SYSTEM_PROMPT,
                227,
                0x465cffeded3de9a4,
            ),
            (
                "IMAGE_REASON_SYSTEM_PROMPT",
                IMAGE_REASON_SYSTEM_PROMPT,
                430,
                0xb7b712139b3d9b8e,
            ),
            (
                "TEXT_REASON_SYSTEM_PROMPT",
                TEXT_REASON_SYSTEM_PROMPT,
                730,
                0x929af6ba31376617,
            ),
        ];
        for (name, text, len, hash) in expected {
            assert_eq!(text.len(), len, "{name}: length");
            assert_eq!(fnv1a(text.as_bytes()), hash, "{name}: content hash");
        }
    }

    #[test]
    fn boxed_braces_are_doubled_literally() {
        assert!(INTERLEAVE_REASON_SYSTEM_PROMPT.contains("\\boxed{{}}"));
        assert!(IMAGE_REASON_SYSTEM_PROMPT.contains("\\boxed{{}}"));
        assert!(REFLECTION_PROMPT.starts_with('\n') && REFLECTION_PROMPT.ends_with('\n'));
    }
}
