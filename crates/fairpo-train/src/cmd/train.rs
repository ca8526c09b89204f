//! `fairpo train`: train one run from a config (README, "Commands").

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;

use crate::config::RunConfig;
use crate::device::{parse_device_list, run_on_devices, DevicesTask};
use crate::train::{self, TrainOptions, TrainOutcome};

/// Arguments of `fairpo train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Config file(s); later files are overlays deep-merged over earlier ones
    /// (e.g. `--config configs/demo-cpo.toml --config configs/ablations/no-grpo.toml`).
    #[arg(long, required = true)]
    pub config: Vec<PathBuf>,
    /// Override a config value by its dotted key, e.g. `--set train.lr=5e-4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Compute device: `cpu` (default) or `cuda[:N]` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Data-parallel training on several devices, e.g. `cuda:0,cuda:1` (`cpu:0,cpu:1`: CPU
    /// peers, for testing): one replica per device, `train.batch_size` the global batch
    /// split evenly over them.
    #[arg(long, conflicts_with = "device", value_name = "LIST")]
    pub devices: Option<String>,
    /// Continue an interrupted run from its last checkpoint (uses the run's saved config).
    #[arg(long)]
    pub resume: bool,
    /// Delete an existing run folder of the same name and start over.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Run folder (default `runs/<name>`).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
}

/// Runs `fairpo train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let mut cfg = RunConfig::load(&args.config, &args.set)?;
    if let Some(d) = args.run_dir {
        cfg.run_dir = Some(d);
    }
    let opts = TrainOptions {
        resume: args.resume,
        overwrite: args.overwrite,
    };
    install_ctrlc();
    let specs = match &args.devices {
        Some(list) => parse_device_list(list)?,
        None => vec![args.device.parse()?],
    };
    let outcome = run_on_devices(&specs, TrainTask { cfg, opts })??;
    match outcome {
        TrainOutcome::Finished { run_dir, test } => {
            println!("{}", test.report.to_table());
            println!("run: {}", run_dir.display());
            println!("report: {}", run_dir.join("report.md").display());
        }
        TrainOutcome::Interrupted { run_dir, step } => {
            println!(
                "interrupted at step {step}; resume with: fairpo train --config {} --resume",
                run_dir.join("config.toml").display()
            );
        }
    }
    Ok(())
}

struct TrainTask {
    cfg: RunConfig,
    opts: TrainOptions,
}

impl DevicesTask for TrainTask {
    type Output = Result<TrainOutcome>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        train::train_data_parallel::<B>(self.cfg, &self.opts, devices)
    }
}

/// First Ctrl-C: checkpoint at the next step and exit cleanly; second: exit now.
fn install_ctrlc() {
    use std::sync::atomic::Ordering;
    let _ = ctrlc::set_handler(|| {
        if train::INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("second Ctrl-C: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("Ctrl-C: saving a checkpoint after this step (Ctrl-C again to quit now)");
    });
}
