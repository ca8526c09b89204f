//! The one error type of this crate; every variant names the file.

use std::path::PathBuf;

/// An error reading or writing a file. The message always starts with the path.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be opened or read (missing, permissions, ...).
    #[error("{}: cannot read: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (part of the message, not a separate `source()`, so it prints once).
        error: std::io::Error,
    },

    /// The file (or its temporary sibling) could not be written or renamed into place.
    #[error("{}: cannot write: {error}", path.display())]
    Write {
        /// The destination file.
        path: PathBuf,
        /// The OS error (part of the message, not a separate `source()`, so it prints once).
        error: std::io::Error,
    },

    /// The file is not a well-formed `.npy` file.
    #[error("{}: not a .npy file ({reason})", path.display())]
    NotNpy {
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. "bad magic" or the header parse error.
        reason: String,
    },

    /// The array's dtype cannot be used for this purpose.
    #[error("{}: dtype {found} not supported for {what}; expected {expected}", path.display())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The dtype in the file, numpy notation (`<i4`, `|b1`, ...).
        found: String,
        /// What the array is read as ("scores", "targets", "features").
        what: &'static str,
        /// The accepted dtypes.
        expected: &'static str,
    },

    /// The array does not have the expected number of dimensions.
    #[error("{}: shape {found:?} not supported for {what}; expected a 2-D array {expected}", path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// The shape in the file.
        found: Vec<u64>,
        /// What the array is read as.
        what: &'static str,
        /// The expected layout, e.g. "[N, T]".
        expected: &'static str,
    },

    /// A value is not allowed (e.g. a target that is not 0 or 1).
    #[error("{}: {what} value {value} at row {row}, column {col}; expected {expected}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// What the array is read as.
        what: &'static str,
        /// The offending value, printed.
        value: String,
        /// Row index (0-based).
        row: usize,
        /// Column index (0-based).
        col: usize,
        /// What was expected.
        expected: &'static str,
    },

    /// A value could not be serialised to JSON.
    #[error("{}: cannot serialise JSON: {error}", path.display())]
    Json {
        /// The destination file.
        path: PathBuf,
        /// The serde error.
        error: serde_json::Error,
    },
}

impl IoError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            IoError::Read { path, .. }
            | IoError::Write { path, .. }
            | IoError::NotNpy { path, .. }
            | IoError::Dtype { path, .. }
            | IoError::Shape { path, .. }
            | IoError::Value { path, .. }
            | IoError::Json { path, .. } => path,
        }
    }
}
