//! Switches that let tests interrupt a run at an exact point instead of racing it with
//! timers. Compiled only into test builds (the `testkit` feature, which every test target
//! turns on); a release or CUDA binary has none of them.

/// Kill the process with SIGKILL once this many trials are journaled in this run.
#[cfg(feature = "testkit")]
const KILL_AFTER_TRIALS: &str = "HF_TAILOR_TEST_KILL_AFTER_TRIALS";
/// `N:PATH`: once N trials are journaled, create `PATH.paused` and wait (up to 10 minutes)
/// until PATH exists, so a test can act while the search is surely running.
#[cfg(feature = "testkit")]
const PAUSE_AFTER_TRIALS: &str = "HF_TAILOR_TEST_PAUSE_AFTER_TRIALS";

/// Called after each trial the search reports (`done` counts the journal's trials).
#[cfg(feature = "testkit")]
pub fn pause_after_trial(done: usize) {
    let Some((n, path)) = std::env::var(PAUSE_AFTER_TRIALS).ok().and_then(|v| v.split_once(':').map(|(n, p)| (n.to_string(), p.to_string()))) else {
        return;
    };
    if n.parse::<usize>().ok() != Some(done) {
        return;
    }
    let _ = std::fs::write(format!("{path}.paused"), "");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(600);
    while !std::path::Path::new(&path).exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(not(feature = "testkit"))]
pub fn pause_after_trial(_done: usize) {}

/// Called after each journaled trial (`done` counts the journal's trials).
#[cfg(feature = "testkit")]
pub fn after_trial(done: usize, replayed: bool) {
    if !replayed {
        pause_after_trial(done);
    }
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
