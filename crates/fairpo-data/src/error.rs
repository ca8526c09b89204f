//! Typed errors of the data crate. Every variant names the file (and line, where there is one).

use std::path::PathBuf;

/// Everything that can go wrong between files on disk and a [`crate::Batch`].
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A folder the layout needs does not exist.
    #[error("{path}: folder not found ({what})")]
    MissingDir {
        /// The folder that was expected.
        path: PathBuf,
        /// What it should have held.
        what: String,
    },
    /// A file the layout needs does not exist.
    #[error("{path}: file not found ({what})")]
    MissingFile {
        /// The file that was expected.
        path: PathBuf,
        /// What it should have held.
        what: String,
    },
    /// A JSON file is not valid JSON or lacks a needed field.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's message (with line and column).
        message: String,
    },
    /// A line (or record) of a text file is malformed.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A file's content is inconsistent with another file (e.g. line counts differ).
    #[error("{path}: {message}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What disagrees with what.
        message: String,
    },
    /// Images listed by the annotations are missing on disk and `skip_missing` is off.
    #[error("{count} listed image(s) missing on disk, first: {first} (set skip_missing = true to skip them)")]
    MissingImages {
        /// How many are missing.
        count: usize,
        /// The first missing file.
        first: PathBuf,
    },
    /// An image could not be decoded.
    #[error(
        "{path}: cannot decode image: {message} (set skip_corrupt = true to skip such images)"
    )]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid data configuration: {0}")]
    Config(String),
    /// Writing an output file failed.
    #[error(transparent)]
    Write(#[from] fairpo_io::IoError),
    /// The privileged set could not be built.
    #[error("partition: {0}")]
    Partition(String),
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    /// A parse error at `path:line`.
    pub fn parse(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        DataError::Parse {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
