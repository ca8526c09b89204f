//! `fairpo predict`: a finished run's selected model on images that need no labels, one row
//! per image (README, "Commands").

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use fairpo_data::Preprocessor;

use crate::device::{run_on, BackendTask, DeviceSpec};
use crate::eval::probabilities;
use crate::features::{list_images, load_batch};
use crate::setup::FinishedRun;
use crate::thresholds::{ThresholdRule, ValThresholds};

/// Arguments of `fairpo predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The run folder (e.g. runs/coco-cpo).
    #[arg(long)]
    pub run: PathBuf,
    /// A folder of .jpg/.jpeg/.png images (not recursive) or a list file (one path per line).
    #[arg(long)]
    pub images: PathBuf,
    /// Output file: `.csv` (path, labels, one probability column per label) or `.jsonl`.
    #[arg(long)]
    pub out: PathBuf,
    /// A label is predicted when its probability is at least this.
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f64,
    /// `val-f1`: each label's own threshold, chosen on the run's validation split at the end
    /// of training (`thresholds.json`), instead of `--threshold`.
    #[arg(long, value_enum, conflicts_with = "threshold")]
    pub thresholds: Option<ThresholdRule>,
    /// Keep at most the K most probable of the labels above the threshold.
    #[arg(long)]
    pub top: Option<usize>,
    /// Images per forward pass (default: the run's `train.eval_batch_size`).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Compute device: `cpu` or `cuda[:N]`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Report unreadable images and go on (default: the first one is an error).
    #[arg(long)]
    pub skip_unreadable: bool,
}

/// Output format, from the file extension.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Csv,
    JsonLines,
}

impl Format {
    fn of(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Ok(Self::Csv),
            Some("jsonl") => Ok(Self::JsonLines),
            _ => bail!(
                "--out {}: expected a .csv or .jsonl file name",
                path.display()
            ),
        }
    }
}

/// Runs `fairpo predict`.
pub fn run(args: PredictArgs) -> Result<()> {
    let format = Format::of(&args.out)?;
    if !(0.0..=1.0).contains(&args.threshold) {
        bail!(
            "--threshold {}: expected a probability in [0, 1]",
            args.threshold
        );
    }
    if args.top == Some(0) {
        bail!("--top 0 would predict nothing: give K >= 1 or leave it out");
    }
    let run = FinishedRun::open(&args.run)?;
    let images = list_images(&args.images)?;
    let spec: DeviceSpec = args.device.parse()?;
    let predictions = run_on(
        &spec,
        PredictTask {
            run: &run,
            images: &images,
            batch: args.batch.unwrap_or(run.cfg.train.eval_batch_size),
            skip_unreadable: args.skip_unreadable,
        },
    )??;
    let labels = &run.partition.labels;
    let thresholds = match args.thresholds {
        Some(ThresholdRule::ValF1) => ValThresholds::read(&run.paths, labels)?,
        None => vec![args.threshold; labels.len()],
    };
    let text = match format {
        Format::Csv => to_csv(labels, &predictions, &thresholds, args.top),
        Format::JsonLines => to_json_lines(labels, &predictions, &thresholds, args.top)?,
    };
    fairpo_io::atomic_write(&args.out, text.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    let skipped = images.len() - predictions.len();
    println!(
        "{} images predicted{} → {}",
        predictions.len(),
        if skipped > 0 {
            format!(", {skipped} unreadable skipped (listed above)")
        } else {
            String::new()
        },
        args.out.display()
    );
    Ok(())
}

/// One image's label probabilities, in the run's label order.
struct Prediction {
    path: PathBuf,
    probabilities: Vec<f32>,
}

struct PredictTask<'a> {
    run: &'a FinishedRun,
    images: &'a [PathBuf],
    batch: usize,
    skip_unreadable: bool,
}

impl BackendTask for PredictTask<'_> {
    type Output = Result<Vec<Prediction>>;
    fn run<AB: AutodiffBackend>(self, device: AB::Device) -> Self::Output {
        let model = self.run.model::<AB::InnerBackend>(&device)?;
        let (trunk, applied) = model
            .trunk
            .with_precision(self.run.cfg.model.trunk_precision);
        if model.trunk.embeddings.is_some() {
            tracing::info!("frozen trunk: {}", applied.describe());
        }
        // The run's evaluation preprocessing (augmentation never applies outside training).
        let pre = Preprocessor::new(self.run.cfg.data.preprocess.clone())?;
        let size = pre.config().size;
        let bar = indicatif::ProgressBar::new(self.images.len() as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "predict {bar:30} {pos}/{len} images, {per_sec}, ETA {eta}",
            )
            .expect("a valid progress template"),
        );
        let mut out = Vec::with_capacity(self.images.len());
        for chunk in self.images.chunks(self.batch.max(1)) {
            let (kept, flat) = load_batch(&pre, chunk, |e| {
                if self.skip_unreadable {
                    bar.suspend(|| tracing::warn!("skipped: {e:#}"));
                    Ok(())
                } else {
                    Err(e.context("pass --skip-unreadable to report it and go on"))
                }
            })?;
            bar.inc(chunk.len() as u64);
            if kept.is_empty() {
                continue;
            }
            let x = Tensor::<AB::InnerBackend, 4>::from_data(
                TensorData::new(flat, [kept.len(), 3, size, size]),
                &device,
            );
            let probs = probabilities(model.policy.forward(trunk.forward(x)));
            let t = probs.len() / kept.len();
            out.extend(
                kept.into_iter()
                    .zip(probs.chunks(t))
                    .map(|(path, p)| Prediction {
                        path: path.clone(),
                        probabilities: p.to_vec(),
                    }),
            );
        }
        bar.finish_and_clear();
        Ok(out)
    }
}

