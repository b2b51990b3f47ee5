//! `config.json`: the typed fields hf-tailor needs, plus the raw JSON so the writer can
//! copy everything else unchanged. Reads both transformers 4.x (`rope_theta`,
//! `torch_dtype`) and 5.x (`rope_parameters`, `dtype`) layouts.

use std::path::Path;

use serde_json::Value;

use crate::arch::{Activation, Arch, Role};

/// The attention a layer uses: over every earlier position, or over the latest `sliding_window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKind {
    Full,
    Sliding,
}

/// Rotary position scaling (`rope_scaling` in 4.x, the non-theta parts of `rope_parameters`
/// in 5.x), typed here once: the kinds the evaluator computes, each with the numbers it needs.
/// Any other kind (yarn, dynamic, ...) is refused with the config, before a weight is fetched;
/// the evaluator follows transformers' arithmetic and the GGUF writer llama.cpp's.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Every frequency divided by `factor` (position interpolation).
    Linear { factor: f64 },
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
    /// Phi-3's LongRoPE (`longrope`, formerly `su`): per-pair factors for short and long
    /// sequences (head_dim / 2 each), switched past the original context.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position_embeddings: usize,
        /// As written (the evaluator falls back to `max_position_embeddings / original`).
        factor: Option<f64>,
        /// As written (both consumers compute it when absent).
        attention_factor: Option<f64>,
    },
}

impl RopeScaling {
    pub const SUPPORTED: &'static str = "default, linear, llama3, longrope";

