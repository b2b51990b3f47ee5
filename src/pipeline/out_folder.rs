//! The rules of a job's output folder (`--out`), in one place so that the root command,
//! `search`, `baselines` and `demo` apply the same ones, and apply them before anything is
//! pulled, searched or written:
//!
//! - [`check_apart`]: the folder is not a source model's folder, inside one, or holding
//!   one (a job never writes into its sources), with or without `--force`;
//! - [`OutFolderLock`]: one job per folder, for the life of the job;
//! - [`check_out_folder`]: the folder is empty, ours for the same models, or `--force`d;
//! - [`check_resume`]: `--resume` has a journal to resume.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::PipelineError;
use crate::hub::{HubConfig, SourceList};
use crate::source::ModelSource;

/// The source list a job writes into its folder: what makes the folder an hf-tailor
/// folder, and whose models it holds.
pub const SOURCES_FILE: &str = "sources.yaml";

/// The lock file a job keeps in its output folder; it holds the job's process id.
pub const LOCK_FILE: &str = ".hf-tailor.lock";

fn refuse(out: &Path, why: String) -> PipelineError {
    PipelineError::OutFolder { path: out.display().to_string(), why }
}

/// The folder a source's files live in: a local folder as given, a Hub model's folder in
/// the cache (all its snapshots and blobs), known before anything is pulled.
pub fn source_folder(source: &ModelSource, cfg: &HubConfig) -> PathBuf {
    match source {
        ModelSource::Local(dir) => dir.clone(),
        ModelSource::Hub { repo, .. } => crate::hub::cache::RepoCache::new(&cfg.cache_dir, crate::hub::cache::RepoKind::Model, repo).root,
    }
}

/// Refuse an output folder that is a source model's folder, lies inside one, or holds
/// one: made before the pull and the search, and `--force` does not lift it.
pub fn check_apart(out: &Path, sources: &[ModelSource], cfg: &HubConfig) -> Result<(), PipelineError> {
    for s in sources {
        let dir = source_folder(s, cfg);
        if let Some(how) = crate::fsutil::overlap(out, &dir) {
            let whose = if matches!(s, ModelSource::Hub { .. }) { format!(" (the Hub cache's folder of {s})") } else { String::new() };
            return Err(refuse(out, format!("{how} {}{whose}: a job never writes into a source model; choose another --out", dir.display())));
        }
    }
    Ok(())
}

/// `--resume` needs a journal to resume: say so before anything is pulled, rather than
/// start a new search.
pub fn check_resume(journal: &Path, resume: bool) -> Result<(), PipelineError> {
    if resume && !journal.exists() {
        return Err(PipelineError::Plan(format!(
            "--resume: there is no search journal {} to resume; run without --resume to start the search",
            journal.display()
        )));
    }
    Ok(())
}

/// May a job write into `out`? Yes when it is absent or empty (but for a job's lock file),
/// when `force`, or when it is an earlier hf-tailor folder (it has a `sources.yaml`) for the
/// same job (the same models, when `expected` says which). A folder holding nothing but
/// the `sources.yaml` of a job of the same base (what a refused job of older versions
/// left) is no other job's: it holds no result. Anything else would overwrite files that
/// are not ours.
pub fn check_out_folder(out: &Path, expected: Option<&SourceList>, force: bool) -> Result<(), PipelineError> {
    let names: Vec<std::ffi::OsString> = match std::fs::read_dir(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Err(refuse(out, "exists and is not a folder".into())),
        Err(e) => return Err(PipelineError::io(out, e)),
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.file_name())).filter(|n| n != LOCK_FILE).collect(),
    };
    if force || names.is_empty() {
        return Ok(());
    }
    match SourceList::load(&out.join(SOURCES_FILE)) {
        Err(_) => Err(refuse(
            out,
            format!(
                "is not empty and is not an hf-tailor folder (no readable {SOURCES_FILE}); choose another folder, or pass --force to write into it"
            ),
        )),
        Ok(found) if names.len() == 1 && expected.is_some_and(|e| same_place(&e.base.source, &found.base.source)) => Ok(()),
        Ok(found) if expected.is_some_and(|e| !same_models(e, &found)) => Err(refuse(
            out,
            format!(
                "holds the results of another job (its {SOURCES_FILE} names other models); choose another folder, or pass --force to write into it"
            ),
        )),
        Ok(_) => Ok(()),
    }
}

/// Same base and siblings (repo, revision and files), whatever the handles.
fn same_models(a: &SourceList, b: &SourceList) -> bool {
    let key = |l: &SourceList| -> Vec<(ModelSource, Vec<(String, String)>)> {
        std::iter::once(&l.base).chain(&l.siblings).map(|m| (m.source.clone(), m.files.clone().into_iter().collect())).collect()
    };
    key(a) == key(b)
}

/// The same repo (any revision) or the same folder.
fn same_place(a: &ModelSource, b: &ModelSource) -> bool {
    match (a, b) {
        (ModelSource::Hub { repo: x, .. }, ModelSource::Hub { repo: y, .. }) => x.eq_ignore_ascii_case(y),
        (ModelSource::Local(x), ModelSource::Local(y)) => {
            std::fs::canonicalize(x).ok().zip(std::fs::canonicalize(y).ok()).is_some_and(|(x, y)| x == y)
        }
        _ => false,
    }
}

/// Lock files (and the folders created for them) this process holds, for the signal handler.
static HELD: Mutex<Vec<(PathBuf, Option<PathBuf>)>> = Mutex::new(Vec::new());

