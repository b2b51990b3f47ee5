//! `hf-tailor search` and `hf-tailor baselines`: parse arguments, open the family and the
//! evaluator, run `hf_tailor::search::job`, show progress, print the table.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hf_tailor::checkpoint::Family;
use hf_tailor::eval::{Evaluator, TaskData, TaskSpec};
use hf_tailor::hub::{self, SourceList};
use hf_tailor::merge::Method;
use hf_tailor::pipeline::request::{self, Depths, SearchRequest};
use hf_tailor::recipe::{EdgePolicy, Recipe, SourceModel};
use hf_tailor::search::baselines::BaselineKind;
use hf_tailor::search::job::{self, JobObserver, JobSpec};
use hf_tailor::search::report::SearchReport;
use hf_tailor::search::{Objective, OptimizerKind, Scalarization, SearchSpace, SpaceOptions, TrialEvent, Worker};
use hf_tailor::source::ModelSource;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Which models: a source list from `hf-tailor pull`, or folders / Hub ids.
#[derive(clap::Args, Debug)]
pub struct FamilyArgs {
    /// Source list written by `hf-tailor pull`.
    #[arg(long, conflicts_with_all = ["base", "finetunes"], required_unless_present = "base", help_heading = super::H_MODELS)]
    pub sources: Option<PathBuf>,
    /// Base model: a local folder or a Hub id (`owner/name[@revision]`).
    #[arg(long, help_heading = super::H_MODELS)]
    pub base: Option<String>,
    /// Fine-tuned siblings: a fine-tunes list file (one a line, as the root command takes),
    /// or comma-separated folders / Hub ids (Hub models are downloaded unless offline).
    #[arg(long, help_heading = super::H_MODELS)]
    pub finetunes: Vec<String>,
}

/// How deep the result is: one of these (the root command's default: --remove-ratio 0.25).
#[derive(clap::Args, Debug, Clone, Default)]
#[group(multiple = false)]
pub struct DepthArgs {
    /// Layers to keep, or a range `A..B` (both included) for a size–quality front from one
    /// search: every depth's best candidate is written as front/keep-K.yaml and the picked
    /// one (--pick) is used (not `baselines`).
    #[arg(long, value_name = "K", value_parser = parse_layer_range, help_heading = super::H_DEPTH)]
    pub keep_layers: Option<(usize, usize)>,
    /// Fraction of the layers to remove (0.25 = a quarter: the whole job's default when no
    /// depth is given), or a range `A..B` of fractions for a front.
    #[arg(long, value_name = "R", value_parser = parse_ratio_range, help_heading = super::H_DEPTH)]
    pub remove_ratio: Option<(f64, f64)>,
    /// Keep as many layers as fit in this many parameters.
    #[arg(long, value_name = "N", help_heading = super::H_DEPTH)]
    pub max_params: Option<u64>,
}

impl DepthArgs {
    /// The depths given (None: no depth flag).
    pub fn depths(&self) -> Option<Depths> {
        Depths::from_flags(self.keep_layers, self.remove_ratio, self.max_params)
    }

    /// The depths of a command that needs one.
    fn required(&self) -> anyhow::Result<Depths> {
        match self.depths() {
            Some(d) => Ok(d),
            None => super::usage!("give the depth: --keep-layers K, --remove-ratio R or --max-params N"),
        }
    }
}

/// Tasks and the evaluator.
#[derive(clap::Args, Debug)]
pub struct ScoringArgs {
    /// Calibration tasks, comma-separated `KIND[:NAME]=PATH` (mc, mmlu, wsc; ppl texts feed the baselines).
    #[arg(long, required = true, help_heading = super::H_TASKS)]
    pub tasks: String,
    /// Calibration texts for the baselines (`ppl=FILE`); default: the `ppl` tasks of --tasks.
    #[arg(long, help_heading = super::H_TASKS)]
    pub calibration: Option<String>,
    #[command(flatten, next_help_heading = super::H_ENGINE)]
    pub engine: super::EngineArgs,
    /// Where embeddings and lm_head come from: follow-layers (first/last kept layer, as the reference) or base.
    #[arg(long, default_value = "follow-layers", value_parser = parse_edges, help_heading = super::H_MODELS)]
    pub edges: EdgePolicy,
}

/// What `search` and `baselines` both take: the models, the depth, the tasks and the evaluator.
#[derive(clap::Args, Debug)]
pub struct SearchInputs {
    #[command(flatten)]
    pub family: FamilyArgs,
    #[command(flatten)]
    pub depth: DepthArgs,
    #[command(flatten)]
    pub scoring: ScoringArgs,
}

