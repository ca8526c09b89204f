//! `--emit-jobs slurm`: a study's runs as SLURM job arrays instead of training them here.
//!
//! The runs of a study are independent except for their references (a FairPO run needs its
//! BCE-SFT run), so they go into stages: stage 1 holds the runs that need nothing unfinished,
//! stage k the runs whose dependencies are in earlier stages, and each stage's array starts
//! after the previous one succeeded (`--dependency=afterok`). Each array task runs one
//! `fairpo train` (resuming it when a requeued task finds its checkpoint). After the arrays
//! finish, the same `cargo xtask` command without `--emit-jobs` reuses every finished run and
//! writes the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

/// One planned `fairpo train`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Job {
    /// Run name (its folder is `runs/<name>`).
    pub name: String,
    /// The arguments after `fairpo train`.
    pub args: Vec<String>,
    /// Names of planned runs this one needs finished first.
    pub after: Vec<String>,
}

static PLAN: Mutex<Option<Vec<Job>>> = Mutex::new(None);
static OUT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// From now on, `train_with` records jobs instead of training; the scripts go to `out`
/// (default `runs/jobs/<study>`).
pub(crate) fn start_planning(out: Option<PathBuf>) {
    *PLAN.lock().expect("plan lock") = Some(Vec::new());
    *OUT.lock().expect("out lock") = out;
}

/// Where the scripts go, when `--out` chose it.
pub(crate) fn out_dir() -> Option<PathBuf> {
    OUT.lock().expect("out lock").clone()
}

/// Whether runs are being planned rather than trained.
pub(crate) fn planning() -> bool {
    PLAN.lock().expect("plan lock").is_some()
}

/// Adds a job (once per name).
pub(crate) fn record(job: Job) {
    if let Some(plan) = PLAN.lock().expect("plan lock").as_mut() {
        if !plan.iter().any(|j| j.name == job.name) {
            plan.push(job);
        }
    }
}

/// Ends planning and returns the jobs.
pub(crate) fn take() -> Vec<Job> {
    PLAN.lock().expect("plan lock").take().unwrap_or_default()
}

/// The stage of every job: 1 + the largest stage of what it waits for.
fn stages(jobs: &[Job]) -> Result<Vec<usize>> {
    let index: BTreeMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.name.as_str(), i))
        .collect();
    let mut stage = vec![0usize; jobs.len()];
    // Jobs are recorded after their dependencies, but do not rely on it.
    for _ in 0..jobs.len() {
        let mut changed = false;
        for (i, j) in jobs.iter().enumerate() {
            let mut s = 1;
            for a in &j.after {
                let Some(&k) = index.get(a.as_str()) else {
                    bail!(
                        "{} waits for {a}, which is neither finished nor planned",
                        j.name
                    );
                };
                s = s.max(stage[k] + 1);
            }
            if s != stage[i] {
                stage[i] = s;
                changed = true;
            }
        }
        if !changed {
            return Ok(stage);
        }
    }
    bail!("the planned runs depend on each other in a circle")
}

/// Writes `out/submit.sh`, one `stage-K.sbatch` per stage and `jobs.tsv` for the study `name`
/// (job names: `fairpo-<name>-<stage>`) that `cargo xtask <study>` planned; returns the submit
/// script's path.
pub(crate) fn write_slurm(jobs: &[Job], out: &Path, name: &str, study: &str) -> Result<PathBuf> {
    write_slurm_in(&std::env::current_dir()?, jobs, out, name, study)
}

