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

impl RepoCache {
    pub fn new(cache_dir: &Path, kind: RepoKind, repo: &str) -> Self {
        let folder = std::iter::once(kind.plural()).chain(repo.split('/')).collect::<Vec<_>>().join("--");
        Self { root: cache_dir.join(folder) }
    }

    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    pub fn incomplete(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    pub fn snapshot_file(&self, commit: &str, file: &str) -> PathBuf {
        self.snapshot_dir(commit).join(file)
    }

    /// The commit a branch/tag name points to in the cache (a commit hash is its own answer).
    pub fn resolve(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        std::fs::read_to_string(self.root.join("refs").join(revision)).ok().map(|s| s.trim().to_string()).filter(|s| is_commit_hash(s))
    }

    pub fn write_ref(&self, revision: &str, commit: &str) -> std::io::Result<()> {
        if is_commit_hash(revision) {
            return Ok(());
        }
        let path = self.root.join("refs").join(revision);
        std::fs::create_dir_all(path.parent().expect("refs/<rev> has a parent"))?;
        crate::fsutil::write_atomic(&path, commit.as_bytes())
    }

    /// Point `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative symlink, as Python does.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> std::io::Result<PathBuf> {
        let pointer = self.snapshot_file(commit, file);
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
        std::fs::write(c.blob("e1"), b"hello").unwrap();
        let p = c.link(&commit, "sub/dir/f.txt", "e1").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new("../../../../blobs/e1"));
        c.write_ref("main", &commit).unwrap();
        assert_eq!(c.resolve("main"), Some(commit.clone()));
        assert_eq!(c.resolve(&commit), Some(commit));
        assert_eq!(c.resolve("dev"), None);
    }
}
