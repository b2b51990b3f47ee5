//! The search report for people: JSON, a Markdown table (base, siblings, baselines,
//! tailored) and `search.svg` (the search's progress on its own items beside the table's
//! rows on theirs; drawn by [`crate::plot`]).

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::eval::harness::{lm_eval_results, HarnessTask};
use crate::eval::TaskAbout;
use crate::human::human_count;
use crate::plot::{SearchPicture, TrialPoint};
use crate::score::{Estimate, HoldOut, Metric, ModelResult, ResultKind};

use super::objective::Objective;
use super::select::Finalist;

use super::SearchError;

/// Everything the report shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    pub tasks: Vec<String>,
    /// Items per task behind the table's scores.
    pub budget: usize,
    pub rows: Vec<ModelResult>,
    /// Every scored trial's guiding objective on the search's items (search.svg's left panel).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub progress: Vec<TrialPoint>,
    /// The chosen trials: the result first, then (a front) every other depth's choice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chosen: Vec<usize>,
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

    /// `search.svg`: the search's best so far on its own items, and the table's rows on
    /// theirs, in two panels (see [`crate::plot`]).
    pub fn to_svg(&self) -> String {
        let metric = Objective::parse(&self.objective).unwrap_or_default().guide;
        let rows_title = if self.rows_note.is_some() { "Held-out items".to_string() } else { format!("The search's items (first {})", self.budget) };
        let chosen_how = match (self.front.is_empty(), self.hold_out.is_some()) {
            (false, _) => "each depth's chosen candidate",
            (true, true) => "the chosen candidate (on the selection split)",
            (true, false) => "the chosen candidate",
        };
        crate::plot::search_svg(&SearchPicture {
            metric,
            trials: &self.progress,
            chosen: &self.chosen,
            chosen_how,
            rows: &self.rows,
            rows_title: &rows_title,
            chance: self.chance(),
        })
    }

    /// The accuracy of guessing over the table's tasks (their mean), when every task is
    /// multiple choice with a known chance level.
    pub fn chance(&self) -> Option<f64> {
        let per: Option<Vec<f64>> = self.tasks.iter().map(|t| self.about.iter().find(|(n, _)| n == t).and_then(|(_, a)| a.chance)).collect();
        per.filter(|p| !p.is_empty()).map(|p| p.iter().sum::<f64>() / p.len() as f64)
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
            progress: vec![
                TrialPoint { trial: 0, budget: 10, layers: 4, value: 0.9 },
                TrialPoint { trial: 1, budget: 100, layers: 4, value: 0.5 },
                TrialPoint { trial: 2, budget: 100, layers: 4, value: 0.7 },
                TrialPoint { trial: 3, budget: 100, layers: 4, value: 0.6 },
            ],
            chosen: vec![3],
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
        // Two panels (two frames) and one best-so-far line: from trial 2 (0.5) up to 0.7 at
        // trial 3, held to the last trial; the lower-budget 0.9 and the later 0.6 are no steps.
        assert_eq!(svg.matches("<path d=\"M").count(), 4, "two frames, one curve, the legend's error bar: {svg}");
        let curve = svg.lines().find(|l| l.contains("stroke-width=\"2.5\" fill=\"none\"")).unwrap();
        assert_eq!(curve.matches(" V").count(), 1, "one step up: {curve}");
        assert!(svg.contains("1 at lower budgets not shown") && svg.contains("the chosen candidate"), "{svg}");
        // The rows' panel: every row, what they were measured on, no held-out claim.
        assert!(svg.contains(">ShortGPT</text>") && svg.contains(">45.0</text>") && svg.contains("The search's items (first 100)"), "{svg}");
        assert!(!svg.contains("Held-out"), "no held-out panel without held-out rows");
        let back: SearchReport = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
        // report.json also carries lm-eval's shape for the tailored row.
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["results"]["a"]["acc,none"], 0.6);
        assert_eq!(v["n-samples"]["b"]["effective"], 100);
        // Held-out rows: their panel says so, with the chance level when the tasks know it.
        let mut about = crate::eval::TaskAbout::local("a.jsonl");
        about.chance = Some(0.25);
        let about = vec![("a".to_string(), about.clone()), ("b".to_string(), about)];
        let held = SearchReport { rows_note: Some("held-out items".into()), about, ..r };
        assert!(held.to_svg().contains(">Held-out items</text>") && held.to_svg().contains("chance 25"), "{}", held.to_svg());
        assert!(held.to_markdown().contains("on held-out items, at most 100 items per task"), "{}", held.to_markdown());
    }
}
