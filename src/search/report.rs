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
    /// The selection tasks (a validation set) the final choice was made on, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selection_tasks: Vec<String>,
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
    /// Whether the optimiser's own proposals beat the warm starts (absent without warm starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_vs_warm: Option<OwnVsWarm>,
}

/// What the optimiser's own proposals bought over its warm starts (the baselines'
/// candidates and the reference's hand-made ones), at the full budget on the search's
/// objective: a search whose own candidates never beat a warm start is worth no more than
/// its warm start and its final selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwnVsWarm {
    /// The guiding metric the values are of (higher is better).
    pub metric: Metric,
    /// The best warm start at the full budget: 0-based trial and value (`None`: no warm
    /// start reached the full budget).
    pub warm_trial: Option<usize>,
    pub warm: Option<Estimate>,
    /// Distinct candidates of the optimiser's own that reached the full budget.
    pub own: usize,
    /// How many of them beat the best warm start.
    pub beat: usize,
    /// The best of them: 0-based trial and value.
    pub own_trial: Option<usize>,
    pub own_best: Option<Estimate>,
    /// The chosen candidate minus the best warm start on the selection split (items the
    /// search never saw), by the selection metric, with the paired standard error (absent
    /// without a selection split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Estimate>,
}

impl OwnVsWarm {
    /// The comparison over `trials` (at depth `depth` only, for a front), or `None` when
    /// the search had no warm start. A promoted trial counts as the proposal it promotes
    /// (the first trial of its recipe).
    pub fn of(trials: &[super::trial::TrialRecord], full_budget: usize, metric: Metric, depth: Option<usize>) -> Option<Self> {
        use super::optimizer::Origin;
        let first_origin =
            |r: &crate::recipe::Recipe| trials.iter().find(|t| t.recipe == *r && t.origin != Origin::Promoted).map_or(Origin::Promoted, |t| t.origin);
        let in_depth = |t: &&super::trial::TrialRecord| depth.is_none_or(|k| t.recipe.layers.len() == k);
        if !trials.iter().filter(in_depth).any(|t| !t.origin.is_own()) {
            return None;
        }
        let value = |t: &super::trial::TrialRecord| t.objective.unwrap_or(Estimate { value: t.mean, se: 0.0 });
        let full: Vec<(usize, bool)> = trials
            .iter()
            .enumerate()
            .filter(|(_, t)| in_depth(t) && t.budget == full_budget && t.failed.is_none())
            .map(|(i, t)| (i, first_origin(&t.recipe).is_own()))
            .collect();
        let best_of = |own: bool| {
            full.iter()
                .filter(|(_, o)| *o == own)
                .map(|&(i, _)| i)
                .max_by(|&a, &b| value(&trials[a]).value.total_cmp(&value(&trials[b]).value).then(b.cmp(&a)))
        };
        let (warm_trial, own_trial) = (best_of(false), best_of(true));
        let warm = warm_trial.map(|i| value(&trials[i]));
        let mut own_recipes: Vec<&crate::recipe::Recipe> = Vec::new();
        let mut beat = 0;
        for &(i, own) in &full {
            if own && !own_recipes.contains(&&trials[i].recipe) {
                own_recipes.push(&trials[i].recipe);
                beat += usize::from(warm.is_some_and(|w| value(&trials[i]).value > w.value));
            }
        }
        let own_best = own_trial.map(|i| value(&trials[i]));
        Some(Self { metric, warm_trial, warm, own: own_recipes.len(), beat, own_trial, own_best, selection: None })
    }

    /// The best own candidate's value minus the best warm start's (positive: it beat it).
    pub fn margin(&self) -> Option<f64> {
        self.own_best.zip(self.warm).map(|(o, w)| o.value - w.value)
    }

