//! The training loop: per batch, the frozen trunk's output (inner backend) goes through
//! [`crate::step::train_step`] (policy tail + heads → objective → scheduler α → backward →
//! clipping → AdamW on the policy only); per epoch, validation, early stopping and a
//! resumable checkpoint; at the end, the test evaluation of the selected model.
//!
//! Exact resume: the data order of epoch e is `epoch_order(train, seed, e)`, augmentation is
//! seeded per (seed, epoch, image) by fairpo-data, and the objective's random choices at
//! step s come from [`step_rng`]`(seed, s)`; so a checkpoint only needs the model and
//! optimizer records, the scheduler state, the epoch, the batches done in it and the step.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use fairpo_data::{BatchLoader, DataSplits, Dataset, LoaderConfig};
use fairpo_grpo::SchedulerState;
use fairpo_heads::{Heads, HeadsConfig};
use fairpo_metrics::Partition;
use fairpo_vit::{record_from_bytes, record_to_bytes, ViT, ViTConfig, ViTTail};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::{RunConfig, TrainableLayers};
use crate::container::Container;
use crate::early_stop::{EarlyStopping, EpochVerdict};
use crate::evaluate::{self, Evaluation};
use crate::hidden::HiddenSource;
use crate::model::{self, ModelMeta, Policy};
use crate::report;
use crate::run::{EpochLine, GroupValues, JsonLog, RunPaths, RunSummary, StepLine};
use crate::step::{self, Pairs, StepSettings};

/// Set by the Ctrl-C handler; the trainer checkpoints and stops at the next step.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How `fairpo train` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `checkpoints/last.ckpt`.
    pub resume: bool,
    /// Replace an existing run folder.
    pub overwrite: bool,
}

/// How training ended.
#[derive(Debug)]
pub enum TrainOutcome {
    /// Finished: test metrics written.
    Finished {
        /// The run folder.
        run_dir: PathBuf,
        /// Test evaluation of the selected model.
        test: Box<Evaluation>,
    },
    /// Stopped early by Ctrl-C or `train.stop_after_steps`; resumable.
    Interrupted {
        /// The run folder.
        run_dir: PathBuf,
        /// Global step at the checkpoint.
        step: u64,
    },
}

/// Everything that changes during training besides the weights and optimizer moments.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TrainerState {
    /// Epoch in progress (0-based).
    pub epoch: usize,
    /// Batches of that epoch already trained.
    pub batches_done: usize,
    /// Optimiser steps so far.
    pub step: u64,
    /// Early-stopping tracker.
    pub early: EarlyStopping,
    /// Group-weight scheduler state.
    pub scheduler: SchedulerState,
    /// Bytes of `log.jsonl` that belong to the state (a resume truncates to this).
    pub log_len: u64,
    /// Running sums of the current epoch's training loss.
    pub epoch_loss_sum: f64,
    /// Steps in that sum.
    pub epoch_loss_steps: usize,
    /// Seconds spent in the current epoch before the checkpoint.
    pub epoch_seconds: f64,
    /// Total training seconds so far.
    pub train_seconds: f64,
    /// Training loop over (early stop or last epoch); only the final evaluation is left.
    pub done: bool,
    /// Seed the run was started with (pair sampling streams derive from it and the step).
    pub seed: u64,
}

/// The RNG for the objective's random choices at `step`: a fresh ChaCha8 stream keyed by
/// (seed, step), so a resumed run draws exactly what an uninterrupted one would.
pub fn step_rng(seed: u64, step: u64) -> rand_chacha::ChaCha8Rng {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    rand_chacha::ChaCha8Rng::seed_from_u64(z ^ (z >> 31))
}

/// A backbone ready for training: the whole ViT before splitting and where it came from.
pub struct Backbone<B: Backend> {
    /// The model.
    pub vit: ViT<B>,
    /// Its architecture.
    pub config: ViTConfig,
    /// Human-readable origin.
    pub source: String,
    /// The `model.init_from` run's heads, their architecture and label names.
    pub init_heads: Option<InitRunHeads<B>>,
}

/// The label heads of a finished run, as `model.init_from` finds them.
pub struct InitRunHeads<B: Backend> {
    /// The run folder they come from.
    pub run: PathBuf,
    /// Their architecture.
    pub config: HeadsConfig,
    /// Label names, in head order.
    pub labels: Vec<String>,
    /// The weights.
    pub heads: Heads<B>,
}

impl<B: Backend> std::fmt::Debug for Backbone<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone")
            .field("source", &self.source)
            .finish()
    }
}

