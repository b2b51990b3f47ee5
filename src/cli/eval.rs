//! `hf-tailor eval`: score a model folder or a recipe on calibration tasks, in memory.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hf_tailor::checkpoint::Family;
use hf_tailor::eval::{samples, Evaluator, TaskResult, TaskSpec};
use hf_tailor::recipe::{Recipe, SourceModel};
use hf_tailor::source::ModelSource;

#[derive(clap::Args, Debug)]
#[command(after_help = "Task specs: KIND[:NAME]=PATH with KIND mc (JSONL/parquet rows {context, choices, label}), \
ppl (rows {text}), mmlu (cais/mmlu parquet file or folder), wsc (SuperGLUE wsc.fixed parquet); or a bare JSONL path.\n\n\
Examples:\n  hf-tailor eval --model ./tailored --tasks mmlu=data/mmlu,wsc=data/wsc.parquet --budget 100\n  \
hf-tailor eval --recipe tailor.yaml --tasks tasks/arith.jsonl --json\n  \
hf-tailor eval --recipe tailor.yaml --tasks mc=heldout.jsonl,ppl=texts.jsonl --samples samples.jsonl")]
pub struct Args {
    /// A model to score as it is: a folder (config.json + safetensors) or a Hub id
    /// (`owner/name[@revision]`, from the cache or downloaded unless offline).
    #[arg(long, conflicts_with = "recipe", required_unless_present = "recipe")]
    pub model: Option<String>,
    /// A tailoring recipe: its sources are opened and the candidate is built in memory.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Comma-separated task specs (see below).
    #[arg(long, required = true)]
    pub tasks: String,
    /// Score only the first N items of each task (per subject for MMLU).
    #[arg(long)]
    pub budget: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write every item's and text's own score to FILE, one JSON object per line
    /// (lm-eval's `--log_samples`): `{"kind":"mc","task","doc","label","loglik":[per
    /// choice],"acc","acc_norm"}` or `{"kind":"ppl","task","doc","loglik","tokens"}`, for
    /// paired comparisons of two models on the same items.
    #[arg(long, value_name = "FILE")]
    pub samples: Option<PathBuf>,
    /// Replace an existing --samples file.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub engine: super::EngineArgs,
}

/// The identity recipe of a single model folder.
fn identity(source: &SourceModel) -> anyhow::Result<(Family, Recipe)> {
    let family = Family::open(source, &[], super::sources::locate)?;
    let c = &family.base.config;
    let recipe = Recipe::whole_model(&source.name, c.arch.model_type, c.num_hidden_layers, source.clone(), vec![]);
    Ok((family, recipe))
}

/// Before any scoring: the samples file must not replace a file without --force, nor a folder.
fn check_samples_path(path: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if path.is_dir() {
        super::usage!("--samples {} is a folder; give a file path", path.display());
    }
    if path.exists() && !force {
        super::usage!("--samples {} exists; pass --force to replace it", path.display());
    }
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => super::usage!("--samples {}: folder {} does not exist", path.display(), dir.display()),
        _ => Ok(()),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let specs = TaskSpec::parse_list(&args.tasks)?;
    if specs.is_empty() {
        super::usage!("--tasks names no task");
    }
    if let Some(path) = &args.samples {
        check_samples_path(path, args.force)?;
    }
    let tasks = specs.iter().map(|s| s.load()).collect::<Result<Vec<_>, _>>()?;
    let all = tasks.clone();
    let (family, recipe) = match (&args.model, &args.recipe) {
        (Some(model), _) => identity(&SourceModel::new("model", ModelSource::parse(model)?))?,
        (None, Some(path)) => {
            let recipe = super::sources::load_recipe(path)?;
            (super::sources::open_family(&recipe)?, recipe)
        }
        (None, None) => super::usage!("give --model DIR or --recipe FILE"),
    };
    for w in &family.info.warnings {
        eprintln!("hf-tailor: warning: {w}");
    }
    args.engine.device.single()?;
    let options = args.engine.options();
    let mut ev = Evaluator::new(Arc::new(family), tasks, options)?;
    let started = std::time::Instant::now();
    let (results, samples) = ev.evaluate_with_samples(&recipe, args.budget.unwrap_or(usize::MAX)).context("scoring failed")?;
    let secs = started.elapsed().as_secs_f64();
    if let Some(path) = &args.samples {
        hf_tailor::fsutil::write_atomic(path, samples::to_jsonl(&samples).as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        // lm-evaluation-harness's shape at the top level; hf-tailor's own rows (perplexity
        // tasks too) under `hf_tailor`.
        let mut out = hf_tailor::eval::harness::from_task_results(&results, &all);
        out["hf_tailor"] = serde_json::json!({"tasks": results, "seconds": secs, "tokens": ev.stats().tokens});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{:<24} {:>8} {:>9} {:>8}", "task", "acc", "acc_norm", "items");
    for r in &results {
        match r {
            TaskResult::MultipleChoice { task, acc, acc_stderr, acc_norm, items, .. } => {
                println!("{task:<24} {acc:>8.4} {acc_norm:>9.4} {items:>8}   (acc ± {acc_stderr:.4} s.e.)")
            }
            TaskResult::Perplexity { task, perplexity, tokens } => println!("{task:<24} perplexity {perplexity:.4} over {tokens} tokens"),
        }
    }
    for t in &all {
        eprintln!("{}: {}", t.name, t.about.title);
    }
    eprintln!("scored {} tokens in {secs:.1}s", ev.stats().tokens);
    Ok(())
}
