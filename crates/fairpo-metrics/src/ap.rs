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

/// Keys use 33 bits: 32 of ordered score and the target bit.
const KEY_BITS: u32 = 33;
/// Radix digit width; three passes cover [`KEY_BITS`].
const DIGIT_BITS: u32 = 11;
const BUCKETS: usize = 1 << DIGIT_BITS;
const PASSES: usize = KEY_BITS.div_ceil(DIGIT_BITS) as usize;

/// Sorts [`key`]s ascending with an LSD radix sort (three 11-bit passes, a pass skipped when
/// every key has the same digit, as the high bits of probabilities often do). Several times
/// faster than a comparison sort at N = 40k; `buf` is scratch space.
pub(crate) fn radix_sort_keys(keys: &mut [u64], buf: &mut Vec<u64>) {
    let n = keys.len();
    if n < 64 {
        keys.sort_unstable();
        return;
    }
    let mut hist = vec![[0usize; BUCKETS]; PASSES];
    for &k in keys.iter() {
        for (p, h) in hist.iter_mut().enumerate() {
            h[((k >> (p as u32 * DIGIT_BITS)) as usize) & (BUCKETS - 1)] += 1;
        }
    }
    buf.clear();
    buf.resize(n, 0);
    let mut in_keys = true; // where the data currently is
    for (p, h) in hist.iter().enumerate() {
        if h.contains(&n) {
            continue; // one digit value for all keys: this pass would not move anything
        }
        let mut offset = [0usize; BUCKETS];
        let mut sum = 0;
        for (o, &c) in offset.iter_mut().zip(h.iter()) {
            *o = sum;
            sum += c;
        }
        let (src, dst): (&[u64], &mut [u64]) = if in_keys {
            (&*keys, &mut buf[..])
        } else {
            (&buf[..], &mut *keys)
        };
        let shift = p as u32 * DIGIT_BITS;
        for &k in src {
            let d = ((k >> shift) as usize) & (BUCKETS - 1);
            dst[offset[d]] = k;
            offset[d] += 1;
        }
        in_keys = !in_keys;
    }
    if !in_keys {
        keys.copy_from_slice(buf);
    }
}

/// AP from keys built with [`key`]; sorts `keys` in place. `None` when there is no positive.
pub(crate) fn average_precision_keys(keys: &mut [u64]) -> Option<f64> {
    let positives = keys.iter().filter(|&&k| k & 1 == 1).count();
    if positives == 0 {
        return None;
    }
    let mut buf = Vec::new();
    radix_sort_keys(keys, &mut buf);
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
    fn radix_sort_matches_std_sort() {
        // Pseudo-random keys over the whole 33-bit range and over a narrow one (skipped passes).
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (n, mask) in [(1000, (1u64 << 33) - 1), (5000, 0xFFF), (63, 0xFF), (64, 1)] {
            let keys: Vec<u64> = (0..n).map(|_| next() & mask).collect();
            let mut want = keys.clone();
            want.sort_unstable();
            let mut got = keys;
            radix_sort_keys(&mut got, &mut Vec::new());
            assert_eq!(got, want, "n={n} mask={mask:x}");
        }
        let mut probs: Vec<u64> = (0..3000)
            .map(|i| key((i % 101) as f32 / 100.0, (i % 3 == 0) as u8))
            .collect();
        let mut want = probs.clone();
        want.sort_unstable();
        radix_sort_keys(&mut probs, &mut Vec::new());
        assert_eq!(probs, want);
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
