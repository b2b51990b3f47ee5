//! The command line as users meet it: usage errors (exit 2, one line), help with examples,
//! `--dry-run`, and the built-in demo end to end (cross-checked against the accuracy table
//! transformers computed when the family was made).

use std::path::{Path, PathBuf};
use std::process::Output;

use hf_tailor::testkit::fixture::{write_family, TinySpec};

use crate::common::{self, hf_tailor, tempdir};

pub(crate) fn run(args: &[&str], cwd: &Path) -> Output {
    hf_tailor().args(args).current_dir(cwd).env("HF_HUB_OFFLINE", "1").output().expect("spawn hf-tailor")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit status 2 and exactly one line on stderr that names the problem.
fn assert_usage_error(out: &Output, mentions: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "want exit 2, got {:?}; stderr: {err}", out.status);
    assert_eq!(err.trim_end().lines().count(), 1, "want one line on stderr, got:\n{err}");
    assert!(err.starts_with("hf-tailor: error: "), "{err}");
    assert!(err.contains(mentions), "stderr should mention {mentions:?}: {err}");
}

#[test]
fn usage_mistakes_exit_2_with_one_line() {
    let dir = tempdir();
    let d = dir.path();
    assert_usage_error(&run(&[], d), "missing --base");
    assert_usage_error(&run(&["--base", "org/model"], d), "missing --finetunes");
    assert_usage_error(&run(&["--bogus"], d), "--bogus");
    assert_usage_error(&run(&["--bas", "x"], d), "--base");
    assert_usage_error(&run(&["--base", "a/b", "--finetunes", "f.txt", "--remove-ratio", "1.5"], d), "--remove-ratio");
    assert_usage_error(&run(&["--base", "a/b", "--finetunes", "f.txt", "--keep-layers", "3", "--remove-ratio", "0.2"], d), "--keep-layers");
    assert_usage_error(&run(&["--base", "a/b", "--finetunes", "f.txt", "--push", "not-a-repo-id"], d), "user/name");
    assert_usage_error(&run(&["--base", "a/b", "--finetunes", "f.txt", "--device", "tpu"], d), "tpu");
    assert_usage_error(&run(&["demo", "--keep-layers", "0"], d), "--keep-layers");
    // The search's flags are checked once, the same way for every command (exit 2).
    assert_usage_error(&run(&["--base", "a/b", "--finetunes", "f.txt", "--selection-split", "2"], d), "--selection-split must be 0 (off)");
    assert_usage_error(&run(&["--base", "a/b", "--finetunes", "f.txt", "--device", "cuda:0,cuda:1"], d), "one device");
    // A finetunes file that does not exist, or a malformed one, is bad input too.
    assert_usage_error(&run(&["--base", "a/b", "--finetunes", "missing.txt"], d), "missing.txt");
    std::fs::write(d.join("bad.txt"), "org/ok\nnot a repo id !\n").expect("write");
    assert_usage_error(&run(&["--base", "a/b", "--finetunes", "bad.txt"], d), "bad.txt");
}

#[test]
fn help_lists_every_stage_and_examples() {
    let out = run(&["--help"], Path::new("."));
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for word in ["pull", "search", "baselines", "build", "eval", "card", "push", "demo", "Examples:", "--dry-run", "--keep-layers", "--resume"] {
        assert!(help.contains(word), "--help should mention {word}:\n{help}");
    }
    assert_grouped_and_pasteable(&help, &["Models:", "Depth:", "Tasks and objective:", "Optimiser:", "Engine and memory:", "Output:"]);
}

