//! The in-memory evaluator against transformers, and prefix/LRU caching against no caching.

use std::path::Path;
use std::sync::Arc;

use hf_tailor::checkpoint::{Checkpoint, Family};
use hf_tailor::eval::{EvalOptions, Evaluator, McItem, PackChoices, Task, TaskData};
use hf_tailor::recipe::{EdgePolicy, LayerRule, Merge, Recipe, Rule, SourceModel};
use hf_tailor::testkit::fixture::{self, TinySpec};

use crate::common;

fn src(name: &str, dir: &Path) -> SourceModel {
    SourceModel::local(name, dir)
}

/// A base and two siblings of `spec` under `root`, opened as a family.
fn family(root: &Path, spec: &TinySpec) -> Arc<Family> {
    let (base, sibs, _) = fixture::write_family(root, spec, 2, 7).unwrap();
    let open = |n: &str, d: &Path| (n.to_string(), Checkpoint::open(d).unwrap());
    Arc::new(Family::new(open("base", &base), vec![open("sib1", &sibs[0]), open("sib2", &sibs[1])]).unwrap())
}

fn ta(lambda: f64) -> Rule {
    Rule::Merge(Merge::TaskArithmetic { models: vec!["sib1".into(), "sib2".into()], lambda })
}

/// `layers` as (source layer, rule) over the family's models.
fn recipe(fam: &Family, spec: &TinySpec, layers: Vec<(usize, Rule)>) -> Recipe {
    let sm = |i: usize| src(&fam.names[i], &fam.models().nth(i).unwrap().dir);
    Recipe::new(
        spec.model_type,
        spec.layers,
        sm(0),
        vec![sm(1), sm(2)],
        layers.into_iter().map(|(from, rule)| LayerRule { from, rule }).collect(),
        EdgePolicy::FollowLayers,
    )
}

/// Removal of layer 2, a sibling's layer, a task-arithmetic merge, and a merged head.
fn stitched(fam: &Family, spec: &TinySpec) -> Recipe {
    recipe(fam, spec, vec![(0, Rule::Take("sib1".into())), (1, ta(0.6)), (3, Rule::Take("base".into())), (3, ta(0.3))])
}

/// Write the model `recipe` describes with the writer.
fn materialise(fam: &Family, recipe: &Recipe, dir: &Path) {
    hf_tailor::writer::build(fam, recipe, dir, &hf_tailor::writer::BuildOptions::default()).unwrap();
}

pub(crate) fn items() -> Vec<McItem> {
    let mc = common::mc_item;
    vec![
        mc("The capital of France is", &[" Paris", " London", " Rome"], 0),
        // Trailing space of the context moves onto the continuation (the WSC prompt).
        mc("Does the pronoun refer to it?\nA. Yes\nB. No\nAnswer: ", &["B", "A"], 1),
        // Single-token choices: one forward for the whole item.
        mc("Q: 2+2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:", &[" A", " B", " C", " D"], 1),
        mc("abc", &["defgh", "d", "xyz!"], 2),
        // Two choices share a long common prefix and differ only at the end; a third repeats
        // the first: the packed row shares the context and the repeated branch.
        mc(
            "The list reads:",
            &[
                " one two three four five six seven eight nine ten",
                " one two three four five six seven eight nine eleven",
                " one two three four five six seven eight nine ten",
                " zero",
            ],
            1,
        ),
        // A choice far longer than the context (and a single-token one beside it).
        mc("So", &[" it went on and on, past the river.", ",", " no"], 0),
    ]
}

/// What hf-tailor computes for one variant, and the request for transformers.
struct Ours {
    label: String,
    seqs: Vec<Vec<u32>>,
    single: Vec<Vec<Vec<f32>>>,
    batched: Vec<Vec<Vec<f32>>>,
    lls: Vec<Vec<f64>>,
    perplexity: f64,
}

/// Perplexity windows of this many tokens (prefix token included): the texts need several.
const PPL_WINDOW: usize = 12;

fn ppl_texts() -> Vec<String> {
    vec!["A text long enough to need several perplexity windows of twelve tokens.".into(), "Short one.".into()]
}

