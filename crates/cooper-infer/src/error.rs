//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in inference: bad user input (images, settings), tensor
/// shape mismatches between the engine and these helpers, trace I/O, and backend failures.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),

    /// A tensor handed to a helper does not have the expected shape or dtype.
    #[error("tensor `{name}`: expected {expected}, got shape {actual:?}")]
    Shape {
        /// Which tensor (argument or field name).
        name: &'static str,
        /// What was expected, in words.
        expected: String,
        /// The shape that was given.
        actual: Vec<usize>,
    },

    /// A setting is out of its valid range.
    #[error("invalid setting `{field}`: {reason}")]
    InvalidSetting {
        /// The field, as named in the params structs.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },

    /// An input image file could not be read from disk.
    #[error("cannot read image file {path}: {source}")]
    ImageRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// An input image is not a decodable picture (unknown format, truncated, corrupt).
    #[error("cannot decode image {path}: {reason}")]
    ImageDecode {
        /// The file.
        path: PathBuf,
        /// The decoder's explanation.
        reason: String,
    },

    /// An input image has no pixels.
    #[error("image {path} is empty ({width}x{height} pixels)")]
    ImageEmpty {
        /// The file.
        path: PathBuf,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },

    /// An input image exceeds the configured size limits.
    #[error("image {path} is too large: {reason}")]
    ImageTooLarge {
        /// The file.
        path: PathBuf,
        /// Which limit was hit.
        reason: String,
    },

    /// Writing the trace folder failed.
    #[error("cannot write trace at {path}: {source}")]
    TraceIo {
        /// The file or folder being written.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// Encoding a PNG of the trace failed.
    #[error("cannot encode image {name}: {source}")]
    ImageEncode {
        /// The file name inside the trace folder.
        name: String,
        /// The encoder error.
        source: image::ImageError,
    },

    /// Serialising `trace.json` failed.
    #[error("cannot serialise the trace: {0}")]
    Json(#[from] serde_json::Error),

    /// The model backend failed (the engine wraps its own errors here).
    #[error("model backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl InferError {
    /// Shorthand for [`InferError::InvalidSetting`].
    pub fn setting(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidSetting {
            field,
            reason: reason.into(),
        }
    }

    /// Shorthand for [`InferError::Shape`].
    pub fn shape(name: &'static str, expected: impl Into<String>, actual: &[usize]) -> Self {
        Self::Shape {
            name,
            expected: expected.into(),
            actual: actual.to_vec(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = InferError> = std::result::Result<T, E>;