/// Builds the backbone named by `[model]`.
pub fn load_backbone<B: Backend>(cfg: &RunConfig, device: &B::Device) -> Result<Backbone<B>> {
    let m = &cfg.model;
    if let Some(run) = &m.init_from {
        let paths = RunPaths::new(run);
        let model_path = paths.model();
        if !model_path.is_file() {
            bail!(
                "model.init_from = {}: no finished model there ({} is missing); train that run first",
                run.display(),
                model_path.display()
            );
        }
        let fm = model::load_model::<B>(&model_path, device)
            .with_context(|| format!("model.init_from = {}", run.display()))?;
        let heads_copied = m.heads_from_init();
        return Ok(Backbone {
            config: fm.meta.vit.clone(),
            vit: fm.vit,
            source: format!(
                "init_from {} ({} heads)",
                run.display(),
                if heads_copied { "copied" } else { "fresh" }
            ),
            init_heads: Some(InitRunHeads {
                run: run.clone(),
                config: fm.meta.heads,
                labels: fm.meta.labels,
                heads: fm.heads,
            }),
        });
    }
    if let Some(dir) = &m.backbone {
        let loaded = fairpo_vit::load_hf_dir::<B>(dir, device)
            .with_context(|| format!("model.backbone = {}", dir.display()))?;
        return Ok(Backbone {
            vit: loaded.model,
            config: loaded.config,
            source: format!("hf {}", dir.display()),
            init_heads: None,
        });
    }
    let scratch = m
        .scratch
        .as_ref()
        .ok_or_else(|| anyhow!("no backbone configured"))?;
    let config = scratch.vit_config();
    // Seed burn's RNG so a from-scratch backbone is the same on every run with this seed.
    B::seed(device, cfg.train.seed);
    let vit = config
        .try_init::<B>(device)
        .context("model.scratch: building the ViT")?;
    Ok(Backbone {
        vit,
        config,
        source: "scratch".into(),
        init_heads: None,
    })
}

/// Builds the trainable policy on top of `tail`: the heads are copied from the
/// `model.init_from` run when `model.init_heads` resolves to it (the default with
/// `init_from`: Algorithm 2, line 1, starts the policy as a copy of the reference), and
/// are fresh, seeded by `train.seed`, otherwise. Returns the policy and its heads'
/// architecture.
pub fn init_policy<B: Backend>(
    cfg: &RunConfig,
    tail: ViTTail<B>,
    init_heads: Option<InitRunHeads<B>>,
    labels: &[String],
    input_dim: usize,
    device: &B::Device,
) -> Result<(Policy<B>, HeadsConfig)> {
    let heads_cfg = HeadsConfig::new(labels.len(), input_dim)
        .with_hidden(cfg.model.heads_hidden.clone())
        .with_seed(cfg.train.seed);
    if let Some(file) = &cfg.model.heads_file {
        if cfg.model.heads_from_init() {
            bail!("model.heads_file and heads copied from model.init_from exclude each other; set model.init_heads = \"fresh\" to take the heads from the file");
        }
        let (heads, file_cfg) = model::read_heads_safetensors::<B>(file, device)
            .with_context(|| format!("model.heads_file = {}", file.display()))?;
        if file_cfg.num_labels != labels.len()
            || file_cfg.input_dim != input_dim
            || file_cfg.hidden != cfg.model.heads_hidden
        {
            bail!(
                "model.heads_file = {}: heads for {} labels, {} -> {:?} -> 1; this run needs {} labels, {} -> {:?} -> 1 (model.heads_hidden)",
                file.display(),
                file_cfg.num_labels,
                file_cfg.input_dim,
                file_cfg.hidden,
                labels.len(),
                input_dim,
                cfg.model.heads_hidden
            );
        }
        return Ok((Policy { tail, heads }, heads_cfg));
    }
    if !cfg.model.heads_from_init() {
        let heads = heads_cfg.init::<B>(device);
        return Ok((Policy { tail, heads }, heads_cfg));
    }
    let init = init_heads.ok_or_else(|| {
        anyhow!("model.init_heads = \"init_from\": the backbone did not come from a model.init_from run")
    })?;
    let fix = "or set model.init_heads = \"fresh\" to start new heads";
    let run = init.run.display();
    if init.labels.len() != labels.len() || init.config.num_labels != labels.len() {
        bail!(
            "model.init_heads = \"init_from\": {run} has heads for {} labels, this run has {} labels; initialise from a run trained on the same label set, {fix}",
            init.config.num_labels,
            labels.len()
        );
    }
    if let Some(i) = init.labels.iter().zip(labels).position(|(a, b)| a != b) {
        bail!(
            "model.init_heads = \"init_from\": head {i} of {run} is label {:?}, here it is {:?}; initialise from a run trained on the same labels in the same order, {fix}",
            init.labels[i],
            labels[i]
        );
    }
    if init.config.input_dim != input_dim || init.config.hidden != cfg.model.heads_hidden {
        bail!(
            "model.init_heads = \"init_from\": the heads of {run} are {} -> {:?} -> 1, this run's are {} -> {:?} -> 1 (model.heads_hidden); make them match, {fix}",
            init.config.input_dim,
            init.config.hidden,
            input_dim,
            cfg.model.heads_hidden
        );
    }
    Ok((
        Policy {
            tail,
            heads: init.heads,
        },
        heads_cfg,
    ))
}

