//! Reports: a run's `report.md` with plots, and the comparison of several runs in the
//! paper's Table 1/2 layout (with mean ± std over seeds and the paper's numbers beside).

mod paper_tables;
mod plots;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::RunConfig;
use crate::eval::MetricsFile;
use crate::run::{read_log, RunPaths, RunSummary};
use paper_tables::PaperRow;
use plots::Series;

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

/// Writes `report.md` and `plots/*.svg` of a finished run.
pub(crate) fn write_run_report(paths: &RunPaths) -> Result<PathBuf> {
    let summary: RunSummary = crate::run::read_summary(paths)?;
    let m = MetricsFile::read(&paths.metrics())?;
    let log = read_log(&paths.log()).map_err(anyhow::Error::msg)?;
    let plots_dir = paths.plots();
    std::fs::create_dir_all(&plots_dir)
        .with_context(|| format!("creating {}", plots_dir.display()))?;

    let w = (log.steps.len() / 50).max(1);
    let lp: Vec<(f64, f64)> = log
        .steps
        .iter()
        .map(|s| (s.step as f64, s.loss_privileged))
        .collect();
    let lq: Vec<(f64, f64)> = log
        .steps
        .iter()
        .map(|s| (s.step as f64, s.loss_non_privileged))
        .collect();
    let l: Vec<(f64, f64)> = log.steps.iter().map(|s| (s.step as f64, s.loss)).collect();
    write_svg(
        &plots_dir.join("losses.svg"),
        plots::line_plot(
            &format!("group losses (moving average over {w} steps)"),
            "step",
            "loss",
            &[
                Series {
                    name: "L_P (privileged)".into(),
                    points: smooth(&lp, w),
                },
                Series {
                    name: "L_P̄ (non-privileged)".into(),
                    points: smooth(&lq, w),
                },
                Series {
                    name: "weighted loss".into(),
                    points: smooth(&l, w),
                },
            ],
        ),
    )?;
    let has_alpha = log.steps.iter().any(|s| s.alpha.is_some());
    if has_alpha {
        let a = |g: usize| -> Vec<(f64, f64)> {
            log.steps
                .iter()
                .filter_map(|s| s.alpha.as_ref().map(|a| (s.step as f64, a[g])))
                .collect()
        };
        write_svg(
            &plots_dir.join("alpha.svg"),
            plots::line_plot(
                "group weights α",
                "step",
                "α",
                &[
                    Series {
                        name: "α_P".into(),
                        points: a(0),
                    },
                    Series {
                        name: "α_P̄".into(),
                        points: a(1),
                    },
                ],
            ),
        )?;
    }
    let ep = |f: &dyn Fn(&crate::run::EpochLine) -> Option<f64>| -> Vec<(f64, f64)> {
        log.epochs
            .iter()
            .filter_map(|e| f(e).map(|v| ((e.epoch + 1) as f64, v)))
            .collect()
    };
    let split = log
        .epochs
        .first()
        .map_or("val".to_string(), |e| e.split.clone());
    write_svg(
        &plots_dir.join("val_map.svg"),
        plots::line_plot(
            &format!("{split} mAP per epoch"),
            "epoch",
            "mAP",
            &[
                Series {
                    name: "all".into(),
                    points: ep(&|e| e.map.all),
                },
                Series {
                    name: "P".into(),
                    points: ep(&|e| e.map.privileged),
                },
                Series {
                    name: "P̄".into(),
                    points: ep(&|e| e.map.non_privileged),
                },
            ],
        ),
    )?;
    let mask: Vec<bool> = (0..m.labels.len())
        .map(|i| m.privileged.contains(&i))
        .collect();
    write_svg(
        &plots_dir.join("per_label_ap.svg"),
        plots::ap_bars(
            "test AP per label (red: privileged)",
            &m.labels,
            &m.per_label_ap,
            &mask,
        ),
    )?;

    let config_text = std::fs::read_to_string(paths.config()).unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Run `{}` — method `{}`\n",
        summary.name, summary.method
    );
    let _ = writeln!(
        md,
        "Backbone: {} ({} layers, D = {}), trainable layers: {}; reference: {}.\n",
        summary.backbone_source,
        summary.vit.num_hidden_layers,
        summary.vit.hidden_size,
        summary.trainable_layers,
        summary.reference.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        md,
        "Selected epoch {} on the **{}** split; test metrics over the {} (samples: {}), in %. Training took {:.1} s.\n",
        m.best_epoch.map_or("–".into(), |e| (e + 1).to_string()),
        m.selected_on,
        m.averaging,
        m.samples,
        summary.train_seconds
    );
    let _ = writeln!(
        md,
        "| group | mAP | sample F1 | accuracy | EMR |\n|---|---|---|---|---|"
    );
    for (name, g) in [
        ("all", &m.groups.all),
        ("P (privileged)", &m.groups.privileged),
        ("P̄ (non-privileged)", &m.groups.non_privileged),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            p(g.map),
            p(g.sample_f1),
            p(g.accuracy),
            p(g.emr)
        );
    }
    if !log.warnings.is_empty() {
        let _ = writeln!(md, "\n## Warnings\n");
        for w in &log.warnings {
            let _ = writeln!(
                md,
                "- step {} (epoch {}): {}",
                w.step,
                w.epoch + 1,
                w.message
            );
        }
    }
    let _ = writeln!(md, "\n## Training\n");
    let _ = writeln!(md, "![group losses](plots/losses.svg)\n");
    if has_alpha {
        let _ = writeln!(md, "![alpha](plots/alpha.svg)\n");
    }
    let _ = writeln!(md, "![validation mAP](plots/val_map.svg)\n");
    if !log.epochs.is_empty() {
        let _ = writeln!(md, "| epoch | train loss | {split} mAP all | P | P̄ | best | seconds |\n|---|---|---|---|---|---|---|");
        for e in &log.epochs {
            let _ = writeln!(
                md,
                "| {} | {:.4} | {} | {} | {} | {} | {:.1} |",
                e.epoch + 1,
                e.train_loss,
                p(e.map.all),
                p(e.map.privileged),
                p(e.map.non_privileged),
                if e.improved { "*" } else { "" },
                e.seconds
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## Per-label AP (test)\n\n![per-label AP](plots/per_label_ap.svg)\n"
    );
    let _ = writeln!(md, "## Resolved config\n\n```toml\n{}```", config_text);
    fairpo_io::atomic_write(paths.report(), md.as_bytes())?;
    Ok(paths.report())
}

/// One run as a comparison row.
#[derive(Debug, Clone)]
struct RunRow {
    series: String,
    method: String,
    m: MetricsFile,
    key_config: String,
}

/// Name without a trailing seed suffix `-s<N>`.
fn series_name(name: &str) -> String {
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

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

fn cell(values: &[Option<f64>]) -> (String, Option<f64>) {
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

/// The comparison of several runs: a Markdown table (the paper's Table 1/2 layout),
/// and optionally files in `out` (`report.md`, `map.svg`). Returns the Markdown.
pub(crate) fn compare(
    runs: &[PathBuf],
    out: Option<&Path>,
    paper_dataset: Option<&str>,
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
    let sft_map_p: Option<f64> = order
        .iter()
        .find(|s| groups[*s][0].method == "bce")
        .and_then(|s| {
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
        let delta = match (g[0].method.as_str(), map_p_mean, sft_map_p) {
            ("bce", _, _) => "ref".to_string(),
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
        let cats: Vec<String> = chart_rows.iter().map(|r| r.0.clone()).collect();
        let vals: Vec<Vec<f64>> = chart_rows.iter().map(|r| r.1.clone()).collect();
        write_svg(
            &out.join("map.svg"),
            plots::grouped_bars("test mAP (%) per run", "mAP (%)", &cats, &["P", "P̄"], &vals),
        )?;
        let full = format!(
            "# Comparison\n\n{md}\n![mAP per run](map.svg)\n\nRuns: {}\n",
            runs.iter()
                .map(|r| format!("`{}`", r.display()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        fairpo_io::atomic_write(out.join("report.md"), full.as_bytes())?;
    }
    Ok(md)
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

#[cfg(test)]
mod tests {
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
