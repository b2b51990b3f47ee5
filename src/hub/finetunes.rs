//! The fine-tunes list: one model a line, a Hub id with an optional `@revision` or a local
//! folder; blank lines and `#` comments are allowed. Every mistake names its line.

use std::path::Path;

use super::HubError;

pub use crate::source::{is_repo_id, ModelSource};

/// Parse a fine-tunes list; `path` only labels errors. Relative folders resolve against the
/// current directory (run from where the list's paths make sense, as with any CLI).
pub fn parse_finetunes(text: &str, path: &str) -> Result<Vec<ModelSource>, HubError> {
    let mut out: Vec<(usize, ModelSource)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        if content.split_whitespace().count() > 1 {
            return Err(HubError::ListLine { path: path.into(), line, message: format!("`{content}` holds more than one entry (one model a line)") });
        }
        let m = ModelSource::parse(content).map_err(|e| HubError::ListLine { path: path.into(), line, message: e.to_string() })?;
        if let Some((first_line, _)) = out.iter().find(|(_, o)| o.is_same_model(&m)) {
            return Err(HubError::DuplicateEntry { path: path.into(), line, first_line: *first_line, entry: content.into() });
        }
        out.push((line, m));
    }
    Ok(out.into_iter().map(|(_, m)| m).collect())
}

pub fn parse_finetunes_file(path: &Path) -> Result<Vec<ModelSource>, HubError> {
    let text = crate::fsutil::read_text_input(path, crate::limits::MAX_CONFIG_BYTES as u64).map_err(super::io_err(path))?;
    parse_finetunes(&text, &path.display().to_string())
}

/// `--finetunes` as every command takes it: each value that is an existing file, or that
/// is named like a list file (`.txt`, `.list`, `.lst`), is a fine-tunes list (the format
/// above); any other value is a comma-separated list of Hub ids or folders. Duplicates are
/// refused either way.
pub fn parse_finetunes_arg(values: &[String]) -> Result<Vec<ModelSource>, HubError> {
    let mut out: Vec<ModelSource> = Vec::new();
    for value in values {
        let path = Path::new(value);
        let list_name = path.extension().is_some_and(|e| ["txt", "list", "lst"].contains(&e.to_string_lossy().as_ref()));
        let found = if path.is_file() || (list_name && !value.contains(',')) {
            parse_finetunes_file(Path::new(value))?
        } else {
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|v| ModelSource::parse(v).map_err(HubError::from))
                .collect::<Result<_, _>>()?
        };
        for m in found {
            if out.iter().any(|o| o.is_same_model(&m)) {
                return Err(HubError::BadModelRef { value: format!("{m} (listed twice)") });
            }
            out.push(m);
        }
    }
    Ok(out)
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
                ModelSource::Hub { repo: "WizardLM/WizardLM-13B-V1.2".into(), revision: None },
                ModelSource::Hub { repo: "lmsys/vicuna-13b-v1.5".into(), revision: Some("abc123".into()) },
                ModelSource::Local(dir.path().to_path_buf()),
                ModelSource::Hub { repo: "gpt2".into(), revision: None },
            ]
        );
    }

    #[test]
    fn finetunes_arg_takes_a_list_file_or_comma_separated_models() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("siblings");
        std::fs::write(&list, "a/b\nc/d@v1 # pinned\n").unwrap();
        let folder = dir.path().display().to_string();
        let from_file = parse_finetunes_arg(&[list.display().to_string()]).unwrap();
        assert_eq!(from_file, parse_finetunes_arg(&["a/b,c/d@v1".into()]).unwrap());
        let mixed = parse_finetunes_arg(&[list.display().to_string(), format!("e/f,{folder}")]).unwrap();
        assert_eq!(mixed.len(), 4);
        assert_eq!(mixed[3], ModelSource::Local(dir.path().to_path_buf()));
        // A missing list file is an error naming it, not a Hub id called `list.txt`.
        let e = parse_finetunes_arg(&[dir.path().join("list.txt").display().to_string()]).unwrap_err();
        assert!(matches!(e, HubError::Io { .. }), "{e}");
        assert!(parse_finetunes_arg(&["a/b,A/B".into()]).unwrap_err().to_string().contains("twice"));
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
}
