//! The training loop: per batch, the frozen trunk's output (inner backend) goes through
//! [`crate::step::train_step`] (policy tail + heads → objective → scheduler α → backward →
//! clipping → AdamW on the policy only); per epoch, validation, early stopping and a
//! resumable checkpoint; at the end, the test evaluation of the selected model.
//!
//! Exact resume: the data order of epoch e is `epoch_order(train, seed, e)`, augmentation is
//! seeded per (seed, epoch, image) by fairpo-data, and the objective's random choices at
//! step s come from [`step_rng`]`(seed, s)`; so a checkpoint only needs the model and
//! optimizer records, the scheduler state, the epoch, the batches done in it, the step and the
//! collapse watch's counters ([`crate::checkpoint::TrainerState`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use fairpo_data::{DataSplits, Split};
use fairpo_metrics::Partition;
use fairpo_vit::ViT;

use crate::checkpoint::model_file::{self, ModelMeta};
use crate::checkpoint::{load_best, load_last, save_best, save_last, TrainerState};
use crate::collapse;
use crate::config::RunConfig;
use crate::early_stop::{EarlyStopping, EpochVerdict};
use crate::eval::{self, EvalSplit, Evaluation};
use crate::policy::Policy;
use crate::replica::{run_replicas, Replica};
use crate::report;
use crate::run::{
    prepare_run_dir, EpochLine, GroupValues, JsonLog, RunPaths, RunSummary, StepLine, WarningLine,
};
use crate::setup::{
    batch_loader, init_policy, load_backbone, load_reference, resolve_preprocessing,
    resolve_trainable,
};
use crate::step::{self, replica_step_rng, Pairs, StepSettings};
use crate::thresholds::ValThresholds;
use crate::trunk_features::TrunkFeatures;

/// Set by the Ctrl-C handler; the trainer checkpoints and stops at the next step.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

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
    cfg: RunConfig,
    opts: &TrainOptions,
    device: &B::Device,
) -> Result<TrainOutcome> {
    train_data_parallel::<B>(cfg, opts, vec![device.clone()])
}

