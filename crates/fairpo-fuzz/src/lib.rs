//! Mutation fuzzing of every parser of user input, on the stable toolchain.
//!
//! Each [`targets::Target`] names a parser, the fixture files that seed it and the one file
//! that is mutated. [`run_target`] writes `n` mutated inputs ([`mutate::mutate`], seeded, so
//! input `i` of a run is reproducible) into a work folder and calls the parser on each,
//! catching panics; a watchdog aborts on an input that runs longer than [`HANG_SECONDS`], and
//! the `fairpo-fuzz` binary caps the process's memory so a runaway allocation aborts too. After
//! an abort the mutated file in the (kept) work folder is the culprit.
//!
//! `cargo run -p fairpo-fuzz -- all --inputs 1000000` is the long campaign; the test suite
//! runs a few thousand inputs per target (`tests/smoke.rs`).

pub mod mutate;
pub mod targets;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;

pub use targets::{Seed, Target};

/// Longest time one input may take before the run is treated as hung.
pub const HANG_SECONDS: u64 = 20;

/// What one target's run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs tried.
    pub inputs: u64,
    /// Inputs whose call panicked, with the first line of the message and the saved input.
    pub panics: Vec<(u64, String, PathBuf)>,
    /// Slowest single input, seconds.
    pub slowest: f64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Copies `src` (a folder) into `dst`.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &to)?;
        } else {
            std::fs::copy(e.path(), to)?;
        }
    }
    Ok(())
}

/// Prepares `work` for `target` and returns its seed inputs.
pub fn setup(target: &Target, work: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let repo = targets::repo();
    if let Some(tree) = target.tree {
        copy_tree(&repo.join(tree), work)?;
    }
    std::fs::create_dir_all(work)?;
    let mut seeds = Vec::new();
    for s in target.seeds {
        seeds.push(match s {
            Seed::File(p) => {
                std::fs::read(repo.join(p)).map_err(|e| anyhow::anyhow!("seed {p}: {e}"))?
            }
            Seed::Text(t) => t.as_bytes().to_vec(),
            Seed::Made(f) => f(work),
        });
    }
    // The committed corpus (inputs that once failed, kept as regression seeds).
    let corpus = repo.join("crates/fairpo-fuzz/corpus").join(target.name);
    if let Ok(rd) = std::fs::read_dir(&corpus) {
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            seeds.push(std::fs::read(&f)?);
        }
    }
    Ok(seeds)
}

/// Runs `inputs` mutated inputs of `target` in `work`; panicking inputs are saved in
/// `crashes`. Seeds themselves are tried first, unmutated.
pub fn run_target(
    target: &Target,
    work: &Path,
    crashes: &Path,
    inputs: u64,
    seed: u64,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<Report> {
    let seeds = setup(target, work)?;
    let file = work.join(target.file);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let started = Instant::now();
    let mut report = Report::default();

    // Watchdog: the index and start time of the input in progress.
    let current = Arc::new(AtomicU64::new(u64::MAX));
    let since = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, since, done) = (current.clone(), since.clone(), done.clone());
        let (name, file) = (target.name, file.clone());
        let t0 = started;
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let i = current.load(Ordering::Relaxed);
                let at = since.load(Ordering::Relaxed);
                let now = t0.elapsed().as_millis() as u64;
                if i != u64::MAX && now.saturating_sub(at) > HANG_SECONDS * 1000 {
                    eprintln!(
                        "fuzz {name}: input {i} has run for over {HANG_SECONDS} s (a hang); it is {}",
                        file.display()
                    );
                    std::process::abort();
                }
            }
        })
    };

    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let n_seeds = seeds.len() as u64;
    for i in 0..inputs {
        let input = if i < n_seeds {
            seeds[i as usize].clone()
        } else {
            let a = &seeds[rand::Rng::random_range(&mut rng, 0..seeds.len())];
            let b = &seeds[rand::Rng::random_range(&mut rng, 0..seeds.len())];
            mutate::mutate(a, b, &mut rng, target.focus)
        };
        std::fs::write(&file, &input)?;
        since.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        current.store(i, Ordering::Relaxed);
        let t = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| (target.call)(work)));
        report.slowest = report.slowest.max(t.elapsed().as_secs_f64());
        current.store(u64::MAX, Ordering::Relaxed);
        if let Err(p) = result {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(non-string panic)".into());
            std::fs::create_dir_all(crashes)?;
            let saved = crashes.join(format!("{}-{i}.bin", target.name));
            std::fs::write(&saved, &input)?;
            report
                .panics
                .push((i, msg.lines().next().unwrap_or("").to_string(), saved));
        }
        report.inputs = i + 1;
        if (i + 1) % 10_000 == 0 {
            progress(i + 1);
        }
    }
    std::panic::set_hook(quiet);
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
