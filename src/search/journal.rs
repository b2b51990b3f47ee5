//! The search journal: the source of truth of a search. JSON lines, a header then one line
//! per evaluated trial, each flushed and fsynced before the next trial starts. A search
//! killed at any moment (even mid-write) resumes from it, losing at most the trial in
//! flight: the optimiser is rebuilt by replaying the journaled results.
//!
//! A parallel search (several workers) also journals each proposal when it is handed out
//! (an `asked` line), so that the replay interleaves proposals and results exactly as they
//! happened; its trial lines are in the order the results came in, and a proposal asked
//! for but never finished (in flight when the search stopped) is scored on resume. A
//! sequential search writes no `asked` lines: each trial was asked for right before its
//! result, as journals always were.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::storage::Storage;
use super::trial::{Asked, Assignment, JournalHeader, SearchState, TrialRecord, FORMAT};
use super::SearchError;

/// One line is alive at a time (written or parsed), so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Header(JournalHeader),
    /// A proposal handed to a worker (parallel searches only).
    Asked {
        index: usize,
    },
    Trial(TrialRecord),
}

/// An open journal, positioned for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// The header, the trials in the order their results came in, and the `asked` lines
    /// (each proposal's index with the number of trials journaled before it).
    pub state: SearchState,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SearchError + '_ {
    move |source| SearchError::JournalIo { path: path.display().to_string(), source }
}

impl Journal {
    /// Start a new journal at `path`; refuses to overwrite one that holds anything. The
    /// file is opened (never truncated) and locked before it is looked at, so two searches
    /// cannot both find it empty and both write it.
    pub fn create(path: &Path, header: JournalHeader) -> Result<Self, SearchError> {
        let mut file = open_locked(path, true)?;
        if file.metadata().map_err(io_err(path))?.len() > 0 {
            return Err(SearchError::Journal {
                path: path.display().to_string(),
                message: "already exists: pass --resume to continue it, or choose another file".into(),
            });
        }
        write_line(&mut file, &Line::Header(header.clone()), path)?;
        Ok(Self { path: path.into(), file, state: SearchState::new(header) })
    }

    /// Continue the journal at `path` (an empty file is started). Its header must equal
    /// `header`; a torn last line (the write in flight when the search was killed) is cut
    /// off. A missing file is refused (there is nothing to resume), and so is a file that
    /// is not a journal, never repaired: the only file without a complete header line
    /// that may be replaced is an empty one, or a journal header torn while it was being
    /// written. The file stays locked while the journal is open.
    pub fn resume(path: &Path, header: JournalHeader) -> Result<Self, SearchError> {
        if !path.exists() {
            return Err(SearchError::Journal {
                path: path.display().to_string(),
                message: "does not exist: there is no search to resume (run without --resume to start one)".into(),
            });
        }
        let mut file = open_locked(path, false)?;
        let bytes = read_journal_bytes(&file, path)?;
        check_journal_head(&bytes, path)?;
        let Lines { header: found, trials, asked, valid_len } = parse_lines(&bytes, path)?;
        let Some(found) = found else {
            // Empty, or only a torn header line (checked above): nothing to lose.
            file.set_len(0).map_err(io_err(path))?;
            file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
            write_line(&mut file, &Line::Header(header.clone()), path)?;
            return Ok(Self { path: path.into(), file, state: SearchState::new(header) });
        };
        if found != header {
            return Err(SearchError::Journal { path: path.display().to_string(), message: header_difference(&found, &header) });
        }
        file.set_len(valid_len).map_err(io_err(path))?;
        file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
        Ok(Self { path: path.into(), file, state: SearchState { header, trials, asked } })
    }

    /// Journal that trial `index` was handed to a worker (fsynced before this returns).
    pub fn append_asked(&mut self, index: usize) -> Result<(), SearchError> {
        write_line(&mut self.file, &Line::Asked { index }, &self.path)?;
        self.state.push_asked(index);
        Ok(())
    }

