//! GGUF export (`hf-tailor gguf`, `build --gguf`): llama.cpp's own runtime loads each file hf-tailor
//! writes and computes transformers' logits from it, tokenizes as the Hugging Face tokenizer
//! does, and llama.cpp's converter (`convert_hf_to_gguf.py`, pinned release) writes the same
//! metadata and the same tensor bytes for the same checkpoint, with the differences listed
//! (and explained) in [`EXPECTED_DIFFERENCES`].

use std::path::Path;

use hf_tailor::testkit::fixture::{self, TinySpec};
use serde_json::{json, Value};

use crate::common;

/// Metadata keys where hf-tailor's GGUF deliberately differs from the converter's:
/// - `general.name`: the folder's name as is; the converter prettifies it (`llama` -> `Llama`).
/// - `tokenizer.ggml.scores` (SentencePiece-style tokenizers): the converter's tokenizer.json
///   path scores every token -1000, so llama.cpp's SentencePiece loop merges in text order;
///   hf-tailor scores the token of BPE merge r as -(r+1) (others -1e9), i.e. BPE order.
/// - `tokenizer.ggml.merges` (a byte-level tokenizer without merges, the fixtures'): written as
///   an empty list; the converter omits the key, and llama.cpp refuses a gpt2 tokenizer
///   without it ("cannot find tokenizer merges in model file").
const EXPECTED_DIFFERENCES: &[&str] = &["general.name", "tokenizer.ggml.scores", "tokenizer.ggml.merges"];

/// What one family's files are held to, beyond [`EXPECTED_DIFFERENCES`] and [`F16_LOGIT_BOUND`].
struct Expect {
    /// The q8_0 bound, as a fraction of the largest logit.
    q8_0_relative_bound: f64,
    /// Metadata keys only hf-tailor writes, or writes differently, for this family (why: at the use).
    differences: &'static [&'static str],
}

const DEFAULT_EXPECT: Expect = Expect { q8_0_relative_bound: Q8_0_RELATIVE_BOUND, differences: &[] };

/// f16 weights: within the existing llama.cpp bound (its KV cache is f16 too).
const F16_LOGIT_BOUND: f64 = 0.05;
/// q8_0: the largest logit difference as a fraction of the largest logit. llama.cpp's q8_0
/// matrix products also round the activations to 8-bit blocks, so the error compounds layer by
/// layer; on these fixtures (uniform random weights, hidden width 32) it measures 5.2-7.3 %
/// (see the report). The converter's q8_0 file has the same bytes (checked), so this is
/// llama.cpp's own q8_0 error, bounded here at 10 %: a wrong permutation, scale or
/// block layout gives differences of the order of the logits themselves.
const Q8_0_RELATIVE_BOUND: f64 = 0.1;

/// Tokens of the SentencePiece-style test tokenizer: bytes, three specials, 141 trained pieces.
const SENTENCEPIECE_VOCAB: usize = 400;

fn write_fixture(dir: &Path, spec: &TinySpec, seed: u64) {
    fixture::write_model(dir, spec, &fixture::random_weights(spec, seed)).expect("write fixture");
}

