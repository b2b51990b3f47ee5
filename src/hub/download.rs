//! Resumable file downloads into the shared cache.
//!
//! hf-hub 1.0 writes plain (non-Xet) downloads with `File::create` on `<blob>.incomplete`,
//! so an interrupted multi-GB shard starts again from byte 0. Here a download continues
//! from what `<blob>.incomplete` already holds (an HTTP `Range` request, as Python's
//! `huggingface_hub` does with the same file name), retries broken transfers with back-off,
//! and checks the size and, for LFS files, the sha256 the Hub announced before the blob
//! becomes visible in `snapshots/`.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use indicatif::ProgressBar;
use reqwest::StatusCode;

use super::cache::{is_blob_etag, is_commit_hash, repo_path_problem, RepoCache, RepoKind};
use super::http::{self, header, Http, NotFound};
use super::retry::{transient_status, Try};
use super::{io_err, HubError};

/// What a `HEAD` on `resolve/<revision>/<file>` tells us.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub commit: String,
    /// `X-Linked-Etag` (the sha256 of an LFS file) or `ETag` (git blob id), unquoted.
    pub etag: String,
    pub size: u64,
    /// Where the bytes are: the resolve URL, or the storage URL it redirects to.
    pub url: String,
}

impl FileMeta {
    /// The sha256 the Hub vouches for (LFS files name their blob by it).
    pub fn announced_sha256(&self) -> Option<&str> {
        (self.etag.len() == 64 && self.etag.bytes().all(|b| b.is_ascii_hexdigit())).then_some(self.etag.as_str())
    }
}

/// A file now in the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `snapshots/<commit>/<file>`.
    pub path: PathBuf,
    pub sha256: String,
    /// Bytes actually transferred in this call (0 for a cache hit).
    pub transferred: u64,
}

pub fn resolve_url(endpoint: &str, kind: RepoKind, repo: &str, revision: &str, file: &str) -> String {
    format!("{endpoint}/{}{repo}/resolve/{}/{}", kind.url_prefix(), http::encode_segment(revision), http::encode_path(file))
}

