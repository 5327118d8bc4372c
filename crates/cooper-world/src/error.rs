//! The crate's error type. Every variant names the file (or field) it is about.

use std::path::PathBuf;

/// Errors from generating, writing or reading datasets.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An image could not be decoded or encoded.
    #[error("{path}: image error: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// An image decoded, but is not what the format requires (bit depth, channels, size).
    #[error("{path}: {message}")]
    ImageFormat { path: PathBuf, message: String },
    /// A JSON line could not be parsed.
    #[error("{path}:{line}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// A required field is missing or has the wrong type.
    #[error("{path}:{line}: field `{field}`: {message}")]
    Field {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
    /// A TSV/CSV file could not be written.
    #[error("{path}: {source}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    /// The generation settings are inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl WorldError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = WorldError> = std::result::Result<T, E>;
