//! Where a training or evaluation batch's hidden states come from: the frozen trunk run
//! on decoded images, or the trunk store of its outputs on disk.
//!
//! The store applies when augmentation is off (the trunk's output for an image is then a
//! pure function of the image, the weights, the preprocessing and the split point) and the
//! trunk has parameters (`trainable_layers < L`). An image's output is computed the first
//! time a run with this trunk needs it and read back from `train.cache_dir` by every later
//! epoch and run ([`crate::trunk_store`] says how entries are keyed and checked). Before
//! computing, a run logs how many entries it adds and their size, and refuses to start when
//! the free disk space or `train.cache_max_gb` cannot hold them. With
//! `trainable_layers = 0` only the CLS token is kept (the tail only reads it). The trunk
//! computes in `model.trunk_precision`; a bf16 trunk has a store of its own.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Result};
use burn::prelude::*;
use fairpo_data::{Batch, BatchLoader, Split};
use fairpo_vit::{ViTConfig, ViTTrunk};

use crate::checkpoint::model_file::parameter_fingerprint;
use crate::config::RunConfig;
use crate::features::{FeatureLayer, FeatureMeta, FEATURE_FORMAT_VERSION};
use crate::policy::Policy;
use crate::trunk_store::{
    self, human_bytes, HashedImage, ImageKey, Miss, ReferenceOutputs, StoreDtype, StoreManifest,
    TrunkStore,
};

/// The name of a dataset split in the cache key.
fn split_key(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

/// The store keys of one dataset split's images, which are known to be stored, and which
/// the loader skips (unreadable with `data.skip_corrupt`: left out of every batch, as
/// without the store).
struct SplitEntries {
    keys: Vec<Option<HashedImage>>,
    stored: Vec<bool>,
    skipped: Vec<bool>,
    /// Whether the run has said that it reads this split from the store.
    announced: bool,
}

/// One batch of the trunk's outputs.
pub(crate) struct HiddenBatch<B: Backend> {
    /// `[B, S, D]`.
    pub hidden: Tensor<B, 3>,
    /// `B·T` 0/1 values, row-major.
    pub targets: Vec<u8>,
    /// The dataset rows of the batch, in order.
    pub indices: Vec<usize>,
    /// The reference model's logits `[B, T]` when they were asked for and the store holds
    /// (or has just computed) them; otherwise the step runs the reference itself.
    pub reference: Option<Tensor<B, 2>>,
}

/// Batches of [`HiddenBatch`].
pub(crate) type HiddenBatches<'a, B> = Box<dyn Iterator<Item = Result<HiddenBatch<B>>> + 'a>;

/// Produces `(hidden [B,S,D], targets [B·T])` batches.
pub(crate) struct TrunkFeatures<B: Backend> {
    /// The trunk as loaded (f32), given back by [`TrunkFeatures::into_trunk`].
    trunk: ViTTrunk<B>,
    /// The trunk that computes: `trunk` in `model.trunk_precision`.
    compute: ViTTrunk<B>,
    device: B::Device,
    store: Option<StoreSettings>,
    splits: HashMap<&'static str, SplitEntries>,
    /// The reference model's logits, beside the trunk store.
    reference_store: Option<TrunkStore>,
}

struct StoreSettings {
    store: TrunkStore,
    cls_only: bool,
    /// `train.cache_max_gb` in bytes.
    max_bytes: Option<u64>,
    /// `data.skip_corrupt`.
    skip_unreadable: bool,
}

impl<B: Backend> std::fmt::Debug for TrunkFeatures<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkFeatures")
            .field(
                "store",
                &self.store.as_ref().map(|s| s.store.dir().to_path_buf()),
            )
            .finish()
    }
}

/// Seconds between progress lines while the store fills.
const PROGRESS_EVERY_S: f64 = 10.0;

