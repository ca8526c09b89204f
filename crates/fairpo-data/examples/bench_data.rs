//! `cargo xtask bench data`: images per second through decode → resize shorter side 256
//! (bilinear) → centre crop 224 → normalise, on generated 640×480 JPEGs (COCO's typical size),
//! with 1 thread and with all cores, plus the batch loader end to end; then the same pipeline in
//! Python (`bench/data.py`, Pillow + numpy) on the same files, and the ratio.
//!
//! Usage: `cargo run -p fairpo-data --example bench_data [-- --images N --out DIR --repeats R]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use fairpo_data::preprocess::decode_rgb;
use fairpo_data::{
    BatchLoader, Dataset, LoaderConfig, PreprocessConfig, Preprocessor, ResampleFilter, ResizeMode,
};
use rayon::prelude::*;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn write_jpegs(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("create bench folder");
    (0..n)
        .into_par_iter()
        .map(|i| {
            let p = dir.join(format!("img_{i:04}.jpg"));
            if !p.is_file() {
                let img = fairpo_data::demo::render_scene(7, i as u64, 640, 480);
                let buf = image::RgbImage::from_raw(640, 480, img.data).expect("size");
                let mut bytes = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                    .encode_image(&buf)
                    .expect("encode");
                std::fs::write(&p, bytes).expect("write jpeg");
            }
            p
        })
        .collect()
}

/// CPU seconds (user + system, all threads) of this process from /proc/self/stat, assuming the
/// usual 100 clock ticks per second; None off Linux.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Best wall-clock rate over `repeats` runs, and images per CPU-second over all runs (less
/// sensitive to other processes sharing the cores).
fn pipeline_rate(
    pre: &Preprocessor,
    files: &[PathBuf],
    threads: usize,
    repeats: usize,
) -> (f64, f64) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let run = || {
        pool.install(|| {
            files
                .par_iter()
                .map(|p| {
                    let img = decode_rgb(p).expect("decode");
                    let mut out = vec![0f32; pre.output_len()];
                    pre.process_into(&img, None, &mut out);
                    f64::from(out[0])
                })
                .sum::<f64>()
        })
    };
    run();
    let mut best = f64::INFINITY;
    let cpu0 = cpu_seconds();
    for _ in 0..repeats {
        let t = Instant::now();
        std::hint::black_box(run());
        best = best.min(t.elapsed().as_secs_f64());
    }
    let per_cpu = match (cpu0, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => (files.len() * repeats) as f64 / (b - a),
        _ => f64::NAN,
    };
    (files.len() as f64 / best, per_cpu)
}

fn stage_times(pre: &Preprocessor, files: &[PathBuf]) -> (f64, f64, f64) {
    let (mut dec, mut rs, mut nm) = (0.0, 0.0, 0.0);
    for p in files {
        let t = Instant::now();
        let img = decode_rgb(p).expect("decode");
        dec += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let rgb = pre.resize(&img, None);
        rs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut out = vec![0f32; pre.output_len()];
        pre.normalize_into(&rgb, &mut out);
        nm += t.elapsed().as_secs_f64();
        std::hint::black_box(&out);
    }
    let n = files.len() as f64 * 1e-3;
    (dec / n, rs / n, nm / n)
}

fn main() {
    let n: usize = arg("--images").and_then(|v| v.parse().ok()).unwrap_or(256);
    let repeats: usize = arg("--repeats").and_then(|v| v.parse().ok()).unwrap_or(3);
    // Paths relative to the workspace root, wherever the example is started from.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = arg("--out").map_or_else(|| root.join("bench/out/data_jpegs"), PathBuf::from);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let files = write_jpegs(&dir, n);
    let pre = Preprocessor::new(PreprocessConfig {
        size: 224,
        resize: ResizeMode::ShorterSideCrop,
        resize_shorter: Some(256),
        filter: ResampleFilter::Bilinear,
        ..PreprocessConfig::default()
    })
    .expect("config");

    let (dec, rs, nm) = stage_times(&pre, &files[..files.len().min(64)]);
    let (one, one_cpu) = pipeline_rate(&pre, &files, 1, repeats);
    let (all, _) = pipeline_rate(&pre, &files, cores, repeats);

    let dataset = Arc::new(Dataset {
        split: "bench".into(),
        labels: vec!["x".into()],
        paths: files.clone(),
        targets: fairpo_io::Matrix {
            rows: n,
            cols: 1,
            data: vec![0; n],
        },
        report: Default::default(),
    });
    let loader = BatchLoader::new(
        dataset,
        pre.config().clone(),
        LoaderConfig {
            batch_size: 32,
            ..LoaderConfig::default()
        },
    )
    .expect("loader");
    let idx = fairpo_data::epoch_order(&(0..n).collect::<Vec<_>>(), true, 42, 0);
    let t = Instant::now();
    let mut count = 0;
    for b in loader.epoch(&idx, 0).expect("epoch") {
        count += b.expect("batch").batch_size;
    }
    let loader_rate = count as f64 / t.elapsed().as_secs_f64();

    println!("fairpo-data pipeline: {n} JPEGs 640x480 (q90) -> decode -> resize shorter 256 (bilinear) -> crop 224 -> normalise");
    println!(
        "per image, 1 thread: decode {dec:.2} ms, resize+crop {rs:.2} ms, normalise {nm:.2} ms"
    );
    println!("{:<34} {:>10} {:>14}", "", "images/s", "images/s/core");
    println!("{:<34} {:>10.1} {:>14.1}", "rust, 1 thread", one, one);
    println!(
        "{:<34} {:>10.1} {:>14.1}",
        "rust, 1 thread, per CPU-second", one_cpu, one_cpu
    );
    println!(
        "{:<34} {:>10.1} {:>14.1}",
        format!("rust, {cores} threads"),
        all,
        all / cores as f64
    );
    println!(
        "{:<34} {:>10.1} {:>14.1}",
        format!("rust BatchLoader, b=32, {cores} thr"),
        loader_rate,
        loader_rate / cores as f64
    );

    let script = root.join("bench/data.py");
    let py = std::process::Command::new("python3")
        .arg(&script)
        .args([
            "--dir",
            &dir.to_string_lossy(),
            "--procs",
            &cores.to_string(),
            "--repeats",
            &repeats.to_string(),
        ])
        .output();
    match py {
        Ok(out) if out.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench/data.py prints JSON");
            let p1 = v["one_process_images_per_s"].as_f64().unwrap_or(f64::NAN);
            let pn = v["n_process_images_per_s"].as_f64().unwrap_or(f64::NAN);
            let procs = v["procs"].as_u64().unwrap_or(1);
            println!(
                "{:<34} {:>10.1} {:>14.1}",
                format!("python Pillow {} + numpy, 1 proc", v["pillow"].as_str().unwrap_or("?")),
                p1,
                p1
            );
            let pc = v["one_process_images_per_cpu_s"].as_f64().unwrap_or(f64::NAN);
            println!("{:<34} {:>10.1} {:>14.1}", "python, 1 proc, per CPU-second", pc, pc);
            println!("{:<34} {:>10.1} {:>14.1}", format!("python, {procs} processes"), pn, pn / procs as f64);
            println!(
                "ratio rust/python: 1 core {:.2}x (per CPU-second {:.2}x), {cores} cores {:.2}x",
                one / p1,
                one_cpu / pc,
                all / pn
            );
        }
        Ok(out) => println!(
            "python comparison skipped: bench/data.py failed (needs python3 with Pillow and numpy): {}",
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        ),
        Err(e) => println!("python comparison skipped: cannot run python3 ({e})"),
    }
}
