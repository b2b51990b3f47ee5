//! Where every output layer came from, read off the recipe: rows for the card's table and the
//! geometry of the lineage picture (drawn by `templates/lineage.svg.jinja`).

use serde::Serialize;

use crate::recipe::{Recipe, Rule, SourceModel};
use crate::source::ModelSource;

/// Distinct, colour-blind-friendly fills (Okabe–Ito, then Tableau); the base takes the first.
const PALETTE: &[&str] =
    &["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD"];
pub const REMOVED_FILL: &str = "#D9D9D9";

/// One row of the lineage table.
#[derive(Debug, Clone, Serialize)]
pub struct LineageRow {
    pub output: usize,
    /// `name` of each model the rule reads (one for `take`).
    pub models: Vec<String>,
    /// Markdown for the source column: linked `repo@rev` of each model.
    pub source: String,
    pub source_layer: usize,
    /// `take` or the merge method name.
    pub rule: String,
    /// λ (or t) for merges, formatted; empty for `take`.
    pub strength: String,
}

pub fn model_colour(recipe: &Recipe, name: &str) -> &'static str {
    let i = recipe.models().position(|m| m.name == name).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

/// `repo@abcdef12`, linked to the Hub tree at that commit for Hub models.
pub fn source_link(m: &SourceModel) -> String {
    match &m.source {
        ModelSource::Hub { repo, revision } => {
            let label = match revision {
                Some(r) => format!("{repo}@{}", &r[..r.len().min(8)]),
                None => repo.clone(),
            };
            format!("[{label}](https://huggingface.co/{repo}/tree/{})", revision.as_deref().unwrap_or("main"))
        }
        ModelSource::Local(_) => format!("`{}`", m.source.public_name()),
    }
}

/// What the card and picture call a model: its Hub id, or a local folder's last component.
/// A local path says nothing to a reader of the published card and would leak the layout of
/// the machine that made it.
pub fn display_name(m: &SourceModel) -> String {
    m.source.public_name()
}

pub fn rule_text(rule: &Rule) -> (String, String) {
    match rule {
        Rule::Take(_) => ("take".into(), String::new()),
        Rule::Merge(m) => (m.method_name().into(), m.strength().map(|s| format!("{s}")).unwrap_or_default()),
    }
}

pub fn rows(recipe: &Recipe) -> Vec<LineageRow> {
    recipe
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let models: Vec<String> = l.rule.models().into_iter().map(str::to_string).collect();
            let mut source: Vec<String> = models.iter().filter_map(|n| recipe.model(n)).map(source_link).collect();
            if let Rule::Merge(m) = &l.rule {
                if crate::stitch::anchors_on_base(m) {
                    source.push(format!("on base {}", source_link(&recipe.base)));
                }
            }
            let (rule, strength) = rule_text(&l.rule);
            LineageRow { output: i, models, source: source.join(" + "), source_layer: l.from, rule, strength }
        })
        .collect()
}

/// A filled rectangle of the picture.
#[derive(Debug, Clone, Serialize)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub fill: String,
    pub title: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Text {
    pub x: f64,
    pub y: f64,
    pub text: String,
    pub size: f64,
    pub anchor: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
    pub colour: String,
}

/// Everything the SVG template draws.
#[derive(Debug, Clone, Serialize)]
pub struct Picture {
    pub width: f64,
    pub height: f64,
    pub title: String,
    pub description: String,
    pub rects: Vec<Rect>,
    /// Outlines of source layers and output layers (drawn over the fills).
    pub outlines: Vec<Rect>,
    pub lines: Vec<Line>,
    /// Crosses over removed layers, drawn last.
    pub marks: Vec<Line>,
    pub texts: Vec<Text>,
}