/// Build `recipe` (the stitched one unless given) for `spec` and compute hf-tailor's numbers.
fn ours(root: &Path, label: &str, spec: &TinySpec, make: impl Fn(&Family) -> Recipe) -> (Ours, serde_json::Value) {
    let fam = family(root, spec);
    let r = make(&fam);
    let out = root.join("tailored");
    materialise(&fam, &r, &out);

    let mut ev = Evaluator::new(fam.clone(), vec![], EvalOptions::default()).unwrap();
    let texts = ["Hello, world! This is a longer sentence.", "Short", "Padding in a batch: ok?"];
    let seqs: Vec<Vec<u32>> = texts.iter().map(|t| ev.encoder().encode(t).unwrap()).collect();
    let batched = ev.logits(&r, &seqs).unwrap();
    let single: Vec<_> = seqs.iter().map(|s| ev.logits(&r, std::slice::from_ref(s)).unwrap().remove(0)).collect();
    let lls = ev.choice_log_likelihoods(&r, &items()).unwrap();
    let mut windowed = Evaluator::new(fam.clone(), vec![], EvalOptions { max_window: PPL_WINDOW, ..EvalOptions::default() }).unwrap();
    let perplexity = windowed.text_perplexity(&r, &ppl_texts()).unwrap();
    if let Some(w) = spec.sliding_window {
        assert!(seqs[0].len() > 2 * w, "{label}: the sliding window must be exercised");
    }
    let req = serde_json::json!({
        "label": label,
        "model": out,
        "sequences": seqs,
        "items": items().iter().map(|i| serde_json::json!({"context": i.context, "choices": i.choices})).collect::<Vec<_>>(),
        "texts": ppl_texts(),
        "window": PPL_WINDOW,
    });
    (Ours { label: label.into(), seqs, single, batched, lls, perplexity }, req)
}

/// Every disagreement of `o` with transformers' `reference`, as messages.
fn compare(o: &Ours, reference: &serde_json::Value) -> Vec<String> {
    let label = &o.label;
    let mut bad = vec![];
    macro_rules! check {
        ($ok:expr, $($msg:tt)*) => { if !$ok { bad.push(format!($($msg)*)); } };
    }
    for (i, s) in o.seqs.iter().enumerate() {
        assert!(s.len() > 3, "sequence {i} too short to test padding");
        let d1 = common::max_logit_diff(&o.single[i], &reference["single"][i]);
        let d2 = common::max_logit_diff(&o.batched[i], &reference["batched"][i]);
        let d3 = common::max_logit_diff(&o.batched[i], &reference["single"][i]);
        check!(
            d1 < 1e-4 && d2 < 1e-4 && d3 < 1e-4,
            "{label}: sequence {i}: logits differ by {d1:e} (alone), {d2:e} (batched), {d3:e} (batched vs alone)"
        );
    }
    for (i, (ours, theirs)) in o.lls.iter().zip(reference["lls"].as_array().unwrap()).enumerate() {
        let theirs: Vec<f64> = theirs.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(ours.len(), theirs.len());
        check!(ours.iter().zip(&theirs).all(|(a, b)| (a - b).abs() < 1e-4), "{label}: item {i}: log-likelihoods {ours:?} vs transformers {theirs:?}");
    }
    let theirs = reference["perplexity"].as_f64().unwrap();
    assert!(reference["windows"].as_u64().unwrap() > 3, "{label}: perplexity texts fit in too few windows");
    check!(((o.perplexity - theirs) / theirs).abs() < 1e-5, "{label}: perplexity {} vs transformers {theirs}", o.perplexity);
    bad
}

