//! A search, assembled in one place: the root command, `search`, `demo` and `bench` each
//! describe the search they want as one [`SearchRequest`], and this module turns it into
//! the job: sources → family → depths → space → optimiser → [`JobSpec`]. Every rule about
//! those choices (a depth range, a pick inside it, the selection split, the default
//! objective and what it needs, the parameter count) is decided here, once; a violation is
//! a [`PipelineError::Plan`], which the command line reports as a usage error (exit 2).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::Family;
use crate::eval::{Task, TaskData};
use crate::layout::Layout;
use crate::recipe::{EdgePolicy, Recipe, SourceModel};
use crate::score::{HoldOut, Metric};
use crate::search::baselines::BaselineKind;
use crate::search::front::Pick;
use crate::search::job::{Inherit, JobSpec, Precomputed};
use crate::search::{
    default_objective, DepthTarget, Objective, OptimizerConfig, OptimizerKind, RecipeTemplate, Scalarization, SearchSpace, SpaceOptions,
    DEFAULT_SELECTION_FRACTION,
};

use super::PipelineError;

/// What the root command removes when no depth is given.
pub const DEFAULT_REMOVE_RATIO: f64 = 0.25;

/// How deep the tailored model is: one depth, or the two ends of a range of depths (a
/// size–quality front from one search).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Depths {
    pub from: DepthTarget,
    /// The other end of a front (`None`: one depth).
    pub to: Option<DepthTarget>,
}

impl Default for Depths {
    fn default() -> Self {
        Self::one(DepthTarget::RemoveRatio(DEFAULT_REMOVE_RATIO))
    }
}

impl Depths {
    pub fn one(depth: DepthTarget) -> Self {
        Self { from: depth, to: None }
    }

    /// The depths from `a` to `b`; one depth when they are equal.
    pub fn between(a: DepthTarget, b: DepthTarget) -> Self {
        Self { from: a, to: (a != b).then_some(b) }
    }

    /// The depth flags as the command line gives them (a range `A..B` as both ends), or
    /// `None` when none is given.
    pub fn from_flags(keep_layers: Option<(usize, usize)>, remove_ratio: Option<(f64, f64)>, max_params: Option<u64>) -> Option<Self> {
        match (keep_layers, remove_ratio, max_params) {
            (Some((a, b)), _, _) => Some(Self::between(DepthTarget::KeepLayers(a), DepthTarget::KeepLayers(b))),
            (_, Some((a, b)), _) => Some(Self::between(DepthTarget::RemoveRatio(a), DepthTarget::RemoveRatio(b))),
            (_, _, Some(p)) => Some(Self::one(DepthTarget::MaxParams(p))),
            _ => None,
        }
    }

    pub fn is_range(&self) -> bool {
        self.to.is_some()
    }

    /// The depth that keeps the most layers (a front's memory is its deepest point's).
    pub fn deepest(&self) -> DepthTarget {
        match (self.from, self.to) {
            (DepthTarget::KeepLayers(a), Some(DepthTarget::KeepLayers(b))) => DepthTarget::KeepLayers(a.max(b)),
            (DepthTarget::RemoveRatio(a), Some(DepthTarget::RemoveRatio(b))) => DepthTarget::RemoveRatio(a.min(b)),
            (d, _) => d,
        }
    }

    /// A pick chooses a point of a front: without a range it is a mistake.
    fn check_pick(&self, pick: Option<Pick>) -> Result<(), PipelineError> {
        if pick.is_some() && !self.is_range() {
            return Err(PipelineError::Plan(
                "--pick and --pick-max-params choose a point of a front: give a depth range (--keep-layers A..B)".into(),
            ));
        }
        Ok(())
    }

