//! The writer, checked against values recomputed here from the fixture weights (never via
//! `stitch`), and against transformers loading the output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hf_tailor::checkpoint::{Checkpoint, Family};
use hf_tailor::dtype::{self, Dtype};
use hf_tailor::recipe::{EdgePolicy, LayerRule, Merge, Recipe, Rule, SourceModel};
use hf_tailor::testkit::fixture::{self, TinySpec, Weights};
use hf_tailor::writer::{build, BuildOptions};

use crate::common;

/// A fixture family on disk: base + siblings, their folders and their f32 weights.
pub struct Fam {
    pub spec: TinySpec,
    pub dirs: Vec<PathBuf>,
    pub weights: Vec<Weights>,
}

pub fn family(root: &Path, spec: TinySpec, siblings: usize) -> Fam {
    let (base, sibs, weights) = fixture::write_family(root, &spec, siblings, 11).unwrap();
    Fam { spec, dirs: std::iter::once(base).chain(sibs).collect(), weights }
}

pub fn name(i: usize) -> String {
    if i == 0 {
        "base".into()
    } else {
        format!("sib{i}")
    }
}

pub fn recipe(f: &Fam, layers: Vec<(usize, Rule)>, policy: EdgePolicy) -> Recipe {
    let src = |i: usize| SourceModel::local(&name(i), &f.dirs[i]);
    Recipe::new(
        f.spec.model_type,
        f.spec.layers,
        src(0),
        (1..f.dirs.len()).map(src).collect(),
        layers.into_iter().map(|(from, rule)| LayerRule { from, rule }).collect(),
        policy,
    )
}

pub fn open(r: &Recipe) -> Family {
    Family::open_for_recipe(r, |m| Ok(PathBuf::from(m.source.to_string()))).unwrap()
}

fn take(i: usize) -> Rule {
    Rule::Take(name(i))
}

fn ta(models: &[usize], lambda: f64) -> Rule {
    Rule::Merge(Merge::TaskArithmetic { models: models.iter().map(|&i| name(i)).collect(), lambda })
}

/// The expected f32 values of a source tensor under a rule, computed from the fixture weights
/// as stored (rounded through the fixture dtype), with the GPTailor formula written out here.
fn expected(f: &Fam, rule: &Rule, source: &str, rows: Option<usize>) -> Vec<f32> {
    let idx = |n: &str| (0..f.dirs.len()).find(|&i| name(i) == n).unwrap();
    let stored = |i: usize| -> Vec<f32> {
        let (shape, v) = &f.weights[i][source];
        let v = dtype::to_f32(f.spec.dtype, &dtype::from_f32(f.spec.dtype, v));
        match rows {
            Some(r) => v[..r.min(shape[0]) * shape[1]].to_vec(),
            None => v,
        }
    };
    match rule {
        Rule::Take(m) => stored(idx(m)),
        Rule::Merge(Merge::TaskArithmetic { models, lambda }) => {
            let base = stored(0);
            let mut out = base.clone();
            for m in models {
                let w = stored(idx(m));
                for k in 0..out.len() {
                    out[k] += *lambda as f32 * (w[k] - base[k]);
                }
            }
            out
        }
        other => panic!("test recomputes only take and task arithmetic, not {other:?}"),
    }
}

/// Read every tensor of an output folder with the safetensors crate directly.
fn read_output(dir: &Path) -> BTreeMap<String, (Dtype, Vec<usize>, Vec<f32>)> {
    let index: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap()).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    let mut files: Vec<String> = map.values().map(|v| v.as_str().unwrap().to_string()).collect();
    files.sort();
    files.dedup();
    for file in &files {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        for (n, v) in st.tensors() {
            assert_eq!(map[&n], file.as_str(), "index places {n} in the wrong shard");
            let d = Dtype::from_safetensors(v.dtype()).unwrap();
            total += v.data().len() as u64;
            out.insert(n, (d, v.shape().to_vec(), dtype::to_f32(d, v.data())));
        }
    }
    assert_eq!(out.len(), map.len(), "index and shards disagree on the tensor count");
    assert_eq!(index["metadata"]["total_size"].as_u64().unwrap(), total);
    let n = files.len();
    for (i, f) in files.iter().enumerate() {
        assert_eq!(f, &format!("model-{:05}-of-{:05}.safetensors", i + 1, n));
    }
    out
}

