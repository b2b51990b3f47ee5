//! The search loop: ask the optimiser, score the candidate (or take the journaled result
//! when replaying a resumed search), journal it, tell the optimiser.

use std::time::Instant;

use crate::score::{accuracies, mean_score, Items, LayerWork, Measures, Scorer, TaskScores};

use super::journal::{Journal, JournalHeader, TrialRecord, FORMAT};
use super::objective;
use super::optimizer::{Optimizer, OptimizerConfig};
use super::select::{choose, incumbent_curve};
use super::space::SearchSpace;
use super::SearchError;

/// What the loop reports after every trial (for progress bars).
#[derive(Debug, Clone)]
pub struct TrialEvent<'a> {
    pub trial: &'a TrialRecord,
    pub done: usize,
    pub total: usize,
    /// Mean accuracy of the current choice (see [`choose`]).
    pub best: Option<f64>,
    /// The objective's value of the current choice.
    pub best_objective: Option<f64>,
    /// True when the result came from the journal, not from the scorer.
    pub replayed: bool,
}

/// The result of a search.
#[derive(Debug, Clone)]
pub struct SearchOutcome {
    pub trials: Vec<TrialRecord>,
    /// Index into `trials` of the chosen candidate.
    pub best: usize,
    /// Mean accuracy of the choice after each trial.
    pub curve: Vec<Option<f64>>,
}

impl SearchOutcome {
    /// Layer applications run and saved over the trials that report them (journaled
    /// trials of a resumed search included).
    pub fn layer_work(&self) -> Option<LayerWork> {
        self.trials.iter().filter_map(|t| t.layers).fold(None, |acc, w| {
            let a = acc.unwrap_or_default();
            Some(LayerWork { run: a.run + w.run, saved: a.saved + w.saved })
        })
    }
}

impl SearchOutcome {
    pub fn best_trial(&self) -> &TrialRecord {
        &self.trials[self.best]
    }
}

/// The journal header this search writes (and requires on resume).
pub fn header(space: &SearchSpace, cfg: &OptimizerConfig, tasks: Vec<String>) -> JournalHeader {
    JournalHeader {
        format: FORMAT.into(),
        tasks,
        template: space.template.clone(),
        keep: space.keep,
        space: space.options.clone(),
        optimizer: cfg.clone(),
    }
}

