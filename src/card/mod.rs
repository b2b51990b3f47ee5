//! The model card: README.md (YAML metadata, summary, lineage table and picture, evaluation
//! table, usage, the recipe to reproduce) and lineage.svg beside it, rendered from the
//! minijinja templates in `templates/` (embedded in the binary).

pub mod front_matter;
pub mod lineage;

use std::path::Path;

use minijinja::value::Serde;
use minijinja::{context, AutoEscape, Environment, Value};
use serde::Serialize;

pub use front_matter::{license_from_readme, License};

use crate::recipe::Recipe;
use crate::score::{ModelResult, ResultKind};
use crate::search::front::FrontPoint;

const CARD_TEMPLATE: &str = include_str!("../../templates/model_card.md.jinja");
const SVG_TEMPLATE: &str = include_str!("../../templates/lineage.svg.jinja");
pub const README_FILE: &str = "README.md";
pub const LINEAGE_FILE: &str = "lineage.svg";
/// The front's plot beside the card (accuracy against parameters).
pub const FRONT_FILE: &str = "front.svg";

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("model card template {template}: {message}")]
    Template { template: &'static str, message: String },
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("model card: {0}")]
    Input(String),
}

/// Everything a card shows. The recipe is the single source of lineage; the rest are
/// figures computed elsewhere.
#[derive(Debug, Clone)]
pub struct CardInput {
    pub recipe: Recipe,
    /// Heading and `model-index` name: the target repo id, or the folder name.
    pub title: String,
    /// The Hub repo the model is pushed to, for usage snippets (the title if absent).
    pub repo_id: Option<String>,
    pub params_before: u64,
    pub params_after: u64,
    /// Inherited from the base's card; see [`license_from_readme`].
    pub license: Option<License>,
    /// Rows of the evaluation table (base, siblings, baselines, tailored), in display order.
    pub results: Vec<ModelResult>,
    /// The equivalent mergekit config, when one can be written.
    pub mergekit_yaml: Option<String>,
    /// What the results were measured on, when the caller knows (e.g. "held-out tasks the
    /// search never saw, at most 500 items per task").
    pub results_note: Option<String>,
    /// GGUF files beside the checkpoint (file names), linked with llama.cpp / Ollama usage;
    /// [`write`] lists the folder's when the caller leaves this empty.
    pub gguf_files: Vec<String>,
    /// Whether `results` are on items the search never saw. Only then do they go into
    /// `model-index`; otherwise the table is labelled as the calibration items optimised.
    pub results_held_out: bool,
    /// What each task of the results is (dataset, split, prompt); a task missing here is
    /// described as a local file of that name.
    pub tasks: Vec<(String, crate::eval::TaskAbout)>,
    /// A size–quality front (one search over a depth range), smallest first, on the same
    /// items as `results`; the picked point is the model this card describes. Shown as a
    /// table and as [`FRONT_FILE`]; empty for one depth.
    pub front: Vec<FrontPoint>,
    /// How the front's picked point was chosen, in words.
    pub front_note: Option<String>,
}

impl CardInput {
    /// Parameter counts come from the output layout ([`crate::layout::Layout`]): `before`
    /// of the untailored base, `after` of the recipe's output, as the writer writes it.
    pub fn new(recipe: Recipe, title: &str, params_before: u64, params_after: u64) -> Self {
        Self {
            recipe,
            title: title.into(),
            repo_id: None,
            params_before,
            params_after,
            license: None,
            results: Vec::new(),
            mergekit_yaml: None,
            results_note: None,
            gguf_files: Vec::new(),
            results_held_out: false,
            tasks: Vec::new(),
            front: Vec::new(),
            front_note: None,
        }
    }