/// Check every output tensor against the recomputation; `dtype` is the output dtype.
fn check_tensors(f: &Fam, r: &Recipe, out: &Path, dtype: Dtype, vocab: usize) {
    let arch = f.spec.arch();
    let got = read_output(out);
    let mut want: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let round = |v: Vec<f32>| dtype::to_f32(dtype, &dtype::from_f32(dtype, &v));
    for (o, l) in r.layers.iter().enumerate() {
        for t in arch.layer_tensors {
            let src = arch.layer_tensor_name(l.from, t.suffix);
            let shape = f.weights[0][&src].0.clone();
            want.insert(arch.layer_tensor_name(o, t.suffix), (shape, round(expected(f, &l.rule, &src, None))));
        }
    }
    let h = f.spec.hidden;
    want.insert(arch.embed.into(), (vec![vocab, h], round(expected(f, &r.embeddings, arch.embed, Some(vocab)))));
    want.insert(arch.final_norm.into(), (vec![h], round(expected(f, &r.head, arch.final_norm, None))));
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    if !cfg["tie_word_embeddings"].as_bool().unwrap() {
        let src = if f.spec.tie_embeddings { arch.embed } else { arch.lm_head };
        want.insert(arch.lm_head.into(), (vec![vocab, h], round(expected(f, &r.head, src, Some(vocab)))));
    }
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (n, (shape, values)) in &want {
        let (d, s, v) = &got[n];
        assert_eq!(*d, dtype, "{n}");
        assert_eq!(s, shape, "{n}");
        assert_eq!(v, values, "{n} differs from the recomputed values");
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn no_staging_left(parent: &Path) {
    let hidden: Vec<_> =
        std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect();
    assert!(hidden.is_empty(), "staging folders left behind: {hidden:?}");
}

#[test]
fn llama_removal_selection_and_merge_match_recomputed_values() {
    let tmp = common::tempdir();
    let f = family(tmp.path(), TinySpec { layers: 5, ..TinySpec::llama() }, 2);
    // Drop layers 2 and 4; take the base, take sib1, merge sib1+sib2 on layer 3.
    let r = recipe(&f, vec![(0, take(0)), (1, take(1)), (3, ta(&[1, 2], 0.6))], EdgePolicy::FollowLayers);
    let fam = open(&r);
    let out = tmp.path().join("out");
    let report = build(&fam, &r, &out, &BuildOptions { shard_size: 20_000, force: false }).unwrap();
    assert!(report.shards > 2, "small shard size should give several shards, got {}", report.shards);
    assert_eq!((report.layers_before, report.layers_after), (5, 3));
    let per_layer = fixture::shapes(&f.spec)
        .iter()
        .filter(|(k, _)| k.starts_with("model.layers.0."))
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum::<u64>();
    assert_eq!(report.params_before - report.params_after, 2 * per_layer);
    check_tensors(&f, &r, &out, Dtype::F32, f.spec.vocab);

    let cfg = json(&out.join("config.json"));
    assert_eq!(cfg["num_hidden_layers"], 3);
    assert_eq!(cfg["vocab_size"], f.spec.vocab);
    assert_eq!(cfg["torch_dtype"], "float32");
    assert_eq!(cfg["tie_word_embeddings"], false);
    // Everything else is the base's config unchanged.
    let mut base_cfg = json(&f.dirs[0].join("config.json"));
    base_cfg["num_hidden_layers"] = 3.into();
    assert_eq!(cfg, base_cfg);
    for file in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"] {
        assert_eq!(std::fs::read(out.join(file)).unwrap(), std::fs::read(f.dirs[0].join(file)).unwrap(), "{file}");
    }
    assert!(report.files.contains(&"config.json".to_string()) && report.files.contains(&"model.safetensors.index.json".to_string()));
    let on_disk: u64 = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert_eq!(report.bytes, on_disk);
    no_staging_left(tmp.path());
    // The reader accepts the output as a model of its own.
    let back = Checkpoint::open(&out).unwrap();
    assert_eq!(back.config.num_hidden_layers, 3);
}

#[test]
fn mistral_f16_sources_cast_once_to_bf16() {
    let tmp = common::tempdir();
    let f = family(tmp.path(), TinySpec { dtype: Dtype::F16, ..TinySpec::mistral() }, 2);
    let mut r = recipe(&f, vec![(3, ta(&[2], 0.5)), (0, take(2)), (1, ta(&[1, 2], 1.0))], EdgePolicy::Base);
    r.dtype = Some(Dtype::Bf16);
    let fam = open(&r);
    let out = tmp.path().join("out");
    build(&fam, &r, &out, &BuildOptions::default()).unwrap();
    // One shard at the default size.
    assert!(out.join("model-00001-of-00001.safetensors").is_file());
    check_tensors(&f, &r, &out, Dtype::Bf16, f.spec.vocab);
    assert_eq!(json(&out.join("config.json"))["torch_dtype"], "bfloat16");
}

#[test]
fn verbatim_tensors_are_the_source_bytes() {
    let tmp = common::tempdir();
    let f = family(tmp.path(), TinySpec { dtype: Dtype::Bf16, ..TinySpec::llama() }, 1);
    let r = recipe(&f, vec![(1, take(1)), (2, take(0))], EdgePolicy::FollowLayers);
    let fam = open(&r);
    let out = tmp.path().join("out");
    build(&fam, &r, &out, &BuildOptions::default()).unwrap();
    let o = Checkpoint::open(&out).unwrap();
    let s = Checkpoint::open(&f.dirs[1]).unwrap();
    for t in f.spec.arch().layer_tensors {
        let a = o.view(&f.spec.arch().layer_tensor_name(0, t.suffix)).unwrap();
        let b = s.view(&f.spec.arch().layer_tensor_name(1, t.suffix)).unwrap();
        assert_eq!(a.data, b.data);
    }
}

#[test]
fn qwen2_tied_embeddings_untie_when_edges_differ() {
    let tmp = common::tempdir();
    let f = family(tmp.path(), TinySpec { layers: 6, ..TinySpec::qwen2() }, 2);
    // Embeddings follow sib1 (first layer), head follows sib2 (last layer): must untie.
    let r = recipe(&f, vec![(0, take(1)), (2, take(0)), (4, ta(&[1, 2], 0.3)), (5, take(2))], EdgePolicy::FollowLayers);
    let fam = open(&r);
    let out = tmp.path().join("untied");
    let report = build(&fam, &r, &out, &BuildOptions::default()).unwrap();
    assert!(report.warnings.iter().any(|w| w.contains("untied")), "{:?}", report.warnings);
    let cfg = json(&out.join("config.json"));
    assert_eq!(cfg["tie_word_embeddings"], false);
    assert_eq!(cfg["num_hidden_layers"], 4);
    assert_eq!(cfg["max_window_layers"], 4);
    assert_eq!(cfg["layer_types"].as_array().unwrap().len(), 4);
    check_tensors(&f, &r, &out, Dtype::F32, f.spec.vocab);

    // Same rule for both edges: stays tied, no lm_head written.
    let r = recipe(&f, vec![(0, take(1)), (5, take(1))], EdgePolicy::FollowLayers);
    let out = tmp.path().join("tied");
    build(&open(&r), &r, &out, &BuildOptions::default()).unwrap();
    assert_eq!(json(&out.join("config.json"))["tie_word_embeddings"], true);
    assert!(!read_output(&out).contains_key("lm_head.weight"));
    check_tensors(&f, &r, &out, Dtype::F32, f.spec.vocab);
}

#[test]
fn padded_sibling_vocabulary_is_aligned_to_common_rows() {
    let tmp = common::tempdir();
    let mut f = family(tmp.path(), TinySpec::llama(), 1);
    // Replace sib1 by a copy padded with one vocabulary row, as Llama-2 fine-tunes are.
    let (padded, w) = fixture::pad_vocab(&f.spec, &f.weights[1], 1, 99);
    std::fs::remove_dir_all(&f.dirs[1]).unwrap();
    fixture::write_model(&f.dirs[1], &padded, &w).unwrap();
    f.weights[1] = w;
    let r = recipe(&f, vec![(0, take(1)), (1, take(0)), (3, take(1))], EdgePolicy::FollowLayers);
    let fam = open(&r);
    let out = tmp.path().join("out");
    let report = build(&fam, &r, &out, &BuildOptions::default()).unwrap();
    assert!(report.warnings.iter().any(|w| w.contains("vocabulary rows")), "{:?}", report.warnings);
    assert_eq!(json(&out.join("config.json"))["vocab_size"], f.spec.vocab);
    check_tensors(&f, &r, &out, Dtype::F32, f.spec.vocab);
}

/// A base with more rows than a sibling, whose tokenizer uses one of the extra rows: keeping
/// only the shared rows would leave that token without an embedding, so the family is
/// refused with one message naming the token and the short sibling.
#[test]
fn base_tokenizer_beyond_the_shared_rows_is_refused() {
    let tmp = common::tempdir();
    let mut f = family(tmp.path(), TinySpec::llama(), 1);
    let padded = TinySpec { vocab: f.spec.vocab + 1, ..f.spec.clone() };
    let w = fixture::random_weights(&padded, 98);
    std::fs::remove_dir_all(&f.dirs[0]).unwrap();
    fixture::write_model(&f.dirs[0], &padded, &w).unwrap();
    f.weights[0] = w;
    let r = recipe(&f, vec![(0, take(1)), (1, take(0))], EdgePolicy::Base);
    // Padding rows alone are fine: the base's tokenizer stops below the shared rows.
    assert!(Family::open_for_recipe(&r, |m| Ok(PathBuf::from(m.source.to_string()))).is_ok());
    // A token added on the extra row is not.
    let tok_path = f.dirs[0].join("tokenizer.json");
    let mut tok = json(&tok_path);
    let id = f.spec.vocab;
    tok["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({"id": id, "content": "<extra>", "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}));
    std::fs::write(&tok_path, tok.to_string()).unwrap();
    let e = Family::open_for_recipe(&r, |m| Ok(PathBuf::from(m.source.to_string()))).expect_err("refused");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("token id {id} (`<extra>`)")) && msg.contains("sib1") && msg.contains(&format!("only {id} vocabulary rows")),
        "{msg}"
    );
}

