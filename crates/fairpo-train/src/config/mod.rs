//! The run configuration: one TOML file (plus optional overlays and `--set` overrides)
//! composed of the `[data]`, `[model]`, `[objective]`, `[scheduler]` and `[train]` tables.
//!
//! Every field has a documented default, unknown keys are an error naming the key, and
//! the resolved configuration is written to the run folder as `config.toml`.
//! Relative paths are relative to the current directory (the workspace root for `xtask`).

mod model;
pub(crate) mod overlay;
mod train;

pub use model::{InitHeads, ModelConfig, ScratchVit, TrainableLayers};
pub use train::{Group, SelectMetric, TrainSettings};

use std::path::{Path, PathBuf};

use fairpo_data::DatasetSpec;
use fairpo_grpo::SchedulerConfig;
use fairpo_objectives::ObjectiveConfig;
use serde::{Deserialize, Serialize};

use overlay::TomlError;

/// A complete training run description.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Run name; the run folder is `runs/<name>` unless `run_dir` is set. Default `"run"`.
    pub name: String,
    /// Run folder. Default: `runs/<name>`.
    pub run_dir: Option<PathBuf>,
    /// A finished BCE-SFT run whose last layer and heads are the frozen reference model
    /// (needed by FairPO's non-privileged hinge and by DPO). Default: none.
    pub reference: Option<PathBuf>,
    /// Dataset, splits and image preprocessing (fairpo-data).
    pub data: DatasetSpec,
    /// Backbone, initialisation and freeze policy.
    pub model: ModelConfig,
    /// Training objective: method and its hyperparameters (fairpo-objectives).
    pub objective: ObjectiveConfig,
    /// Group-weight scheduler (fairpo-grpo).
    pub scheduler: SchedulerConfig,
    /// Optimiser, epochs, early stopping, evaluation.
    pub train: TrainSettings,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "run".into(),
            run_dir: None,
            reference: None,
            data: DatasetSpec::default(),
            model: ModelConfig::default(),
            objective: ObjectiveConfig::default(),
            scheduler: SchedulerConfig::default(),
            train: TrainSettings::default(),
        }
    }
}

/// A config value that makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML reading / schema problem.
    #[error(transparent)]
    Toml(#[from] TomlError),
    /// A field has an invalid value.
    #[error("config: `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    /// The resolved config could not be serialised (should not happen).
    #[error("config: cannot serialise: {0}")]
    Serialize(String),
}