    /// What task `name` is.
    pub fn about(&self, name: &str) -> crate::eval::TaskAbout {
        self.tasks.iter().find(|(n, _)| n == name).map(|(_, a)| a.clone()).unwrap_or_else(|| crate::eval::TaskAbout::local(name))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RenderedCard {
    pub readme: String,
    pub lineage_svg: String,
    /// The front's plot (None without a front).
    pub front_svg: Option<String>,
}

/// One depth of the front as the card's table shows it.
#[derive(Serialize)]
struct FrontRow {
    layers: usize,
    params: String,
    tailored: String,
    /// Each baseline's mean ± s.e. at this depth, in the order of `front_baselines`.
    baselines: Vec<String>,
    picked: bool,
}

/// The front's table rows and baseline column names.
fn front_rows(front: &[FrontPoint]) -> (Vec<FrontRow>, Vec<String>) {
    let kinds: Vec<String> = front.first().map(|p| p.baselines.iter().map(|b| b.label.clone()).collect()).unwrap_or_default();
    let rows = front
        .iter()
        .map(|p| FrontRow {
            layers: p.layers,
            params: human_count(p.tailored.params),
            tailored: p.tailored.mean_display(),
            baselines: kinds.iter().map(|k| p.baselines.iter().find(|b| &b.label == k).map_or("–".into(), |b| b.mean_display())).collect(),
            picked: p.picked,
        })
        .collect();
    (rows, kinds)
}

#[derive(Serialize)]
struct Summary {
    layers_before: usize,
    layers_after: usize,
    layers_removed: usize,
    layers_removed_pct: String,
    params_before: String,
    params_after: String,
    params_removed_pct: String,
    merged_layers: usize,
    sibling_layers: usize,
    base_layers: usize,
}

#[derive(Serialize)]
struct ResultRow {
    label: String,
    kind: &'static str,
    layers: usize,
    params: String,
    scores: Vec<String>,
    mean: String,
    bold: bool,
}

#[derive(Serialize)]
struct SourceRow {
    name: String,
    role: &'static str,
    link: String,
    revision: String,
}

/// Render README.md and lineage.svg.
/// The recipe as a published card shows it ([`Recipe::published`]).
pub fn published(recipe: &Recipe) -> Recipe {
    recipe.published()
}

pub fn render(input: &CardInput) -> Result<RenderedCard, CardError> {
    let r = &input.recipe;
    r.validate().map_err(|e| CardError::Input(e.to_string()))?;
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| if name.ends_with(".svg") { AutoEscape::Html } else { AutoEscape::None });
    env.set_syntax(minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build().expect("default delimiters"));
    env.add_template("model_card.md", CARD_TEMPLATE).map_err(tmpl_err("model_card.md"))?;
    env.add_template("lineage.svg", SVG_TEMPLATE).map_err(tmpl_err("lineage.svg"))?;

    let picture = lineage::picture(r, &input.title);
    let lineage_svg =
        env.get_template("lineage.svg").and_then(|t| t.render(context! { p => Value::from(Serde(&picture)) })).map_err(tmpl_err("lineage.svg"))?;

    let removed = r.removed_layers();
    let base_name = &r.base.name;
    let summary = Summary {
        layers_before: r.source_layers,
        layers_after: r.layers.len(),
        layers_removed: removed.len(),
        layers_removed_pct: pct(removed.len() as f64, r.source_layers as f64),
        params_before: human_count(input.params_before),
        params_after: human_count(input.params_after),
        params_removed_pct: pct(input.params_before.saturating_sub(input.params_after) as f64, input.params_before as f64),
        merged_layers: r.merge_count(),
        sibling_layers: r.layers.iter().filter(|l| matches!(&l.rule, crate::recipe::Rule::Take(m) if m != base_name)).count(),
        base_layers: r.layers.iter().filter(|l| matches!(&l.rule, crate::recipe::Rule::Take(m) if m == base_name)).count(),
    };
    let tasks: Vec<String> = {
        let mut t: Vec<String> = input.results.iter().flat_map(|m| m.scores.keys().cloned()).collect();
        t.sort();
        t.dedup();
        t
    };
    let results: Vec<ResultRow> = input
        .results
        .iter()
        .map(|m| ResultRow {
            label: m.label.clone(),
            kind: kind_label(m.kind),
            layers: m.layers,
            params: human_count(m.params),
            scores: tasks
                .iter()
                .map(|t| match (m.scores.get(t), m.se.get(t)) {
                    (Some(s), Some(e)) => format!("{:.1} ± {:.1}", s * 100.0, e * 100.0),
                    (Some(s), None) => format!("{:.1}", s * 100.0),
                    _ => "–".into(),
                })
                .collect(),
            mean: m.mean_display(),
            bold: m.kind == ResultKind::Tailored,
        })
        .collect();
    let sources: Vec<SourceRow> = r
        .models()
        .map(|m| SourceRow {
            name: m.name.clone(),
            role: if m.name == *base_name { "base" } else { "fine-tune" },
            link: lineage::source_link(m),
            revision: m.revision().map(str::to_string).unwrap_or_else(|| "(local folder)".into()),
        })
        .collect();
    let edges = [("Embeddings", &r.embeddings), ("Final norm and lm_head", &r.head)]
        .iter()
        .map(|(what, rule)| format!("{what}: {}", rule.label()))
        .collect::<Vec<_>>();
    let task_notes: Vec<String> = tasks
        .iter()
        .map(|t| {
            let a = input.about(t);
            format!("`{t}`: {} ({}). Prompt: {}.", a.title, crate::search::report::dataset_line(&a), a.prompt)
        })
        .collect();
    let repo_id = input.repo_id.clone().unwrap_or_else(|| input.title.clone());
    let gguf = gguf_rows(&input.gguf_files);
    // The file the usage snippet shows: Q8_0 (near-lossless, half the size of F16) when there is one.
    let shown = gguf.iter().find(|g| g.tag == "Q8_0").or(gguf.first());
    let short_name = repo_id.rsplit('/').next().unwrap_or(&repo_id).to_string();
    let (front, front_baselines) = front_rows(&input.front);
    let readme = env
        .get_template("model_card.md")
        .and_then(|t| {
            t.render(context! {
                front_matter => front_matter::render(input),
                title => input.title.clone(),
                repo_id => repo_id,
                base => lineage::source_link(&r.base),
                architecture => r.architecture.clone(),
                merge_methods => r.merge_methods().iter().map(|m| m.title).collect::<Vec<_>>(),
                siblings => r.siblings.iter().map(lineage::source_link).collect::<Vec<_>>(),
                summary => Value::from(Serde(&summary)),
                rows => Value::from(Serde(lineage::rows(r))),
                removed => removed,
                edges => edges,
                dtype => r.dtype.map(|d| format!("{d:?}").to_lowercase()),
                tokenizer_source => format!("`{}`", r.tokenizer_model()),
                chat_template => match &r.chat_template {
                    None => format!("`{}`'s own (if it has one)", r.tokenizer_model()),
                    Some(crate::recipe::ChatTemplate::Model(m)) => format!("`{m}`'s"),
                    Some(crate::recipe::ChatTemplate::File { name, .. }) => format!("the file `{name}` (in the recipe below)"),
                },
                tasks => tasks,
                results => Value::from(Serde(&results)),
                results_note => input.results_note.clone(),
                results_held_out => input.results_held_out,
                task_notes => task_notes,
                comparisons => crate::score::comparisons(&input.results),
                sources => Value::from(Serde(&sources)),
                license => input.license.as_ref().map(|l| l.id.clone()),
                recipe_yaml => published(r).to_yaml(),
                mergekit_yaml => input.mergekit_yaml.as_ref().map(|m| if m.ends_with('\n') { m.clone() } else { format!("{m}\n") }),
                short_name => short_name,
                lineage_file => LINEAGE_FILE,
                gguf_files => Value::from(Serde(&gguf)),
                gguf_tag => shown.map(|g| g.tag.clone()),
                gguf_file => shown.map(|g| g.file.clone()),
                front => Value::from(Serde(&front)),
                front_baselines => front_baselines,
                front_file => FRONT_FILE,
                front_comparisons => crate::search::front::comparisons(&input.front),
                front_note => input.front_note.clone(),
            })
        })
        .map_err(tmpl_err("model_card.md"))?;
    let front_svg = (!input.front.is_empty()).then(|| crate::search::front::svg_with_rows(&input.front, &input.results));
    Ok(RenderedCard { readme, lineage_svg, front_svg })
}

#[derive(Serialize)]
struct GgufRow {
    file: String,
    /// The quantisation tag llama.cpp's `-hf repo:TAG` and Ollama's `hf.co/repo:TAG` select by.
    tag: String,
}

/// `NAME-Q8_0.gguf` -> (file, "Q8_0").
fn gguf_rows(files: &[String]) -> Vec<GgufRow> {
    files
        .iter()
        .map(|f| {
            let stem = f.strip_suffix(".gguf").unwrap_or(f);
            let tag = stem.rsplit_once('-').map(|(_, t)| t).unwrap_or(stem).to_string();
            GgufRow { file: f.clone(), tag }
        })
        .collect()
}

/// Render and write README.md and lineage.svg (and front.svg for a front) into `dir` (each atomically). The card links
/// the GGUF files in `dir` when the input names none.
pub fn write(dir: &Path, input: &CardInput) -> Result<RenderedCard, CardError> {
    let listed;
    let input = if input.gguf_files.is_empty() {
        listed = CardInput { gguf_files: crate::gguf::files_in(dir), ..input.clone() };
        &listed
    } else {
        input
    };
    let card = render(input)?;
    let files = [(README_FILE, Some(&card.readme)), (LINEAGE_FILE, Some(&card.lineage_svg)), (FRONT_FILE, card.front_svg.as_ref())];
    for (name, text) in files.into_iter().filter_map(|(n, t)| t.map(|t| (n, t))) {
        let path = dir.join(name);
        crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(|source| CardError::Io { path: path.display().to_string(), source })?;
    }
    Ok(card)
}

fn tmpl_err(template: &'static str) -> impl Fn(minijinja::Error) -> CardError {
    move |e| CardError::Template { template, message: format!("{e:#}") }
}

fn kind_label(k: ResultKind) -> &'static str {
    match k {
        ResultKind::Base => "base",
        ResultKind::Sibling => "fine-tune",
        ResultKind::Baseline => "baseline",
        ResultKind::Tailored => "tailored",
    }
}

fn pct(part: f64, whole: f64) -> String {
    if whole <= 0.0 {
        "0.0".into()
    } else {
        format!("{:.1}", 100.0 * part / whole)
    }
}

pub use crate::human::human_count;
