//! The comparison of several runs in the paper's Table 1/2 layout, with mean ± std over seeds
//! and the paper's numbers beside.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use fairpo_io::Matrix;

use super::bootstrap;
use super::paper_tables::{self, PaperRow};
use super::per_label;
use super::plots;
use super::write_svg;
use crate::config::RunConfig;
use crate::eval::MetricsFile;
use crate::run::RunPaths;

/// One run as a comparison row.
#[derive(Debug, Clone)]
struct RunRow {
    series: String,
    /// `train.seed`, which pairs a run with the reference run of the same seed.
    seed: u64,
    method: String,
    m: MetricsFile,
    key_config: String,
}

/// Name without a trailing seed suffix `-s<N>`.
pub(super) fn series_name(name: &str) -> String {
    if let Some(i) = name.rfind("-s") {
        if name[i + 2..].chars().all(|c| c.is_ascii_digit()) && i + 2 < name.len() {
            return name[..i].to_string();
        }
    }
    name.to_string()
}

fn key_config(cfg: &RunConfig) -> String {
    use fairpo_objectives::Method;
    let o = &cfg.objective;
    let mut parts = vec![format!("lr {}", cfg.train.lr)];
    match o.method {
        Method::Dpo => parts.push(format!("β {} ε {}", o.beta, o.epsilon)),
        Method::Simpo => parts.push(format!("β {} γ {} ε {}", o.beta, o.gamma, o.epsilon)),
        Method::Cpo => parts.push(format!("β {} λ {} ε {}", o.beta, o.lambda_cpo, o.epsilon)),
        Method::Reweighted => parts.push(format!("λ_P {}", o.lambda_p)),
        Method::Gdro => parts.push(format!("η_α {}", cfg.scheduler.eta_alpha)),
        Method::Bce => {}
    }
    if o.method.is_fairpo() {
        let d = fairpo_objectives::ObjectiveConfig::new(o.method);
        if o.privileged_loss != d.privileged_loss {
            parts.push("L_P = BCE".into());
        }
        if o.non_privileged_loss != d.non_privileged_loss {
            parts.push("L_P̄ = BCE".into());
        }
        if o.global {
            parts.push("global".into());
        }
        if o.confusing != d.confusing {
            parts.push(format!("confusing {:?}", o.confusing).to_lowercase());
        }
        if !o.bce_fallback {
            parts.push("no fallback".into());
        }
        if cfg.scheduler.kind != fairpo_grpo::SchedulerKind::Grpo {
            parts.push(format!("scheduler {:?}", cfg.scheduler.kind).to_lowercase());
        }
    }
    parts.push(format!(
        "trainable {}",
        match cfg.model.trainable_layers {
            crate::config::TrainableLayers::All => "all".to_string(),
            crate::config::TrainableLayers::Last(k) => k.to_string(),
        }
    ));
    parts.join(", ")
}

pub(super) fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

pub(super) fn cell(values: &[Option<f64>]) -> (String, Option<f64>) {
    let v: Vec<f64> = values.iter().flatten().map(|v| v * 100.0).collect();
    if v.is_empty() {
        return ("–".into(), None);
    }
    let (m, s) = mean_std(&v);
    if v.len() == 1 {
        (format!("{m:.2}"), Some(m))
    } else {
        (format!("{m:.2} ± {s:.2}"), Some(m))
    }
}

/// How `fairpo report` resamples the test set for its intervals.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BootstrapSettings {
    /// Paired resamples (0: no bootstrap section).
    pub(crate) resamples: usize,
    /// Seed of the draws.
    pub(crate) seed: u64,
}

