//! In-process parallel search: several CPU workers, each with its own evaluator, on the
//! identity fixture family. Scores do not depend on the worker, every trial is journaled
//! once with the worker that scored it, and a parallel journal cut anywhere resumes.

use std::collections::BTreeSet;
use std::sync::Arc;

use hf_tailor::eval::{EvalOptions, Evaluator};
use hf_tailor::recipe::EdgePolicy;
use hf_tailor::score::{Items, Scorer};
use hf_tailor::search::{header, run_search_parallel, Journal, OptimizerConfig, OptimizerKind, RecipeTemplate, SearchSpace, SpaceOptions, Worker};
use hf_tailor::testkit::identity_family::IdentityFamily;

use crate::common::{hf_tailor, tempdir};

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: std::path::PathBuf,
    /// Base, `task`, `distractor`.
    pub dirs: Vec<std::path::PathBuf>,
    space: SearchSpace,
    cfg: OptimizerConfig,
    pub evaluator: Box<dyn Fn() -> Evaluator>,
}

pub fn fixture() -> Fixture {
    let dir = tempdir();
    let fam = IdentityFamily::write(dir.path()).unwrap();
    let family = Arc::new(fam.open().unwrap());
    let tasks = fam.tasks(family.clone(), 24).unwrap();
    let template = RecipeTemplate::for_family(&family, fam.base.clone(), fam.siblings.clone(), EdgePolicy::FollowLayers);
    let space = SearchSpace::new(template, 4, SpaceOptions::default()).unwrap();
    let mut cfg = OptimizerConfig::new(OptimizerKind::Bo, 5);
    cfg.budgets = vec![8, 24];
    let evaluator = Box::new(move || Evaluator::new(family.clone(), tasks.clone(), EvalOptions::default()).unwrap());
    Fixture { root: dir.path().to_path_buf(), dirs: fam.dirs.clone(), _dir: dir, space, cfg, evaluator }
}

fn workers(f: &Fixture, n: usize) -> Vec<Worker<Evaluator>> {
    (0..n).map(|k| Worker { label: format!("cpu#{k}"), scorer: (f.evaluator)() }).collect()
}

/// Every index below `n` exactly once.
pub fn assert_each_trial_once(trials: &[hf_tailor::search::TrialRecord], n: usize) {
    let indices: Vec<usize> = trials.iter().map(|t| t.index).collect();
    let set: BTreeSet<usize> = indices.iter().copied().collect();
    assert_eq!((indices.len(), set), (n, (0..n).collect()), "{indices:?}");
}

#[test]
fn three_cpu_workers_score_every_recipe_exactly_as_one_evaluator_does() {
    let f = fixture();
    let mut ws = workers(&f, 3);
    let tasks = ws[0].scorer.task_names();
    let path = f.root.join("parallel.jsonl");
    let mut journal = Journal::create(&path, header(&f.space, &f.cfg, tasks)).unwrap();
    let out = run_search_parallel(&f.space, &mut journal, 40, &mut ws, |_| {}).unwrap();
    assert_each_trial_once(&out.trials, 40);
    let used: BTreeSet<&str> = out.trials.iter().map(|t| t.worker.as_deref().expect("a parallel trial names its worker")).collect();
    assert!(used.len() >= 2 && used.iter().all(|w| ["cpu#0", "cpu#1", "cpu#2"].contains(w)), "{used:?}");
    // Several proposals were made while others were in flight (the journal says when).
    let (_, read) = Journal::read(&path).unwrap();
    assert_eq!(read, out.trials);
    // A journal is locked while it is open: the search's is closed before it is resumed.
    let head = journal.state.header.clone();
    drop(journal);
    let resumed = Journal::resume(&path, head).unwrap();
    assert!(resumed.state.asked.iter().any(|a| a.after < a.index), "no proposal was made with trials in flight: {:?}", resumed.state.asked);
    // A fresh single evaluator gives every trial's recipe the very measures its worker journaled.
    let mut single = (f.evaluator)();
    let items = f.cfg.hold_out.map_or(Items::All, Items::Search);
    let round = |m: &hf_tailor::score::Measures| -> serde_json::Value { serde_json::from_str(&serde_json::to_string(m).unwrap()).unwrap() };
    for t in &out.trials {
        let m = single.measure(&t.recipe, t.budget, items).unwrap();
        assert_eq!(round(&m), round(&t.measures), "trial {} on {:?}", t.index, t.worker);
    }
}

