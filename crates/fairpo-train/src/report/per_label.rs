//! The per-label part of a comparison: each label's test AP per series, rarest label first
//! with P marked, and the plot of every series' AP gain over the first against the label's
//! training frequency.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use fairpo_metrics::Partition;

use super::plots::{self, Series};
use super::write_svg;
use crate::run::RunPaths;

/// One series (a run, or the seeds of one run) by name, with each seed's per-label AP.
pub(super) struct SeriesAp<'a> {
    pub(super) name: &'a str,
    pub(super) per_label_ap: Vec<&'a [Option<f64>]>,
}

impl SeriesAp<'_> {
    /// Mean AP of label `j` over the seeds that have it.
    fn mean(&self, j: usize) -> Option<f64> {
        let v: Vec<f64> = self
            .per_label_ap
            .iter()
            .filter_map(|ap| ap.get(j).copied().flatten())
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// Appends the per-label table to `md` and, with `out`, writes `ap_gain.svg` there; the
/// label frequencies and P come from `reference_run`'s `partition.json`. Returns whether the
/// plot was written.
pub(super) fn section(
    md: &mut String,
    reference_run: &Path,
    series: &[SeriesAp<'_>],
    out: Option<&Path>,
) -> Result<bool> {
    let paths = RunPaths::new(reference_run);
    let partition = Partition::load(paths.partition())
        .with_context(|| format!("reading {}", paths.partition().display()))?;
    let t = partition.labels.len();
    if series
        .iter()
        .flat_map(|s| &s.per_label_ap)
        .any(|ap| ap.len() != t)
    {
        let _ = writeln!(
            md,
            "\nPer-label AP: not shown, the runs do not all have the reference's {t} labels."
        );
        return Ok(false);
    }
    let privileged = partition.privileged_mask();
    let mut order: Vec<usize> = (0..t).collect();
    order.sort_by_key(|&j| (partition.frequencies[j], j));
    let names: Vec<&str> = series.iter().map(|s| s.name).collect();
    let _ = writeln!(
        md,
        "\n**Per-label test AP (%)**, rarest label first (training images with the label; P = privileged):\n\n| label | train images | P | {} |\n|---|---|---|{}",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for &j in &order {
        let cells: Vec<String> = series.iter().map(|s| super::pct(s.mean(j))).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            partition.labels[j],
            partition.frequencies[j],
            if privileged[j] { "P" } else { "" },
            cells.join(" | ")
        );
    }
    let (Some(out), Some((first, rest))) = (out, series.split_first()) else {
        return Ok(false);
    };
    if rest.is_empty() {
        return Ok(false);
    }
    let gains: Vec<Series> = rest
        .iter()
        .map(|s| Series {
            name: format!("{} − {}", s.name, first.name),
            points: (0..t)
                .filter_map(|j| {
                    let gain = s.mean(j)? - first.mean(j)?;
                    Some((
                        (partition.frequencies[j].max(1) as f64).log10(),
                        100.0 * gain,
                    ))
                })
                .collect(),
        })
        .collect();
    write_svg(
        &out.join("ap_gain.svg"),
        plots::scatter_plot(
            &format!("per-label AP gain over {}", first.name),
            "log10(training images with the label)",
            "AP gain (points)",
            &gains,
        ),
    )?;
    Ok(true)
}
