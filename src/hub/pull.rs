//! Pull the base and its siblings (only the files a tailoring job reads) and evaluation data
//! sets into the shared cache, pinning every Hub model to the commit it resolved to and
//! recording each file's sha256 in a [`SourceModel`], so a recipe names exactly what it used.
//!
//! Repo metadata (revision → commit, file list) comes from the `hf-hub` crate; the bytes come
//! through [`super::download`], which resumes interrupted transfers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::cache::{is_commit_hash, RepoCache, RepoKind};
use super::download::sha256_file;
use super::finetunes::ModelSource;
use super::http::Http;
use super::{block_on, glob, io_err, HubConfig, HubError};
use crate::recipe::SourceModel;

pub use crate::checkpoint::{GENERATION_CONFIG, TOKENIZER_FILES};
pub const CONFIG_FILE: &str = "config.json";
pub const README: &str = "README.md";
const INDEX: &str = crate::checkpoint::INDEX_FILE;
const SINGLE: &str = crate::checkpoint::SINGLE_FILE;
const BIN_INDEX: &str = crate::checkpoint::torch_bin::BIN_INDEX;
const BIN_SINGLE: &str = crate::checkpoint::torch_bin::BIN_SINGLE;

/// The shard index a pull reads, if any: safetensors' first; PyTorch's `.bin` index only when
/// the repo has no safetensors weights at all (`.bin` shards are never fetched beside them).
fn index_to_read(present: &[String]) -> Option<&'static str> {
    let has = |f: &str| present.iter().any(|p| p == f);
    if has(INDEX) {
        Some(INDEX)
    } else if has(SINGLE) {
        None
    } else if has(BIN_INDEX) {
        Some(BIN_INDEX)
    } else {
        None
    }
}
/// Parallel file transfers per model.
const PARALLEL_FILES: usize = 4;

/// A model ready on disk.
#[derive(Debug, Clone)]
pub struct PulledModel {
    /// Name, repo, resolved commit and per-file sha256: goes into the recipe as is.
    pub source: SourceModel,
    /// The folder to open with `checkpoint::Checkpoint::open` (a cache snapshot or the local folder).
    pub dir: PathBuf,
    /// The model's README.md (fetched for the base: its front matter carries the license).
    pub readme: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct PulledFamily {
    pub base: PulledModel,
    pub siblings: Vec<PulledModel>,
}

impl PulledFamily {
    pub fn sources(&self) -> (SourceModel, Vec<SourceModel>) {
        (self.base.source.clone(), self.siblings.iter().map(|m| m.source.clone()).collect())
    }
}

/// What `hf-tailor pull` writes and later stages read: every source model, pinned.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceList {
    pub base: SourceModel,
    #[serde(default)]
    pub siblings: Vec<SourceModel>,
}

impl From<&PulledFamily> for SourceList {
    fn from(f: &PulledFamily) -> Self {
        let (base, siblings) = f.sources();
        Self { base, siblings }
    }
}

impl SourceList {
    /// Write as YAML (JSON for a `.json` path), atomically.
    pub fn save(&self, path: &Path) -> Result<(), HubError> {
        let text = if path.extension().is_some_and(|e| e == "json") {
            serde_json::to_string_pretty(self).expect("serialisable")
        } else {
            serde_norway::to_string(self).expect("serialisable")
        };
        crate::fsutil::write_atomic(path, text.as_bytes()).map_err(io_err(path))
    }

    pub fn load(path: &Path) -> Result<Self, HubError> {
        let text = crate::fsutil::read_text_input(path, crate::limits::MAX_CONFIG_BYTES as u64).map_err(io_err(path))?;
        serde_norway::from_str(&text).map_err(|e| HubError::ListLine {
            path: path.display().to_string(),
            line: e.location().map(|l| l.line()).unwrap_or(0),
            message: e.to_string(),
        })
    }
}

