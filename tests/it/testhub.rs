//! A Hugging Face Hub on loopback that speaks the protocol the official `huggingface_hub`
//! client uses (and so hf-tailor's pull and push): repo info and tree listings, `resolve`
//! downloads with `ETag` / `X-Repo-Commit` / `X-Linked-Etag` / `X-Linked-Size` headers and a
//! redirect to LFS storage that honours `Range`, repo creation, preupload, the LFS batch API
//! (basic and multipart transfers, verify) and NDJSON commits; 401 for a bad token, 404 with
//! the Hub's `X-Error-Code` for a missing repo, revision or file.
//!
//! It can also misbehave on purpose: fail multipart part uploads after N parts, fail chosen
//! parts once each and accept their retries, fail the next N commits, give `chunk_size` as a
//! JSON number instead of a string, and cut the first download of each LFS object after N
//! bytes.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The one token the test Hub accepts; it belongs to user `tester`.
pub const TOKEN: &str = "hf_testhubSECRETtoken0123456789";
pub const USER: &str = "tester";

#[derive(Clone, Debug)]
pub enum Entry {
    Regular(Vec<u8>),
    Lfs { sha256: String, size: u64 },
}

impl Entry {
    fn size(&self) -> u64 {
        match self {
            Entry::Regular(b) => b.len() as u64,
            Entry::Lfs { size, .. } => *size,
        }
    }
    /// What preupload / tree report as the file's id: sha256 for LFS (as the Hub does),
    /// a git-blob-style id for regular files.
    fn oid(&self) -> String {
        match self {
            Entry::Regular(b) => blob_oid(b),
            Entry::Lfs { sha256, .. } => sha256.clone(),
        }
    }
}

/// A stand-in for git's blob sha1 (40 hex digits of sha256 over git's blob header + bytes).
fn blob_oid(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(format!("blob {}\0", bytes.len()));
    h.update(bytes);
    hex::encode(h.finalize())[..40].to_string()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

type Tree = BTreeMap<String, Entry>;

#[derive(Default)]
struct Repo {
    private: bool,
    branches: BTreeMap<String, String>,
    commits: HashMap<String, Tree>,
}

struct Multipart {
    oid: String,
    size: u64,
    chunk: u64,
    parts: BTreeMap<u32, (Vec<u8>, String)>,
}

struct State {
    base_url: String,
    /// The "CDN / S3" origin for LFS objects and uploads.
    storage_url: String,
    repos: HashMap<String, Repo>,
    lfs: HashMap<String, Vec<u8>>,
    uploads: HashMap<String, Multipart>,
    next_id: u64,
    /// Files at least this large go by LFS (the Hub uses 10 MB; tests go lower).
    lfs_threshold: u64,
    /// Objects larger than this are uploaded in parts of `chunk_size`.
    multipart_threshold: u64,
    chunk_size: u64,
    fail_parts_after: Option<usize>,
    parts_received: usize,
    cut_downloads_after: Option<u64>,
    cut_done: HashSet<String>,
    log: Vec<String>,
    /// Part numbers whose first upload (per multipart upload) answers 500.
    fail_parts_once: HashSet<u32>,
    failed_once: HashSet<(String, u32)>,
    /// Commits still to answer 500 to.
    fail_commits: usize,
    /// `chunk_size` as a JSON number (some servers) instead of a string (the Hub).
    numeric_chunk_size: bool,
}

/// Counts of what the server received, for assertions.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub basic_uploads: usize,
    pub part_uploads: usize,
    pub completions: usize,
    pub range_requests: Vec<String>,
}

