//! Finished-model files (`model.ckpt`: the whole ViT, the heads and their architecture), the
//! heads' safetensors layout, and the fingerprint that tells whether two runs share a frozen
//! trunk.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use fairpo_heads::{Heads, HeadsConfig};
use fairpo_vit::{record_from_bytes, record_to_bytes, ViT, ViTConfig, ViTTrunk};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::sections::SectionFile;

/// Architecture of a finished model, stored beside its weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelMeta {
    /// Backbone architecture.
    pub vit: ViTConfig,
    /// Heads architecture.
    pub heads: HeadsConfig,
    /// Label names, in head order.
    pub labels: Vec<String>,
}

/// Errors reading or writing model files.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// Read/write failure.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Atomic write failure.
    #[error(transparent)]
    Write(#[from] fairpo_io::IoError),
    /// Corrupt or incompatible content.
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
}

/// A finished model: full ViT + heads, as stored in `runs/<run>/model.ckpt`.
#[derive(Debug)]
pub struct FinishedModel<B: Backend> {
    /// Architecture and labels.
    pub meta: ModelMeta,
    /// The whole backbone.
    pub vit: ViT<B>,
    /// The heads.
    pub heads: Heads<B>,
}

/// Writes `model.ckpt` atomically.
pub fn save_model<B: Backend>(
    path: &Path,
    meta: &ModelMeta,
    vit: ViT<B>,
    heads: Heads<B>,
) -> Result<(), ModelFileError> {
    let fmt = |reason: String| ModelFileError::Format {
        path: path.display().to_string(),
        reason,
    };
    let mut c = SectionFile::new();
    c.insert(
        "meta",
        serde_json::to_vec_pretty(meta).map_err(|e| fmt(e.to_string()))?,
    );
    c.insert("vit", record_to_bytes(vit).map_err(fmt)?);
    c.insert("heads", record_to_bytes(heads).map_err(fmt)?);
    fairpo_io::atomic_write(path, &c.encode())?;
    Ok(())
}

/// Reads `model.ckpt`.
pub fn load_model<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<FinishedModel<B>, ModelFileError> {
    let fmt = |reason: String| ModelFileError::Format {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| ModelFileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut c = SectionFile::decode(&bytes).map_err(|e| fmt(e.to_string()))?;
    let meta: ModelMeta = serde_json::from_slice(c.get("meta").map_err(|e| fmt(e.to_string()))?)
        .map_err(|e| fmt(format!("bad meta: {e}")))?;
    // A record holds at least 4 bytes per f32 parameter: a meta claiming more than the file
    // can hold is corrupt, and must not be allocated first.
    let vit_bytes = c.get("vit").map_err(|e| fmt(e.to_string()))?.len() as u64;
    if meta
        .vit
        .num_parameters()
        .is_none_or(|n| n.saturating_mul(4) > vit_bytes)
    {
        return Err(fmt(format!(
            "bad meta: its backbone has {:?} parameters, more than the {vit_bytes}-byte record holds",
            meta.vit.num_parameters()
        )));
    }
    let vit = meta
        .vit
        .try_init::<B>(device)
        .map_err(|e| fmt(e.to_string()))?;
    let vit = record_from_bytes(vit, c.take("vit").map_err(|e| fmt(e.to_string()))?, device)
        .map_err(|e| fmt(format!("backbone weights: {e}")))?;
    if meta.heads.num_labels != meta.labels.len() || meta.heads.input_dim != meta.vit.hidden_size {
        return Err(fmt(format!(
            "bad meta: heads for {} labels on {} features, but {} label names and a backbone of width {}",
            meta.heads.num_labels,
            meta.heads.input_dim,
            meta.labels.len(),
            meta.vit.hidden_size
        )));
    }
    let heads = meta
        .heads
        .try_init::<B>(device)
        .map_err(|e| fmt(format!("bad meta: {e}")))?;
    let heads = record_from_bytes(
        heads,
        c.take("heads").map_err(|e| fmt(e.to_string()))?,
        device,
    )
    .map_err(|e| fmt(format!("heads weights: {e}")))?;
    Ok(FinishedModel { meta, vit, heads })
}

/// Reads label heads from a safetensors file in the exchange layout: for layer k = 0, 1, …
/// `heads.{k}.weight` `[T, out, in]` (each slice a PyTorch `nn.Linear` weight) and
/// `heads.{k}.bias` `[T, out]`; ReLU between layers, one logit per label from the last.
/// Returns the heads and their architecture (`seed` 0: the weights come from the file).
pub fn read_heads_safetensors<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(Heads<B>, HeadsConfig), ModelFileError> {
    let fmt = |reason: String| ModelFileError::Format {
        path: path.display().to_string(),
        reason,
    };
    let mut tensors =
        fairpo_vit::read_tensors(path).map_err(|e| fmt(format!("cannot read heads: {e}")))?;
    let mut layers = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    let mut t = 0;
    for k in 0.. {
        let (wk, bk) = (format!("heads.{k}.weight"), format!("heads.{k}.bias"));
        let Some(w) = tensors.remove(&wk) else { break };
        let b = tensors
            .remove(&bk)
            .ok_or_else(|| fmt(format!("{wk} is present but {bk} is missing")))?;
        let (ws, bs) = (w.shape.to_vec(), b.shape.to_vec());
        if ws.len() != 3 {
            return Err(fmt(format!("{wk} has shape {ws:?}, expected [T, out, in]")));
        }
        if k == 0 {
            t = ws[0];
            sizes.push(ws[2]);
        }
        let prev = *sizes.last().expect("input size pushed");
        if ws[0] != t || ws[2] != prev || bs != [t, ws[1]] {
            return Err(fmt(format!(
                "{wk} {ws:?} / {bk} {bs:?}: expected [{t}, out, {prev}] and [{t}, out]"
            )));
        }
        sizes.push(ws[1]);
        let data = |s: burn_store::TensorSnapshot, key: &str| {
            s.to_data()
                .map(|d| d.convert::<f32>())
                .map_err(|e| fmt(format!("{key}: {e:?}")))
        };
        let w = Tensor::<B, 3>::from_data(data(w, &wk)?, device).swap_dims(1, 2);
        let b = Tensor::<B, 2>::from_data(data(b, &bk)?, device);
        layers.push((w, b));
    }
    if layers.is_empty() {
        return Err(fmt("no heads.0.weight: not a heads file".into()));
    }
    // Other keys are the ViT of a `fairpo export` folder's model.safetensors; a heads key
    // left over is a gap in the layers or a misspelling.
    if let Some(extra) = tensors.keys().find(|k| k.starts_with("heads.")) {
        return Err(fmt(format!(
            "unexpected tensor {extra} (heads layers are heads.0, heads.1, … without gaps, each .weight and .bias)"
        )));
    }
    if sizes.last() != Some(&1) {
        return Err(fmt(format!(
            "the last layer has {} outputs, expected 1 logit per label",
            sizes.last().copied().unwrap_or(0)
        )));
    }
    let config = HeadsConfig::new(t, sizes[0]).with_hidden(sizes[1..sizes.len() - 1].to_vec());
    Ok((Heads::from_stacked(layers), config))
}

/// SHA-256 over the trunk's parameter values (not their ids), in module order: two
/// trunks with the same fingerprint compute the same hidden states.
pub(crate) fn trunk_fingerprint<B: Backend>(trunk: &ViTTrunk<B>) -> String {
    parameter_fingerprint(trunk, &format!("layers={}", trunk.num_layers()))
}

/// SHA-256 over a module's parameter values and shapes in module order, then `suffix`.
pub(crate) fn parameter_fingerprint<B: Backend, M: Module<B>>(module: &M, suffix: &str) -> String {
    struct Hasher(Sha256);
    impl<B: Backend> ModuleVisitor<B> for Hasher {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let data = param.val().into_data().convert::<f32>();
            self.0.update((D as u64).to_le_bytes());
            for d in data.shape.iter() {
                self.0.update((*d as u64).to_le_bytes());
            }
            self.0.update(data.as_bytes());
        }
    }
    let mut h = Hasher(Sha256::new());
    module.visit(&mut h);
    h.0.update(suffix.as_bytes());
    crate::features::hex(&h.0.finalize())
}

