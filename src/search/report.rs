//! The search report for people: JSON, a Markdown table (base, siblings, baselines,
//! tailored) and an SVG plot of the best score against trials for each method.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::eval::harness::{lm_eval_results, HarnessTask};
use crate::eval::TaskAbout;
use crate::human::human_count;
use crate::score::{Estimate, HoldOut, Metric, ModelResult, ResultKind};

use super::objective::Objective;
use super::plot::{esc, nice_ticks, round_label};
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
    /// What each task of the rows is (dataset, split, prompt); empty in older reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub about: Vec<(String, TaskAbout)>,
    /// What the rows were measured on when they are held-out items (`None`: the first
    /// `budget` calibration items, which the search optimised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_note: Option<String>,
    /// A front search's best candidate at every depth, smallest first (empty for one depth).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub front: Vec<super::front::FrontPoint>,
}

fn acc() -> String {
    "acc".into()
}

/// Files [`SearchReport::write`] creates in the output folder.
pub const JSON_FILE: &str = "report.json";
pub const MARKDOWN_FILE: &str = "report.md";
pub const SVG_FILE: &str = "search.svg";
/// The front's plot (front searches only).
pub const FRONT_SVG_FILE: &str = "front.svg";

impl SearchReport {
    /// The report, with the tailored row also as lm-evaluation-harness writes results
    /// (`results`, `n-samples`, `configs`, …) at the top level.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("a report always serialises");
        if let (Some(obj), Some(t)) = (v.as_object_mut(), self.rows.iter().find(|r| r.kind == ResultKind::Tailored)) {
            if let serde_json::Value::Object(h) = self.lm_eval(t) {
                obj.extend(h);
            }
        }
        serde_json::to_string_pretty(&v).expect("a report always serialises")
    }

    /// One row's scores in lm-evaluation-harness's shape.
    pub fn lm_eval(&self, row: &ModelResult) -> serde_json::Value {
        let local: Vec<(String, TaskAbout)> = row.scores.keys().map(|t| (t.clone(), TaskAbout::local(t))).collect();
        let abouts = |t: &str| self.about.iter().chain(&local).find(|(n, _)| n == t).map(|(_, a)| a).expect("local has every task");
        let tasks: Vec<HarnessTask<'_>> = row
            .scores
            .iter()
            .map(|(t, v)| {
                let n = row.items.get(t).copied().unwrap_or(self.budget);
                HarnessTask {
                    task: t,
                    about: abouts(t),
                    acc: Estimate { value: *v, se: row.se.get(t).copied().unwrap_or(0.0) },
                    acc_norm: row.acc_norm.get(t).map(|a| Estimate { value: *a, se: row.acc_norm_se.get(t).copied().unwrap_or(0.0) }),
                    effective: n,
                    original: n,
                }
            })
            .collect();
        lm_eval_results(&tasks)
    }

    /// Each other row against the tailored model (see [`crate::score::comparisons`]).
    pub fn comparisons(&self) -> Vec<String> {
        crate::score::comparisons(&self.rows)
    }

    /// A Markdown table: one row per model, one column per task plus the mean (for a
    /// front search, the front's table first, and the rows at the picked depth).
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        if !self.front.is_empty() {
            let measured = match &self.rows_note {
                Some(note) => format!("on {note}, at most {} items per task", self.budget),
                None => format!("on the first {} calibration items per task (the items the search optimised)", self.budget),
            };
            let picked_on = if self.rows_note.is_some() { " The pick is made on the search's own items, not on these." } else { "" };
            let _ = writeln!(
                s,
                "Front: the best candidate found at every depth by one search ({} trials), and the baselines at each depth; mean accuracy in % ± one standard error {measured}. {}{picked_on}\n\n![front]({FRONT_SVG_FILE})\n",
                self.trials,
                super::front::PICK_RULE
            );
            s.push_str(&super::front::markdown(&self.front));
            let cmp = super::front::comparisons(&self.front);
            if !cmp.is_empty() {
                let _ = writeln!(s);
                for c in cmp {
                    let _ = writeln!(s, "- {c}");
                }
            }
            let _ = writeln!(s, "\nThe picked point against the base, siblings and baselines at its depth:\n");
        }
        let _ = writeln!(s, "| model | kind | layers | params | {} | mean ± s.e. |", self.tasks.join(" | "));
        let _ = writeln!(s, "|---|---|---:|---:|{}---:|", "---:|".repeat(self.tasks.len()));
        for r in &self.rows {
            let cells: Vec<String> = self
                .tasks
                .iter()
                .map(|t| match (r.scores.get(t), r.se.get(t)) {
                    (Some(v), Some(e)) => format!("{:.2} ± {:.2}", 100.0 * v, 100.0 * e),
                    (Some(v), None) => format!("{:.2}", 100.0 * v),
                    _ => "–".into(),
                })
                .collect();
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
        let measured = match &self.rows_note {
            Some(note) => format!("on {note}, at most {} items per task", self.budget),
            None => {
                format!("on the first {} calibration items per task: the items the search optimised, so the tailored row is optimistic", self.budget)
            }
        };
        let _ = writeln!(
            s,
            "\nAccuracy in % {measured} (± one standard error). Search: {} (seed {}, objective {}), {} trials, {:.1} s scoring. {}",
            self.optimizer, self.seed, self.objective, self.trials, self.scoring_seconds, self.selection
        );
        let cmp = self.comparisons();
        if !cmp.is_empty() {
            let _ = writeln!(s);
            for c in cmp {
                let _ = writeln!(s, "- {c}");
            }
        }
        if !self.about.is_empty() {
            let _ = writeln!(s, "\nTasks:\n");
            for (name, a) in &self.about {
                let _ = writeln!(s, "- `{name}`: {} ({}). Prompt: {}.", a.title, dataset_line(a), a.prompt);
            }
        }
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

    /// The current choice's mean accuracy on the search's items against trials, one line
    /// per curve; coloured dashed lines for the rows not searched (base, siblings,
    /// baselines); the final choice's held-out score as a point, when the rows are held out.
    pub fn to_svg(&self) -> String {
        let refs: Vec<(String, f64)> = self.rows.iter().filter(|r| r.kind != ResultKind::Tailored).map(|r| (r.label.clone(), r.mean())).collect();
        let curves: Vec<Curve> =
            self.curves.iter().map(|c| Curve { label: format!("{} (search items)", c.label), points: c.points.clone() }).collect();
        let marker = self
            .rows_note
            .as_ref()
            .and_then(|_| self.rows.iter().find(|r| r.kind == ResultKind::Tailored))
            .map(|r| ("final choice, held-out".to_string(), r.mean()));
        let title = if self.rows_note.is_some() {
            "Mean accuracy: the search's choice on its items; reference lines on held-out items"
        } else {
            "Mean accuracy of the search's current choice (calibration items)"
        };
        plot_svg(title, &curves, &refs, marker)
    }

    /// Write `report.json`, `report.md` and `search.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), SearchError> {
        let w = |name: &str, text: String| {
            let p = dir.join(name);
            crate::fsutil::write_atomic(&p, text.as_bytes()).map_err(|source| SearchError::Write { path: p.display().to_string(), source })
        };
        w(JSON_FILE, self.to_json())?;
        w(MARKDOWN_FILE, self.to_markdown())?;
        if !self.front.is_empty() {
            w(FRONT_SVG_FILE, self.front_svg())?;
        }
        w(SVG_FILE, self.to_svg())
    }

    /// The front plot: accuracy against parameters, base and siblings as points.
    pub fn front_svg(&self) -> String {
        super::front::svg_with_rows(&self.front, &self.rows)
    }
}