/// `hf-tailor gguf --model DIR --type TYPES --json`: the files written.
fn export(dir: &Path, types: &str) -> Vec<Value> {
    let o = common::hf_tailor().args(["gguf", "--model"]).arg(dir).args(["--type", types, "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice::<Vec<Value>>(&o.stdout).expect("JSON list")
}

/// gguf_check.py's summary for one file (see tests/py/gguf_check.py).
fn check(model: &Path, file: &Path, ty: &str, pre: Option<&str>) -> Value {
    let llama_cpp = common::llama_cpp();
    let runtime = common::llama_cpp_runtime();
    let reference = model.parent().unwrap().join(format!("converter-{ty}.gguf"));
    let mut args = vec![
        model.to_str().unwrap(),
        llama_cpp.to_str().unwrap(),
        runtime.to_str().unwrap(),
        file.to_str().unwrap(),
        ty,
        reference.to_str().unwrap(),
    ];
    args.extend(pre);
    let stdout = common::run_python("gguf_check.py", &args);
    serde_json::from_str(stdout.trim().lines().last().unwrap_or_default()).expect("JSON summary")
}

/// Every check on one exported file; returns the figures for the report.
fn assert_file(label: &str, model: &Path, file: &Path, ty: &str, pre: Option<&str>, expect: &Expect) -> Value {
    let v = check(model, file, ty, pre);
    eprintln!("{label} {ty}: {v}");
    let differ: Vec<&String> = v["metadata_differ"].as_object().unwrap().keys().collect();
    let only_ours: Vec<&String> = v["metadata_only_ours"].as_object().unwrap().keys().collect();
    let only_ref: Vec<&String> = v["metadata_only_converter"].as_object().unwrap().keys().collect();
    for k in differ.iter().chain(&only_ours) {
        let expected = EXPECTED_DIFFERENCES.contains(&k.as_str()) || expect.differences.contains(&k.as_str());
        assert!(expected, "{label} {ty}: unexpected metadata difference {k}: {v}");
    }
    assert!(only_ref.is_empty(), "{label} {ty}: keys only the converter writes: {only_ref:?}");
    assert!(differ.iter().any(|k| *k == "general.name"), "{label}: the name difference is expected");
    // The same tensors, types and bytes as the converter writes (same rounding, same Q8_0 quantiser).
    assert_eq!(v["tensor_mismatch"], json!([]), "{label} {ty}: {v}");
    assert_eq!(v["tensor_bytes_identical"], true, "{label} {ty}: {v}");
    assert_eq!(v["tensor_max_value_diff"], 0.0, "{label} {ty}: {v}");

    let run = &v["llama_cpp_run"];
    assert_eq!(run["logits_shape_matches"], true, "{label} {ty}: {run}");
    let scale = run["max_abs_logit"].as_f64().unwrap();
    let bound = if ty == "q8_0" { expect.q8_0_relative_bound * scale } else { F16_LOGIT_BOUND };
    let diff = run["max_abs_logit_diff"].as_f64().unwrap();
    assert!(diff < bound, "{label} {ty}: llama.cpp's logits differ from transformers' by {diff} (bound {bound}): {run}");
    // Logits big enough that the f16 bound means something.
    assert!(scale > 1.0, "{label} {ty}: {run}");
    assert_eq!(run["text_tokens_equal"], true, "{label} {ty}: llama.cpp tokenizes the test text differently: {run}");
    assert!(run["text_tokens"].as_u64().unwrap() > 20, "{run}");
    for k in ["bos", "eos", "add_bos"] {
        assert_eq!(run[k][0], run[k][1], "{label} {ty}: {k} (llama.cpp, transformers): {run}");
    }
    v
}

/// Llama (with Llama 3.1 rope scaling, so `rope_freqs` is written and used) and Mistral, with a
/// SentencePiece-style tokenizer (byte fallback), and Qwen2 (biases, tied embeddings) with the
/// fixtures' byte-level tokenizer: f16 and q8_0 files, each checked against llama.cpp.
#[test]
fn gguf_files_run_in_llama_cpp_as_transformers_runs_the_checkpoint() {
    let tmp = common::tempdir();
    let llama3 =
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16});
    let cases = [
        ("llama", TinySpec { rope_scaling: Some(llama3), layers: 3, vocab: SENTENCEPIECE_VOCAB, ..TinySpec::llama() }, true),
        ("mistral", TinySpec { layers: 2, vocab: SENTENCEPIECE_VOCAB, ..TinySpec::mistral() }, true),
        ("qwen2", TinySpec { layers: 3, ..TinySpec::qwen2() }, false),
    ];
    for (i, (label, spec, sentencepiece)) in cases.into_iter().enumerate() {
        let root = tmp.path().join(label);
        let dir = root.join(format!("{label}-tailored"));
        write_fixture(&dir, &spec, 40 + i as u64);
        if sentencepiece {
            common::run_python("gguf_check_tokenizer.py", &[dir.to_str().unwrap(), &SENTENCEPIECE_VOCAB.to_string()]);
        } else {
            // As Qwen2's own tokenizer_config.json says: no unknown token. Without it,
            // transformers' Qwen2Tokenizer adds `<|endoftext|>` as one, beyond the fixture's rows.
            let path = dir.join("tokenizer_config.json");
            let mut tc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            tc["unk_token"] = Value::Null;
            std::fs::write(&path, tc.to_string()).unwrap();
        }
        let files = export(&dir, "f16,q8_0");
        assert_eq!(files.len(), 2);
        for (f, ty) in files.iter().zip(["f16", "q8_0"]) {
            let path = Path::new(f["path"].as_str().unwrap());
            let expected_name = format!("{label}-tailored-{}.gguf", ty.to_uppercase());
            assert_eq!(path.file_name().unwrap().to_str().unwrap(), expected_name);
            assert_eq!(path.parent().unwrap(), dir, "written beside the safetensors");
            // The byte-level fixture tokenizer is unknown to the converter, which stops; it is
            // told the pre-tokenizer hf-tailor chose (GPT-2's, which the fixture's is).
            assert_file(label, &dir, path, ty, (!sentencepiece).then_some("gpt-2"), &DEFAULT_EXPECT);
        }
    }
}

