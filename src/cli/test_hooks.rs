//! Switches that let tests interrupt a run at an exact point instead of racing it with
//! timers. Compiled only into test builds (the `testkit` feature, which every test target
//! turns on); a release or CUDA binary has none of them.

/// Kill the process with SIGKILL once this many trials are journaled in this run.
#[cfg(feature = "testkit")]
const KILL_AFTER_TRIALS: &str = "HF_TAILOR_TEST_KILL_AFTER_TRIALS";

/// Called after each journaled trial (`done` counts the journal's trials).
#[cfg(feature = "testkit")]
pub fn after_trial(done: usize, replayed: bool) {
    let Some(n) = std::env::var(KILL_AFTER_TRIALS).ok().and_then(|v| v.parse::<usize>().ok()) else { return };
    if !replayed && done >= n {
        // A real SIGKILL: no destructor, no flush, exactly as `kill -9` from outside.
        // SAFETY: kill(2) on our own pid; no memory is touched.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        std::process::abort();
    }
}

#[cfg(not(feature = "testkit"))]
pub fn after_trial(_done: usize, _replayed: bool) {}