/// [`train`] with one data-parallel replica per device ([`crate::replica`]):
/// `train.batch_size` is the global batch, each step's split evenly over the devices.
pub fn train_data_parallel<B: AutodiffBackend>(
    mut cfg: RunConfig,
    opts: &TrainOptions,
    devices: Vec<B::Device>,
) -> Result<TrainOutcome> {
    let wall = Instant::now();
    let paths = RunPaths::new(cfg.run_dir());
    prepare_run_dir(&paths, opts.resume, opts.overwrite)?;
    if opts.resume {
        let text = std::fs::read_to_string(paths.config())
            .with_context(|| format!("reading {}", paths.config().display()))?;
        let mut saved = RunConfig::from_toml_str(&text, &paths.config().display().to_string())?;
        if !text.contains("adam_epsilon") {
            // Written before `train.adam_epsilon` existed: that run's optimiser used burn's
            // default, and a resume must continue with it.
            saved.train.adam_epsilon = 1e-5;
            tracing::warn!(
                "--resume: {} predates train.adam_epsilon; continuing with the 1e-5 it was started with",
                paths.config().display()
            );
        }
        // The debug stop belongs to this invocation, not to the experiment.
        saved.train.stop_after_steps = cfg.train.stop_after_steps;
        // Both sides resolved (idempotent), so the comparison sees the same preprocessing and a
        // run saved before config.toml recorded it resumes with the pixels it started with.
        resolve_preprocessing(&mut saved)?;
        resolve_preprocessing(&mut cfg)?;
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
    let config_sha256 = {
        let bytes = std::fs::read(paths.config())
            .with_context(|| format!("reading {}", paths.config().display()))?;
        crate::features::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    };
    let world = devices.len();
    if world > 1 && !cfg.train.batch_size.is_multiple_of(world) {
        bail!(
            "train.batch_size = {} is the global batch of {world} devices and must be a multiple of {world}",
            cfg.train.batch_size
        );
    }
    let device_names = devices
        .iter()
        .map(|d| format!("{d:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let run = Run {
        cfg: &cfg,
        opts,
        paths: &paths,
        config_sha256: &config_sha256,
        device_names: &device_names,
        wall,
    };
    let outcome = run_replicas::<B, _, _>(devices, |replica, device| {
        run.train_replica::<B>(replica, &device)
    })?;
    outcome.ok_or_else(|| anyhow!("replica 0 returned no outcome"))
}

/// What every replica of one `fairpo train` shares.
struct Run<'a> {
    cfg: &'a RunConfig,
    opts: &'a TrainOptions,
    paths: &'a RunPaths,
    config_sha256: &'a str,
    device_names: &'a str,
    wall: Instant,
}

impl Run<'_> {
    /// One replica's training; only rank 0 writes files and returns the outcome.
    fn train_replica<B: AutodiffBackend>(
        &self,
        replica: Replica,
        device: &B::Device,
    ) -> Result<Option<TrainOutcome>> {
        let Run {
            cfg,
            opts,
            paths,
            config_sha256,
            device_names,
            wall,
        } = *self;
        let lead = replica.leads();

        // Data and partition.
        let splits: DataSplits = cfg.data.load_splits().context("loading the data set")?;
        // Through serde: fairpo-data's partition type and fairpo-metrics' share one JSON form.
        let partition: Partition = cfg
            .data
            .partition(&splits.train)
            .context("data.privileged: label partition")?;
        if lead {
            partition
                .save(paths.partition())
                .context("writing partition.json")?;
        }
        let labels = partition.labels.clone();
        let mask = partition.privileged_mask();
        let t = labels.len();
        if lead {
            tracing::info!(
                labels = t,
                privileged = partition.privileged.len(),
                train = splits.train_indices.len(),
                val = splits.val_indices.len(),
                test = splits.test.len(),
                "data"
            );
        }
        if splits.train_indices.is_empty() {
            bail!("the training split has no images");
        }

        // Backbone, split into the frozen trunk (inner backend) and the trainable policy.
        let backbone = load_backbone::<B>(cfg, device)?;
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
        let trunk_fp = model_file::trunk_fingerprint(&trunk);
        let (mut policy, heads_cfg) = init_policy(
            cfg,
            tail,
            backbone.init_heads,
            &labels,
            backbone.config.hidden_size,
            device,
        )?;
        // The same parameter ids on every replica (the all-reduce pairs gradients by id).
        policy = crate::replica::number_parameters(policy);

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
            build: crate::run::build_description(),
            config_sha256: config_sha256.to_string(),
            device: device_names.to_string(),
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
            collapse: Default::default(),
        };
        if opts.resume {
            let p = paths.last_checkpoint();
            (state, policy, optim) = load_last(paths, policy, optim, device)?;
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
        let mut log = if lead {
            fairpo_io::write_json_atomic(
                paths.run_json(),
                &summary(false, state.early.best_epoch, state.train_seconds),
            )?;
            Some(
                JsonLog::open(&paths.log(), state.log_len)
                    .with_context(|| format!("opening {}", paths.log().display()))?,
            )
        } else {
            None
        };

        // Hidden states: the trunk, or its cached outputs when augmentation is off.
        let train_ds = Arc::new(splits.train.clone());
        let test_ds = Arc::new(splits.test.clone());
        let augment = cfg.data.preprocess.augment.enabled();
        // Each replica's batches are its shards of the global batch.
        let bs = cfg.train.batch_size;
        let shard_bs = bs / replica.world;
        let train_loader = batch_loader(&train_ds, cfg, shard_bs, augment)?;
        let eval_train_loader = batch_loader(&train_ds, cfg, cfg.train.eval_batch_size, false)?;
        let test_loader = batch_loader(&test_ds, cfg, cfg.train.eval_batch_size, false)?;
        let mut hidden =
            TrunkFeatures::new(trunk, cfg, &backbone.config, &trunk_fp, k, augment, device)?;
        if let Some(r) = &reference {
            hidden.store_reference_logits(r, partition.num_labels())?;
        }

        let selection = EvalSplit::from(splits.select_on);
        let sel_name = selection.name();
        let sel_indices = selection.indices(&splits);
        let sel_ds_loader = match selection {
            EvalSplit::Val => &eval_train_loader,
            EvalSplit::Test => &test_loader,
        };
        if sel_indices.is_empty() {
            bail!(
                "the {sel_name} split used for model selection is empty (data.val_fraction = {})",
                cfg.data.val_fraction
            );
        }
        // Every image the run will read, checked against the store's room before any compute.
        // (Only rank 0 evaluates.)
        let test_indices = splits.test_indices();
        let mut reads = vec![(&train_loader, Split::Train, &splits.train_indices[..])];
        if lead {
            reads.push((&eval_train_loader, Split::Train, &splits.val_indices));
            reads.push((&test_loader, Split::Test, &test_indices));
        }
        hidden.plan(&reads)?;

        let eval_settings = eval::Settings::from_config(cfg);
        let step_settings = StepSettings {
            replica,
            ..StepSettings::new(&cfg.train, &cfg.objective, &mask)
        };
        while !state.done && state.epoch < cfg.train.epochs {
            let epoch = state.epoch;
            let epoch_start = Instant::now();
            let order =
                fairpo_data::epoch_order(&splits.train_indices, true, cfg.train.seed, epoch as u64);
            let skip = (state.batches_done * bs).min(order.len());
            let rest = &order[skip..];
            let n_batches = order.len().div_ceil(bs);
            let pb = if lead {
                progress_bar(
                    n_batches as u64,
                    &format!("epoch {}/{}", epoch + 1, cfg.train.epochs),
                )
            } else {
                indicatif::ProgressBar::hidden()
            };
            pb.set_position(state.batches_done as u64);
            let mut last_note = Instant::now();
            let (mine, batch_of) = shards(rest, bs, replica);
            let n_global = rest.len().div_ceil(bs);
            let mut batches = hidden
                .batches(
                    &train_loader,
                    Split::Train,
                    &mine,
                    epoch as u64,
                    shard_bs,
                    reference.as_ref(),
                )?
                .peekable();
            for global_batch in 0..n_global {
                // This replica's shard of the global batch, unless it is empty (or every image of
                // it was skipped).
                let ours = match batches.peek() {
                    Some(Ok(b)) => b.indices.first().map(|i| batch_of[i]) == Some(global_batch),
                    Some(Err(_)) => true,
                    None => false,
                };
                let item = if ours { batches.next() } else { None };
                let mut rng = replica_step_rng(cfg.train.seed, state.step, replica.rank);
                let step_name = || format!("step {} (epoch {})", state.step + 1, epoch + 1);
                let report;
                (policy, report) = match item {
                    Some(batch) => {
                        let batch = batch?;
                        // The stored reference logits when the trunk store has them, else the
                        // model.
                        let reference = match batch.reference {
                            Some(logits) => Some(step::Reference::Logits(logits)),
                            None => reference.as_ref().map(step::Reference::Model),
                        };
                        step::train_step(
                            policy,
                            &mut optim,
                            Some(&mut scheduler),
                            reference,
                            batch.hidden,
                            &batch.targets,
                            Pairs::Draw(&mut rng),
                            &step_settings,
                        )
                        .with_context(step_name)?
                    }
                    None if replica.is_parallel() => step::idle_step(
                        policy,
                        &mut optim,
                        Some(&mut scheduler),
                        &step_settings,
                        device,
                    )
                    .with_context(step_name)?,
                    None => {
                        // Every image of this batch was skipped: no step.
                        state.batches_done += 1;
                        pb.inc(1);
                        continue;
                    }
                };
                let values = report.group_losses;
                let loss_value = report.loss;
                let alpha = report.alpha;
                for g in alpha
                    .as_deref()
                    .map(|a| state.collapse.observe(a))
                    .unwrap_or_default()
                {
                    let message = collapse::message(
                        g,
                        state.step + 1,
                        cfg.scheduler.kind,
                        cfg.scheduler.delta,
                    );
                    if let Some(log) = &mut log {
                        tracing::warn!("{message}");
                        log.write(&WarningLine {
                            kind: "warning".into(),
                            epoch,
                            step: state.step + 1,
                            message,
                        })?;
                    }
                }
                state.step += 1;
                state.batches_done += 1;
                state.epoch_loss_sum += loss_value;
                state.epoch_loss_steps += 1;
                fairpo_io::fault::point("step");
                if let Some(log) = log
                    .as_mut()
                    .filter(|_| state.step.is_multiple_of(cfg.train.log_every as u64))
                {
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
                if lead && pb.is_hidden() && last_note.elapsed().as_secs_f64() > 15.0 {
                    tracing::info!(
                        epoch = epoch + 1,
                        batch = state.batches_done,
                        of = n_batches,
                        "{msg}"
                    );
                    last_note = Instant::now();
                }
                // Ctrl-C reaches the replicas at different steps: they agree on one.
                let stop_now = replica
                    .any::<B::InnerBackend>(INTERRUPTED.load(Ordering::SeqCst), device)?
                    || cfg.train.stop_after_steps.is_some_and(|s| state.step >= s);
                if stop_now {
                    drop(batches);
                    pb.abandon();
                    if let Some(log) = &log {
                        state.scheduler = scheduler.state().clone();
                        state.log_len = log.len();
                        state.epoch_seconds += epoch_start.elapsed().as_secs_f64();
                        state.train_seconds += wall.elapsed().as_secs_f64();
                        save_last(paths, &state, &policy, &optim)?;
                        fairpo_io::write_json_atomic(
                            paths.run_json(),
                            &summary(false, state.early.best_epoch, state.train_seconds),
                        )?;
                        tracing::warn!(
                            step = state.step,
                            "stopped; checkpoint saved to {} (continue with --resume)",
                            paths.last_checkpoint().display()
                        );
                    }
                    return Ok(lead.then(|| TrainOutcome::Interrupted {
                        run_dir: paths.root.clone(),
                        step: state.step,
                    }));
                }
            }
            drop(batches);
            pb.finish_and_clear();

            // Validation, on rank 0; the others wait for its verdict.
            let valid = policy.valid();
            let eval = if lead {
                Some(eval::evaluate_split(
                    &mut hidden,
                    &valid,
                    sel_ds_loader,
                    selection.dataset(),
                    &sel_indices,
                    &partition,
                    &eval_settings,
                )?)
            } else {
                None
            };
            let select_value = eval
                .as_ref()
                .map_or(0.0, |e| e.select_value(&cfg.train).unwrap_or(f64::NAN));
            let select_value = replica.from_lead::<B::InnerBackend>(select_value, device)?;
            let verdict = state.early.observe(epoch, select_value);
            state.epoch_seconds += epoch_start.elapsed().as_secs_f64();
            if let (Some(eval), Some(log)) = (&eval, &mut log) {
                if verdict == EpochVerdict::Improved {
                    save_best(paths, epoch, &valid)?;
                }
                let train_loss = state.epoch_loss_sum / state.epoch_loss_steps.max(1) as f64;
                log.write(&EpochLine {
                    kind: "epoch".into(),
                    epoch,
                    step: state.step,
                    split: sel_name.into(),
                    map: group_values(eval, |g| g.map),
                    sample_f1: group_values(eval, |g| g.sample_f1),
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
            }
            state.epoch += 1;
            state.batches_done = 0;
            state.epoch_loss_sum = 0.0;
            state.epoch_loss_steps = 0;
            state.epoch_seconds = 0.0;
            if verdict == EpochVerdict::Stop && lead {
                tracing::info!(
                    "early stop: no {sel_name} improvement for {} epochs (best epoch {})",
                    cfg.train.patience,
                    state.early.best_epoch.map_or(0, |e| e + 1)
                );
            }
            if verdict == EpochVerdict::Stop {
                state.done = true;
            }
            if state.epoch >= cfg.train.epochs {
                state.done = true;
            }
            if let Some(log) = &log {
                state.scheduler = scheduler.state().clone();
                state.log_len = log.len();
                save_last(paths, &state, &policy, &optim)?;
                fairpo_io::fault::point("epoch");
            }
        }
        if !lead {
            return Ok(None);
        }

        // Final: best policy on the test split.
        let best_epoch = state.early.best_epoch;
        let best = load_best::<B::InnerBackend>(paths, policy.valid(), device)?;
        let test = eval::evaluate_split(
            &mut hidden,
            &best,
            &test_loader,
            Split::Test,
            &test_indices,
            &partition,
            &eval_settings,
        )?;
        eval::write_outputs(paths, &test, cfg, best_epoch, sel_name)?;
        if selection == EvalSplit::Val && !sel_indices.is_empty() {
            // Per-label thresholds for `--thresholds val-f1`, from the selected model's scores.
            let val = eval::evaluate_split(
                &mut hidden,
                &best,
                sel_ds_loader,
                Split::Train,
                &sel_indices,
                &partition,
                &eval_settings,
            )?;
            ValThresholds::choose(
                &val.scores,
                &val.targets,
                &partition.labels,
                sel_name,
                cfg.train.threshold,
            )?
            .write(paths)?;
        }
        let trunk = hidden.into_trunk();
        let vit = ViT::join(trunk, best.tail.clone());
        let meta = ModelMeta {
            vit: backbone.config.clone(),
            heads: heads_cfg.clone(),
            labels: labels.clone(),
        };
        model_file::save_model(&paths.model(), &meta, vit, best.heads.clone())?;
        let secs = state.train_seconds + wall.elapsed().as_secs_f64();
        fairpo_io::write_json_atomic(paths.run_json(), &summary(true, best_epoch, secs))?;
        report::write_run_report(paths).context("writing report.md")?;
        tracing::info!(
            "finished in {secs:.1} s; report: {}",
            paths.report().display()
        );
        Ok(Some(TrainOutcome::Finished {
            run_dir: paths.root.clone(),
            test: Box::new(test),
        }))
    }
}

/// This replica's part of the epoch's remaining order `rest` (global batches of `bs`): its
/// shard of each global batch, in order, and the global batch each of its images is in.
fn shards(rest: &[usize], bs: usize, replica: Replica) -> (Vec<usize>, HashMap<usize, usize>) {
    let mut mine = Vec::with_capacity(rest.len() / replica.world + 1);
    let mut batch_of = HashMap::new();
    for (j, batch) in rest.chunks(bs.max(1)).enumerate() {
        for &i in &batch[replica.shard(batch.len())] {
            mine.push(i);
            batch_of.insert(i, j);
        }
    }
    (mine, batch_of)
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
