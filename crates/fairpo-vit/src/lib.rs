//! # fairpo-vit
//!
//! The FairPO backbone: a Vision Transformer (the architecture of Hugging Face `ViTModel`)
//! in burn, generic over `B: Backend`.
//!
//! - [`ViTConfig`]: the architecture, read from a Hugging Face `config.json` or built in
//!   code ([`ViTConfig::tiny`] for the demo, [`ViTConfig::base_patch16_224`] for the paper).
//! - [`ViT`]: `forward(pixels [B,3,H,W]) -> CLS [B,D]` after the final LayerNorm, and the
//!   hidden states after any layer ([`ViT::forward_cls_after`], [`ViT::forward_hidden_states`]).
//! - The freeze policy: [`ViT::split`] / [`ViT::split_frozen`] into a frozen [`ViTTrunk`]
//!   and a trainable [`ViTTail`]; [`ViTTrunk::with_precision`] runs the trunk in bf16
//!   ([`TrunkPrecision`]; on the CPU through the AMX tile unit).
//! - Weights: [`load_hf_dir`] reads `model.safetensors` or `pytorch_model.bin` in either HF
//!   layout (`ViTModel`, or `ViTForImageClassification` with the `vit.` prefix) with one
//!   explicit key table ([`hf_key_table`]) (`preprocessor_config.json` is read by fairpo-data);
//!   [`save_checkpoint`]/[`load_checkpoint`] use burn's
//!   record format.
//!
//! Parity with `transformers` is tested against fixtures made by
//! `scripts/fixtures/vit_reference.py` (tests/parity.rs).

mod alloc;
mod config;
mod error;
mod hf_writer;
mod kernels;
mod model;
mod precision;
mod weights;

pub use alloc::mimalloc_keep_freed_memory;
pub use config::{ModelDir, ViTConfig, MAX_PARAMETERS};
pub use error::VitError;
pub use hf_writer::{hf_tensors, safetensors_bytes, save_hf_dir, save_hf_tensors, HfTensor};
pub use kernels::{gelu, gelu_derivative_f32, gelu_f32, gelu_in_place, softmax_last};
pub use model::{
    cls, patchify, Attention, AttentionKind, Embeddings, Encoder, EncoderLayer, Intermediate,
    Output, PatchEmbeddings, SelfAttention, SelfOutput, ViT, ViTOutput, ViTTail, ViTTrunk,
};
pub use precision::{AppliedPrecision, TrunkPrecision};
pub use weights::{
    hf_key_table, load_checkpoint, load_hf_dir, load_hf_weights, read_tensors, record_from_bytes,
    record_to_bytes, save_checkpoint, KeySpec, LoadedViT, Transform, IGNORED_PREFIXES,
};
