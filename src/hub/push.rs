//! Upload a folder to a Hub model repo with the Hub's own protocol: create the repo, ask
//! `preupload` which files go by LFS, upload those through the LFS batch API (one PUT, or
//! parallel parts when the Hub answers with a `chunk_size`), verify, then one NDJSON commit
//! carrying small files inline and `lfsFile` pointers for the rest.
//!
//! Written with reqwest because hf-hub 1.0 uploads large files only through Xet storage and
//! otherwise falls back to inline base64, which cannot carry multi-GB shards.
//!
//! Resuming is free: the batch API lists objects the Hub already stores without upload
//! actions, so after an interruption only the objects that did not complete are sent again.

use std::path::{Path, PathBuf};

use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

use super::download::sha256_file_async;
use super::http::{self, Http, NotFound};
use super::retry::RetryPolicy;
use super::{block_on, io_err, HubConfig, HubError};

const LFS_MEDIA: &str = "application/vnd.git-lfs+json";
/// Preupload and LFS batch requests carry at most this many files (as huggingface_hub does).
const BATCH: usize = 256;

#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Create the repo private (an existing repo keeps its visibility).
    pub private: bool,
    /// Branch to commit to.
    pub revision: String,
    pub message: String,
    /// Multipart parts in flight at once.
    pub parallel_parts: usize,
    /// Tries per request before giving up (with the Hub config's back-off between).
    pub max_attempts: u32,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self { private: false, revision: "main".into(), message: "Upload model tailored with hf-tailor".into(), parallel_parts: 4, max_attempts: 5 }
    }
}

/// What a push did, for the CLI and the pipeline's summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PushReport {
    pub url: String,
    /// The new commit; None when every file was already there unchanged.
    pub commit: Option<String>,
    pub files: usize,
    pub lfs_files: usize,
    /// LFS objects sent in this run.
    pub lfs_uploaded: usize,
    /// LFS objects the Hub already held (from an interrupted push or an earlier upload).
    pub lfs_already_present: usize,
    /// Files identical to the ones on the branch, left out of the commit.
    pub unchanged: usize,
    pub bytes_uploaded: u64,
}

/// One file of the folder.
#[derive(Debug, Clone)]
struct LocalFile {
    path: PathBuf,
    repo_path: String,
    size: u64,
    lfs: bool,
    sha256: Option<String>,
    remote_oid: Option<String>,
}

/// Push every (non-hidden) file under `dir` to model repo `repo` on `opts.revision`.
pub fn push_folder(cfg: &HubConfig, dir: &Path, repo: &str, opts: &PushOptions) -> Result<PushReport, HubError> {
    block_on(push_folder_async(cfg, dir, repo, opts))
}

pub async fn push_folder_async(cfg: &HubConfig, dir: &Path, repo: &str, opts: &PushOptions) -> Result<PushReport, HubError> {
    cfg.require_token()?;
    if !repo.contains('/') || !super::finetunes::is_repo_id(repo) {
        return Err(HubError::PushTarget { repo: repo.into() });
    }
    let mut files = list_folder(dir)?;
    if files.is_empty() {
        return Err(HubError::Upload { path: dir.display().to_string(), message: "has no file to upload".into() });
    }
    let http = Http::new(cfg)?;
    let target = if cfg.progress { indicatif::ProgressDrawTarget::stderr() } else { indicatif::ProgressDrawTarget::hidden() };
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), target).with_style(
        indicatif::ProgressStyle::with_template("  pushing {msg} {bytes:>10}/{total_bytes:<10} {wide_bar} {bytes_per_sec:>12} {eta:>4}")
            .expect("valid template"),
    );
    bar.set_message(repo.to_string());
    let pusher = Pusher { http: &http, repo, opts, bar: &bar };
    let url = pusher.create_repo().await?;
    pusher.preupload(&mut files).await?;
    for f in files.iter_mut().filter(|f| f.lfs) {
        f.sha256 = Some(sha256_file_async(&f.path).await?);
    }
    // Unchanged LFS files (same sha256 on the branch) need neither upload nor commit entry.
    let unchanged = files.iter().filter(|f| f.lfs && f.remote_oid.is_some() && f.remote_oid == f.sha256).count();
    files.retain(|f| !(f.lfs && f.remote_oid.is_some() && f.remote_oid == f.sha256));
    let lfs: Vec<&LocalFile> = files.iter().filter(|f| f.lfs).collect();
    bar.set_length(lfs.iter().map(|f| f.size).sum());
    let (lfs_uploaded, lfs_already_present, bytes_uploaded) = pusher.upload_lfs(&lfs).await?;
    bar.finish_and_clear();
    let commit = if files.is_empty() { None } else { Some(pusher.commit(&files).await?) };
    Ok(PushReport {
        url,
        commit,
        files: files.len() + unchanged,
        lfs_files: lfs.len() + unchanged,
        lfs_uploaded,
        lfs_already_present,
        unchanged,
        bytes_uploaded,
    })
}

