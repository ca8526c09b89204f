//! A run's `report.md`: its settings, test metrics per group, per-label AP and training curves.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::plots::{self, Series};
use super::{p, smooth, write_svg};
use crate::eval::MetricsFile;
use crate::run::{read_log, RunPaths, RunSummary};

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
