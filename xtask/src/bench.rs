//! `bench`: runs each crate's `examples/bench_<name>.rs` and prints its table.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cargo;

/// Finds `crates/*/examples/bench_<name>.rs` and runs each selected one.
pub(crate) fn bench(which: &str) -> Result<()> {
    let mut found: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir("crates").context("reading crates/")? {
        let krate = entry?.path();
        let Ok(examples) = std::fs::read_dir(krate.join("examples")) else {
            continue;
        };
        for ex in examples.flatten() {
            let file = ex.file_name().to_string_lossy().to_string();
            if let Some(name) = file
                .strip_prefix("bench_")
                .and_then(|f| f.strip_suffix(".rs"))
            {
                let krate_name = krate.file_name().unwrap().to_string_lossy().to_string();
                found.push((krate_name, name.to_string()));
            }
        }
    }
    found.sort();
    let selected: Vec<_> = found
        .iter()
        .filter(|(_, n)| which == "all" || n == which)
        .collect();
    if selected.is_empty() {
        let names: Vec<_> = found.iter().map(|(_, n)| n.as_str()).collect();
        bail!("no benchmark {which:?}; available: {}", names.join(", "));
    }
    let mut summary = Vec::new();
    for (krate, name) in selected {
        println!("\n=== bench {name} ({krate}) ===");
        let t = Instant::now();
        let status = Command::new(cargo())
            .args([
                "run",
                "--quiet",
                "-p",
                krate,
                "--example",
                &format!("bench_{name}"),
            ])
            .status()
            .context("running cargo run --example")?;
        summary.push((name.clone(), status.success(), t.elapsed().as_secs_f64()));
    }
    println!("\n| benchmark | status | wall time (s) |\n|---|---|---|");
    for (name, ok, secs) in &summary {
        println!(
            "| {name} | {} | {secs:.1} |",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    if summary.iter().any(|(_, ok, _)| !ok) {
        bail!("some benchmarks failed");
    }
    Ok(())
}