/// [`write_slurm`] for the repository folder `root` (where the tasks run).
fn write_slurm_in(
    root: &Path,
    jobs: &[Job],
    out: &Path,
    name: &str,
    study: &str,
) -> Result<PathBuf> {
    if jobs.is_empty() {
        bail!("every run of {study} has already finished: nothing to submit");
    }
    let stage = stages(jobs)?;
    let n_stages = stage.iter().copied().max().unwrap_or(1);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = &root.join(out);
    let mut tsv = String::from("stage\ttask\trun\tcommand\n");
    let mut submit = format!(
        "#!/usr/bin/env bash\n# cargo xtask {study} --emit-jobs slurm: {} runs in {n_stages} \
         stage(s). Submit with: bash {}\n# Extra sbatch options (partition, account, \
         time) go in SBATCH_OPTS, e.g. SBATCH_OPTS='--partition=gpu --time=12:00:00'.\n\
         set -euo pipefail\ncd {}\nprevious=\n",
        jobs.len(),
        out.join("submit.sh").display(),
        sh_quote(&root.display().to_string())
    );
    for s in 1..=n_stages {
        let members: Vec<&Job> = jobs
            .iter()
            .zip(&stage)
            .filter(|(_, &k)| k == s)
            .map(|(j, _)| j)
            .collect();
        let mut script = format!(
            "#!/usr/bin/env bash\n#SBATCH --job-name=fairpo-{name}-{s}\n#SBATCH --array=0-{}\n\
             #SBATCH --gres=gpu:1\n#SBATCH --cpus-per-task=8\n#SBATCH --open-mode=append\n\
             #SBATCH --output={}/stage-{s}-%A_%a.log\n\
             # A task stopped by SIGINT (sbatch --signal=INT@120 sends one before the time \
             limit) checkpoints and fails; resubmitting it resumes the run.\n\
             # Stage {s} of {n_stages} of cargo xtask {study}: one fairpo train per array task.\n\
             set -euo pipefail\ncd {}\nFAIRPO=\"${{FAIRPO:-target/release/fairpo}}\"\n\
             DEVICE=\"${{FAIRPO_DEVICE:-cuda:0}}\"\n{RUN_FN}case \"$SLURM_ARRAY_TASK_ID\" in\n",
            members.len() - 1,
            out.display(),
            sh_quote(&root.display().to_string())
        );
        for (t, job) in members.iter().enumerate() {
            let args: Vec<String> = job.args.iter().map(|a| sh_quote(a)).collect();
            script.push_str(&format!(
                "  {t}) train_run {} {} ;;\n",
                sh_quote(&job.name),
                args.join(" ")
            ));
            tsv.push_str(&format!(
                "{s}\t{t}\t{}\tfairpo train {}\n",
                job.name,
                job.args.join(" ")
            ));
        }
        script.push_str(
            "  *) echo \"no run for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac\n",
        );
        let path = out.join(format!("stage-{s}.sbatch"));
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        submit.push_str(&format!(
            "previous=$(sbatch --parsable --kill-on-invalid-dep=yes ${{SBATCH_OPTS:-}} ${{previous:+--dependency=afterok:$previous}} {})\n\
             echo \"stage {s}: job $previous ({} runs)\"\n",
            sh_quote(&path.display().to_string()),
            members.len()
        ));
    }
    submit.push_str(&format!(
        "echo \"when every stage has finished: cargo xtask {study} (same options, without \
         --emit-jobs) reuses the runs and writes the report\"\n"
    ));
    let submit_path = out.join("submit.sh");
    std::fs::write(&submit_path, submit)
        .with_context(|| format!("writing {}", submit_path.display()))?;
    std::fs::write(out.join("jobs.tsv"), tsv)?;
    Ok(submit_path)
}

/// Runs one planned run: skipped when finished, resumed when a checkpoint exists. The task
/// fails unless the run finished: `fairpo train` exits 0 after an interrupt (it checkpointed),
/// and the next stage must not start on a missing reference.
const RUN_FN: &str = r#"train_run() {
  local name="$1"; shift
  if [ -f "runs/$name/metrics.json" ]; then echo "runs/$name has finished"; return 0; fi
  if [ -f "runs/$name/checkpoints/last.ckpt" ]; then
    "$FAIRPO" train "$@" --device "$DEVICE" --resume
  elif [ -e "runs/$name" ]; then
    "$FAIRPO" train "$@" --device "$DEVICE" --overwrite
  else
    "$FAIRPO" train "$@" --device "$DEVICE"
  fi
  if [ ! -f "runs/$name/metrics.json" ]; then
    echo "runs/$name did not finish (interrupted?): resubmit this task to resume it" >&2
    return 75
  fi
}
"#;