#[test]
fn destination_is_refused_unless_forced_and_replaced_only_when_complete() {
    let tmp = common::tempdir();
    let f = family(tmp.path(), TinySpec::llama(), 1);
    let r = recipe(&f, vec![(0, take(0)), (2, take(1))], EdgePolicy::Base);
    let fam = open(&r);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "old").unwrap();
    let err = build(&fam, &r, &out, &BuildOptions::default()).unwrap_err().to_string();
    assert!(err.contains("not empty") && err.contains("--force"), "{err}");
    assert!(out.join("keep.txt").is_file(), "a refused build must not touch the folder");
    // A failing forced build (recipe does not fit) keeps the old folder.
    let mut bad = r.clone();
    bad.source_layers = 7;
    assert!(build(&fam, &bad, &out, &BuildOptions { force: true, ..Default::default() }).is_err());
    assert!(out.join("keep.txt").is_file());
    build(&fam, &r, &out, &BuildOptions { force: true, ..Default::default() }).unwrap();
    assert!(!out.join("keep.txt").exists(), "force replaces the folder");
    assert_eq!(json(&out.join("config.json"))["num_hidden_layers"], 2);
    no_staging_left(tmp.path());
    // Writing over a source model is refused even with force.
    let err = build(&fam, &r, &f.dirs[1], &BuildOptions { force: true, ..Default::default() }).unwrap_err().to_string();
    assert!(err.contains("source model"), "{err}");
    // An empty existing folder is fine without force.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    build(&fam, &r, &empty, &BuildOptions::default()).unwrap();
    no_staging_left(tmp.path());
}

