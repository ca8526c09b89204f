//! What a CUDA run needs on the machine, checked before burn touches the GPU.
//!
//! burn's CUDA backend (cubecl + cudarc) loads the driver library (`libcuda`) and NVRTC
//! (`libnvrtc`) at run time and compiles its kernels there against the CUDA toolkit's
//! headers (`$CUDA_PATH/include`). When one of them is missing it panics on a worker thread
//! and then again on the thread that waited for it. [`CudaEnv::probe`] looks for all three
//! first, so that a missing one becomes one line saying what was missing and how to point
//! at it.

use std::path::{Path, PathBuf};

/// Headers every generated kernel, or the f32 (TF32) matmul, `#include`s (cubecl-cpp 0.10's
/// CUDA dialect); the toolkit ships them together, with the cccl headers some kernels add.
const HEADERS: [&str; 3] = ["cuda_runtime.h", "cuda_fp16.h", "mma.h"];

/// What was found of each CUDA prerequisite, or why not.
#[derive(Clone, Debug)]
pub(crate) struct CudaEnv {
    /// The driver library that loaded (`libcuda.so.1`, ...).
    pub(crate) driver: Result<String, String>,
    /// The NVRTC library that loaded.
    pub(crate) nvrtc: Result<String, String>,
    /// The include folder that holds the CUDA headers.
    pub(crate) headers: Result<PathBuf, String>,
}

impl CudaEnv {
    /// The first missing prerequisite, as the one line to show the user.
    pub(crate) fn problem(&self) -> Option<String> {
        [&self.driver, &self.nvrtc]
            .into_iter()
            .find_map(|r| r.as_ref().err().cloned())
            .or_else(|| self.headers.as_ref().err().cloned())
    }

    /// Probe this machine with the library names and CUDA folder burn's backend will use.
    #[cfg(feature = "cuda")]
    pub(crate) fn probe() -> Self {
        #[allow(unsafe_code)]
        let load = |name: &str| {
            // SAFETY: loading the driver or NVRTC runs only their initialisers, which cudarc
            // would run anyway on first use; the handle is dropped at once.
            unsafe { libloading::Library::new(name) }.is_ok()
        };
        let candidates = |names: &[&str]| -> Vec<String> {
            names
                .iter()
                .flat_map(|n| cudarc::get_lib_name_candidates(n))
                .collect()
        };
        let ld_path = std::env::var("LD_LIBRARY_PATH").ok();
        Self {
            driver: find_library(
                &Library::DRIVER,
                &candidates(&["cuda", "nvcuda"]),
                load,
                ld_path.as_deref(),
            ),
            nvrtc: find_library(
                &Library::NVRTC,
                &candidates(&["nvrtc"]),
                load,
                ld_path.as_deref(),
            ),
            headers: find_headers(
                cubecl_cuda::install::cuda_path(),
                std::env::var_os("CUDA_PATH").is_some(),
            ),
        }
    }
}

/// A shared library the backend loads, and how a user supplies it.
pub(crate) struct Library {
    what: &'static str,
    remedy: &'static str,
}

impl Library {
    pub(crate) const DRIVER: Self = Self {
        what: "the CUDA driver library",
        remedy: "install the NVIDIA driver, or add the folder holding libcuda.so.1 \
                 (e.g. /usr/local/nvidia/lib64 or /usr/lib/x86_64-linux-gnu) to LD_LIBRARY_PATH",
    };
    pub(crate) const NVRTC: Self = Self {
        what: "NVRTC, the CUDA run-time compiler (kernels are compiled on first use)",
        remedy: "install the CUDA toolkit (or the nvidia-cuda-nvrtc wheel), and add the folder \
                 holding libnvrtc.so (e.g. $CUDA_PATH/lib64) to LD_LIBRARY_PATH",
    };
}

/// The first of `candidates` that `load` opens, or the line explaining that none did.
pub(crate) fn find_library(
    lib: &Library,
    candidates: &[String],
    load: impl Fn(&str) -> bool,
    ld_library_path: Option<&str>,
) -> Result<String, String> {
    candidates.iter().find(|c| load(c)).cloned().ok_or_else(|| {
        // cudarc also tries Windows-style spellings (libcuda64_12.so, libnvcuda.so...): they
        // are counted, not listed.
        let mut tried: Vec<&str> = Vec::new();
        for c in candidates {
            if !c.contains("64") && !c.contains("nvcuda") && !tried.contains(&c.as_str()) {
                tried.push(c);
            }
        }
        let shown = candidates
            .iter()
            .filter(|c| tried.contains(&c.as_str()))
            .count();
        let others = match candidates.len() - shown {
            0 => String::new(),
            n => format!(" and {n} other spellings"),
        };
        format!(
            "{} was not found (tried {}{others}; LD_LIBRARY_PATH={}): {}",
            lib.what,
            tried.join(", "),
            ld_library_path.unwrap_or("<unset>"),
            lib.remedy
        )
    })
}

