//! A whole search job as the pipeline runs it: the search (resumable through its
//! journal), the baselines, the reference rows (base and siblings at full depth), the
//! report, and the files written for the next stages.

use std::path::{Path, PathBuf};

use crate::recipe::Recipe;
use crate::score::{Items, Measures, ModelResult, ResultKind, Scorer};

use super::baselines::{run_baseline, Baseline, BaselineKind};
use super::driver::{header, run_search, run_search_parallel, run_search_remote, SearchOutcome, TrialEvent, Worker};
use super::front::{FrontPoint, Pick};
use super::journal::Journal;
use super::optimizer::OptimizerConfig;
use super::report::SearchReport;
use super::select;
use super::space::SearchSpace;
use super::storage::Storage;
use super::trial::JournalHeader;
use super::SearchError;

/// What to run.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub space: SearchSpace,
    pub optimizer: OptimizerConfig,
    pub trials: usize,
    pub journal: PathBuf,
    /// Continue the journal if it exists (otherwise a non-empty journal is an error).
    pub resume: bool,
    pub baselines: Vec<BaselineKind>,
    /// Calibration texts for the baselines (hidden states, perplexity).
    pub calibration: Vec<String>,
    /// On resume, take these settings from the journal instead of `optimizer` (the user did
    /// not choose them), so journals written with other defaults (or before objectives and
    /// selection splits existed) continue as they started.
    pub inherit: Inherit,
    /// Baselines already computed for this space (`hf-tailor baselines`): used instead of
    /// running those kinds again.
    pub precomputed: Vec<Precomputed>,
    /// With the heal searched: the tokens the written heal is fitted on, and so the healed
    /// baselines' rows beside it (None: the trials' tokens, the space's).
    pub heal_tokens: Option<usize>,
    /// The names of the validation tasks the job's first scorer holds ([`Items::Validation`]):
    /// the finalists are chosen on them instead of on a selection split (empty: none).
    pub selection_tasks: Vec<String>,
}

impl JobSpec {
    /// The items the final choice is made on: the selection tasks, else `optimizer`'s
    /// selection split (`None`: on the search's own items).
    pub fn selection_items(&self, optimizer: &OptimizerConfig) -> Option<Items> {
        if self.selection_tasks.is_empty() {
            optimizer.hold_out.map(Items::Selection)
        } else {
            Some(Items::Validation)
        }
    }
}

/// A baseline's result from an earlier run (`baselines.json` of `hf-tailor baselines`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Precomputed {
    #[serde(rename = "baseline")]
    pub kind: BaselineKind,
    pub removed: Vec<usize>,
    #[serde(default)]
    pub criterion: Vec<f64>,
}

/// Settings a resumed search takes from its journal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inherit {
    pub objective: bool,
    pub hold_out: bool,
}

/// What a job produced.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub outcome: SearchOutcome,
    /// The chosen recipe (see [`select`]).
    pub best: Recipe,
    pub baselines: Vec<Baseline>,
    pub report: SearchReport,
    /// A front search's points, smallest first (empty for one depth).
    pub front: Vec<FrontPoint>,
    /// The baselines at each point's depth, aligned with `front` (so the pipeline can score
    /// them again on held-out items).
    pub front_baselines: Vec<Vec<Baseline>>,
}

