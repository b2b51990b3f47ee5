//! A hostile Hub on loopback: one axum app, one misbehaviour per route (path-like ETags and
//! commits, a listing that climbs out of the snapshot, bodies shorter or longer than
//! announced, a server that ignores `Range`, a token it refuses). Each test checks that
//! hf-tailor refuses with an error naming the file, that nothing outside the test's cache
//! folder is written or deleted, and that the client gives up within a bounded number of
//! requests. The server stops answering after `HARD_STOP` requests, so a client that would
//! loop for ever fails these tests instead of hanging them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hf_tailor::hub::auth::Token;
use hf_tailor::hub::retry::RetryPolicy;
use hf_tailor::hub::{self, HubConfig, HubError, ModelSource};
use serde_json::json;

use crate::common;

/// The commit every listing resolves `main` to.
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// A well-formed etag (git blob id) for routes whose misbehaviour is elsewhere.
const GOOD_ETAG: &str = "89abcdef0123456789abcdef0123456789abcdef";
/// Size every resolve route announces.
const SIZE: usize = 1000;
/// Tries per request in these tests (the client's limit the bounds below follow from).
const TRIES: u32 = 4;
/// After this many requests the server answers 404 to everything.
const HARD_STOP: usize = 200;

struct Shared {
    /// Absolute path of the victim folder (for the absolute-etag route).
    victim: PathBuf,
    log: Mutex<Vec<String>>,
}

struct Hostile {
    url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type St = State<Arc<Shared>>;

impl Hostile {
    fn start(victim: &Path) -> Self {
        let shared = Arc::new(Shared { victim: victim.to_path_buf(), log: Mutex::new(Vec::new()) });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/api/models/hostile/{behaviour}", any(model_info))
            .route("/api/models/hostile/{behaviour}/revision/{rev}", any(model_info))
            .route("/api/datasets/hostile/{behaviour}", any(dataset_info))
            .route("/api/datasets/hostile/{behaviour}/revision/{rev}", any(dataset_info))
            .route("/api/whoami-v2", any(whoami_refuses_every_token))
            .route("/hostile/etag-dotdot/resolve/{rev}/{*file}", any(etag_dotdot))
            .route("/hostile/etag-absolute/resolve/{rev}/{*file}", any(etag_absolute))
            .route("/hostile/etag-empty/resolve/{rev}/{*file}", any(etag_empty))
            .route("/hostile/commit-dotdot/resolve/{rev}/{*file}", any(commit_dotdot))
            .route("/hostile/short-body/resolve/{rev}/{*file}", any(short_body))
            .route("/hostile/long-body/resolve/{rev}/{*file}", any(long_body))
            .route("/hostile/ignores-range/resolve/{rev}/{*file}", any(ignores_range))
            .route("/datasets/hostile/listing-dotdot/resolve/{rev}/{*file}", any(good_file))
            .fallback(not_found)
            .layer(axum::middleware::from_fn_with_state(shared.clone(), count_and_stop))
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self { url, shared, shutdown: Some(tx), thread: Some(thread) }
    }

    /// Requests received whose path contains `part`.
    fn requests(&self, part: &str) -> Vec<String> {
        self.shared.log.lock().unwrap().iter().filter(|l| l.contains(part)).cloned().collect()
    }

    fn cfg(&self, cache: &Path) -> HubConfig {
        let mut cfg = HubConfig::new(&self.url, None, cache.to_path_buf());
        // No waiting between tries: the bounds below count requests, not seconds.
        cfg.retry = RetryPolicy { max_attempts: TRIES, base: Duration::ZERO, cap: Duration::ZERO };
        cfg
    }
}

/// Log every request; after `HARD_STOP` answer 404 so a looping client ends.
async fn count_and_stop(State(s): St, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let n = {
        let mut log = s.log.lock().unwrap();
        log.push(format!("{} {}", req.method(), req.uri().path()));
        log.len()
    };
    if n > HARD_STOP {
        return not_found().await;
    }
    next.run(req).await
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [("x-error-code", "EntryNotFound")], "stopped answering").into_response()
}

