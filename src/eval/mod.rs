//! The in-memory evaluator: scores recipes (candidate tailored models) on calibration
//! tasks without writing a checkpoint.
//!
//! Weights of each (source layer, rule) are built once through [`crate::stitch`] and kept
//! in a byte-bounded LRU ([`weights`]); the forward pass is our own ([`forward`]); hidden
//! states after each prefix of layers are cached per data batch so a candidate only runs
//! the layers after its first difference from one already scored ([`EvalStats`] reports
//! the layer-forwards saved); tasks are scored as lm-evaluation-harness scores them
//! ([`tasks`], [`plan`], [`tokenize`]).

pub mod budget;
pub mod data;
pub mod device_merge;
pub mod forward;
pub mod harness;
pub mod heal_fit;
pub mod lru;
pub mod memory;
pub mod plan;
pub mod samples;
pub mod sources;
pub mod tasks;
pub mod tiers;
pub mod tokenize;
pub mod weights;

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{CheckpointError, Family};
use crate::recipe::{Recipe, RecipeError};
use crate::score::{Estimate, HoldOut, ItemValues, Items, LayerWork, Measures, Metric, Scorer, TaskMeasures};
use forward::{BatchContext, Dims, Rope};
pub use heal_fit::HealFit;
pub use lru::CacheStats;
use lru::Lru;
pub use plan::McScore;
use plan::{Packing, Plan, TaskPlan};
pub use samples::Sample;
pub use tasks::{calibration_texts, Example, McItem, Task, TaskAbout, TaskData, TaskFormat, TaskSpec};
use tokenize::TextEncoder;
use weights::{rule_key, WeightStore};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Recipe(#[from] RecipeError),
    #[error("tensor computation failed at {tensor}: {source}")]
    Tensor { tensor: String, source: candle_core::Error },
    #[error("not supported by the evaluator: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{origin}: {message}")]
    Data { origin: String, message: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("task spec {0}")]
    Spec(String),
    #[error("device: {0}")]
    Device(String),
    #[error(transparent)]
    Layout(#[from] crate::layout::LayoutError),
    #[error("{0}")]
    NonFinite(#[source] crate::score::NonFiniteScores),
    #[error("{0}")]
    OverBudget(#[from] budget::OverBudget),
    #[error(transparent)]
    Heal(#[from] crate::heal::HealError),
}

fn terr(what: &str) -> impl Fn(candle_core::Error) -> EvalError + '_ {
    move |source| EvalError::Tensor { tensor: what.to_string(), source }
}

/// Where the forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    /// A CUDA device by ordinal; needs the `cuda` cargo feature.
    Cuda(usize),
}

impl std::str::FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda(0)),
            _ => match s.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(DeviceKind::Cuda(n)),
                None => Err(format!("unknown device `{s}` (cpu, cuda, cuda:N)")),
            },
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceKind::Cpu => f.write_str("cpu"),
            DeviceKind::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// As `--device` spells it (`cpu`, `cuda:N`): the dry-run plan's JSON.
impl serde::Serialize for DeviceKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How many CUDA devices this process can open (0 in a build without CUDA support).
pub fn cuda_device_count() -> usize {
    if !cfg!(feature = "cuda") {
        return 0;
    }
    (0..64).take_while(|&n| Device::new_cuda(n).is_ok()).count()
}

/// Evaluator settings. `Default` suits a CPU run of a small model.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub device: DeviceKind,
    /// Compute dtype; `None` = f32 on CPU, the base's storage dtype on CUDA (bf16 for f32 sources).
    pub dtype: Option<crate::dtype::Dtype>,
    /// Bound on resident layer/embedding/head tensors as candidates use them (materialised
    /// (layer, rule) weights, in the compute dtype; bytes). `None` (as every bound here):
    /// derived from the machine and the family ([`budget`]).
    pub weight_cache_bytes: Option<u64>,
    /// Bound on the family's source tensors kept on the device (bytes): models are placed
    /// base first while they fit ([`tiers`]), the rest stream from host memory a layer
    /// ahead. On the CPU 0 by default (the memory-mapped files already are host memory).
    pub source_bytes: Option<u64>,
    /// Bound on cached hidden states of layer prefixes (bytes); 0 disables prefix sharing.
    pub prefix_cache_bytes: Option<u64>,
    /// Most padded tokens in one forward batch.
    pub max_batch_tokens: usize,
    /// Bound on the hidden states held at once while scoring (bytes): the batches go through
    /// the layers in groups that fit (at least one batch each), so a large calibration set
    /// does not need all its activations resident. Each extra group fetches the layers'
    /// weights again (from the weight cache when they fit there).
    pub state_bytes: Option<u64>,
    /// Rules a layer can be made under among the candidates scored (the search space's:
    /// takes, and merges on the λ grid); caps the derived merged-layer bound at every layer,
    /// embedding and head they can produce. `None`: no cap.
    pub rules_per_layer: Option<u64>,
    /// Evaluators of this process sharing the device's memory (each derives its bounds from
    /// its part of what is available).
    pub sharing: usize,
    /// Longest window for perplexity and boundary-cosine texts.
    pub max_window: usize,
    /// Whether a multiple-choice item's context runs once, its continuations as branches of
    /// one row (see [`plan`]), or once per choice as lm-eval does. Same scores either way.
    pub pack_choices: PackChoices,
}

