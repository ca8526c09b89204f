//! Per-label thresholds against scikit-learn (fixture by scripts/fixtures/thresholds_sklearn.py):
//! the F1-maximising threshold of every label, and the sample metrics with those thresholds.

use fairpo_io::Matrix;
use fairpo_metrics::{best_f1_thresholds, evaluate, MetricsConfig};
use serde_json::Value;

fn fixture() -> (Value, Matrix<f32>, Matrix<u8>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/thresholds.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rows = |key: &str| -> Vec<Vec<f64>> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let (s, y) = (rows("scores"), rows("targets"));
    let (n, t) = (s.len(), s[0].len());
    let scores = Matrix {
        rows: n,
        cols: t,
        data: s.iter().flatten().map(|&x| x as f32).collect(),
    };
    let targets = Matrix {
        rows: n,
        cols: t,
        data: y.iter().flatten().map(|&x| x as u8).collect(),
    };
    (v, scores, targets)
}

#[test]
fn f1_thresholds_match_scikit_learn() {
    let (v, scores, targets) = fixture();
    let got = best_f1_thresholds(&scores, &targets).unwrap();
    let want = v["chosen"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (j, (g, w)) in got.iter().zip(want).enumerate() {
        match (g, w.is_null()) {
            (None, true) => {}
            (Some(g), false) => {
                assert_eq!(g.threshold, w["threshold"].as_f64().unwrap(), "label {j}");
                assert!(
                    (g.f1 - w["f1"].as_f64().unwrap()).abs() < 1e-12,
                    "label {j}"
                );
            }
            _ => panic!("label {j}: got {g:?}, want {w}"),
        }
    }
}

#[test]
fn label_thresholds_drive_the_sample_metrics() {
    let (v, scores, targets) = fixture();
    let thresholds: Vec<f64> = best_f1_thresholds(&scores, &targets)
        .unwrap()
        .iter()
        .map(|c| c.map_or(0.5, |c| c.threshold))
        .collect();
    let cfg = MetricsConfig {
        label_thresholds: Some(thresholds),
        ..Default::default()
    };
    let all = evaluate(&scores, &targets, &[0], &cfg).unwrap().groups.all;
    let want = &v["with_chosen"];
    for (name, got) in [
        ("sample_f1", all.sample_f1),
        ("emr", all.emr),
        ("accuracy", all.accuracy),
    ] {
        let w = want[name].as_f64().unwrap();
        assert!((got.unwrap() - w).abs() < 1e-12, "{name}: {got:?} vs {w}");
    }
    // A wrong count is an error naming the field.
    let bad = MetricsConfig {
        label_thresholds: Some(vec![0.5; 2]),
        ..Default::default()
    };
    let err = evaluate(&scores, &targets, &[0], &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("label_thresholds"), "{err}");
}
