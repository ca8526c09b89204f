//! `fairpo-fuzz [TARGET ...|all] [--inputs N] [--seed S] [--out DIR]`: the fuzzing campaign.
//! Prints one line per target (inputs, panics, slowest input, rate) and exits non-zero when
//! any input panicked; panicking inputs are saved under `DIR/crashes/`, the work folders under
//! `DIR/work/` (after an abort, the mutated file there is the culprit).

use std::path::PathBuf;

// Runaway allocations abort (memory allocation failed) instead of swapping the machine.
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, 4 << 30);

fn main() -> anyhow::Result<()> {
    let mut names = Vec::new();
    let (mut inputs, mut seed, mut out) = (100_000u64, 1u64, PathBuf::from("target/fuzz"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--inputs" => inputs = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--out" => out = PathBuf::from(value()?),
            "-h" | "--help" => {
                let all: Vec<_> = fairpo_fuzz::targets::all().iter().map(|t| t.name).collect();
                println!(
                    "fairpo-fuzz [TARGET ...|all] [--inputs N] [--seed S] [--out DIR]\ntargets: {}",
                    all.join(" ")
                );
                return Ok(());
            }
            s => names.push(s.to_string()),
        }
    }
    let targets: Vec<_> = fairpo_fuzz::targets::all()
        .into_iter()
        .filter(|t| names.is_empty() || names.iter().any(|n| n == "all" || n == t.name))
        .collect();
    if targets.is_empty() {
        anyhow::bail!("no target named {names:?} (see --help)");
    }
    let mut failed = false;
    println!("| target | inputs | panics | slowest input (ms) | inputs/s |\n|---|---|---|---|---|");
    for t in &targets {
        let work = out.join("work").join(t.name);
        let _ = std::fs::remove_dir_all(&work);
        let started = std::time::Instant::now();
        let r = fairpo_fuzz::run_target(t, &work, &out.join("crashes"), inputs, seed, &mut |n| {
            if n % 100_000 == 0 {
                let rate = n as f64 / started.elapsed().as_secs_f64();
                eprintln!(
                    "  {}: {n}/{inputs} ({rate:.0}/s, eta {:.0} s)",
                    t.name,
                    (inputs - n) as f64 / rate
                );
            }
        })?;
        println!(
            "| {} | {} | {} | {:.1} | {:.0} |",
            t.name,
            r.inputs,
            r.panics.len(),
            1e3 * r.slowest,
            r.inputs as f64 / r.seconds
        );
        for (i, msg, saved) in r.panics.iter().take(5) {
            println!("    input {i}: {msg} ({})", saved.display());
        }
        failed |= !r.panics.is_empty();
    }
    if failed {
        anyhow::bail!("some inputs panicked");
    }
    Ok(())
}