/// See [`EvalOptions::pack_choices`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackChoices {
    /// Pack an item when the packed row costs fewer FLOPs than its separate sequences.
    WhenCheaper,
    Always,
    /// One sequence per distinct choice input (lm-eval's requests).
    Never,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            device: DeviceKind::Cpu,
            dtype: None,
            weight_cache_bytes: None,
            source_bytes: None,
            prefix_cache_bytes: None,
            max_batch_tokens: 2048,
            state_bytes: None,
            rules_per_layer: None,
            sharing: 1,
            max_window: 1024,
            pack_choices: PackChoices::WhenCheaper,
        }
    }
}

/// Work done and saved, and the caches' memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct EvalStats {
    /// Layer applications run (one layer on one batch).
    pub layer_forwards_run: u64,
    /// Layer applications skipped thanks to cached prefixes.
    pub layer_forwards_saved: u64,
    /// Real tokens pushed through the model (each batch once per scoring call).
    pub tokens: u64,
    /// Groups of batches run through the layers together (see `EvalOptions::state_bytes`).
    pub state_groups: u64,
    /// Most bytes of hidden states one group held (bounded by `EvalOptions::state_bytes`
    /// unless a single batch is larger).
    pub peak_state_bytes: u64,
    pub weights: CacheStats,
    pub prefix: CacheStats,
}

impl EvalStats {
    /// Fraction of layer-forwards the prefix cache saved.
    pub fn saved_fraction(&self) -> f64 {
        let total = self.layer_forwards_run + self.layer_forwards_saved;
        if total == 0 {
            0.0
        } else {
            self.layer_forwards_saved as f64 / total as f64
        }
    }
}

/// The result of one task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum TaskResult {
    /// Standard errors as lm-eval computes them: sample standard deviation (n − 1) / √n.
    MultipleChoice {
        task: String,
        acc: f64,
        acc_stderr: f64,
        acc_norm: f64,
        acc_norm_stderr: f64,
        items: usize,
    },
    Perplexity {
        task: String,
        perplexity: f64,
        tokens: usize,
    },
}

impl TaskResult {
    pub fn task(&self) -> &str {
        match self {
            TaskResult::MultipleChoice { task, .. } | TaskResult::Perplexity { task, .. } => task,
        }
    }
}

/// Which items a cached plan covers: the first `budget` of all items, or of one side of a
/// hold-out split (fraction bits, seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PlanKey {
    All(usize),
    Search(u64, u64, usize),
    Selection(u64, u64),
    Validation,
}

impl PlanKey {
    fn of(items: Items, budget: usize) -> Self {
        match items {
            Items::All => PlanKey::All(budget),
            Items::Search(h) => PlanKey::Search(h.fraction.to_bits(), h.seed, budget),
            Items::Selection(h) => PlanKey::Selection(h.fraction.to_bits(), h.seed),
            Items::Validation => PlanKey::Validation,
        }
    }
}

/// One set of tasks (`what`: "tasks", "selection tasks") names each task once: results and
/// measures are keyed by name.
fn check_unique_names(tasks: &[Task], what: &str) -> Result<(), EvalError> {
    let mut seen = std::collections::BTreeSet::new();
    match tasks.iter().find(|t| !seen.insert(t.name.as_str())) {
        Some(t) => Err(EvalError::Spec(format!("two {what} are named `{}`", t.name))),
        None => Ok(()),
    }
}

/// Prefix-cache key: the data batch and the interned rules of the prefix (embeddings first).
type PrefixKey = ([u8; 32], Vec<u32>);

/// Scores recipes over one family in memory. See the module docs.
pub struct Evaluator {
    family: Arc<Family>,
    tasks: Vec<Task>,
    /// A search's validation set ([`Items::Validation`]): scored only to choose its result.
    selection_tasks: Vec<Task>,
    encoder: TextEncoder,
    device: Device,
    dtype: DType,
    dims: Dims,
    rope: Rope,
    options: EvalOptions,
    store: WeightStore,
    prefix: Lru<PrefixKey, Tensor>,
    /// Prefix ids of the recipe the caller prefers to keep cached (the search's incumbent).
    preferred: Vec<u32>,
    interned: HashMap<String, u32>,
    plans: HashMap<PlanKey, Plan>,
    stats: EvalStats,
    /// The bounds derived at start, and what lowers them while the run goes on.
    plan: budget::MemoryPlan,
    watch: budget::Watch,
    /// Bounds now: merged layers, prefix cache, activations.
    bounds: [u64; 3],
    last_check: std::time::Instant,
    /// A search's heals: its calibration tokens and what was fitted on them.
    heals: heal_fit::SearchHeals,
}

