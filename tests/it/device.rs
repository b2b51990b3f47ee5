//! The device path on the CPU: merges computed from resident source tensors give the
//! writer's checkpoint exactly, the memory tiers do not change a score, bf16 scoring stays
//! within its stated tolerance of f32, and the GPU benchmark's CPU mode runs.

use std::path::Path;
use std::sync::Arc;

use hf_tailor::checkpoint::{Checkpoint, Family};
use hf_tailor::dtype::Dtype;
use hf_tailor::eval::{EvalOptions, Evaluator, McItem, Task, TaskData};
use hf_tailor::recipe::{EdgePolicy, LayerRule, Merge, Recipe, Rule, SourceModel};
use hf_tailor::testkit::fixture::{self, TinySpec};

use crate::common;

fn src(name: &str, dir: &Path) -> SourceModel {
    SourceModel::local(name, dir)
}

fn open(names: &[(&str, &Path)]) -> Arc<Family> {
    let mut models: Vec<(String, Checkpoint)> = names.iter().map(|(n, d)| (n.to_string(), Checkpoint::open(d).unwrap())).collect();
    let base = models.remove(0);
    Arc::new(Family::new(base, models).unwrap())
}

fn recipe(fam: &Family, layers: usize, rules: Vec<(usize, Rule)>) -> Recipe {
    let sm = |i: usize| src(&fam.names[i], &fam.models().nth(i).unwrap().dir);
    let siblings = (1..fam.names.len()).map(sm).collect();
    Recipe::new(
        fam.base.config.arch.model_type,
        layers,
        sm(0),
        siblings,
        rules.into_iter().map(|(from, rule)| LayerRule { from, rule }).collect(),
        EdgePolicy::FollowLayers,
    )
}

fn sibs() -> Vec<String> {
    vec!["sib1".into(), "sib2".into()]
}

/// Every device-merged method, plus a take and a host-path (linear) merge.
fn merged_rules() -> Vec<(usize, Rule)> {
    vec![
        (0, Rule::Merge(Merge::Ties { models: sibs(), lambda: 0.9, density: 0.4 })),
        (1, Rule::Merge(Merge::Dare { models: sibs(), lambda: 0.7, density: 0.6, seed: 5 })),
        (2, Rule::Take("sib2".into())),
        (3, Rule::Merge(Merge::TaskArithmetic { models: sibs(), lambda: 0.6 })),
        (3, Rule::Merge(Merge::Linear { models: vec!["base".into(), "sib1".into()], weights: vec![0.3, 0.7] })),
    ]
}

/// The cross-check's items: single-token, packed and long-choice shapes.
fn items() -> Vec<McItem> {
    crate::eval::items()
}

fn texts() -> Vec<Vec<u32>> {
    vec![(1..40).map(|i| (i * 7 % 250) as u32).collect(), (3..20).collect()]
}

#[test]
fn device_merges_on_cpu_score_exactly_the_written_checkpoint() {
    let tmp = common::tempdir();
    let spec = TinySpec::llama(); // f32 storage: the written values are the f32 merges themselves
    let (base, s, _) = fixture::write_family(tmp.path(), &spec, 2, 11).unwrap();
    let fam = open(&[("base", &base), ("sib1", &s[0]), ("sib2", &s[1])]);
    let r = recipe(&fam, spec.layers, merged_rules());
    let out = tmp.path().join("tailored");
    hf_tailor::writer::build(&fam, &r, &out, &hf_tailor::writer::BuildOptions::default()).unwrap();

    // The written model, scored as its own family of one: every layer taken as written.
    let written = open(&[("base", &out)]);
    let kept = written.base.config.num_hidden_layers;
    let plain = recipe(&written, kept, (0..kept).map(|l| (l, Rule::Take("base".into()))).collect());
    let mut ev_written = Evaluator::new(written.clone(), vec![], EvalOptions::default()).unwrap();
    let want = ev_written.logits(&plain, &texts()).unwrap();
    let want_ll = ev_written.choice_log_likelihoods(&plain, &items()).unwrap();

    // Both tiers: sources streamed per use (the CPU default) and all resident.
    for source_bytes in [Some(0), Some(u64::MAX)] {
        let mut ev = Evaluator::new(fam.clone(), vec![], EvalOptions { source_bytes, ..EvalOptions::default() }).unwrap();
        assert_eq!(ev.logits(&r, &texts()).unwrap(), want, "logits, source_bytes {source_bytes:?}");
        assert_eq!(ev.choice_log_likelihoods(&r, &items()).unwrap(), want_ll, "log-likelihoods, source_bytes {source_bytes:?}");
        let m = ev.memory();
        let resident = m.tiers.iter().filter(|(_, t)| *t == hf_tailor::eval::tiers::Tier::Device).count();
        match source_bytes {
            Some(0) => assert!(resident == 0 && m.host_uploaded_bytes > 0 && m.weights.peak_bytes == 0, "{m:?}"),
            _ => assert!(resident == 3 && m.host_uploaded_bytes == 0 && m.weights.peak_bytes > 0, "{m:?}"),
        }
    }
}