impl RunConfig {
    /// Loads `paths` in order (later files are overlays deep-merged over earlier ones),
    /// applies `--set` overrides, deserialises and validates.
    pub fn load(paths: &[PathBuf], overrides: &[String]) -> Result<Self, ConfigError> {
        let mut table = toml::Table::new();
        for p in paths {
            overlay::merge(&mut table, overlay::read_table(p)?);
        }
        for o in overrides {
            overlay::apply_override(&mut table, o)?;
        }
        let origin = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ");
        let origin = if overrides.is_empty() {
            origin
        } else {
            format!("{origin} (with --set)")
        };
        let cfg: RunConfig = overlay::deserialize(table, &origin)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string (used for a run's resolved `config.toml` and in tests).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| TomlError::Syntax {
                path: origin.to_string(),
                message: e.to_string().trim().replace('\n', " "),
            })?;
        let cfg: RunConfig = overlay::deserialize(table, origin)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The resolved config as TOML text.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Serialize(e.to_string()))
    }

    /// The run folder.
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir
            .clone()
            .unwrap_or_else(|| Path::new("runs").join(&self.name))
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, reason: String| {
            Err(ConfigError::Invalid {
                field: field.into(),
                reason,
            })
        };
        let t = &self.train;
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad("train.lr", format!("a positive number, got {}", t.lr));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return bad(
                "train.weight_decay",
                format!(">= 0, got {}", t.weight_decay),
            );
        }
        if !(t.adam_epsilon.is_finite() && t.adam_epsilon > 0.0) {
            return bad(
                "train.adam_epsilon",
                format!("a positive number, got {}", t.adam_epsilon),
            );
        }
        if let Some(b) = t.adam_betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
            return bad(
                "train.adam_betas",
                format!("two values in [0, 1), got {b} in {:?}", t.adam_betas),
            );
        }
        if !(t.grad_clip.is_finite() && t.grad_clip >= 0.0) {
            return bad(
                "train.grad_clip",
                format!(">= 0 (0 = off), got {}", t.grad_clip),
            );
        }
        if t.batch_size == 0 || t.eval_batch_size == 0 {
            return bad("train.batch_size", "batch sizes must be >= 1".into());
        }
        if t.epochs == 0 {
            return bad("train.epochs", "must be >= 1".into());
        }
        if !(0.0..=1.0).contains(&t.threshold) {
            return bad("train.threshold", format!("in [0, 1], got {}", t.threshold));
        }
        if t.log_every == 0 {
            return bad("train.log_every", "must be >= 1".into());
        }
        if self.name.is_empty() || self.name.contains('/') {
            return bad(
                "name",
                format!("a non-empty name without '/', got {:?}", self.name),
            );
        }
        let m = &self.model;
        if m.backbone.is_some() && m.scratch.is_some() {
            return bad(
                "model",
                "set either `backbone` or `[model.scratch]`, not both".into(),
            );
        }
        if m.backbone.is_none() && m.scratch.is_none() && m.init_from.is_none() {
            return bad(
                "model",
                "no backbone: set `backbone = \"<HF model dir>\"`, a `[model.scratch]` table or `init_from = \"runs/<run>\"`".into(),
            );
        }
        if m.init_heads == Some(InitHeads::InitFrom) && m.init_from.is_none() {
            return bad(
                "model.init_heads",
                "\"init_from\" copies the heads of the `model.init_from` run, which is not set; set `init_from = \"runs/<run>\"` or `init_heads = \"fresh\"`".into(),
            );
        }
        if m.heads_file.is_some() && m.heads_from_init() {
            return bad(
                "model.heads_file",
                "the heads would come both from this file and from the model.init_from run; set model.init_heads = \"fresh\" to take them from the file".into(),
            );
        }
        if m.heads_hidden.contains(&0) {
            return bad("model.heads_hidden", "widths must be >= 1".into());
        }
        if let Some(s) = &m.scratch {
            if let Err(e) = s.vit_config().validate() {
                return bad("model.scratch", e);
            }
        }
        // The other sections, so a bad value fails before any data or model loads.
        if let Err(e) = self.objective.validate() {
            return bad("objective", e.to_string());
        }
        if let Err(e) = self.scheduler.validate(2) {
            return bad("scheduler", e.to_string());
        }
        if let Err(e) = self.data.validate() {
            return bad("data", e.to_string());
        }
        self.validate_method_scheduler()
    }

    /// GDRO is defined by its scheduler (appendix D.3); FairPO weights its groups with GRPO
    /// (or fixed weights, the no-GRPO ablation). Other pairings are mistakes, not variants.
    fn validate_method_scheduler(&self) -> Result<(), ConfigError> {
        use fairpo_grpo::SchedulerKind as K;
        use fairpo_objectives::Method as M;
        let (method, kind) = (self.objective.method, self.scheduler.kind);
        let reason = match (method, kind) {
            (M::Gdro, K::Gdro) => return Ok(()),
            (M::Gdro, k) => format!(
                "objective.method = \"gdro\" needs scheduler.kind = \"gdro\" (its exponentiated-gradient group weights), got {:?}",
                k
            ),
            (M::Dpo | M::Simpo | M::Cpo, K::Gdro) => format!(
                "objective.method = {:?} weights its groups with scheduler.kind = \"grpo\" (or \"fixed\"), not \"gdro\"",
                method
            ),
            _ => return Ok(()),
        };
        Err(ConfigError::Invalid {
            field: "scheduler.kind".into(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> &'static str {
        "name = \"t\"\n[model.scratch]\n"
    }

    #[test]
    fn objective_scheduler_and_data_values_and_mismatches_are_rejected() {
        let err = |extra: &str| {
            RunConfig::from_toml_str(&format!("{}{extra}", minimal()), "t.toml")
                .unwrap_err()
                .to_string()
        };
        let e = err("[objective]\nmethod = \"cpo\"\nbeta = -1.0\n");
        assert!(e.contains("objective") && e.contains("beta"), "{e}");
        let e = err("[scheduler]\nrho = 2.0\n");
        assert!(e.contains("scheduler") && e.contains("rho"), "{e}");
        let e = err("[data]\nval_fraction = 1.5\n");
        assert!(e.contains("data") && e.contains("val_fraction"), "{e}");
        let e = err("[objective]\nmethod = \"gdro\"\n");
        assert!(
            e.contains("scheduler.kind") && e.contains("\"gdro\""),
            "{e}"
        );
        let e = err("[objective]\nmethod = \"cpo\"\n[scheduler]\nkind = \"gdro\"\n");
        assert!(e.contains("scheduler.kind") && e.contains("grpo"), "{e}");
        let e = RunConfig::from_toml_str(
            "name = \"t\"\n[model]\ninit_from = \"runs/x\"\nheads_file = \"h.safetensors\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("model.heads_file") && e.contains("init_heads"),
            "{e}"
        );
        // The pairings the presets use are accepted.
        for ok in [
            "[objective]\nmethod = \"gdro\"\n[scheduler]\nkind = \"gdro\"\n",
            "[objective]\nmethod = \"cpo\"\n[scheduler]\nkind = \"fixed\"\n",
            "[objective]\nmethod = \"bce\"\n",
        ] {
            RunConfig::from_toml_str(&format!("{}{ok}", minimal()), "t.toml").unwrap();
        }
    }

    #[test]
    fn missing_keys_take_their_defaults() {
        let cfg = RunConfig::from_toml_str(minimal(), "t.toml").unwrap();
        assert_eq!(cfg.train, TrainSettings::default());
        assert_eq!(cfg.train.lr, 1e-4);
        assert_eq!(cfg.train.batch_size, 32);
        assert_eq!(cfg.train.patience, 5);
        assert_eq!(cfg.model.trainable_layers, TrainableLayers::Last(1));
        assert_eq!(cfg.model.heads_hidden, vec![256, 64, 16, 4]);
        assert_eq!(cfg.model.scratch, Some(ScratchVit::default()));
        assert_eq!(cfg.run_dir(), PathBuf::from("runs/t"));
    }

    #[test]
    fn resolved_config_round_trips() {
        let mut cfg = RunConfig::from_toml_str(minimal(), "t.toml").unwrap();
        cfg.train.lr = 3e-4;
        cfg.train.per_batch = Some(32);
        cfg.model.trainable_layers = TrainableLayers::All;
        cfg.reference = Some("runs/sft".into());
        let text = cfg.to_toml_string().unwrap();
        let back = RunConfig::from_toml_str(&text, "resolved").unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err =
            RunConfig::from_toml_str("[model.scratch]\n[train]\nlearning_rate = 1.0", "x.toml")
                .unwrap_err()
                .to_string();
        assert!(err.contains("train.learning_rate"), "{err}");
        assert!(err.contains("x.toml"), "{err}");
        let err = RunConfig::from_toml_str("[model.scratch]\nhidden = 3", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.scratch.hidden"), "{err}");
    }

    #[test]
    fn overlays_and_overrides_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.toml");
        let b = dir.path().join("b.toml");
        std::fs::write(
            &a,
            "name = \"a\"\n[model.scratch]\n[train]\nlr = 0.5\nepochs = 3",
        )
        .unwrap();
        std::fs::write(&b, "name = \"b\"\n[train]\nepochs = 4").unwrap();
        let cfg = RunConfig::load(&[a.clone(), b], &["train.lr=0.25".into()]).unwrap();
        assert_eq!(cfg.name, "b");
        assert_eq!(cfg.train.epochs, 4);
        assert_eq!(cfg.train.lr, 0.25);
        let err = RunConfig::load(&[a], &["train.lr=-1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.lr"), "{err}");
    }

    #[test]
    fn trainable_layers_accepts_count_or_all() {
        let cfg =
            RunConfig::from_toml_str("[model]\ntrainable_layers = \"all\"\n[model.scratch]", "t")
                .unwrap();
        assert_eq!(cfg.model.trainable_layers, TrainableLayers::All);
        let cfg = RunConfig::from_toml_str("[model]\ntrainable_layers = 0\n[model.scratch]", "t")
            .unwrap();
        assert_eq!(cfg.model.trainable_layers, TrainableLayers::Last(0));
        let err =
            RunConfig::from_toml_str("[model]\ntrainable_layers = \"some\"\n[model.scratch]", "t")
                .unwrap_err()
                .to_string();
        assert!(err.contains("model.trainable_layers"), "{err}");
    }

    #[test]
    fn init_heads_defaults_to_the_init_run_and_needs_one() {
        let cfg = RunConfig::from_toml_str(minimal(), "t").unwrap();
        assert_eq!(cfg.model.init_heads, None);
        assert!(!cfg.model.heads_from_init(), "no init_from: fresh heads");
        let cfg = RunConfig::from_toml_str("[model]\ninit_from = \"runs/sft\"", "t").unwrap();
        assert!(
            cfg.model.heads_from_init(),
            "init_from: heads copied by default"
        );
        let cfg = RunConfig::from_toml_str(
            "[model]\ninit_from = \"runs/sft\"\ninit_heads = \"fresh\"",
            "t",
        )
        .unwrap();
        assert_eq!(cfg.model.init_heads, Some(InitHeads::Fresh));
        assert!(!cfg.model.heads_from_init());
        let back = RunConfig::from_toml_str(&cfg.to_toml_string().unwrap(), "r").unwrap();
        assert_eq!(back, cfg);
        let err =
            RunConfig::from_toml_str("[model]\ninit_heads = \"init_from\"\n[model.scratch]", "t")
                .unwrap_err()
                .to_string();
        assert!(err.contains("model.init_heads"), "{err}");
        let err = RunConfig::from_toml_str(
            "[model]\ninit_from = \"runs/sft\"\ninit_heads = \"copy\"",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("model.init_heads"), "{err}");
    }

    #[test]
    fn a_backbone_is_required() {
        let err = RunConfig::from_toml_str("name = \"x\"", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no backbone"), "{err}");
    }

    fn configs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
    }

    #[test]
    fn every_preset_and_ablation_overlay_parses() {
        let dir = configs_dir();
        let mut presets: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        presets.sort();
        assert_eq!(
            presets.len(),
            18,
            "demo/coco/nus x six methods: {presets:?}"
        );
        let overlays: Vec<PathBuf> = std::fs::read_dir(dir.join("ablations"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(overlays.len(), 6);
        for p in &presets {
            let cfg =
                RunConfig::load(std::slice::from_ref(p), &[]).unwrap_or_else(|e| panic!("{e}"));
            let stem = p.file_stem().unwrap().to_string_lossy();
            assert_eq!(cfg.name, stem, "{}", p.display());
            if cfg.objective.needs_reference() {
                let ds = stem.split('-').next().unwrap();
                assert_eq!(cfg.reference, Some(PathBuf::from(format!("runs/{ds}-sft"))));
            }
            let augment = &cfg.data.preprocess.augment;
            if stem.starts_with("coco-") || stem.starts_with("nus-") {
                // Appendix C: random horizontal flips and random resized crops.
                assert!(
                    augment.random_resized_crop && augment.horizontal_flip,
                    "{}",
                    p.display()
                );
            } else {
                assert!(!augment.enabled(), "{}", p.display());
            }
            if cfg.objective.method.is_fairpo() {
                // Algorithm 2, line 1: the policy starts as a copy of the reference.
                assert_eq!(cfg.model.init_from, cfg.reference, "{}", p.display());
                assert!(cfg.model.heads_from_init(), "{}", p.display());
            }
        }
        let mut overlays = overlays;
        for sub in ["compat", "preprocess"] {
            overlays.extend(
                std::fs::read_dir(dir.join(sub))
                    .unwrap()
                    .map(|e| e.unwrap().path()),
            );
        }
        // Each overlay changes the demo or the paper's preset (no-augment only the latter).
        for o in &overlays {
            let changes = ["demo-cpo.toml", "coco-cpo.toml"].iter().any(|base| {
                let with = RunConfig::load(&[dir.join(base), o.clone()], &[])
                    .unwrap_or_else(|e| panic!("{e}"));
                with != RunConfig::load(&[dir.join(base)], &[]).unwrap()
            });
            assert!(changes, "{} changes nothing", o.display());
        }
    }

    #[test]
    fn real_fairpo_presets_keep_grpo_delta_at_the_hinge_scale() {
        for ds in ["coco", "nus"] {
            for m in ["cpo", "dpo", "simpo"] {
                let p = configs_dir().join(format!("{ds}-{m}.toml"));
                let cfg = RunConfig::load(&[p], &[]).unwrap();
                assert_eq!(cfg.scheduler.delta, 0.1, "{ds}-{m}");
            }
        }
    }

    #[test]
    fn released_code_overlays_select_each_documented_difference() {
        use fairpo_data::SelectOn;
        use fairpo_metrics::partition::PrivilegedSpec;
        let dir = configs_dir();
        for ds in ["coco", "nus"] {
            for m in ["sft", "rw", "gdro", "dpo", "simpo", "cpo"] {
                let cfg = RunConfig::load(
                    &[
                        dir.join(format!("{ds}-{m}.toml")),
                        dir.join("compat/released-code.toml"),
                        dir.join(format!("compat/released-code-privileged-{ds}.toml")),
                    ],
                    &[],
                )
                .unwrap_or_else(|e| panic!("{ds}-{m}: {e}"));
                assert_eq!(cfg.data.select_on, SelectOn::Test);
                assert_eq!(cfg.model.trainable_layers, super::TrainableLayers::Last(0));
                assert_eq!(cfg.model.init_heads, Some(super::InitHeads::Fresh));
                assert!(!cfg.model.heads_from_init());
                assert!(!cfg.data.preprocess.augment.enabled());
                assert_eq!(cfg.data.preprocess.resize_shorter, Some(256));
                assert_eq!(
                    cfg.objective.cpo_preference_mean,
                    fairpo_objectives::CpoPreferenceMean::WithConfusing
                );
                assert_eq!(cfg.scheduler.first_step, fairpo_grpo::FirstStep::RawLoss);
                assert_eq!(cfg.scheduler.delta, 1e-6);
                assert_eq!(cfg.train.per_batch, Some(32));
                assert_eq!(cfg.train.select_group, Group::Privileged);
                let PrivilegedSpec::Names(names) = &cfg.data.privileged else {
                    panic!("{ds}-{m}: privileged set by name");
                };
                assert_eq!(names.len(), if ds == "coco" { 20 } else { 16 });
            }
        }
    }

    #[test]
    fn paper_presets_carry_table5_hyperparameters() {
        let load =
            |n: &str| RunConfig::load(&[configs_dir().join(format!("{n}.toml"))], &[]).unwrap();
        let o = load("coco-cpo").objective;
        assert_eq!((o.beta, o.lambda_cpo, o.epsilon), (0.5, 0.5, 0.01));
        let o = load("coco-simpo").objective;
        assert_eq!((o.beta, o.gamma, o.epsilon), (0.5, 0.1, 0.05));
        let o = load("coco-dpo").objective;
        assert_eq!((o.beta, o.epsilon), (0.5, 0.05));
        let o = load("nus-cpo").objective;
        assert_eq!((o.beta, o.lambda_cpo, o.epsilon), (0.1, 0.5, 0.05));
        let o = load("nus-simpo").objective;
        assert_eq!((o.beta, o.gamma, o.epsilon), (0.1, 0.05, 0.1));
        let o = load("nus-dpo").objective;
        assert_eq!((o.beta, o.epsilon), (0.1, 0.05));
        let c = load("coco-rw");
        assert_eq!(c.objective.lambda_p, 5.0);
        let t = load("nus-gdro").train;
        assert_eq!(
            (t.lr, t.batch_size, t.epochs, t.patience),
            (1e-4, 32, 25, 5)
        );
    }
}
