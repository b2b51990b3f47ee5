//! Where a search keeps its state: the seam between the search loop and its persistence.
//! The file journal ([`Journal`]) is one storage; a PostgreSQL study (`search::study`) is
//! another, whose trials workers on other hosts score. The optimiser sees neither: the loop
//! replays a storage's proposals and results, hands out assignments and records results.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::driver::{in_flight_assignments, Assignment, Scored};
use super::journal::{check_is_journal, Asked, Journal, JournalHeader, TrialRecord};
use super::space::SearchSpace;
use super::SearchError;

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

impl Storage for Journal {
    fn state(&self) -> &SearchState {
        &self.state
    }
    fn record_asked(&mut self, a: &Assignment) -> Result<(), SearchError> {
        self.append_asked(a.index)
    }
    fn record_trial(&mut self, trial: &TrialRecord) -> Result<(), SearchError> {
        self.append(trial.clone())
    }
    fn location(&self) -> String {
        self.path().display().to_string()
    }
}

/// Write `storage`'s search as a journal file that `--resume` reads (header, proposals and
/// results in the order they happened). Refuses to overwrite an existing file.
pub fn export_journal(storage: &dyn Storage, path: &Path) -> Result<usize, SearchError> {
    let io = |source| SearchError::JournalIo { path: path.display().to_string(), source };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io)?;
    let mut lines = Vec::new();
    let mut header = serde_json::to_value(storage.header()).expect("serialises");
    prepend_kind(&mut header, "header");
    lines.push(header);
    let mut asked = storage.asked().iter().peekable();
    for (pos, t) in storage.trials().iter().enumerate() {
        while let Some(a) = asked.next_if(|a| a.after == pos) {
            lines.push(serde_json::json!({"kind": "asked", "index": a.index}));
        }
        let mut v = serde_json::to_value(t).expect("serialises");
        prepend_kind(&mut v, "trial");
        lines.push(v);
    }
    for a in asked {
        lines.push(serde_json::json!({"kind": "asked", "index": a.index}));
    }
    let mut text = String::new();
    for l in &lines {
        text.push_str(&serde_json::to_string(l).expect("serialises"));
        text.push('\n');
    }
    file.write_all(text.as_bytes()).and_then(|_| file.sync_all()).map_err(io)?;
    // What was written is a journal (the same checks `--resume` makes).
    Journal::read(path)?;
    Ok(storage.trials().len())
}

/// Copy the search of the file journal at `path` into `dst`, an empty storage opened with
/// the same header (a study the search moves to): every result, and every proposal it had
/// in flight (regenerated by replaying the journal), in the journal's order, so that `dst`
/// replays to the same optimiser state. Returns the number of results copied.
pub fn import_journal(path: &Path, space: &SearchSpace, dst: &mut dyn Storage) -> Result<usize, SearchError> {
    let refuse = |message: String| SearchError::Journal { path: path.display().to_string(), message };
    check_is_journal(path)?;
    let (header, trials, asked) = Journal::read_with_asked(path)?;
    if header != *dst.header() {
        return Err(refuse(format!("was written by a different search than {} (models, tasks, depth or optimizer settings)", dst.location())));
    }
    if !dst.trials().is_empty() || !dst.asked().is_empty() {
        return Err(refuse(format!("cannot be imported into {}: it already holds trials (import into a new study)", dst.location())));
    }
    let mut replay = InMemory(SearchState { header: header.clone(), trials: trials.clone(), asked: asked.clone() });
    let pending = in_flight_assignments(space, &mut replay)?;
    let items = header.optimizer.hold_out.map_or(crate::score::Items::All, crate::score::Items::Search);
    let assignment = |index: usize| -> Result<Assignment, SearchError> {
        match trials.iter().find(|t| t.index == index) {
            Some(t) => Ok(Assignment { index, recipe: t.recipe.clone(), budget: t.budget, items }),
            None => pending.get(&index).cloned().ok_or_else(|| refuse(format!("trial {index} is asked but neither finished nor in flight"))),
        }
    };
    let mut handed_out = std::collections::BTreeSet::new();
    let mut next_ask = asked.iter().peekable();
    for (pos, t) in trials.iter().enumerate() {
        while let Some(a) = next_ask.next_if(|a| a.after == pos) {
            dst.record_asked(&assignment(a.index)?)?;
            handed_out.insert(a.index);
        }
        // Sequential journals: each trial asked right before its result.
        if handed_out.insert(t.index) {
            dst.record_asked(&assignment(t.index)?)?;
        }
        dst.record_trial(t)?;
    }
    for a in next_ask {
        dst.record_asked(&assignment(a.index)?)?;
    }
    Ok(trials.len())
}

/// A storage in memory: a journal read for replay, never written.
struct InMemory(SearchState);

impl Storage for InMemory {
    fn state(&self) -> &SearchState {
        &self.0
    }
    fn record_asked(&mut self, a: &Assignment) -> Result<(), SearchError> {
        self.0.push_asked(a.index);
        Ok(())
    }
    fn record_trial(&mut self, t: &TrialRecord) -> Result<(), SearchError> {
        self.0.trials.push(t.clone());
        Ok(())
    }
    fn location(&self) -> String {
        "a journal in memory".into()
    }
}

/// `{"kind": kind, ...v}` (the journal's tagged line layout, tag first).
fn prepend_kind(v: &mut serde_json::Value, kind: &str) {
    let serde_json::Value::Object(map) = v else { unreachable!("records serialise to objects") };
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), kind.into());
    out.extend(std::mem::take(map));
    *map = out;
}
