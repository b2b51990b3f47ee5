//! Where a search keeps its state: the seam between the search loop and its persistence.
//! The file journal ([`Journal`](super::journal::Journal)) is one storage; a PostgreSQL
//! study (`search::study`) is another, whose trials workers on other hosts score. The
//! optimiser sees neither: the loop replays a storage's proposals and results, hands out
//! assignments and records results.

use std::time::Duration;

use super::trial::{Asked, Assignment, JournalHeader, Scored, SearchState, TrialRecord};
use super::SearchError;

/// The state of one search.
pub trait Storage {
    /// The search as recorded so far.
    fn state(&self) -> &SearchState;
    fn header(&self) -> &JournalHeader {
        &self.state().header
    }
    /// Finished trials in the order the optimiser was told them.
    fn trials(&self) -> &[TrialRecord] {
        &self.state().trials
    }
    /// Proposals journaled when handed out (each with the results told before it).
    fn asked(&self) -> &[Asked] {
        &self.state().asked
    }
    /// A proposal is handed out (recorded before any worker sees it).
    fn record_asked(&mut self, assignment: &Assignment) -> Result<(), SearchError>;
    /// A result the optimiser is told (recorded before it is told).
    fn record_trial(&mut self, trial: &TrialRecord) -> Result<(), SearchError>;
    /// Where the state lives, for messages (a path, or `study NAME`).
    fn location(&self) -> String;
    /// Results that workers elsewhere finished and the optimiser was not told yet, oldest
    /// first (index, worker, measurement); waits up to `timeout` when there is none. A
    /// storage without remote workers has none.
    fn finished_elsewhere(&mut self, _timeout: Duration) -> Result<Vec<(usize, Option<String>, Scored)>, SearchError> {
        Ok(Vec::new())
    }
    /// How many trials to keep in flight for the workers this storage serves.
    fn capacity(&mut self) -> Result<usize, SearchError> {
        Ok(1)
    }
    /// Every trial is told: let the storage's workers go.
    fn close(&mut self) -> Result<(), SearchError> {
        Ok(())
    }
}
