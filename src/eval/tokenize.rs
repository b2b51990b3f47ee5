//! Tokenisation the way lm-evaluation-harness (0.4.13, its HF backend) does it for causal
//! models, so scores match: the tokenizer's own special tokens (its BOS, when its template
//! adds one) unless the text already starts with the BOS text; trailing spaces of the
//! context move onto the continuation;
//! `continuation_enc = encode(context + continuation)[len(encode(context)):]`; an empty
//! context is the prefix token, the continuation encoded without special tokens.

use std::path::Path;

use tokenizers::Tokenizer;

use super::EvalError;

pub struct TextEncoder {
    tokenizer: Tokenizer,
    /// lm-eval's `prefix_token_id`: BOS if the tokenizer has one, else EOS. Used as the
    /// context of an empty-context request and at the start of perplexity windows.
    pub prefix_token: u32,
    /// The prefix token's text (`<s>`): a string starting with it gets no special tokens.
    prefix_text: Option<String>,
}

fn special_token(cfg: &serde_json::Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        v => v.get("content")?.as_str().map(str::to_owned),
    }
}

impl TextEncoder {
    /// Load `tokenizer.json` from a model folder; `config` supplies token ids the
    /// tokenizer files do not name.
    pub fn from_model_dir(dir: &Path, config: &serde_json::Value) -> Result<Self, EvalError> {
        let path = dir.join("tokenizer.json");
        let bytes = crate::fsutil::read_input(&path, crate::limits::MAX_TOKENIZER_BYTES)
            .map_err(|source| EvalError::Io { path: path.display().to_string(), source })?;
        let tokenizer = Tokenizer::from_bytes(&bytes).map_err(|e| EvalError::Tokenizer(format!("cannot load {}: {e}", path.display())))?;
        drop(bytes);
        let tok_cfg: serde_json::Value = crate::fsutil::read_text_input(&dir.join("tokenizer_config.json"), crate::limits::MAX_CONFIG_BYTES as u64)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        let by_name = |key: &str| special_token(&tok_cfg, key).and_then(|t| tokenizer.token_to_id(&t));
        let by_id = |key: &str| config.get(key).and_then(serde_json::Value::as_u64).map(|v| v as u32);
        let prefix_token = by_name("bos_token")
            .or_else(|| by_id("bos_token_id"))
            .or_else(|| by_name("eos_token"))
            .or_else(|| by_id("eos_token_id"))
            .ok_or_else(|| EvalError::Tokenizer(format!("{}: no BOS or EOS token to start sequences with", dir.display())))?;
        let prefix_text = tokenizer.id_to_token(prefix_token);
        Ok(Self { tokenizer, prefix_token, prefix_text })
    }

    /// Token ids of `text` without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EvalError> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| EvalError::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids as lm-eval's `tok_encode` makes them: the tokenizer's default special
    /// tokens, none when the text already starts with the prefix token's text.
    fn encode_default(&self, text: &str) -> Result<Vec<u32>, EvalError> {
        let specials = !self.prefix_text.as_deref().is_some_and(|p| text.starts_with(p));
        let enc = self.tokenizer.encode(text, specials).map_err(|e| EvalError::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// (context tokens, continuation tokens) as lm-eval's `loglikelihood` makes them.
    pub fn encode_pair(&self, context: &str, continuation: &str) -> Result<(Vec<u32>, Vec<u32>), EvalError> {
        if context.is_empty() {
            let cont = self.encode(continuation)?;
            // The prefix token as context, unless the continuation already starts with it.
            return Ok(match cont.split_first() {
                Some((first, rest)) if *first == self.prefix_token => (vec![*first], rest.to_vec()),
                _ => (vec![self.prefix_token], cont),
            });
        }
        let n_spaces = context.len() - context.trim_end().len();
        let (context, continuation) = if n_spaces > 0 {
            let cut = context.len() - n_spaces;
            (&context[..cut], format!("{}{continuation}", &context[cut..]))
        } else {
            (context, continuation.to_string())
        };
        let whole = self.encode_default(&format!("{context}{continuation}"))?;
        let context_enc = self.encode_default(context)?;
        let split = context_enc.len().min(whole.len());
        Ok((context_enc, whole[split..].to_vec()))
    }
}
