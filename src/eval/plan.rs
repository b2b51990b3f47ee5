//! Turning task items into padded token batches and back into scores.
//!
//! Every score is a sum of log-probabilities of target tokens at known positions. A plan
//! lists the distinct input sequences (choices of one item that need the same input are
//! merged, so single-token choices cost one sequence per item, as in lm-eval), packs them
//! into batches sorted by length, and remembers which scored tokens make up each
//! choice's log-likelihood or each text's perplexity.

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use super::forward::{BatchContext, Rope};
use super::tasks::{first_n, McItem, Task, TaskData};
use super::tokenize::TextEncoder;
use super::EvalError;

/// A padded batch, ready to run, with the tokens it scores.
pub struct Batch {
    /// Identifies the batch's content exactly (tokens and lengths) for the prefix cache.
    pub key: [u8; 32],
    /// (batch, len) token ids, padding = the first id of the row.
    pub ids: Tensor,
    pub lengths: Vec<usize>,
    pub ctx: BatchContext,
    /// Flat positions (`row * len + pos`) whose next-token distribution is scored.
    pub rows: Vec<u32>,
    /// The target token at each of `rows`.
    pub targets: Vec<u32>,
    /// Where each scored token goes in the plan's flat score array.
    pub slots: Vec<usize>,
}

/// A span of the flat score array: `len` scored tokens from `start`.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: usize,
    pub len: usize,
}

pub struct McPlanItem {
    pub label: usize,
    pub choices: Vec<Span>,
    pub norm_lens: Vec<usize>,
}

pub enum TaskPlan {
    MultipleChoice { name: String, items: Vec<McPlanItem> },
    Perplexity { name: String, texts: Vec<Span> },
}

/// Everything needed to score a set of tasks at one budget.
pub struct Plan {
    pub batches: Vec<Batch>,
    pub n_scored: usize,
    pub tasks: Vec<TaskPlan>,
    /// Real (non-padding) tokens over all batches, for throughput figures.
    pub real_tokens: usize,
}

/// Sequences under construction: tokens and (position, target, slot) triples.
#[derive(Default)]
pub struct SequenceSet {
    seqs: Vec<(Vec<u32>, Vec<(usize, u32, usize)>)>,
    n_scored: usize,
}

impl SequenceSet {
    /// Score `targets` after `context` (the target at i is predicted from position
    /// `context.len() + i - 1` of `context + targets[..-1]`); reuses an identical input
    /// from `reuse` (sequence indices of the same item). Returns the span.
    fn score(&mut self, context: &[u32], targets: &[u32], reuse: &mut Vec<usize>) -> Span {
        let mut input = context.to_vec();
        input.extend_from_slice(&targets[..targets.len().saturating_sub(1)]);
        let seq = match reuse.iter().copied().find(|&s| self.seqs[s].0 == input) {
            Some(s) => s,
            None => {
                self.seqs.push((input, Vec::new()));
                reuse.push(self.seqs.len() - 1);
                self.seqs.len() - 1
            }
        };
        let start = self.n_scored;
        for (i, &t) in targets.iter().enumerate() {
            self.seqs[seq].1.push((context.len() + i - 1, t, self.n_scored));
            self.n_scored += 1;
        }
        Span { start, len: targets.len() }
    }

    /// Score every token of `tokens` after the first (a perplexity window).
    pub fn score_all(&mut self, tokens: &[u32]) -> Span {
        self.score(&tokens[..1], &tokens[1..], &mut Vec::new())
    }

    /// Full-sequence positions of `tokens` without targets (hidden states only).
    pub fn add_plain(&mut self, tokens: Vec<u32>) {
        self.seqs.push((tokens, Vec::new()));
    }
}

/// Options that shape batches.
#[derive(Debug, Clone, Copy)]
pub struct Packing {
    /// Most padded tokens (rows × longest row) in one batch.
    pub max_batch_tokens: usize,
    /// Longest window for perplexity texts.
    pub max_window: usize,
}

