//! `hf-tailor heal`: fit a map per gap of a recipe (ReplaceMe-style, no training) and write
//! the healed recipe with its maps file beside it.

use std::path::PathBuf;
use std::sync::Arc;

use hf_tailor::eval::{Evaluator, TaskData, TaskSpec};
use hf_tailor::recipe::Teacher;

#[derive(clap::Args, Debug)]
#[command(after_help = "The teacher is the full-depth model the cut is fitted to reproduce: `base`, `average` (the siblings' \
task-arithmetic average at λ = 1/n) or `sibling:NAME`.\n\n\
Examples:\n  hf-tailor heal --recipe tailor.yaml --teacher average --calibration ppl=texts.jsonl --out healed.yaml\n  \
hf-tailor heal --recipe tailor.yaml --teacher base --tasks tasks/arith.jsonl --out healed.yaml")]
pub struct Args {
    /// The recipe to heal (a heal it already has is refitted).
    #[arg(long)]
    pub recipe: PathBuf,
    /// The healed recipe to write; its maps go beside it (`heal.safetensors` for
    /// `tailor.yaml`, else `NAME.heal.safetensors`).
    #[arg(long)]
    pub out: PathBuf,
    /// base, average or sibling:NAME.
    #[arg(long, default_value = "average")]
    pub teacher: Teacher,
    /// Calibration texts to fit on (task specs, `ppl=FILE`); without it, the contexts of
    /// --tasks' multiple-choice items with their correct answers.
    #[arg(long)]
    pub calibration: Option<String>,
    /// Multiple-choice tasks whose items (context + correct answer) are the calibration
    /// text when --calibration is not given.
    #[arg(long)]
    pub tasks: Option<String>,
    /// Calibration tokens to fit on (see README, "Healing").
    #[arg(long, default_value_t = hf_tailor::heal::DEFAULT_TOKENS, value_parser = super::positive())]
    pub heal_tokens: usize,
    /// Ridge factor: α = RIDGE · trace(MᵀM)/d.
    #[arg(long, default_value_t = hf_tailor::heal::DEFAULT_RIDGE)]
    pub heal_ridge: f64,
    #[command(flatten)]
    pub engine: super::EngineArgs,
}

/// Calibration texts for a heal: the texts of `calibration` when given, else the contexts
/// of `tasks`' multiple-choice items followed by their correct answers.
pub fn calibration_texts(calibration: Option<&str>, tasks: Option<&str>) -> anyhow::Result<Vec<String>> {
    let (spec, from_items) = match (calibration, tasks) {
        (Some(c), _) => (c, false),
        (None, Some(t)) => (t, true),
        (None, None) => super::usage!("give --calibration ppl=FILE (texts) or --tasks (their multiple-choice items) to fit the heal on"),
    };
    let mut sources = Vec::new();
    for s in TaskSpec::parse_list(spec)? {
        match s.load()?.data {
            TaskData::Perplexity(t) if !from_items => sources.push(t),
            TaskData::MultipleChoice(items) if from_items => {
                sources.push(items.iter().filter_map(|i| i.choices.get(i.label).map(|c| format!("{}{c}", i.context))).collect())
            }
            TaskData::Perplexity(_) | TaskData::MultipleChoice(_) => {}
        }
    }
    // Each file in turn, so that --heal-tokens draws on every domain.
    let texts = hf_tailor::heal::interleave(sources);
    if texts.is_empty() {
        super::usage!("no calibration text to fit the heal on");
    }
    Ok(texts)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(args.heal_ridge.is_finite() && args.heal_ridge >= 0.0) {
        super::usage!("--heal-ridge must be a finite number >= 0");
    }
    let texts = calibration_texts(args.calibration.as_deref(), args.tasks.as_deref())?;
    let recipe = super::sources::load_recipe(&args.recipe)?;
    hf_tailor::heal::check_arch(&recipe)?;
    let family = super::sources::open_family(&recipe)?;
    args.engine.device.single()?;
    let d = family.base.config.hidden_size;
    let mut ev = Evaluator::new(Arc::new(family), vec![], args.engine.options())?;
    let seqs = ev.heal_sequences(&texts, args.heal_tokens)?;
    let fit = ev.fit_heal(&recipe, &args.teacher, &seqs, args.heal_ridge)?;
    if !fit.unhealed.is_empty() {
        eprintln!(
            "hf-tailor: source layers {:?} are removed before the first kept layer: no layer precedes them, so they stay unhealed",
            fit.unhealed
        );
    }
    let saved = hf_tailor::eval::heal_fit::save(&fit, &args.out, d)?;
    match &saved.heal {
        Some(h) => println!(
            "healed {} gap(s) against {} on {} tokens in {:.1}s: {} (maps: {})",
            h.gaps.len(),
            h.teacher,
            h.tokens,
            fit.seconds,
            args.out.display(),
            h.file.display()
        ),
        None => println!("the recipe has no gap after a kept layer: nothing to heal; wrote {}", args.out.display()),
    }
    Ok(())
}

