//! Pull and push against the loopback test Hub, and proof that the test Hub is faithful:
//! the official Python `huggingface_hub` client downloads from it and uploads to it.

use std::path::{Path, PathBuf};
use std::process::Command;

use hf_tailor::checkpoint::Checkpoint;
use hf_tailor::hub::auth::Token;
use hf_tailor::hub::{self, HubConfig, HubError, ModelSource, SourceList};
use hf_tailor::testkit::fixture::{self, TinySpec};

use crate::common;
use crate::testhub::{sha256_hex, TestHub, TOKEN};

/// Run `tests/py/hub_client.py` against `hub` with its own cache under `home`.
fn py(hub: &TestHub, home: &Path, token: Option<&str>, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/hub_client.py");
    let mut cmd = Command::new(common::python());
    cmd.arg(script)
        .args(args)
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN_PATH")
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_DISABLE_XET", "1")
        .env("HF_HOME", home)
        .env("HF_HUB_CACHE", home.join("hub"))
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .env("NO_PROXY", "127.0.0.1");
    match token {
        Some(t) => cmd.env("HF_TOKEN", t),
        None => cmd.env_remove("HF_TOKEN"),
    };
    let out = cmd.output().expect("spawn python");
    assert!(
        out.status.success(),
        "hub_client.py {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Every file of a folder (recursively), as (repo path, bytes).
fn folder_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn seed_folder(hub: &TestHub, repo: &str, dir: &Path, extra: &[(&str, Vec<u8>)]) -> String {
    let mut files = folder_files(dir);
    files.extend(extra.iter().map(|(p, b)| (p.to_string(), b.clone())));
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
    hub.seed("models", repo, false, &refs)
}

fn cfg(hub: &TestHub, cache: &Path) -> HubConfig {
    HubConfig::new(&hub.url, Token::new(TOKEN), cache.to_path_buf())
}

const BASE_README: &str = "---\nlicense: llama2\nlanguage: en\n---\n# Tiny base\n";

/// A fixture family on the test Hub: `org/base` (with a README and a stray .bin the job must
/// not fetch), `org/sib1`, and `org/sib2` whose `tuned` branch differs from `main`.
struct Family {
    hub: TestHub,
    tmp: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    tuned_commit: String,
}

fn family() -> Family {
    let hub = TestHub::start();
    let tmp = common::tempdir();
    let (base, sibs, _) = fixture::write_family(&tmp.path().join("src"), &TinySpec::llama(), 2, 7).unwrap();
    seed_folder(&hub, "org/base", &base, &[("README.md", BASE_README.as_bytes().to_vec()), ("pytorch_model.bin", vec![1u8; 4096])]);
    seed_folder(&hub, "org/sib1", &sibs[0], &[]);
    // sib2: `main` holds a different model, `tuned` the real sibling.
    seed_folder(&hub, "org/sib2", &base, &[]);
    let tuned_commit = {
        // Commit the sibling onto sib2 as its `tuned` branch.
        let files = folder_files(&sibs[1]);
        let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, b)| (p.as_str(), b.clone())).collect();
        let main = hub.head("models", "org/sib2", "main").unwrap();
        let c = hub.seed("models", "org/sib2", false, &refs);
        hub.branch("models", "org/sib2", "tuned", &c);
        hub.branch("models", "org/sib2", "main", &main);
        c
    };
    let mut dirs = vec![base];
    dirs.extend(sibs);
    Family { hub, tmp, dirs, tuned_commit }
}

#[test]
fn python_client_downloads_from_test_hub() {
    let hub = TestHub::start();
    let tmp = common::tempdir();
    let weights: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let commit = hub.seed(
        "models",
        "org/tiny",
        false,
        &[("config.json", b"{\"model_type\": \"llama\"}".to_vec()), ("model.safetensors", weights.clone()), ("sub/notes.txt", b"hi".to_vec())],
    );
    let v = py(&hub, tmp.path(), None, &["download", "org/tiny", "main", "config.json", "model.safetensors"]);
    assert_eq!(v["files"]["model.safetensors"], sha256_hex(&weights));
    assert_eq!(v["files"]["config.json"], sha256_hex(b"{\"model_type\": \"llama\"}"));
    assert_eq!(v["commit"], commit);
    assert_eq!(v["snapshot"]["sub/notes.txt"], sha256_hex(b"hi"));
    // The LFS file went through the redirect to storage, not through `resolve`'s body.
    assert!(hub.log().iter().any(|l| l.starts_with("GET /lfs-store/")), "{:?}", hub.log());
    let e = py(&hub, tmp.path(), None, &["errors", "org/tiny"]);
    assert_eq!(
        e,
        serde_json::json!({"missing_repo": "RepositoryNotFoundError", "missing_revision": "RevisionNotFoundError", "missing_file": "EntryNotFoundError", "bad_token": 401})
    );
}

