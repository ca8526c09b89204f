//! `fairpo features`: CLS features of a frozen ViT over a set of images, as `.npy` + sidecar.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use fairpo_data::Preprocessor;
use fairpo_vit::TrunkPrecision;
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::{run_on, BackendTask, DeviceSpec};
use crate::features::{
    extract_features, list_images, preprocess_for_model, sha256_file, sha256_paths, sidecar_path,
    write_features, FeatureLayer, FeatureMeta, FEATURE_FORMAT_VERSION,
};

/// Arguments of `fairpo features`.
#[derive(Debug, Args)]
pub struct FeaturesArgs {
    /// Hugging Face model folder: config.json, model.safetensors or pytorch_model.bin,
    /// optional preprocessor_config.json.
    #[arg(long, value_name = "MODEL_DIR")]
    pub weights: PathBuf,
    /// A directory (its .jpg/.jpeg/.png files in lexicographic order of name) or a list
    /// file (one image path per line, relative to the list's folder).
    #[arg(long, value_name = "DIR_OR_LIST")]
    pub images: PathBuf,
    /// Output features, f32 [N, D]; a sidecar F.npy.json records weights hash, config,
    /// preprocessing, layer and image list.
    #[arg(long, value_name = "F.npy")]
    pub out: PathBuf,
    /// `cls`: CLS after the final LayerNorm; N: CLS after the first N encoder layers
    /// (before the final LayerNorm; 0 = embeddings).
    #[arg(long, default_value = "cls")]
    pub layer: FeatureLayer,
    /// Number format of every encoder layer before the one the feature is read after:
    /// f32, or bf16 (on the CPU it needs the AMX tile unit, and falls back to f32 with a
    /// log line without it). Recorded in the sidecar.
    #[arg(long, default_value = "f32")]
    pub precision: TrunkPrecision,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

/// Loads the model, extracts the features and writes them.
pub fn run(args: FeaturesArgs) -> Result<()> {
    if args.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let device = args.device;
    run_on(&device, Extract(args))?
}

struct Extract(FeaturesArgs);

impl BackendTask for Extract {
    type Output = Result<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<()> {
        // Inference only: the inner backend records no graph.
        extract::<B::InnerBackend>(self.0, device)
    }
}

fn extract<B: burn::tensor::backend::Backend>(args: FeaturesArgs, device: B::Device) -> Result<()> {
    let images = list_images(&args.images)?;
    let loaded = fairpo_vit::load_hf_dir::<B>(&args.weights, &device)
        .with_context(|| format!("loading the model from {}", args.weights.display()))?;
    let pre_cfg = preprocess_for_model(&args.weights, &loaded.config)?;
    let pre = Preprocessor::new(pre_cfg.clone()).context("preprocessing settings")?;
    let weights_sha256 = sha256_file(&loaded.weights_path)?;
    tracing::info!(
        images = images.len(),
        model = %args.weights.display(),
        layer = %args.layer,
        device = %args.device,
        "extracting features"
    );

    let bar = ProgressBar::new(images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} images [{elapsed_precise} < {eta_precise}, {per_sec}]",
        )
        .expect("valid progress template"),
    );
    let start = Instant::now();
    let features = extract_features(
        &loaded.model,
        &images,
        &pre,
        args.layer,
        args.precision,
        args.batch,
        &device,
        |done| bar.set_position(done as u64),
    );
    bar.finish_and_clear();
    let (features, applied) = features?;
    tracing::info!("frozen layers: {}", applied.describe());
    let secs = start.elapsed().as_secs_f64();

    let meta = FeatureMeta {
        format_version: FEATURE_FORMAT_VERSION,
        weights_sha256,
        weights_path: loaded.weights_path.clone(),
        config: loaded.config.clone(),
        preprocess: pre_cfg,
        layer: args.layer,
        num_images: features.rows,
        tokens: 1,
        dim: features.cols,
        images_sha256: sha256_paths(&images),
        trunk_precision: applied.precision(),
    };
    write_features(&args.out, &features, &meta)?;
    tracing::info!(
        rows = features.rows,
        dim = features.cols,
        secs = format!("{secs:.2}"),
        img_per_s = format!("{:.1}", features.rows as f64 / secs.max(1e-9)),
        "features written"
    );
    println!(
        "wrote {} [{} x {}] and {}",
        args.out.display(),
        features.rows,
        features.cols,
        sidecar_path(&args.out).display()
    );
    Ok(())
}
