//! `config.json`: the typed fields hf-tailor needs, plus the raw JSON so the writer can
//! copy everything else unchanged. Reads both transformers 4.x (`rope_theta`,
//! `torch_dtype`) and 5.x (`rope_parameters`, `dtype`) layouts.

use std::path::Path;

use serde_json::Value;

use crate::arch::{Arch, Role};

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
    /// `rope_scaling` (4.x) or the non-theta parts of `rope_parameters` (5.x), as written.
    pub rope_scaling: Option<Value>,
    pub max_position_embeddings: usize,
    /// Sliding-window attention on every layer (Mistral's `sliding_window`; Qwen2's when
    /// `use_sliding_window` is on): a position sees only the `window` latest positions.
    pub sliding_window: Option<usize>,
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

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: p.clone(), source })?;
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
        let rope_params = raw.get("rope_parameters").filter(|v| v.is_object());
        let rope_theta = raw
            .get("rope_theta")
            .and_then(Value::as_f64)
            .or_else(|| rope_params.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64))
            .unwrap_or(10000.0);
        let rope_scaling = match raw.get("rope_scaling") {
            Some(Value::Null) | None => rope_params.and_then(|r| {
                let kind = r.get("rope_type").and_then(Value::as_str).unwrap_or("default");
                (kind != "default").then(|| r.clone())
            }),
            Some(v) => Some(v.clone()),
        };
        let uses_window = arch.model_type != "qwen2" || raw.get("use_sliding_window").and_then(Value::as_bool).unwrap_or(false);
        let sliding_window = match raw.get("sliding_window") {
            Some(Value::Number(n)) if uses_window => match n.as_u64() {
                Some(w) if w > 0 => Some(w as usize),
                _ => return Err(ConfigError::Invalid { path: path.into(), message: format!("sliding_window {n} must be a positive integer") }),
            },
            _ => None,
        };
        let declared_dtype = raw.get("torch_dtype").or_else(|| raw.get("dtype")).and_then(Value::as_str).map(str::to_owned);
        Ok(Self {
            arch,
            hidden_size,
            intermediate_size: get_usize(&raw, path, "intermediate_size")?,
            num_hidden_layers: get_usize(&raw, path, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: get_usize(&raw, path, "vocab_size")?,
            rms_norm_eps: raw.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.get("max_position_embeddings").and_then(Value::as_u64).unwrap_or(2048) as usize,
            sliding_window,
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
            Role::InputNorm | Role::PostAttentionNorm => vec![h],
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