pub struct TestHub {
    pub url: String,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn repo_key(kind: &str, repo: &str) -> String {
    format!("{kind}/{repo}")
}

impl TestHub {
    pub fn start() -> Self {
        let bind = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
            l.set_nonblocking(true).unwrap();
            let url = format!("http://{}", l.local_addr().unwrap());
            (l, url)
        };
        let (listener, url) = bind();
        // LFS storage lives on another origin, as S3/CloudFront does for the real Hub: clients
        // must not follow the redirect with the token, and must take metadata from the Hub's answer.
        let (storage_listener, storage_url) = bind();
        let state = Arc::new(Mutex::new(State {
            base_url: url.clone(),
            storage_url: storage_url.clone(),
            repos: HashMap::new(),
            lfs: HashMap::new(),
            uploads: HashMap::new(),
            next_id: 1,
            lfs_threshold: 10 * 1024 * 1024,
            multipart_threshold: 64 * 1024 * 1024,
            chunk_size: 16 * 1024 * 1024,
            fail_parts_after: None,
            parts_received: 0,
            cut_downloads_after: None,
            cut_done: HashSet::new(),
            log: Vec::new(),
            fail_parts_once: HashSet::new(),
            failed_once: HashSet::new(),
            fail_commits: 0,
            numeric_chunk_size: false,
        }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let storage_listener = tokio::net::TcpListener::from_std(storage_listener).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(shared);
                let storage = axum::serve(storage_listener, app.clone());
                tokio::spawn(async move { storage.await.unwrap() });
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self { url, state, shutdown: Some(tx), thread: Some(thread) }
    }

    /// LFS for files of at least `lfs` bytes; multipart for objects above `multipart`, in parts of `chunk`.
    pub fn set_thresholds(&self, lfs: u64, multipart: u64, chunk: u64) {
        let mut s = self.state.lock().unwrap();
        s.lfs_threshold = lfs;
        s.multipart_threshold = multipart;
        s.chunk_size = chunk;
    }

    /// Answer 500 to every part upload after the next `n` succeed (None: stop failing).
    pub fn fail_parts_after(&self, n: Option<usize>) {
        let mut s = self.state.lock().unwrap();
        s.fail_parts_after = n.map(|n| s.parts_received + n);
    }

    /// Answer 500 to the first upload of each of these part numbers (in every multipart
    /// upload), and accept the retry.
    pub fn fail_parts_once(&self, parts: &[u32]) {
        let mut s = self.state.lock().unwrap();
        s.fail_parts_once = parts.iter().copied().collect();
        s.failed_once.clear();
    }

    /// Answer 500 to the next `n` commit requests (after their uploads went through).
    pub fn fail_commits(&self, n: usize) {
        self.state.lock().unwrap().fail_commits = n;
    }

    /// Send multipart `chunk_size` as a JSON number instead of the Hub's string.
    pub fn numeric_chunk_size(&self, on: bool) {
        self.state.lock().unwrap().numeric_chunk_size = on;
    }

    /// Cut the first download of each LFS object after `n` bytes (the connection drops).
    pub fn cut_downloads_after(&self, n: Option<u64>) {
        self.state.lock().unwrap().cut_downloads_after = n;
    }

    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Create a repo (`kind` = models/datasets) and commit `files` to `main`; returns the commit.
    pub fn seed(&self, kind: &str, repo: &str, private: bool, files: &[(&str, Vec<u8>)]) -> String {
        let mut s = self.state.lock().unwrap();
        let key = repo_key(kind, repo);
        s.repos.entry(key.clone()).or_insert_with(|| Repo { private, ..Repo::default() });
        let ops: Vec<(String, Entry)> = files
            .iter()
            .map(|(p, b)| {
                let e = if s.is_lfs(p, b) {
                    let sha = sha256_hex(b);
                    s.lfs.insert(sha.clone(), b.clone());
                    Entry::Lfs { sha256: sha, size: b.len() as u64 }
                } else {
                    Entry::Regular(b.clone())
                };
                (p.to_string(), e)
            })
            .collect();
        s.commit(&key, "main", ops, &[], true).expect("seed commit")
    }

    /// Branch `name` of `repo` pointing at `commit`.
    pub fn branch(&self, kind: &str, repo: &str, name: &str, commit: &str) {
        let mut s = self.state.lock().unwrap();
        s.repos.get_mut(&repo_key(kind, repo)).unwrap().branches.insert(name.into(), commit.into());
    }

    /// The bytes of `path` at the head of `branch`, LFS content resolved.
    pub fn file(&self, kind: &str, repo: &str, branch: &str, path: &str) -> Option<Vec<u8>> {
        let s = self.state.lock().unwrap();
        let r = s.repos.get(&repo_key(kind, repo))?;
        let tree = r.commits.get(r.branches.get(branch)?)?;
        match tree.get(path)? {
            Entry::Regular(b) => Some(b.clone()),
            Entry::Lfs { sha256, .. } => s.lfs.get(sha256).cloned(),
        }
    }

    pub fn entry(&self, kind: &str, repo: &str, branch: &str, path: &str) -> Option<Entry> {
        let s = self.state.lock().unwrap();
        let r = s.repos.get(&repo_key(kind, repo))?;
        r.commits.get(r.branches.get(branch)?)?.get(path).cloned()
    }

    pub fn head(&self, kind: &str, repo: &str, branch: &str) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.repos.get(&repo_key(kind, repo))?.branches.get(branch).cloned()
    }