/// The memory bounds of an evaluator on `device`: what the options set, the rest derived
/// from what the machine has (its part of it, when `options.sharing` evaluators share the
/// device) and what the family needs.
fn memory_plan(device: &Device, dtype: DType, family: &Family, model_bytes: &[u64], options: &EvalOptions) -> Result<budget::MemoryPlan, EvalError> {
    let share = options.sharing.max(1) as u64;
    let (mut host_available, mut host_limit) = budget::HostReader::default().available();
    let device_mem = memory::device_memory(device)?.map(|(free, total)| (free / share, total / share));
    if share > 1 {
        host_available /= share;
        host_limit = format!("{host_limit}, shared by {share} evaluators");
    }
    let machine = budget::Machine { host_available, host_limit, device: device_mem };
    let c = &family.base.config;
    let needs = budget::Needs {
        model_bytes: model_bytes.to_vec(),
        merged_layers: options
            .rules_per_layer
            .map(|r| r.saturating_mul(c.total_params(c.num_hidden_layers)).saturating_mul(dtype.size_in_bytes() as u64)),
    };
    let requested = budget::Requested {
        merged_layers: options.weight_cache_bytes,
        prefix_cache: options.prefix_cache_bytes,
        activations: options.state_bytes,
        sources: options.source_bytes,
    };
    let memory = if device_mem.is_some() { budget::Memory::Device } else { budget::Memory::Host };
    Ok(budget::derive(memory, &machine, &needs, &requested)?)
}

/// candle's dtype for a storage dtype.
pub fn candle_dtype(d: crate::dtype::Dtype) -> DType {
    match d {
        crate::dtype::Dtype::F32 => DType::F32,
        crate::dtype::Dtype::F16 => DType::F16,
        crate::dtype::Dtype::Bf16 => DType::BF16,
    }
}

impl Evaluator {
    /// An evaluator over `family` for `tasks` (loaded with [`TaskSpec::load`]); the
    /// tokenizer is the base's `tokenizer.json`.
    pub fn new(family: Arc<Family>, tasks: Vec<Task>, options: EvalOptions) -> Result<Self, EvalError> {
        let device = match options.device {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda(n) => Device::new_cuda(n).map_err(|e| {
                EvalError::Device(if cfg!(feature = "cuda") {
                    // candle appends a backtrace under RUST_BACKTRACE: keep the message one line.
                    let e = match e {
                        candle_core::Error::WithBacktrace { inner, .. } => *inner,
                        e => e,
                    };
                    format!("cannot open CUDA device {n}: {e}")
                } else {
                    "this build has no CUDA support; rebuild with `--features cuda`".to_string()
                })
            })?,
        };
        let dtype = match (options.dtype, options.device) {
            (Some(d), _) => candle_dtype(d),
            (None, DeviceKind::Cpu) => DType::F32,
            (None, DeviceKind::Cuda(_)) => match family.base.storage_dtype() {
                crate::dtype::Dtype::F16 => DType::F16,
                _ => DType::BF16,
            },
        };
        let cfg = &family.base.config;
        let encoder = TextEncoder::from_model_dir(&family.base.dir, &cfg.raw)?;
        let rope = Rope::from_config(cfg)?;
        let dims = Dims::from_config(cfg);
        check_unique_names(&tasks, "tasks")?;
        let model_bytes: Vec<u64> = family.models().map(|m| m.total_bytes()).collect();
        let plan = memory_plan(&device, dtype, &family, &model_bytes, &options)?;
        let tiers = tiers::assign(&model_bytes, plan.sources.bytes);
        let bounds = plan.cache_bounds();
        let store = WeightStore::new(family.clone(), device.clone(), dtype, bounds[0], &tiers, plan.sources.bytes);
        Ok(Self {
            family,
            tasks,
            selection_tasks: Vec::new(),
            encoder,
            device,
            dtype,
            dims,
            rope,
            prefix: Lru::segmented(bounds[1]),
            preferred: Vec::new(),
            options,
            store,
            interned: HashMap::new(),
            plans: HashMap::new(),
            stats: EvalStats::default(),
            watch: budget::Watch::new(&plan),
            plan,
            bounds,
            last_check: std::time::Instant::now(),
            heals: heal_fit::SearchHeals::default(),
        })
    }

    /// The memory bounds derived at start (print them before a run).
    pub fn memory_plan(&self) -> &budget::MemoryPlan {
        &self.plan
    }

    /// Re-read the memory available (at most once a second: a few small files) and lower or
    /// restore the caches' bounds (see [`budget::Watch`]). Called before each scoring.
    fn watch_memory(&mut self) {
        if self.last_check.elapsed() < std::time::Duration::from_secs(1) {
            return;
        }
        self.last_check = std::time::Instant::now();
        let available = match self.plan.memory {
            budget::Memory::Host => budget::HostReader::default().available().0,
            budget::Memory::Device => match memory::device_memory(&self.device) {
                Ok(Some((free, total))) => free.saturating_sub((total as f64 * budget::DEVICE_HEADROOM) as u64),
                _ => return,
            },
        } / self.options.sharing.max(1) as u64;
        let held = [self.store.stats().bytes, self.prefix.stats().bytes, 0];
        let b = self.watch.bounds(available, held);
        if b != self.bounds {
            self.store.set_capacity(b[0]);
            self.prefix.set_capacity(b[1]);
            self.bounds = b;
        }
    }

    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// The tasks [`Items::Validation`] scores (see [`Evaluator::set_selection_tasks`]).
    pub fn selection_tasks(&self) -> &[Task] {
        &self.selection_tasks
    }

