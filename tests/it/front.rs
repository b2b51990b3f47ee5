//! A size–quality front through the command line: `search` and the root command over a
//! depth range write a buildable recipe per depth, the root command builds the picked
//! point (`--pick` moves it), scores the front on held-out items and cards it with its
//! table and plot; bad ranges are one-line usage errors.

use std::path::{Path, PathBuf};
use std::process::Output;

use hf_tailor::testkit::fixture::{write_family, TinySpec};

use crate::cli::{letters_task, run, text};
use crate::common::{hf_tailor, tempdir};

/// Exit 2 and one error line naming the problem (stage lines before it are progress).
fn assert_usage_error(out: &Output, mentions: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "want exit 2, got {:?}; stderr: {err}", out.status);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("hf-tailor: error: ")).collect();
    assert_eq!(errors.len(), 1, "want one error line, got:\n{err}");
    assert_eq!(err.trim_end().lines().last(), Some(errors[0]), "the error is the last line:\n{err}");
    assert!(errors[0].contains(mentions), "stderr should mention {mentions:?}: {err}");
}

/// A 4-layer Llama fixture with two siblings and a 2-choice task of 30 items.
struct Job {
    _dir: tempfile::TempDir,
    root: PathBuf,
    base: String,
    list: String,
    task: String,
}

fn job() -> Job {
    let dir = tempdir();
    let root = dir.path().to_path_buf();
    let (base, sibs, _) = write_family(&root.join("family"), &TinySpec::llama(), 2, 11).expect("fixture family");
    let list = root.join("finetunes.txt");
    std::fs::write(&list, sibs.iter().map(|s| s.display().to_string()).collect::<Vec<_>>().join("\n") + "\n").expect("list");
    let task = root.join("letters.jsonl");
    letters_task(&task, 30);
    let s = |p: &Path| p.display().to_string();
    Job { base: s(&base), list: s(&list), task: s(&task), root, _dir: dir }
}

impl Job {
    /// The root command into `out` with `extra` flags.
    fn tailor(&self, out: &str, extra: &[&str]) -> Output {
        let out = self.root.join(out).display().to_string();
        let mut args = vec!["--base", &self.base, "--finetunes", &self.list, "--tasks", &self.task, "--trials", "8", "--out", &out, "--json"];
        args.extend_from_slice(extra);
        run(&args, &self.root)
    }

    /// `hf-tailor build` of `recipe` into `out`; the built model's layer count.
    fn build(&self, recipe: &Path, out: &str) -> usize {
        let out = self.root.join(out);
        let o = hf_tailor().args(["build", "--recipe"]).arg(recipe).arg("--out").arg(&out).output().expect("spawn build");
        assert!(o.status.success(), "build of {} failed: {}", recipe.display(), text(&o.stderr));
        hf_tailor::config::ModelConfig::from_file(&out.join("config.json")).expect("config").num_hidden_layers
    }
}

fn layers_of(model: &Path) -> usize {
    hf_tailor::config::ModelConfig::from_file(&model.join("config.json")).expect("config").num_hidden_layers
}