    pub fn is_private(&self, kind: &str, repo: &str) -> Option<bool> {
        self.state.lock().unwrap().repos.get(&repo_key(kind, repo)).map(|r| r.private)
    }

    pub fn has_object(&self, sha: &str) -> bool {
        self.state.lock().unwrap().lfs.contains_key(sha)
    }

    pub fn stats(&self) -> Stats {
        let s = self.state.lock().unwrap();
        let mut st = Stats::default();
        for l in &s.log {
            if l.starts_with("PUT /lfs-upload/") {
                st.basic_uploads += 1;
            } else if l.starts_with("PUT /lfs-multipart/") {
                st.part_uploads += 1;
            } else if l.starts_with("POST /lfs-multipart/") {
                st.completions += 1;
            }
            if let Some(r) = l.split(" range=").nth(1) {
                st.range_requests.push(r.to_string());
            }
        }
        st
    }
}

impl State {
    fn is_lfs(&self, path: &str, bytes: &[u8]) -> bool {
        const LFS_EXT: &[&str] = &[".safetensors", ".bin", ".gguf", ".parquet", ".pt", ".h5", ".msgpack", ".model"];
        LFS_EXT.iter().any(|e| path.ends_with(e)) || bytes.len() as u64 >= self.lfs_threshold || bytes.contains(&0)
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Apply `ops` (adds) and `deletes` on top of `branch`; returns the new commit id.
    fn commit(&mut self, key: &str, branch: &str, ops: Vec<(String, Entry)>, deletes: &[String], create_branch: bool) -> Result<String, String> {
        let id = self.new_id();
        let repo = self.repos.get_mut(key).ok_or("no repo")?;
        let parent = repo.branches.get(branch).cloned();
        if parent.is_none() && !create_branch {
            return Err("no branch".into());
        }
        let mut tree = parent.as_ref().and_then(|p| repo.commits.get(p).cloned()).unwrap_or_default();
        for d in deletes {
            tree.remove(d);
        }
        for (p, e) in ops {
            tree.insert(p, e);
        }
        let commit = hex::encode(Sha256::digest(format!("{key}:{branch}:{id}:{parent:?}")))[..40].to_string();
        repo.commits.insert(commit.clone(), tree);
        repo.branches.insert(branch.into(), commit.clone());
        Ok(commit)
    }
}

type Shared = Arc<Mutex<State>>;

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_resp(status: StatusCode, v: Value) -> Response {
    (status, [("content-type", "application/json")], v.to_string()).into_response()
}

fn error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let mut r = json_resp(status, json!({ "error": message }));
    if let Some(c) = code {
        r.headers_mut().insert("x-error-code", HeaderValue::from_str(c).unwrap());
    }
    r.headers_mut().insert("x-error-message", HeaderValue::from_str(message).unwrap());
    r
}

/// None: no token; Some(true): the valid token; Some(false): a token we do not know.
fn token_state(headers: &HeaderMap) -> Option<bool> {
    let v = headers.get("authorization")?.to_str().ok()?;
    Some(v.strip_prefix("Bearer ").is_some_and(|t| t == TOKEN))
}

async fn handle(axum::extract::State(shared): axum::extract::State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let range = headers.get("range").and_then(|v| v.to_str().ok()).map(str::to_string);
    {
        let mut s = shared.lock().unwrap();
        let mut line = format!("{method} {path}");
        if let Some(r) = &range {
            line.push_str(&format!(" range={r}"));
        }
        s.log.push(line);
    }
    let auth = token_state(&headers);
    if auth == Some(false) {
        return error(StatusCode::UNAUTHORIZED, None, "Invalid credentials in Authorization header");
    }
    let authed = auth == Some(true);
    let segs: Vec<String> = path.trim_start_matches('/').split('/').map(decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let mut s = shared.lock().unwrap();
    match (method.clone(), segs.as_slice()) {
        (Method::POST, ["api", "validate-yaml"]) => json_resp(StatusCode::OK, json!({"errors": [], "warnings": []})),
        (Method::GET, ["api", "whoami-v2"]) if authed => json_resp(StatusCode::OK, json!({"type": "user", "name": USER})),
        (Method::POST, ["api", "repos", "create"]) => create_repo(&mut s, authed, &body),
        (m, ["api", kind @ ("models" | "datasets"), owner, name, rest @ ..]) => {
            let repo = format!("{owner}/{name}");
            let key = repo_key(kind, &repo);
            if let Some(r) = read_denied(&s, &key, authed) {
                return r;
            }
            match (m, rest) {
                (Method::GET, []) => info(&s, &key, &repo, "main"),
                (Method::GET, ["revision", rev]) => info(&s, &key, &repo, rev),
                (Method::GET, ["tree", rev, sub @ ..]) => tree(&s, &key, rev, &sub.join("/")),
                (Method::POST, ["preupload", rev]) if authed => preupload(&s, &key, rev, &body),
                (Method::POST, ["commit", _]) if authed && s.fail_commits > 0 => {
                    s.fail_commits -= 1;
                    error(StatusCode::INTERNAL_SERVER_ERROR, None, "commit service unavailable")
                }
                (Method::POST, ["commit", rev]) if authed => commit(&mut s, &key, &repo, rev, &body),
                (Method::POST, _) => error(StatusCode::UNAUTHORIZED, None, "You must be authenticated to write"),
                _ => error(StatusCode::NOT_FOUND, None, "Not Found"),
            }
        }
        (Method::POST, [rest @ .., "info", "lfs", "objects", op]) if rest.len() >= 2 => {
            let (kind, owner, name) = match rest {
                ["datasets", o, n] => ("datasets", *o, *n),
                [o, n] => ("models", *o, *n),
                _ => return error(StatusCode::NOT_FOUND, None, "Not Found"),
            };
            let Some(name) = name.strip_suffix(".git") else { return error(StatusCode::NOT_FOUND, None, "Not Found") };
            let repo = format!("{owner}/{name}");
            let key = repo_key(kind, &repo);
            if !authed {
                return error(StatusCode::UNAUTHORIZED, None, "You must be authenticated to upload");
            }
            if !s.repos.contains_key(&key) {
                return error(StatusCode::NOT_FOUND, Some("RepoNotFound"), "Repository not found");
            }
            match *op {
                "batch" => lfs_batch(&mut s, &repo, kind, &body),
                "verify" => lfs_verify(&s, &body),
                _ => error(StatusCode::NOT_FOUND, None, "Not Found"),
            }
        }
        (m @ (Method::GET | Method::HEAD), rest) if rest.len() >= 5 && (rest[2] == "resolve" || rest.get(3) == Some(&"resolve")) => {
            let (kind, owner, name, rev, file) = if rest[0] == "datasets" && rest[3] == "resolve" {
                ("datasets", rest[1], rest[2], rest[4], rest[5..].join("/"))
            } else {
                ("models", rest[0], rest[1], rest[3], rest[4..].join("/"))
            };
            let repo = format!("{owner}/{name}");
            resolve(&s, m == Method::HEAD, &repo_key(kind, &repo), rev, &file, &range)
        }
        (m @ (Method::GET | Method::HEAD), ["lfs-store", sha]) => lfs_download(&mut s, m == Method::HEAD, sha, &range),
        (Method::PUT, ["lfs-upload", sha]) => {
            if sha256_hex(&body) != *sha {
                return error(StatusCode::BAD_REQUEST, None, "sha256 mismatch");
            }
            s.lfs.insert(sha.to_string(), body.to_vec());
            StatusCode::OK.into_response()
        }
        (Method::PUT, ["lfs-multipart", id, part]) => {
            if s.fail_parts_after.is_some_and(|n| s.parts_received >= n) {
                return error(StatusCode::INTERNAL_SERVER_ERROR, None, "storage is having a bad day");
            }
            let Ok(n) = part.parse::<u32>() else { return error(StatusCode::BAD_REQUEST, None, "bad part") };
            if s.fail_parts_once.contains(&n) && s.failed_once.insert((id.to_string(), n)) {
                return error(StatusCode::INTERNAL_SERVER_ERROR, None, "part lost, try again");
            }
            let etag = format!("\"{}\"", &sha256_hex(&body)[..32]);
            let Some(up) = s.uploads.get_mut(*id) else { return error(StatusCode::NOT_FOUND, None, "no such upload") };
            up.parts.insert(n, (body.to_vec(), etag.clone()));
            s.parts_received += 1;
            (StatusCode::OK, [("etag", etag)]).into_response()
        }
        (Method::POST, ["lfs-multipart", id]) => complete_multipart(&mut s, id, &body),
        _ => error(StatusCode::NOT_FOUND, None, "Not Found"),
    }
}

/// A private repo is invisible without the token; a missing one is a 404 with RepoNotFound.
fn read_denied(s: &State, key: &str, authed: bool) -> Option<Response> {
    match s.repos.get(key) {
        Some(r) if !r.private || authed => None,
        _ => Some(error(StatusCode::NOT_FOUND, Some("RepoNotFound"), "Repository not found")),
    }
}

fn resolve_rev(repo: &Repo, rev: &str) -> Option<String> {
    if repo.commits.contains_key(rev) {
        return Some(rev.to_string());
    }
    repo.branches.get(rev).cloned()
}

fn info(s: &State, key: &str, repo: &str, rev: &str) -> Response {
    let r = &s.repos[key];
    let Some(commit) = resolve_rev(r, rev) else {
        return error(StatusCode::NOT_FOUND, Some("RevisionNotFound"), &format!("Invalid rev id: {rev}"));
    };
    let siblings: Vec<Value> = r.commits[&commit].keys().map(|p| json!({"rfilename": p})).collect();
    json_resp(
        StatusCode::OK,
        json!({"_id": format!("id-{repo}"), "id": repo, "author": repo.split('/').next(), "sha": commit, "private": r.private,
               "disabled": false, "gated": false, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
               "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z"}),
    )
}

fn tree(s: &State, key: &str, rev: &str, sub: &str) -> Response {
    let r = &s.repos[key];
    let Some(commit) = resolve_rev(r, rev) else {
        return error(StatusCode::NOT_FOUND, Some("RevisionNotFound"), &format!("Invalid rev id: {rev}"));
    };
    let prefix = if sub.is_empty() { String::new() } else { format!("{sub}/") };
    let mut dirs = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (p, e) in &r.commits[&commit] {
        let Some(rest) = p.strip_prefix(&prefix) else { continue };
        let parts: Vec<&str> = rest.split('/').collect();
        for i in 1..parts.len() {
            dirs.insert(format!("{prefix}{}", parts[..i].join("/")));
        }
        let mut v = json!({"type": "file", "oid": blob_oid(p.as_bytes()), "size": e.size(), "path": p});
        if let Entry::Lfs { sha256, size } = e {
            v["lfs"] = json!({"oid": sha256, "size": size, "pointerSize": 134});
        }
        out.push(v);
    }
    for d in dirs {
        out.push(json!({"type": "directory", "oid": blob_oid(d.as_bytes()), "size": 0, "path": d}));
    }
    json_resp(StatusCode::OK, Value::Array(out))
}

fn resolve(s: &State, head: bool, key: &str, rev: &str, file: &str, range: &Option<String>) -> Response {
    let Some(r) = s.repos.get(key) else { return error(StatusCode::NOT_FOUND, Some("RepoNotFound"), "Repository not found") };
    let Some(commit) = resolve_rev(r, rev) else {
        return error(StatusCode::NOT_FOUND, Some("RevisionNotFound"), &format!("Invalid rev id: {rev}"));
    };
    let Some(entry) = r.commits[&commit].get(file) else {
        let mut resp = error(StatusCode::NOT_FOUND, Some("EntryNotFound"), &format!("{file} does not exist on \"{rev}\""));
        resp.headers_mut().insert("x-repo-commit", HeaderValue::from_str(&commit).unwrap());
        return resp;
    };
    match entry {
        Entry::Regular(bytes) => {
            let mut resp = ranged(bytes, head, range);
            let h = resp.headers_mut();
            h.insert("etag", HeaderValue::from_str(&format!("\"{}\"", blob_oid(bytes))).unwrap());
            h.insert("x-repo-commit", HeaderValue::from_str(&commit).unwrap());
            resp
        }
        Entry::Lfs { sha256, size } => {
            let location = format!("{}/lfs-store/{sha256}", s.storage_url);
            let mut resp = StatusCode::FOUND.into_response();
            let h = resp.headers_mut();
            h.insert("location", HeaderValue::from_str(&location).unwrap());
            h.insert("etag", HeaderValue::from_str(&format!("\"{}\"", blob_oid(sha256.as_bytes()))).unwrap());
            h.insert("x-linked-etag", HeaderValue::from_str(&format!("\"{sha256}\"")).unwrap());
            h.insert("x-linked-size", HeaderValue::from(*size));
            h.insert("x-repo-commit", HeaderValue::from_str(&commit).unwrap());
            resp
        }
    }
}

/// Serve `bytes` whole (200) or from a `Range: bytes=N-[M]` (206).
fn ranged(bytes: &[u8], head: bool, range: &Option<String>) -> Response {
    let total = bytes.len() as u64;
    let (status, start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let start: u64 = a.parse().unwrap_or(0);
            let end: u64 = b.parse().map(|e: u64| e + 1).unwrap_or(total).min(total);
            if start >= total {
                let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                r.headers_mut().insert("content-range", HeaderValue::from_str(&format!("bytes */{total}")).unwrap());
                return r;
            }
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        None => (StatusCode::OK, 0, total),
    };
    let slice = bytes[start as usize..end as usize].to_vec();
    let len = slice.len();
    let mut resp = if head { (status, Body::empty()).into_response() } else { (status, slice).into_response() };
    let h = resp.headers_mut();
    h.insert("content-length", HeaderValue::from(len));
    h.insert("accept-ranges", HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert("content-range", HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end - 1)).unwrap());
    }
    resp
}