#[test]
fn python_client_uploads_to_test_hub_with_lfs_and_multipart() {
    let hub = TestHub::start();
    hub.set_thresholds(1024, 100_000, 40_000);
    let tmp = common::tempdir();
    let folder = tmp.path().join("up");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    let big: Vec<u8> = (0..250_000u32).map(|i| (i * 13 % 256) as u8).collect();
    let medium: Vec<u8> = (0..5_000u32).map(|i| (i % 256) as u8).collect();
    std::fs::write(folder.join("model.safetensors"), &big).unwrap();
    std::fs::write(folder.join("sub/medium.txt"), &medium).unwrap();
    std::fs::write(folder.join("config.json"), b"{}").unwrap();
    std::fs::write(folder.join("README.md"), "---\nlicense: mit\n---\nhello\n").unwrap();
    let v = py(&hub, tmp.path(), Some(TOKEN), &["upload", "tester/pyup", folder.to_str().unwrap()]);
    assert_eq!(v["private"], true);
    assert_eq!(v["commit"], hub.head("models", "tester/pyup", "main").unwrap());
    for (path, bytes) in [("model.safetensors", &big), ("sub/medium.txt", &medium)] {
        assert_eq!(hub.file("models", "tester/pyup", "main", path).as_ref(), Some(bytes), "{path}");
        assert!(matches!(hub.entry("models", "tester/pyup", "main", path), Some(crate::testhub::Entry::Lfs { .. })), "{path} went by LFS");
    }
    assert!(matches!(hub.entry("models", "tester/pyup", "main", "config.json"), Some(crate::testhub::Entry::Regular(_))));
    let st = hub.stats();
    assert_eq!((st.part_uploads, st.completions, st.basic_uploads), (7, 1, 1), "{:?}", hub.log());
}

#[test]
fn pull_fetches_only_what_the_job_needs_and_pins_commits() {
    let f = family();
    let cache = f.tmp.path().join("cache");
    let cfg = cfg(&f.hub, &cache);
    let list = f.tmp.path().join("finetunes.txt");
    std::fs::write(&list, "# siblings\norg/sib1\n\norg/sib2@tuned  # the tuned branch\n").unwrap();
    let finetunes = hub::parse_finetunes_file(&list).unwrap();
    let pulled = hub::pull_family(&cfg, &ModelSource::parse("org/base").unwrap(), &finetunes).unwrap();

    assert_eq!(pulled.base.source.revision().map(str::to_string), f.hub.head("models", "org/base", "main"));
    assert_eq!(pulled.siblings[1].source.revision(), Some(f.tuned_commit.as_str()));
    assert_eq!(pulled.siblings.iter().map(|s| s.source.name.as_str()).collect::<Vec<_>>(), ["sib1", "sib2"]);
    for (m, dir) in std::iter::once(&pulled.base).chain(&pulled.siblings).zip(&f.dirs) {
        let mut expected: Vec<String> = folder_files(dir).into_iter().map(|(p, _)| p).collect();
        expected.retain(|p| p != "README.md");
        assert_eq!(m.source.files.keys().cloned().collect::<Vec<_>>(), expected, "{}", m.source.name);
        for (file, sha) in &m.source.files {
            assert_eq!(sha, &sha256_hex(&std::fs::read(dir.join(file)).unwrap()), "{file}");
            assert_eq!(std::fs::read(m.dir.join(file)).unwrap(), std::fs::read(dir.join(file)).unwrap());
        }
        Checkpoint::open(&m.dir).unwrap();
    }
    // The stray weights file was never fetched; the base README came for its license.
    assert!(!f.hub.log().iter().any(|l| l.contains("pytorch_model.bin")), "{:?}", f.hub.log());
    let readme = std::fs::read_to_string(pulled.base.readme.as_ref().unwrap()).unwrap();
    assert_eq!(hf_tailor::card::license_from_readme(&readme).unwrap().id, "llama2");
    // The cache layout is Python's: huggingface_hub finds the files without the network.
    let home = f.tmp.path().to_path_buf();
    std::fs::rename(&cache, home.join("hub")).unwrap();
    let v = py(&f.hub, &home, None, &["cached", "org/base", "config.json"]);
    assert_eq!(v["sha"], pulled.base.source.files["config.json"].as_str());
    std::fs::rename(home.join("hub"), &cache).unwrap();
    // A second pull is served from the cache: no byte is downloaded again.
    f.hub.clear_log();
    let again = hub::pull_family(&cfg, &ModelSource::parse("org/base").unwrap(), &finetunes).unwrap();
    assert_eq!(again.base.source, pulled.base.source);
    assert!(!f.hub.log().iter().any(|l| l.starts_with("GET /lfs-store") || l.contains("/resolve/")), "{:?}", f.hub.log());
    // Offline (no server at all): the same sources from the cache; locate finds them.
    let mut offline = HubConfig::new("http://127.0.0.1:9", None, cache.clone());
    offline.offline = true;
    let off = hub::pull_family(&offline, &ModelSource::parse("org/base").unwrap(), &finetunes).unwrap();
    assert_eq!(SourceList::from(&off), SourceList::from(&pulled));
    assert_eq!(hub::locate(&pulled.siblings[1].source, &offline).unwrap(), pulled.siblings[1].dir);
    // A recorded sha256 that no longer matches is an integrity error, not a silent swap.
    let mut tampered = pulled.base.source.clone();
    tampered.files.insert("config.json".into(), "0".repeat(64));
    assert!(matches!(hub::locate(&tampered, &offline), Err(HubError::Integrity { .. })));
    // A local folder is its own location.
    let local = hub::pull_model(&cfg, "loc", &ModelSource::Local(f.dirs[0].clone()), false).unwrap();
    assert_eq!(local.source.revision(), None);
    assert_eq!(hub::locate(&local.source, &offline).unwrap(), f.dirs[0].canonicalize().unwrap());
    assert_eq!(local.source.files, pulled.base.source.files);
}