/// `search --help`'s closing text: how the result is chosen, and examples short enough to
/// paste (one argument per line, shell continuations).
const SEARCH_AFTER_HELP: &str = "\
The tailored model is chosen among the top candidates at the highest budget by their score
on a selection split held out from the calibration items (--selection-split); a simpler
finalist within two standard errors of the best wins. `search` writes the recipe
(tailor.yaml) and its report; `hf-tailor build` writes the checkpoint.

Examples:
  hf-tailor search --sources work/sources.yaml \\
    --remove-ratio 0.25 \\
    --tasks mmlu=data/mmlu,wsc=data/wsc.parquet \\
    --out search-out

  hf-tailor search --base ./base --finetunes ./math,./code \\
    --keep-layers 30 --tasks mc=arith.jsonl \\
    --trials 200 --out out --resume

  # A size-quality front: one search over 24 to 30 kept layers
  hf-tailor search --sources work/sources.yaml \\
    --keep-layers 24..30 --tasks mc=arith.jsonl --out front";

#[derive(clap::Args, Debug)]
#[command(after_help = SEARCH_AFTER_HELP)]
pub struct Args {
    #[command(flatten)]
    pub inputs: SearchInputs,
    /// Evaluations to run (each at one budget; a resumed search counts the journaled ones).
    #[arg(long, default_value_t = 500, value_parser = super::positive(), help_heading = super::H_OPTIMISER)]
    pub trials: usize,
    /// Seed of the optimiser and of the selection split: the same seed and inputs give the
    /// same trials and the same result.
    #[arg(long, default_value_t = 0, help_heading = super::H_OPTIMISER)]
    pub seed: u64,
    /// local (small moves around the best candidates, from the baselines' warm starts;
    /// the forest chooses among them), bo (multi-fidelity Bayesian optimisation over the
    /// whole space: the optimiser before `local`), warmstart (bo from the reference's
    /// hand-made start), random.
    #[arg(long, default_value = "local", value_parser = parse_optimizer, help_heading = super::H_OPTIMISER)]
    pub optimizer: OptimizerKind,
    /// Item budgets of the fidelities, increasing (Hyperband); one value = single fidelity.
    #[arg(long, value_delimiter = ',', default_value = "111,333,1000", value_parser = super::positive(), help_heading = super::H_OPTIMISER)]
    pub budgets: Vec<usize>,
    /// What the surrogate models across tasks: mean (the final criterion) or parego (the reference).
    #[arg(long, default_value = "mean", help_heading = super::H_OPTIMISER)]
    pub scalarization: String,
    /// Merge methods a layer may use when it combines several siblings (the merge
    /// registry's searchable ones: task_arithmetic, ties, dare).
    #[arg(long, value_delimiter = ',', default_value = "task_arithmetic", value_parser = Method::parse_searchable, help_heading = super::H_OPTIMISER)]
    pub merge_methods: Vec<Method>,
    /// What the search optimises: acc, loglik (of the correct choice), margin (over the best
    /// wrong choice, per token), ppl (calibration-text log-likelihood), or GUIDE+acc (guide
    /// the search with GUIDE, choose the final candidate by accuracy). Default: ppl when
    /// --tasks has calibration texts (`ppl=FILE`), else loglik; on --resume, the journal's.
    #[arg(long, value_parser = parse_objective, help_heading = super::H_TASKS)]
    pub objective: Option<Objective>,
    /// Fraction of each calibration task's items held out (seeded by --seed) to choose the
    /// final candidate among the top ones; 0 = choose on the search's own items. Default
    /// 1/3; on --resume, the journal's.
    #[arg(long, help_heading = super::H_TASKS)]
    pub selection_split: Option<f64>,
    /// Selection tasks of their own, a validation set (`KIND[:NAME]=PATH`, as --tasks): the
    /// top candidates are scored on all their items to choose the result, and the search
    /// uses every calibration item (no --selection-split). The trials never see them, so a
    /// --resume may give others.
    #[arg(long, value_name = "LIST", help_heading = super::H_TASKS)]
    pub selection_tasks: Option<String>,
    /// Baselines to run and report (shortgpt, angular, sleb), or `none`.
    #[arg(long, value_delimiter = ',', default_value = "shortgpt,angular,sleb", help_heading = super::H_TASKS)]
    pub baselines: Vec<String>,
    /// Reuse the baselines of `hf-tailor baselines` (its baselines.json, same models and
    /// depth) instead of computing them again.
    #[arg(long, value_name = "FILE", help_heading = super::H_TASKS)]
    pub baselines_from: Option<PathBuf>,
    /// Evaluators scoring candidates in parallel on each device of --device (each with its
    /// own weight store and prefix cache, so the memory bounds are per worker). With
    /// --storage, these workers claim the study's trials like `hf-tailor worker` processes;
    /// 0 = this process only coordinates.
    #[arg(long, default_value_t = 1, help_heading = super::H_ENGINE)]
    pub workers: usize,
    /// Keep the search in PostgreSQL (`postgresql://USER[:PASSWORD]@HOST[:PORT]/DB`) so that
    /// `hf-tailor worker` processes on any hosts score its trials; this process owns the
    /// optimiser. Default: the file journal.
    #[arg(long, value_name = "URL", help_heading = super::H_DISTRIBUTED)]
    pub storage: Option<String>,
    /// The study's name in --storage (default: derived from the search's inputs).
    #[arg(long, requires = "storage", help_heading = super::H_DISTRIBUTED)]
    pub study: Option<String>,
    /// With --storage: start the (new) study from this file journal of the same search, its
    /// results and the proposals it had in flight, so a search begun on one machine goes on
    /// with workers on many (the reverse of `hf-tailor export`).
    #[arg(long, requires = "storage", value_name = "JOURNAL", help_heading = super::H_DISTRIBUTED)]
    pub import_journal: Option<PathBuf>,
    /// With --storage: a running trial whose worker sent no heartbeat for this many seconds
    /// is queued again (once; the second time it fails).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS", help_heading = super::H_DISTRIBUTED)]
    pub stale_after: f64,
    /// Output folder: tailor.yaml, report.{json,md}, search.svg, baselines/.
    #[arg(long, help_heading = super::H_OUTPUT)]
    pub out: PathBuf,
    /// Journal of every trial (default: OUT/journal.jsonl).
    #[arg(long, help_heading = super::H_OUTPUT)]
    pub journal: Option<PathBuf>,
    /// Continue the journal of an interrupted search with the same inputs.
    #[arg(long, help_heading = super::H_OUTPUT)]
    pub resume: bool,
    /// Print the report as JSON on stdout.
    #[arg(long, help_heading = super::H_OUTPUT)]
    pub json: bool,
    #[command(flatten, next_help_heading = super::H_DEPTH)]
    pub pick: PickArgs,
    #[command(flatten)]
    pub heal: super::heal::HealArgs,
}

