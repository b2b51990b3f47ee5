//! Every supported architecture against transformers and llama.cpp, on tiny random families
//! built by transformers' own model classes (`tests/py/arch_family.py`): tensor names, shapes
//! and config fields are transformers', not re-typed here. Per architecture, a stitched recipe
//! (layers removed, a sibling's layer, merges, a repeated layer; for alternating sliding/full
//! layers, a reordering that breaks the base's pattern) is written by the writer, and
//! - the in-memory evaluator's logits equal transformers' on the written checkpoint at every
//!   position, alone and in a padded batch (≤ 1e-4, f32);
//! - the written config describes each kept layer's own attention kind, and transformers
//!   loads it (the logits above are computed from it);
//! - llama.cpp's `convert_hf_to_gguf.py` converts the output and llama.cpp runs it.

use std::path::Path;
use std::sync::Arc;

use hf_tailor::checkpoint::{Checkpoint, Family};
use hf_tailor::eval::{EvalOptions, Evaluator};
use hf_tailor::recipe::{EdgePolicy, LayerRule, Merge, Recipe, Rule, SourceModel};
use hf_tailor::testkit::fixture;
use serde_json::{json, Value};

use crate::common;

/// One architecture variant: the transformers class, its config, the layers of the recipe
/// as (source layer, rule), and the GGUF architecture llama.cpp should report.
struct Variant {
    label: &'static str,
    class: &'static str,
    config: Value,
    layers: Vec<(usize, Rule)>,
    gguf_arch: &'static str,
    /// Whether llama.cpp's logits are held to transformers' (within 0.05). Not for Qwen's sliding
    /// window (llama.cpp runs it as full attention), Gemma 2 27B's query scaling (llama.cpp
    /// derives it from the model's size), and Gemma 2/3, whose llama.cpp logits differ from
    /// transformers' on these tiny models even on the layer pattern written per layer: those
    /// are converted, loaded and run, and their differences printed.
    llama_cpp_runs_it: bool,
}

fn take(m: &str) -> Rule {
    Rule::Take(m.into())
}

fn ta(lambda: f64) -> Rule {
    Rule::Merge(Merge::TaskArithmetic { models: vec!["sib1".into(), "sib2".into()], lambda })
}

fn linear() -> Rule {
    Rule::Merge(Merge::Linear { models: vec!["base".into(), "sib2".into()], weights: vec![0.7, 0.3] })
}

