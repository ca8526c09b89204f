//! Records the commit the binary is built from (`FAIRPO_COMMIT`, "unknown" outside a git
//! checkout): run.json and the comparison report name it.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=FAIRPO_COMMIT={commit}");
    // A new commit moves HEAD or the branch it points to.
    for path in ["../../.git/HEAD", "../../.git/refs/heads"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
