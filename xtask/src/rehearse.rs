//! `cargo xtask rehearse`: the real-data path at the real model's shapes, on generated data.
//!
//! A random ViT-B/16 in the Hugging Face layout (`fairpo backbone init`) and two generated
//! 224 px sets, one in the official COCO 2014 layout with COCO's 80 category names and one in
//! NUS-WIDE's official layout with its 81 concepts (`fairpo data generate --labels ...`), stand
//! in for the user's checkpoint and data. On each set every coco-/nus- preset runs for a few
//! epochs through the real loaders (augmentation on, so the trunk-output cache is bypassed),
//! then FairPO-CPO and BCE-SFT with augmentation off (the cache on), the GRPO protocol of
//! the presets beside the paper's δ = 1e-6 and the released code's fresh heads, one ablation,
//! the released-code overlay, and a run killed mid-way and resumed. Checked: every run
//! finishes and writes all its files; the cache is used or bypassed as configured; the
//! presets' FairPO runs keep α_P ≥ 0.1 over the second half of their steps; the resumed run
//! ends bit-identical to the uninterrupted one. Random weights learn nothing real: the mAP
//! column shows the runs work, not how well FairPO does.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::flags::Opts;
use crate::runs::{fairpo, fairpo_bin};

/// Where everything goes.
const ROOT: &str = "runs/rehearsal";
/// Lowest mean α_P over the second half of a presets' FairPO run that counts as working.
const MIN_ALPHA_P: f64 = 0.1;
/// Files every finished run writes.
const RUN_FILES: [&str; 9] = [
    "config.toml",
    "log.jsonl",
    "metrics.json",
    "model.ckpt",
    "partition.json",
    "report.md",
    "run.json",
    "scores.npy",
    "targets.npy",
];

/// How a run uses the trunk-output cache.
#[derive(Clone, Copy, PartialEq)]
enum Cache {
    /// Bypassed because augmentation is on.
    Bypassed,
    /// Filled or read.
    Used,
}

/// What the α_P of a run is held to.
#[derive(Clone, Copy, PartialEq)]
enum AlphaCheck {
    /// Not a GRPO-weighted FairPO run.
    None,
    /// The presets' protocol: must stay ≥ [`MIN_ALPHA_P`].
    Presets,
    /// Another protocol, shown for comparison.
    Shown,
}

struct Planned {
    /// Run folder name under `runs/rehearsal/<dataset>/`.
    label: String,
    /// What it is, for the table.
    what: &'static str,
    configs: Vec<String>,
    sets: Vec<String>,
    cache: Cache,
    alpha: AlphaCheck,
}

struct Outcome {
    label: String,
    what: &'static str,
    seconds: f64,
    steps: usize,
    map: Option<(f64, f64)>,
    alpha_p: Option<f64>,
    problems: Vec<String>,
}

