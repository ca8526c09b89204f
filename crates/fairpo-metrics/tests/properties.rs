//! Hand-computed cases and properties that must hold for any input.

use fairpo_io::Matrix;
use fairpo_metrics::{
    average_precision, evaluate, MetricsAccumulator, MetricsConfig, MetricsError, SampleSet,
};
use proptest::prelude::*;

fn close(a: Option<f64>, b: f64) {
    let a = a.expect("metric defined");
    assert!((a - b).abs() < 1e-12, "got {a}, want {b}");
}

/// 4 samples x 3 labels; label 2 is privileged. Computed by hand in the comments.
fn small() -> (Matrix<f32>, Matrix<u8>) {
    (
        Matrix::new(
            4,
            3,
            vec![0.9, 0.2, 0.6, 0.8, 0.7, 0.1, 0.3, 0.4, 0.3, 0.1, 0.6, 0.4],
        ),
        Matrix::new(4, 3, vec![1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1, 0]),
    )
}

#[test]
fn hand_computed_every_metric() {
    let (s, y) = small();
    let r = evaluate(&s, &y, &[2], &MetricsConfig::default()).unwrap();
    // AP: labels 0 and 1 rank perfectly (1.0); label 2: .6(1) .4(0) .3(1) .1(0) -> 5/6.
    close(r.per_label_ap[2], 5.0 / 6.0);
    close(r.groups.all.map, (1.0 + 1.0 + 5.0 / 6.0) / 3.0);
    // Predictions (>= 0.5): rows 0, 1, 3 exact; row 2 predicts nothing but has label 2.
    close(r.groups.all.sample_f1, 3.0 / 4.0);
    close(r.groups.all.emr, 3.0 / 4.0);
    close(r.groups.all.accuracy, 1.0 - 1.0 / 12.0);
    close(r.groups.privileged.map, 5.0 / 6.0);
    close(r.groups.privileged.sample_f1, 1.0 / 4.0);
    close(r.groups.non_privileged.emr, 1.0);
    assert_eq!(r.groups.all.labels_scored, 3);
    assert_eq!(r.groups.privileged.samples_scored, 4);
}

#[test]
fn threshold_is_inclusive_and_compared_in_f32() {
    // 0.7f32 is 0.69999998807...; it still counts as >= 0.7, as in numpy and torch.
    let s = Matrix::new(2, 2, vec![0.7, 0.2, 0.5, 0.69]);
    let y = Matrix::new(2, 2, vec![1, 0, 1, 1]);
    let cfg = MetricsConfig {
        threshold: 0.7,
        ..Default::default()
    };
    let r = evaluate(&s, &y, &[], &cfg).unwrap();
    // Row 0 exact (F1 1); row 1 predicts nothing, has 2 positives (F1 0).
    close(r.groups.all.sample_f1, 0.5);
    close(r.groups.all.emr, 0.5);
    let cfg = MetricsConfig {
        threshold: 0.5,
        ..Default::default()
    };
    let r = evaluate(&s, &y, &[], &cfg).unwrap();
    // Row 1: 0.5 >= 0.5 predicted, 0.69 predicted: exact.
    close(r.groups.all.emr, 1.0);
}

#[test]
fn undefined_metrics_are_none() {
    // No label has a positive: mAP undefined, every label skipped.
    let s = Matrix::new(2, 2, vec![0.1, 0.9, 0.2, 0.3]);
    let y = Matrix::new(2, 2, vec![0, 0, 0, 0]);
    let r = evaluate(&s, &y, &[1], &MetricsConfig::default()).unwrap();
    assert_eq!(r.groups.all.map, None);
    assert_eq!(r.groups.all.labels_scored, 0);
    assert_eq!(r.details.groups.all.labels_without_positives, vec![0, 1]);
    // With samples = positive, no sample is scored.
    let cfg = MetricsConfig {
        samples: SampleSet::Positive,
        ..Default::default()
    };
    let r = evaluate(&s, &y, &[1], &cfg).unwrap();
    assert_eq!(r.groups.all.sample_f1, None);
    assert_eq!(r.groups.all.samples_scored, 0);
    let json = serde_json::to_value(&r.groups).unwrap();
    assert!(json["all"]["map"].is_null());
}