/// Describe, for the Python cross-check, what every output tensor should equal: the source
/// tensors it is made of and the rule, so numpy recomputes it from the source files.
fn python_expectations(f: &Fam, r: &Recipe, out: &Path) -> serde_json::Value {
    let arch = f.spec.arch();
    let dir = |n: &str| f.dirs[(0..f.dirs.len()).find(|&i| name(i) == n).unwrap()].display().to_string();
    let dirs = |models: &[String]| models.iter().map(|m| dir(m)).collect::<Vec<_>>();
    let rule_json = |rule: &Rule| match rule {
        Rule::Take(m) => serde_json::json!({"take": dir(m)}),
        Rule::Merge(m) => {
            let mut v = serde_json::to_value(m).unwrap();
            v["models"] = dirs(m.models()).into();
            v["base"] = dir("base").into();
            v
        }
    };
    let mut checks = vec![];
    for (o, l) in r.layers.iter().enumerate() {
        for t in arch.layer_tensors {
            checks.push(serde_json::json!({"out": arch.layer_tensor_name(o, t.suffix), "src": arch.layer_tensor_name(l.from, t.suffix), "rule": rule_json(&l.rule)}));
        }
    }
    checks.push(serde_json::json!({"out": arch.embed, "src": arch.embed, "rule": rule_json(&r.embeddings)}));
    checks.push(serde_json::json!({"out": arch.final_norm, "src": arch.final_norm, "rule": rule_json(&r.head)}));
    // transformers' state dict always holds lm_head (the embeddings' tensor when tied).
    let tied_out = json(&out.join("config.json"))["tie_word_embeddings"].as_bool().unwrap();
    let (head_src, head_rule) = match (tied_out, f.spec.tie_embeddings) {
        (true, _) => (arch.embed, &r.embeddings),
        (false, true) => (arch.embed, &r.head),
        (false, false) => (arch.lm_head, &r.head),
    };
    checks.push(serde_json::json!({"out": arch.lm_head, "src": head_src, "rule": rule_json(head_rule)}));
    serde_json::json!({"out": out, "checks": checks})
}

