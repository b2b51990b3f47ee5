//! The fine-tunes list: one model a line, a Hub id with an optional `@revision` or a local
//! folder; blank lines and `#` comments are allowed. Every mistake names its line.

use std::path::{Path, PathBuf};

use super::HubError;

/// A model named by the user: on the Hub (at a branch, tag or commit) or in a local folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Hub { repo: String, revision: Option<String> },
    Local(PathBuf),
}

impl ModelRef {
    /// Parse `owner/name`, `owner/name@rev`, or a folder (`/abs`, `./rel`, `~/x`, or any
    /// existing directory, which wins over a Hub id as with `from_pretrained`).
    pub fn parse(text: &str) -> Result<Self, HubError> {
        let bad = || HubError::BadModelRef { value: text.to_string() };
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
                return Err(HubError::BadModelRef { value: format!("{s} (no such folder)") });
            }
            return Ok(ModelRef::Local(p));
        }
        let (repo, revision) = match s.split_once('@') {
            Some((r, rev)) => (r, Some(rev)),
            None => (s, None),
        };
        if !is_repo_id(repo) {
            return Err(bad());
        }
        if let Some(rev) = revision {
            if rev.is_empty() || rev.chars().any(|c| c.is_whitespace() || c.is_control()) || rev.contains("..") {
                return Err(bad());
            }
        }
        Ok(ModelRef::Hub { repo: repo.to_string(), revision: revision.map(str::to_string) })
    }

    /// What makes two entries the same model: Hub ids compare case-insensitively (the Hub
    /// does) with the default branch spelled `main`; folders compare by canonical path.
    fn identity(&self) -> String {
        match self {
            ModelRef::Hub { repo, revision } => format!("hub:{}@{}", repo.to_lowercase(), revision.as_deref().unwrap_or("main")),
            ModelRef::Local(p) => format!("local:{}", std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display()),
        }
    }

    pub fn is_same_model(&self, other: &ModelRef) -> bool {
        self.identity() == other.identity()
    }
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelRef::Hub { repo, revision: Some(r) } => write!(f, "{repo}@{r}"),
            ModelRef::Hub { repo, revision: None } => f.write_str(repo),
            ModelRef::Local(p) => write!(f, "{}", p.display()),
        }
    }
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

/// Parse a fine-tunes list; `path` only labels errors. Relative folders resolve against the
/// current directory (run from where the list's paths make sense, as with any CLI).
pub fn parse_finetunes(text: &str, path: &str) -> Result<Vec<ModelRef>, HubError> {
    let mut out: Vec<(usize, ModelRef)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        if content.split_whitespace().count() > 1 {
            return Err(HubError::ListLine {
                path: path.into(),
                line,
                message: format!("`{content}` holds more than one entry (one model a line)"),
            });
        }
        let m = ModelRef::parse(content).map_err(|e| HubError::ListLine { path: path.into(), line, message: e.to_string() })?;
        if let Some((first_line, _)) = out.iter().find(|(_, o)| o.is_same_model(&m)) {
            return Err(HubError::DuplicateEntry { path: path.into(), line, first_line: *first_line, entry: content.into() });
        }
        out.push((line, m));
    }
    Ok(out.into_iter().map(|(_, m)| m).collect())
}

pub fn parse_finetunes_file(path: &Path) -> Result<Vec<ModelRef>, HubError> {
    let text = std::fs::read_to_string(path).map_err(super::io_err(path))?;
    parse_finetunes(&text, &path.display().to_string())
}

/// A `#` starts a comment at the start of a line or after whitespace (ids never hold `#`).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_revisions_folders_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().display().to_string();
        let text = format!("# siblings\n\nWizardLM/WizardLM-13B-V1.2\nlmsys/vicuna-13b-v1.5@abc123 # pinned\n  {folder}  \ngpt2\n");
        let refs = parse_finetunes(&text, "list.txt").unwrap();
        assert_eq!(
            refs,
            vec![
                ModelRef::Hub { repo: "WizardLM/WizardLM-13B-V1.2".into(), revision: None },
                ModelRef::Hub { repo: "lmsys/vicuna-13b-v1.5".into(), revision: Some("abc123".into()) },
                ModelRef::Local(dir.path().to_path_buf()),
                ModelRef::Hub { repo: "gpt2".into(), revision: None },
            ]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_finetunes("a/b\n\nbad id here\n", "l.txt").unwrap_err().to_string();
        assert!(e.starts_with("l.txt:3:"), "{e}");
        let e = parse_finetunes("a/b\nx/y@\n", "l.txt").unwrap_err().to_string();
        assert!(e.starts_with("l.txt:2:"), "{e}");
        let e = parse_finetunes("a/b/c\n", "l.txt").unwrap_err().to_string();
        assert!(e.starts_with("l.txt:1:"), "{e}");
        let e = parse_finetunes("./surely-missing-folder-xyz\n", "l.txt").unwrap_err().to_string();
        assert!(e.contains("l.txt:1:") && e.contains("no such folder"), "{e}");
        let e = parse_finetunes("Org/Model\n#c\norg/model@main\n", "l.txt").unwrap_err();
        assert!(matches!(e, HubError::DuplicateEntry { line: 3, first_line: 1, .. }), "{e}");
        // Different revisions of one repo are different models.
        assert_eq!(parse_finetunes("a/b@v1\na/b@v2\n", "l").unwrap().len(), 2);
    }

    #[test]
    fn repo_id_rule() {
        for ok in ["gpt2", "a/b", "Org-1/model_x.v2"] {
            assert!(is_repo_id(ok), "{ok}");
        }
        for bad in ["", "a//b", "a/b/c", "a--b/c", "a/b.git", "-a/b", "a/b.", "a b/c", "a/.."] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }
}
