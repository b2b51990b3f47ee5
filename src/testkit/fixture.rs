//! Tiny, real Hugging Face checkpoints for tests, benchmarks and examples: config.json,
//! safetensors shards with an index, a byte-level BPE `tokenizer.json` that transformers
//! loads, tokenizer_config.json and generation_config.json. Deterministic by seed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::arch::Arch;
use crate::dtype::{self, Dtype};

/// Named f32 tensors: name -> (shape, values).
pub type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Shape of a tiny model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub model_type: &'static str,
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Embedding rows (>= the tokenizer's 259 tokens).
    pub vocab: usize,
    pub tie_embeddings: bool,
    pub dtype: Dtype,
    /// Split tensors into shards of at most this many bytes (None: one `model.safetensors`).
    pub shard_bytes: Option<usize>,
    /// An explicit `head_dim` in config.json (None: `hidden / heads`, not written).
    pub head_dim: Option<usize>,
    /// `rope_scaling` written to config.json as is (e.g. linear or llama3 scaling).
    pub rope_scaling: Option<serde_json::Value>,
    /// Mistral's `sliding_window` (None: written as null, full attention).
    pub sliding_window: Option<usize>,
}

impl TinySpec {
    pub fn llama() -> Self {
        Self {
            model_type: "llama",
            layers: 4,
            hidden: 32,
            intermediate: 64,
            heads: 4,
            kv_heads: 2,
            vocab: TOKENIZER_VOCAB,
            tie_embeddings: false,
            dtype: Dtype::F32,
            shard_bytes: Some(64 * 1024),
            head_dim: None,
            rope_scaling: None,
            sliding_window: None,
        }
    }
    /// Llama with `lm_head` tied to the embeddings (as Llama-3.2-1B/3B are).
    pub fn llama_tied() -> Self {
        Self { tie_embeddings: true, ..Self::llama() }
    }
    pub fn mistral() -> Self {
        Self { model_type: "mistral", ..Self::llama() }
    }
    /// Qwen2 with tied embeddings (as the 0.5B-3B models are).
    pub fn qwen2() -> Self {
        Self { model_type: "qwen2", tie_embeddings: true, ..Self::llama() }
    }
    /// Qwen2 with its own `lm_head` (as the 7B and larger models are).
    pub fn qwen2_untied() -> Self {
        Self { tie_embeddings: false, ..Self::qwen2() }
    }
    pub fn arch(&self) -> &'static Arch {
        Arch::for_model_type(self.model_type).expect("fixture uses a supported model_type")
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden / self.heads)
    }
}

/// Tokens in the fixture tokenizer: 256 byte tokens + `<s>`, `</s>`, `<pad>`.
pub const TOKENIZER_VOCAB: usize = 259;
pub const BOS_ID: u32 = 256;
pub const EOS_ID: u32 = 257;
pub const PAD_ID: u32 = 258;

/// Shapes of every tensor of `spec`, by name: the shapes its config.json implies, by the
/// same rule the reader and the writer use ([`crate::config::ModelConfig::layer_tensor_shape`]).
pub fn shapes(spec: &TinySpec) -> BTreeMap<String, Vec<usize>> {
    let arch = spec.arch();
    let config = crate::config::ModelConfig::from_value(config_json(spec), "fixture").expect("a fixture config is valid");
    let h = spec.hidden;
    let mut out = BTreeMap::new();
    for l in 0..spec.layers {
        for t in arch.layer_tensors {
            out.insert(arch.layer_tensor_name(l, t.suffix), config.layer_tensor_shape(t.role));
        }
    }
    out.insert(arch.embed.into(), vec![spec.vocab, h]);
    out.insert(arch.final_norm.into(), vec![h]);
    if !spec.tie_embeddings {
        out.insert(arch.lm_head.into(), vec![spec.vocab, h]);
    }
    out
}

/// Random weights with sensible scales (norm weights near 1, projections ~N(0, 0.2²)).
pub fn random_weights(spec: &TinySpec, seed: u64) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    shapes(spec)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let is_norm = name.ends_with("layernorm.weight") || name.ends_with("norm.weight");
            let values = (0..n)
                .map(|_| {
                    let u: f32 = rng.random::<f32>() - 0.5;
                    if is_norm {
                        1.0 + 0.2 * u
                    } else {
                        0.7 * u
                    }
                })
                .collect();
            (name, (shape, values))
        })
        .collect()
}