/// Applies the `model.backbone` folder's `preprocessor_config.json`, when it has one, to
/// `data.preprocess` (also with `init_from`: a `backbone` named beside it supplies the
/// preprocessing both runs share).
pub fn resolve_preprocessing(cfg: &mut RunConfig) -> Result<()> {
    if let Some(dir) = &cfg.model.backbone {
        let pp = dir.join("preprocessor_config.json");
        if pp.is_file() {
            cfg.data
                .preprocess
                .apply_hf_preprocessor(&pp)
                .with_context(|| format!("applying {}", pp.display()))?;
        }
    }
    Ok(())
}

/// Resolves `trainable_layers` against the backbone depth.
pub fn resolve_trainable(t: TrainableLayers, layers: usize) -> Result<usize> {
    match t {
        TrainableLayers::All => Ok(layers),
        TrainableLayers::Last(k) if k <= layers => Ok(k),
        TrainableLayers::Last(k) => {
            bail!("model.trainable_layers = {k}, but the backbone has only {layers} encoder layers")
        }
    }
}

/// Loads the reference run (`reference = "runs/<sft>"`) and checks it fits this run.
fn load_reference<IB: Backend>(
    reference: &Path,
    labels: &[String],
    vit_cfg: &ViTConfig,
    k: usize,
    trunk_fp: &str,
    device: &IB::Device,
) -> Result<Policy<IB>> {
    let rp = RunPaths::new(reference);
    let model_path = rp.model();
    if !model_path.is_file() {
        bail!(
            "reference = {}: not a finished run ({} is missing); train the BCE-SFT reference first (cargo xtask train <dataset>-sft)",
            reference.display(),
            model_path.display()
        );
    }
    let summary = crate::run::read_summary(&rp)?;
    if summary.labels.len() != labels.len() {
        bail!(
            "reference = {}: it has {} labels, this run has {}: a reference must be trained on the same label set",
            reference.display(),
            summary.labels.len(),
            labels.len()
        );
    }
    if summary.labels != labels {
        let i = summary
            .labels
            .iter()
            .zip(labels)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        bail!(
            "reference = {}: label {i} is {:?} there but {:?} here: a reference must be trained on the same labels in the same order",
            reference.display(),
            summary.labels[i],
            labels[i]
        );
    }
    let fm = model::load_model::<IB>(&model_path, device)
        .with_context(|| format!("reference = {}", reference.display()))?;
    if &fm.meta.vit != vit_cfg {
        bail!(
            "reference = {}: its backbone architecture differs from this run's ({:?} vs {:?})",
            reference.display(),
            fm.meta.vit,
            vit_cfg
        );
    }
    let (ref_trunk, ref_tail) = fm.vit.split(k);
    let ref_fp = model::trunk_fingerprint(&ref_trunk);
    if ref_fp != trunk_fp {
        bail!(
            "reference = {}: its frozen backbone (layers below the last {k}) has different weights than this run's, so its last layer cannot share this run's trunk; initialise this run from it (model.init_from = \"{}\")",
            reference.display(),
            reference.display()
        );
    }
    Ok(Policy {
        tail: ref_tail,
        heads: fm.heads,
    })
}

fn loader(
    dataset: &Arc<Dataset>,
    cfg: &RunConfig,
    batch: usize,
    augment: bool,
) -> Result<BatchLoader> {
    let lc = LoaderConfig {
        batch_size: batch,
        shuffle: false,
        seed: cfg.train.seed,
        drop_last: false,
        prefetch: 2,
        threads: cfg.train.workers,
        pixels: true,
        augment,
        skip_corrupt: cfg.data.skip_corrupt,
    };
    Ok(BatchLoader::new(
        Arc::clone(dataset),
        cfg.data.preprocess.clone(),
        lc,
    )?)
}

fn save_last<B: AutodiffBackend, O: Optimizer<Policy<B>, B>>(
    paths: &RunPaths,
    state: &TrainerState,
    policy: &Policy<B>,
    optim: &O,
) -> Result<()> {
    let mut c = Container::new();
    c.insert("state", serde_json::to_vec_pretty(state)?);
    c.insert(
        "policy",
        record_to_bytes(policy.clone()).map_err(|e| anyhow!("serialising the policy: {e}"))?,
    );
    let optim_bytes = BinBytesRecorder::<FullPrecisionSettings>::default()
        .record(optim.to_record(), ())
        .map_err(|e| anyhow!("serialising the optimizer state: {e}"))?;
    c.insert("optim", optim_bytes);
    fairpo_io::atomic_write(paths.last_checkpoint(), &c.encode())?;
    Ok(())
}

