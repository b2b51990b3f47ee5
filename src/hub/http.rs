//! The reqwest client hf-tailor talks to the Hub with, and the one place HTTP failures become
//! [`HubError`]s (with the token and signed query strings redacted).

use std::future::Future;
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};

use super::retry::{transient_status, RetryPolicy, Try};
use super::{HubConfig, HubError};

/// Why a try of a request failed in a way another try may fix.
pub enum Transient {
    /// The server answered with a transient status (5xx, 429, 408).
    Status(StatusCode),
    /// No answer: the connection failed, timed out or was cut.
    Transport(reqwest::Error),
}

/// What a 404 means at the call site.
#[derive(Debug, Clone, Copy)]
pub enum NotFound<'a> {
    Repo,
    Revision(&'a str),
    Entry { revision: &'a str, file: &'a str },
}

#[derive(Clone)]
pub struct Http {
    pub cfg: HubConfig,
    /// Never follows redirects: HEAD must see the Hub's own headers, and we choose where the
    /// token may go.
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(cfg: &HubConfig) -> Result<Self, HubError> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("hf-tailor/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| HubError::Http { repo: "-".into(), message: cfg.redact(&format!("cannot build HTTP client: {e}")) })?;
        Ok(Self { cfg: cfg.clone(), client })
    }

    /// Add the bearer token, but only for URLs on the Hub endpoint's own origin (pre-signed
    /// storage URLs must not receive it).
    pub fn auth(&self, req: reqwest::RequestBuilder, url: &str) -> reqwest::RequestBuilder {
        match &self.cfg.token {
            Some(t) if same_origin(url, &self.cfg.endpoint) => req.header(reqwest::header::AUTHORIZATION, t.bearer()),
            _ => req,
        }
    }

    /// The one "send, retry on a transient failure" loop: `request(n)` builds try n's request
    /// afresh (a streamed body cannot be sent twice; building it may fail for good), and a
    /// transport failure or a transient status is tried again within `policy`, as the error
    /// `failed(n, why)` makes of it. Any other answer, success or not, is the caller's to judge.
    pub async fn send_retrying<F, Fut>(
        &self,
        policy: RetryPolicy,
        what: &str,
        mut request: F,
        failed: impl Fn(u32, Transient) -> HubError,
    ) -> Result<Response, HubError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<RequestBuilder, HubError>>,
    {
        let failed = &failed;
        policy
            .run(what, |n| {
                let req = request(n);
                async move {
                    let req = match req.await {
                        Ok(req) => req,
                        Err(e) => return Try::Done(Err(e)),
                    };
                    match req.send().await {
                        Ok(r) if transient_status(r.status()) => Try::Again(failed(n, Transient::Status(r.status()))),
                        Ok(r) => Try::Done(Ok(r)),
                        Err(e) => Try::Again(failed(n, Transient::Transport(e))),
                    }
                }
            })
            .await
    }

    /// A request to the Hub's API about `repo`, retried by the configured policy; a transient
    /// failure that outlasts it is an HTTP error naming `what`.
    pub async fn send_api(&self, repo: &str, what: &str, request: impl Fn() -> RequestBuilder) -> Result<Response, HubError> {
        self.send_api_with(self.cfg.retry, repo, what, request).await
    }

    /// [`Http::send_api`] under another policy (a push's own number of tries).
    pub async fn send_api_with(
        &self,
        policy: RetryPolicy,
        repo: &str,
        what: &str,
        request: impl Fn() -> RequestBuilder,
    ) -> Result<Response, HubError> {
        let failed = |_, why| match why {
            Transient::Status(s) => HubError::Http { repo: repo.into(), message: format!("{what}: HTTP {s}") },
            Transient::Transport(e) => self.transport(repo, what, e),
        };
        self.send_retrying(policy, what, |_| std::future::ready(Ok(request())), failed).await
    }

    /// What a transient failure was, for a message: the status, or the redacted transport error.
    pub fn describe(&self, why: &Transient) -> String {
        match why {
            Transient::Status(s) => format!("HTTP {s}"),
            Transient::Transport(e) => self.cfg.redact(&error_chain(e)),
        }
    }

