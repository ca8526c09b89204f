//! Hugging Face weights (`model.safetensors`, `pytorch_model.bin`) and burn checkpoints.
//!
//! Both files are read with `burn-store` into a name → tensor map; the model is then built
//! from that map through one explicit key table ([`hf_key_table`]), after checking every
//! key and shape. Any missing key, wrong shape or unexpected tensor fails the whole load
//! with a list of everything wrong: there are no partial loads.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, Linear};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_store::{ModuleStore, PytorchStore, SafetensorsStore, TensorSnapshot};

use crate::config::{ModelDir, ViTConfig};
use crate::error::VitError;
use crate::model::ViT;

/// Prefixes of tensors a checkpoint may hold that the backbone does not use:
/// `ViTForImageClassification`'s classifier, `ViTModel`'s pooler and the label heads of a
/// `fairpo export` folder.
pub const IGNORED_PREFIXES: [&str; 3] = ["classifier.", "pooler.", "heads."];

/// How a checkpoint tensor becomes a burn parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Used as is.
    Identity,
    /// PyTorch `Linear` weight `[out, in]` → burn `[in, out]`.
    TransposeLinear,
    /// `Conv2d` weight `[D, C, p, p]` → flattened and transposed to `[C·p·p, D]`.
    FlattenConv,
}

/// One entry of the key table: a Hugging Face key (`ViTModel` layout), the shape the
/// checkpoint must have, and how it maps onto the burn parameter of the same path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// Key in the `ViTModel` layout (without the `vit.` prefix).
    pub key: String,
    /// Shape in the checkpoint.
    pub shape: Vec<usize>,
    /// Conversion to the burn layout.
    pub transform: Transform,
}

/// Every tensor a checkpoint of this configuration must hold (the explicit key map).
/// The burn module path is the same as the key, with `.weight`/`.bias` of a LayerNorm
/// being burn's `gamma`/`beta`.
pub fn hf_key_table(cfg: &ViTConfig) -> Vec<KeySpec> {
    let d = cfg.hidden_size;
    let i = cfg.intermediate_size;
    let (c, p) = (cfg.num_channels, cfg.patch_size);
    let spec = |key: String, shape: Vec<usize>, transform| KeySpec {
        key,
        shape,
        transform,
    };
    let mut t = vec![
        spec(
            "embeddings.cls_token".into(),
            vec![1, 1, d],
            Transform::Identity,
        ),
        spec(
            "embeddings.position_embeddings".into(),
            vec![1, cfg.seq_len(), d],
            Transform::Identity,
        ),
        spec(
            "embeddings.patch_embeddings.projection.weight".into(),
            vec![d, c, p, p],
            Transform::FlattenConv,
        ),
        spec(
            "embeddings.patch_embeddings.projection.bias".into(),
            vec![d],
            Transform::Identity,
        ),
    ];
    let linear = |t: &mut Vec<KeySpec>, name: String, d_in: usize, d_out: usize, bias: bool| {
        t.push(spec(
            format!("{name}.weight"),
            vec![d_out, d_in],
            Transform::TransposeLinear,
        ));
        if bias {
            t.push(spec(
                format!("{name}.bias"),
                vec![d_out],
                Transform::Identity,
            ));
        }
    };
    let norm = |t: &mut Vec<KeySpec>, name: String| {
        t.push(spec(format!("{name}.weight"), vec![d], Transform::Identity));
        t.push(spec(format!("{name}.bias"), vec![d], Transform::Identity));
    };
    for l in 0..cfg.num_hidden_layers {
        let pre = format!("encoder.layer.{l}");
        for qkv in ["query", "key", "value"] {
            linear(
                &mut t,
                format!("{pre}.attention.attention.{qkv}"),
                d,
                d,
                cfg.qkv_bias,
            );
        }
        linear(&mut t, format!("{pre}.attention.output.dense"), d, d, true);
        linear(&mut t, format!("{pre}.intermediate.dense"), d, i, true);
        linear(&mut t, format!("{pre}.output.dense"), i, d, true);
        norm(&mut t, format!("{pre}.layernorm_before"));
        norm(&mut t, format!("{pre}.layernorm_after"));
    }
    norm(&mut t, "layernorm".into());
    t
}

/// A pretrained backbone read from a Hugging Face model folder.
#[derive(Debug)]
pub struct LoadedViT<B: Backend> {
    /// The model.
    pub model: ViT<B>,
    /// Its configuration (`config.json`).
    pub config: ViTConfig,
    /// The weights file read.
    pub weights_path: PathBuf,
}

/// Load `config.json` and the weights (`model.safetensors`, else `pytorch_model.bin`) from a
/// Hugging Face model folder (its `preprocessor_config.json` is fairpo-data's to read).
pub fn load_hf_dir<B: Backend>(dir: &Path, device: &B::Device) -> Result<LoadedViT<B>, VitError> {
    let files = ModelDir::locate(dir)?;
    let config = ViTConfig::load(&files.config)?;
    let model = load_hf_weights(&config, &files.weights, device)?;
    Ok(LoadedViT {
        model,
        config,
        weights_path: files.weights,
    })
}

