//! All-or-nothing output: everything is written into a hidden folder beside the
//! destination and renamed into place only when complete and verified. An existing
//! non-empty destination is refused unless forced, and even then replaced only after the
//! new folder is complete. A staging folder is removed on every failure path (drop guard).

use std::path::{Path, PathBuf};

use super::BuildError;

fn dest_err(path: &Path, why: impl Into<String>) -> BuildError {
    BuildError::Destination { path: path.display().to_string(), why: why.into() }
}

/// Check the destination before any work: it must be absent, an empty folder, or (with
/// `force`) a folder to replace; it must not be one of the sources.
pub fn check_destination(out: &Path, force: bool, sources: &[&Path]) -> Result<(), BuildError> {
    if out.as_os_str().is_empty() {
        return Err(dest_err(out, "is empty"));
    }
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(dest_err(out, format!("cannot be inspected: {e}"))),
        Ok(m) if !m.is_dir() => return Err(dest_err(out, "exists and is not a folder")),
        Ok(_) => {
            let canon = std::fs::canonicalize(out).map_err(|e| dest_err(out, format!("cannot be resolved: {e}")))?;
            for s in sources {
                if std::fs::canonicalize(s).is_ok_and(|c| c == canon || c.starts_with(&canon)) {
                    return Err(dest_err(out, format!("holds the source model {}; choose another output folder", s.display())));
                }
            }
            let mut entries = std::fs::read_dir(out).map_err(|e| dest_err(out, format!("cannot be read: {e}")))?;
            if entries.next().is_some() && !force {
                return Err(dest_err(out, "exists and is not empty (use --force to replace it)"));
            }
        }
    }
    Ok(())
}

/// A hidden folder beside the destination, deleted on drop unless committed.
pub struct Staging {
    pub dir: PathBuf,
    out: PathBuf,
    committed: bool,
}

impl Staging {
    pub fn create(out: &Path) -> Result<Self, BuildError> {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| dest_err(out, format!("its parent folder cannot be created: {e}")))?;
        let dir = crate::fsutil::temp_sibling(out);
        std::fs::create_dir(&dir).map_err(|e| dest_err(out, format!("cannot create the staging folder {}: {e}", dir.display())))?;
        Ok(Self { dir, out: out.to_path_buf(), committed: false })
    }

    /// Move the finished folder into place. An empty destination folder is replaced by the
    /// rename itself; a non-empty one (allowed by `force` earlier) is moved aside first and
    /// deleted only after the new folder is in place, and moved back if that fails.
    pub fn commit(mut self) -> Result<(), BuildError> {
        let out = self.out.clone();
        let rename_err = |e: std::io::Error| dest_err(&out, format!("cannot move the finished output into place: {e}"));
        let existing_nonempty = out.is_dir() && std::fs::read_dir(&out).map(|mut d| d.next().is_some()).unwrap_or(false);
        if existing_nonempty {
            let aside = crate::fsutil::temp_sibling(&out);
            std::fs::rename(&out, &aside).map_err(rename_err)?;
            if let Err(e) = std::fs::rename(&self.dir, &out) {
                let _ = std::fs::rename(&aside, &out);
                return Err(rename_err(e));
            }
            self.committed = true;
            std::fs::remove_dir_all(&aside)
                .map_err(|e| dest_err(&out, format!("the new output is in place, but the old folder moved to {} could not be deleted: {e}", aside.display())))?;
        } else {
            std::fs::rename(&self.dir, &out).map_err(rename_err)?;
            self.committed = true;
        }
        // Make the rename durable: fsync the parent folder.
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(f) = std::fs::File::open(parent) {
                let _ = f.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
