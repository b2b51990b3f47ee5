//! Schema-level checks of the GitHub Action (`action.yml`) and the workflows
//! (`.github/workflows/`, `examples/workflows/`): required keys, every `${{ inputs.X }}`,
//! `steps.ID`, `matrix.X` and `needs:` reference resolves, every `uses:` is well formed,
//! and steps that use this action pass only inputs it declares (and every required one).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| m.get(key))
}

fn map<'a>(v: &'a Value, key: &str, ctx: &str, errors: &mut Vec<String>) -> Option<&'a Mapping> {
    match get(v, key).map(|x| x.as_mapping()) {
        Some(Some(m)) => Some(m),
        Some(None) => {
            errors.push(format!("{ctx}: `{key}` must be a mapping"));
            None
        }
        None => {
            errors.push(format!("{ctx}: missing `{key}`"));
            None
        }
    }
}

fn nonempty_str(v: &Value, key: &str, ctx: &str, errors: &mut Vec<String>) {
    match get(v, key).and_then(|x| x.as_str()) {
        Some(s) if !s.trim().is_empty() => {}
        _ => errors.push(format!("{ctx}: missing or empty `{key}`")),
    }
}

fn keys(m: &Mapping) -> BTreeSet<String> {
    m.keys().filter_map(|k| k.as_str().map(str::to_string)).collect()
}

/// Every string in `v`, recursively (keys excluded).
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(s) => s.iter().for_each(|x| strings(x, out)),
        Value::Mapping(m) => m.values().for_each(|x| strings(x, out)),
        Value::Tagged(t) => strings(&t.value, out),
        _ => {}
    }
}

/// The bodies of the `${{ ... }}` expressions in `v`.
fn expressions(v: &Value) -> Vec<String> {
    let mut all = Vec::new();
    strings(v, &mut all);
    let mut out = Vec::new();
    for s in all {
        let mut rest = s.as_str();
        while let Some(start) = rest.find("${{") {
            let after = &rest[start + 3..];
            match after.find("}}") {
                Some(end) => {
                    out.push(after[..end].trim().to_string());
                    rest = &after[end + 2..];
                }
                None => {
                    out.push(format!("<unterminated expression in {s:?}>"));
                    break;
                }
            }
        }
    }
    out
}

/// Names `ns.NAME` referenced in expressions (e.g. `inputs.base` -> `base`).
fn references(exprs: &[String], ns: &str) -> Vec<String> {
    let prefix = format!("{ns}.");
    let mut out = Vec::new();
    for e in exprs {
        let mut i = 0;
        while let Some(pos) = e[i..].find(&prefix) {
            let at = i + pos;
            let boundary = at == 0 || !e.as_bytes()[at - 1].is_ascii_alphanumeric() && e.as_bytes()[at - 1] != b'.';
            let name: String = e[at + prefix.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
            if boundary && !name.is_empty() {
                out.push(name.clone());
            }
            i = at + prefix.len() + name.len();
        }
    }
    out
}

/// `owner/repo@ref`, `owner/repo/path@ref`, `./local/path` (which must exist) or `docker://image`.
fn check_uses(uses: &str, ctx: &str, errors: &mut Vec<String>) {
    if let Some(local) = uses.strip_prefix("./") {
        if !repo().join(local).exists() {
            errors.push(format!("{ctx}: local action `{uses}` does not exist"));
        }
        return;
    }
    if uses.strip_prefix("docker://").is_some_and(|img| !img.is_empty()) {
        return;
    }
    let ok = match uses.split_once('@') {
        Some((path, reference)) => {
            let parts: Vec<&str> = path.split('/').collect();
            let name_ok = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            parts.len() >= 2
                && parts.iter().all(name_ok)
                && !reference.is_empty()
                && reference.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        }
        None => false,
    };
    if !ok {
        errors.push(format!("{ctx}: malformed `uses: {uses}` (want owner/repo[/path]@ref, ./path or docker://image)"));
    }
}

/// Checks a list of steps; returns the step ids, in order.
fn check_steps(steps: Option<&Value>, composite: bool, ctx: &str, errors: &mut Vec<String>) -> Vec<String> {
    let Some(steps) = steps.and_then(|s| s.as_sequence()).filter(|s| !s.is_empty()) else {
        errors.push(format!("{ctx}: `steps` must be a non-empty list"));
        return vec![];
    };
    let mut ids = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let sctx = format!("{ctx} step {}", i + 1);
        let run = get(step, "run").and_then(|r| r.as_str());
        let uses = get(step, "uses").and_then(|u| u.as_str());
        match (run, uses) {
            (Some(_), Some(_)) | (None, None) => errors.push(format!("{sctx}: needs exactly one of `run` and `uses`")),
            (Some(_), None) if composite && get(step, "shell").is_none() => {
                errors.push(format!("{sctx}: a composite action's `run` step needs `shell`"))
            }
            (None, Some(u)) => check_uses(u, &sctx, errors),
            _ => {}
        }
        // A step may only read the outputs of the steps before it.
        for id in references(&expressions(step), "steps") {
            if !ids.contains(&id) {
                errors.push(format!("{sctx}: refers to step `{id}` which is not an earlier step"));
            }
        }
        if let Some(id) = get(step, "id").and_then(|x| x.as_str()) {
            ids.push(id.to_string());
        }
    }
    ids
}

