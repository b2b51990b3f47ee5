//! The heal (a fitted map per gap, fused into down_proj): the fit against numpy's solve of
//! the same system, the written model against the in-memory candidate and transformers, and
//! the refusals (a changed maps file, mergekit export, an architecture it cannot fuse into).

use std::path::Path;
use std::sync::Arc;

use hf_tailor::checkpoint::{Checkpoint, Family};
use hf_tailor::eval::{EvalOptions, Evaluator};
use hf_tailor::recipe::{EdgePolicy, LayerRule, Recipe, Rule, SourceModel, Teacher};
use hf_tailor::testkit::fixture::{self, TinySpec};

use crate::common;

/// Calibration text: byte-level tokens, several times the hidden size (32).
pub(crate) fn texts() -> Vec<String> {
    vec![
        "The quick brown fox jumps over the lazy dog while the farmer sleeps under a tree by the river bank.".into(),
        "In 1905 a clerk in Bern wrote four papers that changed physics: light quanta, motion, relativity, mass.".into(),
        "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # five, as the comment says; nothing else happens".into(),
        "Shall I compare thee to a summer's day? Thou art more lovely and more temperate, rough winds do shake.".into(),
    ]
}

/// A base and two siblings under `root`; the recipe keeps source layers 1 and 2 of 4 from
/// the siblings' average and sibling 1: a leading gap (layer 0, unhealable) and a gap after
/// source layer 2 that runs to the end (the teacher's pre-norm last state).
fn setup(root: &Path) -> (Arc<Family>, Recipe) {
    let spec = TinySpec::llama();
    let (base, sibs, _) = fixture::write_family(root, &spec, 2, 11).unwrap();
    let open = |n: &str, d: &Path| (n.to_string(), Checkpoint::open(d).unwrap());
    let fam = Arc::new(Family::new(open("base", &base), vec![open("sib1", &sibs[0]), open("sib2", &sibs[1])]).unwrap());
    let avg = Rule::Merge(hf_tailor::recipe::Merge::TaskArithmetic { models: vec!["sib1".into(), "sib2".into()], lambda: 0.5 });
    let layers = vec![LayerRule { from: 1, rule: avg }, LayerRule { from: 2, rule: Rule::Take("sib1".into()) }];
    let r = Recipe::new(
        "llama",
        4,
        SourceModel::local("base", &base),
        vec![SourceModel::local("sib1", &sibs[0]), SourceModel::local("sib2", &sibs[1])],
        layers,
        EdgePolicy::FollowLayers,
    );
    (fam, r)
}

/// A recipe with two healable gaps (after source layers 0 and 2), teacher the base.
fn two_gaps(r: &Recipe) -> Recipe {
    let mut r = r.clone();
    r.layers = vec![LayerRule { from: 0, rule: Rule::Take("sib2".into()) }, LayerRule { from: 2, rule: Rule::Take("sib1".into()) }];
    r
}

