//! File formats shared by the FairPO crates: a plain row-major [`Matrix`],
//! atomic writes (temp file + fsync + rename, so a crash never leaves a
//! half-written file in place) and NumPy `.npy` reading/writing of the arrays
//! exchanged with other tools (scores, targets, features).
//!
//! Every error is an [`IoError`] that names the file it concerns.

mod atomic;
mod error;
pub mod fault;
mod matrix;
mod npy;

pub use atomic::{atomic_write, atomic_write_with, write_json_atomic};
pub use error::IoError;
pub use matrix::Matrix;
pub use npy::{
    npy_bytes, read_npy_f32, read_npy_scores, read_npy_targets, write_npy_f32, write_npy_u8,
};
