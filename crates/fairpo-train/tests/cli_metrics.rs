//! `fairpo metrics` end to end: results on a hand-computed case, and a one-line error
//! with a non-zero exit for every kind of bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use fairpo_io::Matrix;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fairpo");

/// A .npy file built by hand, like numpy writes it (to make dtypes fairpo-io never writes).
fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    fairpo_io::npy_bytes(descr, false, shape, data)
}

/// The hand-computed case (see `hand_computed_case` below for the expected values).
fn scores() -> Matrix<f32> {
    Matrix::new(
        4,
        3,
        vec![
            0.9, 0.2, 0.6, //
            0.8, 0.7, 0.1, //
            0.3, 0.4, 0.3, //
            0.1, 0.6, 0.4,
        ],
    )
}

fn targets() -> Matrix<u8> {
    Matrix::new(4, 3, vec![1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1, 0])
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        fairpo_io::write_npy_f32(f.path("S.npy"), &scores()).unwrap();
        fairpo_io::write_npy_u8(f.path("Y.npy"), &targets()).unwrap();
        f
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn scores_with(&self, name: &str, f: impl FnOnce(&mut Vec<f32>)) -> PathBuf {
        let mut s = scores();
        f(&mut s.data);
        let p = self.path(name);
        fairpo_io::write_npy_f32(&p, &s).unwrap();
        p
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("metrics")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Runs with the given scores/targets files and extra args, expecting a one-line error
/// that contains every `needles` entry.
fn expect_error(scores: &Path, targets: &Path, extra: &[&str], needles: &[&str]) {
    let mut args = vec!["--scores", p(scores), "--targets", p(targets)];
    args.extend_from_slice(extra);
    if !extra
        .iter()
        .any(|a| a.starts_with("--privileged") || *a == "--partition")
    {
        args.extend_from_slice(&["--privileged", "2"]);
    }
    let (code, stdout, stderr) = run(&args);
    assert_ne!(code, 0, "expected failure for {args:?}; stdout: {stdout}");
    assert!(stdout.is_empty(), "nothing on stdout on error: {stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one-line error expected, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "error {stderr:?} should mention {n:?}");
    }
}

fn json(args: &[&str]) -> Value {
    let (code, stdout, stderr) = run(args);
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

fn assert_group(v: &Value, want: [f64; 4], labels: u64, samples: u64) {
    for (k, w) in ["map", "sample_f1", "emr", "accuracy"].iter().zip(want) {
        let got = v[k].as_f64().unwrap();
        assert!((got - w).abs() < 1e-12, "{k}: got {got}, want {w}");
    }
    assert_eq!(v["labels_scored"].as_u64().unwrap(), labels);
    assert_eq!(v["samples_scored"].as_u64().unwrap(), samples);
}

#[test]
fn hand_computed_case() {
    // Label 2 ranks .6(1) .4(0) .3(1) .1(0): AP = 1/2 + 1/2 * 2/3 = 5/6; labels 0, 1 rank perfectly.
    // At threshold 0.5 only row 2 is wrong, missing its label 2 (F1 0, not exact).
    let f = Fixture::new();
    let v = json(&[
        "--scores",
        p(&f.path("S.npy")),
        "--targets",
        p(&f.path("Y.npy")),
        "--privileged",
        "2",
        "--json",
    ]);
    let g = &v["groups"];
    let keys: Vec<&String> = g["all"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "accuracy",
            "emr",
            "labels_scored",
            "map",
            "sample_f1",
            "samples_scored"
        ]
    );
    assert_group(&g["all"], [17.0 / 18.0, 0.75, 0.75, 11.0 / 12.0], 3, 4);
    // Privileged {2}: rows 1 and 3 have neither truth nor prediction -> zero_division 0.
    assert_group(&g["privileged"], [5.0 / 6.0, 0.25, 0.75, 0.75], 1, 4);
    // Non-privileged {0, 1}: row 2 has nothing -> F1 0, but it is an exact match.
    assert_group(&g["non_privileged"], [1.0, 0.75, 1.0, 1.0], 2, 4);

    // Only samples with a positive in the group.
    let v = json(&[
        "--scores",
        p(&f.path("S.npy")),
        "--targets",
        p(&f.path("Y.npy")),
        "--privileged",
        "2",
        "--samples",
        "positive",
        "--json",
    ]);
    assert_group(&v["groups"]["privileged"], [5.0 / 6.0, 0.5, 0.5, 0.5], 1, 2);
    assert_group(&v["groups"]["non_privileged"], [1.0, 1.0, 1.0, 1.0], 2, 3);
    assert_eq!(v["details"]["settings"]["samples"], "positive");

    // zero_division 1 credits the empty rows.
    let v = json(&[
        "--scores",
        p(&f.path("S.npy")),
        "--targets",
        p(&f.path("Y.npy")),
        "--privileged",
        "2",
        "--zero-division",
        "1",
        "--json",
    ]);
    assert_group(
        &v["groups"]["privileged"],
        [5.0 / 6.0, 0.75, 0.75, 0.75],
        1,
        4,
    );
    assert_group(&v["groups"]["non_privileged"], [1.0, 1.0, 1.0, 1.0], 2, 4);
}

#[test]
fn table_output_and_partition_file() {
    let f = Fixture::new();
    let part = f.write(
        "partition.json",
        br#"{"labels": ["a", "b", "c"], "frequencies": [5, 6, 1], "privileged": [2]}"#,
    );
    let (code, stdout, stderr) = run(&[
        "--scores",
        p(&f.path("S.npy")),
        "--targets",
        p(&f.path("Y.npy")),
        "--partition",
        p(&part),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("mAP %"), "{stdout}");
    assert!(stdout.contains("whole split"), "{stdout}");
    assert!(
        stdout.contains("sample metrics over all samples"),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("privileged"))
        .unwrap();
    // 5/6 = 83.33%, F1 25%, EMR 75%, accuracy 75%.
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..5], ["83.33", "25.00", "75.00", "75.00"], "{row}");

    // Per-batch mode says so.
    let (code, stdout, _) = run(&[
        "--scores",
        p(&f.path("S.npy")),
        "--targets",
        p(&f.path("Y.npy")),
        "--privileged",
        "2",
        "--per-batch",
        "2",
    ]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("per-batch average over batches of 2"),
        "{stdout}"
    );
}

#[test]
fn missing_files() {
    let f = Fixture::new();
    expect_error(
        &f.path("nope.npy"),
        &f.path("Y.npy"),
        &[],
        &["nope.npy", "No such file"],
    );
    expect_error(
        &f.path("S.npy"),
        &f.path("gone.npy"),
        &[],
        &["gone.npy", "No such file"],
    );
    expect_error(
        &f.path("S.npy"),
        &f.path("Y.npy"),
        &["--partition", p(&f.path("missing.json"))],
        &["missing.json", "cannot read"],
    );
}

#[test]
fn not_npy_and_wrong_dtypes_and_shapes() {
    let f = Fixture::new();
    let csv = f.write("S.csv", b"0.1,0.2\n");
    expect_error(&csv, &f.path("Y.npy"), &[], &["S.csv", "not a .npy file"]);
    let int_scores = f.write("Si.npy", &npy_bytes("<i4", &[4, 3], &[0; 48]));
    expect_error(
        &int_scores,
        &f.path("Y.npy"),
        &[],
        &["Si.npy", "dtype <i4", "expected f32 or f64"],
    );
    let str_targets = f.write("Ys.npy", &npy_bytes("<U1", &[4, 3], &[0; 48]));
    expect_error(
        &f.path("S.npy"),
        &str_targets,
        &[],
        &["Ys.npy", "dtype <U1", "targets"],
    );
    let flat = f.write("S1.npy", &npy_bytes("<f4", &[12], &[0; 48]));
    expect_error(
        &flat,
        &f.path("Y.npy"),
        &[],
        &["S1.npy", "shape [12]", "2-D"],
    );
    let other = f.path("Y2.npy");
    fairpo_io::write_npy_u8(&other, &Matrix::new(3, 3, vec![0; 9])).unwrap();
    expect_error(
        &f.path("S.npy"),
        &other,
        &[],
        &["shapes differ", "S.npy", "[4, 3]", "Y2.npy", "[3, 3]"],
    );
}

#[test]
fn bad_values() {
    let f = Fixture::new();
    let y = f.path("Y.npy");
    let nan = f.scores_with("nan.npy", |d| d[4] = f32::NAN);
    expect_error(
        &nan,
        &y,
        &[],
        &["nan.npy", "NaN", "row 1, column 1", "not finite"],
    );
    let inf = f.scores_with("inf.npy", |d| d[0] = f32::INFINITY);
    expect_error(&inf, &y, &[], &["inf.npy", "inf", "not finite"]);
    let logits = f.scores_with("logits.npy", |d| d[2] = 3.5);
    expect_error(
        &logits,
        &y,
        &[],
        &["logits.npy", "3.5", "outside [0, 1]", "sigmoid"],
    );
    let neg = f.scores_with("neg.npy", |d| d[11] = -0.25);
    expect_error(&neg, &y, &[], &["neg.npy", "-0.25", "row 3, column 2"]);
    let bad_t: Vec<u8> = [0i64, 1, 1, 1, 1, 0, 0, 0, 2, 0, 1, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let yb = f.write("Yb.npy", &npy_bytes("<i8", &[4, 3], &bad_t));
    expect_error(
        &f.path("S.npy"),
        &yb,
        &[],
        &["Yb.npy", "value 2", "row 2, column 2", "0 or 1"],
    );
    let half: Vec<u8> = [0.5f32; 12].iter().flat_map(|v| v.to_le_bytes()).collect();
    let yh = f.write("Yh.npy", &npy_bytes("<f4", &[4, 3], &half));
    expect_error(&f.path("S.npy"), &yh, &[], &["Yh.npy", "0.5", "0 or 1"]);
}

#[test]
fn empty_arrays() {
    let f = Fixture::new();
    let s0 = f.write("S0.npy", &npy_bytes("<f4", &[0, 3], &[]));
    let y0 = f.write("Y0.npy", &npy_bytes("|u1", &[0, 3], &[]));
    expect_error(&s0, &y0, &[], &["S0.npy", "empty array", "[0, 3]"]);
    let s_nolabels = f.write("Sn.npy", &npy_bytes("<f4", &[4, 0], &[]));
    expect_error(&s_nolabels, &f.path("Y.npy"), &[], &["Sn.npy", "empty"]);
}

#[test]
fn bad_privileged_and_partition() {
    let f = Fixture::new();
    let (s, y) = (f.path("S.npy"), f.path("Y.npy"));
    expect_error(
        &s,
        &y,
        &["--privileged", "1,3"],
        &["--privileged", "index 3 out of range", "3 labels"],
    );
    expect_error(
        &s,
        &y,
        &["--privileged", "2,0,2"],
        &["--privileged", "2", "more than once"],
    );
    let wrong = f.write(
        "p4.json",
        br#"{"labels": ["a", "b", "c", "d"], "frequencies": [1, 1, 1, 1], "privileged": [3]}"#,
    );
    expect_error(
        &s,
        &y,
        &["--partition", p(&wrong)],
        &["p4.json", "4 labels", "3 columns"],
    );
    let broken = f.write("pb.json", br#"{"labels": ["a", "b", "c"]"#);
    expect_error(
        &s,
        &y,
        &["--partition", p(&broken)],
        &["pb.json", "invalid partition JSON"],
    );
    let repeated = f.write(
        "pr.json",
        br#"{"labels": ["a", "b", "c"], "frequencies": [1, 1, 1], "privileged": [1, 1]}"#,
    );
    expect_error(
        &s,
        &y,
        &["--partition", p(&repeated)],
        &["pr.json", "more than once"],
    );
}

#[test]
fn bad_options() {
    let f = Fixture::new();
    let (s, y) = (f.path("S.npy"), f.path("Y.npy"));
    expect_error(&s, &y, &["--per-batch", "0"], &["per_batch", "at least 1"]);
    expect_error(&s, &y, &["--zero-division", "2"], &["zero_division"]);
    expect_error(
        &s,
        &y,
        &["--per-batch", "32", "--samples", "positive"],
        &["samples = all"],
    );
}
