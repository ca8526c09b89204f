//! Inference over a split and the metrics of its scores; the run's result files.

use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::*;
use fairpo_data::BatchLoader;
use fairpo_data::{DataSplits, SelectOn, Split};
use fairpo_io::Matrix;
use fairpo_metrics::GroupsReport;
use fairpo_metrics::{MetricsAccumulator, MetricsConfig, MetricsReport, Partition};
use serde::{Deserialize, Serialize};

use crate::config::{Group, RunConfig, SelectMetric, TrainSettings};
use crate::policy::Policy;
use crate::run::RunPaths;
use crate::trunk_features::TrunkFeatures;

/// A split a model is scored on: the test split, or the validation images held out of the
/// training split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EvalSplit {
    /// The dataset's test split.
    Test,
    /// `data.val_fraction` of the training split, held out.
    Val,
}

impl EvalSplit {
    /// `"test"` or `"val"`, as in file names and `metrics.json`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            EvalSplit::Test => "test",
            EvalSplit::Val => "val",
        }
    }

    /// The dataset split its images are in.
    pub(crate) fn dataset(self) -> Split {
        match self {
            EvalSplit::Test => Split::Test,
            EvalSplit::Val => Split::Train,
        }
    }

    /// Its image indices within [`EvalSplit::dataset`].
    pub(crate) fn indices(self, splits: &DataSplits) -> Vec<usize> {
        match self {
            EvalSplit::Test => splits.test_indices(),
            EvalSplit::Val => splits.val_indices.clone(),
        }
    }
}

impl From<SelectOn> for EvalSplit {
    fn from(s: SelectOn) -> Self {
        match s {
            SelectOn::Val => EvalSplit::Val,
            SelectOn::Test => EvalSplit::Test,
        }
    }
}

impl std::str::FromStr for EvalSplit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "test" => Ok(EvalSplit::Test),
            "val" => Ok(EvalSplit::Val),
            _ => Err(format!("{s:?}: expected test or val")),
        }
    }
}

/// Metric settings of a run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// What fairpo-metrics computes.
    pub metrics: MetricsConfig,
    /// Inference batch size.
    pub batch_size: usize,
}

impl Settings {
    /// From `[train]`.
    pub(crate) fn from_config(cfg: &RunConfig) -> Self {
        Self {
            metrics: MetricsConfig {
                threshold: cfg.train.threshold,
                samples: cfg.train.samples,
                zero_division: 0.0,
                per_batch: cfg.train.per_batch,
                label_thresholds: None,
            },
            batch_size: cfg.train.eval_batch_size,
        }
    }
}

/// Scores, targets and metrics of one split.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Probabilities [N,T].
    pub scores: Matrix<f32>,
    /// Targets [N,T].
    pub targets: Matrix<u8>,
    /// Metrics per group.
    pub report: MetricsReport,
}

impl Evaluation {
    /// The selection metric's value (`None` when undefined, e.g. no positives).
    pub fn select_value(&self, t: &TrainSettings) -> Option<f64> {
        let g = &self.report.groups;
        let gm = match t.select_group {
            Group::All => &g.all,
            Group::Privileged => &g.privileged,
            Group::NonPrivileged => &g.non_privileged,
        };
        match t.select_metric {
            SelectMetric::Map => gm.map,
            SelectMetric::SampleF1 => gm.sample_f1,
            SelectMetric::Emr => gm.emr,
            SelectMetric::Accuracy => gm.accuracy,
        }
    }
}

/// Scores `indices` of the loader's dataset with `policy` and computes the metrics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn evaluate_split<B: Backend>(
    hidden: &mut TrunkFeatures<B>,
    policy: &Policy<B>,
    loader: &BatchLoader,
    split: Split,
    indices: &[usize],
    partition: &Partition,
    settings: &Settings,
) -> Result<Evaluation> {
    let t = partition.num_labels();
    let mut acc = MetricsAccumulator::new(t);
    for item in hidden.batches(loader, split, indices, 0, settings.batch_size, None)? {
        let batch = item?;
        let targets = batch.targets;
        let logits = policy.forward(batch.hidden);
        let probs = probabilities(logits);
        acc.push(&probs, &targets).context("collecting scores")?;
    }
    let report = acc
        .finish(&partition.privileged, &settings.metrics)
        .context("computing metrics")?;
    let (scores, targets) = acc.into_matrices();
    Ok(Evaluation {
        scores,
        targets,
        report,
    })
}