fn lfs_download(s: &mut State, head: bool, sha: &str, range: &Option<String>) -> Response {
    let Some(bytes) = s.lfs.get(sha).cloned() else { return error(StatusCode::NOT_FOUND, None, "no such object") };
    if !head {
        if let Some(cut) = s.cut_downloads_after {
            if s.cut_done.insert(sha.to_string()) {
                // Promise the whole body, send `cut` bytes, then fail: the client sees a broken transfer.
                let total = bytes.len();
                let first = Bytes::from(bytes[..(cut as usize).min(total)].to_vec());
                // Let the bytes reach the client before the connection breaks.
                let stream = futures::stream::unfold(0u8, move |step| {
                    let first = first.clone();
                    async move {
                        match step {
                            0 => Some((Ok::<Bytes, std::io::Error>(first), 1)),
                            1 => {
                                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                                Some((Err(std::io::Error::other("connection cut by test hub")), 2))
                            }
                            _ => None,
                        }
                    }
                });
                let mut resp = (StatusCode::OK, Body::from_stream(stream)).into_response();
                resp.headers_mut().insert("content-length", HeaderValue::from(total));
                return resp;
            }
        }
    }
    let mut resp = ranged(&bytes, head, range);
    resp.headers_mut().insert("etag", HeaderValue::from_str(&format!("\"{sha}\"")).unwrap());
    resp
}