/// Validates `action.yml`; returns its declared inputs (name -> required).
fn check_action(action: &Value, errors: &mut Vec<String>) -> Vec<(String, bool)> {
    let ctx = "action.yml";
    nonempty_str(action, "name", ctx, errors);
    nonempty_str(action, "description", ctx, errors);
    let mut declared = Vec::new();
    if let Some(inputs) = map(action, "inputs", ctx, errors) {
        for (name, spec) in inputs {
            let name = name.as_str().unwrap_or("?").to_string();
            let ictx = format!("{ctx} input `{name}`");
            nonempty_str(spec, "description", &ictx, errors);
            let required = get(spec, "required").and_then(|r| r.as_bool()).unwrap_or(false);
            if required && get(spec, "default").is_some() {
                errors.push(format!("{ictx}: a required input must not have a default"));
            }
            declared.push((name, required));
        }
    }
    let names: BTreeSet<String> = declared.iter().map(|(n, _)| n.clone()).collect();
    let exprs = expressions(action);
    let used: BTreeSet<String> = references(&exprs, "inputs").into_iter().collect();
    for name in used.difference(&names) {
        errors.push(format!("{ctx}: `inputs.{name}` is referenced but not declared"));
    }
    for name in names.difference(&used) {
        errors.push(format!("{ctx}: input `{name}` is declared but never used"));
    }
    let runs = get(action, "runs");
    match runs.and_then(|r| get(r, "using")).and_then(|u| u.as_str()) {
        Some("composite") => {
            let ids = check_steps(runs.and_then(|r| get(r, "steps")), true, ctx, errors);
            if let Some(outputs) = get(action, "outputs").and_then(|o| o.as_mapping()) {
                for (name, spec) in outputs {
                    let octx = format!("{ctx} output `{}`", name.as_str().unwrap_or("?"));
                    nonempty_str(spec, "description", &octx, errors);
                    nonempty_str(spec, "value", &octx, errors);
                    for id in references(&expressions(spec), "steps") {
                        if !ids.contains(&id) {
                            errors.push(format!("{octx}: refers to unknown step `{id}`"));
                        }
                    }
                }
            }
        }
        other => errors.push(format!("{ctx}: runs.using must be `composite`, found {other:?}")),
    }
    declared
}

/// Is `uses` this repository's action (by name or path)?
fn uses_this_action(uses: &str) -> bool {
    uses == "./" || uses.split('@').next().is_some_and(|p| p.ends_with("/hf-tailor") && p.matches('/').count() == 1)
}

fn check_workflow(path: &Path, wf: &Value, action_inputs: &[(String, bool)], errors: &mut Vec<String>) {
    let ctx = path.strip_prefix(repo()).unwrap_or(path).display().to_string();
    nonempty_str(wf, "name", &ctx, errors);
    let Some(on) = get(wf, "on") else {
        errors.push(format!("{ctx}: missing `on`"));
        return;
    };
    // Inputs a workflow may read: those of workflow_dispatch / workflow_call.
    let mut wf_inputs = BTreeSet::new();
    for trigger in ["workflow_dispatch", "workflow_call"] {
        if let Some(inputs) = get(on, trigger).and_then(|t| get(t, "inputs")).and_then(|i| i.as_mapping()) {
            wf_inputs.extend(keys(inputs));
        }
    }
    for name in references(&expressions(wf), "inputs") {
        if !wf_inputs.contains(&name) {
            errors.push(format!("{ctx}: `inputs.{name}` is referenced but no trigger declares it"));
        }
    }
    let Some(jobs) = map(wf, "jobs", &ctx, errors) else { return };
    if jobs.is_empty() {
        errors.push(format!("{ctx}: `jobs` is empty"));
    }
    let job_names = keys(jobs);
    for (name, job) in jobs {
        let jctx = format!("{ctx} job `{}`", name.as_str().unwrap_or("?"));
        if get(job, "runs-on").is_none() {
            errors.push(format!("{jctx}: missing `runs-on`"));
        }
        let needs: Vec<String> = match get(job, "needs") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Sequence(s)) => s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            _ => vec![],
        };
        for n in needs {
            if !job_names.contains(&n) {
                errors.push(format!("{jctx}: needs unknown job `{n}`"));
            }
        }
        let matrix_keys: BTreeSet<String> = match get(job, "strategy").and_then(|s| get(s, "matrix")) {
            Some(m) => {
                let mut k = m.as_mapping().map(keys).unwrap_or_default();
                if let Some(include) = get(m, "include").and_then(|i| i.as_sequence()) {
                    for row in include {
                        k.extend(row.as_mapping().map(keys).unwrap_or_default());
                    }
                }
                k
            }
            None => BTreeSet::new(),
        };
        for key in references(&expressions(job), "matrix") {
            if !matrix_keys.contains(&key) {
                errors.push(format!("{jctx}: `matrix.{key}` is not in the job's matrix"));
            }
        }
        check_steps(get(job, "steps"), false, &jctx, errors);
        for step in get(job, "steps").and_then(|s| s.as_sequence()).into_iter().flatten() {
            let Some(uses) = get(step, "uses").and_then(|u| u.as_str()) else { continue };
            if !uses_this_action(uses) {
                continue;
            }
            let with = get(step, "with").and_then(|w| w.as_mapping()).map(keys).unwrap_or_default();
            for k in &with {
                if !action_inputs.iter().any(|(n, _)| n == k) {
                    errors.push(format!("{jctx}: passes `{k}` which action.yml does not declare"));
                }
            }
            for (n, required) in action_inputs {
                if *required && !with.contains(n) {
                    errors.push(format!("{jctx}: does not pass the required input `{n}`"));
                }
            }
        }
    }
}

