//! Where a training or evaluation batch's hidden states come from: the frozen trunk run
//! on decoded images, or a feature cache of the trunk's outputs.
//!
//! The cache applies when augmentation is off (the trunk's output for an image is then a
//! pure function of the image, the weights, the preprocessing and the split point) and the
//! trunk has parameters (`trainable_layers < L`). Outputs are computed once per image,
//! kept in memory for the rest of the run, and written to
//! `<cache_dir>/<key>.npy` ([N, S·D] f32) so later runs sharing the backbone read them
//! instead. The key hashes the trunk fingerprint (weights + split point), the
//! preprocessing, the split name and every image path; the sidecar `<key>.npy.json` is the
//! [`FeatureMeta`] of `fairpo features`, and a file whose sidecar differs from what this run
//! would compute is recomputed, with a warning naming the fields. With
//! `trainable_layers = 0` only the CLS token is kept (the tail only reads it). The trunk
//! computes in `model.trunk_precision`; a bf16 trunk's outputs have keys of their own.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::prelude::*;
use fairpo_data::{Batch, BatchLoader, Split};
use fairpo_vit::{TrunkPrecision, ViTConfig, ViTTrunk};
use sha2::{Digest, Sha256};

use crate::config::RunConfig;
use crate::features::{
    hex, sha256_paths, sidecar_path, FeatureLayer, FeatureMeta, FEATURE_FORMAT_VERSION,
};