/// `search --help` groups its ~40 flags, describes every one, and its examples paste.
#[test]
fn search_help_is_grouped_described_and_pasteable() {
    let out = run(&["search", "--help"], Path::new("."));
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert_grouped_and_pasteable(&help, &["Models:", "Depth:", "Tasks and objective:", "Optimiser:", "Engine and memory:", "Output:"]);
    // Every flag has a description (a flag line alone, with nothing after it, has none).
    let flags = help.split("The tailored model is chosen").next().unwrap_or_default();
    for line in flags.lines().filter(|l| l.trim_start().starts_with("--")) {
        let flag = line.split_whitespace().next().unwrap_or_default();
        let described =
            line.trim_start().len() > flag.len() + 12 || flags.lines().skip_while(|l| *l != line).nth(1).is_some_and(|n| n.starts_with("          "));
        assert!(described, "{flag} has no description:\n{help}");
    }
    let words = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("--seed <SEED> Seed of the optimiser and of the selection split"), "--seed is described:\n{help}");
    // `search` writes a recipe: building and pushing is what the root command and demo do.
    let pick = words.split("--pick <K>").nth(1).unwrap_or_default().split("--pick-max-params").next().unwrap_or_default();
    assert!(pick.contains("(`search`: tailor.yaml; the root command and `demo` also build, verify, card and push it)"), "{pick}");
}

/// Every heading is present, and no example line is longer than a terminal's 80 columns
/// (clap would wrap it in the middle of an argument).
fn assert_grouped_and_pasteable(help: &str, headings: &[&str]) {
    for h in headings {
        assert!(help.lines().any(|l| l.trim_end() == *h), "no heading {h}:\n{help}");
    }
    let examples = help.split("Examples:").nth(1).unwrap_or_default();
    for line in examples.lines().filter(|l| l.trim_start().starts_with("hf-tailor") || l.starts_with("    --")) {
        assert!(line.chars().count() <= 80, "example line wider than 80 columns: {line}");
    }
}

pub(crate) fn fixture_job(root: &Path) -> (PathBuf, PathBuf) {
    let spec = TinySpec::llama();
    let (base, sibs, _) = write_family(&root.join("family"), &spec, 2, 7).expect("fixture family");
    let list = root.join("finetunes.txt");
    let lines: Vec<String> = sibs.iter().map(|s| s.display().to_string()).collect();
    std::fs::write(&list, format!("# two siblings\n{}\n\n", lines.join("\n"))).expect("write list");
    (base, list)
}

