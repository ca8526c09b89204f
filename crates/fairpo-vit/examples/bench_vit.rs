//! ViT-B/16 throughput: forward (inference) and the paper's training step, ours vs PyTorch.
//!
//! `cargo run -p fairpo-vit --example bench_vit -- [--iters N] [--batches 8,32] [--no-python]
//! [--device cpu|cuda]` (also `cargo xtask bench vit`).
//!
//! - forward: random ViT-B/16 (real shapes), CLS after the final LayerNorm, images/s, on Flex
//!   (default matmul-softmax attention, and burn's fused attention op at the first batch size)
//!   and NdArray.
//! - train step: frozen trunk (embeddings + layers 0..10) on the inner backend, trainable last
//!   layer + final LayerNorm + 80 per-label MLP heads (fairpo-heads, 768-256-64-16-4-1),
//!   BCE loss, backward, AdamW step.
//! - bf16 trunk: the first 11 layers through `ViTTrunk::with_precision(Bf16)` (on the CPU the
//!   AMX tile kernel), the last layer f32; forward and train step, against PyTorch's bf16
//!   autocast.
//! - PyTorch eager: `bench/vit.py` (transformers ViTModel, `torch.set_num_threads(2)`, same
//!   shapes and settings), run in the same process tree right after ours; the table shows
//!   ours / PyTorch. Skipped, with the reason printed, when python3/torch/transformers are
//!   missing.

use std::process::Command;
use std::time::Instant;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::softplus;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use fairpo_heads::{Heads, HeadsConfig};
use fairpo_vit::{AttentionKind, TrunkPrecision, ViTConfig, ViTTail};

// glibc hands large freed buffers back to the OS, so every fresh tensor page-faults; see
// the workspace Cargo.toml.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Module, Debug)]
struct Trainable<B: Backend> {
    tail: ViTTail<B>,
    heads: Heads<B>,
}

struct Opts {
    iters: usize,
    batches: Vec<usize>,
    python: bool,
    device: String,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        iters: 2,
        batches: vec![8, 32],
        python: true,
        device: "cpu".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iters" => o.iters = args.next().and_then(|v| v.parse().ok()).expect("--iters N"),
            "--batches" => {
                o.batches = args
                    .next()
                    .expect("--batches 8,32")
                    .split(',')
                    .map(|b| b.parse().expect("batch size"))
                    .collect()
            }
            "--no-python" => o.python = false,
            "--device" => o.device = args.next().expect("--device cpu|cuda"),
            "--help" | "-h" => {
                println!(
                    "bench_vit [--iters N] [--batches 8,32] [--no-python] [--device cpu|cuda]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

/// Seconds per iteration after one warm-up iteration.
fn time<F: FnMut()>(iters: usize, mut f: F) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_secs_f64() / iters as f64
}

fn forward_ips<B: Backend>(
    kind: AttentionKind,
    batch: usize,
    iters: usize,
    dev: &B::Device,
) -> f64 {
    let vit = ViTConfig::base_patch16_224()
        .init::<B>(dev)
        .with_attention(kind);
    let x = Tensor::<B, 4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), dev);
    let s = time(iters, || {
        let z = vit.forward(x.clone());
        let _ = z.into_data(); // forces the computation (and a device sync)
    });
    batch as f64 / s
}

/// Forward with the first 11 layers as a frozen trunk in `precision` and the last layer in
/// f32 (as in the paper's step); the applied precision is printed.
fn forward_trunk_ips<B: Backend>(
    precision: TrunkPrecision,
    batch: usize,
    iters: usize,
    dev: &B::Device,
) -> f64 {
    let (trunk, tail) = ViTConfig::base_patch16_224().init::<B>(dev).split(1);
    let (trunk, applied) = trunk.with_precision(precision);
    eprintln!("trunk: {}", applied.describe());
    let x = Tensor::<B, 4>::random([batch, 3, 224, 224], Distribution::Normal(0.0, 1.0), dev);
    let s = time(iters, || {
        let _ = tail.forward(trunk.forward(x.clone())).into_data();
    });
    batch as f64 / s
}

fn train_ips<B: AutodiffBackend>(
    precision: TrunkPrecision,
    batch: usize,
    iters: usize,
    dev: &B::Device,
) -> f64 {
    let vit = ViTConfig::base_patch16_224().init::<B>(dev);
    let (trunk, tail) = vit.split_frozen(1);
    let (trunk, applied) = trunk.with_precision(precision);
    eprintln!("trunk: {}", applied.describe());
    let heads = HeadsConfig::new(80, 768).init::<B>(dev);
    let mut model = Some(Trainable { tail, heads });
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.01)
        .init::<B, Trainable<B>>();
    let x = Tensor::<B::InnerBackend, 4>::random(
        [batch, 3, 224, 224],
        Distribution::Normal(0.0, 1.0),
        dev,
    );
    let y = Tensor::<B, 2>::random([batch, 80], Distribution::Bernoulli(0.1), dev);
    let s = time(iters, || {
        let m = model.take().expect("model");
        let hidden = Tensor::<B, 3>::from_inner(trunk.forward(x.clone()));
        let logits = m.heads.forward(m.tail.forward(hidden));
        // BCE with logits: softplus(s) - y·s.
        let loss = (softplus(logits.clone(), 1.0) - y.clone() * logits).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        model = Some(optim.step(1e-4, m, grads));
    });
    let _ = model.map(|m| m.valid());
    batch as f64 / s
}

