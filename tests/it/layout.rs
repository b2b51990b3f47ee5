//! One output layout for the evaluator and the writer: for recipes whose embeddings and
//! head come from different models, of families whose siblings differ in *every* tensor
//! (embeddings and final norms included), the in-memory logits equal transformers' logits
//! of the written checkpoint at every position, and every parameter count agrees.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hf_tailor::checkpoint::{Checkpoint, Family};
use hf_tailor::eval::{EvalOptions, Evaluator};
use hf_tailor::layout::Layout;
use hf_tailor::recipe::{EdgePolicy, LayerRule, Merge, Recipe, Rule, SourceModel};
use hf_tailor::testkit::fixture::{self, TinySpec, Weights};
use rand::{Rng, SeedableRng};

use crate::common;

/// A base and two siblings under `root`; sibling j shifts every tensor of the base by
/// seeded noise of its own size, so no rule can stand in for another.
fn family(root: &Path, spec: &TinySpec) -> (Arc<Family>, Vec<PathBuf>) {
    let base = fixture::random_weights(spec, 11);
    let mut dirs = vec![root.join("base")];
    fixture::write_model(&dirs[0], spec, &base).unwrap();
    for j in 1..=2u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(100 + j);
        let scale = 0.15 * j as f32;
        let w: Weights = base
            .iter()
            .map(|(n, (shape, v))| (n.clone(), (shape.clone(), v.iter().map(|x| x + scale * (rng.random::<f32>() - 0.5)).collect())))
            .collect();
        let d = root.join(format!("sib{j}"));
        fixture::write_model(&d, spec, &w).unwrap();
        dirs.push(d);
    }
    let open = |n: &str, d: &Path| (n.to_string(), Checkpoint::open(d).unwrap());
    let fam = Family::new(open("base", &dirs[0]), vec![open("sib1", &dirs[1]), open("sib2", &dirs[2])]).unwrap();
    (Arc::new(fam), dirs)
}

fn src(name: &str, dir: &Path) -> SourceModel {
    SourceModel::local(name, dir)
}

/// Recipes whose embeddings rule differs from their head rule (and one where they agree).
fn recipes(spec: &TinySpec, dirs: &[PathBuf]) -> Vec<Recipe> {
    let ta = Rule::Merge(Merge::TaskArithmetic { models: vec!["sib1".into(), "sib2".into()], lambda: 0.6 });
    let take = |m: &str| Rule::Take(m.into());
    let make = |layers: Vec<(usize, Rule)>, edges: Option<(Rule, Rule)>| {
        let layers = layers.into_iter().map(|(from, rule)| LayerRule { from, rule }).collect();
        let mut r = Recipe::new(
            spec.model_type,
            spec.layers,
            src("base", &dirs[0]),
            vec![src("sib1", &dirs[1]), src("sib2", &dirs[2])],
            layers,
            EdgePolicy::FollowLayers,
        );
        if let Some((e, h)) = edges {
            r.embeddings = e;
            r.head = h;
        }
        r
    };
    vec![
        // The default edges: embeddings follow the first kept layer (sib1), the head the last (sib2).
        make(vec![(0, take("sib1")), (1, take("base")), (3, take("sib2"))], None),
        // Embeddings from the base, head a merge.
        make(vec![(0, take("base")), (2, ta.clone()), (3, take("sib1"))], Some((take("base"), ta.clone()))),
        // Embeddings a merge, head a sibling.
        make(vec![(1, ta.clone()), (3, take("base"))], Some((ta, take("sib2")))),
        // Same rule for both: a tied base stays tied.
        make(vec![(0, take("sib2")), (2, take("sib2"))], None),
    ]
}

/// Every recipe: build it, score it in memory, and compare with transformers on the
/// written folder; the written tying, tensors and parameter counts are the layout's.
fn in_memory_equals_written(spec: TinySpec) {
    let tmp = common::tempdir();
    let (fam, dirs) = family(tmp.path(), &spec);
    let mut ev = Evaluator::new(fam.clone(), vec![], EvalOptions::default()).unwrap();
    let texts = ["Hello, world! A sentence long enough to see every position.", "Short one"];
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| ev.encoder().encode(t).unwrap()).collect();
    let recipes = recipes(&spec, &dirs);
    let mut requests = Vec::new();
    for (i, r) in recipes.iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        let report = hf_tailor::writer::build(&fam, r, &out, &hf_tailor::writer::BuildOptions::default()).unwrap();
        let layout = Layout::for_family(&fam, r).unwrap();
        let written = Checkpoint::open(&out).unwrap();
        let mut on_disk: Vec<&str> = written.tensors.keys().map(String::as_str).collect();
        let mut planned: Vec<&str> = layout.tensors.iter().map(|t| t.name.as_str()).collect();
        on_disk.sort();
        planned.sort();
        assert_eq!(on_disk, planned, "recipe {i}: written tensors are the layout's");
        let expect_tied = spec.tie_embeddings && r.embeddings == r.head;
        assert_eq!(layout.tied, expect_tied, "recipe {i}");
        assert_eq!(written.config.tie_word_embeddings, expect_tied, "recipe {i}: config.json tying");
        let written_params: u64 = written.tensors.values().map(|t| t.numel() as u64).sum();
        assert_eq!((report.params_after, layout.total_params()), (written_params, written_params), "recipe {i}");
        requests.push(serde_json::json!({"model": out, "sequences": seqs, "items": []}));
    }
    let (req_path, ref_path) = (tmp.path().join("req.json"), tmp.path().join("ref.json"));
    std::fs::write(&req_path, serde_json::Value::Array(requests).to_string()).unwrap();
    common::run_python("eval_crosscheck.py", &[req_path.to_str().unwrap(), ref_path.to_str().unwrap()]);
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ref_path).unwrap()).unwrap();
    for (i, r) in recipes.iter().enumerate() {
        let ours = ev.logits(r, &seqs).unwrap();
        for (s, seq) in seqs.iter().enumerate() {
            let d = common::max_logit_diff(&ours[s], &reference[i]["single"][s]);
            eprintln!("{} recipe {i} sequence {s} ({} positions): max |logit diff| = {d:e}", spec.model_type, seq.len());
            assert!(
                d < 1e-4,
                "{} recipe {i} (embeddings {}, head {}): in-memory logits differ from the written model's by {d:e}",
                spec.model_type,
                r.embeddings.label(),
                r.head.label()
            );
        }
    }
}

#[test]
fn tied_llama_scores_the_model_the_writer_writes() {
    in_memory_equals_written(TinySpec { tie_embeddings: true, ..TinySpec::llama() });
}

#[test]
fn tied_qwen2_scores_the_model_the_writer_writes() {
    in_memory_equals_written(TinySpec::qwen2());
}

#[test]
fn untied_qwen2_scores_the_model_the_writer_writes() {
    in_memory_equals_written(TinySpec { tie_embeddings: false, ..TinySpec::qwen2() });
}
