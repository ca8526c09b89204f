//! Settings of a metrics computation.

use serde::{Deserialize, Serialize};

/// Which samples count for the sample-based metrics (sample F1, exact match, accuracy).
///
/// mAP is label-based and always uses every sample.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SampleSet {
    /// Every sample (scikit-learn semantics). A sample with no true and no predicted
    /// label in the group gets `zero_division` as its F1.
    #[default]
    All,
    /// Only samples with at least one positive label in the group; the count differs per group.
    Positive,
}

impl std::fmt::Display for SampleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SampleSet::All => "all",
            SampleSet::Positive => "positive",
        })
    }
}

impl std::str::FromStr for SampleSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(SampleSet::All),
            "positive" => Ok(SampleSet::Positive),
            other => Err(format!(
                "unknown sample set {other:?}; expected all or positive"
            )),
        }
    }
}

/// How metrics are computed. Every field has a default, so `{}` is a valid config.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// A label is predicted positive when its score is `>=` this threshold (default 0.5).
    ///
    /// `>=` is what the paper's released code does (`prob_scores >= threshold`). The
    /// comparison is made in f32, like that code's torch tensors and like numpy comparing
    /// an f32 array with a Python float, so a score stored as `0.7f32` counts as `>= 0.7`.
    pub threshold: f64,
    /// Which samples count for sample F1, exact match and accuracy (default `all`).
    pub samples: SampleSet,
    /// F1 of a sample with no true and no predicted label in the group (scikit-learn's
    /// `zero_division`; default 0, a value in [0, 1]).
    pub zero_division: f64,
    /// For comparison with the paper's released code only: `Some(n)` averages every metric
    /// over consecutive batches of `n` rows (each batch weighted by its size; a batch whose
    /// group has no label with a positive contributes mAP 0), as that code did with n = 32.
    /// This inflates mAP relative to the whole-split value; `None` (default) computes every
    /// metric over the whole split. Requires `samples = all`.
    pub per_batch: Option<usize>,
    /// Per-label thresholds: label j is predicted positive when its score is `>=`
    /// `label_thresholds[j]` (compared in f32, as `threshold`), instead of `threshold`.
    /// `None` (default): `threshold` for every label. One finite value per label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_thresholds: Option<Vec<f64>>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            samples: SampleSet::All,
            zero_division: 0.0,
            per_batch: None,
            label_thresholds: None,
        }
    }
}

impl MetricsConfig {
    /// Checks the settings; the message says which field is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !self.threshold.is_finite() {
            return Err(format!("threshold {} is not finite", self.threshold));
        }
        if let Some(i) = self
            .label_thresholds
            .iter()
            .flatten()
            .position(|t| !t.is_finite())
        {
            return Err(format!("label_thresholds[{i}] is not finite"));
        }
        if !(0.0..=1.0).contains(&self.zero_division) {
            return Err(format!(
                "zero_division {} is not in [0, 1]",
                self.zero_division
            ));
        }
        match self.per_batch {
            Some(0) => return Err("per_batch must be at least 1".into()),
            Some(_) if self.samples != SampleSet::All => {
                return Err(
                    "per_batch reproduces the released code, which scored all samples; \
                            use samples = all with it"
                        .into(),
                )
            }
            _ => {}
        }
        Ok(())
    }

    /// One line describing the settings, for reports.
    pub fn describe(&self) -> String {
        let averaging = match self.per_batch {
            None => "whole split".to_string(),
            Some(n) => format!(
                "per-batch average over batches of {n} rows (released-code comparison; inflates mAP)"
            ),
        };
        let samples = match self.samples {
            SampleSet::All => "all samples",
            SampleSet::Positive => "samples with a positive label in the group",
        };
        let threshold = match &self.label_thresholds {
            Some(t) => format!("score >= a threshold per label ({} labels)", t.len()),
            None => format!("score >= {}", self.threshold),
        };
        format!(
            "threshold: {threshold}; sample metrics over {samples}; zero_division {}; averaging: {averaging}",
            self.zero_division
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_serde() {
        let c: MetricsConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, MetricsConfig::default());
        assert_eq!(c.threshold, 0.5);
        let c: MetricsConfig =
            serde_json::from_str(r#"{"samples": "positive", "per_batch": null}"#).unwrap();
        assert_eq!(c.samples, SampleSet::Positive);
        assert!(serde_json::from_str::<MetricsConfig>(r#"{"treshold": 0.5}"#).is_err());
    }

    #[test]
    fn validation() {
        assert!(MetricsConfig::default().validate().is_ok());
        let bad = |c: MetricsConfig| c.validate().unwrap_err();
        assert!(bad(MetricsConfig {
            threshold: f64::NAN,
            ..Default::default()
        })
        .contains("threshold"));
        assert!(bad(MetricsConfig {
            zero_division: 2.0,
            ..Default::default()
        })
        .contains("zero_division"));
        assert!(bad(MetricsConfig {
            per_batch: Some(0),
            ..Default::default()
        })
        .contains("per_batch"));
        assert!(bad(MetricsConfig {
            per_batch: Some(32),
            samples: SampleSet::Positive,
            ..Default::default()
        })
        .contains("samples = all"));
        assert_eq!(
            "positive".parse::<SampleSet>().unwrap(),
            SampleSet::Positive
        );
        assert!("some".parse::<SampleSet>().is_err());
    }
}