/// One family hf-tailor reads beyond Llama/Mistral/Qwen2, as a tiny checkpoint built by
/// transformers' own class (tests/py/arch_family.py), with the fixtures' byte-level tokenizer.
struct Family {
    label: &'static str,
    class: &'static str,
    config: Value,
    /// Norm weights are this + noise: 0 for Gemma, whose norms scale by `1 + w`, so that every
    /// family's norms scale by about 1 and the same tolerances mean the same.
    norm_center: f64,
    expect: Expect,
}

/// Gemma's per-layer sliding pattern, which the converter does not write (see
/// `ExtraKey::SlidingWindowPattern`); the configs below break Gemma's fixed alternation, as a
/// tailored model's kept layers may, so llama.cpp's logits hold only if it reads the pattern.
/// Gemma 2's converter writes no `rope.freq_base` (llama.cpp then assumes 10000); hf-tailor
/// writes the config's, so that a different base is not lost.
const GEMMA2_DIFFERENCES: &[&str] = &["gemma2.attention.sliding_window_pattern", "gemma2.rope.freq_base"];
const GEMMA3_DIFFERENCES: &[&str] = &["gemma3.attention.sliding_window_pattern"];

fn families() -> Vec<Family> {
    let tiny = |extra: Value| {
        let mut c = json!({"vocab_size": fixture::TOKENIZER_VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
            "bos_token_id": fixture::BOS_ID, "eos_token_id": fixture::EOS_ID, "pad_token_id": fixture::PAD_ID});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    };
    vec![
        // q/k norms, no biases, tied.
        Family {
            label: "qwen3",
            class: "Qwen3ForCausalLM",
            config: tiny(json!({"num_hidden_layers": 2, "tie_word_embeddings": true})),
            norm_center: 1.0,
            expect: DEFAULT_EXPECT,
        },
        // Softcapping on both (small enough to bite), a window of 4 on the test's 49 positions,
        // and full, sliding, full: the opposite of Gemma 2's alternation.
        Family {
            label: "gemma2",
            class: "Gemma2ForCausalLM",
            config: tiny(json!({"num_hidden_layers": 3, "tie_word_embeddings": true, "sliding_window": 4, "query_pre_attn_scalar": 16,
                "attn_logit_softcapping": 5.0, "final_logit_softcapping": 6.0,
                "layer_types": ["full_attention", "sliding_attention", "full_attention"]})),
            norm_center: 0.0,
            expect: Expect { q8_0_relative_bound: Q8_0_RELATIVE_BOUND, differences: GEMMA2_DIFFERENCES },
        },
        // q/k norms, local and global rope bases, a window of 4, full, sliding, full (Gemma 3
        // would have two sliding layers before a full one).
        Family {
            label: "gemma3",
            class: "Gemma3ForCausalLM",
            config: tiny(json!({"num_hidden_layers": 3, "tie_word_embeddings": true, "sliding_window": 4, "query_pre_attn_scalar": 16,
                "layer_types": ["full_attention", "sliding_attention", "full_attention"],
                "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6}, "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}})),
            norm_center: 0.0,
            expect: Expect { q8_0_relative_bound: Q8_0_RELATIVE_BOUND, differences: GEMMA3_DIFFERENCES },
        },
        // Fused qkv and gate_up, untied, LongRoPE past an original context of 16 (the test's 49
        // positions take the long factors in both transformers and llama.cpp).
        Family {
            label: "phi3",
            class: "Phi3ForCausalLM",
            config: tiny(json!({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "tie_word_embeddings": false,
                "max_position_embeddings": 64, "original_max_position_embeddings": 16,
                "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 16,
                    "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8], "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 18.0]}})),
            norm_center: 1.0,
            expect: DEFAULT_EXPECT,
        },
    ]
}