/// The in-memory evaluator against transformers on the written checkpoint, for every
/// architecture variant: logits at every position (alone and batched), lm-eval
/// log-likelihoods, and windowed perplexity (lm-eval's rolling windows). The family's
/// siblings differ from the base in every tensor, so the embeddings' and head's rules show.
#[test]
fn logits_log_likelihoods_and_perplexity_match_transformers_on_every_variant() {
    let tmp = common::tempdir();
    let llama3 = serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16});
    let linear_rope = serde_json::json!({"rope_type": "linear", "factor": 4.0});
    let variants: Vec<(&str, TinySpec)> = vec![
        ("llama", TinySpec::llama()),
        ("llama-tied", TinySpec::llama_tied()),
        // A window shorter than the sequences, so that it changes the result.
        ("mistral-sliding-window", TinySpec { sliding_window: Some(5), ..TinySpec::mistral() }),
        ("qwen2-tied", TinySpec::qwen2()),
        ("qwen2-untied", TinySpec::qwen2_untied()),
        ("llama-head-dim-llama3-rope", TinySpec { head_dim: Some(16), rope_scaling: Some(llama3), ..TinySpec::llama() }),
        ("llama-linear-rope", TinySpec { rope_scaling: Some(linear_rope), ..TinySpec::llama() }),
    ];
    let mut all = vec![];
    let mut reqs = vec![];
    for (label, spec) in &variants {
        let (o, req) = ours(&tmp.path().join(label), label, spec, |fam| stitched(fam, spec));
        all.push(o);
        reqs.push(req);
        if spec.tie_embeddings {
            // Both edges from one rule: the output stays tied.
            let same = format!("{label}-same-edges");
            let (o, req) = ours(&tmp.path().join(&same), &same, spec, |fam| {
                let mut r = stitched(fam, spec);
                r.head = r.embeddings.clone();
                r
            });
            all.push(o);
            reqs.push(req);
        }
    }
    let req_path = tmp.path().join("req.json");
    let ref_path = tmp.path().join("ref.json");
    std::fs::write(&req_path, serde_json::json!({"requests": reqs}).to_string()).unwrap();
    common::run_python("eval_crosscheck.py", &[req_path.to_str().unwrap(), ref_path.to_str().unwrap()]);
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ref_path).unwrap()).unwrap();
    let reference = reference["results"].as_array().unwrap();
    assert_eq!(reference.len(), all.len());
    let bad: Vec<String> = all.iter().zip(reference).flat_map(|(o, r)| compare(o, r)).collect();
    assert!(bad.is_empty(), "{} disagreements with transformers:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn packed_items_score_as_one_sequence_per_choice_with_fewer_tokens() {
    let tmp = common::tempdir();
    let spec = TinySpec::llama();
    let fam = family(tmp.path(), &spec);
    let r = stitched(&fam, &spec);
    let tasks = vec![Task::new("mc", TaskData::MultipleChoice(items()))];
    let run = |pack_choices: PackChoices, max_batch_tokens: usize| {
        let opts = EvalOptions { pack_choices, max_batch_tokens, prefix_cache_bytes: Some(0), ..EvalOptions::default() };
        let mut ev = Evaluator::new(fam.clone(), tasks.clone(), opts).unwrap();
        let lls = ev.choice_log_likelihoods(&r, &items()).unwrap();
        let scores = ev.evaluate(&r, 100).unwrap();
        (lls, scores, ev.planned_tokens(100).unwrap())
    };
    let (apart, apart_scores, apart_tokens) = run(PackChoices::Never, 2048);
    // What one row per item holds: the context once, each distinct continuation less its
    // last token once (lm-eval's tokenisation of the pair).
    let ev = Evaluator::new(fam.clone(), vec![], EvalOptions::default()).unwrap();
    let (mut expected_packed, mut expected_apart) = (0, 0);
    for it in items() {
        let mut branches: Vec<Vec<u32>> = Vec::new();
        let mut inputs: Vec<Vec<u32>> = Vec::new();
        let mut ctx_len = 0;
        for c in &it.choices {
            let (ctx, cont) = ev.encoder().encode_pair(&it.context, c).unwrap();
            ctx_len = ctx.len();
            let b = cont[..cont.len() - 1].to_vec();
            let input = [ctx.clone(), b.clone()].concat();
            if !inputs.contains(&input) {
                inputs.push(input);
            }
            if !b.is_empty() && !branches.contains(&b) {
                branches.push(b);
            }
        }
        expected_packed += ctx_len + branches.iter().map(Vec::len).sum::<usize>();
        expected_apart += inputs.iter().map(Vec::len).sum::<usize>();
    }
    assert_eq!(apart_tokens, expected_apart);
    for (pack, batch_tokens) in [(PackChoices::Always, 2048), (PackChoices::Always, 40), (PackChoices::WhenCheaper, 2048)] {
        let (packed, packed_scores, packed_tokens) = run(pack, batch_tokens);
        assert_eq!(packed_scores, apart_scores);
        for (i, (p, a)) in packed.iter().zip(&apart).enumerate() {
            assert_eq!(p.len(), a.len());
            for (x, y) in p.iter().zip(a) {
                assert!((x - y).abs() < 1e-5, "item {i} ({pack:?}, batch tokens {batch_tokens}): packed {p:?} vs apart {a:?}");
            }
        }
        match pack {
            PackChoices::Always => assert_eq!(packed_tokens, expected_packed),
            _ => assert!(packed_tokens < apart_tokens && packed_tokens >= expected_packed, "{packed_tokens} vs {apart_tokens}"),
        }
    }
    assert!(expected_packed < expected_apart, "packed {expected_packed} tokens, apart {expected_apart}");
}