/// Plan the multiple-choice tasks at `budget` items and every perplexity task in full.
pub fn plan_tasks(tasks: &[Task], budget: usize, enc: &TextEncoder, pack: Packing, rope: &Rope, device: &Device, dtype: DType) -> Result<Plan, EvalError> {
    let mut set = SequenceSet::default();
    let mut plans = Vec::new();
    for task in tasks {
        match &task.data {
            TaskData::MultipleChoice(items) => {
                let mut out = Vec::new();
                for item in first_n(items, budget) {
                    out.push(plan_item(&mut set, enc, item)?);
                }
                plans.push(TaskPlan::MultipleChoice { name: task.name.clone(), items: out });
            }
            TaskData::Perplexity(texts) => {
                let spans = plan_texts(&mut set, enc, texts, pack.max_window)?;
                plans.push(TaskPlan::Perplexity { name: task.name.clone(), texts: spans });
            }
        }
    }
    finish(set, plans, pack, rope, device, dtype)
}

fn plan_item(set: &mut SequenceSet, enc: &TextEncoder, item: &McItem) -> Result<McPlanItem, EvalError> {
    let mut reuse = Vec::new();
    let mut choices = Vec::new();
    for c in &item.choices {
        let (ctx, cont) = enc.encode_pair(&item.context, c)?;
        if cont.is_empty() {
            return Err(EvalError::Tokenizer(format!("choice {c:?} of {:?} encodes to no token", item.context)));
        }
        let ctx = if ctx.is_empty() { vec![enc.prefix_token] } else { ctx };
        choices.push(set.score(&ctx, &cont, &mut reuse));
    }
    Ok(McPlanItem { label: item.label, choices, norm_lens: item.choices.iter().map(|c| McItem::norm_len(c)).collect() })
}

/// Each text as lm-eval's rolling log-likelihood with context 1: the prefix token, then
/// disjoint windows of up to `window` tokens, each starting with the previous window's last
/// token, except the last, shorter one, which (as lm-eval's does) is preceded by as much of
/// the text as fills a whole window. One span per text covering all its tokens.
pub fn plan_texts(set: &mut SequenceSet, enc: &TextEncoder, texts: &[String], window: usize) -> Result<Vec<Span>, EvalError> {
    let mut spans = Vec::new();
    for t in texts {
        let mut tokens = vec![enc.prefix_token];
        tokens.extend(enc.encode(t)?);
        let start = set.n_scored;
        let mut pos = 0;
        while pos + 1 < tokens.len() {
            let window = window.max(2);
            let end = (pos + window).min(tokens.len());
            let from = end.saturating_sub(window).min(pos);
            set.score(&tokens[from..=pos], &tokens[pos + 1..end], &mut Vec::new());
            pos = end - 1;
        }
        spans.push(Span { start, len: set.n_scored - start });
    }
    Ok(spans)
}

/// Sort sequences longest first, pack them into batches and put them on the device.
pub fn finish(set: SequenceSet, tasks: Vec<TaskPlan>, pack: Packing, rope: &Rope, device: &Device, dtype: DType) -> Result<Plan, EvalError> {
    let mut order: Vec<usize> = (0..set.seqs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(set.seqs[i].0.len()));
    let mut batches = Vec::new();
    let mut real_tokens = 0;
    let mut i = 0;
    while i < order.len() {
        let len = set.seqs[order[i]].0.len().max(1);
        let rows = (pack.max_batch_tokens / len).max(1);
        let members = &order[i..(i + rows).min(order.len())];
        i += members.len();
        let mut ids = Vec::with_capacity(members.len() * len);
        let mut lengths = Vec::new();
        let (mut flat, mut targets, mut slots) = (Vec::new(), Vec::new(), Vec::new());
        let mut hasher = Sha256::new();
        for (r, &s) in members.iter().enumerate() {
            let (tokens, scored) = &set.seqs[s];
            if tokens.is_empty() {
                return Err(EvalError::Tokenizer("an input encodes to no token".into()));
            }
            ids.extend_from_slice(tokens);
            ids.extend(std::iter::repeat_n(tokens[0], len - tokens.len()));
            lengths.push(tokens.len());
            real_tokens += tokens.len();
            hasher.update((tokens.len() as u64).to_le_bytes());
            for t in tokens {
                hasher.update(t.to_le_bytes());
            }
            for &(pos, target, slot) in scored {
                flat.push((r * len + pos) as u32);
                targets.push(target);
                slots.push(slot);
            }
        }
        let wrap = |source| EvalError::Tensor { tensor: "batch".into(), source };
        let ids = Tensor::from_vec(ids, (members.len(), len), device).map_err(wrap)?;
        let ctx = BatchContext::new(&lengths, len, rope, device, dtype).map_err(wrap)?;
        batches.push(Batch { key: hasher.finalize().into(), ids, lengths, ctx, rows: flat, targets, slots });
    }
    Ok(Plan { batches, n_scored: set.n_scored, tasks, real_tokens })
}