/// Which point of a front (a depth range) is used: shared by `search`, the root command and `demo`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PickArgs {
    /// For a front (a depth range): the depth whose candidate is the result (`search`:
    /// tailor.yaml; the root command and `demo` also build, verify, card and push it).
    /// Default: the smallest model whose mean accuracy on the search's items is within 1
    /// point of the best over the range.
    #[arg(long, value_name = "K", conflicts_with = "pick_max_params")]
    pub pick: Option<usize>,
    /// For a front: the most accurate point (on the search's items) with at most N
    /// parameters is the result instead.
    #[arg(long = "pick-max-params", value_name = "N")]
    pub pick_max_params: Option<u64>,
}

impl PickArgs {
    /// The pick asked for (None: the default rule).
    pub fn chosen(&self) -> Option<hf_tailor::search::front::Pick> {
        use hf_tailor::search::front::Pick;
        match (self.pick, self.pick_max_params) {
            (Some(k), _) => Some(Pick::Layers(k)),
            (_, Some(n)) => Some(Pick::MaxParams(n)),
            _ => None,
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  hf-tailor baselines --base ./base --remove-ratio 0.25 \\\n    --tasks mc=arith.jsonl,ppl=calib.jsonl --out baselines"
)]
pub struct BaselinesArgs {
    #[command(flatten)]
    pub inputs: SearchInputs,
    /// Baselines to run (shortgpt, angular, sleb).
    #[arg(long, value_delimiter = ',', default_value = "shortgpt,angular,sleb", help_heading = super::H_TASKS)]
    pub which: Vec<String>,
    /// Items per task for the scores.
    #[arg(long, default_value_t = 1000, value_parser = super::positive(), help_heading = super::H_TASKS)]
    pub budget: usize,
    /// Output folder: one recipe per baseline (NAME.yaml) and baselines.json.
    #[arg(long, help_heading = super::H_OUTPUT)]
    pub out: PathBuf,
    /// Print the baselines as JSON on stdout.
    #[arg(long, help_heading = super::H_OUTPUT)]
    pub json: bool,
}

fn parse_edges(s: &str) -> Result<EdgePolicy, String> {
    match s {
        "follow-layers" => Ok(EdgePolicy::FollowLayers),
        "base" => Ok(EdgePolicy::Base),
        _ => Err(format!("`{s}` is not follow-layers or base")),
    }
}

pub(crate) fn parse_objective(s: &str) -> Result<Objective, String> {
    Objective::parse(s).ok_or_else(|| format!("`{s}` is not an objective ({})", hf_tailor::search::objective::NAMES))
}

/// The baselines in a `baselines.json` of `hf-tailor baselines`.
fn load_baselines(path: &std::path::Path) -> anyhow::Result<Vec<job::Precomputed>> {
    #[derive(serde::Deserialize)]
    struct File {
        baselines: Vec<job::Precomputed>,
    }
    let text = hf_tailor::fsutil::read_text_input(path, hf_tailor::limits::MAX_CONFIG_BYTES as u64)
        .with_context(|| format!("reading {}", path.display()))?;
    let file: File = serde_json::from_str(&text).with_context(|| format!("{} is not a baselines.json of `hf-tailor baselines`", path.display()))?;
    Ok(file.baselines)
}

fn parse_optimizer(s: &str) -> Result<OptimizerKind, String> {
    OptimizerKind::parse(s).ok_or_else(|| format!("`{s}` is not local, bo, warmstart or random"))
}

fn parse_baselines(list: &[String]) -> anyhow::Result<Vec<BaselineKind>> {
    if list.iter().any(|b| b == "none") {
        return Ok(Vec::new());
    }
    list.iter().map(|b| BaselineKind::parse(b.trim()).with_context(|| format!("unknown baseline `{b}` (shortgpt, angular, sleb, none)"))).collect()
}

/// The sources (base, siblings) the arguments name, not yet opened.
fn family_models(args: &FamilyArgs) -> anyhow::Result<(SourceModel, Vec<SourceModel>)> {
    Ok(match (&args.sources, &args.base) {
        (Some(p), _) => {
            let list = SourceList::load(p)?;
            (list.base, list.siblings)
        }
        (None, Some(b)) => {
            let mut taken = std::collections::BTreeSet::from(["base".to_string()]);
            let sibs = hub::parse_finetunes_arg(&args.finetunes)?
                .into_iter()
                .map(|f| SourceModel::new(&hub::pull::unique_name(&f, &mut taken), f))
                .collect();
            (SourceModel::new("base", ModelSource::parse(b)?), sibs)
        }
        (None, None) => super::usage!("give --sources FILE or --base MODEL"),
    })
}

/// The output folder of `search` or `baselines`, checked against every source model (before
/// any is opened or pulled) and locked for this job.
fn claim_out(family: &FamilyArgs, out: &std::path::Path) -> anyhow::Result<hf_tailor::pipeline::OutFolderLock> {
    let (base, siblings) = family_models(family)?;
    let sources: Vec<ModelSource> = std::iter::once(base).chain(siblings).map(|m| m.source).collect();
    hf_tailor::pipeline::out_folder::check_apart(out, &sources, &hf_tailor::hub::HubConfig::from_env())?;
    super::lock_out(out)
}

/// The sources (base, siblings) and the opened, checked family.
fn open_family(args: &FamilyArgs) -> anyhow::Result<(SourceModel, Vec<SourceModel>, Family)> {
    let (base, siblings) = family_models(args)?;
    let family = Family::open(&base, &siblings, super::sources::locate)?;
    for w in &family.info.warnings {
        eprintln!("hf-tailor: warning: {w}");
    }
    Ok((base, siblings, family))
}

/// `--keep-layers`: a number of layers (at least 1) or a range `A..B`, smallest first.
pub(crate) fn parse_layer_range(s: &str) -> Result<(usize, usize), String> {
    let n = |x: &str| match x.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(k) => Ok(k),
        Err(_) => Err(format!("`{s}` is not a number of layers or a range A..B")),
    };
    parse_range(s, n, "20..30")
}