/// A sibling: `base` with every tensor of `layers` shifted by random noise of `scale`.
pub fn perturb_layers(spec: &TinySpec, base: &Weights, layers: &[usize], scale: f32, seed: u64) -> Weights {
    perturb(spec, base, layers, scale, 0.0, seed)
}

/// A sibling: `base` with every tensor of `layers` shifted by random noise of `scale` and
/// every other tensor (embeddings, final norm, `lm_head`, biases, other layers) by noise of
/// `background`, so that no tensor of the sibling equals the base's.
pub fn perturb(spec: &TinySpec, base: &Weights, layers: &[usize], scale: f32, background: f32, seed: u64) -> Weights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let arch = spec.arch();
    base.iter()
        .map(|(name, (shape, values))| {
            let touched = arch.parse_layer_tensor(name).is_some_and(|(l, _)| layers.contains(&l));
            let s = if touched { scale } else { background };
            let values = if s != 0.0 { values.iter().map(|v| v + s * (rng.random::<f32>() - 0.5)).collect() } else { values.clone() };
            (name.clone(), (shape.clone(), values))
        })
        .collect()
}

/// Noise every tensor of sibling `j` (0-based) of a [`write_family`] family carries outside
/// its two strongly changed layers: a different size per sibling.
pub fn background_scale(j: usize) -> f32 {
    0.02 * (j + 1) as f32
}

/// `weights` of `spec` with `extra` vocabulary rows appended to the embeddings (and
/// `lm_head` when untied), as padded fine-tunes carry: returns the padded spec and weights.
pub fn pad_vocab(spec: &TinySpec, weights: &Weights, extra: usize, seed: u64) -> (TinySpec, Weights) {
    let padded = TinySpec { vocab: spec.vocab + extra, ..spec.clone() };
    let arch = spec.arch();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = weights.clone();
    for name in [arch.embed, arch.lm_head] {
        if let Some((shape, values)) = out.get_mut(name) {
            shape[0] += extra;
            values.extend((0..extra * shape[1]).map(|_| 0.7 * (rng.random::<f32>() - 0.5)));
        }
    }
    (padded, out)
}

/// config.json for `spec`, as transformers writes it for that family.
pub fn config_json(spec: &TinySpec) -> serde_json::Value {
    let arch = spec.arch();
    let mut c = json!({
        "architectures": [arch.default_architecture],
        "model_type": spec.model_type,
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "vocab_size": spec.vocab,
        "tie_word_embeddings": spec.tie_embeddings,
        "torch_dtype": spec.dtype.torch_name(),
        "hidden_act": "silu",
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "initializer_range": 0.02,
    });
    let obj = c.as_object_mut().expect("object");
    if let Some(d) = spec.head_dim {
        obj.insert("head_dim".into(), json!(d));
    }
    if let Some(r) = &spec.rope_scaling {
        obj.insert("rope_scaling".into(), r.clone());
    }
    match spec.model_type {
        "llama" => {
            obj.insert("attention_bias".into(), json!(false));
            obj.insert("mlp_bias".into(), json!(false));
        }
        "mistral" => {
            obj.insert("sliding_window".into(), json!(spec.sliding_window));
        }
        "qwen2" => {
            obj.insert("use_sliding_window".into(), json!(false));
            obj.insert("sliding_window".into(), serde_json::Value::Null);
            obj.insert("max_window_layers".into(), json!(spec.layers));
            obj.insert("layer_types".into(), json!(vec!["full_attention"; spec.layers]));
        }
        _ => {}
    }
    c
}

/// GPT-2's byte -> printable unicode map, used by byte-level BPE vocabularies.
pub fn byte_to_unicode() -> Vec<char> {
    let printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut out = vec!['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        if printable.contains(&b) {
            out[b as usize] = char::from_u32(b).expect("valid");
        } else {
            out[b as usize] = char::from_u32(256 + extra).expect("valid");
            extra += 1;
        }
    }
    out
}

