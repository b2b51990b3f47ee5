//! The interface between the search and the evaluator, and the result rows every report,
//! table and model card shows. Kept apart so the search can be tested with synthetic
//! scorers and the evaluator can be swapped (CPU, CUDA) without touching the search.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::recipe::Recipe;

/// Accuracy in [0, 1] per calibration task name (higher is better).
pub type TaskScores = BTreeMap<String, f64>;

/// Scores candidates in memory. Implemented by `eval::Evaluator`.
pub trait Scorer {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Names of the calibration tasks `score` reports, in a fixed order.
    fn task_names(&self) -> Vec<String>;

    /// Score `recipe` on the first `budget` items of every calibration task (for MMLU,
    /// the first `budget` per subject). Deterministic for a given recipe and budget.
    fn score(&mut self, recipe: &Recipe, budget: usize) -> Result<TaskScores, Self::Error>;

    /// Mean cosine similarity between the hidden states at layer boundaries on `texts`:
    /// entry `[i][j]` compares the input of output layer `i` with the input of layer `j`
    /// (index `n_layers` = output of the last layer, before the final norm), averaged over
    /// every non-padding token. Used by ShortGPT / angular-distance baselines.
    fn boundary_cosines(&mut self, recipe: &Recipe, texts: &[String]) -> Result<Vec<Vec<f64>>, Self::Error>;

    /// Perplexity of `recipe` on `texts` (token-weighted, SLEB's criterion).
    fn perplexity(&mut self, recipe: &Recipe, texts: &[String]) -> Result<f64, Self::Error>;
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
    /// Mean accuracy over tasks (the search's headline number).
    pub fn mean(&self) -> f64 {
        mean_score(&self.scores)
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
