//! `cargo xtask bench train`: training throughput.
//!
//! 1. Demo: FairPO-CPO epoch time on the demo set with and without the feature cache
//!    (needs a finished `runs/demo-sft`; trains a 2-epoch one in a temp folder otherwise,
//!    and generates the demo data there if `data/demo` is absent).
//! 2. COCO-shaped FairPO-CPO step: ViT-B/16 with random weights, 224 px, batch 32, 80 labels
//!    (16 privileged), last layer + heads trainable, reference tail + heads, GRPO, AdamW;
//!    images/second, against `bench/train.py` (the same step in PyTorch eager) when
//!    `python3` with torch and transformers is available.
//!
//! Options (env): `BENCH_TRAIN_STEPS` (timed COCO steps, default 3), `BENCH_TRAIN_SKIP_DEMO=1`.

use std::path::{Path, PathBuf};

use fairpo_train::selftest::PaperStep;
use fairpo_train::RunConfig;
use fairpo_train::{TrainOptions, TrainOutcome};
use fairpo_vit::ViTConfig;

// glibc hands large freed buffers back to the OS, so every fresh tensor page-faults; see
// the workspace Cargo.toml.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Ad = burn::backend::Autodiff<burn::backend::Flex>;

fn main() -> anyhow::Result<()> {
    fairpo_vit::mimalloc_keep_freed_memory();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::set_current_dir(&root)?;
    let steps: usize = std::env::var("BENCH_TRAIN_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);

    println!(
        "bench train — CPU: {} threads available",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if std::env::var("BENCH_TRAIN_SKIP_DEMO").is_err() {
        demo_epochs()?;
    }
    coco_step(steps)?;
    Ok(())
}

fn demo_epochs() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = PathBuf::from("data/demo");
    let data = if data.join("annotations").is_dir() {
        data
    } else {
        let d = tmp.path().join("demo");
        fairpo_data::generate_demo(&d, &fairpo_data::DemoOptions::default())?;
        d
    };
    let mut reference = PathBuf::from("runs/demo-sft");
    let opts = TrainOptions {
        resume: false,
        overwrite: true,
    };
    if !reference.join("model.ckpt").is_file() {
        println!(
            "runs/demo-sft is missing: training a 2-epoch demo SFT reference in a temp folder"
        );
        let mut cfg = RunConfig::load(&[PathBuf::from("configs/demo-sft.toml")], &[])?;
        cfg.data.root = data.clone();
        cfg.train.epochs = 2;
        reference = tmp.path().join("sft");
        cfg.run_dir = Some(reference.clone());
        fairpo_train::train::<Ad>(cfg, &opts, &Default::default())?;
    }
    println!("\nDemo FairPO-CPO epoch (3600 train + 400 val images, 32 px, tiny ViT, last layer trainable):");
    println!("| feature cache | epoch 1 (s) | epoch 2 (s) | epoch 3 (s) |\n|---|---|---|---|");
    let mut rows = Vec::new();
    for cache in [false, true] {
        let mut cfg = RunConfig::load(&[PathBuf::from("configs/demo-cpo.toml")], &[])?;
        cfg.data.root = data.clone();
        cfg.reference = Some(reference.clone());
        cfg.model.init_from = Some(reference.clone());
        cfg.train.epochs = 3;
        cfg.train.patience = 0;
        cfg.train.feature_cache = cache;
        cfg.train.cache_dir = tmp.path().join(format!("cache-{cache}"));
        let run = tmp.path().join(format!("cpo-cache-{cache}"));
        cfg.run_dir = Some(run.clone());
        match fairpo_train::train::<Ad>(cfg, &opts, &Default::default())? {
            TrainOutcome::Finished { .. } => {}
            TrainOutcome::Interrupted { .. } => anyhow::bail!("demo run interrupted"),
        }
        let log = fairpo_train::read_log(&run.join("log.jsonl")).map_err(anyhow::Error::msg)?;
        let secs: Vec<f64> = log.epochs.iter().map(|e| e.seconds).collect();
        println!(
            "| {} | {:.1} | {:.1} | {:.1} |",
            if cache {
                "on (computed in epoch 1)"
            } else {
                "off"
            },
            secs[0],
            secs[1],
            secs[2]
        );
        rows.push(secs);
    }
    let off = (rows[0][1] + rows[0][2]) / 2.0;
    let on = (rows[1][1] + rows[1][2]) / 2.0;
    println!(
        "feature cache speed-up on epochs 2-3: {:.2}x ({off:.1} s -> {on:.1} s per epoch)",
        off / on
    );
    Ok(())
}

fn coco_step(steps: usize) -> anyhow::Result<()> {
    let device = Default::default();
    let (t, p, b) = (80usize, 16usize, 32usize);
    println!("\nCOCO-shaped FairPO-CPO step: ViT-B/16 (random weights), 224 px, batch {b}, {t} labels ({p} privileged), last layer + heads trainable:");
    let cfg = ViTConfig::base_patch16_224();
    let mut step = PaperStep::<Ad>::new(&cfg, t, p, b, &device)?;
    let mut times = Vec::new();
    let (mut trunk_s, mut rest_s) = (0.0, 0.0);
    for step_no in 0..steps + 1 {
        let (trunk, rest) = step.run(step_no as u64)?;
        if step_no > 0 {
            times.push(trunk + rest);
            trunk_s += trunk;
            rest_s += rest;
        }
        eprintln!(
            "step {step_no}: {:.2} s{}",
            trunk + rest,
            if step_no == 0 {
                " (warm-up, not timed)"
            } else {
                ""
            }
        );
    }
    let n = times.len() as f64;
    let total: f64 = times.iter().sum();
    let ours = b as f64 * n / total;
    println!("| implementation | img/s | step (s) | frozen trunk fwd (s) | tail+heads+loss+bwd+AdamW (s) |\n|---|---|---|---|---|");
    println!(
        "| fairpo (burn-flex, CPU) | {ours:.2} | {:.2} | {:.2} | {:.2} |",
        total / n,
        trunk_s / n,
        rest_s / n
    );
    match python_img_per_s(steps) {
        Ok((torch, line)) => {
            println!(
                "| PyTorch eager (bench/train.py) | {torch:.2} | {:.2} | – | – |",
                b as f64 / torch
            );
            println!("({line})");
            println!(
                "ratio fairpo / PyTorch = {:.2}x (goal >= 1.0)",
                ours / torch
            );
        }
        Err(why) => println!("PyTorch comparison skipped: {why}"),
    }
    Ok(())
}

fn python_img_per_s(steps: usize) -> Result<(f64, String), String> {
    let out = std::process::Command::new("python3")
        .args([
            "bench/train.py",
            "--steps",
            &steps.to_string(),
            "--warmup",
            "1",
        ])
        .output()
        .map_err(|e| format!("cannot run python3 ({e})"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "bench/train.py failed (needs torch and transformers): {}",
            err.lines().last().unwrap_or("")
        ));
    }
    let v = stdout
        .lines()
        .find_map(|l| l.strip_prefix("img_per_s="))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or("bench/train.py printed no img_per_s line")?;
    let info = stdout.lines().next().unwrap_or("").to_string();
    Ok((v, info))
}
