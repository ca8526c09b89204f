//! `fairpo metrics`: the paper's metrics per label group from saved scores and targets.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args, ValueEnum};
use fairpo_io::Matrix;
use fairpo_metrics::{
    check_probabilities, evaluate, validate_privileged, MetricsConfig, MetricsError, Partition,
    SampleSet,
};

/// Which samples count for sample F1, exact match and accuracy.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SamplesArg {
    /// Every sample (scikit-learn semantics, with --zero-division).
    All,
    /// Only samples with at least one positive label in the group.
    Positive,
}

/// Arguments of `fairpo metrics`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("groups").required(true).args(["privileged", "partition"])))]
pub struct MetricsArgs {
    /// Scores [N,T]: probabilities in [0,1], f32 or f64 .npy.
    #[arg(long, value_name = "S.npy")]
    pub scores: PathBuf,
    /// Targets [N,T]: 0/1 as u8, bool, integer, f32 or f64 .npy.
    #[arg(long, value_name = "Y.npy")]
    pub targets: PathBuf,
    /// Privileged label indices, comma-separated (e.g. 1,5,9).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub privileged: Option<Vec<usize>>,
    /// A run's partition.json giving the privileged labels.
    #[arg(long, value_name = "P.json")]
    pub partition: Option<PathBuf>,
    /// A label is predicted positive when its score is >= this threshold.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// Samples counted by sample F1, exact match and accuracy.
    #[arg(long, value_enum, default_value_t = SamplesArg::All)]
    pub samples: SamplesArg,
    /// For comparison with the paper's released code only: average every metric over
    /// consecutive batches of N rows (it used 32), which inflates mAP.
    #[arg(long, value_name = "N")]
    pub per_batch: Option<usize>,
    /// Sample F1 of a sample with no true and no predicted label in the group (0 or 1).
    #[arg(long, default_value_t = 0.0)]
    pub zero_division: f64,
    /// Print one JSON object instead of the table: `groups` (all, privileged,
    /// non_privileged, each with map, sample_f1, emr, accuracy as fractions in [0,1] or
    /// null when undefined, labels_scored, samples_scored), plus `per_label_ap` and
    /// `details` (settings used, skipped labels).
    #[arg(long)]
    pub json: bool,
}

/// Reads the inputs, checks them, computes the metrics and prints them.
pub fn run(args: MetricsArgs) -> Result<()> {
    let cfg = MetricsConfig {
        threshold: args.threshold,
        samples: match args.samples {
            SamplesArg::All => SampleSet::All,
            SamplesArg::Positive => SampleSet::Positive,
        },
        zero_division: args.zero_division,
        per_batch: args.per_batch,
        label_thresholds: None,
    };
    if let Err(msg) = cfg.validate() {
        bail!("invalid option: {msg}");
    }
    let scores = fairpo_io::read_npy_scores(&args.scores)?;
    let targets = fairpo_io::read_npy_targets(&args.targets)?;
    check_inputs(&args.scores, &scores, &args.targets, &targets)?;
    let t = scores.cols;

    let privileged = match (&args.privileged, &args.partition) {
        (Some(list), _) => validate_privileged(list, t).context("--privileged")?,
        (None, Some(path)) => {
            let p = Partition::load(path)?;
            if p.num_labels() != t {
                bail!(
                    "{}: partition has {} labels but {} has {t} columns",
                    path.display(),
                    p.num_labels(),
                    args.scores.display()
                );
            }
            p.privileged
        }
        (None, None) => unreachable!("clap requires --privileged or --partition"),
    };
    tracing::debug!(
        rows = scores.rows,
        labels = t,
        privileged = privileged.len(),
        "computing metrics"
    );

    let report = evaluate(&scores, &targets, &privileged, &cfg).context("computing metrics")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

/// The checks `evaluate` cannot phrase in terms of files: emptiness, shapes, probabilities.
fn check_inputs(
    scores_path: &Path,
    scores: &Matrix<f32>,
    targets_path: &Path,
    targets: &Matrix<u8>,
) -> Result<()> {
    for (path, shape) in [
        (scores_path, scores.shape()),
        (targets_path, targets.shape()),
    ] {
        if shape.0 == 0 || shape.1 == 0 {
            bail!(
                "{}: empty array of shape [{}, {}]; need at least one sample and one label",
                path.display(),
                shape.0,
                shape.1
            );
        }
    }
    if scores.shape() != targets.shape() {
        bail!(
            "shapes differ: {} is [{}, {}] but {} is [{}, {}]",
            scores_path.display(),
            scores.rows,
            scores.cols,
            targets_path.display(),
            targets.rows,
            targets.cols
        );
    }
    check_probabilities(scores).map_err(|e| match e {
        MetricsError::NonFinite { .. } | MetricsError::NotProbability { .. } => {
            anyhow::anyhow!("{}: {e}", scores_path.display())
        }
        other => anyhow::Error::new(other),
    })
}