impl<B: Backend> TrunkFeatures<B> {
    /// A source over `trunk`; the store is used as the module docs say.
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
        let store = if cfg.train.feature_cache && !augment && has_params {
            let cls_only = trainable_layers == 0;
            let side = cfg.data.preprocess.size / vit.patch_size.max(1);
            if let Some(gb) = cfg
                .train
                .cache_max_gb
                .filter(|g| !(g.is_finite() && *g > 0.0))
            {
                bail!("train.cache_max_gb = {gb}: expected a positive number of GB");
            }
            let manifest = StoreManifest {
                format_version: trunk_store::VERSION,
                trunk: FeatureMeta {
                    format_version: FEATURE_FORMAT_VERSION,
                    weights_sha256: trunk_fingerprint.to_string(),
                    weights_path: Default::default(),
                    config: vit.clone(),
                    preprocess: cfg.data.preprocess.clone(),
                    // Tokens after the frozen layers.
                    layer: FeatureLayer::After(vit.num_hidden_layers - trainable_layers),
                    num_images: 0,
                    tokens: 0,
                    dim: 0,
                    images_sha256: String::new(),
                    trunk_precision: applied.precision(),
                },
                compute: format!("{} on {}", applied.key(), B::name(device)),
                tokens: if cls_only { 1 } else { side * side + 1 },
                dim: vit.hidden_size,
                dtype: cfg.train.cache_dtype,
                reference: None,
            };
            Some(StoreSettings {
                store: TrunkStore::open(&cfg.train.cache_dir, manifest)?,
                cls_only,
                max_bytes: cfg.train.cache_max_gb.map(|gb| (gb * 1e9) as u64),
                skip_unreadable: cfg.data.skip_corrupt,
            })
        } else {
            if cfg.train.feature_cache && augment {
                tracing::info!("trunk store off: augmentation is on, so the trunk's output for an image changes every epoch");
            }
            None
        };
        Ok(Self {
            trunk,
            compute,
            device: device.clone(),
            store,
            splits: HashMap::new(),
            reference_store: None,
        })
    }

    /// Keeps `reference`'s logits on the stored trunk outputs in a store of their own, so
    /// [`TrunkFeatures::batches`] can hand them out (no-op without a trunk store).
    pub(crate) fn store_reference_logits(
        &mut self,
        reference: &Policy<B>,
        labels: usize,
    ) -> Result<()> {
        let Some(st) = &self.store else { return Ok(()) };
        let trunk = st.store.manifest();
        let manifest = StoreManifest {
            tokens: 1,
            dim: labels,
            dtype: StoreDtype::F32,
            reference: Some(ReferenceOutputs {
                sha256: parameter_fingerprint(reference, "reference"),
                trunk_dtype: trunk.dtype,
            }),
            ..trunk.clone()
        };
        let root = st.store.dir().parent().unwrap_or(st.store.dir());
        let store = TrunkStore::open(root, manifest)?;
        tracing::info!("reference logits: kept in {}", store.dir().display());
        self.reference_store = Some(store);
        Ok(())
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
        match &self.store {
            Some(s) if s.cls_only => {
                let [b, _, d] = h.dims();
                h.slice([0..b, 0..1, 0..d])
            }
            _ => h,
        }
    }

    /// Runs the trunk over `indices` of the loader's dataset, stores each output whose image
    /// is unchanged since it was hashed, and calls `each(dataset index, values)`; returns
    /// the indices the loader delivered (it skips unreadable images with
    /// `data.skip_corrupt`). Logs progress when `progress`.
    fn compute_and_store(
        &self,
        loader: &BatchLoader,
        keys: &[Option<HashedImage>],
        indices: &[usize],
        progress: bool,
        mut each: impl FnMut(usize, &[f32]),
    ) -> Result<Vec<usize>> {
        let Some(st) = &self.store else {
            return Ok(Vec::new());
        };
        let ds = loader.dataset();
        let row = st.store.row();
        let started = Instant::now();
        let mut last = 0.0;
        let mut delivered = Vec::with_capacity(indices.len());
        for batch in loader.epoch(indices, 0)? {
            let batch = batch?;
            let h = self.run_trunk(&batch);
            let values = h
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if values.len() != batch.indices.len() * row {
                bail!(
                    "trunk store: the trunk gave {} values for {} images, expected {row} each (tokens × width {:?})",
                    values.len(),
                    batch.indices.len(),
                    st.store.token_shape()
                );
            }
            for (j, &i) in batch.indices.iter().enumerate() {
                let v = &values[j * row..(j + 1) * row];
                match &keys[i] {
                    Some(image) if image.unchanged(&ds.paths[i]) => {
                        st.store.write(&image.key, v)?;
                    }
                    _ => tracing::warn!(
                        "trunk store: {} changed since it was hashed; its output is used but not stored",
                        ds.paths[i].display()
                    ),
                }
                each(i, v);
                delivered.push(i);
            }
            let t = started.elapsed().as_secs_f64();
            let done = delivered.len();
            if progress && t - last >= PROGRESS_EVERY_S && done < indices.len() {
                last = t;
                let rate = done as f64 / t;
                tracing::info!(
                    "trunk store: {done}/{} images, {rate:.1} img/s, ETA {:.0} s",
                    indices.len(),
                    (indices.len() - done) as f64 / rate
                );
            }
        }
        Ok(delivered)
    }

    /// Hashes the split's images once (no-op without a store or when done).
    fn hash_split(&mut self, loader: &BatchLoader, split_key: &'static str) -> Result<()> {
        let Some(st) = &self.store else { return Ok(()) };
        if self.splits.contains_key(split_key) {
            return Ok(());
        }
        let ds = loader.dataset();
        let started = Instant::now();
        let keys = trunk_store::image_keys(&ds.paths, st.skip_unreadable)?;
        tracing::info!(
            split = split_key,
            "trunk store: hashed {} images in {:.1} s",
            keys.len(),
            started.elapsed().as_secs_f64()
        );
        let n = keys.len();
        let skipped = keys.iter().map(Option::is_none).collect();
        self.splits.insert(
            split_key,
            SplitEntries {
                keys,
                stored: vec![false; n],
                skipped,
                announced: false,
            },
        );
        Ok(())
    }

    /// The not yet stored indices among `indices` of a hashed split (sorted, distinct),
    /// marking the ones found stored.
    fn missing(&mut self, split_key: &'static str, indices: &[usize]) -> Vec<usize> {
        let (Some(st), Some(entries)) = (&self.store, self.splits.get_mut(split_key)) else {
            return Vec::new();
        };
        let mut missing = Vec::new();
        for &i in indices {
            if entries.stored[i] || entries.skipped[i] {
                continue;
            }
            match &entries.keys[i] {
                Some(image) if st.store.contains(&image.key) => {
                    entries.stored[i] = true;
                }
                _ => missing.push(i),
            }
        }
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Checks, before anything is computed, that the store can take every entry the run will
    /// add: `parts` are the (loader, split, indices) it will read. Refuses when the free disk
    /// space (less a 1 GB margin for checkpoints) or `train.cache_max_gb` cannot hold them.
    pub(crate) fn plan(&mut self, parts: &[(&BatchLoader, Split, &[usize])]) -> Result<()> {
        if self.store.is_none() {
            return Ok(());
        }
        let mut new_keys = std::collections::HashSet::new();
        let mut images = 0;
        for (loader, split, indices) in parts {
            let split_key = split_key(*split);
            self.hash_split(loader, split_key)?;
            let missing = self.missing(split_key, indices);
            images += indices.len();
            let entries = &self.splits[split_key];
            new_keys.extend(
                missing
                    .iter()
                    .filter_map(|&i| entries.keys[i].as_ref().map(|h| h.key.clone())),
            );
        }
        let st = self.store.as_ref().expect("checked above");
        let dir = st.store.dir();
        let need = new_keys.len() as u64 * st.store.entry_bytes();
        let free = trunk_store::available_bytes(dir);
        tracing::info!(
            "trunk store {}: {} of this run's {images} images to compute ({} as {}; {} free there)",
            dir.display(),
            new_keys.len(),
            human_bytes(need),
            st.store.dtype_name(),
            free.map_or_else(|| "unknown".to_string(), human_bytes)
        );
        const MARGIN: u64 = 1_000_000_000;
        if let Some(free) = free.filter(|&f| need > 0 && need + MARGIN > f) {
            bail!(
                "the trunk store {} needs {} more (and 1 GB to spare) but only {} is free; free space there, set train.cache_dir to a larger disk, store f16 values (train.cache_dtype = \"f16\", half the size) or turn the store off (train.feature_cache = false)",
                dir.display(),
                human_bytes(need),
                human_bytes(free)
            );
        }
        if let Some(cap) = st.max_bytes.filter(|_| need > 0) {
            let have = st.store.size_on_disk();
            if have + need > cap {
                bail!(
                    "the trunk store {} holds {} and this run would add {}, over train.cache_max_gb ({}); raise the cap, store f16 values (train.cache_dtype = \"f16\") or turn the store off (train.feature_cache = false)",
                    dir.display(),
                    human_bytes(have),
                    human_bytes(need),
                    human_bytes(cap)
                );
            }
        }
        Ok(())
    }

    /// Makes sure the store holds `indices` of the split `split_key` (no-op without a store),
    /// computing what is missing; indices the loader skips are left out from then on.
    fn fill(
        &mut self,
        loader: &BatchLoader,
        split_key: &'static str,
        indices: &[usize],
    ) -> Result<()> {
        if self.store.is_none() {
            return Ok(());
        }
        self.hash_split(loader, split_key)?;
        let missing = self.missing(split_key, indices);
        let dir = self
            .store
            .as_ref()
            .expect("checked above")
            .store
            .dir()
            .to_path_buf();
        if missing.is_empty() {
            // Said once per split, not every epoch.
            let entries = self.splits.get_mut(split_key).expect("hashed");
            if !entries.announced {
                entries.announced = true;
                tracing::info!(
                    split = split_key,
                    "trunk store hit: {} images in {}",
                    indices.len(),
                    dir.display()
                );
            }
            return Ok(());
        }
        tracing::info!(
            split = split_key,
            "trunk store {}: computing {} of {} images",
            dir.display(),
            missing.len(),
            indices.len()
        );
        let started = Instant::now();
        let keys = std::mem::take(&mut self.splits.get_mut(split_key).expect("hashed").keys);
        let result = self.compute_and_store(loader, &keys, &missing, true, |_, _| {});
        let entries = self.splits.get_mut(split_key).expect("hashed");
        entries.keys = keys;
        entries.announced = true;
        let delivered = result?;
        for &i in &delivered {
            entries.stored[i] = entries.keys[i].is_some();
        }
        // What the loader did not deliver it skipped (and logged): never asked for again.
        let got: std::collections::HashSet<usize> = delivered.iter().copied().collect();
        for &i in missing.iter().filter(|i| !got.contains(i)) {
            entries.skipped[i] = true;
        }
        tracing::info!(
            split = split_key,
            "trunk store: {} entries written in {:.1} s",
            delivered.len(),
            started.elapsed().as_secs_f64()
        );
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
        reference: Option<&'a Policy<B>>,
    ) -> Result<HiddenBatches<'a, B>> {
        let split_key = split_key(split);
        self.fill(loader, split_key, indices)?;
        let this: &'a Self = self;
        let Some(st) = &this.store else {
            let it = loader.epoch(indices, epoch)?.map(move |b| {
                let b = b?;
                Ok(HiddenBatch {
                    hidden: this.run_trunk(&b),
                    targets: b.targets,
                    indices: b.indices,
                    reference: None,
                })
            });
            return Ok(Box::new(it));
        };
        let entries = &this.splits[split_key];
        let [s, d] = st.store.token_shape();
        let row = s * d;
        let ds = loader.dataset().clone();
        let bs = batch_size.max(1);
        let chunks: Vec<Vec<usize>> = indices.chunks(bs).map(<[usize]>::to_vec).collect();
        let one = move |chunk: Vec<usize>| -> Result<Option<HiddenBatch<B>>> {
            // Images the loader skips are left out, as they are without the store.
            let mut chunk: Vec<usize> =
                chunk.into_iter().filter(|&i| !entries.skipped[i]).collect();
            let mut data = Vec::with_capacity(chunk.len() * row);
            let mut damaged = Vec::new();
            for (pos, &i) in chunk.iter().enumerate() {
                let start = data.len();
                let read = match &entries.keys[i] {
                    Some(image) => st.store.read_into(&image.key, &mut data),
                    None => Err(Miss::Absent),
                };
                if let Err(miss) = read {
                    let why = match miss {
                        Miss::Absent => "missing".to_string(),
                        Miss::Damaged(reason) => format!("damaged ({reason})"),
                    };
                    tracing::warn!(
                        "trunk store entry of {} is {why}; recomputing it",
                        ds.paths[i].display()
                    );
                    data.resize(start + row, 0.0);
                    damaged.push(pos);
                }
            }
            if !damaged.is_empty() {
                let idx: Vec<usize> = damaged.iter().map(|&p| chunk[p]).collect();
                let mut fresh: HashMap<usize, Vec<f32>> = HashMap::new();
                this.compute_and_store(loader, &entries.keys, &idx, false, |i, v| {
                    fresh.insert(i, v.to_vec());
                })?;
                let mut keep = vec![true; chunk.len()];
                for &p in &damaged {
                    match fresh.get(&chunk[p]) {
                        Some(v) => data[p * row..(p + 1) * row].copy_from_slice(v),
                        // The loader could not read it now: drop it from this batch.
                        None => keep[p] = false,
                    }
                }
                if keep.contains(&false) {
                    let rows: Vec<f32> = data
                        .chunks(row)
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .flat_map(|(r, _)| r.iter().copied())
                        .collect();
                    data = rows;
                    chunk = chunk
                        .into_iter()
                        .zip(&keep)
                        .filter(|(_, k)| **k)
                        .map(|(i, _)| i)
                        .collect();
                }
            }
            if chunk.is_empty() {
                return Ok(None);
            }
            let mut targets = Vec::with_capacity(chunk.len() * ds.num_labels());
            for &i in &chunk {
                targets.extend_from_slice(ds.target_row(i));
            }
            let h =
                Tensor::<B, 3>::from_data(TensorData::new(data, [chunk.len(), s, d]), &this.device);
            let reference = match (reference, &this.reference_store) {
                (Some(model), Some(logits)) => {
                    Some(this.reference_logits(model, logits, &h, &chunk, entries, &ds)?)
                }
                _ => None,
            };
            Ok(Some(HiddenBatch {
                hidden: h,
                targets,
                indices: chunk,
                reference,
            }))
        };
        Ok(Box::new(
            chunks.into_iter().filter_map(move |c| one(c).transpose()),
        ))
    }

    /// The reference's logits for one batch (`chunk`, dataset indices): read from `store`
    /// when every image has them, otherwise computed on the batch (as an uncached step would)
    /// and stored.
    fn reference_logits(
        &self,
        model: &Policy<B>,
        store: &TrunkStore,
        hidden: &Tensor<B, 3>,
        chunk: &[usize],
        entries: &SplitEntries,
        ds: &fairpo_data::Dataset,
    ) -> Result<Tensor<B, 2>> {
        let keys: Vec<Option<&ImageKey>> = chunk
            .iter()
            .map(|&i| entries.keys[i].as_ref().map(|h| &h.key))
            .collect();
        let t = store.row();
        let mut values = Vec::with_capacity(keys.len() * t);
        let mut complete = true;
        for (k, &i) in keys.iter().zip(chunk) {
            let read = match k {
                Some(k) => store.read_into(k, &mut values),
                None => Err(Miss::Absent),
            };
            if let Err(miss) = read {
                if let Miss::Damaged(reason) = miss {
                    tracing::warn!(
                        "reference logits of {} in {} are damaged ({reason}); recomputing the batch",
                        ds.paths[i].display(),
                        store.dir().display()
                    );
                }
                complete = false;
                break;
            }
        }
        if complete {
            return Ok(Tensor::from_data(
                TensorData::new(values, [keys.len(), t]),
                &self.device,
            ));
        }
        let logits = model.forward(hidden.clone());
        let v = logits
            .clone()
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for (j, (k, &i)) in keys.iter().zip(chunk).enumerate() {
            // Only for trunk outputs that are themselves stored.
            if let (Some(k), true) = (k, entries.stored[i]) {
                store.write(k, &v[j * t..(j + 1) * t])?;
            }
        }
        Ok(logits)
    }
}