    /// The tasks [`Items::Validation`] scores, every item of each (a search's validation
    /// set: `search --selection-tasks`). Names must differ from one another, not from the
    /// calibration tasks' (the two sets are never scored together).
    pub fn set_selection_tasks(&mut self, tasks: Vec<Task>) -> Result<(), EvalError> {
        check_unique_names(&tasks, "selection tasks")?;
        self.selection_tasks = tasks;
        self.plans.remove(&PlanKey::Validation);
        Ok(())
    }

    pub fn family(&self) -> &Arc<Family> {
        &self.family
    }

    pub fn encoder(&self) -> &TextEncoder {
        &self.encoder
    }

    /// Counters so far, with the caches' current memory.
    pub fn stats(&self) -> EvalStats {
        EvalStats { weights: self.store.stats(), prefix: self.prefix.stats(), ..self.stats }
    }

    /// Device memory by kind, with its bound, and the host-tier traffic so far.
    pub fn memory(&self) -> memory::MemoryReport {
        memory::MemoryReport::new(&self.stats(), self.store.source_stats(), &self.plan, &self.watch, self.dtype)
    }

    /// The compute dtype of the forward pass.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    fn packing(&self) -> Packing {
        let d = &self.dims;
        // FLOPs per token through a layer's linear maps, and per query-key pair of attention
        // (scores, softmax and the weighted sum over all heads).
        let linear =
            2.0 * (d.hidden * (d.heads + 2 * d.kv_heads) * d.head_dim + d.heads * d.head_dim * d.hidden + 3 * d.hidden * d.intermediate) as f64;
        let pair = (d.heads * (4 * d.head_dim + 5)) as f64;
        Packing {
            max_batch_tokens: self.options.max_batch_tokens,
            max_window: self.options.max_window,
            pack_choices: self.options.pack_choices,
            pair_cost: pair / linear.max(1.0),
            max_positions: self.family.base.config.max_position_embeddings,
        }
    }

    /// The recipe is valid and fits the loaded family (the layout's one fit check); a healed
    /// recipe's maps are loaded from its file unless the fit registered them.
    fn check_recipe(&mut self, recipe: &Recipe) -> Result<(), EvalError> {
        recipe.validate()?;
        crate::layout::Layout::for_family(&self.family, recipe)?;
        if let Some(h) = &recipe.heal {
            if h.is_request() {
                // Only `measure` fits a search's request; anything else would score it unhealed.
                return Err(EvalError::Spec(
                    "the recipe asks for a heal that is not fitted yet (a search candidate's); fit it with `hf-tailor heal`".into(),
                ));
            }
            if h.gaps.iter().any(|g| !self.store.has_map(&g.sha256)) {
                crate::heal::check_arch(recipe)?;
                for (name, map) in crate::heal::read_maps(h, self.dims.hidden)? {
                    let sha = crate::heal::map_sha256(&map);
                    debug_assert!(h.gaps.iter().any(|g| g.map == name && g.sha256 == sha));
                    self.store.register_map(sha, Arc::new(map));
                }
            }
        }
        Ok(())
    }

    fn intern(&mut self, key: String) -> u32 {
        let n = self.interned.len() as u32;
        *self.interned.entry(key).or_insert(n)
    }

    /// Interned ids of the prefix: `[embeddings, layer 0, layer 1, …]`.
    fn prefix_ids(&mut self, recipe: &Recipe) -> Vec<u32> {
        let mut ids = vec![self.intern(format!("embed {}", rule_key(&recipe.embeddings)))];
        for (i, l) in recipe.layers.iter().enumerate() {
            let map = crate::layout::FusedMap::of(recipe, i).map(|f| f.sha256).unwrap_or_default();
            ids.push(self.intern(format!("layer {} {} {map}", l.from, rule_key(&l.rule))));
        }
        ids
    }

    /// Hidden states after every layer of `recipe` for each batch of `plan`, resuming
    /// each batch from the deepest cached prefix.
    fn run_layers(&mut self, recipe: &Recipe, batches: &[plan::Batch]) -> Result<Vec<Tensor>, EvalError> {
        let ids = self.prefix_ids(recipe);
        let n_layers = recipe.layers.len();
        let use_cache = self.plan.prefix_cache.bytes > 0;
        // (depth, state): depth d = embeddings + d layers applied.
        let mut states: Vec<Option<(usize, Tensor)>> = Vec::with_capacity(batches.len());
        for b in batches {
            let mut found = None;
            if use_cache {
                for d in (0..=n_layers).rev() {
                    let key = (b.key, ids[..=d].to_vec());
                    if self.prefix.contains(&key) {
                        found = self.prefix.get(&key).map(|t| (d, t));
                        break;
                    }
                }
                if found.is_none() {
                    self.prefix.record_miss();
                }
            }
            self.stats.layer_forwards_saved += found.as_ref().map(|(d, _)| *d as u64).unwrap_or(0);
            self.stats.tokens += b.lengths.iter().sum::<usize>() as u64;
            states.push(found);
        }
        if states.iter().any(Option::is_none) {
            let table = self.store.embeddings(recipe)?;
            for (b, s) in batches.iter().zip(states.iter_mut()) {
                if s.is_none() {
                    let h = forward::embed(&table, &b.ids, &self.dims).map_err(terr("embeddings"))?;
                    self.remember(b, &ids[..1], &h);
                    *s = Some((0, h));
                }
            }
        }
        for (l, layer) in recipe.layers.iter().enumerate() {
            if !states.iter().flatten().any(|(d, _)| *d <= l) {
                continue;
            }
            let w = self.store.layer(l, layer, crate::layout::FusedMap::of(recipe, l).as_ref())?;
            // The next layer's host-tier sources come in while this one runs.
            if let Some(next) = recipe.layers.get(l + 1) {
                self.store.prefetch_layer(l + 1, next, crate::layout::FusedMap::of(recipe, l + 1).as_ref())?;
            }
            for (b, s) in batches.iter().zip(states.iter_mut()) {
                let (d, h) = s.as_mut().expect("every batch has a state");
                if *d > l {
                    continue;
                }
                let what = format!("output layer {l} (source layer {})", layer.from);
                *h = forward::layer_forward(&w, h, &b.ctx, &self.dims).map_err(terr(&what))?;
                *d = l + 1;
                self.stats.layer_forwards_run += 1;
                let h = h.clone();
                self.remember(b, &ids[..=l + 1], &h);
            }
        }
        Ok(states.into_iter().map(|s| s.expect("state").1).collect())
    }

    fn remember(&mut self, b: &plan::Batch, ids: &[u32], h: &Tensor) {
        if self.plan.prefix_cache.bytes > 0 {
            let bytes = (h.elem_count() * h.dtype().size_in_bytes()) as u64;
            let preferred = self.preferred.starts_with(ids);
            self.prefix.insert_preferred((b.key, ids.to_vec()), h.clone(), bytes, preferred);
        }
    }

    /// Keep the cached hidden states of `recipe`'s prefixes in preference to others when
    /// the prefix cache is full (the search calls this with its incumbent, whose prefixes
    /// its next proposals tend to share); replaces the previous preference.
    pub fn prefer_prefixes_of(&mut self, recipe: &Recipe) {
        if self.check_recipe(recipe).is_err() {
            return;
        }
        let ids = self.prefix_ids(recipe);
        self.prefix.prefer(|(_, k)| ids.starts_with(k));
        self.preferred = ids;
    }

    /// Log-probabilities of every scored token of `batches`, by plan slot.
    fn score_tokens(&mut self, recipe: &Recipe, batches: &[plan::Batch], n_scored: usize) -> Result<Vec<f64>, EvalError> {
        self.watch_memory();
        let mut scores = vec![0f64; n_scored];
        let per_token = (self.dims.hidden * self.dtype.size_in_bytes()) as u64;
        let state_bytes = |b: &plan::Batch| (b.ctx.batch * b.ctx.len) as u64 * per_token;
        let mut start = 0;
        while start < batches.len() {
            // The longest run of batches whose hidden states fit the bound (at least one).
            let mut end = start + 1;
            let mut bytes = state_bytes(&batches[start]);
            while end < batches.len() && bytes + state_bytes(&batches[end]) <= self.bounds[2] {
                bytes += state_bytes(&batches[end]);
                end += 1;
            }
            self.stats.state_groups += 1;
            self.stats.peak_state_bytes = self.stats.peak_state_bytes.max(bytes);
            self.score_group(recipe, &batches[start..end], &mut scores)?;
            start = end;
        }
        Ok(scores)
    }

    /// Run one group of batches through every layer and the head, filling their score slots.
    fn score_group(&mut self, recipe: &Recipe, batches: &[plan::Batch], scores: &mut [f64]) -> Result<(), EvalError> {
        let states = self.run_layers(recipe, batches)?;
        let head = self.store.head(recipe)?;
        const CHUNK: usize = 512;
        for (b, h) in batches.iter().zip(&states) {
            for start in (0..b.rows.len()).step_by(CHUNK) {
                let end = (start + CHUNK).min(b.rows.len());
                let logp = forward::head_log_probs(&head, h, &b.rows[start..end], &self.dims).map_err(terr("lm_head"))?;
                let idx = Tensor::from_slice(&b.targets[start..end], (end - start, 1), &self.device).map_err(terr("targets"))?;
                let picked = logp.gather(&idx, 1).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(terr("targets"))?;
                for (slot, v) in b.slots[start..end].iter().zip(picked) {
                    scores[*slot] = v as f64;
                }
            }
        }
        Ok(())
    }

    fn ensure_plan(&mut self, key: PlanKey) -> Result<(), EvalError> {
        if !self.plans.contains_key(&key) {
            let p = match key {
                PlanKey::All(budget) => plan::plan_tasks(&self.tasks, budget, &self.encoder, self.packing(), &self.rope, &self.device, self.dtype)?,
                PlanKey::Search(f, seed, budget) => {
                    let tasks = self.split_tasks(&HoldOut { fraction: f64::from_bits(f), seed }, false);
                    plan::plan_tasks(&tasks, budget, &self.encoder, self.packing(), &self.rope, &self.device, self.dtype)?
                }
                PlanKey::Selection(f, seed) => {
                    let tasks = self.split_tasks(&HoldOut { fraction: f64::from_bits(f), seed }, true);
                    plan::plan_tasks(&tasks, usize::MAX, &self.encoder, self.packing(), &self.rope, &self.device, self.dtype)?
                }
                PlanKey::Validation => {
                    if self.selection_tasks.is_empty() {
                        return Err(EvalError::Spec("has no selection tasks to score: set them first (`set_selection_tasks`)".into()));
                    }
                    plan::plan_tasks(&self.selection_tasks, usize::MAX, &self.encoder, self.packing(), &self.rope, &self.device, self.dtype)?
                }
            };
            self.plans.insert(key, p);
        }
        Ok(())
    }

    /// Each task with only its selection items (`selection`) or only its search items.
    fn split_tasks(&self, h: &HoldOut, selection: bool) -> Vec<Task> {
        fn keep<T: Clone>(v: &[T], mask: &[bool], selection: bool) -> Vec<T> {
            v.iter().zip(mask).filter(|(_, m)| **m == selection).map(|(x, _)| x.clone()).collect()
        }
        self.tasks
            .iter()
            .map(|t| {
                let data = match &t.data {
                    TaskData::MultipleChoice(items) => TaskData::MultipleChoice(keep(items, &h.selection_mask(&t.name, items.len()), selection)),
                    TaskData::Perplexity(texts) => TaskData::Perplexity(keep(texts, &h.selection_mask(&t.name, texts.len()), selection)),
                };
                Task { name: t.name.clone(), data, about: t.about.clone() }
            })
            .collect()
    }

    /// See [`Scorer::measure`]: every task's metrics from one scoring of the plan.
    pub fn measure_items(&mut self, recipe: &Recipe, budget: usize, items: Items) -> Result<Measures, EvalError> {
        // A search's candidate that asks for a heal is fitted first (once: see `SearchHeals`).
        let fitted;
        let recipe = match recipe.heal.as_deref() {
            Some(h) if h.is_request() => {
                fitted = self.fitted(recipe)?;
                &fitted
            }
            _ => recipe,
        };
        self.check_recipe(recipe)?;
        let key = PlanKey::of(items, budget);
        self.ensure_plan(key)?;
        let plan = self.plans.remove(&key).expect("plan just made");
        let scores = self.score_tokens(recipe, &plan.batches, plan.n_scored).and_then(|s| finite_scores(recipe, s));
        let out = scores.map(|scores| {
            let unit = |v: Vec<f64>| {
                let weights = vec![1.0; v.len()];
                ItemValues { values: v, weights }
            };
            plan.tasks
                .iter()
                .map(|t| match t {
                    TaskPlan::MultipleChoice { name, items } => {
                        let (s, _) = plan::mc_score(items, &scores);
                        let per_item = [
                            (Metric::Acc, unit(s.correct)),
                            (Metric::AccNorm, unit(s.correct_norm)),
                            (Metric::Loglik, unit(s.loglik)),
                            (Metric::Margin, unit(s.margin)),
                        ];
                        (name.clone(), measures(s.items, per_item.into_iter().collect()))
                    }
                    TaskPlan::Perplexity { name, texts } => {
                        let (values, weights) = plan::text_logliks(texts, &scores);
                        (name.clone(), measures(texts.len(), [(Metric::Ppl, ItemValues { values, weights })].into_iter().collect()))
                    }
                })
                .collect()
        });
        self.plans.insert(key, plan);
        out
    }

    /// Score `recipe` on every task: multiple-choice tasks on their first `budget` items
    /// (per subject when items have subjects), perplexity tasks on all their texts.
    pub fn evaluate(&mut self, recipe: &Recipe, budget: usize) -> Result<Vec<TaskResult>, EvalError> {
        Ok(self.evaluate_with_samples(recipe, budget)?.0)
    }

    /// [`Evaluator::evaluate`], with every item's and text's own score (one scoring).
    pub fn evaluate_with_samples(&mut self, recipe: &Recipe, budget: usize) -> Result<(Vec<TaskResult>, Vec<Sample>), EvalError> {
        self.check_recipe(recipe)?;
        self.ensure_plan(PlanKey::All(budget))?;
        let plan = self.plans.remove(&PlanKey::All(budget)).expect("plan just made");
        let scores = self.score_tokens(recipe, &plan.batches, plan.n_scored).and_then(|s| finite_scores(recipe, s));
        let out = scores.map(|scores| {
            let mut samples = Vec::new();
            let results = plan
                .tasks
                .iter()
                .map(|t| match t {
                    TaskPlan::MultipleChoice { name, items } => {
                        let (s, lls) = plan::mc_score(items, &scores);
                        samples.extend(samples::of_items(name, items, &s, lls));
                        TaskResult::MultipleChoice {
                            task: name.clone(),
                            acc: s.acc,
                            acc_stderr: Estimate::of(&s.correct).se,
                            acc_norm: s.acc_norm,
                            acc_norm_stderr: Estimate::of(&s.correct_norm).se,
                            items: s.items,
                        }
                    }
                    TaskPlan::Perplexity { name, texts } => {
                        samples.extend(samples::of_texts(name, texts, &scores));
                        TaskResult::Perplexity {
                            task: name.clone(),
                            perplexity: plan::perplexity(texts, &scores),
                            tokens: texts.iter().map(|s| s.len).sum(),
                        }
                    }
                })
                .collect();
            (results, samples)
        });
        self.plans.insert(PlanKey::All(budget), plan);
        out
    }

    /// Real tokens in the batches `evaluate(_, budget)` runs (for throughput figures).
    pub fn planned_tokens(&mut self, budget: usize) -> Result<usize, EvalError> {
        self.ensure_plan(PlanKey::All(budget))?;
        Ok(self.plans[&PlanKey::All(budget)].real_tokens)
    }

    /// Per-choice log-likelihoods of `items` under `recipe` (lm-eval's loglikelihood).
    pub fn choice_log_likelihoods(&mut self, recipe: &Recipe, items: &[McItem]) -> Result<Vec<Vec<f64>>, EvalError> {
        self.check_recipe(recipe)?;
        let task = Task::new("items", TaskData::MultipleChoice(items.to_vec()));
        let p = plan::plan_tasks(std::slice::from_ref(&task), usize::MAX, &self.encoder, self.packing(), &self.rope, &self.device, self.dtype)?;
        let scores = self.score_tokens(recipe, &p.batches, p.n_scored)?;
        match &p.tasks[0] {
            TaskPlan::MultipleChoice { items, .. } => Ok(plan::mc_score(items, &scores).1),
            TaskPlan::Perplexity { .. } => unreachable!("planned as multiple choice"),
        }
    }

    /// Full-sequence logits (f32) of `sequences`, run as one right-padded batch:
    /// `out[s][p]` is the vocabulary row at position p of sequence s (real positions only).
    pub fn logits(&mut self, recipe: &Recipe, sequences: &[Vec<u32>]) -> Result<Vec<Vec<Vec<f32>>>, EvalError> {
        self.check_recipe(recipe)?;
        if sequences.is_empty() || sequences.iter().any(Vec::is_empty) {
            return Err(EvalError::Spec("logits need at least one non-empty sequence".into()));
        }
        let len = sequences.iter().map(Vec::len).max().unwrap_or(1);
        let lengths: Vec<usize> = sequences.iter().map(Vec::len).collect();
        let mut ids = Vec::new();
        for s in sequences {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(s[0], len - s.len()));
        }
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        for s in sequences {
            sha2::Digest::update(&mut hasher, (s.len() as u64).to_le_bytes());
            s.iter().for_each(|t| sha2::Digest::update(&mut hasher, t.to_le_bytes()));
        }
        let batch = plan::Batch {
            key: sha2::Digest::finalize(hasher).into(),
            ids: Tensor::from_vec(ids, (sequences.len(), len), &self.device).map_err(terr("batch"))?,
            ctx: BatchContext::new(&lengths, len, &self.rope, &self.device, self.dtype).map_err(terr("batch"))?,
            layouts: lengths.iter().map(|&n| forward::RowLayout::plain(n)).collect(),
            lengths: lengths.clone(),
            rows: vec![],
            targets: vec![],
            slots: vec![],
        };
        let states = self.run_layers(recipe, std::slice::from_ref(&batch))?;
        let head = self.store.head(recipe)?;
        let mut out = Vec::new();
        for (s, n) in lengths.iter().enumerate() {
            let rows: Vec<u32> = (0..*n).map(|p| (s * len + p) as u32).collect();
            let l = forward::head_logits(&head, &states[0], &rows, &self.dims).and_then(|t| t.to_vec2::<f32>()).map_err(terr("lm_head"))?;
            out.push(l);
        }
        Ok(out)
    }

    /// Plan `texts` as perplexity windows (prefix token first).
    fn text_plan(&self, texts: &[String]) -> Result<Plan, EvalError> {
        let mut set = plan::SequenceSet::default();
        let spans = plan::plan_texts(&mut set, &self.encoder, texts, self.options.max_window)?;
        plan::finish(set, vec![TaskPlan::Perplexity { name: "texts".into(), texts: spans }], self.packing(), &self.rope, &self.device, self.dtype)
    }

    /// Token-weighted perplexity of `recipe` on `texts`.
    pub fn text_perplexity(&mut self, recipe: &Recipe, texts: &[String]) -> Result<f64, EvalError> {
        self.check_recipe(recipe)?;
        let p = self.text_plan(texts)?;
        let scores = self.score_tokens(recipe, &p.batches, p.n_scored)?;
        match &p.tasks[0] {
            TaskPlan::Perplexity { texts, .. } => Ok(plan::perplexity(texts, &scores)),
            TaskPlan::MultipleChoice { .. } => unreachable!("planned as perplexity"),
        }
    }

    /// See [`Scorer::boundary_cosines`]. Runs batch by batch (every boundary of a batch is
    /// needed at once) and bypasses the prefix cache.
    pub fn layer_boundary_cosines(&mut self, recipe: &Recipe, texts: &[String]) -> Result<Vec<Vec<f64>>, EvalError> {
        self.check_recipe(recipe)?;
        let mut set = plan::SequenceSet::default();
        for t in texts {
            let mut tokens = vec![self.encoder.prefix_token];
            tokens.extend(self.encoder.encode(t)?);
            tokens.truncate(self.options.max_window.max(1));
            set.add_plain(tokens);
        }
        let p = plan::finish(set, vec![], self.packing(), &self.rope, &self.device, self.dtype)?;
        let n = recipe.layers.len();
        let mut sums = vec![vec![0f64; n + 1]; n + 1];
        let mut count = 0usize;
        let table = self.store.embeddings(recipe)?;
        let e = terr("boundary cosines");
        for b in &p.batches {
            let (bs, t) = (b.lengths.len(), b.ctx.len);
            let real: Vec<u32> = b.lengths.iter().enumerate().flat_map(|(r, &l)| (0..l).map(move |i| (r * t + i) as u32)).collect();
            let idx = Tensor::from_slice(&real, real.len(), &self.device).map_err(&e)?;
            let unit = |h: &Tensor| -> candle_core::Result<Tensor> {
                let x = h.reshape((bs * t, self.dims.hidden))?.index_select(&idx, 0)?.to_dtype(DType::F32)?;
                let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
                x.broadcast_div(&norm)
            };
            let mut h = forward::embed(&table, &b.ids, &self.dims).map_err(&e)?;
            let mut units = vec![unit(&h).map_err(&e)?];
            for (l, layer) in recipe.layers.iter().enumerate() {
                let w = self.store.layer(l, layer, crate::layout::FusedMap::of(recipe, l).as_ref())?;
                h = forward::layer_forward(&w, &h, &b.ctx, &self.dims).map_err(&e)?;
                self.stats.layer_forwards_run += 1;
                units.push(unit(&h).map_err(&e)?);
            }
            for i in 0..=n {
                for j in i..=n {
                    let c = (&units[i] * &units[j]).and_then(|x| x.sum_all()).and_then(|x| x.to_scalar::<f32>()).map_err(&e)? as f64;
                    sums[i][j] += c;
                    if i != j {
                        sums[j][i] += c;
                    }
                }
            }
            count += real.len();
        }
        let count = count.max(1) as f64;
        Ok(sums.into_iter().map(|row| row.into_iter().map(|s| s / count).collect()).collect())
    }
}

