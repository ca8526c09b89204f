//! `[train]`: optimiser, epochs, early stopping and evaluation settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which label group a selection metric is read from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// All labels.
    All,
    /// The privileged labels P.
    Privileged,
    /// The non-privileged labels P̄.
    NonPrivileged,
}

/// Metric used for early stopping and best-checkpoint selection.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SelectMetric {
    /// Mean average precision.
    Map,
    /// Sample-averaged F1.
    SampleF1,
    /// Exact match ratio.
    Emr,
    /// Per-label accuracy.
    Accuracy,
}

/// `[train]`: optimisation, selection and evaluation settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// AdamW learning rate. Default 1e-4 (paper).
    pub lr: f64,
    /// AdamW decoupled weight decay. Default 0.01.
    pub weight_decay: f64,
    /// AdamW ε (added to the root of the second moment). Default 1e-8, PyTorch's
    /// (burn's own default is 1e-5).
    pub adam_epsilon: f64,
    /// AdamW (β1, β2). Default [0.9, 0.999].
    pub adam_betas: [f64; 2],
    /// Gradient clipping: the maximum gradient L2 norm; 0 disables. Default 1.0.
    pub grad_clip: f64,
    /// What `grad_clip` bounds: `"global"`, the norm of all gradients together (PyTorch
    /// `clip_grad_norm_`), or `"per_parameter"`, each tensor's own (burn's clipping).
    /// Default `"global"`.
    pub grad_clip_scope: crate::clip::ClipScope,
    /// Training batch size. Default 32 (paper).
    pub batch_size: usize,
    /// Batch size for validation/test inference. Default 64.
    pub eval_batch_size: usize,
    /// Maximum epochs. Default 25 (paper).
    pub epochs: usize,
    /// Early-stopping patience in epochs (0 = never stop early). Default 5 (paper).
    pub patience: usize,
    /// Metric for early stopping and best checkpoint. Default `map`.
    pub select_metric: SelectMetric,
    /// Label group that metric is read from. Default `all` (the paper's overall mAP).
    pub select_group: Group,
    /// Seed for head initialisation, data order, augmentation and pair sampling (the
    /// validation split has its own `data.split_seed`). Default 42.
    pub seed: u64,
    /// Keep the frozen trunk's output for each image in the on-disk trunk store and read it
    /// back in every later epoch and run with the same trunk (augmentation off; see
    /// `trunk_store.rs`). Default true.
    pub feature_cache: bool,
    /// Where the trunk store lives (shared by every run that names it). Default
    /// `runs/.feature-cache`.
    pub cache_dir: PathBuf,
    /// Number format of stored outputs: `"f32"` (exact) or `"f16"` (half the disk; each
    /// value rounded to half precision). Default `"f32"`.
    pub cache_dtype: crate::trunk_store::StoreDtype,
    /// Refuse to start when the trunk store would grow beyond this many GB (10^9 bytes).
    /// Default: no cap (the free disk space still bounds it).
    pub cache_max_gb: Option<f64>,
    /// Probability threshold for F1/EMR/accuracy. Default 0.5.
    pub threshold: f64,
    /// Sample set for sample-based metrics: `all` (default) or `positive`.
    pub samples: fairpo_metrics::SampleSet,
    /// Average metrics over batches of this many test images (the released code's
    /// inflated protocol) instead of over the whole split. Default: off.
    pub per_batch: Option<usize>,
    /// Image-decoding threads of the batch loader. Default 2.
    pub workers: usize,
    /// Write a `log.jsonl` step line every this many steps. Default 1.
    pub log_every: usize,
    /// Debug/testing: after this many optimiser steps in total, save a checkpoint and
    /// exit as if interrupted (resume with `--resume`). Default: off.
    pub stop_after_steps: Option<u64>,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            weight_decay: 0.01,
            adam_epsilon: 1e-8,
            adam_betas: [0.9, 0.999],
            grad_clip: 1.0,
            grad_clip_scope: crate::clip::ClipScope::Global,
            batch_size: 32,
            eval_batch_size: 64,
            epochs: 25,
            patience: 5,
            select_metric: SelectMetric::Map,
            select_group: Group::All,
            seed: 42,
            feature_cache: true,
            cache_dir: PathBuf::from("runs/.feature-cache"),
            cache_dtype: crate::trunk_store::StoreDtype::F32,
            cache_max_gb: None,
            threshold: 0.5,
            samples: fairpo_metrics::SampleSet::All,
            per_batch: None,
            workers: 2,
            log_every: 1,
            stop_after_steps: None,
        }
    }
}
