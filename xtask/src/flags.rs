//! Command-line options of `cargo xtask`.

use anyhow::{bail, Context, Result};

use crate::USAGE;

/// The options every command shares.
#[derive(Default)]
pub(crate) struct Opts {
    pub positional: Vec<String>,
    pub seed: Option<u64>,
    pub seeds: Option<u64>,
    pub epochs: Option<usize>,
    pub images: Option<usize>,
    pub method: Option<String>,
    pub rates: bool,
    pub dataset: Option<String>,
    pub sets: Vec<String>,
    pub fresh: bool,
    pub out: Option<std::path::PathBuf>,
    pub binary: Option<std::path::PathBuf>,
    pub emit_jobs: bool,
}

impl Opts {
    /// Parses the arguments after the command name.
    pub(crate) fn parse(args: &[String]) -> Result<Self> {
        let mut o = Opts::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
            match a.as_str() {
                "--seed" => {
                    o.seed = Some(
                        value("--seed")?
                            .parse()
                            .context("--seed: expected an integer")?,
                    )
                }
                "--seeds" => {
                    o.seeds = Some(
                        value("--seeds")?
                            .parse()
                            .context("--seeds: expected an integer")?,
                    )
                }
                "--epochs" => {
                    o.epochs = Some(
                        value("--epochs")?
                            .parse()
                            .context("--epochs: expected an integer")?,
                    )
                }
                "--images" => {
                    o.images = Some(
                        value("--images")?
                            .parse()
                            .context("--images: expected an integer")?,
                    )
                }
                "--dataset" => {
                    let d = value("--dataset")?.clone();
                    if !["demo", "coco", "nus"].contains(&d.as_str()) {
                        bail!("--dataset: expected demo, coco or nus, got {d:?}");
                    }
                    o.dataset = Some(d);
                }
                "--set" => o.sets.push(value("--set")?.clone()),
                "--fresh" => o.fresh = true,
                "--out" => o.out = Some(value("--out")?.into()),
                "--binary" => o.binary = Some(value("--binary")?.into()),
                "--emit-jobs" => {
                    let kind = value("--emit-jobs")?;
                    if kind != "slurm" {
                        bail!("--emit-jobs: expected slurm, got {kind:?}");
                    }
                    o.emit_jobs = true;
                }
                "--rates" => o.rates = true,
                "--method" => o.method = Some(value("--method")?.clone()),
                s if s.starts_with("--") => bail!("unknown option {s}\n\n{USAGE}"),
                s => o.positional.push(s.to_string()),
            }
        }
        Ok(o)
    }
}

/// The seeds a study runs: `--seeds N` (N > 1) gives N seeds counting up from `--seed` (default
/// 42), else the one `--seed` (or the presets' own).
pub(crate) fn seeds(o: &Opts) -> Vec<Option<u64>> {
    match o.seeds {
        None | Some(0) | Some(1) => vec![o.seed],
        Some(n) => (0..n).map(|i| Some(o.seed.unwrap_or(42) + i)).collect(),
    }
}
