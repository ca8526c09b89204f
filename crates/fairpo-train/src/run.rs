//! The run folder: file names, the run summary (`run.json`) and the per-step/per-epoch
//! log (`log.jsonl`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Paths of everything a run writes.
#[derive(Debug, Clone)]
pub(crate) struct RunPaths {
    /// The run folder.
    pub root: PathBuf,
}

impl RunPaths {
    /// Paths under `root`.
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// Resolved configuration.
    pub(crate) fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// Label partition.
    pub(crate) fn partition(&self) -> PathBuf {
        self.root.join("partition.json")
    }
    /// Run summary (architecture, trunk fingerprint, state).
    pub(crate) fn run_json(&self) -> PathBuf {
        self.root.join("run.json")
    }
    /// Per-step and per-epoch log.
    pub(crate) fn log(&self) -> PathBuf {
        self.root.join("log.jsonl")
    }
    /// Checkpoint folder.
    pub(crate) fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// Latest resumable checkpoint.
    pub(crate) fn last_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("last.ckpt")
    }
    /// Best policy so far (by the validation selection metric).
    pub(crate) fn best_checkpoint(&self) -> PathBuf {
        self.checkpoints().join("best.ckpt")
    }
    /// The finished model (whole backbone + heads, from the best epoch).
    pub(crate) fn model(&self) -> PathBuf {
        self.root.join("model.ckpt")
    }
    /// Per-label thresholds chosen on the validation split (`thresholds.rs`).
    pub(crate) fn thresholds(&self) -> PathBuf {
        self.root.join("thresholds.json")
    }
    /// Test metrics.
    pub(crate) fn metrics(&self) -> PathBuf {
        self.root.join("metrics.json")
    }
    /// Test scores (probabilities) [N,T].
    pub(crate) fn scores(&self) -> PathBuf {
        self.root.join("scores.npy")
    }
    /// Test targets [N,T].
    pub(crate) fn targets(&self) -> PathBuf {
        self.root.join("targets.npy")
    }
    /// Markdown report.
    pub(crate) fn report(&self) -> PathBuf {
        self.root.join("report.md")
    }
    /// Plot folder.
    pub(crate) fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }
}

/// `run.json`: what a later run needs to use this one as a reference or initialisation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct RunSummary {
    /// Run name.
    pub name: String,
    /// Objective method (`bce`, `cpo`, ...).
    pub method: String,
    /// Label names in order.
    pub labels: Vec<String>,
    /// Privileged label indices.
    pub privileged: Vec<usize>,
    /// Backbone architecture.
    pub vit: fairpo_vit::ViTConfig,
    /// Encoder layers trained (k).
    pub trainable_layers: usize,
    /// Fingerprint of the frozen trunk (see `model_file::trunk_fingerprint`); for k = L it only
    /// says "no frozen parameters".
    pub trunk_fingerprint: String,
    /// Where the backbone came from (HF folder, scratch, or the run it was initialised from).
    pub backbone_source: String,
    /// Reference run used, if any.
    pub reference: Option<String>,
    /// Whether training finished and `model.ckpt`/`metrics.json` exist.
    pub finished: bool,
    /// Epoch (0-based) of the selected model.
    pub best_epoch: Option<usize>,
    /// Selection split (`val` or `test`).
    pub selected_on: String,
    /// Wall-clock training seconds (all sessions of a resumed run added up).
    pub train_seconds: f64,
    /// The fairpo build that trained it: version and commit (absent in older runs).
    #[serde(default)]
    pub build: String,
    /// SHA-256 of the run's `config.toml` as written.
    #[serde(default)]
    pub config_sha256: String,
    /// The device it trained on.
    #[serde(default)]
    pub device: String,
}

/// This build: `fairpo <version> (commit <hash>)`.
pub(crate) fn build_description() -> String {
    format!(
        "fairpo {} (commit {})",
        env!("CARGO_PKG_VERSION"),
        env!("FAIRPO_COMMIT")
    )
}

/// Appends JSON lines to `log.jsonl`, flushing each line; `truncate_to` cuts it back to
/// the length recorded in a checkpoint so a resumed run does not repeat lines.
#[derive(Debug)]
pub(crate) struct JsonLog {
    file: std::fs::File,
    len: u64,
}

impl JsonLog {
    /// Opens (creating) the log, truncated to `truncate_to` bytes.
    pub(crate) fn open(path: &Path, truncate_to: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        file.set_len(truncate_to)?;
        let mut log = Self {
            file,
            len: truncate_to,
        };
        use std::io::Seek;
        log.file.seek(std::io::SeekFrom::Start(truncate_to))?;
        Ok(log)
    }

    /// Writes one line.
    pub(crate) fn write<T: Serialize>(&mut self, value: &T) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.flush()?;
        self.len += line.len() as u64;
        Ok(())
    }

    /// Bytes written so far (the offset to store in a checkpoint).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// One optimiser step in `log.jsonl`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StepLine {
    /// Always `"step"`.
    pub kind: String,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Global step (1-based, after the update).
    pub step: u64,
    /// L_P.
    pub loss_privileged: f64,
    /// L_P̄.
    pub loss_non_privileged: f64,
    /// The loss that was backpropagated.
    pub loss: f64,
    /// Group weights used for this step [α_P, α_P̄] (`None` for methods without them).
    pub alpha: Option<Vec<f64>>,
    /// Objective diagnostics (pair counts, fallbacks).
    pub diagnostics: fairpo_objectives::Diagnostics,
}