/// `dataset cais/mmlu, config all, split validation, 0-shot`.
pub fn dataset_line(a: &TaskAbout) -> String {
    let mut parts = vec![if a.hub { format!("Hub dataset `{}`", a.dataset) } else { format!("file `{}`", a.dataset) }];
    if let Some(c) = &a.config {
        parts.push(format!("config `{c}`"));
    }
    if let Some(sp) = &a.split {
        parts.push(format!("split `{sp}`"));
    }
    parts.push(format!("{}-shot", a.num_fewshot));
    parts.join(", ")
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
/// Reference lines (base, siblings, baselines): colours apart from the curves' first.
const REF_COLOURS: [&str; 8] = ["#555555", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];

/// A hand-written SVG line plot of step curves (x = trial, y = accuracy in %), with the
/// reference rows as coloured dashed lines labelled at their right end, and `marker`
/// (the final choice's score on held-out items) as a point after the last trial.
pub fn plot_svg(title: &str, curves: &[Curve], refs: &[(String, f64)], marker: Option<(String, f64)>) -> String {
    let (w, h) = (760.0, 440.0);
    let (left, right, top, bottom) = (60.0, 230.0, 40.0, 50.0);
    let n = curves.iter().map(|c| c.points.len()).max().unwrap_or(0).max(1);
    let values: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.points.iter().flatten().copied())
        .chain(refs.iter().map(|r| r.1))
        .chain(marker.iter().map(|m| m.1))
        .map(|v| 100.0 * v)
        .collect();
    let (mut lo, mut hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    if !lo.is_finite() {
        (lo, hi) = (0.0, 100.0);
    }
    let yt = nice_ticks(lo.max(0.0), hi.min(100.0), 5);
    let (lo, hi) = (yt[0], *yt.last().expect("at least one tick"));
    let xt: Vec<f64> = nice_ticks(1.0, n as f64, 5).into_iter().filter(|t| *t >= 1.0 && *t <= n as f64).collect();
    let x = |t: f64| left + (w - left - right) * if n > 1 { (t - 1.0) / (n as f64 - 1.0) } else { 0.5 };
    let y = |v: f64| top + (h - top - bottom) * (1.0 - (100.0 * v - lo) / (hi - lo).max(1e-9));
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(s, r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#, (w - right + left) / 2.0, esc(title));
    // Axes and round ticks.
    let _ = writeln!(s, r##"<path d="M{left} {top} V{} H{}" stroke="#333" fill="none"/>"##, h - bottom, w - right);
    for v in &yt {
        let yv = y(v / 100.0);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yv:.1}" y2="{yv:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            yv + 4.0,
            round_label(*v)
        );
    }
    for t in &xt {
        let _ = writeln!(s, r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#, x(*t), h - bottom + 18.0, round_label(*t));
    }
    let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="middle">trials</text>"#, (w - right + left) / 2.0, h - 12.0);
    let _ = writeln!(s, r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">mean accuracy (%)</text>"#, h / 2.0, h / 2.0);
    // Reference lines: each its own colour and dash, labelled where it ends; labels that
    // would overlap are pushed apart.
    let mut placed: Vec<f64> = Vec::new();
    let mut order: Vec<usize> = (0..refs.len()).collect();
    order.sort_by(|a, b| refs[*b].1.total_cmp(&refs[*a].1));
    for i in order {
        let (label, v) = &refs[i];
        let colour = REF_COLOURS[i % REF_COLOURS.len()];
        let yv = y(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{yv:.1}" y2="{yv:.1}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="{}"/>"##,
            w - right,
            ["6 3", "2 3", "10 3 2 3", "4 4"][i % 4]
        );
        let mut ly = yv + 4.0;
        while placed.iter().any(|p| (p - ly).abs() < 13.0) {
            ly += 13.0;
        }
        placed.push(ly);
        let _ = writeln!(s, r#"<text x="{}" y="{ly:.1}" fill="{colour}">{} ({:.1})</text>"#, w - right + 8.0, esc(label), 100.0 * v);
    }
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
            let _ = writeln!(s, r#"<path d="{d}" stroke="{colour}" stroke-width="2.5" fill="none"/>"#);
        }
        if let Some(v) = c.points.iter().rev().flatten().next().copied() {
            let mut ly = y(v) - 6.0;
            while placed.iter().any(|p| (p - ly).abs() < 13.0) {
                ly -= 13.0;
            }
            placed.push(ly);
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{ly:.1}" fill="{colour}" font-weight="bold">{} ({:.1})</text>"#,
                w - right + 8.0,
                esc(&c.label),
                100.0 * v
            );
        }
    }
    if let Some((label, v)) = marker {
        let (px, py) = (x(n as f64), y(v));
        let _ = writeln!(s, r##"<circle cx="{px:.1}" cy="{py:.1}" r="5" fill="#000"/>"##);
        let mut ly = py + 4.0;
        while placed.iter().any(|p| (p - ly).abs() < 13.0) {
            ly += 13.0;
        }
        let _ = writeln!(s, r#"<text x="{}" y="{ly:.1}" font-weight="bold">● {} ({:.1})</text>"#, w - right + 8.0, esc(&label), 100.0 * v);
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
            acc_norm: Default::default(),
            acc_norm_se: Default::default(),
            items: Default::default(),
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
            about: vec![],
            rows_note: None,
            front: vec![],
        };
        let md = r.to_markdown();
        assert!(md.contains("| base | base | 4 | 1.23M | 50.00 | 70.00 | 60.00 |"), "{md}");
        assert!(md.contains("| hf-tailor | tailored |"), "{md}");
        let svg = r.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("bo (search items) (70.0)") && svg.contains("ShortGPT (45.0)"), "{svg}");
        assert_eq!(svg.matches("<path d=\"M").count(), 2, "axes + one curve");
        // Reference lines are told apart by colour, not only by dash.
        let strokes: std::collections::BTreeSet<&str> =
            svg.lines().filter(|l| l.contains("stroke-dasharray")).filter_map(|l| l.split("stroke=\"").nth(1)?.split('"').next()).collect();
        assert_eq!(strokes.len(), 2, "{svg}");
        assert!(!svg.contains("held-out"), "no held-out point without held-out rows");
        let back: SearchReport = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        // report.json also carries lm-eval's shape for the tailored row.
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["results"]["a"]["acc,none"], 0.6);
        assert_eq!(v["n-samples"]["b"]["effective"], 100);
        // Held-out rows: the final choice's held-out score is drawn beside the curve.
        let held = SearchReport { rows_note: Some("held-out items".into()), ..r };
        assert!(held.to_svg().contains("final choice, held-out (70.0)"), "{}", held.to_svg());
        assert!(held.to_markdown().contains("on held-out items, at most 100 items per task"), "{}", held.to_markdown());
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_ticks(41.7, 64.3, 5), vec![40.0, 45.0, 50.0, 55.0, 60.0, 65.0]);
        assert_eq!(nice_ticks(1.0, 120.0, 5), vec![0.0, 50.0, 100.0, 150.0]);
        assert_eq!(nice_ticks(0.0, 1.0, 4), vec![0.0, 0.5, 1.0]);
        assert_eq!(round_label(45.0), "45");
        assert_eq!(round_label(2.5), "2.5");
    }
}