/// Top row: the source stack (kept layers outlined, removed greyed and crossed); bottom row:
/// the tailored stack, each layer filled with its source model's colour, merges as vertical
/// stripes of every merged model's colour; a line joins each output layer to its source
/// layer; a legend names the colours.
pub fn picture(recipe: &Recipe, title: &str) -> Picture {
    let n = recipe.source_layers.max(1);
    let margin = 60.0;
    let col = (880.0 / n as f64).clamp(10.0, 28.0);
    let gap = (col * 0.15).max(1.5);
    let cell = col - gap;
    let (top_y, bottom_y, h) = (46.0, 150.0, 34.0);
    let width = margin * 2.0 + n as f64 * col;
    let removed: std::collections::BTreeSet<usize> = recipe.removed_layers().into_iter().collect();
    let mut rects = Vec::new();
    let mut outlines = Vec::new();
    let mut lines = Vec::new();
    let mut marks = Vec::new();
    let mut texts = vec![
        Text { x: 8.0, y: top_y + h / 2.0 + 4.0, text: "source".into(), size: 11.0, anchor: "start" },
        Text { x: 8.0, y: bottom_y + h / 2.0 + 4.0, text: "tailored".into(), size: 11.0, anchor: "start" },
    ];
    let label_every = if col >= 18.0 { 1 } else { (18.0 / col).ceil() as usize };
    for i in 0..n {
        let x = margin + i as f64 * col;
        let (fill, what) = if removed.contains(&i) { (REMOVED_FILL, "removed") } else { ("#FFFFFF", "kept") };
        outlines.push(Rect { x, y: top_y, w: cell, h, fill: fill.into(), title: format!("source layer {i}: {what}") });
        if removed.contains(&i) {
            marks.push(Line { x1: x + 2.0, y1: top_y + 2.0, x2: x + cell - 2.0, y2: top_y + h - 2.0, colour: "#8C8C8C".into() });
            marks.push(Line { x1: x + cell - 2.0, y1: top_y + 2.0, x2: x + 2.0, y2: top_y + h - 2.0, colour: "#8C8C8C".into() });
        }
        if i % label_every == 0 {
            texts.push(Text { x: x + cell / 2.0, y: top_y - 6.0, text: i.to_string(), size: 9.0, anchor: "middle" });
        }
    }
    let k = recipe.layers.len();
    // Centre the shorter tailored stack under the source stack.
    let offset = margin + (n.saturating_sub(k)) as f64 * col / 2.0;
    for (j, l) in recipe.layers.iter().enumerate() {
        let x = offset + j as f64 * col;
        let models = l.rule.models();
        let (rule, strength) = rule_text(&l.rule);
        let tip = if l.rule.is_merge() {
            format!("layer {j} ← {rule} of {} at source layer {}, λ={strength}", models.join(" + "), l.from)
        } else {
            format!("layer {j} ← {} layer {}", models.join(""), l.from)
        };
        let stripe = cell / models.len().max(1) as f64;
        for (s, m) in models.iter().enumerate() {
            rects.push(Rect { x: x + s as f64 * stripe, y: bottom_y, w: stripe, h, fill: model_colour(recipe, m).into(), title: tip.clone() });
        }
        outlines.push(Rect { x, y: bottom_y, w: cell, h, fill: "none".into(), title: tip });
        let src_x = margin + l.from as f64 * col + cell / 2.0;
        lines.push(Line { x1: src_x, y1: top_y + h, x2: x + cell / 2.0, y2: bottom_y, colour: model_colour(recipe, models[0]).into() });
        if j % label_every == 0 {
            texts.push(Text { x: x + cell / 2.0, y: bottom_y + h + 12.0, text: j.to_string(), size: 9.0, anchor: "middle" });
        }
        if l.rule.is_merge() && col >= 18.0 {
            texts.push(Text { x: x + cell / 2.0, y: bottom_y + h + 24.0, text: format!("λ{strength}"), size: 8.0, anchor: "middle" });
        }
    }
    // Legend.
    let legend_y = bottom_y + h + 46.0;
    let mut lx = margin;
    for m in recipe.models() {
        rects.push(Rect { x: lx, y: legend_y, w: 12.0, h: 12.0, fill: model_colour(recipe, &m.name).into(), title: display_name(m) });
        let label = if m.name == recipe.base.name { format!("{} (base)", m.name) } else { m.name.clone() };
        lx += 20.0 + label.chars().count() as f64 * 6.5 + 16.0;
        texts.push(Text { x: lx - label.chars().count() as f64 * 6.5 - 16.0, y: legend_y + 10.0, text: label, size: 11.0, anchor: "start" });
    }
    rects.push(Rect { x: lx, y: legend_y, w: 12.0, h: 12.0, fill: REMOVED_FILL.into(), title: "removed".into() });
    texts.push(Text { x: lx + 18.0, y: legend_y + 10.0, text: "removed".into(), size: 11.0, anchor: "start" });
    let legend_end = lx + 18.0 + 60.0;
    let description = format!(
        "{} of {} source layers kept ({} removed, {} merged); colours name the source model of each tailored layer, stripes mark merges.",
        k,
        n,
        removed.len(),
        recipe.merge_count()
    );
    Picture {
        width: width.max(legend_end + margin),
        height: legend_y + 30.0,
        title: format!("Layer lineage of {title}"),
        description,
        rects,
        outlines,
        lines,
        marks,
        texts,
    }
}
