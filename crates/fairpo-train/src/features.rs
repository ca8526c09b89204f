//! Feature extraction with a frozen ViT, and the feature-cache format of `fairpo features`.
//!
//! A cache is two files: `F.npy`, f32 `[N, D]` (one row per image, in the order of the
//! image list), and the sidecar `F.npy.json` ([`FeatureMeta`]) recording what produced it:
//! the SHA-256 of the weights file, the model config, the preprocessing, the layer and the
//! image list (count + SHA-256 of the paths). [`load_cached`] refuses a cache whose sidecar
//! differs from what the caller would compute now, naming the fields that differ.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use fairpo_data::{PreprocessConfig, Preprocessor};
use fairpo_io::Matrix;
use fairpo_vit::{AppliedPrecision, TrunkPrecision, ViT, ViTConfig};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the sidecar format (2: `tokens`, and the trainer's trunk-output cache uses it).
pub(crate) const FEATURE_FORMAT_VERSION: u32 = 2;

/// Image file extensions picked up from a directory (case-insensitive).
pub(crate) const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Which hidden state's CLS token is extracted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureLayer {
    /// CLS after the last layer and the final LayerNorm (the backbone's output).
    Cls,
    /// CLS after the first N encoder layers, before the final LayerNorm (HF
    /// `hidden_states[N]`; 0 = the embeddings).
    After(usize),
}

impl std::str::FromStr for FeatureLayer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("cls") {
            return Ok(Self::Cls);
        }
        s.parse::<usize>().map(Self::After).map_err(|_| {
            format!("invalid layer {s:?}: expected `cls` or a layer count N (0 = embeddings)")
        })
    }
}

impl std::fmt::Display for FeatureLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cls => write!(f, "cls"),
            Self::After(n) => write!(f, "{n}"),
        }
    }
}

/// The sidecar of a feature file — of `fairpo features` and of the trainer's trunk-output
/// cache alike: everything that determines its contents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureMeta {
    /// Sidecar format version.
    pub format_version: u32,
    /// SHA-256 (hex) of the weights: of the weights file for `fairpo features`, of the frozen
    /// trunk's parameter values (and split point) for the trunk-output cache.
    pub weights_sha256: String,
    /// The weights file or backbone folder read (informational; not compared).
    pub weights_path: PathBuf,
    /// The model's configuration.
    pub config: ViTConfig,
    /// Preprocessing applied to every image.
    pub preprocess: PreprocessConfig,
    /// Which CLS token.
    pub layer: FeatureLayer,
    /// Number of images (rows).
    pub num_images: usize,
    /// Tokens per image (1 for a CLS feature).
    pub tokens: usize,
    /// Width of one token; a row holds `tokens · dim` values.
    pub dim: usize,
    /// SHA-256 (hex) of the image paths, one per line, in row order.
    pub images_sha256: String,
    /// The number format the frozen layers were computed in (absent in older sidecars:
    /// f32).
    #[serde(default, skip_serializing_if = "is_f32")]
    pub trunk_precision: TrunkPrecision,
}

fn is_f32(p: &TrunkPrecision) -> bool {
    *p == TrunkPrecision::F32
}

impl FeatureMeta {
    /// Fields in which `self` (a cache on disk) differs from `want` (what would be
    /// computed now); empty when the cache is valid.
    pub fn differences(&self, want: &FeatureMeta) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.format_version != want.format_version {
            d.push("format_version");
        }
        if self.weights_sha256 != want.weights_sha256 {
            d.push("weights (sha256)");
        }
        if self.config != want.config {
            d.push("model config");
        }
        if self.preprocess != want.preprocess {
            d.push("preprocessing");
        }
        if self.layer != want.layer {
            d.push("layer");
        }
        if self.num_images != want.num_images || self.images_sha256 != want.images_sha256 {
            d.push("image list");
        }
        if self.dim != want.dim || self.tokens != want.tokens {
            d.push("feature width");
        }
        if self.trunk_precision != want.trunk_precision {
            d.push("trunk precision");
        }
        d
    }
}

/// Sidecar path of a feature file: `F.npy` → `F.npy.json`.
pub fn sidecar_path(features: &Path) -> PathBuf {
    let mut s = features.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// SHA-256 (hex) of a file's bytes, streamed.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex(&h.finalize()))
}

