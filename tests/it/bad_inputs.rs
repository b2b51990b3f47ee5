//! Bad inputs through the binary: one clear error line, non-zero exit, no panic, nothing
//! left behind.

use std::path::{Path, PathBuf};

use hf_tailor::recipe::{EdgePolicy, Merge, Rule};
use hf_tailor::testkit::fixture::TinySpec;

use crate::build::{family, name, recipe, Fam};
use crate::common;

/// A two-model llama family and a recipe file over it; returns (family, recipe path).
pub(crate) fn setup(root: &Path) -> (Fam, PathBuf) {
    let f = family(root, TinySpec::llama(), 1);
    let r = recipe(
        &f,
        vec![(0, Rule::Take(name(0))), (2, Rule::Merge(Merge::TaskArithmetic { models: vec![name(1)], lambda: 0.5 })), (3, Rule::Take(name(1)))],
        EdgePolicy::FollowLayers,
    );
    let path = root.join("tailor.yaml");
    r.save(&path).unwrap();
    (f, path)
}

/// Run `hf-tailor build` into `root/out` and check the failure contract; returns the error line.
fn build_fails(root: &Path, recipe: &Path, out: &Path, wanted: &str) -> String {
    let o = common::hf_tailor().args(["build", "--recipe"]).arg(recipe).arg("--out").arg(out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    assert!(lines[0].starts_with("hf-tailor: error: "), "{stderr}");
    assert!(lines[0].contains(wanted), "error should mention `{wanted}`: {stderr}");
    let parent = out.parent().filter(|p| p.is_dir()).unwrap_or(root);
    let leftovers: Vec<String> =
        std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect();
    assert!(leftovers.is_empty(), "temporary folders left behind: {leftovers:?}");
    lines[0].to_string()
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "safetensors")).collect();
    v.sort();
    v
}

fn first_shard(dir: &Path) -> PathBuf {
    let v = shards(dir);
    assert!(v.len() > 1, "the fixture should be sharded");
    v[0].clone()
}

#[test]
fn corrupt_shard_header() {
    let tmp = common::tempdir();
    let (f, r) = setup(tmp.path());
    let shard = first_shard(&f.dirs[1]);
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[8..20].copy_from_slice(b"#garbage#!!!");
    std::fs::write(&shard, bytes).unwrap();
    let out = tmp.path().join("out");
    build_fails(tmp.path(), &r, &out, "invalid safetensors file");
    assert!(!out.exists());
}

#[test]
fn truncated_shard() {
    let tmp = common::tempdir();
    let (f, r) = setup(tmp.path());
    let shard = first_shard(&f.dirs[0]);
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 100]).unwrap();
    let out = tmp.path().join("out");
    let line = build_fails(tmp.path(), &r, &out, "invalid safetensors file");
    assert!(line.contains(shard.file_name().unwrap().to_str().unwrap()), "{line}");
    assert!(!out.exists());
}

#[test]
fn header_lying_about_offsets() {
    let tmp = common::tempdir();
    let (f, r) = setup(tmp.path());
    let shard = first_shard(&f.dirs[1]);
    let bytes = std::fs::read(&shard).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    // Make the first tensor claim 4 more bytes than its shape holds, overlapping the next.
    let first = header.as_object().unwrap().keys().find(|k| *k != "__metadata__").unwrap().clone();
    let end = header[&first]["data_offsets"][1].as_u64().unwrap();
    header[&first]["data_offsets"][1] = (end + 4).into();
    let mut h = serde_json::to_vec(&header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out_bytes = (h.len() as u64).to_le_bytes().to_vec();
    out_bytes.extend_from_slice(&h);
    out_bytes.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&shard, out_bytes).unwrap();
    build_fails(tmp.path(), &r, &tmp.path().join("out"), "invalid safetensors file");
}

