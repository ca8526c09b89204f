//! The label partition: which labels are privileged (the rare ones the method protects).
//!
//! A run writes it as `partition.json`:
//! `{"labels": [...], "frequencies": [...], "privileged": [...]}`, privileged
//! indices sorted ascending.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How the privileged set P is chosen from the training label frequencies.
///
/// In TOML: `privileged = { fraction = 0.2 }`, `{ count = 16 }` or `{ names = ["toaster", "hair drier"] }`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum PrivilegedSpec {
    /// The `ceil(fraction * T)` least frequent labels; `fraction` in [0, 1]. The paper uses 0.2.
    Fraction(f64),
    /// The `count` least frequent labels.
    Count(usize),
    /// Exactly these labels, by name.
    Names(Vec<String>),
}

impl Default for PrivilegedSpec {
    /// `Fraction(0.2)`: the paper's 20% least frequent labels.
    fn default() -> Self {
        PrivilegedSpec::Fraction(0.2)
    }
}

/// Why a partition could not be built, read or written.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// Reading or writing the file failed (the message names the file).
    #[error(transparent)]
    Io(#[from] fairpo_io::IoError),
    /// The file is not valid partition JSON.
    #[error("{}: invalid partition JSON: {error}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error (with line and column).
        error: serde_json::Error,
    },
    /// The file parsed but its content is inconsistent.
    #[error("{}: {problem}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: Box<PartitionError>,
    },
    /// `labels` and `frequencies` differ in length.
    #[error("{labels} label names but {frequencies} frequencies")]
    LengthMismatch {
        /// Number of names.
        labels: usize,
        /// Number of frequencies.
        frequencies: usize,
    },
    /// The fraction is not in [0, 1].
    #[error("privileged fraction {0} is not in [0, 1]")]
    BadFraction(f64),
    /// More privileged labels requested than exist.
    #[error("privileged count {count} exceeds the {num_labels} labels")]
    CountTooLarge {
        /// Requested count.
        count: usize,
        /// Number of labels.
        num_labels: usize,
    },
    /// A privileged name is not a label.
    #[error("privileged label {0:?} is not one of the label names")]
    UnknownName(String),
    /// A privileged index is `>= num_labels`.
    #[error("privileged index {index} out of range: there are {num_labels} labels (valid indices 0..={})", num_labels.saturating_sub(1))]
    IndexOutOfRange {
        /// The index.
        index: usize,
        /// Number of labels.
        num_labels: usize,
    },
    /// A privileged index or name appears twice.
    #[error("privileged label {0} is listed more than once")]
    Duplicate(String),
}

/// Label names, their training frequencies and the privileged indices (sorted ascending).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Label names in the dataset's fixed order.
    pub labels: Vec<String>,
    /// Number of training images carrying each label.
    pub frequencies: Vec<u64>,
    /// Indices of the privileged labels, sorted ascending, no repeats.
    pub privileged: Vec<usize>,
}

/// Checks privileged indices against the number of labels (in range, no repeats) and sorts them.
pub fn validate_privileged(
    indices: &[usize],
    num_labels: usize,
) -> Result<Vec<usize>, PartitionError> {
    let mut seen = vec![false; num_labels];
    for &i in indices {
        if i >= num_labels {
            return Err(PartitionError::IndexOutOfRange {
                index: i,
                num_labels,
            });
        }
        if seen[i] {
            return Err(PartitionError::Duplicate(i.to_string()));
        }
        seen[i] = true;
    }
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    Ok(sorted)
}

