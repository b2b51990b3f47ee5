//! All-or-nothing output: everything is written into a hidden folder beside the
//! destination (`.NAME.tmp-PID-N`) and moved into place only when complete and verified.
//!
//! - An existing non-empty destination is refused unless forced, and even then replaced in
//!   one atomic step: on Linux `renameat2(RENAME_EXCHANGE)` swaps the new folder and the old
//!   one, and the old one is removed afterwards; elsewhere the old folder is moved aside and
//!   removed only once the new one is in place. At no moment is there no folder at the
//!   destination (Linux), or is the old model gone before the new one is there (elsewhere).
//! - A staging folder is removed on every failure path (drop guard), on SIGINT/SIGTERM
//!   (the CLI calls [`remove_in_flight`] from its signal handler), and, after a SIGKILL or a
//!   crash, by the next build into the same destination, which removes staging folders whose
//!   process is gone and says so.
//!
//! Test hook: `HF_TAILOR_FAULT=KIND@STEP` makes the process fail at a named step, so tests
//! can check each window deterministically (`abort` dies as a crash would, `sigterm`
//! delivers SIGTERM to the process). Steps: `staged` (output complete, not yet in place),
//! `exchanged` (new folder in place, old one not yet removed), `moved-aside` (fallback
//! replace: old folder moved aside, new one not yet in place).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::BuildError;

fn dest_err(path: &Path, why: impl Into<String>) -> BuildError {
    BuildError::Destination { path: path.display().to_string(), why: why.into() }
}

/// Check the destination before any work: it must be absent, an empty folder, or (with
/// `force`) a folder to replace; it must not be one of the sources, lie inside one or hold one.
pub fn check_destination(out: &Path, force: bool, sources: &[&Path]) -> Result<(), BuildError> {
    if out.as_os_str().is_empty() {
        return Err(dest_err(out, "is empty"));
    }
    for s in sources {
        if let Some(how) = crate::fsutil::overlap(out, s) {
            return Err(dest_err(out, format!("{how} {}; choose another output folder", s.display())));
        }
    }
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(dest_err(out, format!("cannot be inspected: {e}"))),
        Ok(m) if !m.is_dir() => return Err(dest_err(out, "exists and is not a folder")),
        Ok(_) => {
            let mut entries = std::fs::read_dir(out).map_err(|e| dest_err(out, format!("cannot be read: {e}")))?;
            if entries.next().is_some() && !force {
                return Err(dest_err(out, "exists and is not empty (use --force to replace it)"));
            }
        }
    }
    Ok(())
}

/// Staging folders of this process that are not committed yet (for the signal handler).
static IN_FLIGHT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn in_flight() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Register a temporary file (not a folder) this process is writing, so that the signal
/// handler removes it too (the GGUF export's `.NAME.gguf.tmp-PID-N`).
pub fn track_in_flight(path: &Path) {
    in_flight().push(path.to_path_buf());
}

/// The temporary `path` is committed or removed: the signal handler must leave it alone.
pub fn untrack_in_flight(path: &Path) {
    in_flight().retain(|d| d != path);
}

/// Remove every staging folder (and tracked temporary file) this process has not
/// committed; returns those removed. Called by the CLI on SIGINT/SIGTERM just before it exits.
pub fn remove_in_flight() -> Vec<PathBuf> {
    let dirs = std::mem::take(&mut *in_flight());
    let mut removed = Vec::new();
    for d in dirs {
        // The build may still be creating files in it: try a few times.
        for _ in 0..5 {
            let gone = if std::fs::symlink_metadata(&d).is_ok_and(|m| !m.is_dir()) { std::fs::remove_file(&d) } else { std::fs::remove_dir_all(&d) };
            match gone {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => continue,
                _ => break,
            }
        }
        if !d.exists() {
            removed.push(d);
        }
    }
    removed
}

/// A hidden folder beside the destination, deleted on drop unless committed.
pub struct Staging {
    pub dir: PathBuf,
    out: PathBuf,
    committed: bool,
    /// What the user should know (stale staging folders that were removed).
    pub notes: Vec<String>,
}