/// Each gap's map is numpy's solution of the system the fit accumulated, with the same
/// ridge (`(G + αI) T = C`, α = ridge · trace(G)/d); the gaps are the recipe's, left to
/// right, and the leading gap stays unhealed.
#[test]
fn fitted_maps_equal_numpy_least_squares_of_the_same_system() {
    let tmp = common::tempdir();
    let (fam, r) = setup(tmp.path());
    let mut ev = Evaluator::new(fam.clone(), vec![], EvalOptions::default()).unwrap();
    let seqs = ev.heal_sequences(&texts(), 4096).unwrap();
    let ridge = 1e-3;
    let mut jobs = vec![];
    for (recipe, teacher) in [(two_gaps(&r), Teacher::Base), (r.clone(), Teacher::Average)] {
        let fit = ev.fit_heal(&recipe, &teacher, &seqs, ridge).unwrap();
        let heal = fit.recipe.heal.as_ref().expect("healed");
        let systems = hf_tailor::eval::heal_fit::LAST_SYSTEMS.with(|s| s.borrow().clone());
        assert_eq!(systems.len(), heal.gaps.len());
        for ((layer, g, c), gap) in systems.iter().zip(&heal.gaps) {
            assert_eq!(*layer, gap.layer);
            jobs.push(serde_json::json!({"g": g, "c": c, "d": 32, "ridge": ridge, "t": fit.maps[&gap.map]}));
        }
        if teacher == Teacher::Average {
            assert_eq!(fit.unhealed, vec![0]);
            assert_eq!(heal.gaps.iter().map(|g| (g.layer, g.from, g.until)).collect::<Vec<_>>(), vec![(1, 2, 4)]);
        } else {
            assert_eq!(heal.gaps.iter().map(|g| (g.layer, g.from, g.until)).collect::<Vec<_>>(), vec![(0, 0, 2), (1, 2, 4)]);
        }
        assert_eq!(heal.tokens, seqs.iter().map(Vec::len).sum::<usize>());
        assert!(heal.tokens > 10 * 32, "the tiny fit must be over-determined");
    }
    let path = tmp.path().join("systems.json");
    std::fs::write(&path, serde_json::Value::Array(jobs).to_string()).unwrap();
    let script = "import json, sys\nimport numpy as np\nworst = 0.0\nfor j in json.load(open(sys.argv[1])):\n    d = j['d']\n    g = np.array(j['g'], dtype=np.float64).reshape(d, d)\n    c = np.array(j['c'], dtype=np.float64).reshape(d, d)\n    a = j['ridge'] * np.trace(g) / d\n    t = np.linalg.solve(g + a * np.eye(d), c)\n    ours = np.array(j['t'], dtype=np.float64).reshape(d, d)\n    worst = max(worst, float(np.abs(ours - t).max() / np.abs(t).max()))\nprint(worst)\n";
    let out = std::process::Command::new(common::python()).arg("-c").arg(script).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let worst: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    // The map is stored in f32: its rounding (6e-8 relative) bounds the agreement.
    assert!(worst < 1e-6, "numpy's solution differs by {worst:e} (relative to the map's largest entry)");
}

/// A search's heal request is fitted when the candidate is scored (in memory, on the
/// search's calibration tokens, the teacher's states kept for the next fits) and scores
/// exactly as the explicit fit of the same recipe does; without the search's tokens, or on
/// a path that does not fit, it is refused rather than scored unhealed.
#[test]
fn a_heal_request_scores_exactly_as_its_explicit_fit() {
    use hf_tailor::eval::{Task, TaskData};
    use hf_tailor::recipe::Heal;
    use hf_tailor::score::{Items, Scorer};
    let tmp = common::tempdir();
    let (fam, r) = setup(tmp.path());
    let task = Task::new(
        "held",
        TaskData::Perplexity(vec!["A text to score, other than the calibration texts, a little long.".into(), "And a short one.".into()]),
    );
    let mut ev = Evaluator::new(fam.clone(), vec![task.clone()], EvalOptions::default()).unwrap();
    let ask_for =
        |recipe: &Recipe, teacher: Teacher, tokens: usize| Recipe { heal: Some(Box::new(Heal::request(teacher, tokens, 1e-3))), ..recipe.clone() };
    let ask = |recipe: &Recipe, teacher: Teacher| ask_for(recipe, teacher, 4096);
    let e = ev.measure(&ask(&two_gaps(&r), Teacher::Average), 100, Items::All).unwrap_err().to_string();
    assert!(e.contains("no heal calibration") && !e.contains('\n'), "{e}");
    ev.set_heal_calibration(texts());
    let mut explicit = Evaluator::new(fam.clone(), vec![task], EvalOptions::default()).unwrap();
    // A request fits on the first `tokens` of the texts: all of them, or 200 (a trial's fidelity).
    for (recipe, teacher, tokens) in [
        (two_gaps(&r), Teacher::Average, 4096),
        (r.clone(), Teacher::Average, 4096),
        (two_gaps(&r), Teacher::Base, 4096),
        (two_gaps(&r), Teacher::Base, 200),
    ] {
        let ask = |recipe: &Recipe, teacher: Teacher| ask_for(recipe, teacher, tokens);
        let seqs = explicit.heal_sequences(&texts(), tokens).unwrap();
        let searched = ev.measure(&ask(&recipe, teacher.clone()), 100, Items::All).unwrap();
        let again = ev.measure(&ask(&recipe, teacher.clone()), 100, Items::All).unwrap();
        let fit = explicit.fit_heal(&recipe, &teacher, &seqs, 1e-3).unwrap();
        assert_eq!(fit.recipe.heal.as_ref().unwrap().tokens, seqs.iter().map(Vec::len).sum::<usize>().min(tokens));
        let want = explicit.measure(&fit.recipe, 100, Items::All).unwrap();
        assert_eq!(searched, want, "{teacher}: the request scores as its explicit fit");
        assert_eq!(again, want, "{teacher}: from the fit cache");
        assert_ne!(explicit.measure(&recipe, 100, Items::All).unwrap(), want, "the heal changes the scores");
    }
    let probe = vec![ev.encoder().encode("Hello").unwrap()];
    let e = ev.logits(&ask(&r, Teacher::Base), &probe).unwrap_err().to_string();
    assert!(e.contains("not fitted yet"), "{e}");
}

