//! Computing the metrics of the three label groups from scores and targets.
//!
//! AP is computed once per label (it does not depend on the group) by sorting that
//! label's scores once, in parallel over labels; the sample-based metrics come from one
//! parallel pass over the rows that counts true/false positives and negatives per group.

use std::ops::Range;

use fairpo_io::Matrix;
use rayon::prelude::*;

use crate::ap::{average_precision_keys, key};
use crate::report::{GroupDetails, GroupMetrics, GroupsDetails, GroupsReport, ReportDetails};
use crate::{MetricsConfig, MetricsReport, PartitionError, SampleSet};

/// Why metrics could not be computed. Positions are 0-based.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Scores and targets have different shapes.
    #[error("shape mismatch: scores are {}x{} but targets are {}x{}", scores.0, scores.1, targets.0, targets.1)]
    ShapeMismatch {
        /// (rows, cols) of the scores.
        scores: (usize, usize),
        /// (rows, cols) of the targets.
        targets: (usize, usize),
    },
    /// There is nothing to score.
    #[error("empty input: {rows} samples x {cols} labels; need at least one of each")]
    Empty {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// A score is NaN or infinite.
    #[error("score {value} at row {row}, column {col} is not finite")]
    NonFinite {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A score is outside [0, 1] (see [`check_probabilities`]).
    #[error("score {value} at row {row}, column {col} is outside [0, 1]; scores must be probabilities (apply a sigmoid to logits first)")]
    NotProbability {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: f32,
    },
    /// A target is not 0 or 1.
    #[error("target {value} at row {row}, column {col}; expected 0 or 1")]
    Target {
        /// Row.
        row: usize,
        /// Column.
        col: usize,
        /// The value.
        value: u8,
    },
    /// The privileged indices do not fit the labels.
    #[error(transparent)]
    Privileged(#[from] PartitionError),
    /// An invalid [`MetricsConfig`].
    #[error("invalid metrics settings: {0}")]
    Config(String),
    /// A pushed batch does not consist of whole rows.
    #[error("batch of {scores} scores and {targets} targets is not a whole number of rows of {num_labels} labels, or the two differ")]
    Batch {
        /// Number of score values pushed.
        scores: usize,
        /// Number of target values pushed.
        targets: usize,
        /// Labels per row.
        num_labels: usize,
    },
}

/// Checks that every score is a probability in [0, 1] (finite).
///
/// [`evaluate`] itself accepts any finite scores (AP is rank-based), but a threshold of 0.5
/// only makes sense on probabilities, so tools that read saved scores call this first.
pub fn check_probabilities(scores: &Matrix<f32>) -> Result<(), MetricsError> {
    let cols = scores.cols.max(1);
    for (i, &v) in scores.data.iter().enumerate() {
        let (row, col) = (i / cols, i % cols);
        if !v.is_finite() {
            return Err(MetricsError::NonFinite { row, col, value: v });
        }
        if !(0.0..=1.0).contains(&v) {
            return Err(MetricsError::NotProbability { row, col, value: v });
        }
    }
    Ok(())
}

/// Computes mAP, sample F1, exact match and accuracy for all labels, the privileged labels
/// and the rest.
///
/// `scores` and `targets` are `[N, T]`; `privileged` holds label indices (any order, no
/// repeats). Scores must be finite; targets 0 or 1. See [`MetricsConfig`] for the options.
pub fn evaluate(
    scores: &Matrix<f32>,
    targets: &Matrix<u8>,
    privileged: &[usize],
    cfg: &MetricsConfig,
) -> Result<MetricsReport, MetricsError> {
    if scores.shape() != targets.shape() {
        return Err(MetricsError::ShapeMismatch {
            scores: scores.shape(),
            targets: targets.shape(),
        });
    }
    evaluate_slices(
        &scores.data,
        &targets.data,
        scores.rows,
        scores.cols,
        privileged,
        cfg,
    )
}

/// Collects scores and targets batch by batch, then computes the metrics once.
///
/// Holds the scores (4 bytes) and targets (1 byte) of every pushed sample, nothing more.
#[derive(Clone, Debug)]
pub struct MetricsAccumulator {
    num_labels: usize,
    scores: Vec<f32>,
    targets: Vec<u8>,
}

impl MetricsAccumulator {
    /// An empty accumulator for rows of `num_labels` labels.
    pub fn new(num_labels: usize) -> Self {
        Self {
            num_labels,
            scores: Vec::new(),
            targets: Vec::new(),
        }
    }

    /// Appends whole rows: `scores` and `targets` are row-major `[B, T]` slices.
    pub fn push(&mut self, scores: &[f32], targets: &[u8]) -> Result<(), MetricsError> {
        let t = self.num_labels;
        if scores.len() != targets.len() || t == 0 || !scores.len().is_multiple_of(t) {
            return Err(MetricsError::Batch {
                scores: scores.len(),
                targets: targets.len(),
                num_labels: t,
            });
        }
        self.scores.extend_from_slice(scores);
        self.targets.extend_from_slice(targets);
        Ok(())
    }

    /// Number of rows pushed so far.
    pub fn len(&self) -> usize {
        self.scores.len() / self.num_labels.max(1)
    }

    /// True when no row has been pushed.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Labels per row.
    pub fn num_labels(&self) -> usize {
        self.num_labels
    }

    /// Computes the metrics of everything pushed (same result as [`evaluate`] on the stacked rows).
    pub fn finish(
        &self,
        privileged: &[usize],
        cfg: &MetricsConfig,
    ) -> Result<MetricsReport, MetricsError> {
        evaluate_slices(
            &self.scores,
            &self.targets,
            self.len(),
            self.num_labels,
            privileged,
            cfg,
        )
    }

    /// The pushed rows as `(scores, targets)` matrices, e.g. to save them.
    pub fn into_matrices(self) -> (Matrix<f32>, Matrix<u8>) {
        let n = self.len();
        (
            Matrix::new(n, self.num_labels, self.scores),
            Matrix::new(n, self.num_labels, self.targets),
        )
    }
}

/// Per-group sums over scored samples, mergeable across row chunks.
#[derive(Clone, Copy, Debug, Default)]
struct SampleSums {
    f1: f64,
    counted: usize,
    exact: usize,
    wrong_cells: u64,
}

impl SampleSums {
    fn add(&mut self, o: &SampleSums) {
        self.f1 += o.f1;
        self.counted += o.counted;
        self.exact += o.exact;
        self.wrong_cells += o.wrong_cells;
    }
}

/// Group indices: 0 = all, 1 = privileged, 2 = non-privileged.
const GROUPS: usize = 3;

/// Rows per parallel chunk. Fixed, so floating-point sums are the same on any thread count.
const ROW_CHUNK: usize = 2048;

/// Sample-based sums over `rows`, for the three groups.
fn sample_sums(
    scores: &[f32],
    targets: &[u8],
    t: usize,
    rows: Range<usize>,
    is_priv: &[bool],
    cfg: &MetricsConfig,
) -> [SampleSums; GROUPS] {
    let thr: Vec<f32> = match &cfg.label_thresholds {
        Some(per_label) => per_label.iter().map(|&v| v as f32).collect(),
        None => vec![cfg.threshold as f32; t],
    };
    let mut sums = [SampleSums::default(); GROUPS];
    for r in rows {
        let s = &scores[r * t..(r + 1) * t];
        let y = &targets[r * t..(r + 1) * t];
        // [tp, fp, fn] for non-privileged (0) and privileged (1) labels.
        let mut c = [[0u32; 3]; 2];
        for j in 0..t {
            let pred = s[j] >= thr[j];
            let truth = y[j] != 0;
            let g = is_priv[j] as usize;
            c[g][0] += (pred && truth) as u32;
            c[g][1] += (pred && !truth) as u32;
            c[g][2] += (!pred && truth) as u32;
        }
        let all = [c[0][0] + c[1][0], c[0][1] + c[1][1], c[0][2] + c[1][2]];
        for (g, [tp, fp, fneg]) in [all, c[1], c[0]].into_iter().enumerate() {
            if cfg.samples == SampleSet::Positive && tp + fneg == 0 {
                continue;
            }
            let denom = 2 * tp + fp + fneg;
            let f1 = if denom == 0 {
                cfg.zero_division
            } else {
                2.0 * tp as f64 / denom as f64
            };
            let sg = &mut sums[g];
            sg.f1 += f1;
            sg.counted += 1;
            sg.exact += (fp + fneg == 0) as usize;
            sg.wrong_cells += (fp + fneg) as u64;
        }
    }
    sums
}

/// [`sample_sums`] over all rows, in parallel over fixed chunks, merged in order.
fn sample_sums_parallel(
    scores: &[f32],
    targets: &[u8],
    n: usize,
    t: usize,
    is_priv: &[bool],
    cfg: &MetricsConfig,
) -> [SampleSums; GROUPS] {
    let chunks: Vec<[SampleSums; GROUPS]> = (0..n.div_ceil(ROW_CHUNK))
        .into_par_iter()
        .map(|c| {
            let rows = c * ROW_CHUNK..((c + 1) * ROW_CHUNK).min(n);
            sample_sums(scores, targets, t, rows, is_priv, cfg)
        })
        .collect();
    let mut total = [SampleSums::default(); GROUPS];
    for chunk in &chunks {
        for g in 0..GROUPS {
            total[g].add(&chunk[g]);
        }
    }
    total
}

/// AP of label `j` over `rows`.
fn label_ap(scores: &[f32], targets: &[u8], t: usize, rows: Range<usize>, j: usize) -> Option<f64> {
    let mut keys: Vec<u64> = rows
        .map(|r| key(scores[r * t + j], targets[r * t + j]))
        .collect();
    average_precision_keys(&mut keys)
}

/// AP of every label over all rows.
///
/// The keys are first transposed into one column per label, a block of rows at a time (so
/// reads stay sequential and each row block's writes stay in cache), then each column is
/// sorted and walked in parallel.
fn all_label_ap(scores: &[f32], targets: &[u8], n: usize, t: usize) -> Vec<Option<f64>> {
    const BLOCK: usize = 256;
    let mut keys = vec![0u64; n * t];
    // Parallel over row blocks: each block writes a disjoint `rows` slice of every column.
    let cols: Vec<&mut [u64]> = keys.chunks_mut(n).collect();
    let mut blocks: Vec<Vec<&mut [u64]>> = (0..n.div_ceil(BLOCK))
        .map(|_| Vec::with_capacity(t))
        .collect();
    for col in cols {
        for (b, part) in col.chunks_mut(BLOCK).enumerate() {
            blocks[b].push(part);
        }
    }
    blocks
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut parts)| {
            let r0 = b * BLOCK;
            for (k, r) in (r0..(r0 + BLOCK).min(n)).enumerate() {
                let s = &scores[r * t..(r + 1) * t];
                let y = &targets[r * t..(r + 1) * t];
                for j in 0..t {
                    parts[j][k] = key(s[j], y[j]);
                }
            }
        });
    keys.par_chunks_mut(n).map(average_precision_keys).collect()
}

