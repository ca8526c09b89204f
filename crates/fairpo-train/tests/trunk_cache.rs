//! The trainer's trunk store: later runs with the same trunk read it and score exactly as
//! without it, entries follow image content, damaged entries are recomputed, concurrent runs
//! share it safely, and its cap and f16 format work.

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

/// [`config`] with `lines` added to `[train]` (the file's last table).
fn config_train(dir: &Path, name: &str, lines: &str) -> String {
    let p = config(dir, name);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, format!("{text}{lines}\n")).unwrap();
    p
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

/// Files under `root` (at any depth) whose names end with `suffix`, sorted.
fn files_under(root: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    fn walk(d: &Path, suffix: &str, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, suffix, out);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, suffix, &mut out);
    out.sort();
    out
}

/// The store's entry files under `dir/cache`.
fn entries(dir: &Path) -> Vec<std::path::PathBuf> {
    files_under(&dir.join("cache"), ".bin")
}

/// The largest difference between two runs' scores.
fn max_abs_diff(a: &[u8], b: &[u8]) -> f32 {
    let (a, b) = (scores(a), scores(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn the_store_is_reused_exactly_and_damaged_entries_are_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "2", "120");
    let (log, first) = train(dir, "first");
    assert!(
        log.contains("trunk store") && log.contains(": computing "),
        "{log}"
    );
    // One entry per image of train2014 and val2014 (the generator draws distinct images).
    assert_eq!(entries(dir).len(), 120);
    let (log, again) = train(dir, "again");
    assert!(
        log.contains("trunk store hit") && !log.contains("computing"),
        "{log}"
    );
    assert_eq!(first, again, "a run reading the store scores as the first");
    let cfg = config_train(dir, "no-store", "feature_cache = false");
    let (log, live) = train_config(dir, "no-store", cfg);
    assert!(!log.contains("trunk store"), "{log}");
    assert_eq!(
        first, live,
        "stored outputs are the computed ones, bit for bit"
    );

    // Entries follow the images' content: the same images under another folder hit.
    std::fs::rename(dir.join("data"), dir.join("moved")).unwrap();
    let cfg = config(dir, "moved");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("root = \"data\"", "root = \"moved\"")).unwrap();
    let (log, moved) = train_config(dir, "moved", cfg);
    assert!(
        log.contains("trunk store hit") && !log.contains("computing"),
        "{log}"
    );
    assert_eq!(first, moved);
    std::fs::rename(dir.join("moved"), dir.join("data")).unwrap();

    // Damage every entry (one flipped payload bit each): none is used, all are recomputed
    // and rewritten, and the scores do not change.
    for p in entries(dir) {
        let mut b = std::fs::read(&p).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0x01;
        std::fs::write(&p, b).unwrap();
    }
    let (log, repaired) = train(dir, "repaired");
    assert!(
        log.contains("is damaged (checksum mismatch); recomputing it"),
        "{log}"
    );
    assert_eq!(first, repaired, "recomputed outputs score as the first run");
    let (log, _) = train(dir, "after-repair");
    assert!(!log.contains("damaged"), "entries were rewritten: {log}");
}

/// Two processes filling one empty store at the same time both finish, score as a run
/// without the store, and leave only whole entries.
#[test]
fn concurrent_runs_share_one_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "4", "120");
    let children: Vec<_> = ["one", "two"]
        .iter()
        .map(|name| {
            let cfg = config(dir, name);
            fairpo_command(&["train", "--config", &cfg], dir)
                .env("RUST_LOG", "info")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, name) in children.into_iter().zip(["one", "two"]) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read = |name: &str| std::fs::read(dir.join("runs").join(name).join("scores.npy")).unwrap();
    assert_eq!(read("one"), read("two"));
    assert_eq!(entries(dir).len(), 120);
    let (log, third) = train(dir, "third");
    assert!(
        log.contains("trunk store hit") && !log.contains("damaged"),
        "{log}"
    );
    assert_eq!(third, read("one"));
    // No temporary file (of an entry or a manifest) is left behind.
    let stray = files_under(&dir.join("cache"), ".tmp");
    assert!(stray.is_empty(), "{stray:?}");
}

