//! The Hub token: where it comes from, and how it is kept out of every message.

use std::fmt;
use std::path::PathBuf;

/// A Hub access token. `Debug` and `Display` never show it; only [`Token::expose`] does,
/// and only the HTTP layer calls that.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let v = value.into().trim().to_string();
        (!v.is_empty()).then_some(Token(v))
    }

    /// The raw value, for an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `Authorization: Bearer …` header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The token file Python's `huggingface_hub` writes on login: `HF_TOKEN_PATH`, else `$HF_HOME/token`.
pub fn token_file() -> PathBuf {
    match std::env::var_os("HF_TOKEN_PATH") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => crate::hf_home::hf_home().join("token"),
    }
}

/// `HF_TOKEN`, else the token file; none when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set.
pub fn resolve_token() -> Option<Token> {
    if std::env::var("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_ok_and(|v| !v.is_empty()) {
        return None;
    }
    if let Some(t) = std::env::var("HF_TOKEN").ok().and_then(Token::new) {
        return Some(t);
    }
    crate::fsutil::read_text_input(&token_file(), 64 << 10).ok().and_then(Token::new)
}

/// Make text from a server or an HTTP library safe to show: the token (if any) is replaced
/// by `***`, and query strings are cut from URLs (pre-signed upload URLs carry credentials
/// there).
pub fn redact(text: &str, token: Option<&Token>) -> String {
    let mut out = match token {
        Some(t) if !t.0.is_empty() => text.replace(&t.0, "***"),
        _ => text.to_string(),
    };
    // Any `Bearer xxx` that slipped through (e.g. a server echoing a header back).
    while let Some(i) = out.find("Bearer ") {
        let rest = &out[i + 7..];
        let end = rest.find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',').unwrap_or(rest.len());
        if &rest[..end] == "***" {
            break;
        }
        out = format!("{}Bearer ***{}", &out[..i], &rest[end..]);
    }
    strip_url_queries(&out)
}

fn strip_url_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("http") {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let end = from.find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ',')).unwrap_or(from.len());
        let url = &from[..end];
        match url.find('?') {
            Some(q) => {
                out.push_str(&url[..q]);
                out.push_str("?…");
            }
            None => out.push_str(url),
        }
        rest = &from[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_never_prints() {
        let t = Token::new("hf_secretvalue123").unwrap();
        assert_eq!(format!("{t:?} {t}"), "Token(***) ***");
        assert!(Token::new("  \n").is_none());
    }

    #[test]
    fn redact_hides_token_bearer_and_signed_queries() {
        let t = Token::new("hf_abcdef").unwrap();
        let msg = "error for url (http://h/x?X-Amz-Signature=zzz&tok=hf_abcdef) header Bearer hf_other, token hf_abcdef";
        let r = redact(msg, Some(&t));
        assert!(!r.contains("hf_abcdef"), "{r}");
        assert!(!r.contains("hf_other"), "{r}");
        assert!(!r.contains("Signature"), "{r}");
        assert!(r.contains("http://h/x?…"), "{r}");
        assert_eq!(redact("plain http://h/a/b", None), "plain http://h/a/b");
    }
}
