//! A search study in a real PostgreSQL server (a throwaway cluster: initdb + pg_ctl in a
//! temporary folder on a loopback port, stopped at the end): worker processes, a killed
//! worker, a killed coordinator, two coordinators, a changed family, bad connections.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hf_tailor::search::Journal;

use crate::common::{hf_tailor, tempdir};
use crate::parallel::{assert_each_trial_once, fixture, search_args, Fixture};

const PASSWORD: &str = "tailor-secret";

/// A PostgreSQL cluster of its own, stopped when dropped.
struct Pg {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    log: PathBuf,
}

/// The folder with initdb and pg_ctl: on PATH, else the distribution's.
fn pg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).find(|d| d.join("initdb").is_file())) {
        return p;
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| r.flatten().map(|e| e.path().join("bin")).filter(|b| b.join("initdb").is_file()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().expect("PostgreSQL server binaries (initdb, pg_ctl): install the `postgresql` package (.ci/run does)")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `bin/tool args…`, as the `postgres` user when this runs as root (initdb refuses root).
fn pg_command(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Pg {
    fn start() -> Self {
        let dir = tempdir();
        let bin = pg_bin();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::create_dir(&data).unwrap();
            let ok = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap().success();
            assert!(ok, "chown to the postgres user failed");
        }
        let o = pg_command(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "tailor", "--auth=scram-sha-256", "--no-sync", "--pwfile"])
            .arg(&pwfile)
            .output()
            .unwrap();
        assert!(o.status.success(), "initdb: {}", String::from_utf8_lossy(&o.stderr));
        let port = free_port();
        let log = dir.path().join("log");
        let pg = Self { data, bin, port, log, _dir: dir };
        pg.ctl_start();
        pg
    }

    fn ctl_start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.data.display());
        let o = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-o", &opts, "-l"])
            .arg(&self.log)
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn ctl_stop(&self) {
        let _ = pg_command(&self.bin, "pg_ctl").arg("-D").arg(&self.data).args(["-m", "fast", "-w", "stop"]).output();
    }

    fn url(&self) -> String {
        format!("postgresql://tailor:{PASSWORD}@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = pg_command(&self.bin, "pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "stop"]).output();
    }
}

