//! Inference over a split and the metrics of its scores; the run's result files.

use anyhow::{Context, Result};
use burn::prelude::*;
use fairpo_data::BatchLoader;
use fairpo_io::Matrix;
use fairpo_metrics::{MetricsAccumulator, MetricsConfig, MetricsReport, Partition};
use serde::Serialize;

use crate::config::{Group, RunConfig, SelectMetric, TrainSettings};
use crate::trunk_features::TrunkFeatures;
use crate::policy::Policy;
use crate::run::RunPaths;

/// Metric settings of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// What fairpo-metrics computes.
    pub metrics: MetricsConfig,
    /// Inference batch size.
    pub batch_size: usize,
}

impl Settings {
    /// From `[train]`.
    pub fn from_config(cfg: &RunConfig) -> Self {
        Self {
            metrics: MetricsConfig {
                threshold: cfg.train.threshold,
                samples: cfg.train.samples,
                zero_division: 0.0,
                per_batch: cfg.train.per_batch,
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
pub fn evaluate_split<B: Backend>(
    hidden: &mut TrunkFeatures<B>,
    policy: &Policy<B>,
    loader: &BatchLoader,
    split_key: &str,
    indices: &[usize],
    partition: &Partition,
    settings: &Settings,
) -> Result<Evaluation> {
    let t = partition.num_labels();
    let mut acc = MetricsAccumulator::new(t);
    for item in hidden.batches(loader, split_key, indices, 0, settings.batch_size)? {
        let (h, targets) = item?;
        let logits = policy.forward(h);
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

/// `metrics.json`: DESIGN.md's `{"groups": ...}` plus how they were computed.
#[derive(Serialize, Debug)]
struct MetricsFile<'a> {
    groups: &'a fairpo_metrics::GroupsReport,
    split: &'a str,
    /// Split used for early stopping / checkpoint choice.
    selected_on: &'a str,
    best_epoch: Option<usize>,
    /// `whole split` or `per batch of N` and the sample set.
    averaging: String,
    samples: String,
    threshold: f64,
    per_label_ap: &'a [Option<f64>],
    labels: &'a [String],
    privileged: &'a [usize],
    method: String,
    run: &'a str,
}

/// Writes `metrics.json`, `scores.npy`, `targets.npy` for the test evaluation.
pub fn write_outputs(
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
pub fn write_metrics_json(
    path: &std::path::Path,
    e: &Evaluation,
    cfg: &RunConfig,
    partition: &Partition,
    best_epoch: Option<usize>,
    selected_on: &str,
    split: &str,
) -> Result<()> {
    let m = &e.report.details.settings;
    let file = MetricsFile {
        groups: &e.report.groups,
        split,
        selected_on,
        best_epoch,
        averaging: match m.per_batch {
            None => "whole split".into(),
            Some(n) => format!("mean over batches of {n} (released-code protocol, inflates mAP)"),
        },
        samples: m.samples.to_string(),
        threshold: m.threshold,
        per_label_ap: &e.report.per_label_ap,
        labels: &partition.labels,
        privileged: &partition.privileged,
        method: format!("{:?}", cfg.objective.method).to_lowercase(),
        run: &cfg.name,
    };
    fairpo_io::write_json_atomic(path, &file)?;
    Ok(())
}

/// Scores `[N,T]` (f32 probabilities) from logits.
pub fn probabilities<B: Backend>(logits: Tensor<B, 2>) -> Vec<f32> {
    burn::tensor::activation::sigmoid(logits)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}
