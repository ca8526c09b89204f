//! Device selection: `cpu`, `cuda`, `cuda:N`, and running backend-generic code on the
//! chosen backend.
//!
//! CPU runs on burn's `Flex` backend (f32). CUDA runs on `burn::backend::Cuda` and needs a
//! build with the `cuda` feature (`cargo build --features cuda`); asking for it in a build
//! without the feature, or on a machine without a usable driver/GPU, is an error, not a
//! panic.
//!
//! Generic code is written once as a [`BackendTask`] (a method generic over an autodiff
//! backend) and run with [`run_on`]:
//!
//! ```ignore
//! struct Train(Config);
//! impl BackendTask for Train {
//!     type Output = anyhow::Result<()>;
//!     fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output { ... }
//! }
//! run_on(&"cpu".parse()?, Train(cfg))??;
//! ```

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::AutodiffBackend;

/// The CPU training backend.
pub(crate) type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;

/// The CUDA training backend.
#[cfg(feature = "cuda")]
pub(crate) type CudaBackend = burn::backend::Autodiff<burn::backend::Cuda>;

/// A device asked for on the command line or in a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// The CPU (burn `Flex`).
    #[default]
    Cpu,
    /// CUDA GPU number N (`cuda` = `cuda:0`).
    Cuda(usize),
}

/// A device string that is not `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, thiserror::Error)]
#[error("invalid device {0:?}: expected cpu, cuda or cuda:N (N = GPU index, e.g. cuda:0)")]
pub struct ParseDeviceError(String);

impl FromStr for DeviceSpec {
    type Err = ParseDeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => t
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(Self::Cuda)
                .ok_or_else(|| ParseDeviceError(s.to_string())),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = ParseDeviceError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceError {
    /// CUDA asked for in a build without the `cuda` feature.
    #[cfg_attr(feature = "cuda", allow(dead_code))]
    #[error("device {0} requested, but this fairpo was built without CUDA support; rebuild with `cargo build --release --features cuda` (needs the CUDA toolkit) or use --device cpu")]
    CudaNotBuilt(DeviceSpec),
    /// `--devices` mixes the CPU and GPUs.
    #[error(
        "--devices mixes cpu and cuda devices; data-parallel peers must all be cpu:N or all cuda:N"
    )]
    Mixed,
    /// The CUDA runtime failed to initialise the device (no driver, no such GPU...).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    #[error("device {device} is not usable: {reason}")]
    CudaUnavailable {
        /// The device asked for.
        device: DeviceSpec,
        /// What the CUDA runtime reported.
        reason: String,
    },
}

/// Code generic over the training backend, run by [`run_on`] on the chosen one.
pub(crate) trait BackendTask {
    /// What the task returns.
    type Output;
    /// Run on backend `B` (an autodiff backend; its inner backend is `B::InnerBackend`).
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Self::Output;
}

/// Code generic over the training backend that uses several of its devices at once
/// ([`run_on_devices`]).
pub(crate) trait DevicesTask {
    /// What the task returns.
    type Output;
    /// Run on `devices` of backend `B`, in the order they were asked for.
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;
}

/// Run `task` on the backend and device `spec` names.
pub(crate) fn run_on<T: BackendTask>(spec: &DeviceSpec, task: T) -> Result<T::Output, DeviceError> {
    struct One<T>(T);
    impl<T: BackendTask> DevicesTask for One<T> {
        type Output = T::Output;
        fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> T::Output {
            let device = devices.into_iter().next().expect("one device");
            self.0.run::<B>(device)
        }
    }
    run_on_devices(std::slice::from_ref(spec), One(task))
}

/// Run `task` on the devices `specs` name: all `cpu` (CPU peers, for testing data
/// parallelism) or all `cuda:N`.
pub(crate) fn run_on_devices<T: DevicesTask>(
    specs: &[DeviceSpec],
    task: T,
) -> Result<T::Output, DeviceError> {
    let gpus: Vec<usize> = specs
        .iter()
        .filter_map(|s| match s {
            DeviceSpec::Cuda(n) => Some(*n),
            DeviceSpec::Cpu => None,
        })
        .collect();
    if gpus.is_empty() {
        return Ok(task.run::<CpuBackend>(vec![Default::default(); specs.len().max(1)]));
    }
    if gpus.len() != specs.len() {
        return Err(DeviceError::Mixed);
    }
    run_cuda(&gpus, task)
}

