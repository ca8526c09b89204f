//! Writing a [`ViT`] as a Hugging Face `ViTModel` folder: the inverse of [`crate::load_hf_dir`].
//!
//! The tensors are laid out as the key table ([`hf_key_table`]) says a checkpoint must hold
//! them, so a written folder loads back into fairpo and into transformers' `ViTModel`. Used to
//! make random backbones of real shapes for tests and rehearsals (`fairpo backbone init`).

use std::path::Path;

use burn::nn::{LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};

use crate::config::ViTConfig;
use crate::error::VitError;
use crate::model::ViT;
use crate::weights::hf_key_table;

/// One checkpoint tensor in the Hugging Face layout: key, shape and f32 values (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct HfTensor {
    /// Key in the `ViTModel` layout.
    pub key: String,
    /// Shape in the checkpoint.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.into_data().convert::<f32>();
    let shape = data.shape.to_vec();
    let values = data
        .into_vec()
        .expect("a tensor converted to f32 reads back as f32");
    (shape, values)
}

/// The model's tensors in the Hugging Face `ViTModel` layout, in key-table order.
///
/// Linear weights go back from burn's `[in, out]` to PyTorch's `[out, in]`, the patch
/// projection from `[C·p·p, D]` to the convolution's `[D, C, p, p]`, LayerNorm `gamma`/`beta`
/// to `weight`/`bias`.
pub fn hf_tensors<B: Backend>(vit: &ViT<B>, cfg: &ViTConfig) -> Result<Vec<HfTensor>, VitError> {
    let mut found: std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> =
        std::collections::HashMap::new();
    let linear = |found: &mut std::collections::HashMap<_, _>, name: String, l: &Linear<B>| {
        found.insert(format!("{name}.weight"), values(l.weight.val().transpose()));
        if let Some(b) = &l.bias {
            found.insert(format!("{name}.bias"), values(b.val()));
        }
    };
    let norm = |found: &mut std::collections::HashMap<_, _>, name: String, n: &LayerNorm<B>| {
        found.insert(format!("{name}.weight"), values(n.gamma.val()));
        if let Some(b) = &n.beta {
            found.insert(format!("{name}.bias"), values(b.val()));
        }
    };
    let e = &vit.embeddings;
    found.insert("embeddings.cls_token".into(), values(e.cls_token.val()));
    found.insert(
        "embeddings.position_embeddings".into(),
        values(e.position_embeddings.val()),
    );
    let (c, p) = (cfg.num_channels, cfg.patch_size);
    let (_, conv) = values(
        e.patch_embeddings
            .projection
            .weight
            .val()
            .transpose()
            .reshape([cfg.hidden_size, c, p, p]),
    );
    found.insert(
        "embeddings.patch_embeddings.projection.weight".into(),
        (vec![cfg.hidden_size, c, p, p], conv),
    );
    if let Some(b) = &e.patch_embeddings.projection.bias {
        found.insert(
            "embeddings.patch_embeddings.projection.bias".into(),
            values(b.val()),
        );
    }
    for (l, layer) in vit.encoder.layer.iter().enumerate() {
        let pre = format!("encoder.layer.{l}");
        let a = &layer.attention;
        linear(
            &mut found,
            format!("{pre}.attention.attention.query"),
            &a.attention.query,
        );
        linear(
            &mut found,
            format!("{pre}.attention.attention.key"),
            &a.attention.key,
        );
        linear(
            &mut found,
            format!("{pre}.attention.attention.value"),
            &a.attention.value,
        );
        linear(
            &mut found,
            format!("{pre}.attention.output.dense"),
            &a.output.dense,
        );
        linear(
            &mut found,
            format!("{pre}.intermediate.dense"),
            &layer.intermediate.dense,
        );
        linear(
            &mut found,
            format!("{pre}.output.dense"),
            &layer.output.dense,
        );
        norm(
            &mut found,
            format!("{pre}.layernorm_before"),
            &layer.layernorm_before,
        );
        norm(
            &mut found,
            format!("{pre}.layernorm_after"),
            &layer.layernorm_after,
        );
    }
    norm(&mut found, "layernorm".into(), &vit.layernorm);

    // The key table is the authority on which tensors a checkpoint holds and their shapes.
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for spec in hf_key_table(cfg) {
        match found.remove(&spec.key) {
            None => problems.push(format!("the model has no tensor for {}", spec.key)),
            Some((shape, _)) if shape != spec.shape => problems.push(format!(
                "tensor {} has shape {shape:?}, config implies {:?}",
                spec.key, spec.shape
            )),
            Some((shape, values)) => out.push(HfTensor {
                key: spec.key,
                shape,
                values,
            }),
        }
    }
    let mut rest: Vec<_> = found.into_keys().collect();
    rest.sort();
    problems.extend(
        rest.into_iter()
            .map(|k| format!("tensor {k} is not in the key table")),
    );
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(VitError::InvalidConfig {
            path: None,
            reason: format!(
                "the model does not match its configuration: {}",
                problems.join("; ")
            ),
        })
    }
}