    /// The kind's name as config.json spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Linear { .. } => "linear",
            Self::Llama3 { .. } => "llama3",
            Self::LongRope { .. } => "longrope",
        }
    }

    /// The scaling object `s` (None for `default`); `raw` is the whole config (LongRoPE's
    /// original context may sit at its top level).
    fn parse(s: &Value, raw: &Value, head_dim: usize, path: &str) -> Result<Option<Self>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.into(), message };
        let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default");
        let num = |field: &str| s.get(field).and_then(Value::as_f64).ok_or_else(|| invalid(format!("rope_scaling lacks a numeric `{field}`")));
        Ok(Some(match kind {
            "default" => return Ok(None),
            "linear" => Self::Linear { factor: num("factor")? },
            "llama3" => Self::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            },
            "longrope" | "su" => {
                let original = s
                    .get("original_max_position_embeddings")
                    .or_else(|| raw.get("original_max_position_embeddings"))
                    .and_then(Value::as_u64)
                    .ok_or_else(|| invalid("longrope without original_max_position_embeddings".into()))?;
                let factors = |field: &str| -> Result<Vec<f64>, ConfigError> {
                    let v: Option<Vec<f64>> = s.get(field).and_then(Value::as_array).and_then(|a| a.iter().map(Value::as_f64).collect());
                    v.filter(|v| v.len() * 2 == head_dim && v.iter().all(|x| x.is_finite()))
                        .ok_or_else(|| invalid(format!("rope_scaling `{field}` must list head_dim / 2 = {} finite numbers", head_dim / 2)))
                };
                let f = |field: &str| s.get(field).and_then(Value::as_f64);
                Self::LongRope {
                    short_factor: factors("short_factor")?,
                    long_factor: factors("long_factor")?,
                    original_max_position_embeddings: original as usize,
                    factor: f("factor"),
                    attention_factor: f("attention_factor"),
                }
            }
            other => return Err(invalid(format!("rope_scaling type `{other}` is not supported (supported: {})", Self::SUPPORTED))),
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not valid JSON: {source}")]
    Json { path: String, source: serde_json::Error },
    #[error("{path}: field `{field}` is missing or not {expected}")]
    Field { path: String, field: &'static str, expected: &'static str },
    #[error("{path}: model_type `{model_type}` is not supported (supported: {supported})", supported = crate::arch::supported_list())]
    UnsupportedArch { path: String, model_type: String },
    #[error("{path}: unsupported: mixture-of-experts (`{model_type}`): hf-tailor stitches dense decoder layers only")]
    MixtureOfExperts { path: String, model_type: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The parts of a model's config that hf-tailor uses.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: &'static Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// `rope_scaling` (4.x) or the non-theta parts of `rope_parameters` (5.x); None: unscaled.
    pub rope_scaling: Option<RopeScaling>,
    pub max_position_embeddings: usize,
    /// Sliding-window attention on every layer (Mistral's `sliding_window`; Qwen2's when
    /// `use_sliding_window` is on): a position sees only the `window` latest positions.
    pub sliding_window: Option<usize>,
    /// Each source layer's attention (all `Full` without a window). Mixed for Gemma 2/3's
    /// alternating layers and for Qwen2/3 below `max_window_layers`.
    pub layer_attention: Vec<AttentionKind>,
    /// Rotary base of sliding layers when it differs from `rope_theta` (Gemma 3's
    /// `rope_local_base_freq`); sliding layers use no `rope_scaling` then.
    pub rope_local_theta: Option<f64>,
    /// Attention scores are scaled by `1/sqrt(query_pre_attn_scalar)` (Gemma), else `1/sqrt(head_dim)`.
    pub query_pre_attn_scalar: Option<f64>,
    /// `cap * tanh(x / cap)` on attention scores / final logits (Gemma 2).
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub tie_word_embeddings: bool,
    /// The dtype the checkpoint declares (`torch_dtype` or `dtype`), if any.
    pub declared_dtype: Option<String>,
    /// The whole config.json, kept for the writer.
    pub raw: Value,
}

fn get_usize(v: &Value, path: &str, field: &'static str) -> Result<usize, ConfigError> {
    v.get(field).and_then(Value::as_u64).map(|x| x as usize).ok_or(ConfigError::Field {
        path: path.into(),
        field,
        expected: "a non-negative integer",
    })
}

/// Each layer's attention kind: from `layer_types` when the config lists them, else from
/// Gemma's `sliding_window_pattern` (every `pattern`-th layer full; Gemma 2: 2) or Qwen's
/// `max_window_layers` (layers below it full), else one kind for every layer.
fn layer_attention(raw: &Value, arch: &Arch, path: &str, layers: usize, windowed: bool) -> Result<Vec<AttentionKind>, ConfigError> {
    use AttentionKind::*;
    if !windowed {
        return Ok(vec![Full; layers]);
    }
    if let Some(types) = raw.get("layer_types").filter(|v| !v.is_null()) {
        let invalid = |message: String| ConfigError::Invalid { path: path.into(), message };
        let types = types.as_array().ok_or_else(|| invalid("layer_types must be a list".into()))?;
        if types.len() != layers {
            return Err(invalid(format!("layer_types lists {} layers, num_hidden_layers is {layers}", types.len())));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(Full),
                Some("sliding_attention") => Ok(Sliding),
                _ => Err(invalid(format!("layer type {t} is not supported (full_attention, sliding_attention)"))),
            })
            .collect();
    }
    if arch.flavor.per_layer_attention {
        let default = if arch.model_type == "gemma2" { 2 } else { 6 };
        let pattern = raw.get("sliding_window_pattern").and_then(Value::as_u64).unwrap_or(default).max(1) as usize;
        return Ok((0..layers).map(|i| if (i + 1) % pattern == 0 { Full } else { Sliding }).collect());
    }
    if arch.flavor.window_switch.is_some() {
        let below = raw.get("max_window_layers").and_then(Value::as_u64).unwrap_or(0) as usize;
        return Ok((0..layers).map(|i| if i < below { Full } else { Sliding }).collect());
    }
    Ok(vec![Sliding; layers])
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_file_named(path, &path.display().to_string())
    }

    /// [`ModelConfig::from_file`], naming the file `p` in messages (a repo's config.json
    /// rather than its path in the cache).
    pub fn from_file_named(path: &Path, p: &str) -> Result<Self, ConfigError> {
        let p = p.to_string();
        let text = crate::fsutil::read_text_input(path, crate::limits::MAX_CONFIG_BYTES as u64)
            .map_err(|source| ConfigError::Io { path: p.clone(), source })?;
        let raw: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Json { path: p.clone(), source })?;
        Self::from_value(raw, &p)
    }

    /// Parse a config already in memory; `path` is only used in messages.
    pub fn from_value(raw: Value, path: &str) -> Result<Self, ConfigError> {
        let model_type = raw.get("model_type").and_then(Value::as_str).ok_or(ConfigError::Field {
            path: path.into(),
            field: "model_type",
            expected: "a string",
        })?;
        let moe_fields = ["num_experts", "num_local_experts", "n_routed_experts"];
        if crate::arch::MIXTURE_OF_EXPERTS.contains(&model_type)
            || moe_fields.iter().any(|f| raw.get(*f).and_then(Value::as_u64).is_some_and(|n| n > 0))
        {
            return Err(ConfigError::MixtureOfExperts { path: path.into(), model_type: model_type.into() });
        }
        let arch =
            Arch::for_model_type(model_type).ok_or_else(|| ConfigError::UnsupportedArch { path: path.into(), model_type: model_type.into() })?;
        let hidden_size = get_usize(&raw, path, "hidden_size")?;
        let num_attention_heads = get_usize(&raw, path, "num_attention_heads")?;
        let num_key_value_heads = match raw.get("num_key_value_heads") {
            None | Some(Value::Null) => num_attention_heads,
            Some(_) => get_usize(&raw, path, "num_key_value_heads")?,
        };
        if num_attention_heads == 0 || num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(ConfigError::Invalid {
                path: path.into(),
                message: format!(
                    "num_attention_heads ({num_attention_heads}) must be a positive multiple of num_key_value_heads ({num_key_value_heads})"
                ),
            });
        }
        let head_dim = match raw.get("head_dim") {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0) as usize,
            _ => hidden_size / num_attention_heads,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ConfigError::Invalid { path: path.into(), message: format!("head_dim {head_dim} must be even and positive") });
        }
        // transformers 5.x: `rope_parameters`, keyed by attention kind for Gemma 3.
        let rope_all = raw.get("rope_parameters").filter(|v| v.is_object());
        let by_kind = |k: &str| rope_all.and_then(|r| r.get(k)).filter(|v| v.is_object());
        let rope_params = by_kind("full_attention").or(rope_all);
        let rope_theta = raw
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or_else(|| rope_params.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64))
            .unwrap_or(10000.0);
        let rope_scaling = match raw.get("rope_scaling").filter(|v| !v.is_null()).or(rope_params).filter(|v| v.is_object()) {
            Some(s) => RopeScaling::parse(s, &raw, head_dim, path)?,
            None => None,
        };
        let rope_local_theta = if arch.flavor.per_layer_attention {
            let local = by_kind("sliding_attention");
            if local.and_then(|r| r.get("rope_type")).and_then(Value::as_str).is_some_and(|k| k != "default") {
                return Err(ConfigError::Invalid { path: path.into(), message: "rope scaling on sliding-window layers is not supported".into() });
            }
            raw.get("rope_local_base_freq").and_then(Value::as_f64).or_else(|| local.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64))
        } else {
            None
        };
        let uses_window = arch.flavor.window_switch.is_none_or(|flag| raw.get(flag).and_then(Value::as_bool).unwrap_or(false));
        let sliding_window = match raw.get("sliding_window") {
            Some(Value::Number(n)) if uses_window => match n.as_u64() {
                Some(w) if w > 0 => Some(w as usize),
                _ => return Err(ConfigError::Invalid { path: path.into(), message: format!("sliding_window {n} must be a positive integer") }),
            },
            _ => None,
        };
        let num_hidden_layers = get_usize(&raw, path, "num_hidden_layers")?;
        let layer_attention = layer_attention(&raw, arch, path, num_hidden_layers, sliding_window.is_some())?;
        let act = raw.get("hidden_activation").or_else(|| raw.get("hidden_act")).and_then(Value::as_str);
        let act_ok = match arch.flavor.activation {
            Activation::Silu => ["silu", "swish"].as_slice(),
            Activation::GeluTanh => ["gelu_pytorch_tanh", "gelu_tanh", "gelu_new"].as_slice(),
        };
        if let Some(a) = act.filter(|a| !act_ok.contains(a)) {
            return Err(ConfigError::Invalid {
                path: path.into(),
                message: format!("hidden activation `{a}` is not supported for {model_type} (supported: {})", act_ok.join(", ")),
            });
        }
        if raw.get("attention_bias").and_then(Value::as_bool) == Some(true) && arch.suffix(Role::QBias).is_none() {
            return Err(ConfigError::Invalid { path: path.into(), message: "attention_bias: true is not supported for this architecture".into() });
        }
        let float = |f: &str| raw.get(f).and_then(Value::as_f64);
        let partial = rope_params.and_then(|r| r.get("partial_rotary_factor")).or_else(|| raw.get("partial_rotary_factor")).and_then(Value::as_f64);
        if partial.is_some_and(|p| p != 1.0) {
            return Err(ConfigError::Invalid {
                path: path.into(),
                message: format!("partial_rotary_factor {} is not supported (rotary on the whole head only)", partial.unwrap_or(1.0)),
            });
        }
        let declared_dtype = raw.get("torch_dtype").or_else(|| raw.get("dtype")).and_then(Value::as_str).map(str::to_owned);
        Ok(Self {
            arch,
            hidden_size,
            intermediate_size: get_usize(&raw, path, "intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: get_usize(&raw, path, "vocab_size")?,
            rms_norm_eps: raw.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(2048) as usize,
            sliding_window,
            layer_attention,
            rope_local_theta,
            query_pre_attn_scalar: float("query_pre_attn_scalar"),
            attn_logit_softcapping: float("attn_logit_softcapping"),
            final_logit_softcapping: float("final_logit_softcapping"),
            tie_word_embeddings: raw.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            declared_dtype,
            raw,
        })
    }

    /// The shape of a per-layer tensor with `role`, as this config implies it (the
    /// architecture table says which roles a layer has).
    pub fn layer_tensor_shape(&self, role: Role) -> Vec<usize> {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let i = self.intermediate_size;
        match role {
            Role::Q => vec![q, h],
            Role::K | Role::V => vec![kv, h],
            Role::O => vec![h, q],
            Role::QBias => vec![q],
            Role::KBias | Role::VBias => vec![kv],
            Role::Gate | Role::Up => vec![i, h],
            Role::Down => vec![h, i],
            Role::InputNorm | Role::PostAttentionNorm | Role::PreFeedforwardNorm | Role::PostFeedforwardNorm => vec![h],
            Role::QNorm | Role::KNorm => vec![self.head_dim],
            Role::QkvFused => vec![q + 2 * kv, h],
            Role::GateUpFused => vec![2 * i, h],
        }
    }

    /// Parameters in one decoder layer (weights and biases), from the shapes the config implies.
    pub fn params_per_layer(&self) -> u64 {
        self.arch.layer_tensors.iter().map(|t| self.layer_tensor_shape(t.role).iter().product::<usize>() as u64).sum()
    }

    /// Parameters outside the layers (embeddings, final norm, untied lm_head).
    pub fn params_outside_layers(&self) -> u64 {
        let emb = (self.vocab_size * self.hidden_size) as u64;
        emb + self.hidden_size as u64 + if self.tie_word_embeddings { 0 } else { emb }
    }

    /// Total parameters of a model of this config with `layers` decoder layers.
    pub fn total_params(&self, layers: usize) -> u64 {
        self.params_outside_layers() + layers as u64 * self.params_per_layer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny(extra: Value) -> Value {
        let mut c = json!({"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 6, "num_attention_heads": 2, "vocab_size": 10});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    }

    #[test]
    fn mixture_of_experts_is_refused_with_its_own_message() {
        let err = ModelConfig::from_value(tiny(json!({"model_type": "qwen3_moe", "num_experts": 8})), "c").unwrap_err();
        assert_eq!(err.to_string(), "c: unsupported: mixture-of-experts (`qwen3_moe`): hf-tailor stitches dense decoder layers only");
        let err = ModelConfig::from_value(tiny(json!({"model_type": "llama", "num_local_experts": 4})), "c").unwrap_err();
        assert!(matches!(err, ConfigError::MixtureOfExperts { .. }), "{err}");
    }

    #[test]
    fn layer_kinds_come_from_layer_types_patterns_or_max_window_layers() {
        use AttentionKind::{Full as F, Sliding as S};
        // Gemma 3's legacy pattern: every 3rd layer full; rope bases per kind (5.x layout).
        let g3 = tiny(json!({"model_type": "gemma3_text", "sliding_window": 4, "sliding_window_pattern": 3,
            "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6}, "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}));
        let c = ModelConfig::from_value(g3, "c").unwrap();
        assert_eq!(c.layer_attention, vec![S, S, F, S, S, F]);
        assert_eq!((c.rope_theta, c.rope_local_theta), (1e6, Some(1e4)));
        // Gemma 2's default alternation, overridden by an explicit list.
        let c = ModelConfig::from_value(tiny(json!({"model_type": "gemma2", "sliding_window": 4})), "c").unwrap();
        assert_eq!(c.layer_attention, vec![S, F, S, F, S, F]);
        let types = json!(["full_attention", "sliding_attention", "full_attention", "full_attention", "sliding_attention", "full_attention"]);
        let c = ModelConfig::from_value(tiny(json!({"model_type": "gemma2", "sliding_window": 4, "layer_types": types})), "c").unwrap();
        assert_eq!(c.layer_attention, vec![F, S, F, F, S, F]);
        // Qwen3: the window only with use_sliding_window, below max_window_layers full.
        let q = |on: bool| tiny(json!({"model_type": "qwen3", "sliding_window": 4, "use_sliding_window": on, "max_window_layers": 2}));
        assert_eq!(ModelConfig::from_value(q(true), "c").unwrap().layer_attention, vec![F, F, S, S, S, S]);
        assert_eq!(ModelConfig::from_value(q(false), "c").unwrap().layer_attention, vec![F; 6]);
        let bad = tiny(json!({"model_type": "gemma2", "sliding_window": 4, "layer_types": ["full_attention"]}));
        assert!(ModelConfig::from_value(bad, "c").unwrap_err().to_string().contains("layer_types lists 1 layers"));
        let act = tiny(json!({"model_type": "gemma2", "hidden_activation": "relu"}));
        assert!(ModelConfig::from_value(act, "c").unwrap_err().to_string().contains("hidden activation `relu`"));
    }

    /// Rope scaling is typed with the config: the evaluator's kinds parse, in both layouts;
    /// any other kind is refused here, with the config, not when scoring starts.
    #[test]
    fn rope_scaling_is_typed_and_unsupported_kinds_are_refused_with_the_config() {
        let llama3 =
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let c = ModelConfig::from_value(tiny(json!({"model_type": "llama", "rope_scaling": llama3.clone()})), "c").unwrap();
        let want = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192.0 };
        assert_eq!(c.rope_scaling, Some(want.clone()));
        let mut v5 = llama3;
        v5["rope_theta"] = json!(5e5);
        let c = ModelConfig::from_value(tiny(json!({"model_type": "llama", "rope_parameters": v5})), "c").unwrap();
        assert_eq!((c.rope_scaling, c.rope_theta), (Some(want), 5e5));
        let c = ModelConfig::from_value(tiny(json!({"model_type": "llama", "rope_scaling": {"type": "linear", "factor": 2.0}})), "c").unwrap();
        assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
        let c = ModelConfig::from_value(tiny(json!({"model_type": "llama", "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}})), "c")
            .unwrap();
        assert_eq!(c.rope_scaling, None);
        for (bad, needle) in [
            (json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}), "rope_scaling type `yarn` is not supported"),
            (json!({"type": "dynamic", "factor": 2.0}), "`dynamic`"),
            (json!({"type": "linear"}), "lacks a numeric `factor`"),
            (json!({"type": "longrope", "original_max_position_embeddings": 4, "short_factor": [1.0], "long_factor": [1.0, 2.0]}), "`short_factor`"),
        ] {
            let err = ModelConfig::from_value(tiny(json!({"model_type": "llama", "rope_scaling": bad})), "c").unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }) && err.to_string().contains(needle), "{err}");
        }
    }
}