#[test]
fn index_naming_a_missing_tensor() {
    let tmp = common::tempdir();
    let (f, r) = setup(tmp.path());
    let index = f.dirs[0].join("model.safetensors.index.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    let file = first_shard(&f.dirs[0]).file_name().unwrap().to_string_lossy().into_owned();
    v["weight_map"]["model.layers.9.mlp.up_proj.weight"] = file.into();
    std::fs::write(&index, v.to_string()).unwrap();
    build_fails(tmp.path(), &r, &tmp.path().join("out"), "model.layers.9.mlp.up_proj.weight");
}

#[test]
fn mixture_of_experts_is_refused_in_one_line_with_exit_2() {
    let tmp = common::tempdir();
    let (f, r) = setup(tmp.path());
    let cfg_path = f.dirs[0].join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["model_type"] = "qwen3_moe".into();
    cfg["num_experts"] = 8.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    build_fails(tmp.path(), &r, &tmp.path().join("out"), "unsupported: mixture-of-experts (`qwen3_moe`)");
    let o = common::hf_tailor().args(["build", "--recipe"]).arg(&r).arg("--out").arg(tmp.path().join("out")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn mismatched_architectures() {
    let tmp = common::tempdir();
    let (f, r) = setup(tmp.path());
    // Rewrite the sibling as a Mistral model of the same shapes.
    let cfg_path = f.dirs[1].join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["model_type"] = "mistral".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let line = build_fails(tmp.path(), &r, &tmp.path().join("out"), "model_type");
    assert!(line.contains("mistral") && line.contains("llama"), "{line}");
    // And a sibling whose MLP is narrower.
    let tmp = common::tempdir();
    let (f, r) = setup(tmp.path());
    let narrow = TinySpec { intermediate: 48, ..TinySpec::llama() };
    std::fs::remove_dir_all(&f.dirs[1]).unwrap();
    hf_tailor::testkit::fixture::write_model(&f.dirs[1], &narrow, &hf_tailor::testkit::fixture::random_weights(&narrow, 5)).unwrap();
    let line = build_fails(tmp.path(), &r, &tmp.path().join("out"), "intermediate_size");
    assert!(line.contains("48") && line.contains("64"), "{line}");
}

#[test]
fn recipe_with_an_out_of_range_layer() {
    let tmp = common::tempdir();
    let (_, r) = setup(tmp.path());
    let text = std::fs::read_to_string(&r).unwrap().replacen("from: 2", "from: 9", 1);
    std::fs::write(&r, text).unwrap();
    let line = build_fails(tmp.path(), &r, &tmp.path().join("out"), "layers[1].from");
    assert!(line.contains("out of range"), "{line}");
}

#[test]
fn unusable_destinations() {
    let tmp = common::tempdir();
    let (_, r) = setup(tmp.path());
    // A regular file where the folder should be.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    build_fails(tmp.path(), &r, &file, "not a folder");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
    // A folder under a regular file cannot be created.
    build_fails(tmp.path(), &r, &file.join("out"), "output folder");
    // A non-empty folder without --force.
    let full = tmp.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), "keep").unwrap();
    build_fails(tmp.path(), &r, &full, "--force");
    assert_eq!(std::fs::read_to_string(full.join("x")).unwrap(), "keep");
}

#[test]
fn hub_ids_and_missing_recipes_get_one_line() {
    let tmp = common::tempdir();
    let (_, r) = setup(tmp.path());
    let text = std::fs::read_to_string(&r).unwrap();
    let base_repo = hf_tailor::recipe::Recipe::load(&r).unwrap().base.source.to_string();
    std::fs::write(&r, text.replace(&format!("path: {base_repo}"), "repo: meta-llama/Llama-2-13b-hf")).unwrap();
    // A Hub source is resolved as `search` resolves it: offline and not cached, it says so.
    let o = common::hf_tailor()
        .args(["build", "--recipe"])
        .arg(&r)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", tmp.path().join("hf-home"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && stderr.lines().count() == 1, "{stderr}");
    assert!(stderr.contains("meta-llama/Llama-2-13b-hf") && stderr.contains("offline"), "{stderr}");
    assert!(!tmp.path().join("out").exists());
    build_fails(tmp.path(), &tmp.path().join("nope.yaml"), &tmp.path().join("out"), "nope.yaml");
}

#[test]
fn missing_recipe_file_is_bad_input_and_says_so_once() {
    let tmp = common::tempdir();
    let missing = tmp.path().join("nope.yaml");
    let o = common::hf_tailor().args(["build", "--recipe"]).arg(&missing).arg("--out").arg(tmp.path().join("out")).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "a missing input file is the user's to fix: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("nope.yaml"), "{stderr}");
    // The OS reason appears once, not once per layer of the error chain.
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");
}

// ---------------------------------------------------------------------------------------
// Issue 10: exit codes, user files, interrupted builds, absurd inputs.

/// Run the binary; returns (exit code, stderr). Asserts one error line and no panic on failure.
fn run(args: &[&std::ffi::OsStr], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut c = common::hf_tailor();
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (o.status.code(), stderr)
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// Exit 2 with one `hf-tailor: error:` line that mentions `wanted`.
fn bad_input(args: &[&std::ffi::OsStr], wanted: &str) -> String {
    let (code, stderr) = run(args, &[]);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(code, Some(2), "exit 2 expected for {args:?}: {stderr}");
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("hf-tailor: error: ") && lines[0].contains(wanted), "`{wanted}` expected: {stderr}");
    lines[0].to_string()
}

fn hidden_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect();
    v.sort();
    v
}

