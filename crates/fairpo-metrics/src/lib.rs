//! Multi-label evaluation for FairPO, per label group (all, privileged, non-privileged):
//! mAP identical to scikit-learn's `average_precision_score`, sample F1 (scikit-learn
//! `f1_score(average="samples")`), exact-match ratio and accuracy (1 - Hamming loss), plus
//! the label [`partition`] that defines the groups.
//!
//! No burn dependency: inputs are plain [`fairpo_io::Matrix`] values, or batches pushed
//! into a [`MetricsAccumulator`].
//!
//! ```
//! use fairpo_io::Matrix;
//! use fairpo_metrics::{evaluate, MetricsConfig};
//!
//! let scores = Matrix::new(2, 2, vec![0.9, 0.2, 0.4, 0.7]);
//! let targets = Matrix::new(2, 2, vec![1, 0, 0, 1]);
//! let report = evaluate(&scores, &targets, &[1], &MetricsConfig::default()).unwrap();
//! assert_eq!(report.groups.all.map, Some(1.0));
//! assert_eq!(report.groups.privileged.labels_scored, 1);
//! ```

mod ap;
mod config;
mod evaluate;
pub mod partition;
mod report;
mod thresholds;

pub use ap::average_precision;
pub use config::{MetricsConfig, SampleSet};
pub use evaluate::{check_probabilities, evaluate, MetricsAccumulator, MetricsError};
pub use partition::{validate_privileged, Partition, PartitionError, PrivilegedSpec};
pub use report::{
    GroupDetails, GroupMetrics, GroupsDetails, GroupsReport, MetricsReport, ReportDetails,
};
pub use thresholds::{best_f1_thresholds, ChosenThreshold};