fn info(repo: &str, files: &[&str]) -> Response {
    let siblings: Vec<_> = files.iter().map(|f| json!({"rfilename": f})).collect();
    axum::Json(json!({"_id": format!("id-{repo}"), "id": repo, "author": "hostile", "sha": COMMIT, "private": false,
        "disabled": false, "gated": false, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
        "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z"}))
    .into_response()
}

async fn model_info(uri: Uri) -> Response {
    let repo = uri.path().trim_start_matches("/api/models/").split("/revision/").next().unwrap_or("").to_string();
    info(&repo, &["config.json", "model.safetensors"])
}

async fn dataset_info(uri: Uri) -> Response {
    let repo = uri.path().trim_start_matches("/api/datasets/").split("/revision/").next().unwrap_or("").to_string();
    info(&repo, &["all/validation-0.parquet", "all/validation-x/../../evil.parquet"])
}

async fn whoami_refuses_every_token() -> Response {
    (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "Invalid credentials in Authorization header"}))).into_response()
}

fn body() -> Vec<u8> {
    (0..SIZE).map(|i| (i % 251) as u8).collect()
}

/// A regular file's answer: `SIZE` bytes announced, `etag` and `commit` as given, `bytes` sent on GET.
fn file(method: &Method, etag: &str, commit: &str, status: StatusCode, bytes: Vec<u8>, extra: &[(&'static str, String)]) -> Response {
    let mut resp = if *method == Method::HEAD {
        let mut r = StatusCode::OK.into_response();
        r.headers_mut().insert("content-length", HeaderValue::from(SIZE));
        r
    } else {
        (status, bytes).into_response()
    };
    let h = resp.headers_mut();
    h.insert("etag", HeaderValue::from_str(etag).unwrap());
    h.insert("x-repo-commit", HeaderValue::from_str(commit).unwrap());
    for (k, v) in extra {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    resp
}

async fn good_file(method: Method) -> Response {
    file(&method, &format!("\"{GOOD_ETAG}\""), COMMIT, StatusCode::OK, body(), &[])
}

async fn etag_dotdot(method: Method) -> Response {
    file(&method, "\"../../../victim/.bashrc\"", COMMIT, StatusCode::OK, body(), &[])
}

async fn etag_absolute(State(s): St, method: Method) -> Response {
    let target = s.victim.join(".bashrc").display().to_string();
    file(&method, &format!("\"{target}\""), COMMIT, StatusCode::OK, body(), &[])
}

async fn etag_empty(method: Method) -> Response {
    file(&method, "\"\"", COMMIT, StatusCode::OK, body(), &[])
}

async fn commit_dotdot(method: Method) -> Response {
    file(&method, &format!("\"{GOOD_ETAG}\""), "../../../victim", StatusCode::OK, body(), &[])
}

/// 200 with half the announced bytes (and a Content-Length that says so).
async fn short_body(method: Method) -> Response {
    file(&method, &format!("\"{GOOD_ETAG}\""), COMMIT, StatusCode::OK, body()[..SIZE / 2].to_vec(), &[])
}

/// 200 with twice the announced bytes.
async fn long_body(method: Method) -> Response {
    let mut b = body();
    b.extend(body());
    file(&method, &format!("\"{GOOD_ETAG}\""), COMMIT, StatusCode::OK, b, &[])
}

/// Whatever range is asked for, 206 with the first half of the file.
async fn ignores_range(method: Method, _headers: HeaderMap) -> Response {
    let half = SIZE / 2;
    file(
        &method,
        &format!("\"{GOOD_ETAG}\""),
        COMMIT,
        StatusCode::PARTIAL_CONTENT,
        body()[..half].to_vec(),
        &[("content-range", format!("bytes 0-{}/{SIZE}", half - 1))],
    )
}

/// A test folder with `cache/` and a `victim/` folder beside it holding files a hostile
/// server would like to overwrite or delete.
struct Scene {
    tmp: tempfile::TempDir,
    hub: Hostile,
}

impl Scene {
    fn new() -> Self {
        let tmp = common::tempdir();
        let victim = tmp.path().join("victim");
        std::fs::create_dir_all(&victim).unwrap();
        std::fs::create_dir_all(tmp.path().join("cache")).unwrap();
        for f in [".bashrc", "config.json", "evil.parquet"] {
            std::fs::write(victim.join(f), "precious").unwrap();
        }
        let hub = Hostile::start(&victim);
        Self { tmp, hub }
    }

    fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    fn pull(&self, behaviour: &str) -> HubError {
        let m = ModelSource::Hub { repo: format!("hostile/{behaviour}"), revision: None };
        hub::pull_model(&self.hub.cfg(&self.cache()), "base", &m, false).expect_err("a hostile answer must be refused")
    }

    /// Nothing outside `cache/` was written, replaced or deleted.
    fn assert_nothing_outside_the_cache(&self) {
        let mut top: Vec<String> =
            std::fs::read_dir(self.tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        top.sort();
        assert_eq!(top, ["cache", "victim"], "files appeared beside the cache");
        let victim = self.tmp.path().join("victim");
        let mut names: Vec<String> = std::fs::read_dir(&victim).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, [".bashrc", "config.json", "evil.parquet"]);
        for n in names {
            let p = victim.join(&n);
            assert!(!p.symlink_metadata().unwrap().file_type().is_symlink(), "{n} was replaced by a link");
            assert_eq!(std::fs::read_to_string(&p).unwrap(), "precious", "{n} was overwritten");
        }
        // And inside the cache, every entry is a plain name below the cache folder.
        let mut stack = vec![self.cache()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if let Ok(target) = std::fs::read_link(&p) {
                    let resolved = p.parent().unwrap().join(target);
                    let norm = normalize(&resolved);
                    assert!(norm.starts_with(self.cache()), "{} points outside the cache ({})", p.display(), norm.display());
                } else if p.is_dir() {
                    stack.push(p);
                }
            }
        }
    }
}

/// `a/b/../c` → `a/c`, lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

fn assert_protocol(e: &HubError, wanted: &[&str]) {
    let text = e.to_string();
    assert!(matches!(e, HubError::Protocol { .. }), "a protocol error expected: {e:?}");
    for w in wanted {
        assert!(text.contains(w), "`{w}` missing from: {text}");
    }
}

/// The error names the file it is about (a model pull fetches both files at once).
fn assert_names_a_file(e: &HubError) {
    let text = e.to_string();
    assert!(text.contains("config.json") || text.contains("model.safetensors"), "no file named: {text}");
}

#[test]
fn etags_shaped_like_paths_are_refused_and_write_nothing_outside_the_cache() {
    let scene = Scene::new();
    for behaviour in ["etag-dotdot", "etag-absolute", "etag-empty"] {
        let e = scene.pull(behaviour);
        assert_protocol(&e, &["ETag", "refusing"]);
        assert_names_a_file(&e);
        // One HEAD; no byte downloaded.
        let gets: Vec<String> = scene.hub.requests(&format!("/hostile/{behaviour}/resolve/")).into_iter().filter(|r| r.starts_with("GET")).collect();
        assert!(gets.is_empty(), "{behaviour}: downloaded after a refused etag: {gets:?}");
    }
    scene.assert_nothing_outside_the_cache();
}

#[test]
fn a_commit_shaped_like_a_path_is_refused() {
    let scene = Scene::new();
    let e = scene.pull("commit-dotdot");
    assert_protocol(&e, &["X-Repo-Commit"]);
    assert_names_a_file(&e);
    scene.assert_nothing_outside_the_cache();
}

#[test]
fn a_listing_that_climbs_out_of_the_snapshot_is_refused() {
    let scene = Scene::new();
    let cfg = scene.hub.cfg(&scene.cache());
    let e = hub::pull_dataset(&cfg, "hostile/listing-dotdot", None, &["all/validation-*"]).expect_err("a listing with `..` must be refused");
    assert_protocol(&e, &["all/validation-x/../../evil.parquet", ".."]);
    assert!(scene.hub.requests("/resolve/").is_empty(), "nothing is fetched from a refused listing");
    scene.assert_nothing_outside_the_cache();
}

#[test]
fn bodies_that_do_not_end_at_the_announced_size_end_in_bounded_requests() {
    let scene = Scene::new();
    for (behaviour, wanted) in
        [("short-body", "ended at byte 500 of the announced 1000"), ("long-body", "more than the announced 1000"), ("ignores-range", "bytes")]
    {
        let e = scene.pull(behaviour);
        assert_protocol(&e, &[wanted]);
        assert_names_a_file(&e);
        // Two files are fetched at once, each within its own limit.
        let gets = scene.hub.requests(&format!("/hostile/{behaviour}/resolve/")).into_iter().filter(|r| r.starts_with("GET")).count();
        assert!((1..=2 * TRIES as usize).contains(&gets), "{behaviour}: {gets} downloads for a limit of {TRIES} tries per file");
        // The bad bytes never become a blob the cache would serve.
        let blob = scene.cache().join(format!("models--hostile--{behaviour}/blobs/{GOOD_ETAG}"));
        assert!(!blob.exists(), "{behaviour}: a corrupt blob is in the cache");
        assert!(!scene.cache().join(format!("models--hostile--{behaviour}/snapshots")).exists(), "{behaviour}: a snapshot points at bad bytes");
    }
    // A body longer than announced is refused at once, without retrying.
    assert!(scene.hub.requests("/hostile/long-body/resolve/").iter().filter(|r| r.starts_with("GET")).count() <= 2);
    scene.assert_nothing_outside_the_cache();
}

#[test]
fn push_refuses_file_names_the_hub_would_read_as_paths() {
    let scene = Scene::new();
    let dir = scene.tmp.path().join("cache").join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    std::fs::write(dir.join("weights\\..\\..\\x.safetensors"), "x").unwrap();
    let mut cfg = scene.hub.cfg(&scene.cache());
    cfg.token = Token::new("hf_hostiletesttoken0123456789");
    let e = hub::push_folder(&cfg, &dir, "tester/model", &hub::PushOptions::default()).expect_err("a backslash name must be refused");
    assert!(matches!(e, HubError::Upload { .. }) && e.to_string().contains("backslash"), "{e}");
    assert!(scene.hub.requests("/").is_empty(), "nothing is sent before the names are checked");
}

#[test]
fn push_target_is_checked_before_the_search_starts() {
    let scene = Scene::new();
    let list = scene.tmp.path().join("cache").join("finetunes.txt");
    std::fs::write(&list, "hostile/sibling\n").unwrap();
    let out = scene.tmp.path().join("cache").join("out");
    let o = common::hf_tailor()
        .args(["--base", "hostile/base", "--finetunes"])
        .arg(&list)
        .args(["--push", "tester/tailored", "--out"])
        .arg(&out)
        .env("HF_ENDPOINT", &scene.hub.url)
        .env("HF_TOKEN", "hf_hostiletesttoken0123456789")
        .env("HF_HUB_CACHE", scene.cache())
        .env("HF_TAILOR_RETRY_BASE_MS", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("401") && !stderr.contains("hf_hostiletesttoken"), "{stderr}");
    assert!(!out.exists(), "nothing is written before the push target is known to work");
    assert!(scene.hub.requests("/api/models/").is_empty(), "no model is pulled before the push target is checked");
}