fn build_args<'a>(recipe: &'a Path, out: &'a Path, force: bool) -> Vec<&'a std::ffi::OsStr> {
    let mut a = vec![os("build"), os("--recipe"), recipe.as_os_str(), os("--out"), out.as_os_str()];
    if force {
        a.push(os("--force"));
    }
    a
}

#[test]
fn typed_errors_that_describe_user_input_exit_2() {
    let tmp = common::tempdir();
    let (_, r) = setup(tmp.path());
    // BuildError::Destination
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    bad_input(&build_args(&r, &file, false), "not a folder");
    // BuildError::Recipe (the recipe names a layer the models do not have)
    let wrong = tmp.path().join("wrong.yaml");
    std::fs::write(&wrong, std::fs::read_to_string(&r).unwrap().replacen("source_layers: 4", "source_layers: 6", 1)).unwrap();
    bad_input(&build_args(&wrong, &tmp.path().join("o1"), false), "layers");
    // RecipeError::Parse
    let garbage = tmp.path().join("garbage.yaml");
    std::fs::write(&garbage, "layers: [unclosed\n").unwrap();
    bad_input(&build_args(&garbage, &tmp.path().join("o2"), false), "does not parse");
    // BuildError::Size
    bad_input(
        &[os("build"), os("--recipe"), r.as_os_str(), os("--out"), tmp.path().join("o3").as_os_str(), os("--shard-size"), os("0")],
        "invalid size",
    );
    // MergekitError::Import
    let mk = tmp.path().join("merge.yaml");
    std::fs::write(&mk, "merge_method: slerp\nslices: []\n").unwrap();
    bad_input(
        &[
            os("mergekit"),
            os("import"),
            mk.as_os_str(),
            os("--source-layers"),
            os("4"),
            os("--architecture"),
            os("llama"),
            os("-o"),
            tmp.path().join("t.yaml").as_os_str(),
        ],
        "mergekit config",
    );
    // A missing input file read through the CLI (mergekit import's config).
    bad_input(
        &[
            os("mergekit"),
            os("import"),
            tmp.path().join("missing.yaml").as_os_str(),
            os("--source-layers"),
            os("4"),
            os("-o"),
            tmp.path().join("t.yaml").as_os_str(),
        ],
        "missing.yaml",
    );
    // EvalError::Spec
    bad_input(&[os("eval"), os("--recipe"), r.as_os_str(), os("--tasks"), os("nonsense-without-a-path")], "expected a .jsonl");
    // Usage: zero counts
    bad_input(&[os("eval"), os("--recipe"), r.as_os_str(), os("--tasks"), os("mc=x.jsonl"), os("--batch-tokens"), os("0")], "--batch-tokens");
    bad_input(
        &[
            os("baselines"),
            os("--base"),
            os("x"),
            os("--keep-layers"),
            os("2"),
            os("--tasks"),
            os("ppl=x"),
            os("--budget"),
            os("0"),
            os("--out"),
            os("o"),
        ],
        "--budget",
    );
    bad_input(
        &[
            os("search"),
            os("--base"),
            os("x"),
            os("--keep-layers"),
            os("2"),
            os("--tasks"),
            os("mc=x"),
            os("--budgets"),
            os("0,10"),
            os("--out"),
            os("o"),
        ],
        "--budgets",
    );
    assert!(hidden_entries(tmp.path()).is_empty());
}