/// A healed recipe saved with its maps and built from its files is the model the evaluator
/// scored in memory (same logits, exactly), and transformers loads it to the same logits;
/// the heal changes the candidate; the build carries the maps and `tailor.yaml` rebuilds it.
#[test]
fn healed_build_equals_the_in_memory_candidate_and_transformers() {
    let tmp = common::tempdir();
    let (fam, r) = setup(tmp.path());
    let mut ev = Evaluator::new(fam.clone(), vec![], EvalOptions::default()).unwrap();
    let seqs = ev.heal_sequences(&texts(), 4096).unwrap();
    let fit = ev.fit_heal(&two_gaps(&r), &Teacher::Average, &seqs, 1e-3).unwrap();
    let probe: Vec<Vec<u32>> = ["Hello, world! A healed model speaks.", "Short"].iter().map(|t| ev.encoder().encode(t).unwrap()).collect();
    let in_memory = ev.logits(&fit.recipe, &probe).unwrap();
    let unhealed = ev.logits(&two_gaps(&r), &probe).unwrap();
    assert_ne!(in_memory, unhealed, "the heal changes the candidate");

    let recipe_path = tmp.path().join("run/tailor.yaml");
    std::fs::create_dir_all(recipe_path.parent().unwrap()).unwrap();
    hf_tailor::eval::heal_fit::save(&fit, &recipe_path, 32).unwrap();
    assert!(tmp.path().join("run/heal.safetensors").is_file());
    let loaded = Recipe::load(&recipe_path).unwrap();
    // A fresh evaluator reads the maps from the file.
    let mut fresh = Evaluator::new(fam.clone(), vec![], EvalOptions::default()).unwrap();
    assert_eq!(fresh.logits(&loaded, &probe).unwrap(), in_memory);

    let out = tmp.path().join("built");
    hf_tailor::writer::build(&fam, &loaded, &out, &hf_tailor::writer::BuildOptions::default()).unwrap();
    assert!(out.join("heal.safetensors").is_file(), "the maps travel with the model");
    let built = Family::new(("m".to_string(), Checkpoint::open(&out).unwrap()), vec![]).unwrap();
    let whole = Recipe::whole_model("m", "llama", 2, SourceModel::local("m", &out), vec![]);
    let mut ev_built = Evaluator::new(Arc::new(built), vec![], EvalOptions::default()).unwrap();
    assert_eq!(ev_built.logits(&whole, &probe).unwrap(), in_memory, "the built model is the in-memory candidate");
    // The written tailor.yaml rebuilds the same bytes without refitting.
    let again = tmp.path().join("again");
    let from_out = Recipe::load(&out.join("tailor.yaml")).unwrap();
    assert_eq!(from_out.heal.as_ref().unwrap().gaps, loaded.heal.as_ref().unwrap().gaps);
    let mut rebuilt = from_out.clone();
    for (m, orig) in std::iter::once(&mut rebuilt.base).chain(rebuilt.siblings.iter_mut()).zip(loaded.models()) {
        m.source = orig.source.clone();
    }
    hf_tailor::writer::build(&fam, &rebuilt, &again, &hf_tailor::writer::BuildOptions::default()).unwrap();
    let shard = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors") && !e.file_name().to_string_lossy().contains("heal"))
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(shard(&out), shard(&again), "a rebuild gives the same bytes");

    // GGUF export needs nothing special: the fused weights are ordinary tensors.
    let gguf = common::hf_tailor().args(["gguf", "--model", out.to_str().unwrap(), "--type", "f32"]).output().unwrap();
    assert!(gguf.status.success(), "{}", String::from_utf8_lossy(&gguf.stderr));
    assert!(std::fs::read_dir(&out).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".gguf")));

    let req = serde_json::json!([{"model": out, "sequences": probe, "items": []}]);
    let req_path = tmp.path().join("req.json");
    let ref_path = tmp.path().join("ref.json");
    std::fs::write(&req_path, req.to_string()).unwrap();
    common::run_python("eval_crosscheck.py", &[req_path.to_str().unwrap(), ref_path.to_str().unwrap()]);
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ref_path).unwrap()).unwrap();
    for (i, ours) in in_memory.iter().enumerate() {
        let d = common::max_logit_diff(ours, &reference[0]["single"][i]);
        assert!(d < 1e-4, "sequence {i}: transformers' logits differ by {d:e}");
    }
}