    /// Append a trial: written, flushed and fsynced before this returns.
    pub fn append(&mut self, trial: TrialRecord) -> Result<(), SearchError> {
        write_line(&mut self.file, &Line::Trial(trial.clone()), &self.path)?;
        self.state.trials.push(trial);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read a journal without opening it for writing (reports, inspection).
    pub fn read(path: &Path) -> Result<(JournalHeader, Vec<TrialRecord>), SearchError> {
        let (header, trials, _) = Self::read_with_asked(path)?;
        Ok((header, trials))
    }

    /// [`Journal::read`] with the `asked` lines (a parallel search's proposals), without
    /// opening the file for writing.
    pub fn read_with_asked(path: &Path) -> Result<(JournalHeader, Vec<TrialRecord>, Vec<Asked>), SearchError> {
        let Lines { header, trials, asked, .. } = read_lines(path)?;
        let header = header.ok_or_else(|| SearchError::Journal { path: path.display().to_string(), message: "is empty".into() })?;
        Ok((header, trials, asked))
    }
}

/// Open the journal file for reading and writing (`create`: creating it when absent, never
/// truncating) and take its exclusive lock: the lock lives as long as the file handle, so
/// while one search has the journal open another cannot write a line into it (the kernel
/// drops the lock when the process ends, however it ends).
fn open_locked(path: &Path, create: bool) -> Result<File, SearchError> {
    let refuse = |message: &str| SearchError::Journal { path: path.display().to_string(), message: message.into() };
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(refuse("is not a regular file"));
    }
    let file = OpenOptions::new().read(true).write(true).create(create).open(path).map_err(io_err(path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(refuse("is in use by another search (a running hf-tailor holds its lock): wait for it to finish, or choose another journal"))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io_err(path)(e)),
    }
}

/// The journal's bytes, read through the cap ([`crate::limits::MAX_JOURNAL_BYTES`]).
fn read_journal_bytes(file: &File, path: &Path) -> Result<Vec<u8>, SearchError> {
    let mut bytes = Vec::new();
    let mut reader = crate::fsutil::Bounded::new(file, crate::limits::MAX_JOURNAL_BYTES);
    reader.read_to_end(&mut bytes).map_err(io_err(path))?;
    Ok(bytes)
}

/// How every journal starts: the header line's first bytes, as `write_line` writes them.
const HEADER_PREFIX: &str = "{\"kind\":\"header\"";

/// Refuse a file that is not a search journal (so `--resume` pointed at the wrong file
/// cannot destroy it). Accepted: an empty file, or one whose first bytes are a journal
/// header (complete, or torn while it was written).
pub(super) fn check_is_journal(path: &Path) -> Result<(), SearchError> {
    let mut head = Vec::with_capacity(HEADER_PREFIX.len());
    crate::fsutil::open_input(path, crate::limits::MAX_JOURNAL_BYTES)
        .and_then(|f| f.take(HEADER_PREFIX.len() as u64).read_to_end(&mut head))
        .map_err(io_err(path))?;
    let whole = std::fs::metadata(path).map_err(io_err(path))?.len();
    check_head(&head, whole, path)
}

/// [`check_is_journal`] on bytes already read.
fn check_journal_head(bytes: &[u8], path: &Path) -> Result<(), SearchError> {
    check_head(&bytes[..bytes.len().min(HEADER_PREFIX.len())], bytes.len() as u64, path)
}

fn check_head(head: &[u8], whole: u64, path: &Path) -> Result<(), SearchError> {
    let n = head.len();
    if n == 0 || head[..] == HEADER_PREFIX.as_bytes()[..n] {
        // A prefix shorter than the marker is a header torn in its first bytes only when
        // it is the whole file.
        if n == HEADER_PREFIX.len() || whole == n as u64 {
            return Ok(());
        }
    }
    Err(SearchError::Journal {
        path: path.display().to_string(),
        message: "is not a search journal (it does not start with a journal header); refusing to resume from or overwrite it".into(),
    })
}

fn write_line(file: &mut File, line: &Line, path: &Path) -> Result<(), SearchError> {
    let mut text = serde_json::to_string(line).expect("journal lines always serialise");
    text.push('\n');
    file.write_all(text.as_bytes()).map_err(io_err(path))?;
    file.flush().map_err(io_err(path))?;
    file.sync_data().map_err(io_err(path))
}

