//! `[model]`: the backbone, its initialisation and the freeze policy.

use std::path::PathBuf;

use fairpo_vit::TrunkPrecision;
use serde::{Deserialize, Serialize};

/// How many of the backbone's last encoder layers are trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainableLayers {
    /// The last N encoder layers (and the final LayerNorm) train; 0 = heads only.
    Last(usize),
    /// Everything trains, patch embedding included (the demo's SFT from scratch).
    All,
}

impl Serialize for TrainableLayers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TrainableLayers::Last(n) => s.serialize_u64(*n as u64),
            TrainableLayers::All => s.serialize_str("all"),
        }
    }
}

impl<'de> Deserialize<'de> for TrainableLayers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(TrainableLayers::Last(n as usize)),
            Raw::S(s) if s == "all" => Ok(TrainableLayers::All),
            Raw::S(s) => Err(serde::de::Error::custom(format!(
                "expected a layer count or \"all\", got {s:?}"
            ))),
        }
    }
}

/// A ViT built from scratch with random weights (the demo's tiny backbone). Defaults are
/// `fairpo_vit::ViTConfig::tiny()`: hidden 64, 4 layers, 4 heads, MLP 128, patch 4, 32 px.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScratchVit {
    /// Token width D.
    pub hidden_size: usize,
    /// Number of encoder layers L.
    pub num_hidden_layers: usize,
    /// Attention heads (must divide `hidden_size`).
    pub num_attention_heads: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Patch side in pixels (must divide `image_size`).
    pub patch_size: usize,
    /// Input image side in pixels.
    pub image_size: usize,
}

impl Default for ScratchVit {
    fn default() -> Self {
        let t = fairpo_vit::ViTConfig::tiny();
        Self {
            hidden_size: t.hidden_size,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            intermediate_size: t.intermediate_size,
            patch_size: t.patch_size,
            image_size: t.image_size,
        }
    }
}

impl ScratchVit {
    /// The full ViT architecture.
    pub fn vit_config(&self) -> fairpo_vit::ViTConfig {
        fairpo_vit::ViTConfig {
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            patch_size: self.patch_size,
            image_size: self.image_size,
            ..fairpo_vit::ViTConfig::tiny()
        }
    }
}

/// `[model]`: where the backbone comes from and what trains.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A Hugging Face ViT folder (`config.json` + `model.safetensors`/`pytorch_model.bin`),
    /// e.g. google/vit-base-patch16-224. Default: none.
    pub backbone: Option<PathBuf>,
    /// Build a ViT from scratch with random weights instead (`[model.scratch]`). Default: none.
    pub scratch: Option<ScratchVit>,
    /// Take the backbone weights from a finished run's best checkpoint (`runs/<sft>`) or
    /// from a `fairpo export` folder; wins over `backbone`/`scratch` (a `backbone` set beside
    /// it still supplies its `preprocessor_config.json`; without one, an export folder's
    /// does). The heads come from there too unless `init_heads = "fresh"`. Default: none.
    pub init_from: Option<PathBuf>,
    /// Where the per-label heads start when `init_from` is set: `"init_from"` copies them
    /// from that run (so the policy starts equal to it: the paper's Algorithm 2, line 1,
    /// `w_t^(0) = ŵ_t`), `"fresh"` initialises new heads from `train.seed`. Default:
    /// `"init_from"` with `init_from`, otherwise fresh (`"init_from"` without `init_from`
    /// is an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_heads: Option<InitHeads>,
    /// Start the heads from this safetensors file instead (`heads.{k}.weight` `[T, out, in]`,
    /// `heads.{k}.bias` `[T, out]` for layer k = 0, 1, …; what
    /// `scripts/fixtures/train_reference.py` and `bench/parity_demo.py` write). Its shapes
    /// must match the labels, the backbone width and `heads_hidden`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heads_file: Option<PathBuf>,
    /// Apply the `backbone` folder's `preprocessor_config.json` (size, resample, mean, std)
    /// over `[data.preprocess]`. Default true; the `configs/preprocess/paper.toml` and
    /// `released-code.toml` overlays turn it off to use their own settings.
    pub backbone_preprocessing: bool,
    /// Encoder layers trained, counted from the top: a number (paper: 1) or `"all"`.
    pub trainable_layers: TrainableLayers,
    /// Hidden widths of each label's MLP head (paper E.2: `[256, 64, 16, 4]`).
    pub heads_hidden: Vec<usize>,
    /// Number format of the frozen trunk: `"f32"` or `"bf16"` (bf16 products, f32
    /// accumulation; the trainable tail, heads, losses and optimiser stay f32). On the CPU
    /// bf16 needs the AMX tile unit (Sapphire Rapids or later) and falls back to f32, with a
    /// log line, without it; on CUDA it runs burn's ops on bf16 tensors. Training,
    /// evaluation and `fairpo predict` of the run use it. Default `"f32"` (see the README's
    /// measurements).
    pub trunk_precision: TrunkPrecision,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            backbone: None,
            scratch: None,
            init_from: None,
            init_heads: None,
            heads_file: None,
            backbone_preprocessing: true,
            trainable_layers: TrainableLayers::Last(1),
            heads_hidden: vec![256, 64, 16, 4],
            trunk_precision: TrunkPrecision::F32,
        }
    }
}

/// Where the policy's label heads start (`model.init_heads`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InitHeads {
    /// Copied from the `model.init_from` run.
    InitFrom,
    /// New heads, seeded by `train.seed`.
    Fresh,
}

impl ModelConfig {
    /// Whether the heads are copied from `init_from` (the resolved `init_heads`).
    pub fn heads_from_init(&self) -> bool {
        self.init_from.is_some() && self.init_heads != Some(InitHeads::Fresh)
    }
}