    /// The kept-layer range (smallest, largest; equal for one depth) out of `source_layers`,
    /// with `pick` checked against it: a depth inside the front, or a parameter bound the
    /// smallest depth can meet.
    pub fn resolve(
        &self,
        source_layers: usize,
        total_params: impl Fn(usize) -> u64 + Copy,
        pick: Option<Pick>,
    ) -> Result<(usize, usize), PipelineError> {
        self.check_pick(pick)?;
        let a = self.from.keep_layers(source_layers, total_params)?;
        let b = match self.to {
            Some(d) => d.keep_layers(source_layers, total_params)?,
            None => a,
        };
        let (keep, keep_max) = (a.min(b), a.max(b));
        match pick {
            Some(Pick::Layers(k)) if !(keep..=keep_max).contains(&k) => {
                Err(PipelineError::Plan(format!("--pick {k} is outside the front's depths {keep}..{keep_max}")))
            }
            // A lower bound: an untied output head only adds parameters.
            Some(Pick::MaxParams(n)) if n < total_params(keep) => Err(PipelineError::Plan(format!(
                "--pick-max-params {n}: no point of the front is that small (keeping {keep} layers needs {})",
                total_params(keep)
            ))),
            _ => Ok((keep, keep_max)),
        }
    }
}

/// Every choice of a search, as the commands state it; the defaults are the root command's.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub depths: Depths,
    /// Which point of a front is used (`None`: the default rule; only with a range).
    pub pick: Option<Pick>,
    pub space: SpaceOptions,
    /// Where embeddings and the output head come from.
    pub edges: EdgePolicy,
    pub optimizer: OptimizerKind,
    /// Item budgets of the search's fidelities (None: the reference's 111/333/1000).
    pub budgets: Option<Vec<usize>>,
    pub scalarization: Scalarization,
    /// What the search optimises (None: [`default_objective`]; on resume, the journal's).
    pub objective: Option<Objective>,
    /// Fraction of calibration items held out for the final selection (None: the default,
    /// or the journal's on resume; Some(0.0): off).
    pub selection_split: Option<f64>,
    /// The names of the search's selection tasks, a validation set of their own that its
    /// finalists are chosen on instead of a split of the calibration tasks (empty: none).
    /// The scorer that chooses holds them ([`crate::eval::Evaluator::set_selection_tasks`]).
    pub selection_tasks: Vec<String>,
    pub seed: u64,
    pub trials: usize,
    pub baselines: Vec<BaselineKind>,
    /// Baselines already computed for this space (`hf-tailor baselines`).
    pub precomputed: Vec<Precomputed>,
    /// Continue the journal of an interrupted search.
    pub resume: bool,
    /// Heal the chosen candidate (`--heal on`): a map per gap fitted against a teacher,
    /// fused into down_proj ([`crate::heal`]); None: off.
    pub heal: Option<HealRequest>,
}

/// What `--heal` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealMode {
    /// `on`: heal the chosen candidate.
    On,
    /// `auto`: heal the chosen candidate, kept only when the healed model scores better than
    /// the unhealed one by the objective's selection metric, on the selection split (else on
    /// the search's items at the full budget). A heal fitted to a teacher can lose on the tasks.
    Auto,
    /// `search`: the heal and its teacher are dimensions of the space; each healed candidate
    /// is fitted and scored in memory, and the chosen one is healed as the search chose.
    Search,
}

/// How the search heals (`--heal on|auto|search`, `--heal-teacher`, `--heal-tokens`,
/// `--heal-ridge`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealRequest {
    /// The teacher (`on`, `auto`: exactly one), or the teachers the search chooses among.
    pub teachers: Vec<crate::recipe::Teacher>,
    /// Calibration tokens to fit the written heal on.
    pub tokens: usize,
    /// `search`: calibration tokens of each trial's fit (its fidelity; at most `tokens`).
    pub search_tokens: usize,
    pub ridge: f64,
    pub mode: HealMode,
    /// Texts to fit on (`--heal-calibration`), in place of the calibration texts or items.
    pub calibration: Option<Vec<String>>,
}

impl Default for HealRequest {
    fn default() -> Self {
        Self {
            teachers: vec![crate::recipe::Teacher::Average],
            tokens: crate::heal::DEFAULT_TOKENS,
            search_tokens: crate::heal::DEFAULT_SEARCH_TOKENS,
            ridge: crate::heal::DEFAULT_RIDGE,
            mode: HealMode::On,
            calibration: None,
        }
    }
}