fn worker(url: &str, study: &str, env: &[(&str, &str)]) -> Child {
    let mut c = hf_tailor();
    c.args(["worker", "--storage", url, "--study", study, "--stale-after", "2"]).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn wait(child: &mut Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    std::process::Output { status: child.wait().unwrap(), stdout: Vec::new(), stderr: err.into_bytes() }
}

fn export(url: &str, study: &str, to: &Path) -> Vec<hf_tailor::search::TrialRecord> {
    let o = hf_tailor().args(["export", "--storage", url, "--study", study, "--journal"]).arg(to).output().unwrap();
    assert!(o.status.success(), "export: {}", String::from_utf8_lossy(&o.stderr));
    Journal::read(to).unwrap().1
}

fn coordinator(f: &Fixture, out: &Path, trials: usize, url: &str, study: &str, env: &[(&str, &str)]) -> Child {
    let mut c = hf_tailor();
    c.args(search_args(f, out, trials, &["--storage", url, "--study", study, "--workers", "0", "--stale-after", "2", "--selection-split", "0"]));
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

fn one_line_error(o: &std::process::Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    let last: Vec<&str> = err.trim().lines().filter(|l| l.starts_with("hf-tailor: error") || l.starts_with("error")).collect();
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(err.contains(needle) && last.len() == 1, "want one error line with `{needle}`:\n{err}");
    assert!(!err.contains(PASSWORD), "the password leaked: {err}");
}

#[test]
fn workers_on_a_postgresql_study_complete_it_through_a_killed_worker_and_coordinator() {
    let pg = Pg::start();
    let url = pg.url();
    let f = fixture();
    let out = f.root.join("out");
    // A worker that claims a trial and hangs, killed with SIGKILL: its trial is queued again.
    let mut coord = coordinator(&f, &out, 14, &url, "s1", &[("HF_TAILOR_TEST_KILL_AFTER_TRIALS", "6")]);
    let mut hung = worker(&url, "s1", &[("HF_TAILOR_TEST_WORKER_HANG_AFTER_CLAIM", "1")]);
    // A second coordinator for the same study is refused while the first holds it.
    std::thread::sleep(Duration::from_secs(3));
    let o = hf_tailor()
        .args(search_args(&f, &f.root.join("out2"), 14, &["--storage", &url, "--study", "s1", "--workers", "0", "--selection-split", "0"]))
        .output()
        .unwrap();
    one_line_error(&o, 2, "another coordinator");
    // Killed only once it holds a trial (it says so, then hangs).
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(hung.stderr.take().unwrap()));
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("claimed a trial"))), "the hanging worker never claimed a trial");
    hung.kill().unwrap();
    hung.wait().unwrap();
    let mut workers: Vec<Child> = (0..3).map(|_| worker(&url, "s1", &[])).collect();
    // The coordinator kills itself (SIGKILL) after 6 trials; a new one continues the study.
    let o = wait(&mut coord, Duration::from_secs(120));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(9), "{}", String::from_utf8_lossy(&o.stderr));
    let mut coord = coordinator(&f, &out, 14, &url, "s1", &[]);
    let o = wait(&mut coord, Duration::from_secs(180));
    assert!(o.status.success(), "restarted coordinator: {}", String::from_utf8_lossy(&o.stderr));
    for w in &mut workers {
        let o = wait(w, Duration::from_secs(30));
        assert!(o.status.success(), "worker: {}", String::from_utf8_lossy(&o.stderr));
    }
    let trials = export(&url, "s1", &f.root.join("s1.jsonl"));
    assert_each_trial_once(&trials, 14);
    assert!(trials.iter().all(|t| t.failed.is_none()), "the killed worker's trial was not re-queued");
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let again: i64 = client.query_one("SELECT count(*) FROM hf_tailor_trial WHERE study = 's1' AND attempts = 2", &[]).unwrap().get(0);
    assert_eq!(again, 1, "the killed worker's trial was claimed twice");
    let names: std::collections::BTreeSet<_> = trials.iter().filter_map(|t| t.worker.clone()).collect();
    assert!(names.len() >= 2, "{names:?}");
    assert!(out.join("tailor.yaml").is_file());
    // The export is a journal `--resume` continues (the file journal's format).
    let o = hf_tailor()
        .args(search_args(
            &f,
            &f.root.join("resumed"),
            14,
            &["--journal", &f.root.join("s1.jsonl").display().to_string(), "--resume", "--selection-split", "0"],
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "resume from the export: {}", String::from_utf8_lossy(&o.stderr));

    // A worker whose family differs (a changed file) is refused.
    let config = f.dirs[0].join("config.json");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push('\n');
    std::fs::write(&config, text).unwrap();
    let o = wait(&mut worker(&url, "s1", &[]), Duration::from_secs(30));
    one_line_error(&o, 2, "sha256");
}

#[test]
fn bad_url_refused_password_and_a_database_gone_mid_study_are_one_line_errors() {
    let pg = Pg::start();
    let f = fixture();
    let o = hf_tailor()
        .args(["export", "--storage", "postgresql://tailor@127.0.0.1:notaport/x", "--study", "s", "--journal", "/dev/null/x"])
        .output()
        .unwrap();
    one_line_error(&o, 2, "--storage");
    let wrong = format!("postgresql://tailor:wrong@127.0.0.1:{}/postgres", pg.port);
    let o = hf_tailor().args(["export", "--storage", &wrong, "--study", "s", "--journal", "/dev/null/x"]).output().unwrap();
    one_line_error(&o, 2, "password");
    // The database stops mid-study: the coordinator stops with one line; the trials it
    // finished are in the study when the database is back.
    let url = pg.url();
    let out = f.root.join("out");
    let mut c = hf_tailor();
    c.args(search_args(&f, &out, 400, &["--storage", &url, "--study", "gone", "--workers", "1", "--selection-split", "0"]));
    let mut coord = c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let n: i64 =
            client.query_one("SELECT count(*) FROM hf_tailor_trial WHERE study = 'gone' AND told IS NOT NULL", &[]).map(|r| r.get(0)).unwrap_or(0);
        if n >= 5 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the study did not progress");
        std::thread::sleep(Duration::from_millis(200));
    }
    pg.ctl_stop();
    let o = wait(&mut coord, Duration::from_secs(60));
    one_line_error(&o, 1, "PostgreSQL");
    pg.ctl_start();
    let trials = export(&url, "gone", &f.root.join("gone.jsonl"));
    assert!(trials.len() >= 5, "finished trials were lost: {}", trials.len());
}