impl Partition {
    /// Chooses the privileged labels from training frequencies.
    ///
    /// `Fraction` and `Count` take the least frequent labels, ties broken by the lower label index.
    pub fn from_frequencies(
        labels: Vec<String>,
        frequencies: Vec<u64>,
        spec: &PrivilegedSpec,
    ) -> Result<Partition, PartitionError> {
        if labels.len() != frequencies.len() {
            return Err(PartitionError::LengthMismatch {
                labels: labels.len(),
                frequencies: frequencies.len(),
            });
        }
        let t = labels.len();
        let least_frequent = |count: usize| {
            let mut order: Vec<usize> = (0..t).collect();
            order.sort_by_key(|&i| (frequencies[i], i));
            let mut p = order[..count].to_vec();
            p.sort_unstable();
            p
        };
        let privileged = match spec {
            PrivilegedSpec::Fraction(f) => {
                if !(0.0..=1.0).contains(f) {
                    return Err(PartitionError::BadFraction(*f));
                }
                // The small slack keeps e.g. 0.2 * 80 = 16.000000000000004 from rounding up to 17.
                let count = ((f * t as f64) - 1e-9).ceil().max(0.0) as usize;
                least_frequent(count.min(t))
            }
            PrivilegedSpec::Count(c) => {
                if *c > t {
                    return Err(PartitionError::CountTooLarge {
                        count: *c,
                        num_labels: t,
                    });
                }
                least_frequent(*c)
            }
            PrivilegedSpec::Names(names) => {
                let mut idx = Vec::with_capacity(names.len());
                for n in names {
                    let i = labels
                        .iter()
                        .position(|l| l == n)
                        .ok_or_else(|| PartitionError::UnknownName(n.clone()))?;
                    if idx.contains(&i) {
                        return Err(PartitionError::Duplicate(format!("{n:?}")));
                    }
                    idx.push(i);
                }
                idx.sort_unstable();
                idx
            }
        };
        Ok(Partition {
            labels,
            frequencies,
            privileged,
        })
    }

    /// A partition with explicit privileged indices (checked and sorted).
    pub fn from_indices(
        labels: Vec<String>,
        frequencies: Vec<u64>,
        privileged: &[usize],
    ) -> Result<Partition, PartitionError> {
        if labels.len() != frequencies.len() {
            return Err(PartitionError::LengthMismatch {
                labels: labels.len(),
                frequencies: frequencies.len(),
            });
        }
        let privileged = validate_privileged(privileged, labels.len())?;
        Ok(Partition {
            labels,
            frequencies,
            privileged,
        })
    }

