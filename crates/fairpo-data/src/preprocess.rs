//! Image pipeline: decode → (augment) → resize → crop → normalise → `[3,H,W]` f32.
//!
//! Defaults follow the Hugging Face `ViTImageProcessor` of `google/vit-base-patch16-224`: direct
//! resize to 224×224 with Pillow's bilinear filter, rescale by 1/255, normalise with mean 0.5 and
//! std 0.5 per channel. A model folder's `preprocessor_config.json` overrides size, filter, mean
//! and std ([`PreprocessConfig::apply_hf_preprocessor`]).
//!
//! Decoding uses the `image` crate (JPEG, PNG). Greyscale, grey+alpha, RGBA and CMYK inputs become
//! RGB (alpha is dropped, as Pillow's `convert("RGB")` does). EXIF orientation is ignored, as
//! Pillow's `Image.open` and the paper's released code do.

use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::resample::{resize_rgb, ResampleFilter, Window};

/// How an image is brought to the model's square input size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Resize straight to `size`×`size`, ignoring the aspect ratio (HF `ViTImageProcessor`).
    #[default]
    Direct,
    /// Resize the shorter side to `resize_shorter` keeping the aspect ratio (torchvision
    /// `Resize(int)`), then take the centre `size`×`size` crop (torchvision `CenterCrop`).
    ShorterSideCrop,
}

/// Training augmentation, off by default. The paper (appendix C) trains with random horizontal
/// flips and random resized crops; the coco-/nus- presets turn both on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Replace the resize by torchvision's `RandomResizedCrop(size, scale, ratio)` (default false).
    pub random_resized_crop: bool,
    /// Range of the crop's area as a fraction of the image (default [0.5, 1.0]: narrower than
    /// torchvision's [0.08, 1] because a small crop can cut a labelled object out of a
    /// multi-label image).
    pub scale: [f64; 2],
    /// Range of the crop's aspect ratio w/h (default [3/4, 4/3], as torchvision).
    pub ratio: [f64; 2],
    /// Flip horizontally with probability 0.5 (default false).
    pub horizontal_flip: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            random_resized_crop: false,
            scale: [0.5, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            horizontal_flip: false,
        }
    }
}

impl AugmentConfig {
    /// True when any augmentation is on.
    pub fn enabled(&self) -> bool {
        self.random_resized_crop || self.horizontal_flip
    }
}

/// Image preprocessing settings; the `[data.preprocess]` table of a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PreprocessConfig {
    /// Output height and width in pixels (default 224).
    pub size: usize,
    /// Resize mode (default `direct`).
    pub resize: ResizeMode,
    /// Target of the shorter side for `shorter_side_crop` (default: `size`·256/224, rounded).
    pub resize_shorter: Option<usize>,
    /// Resampling filter (default `bilinear`, Pillow's).
    pub filter: ResampleFilter,
    /// Per-channel mean subtracted after scaling to 0..1 (default [0.5, 0.5, 0.5]).
    pub mean: [f32; 3],
    /// Per-channel std divided by (default [0.5, 0.5, 0.5]).
    pub std: [f32; 3],
    /// Training augmentation (default off).
    pub augment: AugmentConfig,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            size: 224,
            resize: ResizeMode::Direct,
            resize_shorter: None,
            filter: ResampleFilter::Bilinear,
            mean: [0.5; 3],
            std: [0.5; 3],
            augment: AugmentConfig::default(),
        }
    }
}

/// The fields of a Hugging Face `preprocessor_config.json` the pipeline uses.
#[derive(Deserialize)]
struct HfPreprocessor {
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    size: Option<serde_json::Value>,
    resample: Option<u32>,
}

