//! The search report for people: JSON, a Markdown table (base, siblings, baselines,
//! tailored) and an SVG plot of the best score against trials for each method.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::human::human_count;
use crate::score::{HoldOut, Metric, ModelResult, ResultKind};

use super::objective::Objective;
use super::select::Finalist;

use super::SearchError;

/// Best-so-far mean accuracy after each trial for one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub label: String,
    pub points: Vec<Option<f64>>,
}

/// Everything the report shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    pub tasks: Vec<String>,
    /// Items per task behind the table's scores.
    pub budget: usize,
    pub rows: Vec<ModelResult>,
    pub curves: Vec<Curve>,
    /// How the tailored model was chosen, in words.
    pub selection: String,
    pub optimizer: String,
    pub seed: u64,
    pub trials: usize,
    /// Seconds spent scoring trials.
    pub scoring_seconds: f64,
    /// What the search optimised (`acc` in reports written before objectives).
    #[serde(default = "acc")]
    pub objective: String,
    /// The selection split the final choice was made on, if any.
    #[serde(default)]
    pub hold_out: Option<HoldOut>,
    /// The top candidates with their search and selection scores.
    #[serde(default)]
    pub finalists: Vec<Finalist>,
}

fn acc() -> String {
    "acc".into()
}

/// Files [`SearchReport::write`] creates in the output folder.
pub const JSON_FILE: &str = "report.json";
pub const MARKDOWN_FILE: &str = "report.md";
pub const SVG_FILE: &str = "search.svg";

impl SearchReport {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// A Markdown table: one row per model, one column per task plus the mean.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| model | kind | layers | params | {} | mean ± s.e. |", self.tasks.join(" | "));
        let _ = writeln!(s, "|---|---|---:|---:|{}---:|", "---:|".repeat(self.tasks.len()));
        for r in &self.rows {
            let cells: Vec<String> = self.tasks.iter().map(|t| r.scores.get(t).map_or("–".into(), |v| format!("{:.2}", 100.0 * v))).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2}{} |",
                r.label,
                kind_name(r.kind),
                r.layers,
                human_count(r.params),
                cells.join(" | "),
                100.0 * r.mean(),
                if r.se.is_empty() { String::new() } else { format!(" ± {:.2}", 100.0 * r.mean_se()) }
            );
        }
        let _ = writeln!(
            s,
            "\nAccuracy in %, first {} items per task (± one standard error). Search: {} (seed {}, objective {}), {} trials, {:.1} s scoring. {}",
            self.budget, self.optimizer, self.seed, self.objective, self.trials, self.scoring_seconds, self.selection
        );
        if !self.finalists.is_empty() {
            let o = Objective::parse(&self.objective).unwrap_or_default();
            let split = self.hold_out.map_or(String::new(), |h| format!(" ({:.0} % of each task's items, seed {})", 100.0 * h.fraction, h.seed));
            let _ = writeln!(s, "\nFinalists: the top candidates at the highest budget, scored again on the selection split{split}.\n");
            let _ = writeln!(
                s,
                "| trial | merges | sibling layers | search {} | search acc | selection {} | selection acc | vs best | chosen |",
                o.guide.name(),
                o.select.name()
            );
            let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|");
            for f in &self.finalists {
                let diff = match o.select {
                    Metric::Acc => format!("{:+.1} ± {:.1}", 100.0 * f.behind_best.value, 100.0 * f.behind_best.se),
                    _ => format!("{:+.3} ± {:.3}", f.behind_best.value, f.behind_best.se),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {:.1} | {} | {:.1} | {} | {} |",
                    f.trial + 1,
                    f.merges,
                    f.sibling_layers,
                    o.guide.display(f.search),
                    100.0 * f.search_acc,
                    o.select.display(f.selection),
                    100.0 * f.selection_acc,
                    diff,
                    if f.chosen { "✓" } else { "" }
                );
            }
        }
        s
    }

    /// The current choice's mean accuracy against trials, one line per curve, dashed lines for the
    /// non-searched rows (base, siblings, baselines).
    pub fn to_svg(&self) -> String {
        let refs: Vec<(String, f64)> = self.rows.iter().filter(|r| r.kind != ResultKind::Tailored).map(|r| (r.label.clone(), r.mean())).collect();
        plot_svg("Mean accuracy of the search's current choice", &self.curves, &refs)
    }

    /// Write `report.json`, `report.md` and `search.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), SearchError> {
        let w = |name: &str, text: String| {
            let p = dir.join(name);
            crate::fsutil::write_atomic(&p, text.as_bytes()).map_err(|source| SearchError::Write { path: p.display().to_string(), source })
        };
        w(JSON_FILE, self.to_json())?;
        w(MARKDOWN_FILE, self.to_markdown())?;
        w(SVG_FILE, self.to_svg())
    }
}

fn kind_name(k: ResultKind) -> &'static str {
    match k {
        ResultKind::Base => "base",
        ResultKind::Sibling => "sibling",
        ResultKind::Baseline => "baseline",
        ResultKind::Tailored => "tailored",
    }
}