#[test]
fn absurd_sizes_are_refused_before_they_allocate() {
    let tmp = common::tempdir();
    let (_, r) = setup(tmp.path());
    let text = std::fs::read_to_string(&r).unwrap();
    // A recipe claiming 10^12 source layers.
    let huge = tmp.path().join("huge.yaml");
    std::fs::write(&huge, text.replacen("source_layers: 4", "source_layers: 1000000000000", 1)).unwrap();
    bad_input(&build_args(&huge, &tmp.path().join("o"), false), "source_layers");
    // A recipe nested 100,000 levels deep is refused before it is parsed.
    let deep = tmp.path().join("deep.yaml");
    std::fs::write(&deep, format!("{text}extra: {}{}\n", "[".repeat(100_000), "]".repeat(100_000))).unwrap();
    bad_input(&build_args(&deep, &tmp.path().join("o"), false), "nested deeper");
    // mergekit: a layer range of 10^11 layers, and 10^11 source layers.
    let mk = tmp.path().join("merge.yaml");
    std::fs::write(&mk, "merge_method: passthrough\nslices:\n  - sources:\n      - model: org/a\n        layer_range: [0, 100000000000]\n").unwrap();
    let import = |layers: &str| -> Vec<std::ffi::OsString> {
        ["mergekit", "import"]
            .iter()
            .map(Into::into)
            .chain([mk.clone().into_os_string()])
            .chain(["--source-layers", layers, "--architecture", "llama", "-o"].iter().map(Into::into))
            .chain([tmp.path().join("t.yaml").into_os_string()])
            .collect()
    };
    let a = import("4");
    bad_input(&a.iter().map(|s| s.as_os_str()).collect::<Vec<_>>(), "out of range");
    let a = import("100000000000");
    bad_input(&a.iter().map(|s| s.as_os_str()).collect::<Vec<_>>(), "source layers");
    assert!(!tmp.path().join("t.yaml").exists() && !tmp.path().join("o").exists());
}

/// Overwrite the first element of `tensor` in `dir` with NaN.
fn poison(dir: &Path, tensor: &str) {
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap()).unwrap();
    let shard = dir.join(index["weight_map"][tensor].as_str().unwrap());
    let mut bytes = std::fs::read(&shard).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let start = 8 + n + header[tensor]["data_offsets"][0].as_u64().unwrap() as usize;
    let nan: &[u8] = match header[tensor]["dtype"].as_str().unwrap() {
        "F32" => &[0, 0, 0xC0, 0x7F],
        "BF16" => &[0xC0, 0x7F],
        "F16" => &[0x00, 0x7E],
        d => panic!("dtype {d}"),
    };
    bytes[start..start + nan.len()].copy_from_slice(nan);
    std::fs::write(&shard, bytes).unwrap();
}

#[test]
fn non_finite_weights_are_not_written() {
    let tmp = common::tempdir();
    let (f, r) = setup(tmp.path());
    poison(&f.dirs[1], "model.layers.3.mlp.up_proj.weight");
    let out = tmp.path().join("out");
    let line = build_fails(tmp.path(), &r, &out, "NaN");
    assert!(line.contains("model.layers.3.mlp.up_proj.weight") && line.contains("sib1"), "tensor and source named: {line}");
    assert!(!out.exists());
    let (code, _) = run(&build_args(&r, &out, false), &[]);
    assert_eq!(code, Some(2));
}

#[test]
fn build_force_killed_between_the_replace_steps_never_leaves_the_destination_empty() {
    let tmp = common::tempdir();
    let (_, r) = setup(tmp.path());
    let out = tmp.path().join("out");
    let (code, stderr) = run(&build_args(&r, &out, false), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    std::fs::write(out.join("old-marker"), "from the first build").unwrap();
    // Killed (abort, as a crash) right after the new folder took the old one's place.
    let (code, _) = run(&build_args(&r, &out, true), &[("HF_TAILOR_FAULT", "abort@exchanged")]);
    assert_ne!(code, Some(0));
    assert!(out.join("config.json").is_file() && !out.join("old-marker").exists(), "the new model is in place");
    hf_tailor::checkpoint::Checkpoint::open(&out).expect("a complete checkpoint at the destination");
    let debris = hidden_entries(tmp.path());
    assert_eq!(debris.len(), 1, "the old folder is left beside it: {debris:?}");
    // The next build into the same destination removes it and says so.
    let (code, stderr) = run(&build_args(&r, &out, true), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&debris[0]) && stderr.contains("interrupted build"), "{stderr}");
    assert!(hidden_entries(tmp.path()).is_empty());
}