    /// The report's sentence, then how the choice compares with the best warm start on the
    /// selection split (by `select`, the selection metric), when it was measured.
    pub fn sentences(&self, select: Metric) -> String {
        let Some(d) = self.selection else { return self.sentence() };
        let shown = match select {
            Metric::Acc | Metric::AccNorm => format!("{:+.1} ± {:.1} points", 100.0 * d.value, 100.0 * d.se),
            Metric::Ppl => format!("{:+.3} ± {:.3} nats per token", d.value, d.se),
            _ => format!("{:+.3} ± {:.3}", d.value, d.se),
        };
        let verdict = if d.value == 0.0 && d.se == 0.0 {
            "the choice is the warm start itself".to_string()
        } else if d.value > 2.0 * d.se {
            "better by more than two standard errors".to_string()
        } else if d.value < -2.0 * d.se {
            "worse by more than two standard errors".to_string()
        } else {
            "within two standard errors".to_string()
        };
        format!(
            "{} On the selection split (items the search never saw), the chosen candidate against the best warm start, {} paired on the same items: {shown} ({verdict}).",
            self.sentence(),
            select.name()
        )
    }

    /// One sentence for the report and the closing summary.
    pub fn sentence(&self) -> String {
        let m = self.metric;
        let diff = |d: f64| match m {
            Metric::Acc | Metric::AccNorm => format!("{:+.1} points", 100.0 * d),
            Metric::Ppl => format!("{d:+.3} nats per token"),
            _ => format!("{d:+.3}"),
        };
        let shown = |e: Estimate| match m {
            Metric::Ppl => format!("{:.3} ± {:.3} nats per token", e.value, e.se),
            _ => m.display(e),
        };
        let (Some(w), Some(wt)) = (self.warm, self.warm_trial) else {
            return format!(
                "Own proposals: no warm start reached the full budget, so none can be compared; {} candidates of the optimiser's own did.",
                self.own
            );
        };
        let head = format!("Own proposals against the best warm start (trial {}, {} {}), at the full budget:", wt + 1, m.name(), shown(w));
        match (self.own_trial, self.own_best, self.margin()) {
            (Some(t), Some(o), Some(d)) if self.beat > 0 => format!(
                "{head} {} of the {} candidates of the optimiser's own beat it, the best by {} (trial {}, {}).",
                self.beat,
                self.own,
                diff(d),
                t + 1,
                shown(o)
            ),
            (Some(t), Some(_), Some(d)) => format!(
                "{head} none of the {} candidates of the optimiser's own beat it; the closest was {} behind (trial {}): the result is the warm start's.",
                self.own,
                diff(d),
                t + 1
            ),
            _ => format!("{head} no candidate of the optimiser's own reached the full budget."),
        }
    }
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
        if let Some(o) = &self.own_vs_warm {
            let _ = writeln!(s, "\n{}", o.sentences(Objective::parse(&self.objective).unwrap_or_default().select));
        }
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
            let on = if self.selection_tasks.is_empty() {
                let split = self.hold_out.map_or(String::new(), |h| format!(" ({:.0} % of each task's items, seed {})", 100.0 * h.fraction, h.seed));
                format!("scored again on the selection split{split}")
            } else {
                format!("scored on the selection tasks ({})", self.selection_tasks.join(", "))
            };
            let _ = writeln!(s, "\nFinalists: the top candidates at the highest budget, {on}.\n");
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
                    "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
                    f.trial + 1,
                    f.merges,
                    f.sibling_layers,
                    o.guide.display(f.search),
                    100.0 * f.search_acc,
                    o.select.display(f.selection),
                    f.selection_acc.map_or("–".to_string(), |a| format!("{:.1}", 100.0 * a)),
                    diff,
                    match (f.chosen, f.warm_start) {
                        (true, true) => "✓ (best warm start)",
                        (true, false) => "✓",
                        (false, true) => "best warm start",
                        (false, false) => "",
                    }
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
        let chosen_how = match (self.front.is_empty(), self.hold_out.is_some(), self.selection_tasks.is_empty()) {
            (false, _, _) => "each depth's chosen candidate",
            (true, _, false) => "the chosen candidate (on the selection tasks)",
            (true, true, true) => "the chosen candidate (on the selection split)",
            (true, false, true) => "the chosen candidate",
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
            selection_tasks: Vec::new(),
            finalists: vec![],
            about: vec![],
            rows_note: None,
            front: vec![],
            own_vs_warm: None,
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

    fn trial(index: usize, origin: crate::search::optimizer::Origin, budget: usize, value: f64, from: usize) -> crate::search::trial::TrialRecord {
        let t = crate::testkit::template(4, 1);
        let rule = crate::recipe::Rule::Take("base".into());
        let layers = [0, from, 3].into_iter().map(|from| crate::recipe::LayerRule { from, rule: rule.clone() }).collect();
        crate::search::trial::TrialRecord {
            index,
            origin,
            budget,
            scores: Default::default(),
            mean: 0.0,
            seconds: 0.0,
            layers: None,
            recipe: crate::recipe::Recipe::new("llama", 4, t.base, t.siblings, layers, t.edges),
            objective: Some(Estimate { value, se: 0.1 }),
            measures: Default::default(),
            failed: None,
            worker: None,
            proposal: None,
        }
    }

    #[test]
    fn the_report_says_whether_own_proposals_beat_the_best_warm_start() {
        use crate::search::optimizer::Origin;
        // Warm start (layer 1 kept) promoted to the full budget at -4.7; an own proposal
        // (layer 2 kept) promoted to -4.6: one of one beat it, by 0.1.
        let trials = vec![
            trial(0, Origin::Baseline, 100, -4.9, 1),
            trial(1, Origin::Local, 100, -4.8, 2),
            trial(2, Origin::Promoted, 1000, -4.7, 1),
            trial(3, Origin::Promoted, 1000, -4.6, 2),
        ];
        let o = OwnVsWarm::of(&trials, 1000, Metric::Ppl, None).unwrap();
        assert_eq!((o.warm_trial, o.own, o.beat, o.own_trial), (Some(2), 1, 1, Some(3)));
        assert!((o.margin().unwrap() - 0.1).abs() < 1e-9);
        let line = o.sentence();
        assert!(
            line.contains("trial 3")
                && line.contains("1 of the 1 candidates of the optimiser's own beat it, the best by +0.100 nats per token (trial 4"),
            "{line}"
        );
        // Behind: none beat it, the closest named.
        let behind = OwnVsWarm::of(
            &trials[..3].iter().cloned().chain([trial(3, Origin::Promoted, 1000, -4.75, 2)]).collect::<Vec<_>>(),
            1000,
            Metric::Ppl,
            None,
        )
        .unwrap();
        assert_eq!(behind.beat, 0);
        assert!(
            behind
                .sentence()
                .contains("none of the 1 candidates of the optimiser's own beat it; the closest was -0.050 nats per token behind (trial 4)"),
            "{}",
            behind.sentence()
        );
        // The selection split's paired comparison follows when it was measured.
        let mut sel = o.clone();
        assert_eq!(sel.sentences(Metric::Ppl), o.sentence(), "not measured: the search-split sentence alone");
        sel.selection = Some(Estimate { value: 0.05, se: 0.02 });
        assert!(
            sel.sentences(Metric::Ppl)
                .ends_with("ppl paired on the same items: +0.050 ± 0.020 nats per token (better by more than two standard errors)."),
            "{}",
            sel.sentences(Metric::Ppl)
        );
        sel.selection = Some(Estimate { value: -0.01, se: 0.02 });
        assert!(sel.sentences(Metric::Ppl).contains("(within two standard errors)"));
        // No warm start at all: nothing to say; the report shows the line when there is one.
        assert_eq!(OwnVsWarm::of(&trials[1..2], 1000, Metric::Ppl, None), None);
        let r = SearchReport {
            tasks: vec![],
            budget: 1000,
            rows: vec![],
            progress: vec![],
            chosen: vec![],
            selection: String::new(),
            optimizer: "local".into(),
            seed: 0,
            trials: 4,
            scoring_seconds: 0.0,
            objective: "ppl".into(),
            hold_out: None,
            selection_tasks: Vec::new(),
            finalists: vec![],
            about: vec![],
            rows_note: None,
            front: vec![],
            own_vs_warm: Some(o),
        };
        assert!(r.to_markdown().contains("Own proposals against the best warm start (trial 3"), "{}", r.to_markdown());
        let back: SearchReport = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }
}
