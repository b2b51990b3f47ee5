//! Benchmark helper for `scripts/bench-eval.sh` (see there).
//!
//! `bench_eval gen DIR LAYERS HIDDEN INTER ITEMS STREAM_ITEMS`: a Llama base and three
//!   siblings (every layer perturbed) under DIR, `DIR/items.jsonl` (ITEMS MMLU-style
//!   single-token items with ~150-token contexts and multi-token items) and
//!   `DIR/stream.jsonl` (the first STREAM_ITEMS of them).
//! `bench_eval throughput DIR`: scores the base on items.jsonl (cold, then warm) and prints
//!   JSON {tokens, cold_s, warm_s, acc}.
//! `bench_eval stream DIR`: scores the reference's warm-start candidates (3 removal
//!   patterns x (all-base + lambda x sibling subsets)) on stream.jsonl with and without the
//!   prefix cache and prints JSON with both times, the saved fraction and memory figures.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hf_tailor::checkpoint::{Checkpoint, Family};
use hf_tailor::eval::{EvalOptions, Evaluator, TaskResult, TaskSpec};
use hf_tailor::recipe::{EdgePolicy, LayerRule, Merge, Recipe, Rule, SourceModel};
use hf_tailor::testkit::fixture::{self, TinySpec};
use rand::{Rng, SeedableRng};

const SIBLINGS: [&str; 3] = ["sib1", "sib2", "sib3"];

fn spec(layers: usize, hidden: usize, inter: usize) -> TinySpec {
    TinySpec { layers, hidden, intermediate: inter, heads: hidden / 64, kv_heads: hidden / 128, shard_bytes: Some(1 << 30), ..TinySpec::llama() }
}

const WORDS: &[&str] = &[
    "the", "model", "layer", "river", "stone", "quickly", "under", "between", "number", "seven", "green", "market", "theory", "prime", "value",
    "because", "while", "history", "energy", "system", "water", "north", "argument", "small",
];

fn sentence(rng: &mut impl Rng, words: usize) -> String {
    (0..words).map(|_| WORDS[rng.random_range(0..WORDS.len())]).collect::<Vec<_>>().join(" ")
}

fn gen(dir: &Path, layers: usize, hidden: usize, inter: usize, items: usize, stream_items: usize) -> std::io::Result<()> {
    let s = spec(layers, hidden, inter);
    let base = fixture::random_weights(&s, 1);
    fixture::write_model(&dir.join("base"), &s, &base)?;
    let all: Vec<usize> = (0..layers).collect();
    for (j, name) in SIBLINGS.iter().enumerate() {
        let w = fixture::perturb_layers(&s, &base, &all, 0.05, 10 + j as u64);
        fixture::write_model(&dir.join(name), &s, &w)?;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut lines = Vec::new();
    for i in 0..items {
        let line = if i % 4 == 3 {
            // Multi-token continuations (ARC/HellaSwag style).
            let choices: Vec<String> = (0..4).map(|_| format!(" {}.", sentence(&mut rng, 3))).collect();
            serde_json::json!({"context": format!("{}:", sentence(&mut rng, 22)), "choices": choices, "label": rng.random_range(0..4)})
        } else {
            let q = sentence(&mut rng, 14);
            let opts: Vec<String> = (0..4).map(|_| sentence(&mut rng, 3)).collect();
            let context = format!("{q}?\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer:", opts[0], opts[1], opts[2], opts[3]);
            serde_json::json!({"context": context, "choices": [" A", " B", " C", " D"], "label": rng.random_range(0..4)})
        };
        lines.push(line.to_string());
    }
    std::fs::write(dir.join("items.jsonl"), lines.join("\n") + "\n")?;
    std::fs::write(dir.join("stream.jsonl"), lines[..stream_items.min(items)].join("\n") + "\n")?;
    Ok(())
}

fn family(dir: &Path) -> Arc<Family> {
    let open = |n: &str| (n.to_string(), Checkpoint::open(&dir.join(n)).expect("bench model"));
    Arc::new(Family::new(open("base"), SIBLINGS.iter().map(|n| open(n)).collect()).expect("family"))
}

fn source(dir: &Path, n: &str) -> SourceModel {
    SourceModel::local(n, dir.join(n))
}

fn recipe(dir: &Path, n_layers: usize, layers: Vec<LayerRule>) -> Recipe {
    let sibs = SIBLINGS.iter().map(|n| source(dir, n)).collect();
    Recipe::new("llama", n_layers, source(dir, "base"), sibs, layers, EdgePolicy::FollowLayers)
}

/// The reference's removal orders: upper half first, middle outward, alternating high/low;
/// the first and last layers are removed last.
fn removal_orders(n: usize) -> Vec<Vec<usize>> {
    let inner: Vec<usize> = (1..n - 1).collect();
    let mut upper: Vec<usize> = inner.iter().rev().copied().collect();
    upper.sort_by_key(|&l| (l < n / 2, std::cmp::Reverse(l)));
    let mid = n / 2;
    let mut middle = inner.clone();
    middle.sort_by_key(|&l| (l as isize - mid as isize).unsigned_abs());
    let mut alternating = Vec::new();
    let (mut lo, mut hi) = (1, n - 2);
    while lo <= hi {
        alternating.push(hi);
        if lo != hi {
            alternating.push(lo);
        }
        lo += 1;
        hi = hi.saturating_sub(1);
    }
    [upper, middle, alternating]
        .into_iter()
        .map(|mut o| {
            o.extend([n - 1, 0]);
            o
        })
        .collect()
}

/// 3 removal patterns x (all-base + lambda x every non-empty sibling subset).
fn warm_start(dir: &Path, n: usize, keep: usize) -> Vec<Recipe> {
    let mut out = Vec::new();
    for order in removal_orders(n) {
        let removed = &order[..n - keep];
        let kept: Vec<usize> = (0..n).filter(|l| !removed.contains(l)).collect();
        let with = |rule: &Rule| kept.iter().map(|&from| LayerRule { from, rule: rule.clone() }).collect();
        out.push(recipe(dir, n, with(&Rule::Take("base".into()))));
        for lambda in [0.3, 0.5, 0.6, 0.7, 0.8, 1.0] {
            for mask in 1..8usize {
                let subset: Vec<String> = (0..3).filter(|j| mask >> j & 1 == 1).map(|j| SIBLINGS[j].to_string()).collect();
                let rule =
                    if subset.len() == 1 { Rule::Take(subset[0].clone()) } else { Rule::Merge(Merge::TaskArithmetic { models: subset, lambda }) };
                out.push(recipe(dir, n, with(&rule)));
            }
        }
    }
    out
}

/// CPU seconds of this process (user + system, all threads) from /proc: wall time on a
/// shared machine depends on the other tenants, CPU time much less.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0
}