/// Pull the base (named `base`) and every fine-tune (named after its repo or folder).
pub fn pull_family(cfg: &HubConfig, base: &ModelSource, finetunes: &[ModelSource]) -> Result<PulledFamily, HubError> {
    if let Some(dup) = finetunes.iter().find(|f| f.is_same_model(base)) {
        return Err(HubError::BaseAmongFinetunes { entry: dup.to_string() });
    }
    let mut taken = BTreeSet::from(["base".to_string()]);
    let base = pull_model(cfg, "base", base, true)?;
    let mut siblings = Vec::new();
    for f in finetunes {
        let name = unique_name(f, &mut taken);
        siblings.push(pull_model(cfg, &name, f, false)?);
    }
    Ok(PulledFamily { base, siblings })
}

/// A short handle for recipe rules: the repo's (or folder's) last component, made unique.
pub fn unique_name(m: &ModelSource, taken: &mut BTreeSet<String>) -> String {
    let raw = m.short_name();
    let stem: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    let stem = if stem.is_empty() { "model".to_string() } else { stem };
    let mut name = stem.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{stem}-{n}");
        n += 1;
    }
    name
}

/// Pull one model; `with_readme` also fetches its README.md (not recorded among the files).
pub fn pull_model(cfg: &HubConfig, name: &str, m: &ModelSource, with_readme: bool) -> Result<PulledModel, HubError> {
    match m {
        ModelSource::Local(dir) => local_model(name, dir),
        ModelSource::Hub { repo, revision } => block_on(pull_hub_model(cfg, name, repo, revision.as_deref().unwrap_or("main"), with_readme)),
    }
}

fn local_model(name: &str, dir: &Path) -> Result<PulledModel, HubError> {
    let dir = dir.canonicalize().map_err(io_err(dir))?;
    let present: Vec<String> =
        std::fs::read_dir(&dir).map_err(io_err(&dir))?.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect();
    let repo = dir.display().to_string();
    let files = select_files(&repo, &present, |f| read_index_shards(&dir.join(f), &repo))?;
    let mut hashes = BTreeMap::new();
    for f in &files {
        hashes.insert(f.clone(), sha256_file(&dir.join(f))?);
    }
    let readme = Some(dir.join(README)).filter(|p| p.is_file());
    Ok(PulledModel { source: SourceModel { files: hashes, ..SourceModel::local(name, &dir) }, dir, readme })
}

/// The files a job needs out of `present`: config, weights (the index and the shards it
/// names, or the single file), tokenizer files and generation config when present.
fn select_files(
    repo: &str,
    present: &[String],
    shards_of_index: impl FnOnce(&str) -> Result<Vec<String>, HubError>,
) -> Result<Vec<String>, HubError> {
    let has = |f: &str| present.iter().any(|p| p == f);
    if !has(CONFIG_FILE) {
        return Err(HubError::NoConfig { repo: repo.into() });
    }
    let mut files = vec![CONFIG_FILE.to_string()];
    if let Some(index) = index_to_read(present) {
        files.push(index.into());
        for s in shards_of_index(index)? {
            if !has(&s) {
                return Err(HubError::Protocol { repo: repo.into(), message: format!("{index} names shard {s}, which the repo does not have") });
            }
            files.push(s);
        }
    } else if has(SINGLE) {
        files.push(SINGLE.into());
    } else if has(BIN_SINGLE) {
        files.push(BIN_SINGLE.into());
    } else {
        return Err(HubError::NoWeights { repo: repo.into() });
    }
    for f in TOKENIZER_FILES.iter().chain([&GENERATION_CONFIG]) {
        if has(f) {
            files.push(f.to_string());
        }
    }
    Ok(files)
}

fn read_index_shards(path: &Path, repo: &str) -> Result<Vec<String>, HubError> {
    let is_bin = path.file_name().is_some_and(|n| n == BIN_INDEX);
    let (index, suffix) = if is_bin { (BIN_INDEX, ".bin") } else { (INDEX, ".safetensors") };
    let text = crate::fsutil::read_text_input(path, crate::limits::MAX_CONFIG_BYTES as u64).map_err(io_err(path))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| HubError::Protocol { repo: repo.into(), message: format!("{index} is not valid JSON: {e}") })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| HubError::Protocol { repo: repo.into(), message: format!("{index} has no weight_map") })?;
    let shards: BTreeSet<String> = map.values().filter_map(|s| s.as_str().map(str::to_string)).collect();
    for s in &shards {
        if s.contains('/') || s.contains("..") || !s.ends_with(suffix) {
            return Err(HubError::Protocol { repo: repo.into(), message: format!("{index} names an invalid shard `{s}`") });
        }
    }
    Ok(shards.into_iter().collect())
}