/// Runs bench/vit.py; returns (name, batch) → img/s, or why it was skipped.
fn pytorch(o: &Opts) -> Result<Vec<(String, usize, f64)>, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/vit.py");
    let batches: Vec<String> = o.batches.iter().map(|b| b.to_string()).collect();
    let out = Command::new("python3")
        .args([
            script,
            "--threads",
            &std::thread::available_parallelism()
                .map(|n| n.get().min(2))
                .unwrap_or(2)
                .to_string(),
            "--iters",
            &o.iters.to_string(),
            "--batches",
            &batches.join(","),
            "--device",
            &o.device,
        ])
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_string();
        return Err(format!("bench/vit.py failed: {last}"));
    }
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Ok(j) = serde_json::from_str::<serde_json::Value>(line) {
            v.push((
                j["name"].as_str().unwrap_or("").to_string(),
                j["batch"].as_u64().unwrap_or(0) as usize,
                j["img_per_s"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    Ok(v)
}

fn main() {
    fairpo_vit::mimalloc_keep_freed_memory();
    let o = parse_opts();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("ViT-B/16 (random weights), 224 px, {} timed iteration(s) after 1 warm-up, {threads} CPU thread(s)", o.iters);
    let mut rows: Vec<(String, &'static str, usize, f64)> = Vec::new();
    // PyTorch rows are matched by measurement name: "forward", "train_step", and the
    // bf16-autocast "forward_bf16", "train_step_bf16".

    if o.device == "cpu" {
        let dev = Default::default();
        for &b in &o.batches {
            rows.push((
                "Flex".into(),
                "forward",
                b,
                forward_ips::<Flex>(AttentionKind::Matmul, b, o.iters, &dev),
            ));
            eprintln!("done: Flex forward b={b}");
        }
        let b0 = o.batches[0];
        rows.push((
            "Flex (fused attention op)".into(),
            "forward",
            b0,
            forward_ips::<Flex>(AttentionKind::Fused, b0, o.iters, &dev),
        ));
        for &b in &o.batches {
            rows.push((
                "NdArray".into(),
                "forward",
                b,
                forward_ips::<NdArray<f32>>(AttentionKind::Matmul, b, o.iters, &Default::default()),
            ));
            eprintln!("done: NdArray forward b={b}");
        }
        for &b in &o.batches {
            rows.push((
                "Flex, bf16 trunk".into(),
                "forward_bf16",
                b,
                forward_trunk_ips::<Flex>(TrunkPrecision::Bf16, b, o.iters, &dev),
            ));
            eprintln!("done: Flex bf16-trunk forward b={b}");
        }
        for &b in &o.batches {
            rows.push((
                "Flex".into(),
                "train_step",
                b,
                train_ips::<Autodiff<Flex>>(TrunkPrecision::F32, b, o.iters, &dev),
            ));
            eprintln!("done: Flex train b={b}");
        }
        for &b in &o.batches {
            rows.push((
                "Flex, bf16 trunk".into(),
                "train_step_bf16",
                b,
                train_ips::<Autodiff<Flex>>(TrunkPrecision::Bf16, b, o.iters, &dev),
            ));
            eprintln!("done: Flex bf16-trunk train b={b}");
        }
    } else {
        run_gpu(&o, &mut rows);
    }

    let py = if o.python {
        pytorch(&o)
    } else {
        Err("--no-python".into())
    };
    println!();
    println!("| backend | measurement | batch | ours img/s | PyTorch img/s | ours / PyTorch |");
    println!("|---|---|---|---|---|---|");
    for (backend, what, b, ips) in &rows {
        let torch = py.as_ref().ok().and_then(|v| {
            v.iter()
                .find(|(n, bb, _)| n == what && bb == b)
                .map(|t| t.2)
        });
        match torch {
            Some(t) => println!(
                "| {backend} | {what} | {b} | {ips:.2} | {t:.2} | {:.2} |",
                ips / t
            ),
            None => println!("| {backend} | {what} | {b} | {ips:.2} | - | - |"),
        }
    }
    if let Err(why) = &py {
        println!("\nPyTorch comparison skipped: {why}");
    }
}

#[cfg(feature = "cuda")]
fn run_gpu(o: &Opts, rows: &mut Vec<(String, &'static str, usize, f64)>) {
    use burn::backend::Cuda;
    let dev = burn::backend::cuda::CudaDevice { index: 0 };
    for &b in &o.batches {
        rows.push((
            "Cuda f32 (fused attention op)".into(),
            "forward",
            b,
            forward_ips::<Cuda>(AttentionKind::Fused, b, o.iters, &dev),
        ));
        rows.push((
            "Cuda f32".into(),
            "forward",
            b,
            forward_ips::<Cuda>(AttentionKind::Matmul, b, o.iters, &dev),
        ));
        rows.push((
            "Cuda f32".into(),
            "train_step",
            b,
            train_ips::<Autodiff<Cuda>>(TrunkPrecision::F32, b, o.iters, &dev),
        ));
        rows.push((
            "Cuda, bf16 trunk".into(),
            "forward_bf16",
            b,
            forward_trunk_ips::<Cuda>(TrunkPrecision::Bf16, b, o.iters, &dev),
        ));
        rows.push((
            "Cuda, bf16 trunk".into(),
            "train_step_bf16",
            b,
            train_ips::<Autodiff<Cuda>>(TrunkPrecision::Bf16, b, o.iters, &dev),
        ));
    }
}

#[cfg(not(feature = "cuda"))]
fn run_gpu(o: &Opts, _rows: &mut Vec<(String, &'static str, usize, f64)>) {
    eprintln!(
        "device {} needs the cuda feature: cargo run -p fairpo-vit --features cuda --example bench_vit -- --device cuda",
        o.device
    );
    std::process::exit(2);
}
