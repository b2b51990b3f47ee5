//! The layer search (GPTailor): which layers to drop, which sibling each kept layer comes
//! from, and which kept layers merge several siblings, found by multi-fidelity Bayesian
//! optimisation over the scores of an in-memory [`Scorer`](crate::score::Scorer).
//!
//! - [`space`]: the space and the one translation between candidates and [`Recipe`]s;
//! - [`optimizer`] (with [`forest`], [`hyperband`], [`warmstart`]): the proposers;
//! - [`trial`]: what a search is made of, as data (header, trials, proposals, state);
//! - [`driver`]: the resumable search loop, over a [`storage`]: the [`journal`] file or a
//!   PostgreSQL [`study`] ([`transfer`] moves a search between them);
//! - [`select`]: how the final model is chosen;
//! - [`baselines`]: ShortGPT, angular distance and SLEB depth pruning of the base;
//! - [`job`]: a whole search job (search, baselines, reference rows, output files);
//! - [`report`] and [`front`] (drawn with [`crate::plot`]): JSON, Markdown and SVG reports.
//!
//! [`Recipe`]: crate::recipe::Recipe

pub mod baselines;
pub mod driver;
pub mod forest;
pub mod front;
pub mod hyperband;
pub mod job;
pub mod journal;
pub mod moves;
pub mod objective;
pub mod optimizer;
pub mod report;
pub mod select;
pub mod space;
pub mod storage;
pub mod study;
pub mod transfer;
pub mod trial;
pub mod warmstart;

pub use driver::{header, run_search, run_search_parallel, run_search_remote, SearchOutcome, TrialEvent, Worker};
pub use journal::Journal;
pub use objective::Objective;
pub use optimizer::{default_objective, OptimizerConfig, OptimizerKind, Scalarization, DEFAULT_SELECTION_FRACTION};
pub use space::{DepthTarget, RecipeTemplate, SearchSpace, SpaceOptions};
pub use storage::Storage;
pub use trial::{Assignment, JournalHeader, Scored, TrialRecord};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Space(String),
    #[error("journal {path}: {message}")]
    Journal { path: String, message: String },
    #[error("journal {path}: {source}")]
    JournalIo { path: String, source: std::io::Error },
    #[error("scoring {what} failed: {source}")]
    Score { what: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error(transparent)]
    Study(study::StudyError),
}
