//! The trainer's trunk-output cache: a second run with the same backbone reads it, and a file
//! whose sidecar (the `FeatureMeta` of `fairpo features`) no longer matches what the run would
//! compute is recomputed with a warning naming the field, never used.

mod common;

use std::path::Path;

use common::{fairpo_command, run_ok};

fn config(dir: &Path, name: &str) -> String {
    config_with(dir, name, "")
}

/// [`config`] with `model` lines added to `[model]`.
fn config_with(dir: &Path, name: &str, model: &str) -> String {
    let p = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n[model]\ntrainable_layers = 1\nheads_hidden = [8]\n{model}\n{}\n[objective]\nmethod = \"bce\"\n[data]\nformat = \"coco\"\nroot = \"data\"\n[data.preprocess]\nsize = 16\n[train]\nepochs = 1\nbatch_size = 32\nworkers = 1\ncache_dir = \"cache\"\n",
        common::TINY_SCRATCH_VIT
    );
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Runs a training and returns its log output and `scores.npy`.
fn train(dir: &Path, name: &str) -> (String, Vec<u8>) {
    train_config(dir, name, config(dir, name))
}

fn train_config(dir: &Path, name: &str, cfg: String) -> (String, Vec<u8>) {
    let out = fairpo_command(&["train", "--config", &cfg], dir)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{name}: {log}");
    (
        log,
        std::fs::read(dir.join("runs").join(name).join("scores.npy")).unwrap(),
    )
}

/// A generated 16 px data set in `dir/data`.
fn generate(dir: &Path, seed: &str, images: &str) {
    run_ok(
        &[
            "data", "generate", "--out", "data", "--seed", seed, "--images", images, "--size", "16",
        ],
        dir,
        "data generate",
    );
}

#[test]
fn cache_is_reused_and_a_stale_sidecar_is_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "2", "120");
    let (log, first) = train(dir, "first");
    assert!(log.contains("feature cache written"), "{log}");
    let (log, again) = train(dir, "again");
    assert!(log.contains("feature cache hit"), "{log}");
    assert_eq!(first, again, "a cached run scores as the first");

    // Tamper with every sidecar's preprocessing: the run must not trust the files.
    let mut sidecars = 0;
    for e in std::fs::read_dir(dir.join("cache")).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".npy.json") {
            let mut meta: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            assert_eq!(meta["format_version"], 2, "{}", p.display());
            meta["preprocess"]["size"] = serde_json::json!(99);
            std::fs::write(&p, meta.to_string()).unwrap();
            sidecars += 1;
        }
    }
    assert!(sidecars >= 2, "train and test caches, found {sidecars}");
    let (log, stale) = train(dir, "stale");
    assert!(
        log.contains("is stale (differs in: preprocessing); recomputing"),
        "{log}"
    );
    assert!(!log.contains("feature cache hit"), "{log}");
    assert_eq!(first, stale, "recomputed features score as the first run");
}

/// A bf16 trunk computes other outputs, so it has a cache of its own: it neither reads nor
/// overwrites the f32 run's. Without AMX the run says it falls back to f32 and shares the
/// f32 cache.
#[test]
fn a_bf16_trunk_has_a_cache_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "3", "80");
    let (log, f32_scores) = train(dir, "f32");
    assert!(log.contains("frozen trunk: f32"), "{log}");
    let cfg = config_with(dir, "bf16", "trunk_precision = \"bf16\"");
    let (log, bf16_scores) = train_config(dir, "bf16", cfg);
    if log.contains("frozen trunk: bf16 products on the AMX tile unit in 1 layer") {
        assert!(log.contains("feature cache written"), "{log}");
        assert!(!log.contains("feature cache hit"), "{log}");
        assert_ne!(f32_scores, bf16_scores, "the bf16 trunk gave f32's scores");
        // The f32 run still finds its own cache.
        let (log, again) = train(dir, "f32-again");
        assert!(log.contains("feature cache hit"), "{log}");
        assert_eq!(f32_scores, again);
    } else {
        assert!(log.contains("bf16 was asked for, but"), "{log}");
        assert!(log.contains("feature cache hit"), "{log}");
        assert_eq!(f32_scores, bf16_scores);
    }
}
