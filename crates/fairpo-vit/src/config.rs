//! Model and preprocessing configuration, readable from a Hugging Face model folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::VitError;

/// Reads a JSON file of a model folder and validates it; every error names the file.
fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    validate: impl Fn(&T) -> Result<(), String>,
) -> Result<T, VitError> {
    let text = std::fs::read_to_string(path).map_err(|source| VitError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: T = serde_json::from_str(&text).map_err(|source| VitError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    validate(&value).map_err(|reason| VitError::InvalidConfig {
        path: Some(path.to_path_buf()),
        reason,
    })?;
    Ok(value)
}

/// Architecture of a Vision Transformer, field for field the Hugging Face `ViTConfig`
/// (`config.json`). Unknown keys in `config.json` (dropout rates, `architectures`, ...) are
/// ignored; missing keys take the Hugging Face defaults (ViT-B/16 at 224 px).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ViTConfig {
    /// Width D of every token (768 for ViT-B).
    #[serde(default = "d_hidden_size")]
    pub hidden_size: usize,
    /// Number L of encoder layers (12 for ViT-B).
    #[serde(default = "d_num_hidden_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size`.
    #[serde(default = "d_num_attention_heads")]
    pub num_attention_heads: usize,
    /// Width of the MLP inside each layer (3072 for ViT-B).
    #[serde(default = "d_intermediate_size")]
    pub intermediate_size: usize,
    /// Side of a square patch in pixels; must divide `image_size`.
    #[serde(default = "d_patch_size")]
    pub patch_size: usize,
    /// Side of the square input image in pixels.
    #[serde(default = "d_image_size")]
    pub image_size: usize,
    /// Input channels (3 for RGB).
    #[serde(default = "d_num_channels")]
    pub num_channels: usize,
    /// LayerNorm epsilon (1e-12 for google/vit-base-patch16-224).
    #[serde(default = "d_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// MLP activation; only `"gelu"` (exact, erf-based) is supported.
    #[serde(default = "d_hidden_act")]
    pub hidden_act: String,
    /// Whether query/key/value projections have a bias.
    #[serde(default = "d_qkv_bias")]
    pub qkv_bias: bool,
}

fn d_hidden_size() -> usize {
    768
}
fn d_num_hidden_layers() -> usize {
    12
}
fn d_num_attention_heads() -> usize {
    12
}
fn d_intermediate_size() -> usize {
    3072
}
fn d_patch_size() -> usize {
    16
}
fn d_image_size() -> usize {
    224
}
fn d_num_channels() -> usize {
    3
}
fn d_layer_norm_eps() -> f64 {
    1e-12
}
fn d_hidden_act() -> String {
    "gelu".to_string()
}
fn d_qkv_bias() -> bool {
    true
}

impl Default for ViTConfig {
    /// ViT-B/16 at 224 px (google/vit-base-patch16-224).
    fn default() -> Self {
        Self::base_patch16_224()
    }
}

/// Largest backbone [`ViTConfig::validate`] accepts: 5 billion parameters (20 GB in f32; ViT-g/14
/// has 1 billion).
pub const MAX_PARAMETERS: u64 = 5_000_000_000;

impl ViTConfig {
    /// ViT-B/16 at 224 px, the paper's backbone (google/vit-base-patch16-224).
    pub fn base_patch16_224() -> Self {
        Self {
            hidden_size: d_hidden_size(),
            num_hidden_layers: d_num_hidden_layers(),
            num_attention_heads: d_num_attention_heads(),
            intermediate_size: d_intermediate_size(),
            patch_size: d_patch_size(),
            image_size: d_image_size(),
            num_channels: d_num_channels(),
            layer_norm_eps: d_layer_norm_eps(),
            hidden_act: d_hidden_act(),
            qkv_bias: d_qkv_bias(),
        }
    }

    /// The demo's from-scratch model: hidden 64, 4 layers, 4 heads, MLP 128, patch 4 on
    /// 32 px images (64 patches + CLS). LayerNorm eps 1e-6 (eps 1e-12 only matters for
    /// pretrained weights).
    pub fn tiny() -> Self {
        Self {
            hidden_size: 64,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            intermediate_size: 128,
            patch_size: 4,
            image_size: 32,
            num_channels: 3,
            layer_norm_eps: 1e-6,
            hidden_act: d_hidden_act(),
            qkv_bias: true,
        }
    }

    /// The smallest model that still has every part: hidden 16, 3 layers, 2 heads, MLP 32,
    /// patch 4 on 8 px images (4 patches + CLS). For tests and examples, where a forward pass
    /// must take microseconds.
    pub fn micro() -> Self {
        Self {
            hidden_size: 16,
            num_hidden_layers: 3,
            num_attention_heads: 2,
            intermediate_size: 32,
            patch_size: 4,
            image_size: 8,
            ..Self::tiny()
        }
    }

    /// Read and validate a Hugging Face `config.json`.
    pub fn load(path: &Path) -> Result<Self, VitError> {
        read_json(path, Self::validate)
    }

    /// Check the configuration describes a model this crate can build.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.hidden_act != "gelu" {
            problems.push(format!(
                "hidden_act = {:?} is not supported (only \"gelu\", the exact erf GELU)",
                self.hidden_act
            ));
        }
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("patch_size", self.patch_size),
            ("image_size", self.image_size),
            ("num_channels", self.num_channels),
        ] {
            if v == 0 {
                problems.push(format!("{name} must be > 0"));
            }
        }
        if self.num_attention_heads > 0
            && !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            problems.push(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.patch_size > 0 && !self.image_size.is_multiple_of(self.patch_size) {
            problems.push(format!(
                "image_size {} is not divisible by patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            problems.push(format!(
                "layer_norm_eps must be > 0, got {}",
                self.layer_norm_eps
            ));
        }
        if problems.is_empty() {
            // Only once the sizes are known to be sane: a corrupt or mistyped config must be
            // refused here, not by the allocator when the model is built.
            match self.num_parameters() {
                Some(n) if n <= MAX_PARAMETERS => {}
                n => problems.push(format!(
                    "the configuration describes a ViT of {} parameters; the limit is {MAX_PARAMETERS} (ViT-B/16 has 86 million)",
                    n.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
                )),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Parameter count of the backbone (embeddings, encoder layers, final LayerNorm), `None`
    /// on overflow.
    pub fn num_parameters(&self) -> Option<u64> {
        let u = |v: usize| u64::try_from(v).ok();
        let (d, i, l) = (
            u(self.hidden_size)?,
            u(self.intermediate_size)?,
            u(self.num_hidden_layers)?,
        );
        let side = u(self.image_size / self.patch_size.max(1))?;
        let patch_in = u(self.num_channels)?.checked_mul(u(self.patch_size)?.checked_pow(2)?)?;
        let tokens = side.checked_mul(side)?.checked_add(1)?;
        let embeddings = patch_in
            .checked_mul(d)?
            .checked_add(d)?
            .checked_add(tokens.checked_mul(d)?)?
            .checked_add(d)?;
        // Q, K, V, output projections; the two MLP layers; two LayerNorms.
        let per_layer = d
            .checked_mul(d)?
            .checked_mul(4)?
            .checked_add(d.checked_mul(4)?)?
            .checked_add(d.checked_mul(i)?.checked_mul(2)?)?
            .checked_add(i.checked_add(d)?)?
            .checked_add(d.checked_mul(4)?)?;
        embeddings
            .checked_add(per_layer.checked_mul(l)?)?
            .checked_add(d.checked_mul(2)?)
    }

    /// Patches per image, N = (image_size / patch_size)².
    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side
    }

    /// Tokens per image including CLS, N + 1.
    pub fn seq_len(&self) -> usize {
        self.num_patches() + 1
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Files of a Hugging Face model folder.
#[derive(Clone, Debug)]
pub struct ModelDir {
    /// The folder.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors` if present, else `pytorch_model.bin`.
    pub weights: PathBuf,
}

impl ModelDir {
    /// Locate `config.json` and the weights file in `dir` (safetensors preferred).
    pub fn locate(dir: &Path) -> Result<Self, VitError> {
        if !dir.is_dir() {
            return Err(VitError::MissingModelDir {
                path: dir.to_path_buf(),
            });
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(VitError::MissingFile {
                path: config,
                what: "the model's config.json",
            });
        }
        let st = dir.join("model.safetensors");
        let bin = dir.join("pytorch_model.bin");
        let weights = if st.is_file() {
            st
        } else if bin.is_file() {
            bin
        } else {
            return Err(VitError::MissingFile {
                path: dir.join("model.safetensors"),
                what: "weights (model.safetensors or pytorch_model.bin)",
            });
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_config_defaults_are_vit_b16() {
        let cfg: ViTConfig = serde_json::from_str("{\"architectures\": [\"ViTModel\"]}").unwrap();
        assert_eq!(cfg, ViTConfig::base_patch16_224());
        assert_eq!(cfg.seq_len(), 197);
        assert_eq!(cfg.head_dim(), 64);
        // transformers' ViTModel(ViTConfig(), add_pooling_layer=False): sum of numel().
        assert_eq!(cfg.num_parameters(), Some(85_798_656));
    }

    #[test]
    fn oversized_configs_are_refused_before_any_allocation() {
        let big = ViTConfig {
            hidden_size: 1 << 20,
            num_attention_heads: 1,
            ..ViTConfig::base_patch16_224()
        };
        let e = big.validate().unwrap_err();
        assert!(e.contains("parameters") && e.contains("limit"), "{e}");
        let overflow = ViTConfig {
            hidden_size: usize::MAX,
            num_attention_heads: 1,
            ..ViTConfig::base_patch16_224()
        };
        assert!(overflow.validate().unwrap_err().contains("more than 2^64"));
    }
}
