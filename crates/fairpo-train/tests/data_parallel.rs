//! `fairpo train --devices cpu:0,cpu:1`: two CPU peers joined by burn's collective
//! all-reduce, each training on half of every global batch.
//!
//! - BCE-SFT (no random choices) on 2 peers follows the single-device run: every logged step
//!   loss within 1e-4 relative, every epoch's validation mAP and the test metrics within 1e-4.
//! - FairPO-CPO (GRPO, a reference, the trunk store) on 2 peers stopped part-way and resumed
//!   ends bit for bit where an uninterrupted 2-peer run ends.
//! - Only rank 0 writes: one log, one checkpoint; `run.json` names both devices.
//! - A global batch the devices cannot share evenly is a clear error.
//!
//! The step-level comparison (every loss, α, gradient norm and the weights, against one
//! device and PyTorch) is `trajectory.rs`'s data-parallel test.

mod common;

use std::path::Path;

use common::{fairpo, run_ok};

const DATA: &str = r#"
[data]
format = "coco"
root = "data"
[data.preprocess]
size = 16
"#;

/// Writes `<name>.toml` (`body`: top-level keys, then tables) with `[train]` + `train`.
fn write(dir: &Path, name: &str, body: &str, train: &str) -> String {
    let p = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n{body}\n{DATA}\n[train]\nbatch_size = 32\nworkers = 1\ncache_dir = \"cache\"\n{train}\n"
    );
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn sft(dir: &Path, name: &str) -> String {
    write(
        dir,
        name,
        &format!(
            "[model]\ntrainable_layers = \"all\"\nheads_hidden = [16, 4]\n{}\n[objective]\nmethod = \"bce\"\n",
            common::TINY_SCRATCH_VIT
        ),
        "epochs = 2\nlog_every = 1",
    )
}

fn cpo(dir: &Path, name: &str) -> String {
    write(
        dir,
        name,
        r#"reference = "runs/sft"
[model]
init_from = "runs/sft"
trainable_layers = 1
heads_hidden = [16, 4]
[objective]
method = "cpo"
[scheduler]
delta = 0.1
"#,
        "lr = 3e-3\nepochs = 3\npatience = 1",
    )
}

fn log(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap_or_else(|e| panic!("{}: {e}", run.display()))
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn close(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    assert!(
        (a - b).abs() <= 1e-4 * b.abs().max(1.0),
        "{what}: 2 peers {a} vs 1 device {b}"
    );
}

#[test]
fn two_cpu_peers_train_as_one_device_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run_ok(
        &[
            "data", "generate", "--out", "data", "--seed", "4", "--images", "240", "--size", "16",
        ],
        dir,
        "data generate",
    );

    // BCE-SFT: 2 peers vs 1 device.
    let one = sft(dir, "sft");
    run_ok(&["train", "--config", &one], dir, "sft on one device");
    let two = sft(dir, "sft-peers");
    run_ok(
        &["train", "--config", &two, "--devices", "cpu:0,cpu:1"],
        dir,
        "sft on two peers",
    );
    let (want, got) = (log(&dir.join("runs/sft")), log(&dir.join("runs/sft-peers")));
    assert_eq!(got.len(), want.len(), "log lines");
    let steps = want.iter().filter(|v| v["kind"] == "step").count();
    assert!(steps >= 12, "only {steps} steps logged");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g["kind"], w["kind"], "log line {}", i + 1);
        assert_eq!(g["step"], w["step"], "log line {}", i + 1);
        match w["kind"].as_str().unwrap() {
            "step" => close(&g["loss"], &w["loss"], &format!("line {} loss", i + 1)),
            "epoch" => {
                close(&g["train_loss"], &w["train_loss"], "epoch train loss");
                close(
                    &g["select_value"],
                    &w["select_value"],
                    "epoch selection value",
                );
            }
            _ => {}
        }
    }
    let (mg, mw) = (
        json(&dir.join("runs/sft-peers/metrics.json")),
        json(&dir.join("runs/sft/metrics.json")),
    );
    for group in ["all", "privileged", "non_privileged"] {
        close(
            &mg["groups"][group]["map"],
            &mw["groups"][group]["map"],
            &format!("test mAP {group}"),
        );
    }
    let device = json(&dir.join("runs/sft-peers/run.json"))["device"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(device.split(", ").count(), 2, "run.json device: {device}");

    // FairPO-CPO on 2 peers: stopped after 10 steps and resumed = uninterrupted.
    let whole = cpo(dir, "cpo-whole");
    run_ok(
        &["train", "--config", &whole, "--devices", "cpu:0,cpu:1"],
        dir,
        "cpo on two peers",
    );
    let parts = cpo(dir, "cpo-parts");
    let out = run_ok(
        &[
            "train",
            "--config",
            &parts,
            "--devices",
            "cpu:0,cpu:1",
            "--set",
            "train.stop_after_steps=10",
        ],
        dir,
        "cpo on two peers, stopped",
    );
    assert!(out.contains("interrupted at step 10"), "{out}");
    run_ok(
        &[
            "train",
            "--config",
            &parts,
            "--devices",
            "cpu:0,cpu:1",
            "--resume",
        ],
        dir,
        "cpo on two peers, resumed",
    );
    let read = |run: &str, f: &str| std::fs::read(dir.join("runs").join(run).join(f)).unwrap();
    for f in ["model.ckpt", "scores.npy"] {
        assert!(read("cpo-whole", f) == read("cpo-parts", f), "{f} differs");
    }
    let (a, b) = (
        log(&dir.join("runs/cpo-whole")),
        log(&dir.join("runs/cpo-parts")),
    );
    assert_eq!(a, b, "log.jsonl differs");
    let alphas: Vec<f64> = a
        .iter()
        .filter_map(|v| v["alpha"].as_array().map(|x| x[0].as_f64().unwrap()))
        .collect();
    assert!(
        alphas.len() >= 10 && alphas.iter().any(|&x| (x - 0.5).abs() > 1e-6),
        "GRPO did not step: {alphas:?}"
    );
    // Rank 0 alone wrote: no second log or checkpoint anywhere in the run folder.
    let files: Vec<String> = walk(&dir.join("runs/cpo-whole"));
    assert_eq!(
        files.iter().filter(|f| f.ends_with("log.jsonl")).count(),
        1,
        "{files:?}"
    );

    // 32 images do not split over 3 devices.
    let out = fairpo(
        &[
            "train",
            "--config",
            &sft(dir, "uneven"),
            "--devices",
            "cpu:0,cpu:1,cpu:2",
        ],
        dir,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("train.batch_size = 32")
            && err.contains("multiple of 3"),
        "{err}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
