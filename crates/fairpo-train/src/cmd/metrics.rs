//! `fairpo metrics` (placeholder until the metrics crate lands).
use clap::Args;

#[derive(Debug, Args)]
pub struct MetricsArgs {}

pub fn run(_args: MetricsArgs) -> anyhow::Result<()> {
    anyhow::bail!("fairpo metrics is being implemented")
}
