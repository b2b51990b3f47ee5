//! A search study kept in PostgreSQL, so that workers on any hosts score its trials: the
//! coordinator (the `search` command) owns the optimiser and hands proposals out as queued
//! trial rows; `hf-tailor worker` processes claim them (`FOR UPDATE SKIP LOCKED`), score
//! them and store the result in the transaction that marks them done. Implements
//! [`Storage`], so the search loop neither knows nor cares where its state lives.
//!
//! Guarantees: one coordinator per study (a session advisory lock); a trial whose worker
//! stopped heartbeating is queued again once, then failed; a worker whose models or task
//! files differ (by sha256) from the study's is refused; a finished trial is never lost
//! (it is stored before the coordinator is told, and told results are replayed in order).

pub mod fingerprint;
pub mod schema;
pub mod worker;

use std::time::Duration;

use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use serde::{Deserialize, Serialize};

use super::storage::Storage;
use super::trial::{Asked, Assignment, JournalHeader, Scored, SearchState, TrialRecord};
use super::SearchError;

pub use fingerprint::{Fingerprint, SourcePrint};

/// Channel on which the coordinator announces queued trials.
pub const QUEUE_CHANNEL: &str = "hf_tailor_queue";
/// Channel on which workers announce finished trials.
pub const DONE_CHANNEL: &str = "hf_tailor_done";
/// Advisory lock class of study coordinators (the key is the study name's hash).
const COORDINATOR_LOCK: i32 = 0x0068_6674;

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The `--storage` URL is not a PostgreSQL connection string.
    #[error("--storage is not a PostgreSQL URL (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE): {0}")]
    BadUrl(String),
    /// The server refused the credentials or the database.
    #[error("PostgreSQL at {at} refused the connection: {message}")]
    Refused { at: String, message: String },
    /// No server answered.
    #[error("cannot connect to PostgreSQL at {at}: {message}")]
    Connect { at: String, message: String },
    /// The connection went away mid-study (finished trials are stored; run again to continue).
    #[error("lost the PostgreSQL connection: {0} (every finished trial is stored; run the same command again to continue)")]
    Lost(String),
    #[error("study `{study}`: {message}")]
    Busy { study: String, message: String },
    #[error("{0}")]
    Mismatch(String),
    #[error("study `{0}` does not exist (start it with `hf-tailor search --storage URL --study NAME`)")]
    Missing(String),
    #[error("PostgreSQL: {0}")]
    Db(String),
}

impl StudyError {
    /// A query's error: the connection gone, or the server's answer.
    pub fn db(e: postgres::Error) -> Self {
        let gone = e.is_closed()
            || e.as_db_error().is_none()
            || e.code().is_some_and(|c| *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN || *c == SqlState::CANNOT_CONNECT_NOW);
        let text = one_line(&e);
        if gone {
            StudyError::Lost(text)
        } else {
            StudyError::Db(text)
        }
    }

    /// Whether the user can fix it (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StudyError::BadUrl(_) | StudyError::Refused { .. } | StudyError::Busy { .. } | StudyError::Mismatch(_) | StudyError::Missing(_)
        )
    }
}

impl From<StudyError> for SearchError {
    fn from(e: StudyError) -> Self {
        SearchError::Study(e)
    }
}

/// An error and its causes on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ").replace('\n', " ")
}

/// `host:port/database` of a connection string, for messages (never the password).
fn where_is(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or(config.get_user().unwrap_or("")))
}

/// Whether `s` names a PostgreSQL storage (rather than a file).
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgresql://") || s.starts_with("postgres://")
}

/// Connect to the database `url` names and bring its schema up to date.
pub fn connect(url: &str) -> Result<Client, StudyError> {
    if !is_url(url) {
        return Err(StudyError::BadUrl("it must start with postgresql://".into()));
    }
    let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| StudyError::BadUrl(one_line(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("hf-tailor");
    let at = where_is(&config);
    let mut client = config.connect(NoTls).map_err(|e| {
        let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| one_line(&e));
        match e.code() {
            Some(c)
                if *c == SqlState::INVALID_PASSWORD
                    || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                    || *c == SqlState::INVALID_CATALOG_NAME
                    || *c == SqlState::INSUFFICIENT_PRIVILEGE =>
            {
                StudyError::Refused { at: at.clone(), message }
            }
            _ => StudyError::Connect { at: at.clone(), message },
        }
    })?;
    schema::migrate(&mut client)?;
    Ok(client)
}

/// What a worker needs besides the header to score a study's trials, and what it checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyInputs {
    /// The `--tasks` argument (files at the same paths on every host, e.g. shared storage).
    pub tasks: String,
    /// The models and task files, by sha256.
    pub fingerprint: Fingerprint,
    /// With `--heal search`: where the fits' calibration texts come from, so that every
    /// worker fits on the coordinator's tokens (absent otherwise, and in older studies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<StudyHeal>,
}

