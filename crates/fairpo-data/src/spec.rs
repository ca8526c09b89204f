//! [`DatasetSpec`]: the `[data]` table of a run config, and what it loads.

use std::path::{Path, PathBuf};

use fairpo_metrics::partition::{Partition, PrivilegedSpec};
use serde::{Deserialize, Serialize};

use crate::coco;
use crate::dataset::{Dataset, LoadOptions};
use crate::error::{DataError, Result};
use crate::list;
use crate::nus;
use crate::preprocess::PreprocessConfig;
use crate::split::split_train_val;

/// On-disk layout of a dataset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// COCO official layout: `annotations/instances_<split>.json` + `<split>/` images (also the
    /// generated demo set).
    #[default]
    Coco,
    /// YOLO-style COCO layout: `images/<split>/`, `labels/<split>/*.txt`, `coco.names`.
    CocoYolo,
    /// NUS-WIDE official layout with per-concept label files.
    Nus,
    /// NUS-WIDE with combined `Labels_{Train,Test}.txt` files.
    NusCombined,
    /// Generic CSV/TSV list `path,label;label` + label-name file.
    List,
}

impl DatasetFormat {
    /// Parses the command-line spelling (`coco`, `coco-yolo`, `nus`, `nus-combined`, `list`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "coco" => Ok(Self::Coco),
            "coco-yolo" => Ok(Self::CocoYolo),
            "nus" => Ok(Self::Nus),
            "nus-combined" => Ok(Self::NusCombined),
            "list" => Ok(Self::List),
            other => Err(DataError::Config(format!(
                "unknown dataset format {other:?}; expected coco, coco-yolo, nus, nus-combined or list"
            ))),
        }
    }

    /// Default (train, test) split names.
    pub fn default_splits(self) -> (&'static str, &'static str) {
        match self {
            Self::Coco | Self::CocoYolo => ("train2014", "val2014"),
            Self::Nus | Self::NusCombined => ("Train", "Test"),
            Self::List => ("train.csv", "test.csv"),
        }
    }
}

/// Which of a dataset's two splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The training split (COCO train2014, NUS-WIDE Train); validation is held out of it.
    Train,
    /// The test split (COCO val2014, NUS-WIDE Test).
    Test,
}

/// The split used for early stopping and checkpoint choice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectOn {
    /// A validation split held out of the training images (default).
    #[default]
    Val,
    /// The test split, as the paper's released code did; reports must label it as such.
    /// All training images are then used for training.
    Test,
}

/// Where and how to read a dataset; the `[data]` table of a run config. Every field has a
/// default, so `[data]` may name only what differs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetSpec {
    /// Layout on disk (default `coco`).
    pub format: DatasetFormat,
    /// Dataset root folder (default `data/demo`, where `fairpo data generate` writes).
    pub root: PathBuf,
    /// Name of the training split (default per format: `train2014`, `Train`, or the list file
    /// `train.csv` relative to `root`).
    pub train_split: Option<String>,
    /// Name of the test split (default: `val2014`, `Test`, or `test.csv`).
    pub test_split: Option<String>,
    /// Label-name file relative to `root` (default: `coco.names` for coco-yolo, `labels.txt`
    /// for list; NUS-WIDE always reads `Concepts81.txt`; COCO JSON carries its names).
    pub labels_file: Option<PathBuf>,
    /// Folder image paths are relative to, relative to `root` (NUS-WIDE default `Flickr`, list
    /// default `root` itself; COCO layouts use `<split>/` and `images/<split>/`).
    pub image_dir: Option<PathBuf>,
    /// Drop images with none of the labels instead of keeping an all-zero row (default false).
    pub drop_empty: bool,
    /// Skip listed images missing on disk, counted and reported, instead of failing (default false).
    pub skip_missing: bool,
    /// Skip images that fail to decode, with a warning and a count, instead of failing (default false).
    pub skip_corrupt: bool,
    /// Fraction of the training images held out for validation (default 0.1).
    pub val_fraction: f64,
    /// Seed of the validation split (default 42).
    pub split_seed: u64,
    /// Split used for model selection (default `val`).
    pub select_on: SelectOn,
    /// Privileged labels: `{ fraction = 0.2 }` (default), `{ count = 16 }` or `{ names = [...] }`.
    pub privileged: PrivilegedSpec,
    /// Image preprocessing (`[data.preprocess]`).
    pub preprocess: PreprocessConfig,
}

impl Default for DatasetSpec {
    fn default() -> Self {
        DatasetSpec {
            format: DatasetFormat::Coco,
            root: PathBuf::from("data/demo"),
            train_split: None,
            test_split: None,
            labels_file: None,
            image_dir: None,
            drop_empty: false,
            skip_missing: false,
            skip_corrupt: false,
            val_fraction: 0.1,
            split_seed: 42,
            select_on: SelectOn::Val,
            privileged: PrivilegedSpec::Fraction(0.2),
            preprocess: PreprocessConfig::default(),
        }
    }
}