#[test]
fn a_file_journal_search_moves_into_a_study_and_its_workers_finish_it() {
    let pg = Pg::start();
    let url = pg.url();
    let f = fixture();
    // Five trials on this machine, in the file journal.
    let local = f.root.join("local");
    let o = hf_tailor().args(search_args(&f, &local, 5, &["--selection-split", "0"])).output().unwrap();
    assert!(o.status.success(), "local search: {}", String::from_utf8_lossy(&o.stderr));
    let journal = local.join("journal.jsonl");
    let (_, first) = Journal::read(&journal).unwrap();
    assert_eq!(first.len(), 5);
    // The study starts from them; its worker scores the rest, and the coordinator chooses on
    // selection tasks of their own (the journal's search saw every item too: no split).
    let journal_arg = journal.display().to_string();
    let dev = format!("mc:dev={}", f.root.join(format!("{}.jsonl", (f.evaluator)().tasks()[0].name)).display());
    let moved = |out: &str| {
        let extra = [
            "--storage",
            &url,
            "--study",
            "moved",
            "--import-journal",
            &journal_arg,
            "--workers",
            "1",
            "--stale-after",
            "2",
            "--selection-tasks",
            &dev,
        ];
        hf_tailor().args(search_args(&f, &f.root.join(out), 12, &extra)).output().unwrap()
    };
    let o = moved("moved");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "study from the journal: {err}");
    assert!(err.contains("imported 5 trials"), "{err}");
    let trials = export(&url, "moved", &f.root.join("moved.jsonl"));
    assert_each_trial_once(&trials, 12);
    for (a, b) in first.iter().zip(&trials) {
        assert_eq!((a.index, &a.recipe, a.budget, a.mean), (b.index, &b.recipe, b.budget, b.mean), "the imported results come first, unchanged");
    }
    assert!(trials[5..].iter().all(|t| t.worker.is_some()), "the rest were scored by the study's worker");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f.root.join("moved/report.json")).unwrap()).unwrap();
    assert_eq!(report["selection_tasks"], serde_json::json!(["dev"]), "the coordinator chose on the selection tasks");
    assert!(report["finalists"].as_array().is_some_and(|f| !f.is_empty()));
    // A study that already holds trials is not imported into.
    one_line_error(&moved("again"), 2, "already holds trials");
}

/// `--heal search` on a study: the study names the heal's calibration text and the hash of
/// its tokens, the workers fit their healed trials on the same tokens (the coordinator's
/// finalists and healed baselines too), and a worker whose heal text differs is refused.
#[test]
fn a_heal_search_runs_on_a_study_and_a_worker_with_other_heal_text_is_refused() {
    let pg = Pg::start();
    let url = pg.url();
    let dir = tempdir();
    let out = dir.path().join("healed");
    let [base, list, tasks, out_s] = crate::heal::job_inputs(dir.path(), &out);
    let texts_file = dir.path().join("heal-texts.jsonl");
    let write_texts = |texts: &[String]| {
        std::fs::write(&texts_file, texts.iter().map(|t| serde_json::json!({"text": t}).to_string() + "\n").collect::<String>()).unwrap()
    };
    write_texts(&crate::heal::texts());
    // The calibration texts (the baselines' and, with no --heal-calibration, the heal's).
    let calibration = format!("ppl={}", texts_file.display());
    #[rustfmt::skip]
    let args = [
        "search", "--base", &base, "--finetunes", &list, "--tasks", &tasks, "--keep-layers", "2", "--trials", "10",
        "--heal", "search", "--heal-teacher", "base,average", "--calibration", &calibration,
        "--storage", &url, "--study", "h", "--workers", "0", "--stale-after", "2", "--out", &out_s,
    ];
    let mut coord = hf_tailor().args(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut w = worker(&url, "h", &[]);
    let o = wait(&mut coord, Duration::from_secs(240));
    assert!(o.status.success(), "coordinator: {}", String::from_utf8_lossy(&o.stderr));
    let ow = wait(&mut w, Duration::from_secs(30));
    assert!(ow.status.success(), "worker: {}", String::from_utf8_lossy(&ow.stderr));
    let trials = export(&url, "h", &dir.path().join("h.jsonl"));
    assert_each_trial_once(&trials, 10);
    let healed = trials.iter().filter(|t| t.recipe.heal.is_some() && t.worker.is_some() && t.failed.is_none()).count();
    assert!(healed > 0, "the worker scored healed trials");
    assert!(out.join("tailor.yaml").is_file());
    // Another worker on other heal text: refused before it scores anything.
    write_texts(&crate::heal::texts()[1..]);
    let o = wait(&mut worker(&url, "h", &[]), Duration::from_secs(30));
    one_line_error(&o, 2, "heal calibration text differs");
}
