//! NUS-WIDE: the official per-concept label files and the combined layout.
//!
//! Official layout under a root:
//! `ImageList/{TrainImagelist,TestImagelist}.txt` (Windows backslash paths relative to the image
//! folder, `Flickr/` by default), `Concepts81.txt` (label order),
//! `Groundtruth/TrainTestLabels/Labels_<concept>_{Train,Test}.txt` (one 0/1 per line, aligned with
//! the image list). The combined layout replaces the per-concept files with one
//! `Labels_{Train,Test}.txt` whose lines hold T space-separated 0/1 values (looked up in
//! `Groundtruth/` and then in the root).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::dataset::{read_label_names, read_text, require_dir, Dataset, LoadOptions, RawSplit};
use crate::error::{DataError, Result};

/// NUS-WIDE split names as they appear in file names.
fn split_word(split: &str) -> Result<&'static str> {
    match split.to_ascii_lowercase().as_str() {
        "train" => Ok("Train"),
        "test" => Ok("Test"),
        other => Err(DataError::Config(format!(
            "NUS-WIDE split must be \"Train\" or \"Test\", got {other:?}"
        ))),
    }
}

/// Reads the image list, converting backslashes to `/`, joined to `image_dir`.
fn read_image_list(root: &Path, split: &str, image_dir: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let word = split_word(split)?;
    require_dir(&root.join("ImageList"), "NUS-WIDE image lists")?;
    let list = root.join("ImageList").join(format!("{word}Imagelist.txt"));
    let text = read_text(&list, "NUS-WIDE image list")?;
    let paths = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| image_dir.join(l.replace('\\', "/")))
        .collect();
    Ok((list, paths))
}

/// Parses one 0/1 token.
fn bit(token: &str, path: &Path, line: usize) -> Result<u8> {
    match token {
        "0" => Ok(0),
        "1" => Ok(1),
        other => Err(DataError::parse(
            path,
            line,
            format!("expected 0 or 1, found {other:?}"),
        )),
    }
}

/// What a layout's label reader needs to know about the split it reads.
struct SplitInfo<'a> {
    /// "Train" or "Test", as in file names.
    word: &'static str,
    /// Concept names in label order (T of them).
    labels: &'a [String],
    /// The image list the labels must align with.
    list: &'a Path,
    /// Number of images in the list.
    n: usize,
}

impl SplitInfo<'_> {
    /// The error for a label file whose line count differs from the image list's.
    fn count_mismatch(&self, file: PathBuf, lines: usize) -> DataError {
        DataError::Inconsistent {
            path: file,
            message: format!(
                "{lines} label lines but the image list {} has {} images",
                self.list.display(),
                self.n
            ),
        }
    }
}

/// Loads a split of either layout: reads the concept list and the image list, then the
/// labels with `read_rows` (n·T row-major 0/1 values).
fn load_split(
    root: &Path,
    split: &str,
    image_dir: &Path,
    opts: &LoadOptions,
    read_rows: fn(&Path, &SplitInfo) -> Result<Vec<u8>>,
) -> Result<Dataset> {
    let start = Instant::now();
    require_dir(root, "NUS-WIDE root")?;
    let word = split_word(split)?;
    let labels = read_label_names(&root.join("Concepts81.txt"), "NUS-WIDE concept list")?;
    let (list, paths) = read_image_list(root, split, image_dir)?;
    let info = SplitInfo {
        word,
        labels: &labels,
        list: &list,
        n: paths.len(),
    };
    let rows = read_rows(root, &info)?;
    RawSplit {
        split: word.to_string(),
        labels,
        paths,
        rows,
        duplicate_labels: 0,
        parse_seconds: start.elapsed().as_secs_f64(),
    }
    .finish(opts)
}

/// Loads a split of the official layout (`split` = "Train" or "Test").
pub fn load_official(
    root: &Path,
    split: &str,
    image_dir: &Path,
    opts: &LoadOptions,
) -> Result<Dataset> {
    load_split(root, split, image_dir, opts, read_official_rows)
}

/// Reads `Groundtruth/TrainTestLabels/Labels_<concept>_<word>.txt`, one file per concept.
fn read_official_rows(root: &Path, info: &SplitInfo) -> Result<Vec<u8>> {
    let (n, t) = (info.n, info.labels.len());
    let gt_dir = root.join("Groundtruth").join("TrainTestLabels");
    require_dir(&gt_dir, "NUS-WIDE per-concept label files")?;
    let mut rows = vec![0u8; n * t];
    for (c, concept) in info.labels.iter().enumerate() {
        let file = gt_dir.join(format!("Labels_{concept}_{}.txt", info.word));
        let text = read_text(&file, &format!("labels of concept {concept:?}"))?;
        let values: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty())
            .collect();
        if values.len() != n {
            return Err(info.count_mismatch(file, values.len()));
        }
        for (row, (line, token)) in values.into_iter().enumerate() {
            rows[row * t + c] = bit(token, &file, line)?;
        }
    }
    Ok(rows)
}

/// Loads a split of the combined layout (`Labels_{Train,Test}.txt`, T values per line).
pub fn load_combined(
    root: &Path,
    split: &str,
    image_dir: &Path,
    opts: &LoadOptions,
) -> Result<Dataset> {
    load_split(root, split, image_dir, opts, read_combined_rows)
}

/// Reads `Labels_<word>.txt` (in `Groundtruth/`, else in the root), T values per line.
fn read_combined_rows(root: &Path, info: &SplitInfo) -> Result<Vec<u8>> {
    let (n, t) = (info.n, info.labels.len());
    let name = format!("Labels_{}.txt", info.word);
    let candidates = [root.join("Groundtruth").join(&name), root.join(&name)];
    let file = candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| DataError::MissingFile {
            path: candidates[0].clone(),
            what: format!(
                "combined NUS-WIDE labels (also looked for {})",
                candidates[1].display()
            ),
        })?;
    let text = read_text(&file, "combined NUS-WIDE labels")?;
    let mut rows = Vec::with_capacity(n * t);
    let mut count = 0usize;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.len() != t {
            return Err(DataError::parse(
                &file,
                i + 1,
                format!(
                    "expected {t} values (one per concept), found {}",
                    tokens.len()
                ),
            ));
        }
        for token in tokens {
            rows.push(bit(token, &file, i + 1)?);
        }
        count += 1;
    }
    if count != n {
        return Err(info.count_mismatch(file, count));
    }
    Ok(rows)
}