fn linear(models: &[usize], weights: &[f64]) -> Rule {
    Rule::Merge(Merge::Linear { models: models.iter().map(|&i| name(i)).collect(), weights: weights.to_vec() })
}

fn ties(models: &[usize], lambda: f64, density: f64) -> Rule {
    Rule::Merge(Merge::Ties { models: models.iter().map(|&i| name(i)).collect(), lambda, density })
}

fn dare(models: &[usize], lambda: f64, density: f64) -> Rule {
    Rule::Merge(Merge::Dare { models: models.iter().map(|&i| name(i)).collect(), lambda, density, seed: 5 })
}

fn slerp(a: usize, b: usize, t: f64) -> Rule {
    Rule::Merge(Merge::Slerp { models: vec![name(a), name(b)], t })
}

/// Every architecture variant and merge method, written by the writer, loaded by
/// transformers, and every tensor (biases, embeddings, final norm and lm_head included)
/// recomputed with numpy from the sources: one Python process for all of them.
#[test]
fn transformers_loads_every_output_and_numpy_recomputes_every_tensor() {
    let tmp = common::tempdir();
    let llama3 = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    let linear_rope = serde_json::json!({"rope_type": "linear", "factor": 2.0});
    let variants: Vec<(&str, TinySpec, Option<Dtype>)> = vec![
        ("llama", TinySpec::llama(), None),
        ("mistral-bf16", TinySpec { sliding_window: Some(6), ..TinySpec::mistral() }, Some(Dtype::Bf16)),
        ("qwen2-tied", TinySpec { layers: 5, ..TinySpec::qwen2() }, None),
        ("qwen2-untied", TinySpec::qwen2_untied(), None),
        ("llama-tied", TinySpec::llama_tied(), None),
        ("llama-head-dim-llama3-rope", TinySpec { head_dim: Some(16), rope_scaling: Some(llama3), ..TinySpec::llama() }, None),
        ("llama-linear-rope-f16", TinySpec { rope_scaling: Some(linear_rope), dtype: Dtype::F16, ..TinySpec::llama() }, None),
    ];
    let mut jobs = vec![];
    for (label, spec, dtype) in variants {
        let root = tmp.path().join(label);
        let f = family(&root, spec, 2);
        // Edges follow the first and last layers: different rules, so a tied base unties.
        let mut recipes = vec![recipe(&f, vec![(0, take(0)), (1, ta(&[1, 2], 0.7)), (3, take(2))], EdgePolicy::FollowLayers)];
        // Every other merge method, on layers, embeddings and head.
        let mut methods = recipe(
            &f,
            vec![
                (0, linear(&[0, 1, 2], &[0.5, 0.3, 0.2])),
                (1, ties(&[1, 2], 0.8, 0.4)),
                (2, dare(&[1, 2], 0.9, 0.5)),
                (2, dare(&[2], 1.0, 0.3)),
                (3, slerp(1, 2, 0.3)),
            ],
            EdgePolicy::FollowLayers,
        );
        methods.embeddings = ties(&[1, 2], 1.0, 0.6);
        methods.head = linear(&[1, 2], &[1.0, 3.0]);
        recipes.push(methods);
        // One rule for both edges: a tied base stays tied.
        recipes.push(recipe(&f, vec![(2, take(1)), (0, take(1))], EdgePolicy::FollowLayers));
        for (i, mut r) in recipes.into_iter().enumerate() {
            r.dtype = dtype;
            let out = root.join(format!("out{i}"));
            let report = build(&open(&r), &r, &out, &BuildOptions { shard_size: 30_000, force: false }).unwrap();
            let cfg = json(&out.join("config.json"));
            let tied = f.spec.tie_embeddings && r.embeddings == r.head;
            assert_eq!(cfg["tie_word_embeddings"], tied, "{label} recipe {i}");
            assert_eq!(
                report.warnings.iter().any(|w| w.contains("untied")),
                f.spec.tie_embeddings && !tied,
                "{label} recipe {i}: {:?}",
                report.warnings
            );
            let other_method = |rule: &Rule| matches!(rule, Rule::Merge(m) if m.method_name() != "task_arithmetic");
            if !r.layers.iter().any(|l| other_method(&l.rule)) && !other_method(&r.embeddings) && !other_method(&r.head) {
                // Take and task arithmetic, recomputed here too (bit-exact).
                check_tensors(&f, &r, &out, r.dtype.unwrap_or(f.spec.dtype), f.spec.vocab);
            }
            jobs.push(python_expectations(&f, &r, &out));
        }
    }
    let spec_file = tmp.path().join("expect.json");
    std::fs::write(&spec_file, serde_json::json!({"jobs": jobs}).to_string()).unwrap();
    let stdout = common::run_python("check_build.py", &[spec_file.to_str().unwrap()]);
    assert_eq!(stdout.lines().filter(|l| l.starts_with("OK ")).count(), jobs.len(), "{stdout}");
}

