//! The crate's error type. Every variant that comes from user data names the file and, where there
//! is one, the row (benchmark item index or line number) and the field.

use std::path::PathBuf;

/// The error an [`crate::Answerer`] may return: any boxed error (an `anyhow::Error` converts with
/// `.into()`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while evaluating.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The benchmark TSV could not be parsed at all (bad quoting, unreadable header).
    #[error("{}: malformed TSV: {source}", path.display())]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    /// A required column is absent from the TSV header.
    #[error("{}: missing required column `{column}`", path.display())]
    MissingColumn { path: PathBuf, column: String },
    /// A field of one benchmark row is unusable.
    #[error("{}: row {row} (index {index}), field `{field}`: {message}", path.display())]
    BadField {
        path: PathBuf,
        /// 1-based data row number (the header is row 0).
        row: usize,
        index: String,
        field: String,
        message: String,
    },
    /// Two rows share the same `index`, so predictions could not be told apart.
    #[error("{}: duplicate index `{index}` (rows {first} and {second})", path.display())]
    DuplicateIndex {
        path: PathBuf,
        index: String,
        first: usize,
        second: usize,
    },
    /// An image file could not be decoded or has an unsupported pixel format.
    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },
    /// A line of an existing `predictions.jsonl` (other than a cut-off last line) is not valid.
    #[error("{}: line {line}: {message}", path.display())]
    Predictions {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The model failed to answer one item.
    #[error("answering item {index}: {source}")]
    Answer {
        index: String,
        #[source]
        source: BoxError,
    },
    /// The LLM judge could not be reached or answered something unusable after all retries.
    #[error("judge at {url}: {message}")]
    Judge { url: String, message: String },
    /// A command-line style value (palette, crop, mode …) could not be parsed.
    #[error("invalid {what} `{value}`: {message}")]
    InvalidValue {
        what: &'static str,
        value: String,
        message: String,
    },
    /// Serialising a report failed.
    #[error("writing {}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl EvalError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.into(),
            source,
        }
    }
}
