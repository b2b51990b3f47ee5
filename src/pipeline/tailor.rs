//! The tailoring job after the pull: compatibility check → search → baselines → results
//! table → build → verify → model card. The root command and `hf-tailor demo` both call
//! [`tailor`]; pushing is left to the caller (it needs the network and a token).
//!
//! Files written under `out` (each stage's output, so a stage can be re-run alone):
//! `sources.yaml`, `journal.jsonl`, `tailor.yaml` (the recipe), `baselines/<name>.yaml`,
//! `report.{json,md}` + `search.svg`, and `model/` (the checkpoint with README.md and
//! lineage.svg, the folder that is pushed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::card::{self, CardInput};
use crate::checkpoint::Family;
use crate::eval::{EvalOptions, Evaluator, Task, TaskData};
use crate::hub::{PulledFamily, SourceList};
use crate::recipe::{Recipe, SourceModel};
use crate::score::{ModelResult, ResultKind, Scorer, TaskScores};
use crate::search::front::{FrontPoint, Pick};
use crate::search::job::{run_front_job, run_job, whole_model, write_outputs, JobObserver, JobResult, RECIPE_FILE};
use crate::search::TrialEvent;
use crate::writer::{self, BuildOptions};

use super::out_folder::check_out_folder;
use super::request::SearchRequest;
use super::PipelineError;

pub use super::out_folder::SOURCES_FILE;
pub use super::request::JOURNAL_FILE;
pub const MODEL_DIR: &str = "model";

/// Fraction of each calibration task's items held back, by seed, for the card's and the
/// table's numbers when the user names no held-out tasks: the search (and its selection
/// split) never sees them, so the card reports scores on items nothing was chosen on.
pub const REPORT_FRACTION: f64 = 0.2;

/// Calibration texts per task for the baselines' hidden-state statistics.
const BASELINE_TEXTS_PER_TASK: usize = 64;

/// Every choice the job makes, with the defaults of the root command.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// The search (depths, pick, optimiser, objective, selection split, baselines).
    pub search: SearchRequest,
    /// Where and how candidates are scored.
    pub engine: EvalOptions,
    pub out: PathBuf,
    /// Title of the card (the target repo id, or a folder name).
    pub title: String,
    /// The Hub repo the model will be pushed to (for the card's usage snippets).
    pub repo_id: Option<String>,
    /// How to reproduce the model in one command, for the card (the demo's `hf-tailor demo`).
    pub reproduce: Option<String>,
    /// Replace an existing `out/model`, and use an `out` folder that holds other files.
    pub force: bool,
    /// The caller already checked `out` with [`check_out_folder`] (before writing into it).
    pub out_checked: bool,
    /// GGUF files to write beside the checkpoint (before the card, which links them).
    pub gguf: Vec<crate::gguf::FileType>,
    /// Whose tokenizer files and generation config the model carries (None: the base's).
    pub tokenizer_source: Option<String>,
    /// The model's chat template (`auto`, `base`, a model's name, or a Jinja file; None: auto).
    pub chat_template: Option<String>,
    /// The search's selection tasks, a validation set of their own (`search.selection_tasks`
    /// names them; empty: the final choice is made on a selection split, or not at all).
    pub selection_tasks: Vec<Task>,
}

impl JobOptions {
    pub fn new(out: PathBuf, title: &str, search: SearchRequest) -> Self {
        Self {
            search,
            engine: EvalOptions::default(),
            out,
            title: title.into(),
            repo_id: None,
            reproduce: None,
            force: false,
            out_checked: false,
            gguf: Vec::new(),
            tokenizer_source: None,
            chat_template: None,
            selection_tasks: Vec::new(),
        }
    }
}

/// Progress the job reports as it goes (the CLI prints it; tests ignore it).
pub trait Progress {
    fn stage(&mut self, message: &str);
    fn trial(&mut self, done: usize, total: usize, best: Option<f64>);
    /// The checkpoint is written to `model_dir` and about to be verified.
    fn built(&mut self, _model_dir: &Path) {}
}