#[test]
fn per_batch_reproduces_released_averaging() {
    // Batches of 2 rows: batch A = rows 0-1, batch B = rows 2 (size 1).
    // Label 0: A: (.9,1) (.1,0) -> AP 1; B: (.4,0) -> no positive, skipped.
    // Label 1: A: (.2,1) (.8,0) -> AP 1/2; B: (.6,1) -> AP 1.
    // mAP: A = (1 + 1/2) / 2 = 3/4, B = 1; weighted: (2 * 3/4 + 1 * 1) / 3 = 5/6.
    let s = Matrix::new(3, 2, vec![0.9, 0.2, 0.1, 0.8, 0.4, 0.6]);
    let y = Matrix::new(3, 2, vec![1, 1, 0, 0, 0, 1]);
    let cfg = MetricsConfig {
        per_batch: Some(2),
        ..Default::default()
    };
    let r = evaluate(&s, &y, &[0], &cfg).unwrap();
    close(r.groups.all.map, 5.0 / 6.0);
    // Privileged {0}: batch A AP 1, batch B has no positive -> 0 (released code's rule).
    close(r.groups.privileged.map, 2.0 / 3.0);
    // Whole split for comparison: label 0 AP 1; label 1 (.8,0) (.6,1) (.2,1): 1/2*1/2 + 1/2*2/3 = 7/12.
    let whole = evaluate(&s, &y, &[0], &MetricsConfig::default()).unwrap();
    close(whole.groups.all.map, (1.0 + 7.0 / 12.0) / 2.0);
    close(r.per_label_ap[1], 7.0 / 12.0);
}

#[test]
fn input_errors() {
    let (s, y) = small();
    let cfg = MetricsConfig::default();
    let y2 = Matrix::new(4, 2, vec![0u8; 8]);
    assert!(matches!(
        evaluate(&s, &y2, &[], &cfg),
        Err(MetricsError::ShapeMismatch { .. })
    ));
    let mut nan = s.clone();
    nan.data[5] = f32::NAN;
    let e = evaluate(&nan, &y, &[], &cfg).unwrap_err().to_string();
    assert!(e.contains("row 1, column 2"), "{e}");
    let e = evaluate(&s, &y, &[3], &cfg).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
    let e = evaluate(&s, &y, &[1, 1], &cfg).unwrap_err().to_string();
    assert!(e.contains("more than once"), "{e}");
    let empty = Matrix::<f32>::new(0, 3, vec![]);
    let empty_y = Matrix::<u8>::new(0, 3, vec![]);
    assert!(matches!(
        evaluate(&empty, &empty_y, &[], &cfg),
        Err(MetricsError::Empty { .. })
    ));
    let mut acc = MetricsAccumulator::new(3);
    assert!(acc.push(&[0.1, 0.2], &[0, 1]).is_err());
    assert!(acc.is_empty());
}

