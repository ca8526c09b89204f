//! `fairpo eval` sees the pixels training saw: a backbone whose `preprocessor_config.json`
//! differs from fairpo's defaults is recorded in the run's `config.toml` as resolved, so
//! re-evaluating the run reproduces its test metrics exactly.

mod common;

use common::fairpo;

#[test]
fn eval_uses_the_backbones_preprocessing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = fairpo(
        &[
            "data", "generate", "--out", "data", "--seed", "6", "--images", "120", "--size", "32",
        ],
        dir,
    );
    assert!(out.status.success(), "{out:?}");
    // The fairpo-vit fixture ViT (32 px, patch 8) with non-default normalisation.
    let vit = dir.join("vit");
    std::fs::create_dir_all(&vit).unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fairpo-vit/tests/fixtures/vit_tiny");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), vit.join(f)).unwrap();
    }
    std::fs::write(
        vit.join("preprocessor_config.json"),
        r#"{"do_resize": true, "size": {"height": 32, "width": 32}, "resample": 2,
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("run.toml"),
        r#"name = "hfpre"
[data]
format = "coco"
root = "data"
[data.preprocess]
size = 32
[model]
backbone = "vit"
trainable_layers = 1
heads_hidden = [8]
[objective]
method = "bce"
[train]
epochs = 1
workers = 1
cache_dir = "cache"
"#,
    )
    .unwrap();
    let out = fairpo(&["train", "--config", "run.toml"], dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = std::fs::read_to_string(dir.join("runs/hfpre/config.toml")).unwrap();
    assert!(
        saved.contains("0.229"),
        "config.toml does not record the backbone's std:\n{saved}"
    );
    let out = fairpo(&["eval", "--run", "runs/hfpre", "--json"], dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let trained: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("runs/hfpre/metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        eval["groups"], trained["groups"],
        "eval differs from the run's own test metrics"
    );
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("runs/hfpre/eval-test.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["per_label_ap"], trained["per_label_ap"]);
}
