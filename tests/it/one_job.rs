//! Issue 24, through the binary: one job per output folder, nothing left by a refused job,
//! sources never written into, every read bounded, every mistake the user can fix exit 2.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hf_tailor::recipe::{EdgePolicy, Merge, Rule};
use hf_tailor::search::Journal;

use crate::common;

/// The lock file a job keeps in its output folder (`hf_tailor::pipeline::out_folder::LOCK_FILE`).
const LOCK_FILE: &str = ".hf-tailor.lock";

/// The root command's small job on the fixture family (base, two siblings, 4 layers) with
/// a 24-item JSONL task; every run is offline with its own empty Hub cache.
struct RootJob {
    dir: tempfile::TempDir,
    base: PathBuf,
    list: PathBuf,
    task: PathBuf,
}

impl RootJob {
    fn new() -> Self {
        let dir = common::tempdir();
        let (base, list) = crate::cli::fixture_job(dir.path());
        let task = dir.path().join("letters.jsonl");
        crate::cli::letters_task(&task, 24);
        Self { dir, base, list, task }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The job's arguments into `out`; `extra` replaces nothing, it is appended.
    fn args(&self, out: &Path, extra: &[&str]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--base".into(),
            self.base.clone().into(),
            "--finetunes".into(),
            self.list.clone().into(),
            "--tasks".into(),
            self.task.clone().into(),
            "--keep-layers".into(),
            "3".into(),
            "--trials".into(),
            "4".into(),
            "--out".into(),
            out.into(),
        ];
        a.extend(extra.iter().map(OsString::from));
        a
    }

    fn command(&self, args: &[OsString]) -> Command {
        let mut c = common::hf_tailor();
        c.args(args).current_dir(self.dir.path()).env("HF_HUB_OFFLINE", "1").env("HF_HOME", self.dir.path().join("hf-home"));
        c
    }

