//! The verify stage shown to fail: a checkpoint altered between the build and the verify is
//! caught, the job exits non-zero, and nothing reaches the Hub.

use hf_tailor::testkit::fixture::{write_family, TinySpec};

use crate::common;
use crate::testhub::{TestHub, TOKEN};

#[test]
fn a_checkpoint_altered_before_verify_fails_the_job_and_nothing_is_pushed() {
    let tmp = common::tempdir();
    let root = tmp.path();
    let (base, sibs, _) = write_family(&root.join("fam"), &TinySpec::llama(), 2, 21).unwrap();
    let list = root.join("list.txt");
    std::fs::write(&list, sibs.iter().map(|s| s.display().to_string() + "\n").collect::<String>()).unwrap();
    // Two single-token choices, the second always right: a model whose logits are all zero
    // picks the first and scores exactly 0.
    let items: Vec<String> = (0..40u8)
        .map(|i| {
            let (a, b, c) = ((b'a' + i % 26) as char, (b'a' + (i + 5) % 26) as char, (b'a' + (i + 11) % 26) as char);
            serde_json::json!({"context": format!("{a}{b}{a}{b}{a}"), "choices": [c.to_string(), b.to_string()], "label": 1}).to_string()
        })
        .collect();
    std::fs::write(root.join("task.jsonl"), items.join("\n") + "\n").unwrap();
    let hub = TestHub::start();
    let python = common::python();
    let tamper = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/tamper_model.py");
    let job = |out: &str, hook: &str| {
        common::hf_tailor()
            .current_dir(root)
            .args(["--base", base.to_str().unwrap(), "--finetunes", list.to_str().unwrap(), "--tasks", "task.jsonl", "--keep-layers", "3"])
            .args(["--trials", "3", "--out", out, "--push", &format!("tester/{out}"), "--json"])
            .env("HF_ENDPOINT", &hub.url)
            .env("HF_HOME", root.join("home"))
            .env("HF_TOKEN", TOKEN)
            .env("HF_TAILOR_TEST_AFTER_BUILD", hook)
            .env_remove("HF_HUB_OFFLINE")
            .output()
            .unwrap()
    };

    // Control: the same job with a hook that changes nothing verifies and pushes.
    let ok = job("clean", "true");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(hub.file("models", "tester/clean", "main", "config.json").is_some());

    hub.clear_log();
    let hook = format!("'{}' '{}' \"$1\"", python.display(), tamper.display());
    let bad = job("tampered", &hook);
    let stderr = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(!bad.status.success(), "verify let a tampered checkpoint through:\n{stderr}");
    assert_ne!(bad.status.code(), Some(2), "not a usage error: {stderr}");
    let line = stderr.lines().find(|l| l.contains("verification failed")).unwrap_or_else(|| panic!("no verify error:\n{stderr}"));
    assert!(line.contains("the written checkpoint scores 0.0000 on task"), "{line}");
    // The in-memory model's score is in the message: it must be off by more than the tolerance.
    let in_memory: f64 = line.split("the in-memory model ").nth(1).and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).expect(line);
    assert!(in_memory > 2.0 / 40.0, "{line}");
    assert!(bad.stdout.is_empty(), "no outcome printed for a failed job");
    assert!(!stderr.contains(TOKEN));
    // Nothing reached the Hub: no repo, no upload, no commit.
    assert_eq!(hub.is_private("models", "tester/tampered"), None);
    let writes: Vec<String> = hub.log().into_iter().filter(|l| l.starts_with("POST") || l.starts_with("PUT")).collect();
    assert!(writes.is_empty(), "requests sent for a checkpoint that failed verify: {writes:?}");
}
