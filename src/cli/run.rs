//! `hf-tailor` with no subcommand: the whole pipeline.

use std::path::PathBuf;

use anyhow::Context;
use hf_tailor::eval::{Task, TaskSpec};
use hf_tailor::hub::{self, HubConfig, ModelSource, PushOptions};
use hf_tailor::pipeline::{self, JobOptions, JobOutcome, Progress, SearchRequest};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::usage;

/// The root command's flags (the whole job).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base model: Hub id (optionally @revision) or local folder.
    #[arg(long, value_name = "ID", help_heading = super::H_MODELS)]
    pub base: Option<String>,
    /// File listing the fine-tuned siblings, one Hub id (optionally @revision) or folder a
    /// line; or the siblings themselves, comma-separated.
    #[arg(long, value_name = "FILE", help_heading = super::H_MODELS)]
    pub finetunes: Option<String>,
    /// Push the tailored model to this Hub repo (user/name); without it the model stays in --out.
    #[arg(long, value_name = "REPO", help_heading = super::H_OUTPUT)]
    pub push: Option<String>,
    // How deep (default: remove a quarter of the layers); a range builds the picked point.
    #[command(flatten, next_help_heading = super::H_DEPTH)]
    pub depth: super::search::DepthArgs,
    #[command(flatten, next_help_heading = super::H_DEPTH)]
    pub pick: super::search::PickArgs,
    /// Calibration tasks, comma-separated: built-in names (mmlu, wsc) or JSONL files.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "mmlu,wsc", help_heading = super::H_TASKS)]
    pub tasks: Vec<String>,
    /// Search budget in trials (the reference uses 500).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = super::positive(), help_heading = super::H_OPTIMISER)]
    pub trials: usize,
    /// Seed of the search (same seed and inputs give the same result).
    #[arg(long, default_value_t = 0, help_heading = super::H_OPTIMISER)]
    pub seed: u64,
    /// What the search optimises: acc, loglik, margin, ppl, or GUIDE+acc (default ppl with
    /// calibration texts among the tasks, else loglik; see `hf-tailor search --help`).
    #[arg(long, value_parser = super::search::parse_objective, help_heading = super::H_TASKS)]
    pub objective: Option<hf_tailor::search::Objective>,
    /// Fraction of each calibration task held out to choose the final candidate (0 = off; default 1/3).
    #[arg(long, value_name = "F", help_heading = super::H_TASKS)]
    pub selection_split: Option<f64>,
    /// Selection tasks of their own, a validation set (names or files, as --tasks): the
    /// final candidate is chosen on all their items, and the search uses every calibration
    /// item (no --selection-split).
    #[arg(long, value_name = "LIST", value_delimiter = ',', help_heading = super::H_TASKS)]
    pub selection_tasks: Vec<String>,
    // Where and how candidates are scored (one device: cpu, cuda or cuda:N).
    #[command(flatten, next_help_heading = super::H_ENGINE)]
    pub engine: super::EngineArgs,
    /// Working folder: source list, search journal, recipe, report and the tailored model.
    #[arg(long, value_name = "DIR", default_value = "tailored", help_heading = super::H_OUTPUT)]
    pub out: PathBuf,
    /// Continue the search journal in --out after an interruption.
    #[arg(long, help_heading = super::H_OUTPUT)]
    pub resume: bool,
    /// Write into an --out folder that holds other files, replacing its model folder.
    #[arg(long, help_heading = super::H_OUTPUT)]
    pub force: bool,
    /// Create the pushed repo as private.
    #[arg(long, requires = "push", help_heading = super::H_OUTPUT)]
    pub private: bool,
    /// Also write GGUF files of these types beside the checkpoint (f16, q8_0, bf16, f32;
    /// comma-separated); the card links them and --push uploads them.
    #[arg(long, value_name = "TYPES", value_parser = super::gguf::parse_types, help_heading = super::H_OUTPUT)]
    pub gguf: Option<super::gguf::TypeList>,
    #[command(flatten, next_help_heading = super::H_MODELS)]
    pub tokenizer: super::build::TokenizerArgs,
    #[command(flatten)]
    pub heal: super::heal::HealArgs,
    /// Print what would be downloaded, the parameter count before/after and the memory needed; change nothing.
    #[arg(long, help_heading = super::H_OUTPUT)]
    pub dry_run: bool,
    /// Print machine-readable JSON on stdout instead of tables.
    #[arg(long, help_heading = super::H_OUTPUT)]
    pub json: bool,
}

