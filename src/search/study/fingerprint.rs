//! What a study's workers must agree on: every model's files and every task file, by
//! sha256. A Hub-cache file is a link to `blobs/<sha256>` for weights (the LFS oid), whose
//! name is its hash; other files are hashed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Family;

/// One model: its recipe name, where it came from, its commit (Hub cache) and files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourcePrint {
    pub name: String,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// File name → sha256 (hex).
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub sources: Vec<SourcePrint>,
    /// Task file path → sha256.
    pub tasks: BTreeMap<String, String>,
}

impl Fingerprint {
    pub fn of(family: &Family, task_files: &[&Path]) -> std::io::Result<Self> {
        let models = std::iter::once(&family.base).chain(&family.siblings);
        let mut sources = Vec::new();
        for (name, ckpt) in family.names.iter().zip(models) {
            let mut files = BTreeMap::new();
            for entry in std::fs::read_dir(&ckpt.dir)? {
                let entry = entry?;
                let path = entry.path();
                if !path.is_file() {
                    continue;
                }
                files.insert(entry.file_name().to_string_lossy().into_owned(), file_sha256(&path)?);
            }
            let commit = ckpt
                .dir
                .parent()
                .filter(|p| p.file_name().is_some_and(|n| n == "snapshots"))
                .and(ckpt.dir.file_name())
                .map(|c| c.to_string_lossy().into_owned())
                .filter(|c| crate::hub::cache::is_commit_hash(c));
            sources.push(SourcePrint { name: name.clone(), source: ckpt.name.clone(), commit, files });
        }
        let mut tasks = BTreeMap::new();
        for p in task_files {
            tasks.insert(p.display().to_string(), file_sha256(p)?);
        }
        Ok(Self { sources, tasks })
    }

    /// What differs between the study's fingerprint (`self`) and a worker's, in words.
    pub fn difference(&self, other: &Fingerprint) -> Option<String> {
        for (a, b) in self.sources.iter().zip(&other.sources) {
            if a.name != b.name {
                return Some(format!("the family's models differ: `{}` where the study has `{}`", b.name, a.name));
            }
            if a.commit.is_some() && b.commit.is_some() && a.commit != b.commit {
                return Some(format!("model `{}` is at commit {:?} where the study has {:?}", a.name, b.commit, a.commit));
            }
            for (f, h) in &a.files {
                match b.files.get(f) {
                    Some(g) if g == h => {}
                    Some(g) => return Some(format!("model `{}`: {f} has sha256 {g} where the study has {h}", a.name)),
                    None => return Some(format!("model `{}` has no {f}", a.name)),
                }
            }
        }
        if self.sources.len() != other.sources.len() {
            return Some(format!("{} models where the study has {}", other.sources.len(), self.sources.len()));
        }
        if self.tasks.values().collect::<Vec<_>>() != other.tasks.values().collect::<Vec<_>>() {
            return Some("the task files differ from the study's (by sha256)".into());
        }
        None
    }
}

/// sha256 of a file: the blob name when it is a Hub-cache link to `blobs/<sha256>`.
fn file_sha256(path: &Path) -> std::io::Result<String> {
    if let Ok(target) = std::fs::read_link(path) {
        if let Some(name) = target.file_name().and_then(|n| n.to_str()) {
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(name.to_ascii_lowercase());
            }
        }
    }
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut h)?;
    Ok(hex::encode(h.finalize()))
}
