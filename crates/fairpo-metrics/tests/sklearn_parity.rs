//! Parity with scikit-learn on committed fixtures (`scripts/fixtures/metrics_sklearn.py`).
//!
//! Tolerance 1e-9: both sides compute in f64 from the same f32 scores; the only differences
//! are summation order (numpy pairwise vs sequential), i.e. ~1e-15.

use std::path::PathBuf;

use fairpo_metrics::{evaluate, GroupMetrics, MetricsConfig, SampleSet};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn close(got: Option<f64>, want: &Value, what: &str) {
    match (got, want.as_f64()) {
        (None, None) => assert!(want.is_null(), "{what}: expected {want}, got None"),
        (Some(g), Some(w)) => assert!((g - w).abs() <= TOL, "{what}: got {g}, sklearn {w}"),
        (g, _) => panic!("{what}: got {g:?}, sklearn {want}"),
    }
}

fn check_group(got: &GroupMetrics, want: &Value, what: &str) {
    close(got.map, &want["map"], &format!("{what} map"));
    close(
        got.sample_f1,
        &want["sample_f1"],
        &format!("{what} sample_f1"),
    );
    close(got.emr, &want["emr"], &format!("{what} emr"));
    close(got.accuracy, &want["accuracy"], &format!("{what} accuracy"));
    assert_eq!(
        got.labels_scored as u64,
        want["labels_scored"].as_u64().unwrap(),
        "{what} labels_scored"
    );
    assert_eq!(
        got.samples_scored as u64,
        want["samples_scored"].as_u64().unwrap(),
        "{what} samples_scored"
    );
}

fn config(s: &Value) -> MetricsConfig {
    MetricsConfig {
        threshold: s["threshold"].as_f64().unwrap(),
        samples: s["samples"].as_str().unwrap().parse::<SampleSet>().unwrap(),
        zero_division: s["zero_division"].as_f64().unwrap(),
        per_batch: s["per_batch"].as_u64().map(|b| b as usize),
        label_thresholds: None,
    }
}

#[test]
fn matches_sklearn_on_every_fixture_and_setting() {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let mut runs_checked = 0;
    for case in expected["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        // Read through fairpo-io: also covers numpy-written f32/f64 scores and u8/bool/i64 targets.
        let scores =
            fairpo_io::read_npy_scores(fixtures().join(case["scores"].as_str().unwrap())).unwrap();
        let targets =
            fairpo_io::read_npy_targets(fixtures().join(case["targets"].as_str().unwrap()))
                .unwrap();
        let privileged: Vec<usize> = case["privileged"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        for run in case["runs"].as_array().unwrap() {
            let cfg = config(&run["settings"]);
            let what = format!("{name} {:?}", cfg);
            let report = evaluate(&scores, &targets, &privileged, &cfg).unwrap();
            for (group, got) in report.groups.iter() {
                check_group(got, &run["groups"][group], &format!("{what} {group}"));
            }
            let want_ap = run["per_label_ap"].as_array().unwrap();
            assert_eq!(report.per_label_ap.len(), want_ap.len());
            for (j, (g, w)) in report.per_label_ap.iter().zip(want_ap).enumerate() {
                close(*g, w, &format!("{what} AP of label {j}"));
            }
            runs_checked += 1;
        }
    }
    assert_eq!(runs_checked, 21, "3 cases x 7 settings");
}

#[test]
fn streaming_accumulator_matches_whole_matrix() {
    let scores = fairpo_io::read_npy_scores(fixtures().join("ties_scores.npy")).unwrap();
    let targets = fairpo_io::read_npy_targets(fixtures().join("ties_targets.npy")).unwrap();
    let cfg = MetricsConfig::default();
    let whole = evaluate(&scores, &targets, &[1, 5, 9, 10], &cfg).unwrap();
    let mut acc = fairpo_metrics::MetricsAccumulator::new(scores.cols);
    // Uneven batches, as a data loader's last batch would be.
    let t = scores.cols;
    let mut start = 0;
    for b in [32usize, 32, 100, 1, 135] {
        let r = start..start + b;
        acc.push(
            &scores.data[r.start * t..r.end * t],
            &targets.data[r.start * t..r.end * t],
        )
        .unwrap();
        start += b;
    }
    assert_eq!(acc.len(), scores.rows);
    let streamed = acc.finish(&[10, 9, 5, 1], &cfg).unwrap();
    assert_eq!(streamed, whole);
}