#[test]
fn search_over_a_range_writes_a_buildable_recipe_per_depth() {
    let j = job();
    let out = j.root.join("search");
    let task = format!("mc:letters={}", j.task);
    let o = run(
        &[
            "search",
            "--base",
            &j.base,
            "--finetunes",
            &j.list,
            "--keep-layers",
            "2..3",
            "--tasks",
            &task,
            "--trials",
            "8",
            "--budgets",
            "10,30",
            "--baselines",
            "none",
            "--selection-tasks",
            &format!("mc:dev={}", j.task),
            "--out",
            &out.display().to_string(),
        ],
        &j.root,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    for k in [2, 3] {
        let recipe = out.join(format!("front/keep-{k}.yaml"));
        assert_eq!(j.build(&recipe, &format!("built-{k}")), k, "front/keep-{k}.yaml builds a {k}-layer model");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report")).expect("JSON");
    let front = report["front"].as_array().expect("front");
    assert_eq!(front.iter().map(|p| p["layers"].as_u64().unwrap_or(0)).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(front.iter().filter(|p| p["picked"] == true).count(), 1);
    assert!(out.join("front.svg").is_file());
    // Each depth's candidate was chosen among finalists scored on the selection tasks.
    assert_eq!(report["selection_tasks"], serde_json::json!(["dev"]));
    let finalists = report["finalists"].as_array().expect("finalists");
    let progress = report["progress"].as_array().expect("progress");
    let depth = |f: &serde_json::Value| progress.iter().find(|p| p["trial"] == f["trial"]).and_then(|p| p["layers"].as_u64());
    for k in [2, 3] {
        assert!(finalists.iter().any(|f| depth(f) == Some(k)), "finalists at depth {k}: {finalists:?}");
    }
}

#[test]
fn the_root_command_over_a_range_cards_the_front_and_builds_the_pick() {
    let j = job();
    let o = j.tailor("a", &["--keep-layers", "2..3", "--selection-tasks", &j.task]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(j.root.join("a/report.json")).expect("report")).expect("JSON");
    assert_eq!(report["selection_tasks"], serde_json::json!(["letters"]), "the root command chose on its selection tasks");
    let outcome: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON outcome");
    let out = j.root.join("a");
    let front = outcome["front"].as_array().expect("a front");
    assert_eq!(front.len(), 2);
    let picked = front.iter().find(|p| p["picked"] == true).expect("a picked point");
    let k = picked["layers"].as_u64().expect("layers") as usize;
    // The picked point is the model built, verified and carded.
    assert_eq!(layers_of(&out.join("model")), k);
    assert_eq!(outcome["recipe"]["layers"].as_array().map(Vec::len), Some(k));
    // Every point and the baselines at its depth are scored on the held-out 20 % (6 of 30 items).
    for p in front {
        assert_eq!(p["tailored"]["items"]["letters"], 6, "{p}");
        let labels: Vec<&str> = p["baselines"].as_array().expect("baselines").iter().map(|b| b["label"].as_str().unwrap_or("")).collect();
        assert_eq!(labels, ["ShortGPT", "Angular distance", "SLEB"]);
        assert!(p["baselines"].as_array().unwrap().iter().all(|b| b["items"]["letters"] == 6 && b["se"]["letters"].is_number()));
    }
    // The picked point's front row is the card's tailored row (same items, same numbers).
    let tailored = outcome["rows"].as_array().expect("rows").iter().find(|r| r["kind"] == "tailored").expect("tailored row");
    assert_eq!(tailored["scores"], picked["tailored"]["scores"]);
    for k in [2, 3] {
        assert_eq!(j.build(&out.join(format!("front/keep-{k}.yaml")), &format!("a-built-{k}")), k);
    }

    let card = std::fs::read_to_string(out.join("model/README.md")).expect("card");
    assert!(out.join("model/front.svg").is_file() && out.join("front.svg").is_file());
    let svg = std::fs::read_to_string(out.join("model/front.svg")).expect("svg");
    assert!(svg.contains("ShortGPT") && svg.contains("SLEB") && svg.contains(&format!("picked: {k} layers")), "{svg}");
    assert!(card.contains("## Size–quality front") && card.contains("](front.svg)"), "{card}");
    assert!(card.contains("| Layers | Parameters | hf-tailor | ShortGPT | Angular distance | SLEB | Picked |"), "{card}");
    let row = |l: usize| card.lines().find(|line| line.starts_with(&format!("| {l} | "))).unwrap_or_default().to_string();
    assert!(row(k).ends_with("| ✓ |"), "{}", row(k));
    assert!(!row(5 - k).contains('✓'), "{}", row(5 - k));
    assert!(card.contains(&format!("hf-tailor keep-{k} vs ShortGPT: ")) && card.contains("two standard errors"), "{card}");
    assert!(card.contains("picked on the search's own items"), "{card}");
    // model-index describes only the picked model, on the held-out items.
    let meta = card.split("\n---\n").next().unwrap_or_default();
    assert_eq!(meta.matches("- name:").count(), 1, "{meta}");
    assert!(!meta.contains("keep-"), "{meta}");
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(report.contains("Front:") && report.contains("held-out 20 %"), "{report}");

    // --pick moves the built point to the other depth.
    let other = 5 - k;
    let o = j.tailor("b", &["--keep-layers", "2..3", "--pick", &other.to_string()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(layers_of(&j.root.join("b/model")), other);
    let card = std::fs::read_to_string(j.root.join("b/model/README.md")).expect("card");
    assert!(card.contains(&format!("chosen with `--pick {other}`")), "{card}");

    // A range of removal ratios is a front too: 0.25..0.5 of 4 layers keeps 2..3.
    let o = j.tailor("c", &["--remove-ratio", "0.25..0.5", "--pick-max-params", &u64::MAX.to_string()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let outcome: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON outcome");
    let depths: Vec<u64> = outcome["front"].as_array().expect("front").iter().map(|p| p["layers"].as_u64().unwrap_or(0)).collect();
    assert_eq!(depths, [2, 3]);
    for k in [2, 3] {
        assert!(j.root.join(format!("c/front/keep-{k}.yaml")).is_file());
    }
}

#[test]
fn bad_ranges_are_one_line_usage_errors() {
    let j = job();
    let d = &j.root;
    assert_usage_error(&j.tailor("x", &["--keep-layers", "3..2"]), "empty");
    assert_usage_error(&j.tailor("x", &["--keep-layers", "2..9"]), "cannot keep 9 of 4 layers");
    assert_usage_error(&j.tailor("x", &["--keep-layers", "2..3", "--pick", "4"]), "--pick 4 is outside the front's depths 2..3");
    assert_usage_error(&j.tailor("x", &["--keep-layers", "3", "--pick", "3"]), "give a depth range");
    assert_usage_error(&j.tailor("x", &["--remove-ratio", "0.4..0.1"]), "empty");
    assert_usage_error(&j.tailor("x", &["--keep-layers", "2..3", "--pick-max-params", "10"]), "--pick-max-params 10");
    assert!(!j.root.join("x/journal.jsonl").exists(), "no search ran");
    assert_usage_error(&run(&["demo", "--keep-layers", "5..3"], d), "empty");
    assert_usage_error(&run(&["demo", "--keep-layers", "4..9"], d), "between 1 and 8");
    assert_usage_error(&run(&["demo", "--keep-layers", "4..7", "--pick", "8"], d), "outside");
    let task = format!("mc:letters={}", j.task);
    let search = |extra: &[&str]| {
        let mut a = vec!["search", "--base", &j.base, "--finetunes", &j.list, "--tasks", &task, "--baselines", "none", "--out", "s"];
        a.extend_from_slice(extra);
        run(&a, d)
    };
    assert_usage_error(&search(&["--keep-layers", "2..3", "--workers", "2"]), "one worker");
    assert_usage_error(&search(&["--keep-layers", "2..3", "--pick", "1"]), "outside");
    assert_usage_error(&search(&["--keep-layers", "3..2"]), "empty");
}
