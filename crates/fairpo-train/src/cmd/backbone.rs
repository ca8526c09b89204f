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

use crate::random_backbone::write_random_backbone;

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
    fn architectures_are_named() {
        assert_eq!(architecture("micro").unwrap(), ViTConfig::micro());
        assert!(architecture("large")
            .unwrap_err()
            .to_string()
            .contains("--arch"));
    }
}
