//! What a search is made of, as data: the header that determines its sequence of trials,
//! each evaluated trial, each proposal handed out, and the state every storage keeps of
//! them. The journal, the PostgreSQL study and the search loop all speak these types; this
//! file imports none of them.

use serde::{Deserialize, Serialize};

use crate::recipe::Recipe;
use crate::score::{Estimate, Items, LayerWork, Measures, TaskScores};

use super::optimizer::{OptimizerConfig, Origin, ProposalNote};
use super::space::{RecipeTemplate, SpaceOptions};

pub const FORMAT: &str = "hf-tailor/search-journal-v1";

/// Everything that determines the sequence of trials. Resuming requires an identical header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalHeader {
    pub format: String,
    pub tasks: Vec<String>,
    pub template: RecipeTemplate,
    pub keep: usize,
    /// The largest depth of a front search (absent for one depth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_max: Option<usize>,
    pub space: SpaceOptions,
    pub optimizer: OptimizerConfig,
}

/// One evaluated trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// 0-based position in the sequence of trials (the optimiser's step).
    pub index: usize,
    pub origin: Origin,
    /// What the optimiser knew when it proposed the candidate (the surrogate's prediction,
    /// the incumbent and the distance to it); absent in journals written before it was
    /// recorded, and for proposals made with nothing told yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<ProposalNote>,
    /// Items per task the scores are based on.
    pub budget: usize,
    pub scores: TaskScores,
    /// Mean accuracy over tasks.
    pub mean: f64,
    /// Wall time spent scoring, in seconds.
    pub seconds: f64,
    /// Layer applications the scorer ran and saved (shared prefixes) for this trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<LayerWork>,
    pub recipe: Recipe,
    /// The objective's guiding value (mean over tasks, higher is better) with its standard
    /// error. Absent in journals written before objectives: their objective is `mean`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<Estimate>,
    /// Every task's measures (accuracy, log-likelihoods, margins) with standard errors.
    #[serde(default, skip_serializing_if = "Measures::is_empty")]
    pub measures: Measures,
    /// Why the candidate could not be scored (non-finite scores); a failed trial is told to
    /// the optimiser as the worst score and never chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// Which worker scored it (`cpu#2`, `cuda:1`), in a parallel search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

impl TrialRecord {
    /// The value the search ranks this trial by (higher is better).
    pub fn objective_value(&self) -> f64 {
        self.objective.map_or(self.mean, |e| e.value)
    }
}

/// A proposal journaled when it was handed out: trial `index`, asked after `after` results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub index: usize,
    pub after: usize,
}

/// One evaluation handed to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    /// The trial's index (the order of proposals).
    pub index: usize,
    pub recipe: Recipe,
    pub budget: usize,
    pub items: Items,
}

/// What a worker measured for an [`Assignment`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    pub measures: Measures,
    /// Why the candidate could not be scored (non-finite scores).
    pub failed: Option<String>,
    pub seconds: f64,
    pub layers: Option<LayerWork>,
}

/// What every storage holds of its search in memory, whatever persists it: the header it
/// was opened with, the results told and the proposals handed out. A storage updates it
/// only after its own record is durable.
#[derive(Debug, Clone)]
pub struct SearchState {
    pub header: JournalHeader,
    /// Finished trials in the order the optimiser was told them.
    pub trials: Vec<TrialRecord>,
    /// Proposals journaled when handed out (each with the results told before it).
    pub asked: Vec<Asked>,
}

impl SearchState {
    /// A search with nothing asked or told yet.
    pub fn new(header: JournalHeader) -> Self {
        Self { header, trials: Vec::new(), asked: Vec::new() }
    }

    /// Trial `index` was handed out now, after the results told so far.
    pub fn push_asked(&mut self, index: usize) {
        self.asked.push(Asked { index, after: self.trials.len() });
    }
}
