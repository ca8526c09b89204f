//! Seeded train/validation split of the training images.

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Splits `0..n` into (train, val): a seeded shuffle, the first `round(fraction·n)` indices become
/// validation. Both lists are returned in ascending order. The same (n, fraction, seed) always
/// gives the same split. `fraction` is clamped to [0, 1].
pub fn split_train_val(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let n_val = (fraction * n as f64).round() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    order.shuffle(&mut rng);
    let mut val = order[..n_val].to_vec();
    let mut train = order[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

/// The visiting order of `indices` for one epoch: shuffled with a generator seeded by
/// (seed, epoch) when `shuffle`, else as given.
pub fn epoch_order(indices: &[usize], shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order = indices.to_vec();
    if shuffle {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix(seed, epoch));
        order.shuffle(&mut rng);
    }
    order
}

/// SplitMix64-style mixing of two words into one seed.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b)
        .wrapping_add(0x6A09_E667_F3BC_C909);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_disjoint_and_complete() {
        let (t1, v1) = split_train_val(1000, 0.1, 42);
        let (t2, v2) = split_train_val(1000, 0.1, 42);
        assert_eq!((&t1, &v1), (&t2, &v2));
        assert_eq!(v1.len(), 100);
        assert_eq!(t1.len(), 900);
        let mut all: Vec<usize> = t1.iter().chain(&v1).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        let (_, v3) = split_train_val(1000, 0.1, 43);
        assert_ne!(v1, v3, "another seed gives another split");
        // Not simply the first or last 10%.
        assert!(v1.iter().any(|&i| i < 500) && v1.iter().any(|&i| i >= 500));
    }

    #[test]
    fn split_edge_fractions() {
        assert_eq!(split_train_val(5, 0.0, 1).1.len(), 0);
        assert_eq!(split_train_val(5, 1.0, 1).0.len(), 0);
        assert_eq!(split_train_val(0, 0.1, 1), (vec![], vec![]));
        assert_eq!(split_train_val(15, 0.1, 1).1.len(), 2); // round(1.5) = 2
    }

    #[test]
    fn epoch_orders_differ_per_epoch_and_repeat_per_seed() {
        let idx: Vec<usize> = (0..50).collect();
        let e0 = epoch_order(&idx, true, 7, 0);
        assert_eq!(e0, epoch_order(&idx, true, 7, 0));
        assert_ne!(e0, epoch_order(&idx, true, 7, 1));
        assert_ne!(e0, idx);
        let mut s = e0.clone();
        s.sort_unstable();
        assert_eq!(s, idx);
        assert_eq!(epoch_order(&idx, false, 7, 3), idx);
    }
}
