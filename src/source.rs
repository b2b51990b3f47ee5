//! What a model reference is: a Hub repo (at an optional branch, tag or commit) or a local
//! folder. Parsed once — from the command line, a fine-tunes list or a recipe — into
//! [`ModelSource`]; `hub::locate` is the one function that turns it into a folder (the Hub
//! cache, then a download unless offline). Nothing else guesses "Hub or local?".

use std::path::{Path, PathBuf};

/// A text that names no model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is neither a Hub repo id (`owner/name[@revision]`) nor an existing local folder")]
pub struct BadSource {
    pub value: String,
}

/// A model named by the user: on the Hub (at a branch, tag or commit) or in a local folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Hub { repo: String, revision: Option<String> },
    Local(PathBuf),
}

impl ModelSource {
    /// Parse `owner/name`, `owner/name@rev`, or a folder (`/abs`, `./rel`, `~/x`, or any
    /// existing directory, which wins over a Hub id as with `from_pretrained`).
    pub fn parse(text: &str) -> Result<Self, BadSource> {
        let bad = || BadSource { value: text.to_string() };
        let s = text.trim();
        if s.is_empty() {
            return Err(bad());
        }
        let looks_local = s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || s == "." || s == ".." || s.starts_with("~/");
        if looks_local || Path::new(s).is_dir() {
            let p = match s.strip_prefix("~/") {
                Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(rest),
                None => PathBuf::from(s),
            };
            if !p.is_dir() {
                return Err(BadSource { value: format!("{s} (no such folder)") });
            }
            return Ok(ModelSource::Local(p));
        }
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) => (r, Some(rev)),
            None => (s, None),
        };
        Self::hub(repo, revision).ok_or_else(bad)
    }

    /// A Hub source, if `repo` is a repo id and `revision` a plausible ref.
    pub fn hub(repo: &str, revision: Option<&str>) -> Option<Self> {
        if !is_repo_id(repo) {
            return None;
        }
        if let Some(rev) = revision {
            if rev.is_empty() || rev.chars().any(|c| c.is_whitespace() || c.is_control()) || rev.contains("..") {
                return None;
            }
        }
        Some(ModelSource::Hub { repo: repo.to_string(), revision: revision.map(str::to_string) })
    }

    /// The Hub repo id, for Hub sources.
    pub fn repo_id(&self) -> Option<&str> {
        match self {
            ModelSource::Hub { repo, .. } => Some(repo),
            ModelSource::Local(_) => None,
        }
    }

    pub fn revision(&self) -> Option<&str> {
        match self {
            ModelSource::Hub { revision, .. } => revision.as_deref(),
            ModelSource::Local(_) => None,
        }
    }

    pub fn is_hub(&self) -> bool {
        matches!(self, ModelSource::Hub { .. })
    }

    /// What a published card may say about it: the Hub id, or only a folder's name (a card
    /// must not leak the machine's layout).
    pub fn public_name(&self) -> String {
        match self {
            ModelSource::Hub { repo, .. } => repo.clone(),
            ModelSource::Local(p) => folder_name(p),
        }
    }

    /// A short name for a model: the repo's name, or the folder's.
    pub fn short_name(&self) -> String {
        match self {
            ModelSource::Hub { repo, .. } => repo.rsplit('/').next().unwrap_or(repo).to_string(),
            ModelSource::Local(p) => folder_name(&p.canonicalize().unwrap_or_else(|_| p.clone())),
        }
    }

    /// What makes two entries the same model: Hub ids compare case-insensitively (the Hub
    /// does) with the default branch spelled `main`; folders compare by canonical path.
    fn identity(&self) -> String {
        match self {
            ModelSource::Hub { repo, revision } => format!("hub:{}@{}", repo.to_lowercase(), revision.as_deref().unwrap_or("main")),
            ModelSource::Local(p) => format!("local:{}", std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display()),
        }
    }

    pub fn is_same_model(&self, other: &ModelSource) -> bool {
        self.identity() == other.identity()
    }
}

impl std::str::FromStr for ModelSource {
    type Err = BadSource;
    fn from_str(s: &str) -> Result<Self, BadSource> {
        Self::parse(s)
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Hub { repo, revision: Some(r) } => write!(f, "{repo}@{r}"),
            ModelSource::Hub { repo, revision: None } => f.write_str(repo),
            ModelSource::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

fn folder_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

/// `huggingface_hub`'s repo-id rule: `[owner/]name` of `[A-Za-z0-9_.-]`, at most 96 characters a
/// part, no `--` or `..`, no leading/trailing `-`/`.`, not ending in `.git`.
pub fn is_repo_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.is_empty() || parts.len() > 2 || id.contains("--") || id.contains("..") || id.ends_with(".git") {
        return false;
    }
    parts.iter().all(|p| {
        !p.is_empty()
            && p.len() <= 96
            && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !p.starts_with(['-', '.'])
            && !p.ends_with(['-', '.'])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_id_rule() {
        for ok in ["gpt2", "a/b", "Org-1/model_x.v2"] {
            assert!(is_repo_id(ok), "{ok}");
        }
        for bad in ["", "a//b", "a/b/c", "a--b/c", "a/b.git", "-a/b", "a/b.", "a b/c", "a/.."] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }

    #[test]
    fn parses_ids_revisions_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!("a/b@v1".parse::<ModelSource>().unwrap(), ModelSource::Hub { repo: "a/b".into(), revision: Some("v1".into()) });
        assert_eq!(ModelSource::parse(&dir.path().display().to_string()).unwrap(), ModelSource::Local(dir.path().to_path_buf()));
        assert!(ModelSource::parse("./surely-missing-folder-xyz").unwrap_err().value.contains("no such folder"));
        assert!(ModelSource::parse("x/y@").is_err());
        let local = ModelSource::Local(dir.path().join("base"));
        assert_eq!(local.public_name(), "base");
        assert_eq!(ModelSource::parse("org/m@main").unwrap().public_name(), "org/m");
    }
}
