//! The `general.*` and `{arch}.*` keys of a GGUF, from the checkpoint's config, as llama.cpp's
//! converter writes them (the test `gguf::metadata_matches_llama_cpps_converter` compares
//! the two key by key).
//!
//! Differences from the converter: `general.name` is the model folder's name as is (the
//! converter prettifies it, e.g. `llama` -> `Llama`), and the converter's other naming
//! heuristics (`general.basename`, `general.finetune`, licence and tags read from a card)
//! are not written.

use serde_json::Value as Json;

use super::format::Value;
use super::{FileType, GgufError};
use crate::arch::{ExtraKey, GgufArch, HeadWidth, RopeStyle};
use crate::config::{AttentionKind, ModelConfig, RopeScaling as Rope};

/// How llama.cpp applies the config's rope scaling: keys, or (Llama 3) a `rope_freqs` tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// `rope_freqs.weight`: one factor per rotary frequency pair.
    Llama3(Vec<f32>),
    Keys(Vec<(String, Value)>),
    /// Phi-3's LongRoPE: `rope_factors_long` / `rope_factors_short` (one factor per rotary
    /// frequency pair) and the attention factor key.
    LongRope {
        long: Vec<f32>,
        short: Vec<f32>,
        attn_factor: f32,
    },
}

/// The parameter count as llama.cpp's converter labels it: "35K", "135M", "1.2B".
pub fn size_label(params: u64) -> String {
    let p = params as f64;
    let (scaled, suffix) = if p > 1e12 {
        (p * 1e-12, "T")
    } else if p > 1e9 {
        (p * 1e-9, "B")
    } else if p > 1e6 {
        (p * 1e-6, "M")
    } else {
        (p * 1e-3, "K")
    };
    let whole = scaled.round_ties_even() as u64;
    let digits = if whole == 0 { 0 } else { whole.to_string().len() };
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

/// The rope scaling of `cfg` as llama.cpp takes it; a kind llama.cpp's architecture does
/// not take is refused rather than silently written as unscaled (the model would run,
/// wrongly, past the original context).
pub fn rope_scaling(cfg: &ModelConfig, arch: &GgufArch) -> Result<RopeScaling, GgufError> {
    let Some(s) = &cfg.rope_scaling else { return Ok(RopeScaling::None) };
    let p = |k: &str| format!("{}.rope.scaling.{k}", arch.name);
    match s {
        Rope::LongRope { short_factor, long_factor, original_max_position_embeddings, attention_factor, .. } if arch.rope == RopeStyle::LongRope => {
            Ok(longrope(cfg, short_factor, long_factor, *original_max_position_embeddings, *attention_factor))
        }
        Rope::Linear { factor } if arch.rope != RopeStyle::LongRope => {
            Ok(RopeScaling::Keys(vec![(p("type"), Value::Str("linear".into())), (p("factor"), Value::F32(*factor as f32))]))
        }
        &Rope::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }
            if arch.rope != RopeStyle::LongRope && arch.permute_qk =>
        {
            Ok(RopeScaling::Llama3(llama3_factors(cfg, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)))
        }
        other => Err(GgufError::Unsupported { what: format!("rope scaling `{}` for llama.cpp's {} architecture", other.kind(), arch.name) }),
    }
}

/// `original_max_position_embeddings`, from the rope scaling or config.json's top level.
fn original_context(cfg: &ModelConfig) -> Option<u64> {
    match &cfg.rope_scaling {
        Some(Rope::LongRope { original_max_position_embeddings, .. }) => Some(*original_max_position_embeddings as u64),
        Some(Rope::Llama3 { original_max_position_embeddings, .. }) => Some(*original_max_position_embeddings as u64),
        _ => cfg.raw.get("original_max_position_embeddings").and_then(Json::as_u64),
    }
}

/// LongRoPE's factors and attention factor, as Phi-3's converter writes them:
/// `sqrt(1 + ln(scale) / ln(original))` for `scale = context / original > 1`, else 1
/// (config.json's `attention_factor`, when stated, is what transformers uses, and is kept).
fn longrope(cfg: &ModelConfig, short_factor: &[f64], long_factor: &[f64], orig: usize, attention_factor: Option<f64>) -> RopeScaling {
    let to_f32 = |v: &[f64]| v.iter().map(|x| *x as f32).collect();
    let scale = cfg.max_position_embeddings as f64 / orig as f64;
    let computed = if scale > 1.0 { (1.0 + scale.ln() / (orig as f64).ln()).sqrt() } else { 1.0 };
    RopeScaling::LongRope { long: to_f32(long_factor), short: to_f32(short_factor), attn_factor: attention_factor.unwrap_or(computed) as f32 }
}