/// SHA-256 (hex) of a list of paths, one per line.
pub(crate) fn sha256_paths(paths: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.to_string_lossy().as_bytes());
        h.update(b"\n");
    }
    hex(&h.finalize())
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The images named by `source`: a directory (its `.jpg`/`.jpeg`/`.png` files, not
/// recursive, sorted lexicographically by file name) or a list file (one path per line,
/// relative paths resolved against the list's folder; blank lines and `#` comments skipped).
pub(crate) fn list_images(source: &Path) -> Result<Vec<PathBuf>> {
    let images = if source.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(source)
            .with_context(|| format!("reading image directory {}", source.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension()
                        .and_then(|e| e.to_str())
                        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
                        .unwrap_or(false)
            })
            .collect();
        v.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        if v.is_empty() {
            bail!(
                "no images found in {} (looked for files ending in .{})",
                source.display(),
                IMAGE_EXTENSIONS.join(", .")
            );
        }
        v
    } else if source.is_file() {
        let text = std::fs::read_to_string(source)
            .with_context(|| format!("reading image list {}", source.display()))?;
        let base = source.parent().unwrap_or(Path::new("."));
        let v: Vec<PathBuf> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let p = PathBuf::from(l);
                if p.is_absolute() {
                    p
                } else {
                    base.join(p)
                }
            })
            .collect();
        if v.is_empty() {
            bail!(
                "no images found: list file {} names no image",
                source.display()
            );
        }
        v
    } else {
        bail!("{}: no such image directory or list file", source.display());
    };
    Ok(images)
}

/// The preprocessing a model folder asks for: the model's image size, overridden by its
/// `preprocessor_config.json` (mean, std, size, filter) when present.
pub(crate) fn preprocess_for_model(model_dir: &Path, cfg: &ViTConfig) -> Result<PreprocessConfig> {
    let mut pre = PreprocessConfig {
        size: cfg.image_size,
        ..PreprocessConfig::default()
    };
    let hf = model_dir.join("preprocessor_config.json");
    if hf.is_file() {
        pre.apply_hf_preprocessor(&hf)
            .with_context(|| format!("reading {}", hf.display()))?;
    }
    if pre.size != cfg.image_size {
        bail!(
            "{}: preprocessing size {} differs from the model's image_size {}",
            hf.display(),
            pre.size,
            cfg.image_size
        );
    }
    Ok(pre)
}

/// Run the frozen model over `images` in batches of `batch` and return `[N, D]` CLS
/// features, with the layers before the last one computed in `precision` (the last
/// layer, CLS-only, stays f32) and what that precision meant here. Images are decoded in
/// parallel (rayon); `on_batch(done)` is called after every batch (progress). An
/// unreadable image fails the whole run, naming the file.
#[allow(clippy::too_many_arguments)]
pub(crate) fn extract_features<B: Backend>(
    vit: &ViT<B>,
    images: &[PathBuf],
    pre: &Preprocessor,
    layer: FeatureLayer,
    precision: TrunkPrecision,
    batch: usize,
    device: &B::Device,
    mut on_batch: impl FnMut(usize),
) -> Result<(Matrix<f32>, AppliedPrecision)> {
    let layers = vit.num_layers();
    if let FeatureLayer::After(n) = layer {
        if n > layers {
            bail!(
                "--layer {n}: the model has only {layers} encoder layers (use 0..={layers} or cls)"
            );
        }
    }
    // The CLS after layer n is the trunk of layers 0..n-1, then layer n on the CLS row.
    let last = match layer {
        FeatureLayer::Cls => layers,
        FeatureLayer::After(n) => n,
    };
    // With no layer before it there is no trunk to run in another precision.
    let direct = last <= 1;
    let (trunk, tail) = vit.clone().split(layers + 1 - last.max(1));
    let (trunk, applied) = if direct {
        let why = format!("--layer {layer} has no encoder layer before the one it is read after");
        let fallback = (precision != TrunkPrecision::F32).then_some(why);
        (trunk, AppliedPrecision::F32 { fallback })
    } else {
        trunk.with_precision(precision)
    };
    let forward = |x: Tensor<B, 4>| match layer {
        FeatureLayer::Cls if direct => vit.forward(x),
        FeatureLayer::After(n) if direct => vit.forward_cls_after(x, n),
        FeatureLayer::Cls => tail.forward(trunk.forward(x)),
        FeatureLayer::After(_) => tail.layers[0].forward_cls(trunk.forward(x)),
    };
    let batch = batch.max(1);
    let size = pre.config().size;
    let d = vit.hidden_size();
    let mut data = Vec::with_capacity(images.len() * d);
    let mut done = 0;
    for chunk in images.chunks(batch) {
        let (_, flat) = load_batch(pre, chunk, Err)?;
        let x =
            Tensor::<B, 4>::from_data(TensorData::new(flat, [chunk.len(), 3, size, size]), device);
        let v: Vec<f32> = forward(x)
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| anyhow::anyhow!("reading features back: {e:?}"))?;
        data.extend_from_slice(&v);
        done += chunk.len();
        on_batch(done);
    }
    let features = Matrix {
        rows: images.len(),
        cols: d,
        data,
    };
    Ok((features, applied))
}