/// `--remove-ratio`: a fraction in (0, 1) or a range `A..B`, smallest first.
pub(crate) fn parse_ratio_range(s: &str) -> Result<(f64, f64), String> {
    let n = |x: &str| match x.trim().parse::<f64>() {
        Ok(r) if r > 0.0 && r < 1.0 => Ok(r),
        Ok(r) => Err(format!("must be between 0 and 1 (exclusive), got {r}")),
        Err(_) => Err(format!("`{s}` is not a fraction or a range A..B")),
    };
    parse_range(s, n, "0.15..0.4")
}

/// One value (a range of one) or `A..B`, each end read by `one`, smallest first.
fn parse_range<T: PartialOrd + Copy + std::fmt::Display>(s: &str, one: impl Fn(&str) -> Result<T, String>, example: &str) -> Result<(T, T), String> {
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (one(a)?, one(b)?),
        None => one(s).map(|v| (v, v))?,
    };
    if a > b {
        return Err(format!("the range {a}..{b} is empty: give it smallest first (e.g. {example})"));
    }
    Ok((a, b))
}

/// Everything both subcommands set up: the space and the evaluator (with calibration texts).
struct Setup {
    space: SearchSpace,
    family: Arc<Family>,
    tasks: Vec<hf_tailor::eval::Task>,
    task_files: Vec<PathBuf>,
    /// One evaluator per worker; the first also scores baselines, references and finalists.
    workers: Vec<Worker<Evaluator>>,
    calibration: Vec<String>,
    params: Box<dyn Fn(&Recipe) -> u64>,
}

