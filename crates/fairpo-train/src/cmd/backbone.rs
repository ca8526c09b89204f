//! `fairpo backbone init`: a randomly initialised ViT written as a Hugging Face model folder.
//!
//! For tests, rehearsals and benchmarks at a real model's shapes where its weights are not at
//! hand: the folder has the files a downloaded checkpoint has (`config.json`,
//! `model.safetensors`, `preprocessor_config.json`) and loads wherever one is accepted
//! (`model.backbone`, `fairpo features --weights`). Its features are random, so what a run on
//! it learns says nothing about the real model's accuracy.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use fairpo_vit::ViTConfig;

/// Backbone tools.
#[derive(Debug, Args)]
pub struct BackboneArgs {
    #[command(subcommand)]
    pub command: BackboneCommand,
}

/// `fairpo backbone <command>`.
#[derive(Debug, Subcommand)]
pub enum BackboneCommand {
    /// Write a seeded random ViT as a Hugging Face folder (ViTModel layout).
    Init(InitArgs),
}

/// `fairpo backbone init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Output folder (created; must not hold a config.json unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Architecture: `base-patch16-224` (google/vit-base-patch16-224's shapes, 86 M
    /// parameters), `tiny` (the demo's) or `micro` (the smallest, for tests).
    #[arg(long, default_value = "base-patch16-224")]
    pub arch: String,
    /// Seed of the weights: the same seed writes the same folder.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Overwrite an existing model folder.
    #[arg(long)]
    pub force: bool,
}

/// The architecture named by `--arch`.
pub fn architecture(name: &str) -> anyhow::Result<ViTConfig> {
    match name {
        "base-patch16-224" => Ok(ViTConfig::base_patch16_224()),
        "tiny" => Ok(ViTConfig::tiny()),
        "micro" => Ok(ViTConfig::micro()),
        other => bail!("--arch: expected base-patch16-224, tiny or micro, got {other:?}"),
    }
}

/// google/vit-base-patch16-224's `preprocessor_config.json` values at this image size:
/// bilinear resize to the model's input, mean = std = 0.5.
pub fn checkpoint_preprocessor(image_size: usize) -> serde_json::Value {
    serde_json::json!({
        "image_processor_type": "ViTImageProcessor",
        "do_resize": true,
        "size": { "height": image_size, "width": image_size },
        "resample": 2,
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5]
    })
}

/// The tensors of a random ViT of `cfg` drawn as transformers initialises `ViTModel`: linear and
/// patch-projection weights, CLS token and position embeddings from N(0, 0.02²) (its truncation
/// at ±2 never binds at this width), biases 0, LayerNorm weights 1. Drawn from a ChaCha8 stream
/// of `seed` in key-table order, so a seed always gives the same file.
pub fn random_hf_tensors(cfg: &ViTConfig, seed: u64) -> Vec<fairpo_vit::HfTensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut normal = move || -> f32 {
        // Box-Muller: u1 in (0, 1] keeps the log finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random();
        (0.02 * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    };
    fairpo_vit::hf_key_table(cfg)
        .into_iter()
        .map(|spec| {
            let n: usize = spec.shape.iter().product();
            let values = if spec.key.ends_with(".bias") {
                vec![0.0; n]
            } else if spec.key.contains("layernorm") {
                vec![1.0; n]
            } else {
                (0..n).map(|_| normal()).collect()
            };
            fairpo_vit::HfTensor {
                key: spec.key,
                shape: spec.shape,
                values,
            }
        })
        .collect()
}

/// Write a random backbone of architecture `cfg` and seed `seed` to `out`, with
/// google/vit-base-patch16-224's preprocessing at `cfg`'s image size.
pub fn write_random_backbone(
    out: &std::path::Path,
    cfg: &ViTConfig,
    seed: u64,
) -> anyhow::Result<()> {
    fairpo_vit::save_hf_tensors(
        &random_hf_tensors(cfg, seed),
        cfg,
        out,
        Some(&checkpoint_preprocessor(cfg.image_size)),
    )
    .with_context(|| format!("writing {}", out.display()))
}

/// Runs `fairpo backbone ...`.
pub fn run(args: BackboneArgs) -> anyhow::Result<()> {
    match args.command {
        BackboneCommand::Init(a) => {
            let cfg = architecture(&a.arch)?;
            let exists = ["config.json", "model.safetensors"]
                .iter()
                .any(|f| a.out.join(f).exists());
            if exists && !a.force {
                bail!(
                    "{} already holds a model (use --force to overwrite it)",
                    a.out.display()
                );
            }
            let start = std::time::Instant::now();
            write_random_backbone(&a.out, &cfg, a.seed)?;
            let params = cfg
                .num_parameters()
                .context("counting the architecture's parameters")?;
            println!(
                "wrote a random {} ViT ({:.1} M parameters, seed {}) to {} in {:.1} s",
                a.arch,
                params as f64 / 1e6,
                a.seed,
                a.out.display(),
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_backbone_loads_as_a_model_folder_with_its_preprocessing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("vit");
        write_random_backbone(&out, &ViTConfig::micro(), 3).unwrap();
        let loaded =
            fairpo_vit::load_hf_dir::<burn::backend::Flex>(&out, &Default::default()).unwrap();
        assert_eq!(loaded.config, ViTConfig::micro());
        let mut pre = fairpo_data::PreprocessConfig {
            mean: [0.1; 3],
            ..Default::default()
        };
        pre.apply_hf_preprocessor(&out.join("preprocessor_config.json"))
            .unwrap();
        assert_eq!((pre.size, pre.mean, pre.std), (8, [0.5; 3], [0.5; 3]));
        // The seed decides the weights.
        let again = dir.path().join("again");
        write_random_backbone(&again, &ViTConfig::micro(), 3).unwrap();
        let other = dir.path().join("other");
        write_random_backbone(&other, &ViTConfig::micro(), 4).unwrap();
        let bytes = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
        assert_eq!(bytes(&out), bytes(&again));
        assert_ne!(bytes(&out), bytes(&other));
        assert!(architecture("large")
            .unwrap_err()
            .to_string()
            .contains("--arch"));
        // Drawn as transformers initialises: weights N(0, 0.02²), biases 0, LayerNorm 1.
        let t = random_hf_tensors(&ViTConfig::base_patch16_224(), 0);
        let find = |k: &str| &t.iter().find(|t| t.key == k).unwrap().values;
        let q = find("encoder.layer.0.attention.attention.query.weight");
        let mean = q.iter().map(|&v| f64::from(v)).sum::<f64>() / q.len() as f64;
        let var = q
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / q.len() as f64;
        assert!(
            mean.abs() < 1e-3 && (var.sqrt() - 0.02).abs() < 2e-4,
            "{mean} {var}"
        );
        assert!(find("layernorm.weight").iter().all(|&v| v == 1.0));
        assert!(find("layernorm.bias").iter().all(|&v| v == 0.0));
    }
}