/// The calibration of a study's heal fits: `--heal-calibration`'s texts, else
/// `--calibration`'s, else the tasks' own less the selection split (the header's), cut to
/// the space's heal tokens; a worker whose tokens hash differently refuses to score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyHeal {
    /// The `--heal-calibration` argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_calibration: Option<String>,
    /// The `--calibration` argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    /// sha256 of the calibration tokens (see `heal::tokens_sha256`).
    pub tokens_sha256: String,
}

/// The default study name: the hash of the search's inputs.
pub fn default_name(header: &JournalHeader) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(serde_json::to_vec(header).expect("serialises"));
    format!("search-{}", &hex::encode(h)[..12])
}

/// The coordinator's view of a study (see the module docs).
pub struct PgStudy {
    client: Client,
    name: String,
    state: SearchState,
    /// A running trial without a heartbeat for this long is taken from its worker.
    stale: Duration,
}

impl PgStudy {
    /// Create study `name` (or open it with the same header and inputs) and become its
    /// coordinator; refused while another coordinator holds it. `inherit` takes the
    /// stored header's objective and selection split (the user did not choose them).
    pub fn coordinate(
        url: &str,
        name: &str,
        mut header: JournalHeader,
        inputs: &StudyInputs,
        trials: usize,
        stale: Duration,
        inherit: (bool, bool),
    ) -> Result<Self, StudyError> {
        let mut client = connect(url)?;
        let locked: bool =
            client.query_one("SELECT pg_try_advisory_lock($1, hashtext($2))", &[&COORDINATOR_LOCK, &name]).map_err(StudyError::db)?.get(0);
        if !locked {
            return Err(StudyError::Busy {
                study: name.into(),
                message: "another coordinator (`hf-tailor search`) is running it; start workers with `hf-tailor worker` instead".into(),
            });
        }
        let existing = client.query_opt("SELECT header, inputs FROM hf_tailor_study WHERE name = $1", &[&name]).map_err(StudyError::db)?;
        match existing {
            None => {
                let h = serde_json::to_value(&header).expect("serialises");
                let i = serde_json::to_value(inputs).expect("serialises");
                client
                    .execute("INSERT INTO hf_tailor_study (name, header, inputs, trials) VALUES ($1, $2, $3, $4)", &[&name, &h, &i, &(trials as i32)])
                    .map_err(StudyError::db)?;
            }
            Some(row) => {
                let found: JournalHeader = parse(row.get(0), "header")?;
                let found_inputs: StudyInputs = parse(row.get(1), "inputs")?;
                // The schedule's treatment of budget-free guides is the study's (see
                // `OptimizerConfig::skip_budget_free_rungs`), not a user's choice.
                header.optimizer.skip_budget_free_rungs = found.optimizer.skip_budget_free_rungs;
                if inherit.0 {
                    header.optimizer.objective = found.optimizer.objective;
                }
                if inherit.1 {
                    header.optimizer.hold_out = found.optimizer.hold_out;
                }
                if found != header {
                    return Err(StudyError::Mismatch(format!(
                        "study `{name}` was started by a different search (models, tasks, depth or optimizer settings); use another --study"
                    )));
                }
                if let Some(d) = found_inputs.fingerprint.difference(&inputs.fingerprint) {
                    return Err(StudyError::Mismatch(format!("study `{name}`: {d}")));
                }
                if found_inputs.heal != inputs.heal {
                    return Err(StudyError::Mismatch(format!("study `{name}` fits its heals on other calibration text; use another --study")));
                }
                client
                    .execute("UPDATE hf_tailor_study SET trials = $2, finished = false WHERE name = $1", &[&name, &(trials as i32)])
                    .map_err(StudyError::db)?;
            }
        }
        let mut told: Vec<(i32, TrialRecord)> = Vec::new();
        for row in client
            .query("SELECT told, record FROM hf_tailor_trial WHERE study = $1 AND told IS NOT NULL ORDER BY told", &[&name])
            .map_err(StudyError::db)?
        {
            told.push((row.get(0), parse(row.get(1), "trial record")?));
        }
        if told.iter().enumerate().any(|(i, (t, _))| *t != i as i32) {
            return Err(StudyError::Mismatch(format!("study `{name}`: the told trials are not numbered 0, 1, …; the study was altered")));
        }
        let asked = read_asked(&mut client, name)?;
        client.batch_execute(&format!("LISTEN {DONE_CHANNEL}")).map_err(StudyError::db)?;
        let trials = told.into_iter().map(|(_, r)| r).collect();
        Ok(Self { client, name: name.into(), state: SearchState { header, trials, asked }, stale })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Mark the study finished (idle workers then exit).
    pub fn finish(&mut self) -> Result<(), StudyError> {
        self.client.execute("UPDATE hf_tailor_study SET finished = true WHERE name = $1", &[&self.name]).map_err(StudyError::db)?;
        self.client.execute("SELECT pg_notify($1, $2)", &[&QUEUE_CHANNEL, &self.name]).map_err(StudyError::db)?;
        Ok(())
    }

    /// Take running trials from workers that stopped heartbeating: queued again the first
    /// time, failed the second.
    fn reap(&mut self) -> Result<(), StudyError> {
        let secs = self.stale.as_secs_f64();
        let requeued = self
            .client
            .execute(
                "UPDATE hf_tailor_trial SET status = 'queued', worker = NULL WHERE study = $1 AND status = 'running' \
                 AND heartbeat_at < now() - make_interval(secs => $2) AND attempts < 2",
                &[&self.name, &secs],
            )
            .map_err(StudyError::db)?;
        self.client
            .execute(
                "UPDATE hf_tailor_trial SET status = 'failed', finished_at = now(), finish_seq = nextval('hf_tailor_finish_seq'), \
                 scored = jsonb_build_object('measures', '{}'::jsonb, 'seconds', 0, 'layers', NULL, \
                   'failed', 'its worker ' || coalesce(worker, '?') || ' stopped heartbeating (the second worker to lose it)') \
                 WHERE study = $1 AND status = 'running' AND heartbeat_at < now() - make_interval(secs => $2) AND attempts >= 2",
                &[&self.name, &secs],
            )
            .map_err(StudyError::db)?;
        if requeued > 0 {
            self.client.execute("SELECT pg_notify($1, $2)", &[&QUEUE_CHANNEL, &self.name]).map_err(StudyError::db)?;
        }
        Ok(())
    }

    fn finished_untold(&mut self) -> Result<Vec<(usize, Option<String>, Scored)>, StudyError> {
        let rows = self
            .client
            .query(
                "SELECT idx, worker, scored FROM hf_tailor_trial WHERE study = $1 AND status IN ('done', 'failed') AND told IS NULL ORDER BY finish_seq",
                &[&self.name],
            )
            .map_err(StudyError::db)?;
        rows.iter().map(|r| Ok((r.get::<_, i32>(0) as usize, r.get(1), parse(r.get(2), "a worker's result")?))).collect()
    }
}

/// Every proposal of study `name` with the number of results told before it, by index.
fn read_asked(client: &mut Client, name: &str) -> Result<Vec<Asked>, StudyError> {
    let rows = client.query("SELECT idx, asked_after FROM hf_tailor_trial WHERE study = $1 ORDER BY idx", &[&name]).map_err(StudyError::db)?;
    Ok(rows.iter().map(|r| Asked { index: r.get::<_, i32>(0) as usize, after: r.get::<_, i32>(1) as usize }).collect())
}

fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value, what: &str) -> Result<T, StudyError> {
    serde_json::from_value(v)
        .map_err(|e| StudyError::Mismatch(format!("the study's {what} does not parse ({e}); was it written by another hf-tailor version?")))
}