/// The name of a dataset split in the cache key.
fn split_key(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// Cached trunk outputs of one dataset split.
struct CachedSplit {
    /// Row-major [N, S·D].
    data: Vec<f32>,
    filled: Vec<bool>,
    key: String,
}

/// Batches of `(hidden [B,S,D], targets [B·T])`.
pub(crate) type HiddenBatches<'a, B> =
    Box<dyn Iterator<Item = Result<(Tensor<B, 3>, Vec<u8>)>> + 'a>;

/// Produces `(hidden [B,S,D], targets [B·T])` batches.
pub(crate) struct TrunkFeatures<B: Backend> {
    /// The trunk as loaded (f32), given back by [`TrunkFeatures::into_trunk`].
    trunk: ViTTrunk<B>,
    /// The trunk that computes: `trunk` in `model.trunk_precision`.
    compute: ViTTrunk<B>,
    device: B::Device,
    cache: Option<CacheSettings>,
    splits: HashMap<String, CachedSplit>,
    /// Tokens kept per image (S) and width (D), known after the first trunk call.
    token_shape: Option<[usize; 2]>,
}

struct CacheSettings {
    dir: PathBuf,
    base_key: String,
    cls_only: bool,
    /// The sidecar of every file, less what each split and the trunk's output fill in.
    meta: FeatureMeta,
    /// Upper bound on cached floats per split (memory guard).
    max_floats: usize,
}

impl<B: Backend> std::fmt::Debug for TrunkFeatures<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkFeatures")
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

/// Largest cache kept in memory per split: 4 GiB of f32.
const MAX_CACHE_FLOATS: usize = 1 << 30;

impl<B: Backend> TrunkFeatures<B> {
    /// A source over `trunk`; caching is decided from the config (see the module docs).
    pub(crate) fn new(
        trunk: ViTTrunk<B>,
        cfg: &RunConfig,
        vit: &ViTConfig,
        trunk_fingerprint: &str,
        trainable_layers: usize,
        augment: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let has_params = trunk.embeddings.is_some();
        let (compute, applied) = trunk.with_precision(cfg.model.trunk_precision);
        if has_params {
            tracing::info!("frozen trunk: {}", applied.describe());
        }
        let precision = applied.precision();
        let cache = if cfg.train.feature_cache && !augment && has_params {
            let mut h = Sha256::new();
            h.update(trunk_fingerprint.as_bytes());
            h.update(serde_json::to_vec(&cfg.data.preprocess)?);
            h.update(trainable_layers.to_le_bytes());
            // Older caches (all f32) keep their keys.
            if precision != TrunkPrecision::F32 {
                h.update(precision.name().as_bytes());
            }
            let base_key = hex(&h.finalize());
            Some(CacheSettings {
                dir: cfg.train.cache_dir.clone(),
                base_key,
                cls_only: trainable_layers == 0,
                meta: FeatureMeta {
                    format_version: FEATURE_FORMAT_VERSION,
                    weights_sha256: trunk_fingerprint.to_string(),
                    weights_path: cfg.model.backbone.clone().unwrap_or_default(),
                    config: vit.clone(),
                    preprocess: cfg.data.preprocess.clone(),
                    // Tokens after the frozen layers, before the final LayerNorm.
                    layer: FeatureLayer::After(vit.num_hidden_layers - trainable_layers),
                    num_images: 0,
                    tokens: 0,
                    dim: 0,
                    images_sha256: String::new(),
                    trunk_precision: precision,
                },
                max_floats: MAX_CACHE_FLOATS,
            })
        } else {
            if cfg.train.feature_cache && augment {
                tracing::info!("feature cache off: augmentation is on");
            }
            None
        };
        Ok(Self {
            trunk,
            compute,
            device: device.clone(),
            cache,
            splits: HashMap::new(),
            token_shape: None,
        })
    }

    /// Gives the trunk back (e.g. to join it with the tail for the final model).
    pub(crate) fn into_trunk(self) -> ViTTrunk<B> {
        self.trunk
    }

    fn run_trunk(&self, batch: &Batch) -> Tensor<B, 3> {
        let pixels = Tensor::<B, 4>::from_data(
            TensorData::new(
                batch.pixels.clone(),
                [batch.batch_size, 3, batch.height, batch.width],
            ),
            &self.device,
        );
        let h = self.compute.forward(pixels);
        match &self.cache {
            Some(c) if c.cls_only => {
                let [b, _, d] = h.dims();
                h.slice([0..b, 0..1, 0..d])
            }
            _ => h,
        }
    }

    /// Fills the cache for `indices` of the split `split_key` (no-op without a cache).
    fn fill(&mut self, loader: &BatchLoader, split_key: &str, indices: &[usize]) -> Result<()> {
        let Some(cs) = &self.cache else { return Ok(()) };
        let ds = loader.dataset();
        let n = ds.len();
        if !self.splits.contains_key(split_key) {
            let mut h = Sha256::new();
            h.update(cs.base_key.as_bytes());
            h.update(split_key.as_bytes());
            h.update(ds.split.as_bytes());
            for p in &ds.paths {
                h.update(p.to_string_lossy().as_bytes());
                h.update([0u8]);
            }
            let key = hex(&h.finalize()[..16]);
            let file = cs.dir.join(format!("{key}.npy"));
            let mut entry = CachedSplit {
                data: Vec::new(),
                filled: vec![false; n],
                key,
            };
            let side = sidecar_path(&file);
            let sidecar: Option<FeatureMeta> = std::fs::read_to_string(&side)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if let (true, Some(sc)) = (file.is_file(), sidecar) {
                // The shape is the file's to say; everything else must be what this run computes.
                let want = FeatureMeta {
                    num_images: n,
                    tokens: sc.tokens,
                    dim: sc.dim,
                    images_sha256: sha256_paths(&ds.paths),
                    ..cs.meta.clone()
                };
                let diff = sc.differences(&want);
                match fairpo_io::read_npy_f32(&file) {
                    _ if !diff.is_empty() => tracing::warn!(
                        "feature cache {} is stale (differs in: {}); recomputing",
                        file.display(),
                        diff.join(", ")
                    ),
                    Ok(m) if m.rows == n && m.cols == sc.tokens * sc.dim => {
                        tracing::info!("feature cache hit: {} ({} images)", file.display(), n);
                        entry.data = m.data;
                        entry.filled = vec![true; n];
                        self.token_shape = Some([sc.tokens, sc.dim]);
                    }
                    Ok(m) => tracing::warn!(
                        "feature cache {} has shape [{}, {}], expected [{n}, {}]; recomputing",
                        file.display(),
                        m.rows,
                        m.cols,
                        sc.tokens * sc.dim
                    ),
                    Err(e) => tracing::warn!("feature cache unreadable ({e}); recomputing"),
                }
            }
            self.splits.insert(split_key.to_string(), entry);
        }
        let missing: Vec<usize> = {
            let e = &self.splits[split_key];
            let mut m: Vec<usize> = indices.iter().copied().filter(|&i| !e.filled[i]).collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        if missing.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        tracing::info!(
            split = split_key,
            images = missing.len(),
            "computing trunk features for the cache"
        );
        for batch in loader.epoch(&missing, 0)? {
            let batch = batch?;
            let h = self.run_trunk(&batch);
            let [b, s, d] = h.dims();
            let row = s * d;
            let values = h
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let max_floats = self.cache.as_ref().map_or(0, |c| c.max_floats);
            let e = self.splits.get_mut(split_key).expect("inserted above");
            if e.data.is_empty() {
                if n * row > max_floats {
                    tracing::warn!(
                        "feature cache off for {split_key}: {} images × {row} floats exceed the in-memory limit",
                        n
                    );
                    self.cache = None;
                    self.splits.clear();
                    return Ok(());
                }
                e.data = vec![0.0; n * row];
            }
            for (j, &i) in batch.indices.iter().enumerate().take(b) {
                e.data[i * row..(i + 1) * row].copy_from_slice(&values[j * row..(j + 1) * row]);
                e.filled[i] = true;
            }
            self.token_shape = Some([s, d]);
        }
        let e = &self.splits[split_key];
        tracing::info!(
            split = split_key,
            seconds = format_args!("{:.1}", started.elapsed().as_secs_f64()),
            "trunk features cached"
        );
        if e.filled.iter().all(|&f| f) {
            if let (Some(cs), Some([s, d])) = (&self.cache, self.token_shape) {
                let file = cs.dir.join(format!("{}.npy", e.key));
                std::fs::create_dir_all(&cs.dir)
                    .with_context(|| format!("creating {}", cs.dir.display()))?;
                let m = fairpo_io::Matrix {
                    rows: n,
                    cols: s * d,
                    data: e.data.clone(),
                };
                fairpo_io::write_npy_f32(&file, &m)?;
                // The sidecar goes last: a cache with a sidecar is complete.
                let sc = FeatureMeta {
                    num_images: n,
                    tokens: s,
                    dim: d,
                    images_sha256: sha256_paths(&loader.dataset().paths),
                    ..cs.meta.clone()
                };
                fairpo_io::write_json_atomic(sidecar_path(&file), &sc)?;
                tracing::info!("feature cache written: {}", file.display());
            }
        }
        Ok(())
    }

    /// The batches of one pass over `indices` (in that order) of the loader's dataset, which
    /// is the `split` split.
    pub(crate) fn batches<'a>(
        &'a mut self,
        loader: &'a BatchLoader,
        split: Split,
        indices: &[usize],
        epoch: u64,
        batch_size: usize,
    ) -> Result<HiddenBatches<'a, B>> {
        let split_key = split_key(split);
        self.fill(loader, split_key, indices)?;
        if self.cache.is_none() {
            let this: &'a Self = self;
            let it = loader.epoch(indices, epoch)?.map(move |b| {
                let b = b?;
                Ok((this.run_trunk(&b), b.targets))
            });
            return Ok(Box::new(it));
        }
        let this: &'a Self = self;
        let entry = &this.splits[split_key];
        let [s, d] = this
            .token_shape
            .ok_or_else(|| anyhow::anyhow!("feature cache for {split_key} has no token shape"))?;
        let row = s * d;
        let ds = loader.dataset().clone();
        let bs = batch_size.max(1);
        let chunks: Vec<Vec<usize>> = indices.chunks(bs).map(<[usize]>::to_vec).collect();
        let it = chunks.into_iter().map(move |chunk| {
            let mut data = Vec::with_capacity(chunk.len() * row);
            let mut targets = Vec::with_capacity(chunk.len() * ds.num_labels());
            for &i in &chunk {
                data.extend_from_slice(&entry.data[i * row..(i + 1) * row]);
                targets.extend_from_slice(ds.target_row(i));
            }
            let h =
                Tensor::<B, 3>::from_data(TensorData::new(data, [chunk.len(), s, d]), &this.device);
            Ok((h, targets))
        });
        Ok(Box::new(it))
    }
}
