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
    /// The Hub repo the model is pushed to, for usage snippets.
    pub repo_id: Option<String>,
    /// The folder the model was written to, as the user named it (`tailored/model`): what
    /// the usage snippets load when the model is not pushed (else the title).
    pub folder: Option<String>,
    /// Whether the written tokenizer has a chat template (the usage snippet then prompts
    /// with a conversation); [`write`] also looks in the folder.
    pub chat_template: bool,
    /// How to reproduce this very model in one command, in Markdown (the demo says
    /// `hf-tailor demo`), shown above the recipe.
    pub reproduce: Option<String>,
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
            folder: None,
            chat_template: false,
            reproduce: None,
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

/// The lineage's heal sentence: which layers carry a fitted map, against which teacher, on
/// how many tokens (None: no heal).
fn heal_note(r: &Recipe) -> Option<String> {
    let h = r.heal.as_ref()?;
    let layers: Vec<String> =
        h.gaps.iter().map(|g| format!("{} (source {}, replacing source layers {}–{})", g.layer, g.from, g.from + 1, g.until - 1)).collect();
    let mut s = format!(
        "Healed without training (ReplaceMe-style least squares): output layer{} {} carr{} a fitted linear map fused into `down_proj`, \
         fitted against the full-depth {} on {} calibration tokens (ridge {}; maps in `{}`, sha256 `{}`).",
        if layers.len() == 1 { "" } else { "s" },
        layers.join(", "),
        if layers.len() == 1 { "ies" } else { "y" },
        match &h.teacher {
            crate::recipe::Teacher::Base => "base".to_string(),
            crate::recipe::Teacher::Average => "siblings' average".to_string(),
            crate::recipe::Teacher::Sibling(n) => format!("sibling `{n}`"),
        },
        h.tokens,
        h.ridge,
        h.file.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        h.sha256
    );
    if !h.unhealed.is_empty() {
        s.push_str(&format!(" Source layers {:?} were removed before the first kept layer and stay unhealed.", h.unhealed));
    }
    Some(s)
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
    let items_of = |t: &str| input.results.iter().find(|m| m.kind == ResultKind::Tailored).and_then(|m| m.items.get(t).copied());
    let task_notes: Vec<String> = tasks.iter().map(|t| task_note(t, &input.about(t), items_of(t))).collect();
    let chance_row = chance_row(&tasks, input);
    let usage = Usage::of(input, &tasks);
    let local_sources: Vec<String> = r.models().filter(|m| m.source.repo_id().is_none()).map(|m| format!("`{}`", m.source.public_name())).collect();
    let repo_id = usage.load_id.clone();
    let gguf = gguf_rows(&input.gguf_files);
    // The file the usage snippet shows: Q8_0 (near-lossless, half the size of F16) when there is one.
    let shown = gguf.iter().find(|g| g.tag == "Q8_0").or(gguf.first());
    let short_name = input.repo_id.as_deref().unwrap_or(&input.title);
    let short_name = short_name.rsplit('/').next().unwrap_or(short_name).to_string();
    let (front, front_baselines) = front_rows(&input.front);
    let readme = env
        .get_template("model_card.md")
        .and_then(|t| {
            t.render(context! {
                front_matter => front_matter::render(input),
                title => input.title.clone(),
                repo_id => repo_id,
                load_id => usage.load_id.clone(),
                pushed => input.repo_id.is_some(),
                chat => input.chat_template,
                big => input.params_after > 1_000_000_000,
                prompt_py => py_string(&usage.prompt),
                prompt_sh => sh_string(&usage.prompt),
                prompt_why => usage.why.clone(),
                max_new_tokens => usage.max_new_tokens,
                chance_row => chance_row.map(|c| Value::from(Serde(c))),
                local_sources => local_sources,
                reproduce => input.reproduce.clone(),
                base => lineage::source_link(&r.base),
                architecture => r.architecture.clone(),
                merge_methods => r.merge_methods().iter().map(|m| m.title).collect::<Vec<_>>(),
                siblings => r.siblings.iter().map(lineage::source_link).collect::<Vec<_>>(),
                summary => Value::from(Serde(&summary)),
                rows => Value::from(Serde(lineage::rows(r))),
                removed => removed,
                heal => heal_note(r),
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
/// the GGUF files in `dir` when the input names none, and prompts with a conversation
/// when the tokenizer in `dir` has a chat template.
pub fn write(dir: &Path, input: &CardInput) -> Result<RenderedCard, CardError> {
    let mut listed = input.clone();
    if listed.gguf_files.is_empty() {
        listed.gguf_files = crate::gguf::files_in(dir);
    }
    listed.chat_template |= has_chat_template(dir);
    let input = &listed;
    let card = render(input)?;
    let files = [(README_FILE, Some(&card.readme)), (LINEAGE_FILE, Some(&card.lineage_svg)), (FRONT_FILE, card.front_svg.as_ref())];
    for (name, text) in files.into_iter().filter_map(|(n, t)| t.map(|t| (n, t))) {
        let path = dir.join(name);
        crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(|source| CardError::Io { path: path.display().to_string(), source })?;
    }
    Ok(card)
}

/// Whether the tokenizer files in `dir` carry a chat template (in tokenizer_config.json,
/// or beside it as transformers 4.43+ writes it).
fn has_chat_template(dir: &Path) -> bool {
    if dir.join("chat_template.jinja").is_file() || dir.join("chat_template.json").is_file() {
        return true;
    }
    std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get("chat_template").is_some_and(|c| !c.is_null()))
}

/// One task as the card describes it: what it asks, where its items come from, how many
/// choices (and so the chance level), and one item as the model sees it.
fn task_note(name: &str, a: &crate::eval::TaskAbout, items: Option<usize>) -> String {
    let mut s = format!("**`{name}`**");
    match &a.description {
        Some(d) => s.push_str(&format!(": {d}.")),
        None => s.push_str(&format!(": {}.", a.title)),
    }
    let n = items.map_or(String::new(), |n| format!("{n} items; "));
    s.push_str(&format!(" {n}{}.", crate::search::report::dataset_line(a)));
    if let Some(c) = a.chance {
        let choices = (1.0 / c).round() as usize;
        let per = if (1.0 / c - choices as f64).abs() < 1e-9 { format!("{choices} choices per item, so ") } else { String::new() };
        s.push_str(&format!(" {per}guessing scores {}.", pct_label(c)));
    }
    s.push_str(&format!(" Prompt: {}.", a.prompt));
    if let Some(ex) = &a.example {
        if ex.choices.is_empty() {
            s.push_str(&format!(" Example text: {}", code(&ex.context)));
        } else {
            let choices: Vec<String> = ex.choices.iter().map(|c| code(c)).collect();
            let answer = ex.choices.get(ex.label).map(|c| code(c)).unwrap_or_default();
            s.push_str(&format!(" Example: {} → choices {}; correct {answer}.", code(&ex.context), choices.join(", ")));
        }
    }
    s
}

/// `25 %`, `33.3 %`.
fn pct_label(v: f64) -> String {
    format!("{} %", crate::plot::round_label((1000.0 * v).round() / 10.0))
}

/// Inline code that survives backticks and line breaks in the text.
fn code(s: &str) -> String {
    let one_line = s.replace('\n', "⏎");
    if one_line.contains('`') {
        format!("`` {one_line} ``")
    } else {
        format!("`{one_line}`")
    }
}

/// The chance level under each task's column and the mean's, when every task knows it.
#[derive(Serialize)]
struct ChanceRow {
    scores: Vec<String>,
    mean: String,
}

fn chance_row(tasks: &[String], input: &CardInput) -> Option<ChanceRow> {
    let per: Option<Vec<f64>> = tasks.iter().map(|t| input.about(t).chance).collect();
    let per = per.filter(|p| !p.is_empty())?;
    let mean = per.iter().sum::<f64>() / per.len() as f64;
    Some(ChanceRow { scores: per.iter().map(|c| format!("{:.1}", 100.0 * c)).collect(), mean: format!("{:.1}", 100.0 * mean) })
}

/// What the usage snippets load and how they prompt.
struct Usage {
    /// The pushed repo id, else the folder, else the title.
    load_id: String,
    prompt: String,
    /// Why this prompt (a comment in the snippet).
    why: String,
    max_new_tokens: usize,
}

impl Usage {
    fn of(input: &CardInput, tasks: &[String]) -> Self {
        let load_id = input.repo_id.clone().or_else(|| input.folder.clone()).unwrap_or_else(|| input.title.clone());
        // A model without a chat template continues text: the first task's example item is
        // a prompt it was measured on (the demo's tiny models know nothing else).
        let example = tasks.iter().find_map(|t| input.about(t).example.filter(|e| !e.choices.is_empty()).map(|e| (t.clone(), e)));
        match example {
            Some((t, e)) if !input.chat_template => Self {
                load_id,
                why: format!(
                    "A plain-text prompt: the first item of the `{t}` task (answer: {:?}).",
                    e.choices.get(e.label).map(|c| c.trim()).unwrap_or("")
                ),
                prompt: e.context,
                max_new_tokens: 10,
            },
            _ if input.chat_template => Self { load_id, prompt: "Name three primary colours.".into(), why: String::new(), max_new_tokens: 40 },
            _ => Self { load_id, prompt: "The capital of France is".into(), why: "A plain-text prompt to continue.".into(), max_new_tokens: 20 },
        }
    }
}

/// A Python string literal (JSON's escapes are Python's too).
fn py_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// A single-quoted shell word.
fn sh_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
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
