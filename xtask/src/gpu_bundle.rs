//! `gpu-bundle`: the `cuda` release binary and what its self-test needs, as one folder that
//! runs on a GPU machine without a Rust toolchain or network.
//!
//! No GPU is needed to build: cubecl loads libcuda and libnvrtc at run time, so the binary
//! links only the C runtime. The CUDA bindings' version is pinned with `CUDARC_CUDA_VERSION`
//! when `nvcc` is absent (default 13000, CUDA 13.0; the driver must be at least that new).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cargo;

/// Shared libraries the binary may need: the C runtime, nothing of CUDA's.
const ALLOWED_NEEDED: [&str; 6] = [
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "ld-linux-x86-64.so.2",
];
/// The newest glibc symbol version the binary may require (Debian 12 / Ubuntu 22.04 have it).
const MAX_GLIBC: (u32, u32) = (2, 35);
/// A budget that keeps the bundle quick to copy to an offline machine (it is ~10 MiB).
const MAX_BUNDLE_BYTES: u64 = 32 << 20;

/// What the bundle holds, for the summary line.
#[derive(Debug)]
pub(crate) struct Summary {
    pub stripped_bytes: u64,
    pub compressed_bytes: u64,
    pub total_bytes: u64,
    pub glibc: (u32, u32),
    pub needed: Vec<String>,
}

/// Builds (unless `binary` is given) and assembles the bundle in `out`.
pub(crate) fn run(out: Option<&Path>, binary: Option<&Path>) -> Result<()> {
    let out = out.map_or_else(|| PathBuf::from("target/gpu-bundle"), Path::to_path_buf);
    let binary = match binary {
        Some(b) => b.to_path_buf(),
        None => build()?,
    };
    let s = assemble(&binary, Path::new("."), &out)?;
    println!(
        "| file | bytes |\n|---|---|\n| fairpo (stripped) | {} |\n| fairpo.xz | {} |\n| whole bundle | {} |",
        s.stripped_bytes, s.compressed_bytes, s.total_bytes
    );
    println!(
        "needs GLIBC {}.{}; links {}; no CUDA library at build time",
        s.glibc.0,
        s.glibc.1,
        s.needed.join(", ")
    );
    println!(
        "bundle: {} — copy it to the GPU machine and run `bash run.sh` there",
        out.display()
    );
    Ok(())
}

fn build() -> Result<PathBuf> {
    let mut cmd = Command::new(cargo());
    cmd.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "fairpo-train",
        "--features",
        "cuda",
        "--bin",
        "fairpo",
    ]);
    let has_nvcc = Command::new("nvcc").arg("--version").output().is_ok();
    if std::env::var_os("CUDARC_CUDA_VERSION").is_none() && !has_nvcc {
        println!(
            "nvcc not found: pinning the CUDA bindings to CUDA 13.0 (CUDARC_CUDA_VERSION=13000)"
        );
        cmd.env("CUDARC_CUDA_VERSION", "13000");
    }
    println!("building the cuda release binary (about 11 minutes on 2 cores from scratch)");
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release --features cuda failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    Ok(target.join("release").join("fairpo"))
}

