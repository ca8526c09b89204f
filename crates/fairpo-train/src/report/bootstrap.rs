//! Paired bootstrap over test images: is a run's difference from a reference run more than
//! the luck of which images are in the test set?
//!
//! Resample b draws n test images with replacement; both runs are scored on the same draws,
//! every metric is recomputed per label group (over the whole resample, whatever the runs'
//! `per_batch` setting), and the 95% interval of (run − reference) is the 2.5th and 97.5th
//! percentile of the resampled differences (linear interpolation, as numpy's default). The
//! draws are SplitMix64's outputs: draw j (counting from 0 over all resamples in order) is
//! `mix(seed + (j + 1)·γ) mod n`, so `scripts/fixtures/bootstrap_reference.py` redraws them
//! and the resamples can run in parallel.

use anyhow::{ensure, Result};
use fairpo_io::Matrix;
use fairpo_metrics::{evaluate, GroupMetrics, MetricsConfig, MetricsReport};
use rayon::prelude::*;

/// SplitMix64's increment.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The image drawn at position `i` of resample `b` (n images per resample).
fn draw(seed: u64, b: usize, i: usize, n: usize) -> usize {
    let j = (b * n + i) as u64;
    (mix(seed.wrapping_add(j.wrapping_add(1).wrapping_mul(GAMMA))) % n as u64) as usize
}

/// How a metric is read from a group's metrics.
type Read = fn(&GroupMetrics) -> Option<f64>;

/// The metrics the bootstrap reports, by name, and how to read them from a group.
pub(crate) const METRICS: [(&str, Read); 4] = [
    ("mAP", |g| g.map),
    ("F1", |g| g.sample_f1),
    ("Acc", |g| g.accuracy),
    ("EMR", |g| g.emr),
];

/// The label groups the bootstrap reports.
pub(crate) const GROUPS: [&str; 2] = ["P", "P̄"];

fn group(report: &MetricsReport, g: usize) -> &GroupMetrics {
    if g == 0 {
        &report.groups.privileged
    } else {
        &report.groups.non_privileged
    }
}

/// One metric of one group: the difference on the full test set and its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Interval {
    /// run − reference on the whole test set.
    pub(crate) delta: f64,
    /// 2.5th percentile of the resampled differences.
    pub(crate) lo: f64,
    /// 97.5th percentile.
    pub(crate) hi: f64,
    /// Resamples in which both runs had the metric (a resample can lack every positive of a
    /// rare label group).
    pub(crate) resamples: usize,
}

impl Interval {
    /// Whether the interval excludes 0: the difference is not resampling noise at 95%.
    pub(crate) fn excludes_zero(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
}

/// Scores of one run and of the reference run it is paired with (the same seed).
pub(crate) struct Pair<'a> {
    /// The reference run's test scores.
    pub(crate) reference: &'a Matrix<f32>,
    /// The compared run's.
    pub(crate) other: &'a Matrix<f32>,
}