/// The labels predicted for `p`: probability ≥ the label's threshold, most probable first,
/// at most `top`.
fn predicted<'a>(
    labels: &'a [String],
    p: &[f32],
    thresholds: &[f64],
    top: Option<usize>,
) -> Vec<&'a str> {
    let mut above: Vec<usize> = (0..p.len())
        .filter(|&i| f64::from(p[i]) >= thresholds[i])
        .collect();
    above.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    above.truncate(top.unwrap_or(usize::MAX));
    above.into_iter().map(|i| labels[i].as_str()).collect()
}

fn to_csv(
    labels: &[String],
    preds: &[Prediction],
    thresholds: &[f64],
    top: Option<usize>,
) -> String {
    let mut s = String::new();
    let header: Vec<String> = ["path", "labels"]
        .into_iter()
        .map(str::to_string)
        .chain(labels.iter().cloned())
        .map(|c| csv_field(&c))
        .collect();
    s.push_str(&header.join(","));
    s.push('\n');
    for p in preds {
        let mut row = vec![
            csv_field(&p.path.display().to_string()),
            csv_field(&predicted(labels, &p.probabilities, thresholds, top).join(";")),
        ];
        row.extend(p.probabilities.iter().map(|v| format!("{v}")));
        s.push_str(&row.join(","));
        s.push('\n');
    }
    s
}

fn to_json_lines(
    labels: &[String],
    preds: &[Prediction],
    thresholds: &[f64],
    top: Option<usize>,
) -> Result<String> {
    let mut out = Vec::new();
    for p in preds {
        let mut row = serde_json::Map::new();
        row.insert("path".into(), p.path.display().to_string().into());
        row.insert(
            "labels".into(),
            predicted(labels, &p.probabilities, thresholds, top).into(),
        );
        for (name, v) in labels.iter().zip(&p.probabilities) {
            row.insert(name.clone(), serde_json::Value::from(f64::from(*v)));
        }
        serde_json::to_writer(&mut out, &row)?;
        out.write_all(b"\n")?;
    }
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

/// RFC 4180: quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["cat", "dog", "a,b"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn threshold_and_top_pick_the_most_probable_labels() {
        let l = labels();
        let p = [0.6, 0.9, 0.5];
        assert_eq!(predicted(&l, &p, &[0.5; 3], None), ["dog", "cat", "a,b"]);
        assert_eq!(predicted(&l, &p, &[0.55; 3], None), ["dog", "cat"]);
        assert_eq!(predicted(&l, &p, &[0.5; 3], Some(1)), ["dog"]);
        assert!(predicted(&l, &p, &[0.95; 3], None).is_empty());
        // Per-label thresholds: "cat" (0.6) is below its own 0.7, "a,b" (0.5) above its 0.4.
        assert_eq!(predicted(&l, &p, &[0.7, 0.5, 0.4], None), ["dog", "a,b"]);
    }

    #[test]
    fn csv_and_json_lines_rows() {
        let preds = [Prediction {
            path: PathBuf::from("im,1.png"),
            probabilities: vec![0.25, 0.75, 0.5],
        }];
        let csv = to_csv(&labels(), &preds, &[0.5; 3], None);
        assert_eq!(
            csv,
            "path,labels,cat,dog,\"a,b\"\n\"im,1.png\",\"dog;a,b\",0.25,0.75,0.5\n"
        );
        let json = to_json_lines(&labels(), &preds, &[0.5; 3], Some(1)).unwrap();
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["path"], "im,1.png");
        assert_eq!(v["labels"], serde_json::json!(["dog"]));
        assert_eq!(v["a,b"], 0.5);
        assert_eq!(
            Format::of(Path::new("x.tsv")).unwrap_err().to_string(),
            "--out x.tsv: expected a .csv or .jsonl file name"
        );
    }
}
