//! A study's worker: claim the lowest queued trial (`FOR UPDATE SKIP LOCKED`, so workers
//! never wait on each other), score it, store the measurement in the transaction that marks
//! it done, repeat; sleep on `LISTEN` while the queue is empty; stop when the study is
//! finished. A heartbeat thread (its own connection) keeps the claim alive; a claim the
//! coordinator took back meanwhile (stale heartbeat) is not overwritten.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use crate::score::Scorer;
use crate::search::driver::score;
use crate::search::trial::Assignment;

use super::{connect, StudyError, DONE_CHANNEL, QUEUE_CHANNEL};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The name trials record (unique per worker: host, process, device).
    pub label: String,
    /// Heartbeat period is a quarter of this (the coordinator takes a trial back after it).
    pub stale: Duration,
}

/// What a worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub scored: usize,
    /// Claims the coordinator took back before the result came (not stored).
    pub lost: usize,
}

/// Score study `study`'s trials until it is finished (or `stop` is set). The caller has
/// checked the worker's family and tasks against the study's fingerprint.
pub fn run_worker<S: Scorer>(url: &str, study: &str, scorer: &mut S, opts: &WorkerOptions, stop: &AtomicBool) -> Result<WorkerSummary, StudyError> {
    let mut client = connect(url)?;
    client.batch_execute(&format!("LISTEN {QUEUE_CHANNEL}")).map_err(StudyError::db)?;
    let beat = Heartbeat::start(url, study, &opts.label, opts.stale / 4)?;
    let result = work(&mut client, study, scorer, opts, stop);
    beat.stop();
    result
}

fn work<S: Scorer>(
    client: &mut postgres::Client,
    study: &str,
    scorer: &mut S,
    opts: &WorkerOptions,
    stop: &AtomicBool,
) -> Result<WorkerSummary, StudyError> {
    let mut summary = WorkerSummary::default();
    let me = opts.label.as_str();
    while !stop.load(Ordering::Relaxed) {
        let mut tx = client.transaction().map_err(StudyError::db)?;
        let row = tx
            .query_opt(
                "SELECT idx, assignment, attempts FROM hf_tailor_trial WHERE study = $1 AND status = 'queued' ORDER BY idx LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&study],
            )
            .map_err(StudyError::db)?;
        let Some(row) = row else {
            drop(tx);
            let finished: Option<bool> = client
                .query_opt(
                    "SELECT finished AND NOT EXISTS (SELECT 1 FROM hf_tailor_trial WHERE study = $1 AND status IN ('queued', 'running')) \
                     FROM hf_tailor_study WHERE name = $1",
                    &[&study],
                )
                .map_err(StudyError::db)?
                .map(|r| r.get(0));
            match finished {
                None => return Err(StudyError::Missing(study.into())),
                Some(true) => return Ok(summary),
                Some(false) => {
                    // Sleep until the coordinator queues a trial (or a second passes).
                    let mut notes = client.notifications();
                    let _ = notes.timeout_iter(Duration::from_secs(1)).next().map_err(StudyError::db)?;
                    continue;
                }
            }
        };
        let (index, assignment, attempts): (i32, serde_json::Value, i32) = (row.get(0), row.get(1), row.get::<_, i32>(2) + 1);
        tx.execute(
            "UPDATE hf_tailor_trial SET status = 'running', worker = $3, attempts = $4, claimed_at = now(), heartbeat_at = now() WHERE study = $1 AND idx = $2",
            &[&study, &index, &me, &attempts],
        )
        .map_err(StudyError::db)?;
        tx.commit().map_err(StudyError::db)?;
        let a: Assignment =
            serde_json::from_value(assignment).map_err(|e| StudyError::Mismatch(format!("trial {index}'s assignment does not parse ({e})")))?;
        crate::search::study::test_hook_claimed();
        let scored = match score(scorer, &a) {
            Ok(s) => s,
            Err(e) => {
                let why = format!("scoring failed on {me}: {e}");
                client
                    .execute(
                        "UPDATE hf_tailor_trial SET status = 'failed', finished_at = now(), finish_seq = nextval('hf_tailor_finish_seq'), \
                         scored = jsonb_build_object('measures', '{}'::jsonb, 'seconds', 0, 'layers', NULL, 'failed', $3::text) \
                         WHERE study = $1 AND idx = $2 AND status = 'running' AND worker = $4",
                        &[&study, &index, &why, &me],
                    )
                    .map_err(StudyError::db)?;
                return Err(StudyError::Db(why));
            }
        };
        let json = serde_json::to_value(&scored).expect("serialises");
        let mut tx = client.transaction().map_err(StudyError::db)?;
        let n = tx
            .execute(
                "UPDATE hf_tailor_trial SET status = 'done', scored = $5, finished_at = now(), finish_seq = nextval('hf_tailor_finish_seq') \
                 WHERE study = $1 AND idx = $2 AND status = 'running' AND worker = $3 AND attempts = $4",
                &[&study, &index, &me, &attempts, &json],
            )
            .map_err(StudyError::db)?;
        tx.execute("SELECT pg_notify($1, $2)", &[&DONE_CHANNEL, &study]).map_err(StudyError::db)?;
        tx.commit().map_err(StudyError::db)?;
        if n == 1 {
            summary.scored += 1;
        } else {
            summary.lost += 1;
        }
    }
    Ok(summary)
}

/// A thread that marks this worker and its running trial alive.
struct Heartbeat {
    stop: std::sync::Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Heartbeat {
    fn start(url: &str, study: &str, me: &str, every: Duration) -> Result<Self, StudyError> {
        let mut client = connect(url)?;
        let (study, me) = (study.to_string(), me.to_string());
        let beat = move |c: &mut postgres::Client| -> Result<(), postgres::Error> {
            c.execute(
                "INSERT INTO hf_tailor_worker (study, name) VALUES ($1, $2) ON CONFLICT (study, name) DO UPDATE SET heartbeat_at = now()",
                &[&study, &me],
            )?;
            c.execute("UPDATE hf_tailor_trial SET heartbeat_at = now() WHERE study = $1 AND worker = $2 AND status = 'running'", &[&study, &me])?;
            Ok(())
        };
        beat(&mut client).map_err(StudyError::db)?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let every = every.max(Duration::from_millis(100));
        let thread = std::thread::spawn(move || {
            let tick = Duration::from_millis(50);
            let mut waited = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                waited += tick;
                if waited >= every {
                    waited = Duration::ZERO;
                    // A failed beat is retried next period; the work loop reports a lost database.
                    let _ = beat(&mut client);
                }
            }
        });
        Ok(Self { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