impl HealRequest {
    /// The space's heal dimension (`search` only).
    pub fn space(&self) -> Option<crate::search::space::HealSpace> {
        (self.mode == HealMode::Search).then(|| crate::search::space::HealSpace {
            teachers: self.teachers.clone(),
            tokens: self.trial_tokens(),
            ridge: self.ridge,
        })
    }

    /// The tokens of a search trial's fit: `search_tokens`, never more than `tokens`.
    pub fn trial_tokens(&self) -> usize {
        self.search_tokens.min(self.tokens)
    }
}

/// `--heal auto`'s comparison: (healed, unhealed) values of `job`'s selection metric
/// (higher is better), on the items its final choice is made on (the selection tasks or
/// split) when there are some, else on the first full-budget items.
pub fn compare_heal(scorer: &mut crate::eval::Evaluator, unhealed: &Recipe, healed: &Recipe, job: &JobSpec) -> Result<(f64, f64), PipelineError> {
    use crate::score::{Items, Scorer};
    let optimizer = &job.optimizer;
    let (items, budget) = match job.selection_items(optimizer) {
        Some(items) => (items, usize::MAX),
        None => (Items::All, optimizer.budgets.last().copied().unwrap_or(usize::MAX)),
    };
    let metric = optimizer.objective.select;
    let mut value = |r: &Recipe| -> Result<f64, PipelineError> {
        let m = scorer.measure(r, budget, items)?;
        Ok(crate::search::objective::overall(&m, metric)?.value)
    };
    Ok((value(healed)?, value(unhealed)?))
}

/// The heal's calibration texts: the tasks' calibration texts when they have some, else
/// each multiple-choice item's context with its correct answer, never an item of the
/// selection split `hold_out` (nor anything held out for the report: the caller passes the
/// search's side of the tasks).
fn heal_texts(tasks: &[Task], hold_out: Option<HoldOut>) -> Vec<String> {
    let mask = |t: &Task, n: usize| hold_out.map(|h| h.selection_mask(&t.name, n)).unwrap_or_else(|| vec![false; n]);
    let kept = |t: &Task, xs: Vec<String>| -> Vec<String> {
        let m = mask(t, xs.len());
        xs.into_iter().zip(m).filter(|(_, held)| !held).map(|(x, _)| x).collect()
    };
    // Task by task in turn, so that --heal-tokens draws on every task.
    let texts = crate::heal::interleave(
        tasks
            .iter()
            .map(|t| match &t.data {
                TaskData::Perplexity(texts) => kept(t, texts.clone()),
                TaskData::MultipleChoice(_) => Vec::new(),
            })
            .collect(),
    );
    if !texts.is_empty() {
        return texts;
    }
    crate::heal::interleave(
        tasks
            .iter()
            .map(|t| match &t.data {
                TaskData::MultipleChoice(items) => {
                    kept(t, items.iter().map(|i| i.choices.get(i.label).map(|c| format!("{}{c}", i.context)).unwrap_or_default()).collect())
                        .into_iter()
                        .filter(|x| !x.is_empty())
                        .collect()
                }
                TaskData::Perplexity(_) => Vec::new(),
            })
            .collect(),
    )
}

/// The texts a job's heal is fitted on, by one rule for every process that fits one (the
/// search, the main job, a study's workers and its coordinator): `--heal-calibration`'s texts
/// when given, else the `--calibration` texts, else the tasks' own ([`heal_texts`]: their
/// texts, else their items, never the selection split `hold_out`).
pub fn heal_calibration_texts(
    heal_calibration: Option<Vec<String>>,
    calibration: Option<Vec<String>>,
    tasks: &[Task],
    hold_out: Option<HoldOut>,
) -> Vec<String> {
    heal_calibration.or(calibration).unwrap_or_else(|| heal_texts(tasks, hold_out))
}

