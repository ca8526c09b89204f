//! Presets, seeded run names and the `fairpo` binary that every command shells out to.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cargo;

/// The few preset fields xtask needs to plan dependencies.
pub(crate) struct PresetInfo {
    /// The preset's run name.
    pub name: String,
    /// Its `reference` run.
    pub reference: Option<PathBuf>,
    /// Its `model.init_from` run.
    pub init_from: Option<PathBuf>,
    /// The demo data root, for demo presets.
    pub demo_root: Option<PathBuf>,
}

pub(crate) fn read_preset(preset: &str) -> Result<PresetInfo> {
    let path = preset_path(preset);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no preset {preset:?}: cannot read {}", path.display()))?;
    let t: toml::Table = text
        .parse()
        .with_context(|| format!("{}: invalid TOML", path.display()))?;
    let s = |v: Option<&toml::Value>| v.and_then(|v| v.as_str()).map(PathBuf::from);
    let data = t.get("data").and_then(|d| d.as_table());
    // Demo presets read the generated set (default root data/demo), made on demand.
    let demo_root = if preset.starts_with("demo") {
        Some(
            data.and_then(|d| s(d.get("root")))
                .unwrap_or_else(|| PathBuf::from("data/demo")),
        )
    } else {
        None
    };
    Ok(PresetInfo {
        name: t
            .get("name")
            .and_then(|v| v.as_str())
            .unwrap_or(preset)
            .to_string(),
        reference: s(t.get("reference")),
        init_from: s(t.get("model").and_then(|m| m.get("init_from"))),
        demo_root,
    })
}

pub(crate) fn preset_path(preset: &str) -> PathBuf {
    if preset.ends_with(".toml") {
        PathBuf::from(preset)
    } else {
        Path::new("configs").join(format!("{preset}.toml"))
    }
}

pub(crate) fn seeded_name(name: &str, seed: Option<u64>) -> String {
    match seed {
        Some(s) => format!("{name}-s{s}"),
        None => name.to_string(),
    }
}

pub(crate) fn seeded_path(p: &Path, seed: Option<u64>) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    p.with_file_name(seeded_name(&name, seed))
}

pub(crate) fn train_preset(
    preset: &str,
    seed: Option<u64>,
    sets: &[String],
    fresh: bool,
) -> Result<PathBuf> {
    let info = read_preset(preset)?;
    train_with(preset, None, &info.name, seed, sets, fresh)
}

/// Trains `preset` (+ optional overlay) as run `name` (seed-suffixed; set with
/// `--set name=...` after `sets`), first training whatever run it depends on
/// (`reference`, `model.init_from`) and the demo data.
pub(crate) fn train_with(
    preset: &str,
    overlay: Option<&Path>,
    name: &str,
    seed: Option<u64>,
    sets: &[String],
    fresh: bool,
) -> Result<PathBuf> {
    let info = read_preset(preset)?;
    if let Some(root) = &info.demo_root {
        ensure_demo_data(root)?;
    }
    let mut sets = sets.to_vec();
    sets.push(format!("name={}", seeded_name(name, seed)));
    // Planned runs this one waits for (`--emit-jobs`).
    let mut after = Vec::new();
    for (key, dep) in [
        ("reference", &info.reference),
        ("model.init_from", &info.init_from),
    ] {
        if let Some(dep) = dep {
            // A `fairpo export` folder is one fixed model, shared by every seed.
            let export = dep.join("labels.json").is_file();
            let dep_run = if export {
                dep.clone()
            } else {
                seeded_path(dep, seed)
            };
            if !export && !dep_run.join("metrics.json").is_file() {
                let dep_preset = dep
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .context("reference path has no name")?;
                if !preset_path(&dep_preset).is_file() {
                    bail!(
                        "{preset} needs the finished run {} ({key}), which is missing, and there is no preset {} to train it",
                        dep_run.display(),
                        preset_path(&dep_preset).display()
                    );
                }
                if !crate::jobs::planning() {
                    eprintln!(
                        "xtask: {preset} needs {} ({key}); training it first",
                        dep_run.display()
                    );
                }
                train_preset(&dep_preset, seed, &[], false)?;
                if let Some(dep_name) = dep_run.file_name() {
                    after.push(dep_name.to_string_lossy().to_string());
                }
            }
            sets.push(format!(
                "{key}={}",
                toml_string(&dep_run.display().to_string())
            ));
        }
    }
    if let Some(s) = seed {
        sets.push(format!("train.seed={s}"));
    }
    let run = PathBuf::from("runs").join(seeded_name(name, seed));
    if run.join("metrics.json").is_file() && !fresh {
        eprintln!(
            "xtask: {} already finished; reusing it (pass --fresh to retrain)",
            run.display()
        );
        return Ok(run);
    }
    let mut args = vec![
        "train".to_string(),
        "--config".into(),
        preset_path(preset).display().to_string(),
    ];
    if let Some(o) = overlay {
        args.push("--config".into());
        args.push(o.display().to_string());
    }
    for s in &sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    if crate::jobs::planning() {
        crate::jobs::record(crate::jobs::Job {
            name: seeded_name(name, seed),
            args: args[1..].to_vec(), // after `train`
            after,
        });
        return Ok(run);
    }
    if run.join("checkpoints").join("last.ckpt").is_file() && !fresh {
        eprintln!(
            "xtask: {} has checkpoints but no results; resuming it",
            run.display()
        );
        args.push("--resume".into());
    } else if run.exists() {
        args.push("--overwrite".into());
    }
    fairpo(&args)?;
    Ok(run)
}

