//! The interface between the search and the evaluator, and the result rows every report,
//! table and model card shows. Kept apart so the search can be tested with synthetic
//! scorers and the evaluator can be swapped (CPU, CUDA) without touching the search.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::recipe::Recipe;

/// Accuracy in [0, 1] per calibration task name (higher is better).
pub type TaskScores = BTreeMap<String, f64>;

/// A candidate whose scores are not numbers (NaN or infinite log-likelihoods, from
/// non-finite weights or an absurd merge coefficient). A scorer reports it as (the cause
/// of) its error; the search journals the trial as failed instead of comparing it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NonFiniteScores(pub String);

/// The [`NonFiniteScores`] in `e`'s chain of causes, if any.
pub fn non_finite_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a NonFiniteScores> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(n) = c.downcast_ref::<NonFiniteScores>() {
            return Some(n);
        }
        cur = c.source();
    }
    None
}

/// Scores candidates in memory. Implemented by `eval::Evaluator`.
pub trait Scorer {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Names of the multiple-choice calibration tasks (those with accuracy), in a fixed order.
    fn task_names(&self) -> Vec<String>;

    /// Measure `recipe` on the first `budget` of `items` of every multiple-choice task (for
    /// MMLU, the first `budget` per subject) and on every calibration text of `items`, all
    /// from one set of forward passes: multiple-choice tasks carry [`Metric::Acc`],
    /// [`Metric::Loglik`] and [`Metric::Margin`], text tasks [`Metric::Ppl`], each with its
    /// standard error and per-item values. Deterministic for a given recipe, budget and items.
    fn measure(&mut self, recipe: &Recipe, budget: usize, items: Items) -> Result<Measures, Self::Error>;

    /// Accuracy of `recipe` on the first `budget` items of every multiple-choice task.
    fn score(&mut self, recipe: &Recipe, budget: usize) -> Result<TaskScores, Self::Error> {
        Ok(accuracies(&self.measure(recipe, budget, Items::All)?))
    }

    /// Mean cosine similarity between the hidden states at layer boundaries on `texts`:
    /// entry `[i][j]` compares the input of output layer `i` with the input of layer `j`
    /// (index `n_layers` = output of the last layer, before the final norm), averaged over
    /// every non-padding token. Used by ShortGPT / angular-distance baselines.
    fn boundary_cosines(&mut self, recipe: &Recipe, texts: &[String]) -> Result<Vec<Vec<f64>>, Self::Error>;

    /// Perplexity of `recipe` on `texts` (token-weighted, SLEB's criterion).
    fn perplexity(&mut self, recipe: &Recipe, texts: &[String]) -> Result<f64, Self::Error>;

    /// Layer applications run and saved so far (cumulative), for scorers that run layers.
    fn layer_work(&self) -> Option<LayerWork> {
        None
    }

    /// A hint: `recipe` (the search's incumbent) is worth keeping warm in any cache.
    fn prefer(&mut self, _recipe: &Recipe) {}
}

/// Layer applications (one layer on one batch) a scorer ran, and those it skipped by
/// reusing cached hidden states of shared prefixes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerWork {
    pub run: u64,
    pub saved: u64,
}

impl LayerWork {
    /// The work done between `earlier` and `self`.
    pub fn since(self, earlier: LayerWork) -> LayerWork {
        LayerWork { run: self.run.saturating_sub(earlier.run), saved: self.saved.saturating_sub(earlier.saved) }
    }

    /// Fraction of the layer applications that were saved.
    pub fn saved_fraction(self) -> f64 {
        let total = self.run + self.saved;
        if total == 0 {
            0.0
        } else {
            self.saved as f64 / total as f64
        }
    }
}

/// Accuracy per task of the tasks that have one.
pub fn accuracies(m: &Measures) -> TaskScores {
    m.iter().filter_map(|(t, x)| x.metrics.get(&Metric::Acc).map(|e| (t.clone(), e.value))).collect()
}

/// Standard errors of the accuracies of [`accuracies`].
pub fn accuracy_errors(m: &Measures) -> TaskScores {
    m.iter().filter_map(|(t, x)| x.metrics.get(&Metric::Acc).map(|e| (t.clone(), e.se))).collect()
}

/// One row of a results table: a model (base, sibling, baseline or tailored) and its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResult {
    /// Display name (`base`, `wizardlm`, `ShortGPT`, `hf-tailor`).
    pub label: String,
    pub kind: ResultKind,
    pub layers: usize,
    pub params: u64,
    pub scores: TaskScores,
    /// Standard error of each score (empty in reports written before they were recorded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub se: TaskScores,
    /// lm-eval's `acc_norm` (choice log-likelihood divided by its length in characters)
    /// per task, with its standard error (empty when not measured).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub acc_norm: TaskScores,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub acc_norm_se: TaskScores,
    /// Items scored per task (empty in reports written before they were recorded).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub items: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultKind {
    Base,
    Sibling,
    Baseline,
    Tailored,
}

