//! hf-tailor's side of `scripts/bench-trial.sh`: the cost of one search trial on a real
//! model family, in-memory evaluator, release build.
//!
//! `bench_trial FAMILY_DIR TASK.jsonl OUT_DIR KEEP TRIALS SEARCH_TRIALS SEED`
//!
//! FAMILY_DIR holds `base` and `sib0`, `sib1`, … (transformers checkpoints). Prints one JSON
//! object: `trials` = independent random candidates of the search space at KEEP layers,
//! each scored on all items by one evaluator without prefix cache (seconds, CPU seconds,
//! tokens, acc); `search` = a SEARCH_TRIALS-trial search (Bayesian optimisation, Hyperband over
//! budgets ITEMS/3 and ITEMS) with the default prefix cache (seconds, layer-forwards run
//! and saved, prefix cache hits). The first candidates' recipes go to OUT_DIR/cand-N.json
//! for the reference script, which must reach the same accuracy on them.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use hf_tailor::checkpoint::{Checkpoint, Family};
use hf_tailor::eval::{EvalOptions, Evaluator, PackChoices, TaskResult, TaskSpec};
use hf_tailor::recipe::{EdgePolicy, SourceModel};
use hf_tailor::search::{header, run_search, Journal, OptimizerConfig, OptimizerKind, RecipeTemplate, SearchSpace, SpaceOptions};
use rand::SeedableRng;

/// CPU seconds of this process so far (all threads; less sensitive than wall time to other
/// load on a shared machine).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    f.iter().sum::<f64>() / 100.0
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    assert!(a.len() == 8, "usage: bench_trial FAMILY_DIR TASK.jsonl OUT_DIR KEEP TRIALS SEARCH_TRIALS SEED");
    let (fam_dir, task_path, out) = (Path::new(&a[1]), &a[2], Path::new(&a[3]));
    let num = |i: usize| a[i].parse::<usize>().expect("a number");
    let (keep, trials, search_trials, seed) = (num(4), num(5), num(6), num(7) as u64);
    std::fs::create_dir_all(out).expect("out dir");

    let source = |name: &str| SourceModel::local(name, fam_dir.join(name));
    let mut sib_names = Vec::new();
    while fam_dir.join(format!("sib{}", sib_names.len())).join("config.json").exists() {
        sib_names.push(format!("sib{}", sib_names.len()));
    }
    let open = |n: &str| (n.to_string(), Checkpoint::open(&fam_dir.join(n)).expect("checkpoint"));
    let family = Arc::new(Family::new(open("base"), sib_names.iter().map(|n| open(n)).collect()).expect("family"));
    let task = TaskSpec::parse(&format!("mc:bench={task_path}")).expect("spec").load().expect("task");
    let items = match &task.data {
        hf_tailor::eval::TaskData::MultipleChoice(items) => items.len(),
        _ => panic!("a multiple-choice task"),
    };
    let template = RecipeTemplate::for_family(&family, source("base"), sib_names.iter().map(|n| source(n)).collect(), EdgePolicy::FollowLayers);
    let space = SearchSpace::new(template, keep, SpaceOptions::default()).expect("space");

    // Independent trials: what one trial costs when nothing is shared with earlier ones.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut rows = Vec::new();
    let pack = match std::env::var("PACK").as_deref() {
        Ok("never") => PackChoices::Never,
        Ok("always") => PackChoices::Always,
        _ => PackChoices::WhenCheaper,
    };
    // One evaluator, as in a search (its weight cache persists; random candidates rarely
    // repeat a layer's rule), without prefix cache: nothing shared between trials.
    // Cache bounds (MiB) from the environment: a shared machine has less memory than the defaults assume.
    let mib = |var: &str, default: u64| std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(default) << 20;
    let (weight_cache_bytes, prefix_cache_bytes) = (Some(mib("WEIGHT_MB", 8192)), Some(mib("PREFIX_MB", 4096)));
    let opts = EvalOptions { prefix_cache_bytes: Some(0), weight_cache_bytes, pack_choices: pack, ..EvalOptions::default() };
    let mut ev = Evaluator::new(family.clone(), vec![task.clone()], opts).expect("evaluator");
    for i in 0..trials {
        let recipe = space.to_recipe(&space.sample(&mut rng));
        let (start, cpu, tokens) = (Instant::now(), cpu_seconds(), ev.stats().tokens);
        let res = ev.evaluate(&recipe, items).expect("evaluate");
        let seconds = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu;
        let acc = match &res[0] {
            TaskResult::MultipleChoice { acc, .. } => *acc,
            _ => unreachable!(),
        };
        std::fs::write(out.join(format!("cand-{i}.json")), serde_json::to_string_pretty(&recipe).expect("json")).expect("write recipe");
        let tokens = ev.stats().tokens - tokens;
        rows.push(serde_json::json!({"seconds": seconds, "cpu_seconds": cpu, "tokens": tokens, "acc": acc, "merges": recipe.merge_count()}));
    }

    // A whole search: BO with Hyperband over ITEMS/3 and ITEMS, prefix cache on.
    let mut cfg = OptimizerConfig::new(OptimizerKind::Bo, seed);
    cfg.budgets = vec![items.div_ceil(3), items];
    let journal_path = out.join("journal.jsonl");
    let _ = std::fs::remove_file(&journal_path);
    let mut ev = Evaluator::new(
        family.clone(),
        vec![task.clone()],
        EvalOptions { pack_choices: pack, weight_cache_bytes, prefix_cache_bytes, ..EvalOptions::default() },
    )
    .expect("evaluator");
    let mut journal = Journal::create(&journal_path, header(&space, &cfg, vec!["bench".into()])).expect("journal");
    let (start, cpu) = (Instant::now(), cpu_seconds());
    let outcome = run_search(&space, &mut journal, search_trials, &mut ev, |_| {}).expect("search");
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let work = outcome.layer_work().unwrap_or_default();
    let st = ev.stats();
    let item_evals: usize = outcome.trials.iter().map(|t| t.budget).sum();
    println!(
        "{}",
        serde_json::json!({
            "items": items,
            "keep": keep,
            "source_layers": space.source_layers(),
            "siblings": sib_names.len(),
            "trials": rows,
            "search": {
                "trials": outcome.trials.len(),
                "budgets": cfg.budgets,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "full_budget_equivalents": item_evals as f64 / items as f64,
                "layer_forwards_run": work.run,
                "layer_forwards_saved": work.saved,
                "saved_fraction": work.saved_fraction(),
                "tokens": st.tokens,
                "prefix": st.prefix,
                "weights": st.weights,
            },
        })
    );
}