pub(crate) fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Images and side of the generated demo set (80 % train2014, 20 % val2014).
const DEMO_IMAGES: &str = "5000";
const DEMO_SIZE: &str = "32";

pub(crate) fn ensure_demo_data(root: &Path) -> Result<()> {
    if root.join("annotations").is_dir() {
        return Ok(());
    }
    eprintln!("xtask: generating the demo data set in {}", root.display());
    fairpo(&[
        "data".into(),
        "generate".into(),
        "--out".into(),
        root.display().to_string(),
        "--seed".into(),
        "0".into(),
        "--images".into(),
        DEMO_IMAGES.into(),
        "--size".into(),
        DEMO_SIZE.into(),
    ])
}

/// Compares `runs` in one report written to `runs/reports/<name>`; with `--emit-jobs`, writes
/// the planned runs' job scripts to `runs/jobs/<name>` instead.
pub(crate) fn report(runs: &[PathBuf], name: &str) -> Result<()> {
    if crate::jobs::planning() {
        let out =
            crate::jobs::out_dir().unwrap_or_else(|| Path::new("runs").join("jobs").join(name));
        let command: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--emit-jobs" && a != "slurm")
            .collect();
        let submit =
            crate::jobs::write_slurm(&crate::jobs::take(), &out, name, &command.join(" "))?;
        println!(
            "SLURM job scripts: {} (bash it to submit)",
            submit.display()
        );
        return Ok(());
    }
    let out = Path::new("runs").join("reports").join(name);
    let mut args = vec!["report".to_string()];
    args.extend(runs.iter().map(|r| r.display().to_string()));
    args.push("--out".into());
    args.push(out.display().to_string());
    fairpo(&args)
}

/// Builds the `fairpo` binary once (dev profile) and runs it.
pub(crate) fn fairpo(args: &[String]) -> Result<()> {
    let bin = fairpo_bin()?;
    eprintln!("xtask: fairpo {}", args.join(" "));
    let status = Command::new(&bin)
        .args(args)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("`fairpo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The `fairpo` binary, built once per xtask process (dev profile).
pub(crate) fn fairpo_bin() -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    Ok(match BUILT.get() {
        Some(b) => b.clone(),
        None => {
            let status = Command::new(cargo())
                .args(["build", "--quiet", "-p", "fairpo-train", "--bin", "fairpo"])
                .status()
                .context("running cargo build")?;
            if !status.success() {
                bail!("building the fairpo binary failed");
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("target"));
            let b = target
                .join("debug")
                .join(format!("fairpo{}", std::env::consts::EXE_SUFFIX));
            let _ = BUILT.set(b.clone());
            b
        }
    })
}