/// Mean of the defined APs of `labels`, and how many were defined.
fn mean_ap(ap: &[Option<f64>], labels: &[usize]) -> (Option<f64>, usize) {
    let vals: Vec<f64> = labels.iter().filter_map(|&j| ap[j]).collect();
    if vals.is_empty() {
        (None, 0)
    } else {
        (
            Some(vals.iter().sum::<f64>() / vals.len() as f64),
            vals.len(),
        )
    }
}

/// `(sample_f1, emr, accuracy)` from sums over a group of `group_size` labels.
fn sample_metrics(s: &SampleSums, group_size: usize) -> (Option<f64>, Option<f64>, Option<f64>) {
    if s.counted == 0 || group_size == 0 {
        return (None, None, None);
    }
    let n = s.counted as f64;
    (
        Some(s.f1 / n),
        Some(s.exact as f64 / n),
        Some(1.0 - s.wrong_cells as f64 / (n * group_size as f64)),
    )
}

fn evaluate_slices(
    scores: &[f32],
    targets: &[u8],
    n: usize,
    t: usize,
    privileged: &[usize],
    cfg: &MetricsConfig,
) -> Result<MetricsReport, MetricsError> {
    cfg.validate().map_err(MetricsError::Config)?;
    if n == 0 || t == 0 {
        return Err(MetricsError::Empty { rows: n, cols: t });
    }
    if let Some(per_label) = &cfg.label_thresholds {
        if per_label.len() != t {
            return Err(MetricsError::Config(format!(
                "{} label_thresholds for {t} labels",
                per_label.len()
            )));
        }
    }
    // Matrix fields are public; an inconsistent one is a programming error, not bad input.
    assert!(
        scores.len() == n * t && targets.len() == n * t,
        "inconsistent Matrix: {} scores, {} targets for {n}x{t}",
        scores.len(),
        targets.len()
    );
    if let Some(i) = scores.iter().position(|v| !v.is_finite()) {
        return Err(MetricsError::NonFinite {
            row: i / t,
            col: i % t,
            value: scores[i],
        });
    }
    if let Some(i) = targets.iter().position(|&v| v > 1) {
        return Err(MetricsError::Target {
            row: i / t,
            col: i % t,
            value: targets[i],
        });
    }
    let privileged = crate::validate_privileged(privileged, t)?;
    let mut is_priv = vec![false; t];
    for &j in &privileged {
        is_priv[j] = true;
    }
    let group_labels: [Vec<usize>; GROUPS] = [
        (0..t).collect(),
        privileged.clone(),
        (0..t).filter(|&j| !is_priv[j]).collect(),
    ];

    let per_label_ap = all_label_ap(scores, targets, n, t);

    let metrics: Vec<GroupMetrics> = match cfg.per_batch {
        None => {
            let sums = sample_sums_parallel(scores, targets, n, t, &is_priv, cfg);
            (0..GROUPS)
                .map(|g| {
                    let labels = &group_labels[g];
                    let (map, labels_scored) = mean_ap(&per_label_ap, labels);
                    let (sample_f1, emr, accuracy) = sample_metrics(&sums[g], labels.len());
                    GroupMetrics {
                        map,
                        sample_f1,
                        emr,
                        accuracy,
                        labels_scored,
                        samples_scored: if labels.is_empty() {
                            0
                        } else {
                            sums[g].counted
                        },
                    }
                })
                .collect()
        }
        Some(b) => per_batch_metrics(
            scores,
            targets,
            n,
            t,
            b,
            &is_priv,
            &group_labels,
            &per_label_ap,
            cfg,
        ),
    };

    let details = |g: usize| GroupDetails {
        labels: group_labels[g].len(),
        labels_without_positives: group_labels[g]
            .iter()
            .copied()
            .filter(|&j| per_label_ap[j].is_none())
            .collect(),
    };
    let mut it = metrics.into_iter();
    let groups = GroupsReport {
        all: it.next().expect("3 groups"),
        privileged: it.next().expect("3 groups"),
        non_privileged: it.next().expect("3 groups"),
    };
    let groups_details = GroupsDetails {
        all: details(0),
        privileged: details(1),
        non_privileged: details(2),
    };
    Ok(MetricsReport {
        groups,
        per_label_ap,
        details: ReportDetails {
            num_samples: n,
            num_labels: t,
            privileged,
            settings: cfg.clone(),
            groups: groups_details,
        },
    })
}