#[test]
fn dry_run_prints_files_parameters_and_memory_and_writes_nothing() {
    let dir = tempdir();
    let (base, list) = fixture_job(dir.path());
    let base_s = base.display().to_string();
    let list_s = list.display().to_string();
    let out = run(&["--base", &base_s, "--finetunes", &list_s, "--keep-layers", "3", "--dry-run"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let config = hf_tailor::config::ModelConfig::from_file(&base.join("config.json")).expect("config");
    let (before, after) = (config.total_params(4), config.total_params(3));
    assert!(stdout.contains("layers: 4 -> 3 (1 removed)"), "{stdout}");
    // The caches' bounds, each with its reason, derived from this machine.
    assert!(
        stdout.contains("memory plan, this machine (host memory, ") && stdout.contains("prefix cache") && stdout.contains("50% of half"),
        "{stdout}"
    );
    assert!(stdout.contains(&hf_tailor::pipeline::plan::human_count(before)), "{stdout}");
    assert!(stdout.contains(&hf_tailor::pipeline::plan::human_count(after)), "{stdout}");
    assert!(stdout.contains("model-00001-of-"), "the shards to read should be listed: {stdout}");
    assert!(stdout.contains("memory for the search"), "{stdout}");
    assert!(!dir.path().join("tailored").exists(), "a dry run must not write anything");

    let out = run(&["--base", &base_s, "--finetunes", &list_s, "--remove-ratio", "0.5", "--dry-run", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON plan");
    assert_eq!(plan["keep_layers"], 2);
    assert_eq!(plan["params_before"], before);
    assert_eq!(plan["params_after"], config.total_params(2));
    assert_eq!(plan["models"].as_array().map(Vec::len), Some(3));
    // Three f32 models resident on the CPU.
    assert_eq!(plan["search_resident_bytes"], 3 * before * 4);

    // The root command takes every single-device form the subcommands take.
    let out = run(
        &["--base", &base_s, "--finetunes", &list_s, "--max-params", &after.to_string(), "--device", "cuda:1", "--dry-run", "--json"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON plan");
    assert_eq!(plan["device"], "cuda:1");
    assert_eq!(plan["keep_layers"], 3);
}

/// The demo on a small budget: the whole job runs offline, writes the checkpoint, its card
/// and lineage picture, and its base/sibling rows agree with transformers' accuracies.
#[test]
fn the_demo_tailors_the_builtin_family_end_to_end() {
    let dir = tempdir();
    let out_dir = dir.path().join("demo");
    let out_s = out_dir.display().to_string();
    let out = run(&["demo", "--out", &out_s, "--trials", "10", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "demo failed:\n{}", text(&out.stderr));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON outcome");

    let model = out_dir.join("model");
    for f in ["config.json", "README.md", "lineage.svg", "tokenizer.json", "generation_config.json"] {
        assert!(model.join(f).is_file(), "{f} missing from the tailored model");
    }
    let config = hf_tailor::config::ModelConfig::from_file(&model.join("config.json")).expect("config");
    assert_eq!(config.num_hidden_layers, 6, "the demo keeps 6 of 8 layers");
    let recipe = hf_tailor::recipe::Recipe::load(&out_dir.join("tailor.yaml")).expect("recipe");
    assert_eq!(recipe.layers.len(), 6);
    assert!(out_dir.join("report.md").is_file() && out_dir.join("baselines/shortgpt.yaml").is_file());
    let card = std::fs::read_to_string(model.join("README.md")).expect("card");
    assert!(card.contains("lineage.svg") && card.contains("pipeline_tag: text-generation"), "{card}");
    // The results table says it was measured on the held-out split, not the calibration one.
    assert!(card.contains("held-out tasks the search never saw, at most 500 items per task"), "{card}");
    // The demo's sources are local folders: the Hub rejects them as `base_model`, so the metadata omits them.
    let front_matter = card.split("\n---\n").next().unwrap_or_default();
    assert!(!front_matter.contains("base_model"), "local folders leaked into base_model:\n{front_matter}");
    // Nor does any other part of the card (tables, recipe, mergekit config) name a path of this machine.
    assert!(!card.contains(&out_s), "the card names local paths:\n{card}");
    // The card says what its tasks are (what they ask, one item, the chance level), and
    // that the sources are local folders nobody else can rebuild from; `hf-tailor demo` can.
    assert!(
        card.contains("the last digit of the sum of two two-digit numbers") && card.contains("4 choices per item, so guessing scores 25 %"),
        "{card}"
    );
    assert!(card.contains("| *chance (random guess)* | | | | 25.0 | 25.0 | 25.0 | 25.0 |"), "{card}");
    assert!(card.contains("chance 25 %)") && card.contains("**The source models are local folders**"), "{card}");
    assert!(card.contains("`hf-tailor demo --trials 10` rebuilds it"), "{card}");
    // "How to use" runs as pasted, from where the demo ran: the folder, a prompt of the kind
    // the model was trained on.
    assert!(card.contains("from_pretrained(\"demo/model\""), "{card}");
    let printed = common::run_python("card_usage.py", &[model.join("README.md").to_str().unwrap(), dir.path().to_str().unwrap()]);
    assert!(!printed.trim().is_empty(), "the snippet printed nothing");

    // Rows: base, three siblings, ShortGPT, the tailored model, on the held-out test split.
    let rows = outcome["rows"].as_array().expect("rows");
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap_or("")).collect();
    assert_eq!(labels, ["base", "arith", "reverse", "recall", "ShortGPT", "hf-tailor"]);
    assert_eq!(outcome["report_items"], 500);

    // hf-tailor's scores of the untouched models equal transformers' (the generator's table).
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-family/accuracy.json")).expect("accuracy.json"),
    )
    .expect("JSON");
    for row in &rows[..4] {
        let name = row["label"].as_str().unwrap_or("");
        for skill in ["arith", "reverse", "recall"] {
            let ours = row["scores"][skill].as_f64().expect("score");
            // lm-eval 0.4.13 (and so hf-tailor) keeps the tokenizer's <s> before the context.
            let theirs = reference["accuracy_with_bos"][name]["test"][skill].as_f64().expect("reference score");
            // Two items of 500 of slack for log-likelihood ties decided differently in f32.
            assert!((ours - theirs).abs() <= 0.004 + 1e-9, "{name} on {skill}: hf-tailor {ours}, transformers {theirs}");
        }
    }
    // The written checkpoint scores what the in-memory candidate scored: at most one item of
    // 500 apart (the final cast of merged layers), tighter than verify's own 0.01, so this
    // checks the numbers rather than restating that the job succeeded.
    let tailored = &rows[5]["scores"];
    for skill in ["arith", "reverse", "recall"] {
        let a = tailored[skill].as_f64().expect("score");
        let b = outcome["verified"][skill].as_f64().expect("verified score");
        assert!((a - b).abs() <= 0.002 + 1e-9, "{skill}: in memory {a}, written {b}");
    }

    // A second run into the same folder needs --force, and says so on one line.
    let again = run(&["demo", "--out", &out_s, "--trials", "2"], dir.path());
    assert_usage_error(&again, "--force");
}

/// A 2-choice JSONL task of `n` items at `path` (continue `abab` with `b`).
pub(crate) fn letters_task(path: &Path, n: usize) {
    let items: Vec<String> = (0..n)
        .map(|i| {
            let a = (b'a' + (i % 20) as u8) as char;
            let b = (b'a' + ((i + 1) % 20) as u8) as char;
            let c = (b'a' + ((i + 7) % 20) as u8) as char;
            serde_json::json!({"context": format!("{a}{b}{a}{b}{a}"), "choices": [b.to_string(), c.to_string()], "label": 0}).to_string()
        })
        .collect();
    std::fs::write(path, items.join("\n") + "\n").expect("task file");
}

/// The root command on a local fixture family with a JSONL task: the whole job without a
/// push, then `--resume` continuing the same journal to a larger budget.
#[test]
fn the_root_command_runs_the_whole_job_and_resumes() {
    let dir = tempdir();
    let (base, list) = fixture_job(dir.path());
    let task = dir.path().join("letters.jsonl");
    letters_task(&task, 24);
    let out_dir = dir.path().join("job");
    let (base_s, list_s, task_s, out_s) =
        (base.display().to_string(), list.display().to_string(), task.display().to_string(), out_dir.display().to_string());
    let job = |extra: &[&str]| {
        let mut args = vec!["--base", &base_s, "--finetunes", &list_s, "--tasks", &task_s, "--keep-layers", "3", "--out", &out_s, "--json"];
        args.extend_from_slice(extra);
        run(&args, dir.path())
    };
    let out = job(&["--trials", "4"]);
    assert_eq!(out.status.code(), Some(0), "job failed:\n{}", text(&out.stderr));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON outcome");
    assert_eq!(outcome["trials"], 4);
    let labels: Vec<&str> = outcome["rows"].as_array().expect("rows").iter().map(|r| r["label"].as_str().unwrap_or("")).collect();
    assert_eq!(labels, ["base", "sib1", "sib2", "ShortGPT", "hf-tailor"]);
    let config = hf_tailor::config::ModelConfig::from_file(&out_dir.join("model/config.json")).expect("config");
    assert_eq!(config.num_hidden_layers, 3);
    for f in ["sources.yaml", "journal.jsonl", "tailor.yaml", "report.md", "model/README.md", "model/lineage.svg"] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }

    // Without --resume the journal is not overwritten; with it the search goes on.
    let again = job(&["--trials", "6"]);
    assert_ne!(again.status.code(), Some(0));
    assert!(text(&again.stderr).contains("--resume"), "{}", text(&again.stderr));
    let resumed = job(&["--trials", "6", "--resume"]);
    assert_eq!(resumed.status.code(), Some(0), "resume failed:\n{}", text(&resumed.stderr));
    let outcome: serde_json::Value = serde_json::from_slice(&resumed.stdout).expect("JSON outcome");
    assert_eq!(outcome["trials"], 6);
    let journal = std::fs::read_to_string(out_dir.join("journal.jsonl")).expect("journal");
    assert_eq!(journal.lines().count(), 1 + 6, "a header and six trials");
}