/// Serialise tensors as a safetensors file (f32), in memory.
pub fn safetensors_bytes(tensors: &[HfTensor]) -> Result<Vec<u8>, String> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            TensorView::new(Dtype::F32, t.shape.clone(), b)
                .map(|v| (t.key.clone(), v))
                .map_err(|e| format!("tensor {}: {e}", t.key))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VitError> {
    fairpo_io::atomic_write(path, bytes).map_err(|e| VitError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Write `vit` as a Hugging Face model folder: `config.json` (`ViTModel`), `model.safetensors`
/// and, when given, `preprocessor_config.json`. Each file is written atomically; `dir` is
/// created if needed.
pub fn save_hf_dir<B: Backend>(
    vit: &ViT<B>,
    cfg: &ViTConfig,
    dir: &Path,
    preprocessor: Option<&serde_json::Value>,
) -> Result<(), VitError> {
    save_hf_tensors(&hf_tensors(vit, cfg)?, cfg, dir, preprocessor)
}

/// [`save_hf_dir`] for tensors already in the Hugging Face layout (checked against the key
/// table of `cfg`).
pub fn save_hf_tensors(
    tensors: &[HfTensor],
    cfg: &ViTConfig,
    dir: &Path,
    preprocessor: Option<&serde_json::Value>,
) -> Result<(), VitError> {
    let table = hf_key_table(cfg);
    let matches = table.len() == tensors.len()
        && table
            .iter()
            .zip(tensors)
            .all(|(spec, t)| spec.key == t.key && spec.shape == t.shape);
    if !matches
        || tensors
            .iter()
            .any(|t| t.values.len() != t.shape.iter().product::<usize>())
    {
        return Err(VitError::InvalidConfig {
            path: None,
            reason: "the tensors do not follow the configuration's key table".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| VitError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let weights = dir.join("model.safetensors");
    let bytes = safetensors_bytes(tensors).map_err(|reason| VitError::Checkpoint {
        path: weights.clone(),
        reason,
    })?;
    write_atomic(&weights, &bytes)?;
    let mut config = serde_json::to_value(cfg).expect("ViTConfig serialises");
    config["model_type"] = "vit".into();
    config["architectures"] = serde_json::json!(["ViTModel"]);
    let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("JSON serialises");
    write_atomic(&dir.join("config.json"), &pretty(&config))?;
    if let Some(p) = preprocessor {
        write_atomic(&dir.join("preprocessor_config.json"), &pretty(p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_hf_dir;
    use burn::backend::Flex;

    type B = Flex;

    #[test]
    fn a_written_folder_loads_back_to_the_same_model() {
        let device = Default::default();
        let cfg = ViTConfig::micro();
        let vit: ViT<B> = cfg.init(&device);
        let dir = tempfile::tempdir().unwrap();
        save_hf_dir(&vit, &cfg, dir.path(), None).unwrap();
        let loaded = load_hf_dir::<B>(dir.path(), &device).unwrap();
        assert_eq!(loaded.config, cfg);
        let (a, b) = (
            hf_tensors(&vit, &cfg).unwrap(),
            hf_tensors(&loaded.model, &cfg).unwrap(),
        );
        assert_eq!(a.len(), hf_key_table(&cfg).len());
        assert_eq!(a, b);
        // And the loaded model computes what the written one did.
        let x = Tensor::<B, 4>::random(
            [2, 3, 8, 8],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let diff = (vit.forward(x.clone()) - loaded.model.forward(x))
            .abs()
            .max()
            .into_scalar();
        assert!(diff < 1e-6, "{diff}");
    }
}
