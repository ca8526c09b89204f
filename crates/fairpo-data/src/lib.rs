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

pub mod coco;
pub mod dataset;
pub mod demo;
pub mod error;
pub mod list;
pub mod loader;
pub mod nus;
pub mod preprocess;
pub mod resample;
pub mod spec;
pub mod split;
pub mod stats;

pub use dataset::{label_counts, Dataset, LoadOptions, LoadReport};
pub use demo::{generate_demo, DemoOptions, DemoSummary};
pub use error::{DataError, Result};
pub use loader::{Batch, BatchLoader, Batches, LoaderConfig, SkipSummary};
pub use preprocess::{AugmentConfig, PreprocessConfig, Preprocessor, ResizeMode, RgbImage};
pub use resample::ResampleFilter;
pub use spec::{DataSplits, DatasetFormat, DatasetSpec, SelectOn, Split};
pub use split::{epoch_order, split_train_val};
pub use stats::LabelStats;
