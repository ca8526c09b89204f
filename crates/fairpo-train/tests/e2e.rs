//! End-to-end tests of the `fairpo` binary: generate a tiny demo set, train BCE-SFT then
//! FairPO-CPO on it, check every output file, resume an interrupted run, re-evaluate,
//! compare, and fail clearly on bad configs.
//!
//! Sizes are chosen for speed (200 images of 16 px, a 2-layer ViT of width 32, 2 epochs):
//! the whole file runs in seconds in the dev profile.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::fairpo;

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn fails(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{what} should have failed; stderr:\n{stderr}"
    );
    let last = stderr.lines().last().unwrap_or("").to_string();
    assert!(
        last.starts_with("error: "),
        "{what}: last line should be `error: ...`, got:\n{stderr}"
    );
    last
}

const TINY_MODEL: &str = common::TINY_SCRATCH_VIT;

fn write_config(dir: &Path, file: &str, body: &str) -> PathBuf {
    let common = r#"
[data]
format = "coco"
root = "data"

[data.preprocess]
size = 16

[train]
epochs = 2
batch_size = 32
eval_batch_size = 64
patience = 5
workers = 1
cache_dir = "cache"
"#;
    let path = dir.join(file);
    std::fs::write(&path, format!("{body}\n{common}")).unwrap();
    path
}

fn sft_config(dir: &Path) -> PathBuf {
    write_config(
        dir,
        "sft.toml",
        &format!(
            "name = \"sft\"\n{TINY_MODEL}\n[objective]\nmethod = \"bce\"\n\n[model]\ntrainable_layers = \"all\"\nheads_hidden = [16, 4]\n"
        ),
    )
}

fn cpo_config(dir: &Path, name: &str, reference: &str) -> PathBuf {
    write_config(
        dir,
        &format!("{name}.toml"),
        &format!(
            "name = \"{name}\"\nreference = \"{reference}\"\n[model]\ninit_from = \"runs/sft\"\ntrainable_layers = 1\nheads_hidden = [16, 4]\n\n[objective]\nmethod = \"cpo\"\nbeta = 0.5\nlambda_cpo = 0.5\nepsilon = 0.01\n"
        ),
    )
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn fraction(v: &serde_json::Value) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"));
    assert!((0.0..=1.0).contains(&x), "metric {x} not in [0, 1]");
    x
}

fn check_run_outputs(run: &Path, expect_alpha: bool) {
    for f in [
        "config.toml",
        "partition.json",
        "log.jsonl",
        "run.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "model.ckpt",
        "metrics.json",
        "scores.npy",
        "targets.npy",
        "report.md",
        "plots/losses.svg",
        "plots/val_map.svg",
        "plots/per_label_ap.svg",
    ] {
        assert!(
            run.join(f).is_file(),
            "{} is missing",
            run.join(f).display()
        );
    }
    assert_eq!(run.join("plots/alpha.svg").is_file(), expect_alpha);

    // partition.json: 16 demo labels, P = the ceil(0.2 * 16) = 4 least frequent.
    let part = read_json(&run.join("partition.json"));
    let labels = part["labels"].as_array().unwrap();
    let freqs: Vec<u64> = part["frequencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let privileged: Vec<usize> = part["privileged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(labels.len(), 16);
    assert_eq!(privileged.len(), 4);
    let max_p = privileged.iter().map(|&i| freqs[i]).max().unwrap();
    let min_rest = (0..16)
        .filter(|i| !privileged.contains(i))
        .map(|i| freqs[i])
        .min()
        .unwrap();
    assert!(
        max_p <= min_rest,
        "privileged labels must be the least frequent: {freqs:?} {privileged:?}"
    );

    // metrics.json: the groups × metrics object, as fractions.
    let m = read_json(&run.join("metrics.json"));
    for g in ["all", "privileged", "non_privileged"] {
        for k in ["map", "sample_f1", "emr", "accuracy"] {
            fraction(&m["groups"][g][k]);
        }
    }
    assert_eq!(m["split"], "test");
    assert_eq!(m["selected_on"], "val");
    assert_eq!(m["samples"], "all");

    // scores.npy / targets.npy: [N_test, 16], probabilities and 0/1.
    let scores = fairpo_io::read_npy_scores(run.join("scores.npy")).unwrap();
    let targets = fairpo_io::read_npy_targets(run.join("targets.npy")).unwrap();
    assert_eq!(scores.cols, 16);
    assert_eq!((scores.rows, scores.cols), (targets.rows, targets.cols));
    assert_eq!(scores.rows, 40, "the test split has 20 % of 200 images");
    assert!(scores.data.iter().all(|&s| (0.0..=1.0).contains(&s)));

    // log.jsonl: consecutive steps, one epoch line per epoch, α a distribution when used.
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "step").collect();
    let epochs: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] == "epoch").collect();
    assert_eq!(epochs.len(), 2);
    // 160 training images, 10 % (16) held out for validation: 144 / 32 -> 5 steps per epoch.
    assert_eq!(steps.len(), 10);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step"].as_u64().unwrap(), i as u64 + 1);
        assert!(s["loss"].as_f64().unwrap().is_finite());
        if expect_alpha {
            let a: Vec<f64> = s["alpha"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(a.len(), 2);
            assert!((a[0] + a[1] - 1.0).abs() < 1e-9 && a.iter().all(|&x| x > 0.0));
        } else {
            assert!(s["alpha"].is_null());
        }
    }
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("| P (privileged) |") && report.contains("plots/per_label_ap.svg"));
}