/// The hf-hub client for metadata calls, on our endpoint, cache and token.
fn hf_client(cfg: &HubConfig) -> Result<hf_hub::HFClient, HubError> {
    let mut b = hf_hub::HFClient::builder()
        .endpoint(cfg.endpoint.clone())
        .cache_dir(cfg.cache_dir.clone())
        .retry_max_attempts(cfg.retry.max_attempts as usize);
    if let Some(t) = &cfg.token {
        b = b.token(t.expose());
    }
    b.build().map_err(|e| HubError::Http { repo: "-".into(), message: cfg.redact(&format!("cannot set up the Hub client: {e}")) })
}

/// Map an hf-hub error to ours, telling a missing repo from a missing revision by the Hub's
/// `X-Error-Code` (hf-hub decides by call site alone) and redacting whatever it carries.
fn from_hf(cfg: &HubConfig, e: hf_hub::HFError, repo: &str, revision: &str) -> HubError {
    use hf_hub::HFError as E;
    let code = match &e {
        E::RepoNotFound { context: Some(c), .. } | E::RevisionNotFound { context: Some(c), .. } | E::EntryNotFound { context: Some(c), .. } => {
            c.error_code.clone()
        }
        E::AuthRequired { context } | E::Forbidden { context } | E::Http { context } => context.error_code.clone(),
        _ => None,
    };
    match (code.as_deref(), &e) {
        (Some("RepoNotFound"), _) | (None, E::RepoNotFound { .. }) => HubError::RepoNotFound { repo: repo.into(), endpoint: cfg.endpoint.clone() },
        (Some("RevisionNotFound"), _) | (None, E::RevisionNotFound { .. }) => {
            HubError::RevisionNotFound { repo: repo.into(), revision: revision.into() }
        }
        (_, E::AuthRequired { .. }) => HubError::Unauthorized { repo: repo.into() },
        (_, E::Forbidden { context }) => {
            HubError::Forbidden { repo: repo.into(), message: cfg.redact(context.server_message.as_deref().unwrap_or("")) }
        }
        _ => HubError::Http { repo: repo.into(), message: cfg.redact(&super::http::error_chain(&e)) },
    }
}

/// Resolve `revision` to a commit and list the repo's files, through hf-hub.
async fn repo_listing(cfg: &HubConfig, kind: RepoKind, repo: &str, revision: &str) -> Result<(String, Vec<String>), HubError> {
    let client = hf_client(cfg)?;
    let (owner, name) = hf_hub::split_id(repo);
    let (sha, siblings) = match kind {
        RepoKind::Model => {
            let info = client.model(owner, name).info().revision(revision.to_string()).send().await.map_err(|e| from_hf(cfg, e, repo, revision))?;
            (info.sha, info.siblings)
        }
        RepoKind::Dataset => {
            let info = client.dataset(owner, name).info().revision(revision.to_string()).send().await.map_err(|e| from_hf(cfg, e, repo, revision))?;
            (info.sha, info.siblings)
        }
    };
    let sha = sha
        .filter(|s| is_commit_hash(s))
        .ok_or_else(|| HubError::Protocol { repo: repo.into(), message: format!("the Hub did not resolve `{revision}` to a commit") })?;
    let files: Vec<String> = siblings.unwrap_or_default().into_iter().map(|s| s.rfilename).collect();
    // A listing is server input: a name that could leave the cache folder refuses the whole answer.
    for f in &files {
        super::download::check_repo_path(repo, f)?;
    }
    Ok((sha, files))
}