fn acc(results: &[TaskResult]) -> f64 {
    match &results[0] {
        TaskResult::MultipleChoice { acc, .. } => *acc,
        TaskResult::Perplexity { .. } => f64::NAN,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = Path::new(&args[1]);
    match args[0].as_str() {
        "gen" => {
            let n = |i: usize| args[i].parse::<usize>().expect("number");
            gen(dir, n(2), n(3), n(4), n(5), n(6)).expect("write bench family");
        }
        "throughput" => {
            let fam = family(dir);
            let n = fam.base.config.num_hidden_layers;
            let tasks = vec![TaskSpec::parse(&format!("mc:items={}", dir.join("items.jsonl").display())).unwrap().load().unwrap()];
            let opts = EvalOptions { prefix_cache_bytes: Some(0), ..EvalOptions::default() };
            let mut ev = Evaluator::new(fam, tasks, opts).unwrap();
            let r = recipe(dir, n, (0..n).map(|from| LayerRule { from, rule: Rule::Take("base".into()) }).collect());
            let t0 = Instant::now();
            let first = ev.evaluate(&r, usize::MAX).unwrap();
            let cold = t0.elapsed().as_secs_f64();
            let (t1, c1) = (Instant::now(), cpu_seconds());
            let second = ev.evaluate(&r, usize::MAX).unwrap();
            let (warm, warm_cpu) = (t1.elapsed().as_secs_f64(), cpu_seconds() - c1);
            assert_eq!(first, second);
            let tokens = ev.planned_tokens(usize::MAX).unwrap();
            println!("{}", serde_json::json!({"tokens": tokens, "cold_s": cold, "warm_s": warm, "warm_cpu_s": warm_cpu, "acc": acc(&first)}));
        }
        "stream" => {
            let fam = family(dir);
            let n = fam.base.config.num_hidden_layers;
            let keep = n - n / 4;
            let stream = warm_start(dir, n, keep);
            let tasks = vec![TaskSpec::parse(&format!("mc:stream={}", dir.join("stream.jsonl").display())).unwrap().load().unwrap()];
            let mut report = serde_json::Map::new();
            let mut scores = Vec::new();
            for (label, prefix_bytes) in [("uncached", 0u64), ("cached", 4 << 30)] {
                let opts = EvalOptions { prefix_cache_bytes: Some(prefix_bytes), ..EvalOptions::default() };
                let mut ev = Evaluator::new(fam.clone(), tasks.clone(), opts).unwrap();
                let (t0, c0) = (Instant::now(), cpu_seconds());
                let s: Vec<f64> = stream.iter().map(|r| acc(&ev.evaluate(r, usize::MAX).unwrap())).collect();
                let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
                let st = ev.stats();
                report.insert(
                    label.into(),
                    serde_json::json!({"seconds": secs, "cpu_seconds": cpu, "saved_fraction": st.saved_fraction(), "stats": st}),
                );
                scores.push(s);
            }
            assert_eq!(scores[0], scores[1], "cached and uncached scores differ");
            report.insert("candidates".into(), stream.len().into());
            report.insert("kept_layers".into(), keep.into());
            println!("{}", serde_json::Value::Object(report));
        }
        other => panic!("unknown mode {other}"),
    }
}