/// Config fields every variant shares: the fixture tokenizer's ids and vocabulary.
fn tiny(extra: Value) -> Value {
    let mut c = json!({"vocab_size": 272, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
        "bos_token_id": fixture::BOS_ID, "eos_token_id": fixture::EOS_ID, "pad_token_id": fixture::PAD_ID});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

/// Llama-3.2's rope scaling (`llama3`, its factors), with an original context sized for
/// the tiny configs.
fn llama3_rope() -> Value {
    json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
}

fn variants() -> Vec<Variant> {
    // Removal of layer 1, a sibling's layer, task arithmetic, the base's layer and a repeat.
    let stitched = || vec![(0, take("sib1")), (2, ta(0.6)), (3, take("base")), (3, ta(0.3))];
    vec![
        Variant {
            label: "qwen3-tied",
            class: "Qwen3ForCausalLM",
            config: tiny(json!({"num_hidden_layers": 4, "tie_word_embeddings": true})),
            layers: stitched(),
            gguf_arch: "qwen3",
            llama_cpp_runs_it: true,
        },
        Variant {
            label: "qwen3-sliding-untied",
            class: "Qwen3ForCausalLM",
            // Layers 0-1 full, 2-3 sliding over 5 positions.
            config: tiny(json!({"num_hidden_layers": 4, "tie_word_embeddings": false, "use_sliding_window": true,
                "sliding_window": 5, "max_window_layers": 2})),
            layers: stitched(),
            gguf_arch: "qwen3",
            llama_cpp_runs_it: false,
        },
        Variant {
            label: "llama-3.2-1b-shape",
            class: "LlamaForCausalLM",
            // Llama-3.2-1B's proportions: 4 query heads per kv head, tied, llama3 rope.
            config: tiny(json!({"num_hidden_layers": 4, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 8,
                "num_key_value_heads": 2, "head_dim": 8, "tie_word_embeddings": true,
                "rope_parameters": llama3_rope()})),
            layers: stitched(),
            gguf_arch: "llama",
            llama_cpp_runs_it: true,
        },
        Variant {
            label: "llama-3.2-3b-shape",
            class: "LlamaForCausalLM",
            // Llama-3.2-3B's: 3 query heads per kv head, head_dim 128 / hidden 3072 scaled down.
            config: tiny(json!({"num_hidden_layers": 4, "hidden_size": 48, "intermediate_size": 96, "num_attention_heads": 6,
                "num_key_value_heads": 2, "head_dim": 16, "tie_word_embeddings": true,
                "rope_parameters": llama3_rope()})),
            layers: vec![(0, take("base")), (1, linear()), (3, take("sib2"))],
            gguf_arch: "llama",
            llama_cpp_runs_it: true,
        },
        Variant {
            label: "gemma2",
            class: "Gemma2ForCausalLM",
            // Alternating sliding (even) / full (odd) layers; caps small enough to bite.
            config: tiny(json!({"num_hidden_layers": 4, "tie_word_embeddings": true, "sliding_window": 4,
                "query_pre_attn_scalar": 16, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0})),
            // Full, sliding, full, sliding: the opposite of the base's alternation.
            layers: vec![(1, take("sib1")), (0, ta(0.6)), (3, take("base")), (2, ta(0.3))],
            gguf_arch: "gemma2",
            // llama.cpp converts and runs it, but its logits differ (1.5 of 3.0 here): recorded only.
            llama_cpp_runs_it: false,
        },
        Variant {
            label: "gemma2-27b-scaling",
            class: "Gemma2ForCausalLM",
            // Gemma 2 27B scales queries by hidden / heads, not head_dim (llama.cpp only knows
            // that from the model's size, so it is not compared here).
            config: tiny(json!({"num_hidden_layers": 4, "tie_word_embeddings": false, "sliding_window": 3,
                "query_pre_attn_scalar": 24, "attn_logit_softcapping": 5.0, "final_logit_softcapping": 4.0})),
            layers: vec![(0, take("sib2")), (2, linear()), (3, ta(0.5))],
            gguf_arch: "gemma2",
            llama_cpp_runs_it: false,
        },
        Variant {
            label: "gemma3-text",
            class: "Gemma3ForCausalLM",
            // Sliding, sliding, full, x2; local rope base 10k, global 1M. The vocabulary is exactly
            // the tokenizer's: llama.cpp's Gemma 3 converter drops embedding rows past it.
            config: tiny(json!({"num_hidden_layers": 6, "vocab_size": fixture::TOKENIZER_VOCAB, "tie_word_embeddings": true, "sliding_window": 4,
                "sliding_window_pattern": 3, "query_pre_attn_scalar": 16})),
            layers: vec![(2, take("sib1")), (0, ta(0.6)), (5, take("base")), (3, ta(0.3)), (5, linear())],
            gguf_arch: "gemma3",
            // llama.cpp converts and runs it, but its logits differ (0.11 of 7.5 here): recorded only.
            llama_cpp_runs_it: false,
        },
        Variant {
            label: "phi3",
            class: "Phi3ForCausalLM",
            // Fused qkv_proj and gate_up_proj, untied; head_dim = hidden / heads (llama.cpp's Phi-3 assumes it).
            config: tiny(json!({"num_hidden_layers": 4, "hidden_size": 64, "intermediate_size": 128, "tie_word_embeddings": false})),
            layers: stitched(),
            gguf_arch: "phi3",
            llama_cpp_runs_it: true,
        },
        Variant {
            label: "phi3-longrope-sliding",
            class: "Phi3ForCausalLM",
            // LongRoPE past an original length of 16 (the long sequences take the long factors,
            // the short ones the short factors), and a window on every layer, as Phi-3-mini has.
            config: tiny(json!({"num_hidden_layers": 4, "hidden_size": 64, "intermediate_size": 128, "tie_word_embeddings": false,
                "sliding_window": 6, "max_position_embeddings": 64,
                "original_max_position_embeddings": 16,
                "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 16,
                    "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8], "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 18.0]}})),
            layers: vec![(3, take("sib1")), (1, ta(0.4)), (0, linear())],
            gguf_arch: "phi3",
            llama_cpp_runs_it: false,
        },
    ]
}

