//! Label statistics and the privileged/non-privileged partition.

use fairpo_metrics::partition::{Partition, PrivilegedSpec};
use serde::Serialize;

use crate::dataset::Dataset;
use crate::error::{DataError, Result};

/// Builds the partition from a dataset's label frequencies (images per label).
pub fn partition(dataset: &Dataset, spec: &PrivilegedSpec) -> Result<Partition> {
    Partition::from_frequencies(dataset.labels.clone(), dataset.label_counts(), spec)
        .map_err(|e| DataError::Partition(e.to_string()))
}

/// What `fairpo data stats --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LabelStats {
    /// Label names in order.
    pub labels: Vec<String>,
    /// Images per label.
    pub counts: Vec<u64>,
    /// Images in the split.
    pub num_images: usize,
    /// Privileged label indices, ascending.
    pub privileged: Vec<usize>,
}

impl LabelStats {
    /// Counts and partition of a dataset.
    pub fn of(dataset: &Dataset, spec: &PrivilegedSpec) -> Result<Self> {
        let p = partition(dataset, spec)?;
        Ok(LabelStats {
            labels: dataset.labels.clone(),
            counts: dataset.label_counts(),
            num_images: dataset.len(),
            privileged: p.privileged,
        })
    }

    /// A text table: one line per label, most frequent first, with a bar proportional to the
    /// count and a `*` marking privileged labels.
    pub fn histogram(&self, width: usize) -> String {
        let max = self.counts.iter().copied().max().unwrap_or(0).max(1);
        let name_w = self
            .labels
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut order: Vec<usize> = (0..self.labels.len()).collect();
        order.sort_by(|&a, &b| self.counts[b].cmp(&self.counts[a]).then(a.cmp(&b)));
        let mut out = String::new();
        out.push_str(&format!(
            "{:>4}  {:<name_w$}  {:>8}  {:>6}  histogram (* = privileged)\n",
            "idx", "label", "images", "%"
        ));
        for i in order {
            let c = self.counts[i];
            let bar = ((c as f64 / max as f64) * width as f64).round() as usize;
            let pct = if self.num_images > 0 {
                100.0 * c as f64 / self.num_images as f64
            } else {
                0.0
            };
            let mark = if self.privileged.contains(&i) {
                '*'
            } else {
                ' '
            };
            out.push_str(&format!(
                "{i:>4}{mark} {:<name_w$}  {c:>8}  {pct:>6.2}  {}\n",
                self.labels[i],
                "#".repeat(bar)
            ));
        }
        out
    }
}

/// `PrivilegedSpec::Fraction(f)`, for callers that do not depend on fairpo-metrics.
pub fn privileged_fraction(f: f64) -> PrivilegedSpec {
    PrivilegedSpec::Fraction(f)
}

/// `PrivilegedSpec::Count(c)`.
pub fn privileged_count(c: usize) -> PrivilegedSpec {
    PrivilegedSpec::Count(c)
}