/// The scores of one multiple-choice task: accuracy as lm-eval computes it, and the
/// per-item continuous measures the search can optimise instead (less variance than
/// accuracy: every item contributes how sure the model is, not only which side it is on).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct McScore {
    pub acc: f64,
    pub acc_norm: f64,
    pub items: usize,
    /// Per item: 1 when the correct choice has the highest log-likelihood (mean = `acc`).
    #[serde(skip)]
    pub correct: Vec<f64>,
    /// Per item: log-likelihood per token of the correct choice.
    #[serde(skip)]
    pub loglik: Vec<f64>,
    /// Per item: log-likelihood per token of the correct choice minus the highest of the
    /// wrong choices' (0 for an item with one choice).
    #[serde(skip)]
    pub margin: Vec<f64>,
}

/// numpy's argmax: the first maximum.
fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

fn span_sum(scores: &[f64], s: Span) -> f64 {
    scores[s.start..s.start + s.len].iter().sum()
}

/// acc and acc_norm from per-token log-probabilities, as lm-eval computes them, with the
/// per-item measures of [`McScore`]; also each item's per-choice log-likelihoods.
pub fn mc_score(items: &[McPlanItem], scores: &[f64]) -> (McScore, Vec<Vec<f64>>) {
    let (mut acc, mut acc_norm) = (0usize, 0usize);
    let mut lls = Vec::with_capacity(items.len());
    let (mut correct, mut loglik, mut margin) = (Vec::new(), Vec::new(), Vec::new());
    for it in items {
        let ll: Vec<f64> = it.choices.iter().map(|s| span_sum(scores, *s)).collect();
        let normed: Vec<f64> = ll.iter().zip(&it.norm_lens).map(|(l, n)| l / (*n).max(1) as f64).collect();
        let hit = argmax(&ll) == it.label;
        acc += hit as usize;
        acc_norm += (argmax(&normed) == it.label) as usize;
        let per_token: Vec<f64> = ll.iter().zip(&it.choices).map(|(l, s)| l / s.len.max(1) as f64).collect();
        let wrong = per_token.iter().enumerate().filter(|(i, _)| *i != it.label).map(|(_, v)| *v).fold(f64::NEG_INFINITY, f64::max);
        correct.push(if hit { 1.0 } else { 0.0 });
        loglik.push(per_token[it.label]);
        margin.push(if wrong.is_finite() { per_token[it.label] - wrong } else { 0.0 });
        lls.push(ll);
    }
    let n = items.len().max(1) as f64;
    (McScore { acc: acc as f64 / n, acc_norm: acc_norm as f64 / n, items: items.len(), correct, loglik, margin }, lls)
}

/// Token-weighted perplexity over spans.
pub fn perplexity(spans: &[Span], scores: &[f64]) -> f64 {
    let (sum, n) = spans.iter().fold((0.0, 0usize), |(s, n), sp| (s + span_sum(scores, *sp), n + sp.len));
    (-sum / n.max(1) as f64).exp()
}

/// Per text: log-likelihood per token and the text's token count (its weight in the
/// token-weighted mean, whose exp(−·) is [`perplexity`]).
pub fn text_logliks(spans: &[Span], scores: &[f64]) -> (Vec<f64>, Vec<f64>) {
    spans.iter().filter(|s| s.len > 0).map(|s| (span_sum(scores, *s) / s.len as f64, s.len as f64)).unzip()
}
