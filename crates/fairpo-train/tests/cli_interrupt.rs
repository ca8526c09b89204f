//! Ctrl-C (SIGINT) during `fairpo train`: the run saves a checkpoint after the current step,
//! exits cleanly with a resume hint, and `--resume` continues from exactly that step.
#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fairpo, fairpo_command};

fn step_numbers(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "step")
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

fn interrupted_at(stdout: &str) -> u64 {
    let rest = stdout
        .split("interrupted at step ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `interrupted at step` in stdout:\n{stdout}"));
    rest.split(';').next().unwrap().trim().parse().unwrap()
}

#[test]
fn sigint_saves_a_checkpoint_and_resume_continues_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let gen = fairpo(
        &[
            "data", "generate", "--out", "data", "--seed", "5", "--images", "200", "--size", "16",
        ],
        dir,
    );
    assert!(gen.status.success(), "{gen:?}");
    // Far more epochs than the test waits for and no early stopping (this tiny run otherwise
    // stops itself within ~0.1 s, before the signal arrives): only the signal ends this run.
    let config = dir.join("long.toml");
    std::fs::write(
        &config,
        r#"
name = "long"
[data]
format = "coco"
root = "data"
[data.preprocess]
size = 16
[model]
trainable_layers = "all"
heads_hidden = [8]
[model.scratch]
hidden_size = 16
num_hidden_layers = 1
num_attention_heads = 2
intermediate_size = 32
patch_size = 4
image_size = 16
[objective]
method = "bce"
[train]
epochs = 100000
patience = 0
batch_size = 16
workers = 1
cache_dir = "cache"
"#,
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let run = dir.join("runs/long");

    let child = fairpo_command(&["train", "--config", config], dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while step_numbers(&run.join("log.jsonl")).len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no training steps logged within 300 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // A broken handler must fail the test, not hang CI: the run has 120 s to exit.
    let signalled = Instant::now();
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if signalled.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the run did not exit within 120 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "exit {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stderr.contains("Ctrl-C: saving a checkpoint"), "{stderr}");
    let k = interrupted_at(&stdout);
    assert!(k >= 2, "interrupted at step {k}");
    assert!(stdout.contains("--resume"), "{stdout}");
    assert!(run.join("checkpoints/last.ckpt").is_file());
    assert!(
        !run.join("metrics.json").exists(),
        "an interrupted run has no test metrics"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(summary["finished"], false);
    assert_eq!(
        step_numbers(&run.join("log.jsonl")),
        (1..=k).collect::<Vec<_>>()
    );

    // Resume for three more steps: the log continues at k + 1 with nothing lost or repeated.
    let stop = format!("train.stop_after_steps={}", k + 3);
    let out = fairpo(
        &["train", "--config", config, "--resume", "--set", &stop],
        dir,
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(interrupted_at(&stdout), k + 3);
    assert_eq!(
        step_numbers(&run.join("log.jsonl")),
        (1..=k + 3).collect::<Vec<_>>()
    );
}
