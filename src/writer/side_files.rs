//! The tokenizer files, generation config and chat template a tailored model carries: the
//! recipe's tokenizer source's files byte for byte, with the recipe's chat template written
//! as transformers 5 saves one (`chat_template.jinja`, no `chat_template` key in
//! tokenizer_config.json) when it is not the tokenizer source's own.

use std::path::Path;

use serde_json::Value;

use super::BuildError;
use crate::checkpoint::{self, Family};
use crate::recipe::{ChatTemplate, Recipe};

const TEMPLATE_FILE: &str = "chat_template.jinja";

/// Write the side files into `dir`; returns the bytes written.
pub fn write(family: &Family, recipe: &Recipe, dir: &Path) -> Result<u64, BuildError> {
    let source_name = recipe.tokenizer_model();
    let source = family.get(source_name).ok_or_else(|| BuildError::Recipe(format!("tokenizer source `{source_name}` was not opened")))?;
    let own = match &recipe.chat_template {
        None => true,
        Some(ChatTemplate::Model(m)) => m == source_name,
        Some(ChatTemplate::File { .. }) => false,
    };
    let mut bytes = 0;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| BuildError::Io { path: path.clone(), source: e }
    };
    let entries = std::fs::read_dir(&source.dir).map_err(io(&source.dir))?;
    for e in entries {
        let e = e.map_err(io(&source.dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !checkpoint::is_side_file(&name) || !e.path().is_file() {
            continue;
        }
        if !own && name.starts_with("chat_template.") {
            continue;
        }
        if !own && name == "tokenizer_config.json" {
            bytes += write_config_without_template(&e.path(), &dir.join(&name))?;
            continue;
        }
        bytes += std::fs::copy(e.path(), dir.join(&name)).map_err(io(&e.path()))?;
    }
    if !own {
        if let Some(text) = recipe.chat_template.as_ref().and_then(|c| checkpoint::template_text(family, c)) {
            super::write_text(&dir.join(TEMPLATE_FILE), &text)?;
            bytes += text.len() as u64;
        }
    }
    Ok(bytes)
}

/// tokenizer_config.json with its `chat_template` removed (the template lives in its own file).
fn write_config_without_template(from: &Path, to: &Path) -> Result<u64, BuildError> {
    let text = crate::fsutil::read_text_input(from, crate::limits::MAX_CONFIG_BYTES as u64)
        .map_err(|e| BuildError::Io { path: from.display().to_string(), source: e })?;
    let mut v: Value =
        serde_json::from_str(&text).map_err(|e| BuildError::Recipe(format!("{}: tokenizer_config.json does not parse: {e}", from.display())))?;
    if let Some(o) = v.as_object_mut() {
        o.remove("chat_template");
    }
    super::write_json(to, &v)
}
