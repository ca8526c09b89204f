//! `fairpo`: the command-line front end of the FairPO workspace.
//!
//! Each subcommand lives in its own module under `cmd/`; this file only parses
//! arguments, sets up logging and turns errors into a one-line message and a
//! non-zero exit code.

use clap::{Parser, Subcommand};
use fairpo_train::cmd;

// glibc hands large freed buffers back to the OS, so every fresh tensor page-faults; see
// the workspace Cargo.toml.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// FairPO: robust preference optimisation for fair multi-label learning.
#[derive(Debug, Parser)]
#[command(name = "fairpo", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train one run (BCE-SFT, RW, GDRO, FairPO-DPO/SimPO/CPO) from a config.
    Train(cmd::train::TrainArgs),
    /// Re-evaluate a finished run's selected model on its test or val split.
    Eval(cmd::eval::EvalArgs),
    /// Apply a finished run's model to new images: labels and probabilities as CSV or JSON Lines.
    Predict(cmd::predict::PredictArgs),
    /// Write a finished run's model as a Hugging Face-style folder (ViTModel + heads).
    Export(cmd::export::ExportArgs),
    /// Compare finished runs in the paper's Table 1/2 layout (Markdown + SVG).
    Report(cmd::report::ReportArgs),
    /// Compute mAP, sample F1, exact match and accuracy per label group from saved scores.
    Metrics(cmd::metrics::MetricsArgs),
    /// Dataset tools: label statistics, the generated demo set.
    Data(cmd::data::DataArgs),
    /// Backbone tools: a seeded random ViT as a Hugging Face folder.
    Backbone(cmd::backbone::BackboneArgs),
    /// Extract CLS features of a frozen ViT (Hugging Face folder) over images to .npy.
    Features(cmd::features::FeaturesArgs),
    /// Check a device before a long run: parity, host kernels vs device, throughput, a short run.
    Selftest(cmd::selftest::SelftestArgs),
}

fn main() -> std::process::ExitCode {
    fairpo_vit::mimalloc_keep_freed_memory();
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => cmd::train::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Predict(args) => cmd::predict::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Report(args) => cmd::report::run(args),
        Command::Metrics(args) => cmd::metrics::run(args),
        Command::Data(args) => cmd::data::run(args),
        Command::Features(args) => cmd::features::run(args),
        Command::Backbone(args) => cmd::backbone::run(args),
        Command::Selftest(args) => cmd::selftest::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line: "reading S.npy: not a .npy file".
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `info`), so stdout stays clean for `--json`.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