/// `needs_calibration`: refuse early (before opening any model) when no calibration text is given.
/// `per_device`: evaluators on each device of `--device` (0: exactly one device, one evaluator).
fn setup(inputs: &SearchInputs, request: &SearchRequest, needs_calibration: bool, per_device: usize) -> anyhow::Result<Setup> {
    let SearchInputs { family, depth: _, scoring } = inputs;
    let devices = if per_device == 0 { vec![scoring.engine.device.single()?] } else { scoring.engine.device.resolve()? };
    let per_device = per_device.max(1);
    let specs = TaskSpec::parse_list(&scoring.tasks)?;
    if specs.is_empty() {
        super::usage!("--tasks names no task");
    }
    let tasks = specs.iter().map(|s| s.load()).collect::<Result<Vec<_>, _>>()?;
    if !tasks.iter().any(|t| matches!(t.data, TaskData::MultipleChoice(_))) {
        super::usage!("--tasks has no multiple-choice task to score candidates on");
    }
    let calibration = hf_tailor::eval::calibration_texts(scoring.calibration.as_deref(), &tasks)?;
    if needs_calibration && calibration.is_empty() {
        super::usage!("the baselines need calibration text: add a `ppl=FILE` task or --calibration ppl=FILE (or --baselines none for a search)");
    }
    let (base, siblings, family) = open_family(family)?;
    let space = request.space(&family, base, siblings)?;
    let family = Arc::new(family);
    let many = devices.len() * per_device > 1;
    let mut workers = Vec::with_capacity(devices.len() * per_device);
    for device in devices {
        for k in 0..per_device {
            // Every evaluator on a device derives its bounds from its part of the memory;
            // none holds more than every layer the space can produce.
            let eval_options = hf_tailor::eval::EvalOptions {
                device,
                sharing: per_device,
                rules_per_layer: Some(space.rules_per_layer()),
                ..scoring.engine.options()
            };
            let label = if per_device > 1 { format!("{device}#{k}") } else { device.to_string() };
            let scorer = Evaluator::new(family.clone(), tasks.clone(), eval_options)?;
            workers.push(Worker { label: if many { label } else { String::new() }, scorer });
        }
    }
    let task_files = specs.iter().map(|s| s.path.clone()).collect();
    let params = Box::new(request::params(family.clone()));
    Ok(Setup { space, family, tasks, task_files, workers, calibration, params })
}

/// Progress bars: trials with best-so-far and trials/s, then one line per later stage.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(total: usize) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} search [{bar:30}] {pos}/{len} trials, {per_sec}, eta {eta} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        Self { bar }
    }
}

impl JobObserver for Progress {
    fn trial(&mut self, e: &TrialEvent<'_>) {
        self.bar.set_length(e.total.max(e.done) as u64);
        if e.replayed {
            self.bar.reset_eta();
        }
        self.bar.set_position(e.done as u64);
        let best = e.best.map(|b| format!("best {:.2}% acc", 100.0 * b)).unwrap_or_default();
        self.bar.set_message(format!("{best} (last: {:.2}% at {} items)", 100.0 * e.trial.mean, e.trial.budget));
        super::test_hooks::after_trial(e.done, e.replayed);
    }
    fn stage(&mut self, what: &str) {
        if !self.bar.is_finished() {
            self.bar.finish();
        }
        eprintln!("hf-tailor: {what}");
    }
}

/// The search `search` asks for.
/// `--selection-tasks`, loaded (empty without the flag).
fn load_selection_tasks(args: &Args) -> anyhow::Result<Vec<hf_tailor::eval::Task>> {
    let Some(list) = &args.selection_tasks else { return Ok(Vec::new()) };
    let tasks = TaskSpec::parse_list(list)?.iter().map(|s| s.load()).collect::<Result<Vec<_>, _>>()?;
    if tasks.is_empty() {
        super::usage!("--selection-tasks names no task");
    }
    Ok(tasks)
}