async fn pull_hub_model(cfg: &HubConfig, name: &str, repo: &str, revision: &str, with_readme: bool) -> Result<PulledModel, HubError> {
    let cache = RepoCache::new(&cfg.cache_dir, RepoKind::Model, repo);
    if cfg.offline {
        return cached_model(&cache, name, repo, revision, with_readme);
    }
    let http = Http::new(cfg)?;
    let (commit, present) = repo_listing(cfg, RepoKind::Model, repo, revision).await?;
    let progress = Progress::new(cfg, &format!("{repo}@{}", &commit[..8.min(commit.len())]));
    // config.json first: a model hf-tailor cannot read (an unsupported architecture or rope
    // scaling) is refused before a byte of its weights is fetched.
    let config = if present.iter().any(|p| p == CONFIG_FILE) {
        let fetched = fetch_one(&http, &progress, RepoKind::Model, repo, &commit, CONFIG_FILE).await?;
        crate::config::ModelConfig::from_file_named(&fetched.0, &format!("{repo}: {CONFIG_FILE}"))?;
        Some(fetched)
    } else {
        None
    };
    // The index next: it says which shards to fetch.
    let index_path = match index_to_read(&present) {
        Some(index) => Some(fetch_one(&http, &progress, RepoKind::Model, repo, &commit, index).await?.0),
        None => None,
    };
    let files = select_files(repo, &present, |_| read_index_shards(index_path.as_deref().expect("index fetched"), repo))?;
    let mut wanted: Vec<&str> = files.iter().map(String::as_str).filter(|f| *f != CONFIG_FILE).collect();
    if with_readme && present.iter().any(|p| p == README) {
        wanted.push(README);
    }
    let results: Vec<(String, (PathBuf, String))> = futures::stream::iter(wanted.into_iter().map(|f| {
        let (http, progress, commit) = (&http, &progress, &commit);
        async move { Ok::<_, HubError>((f.to_string(), fetch_one(http, progress, RepoKind::Model, repo, commit, f).await?)) }
    }))
    .buffer_unordered(PARALLEL_FILES)
    .try_collect()
    .await?;
    let results: Vec<(String, (PathBuf, String))> = config.map(|c| (CONFIG_FILE.to_string(), c)).into_iter().chain(results).collect();
    progress.finish();
    cache.write_ref(revision, &commit).map_err(io_err(&cache.root))?;
    let mut hashes: BTreeMap<String, String> = results.iter().filter(|(f, _)| f != README).map(|(f, (_, sha))| (f.clone(), sha.clone())).collect();
    hashes.retain(|f, _| files.contains(f));
    let dir = cache.snapshot_dir(&commit);
    let readme = results.iter().find(|(f, _)| f == README).map(|(_, (p, _))| p.clone());
    Ok(PulledModel { source: SourceModel { files: hashes, ..SourceModel::hub(name, repo, Some(&commit)) }, dir, readme })
}

/// What pulling a Hub model would fetch, learned without downloading its weights.
#[derive(Debug, Clone)]
pub struct RemoteModelPlan {
    /// The commit `revision` resolves to now.
    pub commit: String,
    /// (file, size in bytes) of every file a pull would fetch, in pull order.
    pub files: Vec<(String, u64)>,
    /// config.json, fetched into the cache (the plan needs the architecture).
    pub config: PathBuf,
}

/// Plan a pull for `--dry-run`: resolve the revision, fetch config.json and the shard index
/// (a few KB, into the cache, where the real pull will find them) and size every other
/// file with a HEAD request. No weight byte is downloaded.
pub fn plan_hub_model(cfg: &HubConfig, repo: &str, revision: &str) -> Result<RemoteModelPlan, HubError> {
    block_on(async {
        let http = Http::new(cfg)?;
        let (commit, present) = repo_listing(cfg, RepoKind::Model, repo, revision).await?;
        let quiet = Progress { multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()) };
        let mut fetched = BTreeMap::new();
        let index = index_to_read(&present);
        for f in [Some(CONFIG_FILE), index].into_iter().flatten() {
            if present.iter().any(|p| p == f) {
                fetched.insert(f, fetch_one(&http, &quiet, RepoKind::Model, repo, &commit, f).await?.0);
            }
        }
        let files = select_files(repo, &present, |f| read_index_shards(&fetched[f], repo))?;
        let mut sized = Vec::with_capacity(files.len());
        for f in files {
            let size = match fetched.get(f.as_str()) {
                Some(path) => std::fs::metadata(path).map_err(io_err(path))?.len(),
                None => http.head_file(RepoKind::Model, repo, &commit, &f).await?.size,
            };
            sized.push((f, size));
        }
        Ok(RemoteModelPlan { commit, files: sized, config: fetched.remove(CONFIG_FILE).expect("select_files requires config.json") })
    })
}