impl Args {
    /// The search asked for (checked: nothing is downloaded for a request that cannot run).
    fn request(&self) -> anyhow::Result<SearchRequest> {
        let request = SearchRequest {
            pick: self.pick.chosen(),
            trials: self.trials,
            seed: self.seed,
            objective: self.objective,
            selection_split: self.selection_split,
            // The entries for the checks made before the pull; the loaded tasks' names replace them.
            selection_tasks: self.selection_tasks.clone(),
            resume: self.resume,
            heal: self.heal.request()?,
            ..SearchRequest::new(self.depth.depths().unwrap_or_default())
        };
        request.check()?;
        Ok(request)
    }

    /// The root command's own checks (the search's are [`SearchRequest::check`]'s); each
    /// failure is a one-line usage error (exit 2).
    fn validate(&self) -> anyhow::Result<(&str, &String)> {
        let Some(base) = self.base.as_deref() else {
            usage!("missing --base: give the base model's Hub id or folder (or run a subcommand, e.g. `hf-tailor demo`; see --help)")
        };
        let Some(finetunes) = self.finetunes.as_ref() else {
            usage!("missing --finetunes: give a file listing the fine-tuned siblings, one Hub id or folder a line")
        };
        if self.tasks.iter().any(|t| t.trim().is_empty()) {
            usage!("--tasks has an empty entry: give names or files separated by commas")
        }
        if self.selection_tasks.iter().any(|t| t.trim().is_empty()) {
            usage!("--selection-tasks has an empty entry: give names or files separated by commas")
        }
        if let Some(repo) = &self.push {
            let parts: Vec<&str> = repo.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                usage!("--push wants a Hub repo id `user/name`, got `{repo}`")
            }
        }
        Ok((base, finetunes))
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (base, finetunes) = args.validate()?;
    let request = args.request()?;
    let device = args.engine.device.single()?;
    let cfg = HubConfig::from_env();
    let base_ref = ModelSource::parse(base)?;
    let finetune_refs = hub::parse_finetunes_arg(std::slice::from_ref(finetunes))?;
    if finetune_refs.is_empty() {
        usage!("{finetunes} lists no fine-tune: tailoring needs at least one sibling of the base")
    }
    // The output folder against every source, before anything is pulled (--force or not).
    let sources: Vec<ModelSource> = std::iter::once(base_ref.clone()).chain(finetune_refs.iter().cloned()).collect();
    pipeline::out_folder::check_apart(&args.out, &sources, &cfg)?;
    if args.dry_run {
        let mb = |m: Option<u64>| m.map(|m| m << 20);
        let e = &args.engine;
        let requested = hf_tailor::eval::budget::Requested {
            merged_layers: mb(e.weight_cache_mb),
            prefix_cache: mb(e.prefix_cache_mb),
            activations: mb(e.state_mb),
            sources: mb(e.sources_mb),
        };
        let plan = pipeline::plan::plan_job(&cfg, &base_ref, &finetune_refs, request.depths.deepest(), device, requested)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", plan.render());
        }
        return Ok(());
    }
    if let Some(repo) = &args.push {
        // Fail before hours of search, not after: id syntax, token, endpoint, write access.
        hub::push::preflight(&cfg, repo, args.private)?;
    }

    // One job per folder, from before the first check of its contents to the end.
    let _lock = super::lock_out(&args.out)?;
    pipeline::out_folder::check_resume(&args.out.join(pipeline::tailor::JOURNAL_FILE), args.resume)?;
    if !args.force {
        // Files that are not ours are refused now, not after the pull (the models are
        // compared once they are pinned).
        pipeline::check_out_folder(&args.out, None, false)?;
    }
    let mut progress = StderrProgress::new(args.json);
    progress.stage("pulling the base and its fine-tunes");
    let family = hub::pull_family(&cfg, &base_ref, &finetune_refs)?;
    progress.stage(&format!("loading the calibration tasks: {}", args.tasks.join(", ")));
    let tasks = load_tasks(&cfg, &args.tasks)?;
    let selection_tasks = load_tasks(&cfg, &args.selection_tasks)?;

    let title = args.push.clone().unwrap_or_else(|| folder_name(&args.out));
    let mut opts = JobOptions::new(args.out.clone(), &title, request);
    opts.engine = args.engine.options();
    opts.force = args.force;
    opts.repo_id = args.push.clone();
    opts.gguf = args.gguf.as_ref().map(|t| t.0.clone()).unwrap_or_default();
    opts.tokenizer_source = args.tokenizer.source.clone();
    opts.chat_template = args.tokenizer.chat_template.clone();
    opts.search.selection_tasks = selection_tasks.iter().map(|t| t.name.clone()).collect();
    opts.selection_tasks = selection_tasks;
    let outcome = pipeline::tailor(&family, tasks.clone(), tasks, &opts, &mut progress)?;
    progress.finish();

    let pushed = match &args.push {
        Some(repo) => {
            eprintln!("hf-tailor: pushing {} to {repo}", outcome.model_dir.display());
            let push_opts = PushOptions { private: args.private, ..PushOptions::default() };
            Some(hub::push_folder(&cfg, &outcome.model_dir, repo, &push_opts)?)
        }
        None => None,
    };
    print_outcome(&outcome, args.json)?;
    if let Some(p) = pushed {
        if !args.json {
            println!("pushed to {}", p.url);
        }
    }
    Ok(())
}

