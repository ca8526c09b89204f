//! `fairpo data stats` and `fairpo data generate`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use fairpo_data::{generate_demo, DatasetFormat, DatasetSpec, DemoOptions, LabelSet, LabelStats};

/// Dataset tools.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

/// `fairpo data <command>`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Per-label image counts, the privileged labels and a frequency histogram of a split.
    Stats(StatsArgs),
    /// Write the seeded synthetic demo set (COCO 2014 layout) to a folder.
    Generate(GenerateArgs),
}

/// `fairpo data stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Read the `[data]` table of a run config; the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Layout: coco, coco-yolo, nus, nus-combined or list (default coco).
    #[arg(long)]
    pub format: Option<String>,
    /// Dataset root folder.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// `train` or `test`, or a split name of the layout (e.g. val2014, Test, extra.csv).
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Privileged set = the ceil(F*T) least frequent labels (default 0.2).
    #[arg(long, conflicts_with = "privileged_count")]
    pub privileged_fraction: Option<f64>,
    /// Privileged set = the N least frequent labels.
    #[arg(long)]
    pub privileged_count: Option<usize>,
    /// Drop images without any label (default: keep them).
    #[arg(long)]
    pub drop_empty: bool,
    /// Skip listed images missing on disk (default: error).
    #[arg(long)]
    pub skip_missing: bool,
    /// Print `{"labels", "counts", "num_images", "privileged"}` as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `fairpo data generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output folder (created; must be empty unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed; the same seed writes identical files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Total images (80 % train2014 / Train, 20 % val2014 / Test).
    #[arg(long, default_value_t = 5000)]
    pub images: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Label vocabulary and layout: `shapes` (the demo's 16, COCO layout), `coco` (MS-COCO's 80
    /// category names and ids, COCO layout) or `nus-wide` (NUS-WIDE's 81 concepts, its official
    /// layout). The last two are stand-ins of the real sets' shape, for rehearsals.
    #[arg(long, default_value = "shapes", value_parser = parse_label_set)]
    pub labels: LabelSet,
    /// Also write a PNG grid of the labels and sample images here (shapes only).
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Write into a non-empty folder.
    #[arg(long)]
    pub force: bool,
}

fn parse_label_set(s: &str) -> Result<LabelSet, String> {
    match s {
        "shapes" => Ok(LabelSet::Shapes),
        "coco" => Ok(LabelSet::Coco),
        "nus-wide" => Ok(LabelSet::NusWide),
        other => Err(format!("expected shapes, coco or nus-wide, got {other:?}")),
    }
}

/// Runs `fairpo data ...`.
pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Stats(a) => stats(a),
        DataCommand::Generate(a) => generate(a),
    }
}

fn spec_from_config(path: &PathBuf) -> anyhow::Result<DatasetSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let Some(data) = value.get("data") else {
        bail!("{}: no [data] table", path.display());
    };
    let spec: DatasetSpec = data
        .clone()
        .try_into()
        .with_context(|| format!("{}: invalid [data] table", path.display()))?;
    Ok(spec)
}

fn stats(a: StatsArgs) -> anyhow::Result<()> {
    print!("{}", stats_text(&a)?);
    Ok(())
}

/// What `fairpo data stats` prints (JSON line or table).
pub fn stats_text(a: &StatsArgs) -> anyhow::Result<String> {
    use std::fmt::Write;
    let mut spec = match &a.config {
        Some(p) => spec_from_config(p)?,
        None => DatasetSpec::default(),
    };
    if let Some(f) = &a.format {
        spec.format = DatasetFormat::parse(f)?;
    }
    if let Some(r) = &a.root {
        spec.root = r.clone();
    } else if a.config.is_none() {
        bail!("give --root DIR (and --format) or --config FILE");
    }
    if let Some(f) = a.privileged_fraction {
        if !(f > 0.0 && f <= 1.0) {
            bail!("--privileged-fraction must be in (0, 1], got {f}");
        }
        spec.privileged = fairpo_data::stats::privileged_fraction(f);
    }
    if let Some(c) = a.privileged_count {
        spec.privileged = fairpo_data::stats::privileged_count(c);
    }
    spec.drop_empty |= a.drop_empty;
    spec.skip_missing |= a.skip_missing;
    let dataset = match a.split.as_str() {
        "train" => spec.load_split(fairpo_data::Split::Train),
        "test" => spec.load_split(fairpo_data::Split::Test),
        other => spec.load_named(other),
    }
    .with_context(|| format!("loading the {} split of {}", a.split, spec.root.display()))?;
    let stats = LabelStats::of(&dataset, &spec.privileged)?;
    if a.json {
        return Ok(format!("{}\n", serde_json::to_string(&stats)?));
    }
    let r = &dataset.report;
    let mut out = String::new();
    writeln!(
        out,
        "{} ({:?} layout), split {}: {} images, {} labels",
        spec.root.display(),
        spec.format,
        dataset.split,
        dataset.len(),
        dataset.num_labels()
    )?;
    writeln!(
        out,
        "listed {}, kept {}, empty kept {}, empty dropped {}, missing skipped {}, repeated labels merged {}, parsed in {:.2} s",
        r.listed, r.kept, r.empty_kept, r.empty_dropped, r.missing_skipped, r.duplicate_labels, r.parse_seconds
    )?;
    let names: Vec<&str> = stats
        .privileged
        .iter()
        .map(|&i| stats.labels[i].as_str())
        .collect();
    writeln!(out, "privileged ({}): {}", names.len(), names.join(", "))?;
    writeln!(out)?;
    out.push_str(&stats.histogram(40));
    Ok(out)
}