/// The config.json of a model, without its weights: a local folder's; a Hub model's from
/// the cache, else downloaded alone into it (offline: the cache only). Errors name the model.
pub fn fetch_config(cfg: &HubConfig, source: &ModelSource) -> Result<PathBuf, HubError> {
    let (repo, revision) = match source {
        ModelSource::Local(dir) if !dir.is_dir() => return Err(HubError::NoSuchFolder { path: dir.display().to_string() }),
        ModelSource::Local(dir) => {
            let path = dir.join(CONFIG_FILE);
            return if path.is_file() { Ok(path) } else { Err(HubError::NoConfig { repo: dir.display().to_string() }) };
        }
        ModelSource::Hub { repo, revision } => (repo.as_str(), revision.as_deref().unwrap_or("main")),
    };
    let cache = RepoCache::new(&cfg.cache_dir, RepoKind::Model, repo);
    if let Some(path) = cache.resolve(revision).map(|c| cache.snapshot_dir(&c).join(CONFIG_FILE)).filter(|p| p.is_file()) {
        return Ok(path);
    }
    if cfg.offline {
        return Err(HubError::NotCached { repo: repo.into(), revision: revision.into(), file: CONFIG_FILE.into() });
    }
    block_on(async {
        let http = Http::new(cfg)?;
        let (commit, present) = repo_listing(cfg, RepoKind::Model, repo, revision).await?;
        if !present.iter().any(|p| p == CONFIG_FILE) {
            return Err(HubError::NoConfig { repo: repo.into() });
        }
        let quiet = Progress { multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()) };
        let (path, _) = fetch_one(&http, &quiet, RepoKind::Model, repo, &commit, CONFIG_FILE).await?;
        cache.write_ref(revision, &commit).map_err(io_err(&cache.root))?;
        Ok(path)
    })
}

/// Offline: the snapshot the cache holds for `revision`, with the files a job needs.
fn cached_model(cache: &RepoCache, name: &str, repo: &str, revision: &str, with_readme: bool) -> Result<PulledModel, HubError> {
    let not_cached = |file: &str| HubError::NotCached { repo: repo.into(), revision: revision.into(), file: file.into() };
    let commit = cache.resolve(revision).ok_or_else(|| not_cached(CONFIG_FILE))?;
    let dir = cache.snapshot_dir(&commit);
    let present: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned())).collect())
        .unwrap_or_default();
    let files = select_files(repo, &present, |f| read_index_shards(&dir.join(f), repo)).map_err(|e| match e {
        HubError::Protocol { .. } | HubError::NoConfig { .. } | HubError::NoWeights { .. } => not_cached(CONFIG_FILE),
        e => e,
    })?;
    let mut hashes = BTreeMap::new();
    for f in &files {
        let p = dir.join(f);
        if !p.is_file() {
            return Err(not_cached(f));
        }
        hashes.insert(f.clone(), cached_sha256(&p)?);
    }
    let readme = Some(dir.join(README)).filter(|p| with_readme && p.is_file());
    Ok(PulledModel { source: SourceModel { files: hashes, ..SourceModel::hub(name, repo, Some(&commit)) }, dir, readme })
}

/// sha256 of a cached file: LFS blobs are named by it; other blobs are hashed.
fn cached_sha256(snapshot_file: &Path) -> Result<String, HubError> {
    if let Ok(target) = std::fs::read_link(snapshot_file) {
        if let Some(name) = target.file_name().and_then(|n| n.to_str()) {
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(name.to_string());
            }
        }
    }
    sha256_file(snapshot_file)
}