/// The CLI heals a recipe; a changed or missing maps file is refused with one line and exit
/// 2 by build and eval; mergekit export refuses a healed recipe.
#[test]
fn cli_heals_and_a_changed_maps_file_or_mergekit_export_is_refused() {
    let tmp = common::tempdir();
    let (_fam, r) = setup(tmp.path());
    let recipe = tmp.path().join("cut.yaml");
    r.save(&recipe).unwrap();
    let texts_file = tmp.path().join("texts.jsonl");
    std::fs::write(&texts_file, texts().iter().map(|t| serde_json::json!({"text": t}).to_string() + "\n").collect::<String>()).unwrap();
    let healed = tmp.path().join("healed.yaml");
    let out = common::hf_tailor()
        .args(["heal", "--recipe", recipe.to_str().unwrap(), "--teacher", "base", "--out", healed.to_str().unwrap()])
        .args(["--calibration", &format!("ppl={}", texts_file.display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stay unhealed"), "the leading gap is reported");
    let maps = tmp.path().join("healed.heal.safetensors");
    assert!(maps.is_file());
    let text = std::fs::read_to_string(&healed).unwrap();
    assert!(text.contains("teacher: base") && text.contains("file: healed.heal.safetensors"), "{text}");

    let export = common::hf_tailor().args(["mergekit", "export", healed.to_str().unwrap()]).output().unwrap();
    assert_eq!(export.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&export.stderr).contains("mergekit cannot express"), "{}", String::from_utf8_lossy(&export.stderr));

    let mut bytes = std::fs::read(&maps).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&maps, &bytes).unwrap();
    let build = common::hf_tailor().args(["build", "--recipe", healed.to_str().unwrap(), "--out"]).arg(tmp.path().join("o")).output().unwrap();
    let err = String::from_utf8_lossy(&build.stderr);
    assert_eq!(build.status.code(), Some(2), "{err}");
    assert!(err.contains("sha256") && err.trim().lines().count() == 1, "{err}");
    std::fs::remove_file(&maps).unwrap();
    let eval = common::hf_tailor()
        .args(["eval", "--recipe", healed.to_str().unwrap(), "--tasks"])
        .arg(format!("ppl={}", texts_file.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&eval.stderr);
    assert_eq!(eval.status.code(), Some(2), "{err}");
    assert!(err.contains("maps file") && err.trim().lines().count() == 1, "{err}");
}

/// The CLI tests' job under `dir`: the fixture family's base and sibling list, a letters
/// task, and `out` (as strings, for arguments).
pub(crate) fn job_inputs(dir: &Path, out: &Path) -> [String; 4] {
    let (base, list) = crate::cli::fixture_job(dir);
    let task = dir.join("letters.jsonl");
    crate::cli::letters_task(&task, 24);
    [base, list, task, out.to_path_buf()].map(|p| p.display().to_string())
}

/// The root command with `--heal on`: the chosen candidate is healed before the held-out
/// report and the build; tailor.yaml names the maps file beside it, the written model
/// carries the maps and passes the job's verification (its scores equal the in-memory ones).
#[test]
fn the_root_command_heals_the_chosen_candidate_and_verifies_the_build() {
    use crate::cli::{run, text};
    let dir = common::tempdir();
    let out_dir = dir.path().join("job");
    let [base_s, list_s, task_s, out_s] = job_inputs(dir.path(), &out_dir);
    let args = ["--base", &base_s, "--finetunes", &list_s, "--tasks", &task_s, "--keep-layers", "2", "--out", &out_s, "--trials", "3"];
    let out = run(&[&args[..], &["--heal", "on", "--heal-teacher", "base", "--json"]].concat(), dir.path());
    assert_eq!(out.status.code(), Some(0), "job failed:\n{}", text(&out.stderr));
    let recipe = Recipe::load(&out_dir.join("tailor.yaml")).unwrap();
    let heal = recipe.heal.as_ref().expect("the chosen recipe is healed");
    assert_eq!(heal.teacher, Teacher::Base);
    assert!(!heal.gaps.is_empty() || !heal.unhealed.is_empty());
    assert!(out_dir.join("heal.safetensors").is_file() && out_dir.join("model/heal.safetensors").is_file());
    assert!(std::fs::read_to_string(out_dir.join("tailor.yaml")).unwrap().contains("file: heal.safetensors"));
    if !heal.gaps.is_empty() {
        let card = std::fs::read_to_string(out_dir.join("model/README.md")).unwrap();
        assert!(card.contains("Healed without training") && card.contains("against the full-depth base"), "{card}");
    }

    // `search` heals its choice the same way (teacher: the siblings' average by default);
    // `--heal auto` keeps the heal only if it scores better on the selection split, and says so.
    let search_dir = dir.path().join("search");
    let s_out = search_dir.display().to_string();
    let search = ["search", "--base", &base_s, "--finetunes", &list_s, "--tasks", &task_s, "--keep-layers", "2", "--out", &s_out];
    let out = run(&[&search[..], &["--trials", "3", "--baselines", "none", "--heal", "auto"]].concat(), dir.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "search failed:\n{err}");
    assert!(err.contains("--heal auto: the heal"), "{err}");
    let recipe = Recipe::load(&search_dir.join("tailor.yaml")).unwrap();
    match &recipe.heal {
        Some(h) => {
            assert_eq!(h.teacher, Teacher::Average);
            assert!(search_dir.join("heal.safetensors").is_file() && err.contains("kept"), "{err}");
        }
        None => assert!(!search_dir.join("heal.safetensors").exists() && err.contains("stays unhealed"), "{err}"),
    }
}

/// `search --heal search`: healed candidates are trials of the search (their journal recipes
/// ask for the heal; the warm starts include the healed cuts), and the written choice is
/// fitted, never a request, with its maps beside it when healed; the modes' misuses are
/// one-line usage errors.
#[test]
fn the_search_searches_the_heal_and_writes_a_fitted_choice() {
    use crate::cli::{run, text};
    let dir = common::tempdir();
    let out_dir = dir.path().join("s");
    let [base_s, list_s, task_s, out_s] = job_inputs(dir.path(), &out_dir);
    let texts_file = dir.path().join("texts.jsonl");
    std::fs::write(&texts_file, texts().iter().map(|t| serde_json::json!({"text": t}).to_string() + "\n").collect::<String>()).unwrap();
    let calibration = format!("ppl={}", texts_file.display());
    let search = [
        "search",
        "--base",
        &base_s,
        "--finetunes",
        &list_s,
        "--tasks",
        &task_s,
        "--calibration",
        &calibration,
        "--keep-layers",
        "2",
        "--out",
        &out_s,
    ];
    // The trials fit on 200 tokens; the chosen candidate is fitted again on all the text.
    let trial_tokens = ["--heal-search-tokens", "200"];
    let out = run(&[&search[..], &["--trials", "12", "--heal", "search", "--heal-teacher", "base,average"], &trial_tokens[..]].concat(), dir.path());
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "search failed:
{err}"
    );
    let journal = std::fs::read_to_string(out_dir.join("journal.jsonl")).unwrap();
    let trials: Vec<serde_json::Value> = journal.lines().skip(1).map(|l| serde_json::from_str(l).unwrap()).collect();
    let healed = trials.iter().filter(|t| t["recipe"].get("heal").is_some()).count();
    assert!(healed > 0 && healed < trials.len(), "healed and unhealed trials: {healed} of {}", trials.len());
    let warm_healed = trials.iter().filter(|t| t["origin"] == "baseline" && t["recipe"].get("heal").is_some()).count();
    assert!(warm_healed >= 1, "the baseline's cut healed by the base is a warm start");
    let header = journal.lines().next().unwrap();
    assert!(
        header.contains("\"teachers\":[\"base\",\"average\"]") && header.contains("\"tokens\":200"),
        "the space's heal is in the header: {header}"
    );
    assert!(trials.iter().filter_map(|t| t["recipe"].get("heal")).all(|h| h["tokens"] == 200), "every trial fits on 200 tokens");
    // ShortGPT's cut healed against the base is a row beside ShortGPT's, on the same items.
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("ShortGPT + heal") && report.contains("| ShortGPT |"), "{report}");
    let recipe = Recipe::load(&out_dir.join("tailor.yaml")).unwrap();
    match &recipe.heal {
        Some(h) => {
            assert!(!h.is_request() && out_dir.join("heal.safetensors").is_file(), "a fitted heal beside the recipe");
            assert!(err.contains("--heal search: the chosen candidate is healed against"), "{err}");
            assert!(
                h.tokens > 200 && err.contains("(its trials: 200)"),
                "the written heal is fitted on more tokens than the trials: {} {err}",
                h.tokens
            );
        }
        None => assert!(!out_dir.join("heal.safetensors").exists() && err.contains("--heal search: the chosen candidate is unhealed"), "{err}"),
    }
    for (extra, why) in [
        (&["--heal", "on", "--heal-teacher", "base,average"][..], "a list of teachers is for --heal search"),
        (&["--heal", "search", "--heal-teacher", "sibling:nope"][..], "teacher `sibling:nope` is not a sibling"),
    ] {
        let mut other = search;
        let fresh = dir.path().join("refused").display().to_string();
        other[other.len() - 1] = &fresh;
        let out = run(&[&other[..], &["--trials", "2"], extra].concat(), dir.path());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(why) && err.trim().lines().count() == 1, "{err}");
    }
}

