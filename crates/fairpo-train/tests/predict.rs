//! `fairpo predict` on runs trained with every layer, the last layer (with the trunk-output
//! cache) and no layer of the ViT trainable: its probabilities for the test images equal the
//! ones the trainer's own evaluation wrote to `scores.npy`; CSV and JSON Lines agree; an
//! unreadable image is an error unless skipped, and then it is reported.

mod common;

use std::path::Path;

use common::{fairpo, run_ok, TINY_SCRATCH_VIT};

const COMMON: &str = r#"
[data]
format = "coco"
root = "data"

[data.preprocess]
size = 16

[train]
epochs = 1
batch_size = 32
eval_batch_size = 64
patience = 0
workers = 1
cache_dir = "cache"
"#;

fn config(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, format!("name = \"{name}\"\n{body}\n{COMMON}")).unwrap();
    path.display().to_string()
}

/// Rows of `scores.npy`, each sorted set of rows compared as a multiset.
fn sorted_rows(mut rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    rows.sort_by(|a, b| {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.total_cmp(y))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    rows
}

fn csv_rows(path: &Path, labels: usize) -> (Vec<String>, Vec<Vec<f32>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    assert_eq!(header.len(), 2 + labels, "{header:?}");
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            f[2..].iter().map(|v| v.parse::<f32>().unwrap()).collect()
        })
        .collect();
    (header, rows)
}

/// Generates 120 images with `seed` and trains `runs/sft` (BCE, every layer) on them.
fn train_sft(d: &Path, seed: &str) {
    run_ok(
        &[
            "data", "generate", "--out", "data", "--seed", seed, "--images", "120", "--size", "16",
        ],
        d,
        "generate",
    );
    let sft = config(
        d,
        "sft",
        &format!("{TINY_SCRATCH_VIT}\n[objective]\nmethod = \"bce\"\n\n[model]\ntrainable_layers = \"all\"\nheads_hidden = [16, 4]\n"),
    );
    run_ok(&["train", "--config", &sft], d, "train sft");
}

#[test]
fn predictions_equal_the_trainers_test_scores_for_every_trainable_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    train_sft(d, "3");
    let fine_tune = |name: &str, layers: &str, cache: bool| {
        let c = config(
            d,
            name,
            &format!("reference = \"runs/sft\"\n[model]\ninit_from = \"runs/sft\"\ntrainable_layers = {layers}\nheads_hidden = [16, 4]\n\n[objective]\nmethod = \"cpo\"\n"),
        );
        let cache = format!("train.feature_cache={cache}");
        run_ok(&["train", "--config", &c, "--set", &cache], d, name);
    };
    fine_tune("cpo1", "1", true);
    fine_tune("cpo0", "0", false);
    for run in ["sft", "cpo1", "cpo0"] {
        let scores =
            fairpo_io::read_npy_scores(d.join("runs").join(run).join("scores.npy")).unwrap();
        let out = d.join(format!("{run}.csv"));
        let stdout = run_ok(
            &[
                "predict",
                "--run",
                &format!("runs/{run}"),
                "--images",
                "data/val2014",
                "--out",
                &out.display().to_string(),
            ],
            d,
            "predict",
        );
        assert!(
            stdout.contains(&format!("{} images predicted", scores.rows)),
            "{stdout}"
        );
        let (header, rows) = csv_rows(&out, scores.cols);
        assert_eq!(&header[..2], ["path", "labels"]);
        assert_eq!(rows.len(), scores.rows);
        let want: Vec<Vec<f32>> = scores
            .data
            .chunks(scores.cols)
            .map(<[f32]>::to_vec)
            .collect();
        let (got, want) = (sorted_rows(rows), sorted_rows(want));
        let worst = got
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-6,
            "{run}: predict differs from scores.npy by {worst}"
        );
    }

    // JSON Lines: the same probabilities; labels above the threshold, most probable first.
    let jsonl = d.join("cpo1.jsonl");
    run_ok(
        &[
            "predict",
            "--run",
            "runs/cpo1",
            "--images",
            "data/val2014",
            "--out",
            &jsonl.display().to_string(),
            "--threshold",
            "0.1",
            "--top",
            "2",
        ],
        d,
        "predict jsonl",
    );
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let labels = first["labels"].as_array().unwrap();
    assert!(labels.len() <= 2, "{first}");
    let p = |l: &serde_json::Value| first[l.as_str().unwrap()].as_f64().unwrap();
    assert!(labels.iter().all(|l| p(l) >= 0.1));
    if labels.len() == 2 {
        assert!(p(&labels[0]) >= p(&labels[1]), "{first}");
    }

    // An unreadable image: an error naming it, or skipped and reported.
    let images = d.join("mixed");
    std::fs::create_dir(&images).unwrap();
    let some = std::fs::read_dir(d.join("data/val2014"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&some, images.join("good.png")).unwrap();
    std::fs::write(images.join("broken.png"), b"not an image").unwrap();
    let out = d.join("mixed.csv");
    let args = [
        "predict",
        "--run",
        "runs/sft",
        "--images",
        "mixed",
        "--out",
        "mixed.csv",
    ];
    let failed = fairpo(&args, d);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains("broken.png") && stderr.contains("--skip-unreadable"),
        "{stderr}"
    );
    assert!(
        !out.exists(),
        "a failed predict must not leave an output file"
    );
    let mut skip = args.to_vec();
    skip.push("--skip-unreadable");
    let skipped = fairpo(&skip, d);
    let stdout = String::from_utf8_lossy(&skipped.stdout);
    let stderr = String::from_utf8_lossy(&skipped.stderr);
    assert!(skipped.status.success(), "{stderr}");
    assert!(
        stdout.contains("1 images predicted, 1 unreadable skipped"),
        "{stdout}"
    );
    assert!(stderr.contains("broken.png"), "{stderr}");
    let (_, rows) = csv_rows(&out, 16);
    assert_eq!(rows.len(), 1);
}

