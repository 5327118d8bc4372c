//! Errors of the stage loops: every lower crate's error, plus bad data named by file and line.
use std::path::PathBuf;

/// What can stop a stage.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The model folder or its tensors.
    #[error(transparent)]
    Model(#[from] cooper_model::ModelError),
    /// Rollouts, transforms, decoding.
    #[error(transparent)]
    Infer(#[from] cooper_infer::InferError),
    /// Optimiser, checkpoints, rewards, config (a non-finite loss among them).
    #[error(transparent)]
    Train(#[from] cooper_train::TrainError),
    /// Data readers of the world crate.
    #[error(transparent)]
    World(#[from] cooper_world::WorldError),
    /// A tensor operation.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A file that could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Data or settings that cannot be trained on; the message names the file, row or field.
    #[error("{0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, StageError>;

impl StageError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