/// Built-in calibration task names and the Hub datasets they come from (the reference's
/// MMLU validation split and SuperGLUE WSC train split); anything else is a local file
/// spec as `hf-tailor eval --tasks` reads it.
const BUILTIN_TASKS: &[(&str, &str, &str)] = &[("mmlu", "cais/mmlu", "all/validation-*"), ("wsc", "aps/super_glue", "wsc.fixed/train-*")];

fn load_tasks(cfg: &HubConfig, names: &[String]) -> anyhow::Result<Vec<Task>> {
    let mut tasks = Vec::new();
    for name in names {
        let spec = match BUILTIN_TASKS.iter().find(|(n, _, _)| n == name) {
            Some((n, repo, pattern)) => {
                let files = hub::pull_dataset(cfg, repo, None, &[pattern])?;
                let dir =
                    files.first().and_then(|f| f.parent()).with_context(|| format!("dataset {repo} has no file matching {pattern}"))?.to_path_buf();
                TaskSpec::parse(&format!("{n}={}", dir.display()))?
            }
            None => TaskSpec::parse(name)?,
        };
        tasks.push(spec.load()?);
    }
    Ok(tasks)
}

fn folder_name(p: &std::path::Path) -> String {
    p.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "tailored".into())
}

/// Stage lines and a trial progress bar on stderr (nothing but errors with --json).
pub struct StderrProgress {
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl StderrProgress {
    pub fn new(quiet: bool) -> Self {
        Self { quiet, bar: None }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Progress for StderrProgress {
    fn stage(&mut self, message: &str) {
        self.finish();
        if !self.quiet {
            eprintln!("hf-tailor: {message}");
        }
    }

    fn trial(&mut self, done: usize, total: usize, best: Option<f64>) {
        super::test_hooks::pause_after_trial(done);
        if self.quiet {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template("  trials {bar:30} {pos}/{len} {per_sec} best {msg} eta {eta}").expect("valid template"));
            bar
        });
        bar.set_position(done as u64);
        bar.set_message(best.map_or("-".into(), |b| format!("{:.1}%", 100.0 * b)));
    }
}

/// The results table and where everything was written (or the outcome as JSON).
pub fn print_outcome(outcome: &JobOutcome, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(outcome)?);
        return Ok(());
    }
    for w in &outcome.warnings {
        eprintln!("hf-tailor: warning: {w}");
    }
    println!("\nAccuracy (%) ± one standard error on {}, at most {} items per task:\n", outcome.report_note, outcome.report_items);
    print!("{}", pipeline::results_table(&outcome.rows, &outcome.report_tasks));
    let cmp = hf_tailor::score::comparisons(&outcome.rows);
    if !cmp.is_empty() {
        println!();
        for c in cmp {
            println!("{c}");
        }
    }
    if !outcome.front.is_empty() {
        println!("\nFront: the best candidate at every depth and the baselines at each depth, on the same items:\n");
        print!("{}", hf_tailor::search::front::markdown(&outcome.front));
        println!();
        for c in hf_tailor::search::front::comparisons(&outcome.front) {
            println!("{c}");
        }
        println!("every point's recipe: {}", outcome.out.join(hf_tailor::search::front::FRONT_DIR).display());
    }
    let t = outcome.tailored();
    println!(
        "\ntailored: {} of {} layers ({} removed, {} merged), recipe {}",
        outcome.recipe.layers.len(),
        outcome.recipe.source_layers,
        outcome.recipe.removed_layers().len(),
        outcome.recipe.merge_count(),
        outcome.recipe_path.display()
    );
    println!("checkpoint, card and lineage picture: {}", outcome.model_dir.display());
    println!(
        "verified: the written checkpoint scores {:.1}% on average (in memory: {:.1}%)",
        100.0 * hf_tailor::score::mean_score(&outcome.verified),
        100.0 * t.mean()
    );
    Ok(())
}
