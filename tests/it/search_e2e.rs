//! The search on a real tiny family scored by the in-memory evaluator, where the optimum is
//! known by construction: layers 3 and 4 of the base are exact identities (zero o_proj and
//! down_proj, so the residual passes through unchanged), sibling `task` changes layer 1 only,
//! sibling `distractor` changes layer 5 only, and the tasks are labelled by the model
//! "base with `task`'s layer 1" (the teacher). Keeping 4 of 6 layers, the only way to score
//! 100 % is to drop layers 3 and 4 and carry `task`'s layer 1 while keeping the base's layer 5.

use std::path::Path;
use std::sync::Arc;

use hf_tailor::eval::{EvalOptions, Evaluator, Task, TaskData};
use hf_tailor::recipe::{EdgePolicy, Recipe};
use hf_tailor::score::Scorer;
use hf_tailor::search::baselines::{run_baseline, BaselineKind};
use hf_tailor::search::{header, run_search, Journal, OptimizerConfig, OptimizerKind, RecipeTemplate, SearchSpace, SpaceOptions};
use hf_tailor::testkit::identity_family::{IdentityFamily, IDENTITY, LAYERS};

use crate::common::{hf_tailor, tempdir};

#[test]
fn search_finds_the_known_optimum_of_an_identity_family_within_150_trials() {
    let dir = tempdir();
    let fam = IdentityFamily::write(dir.path()).unwrap();
    let family = Arc::new(fam.open().unwrap());
    let tasks = fam.tasks(family.clone(), 24).unwrap();
    assert!(
        tasks.iter().all(|t| matches!(&t.data, TaskData::MultipleChoice(i) if i.len() >= 12)),
        "the fixture separates the models on too few items"
    );
    let (base, sibs) = (fam.base.clone(), fam.siblings.clone());
    let mut ev = Evaluator::new(family.clone(), tasks, EvalOptions::default()).unwrap();
    let template = RecipeTemplate::for_family(&family, base.clone(), sibs.clone(), EdgePolicy::FollowLayers);
    let space = SearchSpace::new(template, 4, SpaceOptions::default()).unwrap();
    // By construction: the teacher without its identity layers scores 100 %, the base 0 %.
    let optimum = space.to_recipe(
        &space
            .from_recipe(&{
                let mut r = fam.teacher();
                r.layers.retain(|l| !IDENTITY.contains(&l.from));
                r
            })
            .unwrap(),
    );
    let s = ev.score(&optimum, 24).unwrap();
    assert!(s.values().all(|v| *v == 1.0), "{s:?}");
    assert_eq!(ev.score(&fam.full_recipe(["base"; LAYERS]), 24).unwrap()["needs_task"], 0.0);

    let mut cfg = OptimizerConfig::new(OptimizerKind::Bo, 0);
    cfg.budgets = vec![8, 24];
    let mut journal = Journal::create(&dir.path().join("j.jsonl"), header(&space, &cfg, ev.task_names())).unwrap();
    let out = run_search(&space, &mut journal, 150, &mut ev, |_| {}).unwrap();
    let best = out.best_trial();
    assert_eq!(best.budget, 24);
    assert_eq!(best.mean, 1.0, "the search did not reach the optimum in 150 trials: {}", best.recipe.to_yaml());
    assert_eq!(best.recipe.removed_layers(), IDENTITY.to_vec());
    let first = out.trials.iter().position(|t| t.mean == 1.0 && t.budget == 24).unwrap();
    eprintln!("optimum first reached at trial {first} of 150; chosen recipe:\n{}", best.recipe.to_yaml());

    // The depth-pruning baselines see the identity layers: their input and output agree.
    let texts = vec!["the quick brown fox jumps over the lazy dog".to_string(), "calibration text for hidden states".to_string()];
    let shortgpt = run_baseline(BaselineKind::Shortgpt, &space, &mut ev, &texts).unwrap();
    assert_eq!(shortgpt.removed, IDENTITY.to_vec());
    assert!(shortgpt.criterion[3].abs() < 1e-6 && shortgpt.criterion[4].abs() < 1e-6, "{:?}", shortgpt.criterion);
    let angular = run_baseline(BaselineKind::Angular, &space, &mut ev, &texts).unwrap();
    assert_eq!(angular.removed, IDENTITY.to_vec());
    let sleb = run_baseline(BaselineKind::Sleb, &space, &mut ev, &texts).unwrap();
    assert_eq!(sleb.removed.len(), 2);
    sleb.recipe.validate().unwrap();
}