/// A task's measures from its per-item values.
fn measures(items: usize, per_item: std::collections::BTreeMap<Metric, ItemValues>) -> TaskMeasures {
    let metrics = per_item.iter().map(|(m, v)| (*m, v.estimate())).collect::<std::collections::BTreeMap<Metric, Estimate>>();
    TaskMeasures { items, metrics, per_item }
}

/// Refuse NaN or infinite token log-likelihoods: an accuracy computed over them is noise.
fn finite_scores(recipe: &Recipe, scores: Vec<f64>) -> Result<Vec<f64>, EvalError> {
    let bad = scores.iter().filter(|x| !x.is_finite()).count();
    if bad == 0 {
        return Ok(scores);
    }
    let layers: Vec<String> = recipe.layers.iter().map(|l| l.from.to_string()).collect();
    Err(EvalError::NonFinite(crate::score::NonFiniteScores(format!(
        "the candidate keeping layers [{}] scores non-finite log-likelihoods on {bad} of {} tokens (NaN or infinite weights or activations)",
        layers.join(", "),
        scores.len()
    ))))
}

impl Scorer for Evaluator {
    type Error = EvalError;

    fn task_names(&self) -> Vec<String> {
        self.tasks.iter().filter(|t| matches!(t.data, TaskData::MultipleChoice(_))).map(|t| t.name.clone()).collect()
    }

    fn measure(&mut self, recipe: &Recipe, budget: usize, items: Items) -> Result<Measures, EvalError> {
        self.measure_items(recipe, budget, items)
    }

    fn boundary_cosines(&mut self, recipe: &Recipe, texts: &[String]) -> Result<Vec<Vec<f64>>, EvalError> {
        self.layer_boundary_cosines(recipe, texts)
    }

    fn perplexity(&mut self, recipe: &Recipe, texts: &[String]) -> Result<f64, EvalError> {
        self.text_perplexity(recipe, texts)
    }

    fn layer_work(&self) -> Option<LayerWork> {
        Some(LayerWork { run: self.stats.layer_forwards_run, saved: self.stats.layer_forwards_saved })
    }

    fn prefer(&mut self, recipe: &Recipe) {
        self.prefer_prefixes_of(recipe);
    }
}