fn create_repo(s: &mut State, authed: bool, body: &[u8]) -> Response {
    if !authed {
        return error(StatusCode::UNAUTHORIZED, None, "You must be authenticated to create a repo");
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return error(StatusCode::BAD_REQUEST, None, "bad JSON") };
    let Some(name) = v["name"].as_str() else { return error(StatusCode::BAD_REQUEST, None, "name is required") };
    let owner = v["organization"].as_str().unwrap_or(USER);
    if owner != USER {
        return error(StatusCode::FORBIDDEN, None, &format!("You don't have the rights to create a repo under {owner}"));
    }
    let kind = match v["type"].as_str().unwrap_or("model") {
        "model" => "models",
        "dataset" => "datasets",
        other => return error(StatusCode::BAD_REQUEST, None, &format!("unsupported repo type {other}")),
    };
    let private = v["private"].as_bool().unwrap_or(false) || v["visibility"].as_str() == Some("private");
    let repo = format!("{owner}/{name}");
    let key = repo_key(kind, &repo);
    let url = if kind == "models" { format!("{}/{repo}", s.base_url) } else { format!("{}/datasets/{repo}", s.base_url) };
    if s.repos.contains_key(&key) {
        return json_resp(StatusCode::CONFLICT, json!({"error": "You already created this model repo", "url": url}));
    }
    s.repos.insert(key.clone(), Repo { private, ..Repo::default() });
    let attrs = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n".to_vec();
    s.commit(&key, "main", vec![(".gitattributes".into(), Entry::Regular(attrs))], &[], true).unwrap();
    json_resp(StatusCode::OK, json!({"url": url, "name": repo, "id": format!("id-{repo}")}))
}

