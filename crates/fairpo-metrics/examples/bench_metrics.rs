//! Benchmark: all metrics for the three label groups on COCO's test-set size
//! (N = 40,504 samples x T = 80 labels, 16 privileged), random seeded data.
//!
//! Prints the median time of `evaluate` with rayon's default pool and with one thread.
//! When `python3` with numpy and scikit-learn is available, it writes the same arrays to a
//! temporary directory, runs the committed `bench/metrics_sklearn.py` on them (one process),
//! checks that both give the same values, and prints scikit-learn's time and the ratio.
//!
//! Run: `cargo xtask bench metrics` (or `cargo run -p fairpo-metrics --example bench_metrics`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use fairpo_io::Matrix;
use fairpo_metrics::{evaluate, MetricsConfig, MetricsReport, Partition, PrivilegedSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 40_504;
const T: usize = 80;
const RUNS: usize = 9;

/// Long-tailed targets and scores correlated with them (continuous, as a model would give).
fn data() -> (Matrix<f32>, Matrix<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let prevalence: Vec<f64> = (0..T)
        .map(|j| 0.25 * (-(j as f64) / 16.0).exp() + 0.002)
        .collect();
    let mut scores = Vec::with_capacity(N * T);
    let mut targets = Vec::with_capacity(N * T);
    for _ in 0..N {
        for &p in &prevalence {
            let y = rng.random_bool(p) as u8;
            let s = 0.45 * y as f32 + 0.55 * rng.random::<f32>();
            scores.push(s);
            targets.push(y);
        }
    }
    (Matrix::new(N, T, scores), Matrix::new(N, T, targets))
}

/// Median and minimum seconds of `RUNS` calls after one warm-up.
fn time(mut f: impl FnMut() -> MetricsReport) -> (f64, f64, MetricsReport) {
    let report = f();
    let mut secs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64()
        })
        .collect();
    secs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (secs[RUNS / 2], secs[0], report)
}

fn python_ok() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import numpy, sklearn"])
        .output()
    {
        Err(e) => Err(format!("python3 not runnable ({e})")),
        Ok(o) if !o.status.success() => Err(format!(
            "python3 lacks numpy or scikit-learn: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Ok(_) => Ok(()),
    }
}

fn main() {
    let (scores, targets) = data();
    let labels: Vec<String> = (0..T).map(|j| format!("label{j}")).collect();
    let frequencies: Vec<u64> = (0..T)
        .map(|j| (0..N).map(|i| targets.get(i, j) as u64).sum())
        .collect();
    let partition =
        Partition::from_frequencies(labels, frequencies, &PrivilegedSpec::default()).unwrap();
    let cfg = MetricsConfig::default();
    let threads = rayon::current_num_threads();

    let (med, min, report) =
        time(|| evaluate(&scores, &targets, &partition.privileged, &cfg).unwrap());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (med1, min1, _) =
        pool.install(|| time(|| evaluate(&scores, &targets, &partition.privileged, &cfg).unwrap()));

    println!(
        "fairpo-metrics: all metrics (mAP, sample F1, EMR, accuracy) x 3 groups, N={N} x T={T}, {} privileged\n",
        partition.privileged.len()
    );
    println!("| implementation | median (ms) | min (ms) | runs |");
    println!("|---|---|---|---|");
    println!(
        "| fairpo-metrics, rayon {threads} threads | {:.1} | {:.1} | {RUNS} |",
        med * 1e3,
        min * 1e3
    );
    println!(
        "| fairpo-metrics, 1 thread | {:.1} | {:.1} | {RUNS} |",
        med1 * 1e3,
        min1 * 1e3
    );

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/metrics_sklearn.py");
    if let Err(why) = python_ok() {
        println!("\nscikit-learn comparison skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (s_path, y_path) = (dir.path().join("S.npy"), dir.path().join("Y.npy"));
    fairpo_io::write_npy_f32(&s_path, &scores).unwrap();
    fairpo_io::write_npy_u8(&y_path, &targets).unwrap();
    let privileged: Vec<String> = partition.privileged.iter().map(|j| j.to_string()).collect();
    let out = Command::new("python3")
        .arg(&script)
        .arg(&s_path)
        .arg(&y_path)
        .args(["--privileged", &privileged.join(","), "--repeats", "3"])
        .output()
        .expect("running python3");
    if !out.status.success() {
        println!(
            "\nscikit-learn comparison failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::process::exit(1);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from the script");
    let sk_med = v["median_s"].as_f64().unwrap();
    let sk_min = v["min_s"].as_f64().unwrap();
    println!(
        "| scikit-learn {} (1 process) | {:.1} | {:.1} | {} |",
        v["sklearn"].as_str().unwrap_or("?"),
        sk_med * 1e3,
        sk_min * 1e3,
        v["runs"]
    );

    // Same values on both sides.
    let mut max_diff = 0.0f64;
    for (name, g) in report.groups.iter() {
        let want = &v["groups"][name];
        for (k, got) in [
            ("map", g.map),
            ("sample_f1", g.sample_f1),
            ("emr", g.emr),
            ("accuracy", g.accuracy),
        ] {
            let w = want[k].as_f64().expect("sklearn value");
            max_diff = max_diff.max((got.expect("defined") - w).abs());
        }
    }
    println!("\nmax |fairpo - scikit-learn| over the 12 values: {max_diff:.1e}");
    println!(
        "ratio scikit-learn / fairpo (medians): {:.0}x with {threads} threads, {:.0}x with 1 thread (goal: >= 10x)",
        sk_med / med,
        sk_med / med1
    );
    if max_diff > 1e-9 {
        println!("VALUES DIFFER from scikit-learn by more than 1e-9");
        std::process::exit(1);
    }
}