#[test]
fn sft_then_cpo_outputs_resume_eval_report_and_reference_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(
        &fairpo(
            &[
                "data", "generate", "--out", "data", "--seed", "3", "--images", "200", "--size",
                "16",
            ],
            dir,
        ),
        "data generate",
    );

    // BCE-SFT end to end (all layers trainable, no α).
    let sft = sft_config(dir);
    let out = ok(
        &fairpo(&["train", "--config", sft.to_str().unwrap()], dir),
        "train sft",
    );
    assert!(out.contains("report: runs/sft/report.md"), "{out}");
    check_run_outputs(&dir.join("runs/sft"), false);
    // Training again into the same folder needs --overwrite or --resume.
    let err = fails(
        &fairpo(&["train", "--config", sft.to_str().unwrap()], dir),
        "retrain",
    );
    assert!(
        err.contains("already exists") && err.contains("--overwrite"),
        "{err}"
    );

    // --overwrite refuses to delete a folder that is not a run folder.
    std::fs::create_dir_all(dir.join("runs/precious")).unwrap();
    std::fs::write(dir.join("runs/precious/thesis.tex"), "keep me").unwrap();
    let precious = write_config(
        dir,
        "precious.toml",
        &format!("name = \"precious\"\n{TINY_MODEL}\n[objective]\nmethod = \"bce\"\n"),
    );
    let err = fails(
        &fairpo(
            &[
                "train",
                "--config",
                precious.to_str().unwrap(),
                "--overwrite",
            ],
            dir,
        ),
        "overwrite of a non-run folder",
    );
    assert!(
        err.contains("does not look like a run folder") && err.contains("refusing to delete"),
        "{err}"
    );
    assert!(dir.join("runs/precious/thesis.tex").is_file());

    // FairPO-CPO from the SFT backbone, last layer trainable, reference = SFT.
    let cpo = cpo_config(dir, "cpo", "runs/sft");
    ok(
        &fairpo(&["train", "--config", cpo.to_str().unwrap()], dir),
        "train cpo",
    );
    check_run_outputs(&dir.join("runs/cpo"), true);
    let summary = read_json(&dir.join("runs/cpo/run.json"));
    assert_eq!(summary["trainable_layers"], 1);
    assert_eq!(summary["finished"], true);
    let full_metrics = read_json(&dir.join("runs/cpo/metrics.json"));
    let full_scores = fairpo_io::read_npy_scores(dir.join("runs/cpo/scores.npy")).unwrap();

    // Interrupted after 3 steps (mid-epoch), then resumed: the same final result.
    let cpo2 = cpo_config(dir, "cpo-resumed", "runs/sft");
    let out = ok(
        &fairpo(
            &[
                "train",
                "--config",
                cpo2.to_str().unwrap(),
                "--set",
                "train.stop_after_steps=3",
            ],
            dir,
        ),
        "interrupted cpo",
    );
    assert!(out.contains("interrupted at step 3"), "{out}");
    assert!(!dir.join("runs/cpo-resumed/metrics.json").exists());
    // An unfinished run cannot be evaluated; the message says so.
    let err = fails(
        &fairpo(&["eval", "--run", "runs/cpo-resumed"], dir),
        "eval of an unfinished run",
    );
    assert!(
        err.contains("not a finished run") && err.contains("model.ckpt"),
        "{err}"
    );
    // The debug stop is not part of the saved experiment: resuming without it trains to the end.
    ok(
        &fairpo(
            &["train", "--config", cpo2.to_str().unwrap(), "--resume"],
            dir,
        ),
        "resume cpo",
    );
    let resumed_metrics = read_json(&dir.join("runs/cpo-resumed/metrics.json"));
    assert_eq!(
        resumed_metrics["groups"], full_metrics["groups"],
        "resume changed the result"
    );
    assert_eq!(
        resumed_metrics["per_label_ap"],
        full_metrics["per_label_ap"]
    );
    let resumed_scores =
        fairpo_io::read_npy_scores(dir.join("runs/cpo-resumed/scores.npy")).unwrap();
    assert_eq!(
        resumed_scores.data, full_scores.data,
        "resumed scores differ"
    );
    let log = std::fs::read_to_string(dir.join("runs/cpo-resumed/log.jsonl")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\"kind\":\"step\""))
            .count(),
        10,
        "no duplicated log lines"
    );

    // eval re-computes the selected model's test metrics exactly.
    let out = ok(
        &fairpo(&["eval", "--run", "runs/cpo", "--json"], dir),
        "eval",
    );
    let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(eval["groups"], full_metrics["groups"]);
    assert!(dir.join("runs/cpo/eval-test.json").is_file());
    let err = fails(
        &fairpo(&["eval", "--run", "runs/cpo", "--split", "train"], dir),
        "eval of a bad split",
    );
    assert!(err.contains("train") && err.contains("test"), "{err}");
    let err = fails(
        &fairpo(&["eval", "--run", "runs/none"], dir),
        "eval of no run",
    );
    assert!(err.contains("runs/none is not a finished run"), "{err}");

    // report: the comparison table with Δ mAP(P) vs the SFT run.
    let out = ok(
        &fairpo(&["report", "runs/sft", "runs/cpo", "--out", "cmp"], dir),
        "report",
    );
    assert!(
        out.contains("| sft |") && out.contains("| cpo |") && out.contains("| ref |"),
        "{out}"
    );
    assert!(dir.join("cmp/report.md").is_file() && dir.join("cmp/map.svg").is_file());
    // ... and the paired bootstrap of cpo against sft: 8 intervals (4 metrics × 2 groups).
    assert!(out.contains("**Paired bootstrap against `sft`**"), "{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("| cpo | ") && l.contains('['))
        .unwrap_or_else(|| panic!("no bootstrap row for cpo in\n{out}"));
    assert_eq!(row.matches('[').count(), 8, "{row}");
    let md = std::fs::read_to_string(dir.join("cmp/report.md")).unwrap();
    assert!(md.contains(row), "report.md lacks the bootstrap row");
    // With several seeds each run is paired with the reference run of its seed. Seed 2's
    // "other" run is a copy of its reference, so the mean difference is half of cpo's.
    let as_seed = |from: &str, name: &str, seed: i64| {
        let to = dir.join("runs").join(name);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(dir.join("runs").join(from)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
        let path = to.join("config.toml");
        let mut cfg: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        cfg.insert("name".into(), name.into());
        let train = cfg.get_mut("train").and_then(|t| t.as_table_mut()).unwrap();
        train.insert("seed".into(), seed.into());
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    };
    as_seed("sft", "ref-s1", 1);
    as_seed("cpo", "ref-s2", 2);
    for seed in 1..=3 {
        as_seed("cpo", &format!("other-s{seed}"), seed);
    }
    let seeds = ok(
        &fairpo(
            &[
                "report",
                "runs/ref-s1",
                "runs/ref-s2",
                "runs/other-s1",
                "runs/other-s2",
                "runs/other-s3",
            ],
            dir,
        ),
        "report over seeds",
    );
    let mean_row = seeds
        .lines()
        .find(|l| l.starts_with("| other (mean of 2 seeds) | "))
        .unwrap_or_else(|| panic!("no mean-over-seeds bootstrap row in\n{seeds}"));
    assert!(
        mean_row.contains("left out: seed 3: no `ref` run with that seed"),
        "{mean_row}"
    );
    let first_delta = |r: &str| -> f64 {
        let cell = r.split(" | ").nth(1).unwrap().trim_start_matches("**");
        cell.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (one, mean) = (first_delta(row), first_delta(mean_row));
    // Both printed to 2 decimals.
    assert!((one / 2.0 - mean).abs() < 0.01, "{one} / 2 vs {mean}");
    // ... and every label's AP per run, rarest first, with the gain plot.
    assert!(out.contains("**Per-label test AP (%)**"), "{out}");
    let label_rows = out
        .lines()
        .skip_while(|l| !l.starts_with("| label | train images | P |"))
        .skip(2)
        .take_while(|l| l.starts_with("| "))
        .count();
    assert_eq!(label_rows, 16, "{out}");
    assert!(md.contains("(ap_gain.svg)") && dir.join("cmp/ap_gain.svg").is_file());
    // ... and what trained each run.
    let cpo_row = out
        .lines()
        .find(|l| l.starts_with("| runs/cpo | fairpo "))
        .unwrap_or_else(|| panic!("no provenance row for runs/cpo in\n{out}"));
    let summary = read_json(&dir.join("runs/cpo/run.json"));
    let config_hash = summary["config_sha256"].as_str().unwrap();
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(std::fs::read(dir.join("runs/cpo/config.toml")).unwrap());
    let want: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(config_hash, want, "run.json's config hash is config.toml's");
    assert!(cpo_row.contains(&config_hash[..12]), "{cpo_row}");
    assert!(
        summary["build"].as_str().unwrap().contains("(commit "),
        "{summary}"
    );
    assert!(!summary["device"].as_str().unwrap().is_empty(), "{summary}");

    // A reference trained on other labels is refused with a clear message.
    let bad_ref = dir.join("runs/sft-other-labels");
    std::fs::create_dir_all(&bad_ref).unwrap();
    for f in ["model.ckpt", "config.toml", "partition.json"] {
        std::fs::copy(dir.join("runs/sft").join(f), bad_ref.join(f)).unwrap();
    }
    let mut summary = read_json(&dir.join("runs/sft/run.json"));
    summary["labels"].as_array_mut().unwrap().pop();
    std::fs::write(bad_ref.join("run.json"), summary.to_string()).unwrap();
    let cfg = cpo_config(dir, "cpo-bad-ref", "runs/sft-other-labels");
    let err = fails(
        &fairpo(&["train", "--config", cfg.to_str().unwrap()], dir),
        "wrong label count",
    );
    assert!(err.contains("has 15 labels, this run has 16"), "{err}");

    // A reference with another backbone (here: fresh scratch weights) is refused too.
    let cfg = write_config(
        dir,
        "cpo-other-backbone.toml",
        &format!(
            "name = \"cpo-other-backbone\"\nreference = \"runs/sft\"\n{TINY_MODEL}\n[model]\ntrainable_layers = 1\nheads_hidden = [16, 4]\n[objective]\nmethod = \"cpo\"\n"
        ),
    );
    let err = fails(
        &fairpo(&["train", "--config", cfg.to_str().unwrap()], dir),
        "other backbone",
    );
    assert!(err.contains("different weights"), "{err}");
}

#[test]
fn bad_configs_fail_with_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    let typo = write_config(
        dir,
        "typo.toml",
        &format!("name = \"x\"\n{TINY_MODEL}\n[objective]\nmethod = \"bce\"\nbetta = 0.5\n"),
    );
    let err = fails(
        &fairpo(&["train", "--config", typo.to_str().unwrap()], dir),
        "unknown key",
    );
    assert!(
        err.contains("objective.betta") && err.contains("typo.toml"),
        "{err}"
    );

    let bad_set = write_config(
        dir,
        "ok.toml",
        &format!("name = \"x\"\n{TINY_MODEL}\n[objective]\nmethod = \"bce\"\n"),
    );
    let err = fails(
        &fairpo(
            &[
                "train",
                "--config",
                bad_set.to_str().unwrap(),
                "--set",
                "train.lrr=1",
            ],
            dir,
        ),
        "unknown --set key",
    );
    assert!(err.contains("train.lrr"), "{err}");

    let missing_ref = write_config(
        dir,
        "cpo.toml",
        &format!("name = \"c\"\nreference = \"runs/nope\"\n{TINY_MODEL}\n[objective]\nmethod = \"cpo\"\n"),
    );
    // No data yet: the data error comes first and names the folder.
    let err = fails(
        &fairpo(&["train", "--config", missing_ref.to_str().unwrap()], dir),
        "missing data",
    );
    assert!(
        err.contains("data: folder not found (dataset root)"),
        "{err}"
    );
    ok(
        &fairpo(
            &[
                "data", "generate", "--out", "data", "--seed", "1", "--images", "50", "--size",
                "16",
            ],
            dir,
        ),
        "data generate",
    );
    let err = fails(
        &fairpo(&["train", "--config", missing_ref.to_str().unwrap()], dir),
        "missing reference",
    );
    assert!(
        err.contains("runs/nope") && err.contains("not a finished run"),
        "{err}"
    );

    let no_ref = write_config(
        dir,
        "cpo2.toml",
        &format!("name = \"c2\"\n{TINY_MODEL}\n[objective]\nmethod = \"cpo\"\n"),
    );
    let err = fails(
        &fairpo(&["train", "--config", no_ref.to_str().unwrap()], dir),
        "no reference",
    );
    assert!(err.contains("needs a reference model"), "{err}");

    let err = fails(
        &fairpo(&["train", "--config", "nope.toml"], dir),
        "missing config",
    );
    assert!(err.contains("nope.toml"), "{err}");

    let err = fails(
        &fairpo(
            &[
                "train",
                "--config",
                bad_set.to_str().unwrap(),
                "--device",
                "cuda:0",
            ],
            dir,
        ),
        "cuda",
    );
    assert!(
        err.contains("device cuda:0")
            && err.contains("without CUDA support")
            && err.contains("--features cuda"),
        "{err}"
    );

    let err = fails(
        &fairpo(&["report", "runs/none"], dir),
        "report of a missing run",
    );
    assert!(err.contains("runs/none"), "{err}");
}