impl Storage for PgStudy {
    fn state(&self) -> &SearchState {
        &self.state
    }
    fn record_asked(&mut self, a: &Assignment) -> Result<(), SearchError> {
        let after = self.state.trials.len();
        let json = serde_json::to_value(a).expect("serialises");
        self.client
            .execute(
                "INSERT INTO hf_tailor_trial (study, idx, assignment, asked_after) VALUES ($1, $2, $3, $4)",
                &[&self.name, &(a.index as i32), &json, &(after as i32)],
            )
            .map_err(StudyError::db)?;
        self.client.execute("SELECT pg_notify($1, $2)", &[&QUEUE_CHANNEL, &self.name]).map_err(StudyError::db)?;
        self.state.push_asked(a.index);
        Ok(())
    }
    fn record_trial(&mut self, t: &TrialRecord) -> Result<(), SearchError> {
        let json = serde_json::to_value(t).expect("serialises");
        let n = self
            .client
            .execute(
                "UPDATE hf_tailor_trial SET told = $3, record = $4, status = CASE WHEN status IN ('done', 'failed') THEN status ELSE 'done' END \
                 WHERE study = $1 AND idx = $2 AND told IS NULL",
                &[&self.name, &(t.index as i32), &(self.state.trials.len() as i32), &json],
            )
            .map_err(StudyError::db)?;
        if n != 1 {
            return Err(StudyError::Mismatch(format!("study `{}`: trial {} is not an untold trial of the study", self.name, t.index)).into());
        }
        self.state.trials.push(t.clone());
        Ok(())
    }
    fn location(&self) -> String {
        format!("study {}", self.name)
    }
    fn finished_elsewhere(&mut self, timeout: Duration) -> Result<Vec<(usize, Option<String>, Scored)>, SearchError> {
        self.reap()?;
        let found = self.finished_untold()?;
        if !found.is_empty() {
            return Ok(found);
        }
        // Sleep until a worker announces a result (or the timeout, for heartbeats and reaping).
        let mut notes = self.client.notifications();
        let _ = notes.timeout_iter(timeout).next().map_err(StudyError::db)?;
        drop(notes);
        Ok(self.finished_untold()?)
    }
    fn close(&mut self) -> Result<(), SearchError> {
        Ok(self.finish()?)
    }
    fn capacity(&mut self) -> Result<usize, SearchError> {
        let secs = self.stale.as_secs_f64();
        let live: i64 = self
            .client
            .query_one(
                "SELECT count(*) FROM hf_tailor_worker WHERE study = $1 AND heartbeat_at > now() - make_interval(secs => $2)",
                &[&self.name, &secs],
            )
            .map_err(StudyError::db)?
            .get(0);
        // One more than the live workers, so a worker that finishes finds the next trial queued.
        Ok(live as usize + 1)
    }
}