    /// A transport error (no response) as a redacted `HubError`.
    pub fn transport(&self, repo: &str, what: &str, e: reqwest::Error) -> HubError {
        HubError::Http { repo: repo.into(), message: self.cfg.redact(&format!("{what}: {}", error_chain(&e))) }
    }

    /// Turn a non-success response into the error a user can act on.
    pub async fn check(&self, resp: Response, repo: &str, ctx: NotFound<'_>) -> Result<Response, HubError> {
        let status = resp.status();
        if status.is_success() || status.is_redirection() {
            return Ok(resp);
        }
        let code = header(&resp, "x-error-code");
        let header_msg = header(&resp, "x-error-message");
        let body = resp.text().await.unwrap_or_default();
        let message = header_msg
            .or_else(|| serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v.get("error")?.as_str().map(str::to_string)))
            .unwrap_or_else(|| body.chars().take(300).collect());
        Err(self.status_error(status, code.as_deref(), &message, repo, ctx))
    }

    pub fn status_error(&self, status: StatusCode, code: Option<&str>, message: &str, repo: &str, ctx: NotFound<'_>) -> HubError {
        let endpoint = self.cfg.endpoint.clone();
        match (code, status.as_u16()) {
            // The Hub answers 401 + RepoNotFound for repos it will not admit exist.
            (Some("RepoNotFound"), _) => HubError::RepoNotFound { repo: repo.into(), endpoint },
            (Some("RevisionNotFound"), _) => HubError::RevisionNotFound { repo: repo.into(), revision: revision_of(ctx).unwrap_or("?").into() },
            (Some("EntryNotFound"), _) => entry_not_found(repo, ctx),
            (_, 401) => HubError::Unauthorized { repo: repo.into() },
            (_, 403) => HubError::Forbidden { repo: repo.into(), message: self.cfg.redact(message) },
            (_, 404) => match ctx {
                NotFound::Repo => HubError::RepoNotFound { repo: repo.into(), endpoint },
                NotFound::Revision(r) => HubError::RevisionNotFound { repo: repo.into(), revision: r.into() },
                NotFound::Entry { .. } => entry_not_found(repo, ctx),
            },
            _ => HubError::Http { repo: repo.into(), message: self.cfg.redact(&format!("HTTP {status}: {message}")) },
        }
    }
}

fn entry_not_found(repo: &str, ctx: NotFound<'_>) -> HubError {
    match ctx {
        NotFound::Entry { revision, file } => HubError::EntryNotFound { repo: repo.into(), revision: revision.into(), file: file.into() },
        NotFound::Revision(r) => HubError::RevisionNotFound { repo: repo.into(), revision: r.into() },
        NotFound::Repo => HubError::RepoNotFound { repo: repo.into(), endpoint: String::new() },
    }
}

fn revision_of<'a>(ctx: NotFound<'a>) -> Option<&'a str> {
    match ctx {
        NotFound::Revision(r) | NotFound::Entry { revision: r, .. } => Some(r),
        NotFound::Repo => None,
    }
}

pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name)?.to_str().ok().map(str::to_string)
}

/// A reqwest error with its causes (reqwest's own Display stops at the top level).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        // Wrappers often quote their source already (hf-hub quotes reqwest's message): say it once.
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

pub fn same_origin(url: &str, endpoint: &str) -> bool {
    match (reqwest::Url::parse(url), reqwest::Url::parse(endpoint)) {
        (Ok(a), Ok(b)) => a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default(),
        _ => false,
    }
}

/// Percent-encode each path segment of a repo file path (keeps `/` between segments).
pub fn encode_path(path: &str) -> String {
    path.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
}

/// Percent-encode one URL path segment (everything but RFC 3986 unreserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let e = E(
            "HTTP request error: error sending request (u)",
            Some(Box::new(E("error sending request", Some(Box::new(E("connection refused", None)))))),
        );
        assert_eq!(error_chain(&e), "HTTP request error: error sending request (u): connection refused");
    }
}
