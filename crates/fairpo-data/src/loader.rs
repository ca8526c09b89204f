//! Parallel, prefetching batch loader.
//!
//! Each batch is decoded and preprocessed in parallel on a rayon pool; a background thread runs
//! ahead by `prefetch` batches through a bounded channel, so the training step rarely waits on
//! decoding. Batches visit the given indices in the given order (the trainer shuffles them with
//! `epoch_order`), and augmentation draws from a generator seeded by (seed, epoch, image
//! index), independent of thread scheduling.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::preprocess::{decode_rgb, PreprocessConfig, Preprocessor};
use crate::split::mix;

/// One batch: pixels `[B,3,H,W]` and targets `[B,T]`, row-major, with the dataset rows they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Dataset rows in this batch, in order.
    pub indices: Vec<usize>,
    /// `[B,3,H,W]` normalised pixels; empty when the loader was built without pixels.
    pub pixels: Vec<f32>,
    /// `[B,T]` targets, 0/1.
    pub targets: Vec<u8>,
    /// B (may be smaller than the configured batch size for the last batch or after skips).
    pub batch_size: usize,
    /// H (0 without pixels).
    pub height: usize,
    /// W (0 without pixels).
    pub width: usize,
    /// T.
    pub num_labels: usize,
}

/// Batching settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoaderConfig {
    /// Images per batch (default 32).
    pub batch_size: usize,
    /// Seed of augmentation (default 42).
    pub seed: u64,
    /// Drop a last, smaller batch (default false).
    pub drop_last: bool,
    /// Batches decoded ahead of the consumer (default 2).
    pub prefetch: usize,
    /// Decoding threads; 0 = one per core (default 0).
    pub threads: usize,
    /// Decode images (default true); false yields indices and targets only, e.g. for training
    /// from a feature cache.
    pub pixels: bool,
    /// Apply the preprocess config's augmentation (default false; turn on for training only).
    pub augment: bool,
    /// Skip images that fail to read or decode, with a warning and a count (default false: error).
    pub skip_corrupt: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 32,
            seed: 42,
            drop_last: false,
            prefetch: 2,
            threads: 0,
            pixels: true,
            augment: false,
            skip_corrupt: false,
        }
    }
}

/// Images skipped as unreadable so far (`skip_corrupt`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipSummary {
    /// Number of skips (an image skipped in several epochs counts each time).
    pub skipped: usize,
    /// The first (up to 10) distinct skipped files.
    pub examples: Vec<PathBuf>,
}

#[derive(Default)]
struct SkipCounter {
    count: AtomicUsize,
    examples: Mutex<Vec<PathBuf>>,
}

/// Produces [`Batch`]es of a dataset.
pub struct BatchLoader {
    dataset: Arc<Dataset>,
    pre: Arc<Preprocessor>,
    cfg: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    skips: Arc<SkipCounter>,
}

