//! `cargo xtask parity`: fairpo's BCE-SFT learning curve against PyTorch's from the same start.
//!
//! `bench/parity_demo.py init` builds the demo's tiny ViT (transformers) and the paper's heads
//! from a seed and saves them; `fairpo train` and `bench/parity_demo.py train` then both train
//! that start on every demo training image with the same hyper-parameters (BCE, AdamW lr 1e-3,
//! weight decay 0.01, ε 1e-8, global-norm clipping 1.0, batch 32) and evaluate test mAP after
//! every epoch. The data order differs (each side shuffles with its own generator), so the
//! curves agree to within run-to-run noise, not digit for digit; the trajectory tests
//! (`crates/fairpo-train/tests/trajectory.rs`) compare single steps exactly.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The bar: fairpo's test mAP (all labels), averaged over the last [`LAST`] epochs and the
/// seeds, at most this many points below PyTorch's. Averaging is needed because test mAP of
/// the tiny ViT moves by 1–4 points between consecutive epochs of one run.
const MAP_POINTS: f64 = 1.0;
/// Epochs at the end of each run that the bar averages.
const LAST: usize = 3;

struct EpochRow {
    train_loss: f64,
    map: [f64; 3],
}

pub(crate) fn run(epochs: usize, seeds: &[u64]) -> Result<()> {
    if epochs < LAST {
        bail!("--epochs must be at least {LAST}");
    }
    crate::runs::ensure_demo_data(Path::new("data/demo"))?;
    let mut summary = format!(
        "| seed | fairpo mAP all, mean of the last {LAST} epochs | PyTorch | fairpo − PyTorch |\n|---|---|---|---|\n"
    );
    let mut gaps = Vec::new();
    for &seed in seeds {
        let (ours, theirs) = one_seed(epochs, seed)?;
        let tail = |r: &[EpochRow]| {
            100.0 * r[r.len() - LAST..].iter().map(|e| e.map[0]).sum::<f64>() / LAST as f64
        };
        let (a, b) = (tail(&ours), tail(&theirs));
        summary.push_str(&format!("| {seed} | {a:.2} | {b:.2} | {:+.2} |\n", a - b));
        gaps.push(a - b);
    }
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let ok = mean >= -MAP_POINTS;
    summary.push_str(&format!(
        "\nmean over {} seed(s): fairpo − PyTorch = {mean:+.2} mAP points ({}: fairpo at most {MAP_POINTS} point below)\n",
        gaps.len(),
        if ok { "meets the bar" } else { "BELOW the bar" }
    ));
    print!("\n{summary}");
    let out = Path::new("runs/parity/summary.md");
    std::fs::write(out, &summary).with_context(|| format!("writing {}", out.display()))?;
    println!("written to {}", out.display());
    if !ok {
        bail!("fairpo's learning curve is {mean:+.2} mAP points from PyTorch's");
    }
    Ok(())
}