/// A stream of candidates sharing prefixes, as a search produces.
fn candidates(fam: &Family, spec: &TinySpec) -> Vec<Recipe> {
    let b = || Rule::Take("base".into());
    let s1 = || Rule::Take("sib1".into());
    vec![
        recipe(fam, spec, vec![(0, b()), (1, b()), (2, b()), (3, b())]),
        recipe(fam, spec, vec![(0, b()), (1, b()), (2, b()), (3, s1())]),
        recipe(fam, spec, vec![(0, b()), (1, ta(0.5)), (3, b())]),
        recipe(fam, spec, vec![(0, b()), (1, ta(0.5)), (3, ta(0.7))]),
        recipe(fam, spec, vec![(0, b()), (1, b()), (2, b()), (3, b())]),
        recipe(fam, spec, vec![(0, s1()), (1, ta(0.5)), (2, b())]),
    ]
}

#[test]
fn prefix_cache_and_lru_eviction_do_not_change_scores() {
    let tmp = common::tempdir();
    let spec = TinySpec::llama();
    let fam = family(tmp.path(), &spec);
    let tasks = vec![
        Task::new("mc", TaskData::MultipleChoice(items())),
        Task::new("text", TaskData::Perplexity(vec!["Some text to score for perplexity.".into(), "More.".into()])),
    ];
    let layer_bytes = (fixture::shapes(&spec)
        .iter()
        .filter(|(n, _)| n.starts_with("model.layers.0."))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum::<usize>()
        * 4) as u64;
    // Small batches, so that the items and texts make several of them.
    let small = EvalOptions { max_batch_tokens: 96, ..EvalOptions::default() };
    let configs = [
        ("cached", small.clone()),
        ("uncached", EvalOptions { prefix_cache_bytes: Some(0), ..small.clone() }),
        // Room for ~2 layers of weights and about one batch of hidden states: constant eviction.
        ("tight", EvalOptions { weight_cache_bytes: Some(2 * layer_bytes + 1), prefix_cache_bytes: Some(100_000), ..small.clone() }),
        // Room for one batch of hidden states at a time: every batch is its own group.
        ("grouped", EvalOptions { state_bytes: Some(1), ..small.clone() }),
    ];
    let mut results = Vec::new();
    for (label, opts) in configs {
        let mut ev = Evaluator::new(fam.clone(), tasks.clone(), opts).unwrap();
        let mut lls = Vec::new();
        let mut scores = Vec::new();
        let mut calls = 0;
        for r in candidates(&fam, &spec) {
            calls += 2;
            scores.push(ev.evaluate(&r, 100).unwrap());
            lls.push(ev.choice_log_likelihoods(&r, &items()).unwrap());
        }
        let st = ev.stats();
        match label {
            "cached" => assert!(st.saved_fraction() > 0.3, "cached run saved only {:.2}: {st:?}", st.saved_fraction()),
            "uncached" => assert_eq!(st.layer_forwards_saved, 0),
            // More groups than scoring calls: the batches really went through the layers apart.
            "grouped" => assert!(st.state_groups > calls, "{st:?}"),
            _ => assert!(st.weights.evictions > 0 && st.prefix.evictions > 0 && st.weights.peak_bytes <= 2 * layer_bytes + 1, "{st:?}"),
        }
        results.push((label, scores, lls));
    }
    let (_, s0, l0) = &results[0];
    for (label, s, l) in &results[1..] {
        assert_eq!(s, s0, "{label} scores differ from the cached run");
        // Bit-identical log-likelihoods, not merely close.
        assert_eq!(l, l0, "{label} log-likelihoods differ from the cached run");
    }
    // The candidates are distinct models: their scores are not all the same.
    assert!(l0.iter().any(|x| x != &l0[0]));
}

/// Write `cais/mmlu`-layout rows (question, subject, choices: list<string>, answer: int64) as parquet.
fn write_mmlu_parquet(path: &Path, rows: &[(&str, &str, [&str; 4], i64)]) {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = parquet::schema::parser::parse_message_type(
        "message schema { REQUIRED BYTE_ARRAY question (UTF8); REQUIRED BYTE_ARRAY subject (UTF8);
         REQUIRED group choices (LIST) { REPEATED group list { REQUIRED BYTE_ARRAY element (UTF8); } }
         REQUIRED INT64 answer; }",
    )
    .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(WriterProperties::builder().build())).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let bytes = |v: Vec<&str>| v.into_iter().map(ByteArray::from).collect::<Vec<_>>();
    let mut col = 0;
    while let Some(mut c) = rg.next_column().unwrap() {
        match col {
            0 | 1 => {
                let vals = bytes(rows.iter().map(|r| if col == 0 { r.0 } else { r.1 }).collect());
                c.typed::<ByteArrayType>().write_batch(&vals, None, None).unwrap();
            }
            2 => {
                let vals = bytes(rows.iter().flat_map(|r| r.2).collect());
                let def = vec![1i16; vals.len()];
                let rep: Vec<i16> = rows.iter().flat_map(|_| [0i16, 1, 1, 1]).collect();
                c.typed::<ByteArrayType>().write_batch(&vals, Some(&def), Some(&rep)).unwrap();
            }
            _ => {
                let vals: Vec<i64> = rows.iter().map(|r| r.3).collect();
                c.typed::<Int64Type>().write_batch(&vals, None, None).unwrap();
            }
        }
        c.close().unwrap();
        col += 1;
    }
    rg.close().unwrap();
    w.close().unwrap();
}

