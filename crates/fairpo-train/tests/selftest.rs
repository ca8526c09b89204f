//! `fairpo selftest --quick` on the CPU, as CI runs it: every section runs and passes, and a
//! fixture that disagrees with the model, or a device this build cannot use, fails it.

mod common;

use std::path::Path;

use common::{fairpo, run_ok};

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn quick_selftest_passes_on_the_cpu_and_covers_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("selftest.md");
    let stdout = run_ok(
        &["selftest", "--quick", "--out", &out.display().to_string()],
        dir.path(),
        "selftest",
    );
    let table = std::fs::read_to_string(&out).unwrap();
    assert_eq!(stdout.trim(), table.trim());
    assert!(!table.contains("FAIL"), "{table}");
    for needle in [
        "| machine | device | cpu |",
        "| parity | tiny ViT (patch 4, 32 px): max \\|CLS − transformers\\| |",
        "| parity | ViT of ViT-B/16's geometry (patch 16, 224 px)",
        "| agreement | CLS, host kernels vs NdArray (relative)",
        "| agreement | gradients of the last 2 layers + heads, worst of",
        "| throughput | small ViT-B/16-shaped ViT forward, batch 4, Matmul attention",
        "| throughput | small ViT-B/16-shaped ViT forward, batch 4, Fused attention",
        "| throughput | small ViT-B/16-shaped ViT forward, batch 4, bf16 trunk",
        "| throughput | paper's training step",
        "f32 trunk, batch 4 |",
        "bf16 trunk, batch 4 |",
        "| end to end | coco-sft preset",
        "| end to end | coco-cpo preset",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from\n{table}");
    }
    // The bf16 parity rows pass where this CPU has AMX, and say why they did not run
    // elsewhere.
    let bf16: Vec<&str> = table
        .lines()
        .filter(|l| l.contains(", bf16 trunk: max"))
        .collect();
    assert_eq!(bf16.len(), 2, "{table}");
    let bf16_ran = bf16.iter().filter(|l| l.ends_with("| pass |")).count();
    assert!(
        bf16_ran == 2 || bf16.iter().all(|l| l.contains("not run: ")),
        "{table}"
    );
    let passes = table.lines().filter(|l| l.ends_with("| pass |")).count();
    assert_eq!(
        passes,
        8 + bf16_ran,
        "2 parity (+ 2 bf16) + 4 agreement + 2 end-to-end rows:\n{table}"
    );
}

#[test]
fn a_fixture_that_disagrees_fails_the_selftest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let fixtures = root.join("crates/fairpo-vit/tests/fixtures");
    copy_dir(&repo().join("crates/fairpo-vit/tests/fixtures"), &fixtures);
    copy_dir(&repo().join("configs"), &root.join("configs"));
    // transformers' tiny CLS output, each value moved by 1e-3 (10x the CPU bound).
    let path = fixtures.join("tiny_cls.npy");
    let npy = npyz::NpyFile::new(std::fs::File::open(&path).unwrap()).unwrap();
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let moved: Vec<u8> = npy
        .into_vec::<f32>()
        .unwrap()
        .into_iter()
        .flat_map(|v| (v + 1e-3).to_le_bytes())
        .collect();
    std::fs::write(&path, fairpo_io::npy_bytes("<f4", false, &shape, &moved)).unwrap();
    let out = fairpo(
        &["selftest", "--quick", "--root", &root.display().to_string()],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.contains("tiny ViT (patch 4, 32 px)"))
        .unwrap_or_else(|| panic!("no tiny parity row in\n{stdout}"));
    assert!(row.ends_with("| **FAIL** |"), "{row}");
    assert!(stderr.contains("1 self-test check(s) failed"), "{stderr}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_in_a_cpu_only_build_is_one_failed_row() {
    let dir = tempfile::tempdir().unwrap();
    let out = fairpo(&["selftest", "--quick", "--device", "cuda:0"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| machine | CUDA |"))
        .unwrap_or_else(|| panic!("no CUDA row in\n{stdout}"));
    assert!(
        row.contains("built without CUDA support") && row.ends_with("| **FAIL** |"),
        "{row}"
    );
    // Nothing ran on a device that is not there.
    assert!(!stdout.contains("| parity |"), "{stdout}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
