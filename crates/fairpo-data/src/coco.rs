//! COCO 2014: the official instances JSON and the YOLO-style layout of the paper's released code.
//!
//! Labels are the categories in ascending category id (80 of ids 1..90 for COCO; the ids have
//! gaps). An image's labels are the categories of its annotations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;

use crate::dataset::{read_label_names, require_dir, Dataset, LoadOptions, RawSplit};
use crate::error::{DataError, Result};

/// Only the fields the loader needs; serde skips the rest (segmentations, captions, licences)
/// without allocating them.
#[derive(Deserialize)]
struct InstancesFile {
    images: Vec<ImageEntry>,
    annotations: Vec<AnnotationEntry>,
    categories: Vec<CategoryEntry>,
}

#[derive(Deserialize)]
struct ImageEntry {
    id: u64,
    file_name: String,
}

#[derive(Deserialize)]
struct AnnotationEntry {
    image_id: u64,
    category_id: u64,
}

#[derive(Deserialize)]
struct CategoryEntry {
    id: u64,
    name: String,
}

/// Loads one split of the official layout: `annotations` is e.g.
/// `<root>/annotations/instances_train2014.json`, `image_dir` e.g. `<root>/train2014`.
///
/// The JSON is read once into memory and deserialised into just the fields above, so the 450 MB
/// train file is held once (plus small per-image records); the time taken is logged and kept in
/// [`crate::LoadReport::parse_seconds`].
pub fn load_instances(annotations: &Path, image_dir: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let start = Instant::now();
    if !annotations.is_file() {
        return Err(DataError::MissingFile {
            path: annotations.to_path_buf(),
            what: "COCO instances annotation JSON".into(),
        });
    }
    require_dir(image_dir, "COCO image folder")?;
    let bytes = std::fs::read(annotations).map_err(|e| DataError::io(annotations, e))?;
    let file: InstancesFile = serde_json::from_slice(&bytes).map_err(|e| DataError::Json {
        path: annotations.to_path_buf(),
        message: e.to_string(),
    })?;
    drop(bytes);

    let mut categories = file.categories;
    categories.sort_by_key(|c| c.id);
    if let Some(w) = categories.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(DataError::Inconsistent {
            path: annotations.to_path_buf(),
            message: format!("category id {} is defined twice", w[0].id),
        });
    }
    if categories.is_empty() {
        return Err(DataError::Inconsistent {
            path: annotations.to_path_buf(),
            message: "no categories".into(),
        });
    }
    let column: HashMap<u64, usize> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, i))
        .collect();
    let t = categories.len();

    let mut row_of: HashMap<u64, usize> = HashMap::with_capacity(file.images.len());
    let mut paths = Vec::with_capacity(file.images.len());
    for (i, img) in file.images.iter().enumerate() {
        if row_of.insert(img.id, i).is_some() {
            return Err(DataError::Inconsistent {
                path: annotations.to_path_buf(),
                message: format!("image id {} is listed twice", img.id),
            });
        }
        paths.push(image_dir.join(&img.file_name));
    }
    let mut rows = vec![0u8; paths.len() * t];
    let mut duplicate_labels = 0usize;
    for (k, ann) in file.annotations.iter().enumerate() {
        let col = *column
            .get(&ann.category_id)
            .ok_or_else(|| DataError::Inconsistent {
                path: annotations.to_path_buf(),
                message: format!(
                "annotation #{k} (image {}) has unknown category_id {}; the file defines ids {:?}",
                ann.image_id,
                ann.category_id,
                categories.iter().map(|c| c.id).collect::<Vec<_>>()
            ),
            })?;
        let row = *row_of
            .get(&ann.image_id)
            .ok_or_else(|| DataError::Inconsistent {
                path: annotations.to_path_buf(),
                message: format!(
                    "annotation #{k} refers to unknown image_id {}",
                    ann.image_id
                ),
            })?;
        let cell = &mut rows[row * t + col];
        duplicate_labels += usize::from(*cell == 1);
        *cell = 1;
    }
    let split = annotations
        .file_stem()
        .and_then(|s| s.to_str())
        .map(|s| s.trim_start_matches("instances_").to_string())
        .unwrap_or_default();
    tracing::info!(
        file = %annotations.display(),
        images = paths.len(),
        annotations = file.annotations.len(),
        "parsed COCO annotations in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    RawSplit {
        split,
        labels: categories.into_iter().map(|c| c.name).collect(),
        paths,
        rows,
        duplicate_labels,
        parse_seconds: start.elapsed().as_secs_f64(),
    }
    .finish(opts)
}

/// Image file extensions the YOLO layout lists.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Loads the YOLO-style layout: `<root>/images/<split>/*.jpg`, `<root>/labels/<split>/<stem>.txt`
/// (one `class cx cy w h` per line, class = 0-based index into `names`). An image without a
/// label file has no label. Images are listed in file-name order.
pub fn load_yolo(root: &Path, split: &str, names: &Path, opts: &LoadOptions) -> Result<Dataset> {
    let start = Instant::now();
    let labels = read_label_names(names, "COCO class names, one per line")?;
    let t = labels.len();
    let image_dir = root.join("images").join(split);
    let label_dir = root.join("labels").join(split);
    require_dir(&image_dir, "YOLO-layout images")?;
    require_dir(&label_dir, "YOLO-layout label files")?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&image_dir)
        .map_err(|e| DataError::io(&image_dir, e))?
        .map(|entry| {
            entry
                .map(|e| e.path())
                .map_err(|e| DataError::io(&image_dir, e))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    paths.sort();
    let mut rows = vec![0u8; paths.len() * t];
    let mut duplicate_labels = 0usize;
    for (i, path) in paths.iter().enumerate() {
        let stem = path.file_stem().unwrap_or_default();
        let label_file = label_dir.join(stem).with_extension("txt");
        if !label_file.is_file() {
            continue;
        }
        let text =
            std::fs::read_to_string(&label_file).map_err(|e| DataError::io(&label_file, e))?;
        for (ln, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() != 5 {
                return Err(DataError::parse(
                    &label_file,
                    ln + 1,
                    format!(
                        "expected `class cx cy w h` (5 fields), found {} field(s)",
                        fields.len()
                    ),
                ));
            }
            let class: usize = fields[0].parse().map_err(|_| {
                DataError::parse(
                    &label_file,
                    ln + 1,
                    format!("class {:?} is not a non-negative integer", fields[0]),
                )
            })?;
            if class >= t {
                return Err(DataError::parse(
                    &label_file,
                    ln + 1,
                    format!(
                        "class {class} out of range: {} lists {t} names",
                        names.display()
                    ),
                ));
            }
            for f in &fields[1..] {
                if f.parse::<f64>().is_err() {
                    return Err(DataError::parse(
                        &label_file,
                        ln + 1,
                        format!("box coordinate {f:?} is not a number"),
                    ));
                }
            }
            let cell = &mut rows[i * t + class];
            duplicate_labels += usize::from(*cell == 1);
            *cell = 1;
        }
    }
    RawSplit {
        split: split.to_string(),
        labels,
        paths,
        rows,
        duplicate_labels,
        parse_seconds: start.elapsed().as_secs_f64(),
    }
    .finish(opts)
}