/// `metrics.json` (and `eval-<split>.json`): the groups' metrics and how they were computed.
/// Written by [`write_metrics_json`], read back by the reports.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct MetricsFile {
    /// Metrics of all labels, P and P̄.
    pub(crate) groups: GroupsReport,
    /// The split scored (`test` or `val`).
    pub(crate) split: String,
    /// The split used for early stopping / checkpoint choice.
    #[serde(default)]
    pub(crate) selected_on: String,
    /// The selected epoch (0-based).
    #[serde(default)]
    pub(crate) best_epoch: Option<usize>,
    /// `whole split` or `mean over batches of N ...`.
    #[serde(default)]
    pub(crate) averaging: String,
    /// The sample set of the sample-based metrics.
    #[serde(default)]
    pub(crate) samples: String,
    /// Decision threshold.
    pub(crate) threshold: f64,
    /// Per-label thresholds, when they replaced `threshold` (`--thresholds val-f1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) label_thresholds: Option<Vec<f64>>,
    /// AP of each label (`None` without positives), in label order.
    #[serde(default)]
    pub(crate) per_label_ap: Vec<Option<f64>>,
    /// Label names.
    #[serde(default)]
    pub(crate) labels: Vec<String>,
    /// Indices of the privileged labels.
    #[serde(default)]
    pub(crate) privileged: Vec<usize>,
    /// `objective.method`.
    pub(crate) method: String,
    /// The run's name.
    pub(crate) run: String,
}

impl MetricsFile {
    /// Reads a metrics file written by [`write_metrics_json`].
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a fairpo metrics.json", path.display()))
    }
}

/// Writes `metrics.json`, `scores.npy`, `targets.npy` for the test evaluation.
pub(crate) fn write_outputs(
    paths: &RunPaths,
    test: &Evaluation,
    cfg: &RunConfig,
    best_epoch: Option<usize>,
    selected_on: &str,
) -> Result<()> {
    let partition = Partition::load(paths.partition())?;
    write_metrics_json(
        &paths.metrics(),
        test,
        cfg,
        &partition,
        best_epoch,
        selected_on,
        "test",
    )?;
    fairpo_io::write_npy_f32(paths.scores(), &test.scores)?;
    fairpo_io::write_npy_u8(paths.targets(), &test.targets)?;
    Ok(())
}

/// Writes a metrics JSON file for `split`.
pub(crate) fn write_metrics_json(
    path: &Path,
    e: &Evaluation,
    cfg: &RunConfig,
    partition: &Partition,
    best_epoch: Option<usize>,
    selected_on: &str,
    split: &str,
) -> Result<()> {
    let m = &e.report.details.settings;
    let file = MetricsFile {
        groups: e.report.groups.clone(),
        split: split.to_string(),
        selected_on: selected_on.to_string(),
        best_epoch,
        averaging: match m.per_batch {
            None => "whole split".into(),
            Some(n) => format!("mean over batches of {n} (released-code protocol, inflates mAP)"),
        },
        samples: m.samples.to_string(),
        threshold: m.threshold,
        label_thresholds: m.label_thresholds.clone(),
        per_label_ap: e.report.per_label_ap.clone(),
        labels: partition.labels.clone(),
        privileged: partition.privileged.clone(),
        method: format!("{:?}", cfg.objective.method).to_lowercase(),
        run: cfg.name.clone(),
    };
    fairpo_io::write_json_atomic(path, &file)?;
    Ok(())
}

/// Scores `[N,T]` (f32 probabilities) from logits.
pub(crate) fn probabilities<B: Backend>(logits: Tensor<B, 2>) -> Vec<f32> {
    burn::tensor::activation::sigmoid(logits)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}
