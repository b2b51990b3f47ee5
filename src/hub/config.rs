//! Where the Hub is, who we are, where the cache lives, and whether the network may be used:
//! read from the same environment variables as Python's `huggingface_hub`, so both share
//! one cache and one login.

use std::path::PathBuf;

use super::auth::{self, Token};
use crate::hf_home::hub_cache_dir;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base URL without a trailing slash (`HF_ENDPOINT`, default huggingface.co).
    pub endpoint: String,
    pub token: Option<Token>,
    /// The hub cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`.
    pub cache_dir: PathBuf,
    /// `HF_HUB_OFFLINE`: use only what the cache holds.
    pub offline: bool,
    /// Show progress bars (off with `HF_HUB_DISABLE_PROGRESS_BARS`; indicatif also hides
    /// them when stderr is not a terminal).
    pub progress: bool,
    /// How every request is retried (`HF_TAILOR_RETRY_BASE_MS` sets the first back-off).
    pub retry: super::retry::RetryPolicy,
}

impl HubConfig {
    pub fn from_env() -> Self {
        let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.trim().is_empty()).unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: auth::resolve_token(),
            cache_dir: hub_cache_dir(),
            offline: env_true("HF_HUB_OFFLINE"),
            progress: !env_true("HF_HUB_DISABLE_PROGRESS_BARS"),
            retry: super::retry::RetryPolicy::from_env(),
        }
    }

    /// A config for an explicit endpoint and cache (tests, the demo's loopback Hub).
    pub fn new(endpoint: &str, token: Option<Token>, cache_dir: PathBuf) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            cache_dir,
            offline: false,
            progress: false,
            retry: super::retry::RetryPolicy::default(),
        }
    }

    /// The token, or an error that says how to provide one.
    pub fn require_token(&self) -> Result<&Token, super::HubError> {
        self.token.as_ref().ok_or_else(|| super::HubError::NoToken { token_file: auth::token_file().display().to_string() })
    }

    pub(crate) fn redact(&self, text: &str) -> String {
        auth::redact(text, self.token.as_ref())
    }
}

/// `huggingface_hub`'s truthy values: 1, ON, YES, TRUE (any case).
fn env_true(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| matches!(v.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE"))
}
