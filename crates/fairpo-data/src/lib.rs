//! Everything between dataset files on disk and the batches a training step consumes.
//!
//! - Loaders, each yielding a [`Dataset`] per split (image paths, a `[N,T]` 0/1
//!   [`fairpo_io::Matrix`] of targets, label names in a fixed order, and a [`LoadReport`] of what
//!   was kept and dropped): COCO 2014 official JSON ([`coco::load_instances`]), the YOLO-style
//!   COCO layout ([`coco::load_yolo`]), NUS-WIDE official and combined layouts
//!   ([`nus::load_official`], [`nus::load_combined`]), and generic CSV/TSV lists
//!   ([`list::load_list`]).
//! - [`DatasetSpec`], the `[data]` table of a run config, with [`DatasetSpec::load_split`] and
//!   [`DatasetSpec::load_splits`] (train / held-out val / test index sets).
//! - Label statistics and the privileged partition ([`stats`]).
//! - The generated demo set ([`demo`], see its docs for what it contains).
//! - The image pipeline ([`preprocess`], Pillow-exact resampling in [`resample`]) and the
//!   parallel prefetching [`BatchLoader`].
//!
//! A `[data]` table with every field at its default (any subset may be given):
//!
//! ```toml
//! [data]
//! format = "coco"          # coco | coco-yolo | nus | nus-combined | list
//! root = "data/demo"
//! # train_split = "train2014"; test_split = "val2014"; labels_file = ...; image_dir = ...
//! drop_empty = false
//! skip_missing = false
//! skip_corrupt = false
//! val_fraction = 0.1
//! split_seed = 42
//! select_on = "val"        # or "test" (the released code's behaviour; reports must say so)
//! privileged = { fraction = 0.2 }   # or { count = 16 } or { names = ["toaster", ...] }
//!
//! [data.preprocess]
//! size = 224
//! resize = "direct"        # or "shorter_side_crop" (with resize_shorter, default size*256/224)
//! filter = "bilinear"      # or "bicubic" (Pillow-exact)
//! mean = [0.5, 0.5, 0.5]
//! std = [0.5, 0.5, 0.5]
//! augment = { random_resized_crop = false, scale = [0.5, 1.0], ratio = [0.75, 1.3333333333333333], horizontal_flip = false }
//! ```

pub mod coco;
pub mod dataset;
pub mod demo;
pub mod error;
pub mod list;
pub mod loader;
pub mod nus;
pub mod preprocess;
pub mod real_labels;
pub mod resample;
pub mod spec;
pub mod split;
pub mod stats;

pub use dataset::{label_counts, Dataset, LoadOptions, LoadReport};
pub use demo::{generate_demo, DemoOptions, DemoSummary, LabelSet};
pub use error::{DataError, Result};
pub use loader::{Batch, BatchLoader, Batches, LoaderConfig, SkipSummary};
pub use preprocess::{AugmentConfig, PreprocessConfig, Preprocessor, ResizeMode, RgbImage};
pub use resample::ResampleFilter;
pub use spec::{DataSplits, DatasetFormat, DatasetSpec, SelectOn, Split};
pub use split::{epoch_order, split_train_val};
pub use stats::LabelStats;