/// One epoch's validation result in `log.jsonl`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EpochLine {
    /// Always `"epoch"`.
    pub kind: String,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Global step at the end of the epoch.
    pub step: u64,
    /// Split the metrics are on (`val` or `test`).
    pub split: String,
    /// mAP per group.
    pub map: GroupValues,
    /// Sample F1 per group.
    pub sample_f1: GroupValues,
    /// The selection metric's value.
    pub select_value: f64,
    /// Whether this epoch became the best.
    pub improved: bool,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Seconds spent in this epoch (training + validation).
    pub seconds: f64,
}

/// A metric for the three label groups (NaN-free: a group without scored labels is `None`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct GroupValues {
    /// All labels.
    pub all: Option<f64>,
    /// Privileged labels.
    pub privileged: Option<f64>,
    /// Non-privileged labels.
    pub non_privileged: Option<f64>,
}

/// The lines of a run's log, split by kind (unparseable lines are reported, not skipped
/// silently).
#[derive(Debug, Default)]
pub struct LogContents {
    /// Step lines.
    pub steps: Vec<StepLine>,
    /// Epoch lines.
    pub epochs: Vec<EpochLine>,
    /// Warning lines.
    pub warnings: Vec<WarningLine>,
}

/// Something the run noticed that its user should know (e.g. a collapsed group weight).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct WarningLine {
    /// Always `"warning"`.
    pub kind: String,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Global step.
    pub step: u64,
    /// What happened, its likely cause and what to change.
    pub message: String,
}

/// Reads `log.jsonl`.
pub fn read_log(path: &Path) -> Result<LogContents, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = LogContents::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: invalid JSON: {e}", path.display(), i + 1))?;
        let parse_err = |e: serde_json::Error| format!("{}:{}: {e}", path.display(), i + 1);
        match v.get("kind").and_then(|k| k.as_str()) {
            Some("step") => out
                .steps
                .push(serde_json::from_value(v).map_err(parse_err)?),
            Some("epoch") => out
                .epochs
                .push(serde_json::from_value(v).map_err(parse_err)?),
            Some("warning") => out
                .warnings
                .push(serde_json::from_value(v).map_err(parse_err)?),
            _ => {}
        }
    }
    Ok(out)
}

/// Reads a run's `run.json`.
pub(crate) fn read_summary(paths: &RunPaths) -> anyhow::Result<RunSummary> {
    use anyhow::Context;
    let p = paths.run_json();
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid run summary", p.display()))
}

/// Prepares the run folder for training: checks a `--resume` has a checkpoint, refuses to
/// clobber an existing run unless `overwrite`, and creates `checkpoints/`.
pub(crate) fn prepare_run_dir(
    paths: &RunPaths,
    resume: bool,
    overwrite: bool,
) -> anyhow::Result<()> {
    let exists = paths.root.exists()
        && std::fs::read_dir(&paths.root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
    if resume {
        if !paths.last_checkpoint().is_file() {
            anyhow::bail!(
                "--resume: {} has no checkpoint ({} is missing)",
                paths.root.display(),
                paths.last_checkpoint().display()
            );
        }
        return Ok(());
    }
    // A folder from a start that failed before its first checkpoint holds nothing to keep.
    let has_results = paths.last_checkpoint().is_file() || paths.metrics().is_file();
    if exists && !has_results && paths.config().is_file() {
        std::fs::remove_dir_all(&paths.root)
            .with_context(|| format!("removing {}", paths.root.display()))?;
    } else if exists {
        if !overwrite {
            anyhow::bail!(
                "run folder {} already exists; pass --resume to continue it or --overwrite to start over",
                paths.root.display()
            );
        }
        if !paths.config().is_file() {
            anyhow::bail!(
                "--overwrite: {} does not look like a run folder (no config.toml); refusing to delete it",
                paths.root.display()
            );
        }
        std::fs::remove_dir_all(&paths.root)
            .with_context(|| format!("removing {}", paths.root.display()))?;
    }
    std::fs::create_dir_all(paths.checkpoints())
        .with_context(|| format!("creating {}", paths.checkpoints().display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_truncates_to_checkpoint_offset_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.jsonl");
        let line = |step| StepLine {
            kind: "step".into(),
            epoch: 0,
            step,
            loss_privileged: 1.0,
            loss_non_privileged: 0.5,
            loss: 0.75,
            alpha: Some(vec![0.5, 0.5]),
            diagnostics: Default::default(),
        };
        let mut log = JsonLog::open(&p, 0).unwrap();
        log.write(&line(1)).unwrap();
        let offset = log.len();
        log.write(&line(2)).unwrap();
        drop(log);
        assert_eq!(read_log(&p).unwrap().steps.len(), 2);
        let mut log = JsonLog::open(&p, offset).unwrap();
        log.write(&line(3)).unwrap();
        drop(log);
        let steps: Vec<u64> = read_log(&p).unwrap().steps.iter().map(|s| s.step).collect();
        assert_eq!(steps, vec![1, 3]);
        std::fs::write(&p, "{\"kind\":\"step\"}\n").unwrap();
        let err = read_log(&p).unwrap_err();
        assert!(err.contains("log.jsonl:1"), "{err}");
    }
}