#[test]
fn pull_resumes_an_interrupted_download() {
    let hub = TestHub::start();
    let tmp = common::tempdir();
    let weights: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let sha = sha256_hex(&weights);
    let files = [("config.json", serde_json::to_vec(&fixture::config_json(&TinySpec::llama())).unwrap()), ("model.safetensors", weights.clone())];
    hub.seed("models", "org/a", false, &files);
    hub.seed("models", "org/b", false, &files);
    // Within a run: the connection drops after 50 kB; the download continues from there.
    hub.cut_downloads_after(Some(50_000));
    let cache = tmp.path().join("cache");
    let m = hub::pull_model(&cfg(&hub, &cache), "a", &ModelSource::parse("org/a").unwrap(), false).unwrap();
    assert_eq!(std::fs::read(m.dir.join("model.safetensors")).unwrap(), weights);
    assert_eq!(m.source.files["model.safetensors"], sha);
    assert!(hub.stats().range_requests.contains(&"bytes=50000-".to_string()), "{:?}", hub.log());
    // Across runs: a previous run left 120 kB in `<blob>.incomplete` (the name Python uses).
    hub.cut_downloads_after(None);
    hub.clear_log();
    let blobs = cache.join("models--org--b/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(format!("{sha}.incomplete")), &weights[..120_000]).unwrap();
    let m = hub::pull_model(&cfg(&hub, &cache), "b", &ModelSource::parse("org/b").unwrap(), false).unwrap();
    assert_eq!(std::fs::read(m.dir.join("model.safetensors")).unwrap(), weights);
    let st = hub.stats();
    assert_eq!(st.range_requests, vec!["bytes=120000-".to_string()], "{:?}", hub.log());
    assert!(!blobs.join(format!("{sha}.incomplete")).exists());
    // A corrupt partial file cannot sneak into the cache: the sha256 check catches it.
    let mut bad = weights[..120_000].to_vec();
    bad[5] ^= 0xff;
    std::fs::write(cache.join("models--org--a/blobs").join(format!("{sha}.incomplete")), &bad).unwrap();
    std::fs::remove_file(cache.join("models--org--a/blobs").join(&sha)).unwrap();
    std::fs::remove_dir_all(cache.join("models--org--a/snapshots")).unwrap();
    let e = hub::pull_model(&cfg(&hub, &cache), "a", &ModelSource::parse("org/a").unwrap(), false).unwrap_err();
    assert!(matches!(e, HubError::Integrity { .. }), "{e}");
    assert!(!cache.join("models--org--a/blobs").join(&sha).exists());
}

#[test]
fn pull_errors_are_typed_and_never_show_the_token() {
    let hub = TestHub::start();
    let tmp = common::tempdir();
    let config = || serde_json::to_vec(&fixture::config_json(&TinySpec::llama())).unwrap();
    hub.seed("models", "org/a", false, &[("config.json", config()), ("model.safetensors", vec![0; 64])]);
    hub.seed("models", "org/private", true, &[("config.json", config()), ("model.safetensors", vec![0; 64])]);
    let cache = tmp.path().join("cache");
    let c = cfg(&hub, &cache);
    let pull = |c: &HubConfig, s: &str| hub::pull_model(c, "m", &ModelSource::parse(s).unwrap(), false).unwrap_err();
    assert!(matches!(pull(&c, "org/missing"), HubError::RepoNotFound { .. }));
    assert!(matches!(pull(&c, "org/a@no-such-branch"), HubError::RevisionNotFound { ref revision, .. } if revision == "no-such-branch"));
    let bad = HubConfig::new(&hub.url, Token::new("hf_wrongTOKENvalue"), cache.clone());
    let e = pull(&bad, "org/a");
    assert!(matches!(e, HubError::Unauthorized { .. }), "{e}");
    assert!(!format!("{e} {e:?}").contains("hf_wrongTOKENvalue"));
    // A private repo without a token looks missing; with it, it pulls.
    let anon = HubConfig::new(&hub.url, None, cache.clone());
    assert!(matches!(pull(&anon, "org/private"), HubError::RepoNotFound { .. }));
    hub::pull_model(&c, "p", &ModelSource::parse("org/private").unwrap(), false).unwrap();
    // PyTorch `.bin` weights are pulled when a repo has no safetensors (read later, see tests/it/torch_bin.rs).
    hub.seed("models", "org/binonly", false, &[("config.json", config()), ("pytorch_model.bin", vec![0; 64])]);
    let bin = hub::pull_model(&c, "b", &ModelSource::parse("org/binonly").unwrap(), false).unwrap();
    assert!(bin.dir.join("pytorch_model.bin").is_file());
    // No weights in a supported format.
    hub.seed("models", "org/ggufonly", false, &[("config.json", config()), ("model.gguf", vec![0; 64])]);
    assert!(matches!(pull(&c, "org/ggufonly"), HubError::NoWeights { .. }));
    // A config hf-tailor cannot work with (rope scaling the evaluator does not compute) is
    // refused with the config, before a weight byte is asked for.
    let mut yarn = fixture::config_json(&TinySpec::llama());
    yarn["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768});
    hub.seed("models", "org/yarn", false, &[("config.json", serde_json::to_vec(&yarn).unwrap()), ("model.safetensors", vec![0; 64])]);
    hub.clear_log();
    let e = pull(&c, "org/yarn");
    assert!(matches!(e, HubError::Config(_)) && e.to_string().contains("org/yarn: config.json: rope_scaling type `yarn` is not supported"), "{e}");
    let asked: Vec<String> = hub.log().into_iter().filter(|l| l.contains("model.safetensors")).collect();
    assert!(asked.is_empty(), "weights asked for a refused config: {asked:?}");
    let e = hub::pull_family(&c, &ModelSource::parse("org/a").unwrap(), &[ModelSource::parse("ORG/a@main").unwrap()]).unwrap_err();
    assert!(matches!(e, HubError::BaseAmongFinetunes { .. }), "{e}");
    // Offline with nothing cached.
    let mut off = HubConfig::new(&hub.url, None, tmp.path().join("empty"));
    off.offline = true;
    assert!(matches!(pull(&off, "org/a"), HubError::NotCached { .. }));
    // The CLI: one line naming the line of a bad list entry, non-zero exit.
    std::fs::write(tmp.path().join("list.txt"), "org/a\norg/b c\n").unwrap();
    let out = common::hf_tailor()
        .args(["pull", "--base", "org/a", "--finetunes"])
        .arg(tmp.path().join("list.txt"))
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HUB_CACHE", &cache)
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("list.txt:2:"), "{err}");
}

#[test]
fn pull_dataset_fetches_matching_files() {
    let hub = TestHub::start();
    let tmp = common::tempdir();
    let test_file: Vec<u8> = b"PAR1 pretend parquet test".to_vec();
    hub.seed(
        "datasets",
        "cais/mmlu",
        false,
        &[
            ("all/test-00000-of-00001.parquet", test_file.clone()),
            ("all/dev-00000-of-00001.parquet", b"PAR1 dev".to_vec()),
            ("README.md", b"# MMLU".to_vec()),
        ],
    );
    let cache = tmp.path().join("cache");
    let paths = hub::pull_dataset(&cfg(&hub, &cache), "cais/mmlu", None, &["all/test-*.parquet"]).unwrap();
    assert_eq!(paths.len(), 1);
    assert!(paths[0].starts_with(cache.join("datasets--cais--mmlu/snapshots")), "{}", paths[0].display());
    assert_eq!(std::fs::read(&paths[0]).unwrap(), test_file);
    assert!(!hub.log().iter().any(|l| l.contains("dev-00000")), "{:?}", hub.log());
    let mut off = HubConfig::new("http://127.0.0.1:9", None, cache);
    off.offline = true;
    assert_eq!(hub::pull_dataset(&off, "cais/mmlu", None, &["all/test-*.parquet"]).unwrap(), paths);
    assert!(hub::pull_dataset(&cfg(&hub, &tmp.path().join("c2")), "cais/mmlu", None, &["nothing/*"]).is_err());
}

#[test]
fn pull_cli_writes_the_source_list() {
    let f = family();
    let cache = f.tmp.path().join("cache");
    std::fs::write(f.tmp.path().join("list.txt"), "org/sib1\n").unwrap();
    let out_file = f.tmp.path().join("sources.yaml");
    let out = common::hf_tailor()
        .args(["pull", "--base", "org/base", "--finetunes"])
        .arg(f.tmp.path().join("list.txt"))
        .arg("--out")
        .arg(&out_file)
        .env("HF_ENDPOINT", &f.hub.url)
        .env("HF_HUB_CACHE", &cache)
        .env("HF_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = SourceList::load(&out_file).unwrap();
    assert_eq!(list.base.source.repo_id(), Some("org/base"));
    assert_eq!(list.base.revision().map(str::to_string), f.hub.head("models", "org/base", "main"));
    assert_eq!(list.siblings.len(), 1);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(TOKEN));
}

fn push_opts(private: bool) -> hub::PushOptions {
    hub::PushOptions { private, max_attempts: 2, ..hub::PushOptions::default() }
}

/// A built-model-like folder: a tiny checkpoint in one file, its tokenizer and a card.
fn model_folder(root: &Path) -> PathBuf {
    let dir = root.join("tailored");
    let spec = TinySpec { shard_bytes: None, ..TinySpec::llama() };
    fixture::write_model(&dir, &spec, &fixture::random_weights(&spec, 3)).unwrap();
    std::fs::write(dir.join("README.md"), "---\nlicense: llama2\nbase_model_relation: merge\n---\n# tailored\n").unwrap();
    std::fs::write(dir.join(".hidden-temp"), "never uploaded").unwrap();
    dir
}

#[test]
fn push_uploads_lfs_multipart_and_one_commit_that_python_reads_back() {
    let hub = TestHub::start();
    hub.set_thresholds(4096, 100_000, 40_000);
    let tmp = common::tempdir();
    let dir = model_folder(tmp.path());
    let weights = std::fs::metadata(dir.join("model.safetensors")).unwrap().len();
    assert!(weights > 100_000, "fixture must be big enough for multipart ({weights} bytes)");
    let c = cfg(&hub, &tmp.path().join("cache"));
    let report = hub::push_folder(&c, &dir, "tester/tailored", &push_opts(true)).unwrap();
    assert_eq!(hub.is_private("models", "tester/tailored"), Some(true));
    assert_eq!(report.commit, hub.head("models", "tester/tailored", "main"));
    let local = folder_files(&dir);
    let local: Vec<_> = local.into_iter().filter(|(p, _)| !p.starts_with('.')).collect();
    assert_eq!(report.files, local.len());
    for (path, bytes) in &local {
        assert_eq!(hub.file("models", "tester/tailored", "main", path).as_ref(), Some(bytes), "{path}");
    }
    assert!(hub.file("models", "tester/tailored", "main", ".hidden-temp").is_none());
    assert!(matches!(hub.entry("models", "tester/tailored", "main", "model.safetensors"), Some(crate::testhub::Entry::Lfs { .. })));
    assert!(matches!(hub.entry("models", "tester/tailored", "main", "config.json"), Some(crate::testhub::Entry::Regular(_))));
    let st = hub.stats();
    assert_eq!(st.part_uploads as u64, weights.div_ceil(40_000), "{:?}", hub.log());
    assert_eq!(st.completions, 1);
    assert_eq!(report.lfs_uploaded, report.lfs_files);
    assert_eq!(report.lfs_uploaded, st.basic_uploads + st.completions);
    // What hf-tailor pushed, the official client downloads intact.
    let v = py(&hub, tmp.path(), Some(TOKEN), &["download", "tester/tailored", "main", "model.safetensors", "config.json"]);
    assert_eq!(v["files"]["model.safetensors"], sha256_hex(&std::fs::read(dir.join("model.safetensors")).unwrap()));
    // Pushing the same folder again changes nothing and sends no LFS bytes.
    hub.clear_log();
    let again = hub::push_folder(&c, &dir, "tester/tailored", &push_opts(true)).unwrap();
    assert_eq!(again.unchanged, report.lfs_files);
    assert_eq!(again.lfs_uploaded, 0);
    assert_eq!(again.bytes_uploaded, 0);
    let st = hub.stats();
    assert_eq!((st.part_uploads, st.basic_uploads), (0, 0), "{:?}", hub.log());
}

#[test]
fn interrupted_push_resumes_without_resending_stored_objects() {
    let hub = TestHub::start();
    hub.set_thresholds(4096, 100_000, 40_000);
    let tmp = common::tempdir();
    let dir = tmp.path().join("two");
    std::fs::create_dir_all(&dir).unwrap();
    let a: Vec<u8> = (0..250_000u32).map(|i| (i * 3 % 256) as u8).collect();
    let b: Vec<u8> = (0..250_000u32).map(|i| (i * 5 % 251) as u8).collect();
    std::fs::write(dir.join("a.safetensors"), &a).unwrap();
    std::fs::write(dir.join("b.safetensors"), &b).unwrap();
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    let c = cfg(&hub, &tmp.path().join("cache"));
    // Storage fails after 9 parts: a's 7 parts and completion go through, b breaks mid-way.
    hub.fail_parts_after(Some(9));
    let e = hub::push_folder(&c, &dir, "tester/two", &push_opts(false)).unwrap_err();
    assert!(matches!(e, HubError::Upload { ref path, .. } if path == "b.safetensors"), "{e}");
    assert!(hub.has_object(&sha256_hex(&a)) && !hub.has_object(&sha256_hex(&b)));
    // Nothing was committed: the branch holds only the repo's initial commit.
    assert!(hub.file("models", "tester/two", "main", "a.safetensors").is_none());
    // The resumed push sends b only.
    hub.fail_parts_after(None);
    hub.clear_log();
    let report = hub::push_folder(&c, &dir, "tester/two", &push_opts(false)).unwrap();
    assert_eq!((report.lfs_uploaded, report.lfs_already_present), (1, 1), "{report:?}");
    let st = hub.stats();
    assert_eq!((st.part_uploads, st.completions), (7, 1), "{:?}", hub.log());
    assert_eq!(hub.file("models", "tester/two", "main", "a.safetensors"), Some(a));
    assert_eq!(hub.file("models", "tester/two", "main", "b.safetensors"), Some(b));
}

#[test]
fn push_errors_are_typed_and_never_show_the_token() {
    let hub = TestHub::start();
    let tmp = common::tempdir();
    let dir = model_folder(tmp.path());
    let cache = tmp.path().join("cache");
    let wrong = "hf_wrongPUSHtoken987";
    let mut errors = vec![];
    let e = hub::push_folder(&HubConfig::new(&hub.url, Token::new(wrong), cache.clone()), &dir, "tester/x", &push_opts(false)).unwrap_err();
    assert!(matches!(e, HubError::Unauthorized { .. }), "{e}");
    errors.push(e);
    let e = hub::push_folder(&HubConfig::new(&hub.url, None, cache.clone()), &dir, "tester/x", &push_opts(false)).unwrap_err();
    assert!(matches!(e, HubError::NoToken { .. }), "{e}");
    errors.push(e);
    let c = cfg(&hub, &cache);
    let e = hub::push_folder(&c, &dir, "someone-else/x", &push_opts(false)).unwrap_err();
    assert!(matches!(e, HubError::Forbidden { .. }), "{e}");
    errors.push(e);
    let e = hub::push_folder(&c, &dir, "tester/x", &hub::PushOptions { revision: "no-such-branch".into(), ..push_opts(false) }).unwrap_err();
    assert!(matches!(e, HubError::RevisionNotFound { .. }), "{e}");
    errors.push(e);
    let e = hub::push_folder(&c, &dir, "no-owner", &push_opts(false)).unwrap_err();
    assert!(matches!(e, HubError::PushTarget { .. }), "{e}");
    errors.push(e);
    // Every error, in its message, its Debug form and its whole source chain.
    for e in &errors {
        let mut texts = vec![e.to_string(), format!("{e:?}")];
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            texts.push(s.to_string());
            source = s.source();
        }
        for t in texts {
            assert!(!t.contains(TOKEN) && !t.contains(wrong), "token in an error: {t}");
        }
    }
}

