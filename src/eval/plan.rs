//! Turning task items into padded token batches and back into scores.
//!
//! Every score is a sum of log-probabilities of target tokens at known positions. A plan
//! lists the input rows, packs them into batches sorted by length, and remembers which
//! scored tokens make up each choice's log-likelihood or each text's perplexity.
//!
//! A multiple-choice item runs its context once: its row is the context followed by each
//! distinct continuation (less its last token) as a branch that sees the context and itself
//! only, positions restarting after the context ([`RowLayout`]). The scores are those of
//! one sequence per choice (lm-eval's requests); single-token choices all read the
//! context's last position, so such an item is one plain sequence, as in lm-eval. When
//! the packed row would cost more than separate sequences (continuations much longer than
//! the context, where attention over the long row dominates), the choices run apart.

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use super::forward::{BatchContext, Rope, RowLayout};
use super::tasks::{first_n, McItem, Task, TaskData};
use super::tokenize::TextEncoder;
use super::{EvalError, PackChoices};

/// A padded batch, ready to run, with the tokens it scores.
pub struct Batch {
    /// Identifies the batch's content exactly (tokens and lengths) for the prefix cache.
    pub key: [u8; 32],
    /// (batch, len) token ids, padding = the first id of the row.
    pub ids: Tensor,
    pub lengths: Vec<usize>,
    pub ctx: BatchContext,
    /// How each row is laid out (context and branches).
    pub layouts: Vec<RowLayout>,
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
    /// The item's index in its task (budgets skip items per subject).
    pub doc: usize,
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

/// One input row under construction: tokens, layout and (row index, target, slot) triples.
struct Row {
    tokens: Vec<u32>,
    layout: RowLayout,
    scored: Vec<(usize, u32, usize)>,
    group: u64,
}

/// Rows under construction.
#[derive(Default)]
pub struct SequenceSet {
    seqs: Vec<Row>,
    n_scored: usize,
    group: u64,
}

/// Items per block of a multiple-choice task: batches never mix blocks, so the batches of
/// the first `k · ITEMS_PER_BLOCK` items are the same whatever the budget, and a candidate
/// scored at a larger budget reuses the hidden states cached at a smaller one.
pub const ITEMS_PER_BLOCK: usize = 8;

impl SequenceSet {
    /// Rows added from now on are batched apart from those of other groups.
    pub fn set_group(&mut self, group: u64) {
        self.group = group;
    }

    /// Score `targets` after `context` (the target at i is predicted from position
    /// `context.len() + i - 1` of `context + targets[..-1]`); reuses an identical input
    /// from `reuse` (sequence indices of the same item). Returns the span.
    fn score(&mut self, context: &[u32], targets: &[u32], reuse: &mut Vec<usize>) -> Span {
        let mut input = context.to_vec();
        input.extend_from_slice(&targets[..targets.len().saturating_sub(1)]);
        let seq = match reuse.iter().copied().find(|&s| self.seqs[s].tokens == input) {
            Some(s) => s,
            None => {
                let layout = RowLayout::plain(input.len());
                self.seqs.push(Row { tokens: input, layout, scored: Vec::new(), group: self.group });
                reuse.push(self.seqs.len() - 1);
                self.seqs.len() - 1
            }
        };
        let start = self.n_scored;
        for (i, &t) in targets.iter().enumerate() {
            self.seqs[seq].scored.push((context.len() + i - 1, t, self.n_scored));
            self.n_scored += 1;
        }
        Span { start, len: targets.len() }
    }

    /// One row for `context` and all `continuations`: each distinct `continuation[..-1]`
    /// becomes a branch; the first target of every continuation is read at the context's
    /// last position, target i > 0 at the branch's token i - 1. One span per continuation.
    fn score_packed(&mut self, context: &[u32], continuations: &[Vec<u32>]) -> Vec<Span> {
        let mut tokens = context.to_vec();
        let mut branches: Vec<(usize, &[u32])> = Vec::new();
        let mut scored = Vec::new();
        let mut spans = Vec::new();
        for cont in continuations {
            let branch = &cont[..cont.len() - 1];
            let start = match branches.iter().find(|(_, b)| *b == branch) {
                Some((start, _)) => *start,
                None if branch.is_empty() => 0,
                None => {
                    let start = tokens.len();
                    tokens.extend_from_slice(branch);
                    branches.push((start, branch));
                    start
                }
            };
            spans.push(Span { start: self.n_scored, len: cont.len() });
            for (i, &t) in cont.iter().enumerate() {
                let row = if i == 0 { context.len() - 1 } else { start + i - 1 };
                scored.push((row, t, self.n_scored));
                self.n_scored += 1;
            }
        }
        let layout = RowLayout { context: context.len(), branches: branches.iter().map(|(_, b)| b.len()).collect() };
        self.seqs.push(Row { tokens, layout, scored, group: self.group });
        spans
    }

    /// Score every token of `tokens` after the first (a perplexity window).
    pub fn score_all(&mut self, tokens: &[u32]) -> Span {
        self.score(&tokens[..1], &tokens[1..], &mut Vec::new())
    }