#[test]
fn a_killed_build_leaves_debris_the_next_build_removes_and_sigterm_leaves_none() {
    let tmp = common::tempdir();
    let (_, r) = setup(tmp.path());
    let out = tmp.path().join("out");
    // SIGTERM while the output is complete in staging but not yet in place.
    let (code, stderr) = run(&build_args(&r, &out, false), &[("HF_TAILOR_FAULT", "sigterm@staged")]);
    assert_eq!(code, Some(143), "{stderr}");
    assert!(stderr.contains("SIGTERM") && stderr.contains("removed the unfinished output"), "{stderr}");
    assert!(hidden_entries(tmp.path()).is_empty() && !out.exists(), "nothing left behind");
    // A crash at the same point leaves the staging folder; the next build removes it.
    let (code, _) = run(&build_args(&r, &out, false), &[("HF_TAILOR_FAULT", "abort@staged")]);
    assert_ne!(code, Some(0));
    let debris = hidden_entries(tmp.path());
    assert_eq!(debris.len(), 1, "{debris:?}");
    assert!(debris[0].starts_with(".out.tmp-"), "{debris:?}");
    let (code, stderr) = run(&build_args(&r, &out, false), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&debris[0]) && stderr.contains("is gone"), "{stderr}");
    assert!(hidden_entries(tmp.path()).is_empty() && out.join("config.json").is_file());
}

#[test]
fn demo_refuses_an_out_folder_holding_other_files() {
    let tmp = common::tempdir();
    std::fs::write(tmp.path().join("report.md"), "my own notes").unwrap();
    std::fs::write(tmp.path().join("tailor.yaml"), "my own recipe").unwrap();
    bad_input(&[os("demo"), os("--out"), tmp.path().as_os_str(), os("--trials"), os("1")], "not an hf-tailor folder");
    assert_eq!(std::fs::read_to_string(tmp.path().join("report.md")).unwrap(), "my own notes");
    assert_eq!(std::fs::read_to_string(tmp.path().join("tailor.yaml")).unwrap(), "my own recipe");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2, "nothing was added");
}

#[test]
fn root_command_refuses_an_out_folder_of_another_job() {
    let tmp = common::tempdir();
    let (f, _) = setup(tmp.path());
    let list = tmp.path().join("finetunes.txt");
    std::fs::write(&list, format!("{}\n", f.dirs[1].display())).unwrap();
    let out = tmp.path().join("work");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("report.md"), "my own notes").unwrap();
    let tasks = tmp.path().join("t.jsonl");
    std::fs::write(&tasks, "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 0}\n").unwrap();
    let spec = format!("mc={}", tasks.display());
    let args = [
        os("--base"),
        f.dirs[0].as_os_str(),
        os("--finetunes"),
        list.as_os_str(),
        os("--tasks"),
        os(&spec),
        os("--trials"),
        os("1"),
        os("--out"),
        out.as_os_str(),
    ];
    let (code, stderr) = run(&args, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("hf-tailor: error: ") && last.contains("not an hf-tailor folder"), "{stderr}");
    assert_eq!(std::fs::read_to_string(out.join("report.md")).unwrap(), "my own notes");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "nothing was added");
}

/// An identity fixture family with its multiple-choice task written as a JSONL file, and
/// the `search` arguments of a small job over it (`extra` goes last).
pub(crate) struct SearchJob {
    fam: hf_tailor::testkit::identity_family::IdentityFamily,
    spec: String,
    finetunes: String,
}

impl SearchJob {
    pub(crate) fn write(root: &Path) -> SearchJob {
        use hf_tailor::eval::TaskData;
        use hf_tailor::testkit::identity_family::IdentityFamily;
        let fam = IdentityFamily::write(root).unwrap();
        let tasks = fam.tasks(std::sync::Arc::new(fam.open().unwrap()), 4).unwrap();
        let TaskData::MultipleChoice(items) = &tasks[0].data else { panic!("mc task expected") };
        let lines: Vec<String> =
            items.iter().map(|i| serde_json::json!({"context": i.context, "choices": i.choices, "label": i.label}).to_string()).collect();
        let task_file = root.join("t.jsonl");
        std::fs::write(&task_file, lines.join("\n") + "\n").unwrap();
        let spec = format!("mc={}", task_file.display());
        let finetunes = fam.dirs[1].display().to_string();
        SearchJob { fam, spec, finetunes }
    }