/// The comparison of several runs: a Markdown table (the paper's Table 1/2 layout), the
/// paired bootstrap of every run against the first, and optionally files in `out`
/// (`report.md`, `map.svg`). Returns the Markdown.
pub(crate) fn compare(
    runs: &[PathBuf],
    out: Option<&Path>,
    paper_dataset: Option<&str>,
    bootstrap: BootstrapSettings,
) -> Result<String> {
    if runs.is_empty() {
        bail!("no runs given");
    }
    let mut rows = Vec::new();
    for r in runs {
        let paths = RunPaths::new(r);
        if !paths.metrics().is_file() {
            bail!(
                "{} is not a finished run ({} is missing)",
                r.display(),
                paths.metrics().display()
            );
        }
        let m = MetricsFile::read(&paths.metrics())?;
        let cfg_text = std::fs::read_to_string(paths.config())
            .with_context(|| format!("reading {}", paths.config().display()))?;
        let cfg = RunConfig::from_toml_str(&cfg_text, &paths.config().display().to_string())?;
        rows.push(RunRow {
            series: series_name(&cfg.name),
            seed: cfg.train.seed,
            method: format!("{:?}", cfg.objective.method).to_lowercase(),
            m,
            key_config: key_config(&cfg),
        });
    }
    // Group seeds of the same series, keeping first-appearance order.
    let mut order: Vec<String> = Vec::new();
    let mut groups: BTreeMap<String, Vec<&RunRow>> = BTreeMap::new();
    for r in &rows {
        if !groups.contains_key(&r.series) {
            order.push(r.series.clone());
        }
        groups.entry(r.series.clone()).or_default().push(r);
    }
    // The reference row: the first BCE series (BCE-SFT; a BCE control later is compared).
    let sft_series = order.iter().find(|s| groups[*s][0].method == "bce");
    let sft_map_p: Option<f64> = sft_series.and_then(|s| {
        cell(
            &groups[s]
                .iter()
                .map(|r| r.m.groups.privileged.map)
                .collect::<Vec<_>>(),
        )
        .1
    });
    let sel: Vec<String> = rows.iter().map(|r| r.m.selected_on.clone()).collect();
    let avg = rows[0].m.averaging.clone();
    let samples = rows[0].m.samples.clone();

    let mut md = String::new();
    let _ = writeln!(
        md,
        "Test-set metrics in % (mean ± std over seeds where a run has several); P = privileged labels, P̄ = the rest. \
         Metrics over the {avg}, sample-based metrics over {samples} samples; model selection on: {}.\n",
        dedup(&sel).join(", ")
    );
    let _ = writeln!(
        md,
        "| run | mAP P | mAP P̄ | F1 P | F1 P̄ | Acc P | Acc P̄ | EMR P | EMR P̄ | Δ mAP(P) | seeds | config |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut chart_rows = Vec::new();
    for s in &order {
        let g = &groups[s];
        let col =
            |f: &dyn Fn(&RunRow) -> Option<f64>| cell(&g.iter().map(|r| f(r)).collect::<Vec<_>>());
        let (map_p, map_p_mean) = col(&|r| r.m.groups.privileged.map);
        let (map_q, map_q_mean) = col(&|r| r.m.groups.non_privileged.map);
        let delta = match (Some(s) == sft_series, map_p_mean, sft_map_p) {
            (true, _, _) => "ref".to_string(),
            (_, Some(a), Some(b)) => format!("{:+.2}", a - b),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {s} | {map_p} | {map_q} | {} | {} | {} | {} | {} | {} | {delta} | {} | {} |",
            col(&|r| r.m.groups.privileged.sample_f1).0,
            col(&|r| r.m.groups.non_privileged.sample_f1).0,
            col(&|r| r.m.groups.privileged.accuracy).0,
            col(&|r| r.m.groups.non_privileged.accuracy).0,
            col(&|r| r.m.groups.privileged.emr).0,
            col(&|r| r.m.groups.non_privileged.emr).0,
            g.len(),
            g[0].key_config
        );
        chart_rows.push((
            s.clone(),
            vec![
                map_p_mean.unwrap_or(f64::NAN),
                map_q_mean.unwrap_or(f64::NAN),
            ],
        ));
    }
    if bootstrap.resamples > 0 && runs.len() > 1 {
        bootstrap_section(&mut md, runs, &rows, bootstrap)?;
    }
    let dataset = paper_dataset.map(str::to_string).or_else(|| {
        let first = &order[0];
        ["coco", "nus"]
            .iter()
            .find(|d| first.starts_with(&format!("{d}-")))
            .map(|d| d.to_string())
    });
    if let Some(table) = dataset.as_deref().and_then(paper_tables::main_table) {
        let _ = writeln!(
            md,
            "\n**The paper's published numbers** ({}; ViT-B/16, model selected on the test set and metrics averaged per batch of 32 in the released code, so not directly comparable):\n",
            if dataset.as_deref() == Some("coco") { "Table 1, MS-COCO" } else { "Table 2, NUS-WIDE" }
        );
        paper_table(&mut md, table);
        if dataset.as_deref() == Some("coco") && order.iter().any(|s| s.contains("-cpo-")) {
            let _ = writeln!(
                md,
                "\n**The paper's ablations** (Tables 3 and 4, MS-COCO):\n"
            );
            paper_table(&mut md, &paper_tables::TABLES34_COCO_ABLATIONS);
        }
    }
    if let Some(out) = out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let series_ap: Vec<per_label::SeriesAp<'_>> = order
        .iter()
        .map(|s| per_label::SeriesAp {
            name: s,
            per_label_ap: groups[s]
                .iter()
                .map(|r| r.m.per_label_ap.as_slice())
                .collect(),
        })
        .collect();
    let gain_plot = per_label::section(&mut md, &runs[0], &series_ap, out)?;
    provenance(&mut md, runs)?;
    if let Some(out) = out {
        let cats: Vec<String> = chart_rows.iter().map(|r| r.0.clone()).collect();
        let vals: Vec<Vec<f64>> = chart_rows.iter().map(|r| r.1.clone()).collect();
        write_svg(
            &out.join("map.svg"),
            plots::grouped_bars("test mAP (%) per run", "mAP (%)", &cats, &["P", "P̄"], &vals),
        )?;
        let gain = if gain_plot {
            "\n![per-label AP gain against label frequency](ap_gain.svg)\n"
        } else {
            ""
        };
        let full = format!(
            "# Comparison\n\n{md}\n![mAP per run](map.svg)\n{gain}\nRuns: {}\n",
            runs.iter()
                .map(|r| format!("`{}`", r.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        fairpo_io::atomic_write(out.join("report.md"), full.as_bytes())?;
    }
    Ok(md)
}

/// The paired bootstrap of every series against the first run's series, as a Markdown table:
/// each run is paired with the reference run of its seed, and a series with several seeds
/// gets the interval of its mean difference over them (the same draws for every seed).
fn bootstrap_section(
    md: &mut String,
    runs: &[PathBuf],
    rows: &[RunRow],
    settings: BootstrapSettings,
) -> Result<()> {
    type Opened = (Matrix<f32>, Matrix<u8>, Vec<usize>);
    let started = std::time::Instant::now();
    let open = |r: &PathBuf| -> Result<Opened> {
        let paths = RunPaths::new(r);
        let scores = fairpo_io::read_npy_scores(paths.scores())
            .with_context(|| format!("reading {}", paths.scores().display()))?;
        let targets = fairpo_io::read_npy_targets(paths.targets())
            .with_context(|| format!("reading {}", paths.targets().display()))?;
        let partition = fairpo_metrics::Partition::load(paths.partition())
            .with_context(|| format!("reading {}", paths.partition().display()))?;
        Ok((scores, targets, partition.privileged))
    };
    let opened: Vec<Opened> = runs.iter().map(open).collect::<Result<_>>()?;
    let (_, targets, privileged) = &opened[0];
    let cfg = crate::eval::Settings::from_config(&crate::setup::read_run_config(&RunPaths::new(
        &runs[0],
    ))?)
    .metrics;
    let reference = &rows[0].series;
    // The reference run of each seed (the first, if a seed appears twice).
    let mut by_seed: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, r) in rows
        .iter()
        .enumerate()
        .filter(|(_, r)| &r.series == reference)
    {
        by_seed.entry(r.seed).or_insert(i);
    }
    let header: Vec<String> = bootstrap::GROUPS
        .iter()
        .flat_map(|g| {
            bootstrap::METRICS
                .iter()
                .map(move |(m, _)| format!("Δ {m} {g}"))
        })
        .collect();
    let _ = writeln!(
        md,
        "
**Paired bootstrap against `{reference}`** (test images resampled {} times with replacement, the same draws for both runs, seed {}; every metric over the whole resample; each run is paired with the `{reference}` run of its seed, and a row of several seeds is their mean difference, resampled with the same draws for every seed): the difference on the full test set in points, then its 95% interval; **bold** where the interval excludes 0.
",
        settings.resamples, settings.seed
    );
    let _ = writeln!(
        md,
        "| run | {} |
|---|{}",
        header.join(" | "),
        "---|".repeat(header.len())
    );
    let blank = " |".repeat(header.len() - 1);
    let mut series: Vec<&String> = Vec::new();
    for r in rows {
        if &r.series != reference && !series.contains(&&r.series) {
            series.push(&r.series);
        }
    }
    for s in series {
        let mut pairs = Vec::new();
        let mut unpaired = Vec::new();
        for (i, row) in rows.iter().enumerate().filter(|(_, r)| &r.series == s) {
            let (_, run_targets, run_privileged) = &opened[i];
            match by_seed.get(&row.seed) {
                Some(&j) if run_targets == &opened[j].1 && run_privileged == &opened[j].2 => {
                    pairs.push(bootstrap::Pair {
                        reference: &opened[j].0,
                        other: &opened[i].0,
                    });
                }
                Some(_) => unpaired.push(format!(
                    "seed {}: its test targets or privileged labels differ from the reference's",
                    row.seed
                )),
                None => unpaired.push(format!(
                    "seed {}: no `{reference}` run with that seed",
                    row.seed
                )),
            }
        }
        let label = if pairs.len() > 1 {
            format!("{s} (mean of {} seeds)", pairs.len())
        } else {
            s.clone()
        };
        if pairs.is_empty() {
            let _ = writeln!(md, "| {s} | not paired: {} |{blank}", unpaired.join("; "));
            continue;
        }
        let intervals = bootstrap::paired(
            &pairs,
            targets,
            privileged,
            &cfg,
            settings.resamples,
            settings.seed,
        )?;
        let mut cells: Vec<String> = intervals
            .iter()
            .flatten()
            .map(|i| {
                let text = format!(
                    "{:+.2} [{:+.2}, {:+.2}]",
                    100.0 * i.delta,
                    100.0 * i.lo,
                    100.0 * i.hi
                );
                if i.excludes_zero() {
                    format!("**{text}**")
                } else {
                    text
                }
            })
            .collect();
        if !unpaired.is_empty() {
            // Runs left out of the mean are named, not dropped silently.
            cells[0] = format!("{} (left out: {})", cells[0], unpaired.join("; "));
        }
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    }
    tracing::info!(
        "paired bootstrap: {} run(s) x {} resamples in {:.1} s",
        runs.len() - by_seed.len(),
        settings.resamples,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Which build, configuration and device produced every run, and how long it trained (from
/// each `run.json`; runs trained before these were recorded show "–").
fn provenance(md: &mut String, runs: &[PathBuf]) -> Result<()> {
    let _ = writeln!(
        md,
        "\n**Runs**:\n\n| run | trained by | config.toml sha256 | device | training wall time |\n|---|---|---|---|---|"
    );
    for run in runs {
        let s = crate::run::read_summary(&RunPaths::new(run))?;
        let or_dash = |v: &str| {
            if v.is_empty() {
                "–".to_string()
            } else {
                v.to_string()
            }
        };
        let hash = or_dash(&s.config_sha256.chars().take(12).collect::<String>());
        let _ = writeln!(
            md,
            "| {} | {} | {hash} | {} | {:.1} s |",
            run.display(),
            or_dash(&s.build),
            or_dash(&s.device),
            s.train_seconds
        );
    }
    Ok(())
}

fn paper_table(md: &mut String, rows: &[PaperRow]) {
    let sft = rows
        .iter()
        .find(|r| r.key == "sft")
        .map_or(86.32, |r| r.map.0);
    let _ = writeln!(
        md,
        "| paper method | mAP P | mAP P̄ | F1 P | F1 P̄ | Acc P | Acc P̄ | EMR P | EMR P̄ | Δ mAP(P) |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let delta = if r.key == "sft" {
            "ref".to_string()
        } else {
            format!("{:+.2}", r.map.0 - sft)
        };
        let _ = writeln!(
            md,
            "| {} (paper) | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {delta} |",
            r.method, r.map.0, r.map.1, r.sample_f1.0, r.sample_f1.1, r.accuracy.0, r.accuracy.1, r.emr.0, r.emr.1
        );
    }
}

fn dedup(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in v {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}
