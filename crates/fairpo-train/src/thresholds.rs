//! Per-label decision thresholds chosen on a run's validation split, kept in the run folder
//! as `thresholds.json` at the end of training, and applied by `fairpo eval --thresholds
//! val-f1` and `fairpo predict --thresholds val-f1`.
//!
//! Each label's threshold is the score that maximises its F1 on the validation images
//! (`fairpo_metrics::best_f1_thresholds`); a label without a positive there keeps the run's
//! `train.threshold`, and the file says so.

use anyhow::{bail, Context, Result};
use fairpo_io::Matrix;
use serde::{Deserialize, Serialize};

use crate::run::RunPaths;

/// Which thresholds `fairpo eval` and `fairpo predict` apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ThresholdRule {
    /// Per label, the threshold that maximised its F1 on the run's validation split
    /// (`thresholds.json`).
    ValF1,
}

/// `thresholds.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct ValThresholds {
    /// How the thresholds were chosen.
    pub(crate) rule: String,
    /// The split they were chosen on and its size.
    pub(crate) split: String,
    pub(crate) images: usize,
    /// The threshold of labels without a positive in that split.
    pub(crate) fallback: f64,
    /// One entry per label, in the run's label order.
    pub(crate) labels: Vec<LabelThreshold>,
}

/// One label's threshold.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct LabelThreshold {
    pub(crate) name: String,
    /// Predict the label when its probability is `>=` this.
    pub(crate) threshold: f64,
    /// The label's F1 on the split with this threshold; `None`: no positive there, so
    /// `threshold` is the fallback.
    pub(crate) val_f1: Option<f64>,
}

impl ValThresholds {
    /// Chooses every label's threshold on `scores` / `targets` of `split`.
    pub(crate) fn choose(
        scores: &Matrix<f32>,
        targets: &Matrix<u8>,
        labels: &[String],
        split: &str,
        fallback: f64,
    ) -> Result<Self> {
        let chosen = fairpo_metrics::best_f1_thresholds(scores, targets)?;
        anyhow::ensure!(
            chosen.len() == labels.len(),
            "scores and labels differ in width"
        );
        Ok(Self {
            rule: "per label, the score that maximises the label's F1 (score >= threshold)".into(),
            split: split.into(),
            images: scores.rows,
            fallback,
            labels: labels
                .iter()
                .zip(chosen)
                .map(|(name, c)| LabelThreshold {
                    name: name.clone(),
                    threshold: c.map_or(fallback, |c| c.threshold),
                    val_f1: c.map(|c| c.f1),
                })
                .collect(),
        })
    }

    pub(crate) fn write(&self, paths: &RunPaths) -> Result<()> {
        fairpo_io::write_json_atomic(paths.thresholds(), self)?;
        Ok(())
    }

    /// The run's thresholds in label order; an error says why there are none or why they do
    /// not fit `labels`.
    pub(crate) fn read(paths: &RunPaths, labels: &[String]) -> Result<Vec<f64>> {
        let path = paths.thresholds();
        if !path.is_file() {
            bail!(
                "{} is missing: the run was trained without a validation split (data.val_fraction = 0 or data.select_on = \"test\") or before thresholds were kept; use --threshold instead",
                path.display()
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let t: Self = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a thresholds file", path.display()))?;
        let names: Vec<&str> = t.labels.iter().map(|l| l.name.as_str()).collect();
        if names != labels.iter().map(String::as_str).collect::<Vec<_>>() {
            bail!(
                "{}: its labels are not the run's ({} there, {} in partition.json)",
                path.display(),
                names.len(),
                labels.len()
            );
        }
        if let Some(l) = t
            .labels
            .iter()
            .find(|l| !(0.0..=1.0).contains(&l.threshold))
        {
            bail!(
                "{}: threshold {} of {:?} is not a probability",
                path.display(),
                l.threshold,
                l.name
            );
        }
        Ok(t.labels.iter().map(|l| l.threshold).collect())
    }
}