/// The base and two siblings of `v` under `root`, built by transformers, with the fixture tokenizer.
fn build_family(root: &Path, v: &Variant) -> Arc<Family> {
    let spec = json!({"class": v.class, "config": v.config, "root": root, "siblings": 2, "seed": 11});
    let spec_path = root.join("spec.json");
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    common::run_python("arch_family.py", &[spec_path.to_str().unwrap()]);
    let names = ["base", "sib1", "sib2"];
    let mut models: Vec<(String, Checkpoint)> = names
        .iter()
        .map(|n| {
            let dir = root.join(n);
            fixture::write_tokenizer_files(&dir).unwrap();
            (n.to_string(), Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{}: {n}: {e}", v.label)))
        })
        .collect();
    let base = models.remove(0);
    Arc::new(Family::new(base, models).unwrap())
}

fn recipe(fam: &Family, v: &Variant) -> Recipe {
    let sm = |i: usize| SourceModel::local(&fam.names[i], fam.models().nth(i).unwrap().dir.clone());
    let c = &fam.base.config;
    let layers = v.layers.iter().map(|(from, rule)| LayerRule { from: *from, rule: rule.clone() }).collect();
    Recipe::new(c.arch.model_type, c.num_hidden_layers, sm(0), vec![sm(1), sm(2)], layers, EdgePolicy::FollowLayers)
}

/// What one variant measured, for the table in the test's output.
struct Measured {
    label: &'static str,
    seqs: Vec<Vec<u32>>,
    single: Vec<Vec<Vec<f32>>>,
    batched: Vec<Vec<Vec<f32>>>,
}

#[test]
fn every_architecture_matches_transformers_and_converts_with_llama_cpp() {
    let tmp = common::tempdir();
    let (llama_cpp, runtime) = (common::llama_cpp(), common::llama_cpp_runtime());
    let mut measured = vec![];
    let mut reqs = vec![];
    let mut table = vec![];
    let mut bad = vec![];
    for v in variants() {
        let root = tmp.path().join(v.label);
        let fam = build_family(&root, &v);
        let r = recipe(&fam, &v);
        let out = root.join("tailored");
        hf_tailor::writer::build(&fam, &r, &out, &hf_tailor::writer::BuildOptions::default()).unwrap();

        // The written config gives every kept layer its source layer's attention kind.
        let written = Checkpoint::open(&out).unwrap();
        let kinds: Vec<_> = v.layers.iter().map(|(from, _)| fam.base.config.layer_attention[*from]).collect();
        assert_eq!(written.config.layer_attention, kinds, "{}: layer kinds of the output", v.label);
        assert_eq!(written.config.num_hidden_layers, v.layers.len());

        let mut ev = Evaluator::new(fam.clone(), vec![], EvalOptions::default()).unwrap();
        let texts = ["Hello, world! This is a longer sentence.", "Short", "Padding in a batch: ok?"];
        let seqs: Vec<Vec<u32>> = texts.iter().map(|t| ev.encoder().encode(t).unwrap()).collect();
        if let Some(w) = fam.base.config.sliding_window {
            assert!(seqs[0].len() > 2 * w, "{}: the sliding window must be exercised", v.label);
        }
        let batched = ev.logits(&r, &seqs).unwrap();
        let single: Vec<_> = seqs.iter().map(|s| ev.logits(&r, std::slice::from_ref(s)).unwrap().remove(0)).collect();
        reqs.push(json!({"label": v.label, "model": out, "sequences": seqs, "items": []}));

        let gguf = root.join("out.gguf");
        let stdout = common::run_python(
            "llama_cpp_check.py",
            &["convert-any", out.to_str().unwrap(), llama_cpp.to_str().unwrap(), runtime.to_str().unwrap(), gguf.to_str().unwrap()],
        );
        let g: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or_default()).expect("JSON summary");
        assert_eq!(g["arch"], v.gguf_arch, "{}: {g}", v.label);
        assert_eq!(g["block_count"], v.layers.len(), "{}: {g}", v.label);
        assert_eq!(g["blocks"], json!((0..v.layers.len()).collect::<Vec<_>>()), "{}: {g}", v.label);
        let run = &g["llama_cpp_run"];
        assert_eq!(run["logits_shape_matches"], true, "{}: {run}", v.label);
        let cpp_diff = run["max_abs_logit_diff"].as_f64().unwrap();
        // llama.cpp keeps its KV cache in f16: close to transformers, not equal.
        let scale = run["max_abs_logit"].as_f64().unwrap_or(0.0);
        if v.llama_cpp_runs_it && cpp_diff >= 0.05 {
            bad.push(format!("{}: llama.cpp's logits differ from transformers' by {cpp_diff}", v.label));
        }
        table.push((v.label, cpp_diff, scale));
        measured.push(Measured { label: v.label, seqs, single, batched });
    }
    let req_path = tmp.path().join("req.json");
    let ref_path = tmp.path().join("ref.json");
    std::fs::write(&req_path, json!({"requests": reqs}).to_string()).unwrap();
    common::run_python("eval_crosscheck.py", &[req_path.to_str().unwrap(), ref_path.to_str().unwrap()]);
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(&ref_path).unwrap()).unwrap();
    let reference = reference["results"].as_array().unwrap();
    for ((m, r), (_, cpp, scale)) in measured.iter().zip(reference).zip(&table) {
        let mut worst = 0f64;
        for i in 0..m.seqs.len() {
            worst = worst.max(common::max_logit_diff(&m.single[i], &r["single"][i]));
            worst = worst.max(common::max_logit_diff(&m.batched[i], &r["batched"][i]));
        }
        eprintln!("{:<22} max |logit diff| vs transformers {worst:.2e}; llama.cpp vs transformers {cpp:.2e} (largest logit {scale:.1})", m.label);
        if worst > 1e-4 {
            bad.push(format!("{}: logits differ from transformers' by {worst:e}", m.label));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
