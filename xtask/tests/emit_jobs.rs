//! `cargo xtask reproduce|ablate --emit-jobs slurm` on the COCO presets, in a scratch copy of the
//! configs (no run has finished there): every run is one task of the right stage, and the
//! scripts are valid shell.

use std::path::Path;
use std::process::Command;

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

fn emit(args: &[&str]) -> (tempfile::TempDir, String, String) {
    let root = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    copy_dir(&repo.join("configs"), &root.path().join("configs"));
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("FAIRPO_XTASK_ROOT", root.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (root, stdout, stderr)
}

fn tasks(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|l| l.trim().split_once(") train_run "))
        .map(|(_, rest)| rest.split(' ').next().unwrap().to_string())
        .collect()
}

fn parses(path: &Path) {
    let ok = Command::new("bash")
        .args(["-n", &path.display().to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "{} does not parse", path.display());
}

#[test]
fn reproduce_plans_references_first_then_the_fairpo_runs() {
    let (root, stdout, _) = emit(&[
        "reproduce",
        "--dataset",
        "coco",
        "--seeds",
        "3",
        "--emit-jobs",
        "slurm",
    ]);
    let dir = root.path().join("runs/jobs/coco-reproduce");
    assert!(stdout.contains("submit.sh"), "{stdout}");
    for f in ["submit.sh", "stage-1.sbatch", "stage-2.sbatch"] {
        parses(&dir.join(f));
    }
    assert!(!dir.join("stage-3.sbatch").exists());
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    let mut s1 = tasks(&read("stage-1.sbatch"));
    let mut s2 = tasks(&read("stage-2.sbatch"));
    s1.sort();
    s2.sort();
    // BCE-SFT, RW and GDRO start from the backbone; the FairPO runs and the BCE control wait
    // for their reference.
    let named = |methods: &[&str]| {
        let mut v: Vec<String> = methods
            .iter()
            .flat_map(|m| (42..45).map(move |s| format!("coco-{m}-s{s}")))
            .collect();
        v.sort();
        v
    };
    assert_eq!(s1, named(&["sft", "rw", "gdro"]));
    // The BCE control starts from the reference too (configs/controls/bce-finetune.toml).
    let want = named(&["bce-control", "dpo", "simpo", "cpo"]);
    assert_eq!(s2, want);
    // FairPO runs point at their own seed's reference.
    let stage2 = read("stage-2.sbatch");
    let cpo = stage2
        .lines()
        .find(|l| l.contains("train_run coco-cpo-s43 "))
        .unwrap();
    assert!(
        cpo.contains("runs/coco-sft-s43") && cpo.contains("train.seed=43"),
        "{cpo}"
    );
    assert!(read("submit.sh").contains("--dependency=afterok:$previous"));
    // Nothing was trained.
    assert!(!root.path().join("runs/coco-sft-s42").exists());
}

#[test]
fn ablate_plans_each_overlay_after_its_reference() {
    let (root, _, _) = emit(&["ablate", "--dataset", "nus", "--emit-jobs", "slurm"]);
    let dir = root.path().join("runs/jobs/nus-ablate");
    let s1 = tasks(&std::fs::read_to_string(dir.join("stage-1.sbatch")).unwrap());
    let s2 = tasks(&std::fs::read_to_string(dir.join("stage-2.sbatch")).unwrap());
    assert_eq!(s1, ["nus-sft"]);
    let overlays = std::fs::read_dir(root.path().join("configs/ablations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert_eq!(s2.len(), 1 + overlays, "{s2:?}");
    assert!(s2.contains(&"nus-cpo".to_string()));
}

#[test]
fn emit_jobs_refuses_what_it_cannot_plan() {
    let root = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            &["train", "coco-cpo", "--emit-jobs", "slurm"][..],
            "works with reproduce",
        ),
        (
            &["tune", "--rates", "--emit-jobs", "slurm"][..],
            "cannot plan tune --rates",
        ),
        (&["reproduce", "--emit-jobs", "pbs"][..], "expected slurm"),
        (
            &["reproduce", "--fresh", "--emit-jobs", "slurm"][..],
            "cannot plan --fresh",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("FAIRPO_XTASK_ROOT", root.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "{args:?}: {stderr}"
        );
    }
}
