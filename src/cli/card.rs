//! `hf-tailor card`: render README.md and lineage.svg for a built model.

use std::path::PathBuf;

use anyhow::Context;
use hf_tailor::card::{self, CardInput};
use hf_tailor::checkpoint::Checkpoint;
use hf_tailor::config::ModelConfig;
use hf_tailor::hub::{self, HubConfig};
use hf_tailor::layout::Layout;
use hf_tailor::recipe::Recipe;
use hf_tailor::score::ModelResult;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  hf-tailor card --model ./tailored --recipe tailor.yaml --results results.json\n  hf-tailor card --model ./tailored --recipe tailor.yaml --base-readme base/README.md --repo me/model"
)]
pub struct Args {
    /// The built model folder; README.md and lineage.svg are written into it.
    #[arg(long)]
    pub model: PathBuf,
    /// The recipe the model was built from.
    #[arg(long)]
    pub recipe: PathBuf,
    /// Evaluation rows: a JSON array of results (or an object with a `results` array).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// The base model's README.md, for its license (default: the base's cached card, if any).
    #[arg(long)]
    pub base_readme: Option<PathBuf>,
    /// The equivalent mergekit YAML to show (default: exported from the recipe when possible).
    #[arg(long)]
    pub mergekit: Option<PathBuf>,
    /// Hub repo the model goes to (title and usage snippets); default: the folder name.
    #[arg(long)]
    pub repo: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let recipe = Recipe::load(&args.recipe)?;
    let (before, after) = param_counts(&args.model, &recipe)?;
    let title = args.repo.clone().unwrap_or_else(|| {
        args.model.canonicalize().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "tailored".into())
    });
    let mut input = CardInput::new(recipe, &title, before, after);
    input.repo_id = args.repo.clone();
    input.folder = Some(args.model.display().to_string());
    if let Some(p) = &args.results {
        read_results(p, &mut input)?;
    }
    let readme = match &args.base_readme {
        Some(p) => Some(
            hf_tailor::fsutil::read_text_input(p, hf_tailor::limits::MAX_CONFIG_BYTES as u64).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => cached_base_readme(&input.recipe),
    };
    input.license = readme.as_deref().and_then(card::license_from_readme);
    input.mergekit_yaml = match &args.mergekit {
        Some(p) => Some(
            hf_tailor::fsutil::read_text_input(p, hf_tailor::limits::MAX_CONFIG_BYTES as u64).with_context(|| format!("reading {}", p.display()))?,
        ),
        // Methods one mergekit config cannot express leave the section out.
        None => hf_tailor::mergekit::export(&card::published(&input.recipe), super::mergekit::base_ties_embeddings(&input.recipe)).ok(),
    };
    card::write(&args.model, &input)?;
    println!("wrote {} and {}", args.model.join(card::README_FILE).display(), args.model.join(card::LINEAGE_FILE).display());
    if input.license.is_none() {
        eprintln!("hf-tailor: warning: no license found in the base's card; pass --base-readme to inherit one");
    }
    Ok(())
}

/// Rows from a `report.json` of `hf-tailor search` (its `rows`: held out only when the
/// report says what they were measured on), or a JSON array of rows (or an object with
/// a `results` array) the user measured on held-out items.
fn read_results(path: &std::path::Path, input: &mut card::CardInput) -> anyhow::Result<()> {
    let text = hf_tailor::fsutil::read_text_input(path, hf_tailor::limits::MAX_CONFIG_BYTES as u64)
        .with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let bad = || format!("{}: results rows must be {{label, kind, layers, params, scores}}", path.display());
    if v.get("rows").is_some() {
        let report: hf_tailor::search::report::SearchReport =
            serde_json::from_value(v).with_context(|| format!("{} is not a report.json of `hf-tailor search`", path.display()))?;
        input.results = report.rows;
        input.tasks = report.about;
        // A front's table describes this model only when it is the picked point's depth.
        if report.front.iter().any(|p| p.picked && p.layers == input.recipe.layers.len()) {
            input.front = report.front;
        }
        input.results_held_out = report.rows_note.is_some();
        input.results_note = Some(match report.rows_note {
            Some(n) => format!("{n}, at most {} items per task", report.budget),
            None => format!("the first {} calibration items per task", report.budget),
        });
        return Ok(());
    }
    let rows = match v {
        serde_json::Value::Object(mut o) => o.remove("results").with_context(|| format!("{}: no `results` array", path.display()))?,
        v => v,
    };
    input.results = serde_json::from_value::<Vec<ModelResult>>(rows).with_context(bad)?;
    input.results_held_out = true;
    Ok(())
}

/// The base's README from the local cache or folder, without touching the network.
/// Parameters before (the base's layout, when the base can be found locally or in the Hub
/// cache; else the output's config at the source depth) and after (the written tensors,
/// which are the recipe's layout).
fn param_counts(model: &std::path::Path, recipe: &Recipe) -> anyhow::Result<(u64, u64)> {
    let written = Checkpoint::open(model)?;
    let after = written.tensors.values().map(|t| t.numel() as u64).sum();
    let mut cfg = HubConfig::from_env();
    cfg.offline = true;
    let base_config = hub::locate(&recipe.base, &cfg).ok().and_then(|dir| ModelConfig::from_file(&dir.join("config.json")).ok());
    let before = match base_config {
        Some(c) => Layout::of_base(&c, recipe.source_layers, written.storage_dtype()).total_params(),
        None => written.config.total_params(recipe.source_layers),
    };
    Ok((before, after))
}

fn cached_base_readme(recipe: &Recipe) -> Option<String> {
    let mut cfg = HubConfig::from_env();
    cfg.offline = true;
    let dir = hub::locate(&recipe.base, &cfg).ok()?;
    hf_tailor::fsutil::read_text_input(&dir.join("README.md"), hf_tailor::limits::MAX_CONFIG_BYTES as u64).ok()
}