fn preupload(s: &State, key: &str, rev: &str, body: &[u8]) -> Response {
    let r = &s.repos[key];
    let Some(commit) = r.branches.get(rev) else {
        return error(StatusCode::NOT_FOUND, Some("RevisionNotFound"), &format!("Invalid rev id: {rev}"));
    };
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return error(StatusCode::BAD_REQUEST, None, "bad JSON") };
    let tree = &r.commits[commit];
    let mut files = Vec::new();
    for f in v["files"].as_array().cloned().unwrap_or_default() {
        let (Some(path), Some(size)) = (f["path"].as_str(), f["size"].as_u64()) else {
            return error(StatusCode::BAD_REQUEST, None, "files need path and size");
        };
        let sample = base64::engine::general_purpose::STANDARD.decode(f["sample"].as_str().unwrap_or("")).unwrap_or_default();
        let lfs = size > 0 && (size >= s.lfs_threshold || s.is_lfs(path, &sample));
        files.push(json!({"path": path, "uploadMode": if lfs { "lfs" } else { "regular" }, "shouldIgnore": false,
                          "oid": tree.get(path).map(Entry::oid)}));
    }
    json_resp(StatusCode::OK, json!({"files": files, "commitOid": commit}))
}

fn lfs_batch(s: &mut State, repo: &str, kind: &str, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return error(StatusCode::BAD_REQUEST, None, "bad JSON") };
    if v["operation"] != "upload" {
        return error(StatusCode::BAD_REQUEST, None, "only uploads are supported");
    }
    let prefix = if kind == "datasets" { format!("{}/datasets/{repo}", s.base_url) } else { format!("{}/{repo}", s.base_url) };
    let mut objects = Vec::new();
    for o in v["objects"].as_array().cloned().unwrap_or_default() {
        let (Some(oid), Some(size)) = (o["oid"].as_str(), o["size"].as_u64()) else {
            return error(StatusCode::BAD_REQUEST, None, "objects need oid and size");
        };
        let verify = json!({"href": format!("{prefix}.git/info/lfs/objects/verify")});
        if s.lfs.contains_key(oid) {
            objects.push(json!({"oid": oid, "size": size}));
        } else if size > s.multipart_threshold {
            let id = format!("up{}", s.new_id());
            let chunk = s.chunk_size;
            let n = size.div_ceil(chunk);
            let mut header = serde_json::Map::new();
            header.insert("chunk_size".into(), if s.numeric_chunk_size { json!(chunk) } else { json!(chunk.to_string()) });
            for i in 1..=n {
                header.insert(format!("{i:05}"), json!(format!("{}/lfs-multipart/{id}/{i}?X-Amz-Signature=s3cr3t", s.storage_url)));
            }
            s.uploads.insert(id.clone(), Multipart { oid: oid.into(), size, chunk, parts: BTreeMap::new() });
            objects.push(json!({"oid": oid, "size": size, "authenticated": true,
                "actions": {"upload": {"href": format!("{}/lfs-multipart/{id}", s.storage_url), "header": header}, "verify": verify}}));
        } else {
            objects.push(json!({"oid": oid, "size": size, "authenticated": true,
                "actions": {"upload": {"href": format!("{}/lfs-upload/{oid}?X-Amz-Signature=s3cr3t", s.storage_url)}, "verify": verify}}));
        }
    }
    let mut r = json_resp(StatusCode::OK, json!({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}));
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/vnd.git-lfs+json"));
    r
}