/// `selection_tasks`: the loaded `--selection-tasks` (the request names them).
fn search_request(args: &Args, selection_tasks: &[hf_tailor::eval::Task]) -> anyhow::Result<SearchRequest> {
    let scalarization = match args.scalarization.as_str() {
        "mean" => Scalarization::Mean,
        "parego" => Scalarization::Parego { rho: 0.05 },
        s => super::usage!("unknown --scalarization `{s}` (mean, parego)"),
    };
    let request = SearchRequest {
        pick: args.pick.chosen(),
        space: SpaceOptions { methods: args.merge_methods.clone(), dare_seed: args.seed, ..SpaceOptions::default() },
        edges: args.inputs.scoring.edges,
        optimizer: args.optimizer,
        budgets: Some(args.budgets.clone()),
        scalarization,
        objective: args.objective,
        selection_split: args.selection_split,
        selection_tasks: selection_tasks.iter().map(|t| t.name.clone()).collect(),
        seed: args.seed,
        trials: args.trials,
        baselines: parse_baselines(&args.baselines)?,
        precomputed: match &args.baselines_from {
            Some(p) => load_baselines(p)?,
            None => Vec::new(),
        },
        resume: args.resume,
        heal: args.heal.request()?,
        ..SearchRequest::new(args.inputs.depth.required()?)
    };
    request.check()?;
    Ok(request)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let selection_tasks = load_selection_tasks(&args)?;
    let request = search_request(&args, &selection_tasks)?;
    if let Some(url) = &args.storage {
        if !hf_tailor::search::study::is_url(url) {
            super::usage!("--storage must be a postgresql:// URL (the file journal is --journal)");
        }
        if !(args.stale_after > 0.0 && args.stale_after.is_finite()) {
            super::usage!("--stale-after must be a positive number of seconds");
        }
    } else if args.workers == 0 {
        super::usage!("--workers 0 (coordinate only) needs --storage: someone has to score the trials");
    }
    let _lock = claim_out(&args.inputs.family, &args.out)?;
    if args.storage.is_none() {
        hf_tailor::pipeline::out_folder::check_resume(&request::journal_in(&args.out, args.journal.as_deref()), args.resume)?;
    }
    let mut s = setup(&args.inputs, &request, !request.baselines.is_empty(), args.workers.max(1))?;
    let per_worker = if s.workers.len() > 1 { " (each worker)" } else { "" };
    eprint!("hf-tailor: {}", s.workers[0].scorer.memory_plan().render().replacen(":\n", &format!("{per_worker}:\n"), 1));
    if s.space.siblings() == 0 {
        eprintln!("hf-tailor: warning: no fine-tuned siblings: the search only removes layers of the base");
    }
    let journal = request::journal_in(&args.out, args.journal.as_deref());
    let spec = request.job(s.space.clone(), s.workers[0].scorer.tasks(), s.calibration.clone(), journal)?;
    if !selection_tasks.is_empty() {
        SearchRequest::check_selection_tasks(&spec.optimizer, &selection_tasks)?;
        // The first worker chooses the result (a study: the coordinator's own evaluator).
        s.workers[0].scorer.set_selection_tasks(selection_tasks)?;
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let opt = &spec.optimizer;
    if opt.schedule_budgets().len() < opt.budgets.len() && !args.resume {
        eprintln!(
            "hf-tailor: the `{}` guide scores whole calibration texts at any item budget: every trial runs at the full budget ({})",
            opt.objective.guide.name(),
            opt.full_budget()
        );
    }
    eprintln!(
        "hf-tailor: searching {} of {} layers, {} siblings, tasks {}, {} trials ({}{}), journal {}",
        s.space.keep,
        s.space.source_layers(),
        s.space.siblings(),
        hf_tailor::score::Scorer::task_names(&s.workers[0].scorer).join(", "),
        args.trials,
        args.optimizer.name(),
        if s.workers.len() > 1 { format!(", {} workers", s.workers.len()) } else { String::new() },
        spec.journal.display()
    );
    // The heal's calibration, by the rule a study's workers follow too; `--heal search` gives
    // it to every worker before the first trial.
    let heal_texts = request
        .heal
        .as_ref()
        .map(|h| {
            let calibration = args.inputs.scoring.calibration.is_some().then(|| s.calibration.clone());
            request::heal_calibration_texts(h.calibration.clone(), calibration, &s.tasks, spec.optimizer.hold_out)
        })
        .unwrap_or_default();
    let heal_tokens = request::prepare_heal_search(request.heal.as_ref(), s.workers.iter_mut().map(|w| &mut w.scorer), &heal_texts)?;
    let mut progress = Progress::new(args.trials);
    let result = if s.space.is_range() {
        if args.storage.is_some() || s.workers.len() > 1 {
            super::usage!("a depth-range (front) search runs on one worker: drop --workers, the device list and --storage");
        }
        job::run_front_job(&spec, request.pick(), &mut s.workers[0].scorer, &s.params, &mut progress)?
    } else if let Some(url) = &args.storage {
        let heal = heal_tokens.map(|tokens_sha256| {
            let study = hf_tailor::search::study::StudyHeal {
                heal_calibration: args.heal.heal_calibration.clone(),
                calibration: args.inputs.scoring.calibration.clone(),
                tokens_sha256,
            };
            (study, heal_texts.clone())
        });
        coordinate(&args, url, &spec, &mut s, heal, &mut progress)?
    } else if s.workers.len() == 1 {
        // One worker: the sequential search (its journal has no worker names, as before).
        job::run_job(&spec, &mut s.workers[0].scorer, &s.params, &mut progress)?
    } else {
        job::run_job_parallel(&spec, &mut s.workers, &s.params, &mut progress)?
    };
    progress.bar.finish_and_clear();
    let mut result = result;
    if let Some(h) = &request.heal {
        if h.mode != request::HealMode::Search || result.best.heal.is_some() {
            eprintln!("hf-tailor: healing the chosen candidate's cuts ({} calibration tokens)", h.tokens);
        }
        let scorer = &mut s.workers[0].scorer;
        let outcome = request::heal_chosen(scorer, &result.best, &heal_texts, &spec, h, &args.out)?;
        for n in &outcome.notes {
            eprintln!("hf-tailor: {n}");
        }
        let healed = outcome.recipe;
        if let (Some(heal), Some(fit)) = (&healed.heal, &outcome.fit) {
            eprintln!("hf-tailor: healed {} gap(s) in {:.1}s", heal.gaps.len(), fit.seconds);
            // The report's row of the chosen model shows the healed model, on the same items.
            if let Some(row) = result.report.rows.iter_mut().rev().find(|r| r.kind == hf_tailor::score::ResultKind::Tailored) {
                let m = hf_tailor::score::Scorer::measure(scorer, &healed, result.report.budget, hf_tailor::score::Items::All)?;
                *row = hf_tailor::score::ModelResult::from_measures(row.label.clone(), row.kind, healed.layers.len(), (s.params)(&healed), &m);
            }
        }
        result.best = healed;
    }
    job::write_outputs(&result, &args.out)?;
    print_report(&result.report, args.json)?;
    if let Some(o) = &result.report.own_vs_warm {
        let select = hf_tailor::search::objective::Objective::parse(&result.report.objective).unwrap_or_default().select;
        eprintln!("hf-tailor: {}", o.sentences(select));
    }
    if let Some(w) = result.outcome.layer_work() {
        let st = s.workers[0].scorer.stats();
        eprintln!(
            "hf-tailor: shared prefixes saved {} of {} layer-forwards ({:.1}%); prefix cache: {} hits, {} misses, peak {} MiB",
            w.saved,
            w.run + w.saved,
            100.0 * w.saved_fraction(),
            st.prefix.hits,
            st.prefix.misses,
            st.prefix.peak_bytes >> 20
        );
    }
    eprint!("hf-tailor: {}", s.workers[0].scorer.memory().render());
    eprintln!(
        "hf-tailor: wrote {} (chosen at trial {}), report.md, report.json, search.svg in {}",
        job::RECIPE_FILE,
        result.outcome.best + 1,
        args.out.display()
    );
    Ok(())
}

/// `search --storage`: coordinate the study (this thread) while `--workers` threads of this
/// process score its trials as `hf-tailor worker` processes do.
/// `heal`: with `--heal search`, the fits' calibration (for the study's workers) and its texts.
fn coordinate(
    args: &Args,
    url: &str,
    spec: &JobSpec,
    s: &mut Setup,
    heal: Option<(hf_tailor::search::study::StudyHeal, Vec<String>)>,
    progress: &mut Progress,
) -> anyhow::Result<job::JobResult> {
    use hf_tailor::search::study::{self, worker::WorkerOptions, PgStudy, StudyInputs};
    use std::sync::atomic::{AtomicBool, Ordering};
    let stale = std::time::Duration::from_secs_f64(args.stale_after);
    // Fail early, before the baselines, on a bad URL, a refused password or no server.
    drop(study::connect(url)?);
    let files: Vec<&std::path::Path> = s.task_files.iter().map(|p| p.as_path()).collect();
    let fingerprint = study::Fingerprint::of(&s.family, &files).context("hashing the models and task files")?;
    let (heal, heal_texts) = heal.unzip();
    let inputs = StudyInputs { tasks: args.inputs.scoring.tasks.clone(), fingerprint, heal };
    let name = args.study.clone();
    let inherit = (spec.inherit.objective, spec.inherit.hold_out);
    let trials = args.trials;
    let chosen_name = std::sync::Mutex::new(None::<String>);
    let stop = AtomicBool::new(false);
    let local = if args.workers == 0 { 0 } else { s.workers.len() };
    // The coordinator's own evaluator scores baselines, references and finalists.
    let mut own = Evaluator::new(s.family.clone(), s.tasks.clone(), args.inputs.scoring.engine.options())?;
    own.set_selection_tasks(s.workers[0].scorer.selection_tasks().to_vec())?;
    if let Some(texts) = heal_texts {
        own.set_heal_calibration(texts);
    }
    let host = super::worker::host_name();
    let result = std::thread::scope(|scope| -> anyhow::Result<job::JobResult> {
        let mut handles = Vec::new();
        for (k, w) in s.workers.iter_mut().take(local).enumerate() {
            let (stop, chosen_name) = (&stop, &chosen_name);
            let label = format!("{host}:{}:{}", std::process::id(), if w.label.is_empty() { format!("#{k}") } else { w.label.clone() });
            handles.push(scope.spawn(move || -> Result<(), study::StudyError> {
                // The study exists once the coordinator opened it (after the baselines).
                let name = loop {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    if let Some(n) = chosen_name.lock().expect("not poisoned").clone() {
                        break n;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                };
                study::worker::run_worker(url, &name, &mut w.scorer, &WorkerOptions { label, stale }, stop).map(|_| ())
            }));
        }
        let open: job::OpenStorage<'_> = Box::new(|header| {
            let name = name.clone().unwrap_or_else(|| study::default_name(&header));
            eprintln!("hf-tailor: study `{name}` in PostgreSQL; add workers with `hf-tailor worker --storage URL --study {name}`");
            let mut st = PgStudy::coordinate(url, &name, header, &inputs, trials, stale, inherit)?;
            if let Some(journal) = &args.import_journal {
                let n = hf_tailor::search::transfer::import_journal(journal, &spec.space, &mut st)?;
                eprintln!("hf-tailor: imported {n} trials of {} into study `{name}`", journal.display());
            }
            *chosen_name.lock().expect("not poisoned") = Some(name);
            Ok(Box::new(st))
        });
        let result = job::run_job_remote(spec, &mut own, &s.params, progress, open);
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                // The coordinator's error says more; a worker's is reported when the search went fine.
                Ok(Err(e)) if result.is_ok() => return Err(hf_tailor::search::SearchError::from(e).into()),
                Ok(Err(_)) => {}
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        Ok(result?)
    })?;
    Ok(result)
}