/// A [`Progress`] that says nothing.
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&mut self, _: &str) {}
    fn trial(&mut self, _: usize, _: usize, _: Option<f64>) {}
}

/// Feeds the search stage's progress into a [`Progress`].
struct Observe<'a>(&'a mut dyn Progress);

impl JobObserver for Observe<'_> {
    fn trial(&mut self, e: &TrialEvent<'_>) {
        self.0.trial(e.done, e.total, e.best);
    }
    fn stage(&mut self, what: &str) {
        self.0.stage(what);
    }
}

/// What the job produced.
#[derive(Debug, Clone, Serialize)]
pub struct JobOutcome {
    pub out: PathBuf,
    pub model_dir: PathBuf,
    pub recipe_path: PathBuf,
    pub recipe: Recipe,
    /// Base, siblings, baselines and the tailored model on the report tasks.
    pub rows: Vec<ModelResult>,
    pub report_tasks: Vec<String>,
    /// Items per report task behind `rows`.
    pub report_items: usize,
    pub trials: usize,
    pub search_seconds: f64,
    /// Scores of the written checkpoint, re-read from disk (must match the tailored row).
    pub verified: TaskScores,
    /// What `rows` were measured on, in words (held-out tasks, or the held-out split).
    pub report_note: String,
    /// A front's points (smallest first) with the baselines at each depth, on the same
    /// held-out items as `rows`; empty for one depth.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub front: Vec<FrontPoint>,
    pub warnings: Vec<String>,
}

impl JobOutcome {
    pub fn tailored(&self) -> &ModelResult {
        self.rows.iter().find(|r| r.kind == ResultKind::Tailored).expect("the job always adds the tailored row")
    }
}