fn lfs_verify(s: &State, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return error(StatusCode::BAD_REQUEST, None, "bad JSON") };
    let oid = v["oid"].as_str().unwrap_or("");
    match s.lfs.get(oid) {
        Some(b) if Some(b.len() as u64) == v["size"].as_u64() => json_resp(StatusCode::OK, json!({"success": true})),
        _ => error(StatusCode::NOT_FOUND, None, "object not found"),
    }
}

fn complete_multipart(s: &mut State, id: &str, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return error(StatusCode::BAD_REQUEST, None, "bad JSON") };
    let Some(up) = s.uploads.get(id) else { return error(StatusCode::NOT_FOUND, None, "no such upload") };
    if v["oid"].as_str() != Some(up.oid.as_str()) {
        return error(StatusCode::BAD_REQUEST, None, "oid does not match the upload");
    }
    let parts = v["parts"].as_array().cloned().unwrap_or_default();
    let n = up.size.div_ceil(up.chunk) as usize;
    if parts.len() != n {
        return error(StatusCode::BAD_REQUEST, None, &format!("expected {n} parts, got {}", parts.len()));
    }
    let mut data = Vec::with_capacity(up.size as usize);
    for (i, p) in parts.iter().enumerate() {
        let num = p["partNumber"].as_u64().unwrap_or(0) as u32;
        let Some((bytes, etag)) = up.parts.get(&num) else { return error(StatusCode::BAD_REQUEST, None, &format!("part {num} was never uploaded")) };
        if num as usize != i + 1 || p["etag"].as_str() != Some(etag.as_str()) {
            return error(StatusCode::BAD_REQUEST, None, &format!("part {num}: wrong number or etag"));
        }
        data.extend_from_slice(bytes);
    }
    if sha256_hex(&data) != up.oid || data.len() as u64 != up.size {
        return error(StatusCode::BAD_REQUEST, None, "assembled object does not match its oid");
    }
    let oid = up.oid.clone();
    s.uploads.remove(id);
    s.lfs.insert(oid, data);
    json_resp(StatusCode::OK, json!({"success": true}))
}

