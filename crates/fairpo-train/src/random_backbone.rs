//! A seeded random ViT as a Hugging Face model folder (`fairpo backbone init`, the self-test,
//! the rehearsal): the files a downloaded checkpoint has (`config.json`, `model.safetensors`,
//! `preprocessor_config.json`), with weights drawn as transformers initialises them. Its
//! features are random, so what a run on it learns says nothing about the real model.

use anyhow::Context;
use fairpo_vit::ViTConfig;

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