/// Run the job on a pulled family. `calibration` drives the search; `report` (held-out
/// tasks) fills the results table and the card. When `report` is `calibration` itself,
/// [`REPORT_FRACTION`] of every calibration task is split off by seed for the report
/// and the search runs on the rest.
pub fn tailor(
    family: &PulledFamily,
    calibration: Vec<Task>,
    report: Vec<Task>,
    opts: &JobOptions,
    progress: &mut dyn Progress,
) -> Result<JobOutcome, PipelineError> {
    let out = &opts.out;
    let sources = SourceList::from(family);
    if !opts.out_checked {
        check_out_folder(out, Some(&sources), opts.force)?;
    }
    // Nothing is written into `out` before every input passed its checks (below): a
    // refused job leaves nothing that could block the corrected one.

    progress.stage("checking that the models are one family");
    let request = &opts.search;
    let fam = Arc::new(open_family(family)?);
    let mut warnings = fam.info.warnings.clone();
    let config = fam.base.config.clone();
    let (base, siblings) = family.sources();
    let space = request.space(&fam, base.clone(), siblings.clone())?;
    // The tokenizer and template choice is checked before the search (a vocabulary that
    // does not match is refused now, not after hours of trials), and applied to the result.
    let choose =
        |recipe: &mut Recipe| crate::checkpoint::choose_tokenizer(&fam, recipe, opts.tokenizer_source.as_deref(), opts.chat_template.as_deref());
    warnings.extend(choose(&mut whole_model(&space, &base.name))?);
    let (calibration, report, report_note) = if report == calibration {
        let split = crate::score::HoldOut { fraction: REPORT_FRACTION, seed: request.seed };
        let (search, held) = split_for_report(&calibration, &split);
        let note = format!(
            "a held-out {:.0} % of each calibration task's items (seed {}) that neither the search nor the final choice saw",
            100.0 * REPORT_FRACTION,
            request.seed
        );
        (search, held, note)
    } else {
        (calibration, report, "held-out tasks the search never saw".to_string())
    };
    let eval_options = EvalOptions { rules_per_layer: Some(space.rules_per_layer()), ..opts.engine.clone() };

    // Search, baselines and the calibration table: the search stage's own job.
    let mut scorer = Evaluator::new(fam.clone(), calibration.clone(), eval_options.clone())?;
    progress.stage(scorer.memory_plan().render().trim_end());
    let spec = request.job(space, &calibration, calibration_texts(&calibration), super::request::journal_in(out, None))?;
    let selection_names: Vec<String> = opts.selection_tasks.iter().map(|t| t.name.clone()).collect();
    if selection_names != request.selection_tasks {
        return Err(PipelineError::Plan(format!("the search names selection tasks {:?} but is given {selection_names:?}", request.selection_tasks)));
    }
    if !opts.selection_tasks.is_empty() {
        super::request::SearchRequest::check_selection_tasks(&spec.optimizer, &opts.selection_tasks)?;
        scorer.set_selection_tasks(opts.selection_tasks.clone())?;
    }
    let (keep, keep_max) = (spec.space.keep, spec.space.keep_max);
    // Every input passed its checks: from here on the folder is this job's.
    std::fs::create_dir_all(out).map_err(|e| PipelineError::io(out, e))?;
    sources.save(&out.join(SOURCES_FILE))?;
    let depths = if keep_max > keep { format!("a front of {keep}..{keep_max}") } else { keep.to_string() };
    progress.stage(&format!(
        "searching: keep {depths} of {} layers, {} siblings, {} trials on {}",
        config.num_hidden_layers,
        siblings.len(),
        request.trials,
        scorer.task_names().join(", ")
    ));
    let heal_texts = request
        .heal
        .as_ref()
        .map(|h| super::request::heal_calibration_texts(h.calibration.clone(), None, &calibration, spec.optimizer.hold_out))
        .unwrap_or_default();
    super::request::prepare_heal_search(request.heal.as_ref(), [&mut scorer], &heal_texts)?;
    let started = Instant::now();
    let params = super::request::params(fam.clone());
    let result = if spec.space.is_range() {
        run_front_job(&spec, request.pick(), &mut scorer, params, &mut Observe(progress))?
    } else {
        run_job(&spec, &mut scorer, params, &mut Observe(progress))?
    };
    let search_seconds = started.elapsed().as_secs_f64();
    let mut result = result;
    if let Some(h) = &request.heal {
        if h.mode != super::request::HealMode::Search || result.best.heal.is_some() {
            progress.stage(&format!("healing the chosen candidate's cuts ({} calibration tokens)", h.tokens));
        }
        let healed = super::request::heal_chosen(&mut scorer, &result.best, &heal_texts, &spec, h, out)?;
        for n in &healed.notes {
            progress.stage(n);
        }
        result.best = healed.recipe;
    }
    drop(scorer);
    choose(&mut result.best)?;
    let best = result.best.clone();

    // With held-out report tasks, every row (and every point of a front, with the
    // baselines at its depth) is scored again on them by one evaluator.
    let report_names: Vec<String> = report.iter().map(|t| t.name.clone()).collect();
    let report_items = report.iter().map(task_len).max().unwrap_or(0);
    let mut search_report = result.report.clone();
    {
        progress.stage("scoring base, siblings, baselines and the tailored model on the held-out items");
        let mut reporter =
            HeldOut { scorer: Evaluator::new(fam.clone(), report.clone(), eval_options.clone())?, items: report_items, done: Vec::new() };
        let mut recipes: Vec<Recipe> =
            std::iter::once(base.name.clone()).chain(siblings.iter().map(|s| s.name.clone())).map(|name| whole_model(&spec.space, &name)).collect();
        recipes.extend(result.baselines.iter().map(|b| b.recipe.clone()));
        recipes.push(best.clone());
        debug_assert_eq!(search_report.rows.len(), recipes.len(), "rows: base, siblings, baselines, tailored");
        for (row, recipe) in search_report.rows.iter_mut().zip(&recipes) {
            *row = reporter.rescore(row, recipe)?;
        }
        if !result.front.is_empty() {
            progress.stage(&format!("scoring the front's {} points and the baselines at each depth on the held-out items", result.front.len()));
        }
        for (p, bs) in search_report.front.iter_mut().zip(&result.front_baselines) {
            p.tailored = reporter.rescore(&p.tailored, &result.outcome.trials[p.trial].recipe)?;
            for (row, b) in p.baselines.iter_mut().zip(bs) {
                *row = reporter.rescore(row, &b.recipe)?;
            }
        }
        search_report.tasks = report_names.clone();
        search_report.budget = report_items;
    }
    let report_items = search_report.budget;
    let report_about: Vec<(String, crate::eval::TaskAbout)> = report.iter().map(|t| (t.name.clone(), t.about.clone())).collect();
    search_report.about = report_about.clone();
    search_report.rows_note = Some(report_note.clone());
    let rows = search_report.rows.clone();
    let front = search_report.front.clone();
    let trials_run = result.outcome.trials.len();
    // Every point of a front is buildable as the picked one is: the same tokenizer choice.
    for p in &result.front {
        choose(&mut result.outcome.trials[p.trial].recipe)?;
    }
    write_outputs(&JobResult { report: search_report, ..result }, out)?;
    let recipe_path = out.join(RECIPE_FILE);

    // Build, then verify the written checkpoint scores what the in-memory model scored.
    let model_dir = out.join(MODEL_DIR);
    progress.stage(&format!("writing the tailored checkpoint to {}", model_dir.display()));
    let built = writer::build(&fam, &best, &model_dir, &BuildOptions { force: opts.force || request.resume, ..BuildOptions::default() })?;
    warnings.extend(built.warnings.iter().cloned());
    progress.built(&model_dir);
    progress.stage("verifying the written checkpoint");
    let verified = score_folder(&model_dir, report, eval_options, report_items)?;
    let tailored = rows.last().expect("tailored row").clone();
    check_verified(&tailored.scores, &verified, report_items)?;

    // GGUF files for llama.cpp and Ollama, from the verified checkpoint (the folder is new).
    if !opts.gguf.is_empty() {
        let labels: Vec<&str> = opts.gguf.iter().map(|t| t.label()).collect();
        progress.stage(&format!("writing GGUF files ({})", labels.join(", ")));
        // Named after the repo (or the --out folder), not the `model/` folder inside it.
        let name = opts.title.rsplit('/').next().unwrap_or(&opts.title).to_string();
        crate::gguf::write_beside(&model_dir, &crate::gguf::GgufOptions { types: opts.gguf.clone(), force: true, name: Some(name) })?;
    }

    // The model card with the results table and the lineage picture.
    progress.stage("rendering the model card");
    let mut input = CardInput::new(best.clone(), &opts.title, built.params_before, built.params_after);
    input.repo_id = opts.repo_id.clone();
    input.folder = Some(shown_folder(&model_dir));
    input.reproduce = opts.reproduce.clone();
    input.results = rows.clone();
    input.license = family
        .base
        .readme
        .as_ref()
        .and_then(|p| crate::fsutil::read_text_input(p, crate::limits::MAX_CONFIG_BYTES as u64).ok())
        .as_deref()
        .and_then(card::license_from_readme);
    input.mergekit_yaml = crate::mergekit::export(&card::published(&best), Some(config.tie_word_embeddings)).ok();
    input.results_note = Some(format!("{report_note}, at most {report_items} items per task"));
    input.tasks = report_about.clone();
    input.results_held_out = true;
    input.front = front.clone();
    input.front_note = (!front.is_empty()).then(|| pick_note(request.pick()));
    card::write(&model_dir, &input)?;

    Ok(JobOutcome {
        out: out.clone(),
        model_dir,
        recipe_path,
        recipe: best,
        rows,
        report_tasks: report_names,
        report_items,
        trials: trials_run,
        search_seconds,
        verified,
        report_note,
        front,
        warnings,
    })
}