/// llama.cpp's own converter (`convert_hf_to_gguf.py`, pinned release) turns a tailored
/// checkpoint into a GGUF whose metadata counts the kept layers and whose every tensor is the
/// written one (q/k permuted as llama.cpp expects), and llama.cpp itself runs it to the
/// logits transformers computes from the checkpoint: "outputs llama.cpp cannot convert" is
/// a standing complaint about merge tools.
#[test]
fn llama_cpp_converts_and_runs_the_output() {
    let tmp = common::tempdir();
    let llama_cpp = common::llama_cpp();
    let runtime = common::llama_cpp_runtime();
    for spec in [TinySpec::llama(), TinySpec::mistral()] {
        let root = tmp.path().join(spec.model_type);
        let f = family(&root, spec.clone(), 2);
        // A Llama-2-style tokenizer, which the converter recognises (the fixtures' own is not).
        common::run_python("llama_cpp_check.py", &["tokenizer", f.dirs[0].to_str().unwrap()]);
        let r = recipe(&f, vec![(0, take(0)), (1, ta(&[1, 2], 0.7)), (3, take(2))], EdgePolicy::FollowLayers);
        let out = root.join("out");
        build(&open(&r), &r, &out, &BuildOptions { shard_size: 30_000, force: false }).unwrap();
        let gguf = root.join("out.gguf");
        let stdout = common::run_python(
            "llama_cpp_check.py",
            &["convert", out.to_str().unwrap(), llama_cpp.to_str().unwrap(), runtime.to_str().unwrap(), gguf.to_str().unwrap()],
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default()).expect("JSON summary");
        assert_eq!(v["arch"], "llama", "{v}");
        assert_eq!(v["block_count"], 3, "{v}");
        assert_eq!(
            (v["embedding_length"].as_u64(), v["feed_forward_length"].as_u64()),
            (Some(spec.hidden as u64), Some(spec.intermediate as u64)),
            "{v}"
        );
        assert_eq!((v["head_count"].as_u64(), v["head_count_kv"].as_u64()), (Some(spec.heads as u64), Some(spec.kv_heads as u64)), "{v}");
        assert_eq!(v["vocab_tokens"], spec.vocab, "{v}");
        assert_eq!(v["tensors"].as_array().map(Vec::len), Some(3 * 9 + 3), "{v}");
        assert_eq!((v["unexpected"].as_array().map(Vec::len), v["mismatched"].as_array().map(Vec::len)), (Some(0), Some(0)), "{v}");
        assert_eq!(v["max_abs_diff"], 0.0, "{v}");
        // llama.cpp's logits at every position: within 0.05 of transformers' (its KV cache is
        // f16; the same GGUF against the untailored base differs by ~4.8), and the same winner
        // wherever transformers' top two are not a near-tie.
        let run = &v["llama_cpp_run"];
        assert_eq!(run["logits_shape_matches"], true, "{run}");
        assert!(run["max_abs_logit_diff"].as_f64().is_some_and(|d| d < 0.05), "{run}");
        assert!(run["clear_positions"].as_u64().is_some_and(|n| n >= 10) && run["argmax_agree_on_clear"] == true, "{run}");
    }
}