/// Llama 3.1's frequency-dependent rope factors, computed in f32 as llama.cpp's converter
/// computes them: 1 for high frequencies, `factor` for low ones, a smooth blend between.
fn llama3_factors(cfg: &ModelConfig, factor: f64, low: f64, high: f64, old_ctx: f64) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    let dim = cfg.head_dim;
    let base = cfg.rope_theta as f32;
    (0..dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0f32 / base.powf(i as f32 / dim as f32);
            let wavelen = (2.0 * std::f64::consts::PI) as f32 / freq;
            if (wavelen as f64) < high_wavelen {
                1.0
            } else if (wavelen as f64) > low_wavelen {
                factor as f32
            } else {
                let smooth = ((old_ctx as f32 / wavelen) - low as f32) / (high as f32 - low as f32);
                1.0 / ((1.0 - smooth) / factor as f32 + smooth)
            }
        })
        .collect()
}

/// The `general.*` and hyperparameter keys for one file.
pub fn keys(cfg: &ModelConfig, arch: &GgufArch, name: &str, file_type: FileType, params: u64, rope: &RopeScaling) -> Vec<(String, Value)> {
    let a = arch.name;
    let k = |s: &str| format!("{a}.{s}");
    let u = |x: usize| Value::U32(x as u32);
    let raw = &cfg.raw;
    let context = raw.get("max_position_embeddings").and_then(Json::as_u64).map(|c| c as usize).unwrap_or(cfg.max_position_embeddings);
    let mut out = vec![
        ("general.architecture".to_string(), Value::Str(a.into())),
        ("general.type".into(), Value::Str("model".into())),
        ("general.name".into(), Value::Str(name.into())),
        ("general.size_label".into(), Value::Str(size_label(params))),
        (k("block_count"), u(cfg.num_hidden_layers)),
        (k("context_length"), u(context)),
        (k("embedding_length"), u(cfg.hidden_size)),
        (k("feed_forward_length"), u(cfg.intermediate_size)),
        (k("attention.head_count"), u(cfg.num_attention_heads)),
        (k("attention.head_count_kv"), u(cfg.num_key_value_heads)),
    ];
    match rope {
        RopeScaling::Keys(keys) => out.extend(keys.iter().cloned()),
        RopeScaling::LongRope { attn_factor, .. } => out.push((k("rope.scaling.attn_factor"), Value::F32(*attn_factor))),
        RopeScaling::None | RopeScaling::Llama3(_) => {}
    }
    out.push((k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)));
    // The sliding layers' own rotary base (Gemma 3).
    if let Some(local) = cfg.rope_local_theta {
        out.push((k("rope.freq_base_swa"), Value::F32(local as f32)));
    }
    out.push((k("attention.layer_norm_rms_epsilon"), Value::F32(cfg.rms_norm_eps as f32)));
    // The head width: the converter writes it when transformers' config has one (Llama's and
    // Mistral's always do, Qwen2's only when config.json states it).
    let head_width = match arch.head_width {
        HeadWidth::Always => true,
        HeadWidth::WhenStated => raw.get("head_dim").is_some_and(Json::is_u64),
        HeadWidth::Never => false,
    };
    if head_width {
        out.push((k("attention.key_length"), u(cfg.head_dim)));
        out.push((k("attention.value_length"), u(cfg.head_dim)));
    }
    out.push(("general.file_type".into(), Value::U32(file_type.llama_file_type())));
    for extra in arch.extra_keys {
        match extra {
            ExtraKey::VocabSize => out.push((k("vocab_size"), u(cfg.vocab_size))),
            ExtraKey::RopeDimensionCount => out.push((k("rope.dimension_count"), u(cfg.head_dim))),
            ExtraKey::SlidingWindow => {
                if let Some(w) = cfg.sliding_window {
                    out.push((k("attention.sliding_window"), u(w)));
                }
            }
            ExtraKey::SlidingWindowOrZero => out.push((k("attention.sliding_window"), u(cfg.sliding_window.unwrap_or(0)))),
            ExtraKey::SlidingWindowPattern => {
                if cfg.sliding_window.is_some() {
                    let sliding = cfg.layer_attention.iter().map(|a| *a == AttentionKind::Sliding).collect();
                    out.push((k("attention.sliding_window_pattern"), Value::BoolArray(sliding)));
                }
            }
            ExtraKey::Softcapping => {
                for (key, v) in [("attn_logit_softcapping", cfg.attn_logit_softcapping), ("final_logit_softcapping", cfg.final_logit_softcapping)] {
                    if let Some(v) = v.filter(|v| *v != 0.0) {
                        out.push((k(key), Value::F32(v as f32)));
                    }
                }
            }
            ExtraKey::OriginalContextLength => {
                if let Some(orig) = original_context(cfg) {
                    out.push((k("rope.scaling.original_context_length"), u(orig as usize)));
                }
            }
        }
    }
    out.push(("general.quantization_version".into(), Value::U32(2)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_labels_as_llama_cpp_writes_them() {
        assert_eq!(size_label(35_168), "35K");
        assert_eq!(size_label(134_515_008), "135M");
        assert_eq!(size_label(1_235_814_400), "1.2B");
        assert_eq!(size_label(7_241_732_096), "7.2B");
        assert_eq!(size_label(500), "0.50K");
    }
}
