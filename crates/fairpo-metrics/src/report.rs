//! The result of a metrics computation and its human-readable table.
//!
//! Serialised, `groups` is exactly the `groups` object of `metrics.json`:
//! `{"groups": {"all": {...}, "privileged": {...}, "non_privileged": {...}}}` with keys
//! `map`, `sample_f1`, `emr`, `accuracy` (fractions in [0, 1], `null` when undefined),
//! `labels_scored`, `samples_scored`. `per_label_ap` and `details` are extra fields beside it.

use serde::{Deserialize, Serialize};

use crate::MetricsConfig;

/// The four metrics of one label group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GroupMetrics {
    /// Mean AP over the group's labels that have at least one positive; `None` if there is none.
    pub map: Option<f64>,
    /// Mean per-sample F1 over the scored samples; `None` if no sample is scored.
    pub sample_f1: Option<f64>,
    /// Fraction of scored samples whose predicted label vector, restricted to the group, is exact.
    pub emr: Option<f64>,
    /// Mean per-label accuracy over the group and the scored samples (1 - Hamming loss).
    pub accuracy: Option<f64>,
    /// Number of the group's labels that entered mAP (those with at least one positive).
    pub labels_scored: usize,
    /// Number of samples that entered the sample-based metrics.
    pub samples_scored: usize,
}

/// Metrics of the three label groups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GroupsReport {
    /// All labels.
    pub all: GroupMetrics,
    /// The privileged labels P.
    pub privileged: GroupMetrics,
    /// The other labels.
    pub non_privileged: GroupMetrics,
}

impl GroupsReport {
    /// `(name, metrics)` in the order all, privileged, non_privileged.
    pub fn iter(&self) -> [(&'static str, &GroupMetrics); 3] {
        [
            ("all", &self.all),
            ("privileged", &self.privileged),
            ("non_privileged", &self.non_privileged),
        ]
    }
}

/// Size of a group and which of its labels were skipped by mAP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GroupDetails {
    /// Number of labels in the group.
    pub labels: usize,
    /// Labels of the group without any positive sample (skipped by mAP), by index.
    pub labels_without_positives: Vec<usize>,
}

/// What was computed and how; kept beside `groups` so the latter stays the documented object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ReportDetails {
    /// Number of samples N.
    pub num_samples: usize,
    /// Number of labels T.
    pub num_labels: usize,
    /// The privileged label indices used, ascending.
    pub privileged: Vec<usize>,
    /// The settings used.
    pub settings: MetricsConfig,
    /// Per group: size and the labels skipped by mAP.
    pub groups: GroupsDetails,
}

/// [`GroupDetails`] of the three groups.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GroupsDetails {
    /// All labels.
    pub all: GroupDetails,
    /// The privileged labels P.
    pub privileged: GroupDetails,
    /// The other labels.
    pub non_privileged: GroupDetails,
}

/// Everything a metrics computation produces.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MetricsReport {
    /// The metrics per group (the documented JSON object).
    pub groups: GroupsReport,
    /// AP of each label over the whole split (`None` for labels without positives), even
    /// when `per_batch` averaging was used for `groups`.
    pub per_label_ap: Vec<Option<f64>>,
    /// Sizes, settings and skipped labels.
    pub details: ReportDetails,
}

impl MetricsReport {
    /// The group details in the order of [`GroupsReport::iter`].
    pub fn group_details(&self) -> [&GroupDetails; 3] {
        let g = &self.details.groups;
        [&g.all, &g.privileged, &g.non_privileged]
    }

    /// The object printed by `fairpo metrics --json`: `{"groups": {...}}`.
    pub fn groups_json(&self) -> serde_json::Value {
        serde_json::json!({ "groups": self.groups })
    }

    /// A small table, groups x metrics in percent, with the settings and skipped labels.
    pub fn to_table(&self) -> String {
        let pct = |v: Option<f64>| match v {
            Some(x) => format!("{:.2}", 100.0 * x),
            None => "n/a".to_string(),
        };
        let d = &self.details;
        let mut out = format!(
            "{} samples x {} labels ({} privileged)\n{}\n\n",
            d.num_samples,
            d.num_labels,
            d.privileged.len(),
            d.settings.describe()
        );
        out.push_str(&format!(
            "{:<15} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
            "group", "mAP %", "F1 %", "EMR %", "Acc %", "labels", "samples"
        ));
        for ((name, g), det) in self.groups.iter().into_iter().zip(self.group_details()) {
            out.push_str(&format!(
                "{:<15} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}\n",
                name,
                pct(g.map),
                pct(g.sample_f1),
                pct(g.emr),
                pct(g.accuracy),
                format!("{}/{}", g.labels_scored, det.labels),
                g.samples_scored
            ));
        }
        let skipped = &d.groups.all.labels_without_positives;
        if skipped.is_empty() {
            out.push_str("\nEvery label has at least one positive sample.\n");
        } else {
            out.push_str(&format!(
                "\n{} label(s) without positive samples skipped by mAP: {:?}\n",
                skipped.len(),
                skipped
            ));
        }
        out
    }
}