/// The released code's evaluation: every metric computed on consecutive batches of `b`
/// rows and averaged weighted by batch size; a batch whose group has no label with a
/// positive contributes mAP 0 (what that code's `_compute_map` returns).
#[allow(clippy::too_many_arguments)]
fn per_batch_metrics(
    scores: &[f32],
    targets: &[u8],
    n: usize,
    t: usize,
    b: usize,
    is_priv: &[bool],
    group_labels: &[Vec<usize>; GROUPS],
    whole_split_ap: &[Option<f64>],
    cfg: &MetricsConfig,
) -> Vec<GroupMetrics> {
    // Per batch: (rows, [weighted map, f1, emr, acc] per group).
    let batches: Vec<(usize, [[f64; 4]; GROUPS])> = (0..n.div_ceil(b))
        .into_par_iter()
        .map(|k| {
            let rows = k * b..((k + 1) * b).min(n);
            let len = rows.len();
            let ap: Vec<Option<f64>> = (0..t)
                .map(|j| label_ap(scores, targets, t, rows.clone(), j))
                .collect();
            let sums = sample_sums(scores, targets, t, rows, is_priv, cfg);
            let mut out = [[0.0; 4]; GROUPS];
            for g in 0..GROUPS {
                let (map, _) = mean_ap(&ap, &group_labels[g]);
                let (f1, emr, acc) = sample_metrics(&sums[g], group_labels[g].len());
                out[g] = [
                    map.unwrap_or(0.0),
                    f1.unwrap_or(f64::NAN),
                    emr.unwrap_or(f64::NAN),
                    acc.unwrap_or(f64::NAN),
                ];
            }
            (len, out)
        })
        .collect();
    (0..GROUPS)
        .map(|g| {
            let labels = &group_labels[g];
            let (_, labels_scored) = mean_ap(whole_split_ap, labels);
            if labels.is_empty() {
                return GroupMetrics {
                    map: None,
                    sample_f1: None,
                    emr: None,
                    accuracy: None,
                    labels_scored: 0,
                    samples_scored: 0,
                };
            }
            let mut acc = [0.0f64; 4];
            for (len, vals) in &batches {
                for m in 0..4 {
                    acc[m] += vals[g][m] * *len as f64;
                }
            }
            let avg = |m: usize| Some(acc[m] / n as f64);
            GroupMetrics {
                map: avg(0),
                sample_f1: avg(1),
                emr: avg(2),
                accuracy: avg(3),
                labels_scored,
                samples_scored: n,
            }
        })
        .collect()
}
