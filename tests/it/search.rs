//! The layer search: optimisers against a synthetic scorer with a closed-form optimum,
//! the journal's resume semantics, and the reports.

use hf_tailor::score::Scorer;
use hf_tailor::search::baselines::{run_baseline, BaselineKind};
use hf_tailor::search::select::choose;
use hf_tailor::search::{header, run_search, Journal, OptimizerConfig, OptimizerKind, SearchError, SearchOutcome, SearchSpace, SpaceOptions};
use hf_tailor::testkit::synthetic::SyntheticScorer;
use hf_tailor::testkit::template;

use crate::common::tempdir;

use hf_tailor::score::{HoldOut, Metric};
use hf_tailor::search::job::{run_job, Inherit, JobSpec, Quiet};
use hf_tailor::search::optimizer::Origin;
use hf_tailor::search::Objective;

fn search(space: &SearchSpace, scorer: &mut SyntheticScorer, cfg: &OptimizerConfig, trials: usize, path: &std::path::Path) -> SearchOutcome {
    let mut journal = Journal::create(path, header(space, cfg, scorer.task_names())).expect("journal");
    run_search(space, &mut journal, trials, scorer, |_| {}).expect("search")
}

/// Optimum minus the exact mean accuracy of the candidate the search chose.
fn regret(space: &SearchSpace, scorer: &SyntheticScorer, out: &SearchOutcome) -> f64 {
    let chosen = space.from_recipe(&out.best_trial().recipe).expect("in space");
    scorer.optimum().1 - scorer.exact_mean(&chosen)
}

#[test]
fn bo_beats_random_search_over_seeds_at_equal_trials() {
    // 12 layers keep 9, 3 siblings: C(12,9) × 8^9 × λ candidates; 150 trials each.
    let space = SearchSpace::new(template(12, 3), 9, SpaceOptions::default()).unwrap();
    let dir = tempdir();
    let (mut bo_total, mut random_total, mut bo_wins) = (0.0, 0.0, 0);
    let seeds = 5;
    for seed in 0..seeds {
        let mut r = [0.0; 2];
        for (i, kind) in [OptimizerKind::Bo, OptimizerKind::Random].into_iter().enumerate() {
            let mut scorer = SyntheticScorer::new(&space, 2, 1000, 50 + seed);
            let mut cfg = OptimizerConfig::new(kind, seed);
            cfg.budgets = vec![1000];
            let out = search(&space, &mut scorer, &cfg, 150, &dir.path().join(format!("{}-{seed}.jsonl", kind.name())));
            assert_eq!(out.trials.len(), 150);
            r[i] = regret(&space, &scorer, &out);
        }
        bo_total += r[0];
        random_total += r[1];
        bo_wins += usize::from(r[0] < r[1]);
        eprintln!("seed {seed}: regret bo {:.4} random {:.4}", r[0], r[1]);
    }
    eprintln!("mean regret: bo {:.4}, random {:.4}", bo_total / seeds as f64, random_total / seeds as f64);
    assert!(bo_total < 0.6 * random_total, "bo {bo_total} vs random {random_total}");
    assert!(bo_wins >= 4, "bo won only {bo_wins} of {seeds} seeds");
}

#[test]
fn multi_fidelity_search_finds_the_synthetic_optimum_within_budget() {
    // 8 layers keep 6, 2 siblings; the closed-form optimum is reached within 1 point of
    // mean accuracy in 300 trials (Hyperband over 111/333/1000 as the reference).
    let space = SearchSpace::new(template(8, 2), 6, SpaceOptions::default()).unwrap();
    let dir = tempdir();
    for seed in 0..2 {
        let mut scorer = SyntheticScorer::new(&space, 2, 1000, 7 + seed);
        let (optimum, best) = scorer.optimum();
        let cfg = OptimizerConfig::new(OptimizerKind::Bo, seed);
        let out = search(&space, &mut scorer, &cfg, 300, &dir.path().join(format!("s{seed}.jsonl")));
        let chosen = space.from_recipe(&out.best_trial().recipe).unwrap();
        let got = scorer.exact_mean(&chosen);
        assert_eq!(out.best_trial().budget, 1000);
        assert!(best - got < 0.01, "seed {seed}: chose {got:.4}, optimum {best:.4}");
        // The chosen layers are the optimum's.
        assert_eq!(chosen.kept().collect::<Vec<_>>(), optimum.kept().collect::<Vec<_>>(), "seed {seed}");
        // Hyperband spent most trials below the full budget.
        assert!(out.trials.iter().filter(|t| t.budget < 1000).count() > 150);
    }
}