impl PreprocessConfig {
    /// Checks ranges; called by the pipeline before use.
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 {
            return Err(DataError::Config(
                "preprocess.size must be at least 1".into(),
            ));
        }
        if self.std.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
            return Err(DataError::Config(format!(
                "preprocess.std must be positive, got {:?}",
                self.std
            )));
        }
        if let Some(s) = self.resize_shorter {
            if s < self.size {
                return Err(DataError::Config(format!(
                    "preprocess.resize_shorter ({s}) must be at least size ({})",
                    self.size
                )));
            }
        }
        let a = &self.augment;
        if !(0.0 < a.scale[0] && a.scale[0] <= a.scale[1] && a.scale[1] <= 1.0) {
            return Err(DataError::Config(format!(
                "preprocess.augment.scale must satisfy 0 < lo <= hi <= 1, got {:?}",
                a.scale
            )));
        }
        if !(0.0 < a.ratio[0] && a.ratio[0] <= a.ratio[1]) {
            return Err(DataError::Config(format!(
                "preprocess.augment.ratio must satisfy 0 < lo <= hi, got {:?}",
                a.ratio
            )));
        }
        Ok(())
    }

    /// Shorter-side target for [`ResizeMode::ShorterSideCrop`].
    pub fn shorter_side(&self) -> usize {
        self.resize_shorter
            .unwrap_or_else(|| (self.size as f64 * 256.0 / 224.0).round() as usize)
    }

    /// Overrides size, filter, mean and std with a Hugging Face `preprocessor_config.json`.
    pub fn apply_hf_preprocessor(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let hf: HfPreprocessor = serde_json::from_str(&text).map_err(|e| DataError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if let Some(m) = hf.image_mean {
            self.mean = m;
        }
        if let Some(s) = hf.image_std {
            self.std = s;
        }
        match hf.resample {
            None => {}
            Some(2) => self.filter = ResampleFilter::Bilinear,
            Some(3) => self.filter = ResampleFilter::Bicubic,
            Some(other) => {
                return Err(DataError::Json {
                    path: path.to_path_buf(),
                    message: format!(
                        "resample = {other} is not supported (2 = bilinear, 3 = bicubic)"
                    ),
                })
            }
        }
        match hf.size {
            None => {}
            Some(serde_json::Value::Number(n)) => {
                self.size = n.as_u64().unwrap_or(0) as usize;
            }
            Some(serde_json::Value::Object(map)) => {
                let get = |k: &str| map.get(k).and_then(|v| v.as_u64());
                match (get("height"), get("width"), get("shortest_edge")) {
                    (Some(h), Some(w), _) if h == w => self.size = h as usize,
                    (_, _, Some(s)) => self.size = s as usize,
                    _ => {
                        return Err(DataError::Json {
                            path: path.to_path_buf(),
                            message: format!("size {map:?}: expected equal height and width"),
                        })
                    }
                }
            }
            Some(other) => {
                return Err(DataError::Json {
                    path: path.to_path_buf(),
                    message: format!("size {other}: expected a number or {{height, width}}"),
                })
            }
        }
        self.validate()
    }
}

/// A decoded RGB image, packed row-major (`width*height*3` bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Packed RGB bytes.
    pub data: Vec<u8>,
}

/// Decodes a JPEG or PNG file to RGB, naming the file on error.
pub fn decode_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_rgb_bytes(&bytes).map_err(|message| DataError::Decode {
        path: path.to_path_buf(),
        message,
    })
}

/// Decodes an in-memory JPEG or PNG to RGB.
pub fn decode_rgb_bytes(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("unrecognised image format (expected JPEG or PNG)".into());
    }
    let img = reader.decode().map_err(|e| e.to_string())?.into_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err("image has zero size".into());
    }
    Ok(RgbImage {
        width: w as usize,
        height: h as usize,
        data: img.into_raw(),
    })
}

/// Applies a [`PreprocessConfig`] to decoded images.
#[derive(Clone, Debug)]
pub struct Preprocessor {
    cfg: PreprocessConfig,
    /// `lut[c][v]` = (v/255 − mean[c]) / std[c].
    lut: [[f32; 256]; 3],
}

