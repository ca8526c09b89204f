//! Helpers shared by the integration tests that run the `fairpo` binary.

use std::path::Path;
use std::process::{Command, Output};

/// `fairpo ARGS` in `cwd`, logging at warn level (spawn it, or see [`fairpo`]).
pub fn fairpo_command(args: &[&str], cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fairpo"));
    cmd.args(args).current_dir(cwd).env("RUST_LOG", "warn");
    cmd
}

/// Runs `fairpo ARGS` in `cwd` to completion.
pub fn fairpo(args: &[&str], cwd: &Path) -> Output {
    fairpo_command(args, cwd)
        .output()
        .expect("running the fairpo binary")
}
