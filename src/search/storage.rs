//! Where a search keeps its state: the seam between the search loop and its persistence.
//! The file journal ([`Journal`]) is one storage; a PostgreSQL study (`search::study`) is
//! another, whose trials workers on other hosts score. The optimiser sees neither: the loop
//! replays a storage's proposals and results, hands out assignments and records results.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::driver::{Assignment, Scored};
use super::journal::{Asked, Journal, JournalHeader, TrialRecord};
use super::SearchError;

/// The state of one search.
pub trait Storage {
    fn header(&self) -> &JournalHeader;
    /// Finished trials in the order the optimiser was told them.
    fn trials(&self) -> &[TrialRecord];
    /// Proposals journaled when handed out (each with the results told before it).
    fn asked(&self) -> &[Asked];
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
    fn header(&self) -> &JournalHeader {
        &self.header
    }
    fn trials(&self) -> &[TrialRecord] {
        &self.trials
    }
    fn asked(&self) -> &[Asked] {
        &self.asked
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

/// `{"kind": kind, ...v}` (the journal's tagged line layout, tag first).
fn prepend_kind(v: &mut serde_json::Value, kind: &str) {
    let serde_json::Value::Object(map) = v else { unreachable!("records serialise to objects") };
    let mut out = serde_json::Map::new();
    out.insert("kind".into(), kind.into());
    out.extend(std::mem::take(map));
    *map = out;
}