/// Reads `checkpoints/last.ckpt` into a policy and optimizer of the run's structure.
fn load_last<B: AutodiffBackend, O: Optimizer<Policy<B>, B>>(
    paths: &RunPaths,
    policy: Policy<B>,
    optim: O,
    device: &B::Device,
) -> Result<(TrainerState, Policy<B>, O)> {
    let p = paths.last_checkpoint();
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let mut c = Container::decode(&bytes).with_context(|| format!("{}", p.display()))?;
    let state: TrainerState = serde_json::from_slice(c.get("state")?)
        .with_context(|| format!("{}: state", p.display()))?;
    let policy = record_from_bytes(policy, c.take("policy")?, device)
        .map_err(|e| anyhow!("{}: policy: {e}", p.display()))?;
    let rec = BinBytesRecorder::<FullPrecisionSettings>::default()
        .load(c.take("optim")?, device)
        .map_err(|e| anyhow!("{}: optimizer state: {e}", p.display()))?;
    Ok((state, policy, optim.load_record(rec)))
}

fn save_best<B: Backend>(paths: &RunPaths, epoch: usize, policy: &Policy<B>) -> Result<()> {
    let mut c = Container::new();
    c.insert("epoch", epoch.to_string().into_bytes());
    c.insert(
        "policy",
        record_to_bytes(policy.clone()).map_err(|e| anyhow!("serialising the policy: {e}"))?,
    );
    fairpo_io::atomic_write(paths.best_checkpoint(), &c.encode())?;
    Ok(())
}

fn load_best<B: Backend>(
    paths: &RunPaths,
    policy: Policy<B>,
    device: &B::Device,
) -> Result<Policy<B>> {
    let p = paths.best_checkpoint();
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    let mut c = Container::decode(&bytes).with_context(|| format!("{}", p.display()))?;
    record_from_bytes(policy, c.take("policy")?, device)
        .map_err(|e| anyhow!("{}: {e}", p.display()))
}

