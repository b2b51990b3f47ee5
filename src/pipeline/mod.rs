//! The whole tailoring job as one sequence of stages: pull → compatibility check → search →
//! build → verify → model card → push. Each stage is a library call owned by its module;
//! this module only orders them, decides where each stage's files go, and reports progress,
//! so that the root command, `hf-tailor demo` and the GitHub Action run the same code.

pub mod demo;
pub mod out_folder;
pub mod plan;
pub mod request;
pub mod tailor;

use std::path::Path;

pub use out_folder::{check_out_folder, OutFolderLock};
pub use plan::{ModelFiles, Plan};
pub use request::{Depths, SearchRequest};
pub use tailor::{tailor, JobOptions, JobOutcome, Progress, Quiet};

/// A stage failed; the message is the stage's own (it names the model, file or entry).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Recipe(#[from] crate::recipe::RecipeError),
    #[error(transparent)]
    Search(#[from] crate::search::SearchError),
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    #[error(transparent)]
    Build(#[from] crate::writer::BuildError),
    #[error(transparent)]
    Card(#[from] crate::card::CardError),
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("{0}")]
    Plan(String),
    #[error("output folder {path} {why}")]
    OutFolder { path: String, why: String },
}

impl PipelineError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        PipelineError::Io { path: path.display().to_string(), source }
    }
}

/// The results table as aligned text: one row per model, accuracy in % per task and the
/// mean with its standard error.
pub fn results_table(rows: &[crate::score::ModelResult], tasks: &[String]) -> String {
    let label_w = rows.iter().map(|r| r.label.len()).max().unwrap_or(5).max(5);
    let mut s = format!("{:<label_w$}  {:>6}  {:>8}", "model", "layers", "params");
    for t in tasks {
        s += &format!("  {t:>8}");
    }
    s += &format!("  {:>11}\n", "mean ± s.e.");
    for r in rows {
        s += &format!("{:<label_w$}  {:>6}  {:>8}", r.label, r.layers, plan::human_count(r.params));
        for t in tasks {
            s += &match r.scores.get(t) {
                Some(v) => format!("  {:>8.1}", 100.0 * v),
                None => format!("  {:>8}", "-"),
            };
        }
        s += &format!("  {:>11}\n", r.mean_display());
    }
    s
}