async fn fetch_one(http: &Http, progress: &Progress, kind: RepoKind, repo: &str, commit: &str, file: &str) -> Result<(PathBuf, String), HubError> {
    let cache = RepoCache::new(&http.cfg.cache_dir, kind, repo);
    super::download::check_repo_path(repo, file)?;
    let snap = cache.snapshot_file(commit, file).map_err(io_err(&cache.root))?;
    if snap.is_file() {
        let sha = cached_sha256(&snap)?;
        return Ok((snap, sha));
    }
    let meta = http.head_file(kind, repo, commit, file).await?;
    let bar = progress.bar(file, meta.size);
    let fetched = http.fetch_to_cache(kind, repo, commit, file, &meta, &bar).await?;
    bar.finish();
    Ok((fetched.path, fetched.sha256))
}

/// Where a source model's files are on this machine: a local folder as is; a Hub model's
/// cached snapshot at its recorded commit, downloaded first unless offline. Every file the
/// recipe recorded must be there with the recorded sha256.
pub fn locate(source: &SourceModel, cfg: &HubConfig) -> Result<PathBuf, HubError> {
    let (repo, revision) = match &source.source {
        ModelSource::Local(dir) if dir.is_dir() => return Ok(dir.clone()),
        ModelSource::Local(dir) => return Err(HubError::NoSuchFolder { path: dir.display().to_string() }),
        ModelSource::Hub { repo, revision } => (repo, revision.as_deref().unwrap_or("main")),
    };
    let cache = RepoCache::new(&cfg.cache_dir, RepoKind::Model, repo);
    let dir = match cache.resolve(revision).map(|c| cache.snapshot_dir(&c)) {
        // A recipe lists the files it was made from; one without (e.g. imported from mergekit)
        // takes a cached snapshot that has a config and weights.
        Some(d) if !source.files.is_empty() && source.files.keys().all(|f| d.join(f).is_file()) => d,
        Some(d)
            if source.files.is_empty()
                && d.join(CONFIG_FILE).is_file()
                && (d.join(crate::checkpoint::SINGLE_FILE).is_file() || d.join(crate::checkpoint::INDEX_FILE).is_file()) =>
        {
            d
        }
        _ if cfg.offline => {
            let missing = source.files.keys().next().map(String::as_str).unwrap_or(CONFIG_FILE);
            return Err(HubError::NotCached { repo: repo.to_string(), revision: revision.into(), file: missing.into() });
        }
        _ => pull_model(cfg, &source.name, &ModelSource::Hub { repo: repo.clone(), revision: Some(revision.into()) }, false)?.dir,
    };
    for (file, expected) in &source.files {
        let p = dir.join(file);
        if !p.is_file() {
            return Err(HubError::NotCached { repo: repo.to_string(), revision: revision.into(), file: file.clone() });
        }
        let actual = cached_sha256(&p)?;
        if &actual != expected {
            return Err(HubError::Integrity { repo: repo.to_string(), file: file.clone(), what: "sha256", expected: expected.clone(), actual });
        }
    }
    Ok(dir)
}

/// Download the files of dataset `repo` at `revision` (default `main`) whose paths match
/// any of `patterns` (fnmatch, as `allow_patterns`); returns their cached paths, sorted by
/// repo path. Offline, serves them from the cache.
pub fn pull_dataset(cfg: &HubConfig, repo: &str, revision: Option<&str>, patterns: &[&str]) -> Result<Vec<PathBuf>, HubError> {
    block_on(pull_dataset_async(cfg, repo, revision.unwrap_or("main"), patterns))
}