/// Give every scorer of a `--heal search` the heal's calibration `texts` (see
/// [`heal_calibration_texts`]) before the search scores its first healed candidate, the
/// trials' tokens (their first [`HealRequest::trial_tokens`]) encoded once for all of them.
/// Returns the sha256 of those tokens (a study's workers must fit on the same). Nothing to do
/// for other modes.
pub fn prepare_heal_search<'a>(
    req: Option<&HealRequest>,
    scorers: impl IntoIterator<Item = &'a mut crate::eval::Evaluator>,
    texts: &[String],
) -> Result<Option<String>, PipelineError> {
    let Some(req) = req.filter(|r| r.mode == HealMode::Search) else { return Ok(None) };
    let mut scorers: Vec<_> = scorers.into_iter().collect();
    let Some((first, rest)) = scorers.split_first_mut() else { return Ok(None) };
    first.set_heal_calibration(texts.to_vec());
    let seqs = match first.heal_calibration_sequences(req.trial_tokens()) {
        Ok(s) => s,
        Err(crate::eval::EvalError::Heal(crate::heal::HealError::Input(_))) => {
            return Err(PipelineError::Plan("--heal search: no calibration text to fit the heal on".into()))
        }
        Err(e) => return Err(e.into()),
    };
    for scorer in rest {
        scorer.share_heal_calibration(first);
    }
    Ok(Some(crate::heal::tokens_sha256(&seqs)))
}

/// What [`heal_chosen`] did.
pub struct HealOutcome {
    /// The recipe to keep: healed, or `best` as it was (`--heal auto` found the heal worse,
    /// or `--heal search` chose no heal).
    pub recipe: Recipe,
    /// The fit, when there was one.
    pub fit: Option<crate::eval::HealFit>,
    /// Lines to show (the comparison of `--heal auto`, the unhealed leading layers).
    pub notes: Vec<String>,
}

/// Heal `best` as `req` asks, fitted on the job's heal calibration `texts` (see
/// [`heal_calibration_texts`]), writing its maps to `out`/[`crate::heal::MAPS_FILE`] (beside the
/// `tailor.yaml` the job writes there); the healed recipe is scored in memory by `scorer`
/// from now on. With `--heal auto` the heal is kept only if [`compare_heal`] finds it better;
/// with `--heal search` `best` is healed as the search chose (its heal request), or not at all.
pub fn heal_chosen(
    scorer: &mut crate::eval::Evaluator,
    best: &Recipe,
    texts: &[String],
    job: &JobSpec,
    req: &HealRequest,
    out: &Path,
) -> Result<HealOutcome, PipelineError> {
    let (teacher, tokens, ridge) = match (req.mode, best.heal.as_deref()) {
        (HealMode::Search, None) => {
            return Ok(HealOutcome { recipe: best.clone(), fit: None, notes: vec!["--heal search: the chosen candidate is unhealed".into()] })
        }
        (HealMode::Search, Some(h)) => (h.teacher.clone(), req.tokens, h.ridge),
        _ => (req.teachers.first().cloned().unwrap_or(crate::recipe::Teacher::Average), req.tokens, req.ridge),
    };
    // The texts the search's trials were fitted on (`prepare_heal_search`), to `tokens`: with
    // `--heal search` the chosen candidate is fitted again at full fidelity, unless its
    // trials already fitted on as many.
    let seqs = scorer.heal_sequences(texts, tokens)?;
    let fit = scorer.fit_heal(best, &teacher, &seqs, ridge)?;
    let mut notes = Vec::new();
    if req.mode == HealMode::Search {
        let refit = match req.trial_tokens() < req.tokens {
            true => format!(" on {} tokens (its trials: {})", fit.recipe.heal.as_ref().map_or(0, |h| h.tokens), req.trial_tokens()),
            false => String::new(),
        };
        notes.push(format!("--heal search: the chosen candidate is healed against {teacher}{refit}"));
    }
    if !fit.unhealed.is_empty() {
        notes
            .push(format!("source layers {:?} are removed before the first kept layer: no layer precedes them, so they stay unhealed", fit.unhealed));
    }
    let mut healed = fit.recipe.clone();
    let path = out.join(crate::heal::MAPS_FILE);
    if let Some(h) = &mut healed.heal {
        h.sha256 = crate::heal::write_maps(&path, &fit.maps, scorer.family().base.config.hidden_size).map_err(crate::eval::EvalError::from)?;
        h.file = path.clone();
    }
    let unhealed = Recipe { heal: None, ..best.clone() };
    if req.mode == HealMode::Auto && healed.heal.is_some() {
        let (with, without) = compare_heal(scorer, &unhealed, &healed, job)?;
        let metric = job.optimizer.objective.select.name();
        let on = crate::search::job::selection_name(job.selection_items(&job.optimizer));
        if with <= without {
            notes.push(format!(
                "--heal auto: the heal does not help ({metric} {with:.5} healed vs {without:.5} without, on {on}): the chosen model stays unhealed"
            ));
            let _ = std::fs::remove_file(&path);
            return Ok(HealOutcome { recipe: unhealed, fit: Some(fit), notes });
        }
        notes.push(format!("--heal auto: the heal helps ({metric} {with:.5} healed vs {without:.5} without, on {on}): kept"));
    }
    Ok(HealOutcome { recipe: healed, fit: Some(fit), notes })
}