#[test]
fn mmlu_parquet_folder_and_jsonl_tasks_score_through_the_cli() {
    let tmp = common::tempdir();
    let spec = TinySpec::llama();
    let fam = family(tmp.path(), &spec);
    // The cais/mmlu layout: all/ plus per-subject folders; only all/validation-* is read.
    let mmlu = tmp.path().join("mmlu");
    let rows = [
        ("What is 1+1?", "elementary_mathematics", ["1", "2", "3", "4"], 1),
        ("Which is a prime?", "elementary_mathematics", ["4", "6", "7", "9"], 2),
        ("Who wrote it?", "world_history", ["a", "b", "c", "d"], 0),
    ];
    write_mmlu_parquet(&mmlu.join("all/validation-00000-of-00001.parquet"), &rows);
    write_mmlu_parquet(&mmlu.join("all/test-00000-of-00001.parquet"), &rows[..1]);
    write_mmlu_parquet(&mmlu.join("world_history/validation-00000-of-00001.parquet"), &rows[2..]);
    let task = hf_tailor::eval::TaskSpec::parse(&format!("mmlu={}", mmlu.display())).unwrap().load().unwrap();
    let TaskData::MultipleChoice(mmlu_items) = &task.data else { panic!("mmlu is multiple choice") };
    assert_eq!(mmlu_items.len(), 3);
    assert_eq!(mmlu_items[1].label, 2);
    assert_eq!(mmlu_items[1].choices, [" A", " B", " C", " D"]);
    assert_eq!(
        mmlu_items[1].context,
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\nWhich is a prime?\nA. 4\nB. 6\nC. 7\nD. 9\nAnswer:"
    );

    // The same scores from the library and from `hf-tailor eval --json`, budget 1 per subject.
    let jsonl = tmp.path().join("mc.jsonl");
    let lines: Vec<String> =
        items().iter().map(|i| serde_json::json!({"context": i.context, "choices": i.choices, "label": i.label}).to_string()).collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let mc = hf_tailor::eval::TaskSpec::parse(jsonl.to_str().unwrap()).unwrap().load().unwrap();
    let mut ev = Evaluator::new(fam.clone(), vec![task, mc], EvalOptions::default()).unwrap();
    let base = recipe(&fam, &spec, (0..spec.layers).map(|l| (l, Rule::Take("base".into()))).collect());
    let lib = ev.evaluate(&base, 1).unwrap();
    assert!(matches!(lib[0], hf_tailor::eval::TaskResult::MultipleChoice { items: 2, .. }), "{lib:?}");
    let out = common::hf_tailor()
        .args(["eval", "--model", fam.base.dir.to_str().unwrap(), "--budget", "1", "--json", "--tasks"])
        .arg(format!("mmlu={},{}", mmlu.display(), jsonl.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["hf_tailor"]["tasks"], serde_json::to_value(&lib).unwrap());
    assert_eq!(v["results"]["mmlu"]["acc,none"], v["hf_tailor"]["tasks"][0]["acc"], "lm-eval's shape beside hf-tailor's rows");
    assert_eq!(v["configs"]["mmlu"]["dataset_path"], "cais/mmlu");

    // Bad input: one line on stderr naming the file and line, non-zero exit.
    std::fs::write(&jsonl, "{\"context\": \"x\", \"choices\": [\" a\"], \"label\": 0}\n").unwrap();
    let out = common::hf_tailor().args(["eval", "--model", fam.base.dir.to_str().unwrap(), "--tasks", jsonl.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("mc.jsonl:1") && err.contains("at least 2") && err.trim().lines().count() == 1, "{err}");
}

/// Candidates that share a prefix and differ in exactly one thing: a merge's λ, its model
/// list, its method, a layer's source layer, the embeddings' rule, the head's rule. One
/// evaluator reused across all of them and across budgets must give, bit for bit, what a
/// fresh evaluator gives each (candidate, budget), and every candidate must score
/// differently (the family differs in every tensor, so a cache that confused two would show).
#[test]
fn prefix_cache_tells_apart_candidates_that_differ_in_one_rule() {
    let tmp = common::tempdir();
    let spec = TinySpec::llama();
    let fam = family(tmp.path(), &spec);
    let b = || Rule::Take("base".into());
    let s1 = || Rule::Take("sib1".into());
    let merge = |m: Merge| Rule::Merge(m);
    let two = || vec!["sib1".to_string(), "sib2".to_string()];
    let prefix = |r1: Rule, from2: usize| recipe(&fam, &spec, vec![(0, b()), (1, r1), (from2, b()), (3, b())]);
    let mut cands = vec![
        ("reference", prefix(ta(0.5), 2)),
        ("lambda", prefix(ta(0.6), 2)),
        ("model list", prefix(merge(Merge::TaskArithmetic { models: vec!["sib1".into()], lambda: 0.5 }), 2)),
        ("method", prefix(merge(Merge::Ties { models: two(), lambda: 0.5, density: 1.0 }), 2)),
        ("source layer", prefix(ta(0.5), 1)),
    ];
    let mut emb = prefix(ta(0.5), 2);
    emb.embeddings = s1();
    cands.push(("embeddings rule", emb));
    let mut head = prefix(ta(0.5), 2);
    head.head = s1();
    cands.push(("head rule", head));
    let tasks = vec![
        Task::new("mc", TaskData::MultipleChoice(items())),
        Task::new("text", TaskData::Perplexity(vec!["Some text to score for perplexity.".into(), "More.".into()])),
    ];
    let small = EvalOptions { max_batch_tokens: 96, ..EvalOptions::default() };
    let mut shared = Evaluator::new(fam.clone(), tasks.clone(), small.clone()).unwrap();
    let mut reused = vec![];
    // Interleave budgets so the cache holds states of both plans at once.
    for budget in [2usize, 4] {
        for (label, r) in &cands {
            reused.push((*label, budget, shared.evaluate(r, budget).unwrap(), shared.choice_log_likelihoods(r, &items()).unwrap()));
        }
    }
    assert!(shared.stats().layer_forwards_saved > 0, "the shared prefix was never reused: {:?}", shared.stats());
    for (label, budget, scores, lls) in &reused {
        let r = &cands.iter().find(|(l, _)| l == label).unwrap().1;
        let mut fresh = Evaluator::new(fam.clone(), tasks.clone(), small.clone()).unwrap();
        assert_eq!(&fresh.evaluate(r, *budget).unwrap(), scores, "{label} at budget {budget}: reused evaluator differs from a fresh one");
        assert_eq!(&fresh.choice_log_likelihoods(r, &items()).unwrap(), lls, "{label}: log-likelihoods differ from a fresh evaluator's");
    }
    for (i, (a, _, _, la)) in reused.iter().enumerate().take(cands.len()) {
        for (b, _, _, lb) in reused.iter().take(cands.len()).skip(i + 1) {
            assert_ne!(la, lb, "{a} and {b} score the same: the difference was lost");
        }
    }
}

/// lm-evaluation-harness itself (its HF backend on CPU, each JSONL a custom task) on the
/// written checkpoint: hf-tailor's in-memory `acc` and `acc_norm` of the recipe are exactly
/// lm-eval's, and every choice's log-likelihood agrees. Two tasks because lm-eval's target
/// delimiter is per task: choices written with a leading space (delimiter " ", as MMLU
/// answers are) and without (delimiter "", after a context that ends in a space).
#[test]
fn lm_evaluation_harness_scores_the_written_model_as_hf_tailor_does() {
    let tmp = common::tempdir();
    let spec = TinySpec::llama();
    let fam = family(tmp.path(), &spec);
    let r = stitched(&fam, &spec);
    let out = tmp.path().join("tailored");
    materialise(&fam, &r, &out);
    let word = |i: usize, len: usize| -> String { (0..len).map(|k| (b'a' + ((i * 7 + k * 3) % 26) as u8) as char).collect() };
    // Choices of different lengths, so acc_norm's division by length decides some items.
    let spaced: Vec<McItem> = (0..24)
        .map(|i| McItem {
            context: format!("{} {}:", word(i, 5), word(i + 1, 3)),
            choices: (0..3).map(|c| format!(" {}", word(i + c, [1, 7, 3][(i + c) % 3]))).collect(),
            label: i % 3,
            subject: None,
        })
        .collect();
    let bare: Vec<McItem> = (0..16)
        .map(|i| McItem {
            context: format!("Q{i}: {}?\nAnswer: ", word(i, 4)),
            choices: vec![word(i, 1), word(i + 2, 6 + i % 3)],
            label: (i / 2) % 2,
            subject: None,
        })
        .collect();
    let mut tasks = vec![];
    let mut reqs = vec![];
    for (name, items, delimiter) in [("hft_spaced", &spaced, " "), ("hft_bare", &bare, "")] {
        let path = tmp.path().join(format!("{name}.jsonl"));
        let lines: Vec<String> = items
            .iter()
            .map(|i| serde_json::json!({"context": i.context, "choices": i.choices.iter().map(|c| c.strip_prefix(delimiter).unwrap()).collect::<Vec<_>>(), "label": i.label}).to_string())
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        tasks.push(Task::new(name, TaskData::MultipleChoice(items.clone())));
        reqs.push(serde_json::json!({"name": name, "jsonl": path, "delimiter": delimiter}));
    }
    let req_path = tmp.path().join("lm-eval-request.json");
    let res_path = tmp.path().join("lm-eval-results.json");
    std::fs::write(&req_path, serde_json::json!({"model": out, "tasks": reqs}).to_string()).unwrap();
    common::run_python("lm_eval_check.py", &[req_path.to_str().unwrap(), res_path.to_str().unwrap()]);
    let theirs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&res_path).unwrap()).unwrap();
    assert_eq!(theirs["lm_eval"], "0.4.13", "the pinned lm-eval");

    let mut ev = Evaluator::new(fam.clone(), tasks.clone(), EvalOptions::default()).unwrap();
    let ours = ev.evaluate(&r, usize::MAX).unwrap();
    let mut distinct = false;
    for (task, result) in tasks.iter().zip(&ours) {
        let t = &theirs["results"][&task.name];
        let hf_tailor::eval::TaskResult::MultipleChoice { acc, acc_norm, items, .. } = result else { panic!("{result:?}") };
        assert_eq!(*items as u64, t["items"].as_u64().unwrap(), "{}", task.name);
        let TaskData::MultipleChoice(items) = &task.data else { unreachable!() };
        let lls = ev.choice_log_likelihoods(&r, items).unwrap();
        assert_eq!((*acc, *acc_norm), (t["acc"].as_f64().unwrap(), t["acc_norm"].as_f64().unwrap()), "{}: hf-tailor vs lm-eval", task.name);
        for (i, (a, b)) in lls.iter().zip(t["lls"].as_array().unwrap()).enumerate() {
            // Items where dividing by the choice length changes the winner exercise acc_norm.
            let best = |v: Vec<f64>| (0..v.len()).fold(0, |m, k| if v[k] > v[m] { k } else { m });
            let lens: Vec<f64> = items[i].choices.iter().map(|c| McItem::norm_len(c) as f64).collect();
            distinct |= best(a.clone()) != best(a.iter().zip(&lens).map(|(x, n)| x / n).collect());
            let b: Vec<f64> = b.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert!(
                a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4),
                "{} item {i}: hf-tailor {a:?}, lm-eval {b:?}",
                task.name
            );
        }
    }
    assert!(distinct, "length normalisation changes no item's winner: acc_norm is not exercised");

    // hf-tailor's lm-eval-shaped results (what `eval --json` and report.json write): the
    // same sections and per-task keys as lm-eval's own output, the same values, standard
    // errors included (lm-eval: sample standard deviation / √n).
    let ours = hf_tailor::eval::harness::from_task_results(&ours, &tasks);
    let shape = &theirs["shape"];
    let top: Vec<&str> = shape["top_level_keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    for section in ours.as_object().unwrap().keys() {
        assert!(top.contains(&section.as_str()), "section `{section}` is not in lm-eval's output {top:?}");
    }
    for task in &tasks {
        let n = &task.name;
        let (mine, lm) = (&ours["results"][n], &shape["results"][n]);
        let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(keys(mine), keys(lm), "{n}: result keys (hf-tailor: {mine}, lm-eval: {lm})");
        for k in keys(lm) {
            match (mine[&k].as_f64(), lm[&k].as_f64()) {
                (Some(a), Some(b)) => assert!((a - b).abs() < 1e-9, "{n} {k}: hf-tailor {a}, lm-eval {b}"),
                _ => assert_eq!(mine[&k], lm[&k], "{n} {k}"),
            }
        }
        assert!(mine["acc_stderr,none"].as_f64().unwrap() > 0.0, "{n}: a standard error that can fail");
        assert_eq!(ours["n-samples"][n], shape["n-samples"][n], "{n}: n-samples");
        assert_eq!(ours["n-shot"][n], shape["n-shot"][n], "{n}: n-shot");
        assert_eq!(ours["higher_is_better"][n], shape["higher_is_better"][n], "{n}: higher_is_better");
        for k in keys(&ours["configs"][n]) {
            assert!(shape["configs"][n].get(&k).is_some(), "{n}: config key `{k}` is not lm-eval's ({:?})", keys(&shape["configs"][n]));
        }
        assert_eq!(ours["configs"][n]["output_type"], shape["configs"][n]["output_type"]);
        assert_eq!(ours["configs"][n]["num_fewshot"], shape["configs"][n]["num_fewshot"]);
    }

    // `hf-tailor eval --samples` on the written model: each item's per-choice log-likelihood
    // is lm-eval's `resps`, each text's its share of the perplexity, each index its line.
    samples_match_lm_eval(tmp.path(), &out, &[(&spaced, &theirs["results"]["hft_spaced"]), (&bare, &theirs["results"]["hft_bare"])]);
}

