//! Benchmark: the per-label heads (forward + backward) and every objective at the paper's
//! shapes, B = 32, T = 80, D = 768, on the CPU backend (burn Flex, f32, with autodiff).
//!
//! Rows: batched heads (this crate's design) vs a loop over 80 independent `nn::Linear`
//! stacks; each objective's forward + backward on given logits (confusing-label sampling on the
//! host included). When `python3` with torch is available, `bench/objectives.py` runs the same
//! shapes in PyTorch eager and the ratio is printed; otherwise the comparison is skipped with
//! the reason.
//!
//! Run: `cargo xtask bench objectives` (or `cargo run --example bench_objectives -p fairpo-objectives`).

use std::process::Command;
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::Distribution;
use fairpo_heads::HeadsConfig;
use fairpo_objectives::{compute, Method, ObjectiveConfig, ObjectiveInputs};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

// glibc hands large freed buffers back to the OS, so every fresh tensor page-faults; see
// the workspace Cargo.toml.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

type AD = Autodiff<Flex>;

const B: usize = 32;
const T: usize = 80;
const D: usize = 768;
const WARMUP: usize = 3;
const ITERS: usize = 15;

/// Fastest wall time of `f` in milliseconds over `ITERS` runs after `WARMUP` (the minimum is
/// the least disturbed by other processes on a shared machine; the median is printed to stderr).
fn time_ms(mut f: impl FnMut()) -> f64 {
    for _ in 0..WARMUP {
        f();
    }
    let mut v: Vec<f64> = (0..ITERS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    eprintln!("  min {:.2} ms, median {:.2} ms", v[0], v[ITERS / 2]);
    v[0]
}

fn main() {
    let device = Default::default();
    let hidden = vec![256, 64, 16, 4];
    let mut rows: Vec<(String, f64)> = Vec::new();

    // Heads: batched (stacked weights).
    let heads = HeadsConfig::new(T, D)
        .with_hidden(hidden.clone())
        .with_seed(1)
        .init::<AD>(&device);
    let z = Tensor::<AD, 2>::random([B, D], Distribution::Normal(0.0, 1.0), &device);
    let ms = time_ms(|| {
        let s = heads.forward(z.clone());
        let _grads = s.sum().backward();
    });
    rows.push(("heads fwd+bwd, batched (stacked [T,in,out])".into(), ms));
    let ms_fwd = time_ms(|| {
        let _ = heads.forward(z.clone()).into_data();
    });
    rows.push(("heads fwd only, batched".into(), ms_fwd));

    // Heads: a loop over T independent modules of the same sizes.
    let sizes: Vec<usize> = std::iter::once(D)
        .chain(hidden.iter().copied())
        .chain([1])
        .collect();
    let loop_heads: Vec<Vec<Linear<AD>>> = (0..T)
        .map(|_| {
            sizes
                .windows(2)
                .map(|io| LinearConfig::new(io[0], io[1]).init(&device))
                .collect()
        })
        .collect();
    let loop_forward = |z: &Tensor<AD, 2>| {
        let cols: Vec<Tensor<AD, 2>> = loop_heads
            .iter()
            .map(|layers| {
                let mut h = z.clone();
                for (i, l) in layers.iter().enumerate() {
                    h = l.forward(h);
                    if i + 1 < layers.len() {
                        h = relu(h);
                    }
                }
                h
            })
            .collect();
        Tensor::cat(cols, 1)
    };
    let ms = time_ms(|| {
        let s = loop_forward(&z);
        let _grads = s.sum().backward();
    });
    rows.push(("heads fwd+bwd, loop over 80 nn::Linear stacks".into(), ms));

    // Objectives on fixed logits (leaf with grad), forward + backward.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let base = Tensor::<AD, 2>::random([B, T], Distribution::Normal(0.0, 2.0), &device);
    let reference = Tensor::<AD, 2>::random([B, T], Distribution::Normal(0.0, 2.0), &device);
    let targets = Tensor::<AD, 2>::random([B, T], Distribution::Bernoulli(0.1), &device);
    let privileged: Vec<bool> = (0..T).map(|t| t % 5 == 0).collect(); // 16 of 80
    for method in [
        Method::Bce,
        Method::Reweighted,
        Method::Gdro,
        Method::Dpo,
        Method::Simpo,
        Method::Cpo,
    ] {
        let cfg = ObjectiveConfig::new(method);
        let ms = time_ms(|| {
            let logits = base.clone().detach().require_grad();
            let out = compute(
                &cfg,
                ObjectiveInputs {
                    logits,
                    targets: targets.clone(),
                    privileged: &privileged,
                    reference: Some(reference.clone()),
                },
                &mut rng,
            )
            .expect("objective");
            let _grads = out.combine(&[0.5, 0.5]).backward();
        });
        rows.push((format!("objective {method:?} fwd+bwd (from logits)"), ms));
    }

    // Heads + CPO end to end: what one training step adds on top of the backbone.
    let cfg = ObjectiveConfig::new(Method::Cpo);
    let ms = time_ms(|| {
        let s = heads.forward(z.clone());
        let out = compute(
            &cfg,
            ObjectiveInputs {
                logits: s,
                targets: targets.clone(),
                privileged: &privileged,
                reference: Some(reference.clone()),
            },
            &mut rng,
        )
        .expect("objective");
        let _grads = out.combine(&[0.5, 0.5]).backward();
    });
    rows.push(("heads + CPO fwd+bwd (per training step)".into(), ms));

    let python = run_python();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\nmachine: {cpus} CPUs, load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("\nfairpo objectives benchmark: B={B}, T={T}, D={D}, heads {sizes:?}, CPU burn Flex f32, fastest of {ITERS} after {WARMUP} warm-up runs\n");
    println!("| what | burn ms | PyTorch ms | burn / PyTorch |");
    println!("|---|---:|---:|---:|");
    for (name, ms) in &rows {
        let py = python
            .as_ref()
            .ok()
            .and_then(|m| m.get(name.as_str()).copied());
        match py {
            Some(p) => println!("| {name} | {ms:.2} | {p:.2} | {:.2} |", ms / p),
            None => println!("| {name} | {ms:.2} | - | - |"),
        }
    }
    let batched = rows[0].1;
    let looped = rows[2].1;
    println!(
        "\nheads fwd+bwd: batched {batched:.1} ms, loop over 80 modules {looped:.1} ms (loop / batched = {:.2})",
        looped / batched
    );
    if let Err(why) = python {
        println!("PyTorch comparison skipped: {why}");
    }
}

/// Runs `bench/objectives.py`; it prints `name<TAB>ms` lines with the same row names.
fn run_python() -> Result<std::collections::HashMap<String, f64>, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/objectives.py");
    let out = Command::new("python3")
        .arg(script)
        .output()
        .map_err(|e| format!("python3 not runnable ({e})"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "bench/objectives.py failed: {}",
            err.lines().last().unwrap_or("no output")
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}