#[test]
fn cli_builds_a_recipe_and_converts_it_to_mergekit_and_back() {
    let tmp = common::tempdir();
    let f = family(tmp.path(), TinySpec::llama(), 2);
    let r = recipe(&f, vec![(0, take(0)), (1, ta(&[1, 2], 0.5)), (3, take(1))], EdgePolicy::FollowLayers);
    let path = tmp.path().join("tailor.yaml");
    r.save(&path).unwrap();
    let out = tmp.path().join("out");
    let o =
        common::hf_tailor().args(["build", "--recipe"]).arg(&path).arg("--out").arg(&out).args(["--shard-size", "40KB", "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["layers_after"], 3);
    assert!(report["shards"].as_u64().unwrap() > 1);
    check_tensors(&f, &r, &out, Dtype::F32, f.spec.vocab);

    let mk = tmp.path().join("mergekit.yaml");
    let o = common::hf_tailor().args(["mergekit", "export"]).arg(&path).arg("-o").arg(&mk).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read_to_string(&mk).unwrap().contains("merge_method: task_arithmetic"));
    // The base is a local folder, so the architecture is read from its config.json.
    let back = tmp.path().join("back.yaml");
    let o = common::hf_tailor().args(["mergekit", "import"]).arg(&mk).args(["--source-layers", "4", "-o"]).arg(&back).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(Recipe::load(&back).unwrap(), r, "fixture folders are named base/sib1/sib2, as the import names them");
}

/// mergekit itself (`mergekit-yaml`, pinned) run on the config `hf-tailor mergekit export`
/// writes for every exportable recipe shape of these tests builds the same tensors as
/// `hf-tailor build` (<= 1e-6 in f32, one rounding step in bf16): one Python process.
#[test]
fn mergekit_builds_every_exported_config_to_the_same_tensors() {
    let tmp = common::tempdir();
    let mut jobs = vec![];
    let mut add = |label: &str, f: &Fam, r: Recipe| {
        let dir = tmp.path().join("jobs").join(label);
        std::fs::create_dir_all(&dir).unwrap();
        let ours = dir.join("ours");
        build(&open(&r), &r, &ours, &BuildOptions::default()).unwrap();
        let yaml = hf_tailor::mergekit::export(&r, Some(f.spec.tie_embeddings)).unwrap_or_else(|e| panic!("{label}: {e}"));
        let config = dir.join("mergekit.yaml");
        std::fs::write(&config, yaml).unwrap();
        jobs.push(serde_json::json!({"label": label, "config": config, "out": dir.join("mergekit"), "ours": ours}));
    };
    let llama = family(&tmp.path().join("llama"), TinySpec { layers: 5, ..TinySpec::llama() }, 2);
    add("llama-take-and-merge", &llama, recipe(&llama, vec![(0, take(0)), (1, take(1)), (3, ta(&[1, 2], 0.6))], EdgePolicy::FollowLayers));
    add(
        "llama-passthrough-runs",
        &llama,
        recipe(&llama, vec![(0, take(0)), (1, take(0)), (2, take(1)), (3, take(1)), (4, take(2))], EdgePolicy::FollowLayers),
    );
    add("llama-base-edges", &llama, recipe(&llama, vec![(1, ta(&[1, 2], 0.4)), (4, take(2))], EdgePolicy::Base));
    let mut edges = recipe(&llama, vec![(0, take(0)), (2, ta(&[1], 0.8)), (4, take(1))], EdgePolicy::FollowLayers);
    edges.embeddings = take(2);
    edges.head = ta(&[1, 2], 0.5);
    add("llama-edges-of-their-own", &llama, edges);
    let mistral = family(&tmp.path().join("mistral"), TinySpec { dtype: Dtype::F16, sliding_window: Some(6), ..TinySpec::mistral() }, 2);
    let mut bf16 = recipe(&mistral, vec![(3, ta(&[2], 0.5)), (0, take(2)), (1, ta(&[1, 2], 1.0))], EdgePolicy::Base);
    bf16.dtype = Some(Dtype::Bf16);
    add("mistral-f16-to-bf16", &mistral, bf16);
    let qwen = family(&tmp.path().join("qwen2"), TinySpec { layers: 6, ..TinySpec::qwen2() }, 2);
    assert!(
        hf_tailor::mergekit::export(&recipe(&qwen, vec![(0, take(1)), (2, take(0)), (5, take(2))], EdgePolicy::FollowLayers), Some(true)).is_err()
    );
    add("qwen2-tied-merged-edges", &qwen, recipe(&qwen, vec![(0, ta(&[1, 2], 0.3)), (2, take(0)), (4, ta(&[1, 2], 0.3))], EdgePolicy::FollowLayers));
    add("qwen2-tied-kept", &qwen, recipe(&qwen, vec![(0, take(1)), (5, take(1))], EdgePolicy::FollowLayers));
    let qwen_untied = family(&tmp.path().join("qwen2-untied"), TinySpec::qwen2_untied(), 2);
    add("qwen2-untied", &qwen_untied, recipe(&qwen_untied, vec![(0, ta(&[1, 2], 0.7)), (1, take(2)), (3, take(0))], EdgePolicy::FollowLayers));
    let tied = family(&tmp.path().join("llama-tied"), TinySpec::llama_tied(), 2);
    add("llama-tied-kept", &tied, recipe(&tied, vec![(0, take(2)), (1, ta(&[1, 2], 0.5)), (3, take(2))], EdgePolicy::FollowLayers));
    // A tied base with edges from different rules: hf-tailor unties, mergekit cannot, so
    // the export refuses rather than describe another model.
    let untie = recipe(&tied, vec![(0, take(2)), (1, ta(&[1, 2], 0.5)), (3, take(1))], EdgePolicy::FollowLayers);
    let e = hf_tailor::mergekit::export(&untie, Some(true)).unwrap_err().to_string();
    assert!(e.contains("ties lm_head to its embeddings"), "{e}");
    let rope = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    let hd = family(&tmp.path().join("head-dim"), TinySpec { head_dim: Some(16), rope_scaling: Some(rope), ..TinySpec::llama() }, 2);
    add("llama-head-dim-llama3-rope", &hd, recipe(&hd, vec![(0, take(0)), (2, ta(&[1, 2], 0.6)), (3, take(2))], EdgePolicy::FollowLayers));
    let jobs_file = tmp.path().join("mergekit-jobs.json");
    let n = jobs.len();
    std::fs::write(&jobs_file, serde_json::json!({"jobs": jobs}).to_string()).unwrap();
    let stdout = common::run_python("mergekit_check.py", &[jobs_file.to_str().unwrap()]);
    let results: Vec<serde_json::Value> = stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(results.len(), n, "{stdout}");
    let problems: Vec<String> = results
        .iter()
        .flat_map(|r| r["problems"].as_array().unwrap().iter().map(move |p| format!("{}: {}", r["label"].as_str().unwrap(), p.as_str().unwrap())))
        .collect();
    // mergekit 0.1.5 sets num_hidden_layers on transformers 5's Qwen2 config, whose
    // `layer_types` keeps the source depth, and transformers rejects it: no Qwen2 model of
    // another depth can be made by mergekit here. Pinned, so an upgrade that fixes it shows.
    let (qwen, others): (Vec<String>, Vec<String>) = problems.into_iter().partition(|p| p.starts_with("qwen2"));
    assert!(others.is_empty(), "mergekit disagrees with hf-tailor build:\n{}", others.join("\n"));
    let qwen_jobs = results.iter().filter(|r| r["label"].as_str().unwrap().starts_with("qwen2")).count();
    assert_eq!(qwen.len(), qwen_jobs, "{qwen:?}");
    assert!(qwen.iter().all(|p| p.contains("must be equal to the number of `layer_types`")), "{qwen:?}");
    for r in results.iter().filter(|r| !r["label"].as_str().unwrap().starts_with("qwen2")) {
        assert!(r["tensors"].as_u64().unwrap() > 20, "{r}");
    }
}
