//! Benchmark of the search optimisers on the synthetic objective (closed-form optimum):
//! best true mean accuracy of the chosen candidate against trials, for Bayesian
//! optimisation, the reference-style warm start, and random search, over several seeds.
//!
//! `cargo run --release --example bench_search -- [--layers 40 --keep 30 --siblings 3 --tasks 2 --trials 200 --seeds 5]`

use hf_tailor::search::report::{plot_svg, Curve};
use hf_tailor::search::space::tests_support::template;
use hf_tailor::search::synthetic::SyntheticScorer;
use hf_tailor::search::{header, run_search, Journal, OptimizerConfig, OptimizerKind, SearchSpace, SpaceOptions};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (layers, keep, siblings, tasks) = (arg(&args, "--layers", 40), arg(&args, "--keep", 30), arg(&args, "--siblings", 3), arg(&args, "--tasks", 2));
    let (trials, seeds) = (arg(&args, "--trials", 200), arg(&args, "--seeds", 5));
    let svg = args.iter().position(|a| a == "--svg").and_then(|i| args.get(i + 1)).cloned();
    let space = SearchSpace::new(template(layers, siblings), keep, SpaceOptions::default()).expect("space");
    let checkpoints: Vec<usize> = [25, 50, 100, 150, 200, 300, 500].into_iter().filter(|&t| t <= trials).collect();
    let dir = std::env::temp_dir().join(format!("hft-bench-search-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    println!("synthetic family: {layers} layers, keep {keep}, {siblings} siblings, {tasks} tasks, {trials} trials, {seeds} seeds");
    println!("regret = optimum − true mean accuracy of the chosen candidate (percentage points), mean over seeds");
    print!("{:<10}", "trials");
    for c in &checkpoints {
        print!("{c:>9}");
    }
    println!("{:>12}", "s/search");
    let mut curves = Vec::new();
    for kind in [OptimizerKind::Bo, OptimizerKind::Warmstart, OptimizerKind::Random] {
        let mut regret = vec![0.0; trials];
        let mut secs = 0.0;
        for seed in 0..seeds as u64 {
            let mut scorer = SyntheticScorer::new(&space, tasks, 1000, 100 + seed);
            let (_, best) = scorer.optimum();
            let mut cfg = OptimizerConfig::new(kind, seed);
            if args.iter().any(|a| a == "--single-fidelity") {
                cfg.budgets = vec![1000];
            }
            if args.iter().any(|a| a == "--parego") {
                cfg.scalarization = hf_tailor::search::Scalarization::Parego { rho: 0.05 };
            }
            let path = dir.join(format!("{}-{seed}.jsonl", kind.name()));
            let _ = std::fs::remove_file(&path);
            let mut journal = Journal::create(&path, header(&space, &cfg, scorer_tasks(tasks))).expect("journal");
            let t0 = std::time::Instant::now();
            let out = run_search(&space, &mut journal, trials, &mut scorer, |_| {}).expect("search");
            secs += t0.elapsed().as_secs_f64();
            // True value of the choice after each trial (exact at the full budget).
            for n in 1..=trials {
                let pick = hf_tailor::search::select::choose(&out.trials[..n]).expect("a trial");
                let t = &out.trials[pick];
                let exact = scorer.exact_mean(&space.from_recipe(&t.recipe).expect("in space"));
                regret[n - 1] += (best - exact) / seeds as f64;
            }
        }
        print!("{:<10}", kind.name());
        for c in &checkpoints {
            print!("{:>9.2}", 100.0 * regret[c - 1]);
        }
        println!("{:>12.2}", secs / seeds as f64);
        curves.push(Curve { label: kind.name().into(), points: regret.iter().map(|r| Some(1.0 - r)).collect() });
    }
    if let Some(p) = svg {
        std::fs::write(&p, plot_svg("1 − regret of the chosen candidate (synthetic)", &curves, &[])).expect("write svg");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn scorer_tasks(n: usize) -> Vec<String> {
    (0..n).map(|t| format!("task{t}")).collect()
}
