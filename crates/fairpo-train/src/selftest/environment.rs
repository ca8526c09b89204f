//! The `machine` rows: the build, the CPU, and on CUDA what the driver probe found.

use burn::tensor::backend::AutodiffBackend;

use super::{Report, SelftestOptions};
use crate::device::{run_on, BackendTask, DeviceSpec};

const SECTION: &str = "machine";

pub(super) fn describe(opts: &SelftestOptions, report: &mut Report) {
    report.push(SECTION, "device", opts.device.to_string());
    report.push(
        SECTION,
        "build",
        format!(
            "fairpo {} ({} profile), features: {}",
            env!("CARGO_PKG_VERSION"),
            if cfg!(debug_assertions) {
                "dev"
            } else {
                "release"
            },
            if cfg!(feature = "cuda") {
                "cuda"
            } else {
                "none (CPU only)"
            }
        ),
    );
    report.push(SECTION, "CPU", cpu_description());
    report.push(
        SECTION,
        "mode",
        if opts.quick {
            "quick (small shapes, one batch size)".into()
        } else {
            "full (ViT-B/16 shapes)".into()
        },
    );
    if let DeviceSpec::Cuda(_) = opts.device {
        cuda_rows(opts.device, report);
    }
}

/// The CPU's model name, thread count and the vector extensions the kernels could use.
fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let has: Vec<&str> = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|g| g == *f))
        .collect();
    format!(
        "{}, {} threads; extensions: {}",
        field("model name").unwrap_or_else(|| std::env::consts::ARCH.into()),
        rayon::current_num_threads(),
        if has.is_empty() {
            "none of avx2/avx512f/avx512_bf16/amx_bf16".to_string()
        } else {
            has.join(" ")
        }
    )
}

#[cfg(not(feature = "cuda"))]
fn cuda_rows(device: DeviceSpec, report: &mut Report) {
    report.outcome(
        SECTION,
        "CUDA",
        run_on(&device, Touch)
            .map(|_| String::new())
            .map_err(anyhow::Error::from),
    );
}

#[cfg(feature = "cuda")]
fn cuda_rows(device: DeviceSpec, report: &mut Report) {
    let env = crate::cuda_env::CudaEnv::probe();
    report.outcome(
        SECTION,
        "CUDA driver library",
        env.driver.clone().map_err(anyhow::Error::msg),
    );
    report.outcome(
        SECTION,
        "NVRTC (run-time kernel compiler)",
        env.nvrtc.clone().map_err(anyhow::Error::msg),
    );
    report.outcome(
        SECTION,
        "CUDA headers",
        env.headers
            .clone()
            .map(|p| p.display().to_string())
            .map_err(anyhow::Error::msg),
    );
    if env.problem().is_some() {
        return;
    }
    if let Some(gpu) = nvidia_smi() {
        report.push(SECTION, "GPU (nvidia-smi)", gpu);
    }
    report.outcome(
        SECTION,
        format!("{device} computes"),
        run_on(&device, Touch)
            .map(|v| format!("2 × 2 = {v}"))
            .map_err(anyhow::Error::from),
    );
}

#[cfg(feature = "cuda")]
fn nvidia_smi() -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
        ])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', "; ")
    })
}

/// One small computation on the device (the device layer probes it first).
struct Touch;

impl BackendTask for Touch {
    type Output = f32;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> f32 {
        use burn::tensor::ElementConversion;
        let t = burn::tensor::Tensor::<B, 1>::from_floats([2.0], &device);
        (t.clone() * t).into_scalar().elem()
    }
}
