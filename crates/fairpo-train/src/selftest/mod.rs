//! `fairpo selftest`: what a user needs to know before a long run on a device, and a
//! maintainer after a change, as one table: the machine and build, parity with transformers'
//! fixtures on the device, agreement of the CPU host kernels with the device on one FairPO-CPO
//! step, throughput, and a short end-to-end run.
//!
//! Every check is measured against a stated bound and the command fails when one misses it;
//! rows marked `info` are measurements without a bound (throughput, the machine).

mod agreement;
mod e2e;
mod environment;
mod parity;
mod throughput;

pub use throughput::{quick_vit, PaperStep};

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use fairpo_heads::HeadsConfig;
use fairpo_vit::ViTTail;

use crate::device::DeviceSpec;
use crate::policy::Policy;

/// What `fairpo selftest` runs.
#[derive(Clone, Debug)]
pub struct SelftestOptions {
    /// The device under test.
    pub device: DeviceSpec,
    /// Small shapes and one batch size per measurement (seconds on CPU, as in CI), instead of
    /// ViT-B/16 at several batch sizes.
    pub quick: bool,
    /// The folder holding `configs/` and `crates/fairpo-vit/tests/fixtures/` (the repository
    /// or a GPU bundle).
    pub root: PathBuf,
}

/// Whether a row passed its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within its bound.
    Pass,
    /// Outside its bound, or the check could not run.
    Fail,
    /// A measurement or fact without a bound.
    Info,
}

/// One row of the self-test table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Which part of the test (`machine`, `parity`, `agreement`, `throughput`, `end to end`).
    pub section: &'static str,
    /// What was checked or measured.
    pub check: String,
    /// The measured value.
    pub result: String,
    /// The bound it is held to, empty for `info` rows.
    pub bound: String,
    /// Pass, fail or info.
    pub verdict: Verdict,
}

/// The whole table.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Rows in the order they were measured.
    pub rows: Vec<Row>,
}

impl Report {
    fn push(&mut self, section: &'static str, check: impl Into<String>, result: String) {
        self.rows.push(Row {
            section,
            check: check.into(),
            result,
            bound: String::new(),
            verdict: Verdict::Info,
        });
    }

    /// A measured `value` that must not exceed `bound`.
    fn at_most(&mut self, section: &'static str, check: impl Into<String>, value: f64, bound: f64) {
        self.rows.push(Row {
            section,
            check: check.into(),
            result: format!("{value:.2e}"),
            bound: format!("≤ {bound:.1e}"),
            verdict: if value <= bound {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
        });
    }

    /// A check that passed or failed without a number.
    fn outcome(&mut self, section: &'static str, check: impl Into<String>, got: Result<String>) {
        let (result, verdict) = match got {
            Ok(r) => (r, Verdict::Pass),
            Err(e) => (format!("{e:#}"), Verdict::Fail),
        };
        self.rows.push(Row {
            section,
            check: check.into(),
            result,
            bound: String::new(),
            verdict,
        });
    }

    /// How many rows failed.
    pub fn failures(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Fail)
            .count()
    }

    /// The table in Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s =
            String::from("| section | check | result | bound | verdict |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            let verdict = match r.verdict {
                Verdict::Pass => "pass",
                Verdict::Fail => "**FAIL**",
                Verdict::Info => "info",
            };
            let cell = |t: &str| t.replace('|', "\\|").replace('\n', " ");
            s.push_str(&format!(
                "| {} | {} | {} | {} | {verdict} |\n",
                r.section,
                cell(&r.check),
                cell(&r.result),
                cell(&r.bound)
            ));
        }
        s
    }
}

/// Whether `dir` holds what the self-test reads: `configs/` and the ViT fixtures.
pub fn is_root(dir: &Path) -> bool {
    dir.join("configs").is_dir() && parity::fixtures(dir).is_dir()
}

/// The folder holding `configs/` and the fixtures: `--root`, else the repository this binary
/// was built from, else the executable's folder (a GPU bundle).
pub fn default_root() -> Option<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if is_root(&repo) {
        return Some(repo);
    }
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.to_path_buf();
    is_root(&beside).then_some(beside)
}

/// A trainable policy on `tail` with heads seeded 1, and a frozen reference with a copy of
/// the tail and heads seeded 2 (so the P̄ hinge and the preference terms are not zero).
fn policy_and_reference<B: AutodiffBackend>(
    tail: ViTTail<B>,
    heads: &HeadsConfig,
    device: &B::Device,
) -> (Policy<B>, Policy<B::InnerBackend>) {
    let reference = Policy {
        tail: tail.valid(),
        heads: heads.clone().with_seed(2).init(device),
    };
    let policy = Policy {
        tail,
        heads: heads.clone().with_seed(1).init(device),
    };
    (policy, reference)
}

/// Runs every section on `opts.device`; a section that cannot run is one failed row, and the
/// ones after it still run.
pub fn run(opts: &SelftestOptions) -> Result<Report> {
    let mut report = Report::default();
    environment::describe(opts, &mut report);
    if report.failures() > 0 {
        // The device is not usable: nothing below can run on it.
        return Ok(report);
    }
    parity::check(opts, &mut report);
    agreement::check(opts, &mut report);
    throughput::measure(opts, &mut report);
    e2e::check(opts, &mut report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_decide_the_verdict_and_failures_are_counted() {
        let mut r = Report::default();
        r.at_most("parity", "a", 1e-5, 1e-4);
        r.at_most("parity", "b", 2e-4, 1e-4);
        r.outcome("end to end", "c", Err(anyhow::anyhow!("x | y")));
        r.push("machine", "d", "cpu".into());
        assert_eq!(r.failures(), 2);
        let md = r.to_markdown();
        assert!(
            md.contains("| parity | a | 1.00e-5 | ≤ 1.0e-4 | pass |"),
            "{md}"
        );
        assert!(
            md.contains("| parity | b | 2.00e-4 | ≤ 1.0e-4 | **FAIL** |"),
            "{md}"
        );
        assert!(md.contains("x \\| y"), "{md}");
        assert!(md.contains("| machine | d | cpu |  | info |"), "{md}");
    }
}
