//! `fairpo features` end to end on the committed tiny model and images
//! (crates/fairpo-vit/tests/fixtures, made by scripts/fixtures/vit_reference.py).
//!
//! Expected features come from transformers' ViTImageProcessor + ViTModel on the same PNGs.
//! Tolerance 1e-4 absolute (f32; see crates/fairpo-vit/tests/parity.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

use fairpo_train::{load_cached, sidecar_path, FeatureLayer, FeatureMeta};
use fairpo_vit::TrunkPrecision;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fairpo-vit/tests/fixtures")
}

fn fairpo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fairpo"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fairpo")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_close(got: &fairpo_io::Matrix<f32>, want_npy: &str) {
    let want = fairpo_io::read_npy_f32(fixtures().join(want_npy)).unwrap();
    assert_eq!(
        (got.rows, got.cols),
        (want.rows, want.cols),
        "{want_npy}: shape"
    );
    let max = max_abs_diff(got, &want);
    assert!(max <= 1e-4, "{want_npy}: max abs diff {max}");
}

fn max_abs_diff(a: &fairpo_io::Matrix<f32>, b: &fairpo_io::Matrix<f32>) -> f32 {
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn directory_of_images_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f.npy");
    let model = fixtures().join("vit_tiny");
    let images = fixtures().join("images");
    let o = fairpo(&[
        "features",
        "--weights",
        s(&model),
        "--images",
        s(&images),
        "--out",
        s(&out),
        "--batch",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = fairpo_io::read_npy_f32(&out).unwrap();
    assert_close(&f, "images_cls.npy");

    // The sidecar describes the cache, and the cache is accepted for the same inputs ...
    let meta: FeatureMeta =
        serde_json::from_str(&std::fs::read_to_string(sidecar_path(&out)).unwrap()).unwrap();
    assert_eq!(meta.layer, FeatureLayer::Cls);
    assert_eq!((meta.num_images, meta.dim), (3, 64));
    assert_eq!(meta.weights_sha256.len(), 64);
    assert_eq!(meta.preprocess.size, 32);
    assert_eq!(load_cached(&out, &meta).unwrap().data, f.data);
    // ... and refused when the weights or the layer differ.
    let mut stale = meta.clone();
    stale.weights_sha256 = "0".repeat(64);
    stale.layer = FeatureLayer::After(1);
    let err = load_cached(&out, &stale).unwrap_err().to_string();
    assert!(
        err.contains("stale") && err.contains("weights") && err.contains("layer"),
        "{err}"
    );
}

#[test]
fn list_file_and_intermediate_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let imgs = fixtures().join("images");
    let list = tmp.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "# three images\n{}\n{}\n\n{}\n",
            s(&imgs.join("a.png")),
            s(&imgs.join("b.png")),
            s(&imgs.join("c.png"))
        ),
    )
    .unwrap();
    let out = tmp.path().join("f1.npy");
    let o = fairpo(&[
        "features",
        "--weights",
        s(&fixtures().join("vit_tiny")),
        "--images",
        s(&list),
        "--out",
        s(&out),
        "--layer",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_close(
        &fairpo_io::read_npy_f32(&out).unwrap(),
        "images_layer1_cls.npy",
    );
}

/// `--precision bf16`: the layers before the last run in bf16 where this CPU has the AMX
/// tile unit (else f32, said in the log). The features stay close to transformers' f32 ones,
/// and the sidecar records what ran, so an f32 cache is not mistaken for it.
#[test]
fn bf16_precision_is_close_to_f32_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f.npy");
    let o = Command::new(env!("CARGO_BIN_EXE_fairpo"))
        .args([
            "features",
            "--weights",
            s(&fixtures().join("vit_tiny")),
            "--images",
            s(&fixtures().join("images")),
            "--out",
            s(&out),
            "--precision",
            "bf16",
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    let got = fairpo_io::read_npy_f32(&out).unwrap();
    let want = fairpo_io::read_npy_f32(fixtures().join("images_cls.npy")).unwrap();
    let meta: FeatureMeta =
        serde_json::from_str(&std::fs::read_to_string(sidecar_path(&out)).unwrap()).unwrap();
    let max = max_abs_diff(&got, &want);
    match meta.trunk_precision {
        TrunkPrecision::Bf16 => {
            assert!(
                log.contains("frozen layers: bf16 products on the AMX tile unit in 1 layer"),
                "{log}"
            );
            // Measured 1.1e-2 (values of size ~2): bf16 operands in one layer.
            assert!(max > 0.0 && max < 5e-2, "max abs diff {max}");
            for (g, w) in got.data.chunks(got.cols).zip(want.data.chunks(want.cols)) {
                let dot: f32 = g.iter().zip(w).map(|(a, b)| a * b).sum();
                let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
                let cosine = dot / (norm(g) * norm(w));
                assert!(cosine > 0.9995, "cosine {cosine}");
            }
        }
        TrunkPrecision::F32 => {
            assert!(log.contains("bf16 was asked for, but"), "{log}");
            assert!(max <= 1e-4, "the f32 fallback must be f32: {max}");
        }
    }
    let mut f32_meta = meta.clone();
    f32_meta.trunk_precision = TrunkPrecision::F32;
    if meta.trunk_precision == TrunkPrecision::Bf16 {
        let err = load_cached(&out, &f32_meta).unwrap_err().to_string();
        assert!(err.contains("trunk precision"), "{err}");
    }
}

fn expect_error(args: &[&str], needles: &[&str]) {
    let o = fairpo(args);
    assert!(!o.status.success(), "expected failure for {args:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f.npy");
    let model = fixtures().join("vit_tiny");
    let images = fixtures().join("images");
    let base = |m: &Path, i: &Path| {
        vec![
            "features".to_string(),
            "--weights".into(),
            s(m).into(),
            "--images".into(),
            s(i).into(),
            "--out".into(),
            s(&out).into(),
        ]
    };
    let run = |args: Vec<String>, needles: &[&str]| {
        let a: Vec<&str> = args.iter().map(|x| x.as_str()).collect();
        expect_error(&a, needles);
    };
    // Missing model folder.
    let missing = tmp.path().join("no_model");
    run(base(&missing, &images), &["no_model", "does not exist"]);
    // No images.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    run(base(&model, &empty), &["no images found", "empty"]);
    // An unreadable image names the file.
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(images.join("a.png"), bad.join("a.png")).unwrap();
    std::fs::write(bad.join("broken.png"), b"not a png").unwrap();
    run(base(&model, &bad), &["broken.png"]);
    assert!(!out.exists(), "no output on failure");
    // A layer beyond the model.
    let mut a = base(&model, &images);
    a.extend(["--layer".into(), "7".into()]);
    run(a, &["--layer 7", "2 encoder layers"]);
    // CUDA in a CPU build.
    #[cfg(not(feature = "cuda"))]
    {
        let mut a = base(&model, &images);
        a.extend(["--device".into(), "cuda:0".into()]);
        run(a, &["cuda:0", "--features cuda"]);
    }
    // Config/weights mismatch.
    let wrong = tmp.path().join("wrong_model");
    std::fs::create_dir(&wrong).unwrap();
    for f in ["model.safetensors", "preprocessor_config.json"] {
        std::fs::copy(model.join(f), wrong.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(model.join("config.json"))
        .unwrap()
        .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    std::fs::write(wrong.join("config.json"), cfg).unwrap();
    run(
        base(&wrong, &images),
        &["do not match", "missing tensor encoder.layer.2"],
    );
}
