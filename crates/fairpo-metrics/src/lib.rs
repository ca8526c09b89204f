//! Multi-label evaluation for FairPO, per label group (all, privileged, non-privileged):
//! mAP identical to scikit-learn's `average_precision_score`, sample F1, exact-match ratio
//! and accuracy, plus the label [`partition`] that defines the groups.
//!
//! No burn dependency: inputs are plain [`fairpo_io::Matrix`] values.

pub mod partition;

pub use partition::{validate_privileged, Partition, PartitionError, PrivilegedSpec};