/// The `[groups][metrics]` intervals of the mean difference over `pairs` (one per seed; one
/// pair is the plain paired bootstrap), every pair scored on the same draws of the same test
/// images with the same targets.
pub(crate) fn paired(
    pairs: &[Pair<'_>],
    targets: &Matrix<u8>,
    privileged: &[usize],
    cfg: &MetricsConfig,
    resamples: usize,
    seed: u64,
) -> Result<[[Interval; 4]; 2]> {
    ensure!(!pairs.is_empty(), "no runs to pair");
    for p in pairs {
        ensure!(
            p.reference.shape() == targets.shape() && p.other.shape() == targets.shape(),
            "scores {:?} and {:?} do not match the targets {:?}",
            p.reference.shape(),
            p.other.shape(),
            targets.shape()
        );
    }
    ensure!(targets.rows > 0, "no test images");
    let cfg = MetricsConfig {
        per_batch: None,
        ..cfg.clone()
    };
    let metrics = |s: &Matrix<f32>, t: &Matrix<u8>| evaluate(s, t, privileged, &cfg);
    // The mean over pairs of (other − reference) per group and metric; None when a pair
    // lacks the metric (a resample without any positive of the group).
    let mean_delta = |scores: &dyn Fn(&Matrix<f32>) -> Matrix<f32>,
                      y: &Matrix<u8>|
     -> Result<[[Option<f64>; 4]; 2]> {
        let mut sum = [[Some(0.0); 4]; 2];
        for p in pairs {
            let (a, o) = (
                metrics(&scores(p.reference), y)?,
                metrics(&scores(p.other), y)?,
            );
            for (g, row) in sum.iter_mut().enumerate() {
                for (k, cell) in row.iter_mut().enumerate() {
                    let read = METRICS[k].1;
                    let d = read(group(&o, g))
                        .zip(read(group(&a, g)))
                        .map(|(o, a)| o - a);
                    *cell = cell.zip(d).map(|(s, d)| s + d);
                }
            }
        }
        let n = pairs.len() as f64;
        Ok(sum.map(|row| row.map(|c| c.map(|s| s / n))))
    };
    let full = mean_delta(&|m| m.clone(), targets)?;
    let (n, t) = (targets.rows, targets.cols);
    let deltas: Vec<[[Option<f64>; 4]; 2]> = (0..resamples)
        .into_par_iter()
        .map(|b| -> Result<_> {
            let rows: Vec<usize> = (0..n).map(|i| draw(seed, b, i, n)).collect();
            let pick = |m: &Matrix<f32>| Matrix {
                rows: n,
                cols: t,
                data: rows
                    .iter()
                    .flat_map(|&r| m.data[r * t..(r + 1) * t].iter().copied())
                    .collect(),
            };
            let y = Matrix {
                rows: n,
                cols: t,
                data: rows
                    .iter()
                    .flat_map(|&r| targets.data[r * t..(r + 1) * t].iter().copied())
                    .collect(),
            };
            mean_delta(&pick, &y)
        })
        .collect::<Result<_>>()?;
    Ok(std::array::from_fn(|g| {
        std::array::from_fn(|k| {
            let mut d: Vec<f64> = deltas.iter().filter_map(|r| r[g][k]).collect();
            d.sort_by(f64::total_cmp);
            Interval {
                delta: full[g][k].unwrap_or(f64::NAN),
                lo: percentile(&d, 2.5),
                hi: percentile(&d, 97.5),
                resamples: d.len(),
            }
        })
    }))
}

/// The `q`th percentile of sorted values, interpolating linearly between ranks (numpy's
/// default); NaN for no values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bootstrap")
    }

    #[test]
    fn splitmix64_matches_its_published_outputs() {
        // The first outputs of SplitMix64 seeded with 1234567 (Vigna's reference code).
        let want: [u64; 3] = [
            6457827717110365317,
            3203168211198807973,
            9817491932198370423,
        ];
        for (j, w) in want.iter().enumerate() {
            assert_eq!(
                mix(1234567u64.wrapping_add((j as u64 + 1).wrapping_mul(GAMMA))),
                *w
            );
        }
    }

    #[test]
    fn percentiles_interpolate_as_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert!((percentile(&v, 2.5) - 1.1).abs() < 1e-12);
        assert!((percentile(&v, 97.5) - 9.4).abs() < 1e-12);
        assert!(percentile(&[], 50.0).is_nan());
    }

    /// A run against itself: every difference is 0 and no interval excludes it.
    #[test]
    fn a_run_against_itself_is_zero() {
        let dir = fixtures();
        let targets = fairpo_io::read_npy_targets(dir.join("targets.npy")).unwrap();
        let a = fairpo_io::read_npy_scores(dir.join("scores_a.npy")).unwrap();
        let r = paired(
            &[Pair {
                reference: &a,
                other: &a,
            }],
            &targets,
            &[7, 8, 9],
            &MetricsConfig::default(),
            50,
            0,
        )
        .unwrap();
        for row in r {
            for i in row {
                assert_eq!((i.delta, i.lo, i.hi), (0.0, 0.0, 0.0));
                assert!(!i.excludes_zero());
            }
        }
    }

    /// Against `scripts/fixtures/bootstrap_reference.py` (scikit-learn on the same draws).
    #[test]
    fn matches_scikit_learn_on_the_same_draws() {
        let dir = fixtures();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let targets = fairpo_io::read_npy_targets(dir.join("targets.npy")).unwrap();
        let a = fairpo_io::read_npy_scores(dir.join("scores_a.npy")).unwrap();
        let b = fairpo_io::read_npy_scores(dir.join("scores_b.npy")).unwrap();
        let privileged: Vec<usize> = expected["privileged"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let resamples = expected["resamples"].as_u64().unwrap() as usize;
        let seed = expected["seed"].as_u64().unwrap();
        let run = |pairs: &[Pair<'_>]| {
            paired(
                pairs,
                &targets,
                &privileged,
                &MetricsConfig::default(),
                resamples,
                seed,
            )
            .unwrap()
        };
        let got = run(&[Pair {
            reference: &a,
            other: &b,
        }]);
        for (g, group) in GROUPS.iter().enumerate() {
            for (k, (metric, _)) in METRICS.iter().enumerate() {
                let want = &expected["intervals"][*group][*metric];
                let i = got[g][k];
                for (name, value) in [("delta", i.delta), ("lo", i.lo), ("hi", i.hi)] {
                    let w = want[name].as_f64().unwrap();
                    assert!(
                        (value - w).abs() < 1e-9,
                        "{group} {metric} {name}: {value} vs {w}"
                    );
                }
                assert_eq!(i.resamples as u64, want["resamples"].as_u64().unwrap());
            }
        }
        // The fixture is built so that the privileged mAP gain is real.
        assert!(got[0][0].excludes_zero() && got[0][0].lo > 0.0);

        // Two seeds, the second a run identical to its reference: every resample's mean
        // difference is half the first seed's, so the interval is exactly half as wide.
        let mean = run(&[
            Pair {
                reference: &a,
                other: &b,
            },
            Pair {
                reference: &b,
                other: &b,
            },
        ]);
        for (one, two) in got.iter().flatten().zip(mean.iter().flatten()) {
            for (x, y) in [(one.delta, two.delta), (one.lo, two.lo), (one.hi, two.hi)] {
                assert!((x / 2.0 - y).abs() < 1e-12, "{x} / 2 vs {y}");
            }
            assert_eq!(one.resamples, two.resamples);
        }
    }
}
