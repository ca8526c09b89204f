//! The FairPO trainer library: everything the `fairpo` binary does, as functions that tests
//! and `xtask` can call too. The binary's subcommands are [`cmd`]; the rest is private
//! modules, re-exported here where the binary's neighbours (tests, examples, the fuzzer)
//! use them. `docs/architecture.md` walks one training step through the modules:
//!
//! - `config/`: the run configuration (`[data]`, `[model]`, `[objective]`, `[scheduler]`,
//!   `[train]`) and its overlays and `--set` overrides (`config/overlay.rs`);
//! - `run.rs`: the run folder, `run.json` and `log.jsonl`;
//! - `setup.rs`: backbone, policy initialisation, reference, resolved preprocessing, loaders
//!   and finished runs — one place for train, eval and features;
//! - `policy.rs`: the trainable ViT tail + heads;
//! - `trunk_features.rs`: the frozen trunk's outputs, computed or read from the trunk store;
//! - `trunk_store.rs`: the on-disk, content-addressed store of those outputs;
//! - `step.rs`: one optimiser step ([`step::train_step`]), shared by the trainer and the
//!   benchmark; `clip.rs`, `collapse.rs`, `early_stop.rs`: its helpers;
//! - `train.rs`: the run-folder policy and the epoch loop; `replica.rs`: data parallelism (one
//!   replica per device, burn's collective all-reduce);
//! - `eval.rs`: inference, metrics and `metrics.json`;
//! - `checkpoint/`: resumable trainer state, the sections file format, finished-model files;
//! - `report/`: a run's `report.md`, the comparison of runs, plots and the paper's tables;
//! - `features.rs`: `fairpo features` files; `device.rs`: backend selection; `cuda_env.rs`:
//!   the CUDA prerequisites, probed before the GPU is touched;
//! - `random_backbone.rs`: a seeded random ViT as a Hugging Face folder;
//! - `selftest/`: `fairpo selftest` (parity, host kernels vs device, throughput, a short run).
//!
//! Commands: `fairpo train --config X.toml [--config overlay.toml] [--set k=v] [--resume |
//! --overwrite] [--device cpu|cuda:N | --devices cuda:0,cuda:1]`, `fairpo eval --run runs/X [--split test|val]`,
//! `fairpo report runs/A runs/B ... [--out DIR]`; `cargo xtask train demo-cpo` runs the demo.

mod checkpoint;
mod clip;
pub mod cmd;
mod collapse;
mod config;
// Used by the `cuda` build only; its logic is unit-tested in every build.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod cuda_env;
mod device;
mod early_stop;
mod eval;
mod features;
mod policy;
pub mod random_backbone;
pub mod replica;
mod report;
mod run;
pub mod selftest;
mod setup;
pub mod step;
mod thresholds;
mod train;
mod trunk_features;
mod trunk_store;

pub use checkpoint::model_file::{load_model, read_heads_safetensors, save_model, ModelMeta};
pub use checkpoint::sections::SectionFile;
pub use clip::ClipScope;
pub use config::{
    Group, InitHeads, ModelConfig, RunConfig, ScratchVit, SelectMetric, TrainSettings,
    TrainableLayers,
};
pub use features::{load_cached, sidecar_path, FeatureLayer, FeatureMeta};
pub use policy::Policy;
pub use run::read_log;
pub use thresholds::ThresholdRule;
pub use train::{train, train_data_parallel, TrainOptions, TrainOutcome};
