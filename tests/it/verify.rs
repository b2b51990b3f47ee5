//! The verify stage shown to fail: a checkpoint altered between the build and the verify is
//! caught and the job fails with the verify error. The test alters the checkpoint itself,
//! from the job's "checkpoint written" progress event, so the product carries no hook for it;
//! a failed job returns no outcome, so the caller has nothing to push (the root command pushes
//! `JobOutcome::model_dir` only after `pipeline::tailor` returned it).

use std::path::Path;

use hf_tailor::eval::TaskSpec;
use hf_tailor::hub::{self, HubConfig};
use hf_tailor::pipeline::{self, Depths, JobOptions, PipelineError, Progress, SearchRequest};
use hf_tailor::search::DepthTarget;
use hf_tailor::source::ModelSource;
use hf_tailor::testkit::fixture::{write_family, TinySpec};

use crate::common;

/// Runs `alter` on the model folder once it is written, before it is verified.
struct AfterBuild<F: FnMut(&Path)>(F);

impl<F: FnMut(&Path)> Progress for AfterBuild<F> {
    fn stage(&mut self, _: &str) {}
    fn trial(&mut self, _: usize, _: usize, _: Option<f64>) {}
    fn built(&mut self, model_dir: &Path) {
        (self.0)(model_dir)
    }
}

/// Zero the final norm's weight in place, which makes every logit 0 (all choices tie, the
/// first wins): the checkpoint no longer scores what it was built to score.
fn zero_final_norm(model_dir: &Path) {
    let name = "model.norm.weight";
    let index = model_dir.join("model.safetensors.index.json");
    let shard = match std::fs::read(&index) {
        Ok(text) => serde_json::from_slice::<serde_json::Value>(&text).unwrap()["weight_map"][name].as_str().unwrap().to_string(),
        Err(_) => "model.safetensors".into(),
    };
    let path = model_dir.join(shard);
    let mut bytes = std::fs::read(&path).unwrap();
    let (header, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let (start, end) = meta.info(name).expect("the final norm is in its shard").data_offsets;
    bytes[8 + header + start..8 + header + end].fill(0);
    std::fs::write(&path, bytes).unwrap();
}

#[test]
fn a_checkpoint_altered_before_verify_fails_the_job() {
    let tmp = common::tempdir();
    let root = tmp.path();
    let (base, sibs, _) = write_family(&root.join("fam"), &TinySpec::llama(), 2, 21).unwrap();
    // Two single-token choices, the second always right: a model whose logits are all zero
    // picks the first and scores exactly 0.
    let items: Vec<String> = (0..40u8)
        .map(|i| {
            let (a, b, c) = ((b'a' + i % 26) as char, (b'a' + (i + 5) % 26) as char, (b'a' + (i + 11) % 26) as char);
            serde_json::json!({"context": format!("{a}{b}{a}{b}{a}"), "choices": [c.to_string(), b.to_string()], "label": 1}).to_string()
        })
        .collect();
    let task_file = root.join("task.jsonl");
    std::fs::write(&task_file, items.join("\n") + "\n").unwrap();
    // Local folders only: nothing is asked of a Hub.
    let cfg = HubConfig {
        endpoint: "http://127.0.0.1:9".into(),
        token: None,
        cache_dir: root.join("cache"),
        offline: true,
        progress: false,
        retry: Default::default(),
    };
    let source = |p: &Path| ModelSource::parse(p.to_str().unwrap()).unwrap();
    let family = hub::pull_family(&cfg, &source(&base), &sibs.iter().map(|s| source(s)).collect::<Vec<_>>()).unwrap();
    let task = TaskSpec::parse(task_file.to_str().unwrap()).unwrap().load().unwrap();
    let job = |out: &str, alter: &mut dyn FnMut(&Path)| {
        let search = SearchRequest { trials: 3, ..SearchRequest::new(Depths::one(DepthTarget::KeepLayers(3))) };
        let opts = JobOptions::new(root.join(out), out, search);
        // The job's error, if any (a failed job returns no outcome to push).
        pipeline::tailor(&family, vec![task.clone()], vec![task.clone()], &opts, &mut AfterBuild(alter)).err()
    };

    // Control: the same job, the checkpoint left alone, verifies.
    let mut untouched = |_: &Path| {};
    if let Some(e) = job("clean", &mut untouched) {
        panic!("the unaltered checkpoint failed: {e}");
    }

    let mut altered = false;
    let mut alter = |dir: &Path| {
        zero_final_norm(dir);
        altered = true;
    };
    let err = job("tampered", &mut alter).expect("verify let a tampered checkpoint through");
    assert!(altered, "the job never reported its written checkpoint");
    let PipelineError::Verify(why) = &err else { panic!("want the verify error, got: {err}") };
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(why.contains("the written checkpoint scores 0.0000 on task"), "{line}");
    // The in-memory model's score is in the message: it must be off by more than the tolerance.
    let in_memory: f64 = line.split("the in-memory model ").nth(1).and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).expect(&line);
    assert!(in_memory > 2.0 / 40.0, "{line}");
}