/// Prepares the run folder: refuses to clobber an existing run unless asked.
fn prepare_run_dir(paths: &RunPaths, opts: &TrainOptions) -> Result<()> {
    let exists = paths.root.exists()
        && std::fs::read_dir(&paths.root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
    if opts.resume {
        if !paths.last_checkpoint().is_file() {
            bail!(
                "--resume: {} has no checkpoint ({} is missing)",
                paths.root.display(),
                paths.last_checkpoint().display()
            );
        }
        return Ok(());
    }
    // A folder from a start that failed before its first checkpoint holds nothing to keep.
    let has_results = paths.last_checkpoint().is_file() || paths.metrics().is_file();
    if exists && !has_results && paths.config().is_file() {
        std::fs::remove_dir_all(&paths.root)
            .with_context(|| format!("removing {}", paths.root.display()))?;
    } else if exists {
        if !opts.overwrite {
            bail!(
                "run folder {} already exists; pass --resume to continue it or --overwrite to start over",
                paths.root.display()
            );
        }
        if !paths.config().is_file() {
            bail!(
                "--overwrite: {} does not look like a run folder (no config.toml); refusing to delete it",
                paths.root.display()
            );
        }
        std::fs::remove_dir_all(&paths.root)
            .with_context(|| format!("removing {}", paths.root.display()))?;
    }
    std::fs::create_dir_all(paths.checkpoints())
        .with_context(|| format!("creating {}", paths.checkpoints().display()))?;
    Ok(())
}

fn group_values(
    e: &Evaluation,
    f: impl Fn(&fairpo_metrics::GroupMetrics) -> Option<f64>,
) -> GroupValues {
    let g = &e.report.groups;
    GroupValues {
        all: f(&g.all),
        privileged: f(&g.privileged),
        non_privileged: f(&g.non_privileged),
    }
}

/// Trains a run end to end (or resumes it) on autodiff backend `B`.
pub fn train<B: AutodiffBackend>(
    mut cfg: RunConfig,
    opts: &TrainOptions,
    device: &B::Device,
) -> Result<TrainOutcome> {
    let wall = Instant::now();
    let paths = RunPaths::new(cfg.run_dir());
    prepare_run_dir(&paths, opts)?;
    if opts.resume {
        let saved = std::fs::read_to_string(paths.config())
            .with_context(|| format!("reading {}", paths.config().display()))?;
        let mut saved = RunConfig::from_toml_str(&saved, &paths.config().display().to_string())?;
        // The debug stop belongs to this invocation, not to the experiment.
        saved.train.stop_after_steps = cfg.train.stop_after_steps;
        if saved != cfg {
            tracing::warn!(
                "--resume: using the run's saved {} (the config given now differs)",
                paths.config().display()
            );
        }
        cfg = saved;
    } else {
        // config.toml records the preprocessing actually used (the backbone's
        // preprocessor_config.json applied), so `fairpo eval` rebuilds the same pixels.
        resolve_preprocessing(&mut cfg)?;
        fairpo_io::atomic_write(paths.config(), cfg.to_toml_string()?.as_bytes())?;
    }
    tracing::info!(run = %paths.root.display(), method = ?cfg.objective.method, "starting");

    // Data and partition.
    let splits: DataSplits = cfg.data.load_splits().context("loading the data set")?;
    // Through serde: fairpo-data's partition type and fairpo-metrics' share one JSON form.
    let partition: Partition = cfg
        .data
        .partition(&splits.train)
        .context("data.privileged: label partition")?;
    partition
        .save(paths.partition())
        .context("writing partition.json")?;
    let labels = partition.labels.clone();
    let mask = partition.privileged_mask();
    let t = labels.len();
    tracing::info!(
        labels = t,
        privileged = partition.privileged.len(),
        train = splits.train_indices.len(),
        val = splits.val_indices.len(),
        test = splits.test.len(),
        "data"
    );
    if splits.train_indices.is_empty() {
        bail!("the training split has no images");
    }

    // Backbone, split into the frozen trunk (inner backend) and the trainable policy.
    let backbone = load_backbone::<B>(&cfg, device)?;
    if cfg.data.preprocess.size != backbone.config.image_size {
        bail!(
            "data.preprocess.size = {} but the backbone expects {} px images; set data.preprocess.size = {}",
            cfg.data.preprocess.size,
            backbone.config.image_size,
            backbone.config.image_size
        );
    }
    let k = resolve_trainable(
        cfg.model.trainable_layers,
        backbone.config.num_hidden_layers,
    )?;
    let (trunk, tail) = backbone.vit.split_frozen(k);
    let trunk_fp = model::trunk_fingerprint(&trunk);
    let (mut policy, heads_cfg) = init_policy(
        &cfg,
        tail,
        backbone.init_heads,
        &labels,
        backbone.config.hidden_size,
        device,
    )?;

    // Reference model (frozen, inner backend), only when the objective needs it.
    let reference = if cfg.objective.needs_reference() {
        let r = cfg.reference.as_ref().ok_or_else(|| {
            anyhow!(
                "objective {:?} needs a reference model: set reference = \"runs/<finished BCE-SFT run>\"",
                cfg.objective.method
            )
        })?;
        Some(load_reference::<B::InnerBackend>(
            r,
            &labels,
            &backbone.config,
            k,
            &trunk_fp,
            device,
        )?)
    } else {
        if cfg.reference.is_some() {
            tracing::info!(
                "reference is set but objective {:?} does not use it",
                cfg.objective.method
            );
        }
        None
    };

    let summary = |finished: bool, best_epoch: Option<usize>, secs: f64| RunSummary {
        name: cfg.name.clone(),
        method: format!("{:?}", cfg.objective.method).to_lowercase(),
        labels: labels.clone(),
        privileged: partition.privileged.clone(),
        vit: backbone.config.clone(),
        trainable_layers: k,
        trunk_fingerprint: trunk_fp.clone(),
        backbone_source: backbone.source.clone(),
        reference: cfg.reference.as_ref().map(|p| p.display().to_string()),
        finished,
        best_epoch,
        selected_on: format!("{:?}", splits.select_on).to_lowercase(),
        train_seconds: secs,
    };

    // Optimiser and scheduler.
    let mut optim = step::adamw(&cfg.train).init::<B, Policy<B>>();
    let mut scheduler = cfg.scheduler.init(2).context("[scheduler]")?;

    let mut state = TrainerState {
        epoch: 0,
        batches_done: 0,
        step: 0,
        early: EarlyStopping::new(cfg.train.patience),
        scheduler: scheduler.state().clone(),
        log_len: 0,
        epoch_loss_sum: 0.0,
        epoch_loss_steps: 0,
        epoch_seconds: 0.0,
        train_seconds: 0.0,
        done: false,
        seed: cfg.train.seed,
    };
    if opts.resume {
        let p = paths.last_checkpoint();
        (state, policy, optim) = load_last(&paths, policy, optim, device)?;
        scheduler
            .restore(state.scheduler.clone())
            .context("scheduler state")?;
        tracing::info!(
            epoch = state.epoch,
            step = state.step,
            "resumed from {}",
            p.display()
        );
    }
    fairpo_io::write_json_atomic(
        paths.run_json(),
        &summary(false, state.early.best_epoch, state.train_seconds),
    )?;
    let mut log = JsonLog::open(&paths.log(), state.log_len)
        .with_context(|| format!("opening {}", paths.log().display()))?;

    // Hidden states: the trunk, or its cached outputs when augmentation is off.
    let train_ds = Arc::new(splits.train.clone());
    let test_ds = Arc::new(splits.test.clone());
    let augment = cfg.data.preprocess.augment.enabled();
    let train_loader = loader(&train_ds, &cfg, cfg.train.batch_size, augment)?;
    let eval_train_loader = loader(&train_ds, &cfg, cfg.train.eval_batch_size, false)?;
    let test_loader = loader(&test_ds, &cfg, cfg.train.eval_batch_size, false)?;
    let mut hidden = HiddenSource::new(trunk, &cfg, &trunk_fp, k, augment, device)?;

    let (sel_ds_loader, sel_indices, sel_name) = match splits.select_on {
        fairpo_data::SelectOn::Val => (&eval_train_loader, splits.val_indices.clone(), "val"),
        fairpo_data::SelectOn::Test => (&test_loader, splits.test_indices(), "test"),
    };
    if sel_indices.is_empty() {
        bail!(
            "the {sel_name} split used for model selection is empty (data.val_fraction = {})",
            cfg.data.val_fraction
        );
    }
    let sel_key = if sel_name == "val" { "train" } else { "test" };

    let eval_settings = evaluate::Settings::from_config(&cfg);
    let step_settings = StepSettings::new(&cfg.train, &cfg.objective, &mask);
    let bs = cfg.train.batch_size;
    while !state.done && state.epoch < cfg.train.epochs {
        let epoch = state.epoch;
        let epoch_start = Instant::now();
        let order =
            fairpo_data::epoch_order(&splits.train_indices, true, cfg.train.seed, epoch as u64);
        let skip = (state.batches_done * bs).min(order.len());
        let rest = &order[skip..];
        let n_batches = order.len().div_ceil(bs);
        let pb = progress_bar(
            n_batches as u64,
            &format!("epoch {}/{}", epoch + 1, cfg.train.epochs),
        );
        pb.set_position(state.batches_done as u64);
        let mut last_note = Instant::now();
        let mut batches = hidden.batches(&train_loader, "train", rest, epoch as u64, bs)?;
        while let Some(item) = batches.next() {
            let (hidden_inner, targets) = item?;
            let mut rng = step_rng(cfg.train.seed, state.step);
            let report;
            (policy, report) = step::train_step(
                policy,
                &mut optim,
                Some(&mut scheduler),
                reference.as_ref(),
                hidden_inner,
                &targets,
                Pairs::Draw(&mut rng),
                &step_settings,
            )
            .with_context(|| format!("step {} (epoch {})", state.step + 1, epoch + 1))?;
            let values = report.group_losses;
            let loss_value = report.loss;
            let alpha = report.alpha;
            state.step += 1;
            state.batches_done += 1;
            state.epoch_loss_sum += loss_value;
            state.epoch_loss_steps += 1;
            fairpo_io::fault::point("step");
            if state.step.is_multiple_of(cfg.train.log_every as u64) {
                log.write(&StepLine {
                    kind: "step".into(),
                    epoch,
                    step: state.step,
                    loss_privileged: values[0],
                    loss_non_privileged: values[1],
                    loss: loss_value,
                    alpha: alpha.clone(),
                    diagnostics: report.diagnostics,
                })?;
            }
            pb.inc(1);
            let msg = match &alpha {
                Some(a) => format!(
                    "loss {loss_value:.4} L_P {:.4} L_P̄ {:.4} α {:.3}/{:.3}",
                    values[0], values[1], a[0], a[1]
                ),
                None => format!(
                    "loss {loss_value:.4} L_P {:.4} L_P̄ {:.4}",
                    values[0], values[1]
                ),
            };
            pb.set_message(msg.clone());
            if pb.is_hidden() && last_note.elapsed().as_secs_f64() > 15.0 {
                tracing::info!(
                    epoch = epoch + 1,
                    batch = state.batches_done,
                    of = n_batches,
                    "{msg}"
                );
                last_note = Instant::now();
            }
            let stop_now = INTERRUPTED.load(Ordering::SeqCst)
                || cfg.train.stop_after_steps.is_some_and(|s| state.step >= s);
            if stop_now {
                drop(batches);
                pb.abandon();
                state.scheduler = scheduler.state().clone();
                state.log_len = log.len();
                state.epoch_seconds += epoch_start.elapsed().as_secs_f64();
                state.train_seconds += wall.elapsed().as_secs_f64();
                save_last(&paths, &state, &policy, &optim)?;
                fairpo_io::write_json_atomic(
                    paths.run_json(),
                    &summary(false, state.early.best_epoch, state.train_seconds),
                )?;
                tracing::warn!(
                    step = state.step,
                    "stopped; checkpoint saved to {} (continue with --resume)",
                    paths.last_checkpoint().display()
                );
                return Ok(TrainOutcome::Interrupted {
                    run_dir: paths.root.clone(),
                    step: state.step,
                });
            }
        }
        drop(batches);
        pb.finish_and_clear();

        // Validation.
        let valid = policy.valid();
        let eval = evaluate::evaluate_split(
            &mut hidden,
            &valid,
            sel_ds_loader,
            sel_key,
            &sel_indices,
            &partition,
            &eval_settings,
        )?;
        let select_value = eval.select_value(&cfg.train).unwrap_or(f64::NAN);
        let verdict = state.early.observe(epoch, select_value);
        if verdict == EpochVerdict::Improved {
            save_best(&paths, epoch, &valid)?;
        }
        state.epoch_seconds += epoch_start.elapsed().as_secs_f64();
        let train_loss = state.epoch_loss_sum / state.epoch_loss_steps.max(1) as f64;
        log.write(&EpochLine {
            kind: "epoch".into(),
            epoch,
            step: state.step,
            split: sel_name.into(),
            map: group_values(&eval, |g| g.map),
            sample_f1: group_values(&eval, |g| g.sample_f1),
            select_value,
            improved: verdict == EpochVerdict::Improved,
            train_loss,
            seconds: state.epoch_seconds,
        })?;
        let g = &eval.report.groups;
        tracing::info!(
            "epoch {}/{}: train loss {:.4}, {sel_name} mAP all {} P {} P̄ {}{} ({:.1} s)",
            epoch + 1,
            cfg.train.epochs,
            train_loss,
            report::pct(g.all.map),
            report::pct(g.privileged.map),
            report::pct(g.non_privileged.map),
            if verdict == EpochVerdict::Improved {
                " *best*"
            } else {
                ""
            },
            state.epoch_seconds
        );
        state.epoch += 1;
        state.batches_done = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_loss_steps = 0;
        state.epoch_seconds = 0.0;
        if verdict == EpochVerdict::Stop {
            tracing::info!(
                "early stop: no {sel_name} improvement for {} epochs (best epoch {})",
                cfg.train.patience,
                state.early.best_epoch.map_or(0, |e| e + 1)
            );
            state.done = true;
        }
        if state.epoch >= cfg.train.epochs {
            state.done = true;
        }
        state.scheduler = scheduler.state().clone();
        state.log_len = log.len();
        save_last(&paths, &state, &policy, &optim)?;
        fairpo_io::fault::point("epoch");
    }

    // Final: best policy on the test split.
    let best_epoch = state.early.best_epoch;
    let best = load_best::<B::InnerBackend>(&paths, policy.valid(), device)?;
    let test_indices = splits.test_indices();
    let test = evaluate::evaluate_split(
        &mut hidden,
        &best,
        &test_loader,
        "test",
        &test_indices,
        &partition,
        &eval_settings,
    )?;
    evaluate::write_outputs(&paths, &test, &cfg, best_epoch, sel_name)?;
    let trunk = hidden.into_trunk();
    let vit = ViT::join(trunk, best.tail.clone());
    let meta = ModelMeta {
        vit: backbone.config.clone(),
        heads: heads_cfg.clone(),
        labels: labels.clone(),
    };
    model::save_model(&paths.model(), &meta, vit, best.heads.clone())?;
    let secs = state.train_seconds + wall.elapsed().as_secs_f64();
    fairpo_io::write_json_atomic(paths.run_json(), &summary(true, best_epoch, secs))?;
    report::write_run_report(&paths).context("writing report.md")?;
    tracing::info!(
        "finished in {secs:.1} s; report: {}",
        paths.report().display()
    );
    Ok(TrainOutcome::Finished {
        run_dir: paths.root.clone(),
        test: Box::new(test),
    })
}

fn progress_bar(len: u64, prefix: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:25}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::{AdamWConfig, GradientsParams};

    type Ad = burn::backend::Autodiff<burn::backend::Flex>;

    fn tiny_policy(seed: u64) -> Policy<Ad> {
        let device = Default::default();
        let cfg = model::test_vit_config();
        <Ad as Backend>::seed(&device, seed);
        let (_, tail) = cfg.init::<Ad>(&device).split_frozen(1);
        Policy {
            tail,
            heads: HeadsConfig::new(3, 16)
                .with_hidden(vec![4])
                .with_seed(seed)
                .init(&device),
        }
    }

    fn step<O: Optimizer<Policy<Ad>, Ad>>(
        policy: Policy<Ad>,
        optim: &mut O,
        x: &Tensor<Ad, 3>,
    ) -> Policy<Ad> {
        let loss = policy.forward(x.clone()).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &policy);
        optim.step(1e-2, policy, grads)
    }

    /// The policy's output on a fixed input: equal outputs <=> (here) equal weights.
    fn outputs(p: &Policy<Ad>) -> Vec<f32> {
        let x = Tensor::<Ad, 3>::ones([1, 5, 16], &Default::default());
        p.forward(x)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn checkpoint_round_trip_continues_exactly() {
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(dir.path());
        std::fs::create_dir_all(paths.checkpoints()).unwrap();
        let x = Tensor::<Ad, 3>::random(
            [4, 5, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let adamw = AdamWConfig::new()
            .with_weight_decay(0.01)
            .with_grad_clipping(Some(burn::grad_clipping::GradientClippingConfig::Norm(1.0)));
        let mut optim = adamw.init::<Ad, Policy<Ad>>();
        let mut policy = tiny_policy(1);
        for _ in 0..3 {
            policy = step(policy, &mut optim, &x);
        }
        let state = TrainerState {
            epoch: 2,
            batches_done: 7,
            step: 3,
            early: EarlyStopping::new(5),
            scheduler: fairpo_grpo::SchedulerConfig::default()
                .init(2)
                .unwrap()
                .state()
                .clone(),
            log_len: 123,
            epoch_loss_sum: 1.5,
            epoch_loss_steps: 3,
            epoch_seconds: 2.0,
            train_seconds: 10.0,
            done: false,
            seed: 42,
        };
        save_last(&paths, &state, &policy, &optim).unwrap();

        // Uninterrupted: two more steps.
        let mut cont = policy;
        for _ in 0..2 {
            cont = step(cont, &mut optim, &x);
        }
        // Restored into a differently initialised policy (other weights, other param ids)
        // and a fresh optimizer: the same two steps give the same weights, which needs the
        // AdamW moments (keyed by param id) to come back with the weights.
        let (back_state, mut restored, mut optim2) = load_last(
            &paths,
            tiny_policy(2),
            adamw.init::<Ad, Policy<Ad>>(),
            &device,
        )
        .unwrap();
        assert_eq!(back_state, state);
        for _ in 0..2 {
            restored = step(restored, &mut optim2, &x);
        }
        assert_eq!(outputs(&restored), outputs(&cont));
        // Without the optimizer state the continuation differs (so the check can fail).
        let (_, mut p3, _) = load_last(
            &paths,
            tiny_policy(2),
            adamw.init::<Ad, Policy<Ad>>(),
            &device,
        )
        .unwrap();
        let mut optim3 = adamw.init::<Ad, Policy<Ad>>();
        for _ in 0..2 {
            p3 = step(p3, &mut optim3, &x);
        }
        assert_ne!(outputs(&p3), outputs(&cont));
    }

    /// `init_from` copies the heads by default, so the policy starts with the init run's
    /// scores (Algorithm 2, line 1); `init_heads = "fresh"` does not; mismatched heads are
    /// errors naming the option.
    #[test]
    fn init_from_copies_the_heads_unless_fresh() {
        use crate::config::InitHeads;
        type Inner = burn::backend::Flex;
        let device = Default::default();
        let vit_cfg = model::test_vit_config();
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let heads_cfg = HeadsConfig::new(3, 16).with_hidden(vec![4]).with_seed(7);
        let dir = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(dir.path());
        let meta = ModelMeta {
            vit: vit_cfg.clone(),
            heads: heads_cfg.clone(),
            labels: labels.clone(),
        };
        model::save_model(
            &paths.model(),
            &meta,
            vit_cfg.init::<Inner>(&device),
            heads_cfg.init::<Inner>(&device),
        )
        .unwrap();
        let pixels = Tensor::<Inner, 4>::random(
            [3, 3, 8, 8],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        // The init run's own scores, straight from its model file.
        let init = model::load_model::<Inner>(&paths.model(), &device).unwrap();
        let expected = init
            .heads
            .forward(init.vit.forward(pixels.clone()))
            .into_data();

        let mut cfg = RunConfig::default();
        cfg.model.init_from = Some(dir.path().to_path_buf());
        cfg.model.heads_hidden = vec![4];
        cfg.train.seed = 3;
        let policy_logits = |cfg: &RunConfig, labels: &[String]| -> Result<TensorData> {
            let backbone = load_backbone::<Ad>(cfg, &device)?;
            let (trunk, tail) = backbone.vit.split_frozen(1);
            let (policy, _) = init_policy(cfg, tail, backbone.init_heads, labels, 16, &device)?;
            let hidden = trunk.forward(pixels.clone());
            Ok(policy.valid().forward(hidden).into_data())
        };
        policy_logits(&cfg, &labels)
            .unwrap()
            .assert_approx_eq::<f32>(&expected, burn::tensor::Tolerance::absolute(1e-6));

        cfg.model.init_heads = Some(InitHeads::Fresh);
        let fresh = policy_logits(&cfg, &labels).unwrap();
        let diff = fresh
            .iter::<f32>()
            .zip(expected.iter::<f32>())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(diff > 1e-3, "fresh heads gave the init run's scores");

        cfg.model.init_heads = Some(InitHeads::InitFrom);
        let four: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let err = policy_logits(&cfg, &four).unwrap_err().to_string();
        assert!(
            err.contains("model.init_heads") && err.contains("3 labels"),
            "{err}"
        );
        let renamed: Vec<String> = ["a", "x", "c"].iter().map(|s| s.to_string()).collect();
        let err = policy_logits(&cfg, &renamed).unwrap_err().to_string();
        assert!(err.contains("head 1") && err.contains("\"x\""), "{err}");
        cfg.model.heads_hidden = vec![8];
        let err = policy_logits(&cfg, &labels).unwrap_err().to_string();
        assert!(err.contains("model.heads_hidden"), "{err}");
    }

    #[test]
    fn step_rng_depends_on_seed_and_step_only() {
        use rand::Rng;
        let a: u64 = step_rng(42, 7).random();
        assert_eq!(a, step_rng(42, 7).random::<u64>());
        assert_ne!(a, step_rng(42, 8).random::<u64>());
        assert_ne!(a, step_rng(43, 7).random::<u64>());
    }

    #[test]
    fn trainable_layers_resolve_against_depth() {
        use crate::config::TrainableLayers;
        assert_eq!(resolve_trainable(TrainableLayers::All, 4).unwrap(), 4);
        assert_eq!(resolve_trainable(TrainableLayers::Last(1), 4).unwrap(), 1);
        let err = resolve_trainable(TrainableLayers::Last(5), 4)
            .unwrap_err()
            .to_string();
        assert!(err.contains("only 4 encoder layers"), "{err}");
    }
}