impl Preprocessor {
    /// Validates the config and builds the normalisation tables.
    pub fn new(cfg: PreprocessConfig) -> Result<Self> {
        cfg.validate()?;
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, x) in table.iter_mut().enumerate() {
                *x = (v as f32 * (1.0 / 255.0) - cfg.mean[c]) / cfg.std[c];
            }
        }
        Ok(Preprocessor { cfg, lut })
    }

    /// The settings in use.
    pub fn config(&self) -> &PreprocessConfig {
        &self.cfg
    }

    /// Floats per output image: 3·size·size.
    pub fn output_len(&self) -> usize {
        3 * self.cfg.size * self.cfg.size
    }

    /// The resized (and cropped) RGB bytes, before normalisation. With `rng`, the configured
    /// augmentation is applied; without it the image is processed deterministically.
    pub fn resize(&self, img: &RgbImage, rng: Option<&mut dyn rand::RngCore>) -> Vec<u8> {
        let size = self.cfg.size;
        let full = Window {
            x: 0,
            y: 0,
            width: img.width,
            height: img.height,
        };
        let square = Window {
            x: 0,
            y: 0,
            width: size,
            height: size,
        };
        let aug = &self.cfg.augment;
        let mut flip = false;
        let out = match rng {
            Some(rng) if aug.enabled() => {
                let crop = if aug.random_resized_crop {
                    random_resized_crop(img.width, img.height, aug.scale, aug.ratio, rng)
                } else {
                    full
                };
                flip = aug.horizontal_flip && rng.random_bool(0.5);
                if aug.random_resized_crop {
                    resize_rgb(
                        &img.data,
                        img.width,
                        crop,
                        size,
                        size,
                        self.cfg.filter,
                        square,
                    )
                } else {
                    self.deterministic(img)
                }
            }
            _ => self.deterministic(img),
        };
        if flip {
            flip_horizontal(out, size)
        } else {
            out
        }
    }

    fn deterministic(&self, img: &RgbImage) -> Vec<u8> {
        let size = self.cfg.size;
        let full = Window {
            x: 0,
            y: 0,
            width: img.width,
            height: img.height,
        };
        match self.cfg.resize {
            ResizeMode::Direct => resize_rgb(
                &img.data,
                img.width,
                full,
                size,
                size,
                self.cfg.filter,
                Window {
                    x: 0,
                    y: 0,
                    width: size,
                    height: size,
                },
            ),
            ResizeMode::ShorterSideCrop => {
                let (w, h) = shorter_side_size(img.width, img.height, self.cfg.shorter_side());
                let keep = center_crop_window(w, h, size);
                resize_rgb(&img.data, img.width, full, w, h, self.cfg.filter, keep)
            }
        }
    }

    /// Writes the normalised `[3,size,size]` image into `out` (length [`Self::output_len`]).
    pub fn process_into(
        &self,
        img: &RgbImage,
        rng: Option<&mut dyn rand::RngCore>,
        out: &mut [f32],
    ) {
        let rgb = self.resize(img, rng);
        self.normalize_into(&rgb, out);
    }

    /// Normalises packed RGB bytes of a size×size image into planar `[3,size,size]` floats.
    pub fn normalize_into(&self, rgb: &[u8], out: &mut [f32]) {
        let plane = self.cfg.size * self.cfg.size;
        assert_eq!(rgb.len(), plane * 3, "normalize_into: wrong input length");
        assert_eq!(out.len(), plane * 3, "normalize_into: wrong output length");
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            r[i] = self.lut[0][px[0] as usize];
            g[i] = self.lut[1][px[1] as usize];
            b[i] = self.lut[2][px[2] as usize];
        }
    }

    /// Decodes and processes one file into a new `[3,size,size]` vector.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>> {
        let img = decode_rgb(path)?;
        let mut out = vec![0f32; self.output_len()];
        self.process_into(&img, None, &mut out);
        Ok(out)
    }
}

/// torchvision `Resize(int)`: the shorter side becomes `target`, the longer one
/// `int(target * long / short)`.
pub fn shorter_side_size(width: usize, height: usize, target: usize) -> (usize, usize) {
    if width <= height {
        (
            target,
            (target as f64 * height as f64 / width as f64) as usize,
        )
    } else {
        (
            (target as f64 * width as f64 / height as f64) as usize,
            target,
        )
    }
}

/// Python's `round` (half to even) of `d / 2` for a non-negative integer `d`.
fn half_round_even(d: usize) -> usize {
    let floor = d / 2;
    if d % 2 == 1 && floor % 2 == 1 {
        floor + 1
    } else {
        floor
    }
}

/// torchvision `CenterCrop(size)` on a `width`×`height` image: top = round((h − size)/2), the
/// same for left, with Python's rounding.
pub fn center_crop_window(width: usize, height: usize, size: usize) -> Window {
    Window {
        x: half_round_even(width.saturating_sub(size)),
        y: half_round_even(height.saturating_sub(size)),
        width: size.min(width),
        height: size.min(height),
    }
}

