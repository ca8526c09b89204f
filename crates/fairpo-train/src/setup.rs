//! What a run builds before its first step: the backbone (a Hugging Face folder, a scratch ViT,
//! a finished run's model or a `fairpo export` folder), the trainable policy on top of it (fresh heads, the init run's
//! heads or heads from a file), the frozen reference, the split point and the resolved
//! preprocessing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use burn::prelude::*;
use fairpo_data::{BatchLoader, Dataset, LoaderConfig};
use fairpo_heads::{Heads, HeadsConfig};
use fairpo_metrics::Partition;
use fairpo_vit::{ViT, ViTConfig, ViTTail, ViTTrunk};

use crate::checkpoint::model_file;
use crate::config::{RunConfig, TrainableLayers};
use crate::policy::Policy;
use crate::run::{read_summary, RunPaths, RunSummary};

/// A backbone ready for training: the whole ViT before splitting and where it came from.
pub(crate) struct Backbone<B: Backend> {
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
pub(crate) struct InitRunHeads<B: Backend> {
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
pub(crate) fn load_backbone<B: Backend>(
    cfg: &RunConfig,
    device: &B::Device,
) -> Result<Backbone<B>> {
    let m = &cfg.model;
    if let Some(dir) = m.init_from.as_deref().filter(|d| is_export(d)) {
        return load_export(dir, m.heads_from_init(), device);
    }
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
        let fm = model_file::load_model::<B>(&model_path, device)
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

/// Whether `dir` is a `fairpo export` folder rather than a run folder: `labels.json` beside a
/// `ViTModel` folder whose `model.safetensors` also holds the heads.
pub(crate) fn is_export(dir: &Path) -> bool {
    dir.join("labels.json").is_file()
        && dir.join("model.safetensors").is_file()
        && !RunPaths::new(dir).model().is_file()
}

/// `labels.json` of an export folder: the label names in head order (and the privileged
/// indices, which a run recomputes from its own training set).
#[derive(serde::Deserialize)]
struct ExportLabels {
    labels: Vec<String>,
}

/// `model.init_from` = an export folder: the ViT as `model.backbone` reads it, the heads and
/// label names as a run's.
fn load_export<B: Backend>(
    dir: &Path,
    heads_copied: bool,
    device: &B::Device,
) -> Result<Backbone<B>> {
    let ctx = || {
        format!(
            "model.init_from = {} (a fairpo export folder)",
            dir.display()
        )
    };
    let loaded = fairpo_vit::load_hf_dir::<B>(dir, device).with_context(ctx)?;
    let (heads, config) =
        model_file::read_heads_safetensors::<B>(&dir.join("model.safetensors"), device)
            .with_context(ctx)?;
    let labels_path = dir.join("labels.json");
    let text = std::fs::read_to_string(&labels_path)
        .with_context(|| format!("reading {}", labels_path.display()))?;
    let ExportLabels { labels } = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected {{\"labels\": [label names in head order], \"privileged\": [indices]}}",
            labels_path.display()
        )
    })?;
    if labels.len() != config.num_labels {
        bail!(
            "{}: {} labels, but {} holds heads for {}",
            labels_path.display(),
            labels.len(),
            dir.join("model.safetensors").display(),
            config.num_labels
        );
    }
    Ok(Backbone {
        vit: loaded.model,
        config: loaded.config,
        source: format!(
            "init_from export {} ({} heads)",
            dir.display(),
            if heads_copied { "copied" } else { "fresh" }
        ),
        init_heads: Some(InitRunHeads {
            run: dir.to_path_buf(),
            config,
            labels,
            heads,
        }),
    })
}

/// Builds the trainable policy on top of `tail`: the heads are copied from the
/// `model.init_from` run when `model.init_heads` resolves to it (the default with
/// `init_from`: Algorithm 2, line 1, starts the policy as a copy of the reference), and
/// are fresh, seeded by `train.seed`, otherwise. Returns the policy and its heads'
/// architecture.
pub(crate) fn init_policy<B: Backend>(
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
        let (heads, file_cfg) = model_file::read_heads_safetensors::<B>(file, device)
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
        let heads = heads_cfg
            .try_init::<B>(device)
            .map_err(|e| anyhow!("model.heads_hidden: {e}"))?;
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

/// Applies the `preprocessor_config.json` of the `model.backbone` folder (or of a `fairpo
/// export` folder named by `model.init_from`), when it has one and
/// `model.backbone_preprocessing` is on, to
/// `data.preprocess` (also with `init_from`: a `backbone` named beside it supplies the
/// preprocessing both runs share).
pub(crate) fn resolve_preprocessing(cfg: &mut RunConfig) -> Result<()> {
    if !cfg.model.backbone_preprocessing {
        return Ok(());
    }
    // An export folder as `init_from` carries the preprocessing its model was trained with.
    let source = cfg
        .model
        .backbone
        .clone()
        .or_else(|| cfg.model.init_from.clone().filter(|d| is_export(d)));
    if let Some(dir) = &source {
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
pub(crate) fn resolve_trainable(t: TrainableLayers, layers: usize) -> Result<usize> {
    match t {
        TrainableLayers::All => Ok(layers),
        TrainableLayers::Last(k) if k <= layers => Ok(k),
        TrainableLayers::Last(k) => {
            bail!("model.trainable_layers = {k}, but the backbone has only {layers} encoder layers")
        }
    }
}

/// Loads the reference run (`reference = "runs/<sft>"`) and checks it fits this run.
pub(crate) fn load_reference<IB: Backend>(
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
    let fm = model_file::load_model::<IB>(&model_path, device)
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
    let ref_fp = model_file::trunk_fingerprint(&ref_trunk);
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

/// The loader of `dataset` with the run's settings: in the given order (the trainer shuffles),
/// `batch` images a batch, augmenting when `augment`.
pub(crate) fn batch_loader(
    dataset: &Arc<Dataset>,
    cfg: &RunConfig,
    batch: usize,
    augment: bool,
) -> Result<BatchLoader> {
    let lc = LoaderConfig {
        batch_size: batch,
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

/// A finished run opened for use: its folder, resolved configuration, summary and label
/// partition. `fairpo eval` (and anything else that reuses a trained model) starts here.
pub(crate) struct FinishedRun {
    pub(crate) paths: RunPaths,
    pub(crate) cfg: RunConfig,
    pub(crate) summary: RunSummary,
    pub(crate) partition: Partition,
}

impl FinishedRun {
    /// Opens `dir`; an error names what is missing or unreadable.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let paths = RunPaths::new(dir);
        if !paths.model().is_file() {
            bail!(
                "{} is not a finished run ({} is missing)",
                dir.display(),
                paths.model().display()
            );
        }
        Ok(Self {
            cfg: read_run_config(&paths)?,
            summary: read_summary(&paths)?,
            partition: Partition::load(paths.partition())?,
            paths,
        })
    }

    /// The selected model split at the run's `trainable_layers`.
    pub(crate) fn model<B: Backend>(&self, device: &B::Device) -> Result<SplitModel<B>> {
        let fm = model_file::load_model::<B>(&self.paths.model(), device)?;
        let (trunk, tail) = fm.vit.split(self.summary.trainable_layers);
        Ok(SplitModel {
            fingerprint: model_file::trunk_fingerprint(&trunk),
            trunk,
            vit: fm.meta.vit,
            policy: Policy {
                tail,
                heads: fm.heads,
            },
        })
    }
}

/// A finished run's model: the frozen trunk, and the policy on top.
pub(crate) struct SplitModel<B: Backend> {
    pub(crate) trunk: ViTTrunk<B>,
    /// The whole ViT's architecture.
    pub(crate) vit: ViTConfig,
    /// [`model_file::trunk_fingerprint`] of the trunk.
    pub(crate) fingerprint: String,
    pub(crate) policy: Policy<B>,
}

/// A run folder's `config.toml`: the configuration as resolved when it was trained.
pub(crate) fn read_run_config(paths: &RunPaths) -> Result<RunConfig> {
    let path = paths.config();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(RunConfig::from_toml_str(
        &text,
        &path.display().to_string(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::AutodiffModule;

    use crate::checkpoint::model_file::ModelMeta;

    type Ad = burn::backend::Autodiff<burn::backend::Flex>;

    /// `init_from` copies the heads by default, so the policy starts with the init run's
    /// scores (Algorithm 2, line 1); `init_heads = "fresh"` does not; mismatched heads are
    /// errors naming the option.
    #[test]
    fn init_from_copies_the_heads_unless_fresh() {
        use crate::config::InitHeads;
        type Inner = burn::backend::Flex;
        let device = Default::default();
        let vit_cfg = model_file::test_vit_config();
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let heads_cfg = HeadsConfig::new(3, 16).with_hidden(vec![4]).with_seed(7);
        let dir = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(dir.path());
        let meta = ModelMeta {
            vit: vit_cfg.clone(),
            heads: heads_cfg.clone(),
            labels: labels.clone(),
        };
        model_file::save_model(
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
        let init = model_file::load_model::<Inner>(&paths.model(), &device).unwrap();
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

    /// The backbone's `preprocessor_config.json` is applied unless an overlay of
    /// `configs/preprocess/` turns it off; each overlay resolves to what its comment states.
    #[test]
    fn preprocessing_overlays_resolve_as_documented() {
        use fairpo_data::preprocess::ResizeMode;
        use fairpo_data::ResampleFilter;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("preprocessor_config.json"),
            r#"{"size": {"height": 224, "width": 224}, "resample": 2, "image_mean": [0.1, 0.2, 0.3], "image_std": [0.4, 0.5, 0.6]}"#,
        )
        .unwrap();
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let resolved = |overlay: Option<&str>| {
            let mut paths = vec![configs.join("coco-sft.toml")];
            paths.extend(overlay.map(|o| configs.join("preprocess").join(o)));
            let backbone = format!("model.backbone={:?}", dir.path().display().to_string());
            let mut cfg = RunConfig::load(&paths, &[backbone]).unwrap();
            resolve_preprocessing(&mut cfg).unwrap();
            cfg.data.preprocess
        };
        let from_file = resolved(None);
        assert_eq!(
            (from_file.mean, from_file.std),
            ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
        );
        let ck = resolved(Some("checkpoint.toml"));
        assert_eq!(
            (ck.mean, ck.std, ck.resize),
            ([0.5; 3], [0.5; 3], ResizeMode::Direct)
        );
        let paper = resolved(Some("paper.toml"));
        assert_eq!(
            (paper.mean, paper.std),
            ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        );
        assert_eq!(
            (paper.resize, paper.filter),
            (ResizeMode::Direct, ResampleFilter::Bilinear)
        );
        let rc = resolved(Some("released-code.toml"));
        assert_eq!(rc.mean, [0.485, 0.456, 0.406]);
        assert_eq!(
            (rc.resize, rc.resize_shorter, rc.filter, rc.size),
            (
                ResizeMode::ShorterSideCrop,
                Some(256),
                ResampleFilter::Bicubic,
                224
            )
        );
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