#[test]
fn same_seed_same_trials_and_resume_from_any_cut_reproduces_the_run() {
    resume_from_any_cut_reproduces_the_run(OptimizerConfig::new(OptimizerKind::Warmstart, 3));
}

#[test]
fn the_local_optimiser_resumes_from_any_cut_as_it_ran() {
    // From the baselines' warm starts, as the search job runs it; its proposals' notes
    // (prediction, incumbent, parent) are journaled and replayed identically too.
    let mut cfg = OptimizerConfig::new(OptimizerKind::Local, 3);
    cfg.warm_removals = vec![vec![2, 5], vec![3, 4]];
    resume_from_any_cut_reproduces_the_run(cfg);
}

fn resume_from_any_cut_reproduces_the_run(cfg: OptimizerConfig) {
    let space = SearchSpace::new(template(8, 2), 6, SpaceOptions::default()).unwrap();
    let dir = tempdir();
    let mut scorer = SyntheticScorer::new(&space, 2, 1000, 1);
    let full_path = dir.path().join("full.jsonl");
    let full = search(&space, &mut scorer, &cfg, 60, &full_path);
    if cfg.kind == OptimizerKind::Local {
        let local = full.trials.iter().filter(|t| t.origin == Origin::Local).count();
        assert!(local > 10, "{local} local moves in 60 trials");
        assert!(full
            .trials
            .iter()
            .filter(|t| t.origin == Origin::Local)
            .all(|t| t.proposal.is_some_and(|n| n.predicted.is_some() && n.parent.is_some())));
    }
    let again = search(&space, &mut SyntheticScorer::new(&space, 2, 1000, 1), &cfg, 60, &dir.path().join("again.jsonl"));
    assert_eq!(
        full.trials.iter().map(|t| (&t.recipe, t.budget)).collect::<Vec<_>>(),
        again.trials.iter().map(|t| (&t.recipe, t.budget)).collect::<Vec<_>>()
    );
    let bytes = std::fs::read(&full_path).unwrap();
    let lines: Vec<usize> = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1).collect();
    // A kill -9 leaves a prefix of the journal (each line is fsynced before the next trial):
    // cut inside the header, exactly at line ends, and inside trial lines.
    let cuts = [5, lines[0], lines[0] + 17, lines[10], lines[10] + 1, lines[30] - 3, lines[59] - 1];
    for cut in cuts {
        let path = dir.path().join(format!("cut-{cut}.jsonl"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let kept = bytes[..cut].iter().filter(|b| **b == b'\n').count().saturating_sub(1);
        let mut scorer = SyntheticScorer::new(&space, 2, 1000, 1);
        let mut journal = Journal::resume(&path, header(&space, &cfg, scorer.task_names())).unwrap();
        assert_eq!(journal.state.trials.len(), kept, "cut at {cut}");
        let out = run_search(&space, &mut journal, 60, &mut scorer, |_| {}).unwrap();
        // Only the trials lost to the cut were scored again.
        assert_eq!(scorer.calls, 60 - kept, "cut at {cut}");
        assert_eq!(out.best, full.best);
        assert_eq!(out.curve, full.curve);
        // The resumed journal holds the uninterrupted run's trials (timings aside).
        let strip = |p: &std::path::Path| {
            let (h, mut t) = Journal::read(p).unwrap();
            t.iter_mut().for_each(|t| t.seconds = 0.0);
            (h, t)
        };
        assert!(strip(&path) == strip(&full_path), "cut at {cut}: the resumed journal differs from the uninterrupted one");
    }
}

#[test]
fn resume_refuses_a_journal_of_other_inputs_and_corrupt_lines() {
    let space = SearchSpace::new(template(8, 2), 6, SpaceOptions::default()).unwrap();
    let dir = tempdir();
    let cfg = OptimizerConfig::new(OptimizerKind::Bo, 0);
    let path = dir.path().join("j.jsonl");
    let mut scorer = SyntheticScorer::new(&space, 2, 1000, 1);
    search(&space, &mut scorer, &cfg, 5, &path);
    // Same file without --resume: refused, untouched.
    let before = std::fs::read(&path).unwrap();
    let err = Journal::create(&path, header(&space, &cfg, scorer.task_names())).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // Another seed.
    let other = OptimizerConfig::new(OptimizerKind::Bo, 1);
    let err = Journal::resume(&path, header(&space, &other, scorer.task_names())).unwrap_err().to_string();
    assert!(err.contains("seed 0 (now 1)"), "{err}");
    // Another depth.
    let shallower = SearchSpace::new(template(8, 2), 5, SpaceOptions::default()).unwrap();
    let err = Journal::resume(&path, header(&shallower, &cfg, scorer.task_names())).unwrap_err().to_string();
    assert!(err.contains("keep 6 layers (now 5)"), "{err}");
    // A corrupt complete line names its line number.
    let mut text = String::from_utf8(before.clone()).unwrap();
    let third = text.match_indices('\n').nth(2).unwrap().0;
    text.replace_range(third - 10..third - 5, "#####");
    std::fs::write(&path, &text).unwrap();
    let err = Journal::resume(&path, header(&space, &cfg, scorer.task_names())).unwrap_err();
    assert!(matches!(err, SearchError::Journal { .. }) && err.to_string().contains("line 3"), "{err}");
}

#[test]
fn baselines_prune_the_least_important_layers() {
    let space = SearchSpace::new(template(10, 2), 7, SpaceOptions::default()).unwrap();
    let mut scorer = SyntheticScorer::new(&space, 2, 1000, 4);
    let texts = vec!["calibration".to_string()];
    // The synthetic cosines and perplexities are monotone in the layers' importance, so
    // ShortGPT and SLEB both drop the three least important layers.
    let shortgpt = run_baseline(BaselineKind::Shortgpt, &space, &mut scorer, &texts).unwrap();
    let sleb = run_baseline(BaselineKind::Sleb, &space, &mut scorer, &texts).unwrap();
    assert_eq!(shortgpt.removed.len(), 3);
    assert_eq!(shortgpt.removed, sleb.removed);
    let influence = &shortgpt.criterion;
    let mut sorted = influence.clone();
    sorted.sort_by(f64::total_cmp);
    for r in &shortgpt.removed {
        assert!(influence[*r] <= sorted[2]);
    }
    let angular = run_baseline(BaselineKind::Angular, &space, &mut scorer, &texts).unwrap();
    let start = angular.removed[0];
    assert_eq!(angular.removed, (start..start + 3).collect::<Vec<_>>(), "a contiguous block");
    let best_block = (0..=7).min_by(|a, b| angular.criterion[*a].total_cmp(&angular.criterion[*b])).unwrap();
    assert_eq!(start, best_block);
    for b in [&shortgpt, &sleb, &angular] {
        b.recipe.validate().unwrap();
        assert_eq!(b.recipe.removed_layers(), b.removed);
        assert!(b.recipe.layers.iter().all(|l| l.rule == hf_tailor::recipe::Rule::Take("base".into())));
    }
    // Scored on the same tasks as the search.
    let scores = scorer.score(&shortgpt.recipe, 1000).unwrap();
    assert_eq!(scores.keys().cloned().collect::<Vec<_>>(), scorer.task_names());
    let _ = choose(&[]);
}

#[test]
fn journals_written_before_objectives_resume_as_accuracy_searches() {
    let space = SearchSpace::new(template(8, 2), 6, SpaceOptions::default()).unwrap();
    let dir = tempdir();
    let mut cfg = OptimizerConfig::new(OptimizerKind::Bo, 5);
    cfg.budgets = vec![100, 1000];
    let full_path = dir.path().join("full.jsonl");
    let full = search(&space, &mut SyntheticScorer::new(&space, 2, 1000, 2), &cfg, 30, &full_path);
    // The old format: no objective or selection split in the header, no measures or
    // objective in the trials; 12 trials written before the interruption.
    let text = std::fs::read_to_string(&full_path).unwrap();
    let mut old = String::new();
    for line in text.lines().take(13) {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        let o = v.as_object_mut().unwrap();
        if let Some(opt) = o.get_mut("optimizer").and_then(|x| x.as_object_mut()) {
            assert!(opt.remove("objective").is_some() && opt.remove("hold_out").is_some());
        }
        if o.get("kind").and_then(|k| k.as_str()) == Some("trial") {
            assert!(o.remove("objective").is_some() && o.remove("measures").is_some());
        }
        old.push_str(&serde_json::to_string(&v).unwrap());
        old.push('\n');
    }
    let path = dir.path().join("old.jsonl");
    std::fs::write(&path, old).unwrap();
    let mut scorer = SyntheticScorer::new(&space, 2, 1000, 2);
    let mut journal = Journal::resume(&path, header(&space, &cfg, scorer.task_names())).unwrap();
    assert_eq!(journal.state.trials.len(), 12);
    let out = run_search(&space, &mut journal, 30, &mut scorer, |_| {}).unwrap();
    assert_eq!(scorer.calls, 18);
    let key = |o: &SearchOutcome| o.trials.iter().map(|t| (t.recipe.clone(), t.budget, t.mean)).collect::<Vec<_>>();
    assert_eq!(key(&out), key(&full));
    assert_eq!(out.best, full.best);
}

/// The synthetic scorer scores only candidates of its space; whole models (the job's
/// reference rows) get the scores of the space's first all-base candidate.
struct WholeModelsToo(SyntheticScorer, hf_tailor::recipe::Recipe);

impl Scorer for WholeModelsToo {
    type Error = <SyntheticScorer as Scorer>::Error;
    fn task_names(&self) -> Vec<String> {
        self.0.task_names()
    }
    fn measure(
        &mut self,
        r: &hf_tailor::recipe::Recipe,
        budget: usize,
        items: hf_tailor::score::Items,
    ) -> Result<hf_tailor::score::Measures, Self::Error> {
        let r = if r.layers.len() == self.1.layers.len() { r } else { &self.1.clone() };
        self.0.measure(r, budget, items)
    }
    fn boundary_cosines(&mut self, r: &hf_tailor::recipe::Recipe, t: &[String]) -> Result<Vec<Vec<f64>>, Self::Error> {
        self.0.boundary_cosines(r, t)
    }
    fn perplexity(&mut self, r: &hf_tailor::recipe::Recipe, t: &[String]) -> Result<f64, Self::Error> {
        self.0.perplexity(r, t)
    }
}

/// A search job of `trials` trials on the synthetic family of `space` (10 layers keep 7),
/// journaled at `journal`: its result and the scorer's number of calls.
fn synthetic_job(
    space: &SearchSpace,
    optimizer: OptimizerConfig,
    trials: usize,
    journal: std::path::PathBuf,
    resume: bool,
    baselines: Vec<BaselineKind>,
) -> (hf_tailor::search::job::JobResult, usize) {
    let spec = JobSpec {
        space: space.clone(),
        optimizer,
        trials,
        journal,
        resume,
        baselines,
        calibration: vec!["text".into()],
        inherit: Inherit::default(),
        precomputed: vec![],
        heal_tokens: None,
        selection_tasks: vec![],
    };
    let first = space.to_recipe(&space.base_only(&(0..7).collect::<Vec<_>>()));
    let mut scorer = WholeModelsToo(SyntheticScorer::new(space, 2, 1000, 4), first);
    (run_job(&spec, &mut scorer, |r: &hf_tailor::recipe::Recipe| r.layers.len() as u64, &mut Quiet).unwrap(), scorer.0.calls)
}

#[test]
fn a_job_warm_starts_from_the_baselines_and_chooses_on_the_selection_split() {
    let space = SearchSpace::new(template(10, 2), 7, SpaceOptions::default()).unwrap();
    let dir = tempdir();
    let run = |objective: Objective, resume: bool| {
        let mut cfg = OptimizerConfig::new(OptimizerKind::Bo, 1);
        cfg.budgets = vec![100, 1000];
        cfg.objective = objective;
        cfg.hold_out = Some(HoldOut { fraction: 0.3, seed: 1 });
        let journal = dir.path().join(format!("{}.jsonl", objective.name()));
        synthetic_job(&space, cfg, 40, journal, resume, vec![BaselineKind::Shortgpt, BaselineKind::Sleb])
    };
    for objective in [Objective::of(Metric::Margin), Objective::of(Metric::Acc), Objective::parse("loglik+acc").unwrap(), Objective::of(Metric::Ppl)]
    {
        let (r, _) = run(objective, false);
        let trials = &r.outcome.trials;
        // ShortGPT and SLEB agree on the synthetic family: one removal set, all-base and
        // one candidate per sibling, first in the initial design.
        assert_eq!(r.baselines[0].removed, r.baselines[1].removed);
        assert!(trials[..3].iter().all(|t| t.origin == Origin::Baseline), "{objective:?}");
        assert_eq!(trials[0].recipe, r.baselines[0].recipe);
        assert!(trials.iter().all(|t| t.objective.is_some_and(|e| e.se >= 0.0)));
        // The choice is one of the finalists, scored on both splits in the report.
        let f = &r.report.finalists;
        // The top five, and the best warm start when it is not among them.
        assert!(!f.is_empty() && f.len() <= 6);
        assert_eq!(f.iter().filter(|x| x.warm_start).count(), 1, "the best warm start is a finalist");
        assert!(f.iter().all(|x| !x.warm_start || !trials[x.trial].origin.is_own() || trials[x.trial].origin == Origin::Promoted));
        let vs = r.report.own_vs_warm.as_ref().expect("warm starts").selection.expect("measured on the selection split");
        assert!(vs.se >= 0.0 && vs.value.is_finite());
        assert_eq!(f.iter().filter(|x| x.chosen).count(), 1);
        assert_eq!(f.iter().find(|x| x.chosen).unwrap().trial, r.outcome.best);
        assert!(f.iter().all(|x| trials[x.trial].budget == 1000));
        assert_eq!(r.report.objective, objective.name());
        assert!(r.report.to_markdown().contains("selection split"), "{}", r.report.to_markdown());
        assert!(r.report.rows.iter().all(|row| row.se.len() == 2), "every row has standard errors");
    }
    // Resuming the finished journal scores no trial again and chooses the same.
    std::fs::remove_file(dir.path().join("margin.jsonl")).unwrap();
    let (first, _) = run(Objective::of(Metric::Margin), false);
    std::fs::remove_file(dir.path().join("margin.jsonl")).unwrap();
    let (again, _) = run(Objective::of(Metric::Margin), false);
    let (resumed, calls) = run(Objective::of(Metric::Margin), true);
    // Finalists (the top five and the best warm start) and the table's rows only (base, 2
    // siblings, 2 baselines, the choice).
    assert!(calls <= 6 + 6, "{calls} scoring calls on resume");
    assert_eq!(first.outcome.best, again.outcome.best);
    assert_eq!(resumed.outcome.best, first.outcome.best);
    assert_eq!(resumed.report.finalists, first.report.finalists);
}

/// Under `ppl` (texts scored whole at any item budget) a new job runs every trial at the
/// full budget; a journal written before that setting (the field absent from its header)
/// resumes with its rungs, as it ran.
#[test]
fn a_ppl_job_runs_at_the_full_budget_and_an_older_ppl_journal_resumes_with_its_rungs() {
    let space = SearchSpace::new(template(10, 2), 7, SpaceOptions::default()).unwrap();
    let dir = tempdir();
    let run = |skip: bool, journal: &str, resume: bool| {
        let mut cfg = OptimizerConfig::new(OptimizerKind::Local, 2);
        cfg.budgets = vec![100, 1000];
        cfg.objective = Objective::of(Metric::Ppl);
        cfg.skip_budget_free_rungs = skip;
        synthetic_job(&space, cfg, 30, dir.path().join(journal), resume, vec![BaselineKind::Shortgpt]).0
    };
    let budgets = |r: &hf_tailor::search::job::JobResult| r.outcome.trials.iter().map(|t| t.budget).collect::<Vec<_>>();
    let new = run(true, "new.jsonl", false);
    assert!(budgets(&new).iter().all(|&b| b == 1000), "{:?}", budgets(&new));
    // The older schedule, cut after 12 trials and its header written without the setting.
    let old = run(false, "old.jsonl", false);
    assert!(budgets(&old).contains(&100), "{:?}", budgets(&old));
    let text = std::fs::read_to_string(dir.path().join("old.jsonl")).unwrap();
    assert!(!text.lines().next().unwrap().contains("skip_budget_free_rungs"));
    let cut: String = text.lines().take(13).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("cut.jsonl"), cut).unwrap();
    // Resumed by today's settings (which would skip the rungs of a new journal).
    let resumed = run(true, "cut.jsonl", true);
    assert_eq!(budgets(&resumed), budgets(&old));
    assert_eq!(resumed.outcome.best, old.outcome.best);
}
