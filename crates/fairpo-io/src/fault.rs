//! Fault injection for the crash tests: `FAIRPO_KILL_AT=<point>:<n>` makes the process send
//! itself SIGKILL the `n`-th time it passes the named point, so a test can kill a run at an
//! exact place (mid-epoch, right after an epoch's checkpoint, half-way through writing a file)
//! and check that `--resume` loses nothing. Unset (always, outside those tests) it costs one
//! cached environment lookup per point.
//!
//! Points: `step` (after an optimiser step), `epoch` (after an epoch's checkpoint is saved),
//! `write:<file name>` (inside [`crate::atomic_write`] of that file, with half its bytes in the
//! temporary file and the rename not done).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn target() -> Option<&'static (String, u64)> {
    static T: OnceLock<Option<(String, u64)>> = OnceLock::new();
    T.get_or_init(|| {
        let v = std::env::var("FAIRPO_KILL_AT").ok()?;
        let (point, n) = v.rsplit_once(':')?;
        Some((point.to_string(), n.parse().ok()?))
    })
    .as_ref()
}

/// Passes the named fault point; kills the process with SIGKILL if it is the configured one
/// and this is its `n`-th pass.
pub fn point(name: &str) {
    if fires(name) {
        kill_self();
    }
}

/// Counts a pass of the named point; true when the process should die here now (for points
/// that prepare the damage first, then call [`kill_self`]).
pub fn fires(name: &str) -> bool {
    static PASSES: AtomicU64 = AtomicU64::new(0);
    let Some((want, n)) = target() else {
        return false;
    };
    want == name && PASSES.fetch_add(1, Ordering::SeqCst) + 1 == *n
}

/// SIGKILL to this process (no handlers, no destructors, no buffered output flushed).
pub fn kill_self() -> ! {
    let pid = std::process::id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status();
    // `kill` is not available: abort is the nearest thing (also skips all cleanup).
    std::process::abort()
}
