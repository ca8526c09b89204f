//! Average precision of one label, exactly as scikit-learn's `average_precision_score`.
//!
//! scikit-learn sorts the scores in decreasing order, cuts at every *distinct* score
//! (tied scores form one threshold), and sums `(R_k - R_{k-1}) * P_k` over the
//! thresholds, where `P_k`, `R_k` are precision and recall when every sample with a
//! score `>=` the k-th threshold is predicted positive. No interpolation.
//!
//! Here each label's (score, target) pairs are packed into one `u64` key whose order
//! is the score order, sorted once (`O(N log N)`), and walked from the top in groups
//! of equal scores.

/// Maps an f32 to a u32 whose unsigned order is the float order (`-0.0` is folded into `+0.0`).
#[inline]
fn ordered_bits(x: f32) -> u32 {
    let x = if x == 0.0 { 0.0 } else { x };
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Sort key: the ordered score in the high bits, the 0/1 target in bit 0.
#[inline]
pub(crate) fn key(score: f32, target: u8) -> u64 {
    ((ordered_bits(score) as u64) << 1) | (target != 0) as u64
}

/// AP from keys built with [`key`]; sorts `keys` in place. `None` when there is no positive.
pub(crate) fn average_precision_keys(keys: &mut [u64]) -> Option<f64> {
    let positives = keys.iter().filter(|&&k| k & 1 == 1).count();
    if positives == 0 {
        return None;
    }
    keys.sort_unstable();
    let total = positives as f64;
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut ap = 0.0f64;
    // Walk from the highest score down, one group of tied scores at a time.
    let mut end = keys.len();
    while end > 0 {
        let score = keys[end - 1] >> 1;
        let mut start = end - 1;
        while start > 0 && keys[start - 1] >> 1 == score {
            start -= 1;
        }
        let group = &keys[start..end];
        let group_tp = group.iter().filter(|&&k| k & 1 == 1).count() as u64;
        tp += group_tp;
        fp += group.len() as u64 - group_tp;
        if group_tp > 0 {
            ap += (group_tp as f64 / total) * (tp as f64 / (tp + fp) as f64);
        }
        end = start;
    }
    Some(ap)
}

/// Average precision of one label (scikit-learn `average_precision_score` semantics).
///
/// `scores[i]` is the score of sample `i`, `targets[i]` its 0/1 truth (any non-zero
/// counts as 1). Returns `None` when no sample is positive, where AP is undefined.
/// Scores must not be NaN (use [`crate::evaluate`] for checked input).
///
/// # Panics
/// If the slices differ in length.
pub fn average_precision(scores: &[f32], targets: &[u8]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        targets.len(),
        "scores and targets differ in length"
    );
    let mut keys: Vec<u64> = scores
        .iter()
        .zip(targets)
        .map(|(&s, &y)| key(s, y))
        .collect();
    average_precision_keys(&mut keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_bits_is_monotone() {
        let xs = [
            -3.0f32,
            -1.0,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            0.5,
            1.0,
            7.0,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(ordered_bits(w[0]) <= ordered_bits(w[1]), "{w:?}");
        }
        assert_eq!(ordered_bits(-0.0), ordered_bits(0.0));
    }

    #[test]
    fn hand_computed_no_ties() {
        // Sorted by score: 0.9(1) 0.8(0) 0.7(1) 0.1(0); P = 2.
        // AP = 1/2 * 1/1 + 1/2 * 2/3 = 5/6.
        let ap = average_precision(&[0.1, 0.7, 0.9, 0.8], &[0, 1, 1, 0]).unwrap();
        assert!((ap - 5.0 / 6.0).abs() < 1e-15, "{ap}");
    }

    #[test]
    fn hand_computed_with_ties() {
        // Scores 0.8 (1), 0.5 x3 (1, 0, 0), 0.2 (1); P = 3.
        // Threshold 0.8: tp 1, fp 0 -> P=1, dR=1/3. Threshold 0.5: tp 2, fp 2 -> P=1/2, dR=1/3.
        // Threshold 0.2: tp 3, fp 2 -> P=3/5, dR=1/3. AP = (1 + 1/2 + 3/5) / 3 = 0.7.
        let ap = average_precision(&[0.5, 0.8, 0.5, 0.2, 0.5], &[0, 1, 1, 1, 0]).unwrap();
        assert!((ap - 0.7).abs() < 1e-15, "{ap}");
    }

    #[test]
    fn all_tied_gives_prevalence() {
        let ap = average_precision(&[0.3; 5], &[1, 0, 0, 1, 0]).unwrap();
        assert!((ap - 0.4).abs() < 1e-15, "{ap}");
    }

    #[test]
    fn no_positive_is_none_and_all_positive_is_one() {
        assert_eq!(average_precision(&[0.1, 0.9], &[0, 0]), None);
        assert_eq!(average_precision(&[0.1, 0.9], &[1, 1]), Some(1.0));
    }
}