/// Run `trials` trials (counting those already in `journal`) and choose the result.
/// `journal` must have been opened with [`header`] of the same inputs.
pub fn run_search<S: Scorer>(
    space: &SearchSpace,
    journal: &mut Journal,
    trials: usize,
    scorer: &mut S,
    mut on_trial: impl FnMut(&TrialEvent<'_>),
) -> Result<SearchOutcome, SearchError> {
    let cfg = journal.header.optimizer.clone();
    cfg.validate()?;
    let tasks = journal.header.tasks.clone();
    if scorer.task_names() != tasks {
        return Err(SearchError::Space(format!("the scorer's tasks {:?} are not the journal's {:?}", scorer.task_names(), tasks)));
    }
    if trials == 0 {
        return Err(SearchError::Space("--trials must be at least 1".into()));
    }
    let guide = cfg.objective.guide;
    let items = cfg.hold_out.map_or(Items::All, Items::Search);
    let mut opt = Optimizer::new(space, cfg, tasks.clone());
    let journaled = journal.trials.clone();
    let mut done: Vec<TrialRecord> = Vec::with_capacity(trials);
    for index in 0..trials.max(journaled.len()) {
        let p = opt.ask();
        let (record, replayed) = match journaled.get(index) {
            Some(j) => {
                let same = j.budget == p.budget && space.from_recipe(&j.recipe).ok().as_ref() == Some(&p.candidate);
                if !same {
                    return Err(SearchError::Journal {
                        path: journal.path().display().to_string(),
                        message: format!("trial {index} differs from what this search proposes; the journal was written by other inputs"),
                    });
                }
                (j.clone(), true)
            }
            None => {
                let recipe = space.to_recipe(&p.candidate);
                let start = Instant::now();
                let work_before = scorer.layer_work();
                // A candidate with non-finite scores is journaled as failed (the worst value
                // seen), never compared; any other scoring error stops the search.
                let (measures, failed) = match scorer.measure(&recipe, p.budget, items) {
                    Ok(m) => (m, None),
                    Err(e) => match crate::score::non_finite_cause(&e) {
                        Some(n) => (Measures::default(), Some(n.to_string())),
                        None => return Err(SearchError::Score { what: format!("trial {index}"), source: Box::new(e) }),
                    },
                };
                let seconds = start.elapsed().as_secs_f64();
                let layers = scorer.layer_work().zip(work_before).map(|(after, before)| after.since(before));
                let (scores, value) = match &failed {
                    None => (accuracies(&measures), Some(objective::overall(&measures, guide)?)),
                    Some(_) => (tasks.iter().map(|t| (t.clone(), 0.0)).collect(), None),
                };
                let record = TrialRecord {
                    index,
                    origin: p.origin,
                    budget: p.budget,
                    mean: mean_score(&scores),
                    scores,
                    seconds,
                    layers,
                    recipe,
                    objective: value,
                    measures,
                    failed,
                };
                // Tell the optimiser exactly what a replay will read back from the journal.
                let record = json_round_trip(&record);
                journal.append(record.clone())?;
                (record, false)
            }
        };
        let told =
            if record.failed.is_some() { worst_values(&done, &tasks, guide, journal.path())? } else { guide_values(&record, guide, journal.path())? };
        opt.tell(&p, &told);
        done.push(record);
        let chosen = choose(&done);
        if chosen != choose(&done[..done.len() - 1]) {
            // A new incumbent: its prefixes are what the next proposals tend to share.
            if let Some(i) = chosen {
                scorer.prefer(&done[i].recipe);
            }
        }
        let (best, best_objective) = (chosen.map(|i| done[i].mean), chosen.map(|i| done[i].objective_value()));
        on_trial(&TrialEvent { trial: done.last().expect("pushed"), done: done.len(), total: trials, best, best_objective, replayed });
    }
    let best = choose(&done).ok_or_else(|| {
        let why = done.iter().find_map(|t| t.failed.clone()).unwrap_or_default();
        SearchError::Space(format!("every trial failed: {why}"))
    })?;
    let curve = incumbent_curve(&done);
    Ok(SearchOutcome { trials: done, best, curve })
}

/// The guiding metric's value per task of a trial (journals written before objectives
/// hold accuracy only).
fn guide_values(r: &TrialRecord, guide: crate::score::Metric, path: &std::path::Path) -> Result<TaskScores, SearchError> {
    if r.measures.is_empty() {
        return match guide {
            crate::score::Metric::Acc => Ok(r.scores.clone()),
            _ => Err(SearchError::Journal {
                path: path.display().to_string(),
                message: format!("trial {} has no measures for the objective `{}`", r.index, guide.name()),
            }),
        };
    }
    Ok(objective::task_values(&r.measures, guide).into_iter().map(|(t, e)| (t, e.value)).collect())
}

/// What a failed trial is told as: per task, the worst guiding value any scored trial had
/// (0 accuracy, or a very low log-likelihood, when none was scored yet).
fn worst_values(done: &[TrialRecord], tasks: &[String], guide: crate::score::Metric, path: &std::path::Path) -> Result<TaskScores, SearchError> {
    let mut worst: TaskScores = tasks.iter().map(|t| (t.clone(), f64::INFINITY)).collect();
    for r in done.iter().filter(|r| r.failed.is_none()) {
        for (t, v) in guide_values(r, guide, path)? {
            if let Some(w) = worst.get_mut(&t) {
                *w = w.min(v);
            }
        }
    }
    let floor = if guide == crate::score::Metric::Acc { 0.0 } else { -100.0 };
    Ok(worst.into_iter().map(|(t, v)| (t, if v.is_finite() { v } else { floor })).collect())
}

fn json_round_trip(r: &TrialRecord) -> TrialRecord {
    serde_json::from_str(&serde_json::to_string(r).expect("serialises")).expect("parses what it wrote")
}