    pub(crate) fn args<'a>(&'a self, trials: &'a str, extra: &[&'a std::ffi::OsStr]) -> Vec<&'a std::ffi::OsStr> {
        let mut args = vec![
            os("search"),
            os("--base"),
            self.fam.dirs[0].as_os_str(),
            os("--finetunes"),
            os(&self.finetunes),
            os("--keep-layers"),
            os("4"),
            os("--tasks"),
            os(&self.spec),
            os("--trials"),
            os(trials),
            os("--budgets"),
            os("4"),
            os("--baselines"),
            os("none"),
        ];
        args.extend_from_slice(extra);
        args
    }
}

#[test]
fn search_resume_refuses_a_file_that_is_not_a_journal() {
    let tmp = common::tempdir();
    let job = SearchJob::write(tmp.path());
    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, "my notes, one line\nanother line without a newline at the end").unwrap();
    let out = tmp.path().join("out");
    let args = job.args("1", &[os("--journal"), notes.as_os_str(), os("--resume"), os("--out"), out.as_os_str()]);
    let (code, stderr) = run(&args, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.lines().last().unwrap_or("").contains("is not a search journal"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes, one line\nanother line without a newline at the end", "the file is untouched");
    // A file without one complete line is not a torn journal either (it used to be deleted).
    std::fs::write(&notes, "my notes on one line, no newline").unwrap();
    let (code, stderr) = run(&args, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.lines().last().unwrap_or("").contains("is not a search journal"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes on one line, no newline", "the file is untouched");
    // An empty file may be (re)started as a journal.
    std::fs::write(&notes, "").unwrap();
    let (code, stderr) = run(&args, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(std::fs::read_to_string(&notes).unwrap().starts_with("{\"kind\":\"header\""));
}

#[test]
fn eval_refuses_contexts_longer_than_the_model_and_non_finite_scores() {
    let tmp = common::tempdir();
    let (f, r) = setup(tmp.path());
    // The fixture has 512 positions and one token per byte.
    let long = tmp.path().join("long.jsonl");
    std::fs::write(&long, serde_json::json!({"context": "x".repeat(20_000), "choices": ["a", "b"], "label": 0}).to_string() + "\n").unwrap();
    let spec = format!("mc={}", long.display());
    bad_input(&[os("eval"), os("--recipe"), r.as_os_str(), os("--tasks"), os(&spec)], "max_position_embeddings");
    // NaN weights in a source the candidate takes a layer from: an error naming the candidate, not an accuracy.
    let short = tmp.path().join("short.jsonl");
    std::fs::write(&short, "{\"context\": \"ab\", \"choices\": [\"c\", \"d\"], \"label\": 0}\n").unwrap();
    poison(&f.dirs[1], "model.layers.3.mlp.up_proj.weight");
    let spec = format!("mc={}", short.display());
    let line = bad_input(&[os("eval"), os("--recipe"), r.as_os_str(), os("--tasks"), os(&spec)], "non-finite log-likelihoods");
    assert!(line.contains("candidate"), "{line}");
}

#[test]
fn search_journals_candidates_with_non_finite_scores_as_failed() {
    let tmp = common::tempdir();
    let job = SearchJob::write(tmp.path());
    // Every model's final norm is poisoned: every candidate scores NaN.
    for d in &job.fam.dirs {
        poison(d, "model.norm.weight");
    }
    let out = tmp.path().join("out");
    let args = job.args("3", &[os("--out"), out.as_os_str()]);
    let (code, stderr) = run(&args, &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.lines().last().unwrap_or("").contains("every trial failed"), "{stderr}");
    let (_, trials) = hf_tailor::search::Journal::read(&out.join("journal.jsonl")).unwrap();
    assert_eq!(trials.len(), 3, "each failed trial is journaled");
    assert!(trials.iter().all(|t| t.failed.as_deref().is_some_and(|f| f.contains("non-finite")) && t.mean == 0.0), "{trials:?}");
    assert!(!out.join("tailor.yaml").exists(), "no recipe is chosen from failed trials");
}