/// Decodes and preprocesses `paths` in parallel into one `[n, 3, size, size]` buffer, in
/// order. An unreadable image (its error names the file) goes to `unreadable`: returning the
/// error stops, returning `Ok` leaves the image out. Returns the paths kept and the pixels.
pub(crate) fn load_batch<'a>(
    pre: &Preprocessor,
    paths: &'a [PathBuf],
    mut unreadable: impl FnMut(anyhow::Error) -> Result<()>,
) -> Result<(Vec<&'a PathBuf>, Vec<f32>)> {
    let loaded: Vec<Result<Vec<f32>>> = paths
        .par_iter()
        .map(|p| {
            pre.load(p)
                .with_context(|| format!("reading image {}", p.display()))
        })
        .collect();
    let mut kept = Vec::with_capacity(paths.len());
    let mut flat = Vec::with_capacity(paths.len() * pre.output_len());
    for (path, pixels) in paths.iter().zip(loaded) {
        match pixels {
            Ok(p) => {
                flat.extend_from_slice(&p);
                kept.push(path);
            }
            Err(e) => unreadable(e)?,
        }
    }
    Ok((kept, flat))
}

/// Write `F.npy` and its sidecar, both atomically (the sidecar last, so a cache with a
/// sidecar is always complete).
pub(crate) fn write_features(
    path: &Path,
    features: &Matrix<f32>,
    meta: &FeatureMeta,
) -> Result<()> {
    fairpo_io::write_npy_f32(path, features)?;
    fairpo_io::write_json_atomic(sidecar_path(path), meta)?;
    Ok(())
}

/// Read a feature cache, refusing it when its sidecar is missing or differs from `want`.
pub fn load_cached(path: &Path, want: &FeatureMeta) -> Result<Matrix<f32>> {
    let side = sidecar_path(path);
    let text = std::fs::read_to_string(&side)
        .with_context(|| format!("{}: feature cache has no readable sidecar", side.display()))?;
    let have: FeatureMeta = serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid feature sidecar", side.display()))?;
    let diff = have.differences(want);
    if !diff.is_empty() {
        bail!(
            "{}: stale feature cache (differs in: {}); recompute it with `fairpo features`",
            path.display(),
            diff.join(", ")
        );
    }
    let m = fairpo_io::read_npy_f32(path)?;
    if m.rows != want.num_images || m.cols != want.tokens * want.dim {
        bail!(
            "{}: feature cache has shape [{}, {}], its sidecar says [{}, {}]",
            path.display(),
            m.rows,
            m.cols,
            want.num_images,
            want.tokens * want.dim
        );
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layers() {
        assert_eq!("cls".parse::<FeatureLayer>().unwrap(), FeatureLayer::Cls);
        assert_eq!("3".parse::<FeatureLayer>().unwrap(), FeatureLayer::After(3));
        assert!("last"
            .parse::<FeatureLayer>()
            .unwrap_err()
            .contains("expected `cls`"));
    }

    #[test]
    fn sidecar_is_next_to_the_features() {
        assert_eq!(
            sidecar_path(Path::new("out/f.npy")),
            PathBuf::from("out/f.npy.json")
        );
    }

    #[test]
    fn list_file_resolves_relative_paths_and_skips_comments() {
        let tmp = tempfile::tempdir().unwrap();
        let list = tmp.path().join("list.txt");
        std::fs::write(&list, "# images\nb.png\n\n/abs/a.jpg\n").unwrap();
        let v = list_images(&list).unwrap();
        assert_eq!(
            v,
            vec![tmp.path().join("b.png"), PathBuf::from("/abs/a.jpg")]
        );
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = list_images(&empty).unwrap_err().to_string();
        assert!(err.contains("no images found"), "{err}");
    }
}
