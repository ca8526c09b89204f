//! `fairpo report`: compare finished runs in the paper's Table 1/2 layout, with paired
//! bootstrap intervals of every run's difference from the first.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// Arguments of `fairpo report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Finished run folders; runs named `<x>-s<N>` are grouped as seeds of `<x>` (mean ± std).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Folder for `report.md` and `map.svg` (default: print only).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Show the paper's numbers for this data set (`coco` or `nus`; default: guessed from
    /// run names starting with `coco-` / `nus-`).
    #[arg(long)]
    pub paper: Option<String>,
    /// Also rewrite each run's own report.md and plots.
    #[arg(long)]
    pub runs_too: bool,
    /// Paired bootstrap resamples of the test images for the intervals of every run's
    /// difference from the first run (0: none).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap's draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `fairpo report`.
pub fn run(args: ReportArgs) -> Result<()> {
    if args.runs_too {
        for r in &args.runs {
            crate::report::write_run_report(&crate::run::RunPaths::new(r))?;
        }
    }
    let bootstrap = crate::report::BootstrapSettings {
        resamples: args.bootstrap,
        seed: args.seed,
    };
    let md = crate::report::compare(
        &args.runs,
        args.out.as_deref(),
        args.paper.as_deref(),
        bootstrap,
    )?;
    println!("{md}");
    if let Some(out) = &args.out {
        println!("comparison report: {}", out.join("report.md").display());
    }
    Ok(())
}