async fn pull_dataset_async(cfg: &HubConfig, repo: &str, revision: &str, patterns: &[&str]) -> Result<Vec<PathBuf>, HubError> {
    let cache = RepoCache::new(&cfg.cache_dir, RepoKind::Dataset, repo);
    let none_match = || HubError::Protocol { repo: repo.into(), message: format!("no file matches {}", patterns.join(", ")) };
    if cfg.offline {
        let commit =
            cache.resolve(revision).ok_or_else(|| HubError::NotCached { repo: repo.into(), revision: revision.into(), file: patterns.join(",") })?;
        let dir = cache.snapshot_dir(&commit);
        let mut found = Vec::new();
        walk(&dir, &dir, &mut found);
        found.retain(|f| glob::matches_any(patterns, f));
        found.sort();
        if found.is_empty() {
            return Err(HubError::NotCached { repo: repo.into(), revision: revision.into(), file: patterns.join(",") });
        }
        return Ok(found.iter().map(|f| dir.join(f)).collect());
    }
    let http = Http::new(cfg)?;
    let (commit, present) = repo_listing(cfg, RepoKind::Dataset, repo, revision).await?;
    let mut wanted: Vec<String> = present.into_iter().filter(|f| glob::matches_any(patterns, f)).collect();
    wanted.sort();
    if wanted.is_empty() {
        return Err(none_match());
    }
    let progress = Progress::new(cfg, &format!("{repo}@{}", &commit[..8]));
    let mut paths = Vec::new();
    for f in &wanted {
        paths.push(fetch_one(&http, &progress, RepoKind::Dataset, repo, &commit, f).await?.0);
    }
    progress.finish();
    cache.write_ref(revision, &commit).map_err(io_err(&cache.root))?;
    Ok(paths)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else if let Ok(rel) = p.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// One progress bar per file under a header line; hidden when disabled or not a terminal.
struct Progress {
    multi: MultiProgress,
}

impl Progress {
    fn new(cfg: &HubConfig, title: &str) -> Self {
        let target = if cfg.progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let multi = MultiProgress::with_draw_target(target);
        let _ = multi.println(format!("pulling {title}"));
        Self { multi }
    }

    fn bar(&self, file: &str, size: u64) -> ProgressBar {
        let style = ProgressStyle::with_template("  {msg:<40!} {bytes:>10}/{total_bytes:<10} {wide_bar} {bytes_per_sec:>12} {eta:>4}")
            .expect("valid template");
        self.multi.add(ProgressBar::new(size).with_style(style).with_message(file.to_string()))
    }

    fn finish(&self) {
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_what_a_job_reads() {
        let present: Vec<String> = [
            "config.json",
            "model.safetensors.index.json",
            "a.safetensors",
            "b.safetensors",
            "pytorch_model.bin",
            "tokenizer.json",
            "generation_config.json",
            "README.md",
            "x.png",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let files = select_files("r", &present, |_| Ok(vec!["a.safetensors".into(), "b.safetensors".into()])).unwrap();
        assert_eq!(files, ["config.json", INDEX, "a.safetensors", "b.safetensors", "tokenizer.json", "generation_config.json"]);
        let e = select_files("r", &present, |_| Ok(vec!["c.safetensors".into()])).unwrap_err();
        assert!(e.to_string().contains("c.safetensors"), "{e}");
        // `.bin` weights only when the repo has no safetensors.
        let bin_only: Vec<String> = vec!["config.json".into(), "pytorch_model.bin".into()];
        assert_eq!(select_files("r", &bin_only, |_| Ok(vec![])).unwrap(), ["config.json", "pytorch_model.bin"]);
        let bin_shards: Vec<String> =
            ["config.json", BIN_INDEX, "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"].map(String::from).to_vec();
        let files = select_files("r", &bin_shards, |f| {
            assert_eq!(f, BIN_INDEX);
            Ok(vec!["pytorch_model-00001-of-00002.bin".into(), "pytorch_model-00002-of-00002.bin".into()])
        })
        .unwrap();
        assert_eq!(files, bin_shards);
        let both: Vec<String> = ["config.json", SINGLE, BIN_SINGLE].map(String::from).to_vec();
        assert_eq!(select_files("r", &both, |_| Ok(vec![])).unwrap(), ["config.json", SINGLE]);
        let none: Vec<String> = vec!["config.json".into(), "model.gguf".into()];
        assert!(matches!(select_files("r", &none, |_| Ok(vec![])), Err(HubError::NoWeights { .. })));
    }

    #[test]
    fn names_are_unique_handles() {
        let mut taken = BTreeSet::from(["base".to_string()]);
        let a = ModelSource::Hub { repo: "org/Model-X".into(), revision: None };
        let b = ModelSource::Hub { repo: "other/Model-X".into(), revision: None };
        let c = ModelSource::Hub { repo: "base".into(), revision: None };
        assert_eq!(unique_name(&a, &mut taken), "Model-X");
        assert_eq!(unique_name(&b, &mut taken), "Model-X-2");
        assert_eq!(unique_name(&c, &mut taken), "base-2");
    }
}