/// The model folder as the card's usage snippet loads it: as the user named it when that is
/// a relative path, else `OUT/model` by the output folder's name (a card may be pushed
/// later: it names no absolute path of this machine).
fn shown_folder(model_dir: &std::path::Path) -> String {
    if model_dir.is_relative() {
        return model_dir.display().to_string();
    }
    let mut tail: Vec<String> = model_dir.iter().rev().take(2).map(|c| c.to_string_lossy().into_owned()).collect();
    tail.reverse();
    tail.join("/")
}

/// How the built point of a front was chosen, for the card.
fn pick_note(pick: Pick) -> String {
    match pick {
        Pick::Smallest => "The point built here was picked on the search's own items (not the held-out ones above) by the default rule: \
the smallest model whose mean accuracy is within 1 point of the best over the range (`--pick K` or `--pick-max-params N` choose another)."
            .into(),
        Pick::Layers(k) => format!("The point built here was chosen with `--pick {k}`."),
        Pick::MaxParams(n) => format!(
            "The point built here is the front's most accurate, on the search's own items, with at most {} parameters (`--pick-max-params {n}`).",
            crate::human::human_count(n)
        ),
    }
}

/// Scores recipes on the held-out items, each distinct recipe once (the baselines often
/// agree at a depth, and the picked point is also a row).
struct HeldOut {
    scorer: Evaluator,
    items: usize,
    done: Vec<(Recipe, crate::score::Measures)>,
}