/// Training keeps per-label thresholds chosen on the validation split; `predict` and `eval`
/// apply them with `--thresholds val-f1` and say so; without the file both say why.
#[test]
fn val_f1_thresholds_are_kept_and_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    train_sft(d, "4");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("runs/sft/thresholds.json")).unwrap())
            .unwrap();
    let partition: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("runs/sft/partition.json")).unwrap())
            .unwrap();
    let entries = file["labels"].as_array().unwrap();
    assert_eq!(entries.len(), partition["labels"].as_array().unwrap().len());
    assert_eq!(file["split"], "val");
    let thresholds: Vec<f64> = entries
        .iter()
        .map(|e| {
            assert!(e["val_f1"].is_null() || (0.0..=1.0).contains(&e["val_f1"].as_f64().unwrap()));
            e["threshold"].as_f64().unwrap()
        })
        .collect();
    assert!(thresholds.iter().all(|t| (0.0..=1.0).contains(t)));

    // predict: every row's labels are those at or above their own threshold.
    let out = d.join("val-f1.csv");
    let args = [
        "predict",
        "--run",
        "runs/sft",
        "--images",
        "data/val2014",
        "--out",
        "val-f1.csv",
        "--thresholds",
        "val-f1",
    ];
    run_ok(&args, d, "predict val-f1");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        let mut want: Vec<&str> = Vec::new();
        for (j, p) in f[2..].iter().enumerate() {
            if p.parse::<f64>().unwrap() >= thresholds[j] {
                want.push(header[2 + j]);
            }
        }
        let mut got: Vec<&str> = f[1].split(';').filter(|s| !s.is_empty()).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{line}");
    }

    // eval: the metrics name the thresholds they used.
    run_ok(
        &["eval", "--run", "runs/sft", "--thresholds", "val-f1"],
        d,
        "eval val-f1",
    );
    let eval: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("runs/sft/eval-test-val-f1.json")).unwrap(),
    )
    .unwrap();
    let used: Vec<f64> = eval["label_thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(used, thresholds);

    // --threshold and --thresholds exclude each other; a run without the file says why.
    let both = fairpo(&[&args[..], &["--threshold", "0.3"][..]].concat(), d);
    assert!(!both.status.success());
    std::fs::remove_file(d.join("runs/sft/thresholds.json")).unwrap();
    let missing = fairpo(&args, d);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && stderr.contains("thresholds.json is missing"),
        "{stderr}"
    );
}