/// `eval --samples` through the CLI: per-item log-likelihoods equal lm-eval's (the first
/// `budget` items), `acc` is each item's argmax, the texts' samples give the reported
/// perplexity, and an existing samples file is replaced only with --force.
fn samples_match_lm_eval(dir: &Path, model: &Path, tasks: &[(&Vec<McItem>, &serde_json::Value)]) {
    let budget = 20;
    let mut specs = vec![];
    for (k, (items, _)) in tasks.iter().enumerate() {
        let path = dir.join(format!("ours-{k}.jsonl"));
        let lines: Vec<String> =
            items.iter().map(|i| serde_json::json!({"context": i.context, "choices": i.choices, "label": i.label}).to_string()).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        specs.push(format!("mc:t{k}={}", path.display()));
    }
    let texts = dir.join("texts.jsonl");
    std::fs::write(&texts, ppl_texts().iter().map(|t| serde_json::json!({"text": t}).to_string() + "\n").collect::<String>()).unwrap();
    specs.push(format!("ppl:texts={}", texts.display()));
    let samples = dir.join("samples.jsonl");
    let run = |extra: &[&str]| {
        let mut cmd = common::hf_tailor();
        cmd.args(["eval", "--model", model.to_str().unwrap(), "--tasks", &specs.join(","), "--budget", &budget.to_string(), "--json", "--samples"]);
        cmd.arg(&samples).args(extra).output().unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&samples).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (k, (items, theirs)) in tasks.iter().enumerate() {
        let mine: Vec<&serde_json::Value> = rows.iter().filter(|r| r["task"] == format!("t{k}")).collect();
        assert_eq!(mine.len(), items.len().min(budget), "t{k}: one sample per scored item");
        let mut hits = 0.0;
        for (i, r) in mine.iter().enumerate() {
            assert_eq!((r["kind"].as_str(), r["doc"].as_u64(), r["label"].as_u64()), (Some("mc"), Some(i as u64), Some(items[i].label as u64)));
            let a: Vec<f64> = r["loglik"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let b: Vec<f64> = theirs["lls"][i].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert!(a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4), "t{k} item {i}: samples {a:?}, lm-eval {b:?}");
            let won = (0..a.len()).all(|c| c == items[i].label || a[c] < a[items[i].label]);
            assert_eq!(r["acc"].as_f64(), Some(if won { 1.0 } else { 0.0 }), "t{k} item {i}");
            hits += r["acc"].as_f64().unwrap();
        }
        let acc = report["hf_tailor"]["tasks"][k]["acc"].as_f64().unwrap();
        assert!((hits / mine.len() as f64 - acc).abs() < 1e-12, "t{k}: the samples' mean is the reported acc");
    }
    let text_rows: Vec<&serde_json::Value> = rows.iter().filter(|r| r["kind"] == "ppl").collect();
    assert_eq!(text_rows.iter().map(|r| r["doc"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1]);
    let (ll, n) = text_rows.iter().fold((0.0, 0), |(s, n), r| (s + r["loglik"].as_f64().unwrap(), n + r["tokens"].as_u64().unwrap()));
    let ppl = report["hf_tailor"]["tasks"][tasks.len()]["perplexity"].as_f64().unwrap();
    assert!(((-ll / n as f64).exp() - ppl).abs() < 1e-9 * ppl, "the texts' samples give the reported perplexity {ppl}");

    // An existing file is never replaced without --force (exit 2, the file as it was).
    std::fs::write(&samples, "mine\n").unwrap();
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&samples).unwrap(), "mine\n");
    let o = run(&["--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(&samples).unwrap().lines().count(), rows.len());
}