/// Qwen 3, Gemma 2, Gemma 3 and Phi-3 checkpoints written by transformers: the f16 and q8_0
/// files run in llama.cpp as transformers runs the safetensors, tokenize as the HF tokenizer
/// does, and hold the converter's metadata and tensor bytes (differences listed above).
#[test]
fn gguf_files_of_more_families_run_in_llama_cpp_as_transformers_runs_them() {
    let tmp = common::tempdir();
    for (i, f) in families().into_iter().enumerate() {
        let root = tmp.path().join(f.label);
        std::fs::create_dir_all(&root).unwrap();
        let spec = json!({"class": f.class, "config": f.config, "root": root, "siblings": 0, "seed": 5, "norm_center": f.norm_center});
        let spec_path = root.join("spec.json");
        std::fs::write(&spec_path, spec.to_string()).unwrap();
        common::run_python("arch_family.py", &[spec_path.to_str().unwrap()]);
        // Not named after the family: llama.cpp takes a `general.name` with "phi3" in it for
        // Phi-3's own tokenizer and looks up its `<|end|>` token, which the fixtures' lacks.
        let dir = root.join(format!("family{i}-tailored"));
        std::fs::rename(root.join("base"), &dir).unwrap();
        fixture::write_tokenizer_files(&dir).unwrap();
        if f.label == "phi3" {
            // Phi-3's converter reads a SentencePiece tokenizer.model unless the tokenizer is
            // GPT-2's class (as Phi-4's is), which the fixtures' byte-level one is.
            let path = dir.join("tokenizer_config.json");
            let mut tc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            tc["tokenizer_class"] = json!("GPT2Tokenizer");
            std::fs::write(&path, tc.to_string()).unwrap();
        }
        for (file, ty) in export(&dir, "f16,q8_0").iter().zip(["f16", "q8_0"]) {
            assert_file(f.label, &dir, Path::new(file["path"].as_str().unwrap()), ty, Some("gpt-2"), &f.expect);
        }
    }
}

