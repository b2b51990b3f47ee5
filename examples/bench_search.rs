//! Benchmark of the search optimisers on the synthetic objective (closed-form optimum):
//! best true mean accuracy of the chosen candidate against trials, for Bayesian
//! optimisation, the reference-style warm start, and random search, over several seeds.
//!
//! `bench_search synthetic [--layers 40 --keep 30 --siblings 3 --tasks 2 --trials 300 --seeds 5 --parego --single-fidelity --svg FILE]`
//! `bench_search family [--trials 150 --seeds 5]`: the same optimisers on the tiny identity
//! family of `hf_tailor::testkit::identity_family`, scored by the in-memory evaluator.
//! Run through `scripts/bench-search.sh`.

use hf_tailor::search::{header, run_search, Journal, OptimizerConfig, OptimizerKind, SearchSpace, SpaceOptions};
use hf_tailor::testkit::synthetic::SyntheticScorer;
use hf_tailor::testkit::template;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map_or(default, |v| v.parse().expect("a number"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("family") {
        return family(&args);
    }
    let (layers, keep, siblings, tasks) =
        (arg(&args, "--layers", 40), arg(&args, "--keep", 30), arg(&args, "--siblings", 3), arg(&args, "--tasks", 2));
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
        curves.push((kind.name().to_string(), regret.iter().map(|r| 1.0 - r).collect::<Vec<f64>>()));
    }
    if let Some(p) = svg {
        std::fs::write(&p, hf_tailor::plot::lines_svg("Synthetic objective: the chosen candidate after each trial", "1 − regret (%)", &curves))
            .expect("write svg");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn scorer_tasks(n: usize) -> Vec<String> {
    (0..n).map(|t| format!("task{t}")).collect()
}

/// The optimisers on a real tiny family with a known optimum (100 % on both tasks).
fn family(args: &[String]) {
    use hf_tailor::recipe::EdgePolicy;
    use hf_tailor::search::RecipeTemplate;
    use hf_tailor::testkit::identity_family::IdentityFamily;
    use std::sync::Arc;
    let (trials, seeds) = (arg(args, "--trials", 150), arg(args, "--seeds", 5));
    let dir = std::env::temp_dir().join(format!("hft-bench-family-{}", std::process::id()));
    let fam = IdentityFamily::write(&dir).expect("write family");
    let family = Arc::new(fam.open().expect("open family"));
    let tasks = fam.tasks(family.clone(), 24).expect("tasks");
    let template = RecipeTemplate::for_family(&family, fam.base.clone(), fam.siblings.clone(), EdgePolicy::FollowLayers);
    let space = SearchSpace::new(template, 4, SpaceOptions::default()).expect("space");
    let checkpoints: Vec<usize> = [10, 25, 50, 100, 150, 300].into_iter().filter(|&t| t <= trials).collect();
    println!("identity family: 6 layers, keep 4, 2 siblings, 2 tasks of 24 items, budgets 8/24, {trials} trials, {seeds} seeds");
    println!("best mean accuracy (%) at the full budget after N trials, mean over seeds; optimum 100");
    print!("{:<10}", "trials");
    for c in &checkpoints {
        print!("{c:>8}");
    }
    println!("{:>14}{:>12}", "reached 100%", "s/search");
    for kind in [OptimizerKind::Bo, OptimizerKind::Warmstart, OptimizerKind::Random] {
        let mut best = vec![0.0; trials];
        let (mut reached, mut hits, mut secs) = (0.0, 0, 0.0);
        for seed in 0..seeds as u64 {
            let mut ev = hf_tailor::eval::Evaluator::new(family.clone(), tasks.clone(), Default::default()).expect("evaluator");
            let mut cfg = OptimizerConfig::new(kind, seed);
            cfg.budgets = if args.iter().any(|a| a == "--single-fidelity") { vec![24] } else { vec![8, 24] };
            let path = dir.join(format!("{}-{seed}.jsonl", kind.name()));
            let mut journal = Journal::create(&path, header(&space, &cfg, hf_tailor::score::Scorer::task_names(&ev))).expect("journal");
            let t0 = std::time::Instant::now();
            let out = run_search(&space, &mut journal, trials, &mut ev, |_| {}).expect("search");
            secs += t0.elapsed().as_secs_f64();
            let mut so_far: f64 = 0.0;
            for (i, t) in out.trials.iter().enumerate() {
                if t.budget == 24 {
                    so_far = so_far.max(t.mean);
                }
                best[i] += so_far / seeds as f64;
            }
            if let Some(i) = out.trials.iter().position(|t| t.budget == 24 && t.mean == 1.0) {
                reached += (i + 1) as f64;
                hits += 1;
            }
        }
        print!("{:<10}", kind.name());
        for c in &checkpoints {
            print!("{:>8.1}", 100.0 * best[c - 1]);
        }
        let r = if hits > 0 { format!("{:.0} ({hits}/{seeds})", reached / hits as f64) } else { format!("never (0/{seeds})") };
        println!("{r:>14}{:>12.2}", secs / seeds as f64);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