/// The tiny ViT of the crate's unit tests: 2 layers, D = 16, 8x8 pixels in 4x4 patches.
#[cfg(test)]
pub(crate) fn test_vit_config() -> ViTConfig {
    ViTConfig {
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 32,
        patch_size: 4,
        image_size: 8,
        ..ViTConfig::tiny()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    #[test]
    fn model_file_round_trip_and_fingerprint() {
        let device = Default::default();
        let vit_cfg = test_vit_config();
        let heads_cfg = HeadsConfig::new(3, 16).with_hidden(vec![4]).with_seed(1);
        let vit = vit_cfg.init::<B>(&device);
        let heads = heads_cfg.init::<B>(&device);
        let meta = ModelMeta {
            vit: vit_cfg.clone(),
            heads: heads_cfg,
            labels: vec!["a".into(), "b".into(), "c".into()],
        };
        let pixels = Tensor::<B, 4>::random(
            [2, 3, 8, 8],
            burn::tensor::Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let before = heads.forward(vit.forward(pixels.clone())).into_data();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.ckpt");
        save_model(&path, &meta, vit.clone(), heads).unwrap();
        let back = load_model::<B>(&path, &device).unwrap();
        assert_eq!(back.meta, meta);
        let after = back.heads.forward(back.vit.forward(pixels)).into_data();
        after.assert_approx_eq::<f32>(&before, burn::tensor::Tolerance::absolute(1e-6));

        // Same weights, fresh ids: same fingerprint; other weights: different.
        let (t1, _) = vit.clone().split(1);
        let (t2, _) = back.vit.split(1);
        assert_eq!(trunk_fingerprint(&t1), trunk_fingerprint(&t2));
        let (t3, _) = vit_cfg.init::<B>(&device).split(1);
        assert_ne!(trunk_fingerprint(&t1), trunk_fingerprint(&t3));
        // The split point is part of the fingerprint.
        let (t4, _) = vit.split(2);
        assert_ne!(trunk_fingerprint(&t1), trunk_fingerprint(&t4));

        std::fs::write(&path, b"garbage").unwrap();
        let err = load_model::<B>(&path, &device).unwrap_err().to_string();
        assert!(err.contains("model.ckpt"), "{err}");
    }
}
