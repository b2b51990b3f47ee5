//! The tokenizer embedded in a GGUF (`tokenizer.ggml.*`), read from `tokenizer.json`,
//! `tokenizer_config.json` and `config.json` the way llama.cpp's converter reads them.
//!
//! Two kinds of BPE tokenizer cover the supported families:
//! - byte-level BPE (GPT-2 style: Llama 3, SmolLM/SmolLM2, Qwen2, the project's fixtures):
//!   `tokenizer.ggml.model = gpt2`, the vocabulary as stored (byte-level characters), the
//!   merges, and the pre-tokenizer llama.cpp must apply ([`super::pretok`]);
//! - SentencePiece-style BPE with byte fallback (Llama 2, Mistral 7B, as `tokenizer.json`):
//!   `tokenizer.ggml.model = llama`, `<0xNN>` tokens typed as bytes, and scores that give
//!   llama.cpp's SentencePiece merge loop the merge order of the BPE ranks.
//!
//! Differences from llama.cpp's converter (each deliberate; the tests list them too):
//! - SentencePiece-style scores: the converter's `tokenizer.json` path writes -1000 for every
//!   token, which leaves llama.cpp to merge in text order; here a token made by the merge of
//!   rank r scores -(r+1) and the others -1e9 (never preferred), so llama.cpp merges in BPE
//!   order, as SentencePiece itself would with the original model's scores.
//! - An empty merge list is written as an empty array (llama.cpp refuses a byte-level
//!   tokenizer without the key; the converter omits it and writes a file llama.cpp rejects).
//! - An unknown byte-level tokenizer whose pre-tokenizer is plain GPT-2 splitting gets
//!   `pre = gpt-2` (the converter stops with "BPE pre-tokenizer was not recognized").
//! - Only `tokenizer.json` is read: a folder with only a SentencePiece `tokenizer.model` is
//!   refused with a clear message (every supported family ships `tokenizer.json`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::Value as Json;

use super::format::Value;
use super::pretok;
use crate::arch::SpacePrefix;

/// llama.cpp's token types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum TokenType {
    Normal = 1,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

#[derive(Debug, thiserror::Error)]
#[error("{path} {why}")]
pub struct TokenizerError {
    pub path: String,
    pub why: String,
}

/// The special-token roles llama.cpp's converter looks up, and their GGUF key names.
const SPECIAL_KEYS: &[(&str, &str)] = &[
    ("bos", "bos_token_id"),
    ("eos", "eos_token_id"),
    ("unk", "unknown_token_id"),
    ("sep", "seperator_token_id"),
    ("pad", "padding_token_id"),
    ("cls", "cls_token_id"),
    ("mask", "mask_token_id"),
];

fn read_json(path: &Path) -> Result<Option<Json>, TokenizerError> {
    let err = |why: String| TokenizerError { path: path.display().to_string(), why };
    match crate::fsutil::read_text_input(path, crate::limits::MAX_TOKENIZER_BYTES) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(format!("cannot be read: {e}"))),
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| err(format!("is not valid JSON: {e}"))),
    }
}

