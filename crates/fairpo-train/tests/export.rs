//! `fairpo export`: transformers (through `python/fairpo_load.py`) and fairpo compute the same
//! probabilities from an exported folder (committed fixture, made by
//! scripts/fixtures/export_transformers.py), an export holds exactly the run's weights, and
//! training from an export (`model.init_from`) is training from the run.

mod common;

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{activation::sigmoid, Tensor, TensorData};
use common::{fairpo, run_ok, TINY_SCRATCH_VIT};
use fairpo_data::{PreprocessConfig, Preprocessor};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/export")
}

/// fairpo's probabilities for `images` from an export folder read back as a backbone plus
/// its heads.
fn probabilities(export: &Path, images: &[PathBuf]) -> Vec<Vec<f32>> {
    let device = Default::default();
    let vit = fairpo_vit::load_hf_dir::<Flex>(export, &device).unwrap();
    let (heads, _) =
        fairpo_train::read_heads_safetensors::<Flex>(&export.join("model.safetensors"), &device)
            .unwrap();
    let mut cfg = PreprocessConfig::default();
    cfg.apply_hf_preprocessor(&export.join("preprocessor_config.json"))
        .unwrap();
    let size = cfg.size;
    let pre = Preprocessor::new(cfg).unwrap();
    let pixels: Vec<f32> = images.iter().flat_map(|p| pre.load(p).unwrap()).collect();
    let x = Tensor::<Flex, 4>::from_data(
        TensorData::new(pixels, [images.len(), 3, size, size]),
        &device,
    );
    let p = sigmoid(heads.forward(vit.model.forward(x)));
    let t = p.dims()[1];
    let v = p.into_data().to_vec::<f32>().unwrap();
    v.chunks(t).map(<[f32]>::to_vec).collect()
}

#[test]
fn fairpo_reads_an_export_as_transformers_does() {
    let dir = fixture();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let images: Vec<PathBuf> = expected["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| dir.join("images").join(n.as_str().unwrap()))
        .collect();
    let got = probabilities(&dir.join("model"), &images);
    let want = expected["probabilities"].as_array().unwrap();
    let mut worst = 0f64;
    for (g, w) in got.iter().zip(want) {
        for (a, b) in g.iter().zip(w.as_array().unwrap()) {
            worst = worst.max((f64::from(*a) - b.as_f64().unwrap()).abs());
        }
    }
    assert_eq!(got.len(), want.len());
    // Measured 6e-8 (f32 summation order).
    assert!(worst < 1e-5, "max |fairpo − transformers| = {worst}");
}

#[test]
fn an_export_holds_the_runs_model_and_refuses_what_it_cannot_express() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    run_ok(
        &[
            "data", "generate", "--out", "data", "--seed", "5", "--images", "60", "--size", "16",
        ],
        d,
        "generate",
    );
    let cfg = d.join("sft.toml");
    std::fs::write(
        &cfg,
        format!("name = \"sft\"\n[data]\nformat = \"coco\"\nroot = \"data\"\n[data.preprocess]\nsize = 16\n[model]\ntrainable_layers = \"all\"\nheads_hidden = [8]\n{TINY_SCRATCH_VIT}\n[objective]\nmethod = \"bce\"\n[train]\nepochs = 1\nworkers = 1\n"),
    )
    .unwrap();
    run_ok(&["train", "--config", cfg.to_str().unwrap()], d, "train");
    run_ok(
        &["export", "--run", "runs/sft", "--out", "exported"],
        d,
        "export",
    );
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("exported/labels.json")).unwrap())
            .unwrap();
    let partition: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("runs/sft/partition.json")).unwrap())
            .unwrap();
    assert_eq!(labels["labels"], partition["labels"]);
    assert_eq!(labels["privileged"], partition["privileged"]);

    // The exported tensors are the run's, value for value.
    let device = Default::default();
    let run = fairpo_train::load_model::<Flex>(&d.join("runs/sft/model.ckpt"), &device).unwrap();
    let back = fairpo_vit::load_hf_dir::<Flex>(&d.join("exported"), &device).unwrap();
    let cfg = &run.meta.vit;
    assert_eq!(back.config, *cfg);
    assert_eq!(
        fairpo_vit::hf_tensors(&run.vit, cfg).unwrap(),
        fairpo_vit::hf_tensors(&back.model, cfg).unwrap()
    );
    let (heads, _) = fairpo_train::read_heads_safetensors::<Flex>(
        &d.join("exported/model.safetensors"),
        &device,
    )
    .unwrap();
    for ((w1, b1), (w2, b2)) in run.heads.to_stacked().into_iter().zip(heads.to_stacked()) {
        assert_eq!(w1.into_data(), w2.into_data());
        assert_eq!(b1.into_data(), b2.into_data());
    }

    // The export is a starting point like the run itself: a fine-tune from either follows
    // the same trajectory to the same test scores.
    let finetune = |name: &str, from: &str| {
        let cfg = d.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!("name = \"{name}\"\n[data]\nformat = \"coco\"\nroot = \"data\"\n[data.preprocess]\nsize = 16\n[model]\ninit_from = \"{from}\"\ntrainable_layers = 1\nheads_hidden = [8]\n[objective]\nmethod = \"bce\"\n[train]\nepochs = 1\nworkers = 1\n"),
        )
        .unwrap();
        run_ok(&["train", "--config", cfg.to_str().unwrap()], d, name);
        fairpo_io::read_npy_scores(d.join("runs").join(name).join("scores.npy")).unwrap()
    };
    let from_run = finetune("from-run", "runs/sft");
    let from_export = finetune("from-export", "exported");
    let log = std::fs::read_to_string(d.join("runs/from-export/run.json")).unwrap();
    assert!(log.contains("init_from export"), "{log}");
    assert_eq!(from_run.shape(), from_export.shape());
    let diff = from_run
        .data
        .iter()
        .zip(&from_export.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff < 1e-6,
        "fine-tunes from the run and its export differ by {diff}"
    );

    // A resize-then-crop run has no ViTImageProcessor equivalent: refused, naming the field.
    let config = d.join("runs/sft/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let cropped = text.replace("resize = \"direct\"", "resize = \"shorter_side_crop\"");
    assert_ne!(text, cropped, "the run's config names its resize mode");
    std::fs::write(&config, cropped).unwrap();
    let out = fairpo(&["export", "--run", "runs/sft", "--out", "cropped"], d);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("data.preprocess.resize"),
        "{stderr}"
    );
}
