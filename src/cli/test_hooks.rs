//! Switches that let tests interrupt or alter a run at an exact point instead of racing
//! it with timers. Read from the environment, inert unless a test sets them; they change
//! nothing a user's run does.

use std::path::Path;

/// Run `sh -c "$HF_TAILOR_TEST_AFTER_BUILD" hook MODEL_DIR` once the checkpoint is
/// written and before it is verified (tests alter `model/` to prove verify fails).
pub const AFTER_BUILD: &str = "HF_TAILOR_TEST_AFTER_BUILD";
/// Kill the process with SIGKILL once this many trials are journaled in this run.
pub const KILL_AFTER_TRIALS: &str = "HF_TAILOR_TEST_KILL_AFTER_TRIALS";

pub fn after_build(model_dir: &Path) {
    if let Some(hook) = std::env::var_os(AFTER_BUILD) {
        let ok = std::process::Command::new("sh").arg("-c").arg(hook).arg("hook").arg(model_dir).status().is_ok_and(|s| s.success());
        assert!(ok, "{AFTER_BUILD} hook failed");
    }
}

/// Called after each journaled trial (`done` counts the journal's trials).
pub fn after_trial(done: usize, replayed: bool) {
    let Some(n) = std::env::var(KILL_AFTER_TRIALS).ok().and_then(|v| v.parse::<usize>().ok()) else { return };
    if !replayed && done >= n {
        // A real SIGKILL: no destructor, no flush, exactly as `kill -9` from outside.
        let _ = std::process::Command::new("kill").args(["-KILL", &std::process::id().to_string()]).status();
        std::process::abort();
    }
}
