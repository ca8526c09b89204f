//! The in-memory form of one split of a dataset, shared by every loader.

use std::path::{Path, PathBuf};

use fairpo_io::Matrix;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// What a loader does with images that are empty or missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Drop images that have none of the labels (default: keep them with an all-zero row).
    pub drop_empty: bool,
    /// Skip listed images whose file is missing on disk (default: error).
    pub skip_missing: bool,
}

/// Counts of what a loader kept and dropped; logged by the loader and kept for run summaries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Images listed by the annotation / list files.
    pub listed: usize,
    /// Images kept in the split.
    pub kept: usize,
    /// Kept images with no label (all-zero rows).
    pub empty_kept: usize,
    /// Images dropped because they had no label (`drop_empty`).
    pub empty_dropped: usize,
    /// Listed images missing on disk and skipped (`skip_missing`).
    pub missing_skipped: usize,
    /// Up to 10 of the missing files, for the log.
    pub missing_examples: Vec<PathBuf>,
    /// Label assignments that repeated a label already on the same image (merged, not an error:
    /// COCO has one annotation per object, so several per category are normal).
    pub duplicate_labels: usize,
    /// Seconds spent reading and parsing the annotation files.
    pub parse_seconds: f64,
}

/// One split of a dataset: image paths, a `[N,T]` 0/1 target matrix and the label names.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Human-readable name of the split, e.g. `train2014`.
    pub split: String,
    /// Label names in their fixed order (column order of `targets`).
    pub labels: Vec<String>,
    /// Image file of each row.
    pub paths: Vec<PathBuf>,
    /// Row-major `[N,T]` targets, 0 or 1.
    pub targets: Matrix<u8>,
    /// What was kept and dropped while loading.
    pub report: LoadReport,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// True when the split has no image.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Number of labels T.
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    /// The target row of image `i`.
    pub fn target_row(&self, i: usize) -> &[u8] {
        let t = self.targets.cols;
        &self.targets.data[i * t..(i + 1) * t]
    }

    /// Number of images carrying each label.
    pub fn label_counts(&self) -> Vec<u64> {
        label_counts(&self.targets)
    }
}

/// Number of rows with a 1 in each column of a `[N,T]` 0/1 matrix.
pub fn label_counts(targets: &Matrix<u8>) -> Vec<u64> {
    let mut counts = vec![0u64; targets.cols];
    if targets.cols == 0 {
        return counts;
    }
    for row in targets.data.chunks_exact(targets.cols) {
        for (c, &v) in counts.iter_mut().zip(row) {
            *c += u64::from(v != 0);
        }
    }
    counts
}

/// Rows as a loader collects them before the empty/missing policy is applied.
pub(crate) struct RawSplit {
    pub split: String,
    pub labels: Vec<String>,
    pub paths: Vec<PathBuf>,
    /// Row-major `[N,T]`.
    pub rows: Vec<u8>,
    pub duplicate_labels: usize,
    pub parse_seconds: f64,
}

impl RawSplit {
    /// Applies `drop_empty` / `skip_missing`, checks files exist, logs the report.
    pub(crate) fn finish(self, opts: &LoadOptions) -> Result<Dataset> {
        let t = self.labels.len();
        let listed = self.paths.len();
        let mut report = LoadReport {
            listed,
            duplicate_labels: self.duplicate_labels,
            parse_seconds: self.parse_seconds,
            ..LoadReport::default()
        };
        let mut missing_count = 0usize;
        let mut first_missing: Option<PathBuf> = None;
        let mut paths = Vec::with_capacity(listed);
        let mut data = Vec::with_capacity(self.rows.len());
        for (i, path) in self.paths.into_iter().enumerate() {
            let row = &self.rows[i * t..(i + 1) * t];
            let empty = row.iter().all(|&v| v == 0);
            if !path.is_file() {
                missing_count += 1;
                if first_missing.is_none() {
                    first_missing = Some(path.clone());
                }
                if report.missing_examples.len() < 10 {
                    report.missing_examples.push(path.clone());
                }
                continue;
            }
            if empty {
                if opts.drop_empty {
                    report.empty_dropped += 1;
                    continue;
                }
                report.empty_kept += 1;
            }
            paths.push(path);
            data.extend_from_slice(row);
        }
        if missing_count > 0 {
            if !opts.skip_missing {
                return Err(DataError::MissingImages {
                    count: missing_count,
                    first: first_missing.unwrap_or_default(),
                });
            }
            report.missing_skipped = missing_count;
            tracing::warn!(
                split = %self.split,
                "skipped {missing_count} listed image(s) missing on disk, e.g. {}",
                report.missing_examples[0].display()
            );
        }
        report.kept = paths.len();
        tracing::info!(
            split = %self.split,
            listed = report.listed,
            kept = report.kept,
            empty_kept = report.empty_kept,
            empty_dropped = report.empty_dropped,
            missing_skipped = report.missing_skipped,
            parse_seconds = format_args!("{:.2}", report.parse_seconds),
            "loaded {} images with {} labels",
            report.kept,
            t
        );
        Ok(Dataset {
            split: self.split,
            labels: self.labels,
            targets: Matrix {
                rows: paths.len(),
                cols: t,
                data,
            },
            paths,
            report,
        })
    }
}

/// Reads a whole text file, naming it on error.
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String> {
    if !path.exists() {
        return Err(DataError::MissingFile {
            path: path.to_path_buf(),
            what: what.to_string(),
        });
    }
    std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))
}

/// Fails with [`DataError::MissingDir`] unless `path` is a folder.
pub(crate) fn require_dir(path: &Path, what: &str) -> Result<()> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(DataError::MissingDir {
            path: path.to_path_buf(),
            what: what.to_string(),
        })
    }
}

/// Reads a label-name file: one name per line, surrounding whitespace trimmed, blank lines
/// skipped, duplicates rejected.
pub(crate) fn read_label_names(path: &Path, what: &str) -> Result<Vec<String>> {
    let text = read_text(path, what)?;
    let mut names: Vec<String> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() {
            continue;
        }
        if let Some(prev) = seen.insert(name.to_string(), i + 1) {
            return Err(DataError::parse(
                path,
                i + 1,
                format!("label {name:?} already listed on line {prev}"),
            ));
        }
        names.push(name.to_string());
    }
    if names.is_empty() {
        return Err(DataError::Inconsistent {
            path: path.to_path_buf(),
            message: "no label names".into(),
        });
    }
    Ok(names)
}