fn held() -> std::sync::MutexGuard<'static, Vec<(PathBuf, Option<PathBuf>)>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// The output folder, locked by this job until it is dropped: a second job on the folder
/// (resumed or not) is refused, naming this process. The lock is an exclusive `flock` on
/// `out/.hf-tailor.lock`, which the kernel releases however the process ends; the file
/// (holding the process id) is removed on drop, and a file left by a process that was
/// killed is taken over. A folder the lock created is removed again on drop when the job
/// left nothing in it (a refused job).
#[derive(Debug)]
pub struct OutFolderLock {
    file: Option<File>,
    path: PathBuf,
    created: Option<PathBuf>,
    /// The process id a stale lock file named (a job that ended without removing it).
    pub took_over: Option<u32>,
}

impl OutFolderLock {
    pub fn acquire(out: &Path) -> Result<Self, PipelineError> {
        if std::fs::metadata(out).is_ok_and(|m| !m.is_dir()) {
            return Err(refuse(out, "exists and is not a folder".into()));
        }
        let created = if out.exists() { None } else { Some(out.to_path_buf()) };
        let path = out.join(LOCK_FILE);
        // A holder that ends removes the file; whoever opened it meanwhile opens it again.
        for _ in 0..8 {
            std::fs::create_dir_all(out).map_err(|e| PipelineError::io(out, e))?;
            let file = match std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                r => r.map_err(|e| PipelineError::io(&path, e))?,
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = holder_pid(&file).map_or("another process".to_string(), |p| format!("process {p}"));
                    return Err(refuse(
                        out,
                        format!(
                            "is in use by another hf-tailor job ({holder}, lock file {LOCK_FILE}); wait for it to finish, or choose another --out"
                        ),
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(PipelineError::io(&path, e)),
            }
            if !is_same_file(&file, &path) {
                continue;
            }
            let took_over = holder_pid(&file).filter(|&p| p != std::process::id());
            let mut lock = Self { file: Some(file), path, created, took_over };
            lock.write_pid().map_err(|e| PipelineError::io(&lock.path, e))?;
            held().push((lock.path.clone(), lock.created.clone()));
            return Ok(lock);
        }
        Err(refuse(out, format!("its lock file {LOCK_FILE} keeps being replaced by other jobs; choose another --out")))
    }

    fn write_pid(&mut self) -> std::io::Result<()> {
        let mut f = self.file.as_ref().expect("held");
        f.set_len(0)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))?;
        writeln!(f, "{}", std::process::id())?;
        f.sync_data()
    }

    /// The note to print when a stale lock was taken over.
    pub fn note(&self) -> Option<String> {
        self.took_over
            .map(|pid| format!("took over the lock of {}: hf-tailor process {pid} held it and ended without releasing it", self.path.display()))
    }
}

impl Drop for OutFolderLock {
    fn drop(&mut self) {
        held().retain(|(p, _)| p != &self.path);
        // Removed while still locked, so nobody takes a lock on a file about to vanish
        // (and whoever opened it meanwhile sees it is gone and opens it again).
        let _ = std::fs::remove_file(&self.path);
        drop(self.file.take());
        if let Some(dir) = &self.created {
            // Only when empty: a refused job leaves nothing, not even the folder.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Remove the lock files this process holds (and the empty folders it created for them):
/// called by the CLI's SIGINT/SIGTERM handler just before it exits.
pub fn release_all() {
    for (path, created) in std::mem::take(&mut *held()) {
        let _ = std::fs::remove_file(&path);
        if let Some(dir) = created {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn holder_pid(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    Read::take(&mut file, 32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(unix)]
fn is_same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn is_same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_at_a_time_stale_ones_taken_over_and_a_created_folder_removed_when_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let first = OutFolderLock::acquire(&out).unwrap();
        assert_eq!(first.took_over, None);
        assert_eq!(std::fs::read_to_string(out.join(LOCK_FILE)).unwrap(), format!("{}\n", std::process::id()));
        // A second open file description conflicts, even in the same process.
        let e = OutFolderLock::acquire(&out).unwrap_err().to_string();
        assert!(e.contains(&format!("process {}", std::process::id())) && e.contains("in use"), "{e}");
        drop(first);
        assert!(!out.exists(), "the folder the lock created is removed when the job left nothing");
        // A lock file left by a killed job (no flock held) is taken over, and said so.
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join(LOCK_FILE), "4194305\n").unwrap();
        let lock = OutFolderLock::acquire(&out).unwrap();
        assert_eq!(lock.took_over, Some(4194305));
        assert!(lock.note().unwrap().contains("4194305"));
        std::fs::write(out.join("result"), "x").unwrap();
        drop(lock);
        assert!(out.join("result").exists() && !out.join(LOCK_FILE).exists());
    }

    #[test]
    fn an_out_folder_holding_only_the_sources_of_a_job_of_the_same_base_is_not_another_job() {
        use crate::recipe::SourceModel;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let list = |sib: &str| SourceList {
            base: SourceModel::hub("base", "org/base", Some(&"a".repeat(40))),
            siblings: vec![SourceModel::hub("s", sib, Some(&"b".repeat(40)))],
        };
        list("org/wrong-size").save(&out.join(SOURCES_FILE)).unwrap();
        check_out_folder(&out, Some(&list("org/fixed")), false).unwrap();
        // With results beside it, it is another job's folder.
        std::fs::write(out.join("journal.jsonl"), "").unwrap();
        let e = check_out_folder(&out, Some(&list("org/fixed")), false).unwrap_err().to_string();
        assert!(e.contains("another job"), "{e}");
        check_out_folder(&out, Some(&list("org/wrong-size")), false).unwrap();
    }
}