fn commit(s: &mut State, key: &str, repo: &str, rev: &str, body: &[u8]) -> Response {
    let mut ops = Vec::new();
    let mut deletes = Vec::new();
    let mut summary = None;
    for line in body.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        let Ok(v) = serde_json::from_slice::<Value>(line) else { return error(StatusCode::BAD_REQUEST, None, "commit payload is not NDJSON") };
        let val = &v["value"];
        match v["key"].as_str() {
            Some("header") => summary = val["summary"].as_str().map(str::to_string),
            Some("file") => {
                if val["encoding"] != "base64" {
                    return error(StatusCode::BAD_REQUEST, None, "only base64 files");
                }
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(val["content"].as_str().unwrap_or("")) else {
                    return error(StatusCode::BAD_REQUEST, None, "bad base64");
                };
                ops.push((val["path"].as_str().unwrap_or("").to_string(), Entry::Regular(bytes)));
            }
            Some("lfsFile") => {
                let (Some(path), Some(oid), Some(size)) = (val["path"].as_str(), val["oid"].as_str(), val["size"].as_u64()) else {
                    return error(StatusCode::BAD_REQUEST, None, "lfsFile needs path, oid, size");
                };
                if val["algo"] != "sha256" {
                    return error(StatusCode::BAD_REQUEST, None, "lfsFile algo must be sha256");
                }
                match s.lfs.get(oid) {
                    Some(b) if b.len() as u64 == size => ops.push((path.to_string(), Entry::Lfs { sha256: oid.into(), size })),
                    _ => return error(StatusCode::UNPROCESSABLE_ENTITY, None, &format!("LFS object {oid} for {path} was never uploaded")),
                }
            }
            Some("deletedFile") => deletes.push(val["path"].as_str().unwrap_or("").to_string()),
            other => return error(StatusCode::BAD_REQUEST, None, &format!("unknown commit key {other:?}")),
        }
    }
    if summary.as_deref().is_none_or(str::is_empty) {
        return error(StatusCode::BAD_REQUEST, None, "the commit needs a header with a summary");
    }
    match s.commit(key, rev, ops, &deletes, false) {
        Ok(c) => json_resp(
            StatusCode::OK,
            json!({"success": true, "commitOid": c, "commitUrl": format!("{}/{repo}/commit/{c}", s.base_url), "pullRequestUrl": null}),
        ),
        Err(_) => error(StatusCode::NOT_FOUND, Some("RevisionNotFound"), &format!("Invalid rev id: {rev}")),
    }
}
