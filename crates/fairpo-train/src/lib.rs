//! The FairPO trainer library: everything the `fairpo` binary does, as functions
//! that tests and `xtask` can call too.
//!
//! - [`config`]: the run configuration (`[data]`, `[model]`, `[objective]`, `[scheduler]`,
//!   `[train]`), overlays and `--set` overrides ([`tomlx`]).
//! - [`trainer`]: the training loop around [`step::train_step`]; [`setup`]: backbone, policy and
//!   reference; [`checkpoint`]: resumable state; [`hidden`]: trunk outputs and the feature cache;
//!   [`model`]: the trainable policy and finished-model files; [`evaluate`]: inference +
//!   metrics; [`early_stop`]; [`container`]: the checkpoint file format; [`run`]: the run
//!   folder and `log.jsonl`; [`clip`]: global-norm gradient clipping.
//! - [`report`]: a run's `report.md` and the comparison of runs ([`plots`], [`paper`]).
//!
//! Commands: `fairpo train --config X.toml [--config overlay.toml] [--set k=v] [--resume |
//! --overwrite] [--device cpu|cuda:N]`, `fairpo eval --run runs/X [--split test|val]`,
//! `fairpo report runs/A runs/B ... [--out DIR]`; `cargo xtask train demo-cpo` runs the demo.

pub mod checkpoint;
pub mod clip;
pub mod cmd;
pub mod collapse;
pub mod config;
pub mod container;
pub mod device;
pub mod early_stop;
pub mod evaluate;
pub mod features;
pub mod hidden;
pub mod model;
pub mod paper;
pub mod plots;
pub mod report;
pub mod run;
pub mod setup;
pub mod step;
pub mod tomlx;
pub mod trainer;
