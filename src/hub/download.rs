//! Resumable file downloads into the shared cache.
//!
//! hf-hub 1.0 writes plain (non-Xet) downloads with `File::create` on `<blob>.incomplete`,
//! so an interrupted multi-GB shard starts again from byte 0. Here a download continues
//! from what `<blob>.incomplete` already holds (an HTTP `Range` request, as Python's
//! `huggingface_hub` does with the same file name), retries broken transfers with back-off,
//! and checks the size and, for LFS files, the sha256 the Hub announced before the blob
//! becomes visible in `snapshots/`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use indicatif::ProgressBar;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::cache::{RepoCache, RepoKind};
use super::http::{self, header, Http, NotFound};
use super::{io_err, HubError};

/// How many times a broken transfer is resumed before giving up.
const MAX_ATTEMPTS: u32 = 6;

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
        let mut url = resolve_url(&self.cfg.endpoint, kind, repo, revision, file);
        let ctx = NotFound::Entry { revision, file };
        for _ in 0..10 {
            let mut attempt = 0;
            let resp = loop {
                let req = self.auth(self.client.head(&url), &url).header("Accept-Encoding", "identity");
                match req.send().await {
                    Ok(r) if http::transient_status(r.status()) && attempt + 1 < MAX_ATTEMPTS => {}
                    Ok(r) => break r,
                    Err(e) if attempt + 1 >= MAX_ATTEMPTS => return Err(self.transport(repo, &format!("HEAD {file}"), e)),
                    Err(_) => {}
                }
                tokio::time::sleep(http::backoff(attempt)).await;
                attempt += 1;
            };
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
            let etag = header(&resp, "x-linked-etag").or_else(|| header(&resp, "etag")).map(|e| normalize_etag(&e)).ok_or_else(|| self.missing(repo, file, "ETag"))?;
            let size = header(&resp, "x-linked-size")
                .or_else(|| (!resp.status().is_redirection()).then(|| header(&resp, "content-length")).flatten())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| self.missing(repo, file, "X-Linked-Size/Content-Length"))?;
            let url = if resp.status().is_redirection() { location.ok_or_else(|| self.missing(repo, file, "Location"))? } else { url };
            return Ok(FileMeta { commit, etag, size, url });
        }
        Err(HubError::Protocol { repo: repo.into(), message: format!("too many redirects resolving {file}") })
    }

    fn missing(&self, repo: &str, file: &str, what: &str) -> HubError {
        HubError::Protocol { repo: repo.into(), message: format!("the Hub's answer for {file} lacks the {what} header") }
    }

    fn protocol(&self, repo: &str, e: impl std::fmt::Display) -> HubError {
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
        let blob = cache.blob(&meta.etag);
        bar.set_length(meta.size);
        let mut transferred = 0;
        if !blob.metadata().is_ok_and(|m| m.len() == meta.size) {
            std::fs::create_dir_all(blob.parent().expect("blob has a parent")).map_err(io_err(&blob))?;
            let _lock = lock(&self.cfg.cache_dir, &cache, &meta.etag)?;
            if !blob.metadata().is_ok_and(|m| m.len() == meta.size) {
                let incomplete = cache.incomplete(&meta.etag);
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
    /// Returns the bytes received.
    async fn download_resumable(&self, repo: &str, file: &str, meta: &FileMeta, incomplete: &Path, bar: &ProgressBar) -> Result<u64, HubError> {
        let mut received = 0u64;
        let mut attempt = 0u32;
        loop {
            let have = incomplete.metadata().map(|m| m.len()).unwrap_or(0);
            let have = if have > meta.size { truncate(incomplete)? } else { have };
            bar.set_position(have);
            if have == meta.size {
                return Ok(received);
            }
            let mut req = self.auth(self.client.get(&meta.url), &meta.url).header("Accept-Encoding", "identity");
            if have > 0 {
                req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let failure = match req.send().await {
                Err(e) => self.transport(repo, &format!("GET {file}"), e),
                Ok(resp) if resp.status() == StatusCode::PARTIAL_CONTENT || resp.status() == StatusCode::OK => {
                    let start = if resp.status() == StatusCode::OK { 0 } else { have };
                    match self.append_body(repo, resp, incomplete, start, bar, &mut received).await {
                        Ok(()) => continue,
                        Err(e) => e,
                    }
                }
                Ok(resp) if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
                    truncate(incomplete)?;
                    HubError::Protocol { repo: repo.into(), message: format!("{file}: the server refused to resume; restarting") }
                }
                Ok(resp) if http::transient_status(resp.status()) => {
                    HubError::Http { repo: repo.into(), message: format!("GET {file}: HTTP {}", resp.status()) }
                }
                Ok(resp) => {
                    let ctx = NotFound::Entry { revision: &meta.commit, file };
                    return Err(match self.check(resp, repo, ctx).await {
                        Err(e) => e,
                        Ok(r) => HubError::Protocol { repo: repo.into(), message: format!("GET {file}: unexpected HTTP {}", r.status()) },
                    });
                }
            };
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(failure);
            }
            tracing::warn!("{}; resuming ({attempt}/{MAX_ATTEMPTS})", failure);
            tokio::time::sleep(http::backoff(attempt)).await;
        }
    }

    async fn append_body(&self, repo: &str, resp: reqwest::Response, incomplete: &Path, start: u64, bar: &ProgressBar, received: &mut u64) -> Result<(), HubError> {
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(incomplete).map_err(io_err(incomplete))?;
        f.set_len(start).map_err(io_err(incomplete))?;
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start(start)).map_err(io_err(incomplete))?;
        let mut stream = resp.bytes_stream();
        let mut pos = start;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport(repo, "download interrupted", e))?;
            f.write_all(&chunk).map_err(io_err(incomplete))?;
            pos += chunk.len() as u64;
            *received += chunk.len() as u64;
            bar.set_position(pos);
        }
        f.sync_all().map_err(io_err(incomplete))
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

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, HubError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub async fn sha256_file_async(path: &Path) -> Result<String, HubError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&p)).await.expect("hashing task does not panic")
}
