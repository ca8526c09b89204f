//! `cargo xtask bench train`: training throughput.
//!
//! 1. Demo: FairPO-CPO epoch time on the demo set with and without the trunk store
//!    (needs a finished `runs/demo-sft`; trains a 2-epoch one in a temp folder otherwise,
//!    and generates the demo data there if `data/demo` is absent).
//! 2. COCO-shaped FairPO-CPO step: ViT-B/16 with random weights, 224 px, batch 32, 80 labels
//!    (16 privileged), last layer + heads trainable, reference tail + heads, GRPO, AdamW;
//!    images/second, against `bench/train.py` (the same step in PyTorch eager) when
//!    `python3` with torch and transformers is available.
//!
//! 3. COCO-shaped FairPO-CPO epochs with the trunk store off and on: a random ViT-B/16 in the
//!    HF layout, a generated 224 px COCO-layout set (`BENCH_TRAIN_STORE_IMAGES`, default 120),
//!    the coco-sft / coco-cpo presets without augmentation, 2 epochs each: the first run that
//!    fills the store and a later run that only reads it (trunk outputs and reference logits),
//!    with the per-epoch times projected linearly to COCO train2014 and the store's COCO size.
//!
//!    A fourth run reads the store as 2 CPU peers (data parallelism on one machine's cores).
//!
//! Options (env): `BENCH_TRAIN_STEPS` (timed COCO steps, default 3), `BENCH_TRAIN_SKIP_DEMO=1`,
//! `BENCH_TRAIN_SKIP_STORE=1`.

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
    if std::env::var("BENCH_TRAIN_SKIP_STORE").is_err() {
        store_epochs()?;
    }
    Ok(())
}

/// COCO 2014's train and val image counts.
const COCO_TRAIN2014: usize = 82_783;
const COCO_VAL2014: usize = 40_504;

fn store_epochs() -> anyhow::Result<()> {
    let images: usize = std::env::var("BENCH_TRAIN_STORE_IMAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let tmp = tempfile::tempdir()?;
    let vit = ViTConfig::base_patch16_224();
    let backbone = tmp.path().join("vit-b16");
    fairpo_train::random_backbone::write_random_backbone(&backbone, &vit, 0)?;
    let data = tmp.path().join("data");
    let summary = fairpo_data::generate_demo(
        &data,
        &fairpo_data::DemoOptions {
            seed: 0,
            images,
            size: 224,
            labels: fairpo_data::LabelSet::Coco,
        },
    )?;
    let opts = TrainOptions {
        resume: false,
        overwrite: true,
    };
    let run = |preset: &str,
               name: &str,
               epochs: usize,
               store: Option<&str>,
               reference: Option<&Path>,
               devices: usize|
     -> anyhow::Result<(PathBuf, Vec<f64>)> {
        let mut cfg = RunConfig::load(
            &[
                PathBuf::from(format!("configs/{preset}.toml")),
                PathBuf::from("configs/compat/no-augment.toml"),
            ],
            &[],
        )?;
        cfg.data.root = data.clone();
        cfg.model.backbone = Some(backbone.clone());
        cfg.train.epochs = epochs;
        cfg.train.patience = 0;
        cfg.train.feature_cache = store.is_some();
        cfg.train.cache_dir = tmp.path().join(store.unwrap_or("unused"));
        if let Some(r) = reference {
            cfg.reference = Some(r.to_path_buf());
            cfg.model.init_from = Some(r.to_path_buf());
        }
        let dir = tmp.path().join(name);
        cfg.run_dir = Some(dir.clone());
        match fairpo_train::train_data_parallel::<Ad>(
            cfg,
            &opts,
            vec![Default::default(); devices],
        )? {
            TrainOutcome::Finished { .. } => {}
            TrainOutcome::Interrupted { .. } => anyhow::bail!("{name} interrupted"),
        }
        let log = fairpo_train::read_log(&dir.join("log.jsonl")).map_err(anyhow::Error::msg)?;
        Ok((dir, log.epochs.iter().map(|e| e.seconds).collect()))
    };
    eprintln!("store bench: training the coco-sft reference (1 epoch)");
    let (sft, _) = run("coco-sft", "sft", 1, Some("cache-sft"), None, 1)?;
    // data.val_fraction 0.1 of train2014 validates; the rest trains.
    let train_images = summary.train_images - (0.1 * summary.train_images as f64).round() as usize;
    println!("\nCOCO-shaped FairPO-CPO epochs (random ViT-B/16, 224 px, {images} generated images, coco-cpo without augmentation, last layer + 80 heads trainable):");
    println!("| trunk store | epoch 1 (s) | epoch 2 (s) | projected COCO train2014 epoch (h) |\n|---|---|---|---|");
    let project = |s: f64| {
        format!(
            "{:.1}",
            s / train_images as f64 * COCO_TRAIN2014 as f64 * 0.9 / 3600.0
        )
    };
    let mut rows = Vec::new();
    for (label, name, store, devices) in [
        ("off", "cpo-off", None, 1),
        (
            "on, first run (fills it in epoch 1)",
            "cpo-fill",
            Some("cache-cpo"),
            1,
        ),
        (
            "on, a later run (reads it)",
            "cpo-read",
            Some("cache-cpo"),
            1,
        ),
        (
            "on, read by 2 CPU peers (`--devices cpu:0,cpu:1`)",
            "cpo-peers",
            Some("cache-cpo"),
            2,
        ),
    ] {
        eprintln!("store bench: {name}");
        let (_, secs) = run("coco-cpo", name, 2, store, Some(&sft), devices)?;
        println!(
            "| {label} | {:.1} | {:.1} | {} / {} |",
            secs[0],
            secs[1],
            project(secs[0]),
            project(secs[1])
        );
        rows.push(secs);
    }
    let (off, read) = (
        (rows[0][0] + rows[0][1]) / 2.0,
        (rows[2][0] + rows[2][1]) / 2.0,
    );
    println!(
        "store speed-up of a run that reads it: {:.2}x ({off:.1} s -> {read:.1} s per epoch; {train_images} training images; projection = per-image time x 0.9 x {COCO_TRAIN2014})",
        off / read
    );
    let peers = (rows[3][0] + rows[3][1]) / 2.0;
    println!(
        "2 CPU peers against 1 device, both reading the store: {:.2}x the epoch time ({read:.1} s -> {peers:.1} s; the peers share this machine's {} cores, so this is the cost of the all-reduce and of running two replicas, not a scaling figure)",
        peers / read,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let entry = |bytes: usize| 24 + 197 * vit.hidden_size * bytes;
    let all = COCO_TRAIN2014 + COCO_VAL2014;
    println!(
        "trunk store for COCO 2014 ({all} images, 197 x {} tokens each): {:.1} GB as f32, {:.1} GB as f16",
        vit.hidden_size,
        (all * entry(4)) as f64 / 1e9,
        (all * entry(2)) as f64 / 1e9
    );
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
    println!("| trunk store | epoch 1 (s) | epoch 2 (s) | epoch 3 (s) |\n|---|---|---|---|");
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
        "trunk store speed-up on epochs 2-3: {:.2}x ({off:.1} s -> {on:.1} s per epoch)",
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