    fn run(&self, args: &[OsString]) -> Output {
        self.command(args).output().expect("spawn hf-tailor")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit `code` with one `hf-tailor: error:` line that mentions everything in `wanted`.
fn refused(o: &Output, code: i32, wanted: &[&str]) -> String {
    let err = text(&o.stderr);
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(o.status.code(), Some(code), "exit {code} expected: {err}");
    assert!(lines.last().is_some_and(|l| l.starts_with("hf-tailor: error: ")), "{err}");
    let line = lines.last().unwrap().to_string();
    for w in wanted {
        assert!(line.contains(w), "`{w}` expected in: {err}");
    }
    line
}

/// One error line only (nothing else on stderr).
fn one_line(o: &Output) {
    let err = text(&o.stderr);
    assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "one line expected: {err}");
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Run the binary under a memory cap (3 GB of address space) and a time limit (2 min), so
/// that an input read whole fails fast instead of filling the machine's memory or hanging.
fn run_capped(cwd: &Path, args: &[&OsStr]) -> Output {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 3000000 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_hf-tailor"))
        .args(args)
        .current_dir(cwd)
        .env("MALLOC_ARENA_MAX", "2")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", cwd.join("hf-home"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hf-tailor");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hf-tailor {args:?} still runs after 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

// ---------------------------------------------------------------------------------------
// One job per output folder.

/// Trials with their timings left out (the only thing two identical runs may differ in).
fn trials_without_timings(journal: &Path) -> Vec<hf_tailor::search::TrialRecord> {
    let (_, mut trials) = Journal::read(journal).expect("the journal parses");
    for t in &mut trials {
        t.seconds = 0.0;
    }
    trials
}

#[test]
fn a_second_job_on_the_folder_of_a_running_search_is_refused_naming_its_pid_and_the_first_result_is_unchanged() {
    let job = RootJob::new();
    let reference = job.path("reference");
    let o = job.run(&job.args(&reference, &[]));
    assert!(o.status.success(), "reference run: {}", text(&o.stderr));

    // The first job pauses in its search once two trials are journaled.
    let out = job.path("out");
    let go = job.path("go");
    let paused = job.path("go.paused");
    let mut first = job
        .command(&job.args(&out, &[]))
        .env("HF_TAILOR_TEST_PAUSE_AFTER_TRIALS", format!("2:{}", go.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !paused.exists() {
        if let Some(status) = first.try_wait().unwrap() {
            panic!("the first job ended ({status}) before its search paused");
        }
        if Instant::now() > deadline {
            let _ = first.kill();
            panic!("the first job never reached its search");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second job into the same folder, resumed or not, forced or not, and a `search`:
    // each refused in one line naming the first job's PID, and each leaves the journal alone.
    let pid = format!("process {}", first.id());
    let before = std::fs::read(out.join("journal.jsonl")).unwrap();
    for extra in [&["--resume"][..], &[], &["--force"]] {
        let o = job.run(&job.args(&out, extra));
        refused(&o, 2, &["in use by another hf-tailor job", &pid]);
        one_line(&o);
    }
    let search: Vec<OsString> = ["search", "--base"]
        .iter()
        .map(OsString::from)
        .chain([job.base.clone().into_os_string()])
        .chain(["--keep-layers", "3", "--tasks"].iter().map(OsString::from))
        .chain([format!("mc={}", job.task.display()).into()])
        .chain(["--resume", "--out"].iter().map(OsString::from))
        .chain([out.clone().into_os_string()])
        .collect();
    refused(&job.run(&search), 2, &["in use by another hf-tailor job", &pid]);
    assert_eq!(std::fs::read(out.join("journal.jsonl")).unwrap(), before, "nobody else wrote into the journal");
    assert!(Journal::read(&out.join("journal.jsonl")).unwrap().1.len() >= 2);

    std::fs::write(&go, "").unwrap();
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "the first job: {}", text(&o.stderr));
    assert_eq!(trials_without_timings(&out.join("journal.jsonl")), trials_without_timings(&reference.join("journal.jsonl")));
    let recipe = |d: &Path| hf_tailor::recipe::Recipe::load(&d.join("tailor.yaml")).unwrap();
    assert_eq!(recipe(&out), recipe(&reference), "the first job's result is the uninterrupted run's");
    assert!(!out.join(LOCK_FILE).exists(), "the lock goes with the job");
}

#[test]
fn the_lock_of_a_killed_job_is_taken_over_and_said_so() {
    let tmp = common::tempdir();
    let job = crate::bad_inputs::SearchJob::write(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // What `kill -9` leaves: the lock file with the PID of a process that is gone (above
    // the kernel's largest PID), and no lock held on it.
    std::fs::write(out.join(LOCK_FILE), "4194305\n").unwrap();
    let o = common::hf_tailor().args(job.args("1", &[os("--out"), out.as_os_str()])).output().unwrap();
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("took over the lock") && err.contains("4194305"), "{err}");
    assert!(out.join("tailor.yaml").is_file() && !out.join(LOCK_FILE).exists());
}

// ---------------------------------------------------------------------------------------
// Sources are never written into.

#[test]
fn an_out_folder_that_is_inside_or_holds_a_source_is_refused_before_the_pull_even_with_force() {
    let job = RootJob::new();
    let base_before = entries(&job.base);
    // A Hub sibling that is not cached: were it pulled first, that would be the error.
    let sib = std::fs::read_to_string(&job.list).unwrap().lines().find(|l| l.starts_with('/')).unwrap().to_string();
    let siblings = format!("{sib},org/not-cached");
    let with_hub_sibling = |out: &Path, extra: &[&str]| -> Vec<OsString> {
        let mut a = job.args(out, extra);
        let i = a.iter().position(|x| x == "--finetunes").unwrap();
        a[i + 1] = siblings.clone().into();
        a
    };
    let family = job.base.parent().unwrap().to_path_buf();
    for (out, how) in [
        (job.base.clone(), "is the source model folder"),
        (job.base.join("work"), "is inside the source model folder"),
        (family.clone(), "holds the source model folder"),
    ] {
        for extra in [&[][..], &["--force"]] {
            let o = job.run(&with_hub_sibling(&out, extra));
            refused(&o, 2, &[how, "never writes into a source model"]);
            one_line(&o);
        }
    }
    assert_eq!(entries(&job.base), base_before, "nothing was written into the base");
    assert!(!job.base.join("work").exists());
    // `search` and `build` refuse the same folders.
    let search: Vec<OsString> = ["search", "--base"]
        .iter()
        .map(OsString::from)
        .chain([job.base.clone().into_os_string()])
        .chain(["--keep-layers", "3", "--tasks"].iter().map(OsString::from))
        .chain([format!("mc={}", job.task.display()).into(), "--out".into(), job.base.join("search").into_os_string()])
        .collect();
    refused(&job.run(&search), 2, &["is inside the source model folder"]);
    let recipe = job.path("whole.yaml");
    let base = hf_tailor::recipe::SourceModel::local("base", &job.base);
    let layers = (0..4).map(|from| hf_tailor::recipe::LayerRule { from, rule: Rule::Take("base".into()) }).collect();
    hf_tailor::recipe::Recipe::new("llama", 4, base, vec![], layers, EdgePolicy::Base).save(&recipe).unwrap();
    let build: Vec<OsString> = vec!["build".into(), "--recipe".into(), recipe.into(), "--out".into(), job.base.join("pruned").into()];
    refused(&job.run(&build), 2, &["is inside the source model folder"]);
    assert_eq!(entries(&job.base), base_before);
}

// ---------------------------------------------------------------------------------------
// A refused job leaves nothing.

#[test]
fn a_refused_job_leaves_nothing_and_the_corrected_rerun_is_not_another_job() {
    let job = RootJob::new();
    // A depth the 4-layer family does not have: refused, and no folder is left.
    let out = job.path("out");
    let mut args = job.args(&out, &[]);
    let i = args.iter().position(|x| x == "--keep-layers").unwrap();
    args[i + 1] = "12".into();
    refused(&job.run(&args), 2, &["12"]);
    assert!(!out.exists(), "the refused job left {:?}", std::fs::read_dir(&out).map(|d| d.count()));
    // A sibling of another architecture, into an existing empty folder: it stays empty.
    let odd = job.path("odd");
    let sib1 = job.base.parent().unwrap().join("sib1");
    copy_dir(&sib1, &odd);
    let cfg = odd.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["model_type"] = "mistral".into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    std::fs::create_dir(&out).unwrap();
    let mut args = job.args(&out, &[]);
    let i = args.iter().position(|x| x == "--finetunes").unwrap();
    args[i + 1] = odd.clone().into();
    refused(&job.run(&args), 2, &["mistral"]);
    assert!(entries(&out).is_empty(), "the refused job left {:?}", entries(&out));
    // What older versions left after that refusal (the sources.yaml of the refused job's
    // models, nothing else) does not make the corrected job "another job".
    let cfg_hub = hf_tailor::hub::HubConfig::new("http://127.0.0.1:9", None, job.path("hf-home"));
    let base = hf_tailor::source::ModelSource::Local(job.base.clone());
    let pulled = hf_tailor::hub::pull_family(&cfg_hub, &base, &[hf_tailor::source::ModelSource::Local(odd)]).unwrap();
    hf_tailor::hub::SourceList::from(&pulled).save(&out.join("sources.yaml")).unwrap();
    let o = job.run(&job.args(&out, &[]));
    assert!(o.status.success(), "the corrected job: {}", text(&o.stderr));
    assert!(out.join("model/config.json").is_file());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn resume_without_a_journal_is_refused_and_leaves_nothing() {
    let job = RootJob::new();
    let out = job.path("out");
    let o = job.run(&job.args(&out, &["--resume"]));
    refused(&o, 2, &["--resume", "no search journal"]);
    one_line(&o);
    assert!(!out.exists());
    let tmp = common::tempdir();
    let search = crate::bad_inputs::SearchJob::write(tmp.path());
    let out = tmp.path().join("out");
    let o = common::hf_tailor().args(search.args("1", &[os("--resume"), os("--out"), out.as_os_str()])).output().unwrap();
    refused(&o, 2, &["--resume", "no search journal"]);
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------
// Every read is bounded.

#[test]
fn huge_and_special_input_files_are_refused_while_reading_or_by_type() {
    let tmp = common::tempdir();
    let (_, recipe) = crate::bad_inputs::setup(tmp.path());
    let d = tmp.path();
    let zero_yaml = d.join("zero.yaml");
    let zero_jsonl = d.join("zero.jsonl");
    let zero_list = d.join("zero.txt");
    for p in [&zero_yaml, &zero_jsonl, &zero_list] {
        std::os::unix::fs::symlink("/dev/zero", p).unwrap();
    }
    // /dev/zero never ends: refused by type, before a byte is read.
    let o = run_capped(d, &[os("build"), os("--recipe"), zero_yaml.as_os_str(), os("--out"), d.join("o").as_os_str()]);
    refused(&o, 2, &["zero.yaml", "is a character device, not a regular file"]);
    let spec = format!("mc={}", zero_jsonl.display());
    let o = run_capped(d, &[os("eval"), os("--recipe"), recipe.as_os_str(), os("--tasks"), os(&spec)]);
    refused(&o, 2, &["zero.jsonl", "character device"]);
    let o = run_capped(d, &[os("--base"), os("org/base"), os("--finetunes"), zero_list.as_os_str(), os("--out"), d.join("o").as_os_str()]);
    refused(&o, 2, &["zero.txt", "character device"]);
    // A 2 GiB (sparse) recipe: reading stops at the 16 MiB cap.
    let huge = d.join("huge.yaml");
    std::fs::File::create(&huge).unwrap().set_len(2 << 30).unwrap();
    let o = run_capped(d, &[os("build"), os("--recipe"), huge.as_os_str(), os("--out"), d.join("o").as_os_str()]);
    refused(&o, 2, &["huge.yaml", "larger than the 16.0 MiB"]);
    // A JSONL line of 5 MiB is refused before it is parsed or tokenised, with its line.
    let long = d.join("long.jsonl");
    let item = serde_json::json!({"context": "x".repeat(5 << 20), "choices": ["a", "b"], "label": 0}).to_string();
    std::fs::write(&long, format!("{{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 0}}\n{item}\n")).unwrap();
    let spec = format!("mc={}", long.display());
    let o = run_capped(d, &[os("eval"), os("--recipe"), recipe.as_os_str(), os("--tasks"), os(&spec)]);
    refused(&o, 2, &["long.jsonl:2", "longer than 4.0 MiB"]);
    assert!(!d.join("o").exists());
}

// ---------------------------------------------------------------------------------------
// Every mistake the user can fix exits 2, naming the file and line.

#[test]
fn user_mistakes_exit_2_naming_the_flag_the_file_and_the_line() {
    let job = RootJob::new();
    let out = job.path("out");
    // --selection-split is checked before the pull (the Hub base is not cached, offline).
    let mut args = job.args(&out, &["--selection-split", "1.5"]);
    let i = args.iter().position(|x| x == "--base").unwrap();
    args[i + 1] = "org/not-cached".into();
    let o = job.run(&args);
    refused(&o, 2, &["--selection-split", "1.5"]);
    one_line(&o);
    // So is a selection split beside selection tasks of their own.
    let mut both = args.clone();
    both.extend(["--selection-tasks".into(), job.task.clone().into()]);
    let i = both.iter().position(|x| x == "1.5").unwrap();
    both[i] = "0.3".into();
    let o = job.run(&both);
    refused(&o, 2, &["--selection-split and --selection-tasks"]);
    one_line(&o);
    // A base folder without config.json, as `build` says for the same folder.
    let empty = job.path("not-a-model");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "hi").unwrap();
    let mut args = job.args(&out, &[]);
    let i = args.iter().position(|x| x == "--base").unwrap();
    args[i + 1] = empty.clone().into();
    refused(&job.run(&args), 2, &["not-a-model", "config.json"]);
    // A task file that is not UTF-8, on its third line.
    let bad = job.path("bad.jsonl");
    let mut bytes = std::fs::read(&job.task).unwrap();
    let third = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(1).unwrap().0 + 3;
    bytes[third] = 0xff;
    std::fs::write(&bad, bytes).unwrap();
    let mut args = job.args(&out, &[]);
    let i = args.iter().position(|x| x == "--tasks").unwrap();
    args[i + 1] = bad.clone().into();
    refused(&job.run(&args), 2, &["bad.jsonl:3", "UTF-8"]);
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------
// `build` with a mergekit config of Hub models.

#[test]
fn build_fetches_the_configs_of_a_mergekit_configs_hub_models_and_names_one_it_cannot_reach() {
    use crate::testhub::TestHub;
    let hub = TestHub::start();
    let tmp = common::tempdir();
    let (f, _) = crate::bad_inputs::setup(tmp.path());
    for (i, repo) in ["org/base", "org/sib1"].iter().enumerate() {
        let mut files = Vec::new();
        for e in std::fs::read_dir(&f.dirs[i]).unwrap() {
            let p = e.unwrap().path();
            files.push((p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()));
        }
        let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        hub.seed("models", repo, false, &refs);
    }
    // A mergekit config as a mergekit user writes it, over Hub ids that are not cached.
    let r = crate::build::recipe(
        &f,
        vec![
            (0, Rule::Take("base".into())),
            (1, Rule::Merge(Merge::TaskArithmetic { models: vec!["sib1".into()], lambda: 0.5 })),
            (3, Rule::Take("sib1".into())),
        ],
        EdgePolicy::FollowLayers,
    );
    let local = tmp.path().join("local.yaml");
    r.save(&local).unwrap();
    let mk = tmp.path().join("mk.yml");
    let o = common::hf_tailor().args(["mergekit", "export"]).arg(&local).arg("-o").arg(&mk).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let exported = std::fs::read_to_string(&mk).unwrap();
    let hub_ids = exported.replace(&f.dirs[0].display().to_string(), "org/base").replace(&f.dirs[1].display().to_string(), "org/sib1");
    assert!(hub_ids.contains("model: org/base") && !hub_ids.contains(&tmp.path().display().to_string()), "{hub_ids}");
    std::fs::write(&mk, &hub_ids).unwrap();
    let build = |mk: &Path, out: &Path| {
        common::hf_tailor()
            .args(["build", "--recipe"])
            .arg(mk)
            .arg("--out")
            .arg(out)
            .env("HF_ENDPOINT", &hub.url)
            .env("HF_HOME", tmp.path().join("hf-home"))
            .env_remove("HF_HUB_OFFLINE")
            .env_remove("HF_TOKEN")
            .output()
            .unwrap()
    };
    let out = tmp.path().join("out");
    let o = build(&mk, &out);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let config = hf_tailor::config::ModelConfig::from_file(&out.join("config.json")).unwrap();
    assert_eq!(config.num_hidden_layers, 3);
    // A base that does not exist on the Hub is named.
    let missing = tmp.path().join("missing.yml");
    std::fs::write(&missing, hub_ids.replace("org/base", "org/no-such-base")).unwrap();
    let o = build(&missing, &tmp.path().join("out2"));
    refused(&o, 2, &["org/no-such-base", "not found"]);
    one_line(&o);
    assert!(!tmp.path().join("out2").exists());
}