impl HeldOut {
    /// `row` with its scores replaced by `recipe`'s on the held-out items.
    fn rescore(&mut self, row: &ModelResult, recipe: &Recipe) -> Result<ModelResult, PipelineError> {
        let m = match self.done.iter().find(|(r, _)| r == recipe) {
            Some((_, m)) => m.clone(),
            None => {
                let m = self.scorer.measure(recipe, self.items, crate::score::Items::All)?;
                self.done.push((recipe.clone(), m.clone()));
                m
            }
        };
        Ok(ModelResult::from_measures(row.label.clone(), row.kind, row.layers, row.params, &m))
    }
}

/// Each task split by `split`'s seeded mask into (search items, held-out items); the mask
/// is drawn under a name of its own so that it shares no pattern with the selection split.
pub fn split_for_report(tasks: &[Task], split: &crate::score::HoldOut) -> (Vec<Task>, Vec<Task>) {
    fn part<T: Clone>(v: &[T], mask: &[bool], held: bool) -> Vec<T> {
        v.iter().zip(mask).filter(|(_, m)| **m == held).map(|(x, _)| x.clone()).collect()
    }
    let mut search = Vec::new();
    let mut held = Vec::new();
    for t in tasks {
        let key = format!("{}#report", t.name);
        let (a, b) = match &t.data {
            TaskData::MultipleChoice(items) => {
                let mask = split.selection_mask(&key, items.len());
                (TaskData::MultipleChoice(part(items, &mask, false)), TaskData::MultipleChoice(part(items, &mask, true)))
            }
            TaskData::Perplexity(texts) => {
                let mask = split.selection_mask(&key, texts.len());
                (TaskData::Perplexity(part(texts, &mask, false)), TaskData::Perplexity(part(texts, &mask, true)))
            }
        };
        search.push(Task { name: t.name.clone(), data: a, about: t.about.clone() });
        held.push(Task { name: t.name.clone(), data: b, about: t.about.clone() });
    }
    (search, held)
}

/// Open every pulled model and check they can be stitched.
pub fn open_family(family: &PulledFamily) -> Result<Family, PipelineError> {
    let (base, siblings) = family.sources();
    let dir = |m: &SourceModel| {
        let pulled = std::iter::once(&family.base).chain(&family.siblings).find(|p| p.source.name == m.name).expect("a model of the family");
        Ok(pulled.dir.clone())
    };
    Ok(Family::open(&base, &siblings, dir)?)
}

fn task_len(t: &Task) -> usize {
    match &t.data {
        TaskData::MultipleChoice(items) => items.len(),
        TaskData::Perplexity(texts) => texts.len(),
    }
}

/// Texts for the baselines' statistics: each item's context with its correct answer.
pub fn calibration_texts(tasks: &[Task]) -> Vec<String> {
    let mut texts = Vec::new();
    for t in tasks {
        match &t.data {
            TaskData::MultipleChoice(items) => {
                texts.extend(items.iter().take(BASELINE_TEXTS_PER_TASK).map(|i| format!("{}{}", i.context, i.choices[i.label])))
            }
            TaskData::Perplexity(t) => texts.extend(t.iter().take(BASELINE_TEXTS_PER_TASK).cloned()),
        }
    }
    texts
}