impl Staging {
    pub fn create(out: &Path) -> Result<Self, BuildError> {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| dest_err(out, format!("its parent folder cannot be created: {e}")))?;
        let notes = remove_stale(out);
        let dir = crate::fsutil::temp_sibling(out);
        // Registered before it exists, so a signal never misses it.
        in_flight().push(dir.clone());
        if let Err(e) = std::fs::create_dir(&dir) {
            in_flight().retain(|d| d != &dir);
            return Err(dest_err(out, format!("cannot create the staging folder {}: {e}", dir.display())));
        }
        Ok(Self { dir, out: out.to_path_buf(), committed: false, notes })
    }

    /// Move the finished folder into place. An absent or empty destination is replaced by
    /// the rename itself; a non-empty one (allowed by `force` earlier) is swapped atomically
    /// with the new folder where the OS can, and removed afterwards.
    pub fn commit(mut self) -> Result<(), BuildError> {
        fault_point("staged");
        let out = self.out.clone();
        let rename_err = |e: std::io::Error| dest_err(&out, format!("cannot move the finished output into place: {e}"));
        let existing_nonempty = out.is_dir() && std::fs::read_dir(&out).map(|mut d| d.next().is_some()).unwrap_or(false);
        if existing_nonempty {
            self.replace_existing().map_err(rename_err)?;
        } else {
            std::fs::rename(&self.dir, &out).map_err(rename_err)?;
            self.committed = true;
        }
        in_flight().retain(|d| d != &self.dir);
        sync_parent(&out);
        Ok(())
    }

    /// Put the new folder where the old one is; the old one ends at `self.dir` and is removed.
    fn replace_existing(&mut self) -> std::io::Result<()> {
        let out = self.out.clone();
        if exchange(&self.dir, &out)? {
            // `out` is the new model, `self.dir` the old one: nothing can be lost from here on.
            self.committed = true;
            sync_parent(&out);
            fault_point("exchanged");
            return remove_old(&self.dir, &out);
        }
        // No atomic exchange here: move the old folder aside, keep it until the new one is in place.
        // Not a staging name: neither the signal handler nor a later build's clean-up of
        // stale staging folders may take the old model for debris.
        let aside = crate::fsutil::temp_sibling(&out).with_extension("old");
        std::fs::rename(&out, &aside)?;
        fault_point("moved-aside");
        if let Err(e) = std::fs::rename(&self.dir, &out) {
            let _ = std::fs::rename(&aside, &out);
            return Err(e);
        }
        self.committed = true;
        remove_old(&aside, &out)
    }
}

fn remove_old(old: &Path, out: &Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(old).map_err(|e| {
        std::io::Error::new(e.kind(), format!("the new output is in place, but the old folder moved to {} could not be deleted: {e}", old.display()))
    })?;
    let _ = out;
    Ok(())
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        in_flight().retain(|d| d != &self.dir);
    }
}

/// Make renames durable: fsync the parent folder.
fn sync_parent(out: &Path) {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(f) = std::fs::File::open(parent) {
            let _ = f.sync_all();
        }
    }
}

/// Swap `a` and `b` atomically. Ok(false) when the OS or file system cannot.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c =
        |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"));
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths relative to the working directory; the
    // syscall only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_renameat2, libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // Not implemented by the kernel or the file system: fall back.
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// `.NAME.tmp-PID-N` beside `out`: the PID of a staging folder for this destination.
fn staging_pid(out_name: &str, entry: &str) -> Option<u32> {
    let rest = entry.strip_prefix('.')?.strip_prefix(out_name)?.strip_prefix(".tmp-")?;
    let (pid, n) = rest.split_once('-')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
    pid.parse().ok()
}

fn process_is_gone(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return true };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Remove staging folders for `out` left by builds that were killed (their process is
/// gone); returns one note per folder removed.
fn remove_stale(out: &Path) -> Vec<String> {
    let Some(name) = out.file_name().map(|n| n.to_string_lossy().into_owned()) else { return Vec::new() };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&parent) else { return Vec::new() };
    let mut notes = Vec::new();
    for e in entries.flatten() {
        let entry = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = staging_pid(&name, &entry) else { continue };
        if pid == std::process::id() || !process_is_gone(pid) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = parent.join(&entry);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => notes.push(format!("removed {}, left by an interrupted build (process {pid} is gone)", path.display())),
            Err(e) => notes.push(format!("could not remove {}, left by an interrupted build (process {pid}): {e}", path.display())),
        }
    }
    notes
}

/// The test hook described in the module docs.
fn fault_point(step: &str) {
    let Ok(spec) = std::env::var("HF_TAILOR_FAULT") else { return };
    let Some((kind, at)) = spec.split_once('@') else { return };
    if at != step {
        return;
    }
    match kind {
        "abort" => std::process::abort(),
        "sigterm" => {
            // SAFETY: raising a signal at our own process; the handler thread exits the process.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            // Wait for the handler to end the process, as a build interrupted here would.
            loop {
                std::thread::park();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_recognised_only_for_their_destination() {
        assert_eq!(staging_pid("out", ".out.tmp-123-0"), Some(123));
        assert_eq!(staging_pid("out", ".out.tmp-123-"), None);
        assert_eq!(staging_pid("out", ".other.tmp-123-0"), None);
        assert_eq!(staging_pid("out", ".out.tmp-x-0"), None);
        assert_eq!(staging_pid("out", "out"), None);
    }

    #[test]
    fn replacing_swaps_in_the_new_folder_and_removes_the_old() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("model");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("old"), "old").unwrap();
        let stage = Staging::create(&out).unwrap();
        let dir = stage.dir.clone();
        assert!(in_flight().contains(&dir));
        std::fs::write(stage.dir.join("new"), "new").unwrap();
        stage.commit().unwrap();
        assert!(out.join("new").is_file() && !out.join("old").exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1, "nothing but the output is left");
        assert!(!in_flight().contains(&dir));
    }

    #[test]
    fn stale_folders_of_dead_processes_are_removed_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("model");
        // A PID above the kernel's maximum (4194304) is never alive.
        let dead = tmp.path().join(".model.tmp-99999999-0");
        let mine = tmp.path().join(format!(".model.tmp-{}-77", std::process::id()));
        let other = tmp.path().join(".other.tmp-99999999-0");
        for d in [&dead, &mine, &other] {
            std::fs::create_dir(d).unwrap();
        }
        let notes = remove_stale(&out);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("99999999") && notes[0].contains("interrupted"), "{notes:?}");
        assert!(!dead.exists() && mine.exists() && other.exists());
    }
}