impl Default for SearchRequest {
    fn default() -> Self {
        Self {
            depths: Depths::default(),
            pick: None,
            space: SpaceOptions::default(),
            edges: EdgePolicy::FollowLayers,
            optimizer: OptimizerKind::Local,
            budgets: None,
            scalarization: Scalarization::Mean,
            objective: None,
            selection_split: None,
            selection_tasks: Vec::new(),
            seed: 0,
            trials: 500,
            baselines: vec![BaselineKind::Shortgpt],
            precomputed: Vec::new(),
            resume: false,
            heal: None,
        }
    }
}

impl SearchRequest {
    /// A search over `depths`, otherwise the defaults: a front is compared with every
    /// baseline at every depth (ShortGPT and angular from one pass, SLEB's greedy order),
    /// one depth with ShortGPT.
    pub fn new(depths: Depths) -> Self {
        let baselines = if depths.is_range() { BaselineKind::ALL.to_vec() } else { vec![BaselineKind::Shortgpt] };
        Self { depths, baselines, ..Self::default() }
    }

    /// The checks that need no model, so that a command makes them before anything is
    /// downloaded or opened (the same checks the later steps make).
    pub fn check(&self) -> Result<(), PipelineError> {
        self.depths.check_pick(self.pick)?;
        if self.trials == 0 {
            return Err(PipelineError::Plan("--trials must be at least 1".into()));
        }
        self.hold_out()?;
        if self.depths.is_range() && self.heal.as_ref().is_some_and(|h| h.mode == HealMode::Search) {
            return Err(PipelineError::Plan(
                "--heal search searches one depth: give --keep-layers N (or heal a front's choice with --heal on)".into(),
            ));
        }
        Ok(())
    }

    /// The selection split (None: off, or selection tasks of their own instead).
    fn hold_out(&self) -> Result<Option<HoldOut>, PipelineError> {
        if !self.selection_tasks.is_empty() {
            return match self.selection_split {
                Some(f) if f != 0.0 => {
                    Err(PipelineError::Plan("--selection-split and --selection-tasks are two ways to choose the final candidate: give one".into()))
                }
                _ => Ok(None),
            };
        }
        match self.selection_split.unwrap_or(DEFAULT_SELECTION_FRACTION) {
            0.0 => Ok(None),
            f if f > 0.0 && f < 1.0 => Ok(Some(HoldOut { fraction: f, seed: self.seed })),
            f => Err(PipelineError::Plan(format!("--selection-split must be 0 (off) or a fraction in (0, 1), got {f}"))),
        }
    }

    /// Selection tasks that can score `optimizer`'s selection metric: texts for `ppl`,
    /// multiple-choice items for the others.
    pub fn check_selection_tasks(optimizer: &OptimizerConfig, tasks: &[Task]) -> Result<(), PipelineError> {
        let metric = optimizer.objective.select;
        let texts = metric == Metric::Ppl;
        if !tasks.iter().any(|t| matches!(t.data, TaskData::Perplexity(_)) == texts) {
            let kind = if texts { "text task (`ppl=FILE`)" } else { "multiple-choice task" };
            return Err(PipelineError::Plan(format!("--selection-tasks has no {kind} to choose the final candidate by `{}` on", metric.name())));
        }
        Ok(())
    }