/// Read every tensor of a `.safetensors` or PyTorch (`.bin`/`.pt`/`.pth`) file, by the
/// file's extension.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>, VitError> {
    let unreadable = |reason: String| VitError::WeightsUnreadable {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(VitError::MissingFile {
            path: path.to_path_buf(),
            what: "weights file",
        });
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let snapshots = if ext == "safetensors" {
        let mut store = SafetensorsStore::from_file(path).map_indices_contiguous(false);
        let all = store
            .get_all_snapshots()
            .map_err(|e| unreadable(e.to_string()))?;
        all.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    } else {
        let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
        let all = store
            .get_all_snapshots()
            .map_err(|e| unreadable(e.to_string()))?;
        all.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    Ok(snapshots)
}

/// Build a model of configuration `cfg` from a weights file in either Hugging Face layout
/// (`ViTModel`, or `ViTForImageClassification` with its `vit.` prefix).
pub fn load_hf_weights<B: Backend>(
    cfg: &ViTConfig,
    path: &Path,
    device: &B::Device,
) -> Result<ViT<B>, VitError> {
    cfg.validate().map_err(|reason| VitError::InvalidConfig {
        path: Some(path.to_path_buf()),
        reason,
    })?;
    let snapshots = read_tensors(path)?;
    let tensors =
        match_key_table(cfg, snapshots).map_err(|problems| VitError::WeightsMismatch {
            path: path.to_path_buf(),
            problems,
        })?;
    let get = |key: &str| -> Result<TensorData, VitError> {
        let snap = tensors.get(key).expect("key table checked");
        snap.to_data()
            .map(|d| d.convert::<f32>())
            .map_err(|e| VitError::WeightsUnreadable {
                path: path.to_path_buf(),
                reason: format!("tensor {key}: {e}"),
            })
    };
    build_from(cfg, &get, device)
}

/// Check the checkpoint's tensors against the key table: returns the tensors by
/// `ViTModel` key, or every problem found.
fn match_key_table(
    cfg: &ViTConfig,
    snapshots: BTreeMap<String, TensorSnapshot>,
) -> Result<HashMap<String, TensorSnapshot>, Vec<String>> {
    // ViTForImageClassification stores the backbone under `vit.`.
    let prefixed = snapshots.keys().any(|k| k.starts_with("vit."));
    let mut found: HashMap<String, TensorSnapshot> = HashMap::new();
    let mut unexpected = Vec::new();
    for (key, snap) in snapshots {
        if IGNORED_PREFIXES.iter().any(|p| key.starts_with(p)) {
            continue;
        }
        let stripped = if prefixed {
            match key.strip_prefix("vit.") {
                Some(s) => s.to_string(),
                None => {
                    unexpected.push(key);
                    continue;
                }
            }
        } else {
            key
        };
        found.insert(stripped, snap);
    }
    let table = hf_key_table(cfg);
    let mut problems = Vec::new();
    let mut out = HashMap::new();
    for spec in &table {
        match found.remove(&spec.key) {
            None => problems.push(format!("missing tensor {}", spec.key)),
            Some(snap) => {
                let shape = snap.shape.to_vec();
                if shape != spec.shape {
                    problems.push(format!(
                        "tensor {} has shape {:?}, config.json implies {:?}",
                        spec.key, shape, spec.shape
                    ));
                } else {
                    out.insert(spec.key.clone(), snap);
                }
            }
        }
    }
    let mut rest: Vec<String> = found.into_keys().collect();
    rest.extend(unexpected);
    rest.sort();
    for k in rest {
        problems.push(format!(
            "unexpected tensor {k} (not part of this configuration)"
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

type Getter<'a> = dyn Fn(&str) -> Result<TensorData, VitError> + 'a;

fn build_from<B: Backend>(
    cfg: &ViTConfig,
    get: &Getter<'_>,
    device: &B::Device,
) -> Result<ViT<B>, VitError> {
    let mut vit: ViT<B> = cfg.try_init(device)?;
    let d = cfg.hidden_size;
    let e = &mut vit.embeddings;
    let w = get("embeddings.patch_embeddings.projection.weight")?;
    let dims = w.shape.to_vec();
    e.patch_embeddings.projection.weight = Param::from_tensor(
        tensor_1d::<B>(w, device)
            .reshape([dims[0], dims[1] * dims[2] * dims[3]])
            .transpose(),
    );
    e.patch_embeddings.projection.bias = Some(Param::from_tensor(tensor_1d::<B>(
        get("embeddings.patch_embeddings.projection.bias")?,
        device,
    )));
    e.cls_token =
        Param::from_tensor(tensor_1d::<B>(get("embeddings.cls_token")?, device).reshape([1, 1, d]));
    e.position_embeddings = Param::from_tensor(
        tensor_1d::<B>(get("embeddings.position_embeddings")?, device).reshape([
            1,
            cfg.seq_len(),
            d,
        ]),
    );
    for (i, layer) in vit.encoder.layer.iter_mut().enumerate() {
        let pre = format!("encoder.layer.{i}");
        let a = &mut layer.attention;
        set_linear(
            &mut a.attention.query,
            &format!("{pre}.attention.attention.query"),
            get,
            device,
        )?;
        set_linear(
            &mut a.attention.key,
            &format!("{pre}.attention.attention.key"),
            get,
            device,
        )?;
        set_linear(
            &mut a.attention.value,
            &format!("{pre}.attention.attention.value"),
            get,
            device,
        )?;
        set_linear(
            &mut a.output.dense,
            &format!("{pre}.attention.output.dense"),
            get,
            device,
        )?;
        set_linear(
            &mut layer.intermediate.dense,
            &format!("{pre}.intermediate.dense"),
            get,
            device,
        )?;
        set_linear(
            &mut layer.output.dense,
            &format!("{pre}.output.dense"),
            get,
            device,
        )?;
        set_norm(
            &mut layer.layernorm_before,
            &format!("{pre}.layernorm_before"),
            get,
            device,
        )?;
        set_norm(
            &mut layer.layernorm_after,
            &format!("{pre}.layernorm_after"),
            get,
            device,
        )?;
    }
    set_norm(&mut vit.layernorm, "layernorm", get, device)?;
    Ok(vit)
}

/// PyTorch Linear `[out, in]` → burn `[in, out]`.
fn set_linear<B: Backend>(
    l: &mut Linear<B>,
    name: &str,
    get: &Getter<'_>,
    device: &B::Device,
) -> Result<(), VitError> {
    let w = get(&format!("{name}.weight"))?;
    let dims = w.shape.to_vec();
    l.weight = Param::from_tensor(
        tensor_1d::<B>(w, device)
            .reshape([dims[0], dims[1]])
            .transpose(),
    );
    if l.bias.is_some() {
        l.bias = Some(Param::from_tensor(tensor_1d::<B>(
            get(&format!("{name}.bias"))?,
            device,
        )));
    }
    Ok(())
}

/// HF LayerNorm `weight`/`bias` → burn `gamma`/`beta`.
fn set_norm<B: Backend>(
    n: &mut LayerNorm<B>,
    name: &str,
    get: &Getter<'_>,
    device: &B::Device,
) -> Result<(), VitError> {
    n.gamma = Param::from_tensor(tensor_1d::<B>(get(&format!("{name}.weight"))?, device));
    n.beta = Some(Param::from_tensor(tensor_1d::<B>(
        get(&format!("{name}.bias"))?,
        device,
    )));
    Ok(())
}

/// Flatten checkpoint data (already converted to f32) into a rank-1 tensor.
fn tensor_1d<B: Backend>(data: TensorData, device: &B::Device) -> Tensor<B, 1> {
    let n = data.num_elements();
    let values: Vec<f32> = data
        .into_vec()
        .expect("checkpoint tensors are converted to f32 before use");
    Tensor::<B, 1>::from_data(TensorData::new(values, [n]), device)
}

/// Serialise a module (a whole [`ViT`], a tail, heads...) in burn's named MessagePack
/// record format, full precision, to bytes.
pub fn record_to_bytes<B: Backend, M: Module<B>>(module: M) -> Result<Vec<u8>, String> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
        .record(module.into_record(), ())
        .map_err(|e| e.to_string())
}

/// Restore a module's parameters from bytes written by [`record_to_bytes`]; `module` must
/// have the same structure (e.g. `config.init(device)`).
pub fn record_from_bytes<B: Backend, M: Module<B>>(
    module: M,
    bytes: Vec<u8>,
    device: &B::Device,
) -> Result<M, String> {
    // burn's recorder and `load_record` panic (rather than return an error) on records whose
    // ids or lengths do not fit the module: a corrupt or mismatched file must be an error. (The
    // panic hook is left alone, so its message may also be printed; swapping a process-wide
    // hook here would race with other threads.)
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        NamedMpkBytesRecorder::<FullPrecisionSettings>::new()
            .load(bytes, device)
            .map_err(|e| e.to_string())
            .map(|record| module.load_record(record))
    }));
    loaded.unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("corrupt or mismatched record ({why})"))
    })
}

/// Save a module to `path` in burn's named MessagePack format, atomically (written to a
/// temporary file in the same folder, then renamed).
pub fn save_checkpoint<B: Backend, M: Module<B>>(module: M, path: &Path) -> Result<(), VitError> {
    let err = |reason: String| VitError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = record_to_bytes(module).map_err(err)?;
    let tmp = path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    std::fs::write(&tmp, &bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            VitError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        })
}

/// Load a module saved by [`save_checkpoint`] into `module` (same structure).
pub fn load_checkpoint<B: Backend, M: Module<B>>(
    module: M,
    path: &Path,
    device: &B::Device,
) -> Result<M, VitError> {
    let bytes = std::fs::read(path).map_err(|source| VitError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    record_from_bytes(module, bytes, device).map_err(|reason| VitError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    })
}
