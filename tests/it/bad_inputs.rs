//! Bad inputs through the binary: one clear error line, non-zero exit, no panic, nothing
//! left behind.

use std::path::{Path, PathBuf};

use hf_tailor::testkit::fixture::TinySpec;
use hf_tailor::recipe::{EdgePolicy, Merge, Rule};

use crate::build::{family, name, recipe, Fam};
use crate::common;

/// A two-model llama family and a recipe file over it; returns (family, recipe path).
fn setup(root: &Path) -> (Fam, PathBuf) {
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
    let leftovers: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary folders left behind: {leftovers:?}");
    lines[0].to_string()
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
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
    while h.len() % 8 != 0 {
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