/// llama.cpp converts a healed output and runs it to transformers' logits: the fused
/// down_proj is an ordinary tensor (and the maps file beside the shards is not read).
#[test]
fn llama_cpp_converts_and_runs_a_healed_output() {
    let tmp = common::tempdir();
    let (llama_cpp, runtime) = (common::llama_cpp(), common::llama_cpp_runtime());
    let spec = TinySpec::llama();
    let (base, sibs, _) = fixture::write_family(tmp.path(), &spec, 2, 11).unwrap();
    // A Llama-2-style tokenizer, which the converter recognises (the fixtures' own is not).
    common::run_python("llama_cpp_check.py", &["tokenizer", base.to_str().unwrap()]);
    let open = |n: &str, d: &Path| (n.to_string(), Checkpoint::open(d).unwrap());
    let fam = Arc::new(Family::new(open("base", &base), vec![open("sib1", &sibs[0]), open("sib2", &sibs[1])]).unwrap());
    let layers = [0, 2, 3].iter().map(|&from| LayerRule { from, rule: Rule::Take("sib1".into()) }).collect();
    let src = |n: &str, d: &Path| SourceModel::local(n, d);
    let r = Recipe::new("llama", 4, src("base", &base), vec![src("sib1", &sibs[0]), src("sib2", &sibs[1])], layers, EdgePolicy::FollowLayers);
    let mut ev = Evaluator::new(fam.clone(), vec![], EvalOptions::default()).unwrap();
    let seqs = ev.heal_sequences(&texts(), 4096).unwrap();
    let fit = ev.fit_heal(&r, &Teacher::Base, &seqs, 1e-3).unwrap();
    let path = tmp.path().join("healed.yaml");
    hf_tailor::eval::heal_fit::save(&fit, &path, spec.hidden).unwrap();
    let out = tmp.path().join("out");
    hf_tailor::writer::build(&fam, &Recipe::load(&path).unwrap(), &out, &hf_tailor::writer::BuildOptions::default()).unwrap();
    let gguf = tmp.path().join("out.gguf");
    let stdout = common::run_python(
        "llama_cpp_check.py",
        &["convert", out.to_str().unwrap(), llama_cpp.to_str().unwrap(), runtime.to_str().unwrap(), gguf.to_str().unwrap()],
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default()).expect("JSON summary");
    assert_eq!(v["block_count"], 3, "{v}");
    assert_eq!(v["tensors"].as_array().map(Vec::len), Some(3 * 9 + 3), "{v}");
    assert_eq!((v["unexpected"].as_array().map(Vec::len), v["mismatched"].as_array().map(Vec::len)), (Some(0), Some(0)), "{v}");
    assert_eq!(v["max_abs_diff"], 0.0, "{v}");
    let run = &v["llama_cpp_run"];
    assert!(run["max_abs_logit_diff"].as_f64().is_some_and(|d| d < 0.05), "{run}");
}
