//! Helpers shared by the integration tests that run the `fairpo` binary.

// Each test crate uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `fairpo ARGS` in `cwd`, logging at warn level (spawn it, or see [`fairpo`]).
pub(crate) fn fairpo_command(args: &[&str], cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fairpo"));
    cmd.args(args).current_dir(cwd).env("RUST_LOG", "warn");
    cmd
}

/// Runs `fairpo ARGS` in `cwd` to completion.
pub(crate) fn fairpo(args: &[&str], cwd: &Path) -> Output {
    fairpo_command(args, cwd)
        .output()
        .expect("running the fairpo binary")
}

/// Runs `fairpo ARGS` in `cwd`, failing the test with its output unless it succeeds; returns
/// its standard output.
pub(crate) fn run_ok(args: &[&str], cwd: &Path, what: &str) -> String {
    let out = fairpo(args, cwd);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `[model.scratch]` of the tests' tiny ViT: 2 layers of width 32, 16 px images in 4 px patches.
pub(crate) const TINY_SCRATCH_VIT: &str = r#"
[model.scratch]
hidden_size = 32
num_hidden_layers = 2
num_attention_heads = 2
intermediate_size = 64
patch_size = 4
image_size = 16
"#;