/// bf16 scoring against f32 on the CPU: per-choice log-likelihoods within
/// `BF16_LL_TOLERANCE` nats of f32 plus `BF16_LL_RELATIVE` of their size (bf16 keeps 8 bits
/// of mantissa: ~0.4 % per rounding, through a few layers), and the same choice wherever
/// f32's best choice leads by more than twice that.
const BF16_LL_TOLERANCE: f64 = 0.05;
const BF16_LL_RELATIVE: f64 = 0.02;

#[test]
fn bf16_scores_agree_with_f32_within_the_stated_tolerance() {
    let tmp = common::tempdir();
    let spec = TinySpec { dtype: Dtype::Bf16, ..TinySpec::llama() };
    let (base, s, _) = fixture::write_family(tmp.path(), &spec, 2, 3).unwrap();
    let fam = open(&[("base", &base), ("sib1", &s[0]), ("sib2", &s[1])]);
    let r = recipe(&fam, spec.layers, merged_rules());
    let tasks = vec![Task::new("mc", TaskData::MultipleChoice(items()))];
    let score = |dtype: Dtype| {
        let mut ev = Evaluator::new(fam.clone(), tasks.clone(), EvalOptions { dtype: Some(dtype), ..EvalOptions::default() }).unwrap();
        assert_eq!(format!("{:?}", ev.dtype()).to_lowercase(), dtype.to_string());
        ev.choice_log_likelihoods(&r, &items()).unwrap()
    };
    let (f32s, bf16s) = (score(Dtype::F32), score(Dtype::Bf16));
    let mut worst = 0f64;
    let mut differs = false;
    for (a, b) in f32s.iter().zip(&bf16s) {
        for (x, y) in a.iter().zip(b) {
            let allowed = BF16_LL_TOLERANCE + BF16_LL_RELATIVE * x.abs();
            assert!((x - y).abs() <= allowed, "bf16 {y} vs f32 {x} (allowed {allowed}): {bf16s:?} vs {f32s:?}");
            worst = worst.max((x - y).abs());
            differs |= x != y;
        }
        let best = |v: &[f64]| (0..v.len()).max_by(|i, j| v[*i].total_cmp(&v[*j])).unwrap();
        let mut sorted = a.clone();
        sorted.sort_by(|p, q| q.total_cmp(p));
        if sorted.len() > 1 && sorted[0] - sorted[1] > 2.0 * (BF16_LL_TOLERANCE + BF16_LL_RELATIVE * sorted[0].abs()) {
            assert_eq!(best(a), best(b), "bf16 picks another choice: {b:?} vs f32 {a:?}");
        }
    }
    // bf16 really ran: the values are close, not equal.
    assert!(differs, "bf16 and f32 gave bit-identical scores");
    eprintln!("bf16 vs f32: largest log-likelihood difference {worst:.4} nats");
}

#[test]
fn gpu_benchmark_runs_in_cpu_mode() {
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench-gpu.sh"))
        .args(["--cpu", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench-gpu.sh --cpu failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let r = &rows[0];
    assert_eq!(r["shape"], "tiny");
    assert!(r["prefill_tokens_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["trial_seconds"].as_array().unwrap().len(), 3, "{r}");
    let merges: Vec<&str> = r["merge_seconds_per_layer"].as_array().unwrap().iter().map(|m| m[0].as_str().unwrap()).collect();
    assert_eq!(merges, ["task_arithmetic", "ties", "dare"]);
    // The warm-start sample shares prefixes across the removal patterns.
    assert!(r["prefix_saved_fraction"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["projected_hours"].as_f64().unwrap() > 0.0 && r["peak_memory_bytes"].as_u64().unwrap() > 0, "{r}");
}
