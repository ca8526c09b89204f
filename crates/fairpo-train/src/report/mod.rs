//! Reports: a run's `report.md` with plots, and the comparison of several runs in the
//! paper's Table 1/2 layout (with mean ± std over seeds, the paper's numbers beside, and a
//! paired bootstrap of every run against the first).

mod bootstrap;
mod compare;
mod paper_tables;
mod per_label;
mod plots;
mod run_report;

use std::path::Path;

use anyhow::Result;

pub(crate) use compare::{compare, BootstrapSettings};
pub(crate) use run_report::write_run_report;

fn write_svg(path: &Path, svg: Result<String, String>) -> Result<()> {
    let svg = svg.map_err(anyhow::Error::msg)?;
    fairpo_io::atomic_write(path, svg.as_bytes())?;
    Ok(())
}

/// Moving average over `w` points (for noisy per-step losses).
fn smooth(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    if w <= 1 || points.len() <= w {
        return points.to_vec();
    }
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    for i in 0..points.len() {
        sum += points[i].1;
        if i >= w {
            sum -= points[i - w].1;
        }
        let n = (i + 1).min(w) as f64;
        out.push((points[i].0, sum / n));
    }
    out
}

/// `0.8123` → `"81.23"`, missing → `"–"`.
pub(crate) fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), |v| format!("{:.2}", 100.0 * v))
}

fn p(v: Option<f64>) -> String {
    pct(v)
}

#[cfg(test)]
mod tests {
    use super::compare::{cell, mean_std, series_name};
    use super::*;

    #[test]
    fn seed_suffix_is_stripped_for_grouping() {
        assert_eq!(series_name("demo-cpo-s3"), "demo-cpo");
        assert_eq!(series_name("demo-cpo"), "demo-cpo");
        assert_eq!(series_name("demo-sft-s"), "demo-sft-s");
        assert_eq!(series_name("a-small"), "a-small");
    }

    #[test]
    fn mean_std_is_the_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        // sample std of 1..4 = sqrt(5/3)
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(cell(&[Some(0.5)]).0, "50.00");
        assert_eq!(cell(&[Some(0.5), Some(0.7)]).0, "60.00 ± 14.14");
        assert_eq!(cell(&[None]).0, "–");
    }

    #[test]
    fn smoothing_keeps_length_and_averages() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, i as f64)).collect();
        let s = smooth(&pts, 2);
        assert_eq!(s.len(), 10);
        assert_eq!(s[0].1, 0.0);
        assert_eq!(s[5].1, 4.5);
    }
}
