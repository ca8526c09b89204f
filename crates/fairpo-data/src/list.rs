//! The generic layout: a CSV or TSV file of `path,label1;label2` rows plus a label-name file.
//!
//! The delimiter is a tab for `.tsv` files and a comma otherwise; fields may be quoted (CSV
//! rules). A first row whose first field is `path` (any case) is a header. Lines starting with
//! `#` are comments. Paths are relative to `image_root` unless absolute; backslashes become `/`.
//! An empty label field means an image with no label. Repeated labels on one row are merged and
//! counted in [`crate::LoadReport::duplicate_labels`].

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use crate::dataset::{read_label_names, Dataset, LoadOptions, RawSplit};
use crate::error::{DataError, Result};

/// Loads one list file.
pub fn load_list(
    list: &Path,
    labels_file: &Path,
    image_root: &Path,
    opts: &LoadOptions,
) -> Result<Dataset> {
    let start = Instant::now();
    let labels = read_label_names(labels_file, "label names, one per line")?;
    let t = labels.len();
    let column: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    if !list.is_file() {
        return Err(DataError::MissingFile {
            path: list.to_path_buf(),
            what: "image list (path,label;label)".into(),
        });
    }
    let delimiter = if list
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tsv"))
    {
        b'\t'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_path(list)
        .map_err(|e| DataError::Io {
            path: list.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
    let mut paths = Vec::new();
    let mut rows = Vec::new();
    let mut duplicate_labels = 0usize;
    for (k, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            DataError::parse(list, line, e.to_string())
        })?;
        let line = record.position().map_or(k + 1, |p| p.line() as usize);
        if k == 0
            && record
                .get(0)
                .is_some_and(|f| f.trim().eq_ignore_ascii_case("path"))
        {
            continue;
        }
        if record.len() == 1 && record[0].trim().is_empty() {
            continue;
        }
        if record.len() > 2 {
            return Err(DataError::parse(
                list,
                line,
                format!(
                    "expected `path{}label;label`, found {} fields",
                    delimiter as char,
                    record.len()
                ),
            ));
        }
        let path = record[0].trim();
        if path.is_empty() {
            return Err(DataError::parse(list, line, "empty image path"));
        }
        let mut row = vec![0u8; t];
        for name in record
            .get(1)
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let col = *column.get(name).ok_or_else(|| {
                DataError::parse(
                    list,
                    line,
                    format!("unknown label {name:?} (not in {})", labels_file.display()),
                )
            })?;
            duplicate_labels += usize::from(row[col] == 1);
            row[col] = 1;
        }
        paths.push(image_root.join(path.replace('\\', "/")));
        rows.extend_from_slice(&row);
    }
    RawSplit {
        split: list
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string(),
        labels,
        paths,
        rows,
        duplicate_labels,
        parse_seconds: start.elapsed().as_secs_f64(),
    }
    .finish(opts)
}