/// Progress of the stages after the search (scoring references and baselines).
pub trait JobObserver {
    fn trial(&mut self, _event: &TrialEvent<'_>) {}
    /// A stage starts (`"baseline ShortGPT"`, `"scoring base"`).
    fn stage(&mut self, _what: &str) {}
}

/// Observes nothing.
pub struct Quiet;
impl JobObserver for Quiet {}

fn measure<S: Scorer>(scorer: &mut S, recipe: &Recipe, budget: usize, items: Items, what: &str) -> Result<Measures, SearchError> {
    scorer.measure(recipe, budget, items).map_err(|e| SearchError::Score { what: what.into(), source: Box::new(e) })
}

/// The recipe of one source model at full depth (the base, or a sibling as it is).
pub fn whole_model(space: &SearchSpace, name: &str) -> Recipe {
    let t = &space.template;
    let mut r = Recipe::whole_model(name, &t.architecture, t.source_layers, t.base.clone(), t.siblings.clone());
    r.dtype = t.dtype;
    r
}

/// Run the search, then the baselines, then score base, siblings, baselines and the
/// choice at the full budget. `params(r)` is the parameter count of recipe `r`'s output
/// (its [`crate::layout::Layout`]).
pub fn run_job<S: Scorer>(
    spec: &JobSpec,
    scorer: &mut S,
    params: impl Fn(&Recipe) -> u64,
    observer: &mut dyn JobObserver,
) -> Result<JobResult, SearchError> {
    run_job_with(spec, std::slice::from_mut(scorer), params, observer, None, |journal, scorers, on_trial| {
        run_search(&spec.space, journal, spec.trials, &mut scorers[0], on_trial)
    })
}

/// Opens the storage of a search whose trials workers elsewhere score, given the header
/// this search would write.
pub type OpenStorage<'a> = Box<dyn FnOnce(JournalHeader) -> Result<Box<dyn Storage + 'a>, SearchError> + 'a>;

/// [`run_job`] with the search kept in the storage `open` returns and its trials scored by
/// that storage's workers (see [`run_search_remote`]); `scorer` scores the baselines, the
/// references and the finalists. `spec.journal` and `spec.resume` are not used.
pub fn run_job_remote<S: Scorer>(
    spec: &JobSpec,
    scorer: &mut S,
    params: impl Fn(&Recipe) -> u64,
    observer: &mut dyn JobObserver,
    open: OpenStorage<'_>,
) -> Result<JobResult, SearchError> {
    run_job_with(spec, std::slice::from_mut(scorer), params, observer, Some(open), |storage, _, on_trial| {
        run_search_remote(&spec.space, storage, spec.trials, on_trial)
    })
}

/// [`run_job`] with the search spread over `workers` (see [`run_search_parallel`]); the
/// first worker also scores the baselines, the references and the finalists.
pub fn run_job_parallel<S: Scorer + Send>(
    spec: &JobSpec,
    workers: &mut [Worker<S>],
    params: impl Fn(&Recipe) -> u64,
    observer: &mut dyn JobObserver,
) -> Result<JobResult, SearchError> {
    if workers.is_empty() {
        return Err(SearchError::Space("a search needs at least one worker".into()));
    }
    run_job_with(spec, workers, params, observer, None, |journal, workers, on_trial| {
        run_search_parallel(&spec.space, journal, spec.trials, workers, on_trial)
    })
}

/// A scorer among the job's workers.
trait AsScorer {
    type S: Scorer;
    fn scorer(&mut self) -> &mut Self::S;
}

impl<S: Scorer> AsScorer for S {
    type S = S;
    fn scorer(&mut self) -> &mut S {
        self
    }
}

impl<S: Scorer> AsScorer for Worker<S> {
    type S = S;
    fn scorer(&mut self) -> &mut S {
        &mut self.scorer
    }
}

fn run_job_with<W: AsScorer>(
    spec: &JobSpec,
    workers: &mut [W],
    params: impl Fn(&Recipe) -> u64,
    observer: &mut dyn JobObserver,
    open: Option<OpenStorage<'_>>,
    search: impl FnOnce(&mut dyn Storage, &mut [W], &mut dyn FnMut(&TrialEvent<'_>)) -> Result<SearchOutcome, SearchError>,
) -> Result<JobResult, SearchError> {
    let space = &spec.space;
    let many = workers.len() > 1;
    let scorer = workers[0].scorer();
    if space.is_range() {
        if open.is_some() || many {
            return Err(SearchError::Space("a depth-range (front) search runs on one worker: drop --workers, the device list and --storage".into()));
        }
        return run_front_job(spec, Pick::default(), scorer, params, observer);
    }
    // The baselines first: their removal sets seed the search's initial design.
    let (baselines, baseline_rows) =
        run_baselines_reusing(space, &spec.baselines, &spec.precomputed, &spec.calibration, scorer, spec.optimizer.full_budget(), &params, observer)?;
    let mut optimizer = spec.optimizer.clone();
    optimizer.warm_removals = baselines.iter().map(|b| b.removed.clone()).collect();
    if open.is_none() {
        inherit_from_journal(spec, &mut optimizer);
    }
    let head = header(space, &optimizer, scorer.task_names());
    let mut storage: Box<dyn Storage> = match open {
        Some(open) => open(head)?,
        None if spec.resume => Box::new(Journal::resume(&spec.journal, head)?),
        None => Box::new(Journal::create(&spec.journal, head)?),
    };
    // A study may keep settings the user did not choose (see `Inherit`).
    let optimizer = storage.header().optimizer.clone();
    let mut outcome = search(&mut *storage, workers, &mut |e| observer.trial(e))?;
    storage.close()?;
    drop(storage);
    let scorer = workers[0].scorer();
    let full = optimizer.full_budget();
    let tasks = scorer.task_names();
    // The final choice: on the selection tasks or split when there is one.
    let mut finalists = Vec::new();
    let mut selection_vs_warm = None;
    if let Some(items) = spec.selection_items(&optimizer) {
        let (top, warm) = select::with_best_warm_start(&outcome.trials, select::finalists(&outcome.trials, select::TOP), None);
        let on = selection_name(Some(items));
        let stage = |i: usize, t: usize| format!("scoring finalist {} of {} (trial {}) on {on}", i + 1, top.len(), t + 1);
        let (chosen, rows, vs_warm) = choose_on_selection(scorer, &outcome.trials, &top, warm, items, &optimizer, observer, stage)?;
        outcome.best = chosen;
        finalists = rows;
        selection_vs_warm = vs_warm;
    }
    let mut rows = score_references(space, scorer, full, &params, observer)?;
    rows.extend(baseline_rows);
    rows.extend(healed_baseline_rows(space, spec.heal_tokens, &baselines, scorer, full, &params, observer)?);
    let best_trial = outcome.best_trial();
    let best = best_trial.recipe.clone();
    // Every row is scored on the same items: the first `full` of all calibration items.
    let best_measures = if best_trial.budget == full && optimizer.hold_out.is_none() && !best_trial.measures.is_empty() {
        best_trial.measures.clone()
    } else {
        observer.stage("scoring the choice at the full budget");
        measure(scorer, &best, full, Items::All, "the chosen recipe")?
    };
    rows.push(ModelResult::from_measures("hf-tailor".into(), ResultKind::Tailored, best.layers.len(), params(&best), &best_measures));
    let mut report = search_report(spec, &optimizer, &outcome, tasks, rows, finalists, Vec::new());
    if let Some(o) = report.own_vs_warm.as_mut() {
        o.selection = selection_vs_warm;
    }
    Ok(JobResult { outcome, best, baselines, report, front: Vec::new(), front_baselines: Vec::new() })
}

/// A front search: one study over every depth of `spec.space`, then at every depth the
/// best candidate (chosen on the selection split when there is one) and the baselines,
/// scored on the same items; `pick` chooses the point that becomes `best`.
pub fn run_front_job<S: Scorer>(
    spec: &JobSpec,
    pick: Pick,
    scorer: &mut S,
    params: impl Fn(&Recipe) -> u64,
    observer: &mut dyn JobObserver,
) -> Result<JobResult, SearchError> {
    let space = &spec.space;
    if !spec.precomputed.is_empty() {
        return Err(SearchError::Space("precomputed baselines are for one depth; a front search computes its own".into()));
    }
    let full = spec.optimizer.full_budget();
    let depths: Vec<usize> = space.depths().collect();
    // Baselines at every depth at once: their removal sets seed the search.
    let mut per_kind: Vec<Vec<Baseline>> = Vec::new();
    for kind in &spec.baselines {
        observer.stage(&format!("baseline {} at depths {}..{}", kind.label(), space.keep, space.keep_max));
        per_kind.push(super::baselines::run_baseline_depths(*kind, space, scorer, &spec.calibration)?);
    }
    let mut optimizer = spec.optimizer.clone();
    optimizer.warm_removals = per_kind.iter().flatten().map(|b| b.removed.clone()).collect();
    inherit_from_journal(spec, &mut optimizer);
    let head = header(space, &optimizer, scorer.task_names());
    let mut journal = if spec.resume { Journal::resume(&spec.journal, head)? } else { Journal::create(&spec.journal, head)? };
    let mut outcome = run_search(space, &mut journal, spec.trials, scorer, |e| observer.trial(e))?;
    let tasks = scorer.task_names();
    let mut chosen = select::front(&outcome.trials);
    let mut finalists = Vec::new();
    let mut vs_warm_at = std::collections::BTreeMap::new();
    if let Some(items) = spec.selection_items(&optimizer) {
        for (&k, t) in chosen.iter_mut() {
            let (top, warm) = select::with_best_warm_start(&outcome.trials, select::finalists_at(&outcome.trials, k, select::TOP), Some(k));
            let on = selection_name(Some(items));
            let stage = |_: usize, i: usize| format!("depth {k}: scoring finalist trial {} on {on}", i + 1);
            let (c, rows, vs_warm) = choose_on_selection(scorer, &outcome.trials, &top, warm, items, &optimizer, observer, stage)?;
            *t = c;
            finalists.extend(rows);
            vs_warm_at.insert(k, vs_warm);
        }
    }
    let mut points = Vec::new();
    for &k in &depths {
        let Some(&t) = chosen.get(&k) else { continue };
        observer.stage(&format!("depth {k}: scoring the front's candidate and the baselines at the full budget"));
        let recipe = &outcome.trials[t].recipe;
        let m = measure(scorer, recipe, full, Items::All, "a front candidate")?;
        let tailored = ModelResult::from_measures(format!("hf-tailor keep-{k}"), ResultKind::Tailored, k, params(recipe), &m);
        let mut rows = Vec::new();
        for bs in &per_kind {
            let b = &bs[k - space.keep];
            let m = measure(scorer, &b.recipe, full, Items::All, b.kind.label())?;
            rows.push(ModelResult::from_measures(b.kind.label().into(), ResultKind::Baseline, k, params(&b.recipe), &m));
        }
        points.push(FrontPoint { layers: k, trial: t, tailored, baselines: rows, recipe_file: super::front::recipe_file(k), picked: false });
    }
    let at = super::front::pick(&points, pick).map_err(SearchError::Space)?;
    points[at].picked = true;
    let k = points[at].layers;
    outcome.best = points[at].trial;
    let best = outcome.best_trial().recipe.clone();
    let mut rows = score_references(space, scorer, full, &params, observer)?;
    rows.extend(points[at].baselines.iter().cloned());
    let mut picked = points[at].tailored.clone();
    picked.label = "hf-tailor".into();
    rows.push(picked);
    let baselines: Vec<Baseline> = per_kind.iter().map(|bs| bs[k - space.keep].clone()).collect();
    let mut report = search_report(spec, &optimizer, &outcome, tasks, rows, finalists, points.clone());
    if let Some(o) = report.own_vs_warm.as_mut() {
        o.selection = vs_warm_at.get(&k).copied().flatten();
    }
    let front_baselines = points.iter().map(|p| per_kind.iter().map(|bs| bs[p.layers - space.keep].clone()).collect()).collect();
    Ok(JobResult { outcome, best, baselines, report, front: points, front_baselines })
}

/// With the heal in the space, each baseline's cut healed against the base as well, scored
/// like the others: ShortGPT + heal, and ReplaceMe (arXiv 2505.02819: the angular-distance
/// block, healed), the strongest training-free single-model peers; fitted on `tokens` (the
/// written heal's), else on the space's (the trials').
fn healed_baseline_rows<S: Scorer>(
    space: &SearchSpace,
    tokens: Option<usize>,
    baselines: &[Baseline],
    scorer: &mut S,
    budget: usize,
    params: &dyn Fn(&Recipe) -> u64,
    observer: &mut dyn JobObserver,
) -> Result<Vec<ModelResult>, SearchError> {
    let Some(h) = &space.options.heal else { return Ok(Vec::new()) };
    let mut rows = Vec::new();
    for b in baselines {
        let label = b.kind.healed_label();
        observer.stage(&format!("scoring {label}"));
        let mut r = b.recipe.clone();
        r.heal = Some(Box::new(crate::recipe::Heal::request(crate::recipe::Teacher::Base, tokens.unwrap_or(h.tokens), h.ridge)));
        let m = measure(scorer, &r, budget, Items::All, label)?;
        rows.push(ModelResult::from_measures(label.into(), ResultKind::Baseline, r.layers.len(), params(&r), &m));
    }
    Ok(rows)
}

/// On resume, the settings `spec.inherit` says come from the journal (see [`Inherit`]), and
/// how its schedule treats a guide that reads no item budget (never a user's choice).
fn inherit_from_journal(spec: &JobSpec, optimizer: &mut OptimizerConfig) {
    if !(spec.resume && spec.journal.exists()) {
        return;
    }
    if let Ok((found, _)) = Journal::read(&spec.journal) {
        optimizer.skip_budget_free_rungs = found.optimizer.skip_budget_free_rungs;
        if spec.inherit.objective {
            optimizer.objective = found.optimizer.objective;
        }
        if spec.inherit.hold_out {
            optimizer.hold_out = found.optimizer.hold_out;
        }
    }
}

/// What the final choice is scored on ([`JobSpec::selection_items`]), in words.
pub fn selection_name(items: Option<Items>) -> &'static str {
    match items {
        Some(Items::Validation) => "the selection tasks",
        Some(_) => "the selection split",
        None => "the search's items",
    }
}

/// Score the finalists `top` (trial indices, best first) on `items` (the selection split or
/// tasks) and choose
/// among them (see [`select::choose_finalist`]): the chosen trial, the report rows, and the
/// chosen finalist minus the best warm start (`warm`, a position in `top`) on the selection
/// metric, paired on the same items. `stage(i, t)` names the stage of the `i`-th finalist,
/// trial `t`.
#[allow(clippy::too_many_arguments)]
fn choose_on_selection<S: Scorer>(
    scorer: &mut S,
    trials: &[super::trial::TrialRecord],
    top: &[usize],
    warm: Option<usize>,
    items: Items,
    optimizer: &OptimizerConfig,
    observer: &mut dyn JobObserver,
    stage: impl Fn(usize, usize) -> String,
) -> Result<(usize, Vec<select::Finalist>, Option<crate::score::Estimate>), SearchError> {
    let full = optimizer.full_budget();
    let mut measured = Vec::new();
    for (i, &t) in top.iter().enumerate() {
        observer.stage(&stage(i, t));
        measured.push(measure(scorer, &trials[t].recipe, full, items, "a finalist on the selection items")?);
    }
    let metric = optimizer.objective.select;
    let (chosen, rows) = select::choose_finalist(trials, top, &measured, metric, warm);
    let vs_warm = warm
        .map(|w| crate::score::paired_difference(&measured[chosen], &measured[w], metric).unwrap_or(crate::score::Estimate { value: 0.0, se: 0.0 }));
    Ok((top[chosen], rows, vs_warm))
}

/// The reference rows: the base and every sibling at full depth, scored at `budget` on
/// all items.
fn score_references<S: Scorer>(
    space: &SearchSpace,
    scorer: &mut S,
    budget: usize,
    params: &dyn Fn(&Recipe) -> u64,
    observer: &mut dyn JobObserver,
) -> Result<Vec<ModelResult>, SearchError> {
    let t = &space.template;
    let names = std::iter::once((t.base.name.clone(), ResultKind::Base)).chain(t.siblings.iter().map(|s| (s.name.clone(), ResultKind::Sibling)));
    let mut rows = Vec::new();
    for (name, kind) in names {
        observer.stage(&format!("scoring {name}"));
        let r = whole_model(space, &name);
        let m = measure(scorer, &r, budget, Items::All, &name)?;
        rows.push(ModelResult::from_measures(name, kind, r.layers.len(), params(&r), &m));
    }
    Ok(rows)
}

/// The report of a finished search job.
fn search_report(
    spec: &JobSpec,
    optimizer: &OptimizerConfig,
    outcome: &SearchOutcome,
    tasks: Vec<String>,
    rows: Vec<ModelResult>,
    finalists: Vec<select::Finalist>,
    front: Vec<FrontPoint>,
) -> SearchReport {
    SearchReport {
        tasks,
        budget: optimizer.full_budget(),
        rows,
        progress: outcome
            .trials
            .iter()
            .enumerate()
            .filter(|(_, t)| t.failed.is_none())
            .map(|(i, t)| crate::plot::TrialPoint { trial: i, budget: t.budget, layers: t.recipe.layers.len(), value: t.objective_value() })
            .collect(),
        // The result first, then every other depth's choice of a front.
        chosen: std::iter::once(outcome.best).chain(front.iter().map(|p| p.trial).filter(|&t| t != outcome.best)).collect(),
        selection: match spec.selection_items(optimizer) {
            Some(Items::Validation) => select::TASKS_RULE,
            Some(_) => select::SPLIT_RULE,
            None => select::RULE,
        }
        .into(),
        optimizer: spec.optimizer.kind.name().into(),
        seed: spec.optimizer.seed,
        trials: outcome.trials.len(),
        scoring_seconds: outcome.trials.iter().map(|t| t.seconds).sum(),
        objective: optimizer.objective.name(),
        hold_out: optimizer.hold_out,
        selection_tasks: spec.selection_tasks.clone(),
        finalists,
        about: Vec::new(),
        rows_note: None,
        own_vs_warm: super::report::OwnVsWarm::of(
            &outcome.trials,
            optimizer.full_budget(),
            optimizer.objective.guide,
            (!front.is_empty()).then(|| outcome.best_trial().recipe.layers.len()),
        ),
        front,
    }
}

/// Run `kinds` on `space`'s depth and score each at `budget` on the scorer's tasks.
pub fn run_baselines<S: Scorer>(
    space: &SearchSpace,
    kinds: &[BaselineKind],
    calibration: &[String],
    scorer: &mut S,
    budget: usize,
    params: &dyn Fn(&Recipe) -> u64,
    observer: &mut dyn JobObserver,
) -> Result<(Vec<Baseline>, Vec<ModelResult>), SearchError> {
    run_baselines_reusing(space, kinds, &[], calibration, scorer, budget, params, observer)
}

/// [`run_baselines`], taking the removal sets of `precomputed` baselines of the same kind
/// (checked against the space) instead of computing them again.
#[allow(clippy::too_many_arguments)]
pub fn run_baselines_reusing<S: Scorer>(
    space: &SearchSpace,
    kinds: &[BaselineKind],
    precomputed: &[Precomputed],
    calibration: &[String],
    scorer: &mut S,
    budget: usize,
    params: &dyn Fn(&Recipe) -> u64,
    observer: &mut dyn JobObserver,
) -> Result<(Vec<Baseline>, Vec<ModelResult>), SearchError> {
    let mut baselines = Vec::new();
    let mut rows = Vec::new();
    let l = space.source_layers();
    for kind in kinds {
        let b = match precomputed.iter().find(|b| b.kind == *kind) {
            Some(b) => {
                if b.removed.len() != l - space.keep || b.removed.iter().any(|&r| r >= l) {
                    return Err(SearchError::Space(format!(
                        "the precomputed {} baseline removes layers {:?}; this search keeps {} of {l}",
                        kind.label(),
                        b.removed,
                        space.keep
                    )));
                }
                let kept: Vec<usize> = (0..l).filter(|i| !b.removed.contains(i)).collect();
                Baseline {
                    kind: b.kind,
                    removed: b.removed.clone(),
                    criterion: b.criterion.clone(),
                    recipe: space.to_recipe(&space.base_only(&kept)),
                }
            }
            None => {
                observer.stage(&format!("baseline {}", kind.label()));
                run_baseline(*kind, space, scorer, calibration)?
            }
        };
        let m = measure(scorer, &b.recipe, budget, Items::All, kind.label())?;
        let layers = b.recipe.layers.len();
        rows.push(ModelResult::from_measures(kind.label().into(), ResultKind::Baseline, layers, params(&b.recipe), &m));
        baselines.push(b);
    }
    Ok((baselines, rows))
}

/// The recipe file the next stage (`hf-tailor build`) reads.
pub const RECIPE_FILE: &str = "tailor.yaml";

/// Write `tailor.yaml`, the report files and one recipe per baseline (`baselines/NAME.yaml`) into `dir`.
pub fn write_outputs(result: &JobResult, dir: &Path) -> Result<(), SearchError> {
    let werr = |p: &Path| {
        let p = p.display().to_string();
        move |source| SearchError::Write { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(werr(dir))?;
    save(&result.best, &dir.join(RECIPE_FILE))?;
    if !result.front.is_empty() {
        let fdir = dir.join(super::front::FRONT_DIR);
        std::fs::create_dir_all(&fdir).map_err(werr(&fdir))?;
        for p in &result.front {
            save(&result.outcome.trials[p.trial].recipe, &dir.join(&p.recipe_file))?;
        }
    }
    if !result.baselines.is_empty() {
        let bdir = dir.join("baselines");
        std::fs::create_dir_all(&bdir).map_err(werr(&bdir))?;
        for b in &result.baselines {
            save(&b.recipe, &bdir.join(format!("{}.yaml", b.kind.stem())))?;
        }
    }
    result.report.write(dir)
}

/// Save a recipe, mapping the error into the search's.
pub fn save(recipe: &Recipe, path: &Path) -> Result<(), SearchError> {
    recipe.save(path).map_err(|e| SearchError::Write { path: path.display().to_string(), source: std::io::Error::other(e.to_string()) })
}