/// Open study `name` read-only: its header and told trials (for export).
pub struct StudySnapshot {
    pub name: String,
    pub inputs: StudyInputs,
    pub state: SearchState,
}

impl StudySnapshot {
    pub fn read(client: &mut Client, name: &str) -> Result<Self, StudyError> {
        let row = client
            .query_opt("SELECT header, inputs FROM hf_tailor_study WHERE name = $1", &[&name])
            .map_err(StudyError::db)?
            .ok_or_else(|| StudyError::Missing(name.into()))?;
        let (header, inputs) = (parse(row.get(0), "header")?, parse(row.get(1), "inputs")?);
        let mut trials = Vec::new();
        for row in client
            .query("SELECT record FROM hf_tailor_trial WHERE study = $1 AND told IS NOT NULL ORDER BY told", &[&name])
            .map_err(StudyError::db)?
        {
            trials.push(parse(row.get(0), "trial record")?);
        }
        // Proposals made after the last told result that are not told stay asked.
        let asked = read_asked(client, name)?;
        Ok(Self { name: name.into(), inputs, state: SearchState { header, trials, asked } })
    }
}

impl Storage for StudySnapshot {
    fn state(&self) -> &SearchState {
        &self.state
    }
    fn record_asked(&mut self, _: &Assignment) -> Result<(), SearchError> {
        Err(SearchError::Space(format!("study `{}` is open read-only", self.name)))
    }
    fn record_trial(&mut self, _: &TrialRecord) -> Result<(), SearchError> {
        Err(SearchError::Space(format!("study `{}` is open read-only", self.name)))
    }
    fn location(&self) -> String {
        format!("study {}", self.name)
    }
}

/// Test switch: `HF_TAILOR_TEST_WORKER_HANG_AFTER_CLAIM=1` makes a worker stop heartbeating
/// and hang right after claiming a trial, so a test can kill it mid-trial deterministically.
#[cfg(feature = "testkit")]
fn test_hook_claimed() {
    if std::env::var_os("HF_TAILOR_TEST_WORKER_HANG_AFTER_CLAIM").is_some() {
        eprintln!("hf-tailor: test: claimed a trial, hanging");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}

#[cfg(not(feature = "testkit"))]
fn test_hook_claimed() {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Studies written before the heal could be searched on them still open (no `heal`), and
    /// a heal's calibration round-trips.
    #[test]
    fn study_inputs_without_a_heal_still_parse_and_a_heal_round_trips() {
        let old: StudyInputs = serde_json::from_str(r#"{"tasks": "mc=a.jsonl", "fingerprint": {"sources": [], "tasks": {}}}"#).unwrap();
        assert_eq!(old.heal, None);
        let heal = StudyHeal { heal_calibration: None, calibration: Some("ppl=t.jsonl".into()), tokens_sha256: "ab".into() };
        let new = StudyInputs { heal: Some(heal), ..old };
        let text = serde_json::to_string(&new).unwrap();
        assert!(!text.contains("heal_calibration"), "absent fields are not written: {text}");
        assert_eq!(serde_json::from_str::<StudyInputs>(&text).unwrap(), new);
    }
}
