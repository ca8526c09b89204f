//! `fairpo eval`: re-evaluate a finished run's selected model on its test or val split.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use fairpo_metrics::Partition;

use crate::config::RunConfig;
use crate::device::{run_on, BackendTask, DeviceSpec};
use crate::eval;
use crate::trunk_features::TrunkFeatures;
use crate::checkpoint::model_file;
use crate::policy::Policy;
use crate::run::RunPaths;

/// Arguments of `fairpo eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The run folder (e.g. runs/demo-cpo).
    #[arg(long)]
    pub run: PathBuf,
    /// Split: `test` (default) or `val` (the held-out part of the training split).
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Compute device: `cpu` or `cuda[:N]`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print the metrics as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `fairpo eval`; writes `eval-<split>.json` into the run folder.
pub fn run(args: EvalArgs) -> Result<()> {
    let paths = RunPaths::new(&args.run);
    if !paths.model().is_file() {
        bail!(
            "{} is not a finished run ({} is missing)",
            args.run.display(),
            paths.model().display()
        );
    }
    let cfg_text = std::fs::read_to_string(paths.config())
        .with_context(|| format!("reading {}", paths.config().display()))?;
    let cfg = RunConfig::from_toml_str(&cfg_text, &paths.config().display().to_string())?;
    let summary = crate::run::read_summary(&paths)?;
    let partition = Partition::load(paths.partition())?;
    let spec: DeviceSpec = args.device.parse()?;
    run_on(
        &spec,
        EvalTask {
            args,
            cfg,
            paths,
            summary,
            partition,
        },
    )?
}

struct EvalTask {
    args: EvalArgs,
    cfg: RunConfig,
    paths: RunPaths,
    summary: crate::run::RunSummary,
    partition: Partition,
}

impl BackendTask for EvalTask {
    type Output = Result<()>;
    fn run<AB: AutodiffBackend>(self, device: AB::Device) -> Result<()> {
        let EvalTask {
            args,
            cfg,
            paths,
            summary,
            partition,
        } = self;
        let device = &device;
        let fm = model_file::load_model::<AB::InnerBackend>(&paths.model(), device)?;
        let k = summary.trainable_layers;
        let (trunk, tail) = fm.vit.split(k);
        let fp = model_file::trunk_fingerprint(&trunk);
        let policy = Policy {
            tail,
            heads: fm.heads,
        };
        let splits = cfg.data.load_splits().context("loading the data set")?;
        if splits.train.labels != partition.labels {
            bail!("the data set's labels no longer match the run's partition.json");
        }
        let (ds, key, indices) = match args.split.as_str() {
            "test" => (splits.test.clone(), "test", splits.test_indices()),
            "val" => {
                if splits.val_indices.is_empty() {
                    bail!("this run has no validation split (data.select_on = \"test\")");
                }
                (splits.train.clone(), "train", splits.val_indices.clone())
            }
            s => bail!("--split {s:?}: expected test or val"),
        };
        let ds = Arc::new(ds);
        let loader = fairpo_data::BatchLoader::new(
            ds,
            cfg.data.preprocess.clone(),
            fairpo_data::LoaderConfig {
                batch_size: cfg.train.eval_batch_size,
                threads: cfg.train.workers,
                seed: cfg.train.seed,
                skip_corrupt: cfg.data.skip_corrupt,
                ..Default::default()
            },
        )?;
        let mut hidden = TrunkFeatures::new(trunk, &cfg, &fp, k, false, device)?;
        let settings = eval::Settings::from_config(&cfg);
        let e = eval::evaluate_split(
            &mut hidden,
            &policy,
            &loader,
            key,
            &indices,
            &partition,
            &settings,
        )?;
        let out = paths.root.join(format!("eval-{}.json", args.split));
        eval::write_metrics_json(
            &out,
            &e,
            &cfg,
            &partition,
            summary.best_epoch,
            &summary.selected_on,
            &args.split,
        )?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&e.report.groups_json())?);
        } else {
            println!("{}", e.report.to_table());
            println!("written: {}", out.display());
        }
        Ok(())
    }
}