/// What a journal file holds, and its length up to the last complete line.
struct Lines {
    header: Option<JournalHeader>,
    trials: Vec<TrialRecord>,
    asked: Vec<Asked>,
    valid_len: u64,
}

fn read_lines(path: &Path) -> Result<Lines, SearchError> {
    let bytes = crate::fsutil::read_input(path, crate::limits::MAX_JOURNAL_BYTES).map_err(io_err(path))?;
    parse_lines(&bytes, path)
}

fn parse_lines(bytes: &[u8], path: &Path) -> Result<Lines, SearchError> {
    let disp = path.display().to_string();
    // Only newline-terminated lines are complete; anything after the last newline is torn.
    let valid_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let text =
        std::str::from_utf8(&bytes[..valid_len]).map_err(|e| SearchError::Journal { path: disp.clone(), message: format!("is not UTF-8 ({e})") })?;
    let mut header = None;
    let mut trials: Vec<TrialRecord> = Vec::new();
    let mut asked: Vec<Asked> = Vec::new();
    // Proposals handed out so far (asked lines, and trials asked right before their result),
    // and those of them not finished.
    let mut proposed = 0usize;
    let mut open = std::collections::BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |message: String| SearchError::Journal { path: disp.clone(), message: format!("line {}: {message}", n + 1) };
        let parsed: Line = serde_json::from_str(line).map_err(|e| at(format!("not a journal entry ({e})")))?;
        match (parsed, n) {
            (Line::Header(h), 0) => {
                if h.format != FORMAT {
                    return Err(at(format!("format `{}` is not `{FORMAT}`", h.format)));
                }
                header = Some(h);
            }
            (Line::Header(_), _) => return Err(at("a second header".into())),
            (Line::Trial(_) | Line::Asked { .. }, 0) => return Err(at("a trial before the header".into())),
            (Line::Asked { index }, _) => {
                if index != proposed {
                    return Err(at(format!("proposal index {index} where {proposed} was expected")));
                }
                asked.push(Asked { index, after: trials.len() });
                open.insert(index);
                proposed += 1;
            }
            (Line::Trial(t), _) => {
                if !open.remove(&t.index) {
                    if t.index != proposed {
                        return Err(at(format!("trial index {} where {proposed} was expected", t.index)));
                    }
                    proposed += 1;
                }
                trials.push(t);
            }
        }
    }
    Ok(Lines { header, trials, asked, valid_len: valid_len as u64 })
}

/// Which part of the header changed, in words.
fn header_difference(found: &JournalHeader, wanted: &JournalHeader) -> String {
    let what = if found.tasks != wanted.tasks {
        format!("tasks {:?} (now {:?})", found.tasks, wanted.tasks)
    } else if found.template != wanted.template {
        "models (base, siblings or their revisions)".to_string()
    } else if found.keep != wanted.keep || found.keep_max != wanted.keep_max {
        let depth = |h: &JournalHeader| h.keep_max.map_or(h.keep.to_string(), |m| format!("{}..{m}", h.keep));
        format!("keep {} layers (now {})", depth(found), depth(wanted))
    } else if found.space != wanted.space {
        "merge methods or merge settings".to_string()
    } else if found.optimizer.seed != wanted.optimizer.seed {
        format!("seed {} (now {})", found.optimizer.seed, wanted.optimizer.seed)
    } else if found.optimizer.kind != wanted.optimizer.kind {
        format!("optimizer {} (now {})", found.optimizer.kind.name(), wanted.optimizer.kind.name())
    } else if found.optimizer.hold_out != wanted.optimizer.hold_out {
        // Which items the trials were scored on: a split's search side, or every item.
        let split = |h: &JournalHeader| match h.optimizer.hold_out {
            Some(s) => format!("{:.2} of each task's items", s.fraction),
            None => "none (every item: --selection-tasks or --selection-split 0)".to_string(),
        };
        format!("selection split {} (now {})", split(found), split(wanted))
    } else {
        "optimizer settings".to_string()
    };
    format!("was written by a different search: {what}; resume with the same inputs or start a new journal")
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