impl Http {
    /// `HEAD` the file, following relative redirects (repo renames) but not absolute ones:
    /// their headers already carry the metadata and their `Location` is where to download.
    pub async fn head_file(&self, kind: RepoKind, repo: &str, revision: &str, file: &str) -> Result<FileMeta, HubError> {
        check_repo_path(repo, file)?;
        let mut url = resolve_url(&self.cfg.endpoint, kind, repo, revision, file);
        let ctx = NotFound::Entry { revision, file };
        for _ in 0..10 {
            let what = format!("HEAD {file}");
            let (what, at) = (what.as_str(), url.as_str());
            let resp = self.send_api(repo, what, || self.auth(self.client.head(at), at).header("Accept-Encoding", "identity")).await?;
            let resp = self.check(resp, repo, ctx).await?;
            let location = header(&resp, "location");
            if resp.status().is_redirection() {
                if let Some(loc) = &location {
                    if reqwest::Url::parse(loc).is_err() && !loc.starts_with("//") {
                        url = reqwest::Url::parse(&url).and_then(|u| u.join(loc)).map(String::from).map_err(|e| self.protocol(repo, e))?;
                        continue;
                    }
                }
            }
            let commit = header(&resp, "x-repo-commit").ok_or_else(|| self.missing(repo, file, "X-Repo-Commit"))?;
            if !is_commit_hash(&commit) {
                return Err(self.refused(repo, file, "X-Repo-Commit", &commit, "a 40-digit hex commit id"));
            }
            let raw_etag = header(&resp, "x-linked-etag").or_else(|| header(&resp, "etag")).ok_or_else(|| self.missing(repo, file, "ETag"))?;
            let etag = normalize_etag(&raw_etag);
            if !is_blob_etag(&etag) {
                return Err(self.refused(repo, file, "ETag", &raw_etag, "a hex object id"));
            }
            let size = header(&resp, "x-linked-size")
                .or_else(|| (!resp.status().is_redirection()).then(|| header(&resp, "content-length")).flatten())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.missing(repo, file, "X-Linked-Size/Content-Length"))?;
            let url = if resp.status().is_redirection() { location.ok_or_else(|| self.missing(repo, file, "Location"))? } else { url };
            return Ok(FileMeta { commit, etag, size, url });
        }
        Err(HubError::Protocol { repo: repo.into(), message: format!("too many redirects resolving {file}") })
    }

    fn refused(&self, repo: &str, file: &str, header: &str, value: &str, wanted: &str) -> HubError {
        let shown: String = value.chars().take(80).collect::<String>().escape_debug().to_string();
        HubError::Protocol { repo: repo.into(), message: format!("the server's {header} for {file} is `{shown}`, not {wanted}; refusing it") }
    }

    fn missing(&self, repo: &str, file: &str, what: &str) -> HubError {
        HubError::Protocol { repo: repo.into(), message: format!("the Hub's answer for {file} lacks the {what} header") }
    }

    pub(crate) fn protocol(&self, repo: &str, e: impl std::fmt::Display) -> HubError {
        HubError::Protocol { repo: repo.into(), message: self.cfg.redact(&e.to_string()) }
    }

    /// Bring `file` into the cache at `meta.commit`, resuming a partial download, and record
    /// `revision -> commit` in `refs/` when `revision` is a branch or tag.
    pub async fn fetch_to_cache(
        &self,
        kind: RepoKind,
        repo: &str,
        revision: &str,
        file: &str,
        meta: &FileMeta,
        bar: &ProgressBar,
    ) -> Result<Fetched, HubError> {
        let cache = RepoCache::new(&self.cfg.cache_dir, kind, repo);
        let blob = cache.blob(&meta.etag).map_err(io_err(&cache.root))?;
        bar.set_length(meta.size);
        let mut transferred = 0;
        if !blob.metadata().is_ok_and(|m| m.len() == meta.size) {
            std::fs::create_dir_all(blob.parent().expect("blob has a parent")).map_err(io_err(&blob))?;
            // Waiting for the lock blocks: off the async workers, so that another file of
            // this pull with the same etag (polled on this task) can finish and release it.
            let (dir, c, etag) = (self.cfg.cache_dir.clone(), cache.clone(), meta.etag.clone());
            let _lock = tokio::task::spawn_blocking(move || lock(&dir, &c, &etag)).await.expect("the lock task does not panic")?;
            if !blob.metadata().is_ok_and(|m| m.len() == meta.size) {
                let incomplete = cache.incomplete(&meta.etag).map_err(io_err(&cache.root))?;
                transferred = self.download_resumable(repo, file, meta, &incomplete, bar).await?;
                if let Some(expected) = meta.announced_sha256() {
                    let actual = sha256_file_async(&incomplete).await?;
                    if actual != expected {
                        let _ = std::fs::remove_file(&incomplete);
                        return Err(HubError::Integrity { repo: repo.into(), file: file.into(), what: "sha256", expected: expected.into(), actual });
                    }
                }
                std::fs::rename(&incomplete, &blob).map_err(io_err(&blob))?;
            }
        }
        bar.set_position(meta.size);
        let path = cache.link(&meta.commit, file, &meta.etag).map_err(io_err(&cache.root))?;
        cache.write_ref(revision, &meta.commit).map_err(io_err(&cache.root))?;
        let sha256 = match meta.announced_sha256() {
            Some(s) => s.to_string(),
            None => sha256_file_async(&blob).await?,
        };
        Ok(Fetched { path, sha256, transferred })
    }

    /// Fill `incomplete` up to `meta.size` bytes, continuing from its current length.
    /// Returns the bytes received. Every request counts toward the retry policy's limit,
    /// whatever it brought: a server that ignores `Range` or sends a short body cannot keep
    /// the download going for ever; a body longer than announced is refused at once.
    async fn download_resumable(&self, repo: &str, file: &str, meta: &FileMeta, incomplete: &Path, bar: &ProgressBar) -> Result<u64, HubError> {
        let received = std::sync::atomic::AtomicU64::new(0);
        let what = format!("GET {file}");
        let counter = &received;
        self.cfg
            .retry
            .run(&what, move |_| async move {
                match self.download_pass(repo, file, meta, incomplete, bar, counter).await {
                    Ok(()) => Try::Done(Ok(counter.load(std::sync::atomic::Ordering::Relaxed))),
                    Err(Pass::Again(e)) => Try::Again(e),
                    Err(Pass::Fatal(e)) => Try::Done(Err(e)),
                }
            })
            .await
    }

    /// One request toward filling `incomplete`; Ok when the file is complete.
    async fn download_pass(
        &self,
        repo: &str,
        file: &str,
        meta: &FileMeta,
        incomplete: &Path,
        bar: &ProgressBar,
        received: &std::sync::atomic::AtomicU64,
    ) -> Result<(), Pass> {
        let have = incomplete.metadata().map(|m| m.len()).unwrap_or(0);
        let have = if have > meta.size { truncate(incomplete).map_err(Pass::Fatal)? } else { have };
        bar.set_position(have);
        if have == meta.size {
            return Ok(());
        }
        let mut req = self.auth(self.client.get(&meta.url), &meta.url).header("Accept-Encoding", "identity");
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = req.send().await.map_err(|e| Pass::Again(self.transport(repo, &format!("GET {file}"), e)))?;
        let status = resp.status();
        let start = match status {
            StatusCode::OK => 0,
            StatusCode::PARTIAL_CONTENT => match content_range_start(&resp) {
                Some(s) if s == have => have,
                other => {
                    // A server that answers another range than asked: start again from 0.
                    truncate(incomplete).map_err(Pass::Fatal)?;
                    let got = other.map_or("no Content-Range".to_string(), |s| format!("bytes from {s}"));
                    return Err(Pass::Again(self.protocol(repo, format!("{file}: asked for bytes from {have}, the server sent {got}"))));
                }
            },
            StatusCode::RANGE_NOT_SATISFIABLE => {
                truncate(incomplete).map_err(Pass::Fatal)?;
                return Err(Pass::Again(self.protocol(repo, format!("{file}: the server refused to resume; restarting"))));
            }
            s if transient_status(s) => return Err(Pass::Again(HubError::Http { repo: repo.into(), message: format!("GET {file}: HTTP {s}") })),
            _ => {
                let ctx = NotFound::Entry { revision: &meta.commit, file };
                return Err(Pass::Fatal(match self.check(resp, repo, ctx).await {
                    Err(e) => e,
                    Ok(r) => HubError::Protocol { repo: repo.into(), message: format!("GET {file}: unexpected HTTP {}", r.status()) },
                }));
            }
        };
        let end = self.append_body(repo, file, resp, incomplete, start, meta.size, bar, received).await?;
        if end == meta.size {
            Ok(())
        } else {
            Err(Pass::Again(self.protocol(repo, format!("{file}: the body ended at byte {end} of the announced {}", meta.size))))
        }
    }

    /// Write the body at `start`; returns the file's length after it. A body that runs past
    /// `size` is a protocol error (the partial file is discarded).
    #[allow(clippy::too_many_arguments)]
    async fn append_body(
        &self,
        repo: &str,
        file: &str,
        resp: reqwest::Response,
        incomplete: &Path,
        start: u64,
        size: u64,
        bar: &ProgressBar,
        received: &std::sync::atomic::AtomicU64,
    ) -> Result<u64, Pass> {
        let fatal = |e| Pass::Fatal(io_err(incomplete)(e));
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(incomplete).map_err(fatal)?;
        f.set_len(start).map_err(fatal)?;
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(start)).map_err(fatal)?;
        let mut stream = resp.bytes_stream();
        let mut pos = start;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = f.sync_all();
                    return Err(Pass::Again(self.transport(repo, &format!("download of {file} interrupted"), e)));
                }
            };
            if pos + chunk.len() as u64 > size {
                drop(f);
                let _ = std::fs::remove_file(incomplete);
                return Err(Pass::Fatal(self.protocol(repo, format!("{file}: the server sent more than the announced {size} bytes"))));
            }
            f.write_all(&chunk).map_err(fatal)?;
            pos += chunk.len() as u64;
            received.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            bar.set_position(pos);
        }
        f.sync_all().map_err(fatal)?;
        Ok(pos)
    }
}

