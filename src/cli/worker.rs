//! `hf-tailor worker`: score a PostgreSQL study's trials on this host's device, and
//! `hf-tailor export`: write a study as a journal file.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hf_tailor::checkpoint::Family;
use hf_tailor::eval::{Evaluator, Task, TaskSpec};
use hf_tailor::pipeline::request;
use hf_tailor::search::study::{self, worker::WorkerOptions, Fingerprint, StudyError, StudySnapshot};
use hf_tailor::search::{job, SearchError, SearchSpace};

#[derive(clap::Args, Debug)]
#[command(after_help = "Example (one worker per GPU; the coordinator is `hf-tailor search --storage URL --study NAME`):\n  \
hf-tailor worker --storage postgresql://tailor@db:5432/tailor --study llama-13b --device cuda:0")]
pub struct Args {
    /// The study's database: postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE (or PGPASSWORD for the password).
    #[arg(long, value_name = "URL", env = "HF_TAILOR_STORAGE", hide_env_values = true)]
    pub storage: String,
    /// The study's name (as `search --study` named it, or as it printed).
    #[arg(long)]
    pub study: String,
    #[command(flatten)]
    pub engine: super::EngineArgs,
    /// A trial without a heartbeat for this long is taken back by the coordinator; this
    /// worker heartbeats four times as often.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub stale_after: f64,
    /// Wait this long for the study to be created (workers may start before the coordinator).
    #[arg(long, default_value_t = 600.0, value_name = "SECONDS")]
    pub wait_for_study: f64,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[arg(long, value_name = "URL", env = "HF_TAILOR_STORAGE", hide_env_values = true)]
    pub storage: String,
    #[arg(long)]
    pub study: String,
    /// The journal file to write (refused if it exists).
    #[arg(long)]
    pub journal: PathBuf,
}

/// This host's name, for worker labels.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "host".into())
}

fn study_err(e: StudyError) -> anyhow::Error {
    SearchError::from(e).into()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.engine.device.single()?;
    if !(args.stale_after > 0.0 && args.stale_after.is_finite()) {
        super::usage!("--stale-after must be a positive number of seconds");
    }
    let mut client = study::connect(&args.storage).map_err(study_err)?;
    let started = Instant::now();
    let snap = loop {
        match StudySnapshot::read(&mut client, &args.study) {
            Ok(s) => break s,
            Err(StudyError::Missing(_)) if started.elapsed().as_secs_f64() < args.wait_for_study => std::thread::sleep(Duration::from_secs(2)),
            Err(e) => return Err(study_err(e)),
        }
    };
    drop(client);
    // The family and the tasks, from this host's files, checked against the study's hashes.
    let h = &snap.state.header;
    let space = SearchSpace::new(h.template.clone(), h.keep, h.space.clone())?;
    let base = job::whole_model(&space, &h.template.base.name);
    let family: Family = super::sources::open_family(&base)?;
    let specs = TaskSpec::parse_list(&snap.inputs.tasks)?;
    let files: Vec<&std::path::Path> = specs.iter().map(|s| s.path.as_path()).collect();
    let mine = Fingerprint::of(&family, &files).context("hashing the models and task files")?;
    if let Some(d) = snap.inputs.fingerprint.difference(&mine) {
        return Err(study_err(StudyError::Mismatch(format!("study `{}`: this worker's {d}; refusing to score", snap.name))));
    }
    let tasks = specs.iter().map(|s| s.load()).collect::<Result<Vec<_>, _>>()?;
    let mut evaluator = Evaluator::new(Arc::new(family), tasks.clone(), hf_tailor::eval::EvalOptions { device, ..args.engine.options() })?;
    if let Some(space_heal) = &h.space.heal {
        set_heal_calibration(&snap, &tasks, &mut evaluator, space_heal.tokens)?;
    }
    let label = format!("{}:{}:{device}", host_name(), std::process::id());
    eprintln!("hf-tailor: worker {label} on study `{}`", snap.name);
    let opts = WorkerOptions { label, stale: Duration::from_secs_f64(args.stale_after) };
    let summary = study::worker::run_worker(&args.storage, &snap.name, &mut evaluator, &opts, &AtomicBool::new(false)).map_err(study_err)?;
    eprintln!(
        "hf-tailor: study `{}` finished; this worker scored {} trials ({} taken back before it finished)",
        snap.name, summary.scored, summary.lost
    );
    Ok(())
}

/// Give `evaluator` a `--heal search` study's calibration texts, from this host's files as the
/// coordinator named them (see [`study::StudyHeal`]), refused unless the trials' `tokens`
/// hash as the coordinator's.
fn set_heal_calibration(snap: &StudySnapshot, tasks: &[Task], evaluator: &mut Evaluator, tokens: usize) -> anyhow::Result<()> {
    let mismatch = |m: String| study_err(StudyError::Mismatch(format!("study `{}`: {m}; refusing to score", snap.name)));
    let Some(heal) = &snap.inputs.heal else {
        return Err(mismatch("it searches the heal but names no calibration text for it (started by an older hf-tailor?)".into()));
    };
    // The files the coordinator named, loaded as it loaded them (`--heal-calibration` as the
    // heal's own texts, `--calibration` as the scoring's), then the coordinator's rule.
    let heal_calibration = heal.heal_calibration.as_deref().map(|spec| super::heal::calibration_texts(Some(spec), None)).transpose()?;
    let calibration = heal.calibration.as_deref().map(|spec| hf_tailor::eval::calibration_texts(Some(spec), &[])).transpose()?;
    let texts = request::heal_calibration_texts(heal_calibration, calibration, tasks, snap.state.header.optimizer.hold_out);
    evaluator.set_heal_calibration(texts);
    // (An empty text gives no tokens: refused as a mismatch, the coordinator's had some.)
    let same = evaluator.heal_calibration_sequences(tokens).is_ok_and(|seqs| hf_tailor::heal::tokens_sha256(&seqs) == heal.tokens_sha256);
    if !same {
        return Err(mismatch("this worker's heal calibration text differs from the coordinator's".into()));
    }
    Ok(())
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let mut client = study::connect(&args.storage).map_err(study_err)?;
    let snap = StudySnapshot::read(&mut client, &args.study).map_err(study_err)?;
    let n = hf_tailor::search::transfer::export_journal(&snap, &args.journal)?;
    eprintln!("hf-tailor: wrote {} trials of study `{}` to {}", n, snap.name, args.journal.display());
    Ok(())
}
