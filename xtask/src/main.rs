//! `cargo xtask`: project automation as a plain binary (see `.cargo/config.toml`).
//!
//! Every command shells out to the `fairpo` binary (built once in the dev profile) or to
//! `cargo run --example`, so what xtask does is exactly what a user could type.

mod parity;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const USAGE: &str = "\
cargo xtask <command>

  train <preset> [--seed N] [--set key=value ...] [--fresh]
        train configs/<preset>.toml; trains the BCE-SFT reference first when the preset
        needs it and it is missing; for demo presets generates the demo data when absent;
        ends with the comparison table (reference vs this run) and the report path.
  reproduce [--dataset demo|coco|nus] [--seeds N]
        the six methods (Tables 1/2) over N seeds (default 1), report with mean ± std.
  ablate [--dataset demo|coco|nus] [--seeds N]
        FairPO-CPO ablations (Tables 3/4): configs/ablations/*.toml over <dataset>-cpo.
  sweep [--dataset demo|coco|nus]
        FairPO-CPO sensitivity to beta and epsilon (Tables 6/7).
  parity [--epochs N] [--seeds N | --seed N]
        BCE-SFT on the demo set from shared starts (seeds 0..N-1, default 3; 10 epochs), fairpo
        vs PyTorch (bench/parity_demo.py; needs python3 with torch, transformers, Pillow and
        scikit-learn): per-epoch train loss and test mAP side by side; fails if fairpo's test mAP
        (mean of the last 3 epochs and the seeds) is more than 1 point below PyTorch's.
  bench [metrics|data|vit|objectives|train|all]
        runs each crate's examples/bench_<name>.rs and prints its table.
";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root()?;
    std::env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))?;
    let Some((cmd, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    let opts = Opts::parse(rest)?;
    match cmd.as_str() {
        "train" => {
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
        "reproduce" => {
            let ds = opts.dataset.as_deref().unwrap_or("demo");
            let methods = ["sft", "rw", "gdro", "dpo", "simpo", "cpo"];
            let mut runs = Vec::new();
            for seed in seeds(&opts) {
                for m in methods {
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
        "ablate" => {
            let ds = opts.dataset.as_deref().unwrap_or("demo");
            let mut overlays: Vec<PathBuf> = std::fs::read_dir("configs/ablations")
                .context("reading configs/ablations")?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            overlays.sort();
            let mut runs = Vec::new();
            for seed in seeds(&opts) {
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
        "sweep" => {
            let ds = opts.dataset.as_deref().unwrap_or("demo");
            let mut runs = vec![train_preset(
                &format!("{ds}-sft"),
                opts.seed,
                &opts.sets,
                false,
            )?];
            let grid: [(&str, &[&str]); 2] = [
                ("beta", &["0.05", "0.1", "0.5", "1.0", "2.0"]),
                ("epsilon", &["0.001", "0.01", "0.05", "0.1"]),
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
        "parity" => {
            let seeds: Vec<u64> = match (opts.seed, opts.seeds) {
                (Some(s), _) => vec![s],
                (None, n) => (0..n.unwrap_or(3)).collect(),
            };
            parity::run(opts.epochs.unwrap_or(10), &seeds)
        }
        "bench" => bench(opts.positional.first().map(String::as_str).unwrap_or("all")),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown xtask command {other:?}\n\n{USAGE}"),
    }
}

#[derive(Default)]
struct Opts {
    positional: Vec<String>,
    seed: Option<u64>,
    seeds: Option<u64>,
    epochs: Option<usize>,
    dataset: Option<String>,
    sets: Vec<String>,
    fresh: bool,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Self> {
        let mut o = Opts::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
            match a.as_str() {
                "--seed" => {
                    o.seed = Some(
                        value("--seed")?
                            .parse()
                            .context("--seed: expected an integer")?,
                    )
                }
                "--seeds" => {
                    o.seeds = Some(
                        value("--seeds")?
                            .parse()
                            .context("--seeds: expected an integer")?,
                    )
                }
                "--epochs" => {
                    o.epochs = Some(
                        value("--epochs")?
                            .parse()
                            .context("--epochs: expected an integer")?,
                    )
                }
                "--dataset" => {
                    let d = value("--dataset")?.clone();
                    if !["demo", "coco", "nus"].contains(&d.as_str()) {
                        bail!("--dataset: expected demo, coco or nus, got {d:?}");
                    }
                    o.dataset = Some(d);
                }
                "--set" => o.sets.push(value("--set")?.clone()),
                "--fresh" => o.fresh = true,
                s if s.starts_with("--") => bail!("unknown option {s}\n\n{USAGE}"),
                s => o.positional.push(s.to_string()),
            }
        }
        Ok(o)
    }
}

fn seeds(o: &Opts) -> Vec<Option<u64>> {
    match o.seeds {
        None | Some(0) | Some(1) => vec![o.seed],
        Some(n) => (0..n).map(|i| Some(o.seed.unwrap_or(42) + i)).collect(),
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask has no parent folder")?
        .to_path_buf())
}

/// The few preset fields xtask needs to plan dependencies.
struct PresetInfo {
    name: String,
    reference: Option<PathBuf>,
    init_from: Option<PathBuf>,
    demo_root: Option<PathBuf>,
}

fn read_preset(preset: &str) -> Result<PresetInfo> {
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

fn preset_path(preset: &str) -> PathBuf {
    if preset.ends_with(".toml") {
        PathBuf::from(preset)
    } else {
        Path::new("configs").join(format!("{preset}.toml"))
    }
}

fn seeded_name(name: &str, seed: Option<u64>) -> String {
    match seed {
        Some(s) => format!("{name}-s{s}"),
        None => name.to_string(),
    }
}

fn seeded_path(p: &Path, seed: Option<u64>) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    p.with_file_name(seeded_name(&name, seed))
}

fn train_preset(preset: &str, seed: Option<u64>, sets: &[String], fresh: bool) -> Result<PathBuf> {
    let info = read_preset(preset)?;
    train_with(preset, None, &info.name, seed, sets, fresh)
}

/// Trains `preset` (+ optional overlay) as run `name` (seed-suffixed; set with
/// `--set name=...` after `sets`), first training whatever run it depends on
/// (`reference`, `model.init_from`) and the demo data.
fn train_with(
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
    for (key, dep) in [
        ("reference", &info.reference),
        ("model.init_from", &info.init_from),
    ] {
        if let Some(dep) = dep {
            let dep_run = seeded_path(dep, seed);
            if !dep_run.join("metrics.json").is_file() {
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
                eprintln!(
                    "xtask: {preset} needs {} ({key}); training it first",
                    dep_run.display()
                );
                train_preset(&dep_preset, seed, &[], false)?;
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

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Images and side of the generated demo set (80 % train2014, 20 % val2014).
const DEMO_IMAGES: &str = "5000";
const DEMO_SIZE: &str = "32";

fn ensure_demo_data(root: &Path) -> Result<()> {
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

/// Compares `runs` in one report written to `runs/reports/<name>`.
fn report(runs: &[PathBuf], name: &str) -> Result<()> {
    let out = Path::new("runs").join("reports").join(name);
    let mut args = vec!["report".to_string()];
    args.extend(runs.iter().map(|r| r.display().to_string()));
    args.push("--out".into());
    args.push(out.display().to_string());
    fairpo(&args)
}

/// Builds the `fairpo` binary once (dev profile) and runs it.
fn fairpo(args: &[String]) -> Result<()> {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let bin = match BUILT.get() {
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
    };
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

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Finds `crates/*/examples/bench_<name>.rs` and runs each selected one.
fn bench(which: &str) -> Result<()> {
    let mut found: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir("crates").context("reading crates/")? {
        let krate = entry?.path();
        let Ok(examples) = std::fs::read_dir(krate.join("examples")) else {
            continue;
        };
        for ex in examples.flatten() {
            let file = ex.file_name().to_string_lossy().to_string();
            if let Some(name) = file
                .strip_prefix("bench_")
                .and_then(|f| f.strip_suffix(".rs"))
            {
                let krate_name = krate.file_name().unwrap().to_string_lossy().to_string();
                found.push((krate_name, name.to_string()));
            }
        }
    }
    found.sort();
    let selected: Vec<_> = found
        .iter()
        .filter(|(_, n)| which == "all" || n == which)
        .collect();
    if selected.is_empty() {
        let names: Vec<_> = found.iter().map(|(_, n)| n.as_str()).collect();
        bail!("no benchmark {which:?}; available: {}", names.join(", "));
    }
    let mut summary = Vec::new();
    for (krate, name) in selected {
        println!("\n=== bench {name} ({krate}) ===");
        let t = Instant::now();
        let status = Command::new(cargo())
            .args([
                "run",
                "--quiet",
                "-p",
                krate,
                "--example",
                &format!("bench_{name}"),
            ])
            .status()
            .context("running cargo run --example")?;
        summary.push((name.clone(), status.success(), t.elapsed().as_secs_f64()));
    }
    println!("\n| benchmark | status | wall time (s) |\n|---|---|---|");
    for (name, ok, secs) in &summary {
        println!(
            "| {name} | {} | {secs:.1} |",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    if summary.iter().any(|(_, ok, _)| !ok) {
        bail!("some benchmarks failed");
    }
    Ok(())
}