/// `cargo xtask rehearse [--dataset coco|nus] [--epochs N] [--images N] [--fresh]`.
pub(crate) fn run(opts: &Opts) -> Result<()> {
    let datasets: Vec<&str> = match opts.dataset.as_deref() {
        None => vec!["coco", "nus"],
        Some(d @ ("coco" | "nus")) => vec![d],
        Some(d) => bail!("rehearse: --dataset coco or nus, got {d:?}"),
    };
    let epochs = opts.epochs.unwrap_or(2);
    let images = opts.images.unwrap_or(200);
    if epochs < 2 || images < 100 {
        bail!("rehearse needs --epochs >= 2 and --images >= 100 (a half to kill and resume)");
    }
    let root = PathBuf::from(ROOT);
    if opts.fresh && root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {ROOT}"))?;
    }
    let start = Instant::now();
    let backbone = root.join("vit-b16");
    if !(backbone.join("model.safetensors").is_file() && backbone.join("config.json").is_file()) {
        fairpo(&strings(&[
            "backbone",
            "init",
            "--arch",
            "base-patch16-224",
            "--seed",
            "0",
            "--force",
            "--out",
            &backbone.display().to_string(),
        ]))?;
    }
    let mut outcomes = Vec::new();
    for ds in &datasets {
        outcomes.extend(rehearse_dataset(ds, &root, &backbone, epochs, images)?);
    }
    print_table(&outcomes, epochs, images);
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.problems.is_empty()).collect();
    println!(
        "\nrehearsal: {} runs in {:.1} min",
        outcomes.len(),
        start.elapsed().as_secs_f64() / 60.0
    );
    if failed.is_empty() {
        println!("every check passed");
        Ok(())
    } else {
        for o in &failed {
            for p in &o.problems {
                println!("FAILED {}: {p}", o.label);
            }
        }
        bail!(
            "{} of {} rehearsal runs failed a check",
            failed.len(),
            outcomes.len()
        )
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn rehearse_dataset(
    ds: &str,
    root: &Path,
    backbone: &Path,
    epochs: usize,
    images: usize,
) -> Result<Vec<Outcome>> {
    let data = root.join("data").join(ds);
    // The options the set was made with; any other set there is made anew.
    let stamp = data.join("rehearsal-set.txt");
    let wanted = format!("{ds} images {images} size 224 seed 0\n");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("removing {}", data.display()))?;
        }
        fairpo(&strings(&[
            "data",
            "generate",
            "--labels",
            if ds == "coco" { "coco" } else { "nus-wide" },
            "--images",
            &images.to_string(),
            "--size",
            "224",
            "--seed",
            "0",
            "--force",
            "--out",
            &data.display().to_string(),
        ]))?;
        std::fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
    }
    let runs = root.join(ds);
    let run_dir = |label: &str| runs.join(label).display().to_string();
    let preset = |m: &str| format!("configs/{ds}-{m}.toml");
    let no_augment = "configs/compat/no-augment.toml".to_string();
    let released = "configs/compat/released-code.toml".to_string();
    let released_privileged = format!("configs/compat/released-code-privileged-{ds}.toml");
    let common = |reference: Option<&str>| {
        let mut s = vec![
            format!("data.root={}", toml_path(&data)),
            format!("model.backbone={}", toml_path(backbone)),
            format!("train.epochs={epochs}"),
            "train.patience=0".to_string(),
            format!("train.cache_dir={}", toml_path(&root.join("cache"))),
        ];
        if let Some(r) = reference {
            s.push(format!("reference={}", toml_path(Path::new(&run_dir(r)))));
            s.push(format!(
                "model.init_from={}",
                toml_path(Path::new(&run_dir(r)))
            ));
        }
        s
    };
    let plan = |label: &str,
                what: &'static str,
                configs: Vec<String>,
                reference: Option<&str>,
                extra: &[&str],
                cache: Cache,
                alpha: AlphaCheck| {
        let mut sets = common(reference);
        sets.extend(extra.iter().map(|s| s.to_string()));
        Planned {
            label: label.to_string(),
            what,
            configs,
            sets,
            cache,
            alpha,
        }
    };
    use AlphaCheck as A;
    use Cache::{Bypassed, Used};
    let mut plans = vec![plan(
        "sft",
        "preset (reference)",
        vec![preset("sft")],
        None,
        &[],
        Bypassed,
        A::None,
    )];
    for m in ["rw", "gdro"] {
        plans.push(plan(
            m,
            "preset",
            vec![preset(m)],
            None,
            &[],
            Bypassed,
            A::None,
        ));
    }
    for m in ["dpo", "simpo", "cpo"] {
        plans.push(plan(
            m,
            "preset",
            vec![preset(m)],
            Some("sft"),
            &[],
            Bypassed,
            A::Presets,
        ));
    }
    let cpo_cached = vec![preset("cpo"), no_augment.clone()];
    plans.extend([
        plan(
            "sft-no-augment",
            "no-augment",
            vec![preset("sft"), no_augment.clone()],
            None,
            &[],
            Used,
            A::None,
        ),
        plan(
            "cpo-no-augment",
            "no-augment, presets' GRPO δ 0.1",
            cpo_cached.clone(),
            Some("sft-no-augment"),
            &[],
            Used,
            A::Presets,
        ),
        plan(
            "cpo-delta-1e-6",
            "no-augment, paper's δ 1e-6",
            cpo_cached.clone(),
            Some("sft-no-augment"),
            &["scheduler.delta=1e-6"],
            Used,
            A::Shown,
        ),
        plan(
            "cpo-fresh-heads",
            "no-augment, fresh heads, δ 1e-6",
            cpo_cached.clone(),
            Some("sft-no-augment"),
            &["scheduler.delta=1e-6", "model.init_heads=\"fresh\""],
            Used,
            A::Shown,
        ),
        plan(
            "cpo-no-grpo",
            "ablation no-grpo",
            vec![
                preset("cpo"),
                no_augment.clone(),
                "configs/ablations/no-grpo.toml".into(),
            ],
            Some("sft-no-augment"),
            &[],
            Used,
            A::None,
        ),
        plan(
            "sft-released-code",
            "released-code overlay",
            vec![preset("sft"), released.clone(), released_privileged.clone()],
            None,
            &[],
            Used,
            A::None,
        ),
        plan(
            "cpo-released-code",
            "released-code overlay",
            vec![preset("cpo"), released, released_privileged],
            Some("sft-released-code"),
            &[],
            Used,
            A::Shown,
        ),
    ]);
    let total = plans.len() + 1;
    let mut outcomes = Vec::new();
    let started = Instant::now();
    for (i, p) in plans.iter().enumerate() {
        progress(ds, i, total, &p.label, started);
        outcomes.push(run_planned(p, &runs, None)?);
    }
    // Killed one step past the middle of the run and resumed: must end where `cpo` ended.
    progress(ds, total - 1, total, "cpo-resumed", started);
    let cpo = plans.iter().find(|p| p.label == "cpo").expect("planned");
    let steps = outcomes
        .iter()
        .find(|o| o.label == "cpo")
        .map_or(0, |o| o.steps);
    let kill_at = steps / 2 + 1;
    let resumed = Planned {
        label: "cpo-resumed".into(),
        what: "preset, killed at a step and resumed",
        configs: cpo.configs.clone(),
        sets: cpo.sets.clone(),
        cache: cpo.cache,
        alpha: AlphaCheck::None,
    };
    let mut outcome = run_planned(&resumed, &runs, Some(format!("step:{kill_at}")))?;
    for file in ["scores.npy", "metrics.json", "model.ckpt"] {
        let a = std::fs::read(runs.join("cpo").join(file)).ok();
        let b = std::fs::read(runs.join("cpo-resumed").join(file)).ok();
        if a.is_none() || a != b {
            outcome.problems.push(format!(
                "{file} differs from the uninterrupted run's (killed at step {kill_at})"
            ));
        }
    }
    outcomes.push(outcome);
    for o in &mut outcomes {
        o.label = format!("{ds}/{}", o.label);
    }
    Ok(outcomes)
}