/// Parses `--devices`: a comma-separated list of distinct `cpu:N` (CPU peers) or `cuda:N`.
pub(crate) fn parse_device_list(list: &str) -> anyhow::Result<Vec<DeviceSpec>> {
    let mut specs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for item in list.split(',').map(str::trim) {
        let t = item.to_ascii_lowercase();
        // `cpu:N` names CPU peer N (they all run on the one CPU).
        let spec = match t.strip_prefix("cpu:") {
            Some(n) if n.parse::<usize>().is_ok() => DeviceSpec::Cpu,
            _ => item.parse::<DeviceSpec>()?,
        };
        if !seen.insert(t.clone()) {
            anyhow::bail!("--devices {list:?} names {item} twice");
        }
        specs.push(spec);
    }
    if specs.is_empty() {
        anyhow::bail!("--devices is empty: expected e.g. cuda:0,cuda:1 or cpu:0,cpu:1");
    }
    Ok(specs)
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<T: DevicesTask>(gpus: &[usize], _task: T) -> Result<T::Output, DeviceError> {
    Err(DeviceError::CudaNotBuilt(DeviceSpec::Cuda(gpus[0])))
}

#[cfg(feature = "cuda")]
fn run_cuda<T: DevicesTask>(gpus: &[usize], task: T) -> Result<T::Output, DeviceError> {
    if let Some(reason) = crate::cuda_env::CudaEnv::probe().problem() {
        return Err(DeviceError::CudaUnavailable {
            device: DeviceSpec::Cuda(gpus[0]),
            reason,
        });
    }
    let mut devices = Vec::with_capacity(gpus.len());
    for &n in gpus {
        let device = burn::backend::cuda::CudaDevice { index: n };
        probe_cuda(n, &device)?;
        devices.push(device);
    }
    Ok(task.run::<CudaBackend>(devices))
}

/// Touch the device once (allocate, compute, read back) so that a GPU the driver cannot use
/// (none at that index, a driver too old for the runtime...) becomes an error here instead of
/// a panic deep inside training. The default panic hook is silenced meanwhile: the backend
/// reports such failures by panicking, and the error below says it once.
#[cfg(feature = "cuda")]
fn probe_cuda(n: usize, device: &burn::backend::cuda::CudaDevice) -> Result<(), DeviceError> {
    use burn::tensor::Tensor;
    let dev = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(move || {
        let t = Tensor::<burn::backend::Cuda, 1>::from_floats([1.0, 2.0], &dev);
        (t * 2.0).into_data().to_vec::<f32>().map(|v| v[1])
    });
    std::panic::set_hook(hook);
    match probe {
        Ok(Ok(4.0)) => Ok(()),
        Ok(Ok(v)) => Err(DeviceError::CudaUnavailable {
            device: DeviceSpec::Cuda(n),
            reason: format!("probe computed {v}, expected 4"),
        }),
        Ok(Err(e)) => Err(DeviceError::CudaUnavailable {
            device: DeviceSpec::Cuda(n),
            reason: format!("{e:?}"),
        }),
        Err(panic) => Err(DeviceError::CudaUnavailable {
            device: DeviceSpec::Cuda(n),
            reason: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "CUDA initialisation panicked".into()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        for bad in ["", "cuda:", "cuda:x", "tpu", "cuda:-1"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn parses_device_lists() {
        assert_eq!(
            parse_device_list("cpu:0, cpu:1").unwrap(),
            vec![DeviceSpec::Cpu, DeviceSpec::Cpu]
        );
        assert_eq!(
            parse_device_list("cuda:1,cuda:0").unwrap(),
            vec![DeviceSpec::Cuda(1), DeviceSpec::Cuda(0)]
        );
        let twice = parse_device_list("cuda:0,cuda:0").unwrap_err().to_string();
        assert!(twice.contains("cuda:0 twice"), "{twice}");
        let bad = parse_device_list("cpu:0,tpu").unwrap_err().to_string();
        assert!(bad.contains("expected cpu, cuda or cuda:N"), "{bad}");
        let mixed = run_on_devices(&[DeviceSpec::Cpu, DeviceSpec::Cuda(0)], Count)
            .unwrap_err()
            .to_string();
        assert!(mixed.contains("mixes cpu and cuda"), "{mixed}");
        assert_eq!(
            run_on_devices(&[DeviceSpec::Cpu, DeviceSpec::Cpu], Count).unwrap(),
            2
        );
    }

    struct Count;
    impl DevicesTask for Count {
        type Output = usize;
        fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> usize {
            devices.len()
        }
    }

    struct Sum;
    impl BackendTask for Sum {
        type Output = f32;
        fn run<B: AutodiffBackend>(self, device: B::Device) -> f32 {
            let t = burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], &device);
            t.sum().into_scalar().elem()
        }
    }
    use burn::tensor::ElementConversion;

    #[test]
    fn runs_generic_code_on_cpu() {
        assert_eq!(run_on(&DeviceSpec::Cpu, Sum).unwrap(), 6.0);
    }

    /// Run in CI by the `cuda` build's tests on a machine without a GPU: the missing driver
    /// is one error line, not a panic.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_without_a_driver_is_one_clear_line() {
        let env = crate::cuda_env::CudaEnv::probe();
        match (&env.driver, run_on(&DeviceSpec::Cuda(0), Sum)) {
            (Err(_), Ok(_)) => panic!("ran on cuda:0 without a driver library"),
            (Err(_), Err(e)) => {
                let e = e.to_string();
                assert!(
                    e.starts_with(
                        "device cuda:0 is not usable: the CUDA driver library was not found"
                    ) && e.contains("libcuda.so")
                        && e.contains("LD_LIBRARY_PATH")
                        && !e.contains('\n'),
                    "{e}"
                );
            }
            (Ok(lib), got) => eprintln!(
                "this machine has a CUDA driver ({lib}): cuda:0 gave {:?}",
                got.map_err(|e| e.to_string())
            ),
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let err = run_on(&DeviceSpec::Cuda(0), Sum).unwrap_err().to_string();
        assert!(
            err.contains("--features cuda") && err.contains("cuda:0"),
            "{err}"
        );
    }
}