/// Check, before hours of work, that a push to `repo` can succeed, without changing
/// anything on the Hub: the id has the Hub's syntax, a token is there, the endpoint
/// answers, the token is valid and may write (`whoami`: not a read-only token), and the
/// owner is the token's user or one of its organisations. The repo itself is created by the
/// push, after the model verified.
pub fn preflight(cfg: &HubConfig, repo: &str, _private: bool) -> Result<(), HubError> {
    if !repo.contains('/') || !super::finetunes::is_repo_id(repo) {
        return Err(HubError::PushTarget { repo: repo.into() });
    }
    cfg.require_token()?;
    block_on(async {
        let http = Http::new(cfg)?;
        let url = format!("{}/api/whoami-v2", cfg.endpoint);
        let what = format!("reaching {}", cfg.endpoint);
        let resp = http.send_api(repo, &what, || http.auth(http.client.get(&url), &url)).await?;
        let resp = http.check(resp, repo, NotFound::Repo).await?;
        let who: Value = resp.json().await.unwrap_or(Value::Null);
        let forbidden = |message: String| HubError::Forbidden { repo: repo.into(), message };
        if who.pointer("/auth/accessToken/role").and_then(Value::as_str) == Some("read") {
            return Err(forbidden("the token is read-only; create a token with write access".into()));
        }
        let owner = repo.split('/').next().unwrap_or_default();
        let user = who.get("name").and_then(Value::as_str);
        let orgs: Vec<&str> = who
            .get("orgs")
            .and_then(Value::as_array)
            .map(|o| o.iter().filter_map(|x| x.get("name").and_then(Value::as_str)).collect())
            .unwrap_or_default();
        match user {
            Some(u) if u == owner || orgs.contains(&owner) => Ok(()),
            Some(u) => Err(forbidden(format!("the token belongs to `{u}`, who is not `{owner}` nor a member of it"))),
            None => Err(HubError::Protocol { repo: repo.into(), message: "the whoami answer names no user".into() }),
        }
    })
}

/// Files under `dir`, recursively, skipping hidden files and folders (`.cache`, temp files).
fn list_folder(dir: &Path) -> Result<Vec<LocalFile>, HubError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(io_err(&d))? {
            let e = e.map_err(io_err(&d))?;
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let meta = std::fs::metadata(&p).map_err(io_err(&p))?;
            if meta.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("below dir").to_str().map(str::to_string);
                let rel = match rel {
                    Some(r) if super::cache::repo_path_problem(&r).is_none() => r,
                    other => {
                        let why = other.as_deref().and_then(super::cache::repo_path_problem).unwrap_or("is not UTF-8");
                        return Err(HubError::Upload { path: p.display().to_string(), message: format!("cannot be uploaded: its name {why}") });
                    }
                };
                out.push(LocalFile { path: p, repo_path: rel, size: meta.len(), lfs: false, sha256: None, remote_oid: None });
            }
        }
    }
    out.sort_by(|a, b| a.repo_path.cmp(&b.repo_path));
    Ok(out)
}

struct Pusher<'a> {
    http: &'a Http,
    repo: &'a str,
    opts: &'a PushOptions,
    /// Bytes of LFS objects done (sent or found already stored).
    bar: &'a indicatif::ProgressBar,
}