fn print_report(report: &SearchReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_markdown());
    }
    Ok(())
}

pub fn run_baselines(args: BaselinesArgs) -> anyhow::Result<()> {
    let kinds = parse_baselines(&args.which)?;
    if kinds.is_empty() {
        super::usage!("--which names no baseline");
    }
    let request = SearchRequest { edges: args.inputs.scoring.edges, ..SearchRequest::new(args.inputs.depth.required()?) };
    let _lock = claim_out(&args.inputs.family, &args.out)?;
    let mut s = setup(&args.inputs, &request, true, 0)?;
    if s.space.is_range() {
        super::usage!("hf-tailor baselines takes one depth (a front search computes the baselines at every depth)");
    }
    let mut progress = Progress::new(0);
    let (baselines, rows) = job::run_baselines(&s.space, &kinds, &s.calibration, &mut s.workers[0].scorer, args.budget, &*s.params, &mut progress)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for b in &baselines {
        job::save(&b.recipe, &args.out.join(format!("{}.yaml", b.kind.stem())))?;
    }
    let json = serde_json::json!({"baselines": baselines.iter().zip(&rows).map(|(b, r)| serde_json::json!({
        "baseline": b.kind, "removed": b.removed, "criterion": b.criterion, "result": r,
    })).collect::<Vec<_>>()});
    hf_tailor::fsutil::write_atomic(&args.out.join("baselines.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for (b, r) in baselines.iter().zip(&rows) {
            let scores: Vec<String> = r.scores.iter().map(|(t, v)| format!("{t} {:.2}%", 100.0 * v)).collect();
            println!("{:<18} removes {:?}: {} (mean {:.2}%)", b.kind.label(), b.removed, scores.join(", "), 100.0 * r.mean());
        }
        eprintln!("hf-tailor: wrote {} recipe(s) and baselines.json in {}", baselines.len(), args.out.display());
    }
    Ok(())
}
