//! Per-item scores, as lm-evaluation-harness's `--log_samples` keeps them: what a paired
//! comparison of two models on the same items needs (the difference of two accuracies has a
//! far smaller standard error per item pair than either accuracy alone).

use super::plan::{self, TaskPlan};

/// One scored item or text. `doc` is its index in the task's file (lm-eval's `doc_id`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sample {
    /// A multiple-choice item: each choice's summed log-likelihood (lm-eval's `resps`), and
    /// whether the correct choice wins outright (`acc`) and per character (`acc_norm`).
    Mc { task: String, doc: usize, label: usize, loglik: Vec<f64>, acc: f64, acc_norm: f64 },
    /// A perplexity text: its summed log-likelihood over `tokens` scored tokens.
    Ppl { task: String, doc: usize, loglik: f64, tokens: usize },
}

/// The samples of every task of a scored plan (`scores`: one log-probability per target).
pub fn of_plan(tasks: &[TaskPlan], scores: &[f64]) -> Vec<Sample> {
    let mut out = Vec::new();
    for t in tasks {
        match t {
            TaskPlan::MultipleChoice { name, items } => {
                let (s, lls) = plan::mc_score(items, scores);
                for (k, (it, ll)) in items.iter().zip(lls).enumerate() {
                    out.push(Sample::Mc {
                        task: name.clone(),
                        doc: it.doc,
                        label: it.label,
                        loglik: ll,
                        acc: s.correct[k],
                        acc_norm: s.correct_norm[k],
                    });
                }
            }
            TaskPlan::Perplexity { name, texts } => {
                for (doc, span) in texts.iter().enumerate() {
                    out.push(Sample::Ppl { task: name.clone(), doc, loglik: plan::span_sum(scores, *span), tokens: span.len });
                }
            }
        }
    }
    out
}

/// JSON Lines, one sample per line.
pub fn to_jsonl(samples: &[Sample]) -> String {
    let mut s = String::new();
    for x in samples {
        s.push_str(&serde_json::to_string(x).expect("samples serialise"));
        s.push('\n');
    }
    s
}