fn workflow_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [".github/workflows", "examples/workflows"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}")) {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn action_and_workflows_are_well_formed() {
    let mut errors = Vec::new();
    let action = load(&repo().join("action.yml"));
    let inputs = check_action(&action, &mut errors);
    for required in ["base", "finetunes", "target-repo", "hf-token"] {
        assert!(inputs.iter().any(|(n, r)| n == required && *r), "action.yml must require `{required}`");
    }
    for option in ["keep-layers", "remove-ratio", "trials", "private"] {
        assert!(inputs.iter().any(|(n, _)| n == option), "action.yml must offer `{option}`");
    }
    let files = workflow_files();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["ci.yml", "release.yml", "tailor-on-release.yml"] {
        assert!(names.iter().any(|n| n == expected), "missing workflow {expected}: have {names:?}");
    }
    for path in &files {
        check_workflow(path, &load(path), &inputs, &mut errors);
    }
    assert!(errors.is_empty(), "{} problem(s):\n{}", errors.len(), errors.join("\n"));
}

#[test]
fn the_example_workflow_uses_this_action() {
    let wf = load(&repo().join("examples/workflows/tailor-on-release.yml"));
    let mut all = Vec::new();
    strings(&wf, &mut all);
    let uses: Vec<&String> = all.iter().filter(|s| uses_this_action(s)).collect();
    assert_eq!(uses.len(), 1, "the example must use the hf-tailor action exactly once");
    assert!(all.iter().any(|s| s == "${{ secrets.HF_TOKEN }}"), "the token must come from a secret");
}

#[test]
fn ci_runs_the_readme_test_command() {
    let ci = std::fs::read_to_string(repo().join(".github/workflows/ci.yml")).expect("ci.yml");
    assert!(ci.contains("bash .ci/run"), "ci.yml must call .ci/run");
    let run = std::fs::read_to_string(repo().join(".ci/run")).expect(".ci/run");
    let last = run.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert_eq!(last.trim(), "bash scripts/test.sh", ".ci/run must end with the README's test command");
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    assert!(readme.contains("bash scripts/test.sh"), "README must give the test command");
}

#[test]
fn the_validator_catches_broken_files() {
    let broken: Value = serde_norway::from_str(
        r#"
name: x
description: y
inputs:
  base: {description: b, required: true, default: "z"}
  unused: {description: u}
runs:
  using: composite
  steps:
    - run: echo ${{ inputs.missing }} ${{ steps.later.outputs.x }}
    - uses: not-a-valid-uses
      id: later
"#,
    )
    .expect("yaml");
    let mut errors = Vec::new();
    check_action(&broken, &mut errors);
    let text = errors.join("\n");
    for expect in [
        "required input must not have a default",
        "`inputs.missing` is referenced but not declared",
        "input `unused` is declared but never used",
        "needs `shell`",
        "refers to step `later` which is not an earlier step",
        "malformed `uses: not-a-valid-uses`",
        "input `base` is declared but never used",
    ] {
        assert!(text.contains(expect), "validator missed {expect:?}; got:\n{text}");
    }

    let wf: Value = serde_norway::from_str(
        r#"
name: w
on: push
jobs:
  a:
    runs-on: ubuntu-latest
    needs: nope
    steps:
      - uses: hf-tailor/hf-tailor@v1
        with: {base: b, bogus: 1}
      - run: echo ${{ matrix.os }} ${{ inputs.x }}
"#,
    )
    .expect("yaml");
    let mut errors = Vec::new();
    check_workflow(Path::new("w.yml"), &wf, &[("base".into(), true), ("hf-token".into(), true)], &mut errors);
    let text = errors.join("\n");
    for expect in [
        "needs unknown job `nope`",
        "passes `bogus`",
        "required input `hf-token`",
        "`matrix.os` is not in the job's matrix",
        "`inputs.x` is referenced but no trigger declares it",
    ] {
        assert!(text.contains(expect), "validator missed {expect:?}; got:\n{text}");
    }
}