impl std::fmt::Debug for BatchLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchLoader")
            .field("images", &self.dataset.len())
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl BatchLoader {
    /// A loader over `dataset` with the given preprocessing and batching.
    pub fn new(
        dataset: Arc<Dataset>,
        preprocess: PreprocessConfig,
        cfg: LoaderConfig,
    ) -> Result<Self> {
        if cfg.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        let pre = Arc::new(Preprocessor::new(preprocess)?);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("fairpo-data-{i}"))
            .build()
            .map_err(|e| DataError::Config(format!("cannot start decoding threads: {e}")))?;
        Ok(BatchLoader {
            dataset,
            pre,
            cfg,
            pool: Arc::new(pool),
            skips: Arc::default(),
        })
    }

    /// The dataset read by this loader.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// Batches in an epoch over `n` indices.
    pub fn num_batches(&self, n: usize) -> usize {
        if self.cfg.drop_last {
            n / self.cfg.batch_size
        } else {
            n.div_ceil(self.cfg.batch_size)
        }
    }

    /// Skips so far.
    pub fn skipped(&self) -> SkipSummary {
        SkipSummary {
            skipped: self.skips.count.load(Ordering::Relaxed),
            examples: self
                .skips
                .examples
                .lock()
                .map(|v| v.clone())
                .unwrap_or_default(),
        }
    }

    /// Starts epoch `epoch` over `indices` (rows of the dataset, e.g. the train, val or test set).
    /// The returned iterator yields batches in order; a read error ends it after yielding the error.
    pub fn epoch(&self, indices: &[usize], epoch: u64) -> Result<Batches> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.dataset.len()) {
            return Err(DataError::Config(format!(
                "index {bad} out of range for a split of {} images",
                self.dataset.len()
            )));
        }
        let bs = self.cfg.batch_size;
        let chunks: Vec<Vec<usize>> = indices
            .chunks(bs)
            .filter(|c| !self.cfg.drop_last || c.len() == bs)
            .map(<[usize]>::to_vec)
            .collect();
        let len = chunks.len();
        let (tx, rx) = sync_channel(self.cfg.prefetch.max(1));
        let job = BatchJob {
            dataset: Arc::clone(&self.dataset),
            pre: Arc::clone(&self.pre),
            pool: Arc::clone(&self.pool),
            skips: Arc::clone(&self.skips),
            cfg: self.cfg.clone(),
            epoch,
        };
        let handle = std::thread::Builder::new()
            .name("fairpo-prefetch".into())
            .spawn(move || {
                for chunk in chunks {
                    match job.make(chunk) {
                        Ok(None) => continue,
                        Ok(Some(batch)) => {
                            if tx.send(Ok(batch)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| DataError::Config(format!("cannot start the prefetch thread: {e}")))?;
        Ok(Batches {
            rx: Some(rx),
            handle: Some(handle),
            len,
        })
    }
}

struct BatchJob {
    dataset: Arc<Dataset>,
    pre: Arc<Preprocessor>,
    pool: Arc<rayon::ThreadPool>,
    skips: Arc<SkipCounter>,
    cfg: LoaderConfig,
    epoch: u64,
}

impl BatchJob {
    /// Builds one batch; `None` if every image of it was skipped.
    fn make(&self, chunk: Vec<usize>) -> Result<Option<Batch>> {
        let t = self.dataset.num_labels();
        if !self.cfg.pixels {
            let targets = chunk
                .iter()
                .flat_map(|&i| self.dataset.target_row(i).to_vec())
                .collect();
            return Ok(Some(Batch {
                batch_size: chunk.len(),
                indices: chunk,
                pixels: Vec::new(),
                targets,
                height: 0,
                width: 0,
                num_labels: t,
            }));
        }
        let len = self.pre.output_len();
        // Decode straight into the batch buffer; rows of skipped images are removed afterwards.
        let mut pixels = vec![0f32; chunk.len() * len];
        let results: Vec<Result<()>> = self.pool.install(|| {
            pixels
                .par_chunks_mut(len)
                .zip(chunk.par_iter())
                .map(|(out, &i)| {
                    let img = decode_rgb(&self.dataset.paths[i])?;
                    if self.cfg.augment {
                        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix(
                            mix(self.cfg.seed, self.epoch),
                            i as u64,
                        ));
                        self.pre.process_into(&img, Some(&mut rng), out);
                    } else {
                        self.pre.process_into(&img, None, out);
                    }
                    Ok(())
                })
                .collect()
        });
        let mut indices = Vec::with_capacity(chunk.len());
        let mut targets = Vec::with_capacity(chunk.len() * t);
        let mut kept_rows = Vec::with_capacity(chunk.len());
        for (row, (&i, r)) in chunk.iter().zip(results).enumerate() {
            match r {
                Ok(()) => {
                    indices.push(i);
                    kept_rows.push(row);
                    targets.extend_from_slice(self.dataset.target_row(i));
                }
                Err(e @ (DataError::Decode { .. } | DataError::Io { .. }))
                    if self.cfg.skip_corrupt =>
                {
                    let n = self.skips.count.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!("skipping unreadable image ({n} skipped so far): {e}");
                    if let Ok(mut ex) = self.skips.examples.lock() {
                        let p = &self.dataset.paths[i];
                        if ex.len() < 10 && !ex.contains(p) {
                            ex.push(p.clone());
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if kept_rows.len() < chunk.len() {
            for (dst, &src) in kept_rows.iter().enumerate() {
                if dst != src {
                    pixels.copy_within(src * len..(src + 1) * len, dst * len);
                }
            }
            pixels.truncate(kept_rows.len() * len);
        }
        if indices.is_empty() {
            return Ok(None);
        }
        let size = self.pre.config().size;
        Ok(Some(Batch {
            batch_size: indices.len(),
            indices,
            pixels,
            targets,
            height: size,
            width: size,
            num_labels: t,
        }))
    }
}

/// Iterator over one epoch's batches; dropping it stops the prefetch thread.
pub struct Batches {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    len: usize,
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches").field("len", &self.len).finish()
    }
}

impl Batches {
    /// Batches planned for this epoch (fewer are yielded if whole batches are skipped).
    pub fn planned(&self) -> usize {
        self.len
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.rx.as_ref()?.recv() {
            Ok(item) => Some(item),
            Err(_) => {
                // Channel closed: the thread finished, or panicked, which must not look like a
                // normal end of the epoch.
                self.rx = None;
                match self.handle.take().map(JoinHandle::join) {
                    Some(Err(_)) => Some(Err(DataError::Config(
                        "the batch prefetch thread panicked".into(),
                    ))),
                    _ => None,
                }
            }
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Closing the channel first makes a blocked `send` fail, so the thread ends.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            if h.join().is_err() {
                tracing::error!("the batch prefetch thread panicked");
            }
        }
    }
}
