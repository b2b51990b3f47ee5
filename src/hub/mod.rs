//! The Hugging Face Hub at the pipeline's two edges: `pull` fetches the base, its siblings
//! and evaluation data sets into the cache shared with Python's `huggingface_hub`; `push`
//! uploads a tailored model folder with the Hub's LFS + commit protocol.
//!
//! Network code lives here and nowhere else. Every error that may carry text from a server
//! or an HTTP library passes through [`auth::redact`], so a token never reaches a log line,
//! an error message or a file.

pub mod auth;
pub mod cache;
pub mod config;
pub mod download;
pub mod finetunes;
pub mod glob;
pub mod http;
pub mod pull;
pub mod push;
pub mod retry;

pub use config::HubConfig;
pub use finetunes::{parse_finetunes, parse_finetunes_arg, parse_finetunes_file, ModelSource};
pub use pull::{locate, pull_dataset, pull_family, pull_model, PulledFamily, PulledModel, SourceList};
pub use push::{push_folder, PushOptions, PushReport};

/// What can go wrong talking to the Hub or reading the files that name what to fetch.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}: {message}")]
    ListLine { path: String, line: usize, message: String },
    #[error("{path}:{line}: `{entry}` is listed twice (first on line {first_line})")]
    DuplicateEntry { path: String, line: usize, first_line: usize, entry: String },
    #[error("`{value}` is neither a Hub repo id (`owner/name[@revision]`) nor an existing local folder")]
    BadModelRef { value: String },
    #[error("local model folder {path} does not exist")]
    NoSuchFolder { path: String },
    #[error("`{repo}` is not a repo to push to: use `owner/name`")]
    PushTarget { repo: String },
    #[error("`{entry}` is the base model; it cannot also be one of its fine-tunes")]
    BaseAmongFinetunes { entry: String },
    #[error("repository `{repo}` was not found on {endpoint} (check the id, or set HF_TOKEN if it is private or gated)")]
    RepoNotFound { repo: String, endpoint: String },
    #[error("revision `{revision}` was not found in `{repo}`")]
    RevisionNotFound { repo: String, revision: String },
    #[error("file `{file}` was not found in `{repo}`@{revision}")]
    EntryNotFound { repo: String, revision: String, file: String },
    #[error("the Hub refused the token for `{repo}` (401 Unauthorized): set HF_TOKEN to a valid token")]
    Unauthorized { repo: String },
    #[error("the Hub refused access to `{repo}` (403 Forbidden): {message}")]
    Forbidden { repo: String, message: String },
    #[error("`{repo}`@{revision}: `{file}` is not in the local cache and offline mode (HF_HUB_OFFLINE) is on")]
    NotCached { repo: String, revision: String, file: String },
    #[error("`{repo}` has no config.json: it is not a transformers model (give the folder or repo that holds config.json and the weights)")]
    NoConfig { repo: String },
    #[error("`{repo}` has no weights hf-tailor reads (model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json)")]
    NoWeights { repo: String },
    #[error("`{repo}`: {file} is corrupt: expected {what} {expected}, got {actual}")]
    Integrity { repo: String, file: String, what: &'static str, expected: String, actual: String },
    #[error("`{repo}`: {message}")]
    Protocol { repo: String, message: String },
    #[error("`{repo}`: {message}")]
    Http { repo: String, message: String },
    #[error("no Hub token: set HF_TOKEN or log in with `hf auth login` (token file {token_file})")]
    NoToken { token_file: String },
    #[error("{path}: {message}")]
    Upload { path: String, message: String },
    /// A model whose config.json hf-tailor cannot work with, refused before its weights are fetched.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl From<crate::source::BadSource> for HubError {
    fn from(e: crate::source::BadSource) -> Self {
        HubError::BadModelRef { value: e.value }
    }
}

pub type Result<T, E = HubError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io { path: path.display().to_string(), source }
}

/// Run an async hub operation from synchronous pipeline code.
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime starts").block_on(fut)
}
