//! Per-item scores, as lm-evaluation-harness's `--log_samples` keeps them: what a paired
//! comparison of two models on the same items needs (the difference of two accuracies has a
//! far smaller standard error per item pair than either accuracy alone).

use super::plan::{self, McPlanItem, McScore, Span};

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

/// A multiple-choice task's samples, from its scored items (`score`, `lls`: [`plan::mc_score`]).
pub fn of_items<'a>(task: &'a str, items: &'a [McPlanItem], score: &'a McScore, lls: Vec<Vec<f64>>) -> impl Iterator<Item = Sample> + 'a {
    items.iter().zip(lls).enumerate().map(move |(k, (it, ll))| Sample::Mc {
        task: task.to_owned(),
        doc: it.doc,
        label: it.label,
        loglik: ll,
        acc: score.correct[k],
        acc_norm: score.correct_norm[k],
    })
}

/// A perplexity task's samples, one per text (`scores`: one log-probability per target).
pub fn of_texts<'a>(task: &'a str, texts: &'a [Span], scores: &'a [f64]) -> impl Iterator<Item = Sample> + 'a {
    texts.iter().enumerate().map(move |(doc, span)| Sample::Ppl {
        task: task.to_owned(),
        doc,
        loglik: plan::span_sum(scores, *span),
        tokens: span.len,
    })
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