    /// The search space over `family`, whose models the recipes call `base` and `siblings`.
    pub fn space(&self, family: &Family, base: SourceModel, siblings: Vec<SourceModel>) -> Result<SearchSpace, PipelineError> {
        let config = &family.base.config;
        let (keep, keep_max) = self.depths.resolve(config.num_hidden_layers, |k| config.total_params(k), self.pick)?;
        let template = RecipeTemplate::for_family(family, base, siblings, self.edges);
        let mut options = self.space.clone();
        options.heal = self.heal.as_ref().and_then(HealRequest::space);
        Ok(SearchSpace::with_depths(template, keep, keep_max, options)?)
    }

    /// The optimiser for calibration `tasks`: the default objective follows whether they
    /// hold calibration texts, and an objective that scores texts needs some.
    pub fn optimizer(&self, tasks: &[Task]) -> Result<OptimizerConfig, PipelineError> {
        let has_texts = tasks.iter().any(|t| matches!(t.data, TaskData::Perplexity(_)));
        let mut optimizer = OptimizerConfig::new(self.optimizer, self.seed);
        if let Some(b) = &self.budgets {
            optimizer.budgets = b.clone();
        }
        optimizer.scalarization = self.scalarization;
        optimizer.objective = self.objective.unwrap_or_else(|| default_objective(has_texts));
        let o = optimizer.objective;
        if (o.guide == Metric::Ppl || o.select == Metric::Ppl) && !has_texts {
            return Err(PipelineError::Plan(format!("--objective {} needs calibration texts to score: add a `ppl=FILE` task to --tasks", o.name())));
        }
        optimizer.hold_out = self.hold_out()?;
        optimizer.validate()?;
        Ok(optimizer)
    }

    /// The job: `space` searched on `tasks` with `journal`; `calibration` feeds the baselines.
    pub fn job(&self, space: SearchSpace, tasks: &[Task], calibration: Vec<String>, journal: PathBuf) -> Result<JobSpec, PipelineError> {
        Ok(JobSpec {
            space,
            optimizer: self.optimizer(tasks)?,
            trials: self.trials,
            journal,
            resume: self.resume,
            baselines: self.baselines.clone(),
            calibration,
            // With selection tasks the search sees every calibration item: no split to inherit.
            inherit: Inherit { objective: self.objective.is_none(), hold_out: self.selection_split.is_none() && self.selection_tasks.is_empty() },
            precomputed: self.precomputed.clone(),
            heal_tokens: self.heal.as_ref().filter(|h| h.mode == HealMode::Search).map(|h| h.tokens),
            selection_tasks: self.selection_tasks.clone(),
        })
    }

    /// The point of a front to use (the default rule when none was asked for).
    pub fn pick(&self) -> Pick {
        self.pick.unwrap_or_default()
    }
}

/// The parameter count of a recipe's output model over `family` (0 when it does not fit).
pub fn params(family: Arc<Family>) -> impl Fn(&Recipe) -> u64 {
    move |r: &Recipe| Layout::for_family(&family, r).map(|l| l.total_params()).unwrap_or_default()
}