/// Task files for the CLI: the two tasks as JSONL plus a calibration text file.
fn write_task_files(root: &Path, tasks: &[Task]) -> String {
    let mut specs = Vec::new();
    for t in tasks {
        let TaskData::MultipleChoice(items) = &t.data else { unreachable!() };
        let lines: Vec<String> =
            items.iter().map(|i| serde_json::json!({"context": i.context, "choices": i.choices, "label": i.label}).to_string()).collect();
        let p = root.join(format!("{}.jsonl", t.name));
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        specs.push(format!("mc:{}={}", t.name, p.display()));
    }
    let calib = root.join("calib.jsonl");
    std::fs::write(&calib, "{\"text\": \"the quick brown fox jumps over the lazy dog\"}\n").unwrap();
    specs.push(format!("ppl:calib={}", calib.display()));
    specs.join(",")
}

fn journal_without_timings(p: &Path) -> (hf_tailor::search::JournalHeader, Vec<hf_tailor::search::TrialRecord>) {
    let (h, mut t) = Journal::read(p).unwrap();
    // Wall time and the layer work (which depends on what the prefix cache held) are measurements.
    t.iter_mut().for_each(|t| {
        t.seconds = 0.0;
        t.layers = None;
    });
    (h, t)
}

#[test]
fn cli_search_killed_with_sigkill_resumes_to_the_uninterrupted_result() {
    let dir = tempdir();
    let fam = IdentityFamily::write(dir.path()).unwrap();
    let tasks = fam.tasks(Arc::new(fam.open().unwrap()), 24).unwrap();
    let dirs = &fam.dirs;
    let specs = write_task_files(dir.path(), &tasks);
    let finetunes = format!("{},{}", dirs[1].display(), dirs[2].display());
    let args = |out: &Path| -> Vec<String> {
        [
            "search",
            "--base",
            &dirs[0].display().to_string(),
            "--finetunes",
            &finetunes,
            "--keep-layers",
            "4",
            "--tasks",
            &specs,
            "--trials",
            "60",
            "--budgets",
            "8,24",
            "--seed",
            "3",
            "--baselines",
            "shortgpt,angular",
            "--out",
            &out.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // Uninterrupted run.
    let whole = dir.path().join("whole");
    let o = hf_tailor().args(args(&whole)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    for row in [
        "| base | base |",
        "| task | sibling |",
        "| distractor | sibling |",
        "| ShortGPT | baseline |",
        "| Angular distance | baseline |",
        "| hf-tailor | tailored |",
    ] {
        assert!(table.contains(row), "missing {row} in\n{table}");
    }
    for f in ["tailor.yaml", "report.json", "report.md", "search.svg", "journal.jsonl", "baselines/shortgpt.yaml", "baselines/angular.yaml"] {
        assert!(whole.join(f).is_file(), "{f} not written");
    }
    Recipe::load(&whole.join("tailor.yaml")).unwrap();

    // Killed with SIGKILL right after the 25th trial is journaled (a test switch, so the
    // cut is exact rather than raced with a timer), then resumed.
    let killed = dir.path().join("killed");
    let o = hf_tailor().args(args(&killed)).env("HF_TAILOR_TEST_KILL_AFTER_TRIALS", "25").output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(9), "want death by SIGKILL, got {:?}: {}", o.status, String::from_utf8_lossy(&o.stderr));
    let journal = killed.join("journal.jsonl");
    let (_, cut) = journal_without_timings(&journal);
    assert_eq!(cut.len(), 25, "trials journaled at the kill");
    assert!(!killed.join("tailor.yaml").exists(), "a killed search wrote its result");
    // What was journaled before the kill is exactly the uninterrupted run's first 25 trials.
    assert!(cut[..] == journal_without_timings(&whole.join("journal.jsonl")).1[..25], "the journal before the kill differs");
    // Without --resume the journal is protected.
    let o = hf_tailor().args(args(&killed)).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--resume"));
    let mut resumed = args(&killed);
    resumed.push("--resume".into());
    let o = hf_tailor().args(&resumed).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(journal_without_timings(&journal) == journal_without_timings(&whole.join("journal.jsonl")), "resumed journal differs");
    assert_eq!(std::fs::read_to_string(killed.join("tailor.yaml")).unwrap(), std::fs::read_to_string(whole.join("tailor.yaml")).unwrap());
}

/// The default objective is what `scripts/bench-quality.sh` chose: the calibration texts'
/// log-likelihood when there are texts, the correct choices' log-likelihood otherwise.
#[test]
fn cli_search_defaults_to_ppl_with_calibration_texts_and_to_loglik_without() {
    let dir = tempdir();
    let fam = IdentityFamily::write(dir.path()).unwrap();
    let tasks = fam.tasks(Arc::new(fam.open().unwrap()), 24).unwrap();
    let specs = write_task_files(dir.path(), &tasks);
    let (texts, mc_only): (Vec<&str>, Vec<&str>) = specs.split(',').partition(|s| s.starts_with("ppl"));
    let finetunes = format!("{},{}", fam.dirs[1].display(), fam.dirs[2].display());
    for (name, tasks, want) in [("texts", specs.clone(), "ppl"), ("mc", mc_only.join(","), "loglik")] {
        let out = dir.path().join(name);
        let o = hf_tailor()
            .args(["search", "--base", &fam.dirs[0].display().to_string(), "--finetunes", &finetunes, "--keep-layers", "4"])
            .args(["--tasks", &tasks, "--calibration", &texts.join(","), "--trials", "4", "--budgets", "8,24", "--json"])
            .args(["--out", &out.display().to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["objective"], want, "{name}");
        let (header, _) = journal_without_timings(&out.join("journal.jsonl"));
        assert_eq!(header.optimizer.objective.name(), want, "{name}: the journal records it for --resume");
    }
}

#[test]
fn cli_baselines_write_one_recipe_each_and_shortgpt_drops_the_identity_layers() {
    let dir = tempdir();
    let fam = IdentityFamily::write(dir.path()).unwrap();
    let tasks = fam.tasks(Arc::new(fam.open().unwrap()), 24).unwrap();
    let specs = write_task_files(dir.path(), &tasks);
    let out = dir.path().join("baselines");
    let finetunes = format!("{},{}", fam.dirs[1].display(), fam.dirs[2].display());
    let o = hf_tailor()
        .args(["baselines", "--base", &fam.dirs[0].display().to_string(), "--finetunes", &finetunes, "--remove-ratio", "0.34"])
        .args(["--tasks", &specs, "--budget", "24", "--out", &out.display().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for kind in ["shortgpt", "angular", "sleb"] {
        let r = Recipe::load(&out.join(format!("{kind}.yaml"))).unwrap();
        assert_eq!(r.layers.len(), 4, "{kind}: 6 − round(0.34·6) = 4 layers");
        if kind != "sleb" {
            assert_eq!(r.removed_layers(), IDENTITY.to_vec(), "{kind}");
        }
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("baselines.json")).unwrap()).unwrap();
    assert_eq!(json["baselines"].as_array().unwrap().len(), 3);
    // Without calibration text the baselines refuse with a message naming the fix.
    let mc_only: Vec<&str> = specs.split(',').filter(|s| !s.starts_with("ppl")).collect();
    let o = hf_tailor()
        .args(["baselines", "--base", &fam.dirs[0].display().to_string(), "--keep-layers", "4", "--tasks", &mc_only.join(",")])
        .args(["--out", &dir.path().join("none").display().to_string()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ppl=FILE") && err.lines().count() == 1, "{err}");
    assert!(!dir.path().join("none").exists(), "nothing written on a refused run");
}

#[test]
fn measures_come_from_the_same_log_likelihoods_and_the_selection_split_partitions_the_items() {
    use hf_tailor::score::{HoldOut, Items, Metric};
    let dir = tempdir();
    let fam = IdentityFamily::write(dir.path()).unwrap();
    let family = Arc::new(fam.open().unwrap());
    let tasks = fam.tasks(family.clone(), 24).unwrap();
    let mut ev = Evaluator::new(family.clone(), tasks.clone(), EvalOptions::default()).unwrap();
    // A candidate that gets some items right and some wrong.
    let recipe = fam.full_recipe(["base", "task", "base", "base", "base", "distractor"]);
    let all = ev.measure(&recipe, usize::MAX, Items::All).unwrap();
    for t in &tasks {
        let TaskData::MultipleChoice(items) = &t.data else { continue };
        let lls = ev.choice_log_likelihoods(&recipe, items).unwrap();
        let m = &all[&t.name];
        assert_eq!(m.items, items.len());
        // Independent recomputation from lm-eval-style per-choice log-likelihoods.
        let tokens = |i: &hf_tailor::eval::McItem, c: usize| ev.encoder().encode_pair(&i.context, &i.choices[c]).unwrap().1.len() as f64;
        let (mut acc, mut ll, mut margin) = (vec![], vec![], vec![]);
        for (item, l) in items.iter().zip(&lls) {
            let per: Vec<f64> = (0..l.len()).map(|c| l[c] / tokens(item, c)).collect();
            let best = (0..l.len()).fold(0, |b, c| if l[c] > l[b] { c } else { b });
            acc.push(f64::from(best == item.label));
            ll.push(per[item.label]);
            margin.push(per[item.label] - (0..l.len()).filter(|c| *c != item.label).map(|c| per[c]).fold(f64::NEG_INFINITY, f64::max));
        }
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * (1.0 + b.abs());
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(close(m.metrics[&Metric::Acc].value, mean(&acc)), "{}", t.name);
        assert!(close(m.metrics[&Metric::Loglik].value, mean(&ll)), "{}", t.name);
        assert!(close(m.metrics[&Metric::Margin].value, mean(&margin)), "{}", t.name);
        // The standard error of accuracy is the binomial one with n − 1.
        let p = mean(&acc);
        let n = acc.len() as f64;
        assert!(close(m.metrics[&Metric::Acc].se, (p * (1.0 - p) / (n - 1.0)).sqrt()), "{}", t.name);
        assert!(m.metrics[&Metric::Margin].se > 0.0 && m.metrics[&Metric::Loglik].se > 0.0);
    }
    // Search and selection items partition each task; budgets count search items.
    let h = HoldOut { fraction: 0.25, seed: 3 };
    let search = ev.measure(&recipe, usize::MAX, Items::Search(h)).unwrap();
    let selection = ev.measure(&recipe, 1, Items::Selection(h)).unwrap();
    for (t, m) in &all {
        assert_eq!(search[t].items + selection[t].items, m.items, "{t}");
        assert_eq!(selection[t].items, (m.items as f64 * 0.25).round() as usize, "{t}");
    }
    let small = ev.measure(&recipe, 5, Items::Search(h)).unwrap();
    assert!(small.values().all(|m| m.items == 5));
    // Another seed holds out other items.
    let other = HoldOut { fraction: 0.25, seed: 4 };
    let masks = |h: &HoldOut| tasks.iter().map(|t| h.selection_mask(&t.name, 24)).collect::<Vec<_>>();
    assert_ne!(masks(&h), masks(&other));
}

#[test]
fn cli_search_chooses_on_selection_tasks_of_their_own_and_refuses_them_beside_a_split() {
    use hf_tailor::score::Items;
    let dir = tempdir();
    let fam = IdentityFamily::write(dir.path()).unwrap();
    let family = Arc::new(fam.open().unwrap());
    let tasks = fam.tasks(family.clone(), 24).unwrap();
    let specs = write_task_files(dir.path(), &tasks);
    let finetunes = format!("{},{}", fam.dirs[1].display(), fam.dirs[2].display());
    // Validation texts the calibration tasks do not hold.
    let texts = ["a stitch in time saves nine", "many hands make light work", "the early bird catches the worm"];
    let write_texts = |name: &str, texts: &[&str]| {
        let p = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&p, texts.iter().map(|t| format!("{{\"text\": \"{t}\"}}\n")).collect::<String>()).unwrap();
        format!("ppl:{name}={}", p.display())
    };
    let (sel, other) = (write_texts("sel", &texts), write_texts("other", &texts[..1]));
    let search = |out: &Path, extra: &[&str]| {
        hf_tailor()
            .args(["search", "--base", &fam.dirs[0].display().to_string(), "--finetunes", &finetunes, "--keep-layers", "4"])
            .args(["--tasks", &specs, "--trials", "6", "--budgets", "8,24", "--baselines", "shortgpt", "--json"])
            .args(["--out", &out.display().to_string()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = dir.path().join("out");
    let o = search(&out, &["--selection-tasks", &sel]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["selection_tasks"], serde_json::json!(["sel"]));
    assert!(report["selection"].as_str().unwrap().contains("selection tasks of their own"), "{}", report["selection"]);
    // The trials saw every calibration item: no split in the journal.
    let (header, trials) = journal_without_timings(&out.join("journal.jsonl"));
    assert_eq!(header.optimizer.hold_out, None);
    // Each finalist's selection score is its perplexity objective on all the selection texts,
    // as an evaluator that holds only those texts scores it.
    let sel_task = hf_tailor::eval::TaskSpec::parse_list(&sel).unwrap()[0].load().unwrap();
    let mut alone = Evaluator::new(family.clone(), vec![sel_task], EvalOptions::default()).unwrap();
    let finalists = report["finalists"].as_array().unwrap();
    assert!(!finalists.is_empty());
    for f in finalists {
        let recipe = &trials[f["trial"].as_u64().unwrap() as usize].recipe;
        let m = alone.measure(recipe, usize::MAX, Items::All).unwrap();
        assert_eq!(m["sel"].items, texts.len());
        let want = hf_tailor::search::objective::overall(&m, hf_tailor::score::Metric::Ppl).unwrap().value;
        let got = f["selection"]["value"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9 * (1.0 + want.abs()), "trial {}: {got} vs {want}", f["trial"]);
    }
    // Texts only: no accuracy on the selection tasks, and the report says none rather than 0.
    assert!(finalists.iter().all(|f| f["selection_acc"].is_null()), "{finalists:?}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("scored on the selection tasks (sel)"), "{md}");
    let rows: Vec<&str> =
        md.lines().skip_while(|l| !l.starts_with("Finalists")).filter(|l| l.starts_with("| ") && !l.starts_with("| trial")).collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.split('|').nth(7).map(str::trim) == Some("–")), "{rows:?}");
    // The trials never saw them: a resume may choose on others, without scoring a trial again.
    let o = search(&out, &["--resume", "--selection-tasks", &other]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["selection_tasks"], serde_json::json!(["other"]));
    assert_eq!(journal_without_timings(&out.join("journal.jsonl")).1, trials, "no trial scored again");
    // A split instead would change the items the trials were scored on: refused, naming it.
    let o = search(&out, &["--resume", "--selection-split", "0.3"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("selection split none (every item: --selection-tasks or --selection-split 0) (now 0.30"), "{err}");
    // Two ways to choose, or selection tasks that cannot score the objective: refused (exit 2,
    // one line), before anything is written.
    let mc_only = specs.split(',').find(|s| s.starts_with("mc")).unwrap();
    for (extra, says) in [
        (vec!["--selection-tasks", &sel, "--selection-split", "0.3"], "--selection-split and --selection-tasks"),
        (vec!["--selection-tasks", mc_only], "--selection-tasks has no text task"),
    ] {
        let refused = dir.path().join("refused");
        let o = search(&refused, &extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.trim_end().lines().last().unwrap().contains(says), "{err}");
        assert!(!refused.join("journal.jsonl").exists(), "{err}");
    }
}