const COLOURS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A hand-written SVG line plot of step curves (x = trial, y = accuracy in %).
pub fn plot_svg(title: &str, curves: &[Curve], refs: &[(String, f64)]) -> String {
    let (w, h) = (720.0, 420.0);
    let (left, right, top, bottom) = (60.0, 200.0, 40.0, 50.0);
    let n = curves.iter().map(|c| c.points.len()).max().unwrap_or(0).max(1);
    let values: Vec<f64> = curves.iter().flat_map(|c| c.points.iter().flatten().copied()).chain(refs.iter().map(|r| r.1)).collect();
    let (mut lo, mut hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(0.01);
    let (lo, hi) = ((lo - pad).max(0.0), (hi + pad).min(1.0));
    let x = |t: f64| left + (w - left - right) * if n > 1 { (t - 1.0) / (n as f64 - 1.0) } else { 0.5 };
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (v - lo) / (hi - lo).max(1e-9));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#, (w - right + left) / 2.0, esc(title));
    // Axes and ticks.
    let _ = writeln!(s, r##"<path d="M{left} {top} V{} H{}" stroke="#333" fill="none"/>"##, h - bottom, w - right);
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{:.1}</text>"##,
            w - right,
            left - 6.0,
            y(v) + 4.0,
            100.0 * v,
            y = y(v)
        );
    }
    for k in 0..=4 {
        let t = 1.0 + (n as f64 - 1.0) * k as f64 / 4.0;
        let _ = writeln!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#, x(t), h - bottom + 18.0, t.round());
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">trials</text>"#, (w - right + left) / 2.0, h - 12.0);
    let _ = writeln!(s, r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">mean accuracy (%)</text>"#, h / 2.0, h / 2.0);
    let mut legend_y = top + 10.0;
    for (i, (label, v)) in refs.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yv:.1}" y2="{yv:.1}" stroke="#999" stroke-dasharray="{}"/>"##,
            w - right,
            ["4 3", "1 3", "8 3", "2 2"][i % 4],
            yv = y(*v)
        );
        let _ = writeln!(
            s,
            r##"<line x1="{}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#999" stroke-dasharray="{}"/><text x="{}" y="{:.1}" fill="#666">{} ({:.1})</text>"##,
            w - right + 8.0,
            w - right + 20.0,
            ["4 3", "1 3", "8 3", "2 2"][i % 4],
            w - right + 24.0,
            legend_y,
            esc(label),
            100.0 * v,
            y = legend_y - 4.0
        );
        legend_y += 16.0;
    }
    legend_y += 8.0;
    for (i, c) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        for (t, p) in c.points.iter().enumerate() {
            let Some(v) = p else { continue };
            let (px, py) = (x(t as f64 + 1.0), y(*v));
            // A step curve: hold the previous best until this trial, then jump.
            let _ = if d.is_empty() { write!(d, "M{px:.1} {py:.1}") } else { write!(d, " H{px:.1} V{py:.1}") };
        }
        if !d.is_empty() {
            let _ = writeln!(s, r#"<path d="{d}" stroke="{colour}" stroke-width="2" fill="none"/>"#);
        }
        let last = c.points.iter().rev().flatten().next().copied();
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{:.1}" width="12" height="3" fill="{colour}"/><text x="{}" y="{:.1}">{}{}</text>"#,
            w - right + 8.0,
            legend_y - 5.0,
            w - right + 24.0,
            legend_y,
            esc(&c.label),
            last.map(|v| format!(" ({:.1})", 100.0 * v)).unwrap_or_default()
        );
        legend_y += 16.0;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, kind: ResultKind, a: f64, b: f64) -> ModelResult {
        ModelResult {
            label: label.into(),
            kind,
            layers: 4,
            params: 1_234_567,
            scores: [("a".into(), a), ("b".into(), b)].into(),
            se: Default::default(),
        }
    }

    #[test]
    fn markdown_and_svg_show_every_row_and_curve() {
        let r = SearchReport {
            tasks: vec!["a".into(), "b".into()],
            budget: 100,
            rows: vec![
                row("base", ResultKind::Base, 0.5, 0.7),
                row("ShortGPT", ResultKind::Baseline, 0.4, 0.5),
                row("hf-tailor", ResultKind::Tailored, 0.6, 0.8),
            ],
            curves: vec![Curve { label: "bo".into(), points: vec![None, Some(0.5), Some(0.7)] }],
            selection: "rule".into(),
            optimizer: "bo".into(),
            seed: 0,
            trials: 3,
            scoring_seconds: 1.0,
            objective: "acc".into(),
            hold_out: None,
            finalists: vec![],
        };
        let md = r.to_markdown();
        assert!(md.contains("| base | base | 4 | 1.23M | 50.00 | 70.00 | 60.00 |"), "{md}");
        assert!(md.contains("| hf-tailor | tailored |"), "{md}");
        let svg = r.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("bo (70.0)") && svg.contains("ShortGPT (45.0)"), "{svg}");
        assert_eq!(svg.matches("<path d=\"M").count(), 2, "axes + one curve");
        let back: SearchReport = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }
}
