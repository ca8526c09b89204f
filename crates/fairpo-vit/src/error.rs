//! Typed errors of the ViT crate; every variant names the file concerned.

use std::path::PathBuf;

/// Anything that can go wrong reading a model folder, its weights or a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum VitError {
    /// The model folder does not exist.
    #[error("model directory {path} does not exist (expected a Hugging Face model folder with config.json and model.safetensors or pytorch_model.bin)")]
    MissingModelDir {
        /// The folder asked for.
        path: PathBuf,
    },
    /// A required file is missing.
    #[error("{path}: missing {what}")]
    MissingFile {
        /// The file looked for.
        path: PathBuf,
        /// What it should have held.
        what: &'static str,
    },
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file did not parse.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The configuration is not a model this crate can build.
    #[error("{}invalid ViT configuration: {reason}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    InvalidConfig {
        /// The configuration file, if it came from one.
        path: Option<PathBuf>,
        /// Everything wrong with it.
        reason: String,
    },
    /// The weights file could not be read at all.
    #[error("{path}: cannot read weights: {reason}")]
    WeightsUnreadable {
        /// The weights file.
        path: PathBuf,
        /// The reader's message.
        reason: String,
    },
    /// The weights do not match the configuration (missing tensors, wrong shapes,
    /// unexpected tensors). Nothing was loaded.
    #[error("{path}: weights do not match the configuration ({} problem(s)):\n  {}", problems.len(), problems.join("\n  "))]
    WeightsMismatch {
        /// The weights file.
        path: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
    /// Saving or loading a burn checkpoint failed.
    #[error("{path}: checkpoint: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The recorder's message.
        reason: String,
    },
}