/// `train.cache_max_gb` stops a run before it fills the store past the cap, naming it; f16
/// entries are another store, half the size, with scores close to f32's.
#[test]
fn the_store_keeps_to_its_cap_and_f16_halves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "6", "60");
    let capped = config_train(dir, "capped", "cache_max_gb = 1e-6");
    let out = fairpo_command(&["train", "--config", &capped], dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("train.cache_max_gb"),
        "{err}"
    );
    assert!(entries(dir).is_empty(), "refused before computing anything");

    let (_, f32_scores) = train(dir, "f32");
    let f32_bytes: u64 = entries(dir)
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    let half = config_train(dir, "f16", "cache_dtype = \"f16\"");
    let (log, f16_scores) = train_config(dir, "f16", half);
    assert!(log.contains("as f16"), "{log}");
    let all: u64 = entries(dir)
        .iter()
        .map(|p| p.metadata().unwrap().len())
        .sum();
    let f16_bytes = all - f32_bytes;
    // 24-byte headers aside, half the bytes.
    assert_eq!(f32_bytes - 60 * 24, 2 * (f16_bytes - 60 * 24));
    let diff = max_abs_diff(&f32_scores, &f16_scores);
    assert!(diff < 1e-2, "f16 inputs moved a score by {diff}");
}

/// The values of a `scores.npy`'s bytes.
fn scores(npy: &[u8]) -> Vec<f32> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), npy).unwrap();
    fairpo_io::read_npy_scores(tmp.path()).unwrap().data
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
        assert!(log.contains(": computing "), "{log}");
        assert!(!log.contains("trunk store hit"), "{log}");
        assert_ne!(f32_scores, bf16_scores, "the bf16 trunk gave f32's scores");
        // The f32 run still finds its own cache.
        let (log, again) = train(dir, "f32-again");
        assert!(
            log.contains("trunk store hit") && !log.contains("computing"),
            "{log}"
        );
        assert_eq!(f32_scores, again);
    } else {
        assert!(log.contains("bf16 was asked for, but"), "{log}");
        assert!(
            log.contains("trunk store hit") && !log.contains("computing"),
            "{log}"
        );
        assert_eq!(f32_scores, bf16_scores);
    }
}

/// With a reference, its logits on the stored trunk outputs are stored too: a FairPO run
/// reads them instead of running the reference, and trains as a run without the store.
#[test]
fn reference_logits_are_stored_beside_the_trunk_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "7", "100");
    train(dir, "sft");
    let cpo = |name: &str, train_lines: &str| {
        let p = config_train(dir, name, &format!("epochs = 3\n{train_lines}"));
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace(
                "[model]\n",
                "reference = \"runs/sft\"\n[model]\ninit_from = \"runs/sft\"\n",
            )
            .replace("epochs = 1\n", "")
            .replace("method = \"bce\"", "method = \"cpo\"");
        std::fs::write(&p, text).unwrap();
        train_config(dir, name, p)
    };
    let (log, first) = cpo("cpo", "");
    assert!(log.contains("reference logits: kept in"), "{log}");
    let logits_dir = log
        .lines()
        .find_map(|l| l.split("reference logits: kept in ").nth(1))
        .unwrap()
        .trim()
        .to_string();
    // Every training image of train2014 (90 % of its 80 images) has its logits.
    assert_eq!(
        files_under(&dir.join(&logits_dir), ".bin").len(),
        72,
        "{logits_dir}"
    );
    let (_, again) = cpo("cpo-again", "");
    assert_eq!(
        first, again,
        "a run reading stored logits trains as the one that wrote them"
    );
    let (log, live) = cpo("cpo-live", "feature_cache = false");
    assert!(!log.contains("reference logits"), "{log}");
    let diff = max_abs_diff(&first, &live);
    // Logits stored from epoch 1's batches are read in later epochs; only the batch
    // composition of their rounding differs from recomputing them.
    assert!(
        diff < 1e-5,
        "stored reference logits moved a score by {diff}"
    );
}

/// With `data.skip_corrupt`, an undecodable image is left out with the store as without it.
#[test]
fn skipped_images_are_left_out_as_without_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    generate(dir, "8", "60");
    let victim = std::fs::read_dir(dir.join("data/train2014"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    std::fs::write(&victim, b"not an image").unwrap();
    let run = |name: &str, lines: &str| {
        let cfg = config_train(dir, name, lines);
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("[data]\n", "[data]\nskip_corrupt = true\n");
        std::fs::write(&cfg, text).unwrap();
        train_config(dir, name, cfg)
    };
    let (log, stored) = run("stored", "");
    assert!(log.contains("trunk store"), "{log}");
    let (_, again) = run("again", "");
    let (_, live) = run("live", "feature_cache = false");
    assert_eq!(stored, live, "the store changed which images trained");
    assert_eq!(stored, again);
    // Every other image has an entry; the corrupt one has none.
    assert_eq!(entries(dir).len(), 59);
}