    /// Full-sequence positions of `tokens` without targets (hidden states only).
    pub fn add_plain(&mut self, tokens: Vec<u32>) {
        let layout = RowLayout::plain(tokens.len());
        self.seqs.push(Row { tokens, layout, scored: Vec::new(), group: self.group });
    }
}

/// Options that shape batches.
#[derive(Debug, Clone, Copy)]
pub struct Packing {
    /// Most padded tokens (rows × longest row) in one batch.
    pub max_batch_tokens: usize,
    /// Longest window for perplexity texts.
    pub max_window: usize,
    /// When to pack a multiple-choice item into one row (see the module docs).
    pub pack_choices: PackChoices,
    /// Cost of one query-key pair of attention relative to one token through a layer's
    /// linear maps (decides when packing an item pays).
    pub pair_cost: f64,
    /// The model's `max_position_embeddings`: no multiple-choice input may be longer.
    pub max_positions: usize,
}

impl Packing {
    /// Relative cost of running a row of `n` tokens through a layer.
    fn row_cost(&self, n: usize) -> f64 {
        n as f64 + self.pair_cost * (n * n) as f64
    }
}

/// Plan the multiple-choice tasks at `budget` items and every perplexity task in full.
pub fn plan_tasks(
    tasks: &[Task],
    budget: usize,
    enc: &TextEncoder,
    pack: Packing,
    rope: &Rope,
    device: &Device,
    dtype: DType,
) -> Result<Plan, EvalError> {
    let mut set = SequenceSet::default();
    let mut plans = Vec::new();
    let mut groups: std::collections::HashMap<(usize, Option<&str>, usize), u64> = std::collections::HashMap::new();
    for (t, task) in tasks.iter().enumerate() {
        match &task.data {
            TaskData::MultipleChoice(items) => {
                let mut out = Vec::new();
                let mut per_subject: std::collections::HashMap<Option<&str>, usize> = std::collections::HashMap::new();
                for (doc, item) in first_n(items, budget) {
                    let k = per_subject.entry(item.subject.as_deref()).or_default();
                    let n = groups.len() as u64;
                    set.set_group(*groups.entry((t, item.subject.as_deref(), *k / ITEMS_PER_BLOCK)).or_insert(n));
                    *k += 1;
                    out.push(plan_item(&mut set, enc, doc, item, pack)?);
                }
                plans.push(TaskPlan::MultipleChoice { name: task.name.clone(), items: out });
            }
            TaskData::Perplexity(texts) => {
                let n = groups.len() as u64;
                set.set_group(*groups.entry((t, None, usize::MAX)).or_insert(n));
                let spans = plan_texts(&mut set, enc, texts, pack.max_window)?;
                plans.push(TaskPlan::Perplexity { name: task.name.clone(), texts: spans });
            }
        }
    }
    finish(set, plans, pack, rope, device, dtype)
}

fn plan_item(set: &mut SequenceSet, enc: &TextEncoder, doc: usize, item: &McItem, pack: Packing) -> Result<McPlanItem, EvalError> {
    let mut context = None;
    let mut continuations = Vec::new();
    for c in &item.choices {
        let (ctx, cont) = enc.encode_pair(&item.context, c)?;
        // Refused before any batch is allocated: the model has no position for these tokens.
        if ctx.len() + cont.len() > pack.max_positions {
            let head: String = item.context.chars().take(40).collect();
            return Err(EvalError::Data {
                origin: format!("item {head:?}…"),
                message: format!(
                    "encodes to {} tokens, more than the model's max_position_embeddings ({})",
                    ctx.len() + cont.len(),
                    pack.max_positions
                ),
            });
        }
        if cont.is_empty() {
            return Err(EvalError::Tokenizer(format!("choice {c:?} of {:?} encodes to no token", item.context)));
        }
        let ctx = if ctx.is_empty() { vec![enc.prefix_token] } else { ctx };
        // The context's encoding does not depend on the choice; a tokenizer where it does
        // (it never should) still gets the separate sequences lm-eval runs.
        match &context {
            None => context = Some(Some(ctx.clone())),
            Some(Some(c0)) if *c0 != ctx => context = Some(None),
            _ => {}
        }
        continuations.push((ctx, cont));
    }
    let norm_lens = item.choices.iter().map(|c| McItem::norm_len(c)).collect();
    if let Some(Some(ctx)) = context.filter(|_| pack.pack_choices != PackChoices::Never) {
        let mut distinct: Vec<&[u32]> = Vec::new();
        for (_, cont) in &continuations {
            let b = &cont[..cont.len() - 1];
            if !b.is_empty() && !distinct.contains(&b) {
                distinct.push(b);
            }
        }
        let packed = pack.row_cost(ctx.len() + distinct.iter().map(|b| b.len()).sum::<usize>());
        let apart: f64 = distinct.iter().map(|b| pack.row_cost(ctx.len() + b.len())).sum::<f64>()
            + if continuations.iter().any(|(_, c)| c.len() == 1) { pack.row_cost(ctx.len()) } else { 0.0 };
        if packed <= apart || pack.pack_choices == PackChoices::Always {
            let conts: Vec<Vec<u32>> = continuations.into_iter().map(|(_, c)| c).collect();
            let choices = set.score_packed(&ctx, &conts);
            return Ok(McPlanItem { doc, label: item.label, choices, norm_lens });
        }
    }
    let mut reuse = Vec::new();
    let choices = continuations.iter().map(|(ctx, cont)| set.score(ctx, cont, &mut reuse)).collect();
    Ok(McPlanItem { doc, label: item.label, choices, norm_lens })
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

/// Pack the rows into batches, group by group (in order of first appearance), each group
/// sorted longest first, and put them on the device.
pub fn finish(set: SequenceSet, tasks: Vec<TaskPlan>, pack: Packing, rope: &Rope, device: &Device, dtype: DType) -> Result<Plan, EvalError> {
    let mut first_seen: Vec<u64> = Vec::new();
    for r in &set.seqs {
        if !first_seen.contains(&r.group) {
            first_seen.push(r.group);
        }
    }
    let rank = |g: u64| first_seen.iter().position(|x| *x == g).expect("seen");
    let mut order: Vec<usize> = (0..set.seqs.len()).collect();
    order.sort_by_key(|&i| (rank(set.seqs[i].group), std::cmp::Reverse(set.seqs[i].tokens.len())));
    let mut batches = Vec::new();
    let mut real_tokens = 0;
    let mut i = 0;
    while i < order.len() {
        let len = set.seqs[order[i]].tokens.len().max(1);
        let rows = (pack.max_batch_tokens / len).max(1);
        let group = set.seqs[order[i]].group;
        let end = (i + rows).min(order.len());
        let members = &order[i..i + order[i..end].iter().take_while(|&&s| set.seqs[s].group == group).count()];
        i += members.len();
        let mut ids = Vec::with_capacity(members.len() * len);
        let mut lengths = Vec::new();
        let mut layouts = Vec::new();
        let (mut flat, mut targets, mut slots) = (Vec::new(), Vec::new(), Vec::new());
        let mut hasher = Sha256::new();
        for (r, &s) in members.iter().enumerate() {
            let Row { tokens, layout, scored, .. } = &set.seqs[s];
            if tokens.is_empty() {
                return Err(EvalError::Tokenizer("an input encodes to no token".into()));
            }
            ids.extend_from_slice(tokens);
            ids.extend(std::iter::repeat_n(tokens[0], len - tokens.len()));
            lengths.push(tokens.len());
            layouts.push(layout.clone());
            real_tokens += tokens.len();
            hasher.update((tokens.len() as u64).to_le_bytes());
            // The layout changes the states as much as the tokens do.
            hasher.update((layout.context as u64).to_le_bytes());
            for b in &layout.branches {
                hasher.update((*b as u64).to_le_bytes());
            }
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
        let ctx = BatchContext::packed(&layouts, len, rope, device, dtype).map_err(wrap)?;
        batches.push(Batch { key: hasher.finalize().into(), ids, lengths, ctx, layouts, rows: flat, targets, slots });
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
    /// Per item: 1 when the correct choice has the highest log-likelihood per character (mean = `acc_norm`).
    #[serde(skip)]
    pub correct_norm: Vec<f64>,
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

pub fn span_sum(scores: &[f64], s: Span) -> f64 {
    scores[s.start..s.start + s.len].iter().sum()
}

/// acc and acc_norm from per-token log-probabilities, as lm-eval computes them, with the
/// per-item measures of [`McScore`]; also each item's per-choice log-likelihoods.
pub fn mc_score(items: &[McPlanItem], scores: &[f64]) -> (McScore, Vec<Vec<f64>>) {
    let (mut acc, mut acc_norm) = (0usize, 0usize);
    let mut lls = Vec::with_capacity(items.len());
    let (mut correct, mut loglik, mut margin, mut correct_norm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for it in items {
        let ll: Vec<f64> = it.choices.iter().map(|s| span_sum(scores, *s)).collect();
        let normed: Vec<f64> = ll.iter().zip(&it.norm_lens).map(|(l, n)| l / (*n).max(1) as f64).collect();
        let hit = argmax(&ll) == it.label;
        acc += hit as usize;
        let hit_norm = argmax(&normed) == it.label;
        acc_norm += hit_norm as usize;
        correct_norm.push(if hit_norm { 1.0 } else { 0.0 });
        let per_token: Vec<f64> = ll.iter().zip(&it.choices).map(|(l, s)| l / s.len.max(1) as f64).collect();
        let wrong = per_token.iter().enumerate().filter(|(i, _)| *i != it.label).map(|(_, v)| *v).fold(f64::NEG_INFINITY, f64::max);
        correct.push(if hit { 1.0 } else { 0.0 });
        loglik.push(per_token[it.label]);
        margin.push(if wrong.is_finite() { per_token[it.label] - wrong } else { 0.0 });
        lls.push(ll);
    }
    let n = items.len().max(1) as f64;
    (McScore { acc: acc as f64 / n, acc_norm: acc_norm as f64 / n, items: items.len(), correct, loglik, margin, correct_norm }, lls)
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
