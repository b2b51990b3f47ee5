//! Which tokenizer and chat template a tailored model carries: reading a model's chat
//! template, resolving `--chat-template`, and checking a tokenizer source against the family.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{CheckpointError, Family};
use crate::recipe::ChatTemplate;

/// The chat template a model folder carries, as transformers reads it: `chat_template.jinja`
/// (transformers 5), else `chat_template` in tokenizer_config.json (a string, or the
/// `default` entry of a named list), else `chat_template.json`.
pub fn chat_template_of(dir: &Path) -> Option<String> {
    let read = |p: &Path| crate::fsutil::read_text_input(p, crate::limits::MAX_CONFIG_BYTES as u64);
    if let Ok(t) = read(&dir.join("chat_template.jinja")) {
        return Some(t);
    }
    let json = |file: &str| read(&dir.join(file)).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok());
    let pick = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(named) => named
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|e| e.get("template")?.as_str().map(str::to_string)),
        _ => None,
    };
    ["tokenizer_config.json", "chat_template.json"].iter().find_map(|f| json(f).and_then(|v| v.get("chat_template").and_then(pick)))
}

/// Resolve `--chat-template` (`auto`, `base`, a model's name, or a template file) into what
/// the recipe records, with a warning when `auto` finds siblings that disagree.
pub fn resolve_chat_template(family: &Family, spec: &str) -> Result<(ChatTemplate, Vec<String>), CheckpointError> {
    let base = family.base_name().to_string();
    match spec {
        "auto" => {
            let with: Vec<(&str, String)> =
                family.names.iter().skip(1).zip(&family.siblings).filter_map(|(n, s)| Some((n.as_str(), chat_template_of(&s.dir)?))).collect();
            let Some((first, text)) = with.first() else { return Ok((ChatTemplate::Model(base), Vec::new())) };
            if with.iter().all(|(_, t)| t == text) {
                return Ok((ChatTemplate::Model(first.to_string()), Vec::new()));
            }
            let names: Vec<&str> = with.iter().map(|(n, _)| *n).collect();
            let warning =
                format!("the siblings' chat templates differ ({}): using the base's; choose one with --chat-template NAME|FILE", names.join(", "));
            Ok((ChatTemplate::Model(base), vec![warning]))
        }
        "base" => Ok((ChatTemplate::Model(base), Vec::new())),
        name if family.get(name).is_some() => Ok((ChatTemplate::Model(name.to_string()), Vec::new())),
        file => {
            let path = Path::new(file);
            if !path.is_file() {
                return Err(CheckpointError::Incompatible(format!(
                    "--chat-template `{file}` is neither auto, base, a model of the family ({}) nor a template file",
                    family.names.join(", ")
                )));
            }
            let text = crate::fsutil::read_text_input(path, crate::limits::MAX_CONFIG_BYTES as u64)
                .map_err(|e| CheckpointError::Io { path: file.to_string(), source: e })?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "chat_template.jinja".into());
            Ok((ChatTemplate::File { name, text }, Vec::new()))
        }
    }
}

/// The text a resolved template stands for (None: that model has no template).
pub fn template_text(family: &Family, choice: &ChatTemplate) -> Option<String> {
    match choice {
        ChatTemplate::Model(m) => family.get(m).and_then(|c| chat_template_of(&c.dir)),
        ChatTemplate::File { text, .. } => Some(text.clone()),
    }
}

/// Refuse a tokenizer source whose vocabulary differs from the base's on the rows the
/// output keeps (the embeddings were trained for the base's ids), naming the first differing
/// token, or that has ids beyond the family's common vocabulary rows.
pub fn check_tokenizer_source(family: &Family, name: &str) -> Result<(), CheckpointError> {
    let Some(source) = family.get(name) else {
        return Err(CheckpointError::Incompatible(format!("--tokenizer-source `{name}` is not a model of the family ({})", family.names.join(", "))));
    };
    if name == family.base_name() {
        return Ok(());
    }
    let refuse = |why: String| CheckpointError::Incompatible(format!("tokenizer source `{name}`: {why}"));
    let (b, s) = match (vocabulary(&family.base.dir), vocabulary(&source.dir)) {
        (Some(b), Some(s)) => (b, s),
        _ => {
            // No tokenizer.json to compare id by id: accept only an identical SentencePiece model.
            let read = |d: &Path| crate::fsutil::read_input(&d.join("tokenizer.model"), crate::limits::MAX_TOKENIZER_BYTES).ok();
            return match (read(&family.base.dir), read(&source.dir)) {
                (Some(x), Some(y)) if x == y => Ok(()),
                _ => Err(refuse("its tokenizer files cannot be compared with the base's (no tokenizer.json in both)".into())),
            };
        }
    };
    let common = family.info.common_vocab;
    let s_max = s.keys().next_back().copied().unwrap_or(0);
    for (&id, tok) in &b {
        match s.get(&id) {
            Some(t) if t != tok => {
                return Err(refuse(format!("token id {id} is `{t}` there but `{tok}` in the base: its vocabulary does not match the family's")))
            }
            None if id < s_max => {
                return Err(refuse(format!("it has no token id {id} (`{tok}` in the base): its vocabulary does not match the family's")))
            }
            _ => {}
        }
    }
    if let Some((id, tok)) = s.iter().find(|(id, _)| **id >= common) {
        return Err(refuse(format!("its token id {id} (`{tok}`) has no embedding row: the family shares only {common} vocabulary rows")));
    }
    Ok(())
}

/// Id -> token of tokenizer.json (vocabulary and added tokens).
fn vocabulary(dir: &Path) -> Option<BTreeMap<usize, String>> {
    let bytes = crate::fsutil::read_input(&dir.join("tokenizer.json"), crate::limits::MAX_TOKENIZER_BYTES).ok()?;
    let t = tokenizers::Tokenizer::from_bytes(bytes).ok()?;
    Some(t.get_vocab(true).into_iter().map(|(token, id)| (id as usize, token)).collect())
}

/// Record the tokenizer source and chat template in the recipe (the given choices over the
/// recipe's own; a recipe without a template choice gets `auto`), so the writer and the
/// card read one answer. Returns the warnings (siblings whose templates disagree).
pub fn choose_tokenizer(
    family: &Family,
    recipe: &mut crate::recipe::Recipe,
    tokenizer_source: Option<&str>,
    chat_template: Option<&str>,
) -> Result<Vec<String>, CheckpointError> {
    if let Some(t) = tokenizer_source {
        let name = if t == "base" { family.base_name() } else { t };
        check_tokenizer_source(family, name)?;
        recipe.tokenizer_source = (name != family.base_name()).then(|| name.to_string());
    }
    let mut notes = Vec::new();
    if chat_template.is_some() || recipe.chat_template.is_none() {
        let (choice, warnings) = resolve_chat_template(family, chat_template.unwrap_or("auto"))?;
        notes = warnings;
        // The tokenizer source's own template is the default: recorded by leaving the field out.
        recipe.chat_template = match choice {
            ChatTemplate::Model(m) if m == recipe.tokenizer_model() => None,
            c => Some(c),
        };
    }
    Ok(notes)
}
