//! `fairpo selftest`: the device, parity, throughput and a short run, as one table
//! (README, "Self-test"); exits non-zero when a check fails.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::selftest::{self, SelftestOptions};

/// Arguments of `fairpo selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// The device to test: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Small shapes and one batch size (seconds on a CPU; what CI runs) instead of ViT-B/16.
    #[arg(long)]
    pub quick: bool,
    /// Folder holding `configs/` and `crates/fairpo-vit/tests/fixtures/` (default: the
    /// repository this binary was built from, else the executable's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Also write the table to this Markdown file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `fairpo selftest`.
pub fn run(args: SelftestArgs) -> Result<()> {
    let root = match args.root {
        Some(r) if selftest::is_root(&r) => r,
        Some(r) => bail!(
            "--root {}: expected a folder holding configs/ and crates/fairpo-vit/tests/fixtures/ \
             (the repository, or a GPU bundle)",
            r.display()
        ),
        None => selftest::default_root().context(
            "no configs/ and crates/fairpo-vit/tests/fixtures/ found in the repository this \
             binary was built from or beside the executable; pass --root DIR",
        )?,
    };
    let opts = SelftestOptions {
        device: args.device.parse()?,
        quick: args.quick,
        root,
    };
    let report = selftest::run(&opts)?;
    let table = report.to_markdown();
    println!("{table}");
    if let Some(out) = &args.out {
        fairpo_io::atomic_write(out, table.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    match report.failures() {
        0 => Ok(()),
        n => bail!("{n} self-test check(s) failed (rows marked FAIL above)"),
    }
}
