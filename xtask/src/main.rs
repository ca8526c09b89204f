//! `cargo xtask`: project automation as a plain binary (see `.cargo/config.toml`).
//!
//! Every command shells out to the `fairpo` binary (built once in the dev profile) or to
//! `cargo run --example`, so what xtask does is exactly what a user could type.

mod bench;
mod flags;
mod gpu_bundle;
mod jobs;
mod parity;
mod rehearse;
mod runs;
mod study;
mod tune;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

use crate::flags::Opts;

pub const USAGE: &str = "\
cargo xtask <command>

  train <preset> [--seed N] [--set key=value ...] [--fresh]
        train configs/<preset>.toml; trains the BCE-SFT reference first when the preset
        needs it and it is missing; for demo presets generates the demo data when absent;
        ends with the comparison table (reference vs this run) and the report path.
  reproduce [--dataset demo|coco|nus] [--seeds N]
        the six methods (Tables 1/2) and a BCE fine-tuning control (FairPO-CPO's start and
        trainable layer, plain BCE) over N seeds (default 1), report with mean ± std and
        paired bootstrap intervals against BCE-SFT.
  ablate [--dataset demo|coco|nus] [--seeds N]
        FairPO-CPO ablations (Tables 3/4): configs/ablations/*.toml over <dataset>-cpo.
  sweep [--dataset demo|coco|nus]
        FairPO-CPO sensitivity to beta and epsilon (Tables 6/7).
  tune [--dataset demo|coco|nus] [--method sft|rw|gdro|dpo|simpo|cpo|all] [--rates] [--epochs N]
        the appendix E grids of each method (SFT lr; RW lambda_P; GDRO eta_alpha; DPO beta x
        epsilon; SimPO beta x gamma x epsilon; CPO beta x lambda_CPO x epsilon; --rates adds
        FairPO's lr and eta_alpha grids), chosen on the validation split; prints the Table 5
        layout and writes runs/reports/<dataset>-tune. Finished runs are reused by name (the
        grid values): pass --fresh after changing --epochs or --set.
  parity [--epochs N] [--seeds N | --seed N]
        BCE-SFT on the demo set from shared starts (seeds 0..N-1, default 3; 10 epochs), fairpo
        vs PyTorch (bench/parity_demo.py; needs python3 with torch, transformers, Pillow and
        scikit-learn): per-epoch train loss and test mAP side by side; fails if fairpo's test mAP
        (mean of the last 3 epochs and the seeds) is more than 1 point below PyTorch's.
  rehearse [--dataset coco|nus] [--epochs N] [--images N] [--fresh]
        the real-data path at ViT-B/16 shapes on generated stand-ins (a random ViT-B/16 as a
        Hugging Face folder; 224 px sets in the official COCO and NUS-WIDE layouts with their
        real label names; default 200 images, 2 epochs): every coco-/nus- preset, the trunk
        cache on and off, GRPO protocols side by side, an ablation, the released-code overlay
        and a killed-and-resumed run; fails when a run, a file, the cache, alpha_P (>= 0.1 over
        the second half) or the resume check fails. Everything goes to runs/rehearsal/.
  gpu-bundle [--out target/gpu-bundle] [--binary PATH]
        builds the cuda release binary (no GPU needed; CUDARC_CUDA_VERSION=13000 unless nvcc
        is found or it is set), strips and xz-compresses it, checks that it links only the C
        runtime and needs GLIBC <= 2.35, and writes a folder with it, the configs, the ViT
        fixtures and run.sh (runs `fairpo selftest` on the GPU and prints the table); --binary
        bundles an already-built binary instead.
  --emit-jobs slurm [--out DIR] (with reproduce, ablate, sweep, tune)
        plans the study's runs instead of training them: writes runs/jobs/<study>/ with one
        SLURM job array per dependency stage (BCE-SFT references first), submit.sh chaining
        them with afterok, and jobs.tsv; each task runs one `fairpo train` ($FAIRPO, default
        target/release/fairpo, on $FAIRPO_DEVICE, default cuda:0), resuming a requeued run.
        Afterwards the same command without --emit-jobs reuses the runs and writes the report.
  bench [metrics|data|vit|objectives|train|all]
        runs each crate's examples/bench_<name>.rs and prints its table.
";

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invoked_from = std::env::current_dir().context("reading the current folder")?;
    let root = workspace_root()?;
    std::env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))?;
    let Some((cmd, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    let mut opts = Opts::parse(rest)?;
    // Paths typed on the command line are relative to where xtask was run, not to the root.
    for p in [&mut opts.out, &mut opts.binary].into_iter().flatten() {
        if p.is_relative() {
            *p = invoked_from.join(&*p);
        }
    }
    if opts.emit_jobs {
        if !["reproduce", "ablate", "sweep", "tune"].contains(&cmd.as_str()) {
            bail!("--emit-jobs works with reproduce, ablate, sweep and tune, not {cmd}");
        }
        if opts.fresh {
            bail!("--emit-jobs cannot plan --fresh (a task skips a finished run): delete the runs to redo instead");
        }
        if opts.rates {
            bail!("--emit-jobs cannot plan tune --rates (its grids depend on the first grid's results): emit the first grid, then run tune --rates after it finished");
        }
        jobs::start_planning(opts.out.clone());
    }
    match cmd.as_str() {
        "train" => study::train(&opts),
        "reproduce" => study::reproduce(&opts),
        "ablate" => study::ablate(&opts),
        "sweep" => study::sweep(&opts),
        "parity" => {
            let seeds: Vec<u64> = match (opts.seed, opts.seeds) {
                (Some(s), _) => vec![s],
                (None, Some(0)) => bail!("--seeds must be at least 1"),
                (None, n) => (0..n.unwrap_or(3)).collect(),
            };
            parity::run(opts.epochs.unwrap_or(10), &seeds)
        }
        "rehearse" => rehearse::run(&opts),
        "tune" => tune::tune(&opts),
        "gpu-bundle" => gpu_bundle::run(opts.out.as_deref(), opts.binary.as_deref()),
        "bench" => bench::bench(opts.positional.first().map(String::as_str).unwrap_or("all")),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown xtask command {other:?}\n\n{USAGE}"),
    }
}

fn workspace_root() -> Result<PathBuf> {
    // Tests run xtask in a scratch copy of the repository's configs.
    if let Some(root) = std::env::var_os("FAIRPO_XTASK_ROOT") {
        return Ok(root.into());
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest
        .parent()
        .context("xtask has no parent folder")?
        .to_path_buf())
}

/// The cargo that runs xtask (or `cargo`).
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}
