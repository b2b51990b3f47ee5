//! Results in the shape lm-evaluation-harness writes them (`results`, `n-samples`,
//! `configs`, `n-shot`, `higher_is_better`, `versions`), so tools that read lm-eval's
//! output files read hf-tailor's `eval --json` and `report.json` too. The keys and their
//! meaning are checked against lm-eval 0.4.13's own output in the test suite.

use serde_json::{json, Map, Value};

use super::tasks::TaskAbout;
use crate::score::Estimate;

/// One multiple-choice task's figures.
#[derive(Debug, Clone)]
pub struct HarnessTask<'a> {
    pub task: &'a str,
    pub about: &'a TaskAbout,
    pub acc: Estimate,
    pub acc_norm: Option<Estimate>,
    /// Items scored (lm-eval's `n-samples.effective`).
    pub effective: usize,
    /// Items the task holds (lm-eval's `n-samples.original`).
    pub original: usize,
}

/// Version hf-tailor reports for its task definitions (lm-eval's `versions`).
pub const TASK_VERSION: f64 = 1.0;

/// The lm-eval-shaped object for `tasks` (perplexity tasks have no lm-eval counterpart
/// with the same metric and are left out).
pub fn lm_eval_results(tasks: &[HarnessTask<'_>]) -> Value {
    let mut results = Map::new();
    let mut samples = Map::new();
    let mut configs = Map::new();
    let mut n_shot = Map::new();
    let mut higher = Map::new();
    let mut versions = Map::new();
    for t in tasks {
        let mut r = Map::new();
        r.insert("name".into(), json!(t.task));
        r.insert("alias".into(), json!(t.task));
        r.insert("sample_len".into(), json!(t.effective));
        r.insert("acc,none".into(), json!(t.acc.value));
        r.insert("acc_stderr,none".into(), json!(t.acc.se));
        if let Some(n) = t.acc_norm {
            r.insert("acc_norm,none".into(), json!(n.value));
            r.insert("acc_norm_stderr,none".into(), json!(n.se));
        }
        results.insert(t.task.into(), Value::Object(r));
        samples.insert(t.task.into(), json!({"original": t.original, "effective": t.effective}));
        let mut metrics = vec![json!({"metric": "acc", "aggregation": "mean", "higher_is_better": true})];
        if t.acc_norm.is_some() {
            metrics.push(json!({"metric": "acc_norm", "aggregation": "mean", "higher_is_better": true}));
        }
        let mut c = Map::new();
        c.insert("task".into(), json!(t.task));
        c.insert("dataset_path".into(), json!(t.about.dataset));
        if let Some(cfg) = &t.about.config {
            c.insert("dataset_name".into(), json!(cfg));
        }
        if let Some(split) = &t.about.split {
            c.insert("test_split".into(), json!(split));
        }
        c.insert("output_type".into(), json!("multiple_choice"));
        c.insert("num_fewshot".into(), json!(t.about.num_fewshot));
        c.insert("metric_list".into(), Value::Array(metrics));
        c.insert("metadata".into(), json!({"version": TASK_VERSION, "title": t.about.title, "prompt": t.about.prompt, "scorer": "hf-tailor"}));
        configs.insert(t.task.into(), Value::Object(c));
        n_shot.insert(t.task.into(), json!(t.about.num_fewshot));
        higher.insert(t.task.into(), if t.acc_norm.is_some() { json!({"acc": true, "acc_norm": true}) } else { json!({"acc": true}) });
        versions.insert(t.task.into(), json!(TASK_VERSION));
    }
    json!({
        "results": results,
        "configs": configs,
        "versions": versions,
        "n-shot": n_shot,
        "higher_is_better": higher,
        "n-samples": samples,
    })
}

/// The lm-eval-shaped object of [`super::Evaluator::evaluate`]'s results on `tasks`.
pub fn from_task_results(results: &[super::TaskResult], tasks: &[super::Task]) -> Value {
    use super::{TaskData, TaskResult};
    let rows: Vec<HarnessTask<'_>> = results
        .iter()
        .filter_map(|r| match r {
            TaskResult::MultipleChoice { task, acc, acc_stderr, acc_norm, acc_norm_stderr, items } => {
                let t = tasks.iter().find(|t| t.name == *task)?;
                let original = match &t.data {
                    TaskData::MultipleChoice(v) => v.len(),
                    TaskData::Perplexity(v) => v.len(),
                };
                Some(HarnessTask {
                    task,
                    about: &t.about,
                    acc: Estimate { value: *acc, se: *acc_stderr },
                    acc_norm: Some(Estimate { value: *acc_norm, se: *acc_norm_stderr }),
                    effective: *items,
                    original,
                })
            }
            TaskResult::Perplexity { .. } => None,
        })
        .collect();
    lm_eval_results(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lm_evals() {
        let about = TaskAbout::local("x.jsonl");
        let t = HarnessTask {
            task: "x",
            about: &about,
            acc: Estimate { value: 0.5, se: 0.1 },
            acc_norm: Some(Estimate { value: 0.25, se: 0.05 }),
            effective: 10,
            original: 12,
        };
        let v = lm_eval_results(&[t]);
        assert_eq!(v["results"]["x"]["acc,none"], 0.5);
        assert_eq!((&v["results"]["x"]["name"], &v["results"]["x"]["sample_len"]), (&json!("x"), &json!(10)));
        assert_eq!(v["results"]["x"]["acc_norm_stderr,none"], 0.05);
        assert_eq!(v["n-samples"]["x"], json!({"original": 12, "effective": 10}));
        assert_eq!(v["configs"]["x"]["output_type"], "multiple_choice");
    }
}