#[test]
fn push_cli_reads_the_token_file_and_never_prints_it() {
    let hub = TestHub::start();
    let tmp = common::tempdir();
    let dir = model_folder(tmp.path());
    let home = tmp.path().join("hf-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("token"), format!("{TOKEN}\n")).unwrap();
    let out = common::hf_tailor()
        .args(["push"])
        .arg(&dir)
        .args(["tester/from-cli", "--private", "--message", "first upload"])
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_HOME", &home)
        .env_remove("HF_TOKEN")
        .env_remove("HF_TOKEN_PATH")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("pushed") && stdout.contains("tester/from-cli"), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
    assert!(hub.file("models", "tester/from-cli", "main", "config.json").is_some());
    // A bad token: one line, non-zero exit, no token in it.
    let out = common::hf_tailor()
        .args(["push"])
        .arg(&dir)
        .arg("tester/from-cli")
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_TOKEN", "hf_badCLItoken")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("401") && !stderr.contains("hf_badCLItoken"), "{stderr}");
}

/// The stages the pipeline chains, against the test Hub: pull a fixture family, build a
/// recipe's model from the cache, render its card, push it. The card rendered here is the
/// example kept in `model-cards/fixture-llama/` (HF_TAILOR_UPDATE_EXAMPLES=1 rewrites it).
#[test]
fn pull_build_card_push_round_trip_renders_the_example_card() {
    use hf_tailor::recipe::{EdgePolicy, LayerRule, Merge, Recipe, Rule};
    let f = family();
    let cache = f.tmp.path().join("cache");
    let c = cfg(&f.hub, &cache);
    let finetunes = hub::parse_finetunes("org/sib1\norg/sib2@tuned\n", "list").unwrap();
    let pulled = hub::pull_family(&c, &ModelSource::parse("org/base").unwrap(), &finetunes).unwrap();
    let (base, siblings) = pulled.sources();
    let layers = vec![
        LayerRule { from: 0, rule: Rule::Take("base".into()) },
        LayerRule { from: 1, rule: Rule::Take("sib1".into()) },
        LayerRule { from: 2, rule: Rule::Merge(Merge::TaskArithmetic { models: vec!["sib1".into(), "sib2".into()], lambda: 0.7 }) },
    ];
    let recipe = Recipe::new("llama", 4, base, siblings, layers, EdgePolicy::Base);
    let family = hf_tailor::checkpoint::Family::open_for_recipe(&recipe, |s| {
        hub::locate(s, &c).map_err(|e| hf_tailor::checkpoint::CheckpointError::NotAModel { path: s.source.to_string(), why: e.to_string() })
    })
    .unwrap();
    let out = f.tmp.path().join("out");
    let report = hf_tailor::writer::build(&family, &recipe, &out, &hf_tailor::writer::BuildOptions::default()).unwrap();
    let layout = hf_tailor::layout::Layout::for_family(&family, &recipe).unwrap();
    let before = hf_tailor::layout::Layout::of_base(&family.base.config, 4, layout.dtype).total_params();
    let mut input = hf_tailor::card::CardInput::new(recipe.clone(), "tester/fixture-llama-tailored", before, layout.total_params());
    input.repo_id = Some("tester/fixture-llama-tailored".into());
    assert_eq!((input.params_before, input.params_after), (report.params_before, report.params_after));
    let readme = std::fs::read_to_string(pulled.base.readme.as_ref().unwrap()).unwrap();
    input.license = hf_tailor::card::license_from_readme(&readme);
    input.mergekit_yaml = Some(hf_tailor::mergekit::export(&recipe, Some(family.base.config.tie_word_embeddings)).unwrap());
    let card = hf_tailor::card::write(&out, &input).unwrap();
    assert!(card.readme.contains("license: llama2"));
    let pushed = hub::push_folder(&c, &out, "tester/fixture-llama-tailored", &push_opts(false)).unwrap();
    assert_eq!(f.hub.file("models", "tester/fixture-llama-tailored", "main", "README.md"), Some(card.readme.clone().into_bytes()));
    assert_eq!(f.hub.file("models", "tester/fixture-llama-tailored", "main", "lineage.svg"), Some(card.lineage_svg.clone().into_bytes()));
    assert_eq!(pushed.files, report.files.len() + 2, "{:?} vs {:?}", pushed, report.files);

    // The written folder carries its recipe and mergekit config: the stages downstream take
    // them as they are. `build` resolves the recipe's Hub sources through the cache exactly
    // as `search` does (offline here) and rebuilds the same tensors; `build` also takes the
    // mergekit YAML directly, and `eval --model` takes a Hub id.
    assert!(report.files.iter().any(|f| f == "tailor.yaml") && report.files.iter().any(|f| f == "mergekit_config.yml"), "{:?}", report.files);
    let shipped = hf_tailor::recipe::Recipe::load(&out.join("tailor.yaml")).unwrap();
    assert_eq!(shipped, recipe.published());
    let cli = |args: &[&str]| {
        let o =
            common::hf_tailor().args(args).env("HF_HUB_CACHE", &cache).env("HF_HUB_OFFLINE", "1").env("HF_ENDPOINT", &f.hub.url).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let shards = |dir: &Path| -> Vec<(String, Vec<u8>)> { folder_files(dir).into_iter().filter(|(p, _)| p.ends_with(".safetensors")).collect() };
    for (i, source) in ["tailor.yaml", "mergekit_config.yml"].iter().enumerate() {
        let again = f.tmp.path().join(format!("rebuilt{i}"));
        cli(&["build", "--recipe", out.join(source).to_str().unwrap(), "--out", again.to_str().unwrap()]);
        assert_eq!(shards(&again), shards(&out), "rebuilt from {source}");
    }
    let tasks = f.tmp.path().join("items.jsonl");
    std::fs::write(&tasks, "{\"context\": \"ab\", \"choices\": [\"c\", \"d\"], \"label\": 0}\n").unwrap();
    let scored = cli(&["eval", "--model", "org/base", "--tasks", tasks.to_str().unwrap(), "--json"]);
    assert!(scored.contains("acc"), "{scored}");

    // The facts the example shows, computed here from the recipe and the config.
    let md = &card.readme;
    let (src_layers, kept) = (recipe.source_layers, recipe.layers.len());
    let removed: Vec<usize> = (0..src_layers).filter(|l| !recipe.layers.iter().any(|r| r.from == *l)).collect();
    let row = format!("| Decoder layers | {src_layers} | {kept} | {} ({:.1} %) |", removed.len(), 100.0 * removed.len() as f64 / src_layers as f64);
    assert!(md.contains(&row), "{row} missing:\n{md}");
    let (before, after) = (family.base.config.total_params(src_layers), family.base.config.total_params(kept));
    assert_eq!((before, after), (report.params_before, report.params_after));
    let row = format!(
        "| Parameters | {} | {} | {:.1} % |",
        hf_tailor::card::human_count(before),
        hf_tailor::card::human_count(after),
        100.0 * (before - after) as f64 / before as f64
    );
    assert!(md.contains(&row), "{row} missing:\n{md}");
    let sources: Vec<&hf_tailor::recipe::SourceModel> = std::iter::once(&recipe.base).chain(&recipe.siblings).collect();
    let link = |name: &str| {
        let s = sources.iter().find(|s| s.name == name).unwrap();
        let (repo, rev) = (s.source.repo_id().unwrap(), s.revision().unwrap());
        format!("[{repo}@{}](https://huggingface.co/{repo}/tree/{rev})", &rev[..8])
    };
    for (o, l) in recipe.layers.iter().enumerate() {
        let line = md.lines().find(|x| x.starts_with(&format!("| {o} | "))).unwrap_or_else(|| panic!("no lineage row {o}:\n{md}"));
        let (method, strength) = match &l.rule {
            Rule::Take(m) => {
                assert!(line.contains(&link(m)), "{line}");
                ("take".to_string(), String::new())
            }
            Rule::Merge(m) => {
                for name in m.models() {
                    assert!(line.contains(&link(name)), "{line}");
                }
                assert!(line.contains(&format!("on base {}", link("base"))), "{line}");
                (m.method_name().to_string(), m.strength().unwrap().to_string())
            }
        };
        assert!(line.ends_with(&format!("| {} | {method} | {strength} |", l.from)), "{line}");
    }
    assert_eq!(
        md.lines().filter(|x| x.starts_with("| ") && x.split('|').nth(1).is_some_and(|c| c.trim().parse::<usize>().is_ok())).count(),
        kept,
        "one lineage row per output layer"
    );
    let removed_list = removed.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ");
    assert!(md.contains(&format!("Removed source layers: {removed_list}.")), "{md}");
    // The picture: background, one stripe per model of each tailored layer, one legend swatch
    // per model, the removed swatch, and an outline per source and per tailored layer.
    let stripes: usize = recipe.layers.iter().map(|l| l.rule.models().len()).sum();
    let rects = 1 + stripes + sources.len() + usize::from(!removed.is_empty()) + src_layers + kept;
    assert_eq!(card.lineage_svg.matches("<rect").count(), rects, "{}", card.lineage_svg);

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("model-cards/fixture-llama");
    if std::env::var_os("HF_TAILOR_UPDATE_EXAMPLES").is_some() {
        std::fs::create_dir_all(&examples).unwrap();
        std::fs::write(examples.join("README.md"), &card.readme).unwrap();
        std::fs::write(examples.join("lineage.svg"), &card.lineage_svg).unwrap();
    }
    // Hashes and commit ids follow the fixture's bytes; everything else must match the example.
    let stale = "model-cards/fixture-llama is stale: rerun this test with HF_TAILOR_UPDATE_EXAMPLES=1";
    assert_eq!(mask_hex(&std::fs::read_to_string(examples.join("README.md")).expect(stale)), mask_hex(&card.readme), "{stale}");
    assert_eq!(std::fs::read_to_string(examples.join("lineage.svg")).expect(stale), card.lineage_svg, "{stale}");
}

/// Replace every run of 8+ hex digits with `#`.
fn mask_hex(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for ch in text.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_hexdigit() {
            run.push(ch);
            continue;
        }
        out.push_str(if run.len() >= 8 { "#" } else { &run });
        run.clear();
        out.push(ch);
    }
    out.pop();
    out
}

/// The command users type, against the test Hub: pull base + siblings (one at a branch),
/// search, build, card, push — and the pushed repo is a complete checkpoint whose card
/// names the Hub sources, with the token nowhere in the output.
#[test]
fn root_command_pulls_tailors_and_pushes_through_the_hub() {
    let f = family();
    let root = f.tmp.path();
    std::fs::write(root.join("list.txt"), "# siblings\norg/sib1\norg/sib2@tuned\n").unwrap();
    let items: Vec<String> = (0..12)
        .map(|i| {
            let a = (b'a' + i as u8) as char;
            let b = (b'a' + (i as u8 + 3) % 26) as char;
            serde_json::json!({"context": format!("{a}{b}{a}{b}{a}"), "choices": [b.to_string(), a.to_string()], "label": 0}).to_string()
        })
        .collect();
    std::fs::write(root.join("task.jsonl"), items.join("\n") + "\n").unwrap();
    let out = common::hf_tailor()
        .current_dir(root)
        .args(["--base", "org/base", "--finetunes", "list.txt", "--tasks", "task.jsonl", "--keep-layers", "3"])
        .args(["--trials", "3", "--out", "job", "--push", "tester/tailored", "--private", "--gguf", "q8_0", "--json"])
        .env("HF_ENDPOINT", &f.hub.url)
        .env("HF_HUB_CACHE", root.join("cache"))
        .env("HF_HOME", root.join("home"))
        .env("HF_TOKEN", TOKEN)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "job failed:\n{stderr}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "the token leaked");
    assert_eq!(f.hub.is_private("models", "tester/tailored"), Some(true));
    let files =
        ["config.json", "README.md", "lineage.svg", "model.safetensors.index.json", "tokenizer.json", "generation_config.json", "tailored-Q8_0.gguf"];
    for file in files {
        assert!(f.hub.file("models", "tester/tailored", "main", file).is_some(), "{file} was not pushed");
    }
    let config: serde_json::Value = serde_json::from_slice(&f.hub.file("models", "tester/tailored", "main", "config.json").unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 3);
    let card = String::from_utf8(f.hub.file("models", "tester/tailored", "main", "README.md").unwrap()).unwrap();
    let front = card.split("\n---\n").next().unwrap();
    for id in ["org/base", "org/sib1", "org/sib2"] {
        assert!(front.contains(id), "{id} missing from base_model:\n{front}");
    }
    assert!(front.contains("license: llama2"), "license not inherited:\n{front}");
    // --gguf: the file is named after the repo, and the card says how to run it.
    assert!(card.contains("ollama run hf.co/tester/tailored:Q8_0"), "{card}");
    // The sibling pinned to a branch is recorded at that branch's commit.
    let sources = std::fs::read_to_string(root.join("job/sources.yaml")).unwrap();
    assert!(sources.contains(&f.tuned_commit), "{sources}");
}

#[test]
fn dry_run_plans_hub_models_without_downloading_weights() {
    let f = family();
    let root = f.tmp.path();
    std::fs::write(root.join("list.txt"), "org/sib1\norg/sib2@tuned\n").unwrap();
    let out = common::hf_tailor()
        .current_dir(root)
        .args(["--base", "org/base", "--finetunes", "list.txt", "--keep-layers", "3", "--dry-run", "--json"])
        .env("HF_ENDPOINT", &f.hub.url)
        .env("HF_HUB_CACHE", root.join("cache"))
        .env("HF_HOME", root.join("home"))
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    assert!(out.status.success(), "dry run failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every model is to be downloaded, each file with its size on the Hub (the source folders
    // hold the same bytes); the README and pytorch_model.bin are not among them.
    let mut expected_total = 0;
    for (model, dir) in plan["models"].as_array().unwrap().iter().zip(&f.dirs) {
        assert_eq!(model["download"], true, "{model}");
        let files = model["files"].as_array().unwrap();
        let names: Vec<&str> = files.iter().map(|f| f[0].as_str().unwrap()).collect();
        assert!(names.contains(&"config.json") && names.iter().any(|n| n.ends_with(".safetensors")), "{names:?}");
        assert!(!names.contains(&"README.md") && !names.contains(&"pytorch_model.bin"), "{names:?}");
        for file in files {
            let size = std::fs::metadata(dir.join(file[0].as_str().unwrap())).unwrap().len();
            assert_eq!(file[1], size, "{file}");
            expected_total += size;
        }
    }
    assert_eq!(plan["download_bytes"], expected_total);
    assert_eq!((plan["source_layers"].as_u64(), plan["keep_layers"].as_u64()), (Some(4), Some(3)));
    let base = hf_tailor::checkpoint::Checkpoint::open(&f.dirs[0]).unwrap();
    assert_eq!(plan["params_before"], base.config.total_params(4));
    assert_eq!(plan["params_after"], base.config.total_params(3));
    // No weight byte crossed the wire: no GET of a shard, neither on `resolve` nor in storage.
    let log = f.hub.log();
    assert!(
        !log.iter().any(|l| l.starts_with("GET /lfs-store/") || (l.starts_with("GET ") && l.contains(".safetensors") && !l.contains(".index.json"))),
        "{log:?}"
    );
}