    /// Reads and checks a `partition.json`. Errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Partition, PartitionError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| fairpo_io::IoError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let raw: Partition = serde_json::from_str(&text).map_err(|error| PartitionError::Json {
            path: path.to_path_buf(),
            error,
        })?;
        Partition::from_indices(raw.labels, raw.frequencies, &raw.privileged).map_err(|e| {
            PartitionError::InFile {
                path: path.to_path_buf(),
                problem: Box::new(e),
            }
        })
    }

    /// Writes the partition as pretty JSON, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PartitionError> {
        Ok(fairpo_io::write_json_atomic(path, self)?)
    }

    /// Number of labels T.
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    /// `mask[t]` is true when label `t` is privileged.
    pub fn privileged_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.num_labels()];
        for &i in &self.privileged {
            mask[i] = true;
        }
        mask
    }

    /// Indices of the non-privileged labels, ascending.
    pub fn non_privileged(&self) -> Vec<usize> {
        let mask = self.privileged_mask();
        (0..self.num_labels()).filter(|&i| !mask[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("l{i}")).collect()
    }

    #[test]
    fn fraction_takes_least_frequent_with_index_tie_break() {
        // Frequencies: l3 and l1 tie at 1 -> both; l4 (2) and l0 (2) tie -> l0 wins by index.
        let freq = vec![2, 1, 9, 1, 2, 7, 8, 9, 9, 9];
        let p =
            Partition::from_frequencies(names(10), freq, &PrivilegedSpec::Fraction(0.3)).unwrap();
        assert_eq!(p.privileged, vec![0, 1, 3]);
        assert_eq!(p.non_privileged(), vec![2, 4, 5, 6, 7, 8, 9]);
        let mask = p.privileged_mask();
        assert!(mask[0] && mask[1] && mask[3] && !mask[4]);
    }

    #[test]
    fn paper_counts() {
        // ceil(0.2 * 80) = 16, ceil(0.2 * 81) = 17 (the privileged count rounds up).
        for (t, want) in [(80, 16), (81, 17), (5, 1), (1, 1)] {
            let p = Partition::from_frequencies(names(t), vec![3; t], &PrivilegedSpec::default())
                .unwrap();
            assert_eq!(p.privileged.len(), want, "T={t}");
            // All tied: the lowest indices win.
            assert_eq!(p.privileged, (0..want).collect::<Vec<_>>());
        }
        let p = Partition::from_frequencies(names(4), vec![1; 4], &PrivilegedSpec::Fraction(0.0))
            .unwrap();
        assert!(p.privileged.is_empty());
    }

    #[test]
    fn count_and_names() {
        let freq = vec![5, 4, 3, 2, 1];
        let p =
            Partition::from_frequencies(names(5), freq.clone(), &PrivilegedSpec::Count(2)).unwrap();
        assert_eq!(p.privileged, vec![3, 4]);
        let p = Partition::from_frequencies(
            names(5),
            freq.clone(),
            &PrivilegedSpec::Names(vec!["l2".into(), "l0".into()]),
        )
        .unwrap();
        assert_eq!(p.privileged, vec![0, 2]);
        let e = Partition::from_frequencies(
            names(5),
            freq.clone(),
            &PrivilegedSpec::Names(vec!["zebra".into()]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("zebra"), "{e}");
        let e = Partition::from_frequencies(names(5), freq.clone(), &PrivilegedSpec::Count(6))
            .unwrap_err();
        assert!(e.to_string().contains("exceeds"), "{e}");
        let e = Partition::from_frequencies(names(5), freq, &PrivilegedSpec::Fraction(1.5))
            .unwrap_err();
        assert!(e.to_string().contains("1.5"), "{e}");
    }

    #[test]
    fn validate_rejects_out_of_range_and_repeats() {
        assert_eq!(validate_privileged(&[3, 1], 4).unwrap(), vec![1, 3]);
        let e = validate_privileged(&[1, 4], 4).unwrap_err().to_string();
        assert!(
            e.contains("index 4 out of range") && e.contains("4 labels"),
            "{e}"
        );
        let e = validate_privileged(&[1, 2, 1], 4).unwrap_err().to_string();
        assert!(e.contains("more than once") && e.contains('1'), "{e}");
    }

    #[test]
    fn save_load_roundtrip_and_json_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partition.json");
        let p = Partition::from_frequencies(names(3), vec![3, 1, 2], &PrivilegedSpec::Count(1))
            .unwrap();
        p.save(&path).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"labels": ["l0", "l1", "l2"], "frequencies": [3, 1, 2], "privileged": [1]})
        );
        assert_eq!(Partition::load(&path).unwrap(), p);
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(
            &path,
            r#"{"labels": ["a"], "frequencies": [1], "privileged": [2]}"#,
        )
        .unwrap();
        let e = Partition::load(&path).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("out of range"), "{e}");
        std::fs::write(&path, r#"{"labels": ["a"], "frequencies": [1]"#).unwrap();
        let e = Partition::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("bad.json") && e.contains("invalid partition JSON"),
            "{e}"
        );
        let e = Partition::load(dir.path().join("none.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.json") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn spec_serde_forms() {
        let s: PrivilegedSpec = serde_json::from_str(r#"{"fraction": 0.2}"#).unwrap();
        assert_eq!(s, PrivilegedSpec::Fraction(0.2));
        let s: PrivilegedSpec = serde_json::from_str(r#"{"count": 16}"#).unwrap();
        assert_eq!(s, PrivilegedSpec::Count(16));
        let s: PrivilegedSpec = serde_json::from_str(r#"{"names": ["a"]}"#).unwrap();
        assert_eq!(s, PrivilegedSpec::Names(vec!["a".into()]));
    }
}