fn generate(a: GenerateArgs) -> anyhow::Result<()> {
    if a.out.exists() && !a.force {
        let non_empty = std::fs::read_dir(&a.out)
            .with_context(|| format!("reading {}", a.out.display()))?
            .next()
            .is_some();
        if non_empty {
            bail!(
                "{} is not empty (use --force to write into it)",
                a.out.display()
            );
        }
    }
    let opts = DemoOptions {
        seed: a.seed,
        images: a.images,
        size: a.size,
        labels: a.labels,
    };
    if a.grid.is_some() && a.labels != LabelSet::Shapes {
        bail!("--grid draws the demo's shapes only (--labels shapes)");
    }
    let summary = generate_demo(&a.out, &opts)?;
    if let Some(grid) = &a.grid {
        fairpo_data::demo::write_demo_grid(grid, a.seed, a.size, 4, 3)?;
        tracing::info!("wrote sample grid {}", grid.display());
    }
    println!(
        "wrote {} train + {} test images of {}x{} px to {} in {:.1} s",
        summary.train_images,
        summary.val_images,
        a.size,
        a.size,
        summary.out.display(),
        summary.seconds
    );
    let names = a.labels.names();
    let counts: Vec<String> = names
        .iter()
        .zip(&summary.train_counts)
        .map(|(n, c)| format!("{n}={c}"))
        .collect();
    println!("train images per label: {}", counts.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_args(root: &std::path::Path) -> StatsArgs {
        StatsArgs {
            config: None,
            format: Some("coco".into()),
            root: Some(root.to_path_buf()),
            split: "train".into(),
            privileged_fraction: None,
            privileged_count: None,
            drop_empty: false,
            skip_missing: false,
            json: true,
        }
    }

    #[test]
    fn generate_then_stats_json_and_table() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("demo");
        run(DataArgs {
            command: DataCommand::Generate(GenerateArgs {
                out: out.clone(),
                seed: 3,
                images: 50,
                size: 16,
                labels: LabelSet::Shapes,
                grid: None,
                force: false,
            }),
        })
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&stats_text(&stats_args(&out)).unwrap()).unwrap();
        assert_eq!(json["num_images"], 40);
        assert_eq!(json["labels"].as_array().unwrap().len(), 16);
        assert_eq!(json["privileged"].as_array().unwrap().len(), 4);
        let table = stats_text(&StatsArgs {
            json: false,
            privileged_count: Some(2),
            ..stats_args(&out)
        })
        .unwrap();
        assert!(
            table.contains("40 images, 16 labels") && table.contains("privileged (2)"),
            "{table}"
        );
        // A second generate into the same folder needs --force.
        let err = run(DataArgs {
            command: DataCommand::Generate(GenerateArgs {
                out: out.clone(),
                seed: 3,
                images: 50,
                size: 16,
                labels: LabelSet::Shapes,
                grid: None,
                force: false,
            }),
        })
        .unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }

    #[test]
    fn stats_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let err = stats_text(&stats_args(&dir.path().join("missing"))).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
        let err = stats_text(&StatsArgs {
            format: Some("voc".into()),
            ..stats_args(dir.path())
        })
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown dataset format"),
            "{err:#}"
        );
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "[data]\nformat = \"coco\"\nbogus = 1\n").unwrap();
        let err = stats_text(&StatsArgs {
            config: Some(cfg),
            root: None,
            ..stats_args(dir.path())
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
    }
}