/// The include folder of `cuda_path` when it holds the headers the kernels need.
/// `from_env` says whether `cuda_path` came from `CUDA_PATH` (it names the message's fix).
pub(crate) fn find_headers(cuda_path: Option<PathBuf>, from_env: bool) -> Result<PathBuf, String> {
    let Some(root) = cuda_path else {
        return Err(
            "the CUDA toolkit's headers were not found: CUDA_PATH is unset and none of \
                    /usr/local/cuda, /opt/cuda, /usr/bin/nvcc exists; set CUDA_PATH to the \
                    toolkit's folder (the one holding include/cuda_runtime.h)"
                .into(),
        );
    };
    let include = root.join("include");
    match HEADERS.iter().find(|h| !include.join(h).is_file()) {
        None => Ok(include),
        Some(missing) => Err(format!(
            "the CUDA toolkit's headers were not found: {} is missing ({}); set CUDA_PATH to \
             the toolkit's folder (the one holding include/cuda_runtime.h)",
            include.join(missing).display(),
            source(&root, from_env)
        )),
    }
}

fn source(root: &Path, from_env: bool) -> String {
    if from_env {
        format!("CUDA_PATH={}", root.display())
    } else {
        format!("CUDA_PATH is unset, so {} was used", root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_first_library_that_loads_is_reported() {
        let c = names(&["libcuda.so", "libcuda.so.1"]);
        let got = find_library(&Library::DRIVER, &c, |n| n.ends_with(".1"), None);
        assert_eq!(got.unwrap(), "libcuda.so.1");
    }

    #[test]
    fn a_missing_library_names_what_was_tried_and_how_to_fix_it() {
        let c = names(&["libnvrtc.so", "libnvrtc64_12.so", "libnvrtc.so.13"]);
        let err = find_library(&Library::NVRTC, &c, |_| false, Some("/opt/x")).unwrap_err();
        assert!(err.starts_with("NVRTC"), "{err}");
        for part in [
            "tried libnvrtc.so, libnvrtc.so.13 and 1 other spellings;",
            "LD_LIBRARY_PATH=/opt/x",
            "add the folder",
        ] {
            assert!(err.contains(part), "{part:?} not in {err}");
        }
        let err = find_library(&Library::DRIVER, &c, |_| false, None).unwrap_err();
        assert!(
            err.contains("CUDA driver") && err.contains("LD_LIBRARY_PATH=<unset>"),
            "{err}"
        );
    }

    #[test]
    fn headers_are_looked_for_under_include() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let err = find_headers(Some(root.clone()), true).unwrap_err();
        assert!(
            err.contains("include/cuda_runtime.h is missing")
                && err.contains(&format!("CUDA_PATH={}", root.display())),
            "{err}"
        );
        std::fs::create_dir(root.join("include")).unwrap();
        std::fs::write(root.join("include/cuda_runtime.h"), "").unwrap();
        let err = find_headers(Some(root.clone()), false).unwrap_err();
        assert!(
            err.contains("cuda_fp16.h is missing") && err.contains("CUDA_PATH is unset"),
            "{err}"
        );
        std::fs::write(root.join("include/cuda_fp16.h"), "").unwrap();
        std::fs::write(root.join("include/mma.h"), "").unwrap();
        assert_eq!(
            find_headers(Some(root.clone()), true).unwrap(),
            root.join("include")
        );
        let err = find_headers(None, false).unwrap_err();
        assert!(err.contains("set CUDA_PATH"), "{err}");
    }

    #[test]
    fn the_driver_is_reported_before_nvrtc_and_headers() {
        let env = CudaEnv {
            driver: Err("no driver".into()),
            nvrtc: Err("no nvrtc".into()),
            headers: Err("no headers".into()),
        };
        assert_eq!(env.problem().unwrap(), "no driver");
        let env = CudaEnv {
            driver: Ok("libcuda.so.1".into()),
            nvrtc: Ok("libnvrtc.so".into()),
            headers: Err("no headers".into()),
        };
        assert_eq!(env.problem().unwrap(), "no headers");
    }
}