/// torchvision `RandomResizedCrop.get_params`: ten tries at a random area and log-uniform aspect
/// ratio, then a centre crop fallback.
pub fn random_resized_crop(
    width: usize,
    height: usize,
    scale: [f64; 2],
    ratio: [f64; 2],
    rng: &mut dyn rand::RngCore,
) -> Window {
    let area = (width * height) as f64;
    let (lr0, lr1) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0]..=scale[1]);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let y = rng.random_range(0..=height - h);
            let x = rng.random_range(0..=width - w);
            return Window {
                x,
                y,
                width: w,
                height: h,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio[0] {
        (width, ((width as f64 / ratio[0]).round() as usize).max(1))
    } else if in_ratio > ratio[1] {
        (((height as f64 * ratio[1]).round() as usize).max(1), height)
    } else {
        (width, height)
    };
    Window {
        x: (width - w) / 2,
        y: (height - h) / 2,
        width: w,
        height: h,
    }
}

fn flip_horizontal(mut rgb: Vec<u8>, size: usize) -> Vec<u8> {
    for row in rgb.chunks_exact_mut(size * 3) {
        for x in 0..size / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (size - 1 - x) * 3 + c);
            }
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_sizes_and_crops() {
        assert_eq!(shorter_side_size(640, 480, 256), (341, 256));
        assert_eq!(shorter_side_size(480, 640, 256), (256, 341));
        // (341-224)/2 = 58.5 → Python round → 58; (257-224)/2 = 16.5 → 16; (259-224)/2=17.5 → 18.
        assert_eq!(center_crop_window(341, 256, 224).x, 58);
        assert_eq!(center_crop_window(257, 256, 224).x, 16);
        assert_eq!(center_crop_window(259, 256, 224).x, 18);
        assert_eq!(center_crop_window(341, 256, 224).y, 16);
    }

    #[test]
    fn normalisation_by_hand() {
        let p = Preprocessor::new(PreprocessConfig {
            size: 1,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            ..PreprocessConfig::default()
        })
        .unwrap();
        let mut out = [0f32; 3];
        p.normalize_into(&[255, 0, 128], &mut out);
        assert!((out[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((out[1] - (0.0 - 0.456) / 0.224).abs() < 1e-5);
        assert!((out[2] - (128.0 / 255.0 - 0.406) / 0.225).abs() < 1e-5);
    }

    #[test]
    fn random_resized_crop_stays_inside_and_is_seeded() {
        use rand::SeedableRng;
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..100 {
            let w = random_resized_crop(64, 40, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut a);
            assert_eq!(
                w,
                random_resized_crop(64, 40, [0.08, 1.0], [0.75, 4.0 / 3.0], &mut b)
            );
            assert!(w.x + w.width <= 64 && w.y + w.height <= 40 && w.width > 0 && w.height > 0);
        }
    }

    #[test]
    fn flip_reverses_columns() {
        let rgb: Vec<u8> = (0..2 * 2 * 3).map(|v| v as u8).collect();
        let f = flip_horizontal(rgb, 2);
        assert_eq!(f, vec![3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8]);
    }

    #[test]
    fn bad_config_is_rejected() {
        let cfg = PreprocessConfig {
            std: [0.5, 0.0, 0.5],
            ..PreprocessConfig::default()
        };
        assert!(matches!(Preprocessor::new(cfg), Err(DataError::Config(_))));
    }
}

#[cfg(test)]
mod hf_tests {
    use super::*;

    #[test]
    fn hf_preprocessor_json_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("preprocessor_config.json");
        std::fs::write(
            &p,
            r#"{"do_normalize": true, "do_resize": true, "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225], "resample": 3, "rescale_factor": 0.00392156862745098,
                "size": {"height": 384, "width": 384}}"#,
        )
        .unwrap();
        let mut cfg = PreprocessConfig::default();
        cfg.apply_hf_preprocessor(&p).unwrap();
        assert_eq!(cfg.size, 384);
        assert_eq!(cfg.filter, ResampleFilter::Bicubic);
        assert_eq!(cfg.mean, [0.485, 0.456, 0.406]);
        assert_eq!(cfg.std, [0.229, 0.224, 0.225]);
        std::fs::write(&p, r#"{"resample": 1}"#).unwrap();
        let err = cfg.apply_hf_preprocessor(&p).unwrap_err().to_string();
        assert!(
            err.contains("preprocessor_config.json") && err.contains("resample = 1"),
            "{err}"
        );
        std::fs::write(&p, r#"{"size": {"height": 2, "width": 3}}"#).unwrap();
        assert!(cfg.apply_hf_preprocessor(&p).is_err());
    }
}