/// Score the checkpoint written to `dir` as a model of its own, read back from disk.
fn score_folder(dir: &Path, tasks: Vec<Task>, options: EvalOptions, budget: usize) -> Result<TaskScores, PipelineError> {
    let source = SourceModel::local("tailored", dir);
    let single = Family::open(&source, &[], |_| Ok(dir.to_path_buf()))?;
    let c = &single.base.config;
    let recipe = Recipe::whole_model(&source.name, c.arch.model_type, c.num_hidden_layers, source.clone(), vec![]);
    let mut scorer = Evaluator::new(Arc::new(single), tasks, options)?;
    Ok(scorer.score(&recipe, budget)?)
}

/// The written model must score what the in-memory candidate scored: only the final
/// cast of merged layers to the output dtype may flip an item or two.
fn check_verified(expected: &TaskScores, got: &TaskScores, items: usize) -> Result<(), PipelineError> {
    let tolerance = (2.0 / items.max(1) as f64).max(0.01);
    for (task, want) in expected {
        let have = got.get(task).copied().unwrap_or(f64::NAN);
        if !((have - want).abs() <= tolerance) {
            return Err(PipelineError::Verify(format!(
                "the written checkpoint scores {have:.4} on {task}, the in-memory model {want:.4} (tolerance {tolerance:.4})"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(v: &[(&str, f64)]) -> TaskScores {
        v.iter().map(|(k, s)| (k.to_string(), *s)).collect()
    }

    fn verify_message(expected: &[(&str, f64)], got: &[(&str, f64)], items: usize) -> Option<String> {
        check_verified(&scores(expected), &scores(got), items).err().map(|e| e.to_string())
    }

    #[test]
    fn verify_accepts_two_flipped_items_and_no_more() {
        // 500 items: two flips are 0.004, under the 0.01 floor.
        assert_eq!(verify_message(&[("a", 0.5), ("b", 0.7)], &[("a", 0.5), ("b", 0.7)], 500), None);
        assert_eq!(verify_message(&[("a", 0.5)], &[("a", 0.509)], 500), None);
        assert_eq!(verify_message(&[("a", 0.5)], &[("a", 0.4901)], 500), None, "downwards too");
        let msg = verify_message(&[("a", 0.5), ("b", 0.7)], &[("a", 0.5), ("b", 0.688)], 500).expect("0.012 > 0.01 fails");
        assert!(
            msg.starts_with("verification failed") && msg.contains("0.6880 on b") && msg.contains("0.7000") && msg.contains("tolerance 0.0100"),
            "{msg}"
        );
        // 50 items: two flips (0.04) pass, three (0.06) fail.
        assert_eq!(verify_message(&[("a", 0.5)], &[("a", 0.5399)], 50), None);
        assert!(verify_message(&[("a", 0.5)], &[("a", 0.56)], 50).is_some());
        assert!(verify_message(&[("a", 0.5)], &[("a", 0.44)], 50).is_some());
    }

    #[test]
    fn verify_fails_on_a_missing_task_or_nan() {
        let msg = verify_message(&[("a", 0.5), ("b", 0.6)], &[("a", 0.5)], 500).expect("missing task fails");
        assert!(msg.contains("on b"), "{msg}");
        assert!(verify_message(&[("a", 0.5)], &[("a", f64::NAN)], 500).is_some(), "NaN written score");
        assert!(verify_message(&[("a", f64::NAN)], &[("a", 0.5)], 500).is_some(), "NaN in-memory score");
        assert!(verify_message(&[("a", f64::NAN)], &[("a", f64::NAN)], 500).is_some(), "NaN on both sides is no agreement");
        // Tasks the in-memory row does not report are not compared.
        assert_eq!(verify_message(&[("a", 0.5)], &[("a", 0.5), ("extra", 0.0)], 500), None);
    }
}