#[test]
fn a_parallel_journal_cut_with_trials_in_flight_resumes_and_scores_them() {
    let f = fixture();
    let tasks = (f.evaluator)().task_names();
    let path = f.root.join("cut.jsonl");
    let head = header(&f.space, &f.cfg, tasks);
    let mut journal = Journal::create(&path, head.clone()).unwrap();
    run_search_parallel(&f.space, &mut journal, 24, &mut workers(&f, 3), |_| {}).unwrap();
    drop(journal);
    // Cut the tail, as a kill would: the last four results go, their proposals stay
    // journaled (asked, unfinished) unless they were asked in the tail too.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let is_trial = |l: &&&str| l.contains("\"kind\":\"trial\"");
    let mut keep = lines.len();
    while lines[keep..].iter().filter(is_trial).count() < 4 {
        keep -= 1;
    }
    let kept_trials = lines[..keep].iter().filter(is_trial).count();
    std::fs::write(&path, lines[..keep].join("\n") + "\n").unwrap();
    // Imported into another storage (as into a study), the cut search is the same search:
    // the same results and proposals, and the proposals in flight regenerated by replay.
    let copy = f.root.join("copy.jsonl");
    let mut dst = Journal::create(&copy, head.clone()).unwrap();
    assert_eq!(hf_tailor::search::transfer::import_journal(&path, &f.space, &mut dst).unwrap(), kept_trials);
    drop(dst);
    let (_, src_trials, src_asked) = Journal::read_with_asked(&path).unwrap();
    let (_, dst_trials, dst_asked) = Journal::read_with_asked(&copy).unwrap();
    assert_eq!(
        dst_trials.iter().map(|t| (t.index, t.budget, &t.recipe)).collect::<Vec<_>>(),
        src_trials.iter().map(|t| (t.index, t.budget, &t.recipe)).collect::<Vec<_>>()
    );
    assert_eq!(dst_asked, src_asked);
    let mut copied = Journal::resume(&copy, head.clone()).unwrap();
    let from_copy = run_search_parallel(&f.space, &mut copied, 30, &mut workers(&f, 2), |_| {}).unwrap();
    assert_each_trial_once(&from_copy.trials, 30);
    let mut journal = Journal::resume(&path, head.clone()).unwrap();
    assert_eq!(journal.state.trials.len(), kept_trials);
    assert!(journal.state.asked.len() > kept_trials, "no proposal left in flight by the cut");
    let mut replayed = 0;
    let out = run_search_parallel(&f.space, &mut journal, 30, &mut workers(&f, 2), |e| replayed += usize::from(e.replayed)).unwrap();
    assert_eq!(replayed, kept_trials, "the journaled results are replayed, not scored again");
    assert_each_trial_once(&out.trials, 30);
    let (_, read) = Journal::read(&path).unwrap();
    assert_each_trial_once(&read, 30);
    // The journal replays once more from the start (every proposal reproduced).
    drop(journal);
    let mut journal = Journal::resume(&path, head).unwrap();
    let again = run_search_parallel(&f.space, &mut journal, 30, &mut workers(&f, 2), |e| assert!(e.replayed)).unwrap();
    assert_eq!(again.trials.len(), 30);
}

/// `hf-tailor search` arguments on the fixture (12 trials, no baselines) plus `extra`.
pub fn search_args(f: &Fixture, out: &std::path::Path, trials: usize, extra: &[&str]) -> Vec<String> {
    let fam_dirs: Vec<String> = f.dirs.iter().map(|d| d.display().to_string()).collect();
    let ev = (f.evaluator)();
    let mut specs = Vec::new();
    for t in ev.tasks() {
        let hf_tailor::eval::TaskData::MultipleChoice(items) = &t.data else { continue };
        let lines: Vec<String> =
            items.iter().map(|i| serde_json::json!({"context": i.context, "choices": i.choices, "label": i.label}).to_string()).collect();
        let p = f.root.join(format!("{}.jsonl", t.name));
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        specs.push(format!("mc:{}={}", t.name, p.display()));
    }
    let mut a: Vec<String> = [
        "search",
        "--base",
        &fam_dirs[0],
        "--finetunes",
        &format!("{},{}", fam_dirs[1], fam_dirs[2]),
        "--keep-layers",
        "4",
        "--tasks",
        &specs.join(","),
        "--trials",
        &trials.to_string(),
        "--budgets",
        "8,24",
        "--baselines",
        "none",
        "--out",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn cli_search_with_cpu_workers_journals_each_trial_with_its_worker() {
    let f = fixture();
    let out = f.root.join("out");
    let args = |extra: &[&str]| search_args(&f, &out, 12, extra);
    let o = hf_tailor().args(args(&["--workers", "3"])).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, trials) = Journal::read(&out.join("journal.jsonl")).unwrap();
    assert_each_trial_once(&trials, 12);
    assert!(
        trials.iter().all(|t| t.worker.as_deref().is_some_and(|w| w.starts_with("cpu#"))),
        "{:?}",
        trials.iter().map(|t| &t.worker).collect::<Vec<_>>()
    );
    assert!(out.join("tailor.yaml").is_file());
    // Devices this build cannot open: one line, exit 2.
    if !cfg!(feature = "cuda") {
        let o = hf_tailor().args(args(&["--device", "cuda:all", "--resume"])).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("cuda:all") && err.trim().lines().count() == 1, "{err}");
    }
    let o = hf_tailor().args(args(&["--device", "cpu,cpu"])).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}