impl ModelResult {
    /// A row from the measures of one scoring call (accuracy and `acc_norm` with their
    /// standard errors, items per task).
    pub fn from_measures(label: String, kind: ResultKind, layers: usize, params: u64, m: &Measures) -> Self {
        let of = |metric: Metric, se: bool| -> TaskScores {
            m.iter().filter_map(|(t, x)| x.metrics.get(&metric).map(|e| (t.clone(), if se { e.se } else { e.value }))).collect()
        };
        Self {
            label,
            kind,
            layers,
            params,
            scores: of(Metric::Acc, false),
            se: of(Metric::Acc, true),
            acc_norm: of(Metric::AccNorm, false),
            acc_norm_se: of(Metric::AccNorm, true),
            items: m.iter().filter(|(_, x)| x.metrics.contains_key(&Metric::Acc)).map(|(t, x)| (t.clone(), x.items)).collect(),
        }
    }

    /// The mean accuracy with its standard error, as `54.5 ± 1.3` (points).
    pub fn mean_display(&self) -> String {
        if self.se.is_empty() {
            format!("{:.1}", 100.0 * self.mean())
        } else {
            format!("{:.1} ± {:.1}", 100.0 * self.mean(), 100.0 * self.mean_se())
        }
    }

    /// Mean accuracy over tasks (the search's headline number).
    pub fn mean(&self) -> f64 {
        mean_score(&self.scores)
    }

    /// Standard error of [`ModelResult::mean`] (tasks independent); 0 when not recorded.
    pub fn mean_estimate(&self) -> Estimate {
        Estimate { value: self.mean(), se: self.mean_se() }
    }

    pub fn mean_se(&self) -> f64 {
        let n = self.scores.len().max(1) as f64;
        self.se.values().map(|s| s * s).sum::<f64>().sqrt() / n
    }
}

/// Unweighted mean over tasks; 0 for no task.
pub fn mean_score(scores: &TaskScores) -> f64 {
    if scores.is_empty() {
        0.0
    } else {
        scores.values().sum::<f64>() / scores.len() as f64
    }
}

/// A measured mean with its standard error (of the mean over items).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub se: f64,
}

impl Estimate {
    /// The mean of `values` and its standard error (sample standard deviation / √n; 0 for
    /// fewer than two values).
    pub fn of(values: &[f64]) -> Self {
        Self::weighted(values, &vec![1.0; values.len()])
    }

    /// The `weights`-weighted mean of `values` (a ratio estimator: Σwx / Σw) and its
    /// standard error by linearisation, √(n/(n−1) Σ w²(x − mean)²) / Σw — for unit weights
    /// the usual s/√n. Token-weighted per-text log-likelihoods use it.
    pub fn weighted(values: &[f64], weights: &[f64]) -> Self {
        let n = values.len();
        let total: f64 = weights.iter().sum();
        if n == 0 || total <= 0.0 {
            return Self::default();
        }
        let value = values.iter().zip(weights).map(|(x, w)| x * w).sum::<f64>() / total;
        if n < 2 {
            return Self { value, se: 0.0 };
        }
        let ss: f64 = values.iter().zip(weights).map(|(x, w)| (w * (x - value)).powi(2)).sum();
        Self { value, se: (ss * n as f64 / (n - 1) as f64).sqrt() / total }
    }

    /// The unweighted mean of independent estimates (tasks): √(Σ se²) / n.
    pub fn mean_of(parts: &[Estimate]) -> Self {
        if parts.is_empty() {
            return Self::default();
        }
        let n = parts.len() as f64;
        Self { value: parts.iter().map(|e| e.value).sum::<f64>() / n, se: parts.iter().map(|e| e.se * e.se).sum::<f64>().sqrt() / n }
    }
}

/// What a score measures, item by item; higher is better for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Multiple choice: 1 when the correct choice has the highest log-likelihood (lm-eval `acc`).
    Acc,
    /// Multiple choice: log-likelihood per token of the correct choice.
    Loglik,
    /// Multiple choice: log-likelihood per token of the correct choice minus the best wrong
    /// choice's (positive exactly when the per-token ranking is right).
    Margin,
    /// Calibration text: log-likelihood per token, token-weighted (−ln perplexity).
    Ppl,
    /// Multiple choice: 1 when the correct choice has the highest log-likelihood per
    /// character (lm-eval `acc_norm`). Reported, never optimised (not in [`Metric::ALL`]).
    AccNorm,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Acc, Metric::Loglik, Metric::Margin, Metric::Ppl];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::Acc => "acc",
            Metric::Loglik => "loglik",
            Metric::Margin => "margin",
            Metric::Ppl => "ppl",
            Metric::AccNorm => "acc_norm",
        }
    }

    /// The value as people read it: accuracy in %, perplexity, nats per token.
    pub fn display(self, e: Estimate) -> String {
        match self {
            Metric::Acc | Metric::AccNorm => format!("{:.1} ± {:.1}", 100.0 * e.value, 100.0 * e.se),
            // exp(−x) ± its delta-method error.
            Metric::Ppl => format!("{:.2} ± {:.2}", (-e.value).exp(), (-e.value).exp() * e.se),
            Metric::Loglik | Metric::Margin => format!("{:.3} ± {:.3}", e.value, e.se),
        }
    }
}

