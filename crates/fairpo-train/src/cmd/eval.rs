//! `fairpo eval`: re-evaluate a finished run's selected model on its test or val split, at
//! the run's threshold or the per-label thresholds chosen on its validation split.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use fairpo_data::Split;

use crate::device::{run_on, BackendTask, DeviceSpec};
use crate::eval::{self, EvalSplit};
use crate::setup::{batch_loader, FinishedRun};
use crate::thresholds::{ThresholdRule, ValThresholds};
use crate::trunk_features::TrunkFeatures;

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
    /// `val-f1`: predict each label at the threshold chosen on the run's validation split
    /// (`thresholds.json`) instead of `train.threshold`; the output is then
    /// `eval-<split>-val-f1.json` and records the thresholds.
    #[arg(long, value_enum)]
    pub thresholds: Option<ThresholdRule>,
}

/// Runs `fairpo eval`; writes `eval-<split>.json` into the run folder.
pub fn run(args: EvalArgs) -> Result<()> {
    let split: EvalSplit = args
        .split
        .parse()
        .map_err(|e| anyhow::anyhow!("--split {e}"))?;
    let run = FinishedRun::open(&args.run)?;
    let spec: DeviceSpec = args.device.parse()?;
    run_on(&spec, EvalTask { args, split, run })?
}

struct EvalTask {
    args: EvalArgs,
    split: EvalSplit,
    run: FinishedRun,
}

impl BackendTask for EvalTask {
    type Output = Result<()>;
    fn run<AB: AutodiffBackend>(self, device: AB::Device) -> Result<()> {
        let EvalTask { args, split, run } = self;
        let device = &device;
        let cfg = &run.cfg;
        let model = run.model::<AB::InnerBackend>(device)?;
        let splits = cfg.data.load_splits().context("loading the data set")?;
        if splits.train.labels != run.partition.labels {
            bail!("the data set's labels no longer match the run's partition.json");
        }
        let indices = split.indices(&splits);
        if indices.is_empty() {
            bail!(
                "the run's {} split is empty{}",
                split.name(),
                match split {
                    EvalSplit::Val => " (data.val_fraction = 0 or data.select_on = \"test\")",
                    EvalSplit::Test => "",
                }
            );
        }
        let ds = match split.dataset() {
            Split::Train => &splits.train,
            Split::Test => &splits.test,
        };
        let loader = batch_loader(&Arc::new(ds.clone()), cfg, cfg.train.eval_batch_size, false)?;
        let k = run.summary.trainable_layers;
        let mut hidden = TrunkFeatures::new(
            model.trunk,
            cfg,
            &model.vit,
            &model.fingerprint,
            k,
            false,
            device,
        )?;
        let mut settings = eval::Settings::from_config(cfg);
        if args.thresholds == Some(ThresholdRule::ValF1) {
            settings.metrics.label_thresholds =
                Some(ValThresholds::read(&run.paths, &run.partition.labels)?);
        }
        let e = eval::evaluate_split(
            &mut hidden,
            &model.policy,
            &loader,
            split.dataset(),
            &indices,
            &run.partition,
            &settings,
        )?;
        let suffix = match args.thresholds {
            Some(ThresholdRule::ValF1) => "-val-f1",
            None => "",
        };
        let out = run
            .paths
            .root
            .join(format!("eval-{}{suffix}.json", split.name()));
        eval::write_metrics_json(
            &out,
            &e,
            cfg,
            &run.partition,
            run.summary.best_epoch,
            &run.summary.selected_on,
            split.name(),
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