/// `hf-tailor gguf` never replaces a file without --force, says what is wrong in one line with
/// exit status 2, and leaves no temporary file behind.
#[test]
fn gguf_export_refuses_to_overwrite_and_bad_input_exits_2() {
    let tmp = common::tempdir();
    let dir = tmp.path().join("m");
    write_fixture(&dir, &TinySpec { layers: 2, ..TinySpec::qwen2() }, 7);
    let run = |args: &[&str]| common::hf_tailor().arg("gguf").arg("--model").arg(&dir).args(args).output().unwrap();
    let one_line_error = |o: &std::process::Output, needle: &str| {
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    };
    one_line_error(&run(&["--type", "f16,q4_k"]), "q4_k");
    assert!(hf_tailor::gguf::files_in(&dir).is_empty());

    let written = export(&dir, "q8_0");
    let file = dir.join("m-Q8_0.gguf");
    assert_eq!(written[0]["path"], file.to_str().unwrap());
    let before = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"a user's file").unwrap();
    one_line_error(&run(&["--type", "q8_0"]), "exists (use --force to replace it)");
    assert_eq!(std::fs::read(&file).unwrap(), b"a user's file", "left as it was");
    let o = run(&["--type", "q8_0", "--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&file).unwrap(), before, "replaced, and the export is deterministic");
    let hidden: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(hidden.is_empty(), "temporary files left: {hidden:?}");

    // No tokenizer: a GGUF without one would not run.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    one_line_error(&run(&["--type", "f16", "--force"]), "tokenizer.json is missing");
    // Not a model folder.
    one_line_error(&common::hf_tailor().args(["gguf", "--model"]).arg(tmp.path().join("nowhere")).output().unwrap(), "nowhere");
}

/// `build --gguf` writes the files into the built folder, `card` links them with llama.cpp and
/// Ollama usage, and `push` uploads them (by LFS) with the checkpoint.
#[test]
fn build_gguf_then_card_and_push_carry_the_files() {
    use crate::testhub::{TestHub, TOKEN};
    use hf_tailor::recipe::{EdgePolicy, Rule};

    let tmp = common::tempdir();
    let f = crate::build::family(tmp.path(), TinySpec::llama(), 1);
    let take = |i: usize| Rule::Take(crate::build::name(i));
    let r = crate::build::recipe(&f, vec![(0, take(0)), (1, take(1)), (3, take(0))], EdgePolicy::FollowLayers);
    let recipe_path = tmp.path().join("tailor.yaml");
    r.save(&recipe_path).unwrap();
    let out = tmp.path().join("llama-tailored");
    let o = common::hf_tailor()
        .args(["build", "--recipe"])
        .arg(&recipe_path)
        .arg("--out")
        .arg(&out)
        .args(["--gguf", "f16,q8_0", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["layers_after"], 3);
    assert_eq!(report["gguf"].as_array().map(Vec::len), Some(2), "{report}");
    assert_eq!(hf_tailor::gguf::files_in(&out), vec!["llama-tailored-F16.gguf", "llama-tailored-Q8_0.gguf"]);

    let o = common::hf_tailor()
        .args(["card", "--model"])
        .arg(&out)
        .arg("--recipe")
        .arg(&recipe_path)
        .args(["--repo", "tester/llama-tailored"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    for needle in [
        "[llama-tailored-Q8_0.gguf](./llama-tailored-Q8_0.gguf) | Q8_0",
        "[llama-tailored-F16.gguf](./llama-tailored-F16.gguf) | F16",
        "llama-cli -hf tester/llama-tailored:Q8_0",
        "ollama run hf.co/tester/llama-tailored:Q8_0",
    ] {
        assert!(readme.contains(needle), "{needle}:\n{readme}");
    }
    assert!(!readme.contains("convert_hf_to_gguf.py"), "no conversion step when the files are there");

    let hub = TestHub::start();
    let o =
        common::hf_tailor().arg("push").arg(&out).arg("tester/llama-tailored").env("HF_ENDPOINT", &hub.url).env("HF_TOKEN", TOKEN).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in hf_tailor::gguf::files_in(&out) {
        assert_eq!(hub.file("models", "tester/llama-tailored", "main", &name), Some(std::fs::read(out.join(&name)).unwrap()), "{name}");
        assert!(matches!(hub.entry("models", "tester/llama-tailored", "main", &name), Some(crate::testhub::Entry::Lfs { .. })), "{name} by LFS");
    }
    assert!(hub.file("models", "tester/llama-tailored", "main", "README.md").is_some_and(|r| String::from_utf8_lossy(&r).contains("ollama run")));
}

/// Llama 3's real tokenizer (rebuilt from the vocabulary GGUF llama.cpp ships for its own
/// tokenizer tests; 128256 tokens, 280147 merges): hf-tailor names its pre-tokenizer
/// `llama-bpe` as llama.cpp's converter does, embeds the same vocabulary, types and merges, and
/// llama.cpp tokenizes the test text (spaces, digits, accents, an emoji) as transformers does.
#[test]
fn llama3_tokenizer_is_embedded_as_llama_cpps_converter_embeds_it() {
    let tmp = common::tempdir();
    let dir = tmp.path().join("llama3-tailored");
    let spec = TinySpec { layers: 1, vocab: 128_256, shard_bytes: None, ..TinySpec::llama_tied() };
    write_fixture(&dir, &spec, 9);
    let llama_cpp = common::llama_cpp();
    common::run_python("gguf_check_tokenizer.py", &["llama3", dir.to_str().unwrap(), llama_cpp.to_str().unwrap()]);
    let files = export(&dir, "f16");
    let v = assert_file("llama3", &dir, Path::new(files[0]["path"].as_str().unwrap()), "f16", None, &DEFAULT_EXPECT);
    assert!(v["metadata_differ"].get("tokenizer.ggml.pre").is_none(), "{v}");
    assert!(v["metadata_differ"].get("tokenizer.ggml.merges").is_none() && v["metadata_only_ours"].get("tokenizer.ggml.merges").is_none(), "{v}");
}