/// The training split with its train/val index sets and the test split.
#[derive(Clone, Debug)]
pub struct DataSplits {
    /// All training-split images.
    pub train: Dataset,
    /// The test split.
    pub test: Dataset,
    /// Rows of `train` used for training.
    pub train_indices: Vec<usize>,
    /// Rows of `train` held out for validation (empty when `select_on = "test"`).
    pub val_indices: Vec<usize>,
    /// Which split model selection uses.
    pub select_on: SelectOn,
}

impl DataSplits {
    /// All rows of the test split.
    pub fn test_indices(&self) -> Vec<usize> {
        (0..self.test.len()).collect()
    }
}

impl DatasetSpec {
    /// Parses a `[data]` table given as TOML text (the table's body, not the whole config).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let spec: DatasetSpec =
            toml::from_str(text).map_err(|e| DataError::Config(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks value ranges.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(DataError::Config(format!(
                "data.val_fraction must be in [0, 1), got {}",
                self.val_fraction
            )));
        }
        self.preprocess.validate()
    }

    /// Load options derived from the spec.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            drop_empty: self.drop_empty,
            skip_missing: self.skip_missing,
        }
    }

    /// The split name used for `split`.
    pub fn split_name(&self, split: Split) -> String {
        let (train, test) = self.format.default_splits();
        match split {
            Split::Train => self
                .train_split
                .clone()
                .unwrap_or_else(|| train.to_string()),
            Split::Test => self.test_split.clone().unwrap_or_else(|| test.to_string()),
        }
    }

    fn rooted(&self, p: &Path) -> PathBuf {
        self.root.join(p)
    }

    /// Loads one split.
    pub fn load_split(&self, split: Split) -> Result<Dataset> {
        let name = self.split_name(split);
        self.load_named(&name)
    }

    /// Loads a split by its name in the layout (e.g. `train2014`, `Test`, `extra.csv`).
    pub fn load_named(&self, name: &str) -> Result<Dataset> {
        crate::dataset::require_dir(&self.root, "dataset root")?;
        let opts = self.load_options();
        match self.format {
            DatasetFormat::Coco => coco::load_instances(
                &self
                    .root
                    .join("annotations")
                    .join(format!("instances_{name}.json")),
                &self.root.join(name),
                &opts,
            ),
            DatasetFormat::CocoYolo => {
                let names = self.rooted(
                    self.labels_file
                        .as_deref()
                        .unwrap_or(Path::new("coco.names")),
                );
                coco::load_yolo(&self.root, name, &names, &opts)
            }
            DatasetFormat::Nus | DatasetFormat::NusCombined => {
                let image_dir =
                    self.rooted(self.image_dir.as_deref().unwrap_or(Path::new("Flickr")));
                if self.format == DatasetFormat::Nus {
                    nus::load_official(&self.root, name, &image_dir, &opts)
                } else {
                    nus::load_combined(&self.root, name, &image_dir, &opts)
                }
            }
            DatasetFormat::List => {
                let labels = self.rooted(
                    self.labels_file
                        .as_deref()
                        .unwrap_or(Path::new("labels.txt")),
                );
                let image_root = self.rooted(self.image_dir.as_deref().unwrap_or(Path::new("")));
                list::load_list(&self.root.join(name), &labels, &image_root, &opts)
            }
        }
    }

    /// Loads both splits and derives the train/val index sets: `val_fraction` of the training
    /// images (seeded by `split_seed`) are held out, unless `select_on = "test"`, in which case
    /// all training images train and the test split selects.
    pub fn load_splits(&self) -> Result<DataSplits> {
        self.validate()?;
        let train = self.load_split(Split::Train)?;
        let test = self.load_split(Split::Test)?;
        if train.labels != test.labels {
            return Err(DataError::Config(format!(
                "the {} and {} splits have different label lists ({} vs {} labels)",
                train.split,
                test.split,
                train.labels.len(),
                test.labels.len()
            )));
        }
        let (train_indices, val_indices) = match self.select_on {
            SelectOn::Val => split_train_val(train.len(), self.val_fraction, self.split_seed),
            SelectOn::Test => ((0..train.len()).collect(), Vec::new()),
        };
        Ok(DataSplits {
            train,
            test,
            train_indices,
            val_indices,
            select_on: self.select_on,
        })
    }

    /// The label partition of a (training) dataset under this spec's privileged setting:
    /// frequencies = images per label in `train`.
    pub fn partition(&self, train: &Dataset) -> Result<Partition> {
        crate::stats::partition(train, &self.privileged)
    }
}