/// A special token as `tokenizer_config.json` names it: a string or `{"content": ...}`.
fn token_content(v: Option<&Json>) -> Option<&str> {
    match v? {
        Json::String(s) => Some(s),
        Json::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

/// `tokenizer.json`, or why a GGUF cannot be written without it.
fn load(dir: &Path) -> Result<Json, TokenizerError> {
    let tok_path = dir.join("tokenizer.json");
    read_json(&tok_path)?.ok_or_else(|| {
        let why = if dir.join("tokenizer.model").is_file() {
            "is missing: GGUF export embeds tokenizers from tokenizer.json (this folder has only a SentencePiece tokenizer.model; save it with transformers' fast tokenizer first)"
        } else {
            "is missing: a GGUF needs the model's tokenizer"
        };
        TokenizerError { path: tok_path.display().to_string(), why: why.into() }
    })
}

/// How many tokens the tokenizer has, counted as Gemma 3's converter counts them when it drops
/// the embedding's padding rows: the model's vocabulary plus the added tokens.
pub fn token_count(dir: &Path) -> Result<usize, TokenizerError> {
    let tok = load(dir)?;
    let count = |v: Option<&Json>, f: fn(&Json) -> Option<usize>| v.and_then(f).unwrap_or(0);
    Ok(count(tok.get("model").and_then(|m| m.get("vocab")), |v| v.as_object().map(|o| o.len()))
        + count(tok.get("added_tokens"), |v| v.as_array().map(Vec::len)))
}

/// The `tokenizer.ggml.*` keys for the model folder `dir` whose embedding has `vocab_size` rows;
/// `space_prefix` says whether (and how) `add_space_prefix` is written, as the converter of
/// the GGUF architecture does.
pub fn metadata(dir: &Path, vocab_size: usize, space_prefix: SpacePrefix) -> Result<Vec<(String, Value)>, TokenizerError> {
    let tok_path = dir.join("tokenizer.json");
    let err = |why: String| TokenizerError { path: tok_path.display().to_string(), why };
    let tok = load(dir)?;
    let tok_config = read_json(&dir.join("tokenizer_config.json"))?;
    let model_config = read_json(&dir.join("config.json"))?.unwrap_or(Json::Null);

    let model = tok.get("model").filter(|m| m.is_object()).ok_or_else(|| err("has no `model` object".into()))?;
    if model.get("type").and_then(Json::as_str) != Some("BPE") {
        return Err(err(format!("has tokenizer model {}, which GGUF export does not support (BPE only)", model.get("type").unwrap_or(&Json::Null))));
    }
    let sentencepiece_style = model.get("byte_fallback").and_then(Json::as_bool) == Some(true)
        && tok.get("decoder").and_then(|d| d.get("type")).and_then(Json::as_str) == Some("Sequence");

    // id -> token text, from the model's vocabulary and the added tokens.
    let vocab = model.get("vocab").and_then(Json::as_object).ok_or_else(|| err("has no `model.vocab` object".into()))?;
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    let mut put = |id: u64, text: &str| -> Result<(), TokenizerError> {
        let slot = tokens
            .get_mut(id as usize)
            .ok_or_else(|| err(format!("has token {text:?} with id {id}, beyond the model's {vocab_size} embedding rows")))?;
        *slot = Some(text.to_string());
        Ok(())
    };
    for (text, id) in vocab {
        put(id.as_u64().ok_or_else(|| err(format!("has a vocabulary id of {text:?} that is not an integer")))?, text)?;
    }
    struct Added {
        content: String,
        special: bool,
    }
    let mut added: BTreeMap<u64, Added> = BTreeMap::new();
    for a in tok.get("added_tokens").and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default() {
        let (Some(id), Some(content)) = (a.get("id").and_then(Json::as_u64), a.get("content").and_then(Json::as_str)) else {
            return Err(err("has an added token without an integer `id` or a string `content`".into()));
        };
        put(id, content)?;
        added.insert(id, Added { content: content.into(), special: a.get("special").and_then(Json::as_bool).unwrap_or(false) });
    }
    let id_of_added = |content: &str| added.iter().find(|(_, a)| a.content == content).map(|(id, _)| *id);

    // Special token ids and the add_* flags (llama.cpp's SpecialVocab rules).
    let mut special_ids: BTreeMap<&str, u64> = BTreeMap::new();
    let mut add_flags: BTreeMap<&str, bool> = BTreeMap::new();
    let tc = tok_config.as_ref();
    let named = |typ: &str| tc.and_then(|c| token_content(c.get(format!("{typ}_token").as_str()))).map(str::to_string);
    let mut bos_name = named("bos");
    let eos_name = named("eos");
    if let Some(template) = tok.get("post_processor").and_then(template_processing) {
        let special = |item: &Json| item.get("SpecialToken").and_then(|s| s.get("id")).and_then(Json::as_str).map(str::to_string);
        let sequence = |item: &Json| item.get("Sequence").and_then(|s| s.get("id")).and_then(Json::as_str).map(str::to_string);
        let single = template.get("single").and_then(Json::as_array).cloned().unwrap_or_default();
        let (mut first, mut last) = (None, None);
        if single.len() > 1 {
            first = special(&single[0]);
            last = special(&single[single.len() - 1]);
            if let Some(first) = &first {
                if tc.is_none() || (bos_name.is_none() && named("cls").as_ref() != Some(first)) {
                    bos_name = Some(first.clone());
                }
                add_flags.insert("bos", bos_name.as_ref() == Some(first) || named("cls").as_ref() == Some(first));
            }
            if let Some(last) = &last {
                add_flags.insert("eos", eos_name.as_ref() == Some(last));
            }
        }
        // Between the two sequences of the pair template: a separator, when it is the sep or eos token.
        let pair = template.get("pair").and_then(Json::as_array).cloned().unwrap_or_default();
        let start = usize::from(first.is_some() && pair.first().and_then(special) == first);
        let stop = pair.len() - usize::from(last.is_some() && pair.len() > start && pair.last().and_then(special) == last);
        let mid = &pair[start.min(stop)..stop];
        if mid.len() > 2 && sequence(&mid[0]).as_deref() == Some("A") && sequence(&mid[mid.len() - 1]).as_deref() == Some("B") {
            let inner = &mid[1..mid.len() - 1];
            let separator = |item: &Json| special(item).is_some_and(|s| Some(&s) == named("sep").as_ref() || Some(&s) == eos_name.as_ref());
            let add_sep = (separator(&inner[0]) && last.is_none()) || (inner.len() == 2 && separator(&inner[1]));
            add_flags.insert("sep", add_sep);
        }
    }
    for (typ, _) in SPECIAL_KEYS {
        let name = match *typ {
            "bos" => bos_name.clone(),
            "eos" => eos_name.clone(),
            _ => named(typ),
        };
        if let Some(id) = name.as_deref().and_then(id_of_added) {
            special_ids.insert(typ, id);
        }
        if let Some(b) = tc.and_then(|c| c.get(format!("add_{typ}_token").as_str())).and_then(Json::as_bool) {
            add_flags.insert(typ, b);
        }
    }
    for (typ, _) in SPECIAL_KEYS {
        if let Some(id) = model_config.get(format!("{typ}_token_id").as_str()).and_then(Json::as_u64) {
            special_ids.entry(typ).or_insert(id);
        }
    }
    special_ids.retain(|_, id| (*id as usize) < vocab_size);

    // Token types (and, SentencePiece-style, scores).
    let looks_special = |t: &str| t == "<pad>" || t == "<mask>" || (t.starts_with("<|") && t.ends_with("|>"));
    let mut all_special: HashSet<u64> = special_ids.values().copied().collect();
    all_special.extend(added.iter().filter(|(_, a)| a.special).map(|(id, _)| *id));
    if let Some(extra) = tc.and_then(|c| c.get("additional_special_tokens")).and_then(Json::as_array) {
        all_special.extend(extra.iter().filter_map(|e| token_content(Some(e))).filter_map(id_of_added));
    }
    let mut texts = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (i, t) in tokens.iter().enumerate() {
        let id = i as u64;
        let Some(t) = t else {
            texts.push(format!("[PAD{i}]"));
            types.push(TokenType::Unused as i32);
            continue;
        };
        let ty = if sentencepiece_style {
            if is_byte_token(t) {
                TokenType::Byte
            } else if all_special.contains(&id) {
                TokenType::Control
            } else if added.contains_key(&id) && !vocab.contains_key(t) {
                TokenType::UserDefined
            } else {
                TokenType::Normal
            }
        } else if let Some(a) = added.get(&id) {
            if a.special || looks_special(t) {
                TokenType::Control
            } else {
                TokenType::UserDefined
            }
        } else {
            TokenType::Normal
        };
        let text = if ty == TokenType::UserDefined { t.replace('\u{2581}', " ") } else { t.clone() };
        texts.push(text);
        types.push(ty as i32);
    }

    let merges = merge_list(model).map_err(err)?;
    let mut out: Vec<(String, Value)> = Vec::new();
    let key = |k: &str| format!("tokenizer.ggml.{k}");
    if sentencepiece_style {
        let scores = merge_scores(&texts, &merges);
        out.push((key("model"), Value::Str("llama".into())));
        out.push((key("pre"), Value::Str("default".into())));
        out.push((key("tokens"), Value::StrArray(texts)));
        out.push((key("scores"), Value::F32Array(scores)));
        out.push((key("token_type"), Value::I32Array(types)));
    } else {
        let pre = pre_tokenizer(&tok_path, &tok).map_err(err)?;
        out.push((key("model"), Value::Str("gpt2".into())));
        out.push((key("pre"), Value::Str(pre)));
        out.push((key("tokens"), Value::StrArray(texts)));
        out.push((key("token_type"), Value::I32Array(types)));
        out.push((key("merges"), Value::StrArray(merges)));
    }
    for (typ, gguf_key) in SPECIAL_KEYS {
        if let Some(id) = special_ids.get(typ) {
            out.push((key(gguf_key), Value::U32(*id as u32)));
        }
    }
    for typ in ["bos", "eos", "sep"] {
        if let Some(b) = add_flags.get(typ) {
            out.push((key(&format!("add_{typ}_token")), Value::Bool(*b)));
        }
    }
    match space_prefix {
        SpacePrefix::Omit => {}
        SpacePrefix::FromTokenizerConfig => {
            if let Some(b) = tc.and_then(|c| c.get("add_prefix_space")).and_then(Json::as_bool) {
                out.push((key("add_space_prefix"), Value::Bool(b)));
            }
        }
        SpacePrefix::Never if sentencepiece_style => out.push((key("add_space_prefix"), Value::Bool(false))),
        SpacePrefix::Never => {}
    }
    out.extend(chat_templates(dir, tc)?);
    Ok(out)
}

/// The TemplateProcessing post-processor (alone or in a sequence), if any.
fn template_processing(p: &Json) -> Option<&Json> {
    let procs: Vec<&Json> = match p.get("processors").and_then(Json::as_array) {
        Some(list) => list.iter().collect(),
        None => vec![p],
    };
    procs.into_iter().find(|q| q.get("type").and_then(Json::as_str) == Some("TemplateProcessing"))
}

fn is_byte_token(t: &str) -> bool {
    t.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && t[3..5].chars().all(|c| c.is_ascii_hexdigit())
}

/// The merges as llama.cpp stores them, "left right": `tokenizer.json` holds either such
/// strings or `[left, right]` pairs (whose spaces llama.cpp's converter writes as U+0120).
fn merge_list(model: &Json) -> Result<Vec<String>, String> {
    let Some(list) = model.get("merges").and_then(Json::as_array) else { return Ok(Vec::new()) };
    list.iter()
        .map(|m| match m {
            Json::String(s) => Ok(s.clone()),
            Json::Array(pair) if pair.len() == 2 && pair.iter().all(Json::is_string) => {
                let part = |v: &Json| v.as_str().unwrap_or_default().replace(' ', "\u{120}");
                Ok(format!("{} {}", part(&pair[0]), part(&pair[1])))
            }
            other => Err(format!("has merge {other}, neither \"a b\" nor [a, b]")),
        })
        .collect()
}

/// SentencePiece-style scores from BPE ranks: the token made by merge r scores -(r+1); tokens
/// no merge makes score -1e9 (single characters and specials are never formed by merging).
fn merge_scores(texts: &[String], merges: &[String]) -> Vec<f32> {
    let mut rank: HashMap<String, usize> = HashMap::new();
    for (r, m) in merges.iter().enumerate() {
        if let Some((a, b)) = m.split_once(' ') {
            rank.entry(format!("{a}{b}")).or_insert(r);
        }
    }
    texts.iter().map(|t| rank.get(t).map_or(-1e9, |r| -(*r as f32) - 1.0)).collect()
}

/// `tokenizer.ggml.pre` for a byte-level tokenizer ([`super::pretok`]).
fn pre_tokenizer(path: &Path, tok: &Json) -> Result<String, String> {
    let bytes = crate::fsutil::read_input(path, crate::limits::MAX_TOKENIZER_BYTES).map_err(|e| format!("cannot be read: {e}"))?;
    let t = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| format!("cannot be loaded: {e}"))?;
    let ids = t.encode(pretok::CHKTXT, true).map_err(|e| format!("cannot encode llama.cpp's check text: {e}"))?.get_ids().to_vec();
    let hash = pretok::chk_hash(&ids);
    if let Some(pre) = pretok::known(&hash) {
        return Ok(pre.into());
    }
    if tok.get("pre_tokenizer").is_some_and(pretok::is_plain_gpt2) {
        return Ok("gpt-2".into());
    }
    Err(format!(
        "has a byte-level pre-tokenizer hf-tailor cannot name for llama.cpp (check hash {hash}); \
         GGUF export knows the Llama 3, SmolLM, Qwen2, Mistral-Nemo and GPT-2 ones"
    ))
}

/// `tokenizer.chat_template` (and named templates), from tokenizer_config.json or the
/// `chat_template.jinja` / `chat_template.json` files transformers writes.
fn chat_templates(dir: &Path, tc: Option<&Json>) -> Result<Vec<(String, Value)>, TokenizerError> {
    let from_config = tc.and_then(|c| c.get("chat_template")).filter(|v| !v.is_null()).cloned();
    let template = match from_config {
        Some(t) => Some(t),
        None => {
            let jinja = dir.join("chat_template.jinja");
            match crate::fsutil::read_text_input(&jinja, crate::limits::MAX_CONFIG_BYTES as u64) {
                Ok(text) => Some(Json::String(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    read_json(&dir.join("chat_template.json"))?.and_then(|j| j.get("chat_template").cloned())
                }
                Err(e) => return Err(TokenizerError { path: jinja.display().to_string(), why: format!("cannot be read: {e}") }),
            }
        }
    };
    let key = "tokenizer.chat_template";
    Ok(match template {
        Some(Json::String(s)) => vec![(key.into(), Value::Str(s))],
        Some(Json::Array(list)) => {
            let mut out = Vec::new();
            for t in list {
                let (Some(name), Some(text)) = (t.get("name").and_then(Json::as_str), t.get("template").and_then(Json::as_str)) else { continue };
                let k = if name == "default" { key.to_string() } else { format!("{key}.{name}") };
                out.push((k, Value::Str(text.into())));
            }
            out
        }
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokens_and_merge_scores() {
        assert!(is_byte_token("<0x0A>") && !is_byte_token("<0x0G>") && !is_byte_token("<s>"));
        let texts: Vec<String> = ["a", "b", "ab", "abb", "zz"].iter().map(|s| s.to_string()).collect();
        let scores = merge_scores(&texts, &["a b".into(), "ab b".into()]);
        assert_eq!(scores, vec![-1e9, -1e9, -1.0, -2.0, -1e9]);
    }

    #[test]
    fn merges_in_both_layouts() {
        let m = serde_json::json!({"merges": ["a b", ["c d", "e"]]});
        assert_eq!(merge_list(&m).unwrap(), vec!["a b".to_string(), "c\u{120}d e".to_string()]);
    }
}
