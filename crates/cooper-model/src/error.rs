//! Errors of the model crate: each names the file, field or tensor at fault.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {what} not found")]
    MissingFile { path: PathBuf, what: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{file}: field `{field}`: {why}")]
    Config {
        file: String,
        field: String,
        why: String,
    },

    #[error("{file}: tensor `{name}`: {why}")]
    Tensor {
        file: PathBuf,
        name: String,
        why: String,
    },

    #[error("bad input: {0}")]
    Input(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;