/// Writes `out/`: `fairpo.xz` (the stripped binary), `configs/`, the ViT fixtures under their
/// repository path, and `run.sh`; checks the binary's libraries, glibc need and the size.
pub(crate) fn assemble(binary: &Path, repo: &Path, out: &Path) -> Result<Summary> {
    if out.exists() {
        // Replace only an earlier bundle, never a folder that is something else.
        let is_bundle = out.join("run.sh").is_file() && out.join("fairpo.xz").is_file();
        let is_empty = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_none();
        if !is_bundle && !is_empty {
            bail!(
                "{} exists and is not a GPU bundle (no run.sh and fairpo.xz): choose another --out",
                out.display()
            );
        }
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let stripped = out.join("fairpo");
    std::fs::copy(binary, &stripped).with_context(|| format!("copying {}", binary.display()))?;
    tool("strip", &[stripped.as_os_str()])?;
    let needed = needed_libraries(&tool("readelf", &["-d".as_ref(), stripped.as_os_str()])?);
    if let Some(bad) = needed
        .iter()
        .find(|n| !ALLOWED_NEEDED.contains(&n.as_str()))
    {
        bail!(
            "{} links {bad} at build time; only the C runtime is allowed ({})",
            binary.display(),
            ALLOWED_NEEDED.join(", ")
        );
    }
    let glibc = newest_glibc(&tool("readelf", &["-V".as_ref(), stripped.as_os_str()])?)
        .context("the binary names no GLIBC version")?;
    if glibc > MAX_GLIBC {
        bail!(
            "{} needs GLIBC {}.{}, newer than {}.{}: build on an older system",
            binary.display(),
            glibc.0,
            glibc.1,
            MAX_GLIBC.0,
            MAX_GLIBC.1
        );
    }
    let stripped_bytes = std::fs::metadata(&stripped)?.len();
    tool("xz", &["-9".as_ref(), "-T0".as_ref(), stripped.as_os_str()])?;
    let compressed_bytes = std::fs::metadata(out.join("fairpo.xz"))?.len();
    copy_dir(&repo.join("configs"), &out.join("configs"))?;
    let fixtures = "crates/fairpo-vit/tests/fixtures";
    copy_dir(&repo.join(fixtures), &out.join(fixtures))?;
    let run_sh = out.join("run.sh");
    std::fs::write(&run_sh, RUN_SH).with_context(|| format!("writing {}", run_sh.display()))?;
    let total_bytes = dir_bytes(out)?;
    if total_bytes > MAX_BUNDLE_BYTES {
        bail!("the bundle is {total_bytes} bytes, over the {MAX_BUNDLE_BYTES}-byte budget");
    }
    Ok(Summary {
        stripped_bytes,
        compressed_bytes,
        total_bytes,
        glibc,
        needed,
    })
}

/// The GPU machine's entry point: find the driver, NVRTC and the CUDA headers, unpack the
/// binary, run the self-test on the GPU (full, then CPU quick for comparison) and print the
/// tables; results are copied to `$OUT` when the caller sets it.
const RUN_SH: &str = r#"#!/usr/bin/env bash
# fairpo GPU bundle: self-test and benchmark on this machine's GPU. Usage: bash run.sh [cuda:N]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
device="${1:-cuda:0}"
py_nvidia="$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null || true)"

# CUDA toolkit (headers for run-time kernel compilation, NVRTC): CUDA_PATH, else nvcc's folder,
# else the usual install places.
if [ -z "${CUDA_PATH:-}" ]; then
  if command -v nvcc >/dev/null 2>&1; then
    CUDA_PATH="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  else
    for d in /usr/local/cuda /opt/cuda; do [ -d "$d/include" ] && CUDA_PATH="$d" && break; done
  fi
fi
export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
# Driver (libcuda) and NVRTC folders, wherever this image keeps them: the user's own
# LD_LIBRARY_PATH first, then the toolkit's, the driver's, the system's, pip's.
found=
for d in "$CUDA_PATH/lib64" "$CUDA_PATH/lib" /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu \
         "$py_nvidia/nvidia/cuda_nvrtc/lib" "$py_nvidia/nvidia/cu13/lib"; do
  if [ -d "$d" ]; then found="${found:+$found:}$d"; fi
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$found"
echo "CUDA_PATH=$CUDA_PATH"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

# The binary needs the CUDA 13.0 driver API (driver r580 or newer) and GLIBC 2.34.
work="$(mktemp -d "${TMPDIR:-/tmp}/fairpo-bundle.XXXXXX")"
echo "work folder: $work"
if command -v xz >/dev/null 2>&1; then
  xz -dc "$here/fairpo.xz" > "$work/fairpo"
else
  python3 -c 'import lzma, sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$here/fairpo.xz" > "$work/fairpo"
fi
chmod +x "$work/fairpo"
cd "$work"
status=0
# The first run of each kernel shape is compiled (NVRTC) and autotuned: the self-test's warm-up
# runs absorb it, and the wall times below include it.
start=$(date +%s)
"$work/fairpo" selftest --device "$device" --root "$here" --out "$work/selftest-cuda.md" || status=$?
echo "selftest on $device: $(( $(date +%s) - start )) s wall, exit $status"
"$work/fairpo" selftest --device cpu --quick --root "$here" --out "$work/selftest-cpu-quick.md" >/dev/null 2>&1 || echo "CPU quick selftest failed"
if [ -n "${OUT:-}" ]; then cp "$work"/selftest-*.md "$OUT"/ 2>/dev/null || true; fi
exit $status
"#;

/// `NEEDED` entries of `readelf -d` output.
fn needed_libraries(readelf_d: &str) -> Vec<String> {
    readelf_d
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            let start = l.find('[')? + 1;
            let end = l[start..].find(']')? + start;
            Some(l[start..end].to_string())
        })
        .collect()
}