/// Per-item values of one metric on one task (weights: 1 per multiple-choice item, tokens
/// per text), kept so that two candidates scored on the same items can be compared paired.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemValues {
    pub values: Vec<f64>,
    pub weights: Vec<f64>,
}

impl ItemValues {
    pub fn estimate(&self) -> Estimate {
        Estimate::weighted(&self.values, &self.weights)
    }
}

/// What one scoring call measured on one task.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TaskMeasures {
    /// Items (multiple choice) or texts (perplexity) scored.
    pub items: usize,
    pub metrics: BTreeMap<Metric, Estimate>,
    /// The per-item values behind `metrics` (not journaled).
    #[serde(skip)]
    pub per_item: BTreeMap<Metric, ItemValues>,
}

/// Measures of every task (multiple-choice and perplexity) by task name.
pub type Measures = BTreeMap<String, TaskMeasures>;

/// Which calibration items a scoring call sees. The selection split is held out from the
/// calibration items the search sees, so the final choice is made on items that did not
/// drive the search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Items {
    /// Every item (budgets count from the first).
    All,
    /// The items `HoldOut` leaves to the search.
    Search(HoldOut),
    /// The items `HoldOut` keeps back for the final selection (budget ignored: all of them).
    Selection(HoldOut),
    /// Every item of the scorer's selection tasks, a validation set of their own that the
    /// search never scores its trials on (`search --selection-tasks`; budget ignored).
    Validation,
}

/// A seeded split of each task's items into search and selection items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HoldOut {
    /// Fraction of each task's items (texts too) kept for selection, in (0, 1).
    pub fraction: f64,
    pub seed: u64,
}

impl HoldOut {
    /// Whether each of `n` items of `task` is held out for selection: `round(fraction · n)`
    /// items (at least one, and at least one left to the search when `n ≥ 2`), drawn by a
    /// seeded shuffle that depends on the task's name, so tasks do not share a pattern.
    pub fn selection_mask(&self, task: &str, n: usize) -> Vec<bool> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let mut mask = vec![false; n];
        if n < 2 {
            return mask;
        }
        let k = ((self.fraction * n as f64).round() as usize).clamp(1, n - 1);
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, self.seed.to_le_bytes());
        sha2::Digest::update(&mut h, task.as_bytes());
        let seed: [u8; 32] = sha2::Digest::finalize(h).into();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::from_seed(seed));
        for &i in &order[..k] {
            mask[i] = true;
        }
        mask
    }
}

/// The difference `a − b` of one metric between two candidates scored on the same items,
/// with the standard error of the paired difference (task by task, then the mean over
/// tasks). `None` when the per-item values are missing or the items differ.
pub fn paired_difference(a: &Measures, b: &Measures, metric: Metric) -> Option<Estimate> {
    let mut parts = Vec::new();
    for (task, ma) in a {
        let Some(va) = ma.per_item.get(&metric) else { continue };
        let vb = b.get(task)?.per_item.get(&metric)?;
        if va.values.len() != vb.values.len() || va.weights != vb.weights {
            return None;
        }
        let d: Vec<f64> = va.values.iter().zip(&vb.values).map(|(x, y)| x - y).collect();
        parts.push(Estimate::weighted(&d, &va.weights));
    }
    (!parts.is_empty()).then(|| Estimate::mean_of(&parts))
}

/// The difference `a − b` of two independent estimates and whether it is at least two
/// standard errors: the wording every report, card and README uses for "better".
pub fn clear_difference(a: Estimate, b: Estimate) -> (Estimate, bool) {
    let d = Estimate { value: a.value - b.value, se: (a.se * a.se + b.se * b.se).sqrt() };
    (d, d.se > 0.0 && d.value.abs() >= 2.0 * d.se)
}

/// Each other row against the tailored one: the difference of mean accuracy with its
/// standard error, called higher or lower only at two standard errors or more.
pub fn comparisons(rows: &[ModelResult]) -> Vec<String> {
    let Some(t) = rows.iter().find(|r| r.kind == ResultKind::Tailored) else { return Vec::new() };
    if t.se.is_empty() {
        return Vec::new();
    }
    rows.iter()
        .filter(|r| r.kind != ResultKind::Tailored && !r.se.is_empty())
        .map(|r| {
            let (d, clear) = clear_difference(t.mean_estimate(), r.mean_estimate());
            let verdict = match (clear, d.value > 0.0) {
                (true, true) => "higher, by at least two standard errors",
                (true, false) => "lower, by at least two standard errors",
                (false, _) => "within two standard errors: not a measurable difference",
            };
            format!("{} vs {}: {:+.1} ± {:.1} points ({verdict})", t.label, r.label, 100.0 * d.value, 100.0 * d.se)
        })
        .collect()
}
