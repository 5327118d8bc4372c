//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the training building blocks.
///
/// Bad user data (a malformed config, a reward column of the wrong length, a corrupt checkpoint)
/// is reported through one of these variants, never by a panic.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed (shape mismatch, dtype, device).
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),

    /// A file-system operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// JSON (de)serialisation failed.
    #[error("json error in {context}: {source}")]
    Json {
        /// What was being read or written.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// The training configuration is invalid.
    #[error("invalid config: {0}")]
    Config(String),

    /// Inputs to a loss, reward or metric have inconsistent shapes or lengths.
    #[error("invalid input: {0}")]
    Input(String),

    /// A loss (or another value that must be finite) is NaN or infinite.
    #[error("non-finite {what}: {value} (refusing to continue; the previous checkpoint is kept)")]
    NonFinite {
        /// What the value is (e.g. "loss at step 12").
        what: String,
        /// The offending value.
        value: f64,
    },

    /// A checkpoint folder is missing a file or holds inconsistent state.
    #[error("checkpoint error: {0}")]
    Checkpoint(String),

    /// The LLM judge could not be reached or answered badly.
    #[error("judge error: {0}")]
    Judge(String),

    /// Tokenizer training, loading or saving failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    /// Drawing or encoding a plot failed.
    #[error("plot error: {0}")]
    Plot(String),
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps a JSON error with what was being processed.
    pub fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            context: context.into(),
            source,
        }
    }
}