/// The newest `GLIBC_x.y` that `readelf -V` output names.
fn newest_glibc(readelf_v: &str) -> Option<(u32, u32)> {
    readelf_v
        .split(|c: char| c.is_whitespace())
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
            Some((major, minor))
        })
        .max()
}

fn tool(name: &str, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = Command::new(name)
        .args(args)
        .output()
        .with_context(|| format!("running {name} (binutils/xz are needed to bundle)"))?;
    if !out.status.success() {
        bail!(
            "{name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        total += if e.file_type()?.is_dir() {
            dir_bytes(&e.path())?
        } else {
            e.metadata()?.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_needed_libraries_and_the_newest_glibc() {
        let d = " 0x0000000000000001 (NEEDED)             Shared library: [libgcc_s.so.1]\n \
                 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]\n \
                 0x000000000000000c (INIT)               0x1000\n";
        assert_eq!(needed_libraries(d), ["libgcc_s.so.1", "libc.so.6"]);
        let v = "  0x0010:   Name: GLIBC_2.2.5  Flags: none  Version: 3\n  \
                 0x0020:   Name: GLIBC_2.34  Flags: none  Version: 5\n  \
                 0x0030:   Name: GLIBC_2.3  Flags: none  Version: 2\n  Name: GCC_3.0\n";
        assert_eq!(newest_glibc(v), Some((2, 34)));
        assert_eq!(newest_glibc("GCC_3.0"), None);
    }

    /// The bundle of a binary that links only the C runtime (this test's own executable):
    /// the files are where `fairpo selftest --root` looks, run.sh is valid shell, the size is
    /// checked.
    #[test]
    fn assembles_a_bundle_whose_run_script_parses() {
        let dir = std::env::temp_dir().join(format!("fairpo-bundle-test-{}", std::process::id()));
        let exe = std::env::current_exe().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let s = assemble(&exe, &repo, &dir).unwrap();
        assert!(s.needed.iter().any(|n| n == "libc.so.6"), "{:?}", s.needed);
        assert!(s.compressed_bytes < s.stripped_bytes);
        for f in [
            "fairpo.xz",
            "run.sh",
            "configs/coco-sft.toml",
            "configs/coco-cpo.toml",
            "crates/fairpo-vit/tests/fixtures/vit_tiny/config.json",
            "crates/fairpo-vit/tests/fixtures/cls224_cls.npy",
        ] {
            assert!(dir.join(f).is_file(), "{f} missing");
        }
        assert!(
            !dir.join("fairpo").exists(),
            "the uncompressed binary was left in"
        );
        let syntax = Command::new("bash")
            .args(["-n", &dir.join("run.sh").display().to_string()])
            .status()
            .unwrap();
        assert!(syntax.success());
        // A second bundle replaces the first; a folder that is not a bundle is never removed.
        assemble(&exe, &repo, &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep.txt"), "mine").unwrap();
        let err = assemble(&exe, &repo, &dir).unwrap_err().to_string();
        assert!(err.contains("is not a GPU bundle"), "{err}");
        assert!(dir.join("keep.txt").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
