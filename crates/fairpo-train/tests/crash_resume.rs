//! A run killed with SIGKILL anywhere and resumed with `--resume` ends bit for bit where an
//! uninterrupted run ends: `model.ckpt`, `scores.npy`, `metrics.json` and every `log.jsonl`
//! step and epoch line (wall-clock `seconds` aside).
//!
//! The kill points are exact: `FAIRPO_KILL_AT` (fairpo-io's `fault` module) makes the process
//! send itself SIGKILL mid-epoch, right after an epoch's checkpoint, and half-way through
//! writing `last.ckpt` or `best.ckpt`. The run is FairPO-CPO (GRPO state, a reference model,
//! early stopping with patience 1 so its state matters) on a tiny generated set.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use common::{fairpo, fairpo_command, run_ok};

const MODEL: &str = r#"
[data]
format = "coco"
root = "data"
[data.preprocess]
size = 16
"#;

/// Writes `<name>.toml`: `body` (top-level keys first, then tables), the data section, and
/// `[train]` with `train` added.
fn write(dir: &Path, name: &str, body: &str, train: &str) -> String {
    let p = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n{body}\n{MODEL}\n[train]\nbatch_size = 32\nworkers = 1\ncache_dir = \"cache\"\n{train}\n"
    );
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
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
        "lr = 3e-3\nepochs = 5\npatience = 1",
    )
}

/// Generates the tiny data set in `dir/data` and trains the BCE-SFT reference `runs/sft` for
/// `epochs` epochs.
fn data_and_reference(dir: &Path, epochs: usize) {
    run_ok(
        &[
            "data", "generate", "--out", "data", "--seed", "4", "--images", "240", "--size", "16",
        ],
        dir,
        "data generate",
    );
    let sft = write(
        dir,
        "sft",
        &format!(
            "[model]\ntrainable_layers = \"all\"\nheads_hidden = [16, 4]\n{}\n[objective]\nmethod = \"bce\"\n",
            common::TINY_SCRATCH_VIT
        ),
        &format!("epochs = {epochs}"),
    );
    run_ok(&["train", "--config", &sft], dir, "sft");
}

/// The log without wall-clock fields.
fn log_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

/// model.ckpt and scores.npy bytes, metrics.json without the run's name, the log.
fn outputs(run: &Path) -> (Vec<u8>, Vec<u8>, serde_json::Value, Vec<serde_json::Value>) {
    let read = |f: &str| std::fs::read(run.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let mut metrics: serde_json::Value = serde_json::from_slice(&read("metrics.json")).unwrap();
    metrics.as_object_mut().unwrap().remove("run");
    (
        read("model.ckpt"),
        read("scores.npy"),
        metrics,
        log_lines(run),
    )
}

#[test]
fn sigkill_anywhere_then_resume_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    data_and_reference(dir, 2);

    let whole = cpo(dir, "whole");
    run_ok(&["train", "--config", &whole], dir, "uninterrupted run");
    let want = outputs(&dir.join("runs/whole"));
    // Not vacuous: the run trained (its loss moved) over several epochs with step lines.
    let epochs: Vec<_> = want.3.iter().filter(|v| v["kind"] == "epoch").collect();
    let steps = want.3.iter().filter(|v| v["kind"] == "step").count();
    assert!(epochs.len() >= 3, "only {} epochs ran", epochs.len());
    let first = epochs[0]["train_loss"].as_f64().unwrap();
    let last = epochs.last().unwrap()["train_loss"].as_f64().unwrap();
    assert!(
        first != last && steps >= 12,
        "the run did not move ({first} -> {last}, {steps} steps)"
    );
    let per_epoch = steps / epochs.len();

    // 216 training images / 32 = 7 steps per epoch.
    for (name, kill_at) in [
        ("mid-epoch", format!("step:{}", per_epoch + 3)),
        ("after-epoch", "epoch:2".to_string()),
        ("in-last-write", "write:last.ckpt:2".to_string()),
        ("in-best-write", "write:best.ckpt:2".to_string()),
    ] {
        let cfg = cpo(dir, name);
        let run = dir.join("runs").join(name);
        let out = fairpo_command(&["train", "--config", &cfg], dir)
            .env("FAIRPO_KILL_AT", &kill_at)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(9),
            "{name}: expected death by SIGKILL at {kill_at}, got {} ({})",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !run.join("metrics.json").exists(),
            "{name}: killed before the end, yet metrics.json exists"
        );
        run_ok(
            &["train", "--config", &cfg, "--resume"],
            dir,
            &format!("{name}: resume"),
        );
        let got = outputs(&run);
        assert!(got.0 == want.0, "{name}: model.ckpt differs");
        assert!(got.1 == want.1, "{name}: scores.npy differs");
        assert_eq!(got.2, want.2, "{name}: metrics.json differs");
        assert_eq!(got.3.len(), want.3.len(), "{name}: log lines");
        for (i, (a, b)) in got.3.iter().zip(&want.3).enumerate() {
            assert_eq!(a, b, "{name}: log line {}", i + 1);
        }
    }

    // Killed before its first checkpoint: nothing to resume, said clearly; a plain restart works.
    let cfg = cpo(dir, "early-kill");
    let out = fairpo_command(&["train", "--config", &cfg], dir)
        .env("FAIRPO_KILL_AT", "step:2")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9));
    let out = fairpo(&["train", "--config", &cfg, "--resume"], dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("has no checkpoint"),
        "{err}"
    );
    run_ok(
        &["train", "--config", &cfg],
        dir,
        "restart after an early kill",
    );
    assert!(outputs(&dir.join("runs/early-kill")).0 == want.0);
}

/// With augmentation on (random resized crops and flips, the paper's protocol) a run killed
/// mid-epoch and resumed still ends bit for bit where an uninterrupted one does: the crops and
/// flips are drawn from (seed, epoch, image), not from a stream the kill would cut. The
/// trunk-output cache switches itself off and says so.
#[test]
fn augmented_run_resumes_exactly_and_bypasses_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    data_and_reference(dir, 1);
    let augmented = |name: &str| {
        let cfg = cpo(dir, name);
        let mut text = std::fs::read_to_string(&cfg).unwrap();
        text.push_str(
            "\n[data.preprocess.augment]\nrandom_resized_crop = true\nhorizontal_flip = true\n",
        );
        std::fs::write(&cfg, text).unwrap();
        cfg
    };
    let plain = cpo(dir, "plain");
    run_ok(&["train", "--config", &plain], dir, "unaugmented run");
    let whole = augmented("aug-whole");
    let out = fairpo_command(&["train", "--config", &whole], dir)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("trunk store off: augmentation is on"),
        "no log line says the cache is off:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = outputs(&dir.join("runs/aug-whole"));
    // Not vacuous: augmentation changed what was learned.
    assert!(
        want.0 != outputs(&dir.join("runs/plain")).0,
        "augmentation changed nothing"
    );
    let cfg = augmented("aug-killed");
    let out = fairpo_command(&["train", "--config", &cfg], dir)
        .env("FAIRPO_KILL_AT", "step:10")
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok(
        &["train", "--config", &cfg, "--resume"],
        dir,
        "augmented resume",
    );
    let got = outputs(&dir.join("runs/aug-killed"));
    assert!(got.0 == want.0, "model.ckpt differs");
    assert!(got.1 == want.1, "scores.npy differs");
    assert_eq!(got.2, want.2, "metrics.json differs");
    assert_eq!(got.3, want.3, "log.jsonl differs");
}