fn progress(ds: &str, i: usize, total: usize, label: &str, started: Instant) {
    let eta = if i == 0 {
        String::new()
    } else {
        let per = started.elapsed().as_secs_f64() / i as f64;
        format!(", ETA {:.1} min for {ds}", per * (total - i) as f64 / 60.0)
    };
    eprintln!("xtask rehearse: [{}/{total}] {ds}/{label}{eta}", i + 1);
}

/// `"path"` as a TOML string for `--set`.
fn toml_path(p: &Path) -> String {
    crate::runs::toml_string(&p.display().to_string())
}

/// Runs one planned run (killed at `kill_at` and resumed when given), its stderr kept in
/// `<run>.log`, and checks what it left.
fn run_planned(p: &Planned, runs: &Path, kill_at: Option<String>) -> Result<Outcome> {
    let dir = runs.join(&p.label);
    std::fs::create_dir_all(runs).with_context(|| format!("creating {}", runs.display()))?;
    let log = runs.join(format!("{}.log", p.label));
    let mut args = vec!["train".to_string()];
    for c in &p.configs {
        args.push("--config".into());
        args.push(c.clone());
    }
    for s in &p.sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    args.push("--run-dir".into());
    args.push(dir.display().to_string());
    args.push("--overwrite".into());
    let start = Instant::now();
    let mut problems = Vec::new();
    let bin = fairpo_bin()?;
    let run = |args: &[String], env: Option<&str>, append: bool| -> Result<bool> {
        let file = File::options()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(&bin);
        cmd.args(args)
            .stderr(file)
            .stdout(std::process::Stdio::null());
        if let Some(k) = env {
            cmd.env("FAIRPO_KILL_AT", k);
        }
        Ok(cmd
            .status()
            .with_context(|| format!("running {}", bin.display()))?
            .success())
    };
    match &kill_at {
        None => {
            if !run(&args, None, false)? {
                problems.push(format!("fairpo train failed (see {})", log.display()));
            }
        }
        Some(k) => {
            if run(&args, Some(k), false)? {
                problems.push(format!("FAIRPO_KILL_AT={k} did not stop the run"));
            }
            let mut resume: Vec<String> = args
                .iter()
                .filter(|a| a.as_str() != "--overwrite")
                .cloned()
                .collect();
            resume.push("--resume".into());
            if !run(&resume, None, true)? {
                problems.push(format!("--resume failed (see {})", log.display()));
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    for f in RUN_FILES {
        if !dir.join(f).is_file() {
            problems.push(format!("{} is missing", dir.join(f).display()));
        }
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let (used, bypassed) = (
        text.contains("entries written") || text.contains("trunk store hit"),
        text.contains("trunk store off: augmentation is on"),
    );
    match p.cache {
        Cache::Used if !used => problems.push("the trunk-output cache was not used".into()),
        Cache::Bypassed if used => {
            problems.push("augmentation is on, yet the trunk-output cache was used".into())
        }
        Cache::Bypassed if !bypassed => problems
            .push("augmentation is on, yet the log does not say the cache was switched off".into()),
        _ => {}
    }
    let (steps, alpha_p) = read_steps(&dir.join("log.jsonl"));
    let alpha_p = if p.alpha == AlphaCheck::None {
        None
    } else {
        alpha_p
    };
    if p.alpha == AlphaCheck::Presets {
        match alpha_p {
            Some(a) if a >= MIN_ALPHA_P => {}
            Some(a) => problems.push(format!(
                "alpha_P averaged {a:.3} over the second half of the steps (< {MIN_ALPHA_P})"
            )),
            None => problems.push("no GRPO weights in log.jsonl".into()),
        }
    }
    Ok(Outcome {
        label: p.label.clone(),
        what: p.what,
        seconds,
        steps,
        map: read_map(&dir.join("metrics.json")),
        alpha_p,
        problems,
    })
}

/// Steps logged and the mean α_P over the second half of them.
fn read_steps(path: &Path) -> (usize, Option<f64>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let alphas: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["alpha"][0].as_f64().unwrap_or(f64::NAN))
        .collect();
    let half = &alphas[alphas.len() / 2..];
    let mean = (!half.is_empty() && half.iter().all(|a| a.is_finite()))
        .then(|| half.iter().sum::<f64>() / half.len() as f64);
    (alphas.len(), mean)
}

/// Test mAP of the privileged and non-privileged groups, in %.
fn read_map(path: &Path) -> Option<(f64, f64)> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let g = &v["groups"];
    Some((
        g["privileged"]["map"].as_f64()? * 100.0,
        g["non_privileged"]["map"].as_f64()? * 100.0,
    ))
}

fn print_table(outcomes: &[Outcome], epochs: usize, images: usize) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "\nRehearsal: random ViT-B/16 (HF layout), generated 224 px sets of {images} images, \
         {epochs} epochs per run, the presets' batch size, {threads} CPU threads. Random \
         weights: mAP shows the runs work, not FairPO's accuracy.\n"
    );
    println!("| run | what | steps | seconds | test mAP P / P̄ | α_P, 2nd half | checks |");
    println!("|---|---|---|---|---|---|---|");
    for o in outcomes {
        let map = o
            .map
            .map_or("-".into(), |(p, n)| format!("{p:.2} / {n:.2}"));
        let alpha = o.alpha_p.map_or("-".into(), |a| format!("{a:.3}"));
        let checks = if o.problems.is_empty() {
            "ok".to_string()
        } else {
            format!("{} FAILED", o.problems.len())
        };
        println!(
            "| {} | {} | {} | {:.0} | {map} | {alpha} | {checks} |",
            o.label, o.what, o.steps, o.seconds
        );
    }
}
