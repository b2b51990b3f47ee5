//! The cache layout shared with Python's `huggingface_hub`:
//! `<cache>/models--owner--name/{blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/<branch>}`.
//! A partial download lives at `blobs/<etag>.incomplete` (the name Python resumes from too).

use std::path::{Path, PathBuf};

/// Model or dataset repo: decides the cache folder prefix and the URL paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// `models` / `datasets`: the cache prefix and the `/api/<plural>/` segment.
    pub fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    /// Prefix of `resolve` URLs: nothing for models, `datasets/` for datasets.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }
}

/// One repo's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    pub root: PathBuf,
}

pub fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An etag the cache may name a blob by: what the Hub sends (a git blob id or an LFS
/// sha256, hex, already unquoted). Anything else (`..`, a path, empty) is refused.
pub fn is_blob_etag(etag: &str) -> bool {
    (1..=128).contains(&etag.len()) && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why `file` (a path inside a repo, as a listing or the user names it) cannot be a cache
/// or upload path: empty, absolute, `.`/`..` or empty components, a backslash or a NUL.
pub fn repo_path_problem(file: &str) -> Option<&'static str> {
    if file.is_empty() {
        Some("is empty")
    } else if file.starts_with('/') {
        Some("is absolute")
    } else if file.contains('\\') {
        Some("holds a backslash")
    } else if file.contains('\0') {
        Some("holds a NUL byte")
    } else if file.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        Some("has an empty, `.` or `..` component")
    } else {
        None
    }
}

fn refused(what: &str, value: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("refusing {what} `{}` as a cache path", value.escape_debug()))
}

impl RepoCache {
    pub fn new(cache_dir: &Path, kind: RepoKind, repo: &str) -> Self {
        let folder = std::iter::once(kind.plural()).chain(repo.split('/')).collect::<Vec<_>>().join("--");
        Self { root: cache_dir.join(folder) }
    }

    /// `root/<rel>` when every component of `rel` is a plain name, so the result lies under
    /// the repo folder whatever a server sent.
    fn under(&self, rel: &Path, what: &str) -> std::io::Result<PathBuf> {
        let plain = rel.components().count() > 0 && rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            return Err(refused(what, &rel.to_string_lossy()));
        }
        Ok(self.root.join(rel))
    }

    fn checked_etag(etag: &str) -> std::io::Result<&str> {
        if is_blob_etag(etag) {
            Ok(etag)
        } else {
            Err(refused("etag", etag))
        }
    }

    fn checked_commit(commit: &str) -> std::io::Result<&str> {
        if is_commit_hash(commit) {
            Ok(commit)
        } else {
            Err(refused("commit", commit))
        }
    }

    pub fn blob(&self, etag: &str) -> std::io::Result<PathBuf> {
        self.under(&Path::new("blobs").join(Self::checked_etag(etag)?), "etag")
    }

    pub fn incomplete(&self, etag: &str) -> std::io::Result<PathBuf> {
        self.under(&Path::new("blobs").join(format!("{}.incomplete", Self::checked_etag(etag)?)), "etag")
    }

    /// `snapshots/<commit>`; `commit` must be a commit id.
    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    pub fn snapshot_file(&self, commit: &str, file: &str) -> std::io::Result<PathBuf> {
        Self::checked_commit(commit)?;
        if repo_path_problem(file).is_some() {
            return Err(refused("file name", file));
        }
        self.under(&Path::new("snapshots").join(commit).join(file), "file name")
    }

    /// The commit a branch/tag name points to in the cache (a commit hash is its own answer).
    pub fn resolve(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let path = self.under(&Path::new("refs").join(revision), "revision").ok()?;
        std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| is_commit_hash(s))
    }

    pub fn write_ref(&self, revision: &str, commit: &str) -> std::io::Result<()> {
        if is_commit_hash(revision) {
            return Ok(());
        }
        Self::checked_commit(commit)?;
        if repo_path_problem(revision).is_some() {
            return Err(refused("revision", revision));
        }
        let path = self.under(&Path::new("refs").join(revision), "revision")?;
        std::fs::create_dir_all(path.parent().expect("refs/<rev> has a parent"))?;
        crate::fsutil::write_atomic(&path, commit.as_bytes())
    }

    /// Point `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative symlink, as Python does.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> std::io::Result<PathBuf> {
        let pointer = self.snapshot_file(commit, file)?;
        Self::checked_etag(etag)?;
        let parent = pointer.parent().expect("snapshot file has a parent");
        std::fs::create_dir_all(parent)?;
        // `file` may be nested (`data/x.parquet`): climb one level per component, then up to the repo root.
        let depth = Path::new(file).components().count() + 1;
        let target = Path::new(&"../".repeat(depth)).join("blobs").join(etag);
        match std::fs::symlink_metadata(&pointer) {
            Ok(_) => std::fs::remove_file(&pointer)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::symlink(&target, &pointer)?;
        Ok(pointer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_python() {
        let dir = tempfile::tempdir().unwrap();
        let c = RepoCache::new(dir.path(), RepoKind::Model, "org/name");
        assert!(c.root.ends_with("models--org--name"));
        let d = RepoCache::new(dir.path(), RepoKind::Dataset, "cais/mmlu");
        assert!(d.root.ends_with("datasets--cais--mmlu"));
        let commit = "a".repeat(40);
        std::fs::create_dir_all(c.root.join("blobs")).unwrap();
        std::fs::write(c.blob("e1").unwrap(), b"hello").unwrap();
        let p = c.link(&commit, "sub/dir/f.txt", "e1").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new("../../../../blobs/e1"));
        c.write_ref("main", &commit).unwrap();
        assert_eq!(c.resolve("main"), Some(commit.clone()));
        assert_eq!(c.resolve(&commit), Some(commit));
        assert_eq!(c.resolve("dev"), None);
    }

    #[test]
    fn server_supplied_names_cannot_leave_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let c = RepoCache::new(dir.path(), RepoKind::Model, "org/name");
        let commit = "b".repeat(40);
        for etag in ["../../victim", "/etc/passwd", "", "a/b", "e1.x", "..", "W/\"x\""] {
            assert!(c.blob(etag).is_err(), "{etag}");
            assert!(c.incomplete(etag).is_err(), "{etag}");
            assert!(c.link(&commit, "f", etag).is_err(), "{etag}");
        }
        for bad_commit in ["../../x", "/abs", "", "main"] {
            assert!(c.link(bad_commit, "f", "e1").is_err(), "{bad_commit}");
            assert!(c.write_ref("main", bad_commit).is_err(), "{bad_commit}");
        }
        for file in ["../evil", "a/../../evil", "/abs", "a\\b", "a//b", "./a", "a\0b", ""] {
            assert!(c.snapshot_file(&commit, file).is_err(), "{file:?}");
            assert!(repo_path_problem(file).is_some(), "{file:?}");
        }
        for rev in ["/etc/x", "../x", "a/../../x"] {
            assert!(c.write_ref(rev, &commit).is_err(), "{rev}");
        }
        assert!(c.write_ref("refs/pr/1", &commit).is_ok());
        assert_eq!(repo_path_problem("all/validation-x.parquet"), None);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the repo folder");
    }
}
