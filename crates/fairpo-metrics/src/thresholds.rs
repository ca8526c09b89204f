//! Per-label decision thresholds that maximise each label's F1 on held-out scores.

use fairpo_io::Matrix;

use crate::evaluate::MetricsError;

/// A label's chosen threshold and the F1 it reaches on the scores it was chosen on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChosenThreshold {
    /// Predict the label when its score is `>=` this (one of the label's scores).
    pub threshold: f64,
    /// `2·TP / (2·TP + FP + FN)` with that rule.
    pub f1: f64,
}

/// For every label, the score t that maximises the label's F1 when `score >= t` is predicted
/// positive; among thresholds with equal F1 the lowest (what `argmax` over scikit-learn's
/// `precision_recall_curve` picks). `None` for a label without a positive.
///
/// # Shapes
/// - scores, targets: `[N, T]`
pub fn best_f1_thresholds(
    scores: &Matrix<f32>,
    targets: &Matrix<u8>,
) -> Result<Vec<Option<ChosenThreshold>>, MetricsError> {
    if scores.shape() != targets.shape() {
        return Err(MetricsError::ShapeMismatch {
            scores: scores.shape(),
            targets: targets.shape(),
        });
    }
    let (n, t) = (scores.rows, scores.cols);
    Ok((0..t)
        .map(|j| {
            let mut column: Vec<(f32, bool)> = (0..n)
                .map(|i| (scores.data[i * t + j], targets.data[i * t + j] != 0))
                .collect();
            let positives = column.iter().filter(|c| c.1).count();
            if positives == 0 {
                return None;
            }
            // Highest score first; every sample at or above a score is predicted positive.
            column.sort_by(|a, b| b.0.total_cmp(&a.0));
            let (mut tp, mut fp, mut best): (usize, usize, Option<ChosenThreshold>) = (0, 0, None);
            let mut i = 0;
            while i < column.len() {
                let score = column[i].0;
                while i < column.len() && column[i].0 == score {
                    if column[i].1 {
                        tp += 1;
                    } else {
                        fp += 1;
                    }
                    i += 1;
                }
                let f1 = 2.0 * tp as f64 / (tp + fp + positives) as f64;
                // `>=`: a lower threshold with the same F1 wins.
                if best.is_none_or(|b| f1 >= b.f1) {
                    best = Some(ChosenThreshold {
                        threshold: f64::from(score),
                        f1,
                    });
                }
            }
            best
        })
        .collect())
}
