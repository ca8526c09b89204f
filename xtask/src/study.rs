//! The experiment commands: `train <preset>`, `reproduce`, `ablate`, `sweep` (the paper's
//! Tables 1–4 and 6–7 layouts), each a list of runs trained through `fairpo` and one report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::flags::{seeds, Opts};
use crate::runs::{fairpo, read_preset, report, seeded_path, train_preset, train_with};

/// `train <preset>`: the run (and what it depends on), then its comparison with its reference.
pub(crate) fn train(opts: &Opts) -> Result<()> {
    let preset = opts
        .positional
        .first()
        .context("usage: cargo xtask train <preset>, e.g. demo-cpo")?;
    let start = Instant::now();
    let run = train_preset(preset, opts.seed, &opts.sets, opts.fresh)?;
    let cfg = read_preset(preset)?;
    if let Some(reference) = cfg.reference.as_ref() {
        let reference = seeded_path(reference, opts.seed);
        let out = run.join("compare");
        fairpo(&[
            "report".into(),
            reference.display().to_string(),
            run.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ])?;
    } else {
        fairpo(&["report".into(), run.display().to_string()])?;
    }
    println!("run report: {}", run.join("report.md").display());
    eprintln!(
        "xtask train {preset}: done in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `reproduce`: the six methods over the seeds (Tables 1/2).
/// The overlay that turns a `<dataset>-cpo` preset into its BCE fine-tuning control.
const BCE_CONTROL: &str = "configs/controls/bce-finetune.toml";

pub(crate) fn reproduce(opts: &Opts) -> Result<()> {
    let ds = opts.dataset.as_deref().unwrap_or("demo");
    let methods = ["sft", "rw", "gdro", "dpo", "simpo", "cpo"];
    let mut runs = Vec::new();
    for seed in seeds(opts) {
        for m in methods {
            if m == "dpo" {
                // The control that none of the paper's tables has, between the baselines and
                // FairPO: FairPO-CPO's start and trainable parameters, trained with plain BCE.
                runs.push(train_with(
                    &format!("{ds}-cpo"),
                    Some(Path::new(BCE_CONTROL)),
                    &format!("{ds}-bce-control"),
                    seed,
                    &opts.sets,
                    opts.fresh,
                )?);
            }
            runs.push(train_preset(
                &format!("{ds}-{m}"),
                seed,
                &opts.sets,
                opts.fresh,
            )?);
        }
    }
    report(&runs, &format!("{ds}-reproduce"))
}

/// `ablate`: FairPO-CPO with each overlay of `configs/ablations/` (Tables 3/4).
pub(crate) fn ablate(opts: &Opts) -> Result<()> {
    let ds = opts.dataset.as_deref().unwrap_or("demo");
    let mut overlays: Vec<PathBuf> = std::fs::read_dir("configs/ablations")
        .context("reading configs/ablations")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    overlays.sort();
    let mut runs = Vec::new();
    for seed in seeds(opts) {
        runs.push(train_preset(&format!("{ds}-sft"), seed, &opts.sets, false)?);
        runs.push(train_preset(
            &format!("{ds}-cpo"),
            seed,
            &opts.sets,
            opts.fresh,
        )?);
        for overlay in &overlays {
            let abl = overlay.file_stem().unwrap().to_string_lossy().to_string();
            runs.push(train_with(
                &format!("{ds}-cpo"),
                Some(overlay),
                &format!("{ds}-cpo-{abl}"),
                seed,
                &opts.sets,
                opts.fresh,
            )?);
        }
    }
    report(&runs, &format!("{ds}-ablate"))
}

/// `sweep`: FairPO-CPO's sensitivity to β and ε (Tables 6/7).
pub(crate) fn sweep(opts: &Opts) -> Result<()> {
    let ds = opts.dataset.as_deref().unwrap_or("demo");
    let mut runs = vec![train_preset(
        &format!("{ds}-sft"),
        opts.seed,
        &opts.sets,
        false,
    )?];
    let grid: [(&str, &[&str]); 2] = [
        ("beta", &["0.05", "0.1", "0.5", "1.0", "2.0"]),
        ("epsilon", &["0.001", "0.01", "0.05", "0.1", "0.2"]),
    ];
    for (param, values) in grid {
        for v in values {
            let name = format!("{ds}-cpo-{param}{v}");
            let mut sets = opts.sets.clone();
            sets.push(format!("objective.{param}={v}"));
            runs.push(train_with(
                &format!("{ds}-cpo"),
                None,
                &name,
                opts.seed,
                &sets,
                opts.fresh,
            )?);
        }
    }
    report(&runs, &format!("{ds}-sweep"))
}
