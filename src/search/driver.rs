//! The search loop: ask the optimiser, score the candidate (or take the journaled result
//! when replaying a resumed search), journal it, tell the optimiser — one trial at a time,
//! or with one thread per worker and several trials in flight.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::time::Instant;

use crate::recipe::Recipe;
use crate::score::{accuracies, mean_score, Items, LayerWork, Measures, Scorer, TaskScores};

use super::objective;
use super::optimizer::{Optimizer, OptimizerConfig, Proposal};
use super::select::{choose, incumbent_curve};
use super::space::SearchSpace;
use super::storage::Storage;
use super::trial::{Assignment, JournalHeader, Scored, TrialRecord, FORMAT};
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
        keep_max: space.is_range().then_some(space.keep_max),
        space: space.options.clone(),
        optimizer: cfg.clone(),
    }
}

/// Run `trials` trials (counting those already in `journal`) and choose the result.
/// `journal` must have been opened with [`header`] of the same inputs.
pub fn run_search<S: Scorer>(
    space: &SearchSpace,
    journal: &mut dyn Storage,
    trials: usize,
    scorer: &mut S,
    mut on_trial: impl FnMut(&TrialEvent<'_>),
) -> Result<SearchOutcome, SearchError> {
    run_sequential(space, journal, trials, scorer, None, &mut on_trial)
}

/// A scorer with the name the journal records for it (`cpu#1`, `cuda:0`).
pub struct Worker<S> {
    pub label: String,
    pub scorer: S,
}

/// [`run_search`] with one thread per worker, each scoring with its own scorer: the
/// optimiser proposes while trials are in flight (see [`Optimizer::ask`]), so no worker
/// waits for another. Scores do not depend on the worker; the sequence of trials depends
/// on the order results come in, which the journal records (see [`Journal`]) so that
/// `--resume` replays it. One worker is [`run_search`] exactly.
pub fn run_search_parallel<S: Scorer + Send>(
    space: &SearchSpace,
    journal: &mut dyn Storage,
    trials: usize,
    workers: &mut [Worker<S>],
    mut on_trial: impl FnMut(&TrialEvent<'_>),
) -> Result<SearchOutcome, SearchError> {
    match workers {
        [] => Err(SearchError::Space("a search needs at least one worker".into())),
        [one] => run_sequential(space, journal, trials, &mut one.scorer, Some(one.label.clone()), &mut on_trial),
        _ => run_threads(space, journal, trials, workers, &mut on_trial),
    }
}

fn run_sequential<S: Scorer>(
    space: &SearchSpace,
    journal: &mut dyn Storage,
    trials: usize,
    scorer: &mut S,
    label: Option<String>,
    on_trial: &mut dyn FnMut(&TrialEvent<'_>),
) -> Result<SearchOutcome, SearchError> {
    check_tasks(journal, scorer)?;
    let mut session = Session::open(space, journal, trials, false, &mut |r| scorer.prefer(r), on_trial)?;
    while let Some(a) = session.next()? {
        let scored = score(scorer, &a).map_err(|e| SearchError::Score { what: format!("trial {}", a.index), source: Box::new(e) })?;
        if let Some(r) = session.complete(a.index, label.clone(), scored)? {
            scorer.prefer(&r);
        }
    }
    session.finish()
}

/// A worker's answer: the measurement, the scorer's error, or a panic's message.
enum Answer<E> {
    Scored(Scored),
    Failed(E),
    Panicked(String),
}

fn run_threads<S: Scorer + Send>(
    space: &SearchSpace,
    journal: &mut dyn Storage,
    trials: usize,
    workers: &mut [Worker<S>],
    on_trial: &mut dyn FnMut(&TrialEvent<'_>),
) -> Result<SearchOutcome, SearchError> {
    for w in workers.iter() {
        check_tasks(journal, &w.scorer)?;
    }
    let labels: Vec<String> = workers.iter().map(|w| w.label.clone()).collect();
    // The incumbent each worker was last told to keep warm, and the newest one.
    let mut incumbent: Option<Recipe> = None;
    let mut told = vec![false; workers.len()];
    let mut session = Session::open(space, journal, trials, true, &mut |r| incumbent = Some(r.clone()), on_trial)?;
    let n = workers.len();
    std::thread::scope(|scope| {
        let (answers, inbox) = mpsc::channel::<(usize, usize, Answer<S::Error>)>();
        let mut outboxes = Vec::with_capacity(workers.len());
        for (w, worker) in workers.iter_mut().enumerate() {
            let (outbox, jobs) = mpsc::channel::<(Assignment, Option<Recipe>)>();
            outboxes.push(outbox);
            let answers = answers.clone();
            let scorer = &mut worker.scorer;
            scope.spawn(move || {
                for (a, prefer) in jobs {
                    if let Some(r) = prefer {
                        scorer.prefer(&r);
                    }
                    let answer = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| score(scorer, &a))) {
                        Ok(Ok(s)) => Answer::Scored(s),
                        Ok(Err(e)) => Answer::Failed(e),
                        Err(p) => Answer::Panicked(
                            p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default(),
                        ),
                    };
                    if answers.send((w, a.index, answer)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(answers);
        // Lowest-numbered idle worker first, so runs hand out work alike.
        let mut idle: Vec<usize> = (0..n).rev().collect();
        let mut busy = 0usize;
        let mut error: Option<SearchError> = None;
        loop {
            // Keep every idle worker busy; after an error, only finish what is in flight
            // (every finished trial is journaled).
            while error.is_none() && !idle.is_empty() {
                match session.next() {
                    Ok(Some(a)) => {
                        let w = idle.pop().expect("not empty");
                        let prefer = if told[w] { None } else { incumbent.clone() };
                        told[w] = true;
                        outboxes[w].send((a, prefer)).expect("workers live until their outbox closes");
                        busy += 1;
                    }
                    Ok(None) => break,
                    Err(e) => error = Some(e),
                }
            }
            if busy == 0 {
                break;
            }
            let (w, index, answer) = inbox.recv().expect("busy workers answer");
            busy -= 1;
            idle.push(w);
            idle.sort_unstable_by(|a, b| b.cmp(a));
            let result = match answer {
                Answer::Scored(s) => session.complete(index, Some(labels[w].clone()), s),
                Answer::Failed(e) => Err(SearchError::Score { what: format!("trial {index} on {}", labels[w]), source: Box::new(e) }),
                Answer::Panicked(m) => Err(SearchError::Score { what: format!("trial {index} on {}", labels[w]), source: m.into() }),
            };
            match result {
                Ok(Some(r)) => {
                    incumbent = Some(r);
                    told.iter_mut().for_each(|t| *t = false);
                }
                Ok(None) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        drop(outboxes);
        error.map_or(Ok(()), Err)
    })?;
    session.finish()
}

/// [`run_search`] over a storage whose workers run elsewhere (other processes or hosts):
/// this process only proposes (keeping as many trials in flight as the storage asks for)
/// and takes the results the storage reports, in the order they finished. Trials in flight
/// when an earlier coordinator stopped stay with the storage's workers.
pub fn run_search_remote(
    space: &SearchSpace,
    storage: &mut dyn Storage,
    trials: usize,
    mut on_trial: impl FnMut(&TrialEvent<'_>),
) -> Result<SearchOutcome, SearchError> {
    let mut session = Session::open(space, storage, trials, true, &mut |_| {}, &mut on_trial)?;
    session.again.clear();
    loop {
        let want = session.journal.capacity()?.max(1);
        while session.in_flight.len() < want {
            if session.next()?.is_none() {
                break;
            }
        }
        if session.in_flight.is_empty() {
            break;
        }
        for (index, worker, scored) in session.journal.finished_elsewhere(std::time::Duration::from_secs(1))? {
            if session.in_flight.contains_key(&index) {
                session.complete(index, worker, scored)?;
            }
        }
    }
    session.finish()
}

/// The assignments a storage's search had handed out without a result, regenerated by
/// replaying it (what a worker would be given for each), by trial index.
pub fn in_flight_assignments(space: &SearchSpace, storage: &mut dyn Storage) -> Result<BTreeMap<usize, Assignment>, SearchError> {
    let trials = storage.trials().len() + storage.asked().len() + 1;
    let mut quiet = |_: &TrialEvent<'_>| {};
    let session = Session::open(space, storage, trials, true, &mut |_| {}, &mut quiet)?;
    Ok(session
        .in_flight
        .iter()
        .map(|(&index, p)| (index, Assignment { index, recipe: space.to_recipe(&p.candidate), budget: p.budget, items: session.items }))
        .collect())
}

fn check_tasks<S: Scorer>(journal: &dyn Storage, scorer: &S) -> Result<(), SearchError> {
    if scorer.task_names() != journal.header().tasks {
        return Err(SearchError::Space(format!("the scorer's tasks {:?} are not the journal's {:?}", scorer.task_names(), journal.header().tasks)));
    }
    Ok(())
}

/// Score an assignment. A candidate with non-finite scores is a failed trial (journaled,
/// told as the worst value seen, never chosen); any other error is the scorer's.
pub fn score<S: Scorer>(scorer: &mut S, a: &Assignment) -> Result<Scored, S::Error> {
    let start = Instant::now();
    let work_before = scorer.layer_work();
    let (measures, failed) = match scorer.measure(&a.recipe, a.budget, a.items) {
        Ok(m) => (m, None),
        Err(e) => match crate::score::non_finite_cause(&e) {
            Some(n) => (Measures::default(), Some(n.to_string())),
            None => return Err(e),
        },
    };
    let seconds = start.elapsed().as_secs_f64();
    let layers = scorer.layer_work().zip(work_before).map(|(after, before)| after.since(before));
    Ok(Scored { measures, failed, seconds, layers })
}

/// The optimiser, the journal and the trials of one search: hands out assignments and
/// takes their results, in any order, journaling both. Rebuilt from the journal by
/// replaying it (see [`Journal`]); assignments in flight when the search stopped are handed
/// out again first.
struct Session<'a> {
    space: &'a SearchSpace,
    journal: &'a mut dyn Storage,
    opt: Optimizer<'a>,
    tasks: Vec<String>,
    guide: crate::score::Metric,
    items: Items,
    trials: usize,
    /// Finished trials, in the order their results came in.
    done: Vec<TrialRecord>,
    /// Proposals made (the next trial's index).
    asked: usize,
    in_flight: BTreeMap<usize, Proposal>,
    /// Journaled proposals without a result, to hand out before new ones.
    again: VecDeque<usize>,
    /// Journal each proposal when it is handed out (parallel searches).
    journal_asks: bool,
    on_trial: &'a mut dyn FnMut(&TrialEvent<'_>),
}

impl<'a> Session<'a> {
    fn open(
        space: &'a SearchSpace,
        journal: &'a mut dyn Storage,
        trials: usize,
        journal_asks: bool,
        prefer: &mut dyn FnMut(&Recipe),
        on_trial: &'a mut dyn FnMut(&TrialEvent<'_>),
    ) -> Result<Self, SearchError> {
        let cfg = journal.header().optimizer.clone();
        cfg.validate()?;
        if trials == 0 {
            return Err(SearchError::Space("--trials must be at least 1".into()));
        }
        let tasks = journal.header().tasks.clone();
        let (guide, items) = (cfg.objective.guide, cfg.hold_out.map_or(Items::All, Items::Search));
        let (lines, asked) = (journal.trials().to_vec(), journal.asked().to_vec());
        let opt = Optimizer::new(space, cfg, tasks.clone());
        let mut s = Self {
            space,
            journal,
            opt,
            tasks,
            guide,
            items,
            trials,
            done: Vec::with_capacity(trials.max(lines.len())),
            asked: 0,
            in_flight: BTreeMap::new(),
            again: VecDeque::new(),
            journal_asks,
            on_trial,
        };
        let mut next_ask = asked.iter().peekable();
        for (pos, record) in lines.into_iter().enumerate() {
            while let Some(a) = next_ask.next_if(|a| a.after == pos) {
                s.replay_ask(a.index)?;
            }
            if !s.in_flight.contains_key(&record.index) {
                // Sequential journals: asked right before its result.
                s.replay_ask(record.index)?;
            }
            let p = s.in_flight.remove(&record.index).expect("asked above");
            let same = record.budget == p.budget && space.from_recipe(&record.recipe).ok().as_ref() == Some(&p.candidate);
            if !same {
                return Err(s.journal_error(format!(
                    "trial {} differs from what this search proposes; the journal was written by other inputs",
                    record.index
                )));
            }
            if let Some(r) = s.record_result(&p, record, true)? {
                prefer(&r);
            }
        }
        for a in next_ask {
            s.replay_ask(a.index)?;
        }
        s.again = s.in_flight.keys().copied().collect();
        Ok(s)
    }

    fn journal_error(&self, message: String) -> SearchError {
        SearchError::Journal { path: self.journal.location(), message }
    }

    fn replay_ask(&mut self, index: usize) -> Result<(), SearchError> {
        if index != self.asked {
            return Err(self.journal_error(format!("trial {index} was journaled where trial {} was expected", self.asked)));
        }
        self.in_flight.insert(index, self.opt.ask());
        self.asked += 1;
        Ok(())
    }

    /// The next assignment: a journaled one left unfinished, or a new proposal while fewer
    /// than `trials` were made; `None` when every trial is handed out.
    fn next(&mut self) -> Result<Option<Assignment>, SearchError> {
        let (index, fresh) = match self.again.pop_front() {
            Some(i) => (i, false),
            None if self.asked < self.trials => {
                let index = self.asked;
                let p = self.opt.ask();
                self.in_flight.insert(index, p);
                self.asked += 1;
                (index, true)
            }
            None => return Ok(None),
        };
        let p = &self.in_flight[&index];
        let a = Assignment { index, recipe: self.space.to_recipe(&p.candidate), budget: p.budget, items: self.items };
        if self.journal_asks && fresh {
            self.journal.record_asked(&a)?;
        }
        Ok(Some(a))
    }

    /// Journal and tell the result of assignment `index`; the new incumbent's recipe when
    /// the choice changed.
    fn complete(&mut self, index: usize, worker: Option<String>, scored: Scored) -> Result<Option<Recipe>, SearchError> {
        let p = self.in_flight.remove(&index).ok_or_else(|| self.journal_error(format!("trial {index} is not in flight")))?;
        let (scores, value) = match &scored.failed {
            None => (accuracies(&scored.measures), Some(objective::overall(&scored.measures, self.guide)?)),
            Some(_) => (self.tasks.iter().map(|t| (t.clone(), 0.0)).collect(), None),
        };
        let record = TrialRecord {
            index,
            origin: p.origin,
            budget: p.budget,
            mean: mean_score(&scores),
            scores,
            seconds: scored.seconds,
            layers: scored.layers,
            recipe: self.space.to_recipe(&p.candidate),
            objective: value,
            measures: scored.measures,
            failed: scored.failed,
            worker,
            proposal: self.note(&p),
        };
        // Tell the optimiser exactly what a replay will read back from the journal.
        let record = json_round_trip(&record);
        self.journal.record_trial(&record)?;
        self.record_result(&p, record, false)
    }

    /// The proposal's note with the optimiser's history positions turned into trial indices
    /// (the history holds the results in the order they were told, as `done` does).
    fn note(&self, p: &Proposal) -> Option<super::optimizer::ProposalNote> {
        let index = |at: Option<usize>| at.and_then(|h| self.done.get(h)).map(|t| t.index);
        let n = super::optimizer::ProposalNote { incumbent: index(p.note.incumbent), parent: index(p.note.parent), ..p.note };
        (!n.is_empty()).then_some(n)
    }

    fn record_result(&mut self, p: &Proposal, record: TrialRecord, replayed: bool) -> Result<Option<Recipe>, SearchError> {
        let path = std::path::PathBuf::from(self.journal.location());
        let told = if record.failed.is_some() {
            worst_values(&self.done, &self.tasks, self.guide, &path)?
        } else {
            guide_values(&record, self.guide, &path)?
        };
        self.opt.tell(p, &told);
        self.done.push(record);
        let chosen = choose(&self.done);
        // A new incumbent: its prefixes are what the next proposals tend to share.
        let changed = chosen != choose(&self.done[..self.done.len() - 1]);
        let (best, best_objective) = (chosen.map(|i| self.done[i].mean), chosen.map(|i| self.done[i].objective_value()));
        let total = self.trials.max(self.asked);
        (self.on_trial)(&TrialEvent { trial: self.done.last().expect("pushed"), done: self.done.len(), total, best, best_objective, replayed });
        Ok(chosen.filter(|_| changed).map(|i| self.done[i].recipe.clone()))
    }

    fn finish(self) -> Result<SearchOutcome, SearchError> {
        let done = self.done;
        let best = choose(&done).ok_or_else(|| {
            let why = done.iter().find_map(|t| t.failed.clone()).unwrap_or_default();
            SearchError::Space(format!("every trial failed: {why}"))
        })?;
        let curve = incumbent_curve(&done);
        Ok(SearchOutcome { trials: done, best, curve })
    }
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