/// `--heal` and its settings, for `search` and the root command.
#[derive(clap::Args, Debug, Clone)]
pub struct HealArgs {
    /// Heal cuts without training: a map per gap fitted by least squares against a teacher
    /// and fused into the layer before the gap (README, "Healing"). off; on (heal the chosen
    /// candidate); auto (keep that heal only if it scores better on the selection split);
    /// search (heal on/off and the teacher are searched: each healed candidate is fitted and
    /// scored in memory). Not for Gemma 2/3 (a norm sits on the MLP branch).
    #[arg(long, default_value = "off", value_parser = ["off", "on", "auto", "search"], help_heading = super::H_OPTIMISER)]
    pub heal: String,
    /// The full-depth model the heal fits against: base, average (the siblings' average)
    /// or sibling:NAME; with --heal search, a comma-separated list to choose among.
    #[arg(long, default_value = "average", value_delimiter = ',', help_heading = super::H_OPTIMISER)]
    pub heal_teacher: Vec<Teacher>,
    /// Calibration tokens the written heal fits on (the calibration texts, else the
    /// calibration items' contexts with their correct answers; never the selection split).
    #[arg(long, default_value_t = hf_tailor::heal::DEFAULT_TOKENS, value_parser = super::positive(), help_heading = super::H_OPTIMISER)]
    pub heal_tokens: usize,
    /// With --heal search: calibration tokens of each trial's fit, the search's cheaper
    /// fidelity (at most --heal-tokens); the chosen candidate is fitted again on --heal-tokens.
    #[arg(long, default_value_t = hf_tailor::heal::DEFAULT_SEARCH_TOKENS, value_parser = super::positive(), help_heading = super::H_OPTIMISER)]
    pub heal_search_tokens: usize,
    /// Ridge factor of the heal's least squares: α = RIDGE · trace(MᵀM)/d.
    #[arg(long, default_value_t = hf_tailor::heal::DEFAULT_RIDGE, help_heading = super::H_OPTIMISER)]
    pub heal_ridge: f64,
    /// Texts the heal fits on (`ppl=FILE[,ppl:NAME=FILE…]`, JSONL with a `text` field), in
    /// place of the calibration texts or items: e.g. more text from the siblings' domains
    /// than the search scores (the fit wants many times d tokens).
    #[arg(long, value_name = "SPEC", help_heading = super::H_OPTIMISER)]
    pub heal_calibration: Option<String>,
}

impl HealArgs {
    /// The heal asked for (None: off).
    pub fn request(&self) -> anyhow::Result<Option<hf_tailor::pipeline::request::HealRequest>> {
        use hf_tailor::pipeline::request::{HealMode, HealRequest};
        if !(self.heal_ridge.is_finite() && self.heal_ridge >= 0.0) {
            super::usage!("--heal-ridge must be a finite number >= 0");
        }
        let mode = match self.heal.as_str() {
            "off" => return Ok(None),
            "on" => HealMode::On,
            "auto" => HealMode::Auto,
            _ => HealMode::Search,
        };
        if mode != HealMode::Search && self.heal_teacher.len() != 1 {
            super::usage!("--heal {} fits against one teacher; a list of teachers is for --heal search", self.heal);
        }
        let calibration = match &self.heal_calibration {
            Some(spec) => Some(calibration_texts(Some(spec), None)?),
            None => None,
        };
        Ok(Some(HealRequest {
            teachers: self.heal_teacher.clone(),
            tokens: self.heal_tokens,
            search_tokens: self.heal_search_tokens,
            ridge: self.heal_ridge,
            mode,
            calibration,
        }))
    }
}