/// A byte-level BPE tokenizer.json (no merges: one token per byte) with three specials.
pub fn tokenizer_json() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> =
        byte_to_unicode().into_iter().enumerate().map(|(i, c)| (c.to_string(), json!(i))).collect();
    let special = |id: u32, content: &str| json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(BOS_ID, "<s>"), special(EOS_ID, "</s>"), special(PAD_ID, "<pad>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS_ID], "tokens": ["<s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": []}
    })
}

fn write_json(path: &Path, v: &serde_json::Value) -> std::io::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v).expect("json") + "\n")
}

/// Write the tokenizer and generation files every fixture model carries.
pub fn write_tokenizer_files(dir: &Path) -> std::io::Result<()> {
    write_json(&dir.join("tokenizer.json"), &tokenizer_json())?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                "pad_token": "<pad>", "add_bos_token": true, "model_max_length": 512, "clean_up_tokenization_spaces": false}),
    )?;
    write_json(&dir.join("special_tokens_map.json"), &json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}))?;
    write_json(&dir.join("generation_config.json"), &json!({"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "do_sample": false}))
}

/// Write a complete model folder for `spec` with `weights` (stored as `spec.dtype`).
pub fn write_model(dir: &Path, spec: &TinySpec, weights: &Weights) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_json(&dir.join("config.json"), &config_json(spec))?;
    write_tokenizer_files(dir)?;
    // Group tensors into shards by byte budget, in name order.
    // (name, bytes, shape) per tensor, grouped by shard.
    type ShardTensors<'a> = Vec<(&'a String, Vec<u8>, &'a Vec<usize>)>;
    let mut shards: Vec<ShardTensors<'_>> = vec![vec![]];
    let mut size = 0;
    for (name, (shape, values)) in weights {
        let bytes = dtype::from_f32(spec.dtype, values);
        if let Some(limit) = spec.shard_bytes {
            if size > 0 && size + bytes.len() > limit {
                shards.push(vec![]);
                size = 0;
            }
        }
        size += bytes.len();
        shards.last_mut().expect("one shard").push((name, bytes, shape));
    }
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = if spec.shard_bytes.is_none() {
            crate::checkpoint::SINGLE_FILE.to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
        };
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = shard
            .iter()
            .map(|(name, bytes, shape)| {
                weight_map.insert((*name).clone(), file.clone());
                let v =
                    safetensors::tensor::TensorView::new(spec.dtype.to_safetensors(), (*shape).clone(), bytes).expect("consistent fixture tensor");
                ((*name).clone(), v)
            })
            .collect();
        let meta = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
        safetensors::serialize_to_file(views, meta, &dir.join(&file)).map_err(std::io::Error::other)?;
    }
    if spec.shard_bytes.is_some() {
        let total: usize = weights.values().map(|(s, _)| s.iter().product::<usize>() * spec.dtype.size()).sum();
        write_json(&dir.join(crate::checkpoint::INDEX_FILE), &json!({"metadata": {"total_size": total}, "weight_map": weight_map}))?;
    }
    Ok(())
}

/// A base and `siblings` fine-tunes under `root` (`root/base`, `root/sib1`, …). Sibling j
/// (0-based) changes layer `j % layers` and the one after it strongly (noise 0.3) and every
/// other tensor, embeddings, final norm, `lm_head` and biases included, by noise of
/// [`background_scale`]`(j)`: no tensor of any model equals another model's, so a test sees
/// which model every output tensor followed. Returns (base, sibling folders, weights).
pub fn write_family(root: &Path, spec: &TinySpec, siblings: usize, seed: u64) -> std::io::Result<(PathBuf, Vec<PathBuf>, Vec<Weights>)> {
    let base = random_weights(spec, seed);
    let base_dir = root.join("base");
    write_model(&base_dir, spec, &base)?;
    let mut dirs = Vec::new();
    let mut all = vec![base.clone()];
    for j in 0..siblings {
        let layers = [j % spec.layers, (j + 1) % spec.layers];
        let w = perturb(spec, &base, &layers, 0.3, background_scale(j), seed + 1 + j as u64);
        let d = root.join(format!("sib{}", j + 1));
        write_model(&d, spec, &w)?;
        dirs.push(d);
        all.push(w);
    }
    Ok((base_dir, dirs, all))
}