/// Trains one shared start on both sides; returns (fairpo, PyTorch) per-epoch rows.
fn one_seed(epochs: usize, seed: u64) -> Result<(Vec<EpochRow>, Vec<EpochRow>)> {
    let dir = PathBuf::from(format!("runs/parity/seed{seed}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    python(&[
        "init",
        "--data",
        "data/demo",
        "--out",
        &dir.display().to_string(),
        "--seed",
        &seed.to_string(),
    ])?;
    let run_dir = dir.join("fairpo");
    let config = dir.join("fairpo.toml");
    std::fs::write(&config, fairpo_config(&dir, &run_dir, epochs, seed))
        .with_context(|| format!("writing {}", config.display()))?;
    crate::runs::fairpo(&[
        "train".into(),
        "--config".into(),
        config.display().to_string(),
        "--overwrite".into(),
    ])?;
    let ours = read_fairpo_log(&run_dir.join("log.jsonl"))?;
    let theirs = parse_python(&python(&[
        "train",
        "--data",
        "data/demo",
        "--out",
        &dir.display().to_string(),
        "--partition",
        &run_dir.join("partition.json").display().to_string(),
        "--epochs",
        &epochs.to_string(),
        "--seed",
        &seed.to_string(),
    ])?)?;
    if ours.len() != epochs || theirs.len() != epochs {
        bail!(
            "expected {epochs} epochs from each side, got fairpo {} and PyTorch {}",
            ours.len(),
            theirs.len()
        );
    }
    let mut table = format!(
        "BCE-SFT on the demo set from the same initial weights (seed {seed}), test split\n\n\
         | epoch | train loss fairpo | PyTorch | mAP all fairpo | PyTorch | mAP P fairpo | PyTorch | mAP P̄ fairpo | PyTorch |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for (e, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        table.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            e + 1,
            a.train_loss,
            b.train_loss,
            100.0 * a.map[0],
            100.0 * b.map[0],
            100.0 * a.map[1],
            100.0 * b.map[1],
            100.0 * a.map[2],
            100.0 * b.map[2]
        ));
    }
    print!("\n{table}");
    let out = dir.join("parity.md");
    std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    Ok((ours, theirs))
}

fn fairpo_config(dir: &Path, run_dir: &Path, epochs: usize, seed: u64) -> String {
    let s = |p: &Path| crate::runs::toml_string(&p.display().to_string());
    format!(
        "# Written by `cargo xtask parity`: the PyTorch side's start, trained as it trains.\n\
         name = {name}\nrun_dir = {run}\n\n[data]\nformat = \"coco\"\nroot = \"data/demo\"\n\
         select_on = \"test\"\n\n[data.preprocess]\nsize = 32\n\n[model]\nbackbone = {backbone}\n\
         heads_file = {heads}\ntrainable_layers = \"all\"\n\n[objective]\nmethod = \"bce\"\n\n\
         [train]\nlr = 1e-3\nweight_decay = 0.01\nadam_epsilon = 1e-8\ngrad_clip = 1.0\n\
         batch_size = 32\nepochs = {epochs}\npatience = 0\nseed = {seed}\n",
        name = crate::runs::toml_string(&format!("parity-seed{seed}")),
        run = s(run_dir),
        backbone = s(&dir.join("init")),
        heads = s(&dir.join("init_heads.safetensors")),
    )
}

fn python(args: &[&str]) -> Result<String> {
    eprintln!("xtask: python3 bench/parity_demo.py {}", args.join(" "));
    let out = Command::new("python3")
        .arg("bench/parity_demo.py")
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running python3 (the parity comparison needs torch, transformers, Pillow and scikit-learn)")?;
    if !out.status.success() {
        bail!("bench/parity_demo.py {} failed ({})", args[0], out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn parse_python(stdout: &str) -> Result<Vec<EpochRow>> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: Value = serde_json::from_str(l).with_context(|| format!("bad line {l:?}"))?;
            let f = |k: &str| v[k].as_f64().with_context(|| format!("no {k} in {l:?}"));
            Ok(EpochRow {
                train_loss: f("train_loss")?,
                map: [f("map_all")?, f("map_p")?, f("map_np")?],
            })
        })
        .collect()
}

fn read_fairpo_log(path: &Path) -> Result<Vec<EpochRow>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        if v["kind"] != "epoch" {
            continue;
        }
        let f = |x: &Value, what: &str| {
            x.as_f64()
                .with_context(|| format!("{}:{}: no {what}", path.display(), i + 1))
        };
        let m = &v["map"];
        rows.push(EpochRow {
            train_loss: f(&v["train_loss"], "train_loss")?,
            map: [
                f(&m["all"], "map.all")?,
                f(&m["privileged"], "map.privileged")?,
                f(&m["non_privileged"], "map.non_privileged")?,
            ],
        });
    }
    Ok(rows)
}
