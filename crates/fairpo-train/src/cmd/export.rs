//! `fairpo export`: a finished run's selected model as a Hugging Face-style folder that
//! transformers' `ViTModel` plus `python/fairpo_load.py` reproduce, and that fairpo reads back
//! as `model.backbone` (with `model.heads_file` = its `model.safetensors`).
//!
//! The folder: `config.json` (`ViTModel`); `model.safetensors` with the whole ViT in the
//! `ViTModel` key layout (frozen layers from the backbone, trained ones from the run) and the
//! heads as `heads.{k}.weight` `[T, out, in]`, `heads.{k}.bias` `[T, out]` (ReLU between
//! layers, one logit per label from the last); `preprocessor_config.json`; `labels.json`
//! (`{"labels": [...], "privileged": [...]}`). Probabilities are
//! `sigmoid(heads(CLS after the final LayerNorm))`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::backend::Flex;
use clap::Args;
use fairpo_data::{PreprocessConfig, ResampleFilter, ResizeMode};
use fairpo_vit::HfTensor;

use crate::checkpoint::model_file;
use crate::setup::FinishedRun;

/// Arguments of `fairpo export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run folder (e.g. runs/coco-cpo).
    #[arg(long)]
    pub run: PathBuf,
    /// The folder to write (created; existing files of the export are replaced).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `fairpo export`.
pub fn run(args: ExportArgs) -> Result<()> {
    let run = FinishedRun::open(&args.run)?;
    let device = Default::default();
    let model = model_file::load_model::<Flex>(&run.paths.model(), &device)
        .with_context(|| format!("loading {}", run.paths.model().display()))?;
    let cfg = &model.meta.vit;
    let mut tensors = fairpo_vit::hf_tensors(&model.vit, cfg)?;
    tensors.extend(head_tensors(&model.heads)?);
    let pre = preprocessor(&run.cfg.data.preprocess)?;
    // config.json and preprocessor_config.json through the backbone writer, then the
    // weights with the heads beside the ViT.
    fairpo_vit::save_hf_tensors(
        &tensors[..fairpo_vit::hf_key_table(cfg).len()],
        cfg,
        &args.out,
        Some(&pre),
    )?;
    let weights = args.out.join("model.safetensors");
    let bytes = fairpo_vit::safetensors_bytes(&tensors).map_err(anyhow::Error::msg)?;
    fairpo_io::atomic_write(&weights, &bytes)?;
    let labels = serde_json::json!({
        "labels": run.partition.labels,
        "privileged": run.partition.privileged,
    });
    fairpo_io::write_json_atomic(args.out.join("labels.json"), &labels)?;
    println!(
        "exported {} ({} labels, {} head layers) to {}",
        run.paths.root.display(),
        run.partition.labels.len(),
        model.heads.to_stacked().len(),
        args.out.display()
    );
    Ok(())
}

/// The heads in the exchange layout (`model_file::read_heads_safetensors` reads it back).
fn head_tensors(heads: &fairpo_heads::Heads<Flex>) -> Result<Vec<HfTensor>> {
    let mut out = Vec::new();
    for (k, (w, b)) in heads.to_stacked().into_iter().enumerate() {
        // Stacked [T, in, out] → PyTorch Linear weights [T, out, in].
        for (key, t) in [
            (format!("heads.{k}.weight"), w.swap_dims(1, 2).into_data()),
            (format!("heads.{k}.bias"), b.into_data()),
        ] {
            let shape = t.shape.to_vec();
            let values = t
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{key}: {e:?}"))?;
            out.push(HfTensor { key, shape, values });
        }
    }
    Ok(out)
}

/// The run's evaluation preprocessing as `ViTImageProcessor` settings. A resize-then-crop
/// run cannot be expressed there and is refused rather than exported wrong.
fn preprocessor(p: &PreprocessConfig) -> Result<serde_json::Value> {
    if p.resize != ResizeMode::Direct {
        bail!(
            "the run resizes the shorter side then crops (data.preprocess.resize = \"shorter_side_crop\"), which transformers' ViTImageProcessor cannot express; export supports runs with resize = \"direct\""
        );
    }
    let resample = match p.filter {
        ResampleFilter::Bilinear => 2,
        ResampleFilter::Bicubic => 3,
    };
    Ok(serde_json::json!({
        "image_processor_type": "ViTImageProcessor",
        "do_resize": true,
        "size": { "height": p.size, "width": p.size },
        "resample": resample,
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": p.mean,
        "image_std": p.std,
    }))
}