/// The search journal's name in an output folder.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// [`JOURNAL_FILE`] under `out` unless another journal is named.
pub fn journal_in(out: &Path, journal: Option<&Path>) -> PathBuf {
    journal.map(Path::to_path_buf).unwrap_or_else(|| out.join(JOURNAL_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(k: usize) -> u64 {
        100 * k as u64
    }

    #[test]
    fn a_searched_heal_fits_its_trials_on_at_most_the_written_heals_tokens() {
        let mut req = HealRequest { mode: HealMode::Search, ..HealRequest::default() };
        assert_eq!((req.tokens, req.trial_tokens()), (16384, 4096), "the defaults");
        assert_eq!(req.space().unwrap().tokens, 4096, "the space's heal is the trials'");
        req.tokens = 1000;
        assert_eq!(req.trial_tokens(), 1000, "never more than the written heal's");
        req.mode = HealMode::On;
        assert!(req.space().is_none(), "only a searched heal is in the space");
    }

    #[test]
    fn a_range_resolves_smallest_first_and_checks_the_pick() {
        let keep = Depths::between(DepthTarget::KeepLayers(3), DepthTarget::KeepLayers(6));
        assert_eq!(keep.resolve(8, params, None).unwrap(), (3, 6));
        assert_eq!(keep.deepest(), DepthTarget::KeepLayers(6));
        // More removed is fewer kept: a ratio range resolves to the same order.
        let ratio = Depths::between(DepthTarget::RemoveRatio(0.25), DepthTarget::RemoveRatio(0.5));
        assert_eq!(ratio.resolve(8, params, None).unwrap(), (4, 6));
        assert_eq!(ratio.deepest(), DepthTarget::RemoveRatio(0.25));
        let e = keep.resolve(8, params, Some(Pick::Layers(7))).unwrap_err().to_string();
        assert_eq!(e, "--pick 7 is outside the front's depths 3..6");
        assert!(keep.resolve(8, params, Some(Pick::MaxParams(299))).unwrap_err().to_string().contains("--pick-max-params 299"));
        assert_eq!(keep.resolve(8, params, Some(Pick::MaxParams(300))).unwrap(), (3, 6));
        assert!(Depths::one(DepthTarget::KeepLayers(9)).resolve(8, params, None).unwrap_err().to_string().contains("cannot keep 9 of 8"));
        assert_eq!(Depths::between(DepthTarget::KeepLayers(4), DepthTarget::KeepLayers(4)), Depths::one(DepthTarget::KeepLayers(4)));
    }

    #[test]
    fn each_flag_is_checked_once_before_any_model_is_opened() {
        let ok = SearchRequest::default();
        ok.check().unwrap();
        let with = |f: &dyn Fn(&mut SearchRequest)| {
            let mut r = SearchRequest::default();
            f(&mut r);
            r.check().unwrap_err().to_string()
        };
        assert!(with(&|r| r.pick = Some(Pick::Layers(3))).contains("give a depth range"));
        assert!(with(&|r| r.trials = 0).contains("--trials"));
        assert!(with(&|r| r.selection_split = Some(1.0)).contains("--selection-split must be 0 (off) or a fraction in (0, 1), got 1"));
        assert!(with(&|r| r.selection_split = Some(-0.1)).contains("--selection-split"));
        let off = SearchRequest { selection_split: Some(0.0), ..SearchRequest::default() };
        assert_eq!(off.hold_out().unwrap(), None);
        assert_eq!(ok.hold_out().unwrap().map(|h| h.fraction), Some(DEFAULT_SELECTION_FRACTION));
        // Selection tasks of their own replace the split: none by default, none inherited from
        // a journal on resume (the search sees every item), and never both.
        let tasks = SearchRequest { selection_tasks: vec!["dev".into()], ..SearchRequest::default() };
        assert_eq!(tasks.hold_out().unwrap(), None);
        assert_eq!(SearchRequest { selection_split: Some(0.0), ..tasks.clone() }.hold_out().unwrap(), None);
        assert!(with(&|r| {
            r.selection_tasks = vec!["dev".into()];
            r.selection_split = Some(0.3);
        })
        .contains("--selection-split and --selection-tasks are two ways"));
    }

    #[test]
    fn selection_tasks_must_score_the_selection_metric() {
        use crate::eval::McItem;
        let mc = Task::new(
            "mc",
            TaskData::MultipleChoice(vec![McItem { context: "a".into(), choices: vec!["b".into(), "c".into()], label: 0, subject: None }]),
        );
        let text = Task::new("text", TaskData::Perplexity(vec!["some text".into()]));
        let mut optimizer = OptimizerConfig::new(OptimizerKind::Local, 0);
        for (select, ok, refused) in [(Metric::Ppl, &text, &mc), (Metric::Acc, &mc, &text), (Metric::Loglik, &mc, &text)] {
            optimizer.objective = Objective::of(select);
            SearchRequest::check_selection_tasks(&optimizer, std::slice::from_ref(ok)).unwrap();
            let e = SearchRequest::check_selection_tasks(&optimizer, std::slice::from_ref(refused)).unwrap_err().to_string();
            assert!(e.contains("--selection-tasks has no") && e.contains(select.name()), "{e}");
        }
    }
}