/// Random (scores, targets) with ties: scores on a grid of `levels` values.
fn matrices(max_n: usize, max_t: usize) -> impl Strategy<Value = (Matrix<f32>, Matrix<u8>)> {
    (1..=max_n, 2..=max_t, 2u32..20).prop_flat_map(|(n, t, levels)| {
        (
            proptest::collection::vec(0..levels, n * t),
            proptest::collection::vec(proptest::bool::weighted(0.3), n * t),
        )
            .prop_map(move |(s, y)| {
                (
                    Matrix::new(
                        n,
                        t,
                        s.into_iter()
                            .map(|v| v as f32 / (levels - 1) as f32)
                            .collect(),
                    ),
                    Matrix::new(n, t, y.into_iter().map(u8::from).collect()),
                )
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn perfect_ranking_has_ap_one(n_pos in 1usize..30, n_neg in 0usize..30, seed in 0u64..1000) {
        // Positives strictly above negatives, arbitrary order of rows.
        let mut scores: Vec<f32> = (0..n_pos).map(|i| 0.6 + 0.3 * (i as f32 / 30.0)).collect();
        scores.extend((0..n_neg).map(|i| 0.1 + 0.4 * (i as f32 / 30.0)));
        let mut targets = vec![1u8; n_pos];
        targets.extend(vec![0u8; n_neg]);
        let k = (seed as usize) % scores.len();
        scores.rotate_left(k);
        targets.rotate_left(k);
        let ap = average_precision(&scores, &targets).unwrap();
        // Exactly 1 up to the rounding of summing n_pos terms of 1/n_pos.
        prop_assert!((ap - 1.0).abs() < 1e-12, "AP {}", ap);
    }

    #[test]
    fn ap_in_unit_interval_and_all_tied_gives_prevalence(
        (s, y) in matrices(40, 5),
    ) {
        for j in 0..s.cols {
            let col_s: Vec<f32> = (0..s.rows).map(|i| s.get(i, j)).collect();
            let col_y: Vec<u8> = (0..s.rows).map(|i| y.get(i, j)).collect();
            let pos = col_y.iter().filter(|&&v| v == 1).count();
            match average_precision(&col_s, &col_y) {
                None => prop_assert_eq!(pos, 0),
                Some(ap) => {
                    prop_assert!(ap > 0.0 && ap <= 1.0 + 1e-12);
                    let tied = vec![0.5f32; col_s.len()];
                    let prev = pos as f64 / col_s.len() as f64;
                    let ap_tied = average_precision(&tied, &col_y).unwrap();
                    prop_assert!((ap_tied - prev).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn permuting_samples_changes_nothing((s, y) in matrices(40, 6), seed in any::<u64>()) {
        let n = s.rows;
        let mut order: Vec<usize> = (0..n).collect();
        // A seeded Fisher-Yates shuffle.
        let mut state = seed | 1;
        for i in (1..n).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let cfg = MetricsConfig::default();
        let a = evaluate(&s, &y, &[0], &cfg).unwrap();
        let b = evaluate(&s.select_rows(&order), &y.select_rows(&order), &[0], &cfg).unwrap();
        for ((_, ga), (_, gb)) in a.groups.iter().into_iter().zip(b.groups.iter()) {
            for (x, z) in [(ga.map, gb.map), (ga.sample_f1, gb.sample_f1), (ga.emr, gb.emr), (ga.accuracy, gb.accuracy)] {
                match (x, z) {
                    (Some(x), Some(z)) => prop_assert!((x - z).abs() < 1e-12),
                    (x, z) => prop_assert_eq!(x, z),
                }
            }
        }
        prop_assert_eq!(a.per_label_ap, b.per_label_ap);
    }

    #[test]
    fn permuting_labels_permutes_per_label_ap((s, y) in matrices(30, 6), rot in 0usize..6) {
        let t = s.cols;
        let perm: Vec<usize> = (0..t).map(|j| (j + rot) % t).collect(); // new column j = old perm[j]
        let permute = |m: &Matrix<f32>| Matrix::new(m.rows, t, (0..m.rows).flat_map(|i| perm.iter().map(move |&j| (i, j))).map(|(i, j)| m.get(i, j)).collect());
        let permute_y = |m: &Matrix<u8>| Matrix::new(m.rows, t, (0..m.rows).flat_map(|i| perm.iter().map(move |&j| (i, j))).map(|(i, j)| m.get(i, j)).collect());
        let cfg = MetricsConfig::default();
        let a = evaluate(&s, &y, &[], &cfg).unwrap();
        let b = evaluate(&permute(&s), &permute_y(&y), &[], &cfg).unwrap();
        for (j, &old) in perm.iter().enumerate() {
            prop_assert_eq!(b.per_label_ap[j], a.per_label_ap[old]);
        }
        // Label order does not change the all-labels metrics.
        match (a.groups.all.map, b.groups.all.map) {
            (Some(x), Some(z)) => prop_assert!((x - z).abs() < 1e-12),
            (x, z) => prop_assert_eq!(x, z),
        }
        prop_assert_eq!(a.groups.all.emr, b.groups.all.emr);
    }

    #[test]
    fn groups_partition_the_labels((s, y) in matrices(30, 6), mask in proptest::collection::vec(any::<bool>(), 6)) {
        let t = s.cols;
        let privileged: Vec<usize> = (0..t).filter(|&j| mask[j]).collect();
        let r = evaluate(&s, &y, &privileged, &MetricsConfig::default()).unwrap();
        let g = &r.groups;
        prop_assert_eq!(g.all.labels_scored, g.privileged.labels_scored + g.non_privileged.labels_scored);
        // Accuracy of all labels is the label-count-weighted mean of the two groups' accuracies.
        let np = privileged.len() as f64;
        let acc = |v: Option<f64>| v.unwrap_or(0.0);
        let mixed = (np * acc(g.privileged.accuracy) + (t as f64 - np) * acc(g.non_privileged.accuracy)) / t as f64;
        prop_assert!((acc(g.all.accuracy) - mixed).abs() < 1e-12);
        // An exact match on all labels implies one on each group.
        if !privileged.is_empty() && privileged.len() < t {
            let (all, p, np) = (acc(g.all.emr), acc(g.privileged.emr), acc(g.non_privileged.emr));
            prop_assert!(all <= p + 1e-12 && all <= np + 1e-12);
        }
    }

    #[test]
    fn accumulator_equals_evaluate((s, y) in matrices(50, 5), cut in 0usize..50) {
        let t = s.cols;
        let cut = cut.min(s.rows);
        let mut acc = MetricsAccumulator::new(t);
        acc.push(&s.data[..cut * t], &y.data[..cut * t]).unwrap();
        acc.push(&s.data[cut * t..], &y.data[cut * t..]).unwrap();
        let cfg = MetricsConfig { per_batch: Some(3), ..Default::default() };
        prop_assert_eq!(acc.finish(&[1], &cfg).unwrap(), evaluate(&s, &y, &[1], &cfg).unwrap());
    }
}