/// `s` as one word for bash.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, after: &[&str]) -> Job {
        Job {
            name: name.into(),
            args: vec![
                "--config".into(),
                "configs/x.toml".into(),
                "--set".into(),
                format!("name={name}"),
                "--set".into(),
                "reference=\"runs/it's here\"".into(),
            ],
            after: after.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn stages_follow_dependencies() {
        let jobs = [job("cpo", &["sft"]), job("sft", &[]), job("abl", &["cpo"])];
        assert_eq!(stages(&jobs).unwrap(), [2, 1, 3]);
        let circle = [job("a", &["b"]), job("b", &["a"])];
        assert!(stages(&circle).is_err());
        let unknown = stages(&[job("cpo", &["sft-typo"])])
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("neither finished nor planned"),
            "{unknown}"
        );
    }

    #[test]
    fn quoting_survives_bash() {
        for s in ["plain", "it's", "a b", "$HOME", "\"q\"", ""] {
            let out = std::process::Command::new("bash")
                .args(["-c", &format!("printf %s {}", sh_quote(s))])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    /// The scripts parse, every run is one task of one stage, and each stage waits for the
    /// one before it.
    #[test]
    fn scripts_parse_and_name_every_run_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let jobs = [job("sft", &[]), job("cpo", &["sft"]), job("dpo", &["sft"])];
        let submit = write_slurm(&jobs, &dir, "coco-reproduce", "reproduce").unwrap();
        for f in ["submit.sh", "stage-1.sbatch", "stage-2.sbatch"] {
            let ok = std::process::Command::new("bash")
                .args(["-n", &dir.join(f).display().to_string()])
                .status()
                .unwrap();
            assert!(ok.success(), "{f} does not parse");
        }
        let s1 = std::fs::read_to_string(dir.join("stage-1.sbatch")).unwrap();
        let s2 = std::fs::read_to_string(dir.join("stage-2.sbatch")).unwrap();
        assert!(s1.contains("#SBATCH --array=0-0") && s2.contains("#SBATCH --array=0-1"));
        for name in ["sft", "cpo", "dpo"] {
            let arm = format!("train_run {name} ");
            assert_eq!(
                s1.matches(&arm).count() + s2.matches(&arm).count(),
                1,
                "{name}"
            );
        }
        assert!(s2.contains("'reference=\"runs/it'\\''s here\"'"), "{s2}");
        let submit = std::fs::read_to_string(submit).unwrap();
        assert!(
            submit.contains("--dependency=afterok:$previous"),
            "{submit}"
        );
        assert!(
            s2.contains("#SBATCH --job-name=fairpo-coco-reproduce-2\n"),
            "{s2}"
        );
        let tsv = std::fs::read_to_string(dir.join("jobs.tsv")).unwrap();
        assert_eq!(tsv.lines().count(), 4);
        assert!(write_slurm(&[], &dir, "coco-reproduce", "reproduce").is_err());
    }

    /// Running one stage script as SLURM would (task 1 of stage 2) calls fairpo with that run's
    /// arguments and the device; a finished run is skipped.
    /// Running a stage script as SLURM would (task 1 of stage 2) calls fairpo with that run's
    /// arguments and the device, in the repository folder; the task fails when the run did not
    /// finish, resumes it from its checkpoint, and skips it once finished.
    #[test]
    fn a_task_runs_its_own_run() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let dir = root.join("runs/jobs/x");
        let jobs = [job("sft", &[]), job("cpo", &["sft"]), job("dpo", &["sft"])];
        write_slurm_in(&root, &jobs, &dir, "coco-reproduce", "reproduce").unwrap();
        // A fake fairpo: prints its arguments; finishes the run when FINISH is set.
        let fake = root.join("fake-fairpo");
        std::fs::write(
            &fake,
            "#!/usr/bin/env bash\necho \"ARGS $*\"\nif [ -n \"${FINISH:-}\" ]; then mkdir -p runs/dpo && touch runs/dpo/metrics.json; fi\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = |task: &str, finish: bool| {
            let mut cmd = std::process::Command::new("bash");
            cmd.arg(dir.join("stage-2.sbatch"))
                .env("SLURM_ARRAY_TASK_ID", task)
                .env("FAIRPO", &fake);
            if finish {
                cmd.env("FINISH", "1");
            }
            let out = cmd.output().unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        let args = "train --config configs/x.toml --set name=dpo --set reference=\"runs/it's here\" --device cuda:0";
        // Interrupted (no metrics.json afterwards): the task fails, so later stages wait.
        let (code, stdout) = run("1", false);
        assert_eq!(code, Some(75), "{stdout}");
        assert_eq!(stdout.trim(), format!("ARGS {args}"));
        // Its checkpoint is resumed.
        std::fs::create_dir_all(root.join("runs/dpo/checkpoints")).unwrap();
        std::fs::write(root.join("runs/dpo/checkpoints/last.ckpt"), "").unwrap();
        let (code, stdout) = run("1", true);
        assert_eq!(code, Some(0), "{stdout}");
        assert_eq!(stdout.trim(), format!("ARGS {args} --resume"));
        // Finished: skipped.
        let (code, stdout) = run("1", false);
        assert_eq!(code, Some(0));
        assert!(stdout.contains("runs/dpo has finished"), "{stdout}");
        let (code, _) = run("7", false);
        assert_ne!(code, Some(0), "an unknown task id must fail");
    }
}