/// How one download request failed.
enum Pass {
    /// Another request may do better (it counts toward the limit).
    Again(HubError),
    /// No further request can help.
    Fatal(HubError),
}

/// The first byte a `206` answer carries (`Content-Range: bytes START-END/TOTAL`).
fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = header(resp, "content-range")?;
    v.trim().strip_prefix("bytes ")?.split('-').next()?.trim().parse().ok()
}

/// A repo file name from a listing or a caller must be a plain relative path.
pub fn check_repo_path(repo: &str, file: &str) -> Result<(), HubError> {
    match repo_path_problem(file) {
        None => Ok(()),
        Some(why) => Err(HubError::Protocol { repo: repo.into(), message: format!("refusing file name `{}`: it {why}", file.escape_debug()) }),
    }
}

fn truncate(path: &Path) -> Result<u64, HubError> {
    std::fs::File::create(path).map_err(io_err(path))?;
    Ok(0)
}

/// The same advisory lock file Python's `huggingface_hub` takes: `.locks/<repo folder>/<etag>.lock`.
// `File::lock` is Rust 1.89; hf-hub 1.0 (edition 2024, let-chains, `File::lock`) already needs it.
#[allow(clippy::incompatible_msrv)]
fn lock(cache_dir: &Path, cache: &RepoCache, etag: &str) -> Result<std::fs::File, HubError> {
    let folder = cache.root.file_name().expect("repo folder has a name");
    let path = cache_dir.join(".locks").join(folder).join(format!("{etag}.lock"));
    std::fs::create_dir_all(path.parent().expect("lock has a parent")).map_err(io_err(&path))?;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
    f.lock().map_err(io_err(&path))?;
    Ok(f)
}

/// `W/"abc"` / `"abc"` → `abc`.
pub fn normalize_etag(e: &str) -> String {
    e.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

/// Hex sha256 of a file, streamed ([`crate::fsutil::sha256_file`], with the Hub's error).
pub fn sha256_file(path: &Path) -> Result<String, HubError> {
    crate::fsutil::sha256_file(path).map_err(io_err(path))
}

pub async fn sha256_file_async(path: &Path) -> Result<String, HubError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&p)).await.expect("hashing task does not panic")
}
