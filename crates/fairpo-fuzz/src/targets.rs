//! The parsers of user input, each as a fuzz target: a fixture tree copied into a work
//! folder, the one file in it that is mutated, and the call that reads it. A target passes
//! an input when the call returns (`Ok` or `Err`): panics, hangs and runaway allocations are
//! the failures (see [`crate::run_target`]).

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use fairpo_data::preprocess::PreprocessConfig;
use fairpo_data::{coco, list, nus, LoadOptions};

/// One parser under test.
pub struct Target {
    /// Name on the command line.
    pub name: &'static str,
    /// Fixture folder copied into the work folder (relative to the repository root), if any.
    pub tree: Option<&'static str>,
    /// The mutated file, relative to the work folder.
    pub file: &'static str,
    /// Seed inputs: repository-relative files, or inline text.
    pub seeds: &'static [Seed],
    /// Mutate only the first this many bytes (0 = anywhere): binary headers.
    pub focus: usize,
    /// Reads the work folder after the mutated file has been written.
    pub call: fn(&Path),
}

/// Where a seed input comes from.
pub enum Seed {
    /// A file of the repository.
    File(&'static str),
    /// Inline bytes.
    Text(&'static str),
    /// Made at set-up by a function (e.g. a checkpoint file).
    Made(fn(&Path) -> Vec<u8>),
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn opts() -> LoadOptions {
    LoadOptions::default()
}

fn tiny_checkpoint(dir: &Path) -> Vec<u8> {
    let device = Default::default();
    let vit = fairpo_vit::ViTConfig {
        hidden_size: 8,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 16,
        patch_size: 4,
        image_size: 8,
        ..fairpo_vit::ViTConfig::tiny()
    };
    let heads = fairpo_heads::HeadsConfig::new(2, 8).with_hidden(vec![4]);
    let meta = fairpo_train::ModelMeta {
        vit: vit.clone(),
        heads: heads.clone(),
        labels: vec!["a".into(), "b".into()],
    };
    let p = dir.join("seed-model.ckpt");
    fairpo_train::save_model::<Flex>(&p, &meta, vit.init(&device), heads.init(&device))
        .expect("writing the seed checkpoint");
    std::fs::read(p).expect("reading the seed checkpoint")
}

fn tiny_container(_: &Path) -> Vec<u8> {
    let mut c = fairpo_train::SectionFile::new();
    c.insert("state", br#"{"epoch": 1}"#.to_vec());
    c.insert("policy", vec![1, 2, 3, 4]);
    c.encode()
}

/// Every target.
pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "coco-json",
            tree: Some("crates/fairpo-data/tests/fixtures/coco"),
            file: "annotations/instances_train2014.json",
            seeds: &[
                Seed::File("crates/fairpo-data/tests/fixtures/coco/annotations/instances_train2014.json"),
                Seed::File("crates/fairpo-data/tests/fixtures/coco/annotations/instances_val2014.json"),
                Seed::File("crates/fairpo-data/tests/fixtures/coco_pyc/annotations/instances_val2014.json"),
            ],
            focus: 0,
            call: |d| {
                let _ = coco::load_instances(
                    &d.join("annotations/instances_train2014.json"),
                    &d.join("train2014"),
                    &opts(),
                );
            },
        },
        Target {
            name: "yolo-labels",
            tree: Some("crates/fairpo-data/tests/fixtures/yolo"),
            file: "labels/train2014/a.txt",
            seeds: &[
                Seed::File("crates/fairpo-data/tests/fixtures/yolo/labels/train2014/a.txt"),
                Seed::File("crates/fairpo-data/tests/fixtures/yolo/labels/train2014/b.txt"),
            ],
            focus: 0,
            call: |d| {
                let _ = coco::load_yolo(d, "train2014", &d.join("coco.names"), &opts());
            },
        },
        Target {
            name: "yolo-names",
            tree: Some("crates/fairpo-data/tests/fixtures/yolo"),
            file: "coco.names",
            seeds: &[Seed::File("crates/fairpo-data/tests/fixtures/yolo/coco.names")],
            focus: 0,
            call: |d| {
                let _ = coco::load_yolo(d, "train2014", &d.join("coco.names"), &opts());
            },
        },
        Target {
            name: "nus-image-list",
            tree: Some("crates/fairpo-data/tests/fixtures/nus"),
            file: "ImageList/TrainImagelist.txt",
            seeds: &[Seed::File("crates/fairpo-data/tests/fixtures/nus/ImageList/TrainImagelist.txt")],
            focus: 0,
            call: |d| {
                let _ = nus::load_official(d, "Train", &d.join("Flickr"), &opts());
            },
        },
        Target {
            name: "nus-concept-labels",
            tree: Some("crates/fairpo-data/tests/fixtures/nus"),
            file: "Groundtruth/TrainTestLabels/Labels_sky_Train.txt",
            seeds: &[Seed::File(
                "crates/fairpo-data/tests/fixtures/nus/Groundtruth/TrainTestLabels/Labels_sky_Train.txt",
            )],
            focus: 0,
            call: |d| {
                let _ = nus::load_official(d, "Train", &d.join("Flickr"), &opts());
            },
        },
        Target {
            name: "nus-concepts",
            tree: Some("crates/fairpo-data/tests/fixtures/nus"),
            file: "Concepts81.txt",
            seeds: &[Seed::File("crates/fairpo-data/tests/fixtures/nus/Concepts81.txt")],
            focus: 0,
            call: |d| {
                let _ = nus::load_official(d, "Train", &d.join("Flickr"), &opts());
            },
        },
        Target {
            name: "nus-combined",
            tree: Some("crates/fairpo-data/tests/fixtures/nus"),
            file: "Groundtruth/Labels_Train.txt",
            seeds: &[Seed::File("crates/fairpo-data/tests/fixtures/nus/Groundtruth/Labels_Train.txt")],
            focus: 0,
            call: |d| {
                let _ = nus::load_combined(d, "Train", &d.join("Flickr"), &opts());
            },
        },
        Target {
            name: "list-csv",
            tree: Some("crates/fairpo-data/tests/fixtures/list"),
            file: "train.csv",
            seeds: &[
                Seed::File("crates/fairpo-data/tests/fixtures/list/train.csv"),
                Seed::File("crates/fairpo-data/tests/fixtures/list/test.tsv"),
            ],
            focus: 0,
            call: |d| {
                let _ = list::load_list(&d.join("train.csv"), &d.join("labels.txt"), d, &opts());
            },
        },
        Target {
            name: "list-tsv",
            tree: Some("crates/fairpo-data/tests/fixtures/list"),
            file: "test.tsv",
            seeds: &[Seed::File("crates/fairpo-data/tests/fixtures/list/test.tsv")],
            focus: 0,
            call: |d| {
                let _ = list::load_list(&d.join("test.tsv"), &d.join("labels.txt"), d, &opts());
            },
        },
        Target {
            name: "npy",
            tree: None,
            file: "x.npy",
            seeds: &[
                Seed::File("crates/fairpo-metrics/tests/fixtures/ties_scores.npy"),
                Seed::File("crates/fairpo-metrics/tests/fixtures/nopriv_targets_i64.npy"),
                Seed::File("crates/fairpo-metrics/tests/fixtures/wide_targets_bool.npy"),
                Seed::File("crates/fairpo-metrics/tests/fixtures/wide_scores_f64.npy"),
            ],
            focus: 256,
            call: |d| {
                let p = d.join("x.npy");
                let _ = fairpo_io::read_npy_scores(&p);
                let _ = fairpo_io::read_npy_targets(&p);
                let _ = fairpo_io::read_npy_f32(&p);
            },
        },
        Target {
            name: "safetensors",
            tree: Some("crates/fairpo-vit/tests/fixtures/vit_tiny"),
            file: "model.safetensors",
            seeds: &[Seed::File("crates/fairpo-vit/tests/fixtures/vit_tiny/model.safetensors")],
            focus: 4096,
            call: |d| {
                let _ = fairpo_vit::read_tensors(&d.join("model.safetensors"));
                let _ = fairpo_vit::load_hf_dir::<Flex>(d, &Default::default());
            },
        },
        Target {
            name: "pytorch-bin",
            tree: None,
            file: "pytorch_model.bin",
            seeds: &[Seed::File("crates/fairpo-vit/tests/fixtures/vit_cls224/pytorch_model.bin")],
            focus: 0,
            call: |d| {
                let _ = fairpo_vit::read_tensors(&d.join("pytorch_model.bin"));
            },
        },
        Target {
            name: "vit-config-json",
            tree: None,
            file: "config.json",
            seeds: &[
                Seed::File("crates/fairpo-vit/tests/fixtures/vit_tiny/config.json"),
                Seed::File("crates/fairpo-vit/tests/fixtures/vit_cls224/config.json"),
            ],
            focus: 0,
            call: |d| {
                if let Ok(c) = fairpo_vit::ViTConfig::load(&d.join("config.json")) {
                    // A config that validates must build without panicking (small ones only:
                    // validate caps the size at fairpo_vit::MAX_PARAMETERS, beyond this
                    // process's memory cap).
                    if c.num_parameters().is_some_and(|n| n <= 10_000_000) {
                        let _ = c.try_init::<Flex>(&Default::default());
                    }
                }
            },
        },
        Target {
            name: "preprocessor-json",
            tree: None,
            file: "preprocessor_config.json",
            seeds: &[Seed::File("crates/fairpo-vit/tests/fixtures/vit_tiny/preprocessor_config.json")],
            focus: 0,
            call: |d| {
                let p = d.join("preprocessor_config.json");
                let _ = PreprocessConfig::default().apply_hf_preprocessor(&p);
            },
        },
        Target {
            name: "partition-json",
            tree: None,
            file: "partition.json",
            seeds: &[Seed::Text(
                r#"{"labels": ["a", "b", "c", "d"], "frequencies": [9, 5, 2, 1], "privileged": [2, 3]}"#,
            )],
            focus: 0,
            call: |d| {
                let _ = fairpo_metrics::Partition::load(d.join("partition.json"));
            },
        },
        Target {
            name: "config-toml",
            tree: None,
            file: "run.toml",
            seeds: &[
                Seed::File("configs/demo-cpo.toml"),
                Seed::File("configs/coco-cpo.toml"),
                Seed::File("configs/nus-gdro.toml"),
                Seed::File("configs/ablations/no-grpo.toml"),
            ],
            focus: 0,
            call: |d| {
                let p = d.join("run.toml");
                if let Ok(text) = std::fs::read_to_string(&p) {
                    let _ = fairpo_train::RunConfig::from_toml_str(&text, "run.toml");
                }
                let _ = fairpo_train::RunConfig::load(
                    &[repo().join("configs/demo-sft.toml"), p],
                    &[],
                );
            },
        },
        Target {
            name: "config-set",
            tree: None,
            file: "set.txt",
            seeds: &[
                Seed::Text("train.lr=1e-3"),
                Seed::Text("model.trainable_layers=\"all\""),
                Seed::Text("data.privileged={ names = [\"x\"] }"),
                Seed::Text("model.heads_hidden=[256, 64]"),
            ],
            focus: 0,
            call: |d| {
                let Ok(set) = std::fs::read_to_string(d.join("set.txt")) else {
                    return;
                };
                let _ = fairpo_train::RunConfig::load(&[repo().join("configs/demo-cpo.toml")], &[set]);
            },
        },
        Target {
            name: "checkpoint",
            tree: None,
            file: "model.ckpt",
            seeds: &[Seed::Made(tiny_checkpoint)],
            focus: 2048,
            call: |d| {
                let _ = fairpo_train::load_model::<Flex>(&d.join("model.ckpt"), &Default::default());
            },
        },
        Target {
            name: "container",
            tree: None,
            file: "last.ckpt",
            seeds: &[Seed::Made(tiny_container)],
            focus: 0,
            call: |d| {
                if let Ok(bytes) = std::fs::read(d.join("last.ckpt")) {
                    let _ = fairpo_train::SectionFile::decode(&bytes);
                }
            },
        },
    ]
}