impl Pusher<'_> {
    fn endpoint(&self) -> &str {
        &self.http.cfg.endpoint
    }

    /// The retry policy of every request of this push.
    fn retry(&self) -> RetryPolicy {
        self.http.cfg.retry.with_attempts(self.opts.max_attempts)
    }

    /// POST JSON to a Hub URL with the token, retrying transient failures.
    async fn post_json(&self, url: &str, body: &Value, media: Option<&str>, what: &str) -> Result<reqwest::Response, HubError> {
        self.http
            .send_api_with(self.retry(), self.repo, what, || {
                let req = self.http.auth(self.http.client.post(url), url).json(body);
                match media {
                    Some(m) => req.header("content-type", m).header("accept", m),
                    None => req,
                }
            })
            .await
    }

    /// A request to pre-signed storage (it gets no token), retried by this push's policy; a
    /// transient failure that outlasts it is an upload error of `path` saying what `failed`.
    async fn send_storage<F, Fut>(&self, path: &str, what: &str, failed: &str, request: F) -> Result<reqwest::Response, HubError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<reqwest::RequestBuilder, HubError>>,
    {
        let failed =
            |n, why| HubError::Upload { path: path.into(), message: format!("{failed} failed after {n} tries: {}", self.http.describe(&why)) };
        self.http.send_retrying(self.retry(), what, request, failed).await
    }

    /// Create the repo; an existing one (409) is fine.
    async fn create_repo(&self) -> Result<String, HubError> {
        let (owner, name) = self.repo.split_once('/').expect("owner/name checked");
        let body = json!({"name": name, "organization": owner, "private": self.opts.private, "type": "model"});
        let resp = self.post_json(&format!("{}/api/repos/create", self.endpoint()), &body, None, "create repo").await?;
        let url = format!("{}/{}", self.endpoint(), self.repo);
        if resp.status() == StatusCode::CONFLICT {
            return Ok(url);
        }
        let resp = self.http.check(resp, self.repo, NotFound::Repo).await?;
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        Ok(v.get("url").and_then(Value::as_str).map(str::to_string).unwrap_or(url))
    }

    /// Ask which files go by LFS, and the oid of what the branch holds at each path.
    async fn preupload(&self, files: &mut [LocalFile]) -> Result<(), HubError> {
        let url = format!("{}/api/models/{}/preupload/{}", self.endpoint(), self.repo, http::encode_segment(&self.opts.revision));
        for chunk in files.chunks_mut(BATCH) {
            let mut entries = Vec::new();
            for f in chunk.iter() {
                entries
                    .push(json!({"path": f.repo_path, "size": f.size, "sample": base64::engine::general_purpose::STANDARD.encode(sample(&f.path)?)}));
            }
            let resp = self.post_json(&url, &json!({"files": entries}), None, "preupload").await?;
            let resp = self.http.check(resp, self.repo, NotFound::Revision(&self.opts.revision)).await?;
            let v: Value = resp.json().await.map_err(|e| self.http.transport(self.repo, "preupload answer", e))?;
            let answers = v.get("files").and_then(Value::as_array).ok_or_else(|| self.protocol("preupload answer has no `files`"))?;
            for f in chunk.iter_mut() {
                let a = answers.iter().find(|a| a.get("path").and_then(Value::as_str) == Some(f.repo_path.as_str()));
                let a = a.ok_or_else(|| self.protocol(&format!("preupload did not answer for {}", f.repo_path)))?;
                f.lfs = match a.get("uploadMode").and_then(Value::as_str) {
                    Some("lfs") => f.size > 0,
                    Some("regular") => false,
                    other => return Err(self.protocol(&format!("unknown upload mode {other:?} for {}", f.repo_path))),
                };
                f.remote_oid = a.get("oid").and_then(Value::as_str).map(str::to_string);
            }
        }
        Ok(())
    }

    fn protocol(&self, message: &str) -> HubError {
        HubError::Protocol { repo: self.repo.into(), message: self.http.cfg.redact(message) }
    }

    /// The LFS batch API for `files`; returns (uploaded, already present, bytes sent).
    async fn upload_lfs(&self, files: &[&LocalFile]) -> Result<(usize, usize, u64), HubError> {
        let url = format!("{}/{}.git/info/lfs/objects/batch", self.endpoint(), self.repo);
        let (mut uploaded, mut present, mut bytes) = (0, 0, 0u64);
        for chunk in files.chunks(BATCH) {
            let objects: Vec<Value> = chunk.iter().map(|f| json!({"oid": f.sha256, "size": f.size})).collect();
            let body = json!({"operation": "upload", "transfers": ["basic", "multipart"], "objects": objects, "hash_algo": "sha256", "ref": {"name": self.opts.revision}});
            let resp = self.post_json(&url, &body, Some(LFS_MEDIA), "LFS batch").await?;
            let resp = self.http.check(resp, self.repo, NotFound::Repo).await?;
            let v: Value = resp.json().await.map_err(|e| self.http.transport(self.repo, "LFS batch answer", e))?;
            let answers = v.get("objects").and_then(Value::as_array).ok_or_else(|| self.protocol("LFS batch answer has no `objects`"))?;
            for f in chunk {
                let sha = f.sha256.as_deref().expect("hashed");
                let a = answers
                    .iter()
                    .find(|a| a.get("oid").and_then(Value::as_str) == Some(sha))
                    .ok_or_else(|| self.protocol(&format!("LFS batch did not answer for {}", f.repo_path)))?;
                if let Some(err) = a.get("error") {
                    return Err(HubError::Upload {
                        path: f.repo_path.clone(),
                        message: self.http.cfg.redact(&format!("the Hub refused the object: {err}")),
                    });
                }
                let Some(actions) = a.get("actions") else {
                    present += 1;
                    self.bar.inc(f.size);
                    continue;
                };
                let upload = actions.get("upload").ok_or_else(|| self.protocol(&format!("no upload action for {}", f.repo_path)))?;
                let href = upload.get("href").and_then(Value::as_str).ok_or_else(|| self.protocol("upload action without href"))?;
                let header = upload.get("header").and_then(Value::as_object);
                match header.and_then(|h| h.get("chunk_size")) {
                    Some(cs) => {
                        let chunk_size = cs
                            .as_u64()
                            .or_else(|| cs.as_str().and_then(|s| s.parse().ok()))
                            .filter(|&c| c > 0)
                            .ok_or_else(|| self.protocol("chunk_size is not a positive integer"))?;
                        self.multipart(f, sha, href, header.expect("has chunk_size"), chunk_size).await?;
                    }
                    None => self.basic(f, href).await?,
                }
                if let Some(verify) = actions.get("verify").and_then(|v| v.get("href")).and_then(Value::as_str) {
                    let resp = self.post_json(verify, &json!({"oid": sha, "size": f.size}), Some(LFS_MEDIA), "LFS verify").await?;
                    if !resp.status().is_success() {
                        return Err(HubError::Upload {
                            path: f.repo_path.clone(),
                            message: format!("the Hub could not verify the upload (HTTP {})", resp.status()),
                        });
                    }
                }
                uploaded += 1;
                bytes += f.size;
            }
        }
        Ok((uploaded, present, bytes))
    }

    /// One PUT of the whole file (basic transfer), streamed from disk; the pre-signed URL gets no token.
    async fn basic(&self, f: &LocalFile, href: &str) -> Result<(), HubError> {
        let what = format!("upload of {}", f.repo_path);
        let resp = self
            .send_storage(&f.repo_path, &what, "upload", |_| async move {
                let file = tokio::fs::File::open(&f.path).await.map_err(io_err(&f.path))?;
                let body = reqwest::Body::wrap_stream(file_stream(file, f.size));
                Ok(self.http.client.put(href).header("content-length", f.size).body(body))
            })
            .await?;
        if !resp.status().is_success() {
            let message = format!("storage refused the upload (HTTP {})", resp.status());
            return Err(HubError::Upload { path: f.repo_path.clone(), message });
        }
        self.bar.inc(f.size);
        Ok(())
    }

    /// Multipart transfer: PUT each `chunk_size` slice to its numbered URL (in parallel, each
    /// retried), then POST the part ETags to `href` to complete the object.
    async fn multipart(
        &self,
        f: &LocalFile,
        sha: &str,
        href: &str,
        header: &serde_json::Map<String, Value>,
        chunk_size: u64,
    ) -> Result<(), HubError> {
        let mut parts: Vec<(u64, String)> = header
            .iter()
            .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
            .collect();
        parts.sort();
        let expected = f.size.div_ceil(chunk_size);
        if parts.len() as u64 != expected || parts.iter().enumerate().any(|(i, (n, _))| *n != i as u64 + 1) {
            return Err(self.protocol(&format!("{}: the Hub gave {} part URLs for {expected} parts", f.repo_path, parts.len())));
        }
        let etags: Vec<(u64, String)> = futures::stream::iter(parts.into_iter().map(|(n, url)| async move {
            let start = (n - 1) * chunk_size;
            let len = chunk_size.min(f.size - start);
            Ok::<_, HubError>((n, self.put_part(f, n, &url, start, len).await?))
        }))
        .buffered(self.opts.parallel_parts.max(1))
        .try_collect()
        .await?;
        let parts: Vec<Value> = etags.into_iter().map(|(n, e)| json!({"partNumber": n, "etag": e})).collect();
        let body = json!({"oid": sha, "parts": parts});
        let body = &body;
        let what = format!("completing the upload of {}", f.repo_path);
        // The completion URL is pre-signed storage, like the parts: no token.
        let request =
            |_| std::future::ready(Ok(self.http.client.post(href).header("content-type", LFS_MEDIA).header("accept", LFS_MEDIA).json(body)));
        let resp = self.send_storage(&f.repo_path, &what, "completing the upload", request).await?;
        if !resp.status().is_success() {
            let text = resp.text().await.unwrap_or_default();
            let message = self.http.cfg.redact(&format!("completing the multipart upload failed: {text}"));
            return Err(HubError::Upload { path: f.repo_path.clone(), message });
        }
        Ok(())
    }

    /// PUT bytes `start..start+len` of the file, streamed from disk (memory stays at one
    /// read buffer per part in flight, whatever the Hub's chunk size).
    async fn put_part(&self, f: &LocalFile, n: u64, url: &str, start: u64, len: u64) -> Result<String, HubError> {
        let what = format!("{} part {n}", f.repo_path);
        let resp = self
            .send_storage(&f.repo_path, &what, &format!("part {n}"), |_| async move {
                let file = open_at(&f.path, start).await?;
                let body = reqwest::Body::wrap_stream(file_stream(file, len));
                Ok(self.http.client.put(url).header("content-length", len).body(body))
            })
            .await?;
        if !resp.status().is_success() {
            let message = format!("part {n}: storage refused it (HTTP {})", resp.status());
            return Err(HubError::Upload { path: f.repo_path.clone(), message });
        }
        self.bar.inc(len);
        let etag = http::header(&resp, "etag").filter(|e| !e.is_empty());
        etag.ok_or_else(|| self.protocol(&format!("{} part {n}: storage returned no ETag", f.repo_path)))
    }

    /// One NDJSON commit: header, small files inline (base64), LFS files as pointers.
    async fn commit(&self, files: &[LocalFile]) -> Result<String, HubError> {
        let mut body = Vec::new();
        let mut line = |v: Value| {
            body.extend_from_slice(v.to_string().as_bytes());
            body.push(b'\n');
        };
        line(json!({"key": "header", "value": {"summary": self.opts.message, "description": ""}}));
        for f in files {
            if f.lfs {
                line(json!({"key": "lfsFile", "value": {"path": f.repo_path, "algo": "sha256", "oid": f.sha256, "size": f.size}}));
            } else {
                let bytes = tokio::fs::read(&f.path).await.map_err(io_err(&f.path))?;
                line(
                    json!({"key": "file", "value": {"content": base64::engine::general_purpose::STANDARD.encode(bytes), "path": f.repo_path, "encoding": "base64"}}),
                );
            }
        }
        let url = format!("{}/api/models/{}/commit/{}", self.endpoint(), self.repo, http::encode_segment(&self.opts.revision));
        // Not retried: a commit whose answer was lost may have landed, and a second would duplicate it.
        let req = self.http.auth(self.http.client.post(&url), &url).header("content-type", "application/x-ndjson").body(body);
        let resp = req.send().await.map_err(|e| self.http.transport(self.repo, "commit", e))?;
        let resp = self.http.check(resp, self.repo, NotFound::Revision(&self.opts.revision)).await?;
        let v: Value = resp.json().await.map_err(|e| self.http.transport(self.repo, "commit answer", e))?;
        v.get("commitOid").and_then(Value::as_str).map(str::to_string).ok_or_else(|| self.protocol("the commit answer has no commitOid"))
    }
}

/// The first 512 bytes (what the Hub inspects to decide text vs binary).
fn sample(path: &Path) -> Result<Vec<u8>, HubError> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(512);
    std::fs::File::open(path).map_err(io_err(path))?.take(512).read_to_end(&mut buf).map_err(io_err(path))?;
    Ok(buf)
}

async fn open_at(path: &Path, start: u64) -> Result<tokio::fs::File, HubError> {
    use tokio::io::AsyncSeekExt;
    let mut f = tokio::fs::File::open(path).await.map_err(io_err(path))?;
    f.seek(std::io::SeekFrom::Start(start)).await.map_err(io_err(path))?;
    Ok(f)
}

/// The next `len` bytes of a file as a stream of chunks of at most 1 MiB, for streamed
/// request bodies; a file that ends early is an error, not a short upload.
fn file_stream(file: tokio::fs::File, len: u64) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> {
    futures::stream::try_unfold((file, len), |(mut f, left)| async move {
        use tokio::io::AsyncReadExt;
        if left == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; left.min(1 << 20) as usize];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while it was being uploaded"));
        }
        buf.truncate(n);
        Ok(Some((buf, (f, left - n as u64))))
    })
}
