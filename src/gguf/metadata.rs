//! The `general.*` and `{arch}.*` keys of a GGUF, from the checkpoint's config, as llama.cpp's
//! converter writes them (the test `gguf::metadata_matches_llama_cpps_converter` compares
//! the two key by key).
//!
//! Differences from the converter: `general.name` is the model folder's name as is (the
//! converter prettifies it, e.g. `llama` -> `Llama`), and the converter's other naming
//! heuristics (`general.basename`, `general.finetune`, licence and tags read from a card)
//! are not written.

use serde_json::Value as Json;

use super::arch::{ExtraKey, GgufArch};
use super::format::Value;
use super::{FileType, GgufError};
use crate::config::ModelConfig;

/// How llama.cpp applies the config's rope scaling: keys, or (Llama 3) a `rope_freqs` tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// `rope_freqs.weight`: one factor per rotary frequency pair.
    Llama3(Vec<f32>),
    Keys(Vec<(String, Value)>),
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

fn rope_kind(scaling: &Json) -> Option<&str> {
    scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Json::as_str)
}

/// The rope scaling of `cfg` as llama.cpp takes it; an unknown kind is refused rather than
/// silently written as unscaled (the model would run, wrongly, past the original context).
pub fn rope_scaling(cfg: &ModelConfig, arch: &GgufArch) -> Result<RopeScaling, GgufError> {
    let Some(s) = cfg.rope_scaling.as_ref().filter(|s| s.is_object()) else { return Ok(RopeScaling::None) };
    let p = |k: &str| format!("{}.rope.scaling.{k}", arch.name);
    let f = |k: &str| s.get(k).and_then(Json::as_f64);
    let factor = f("factor");
    match rope_kind(s).unwrap_or("default") {
        "default" => Ok(RopeScaling::None),
        "linear" => {
            let Some(factor) = factor else { return Ok(RopeScaling::None) };
            Ok(RopeScaling::Keys(vec![(p("type"), Value::Str("linear".into())), (p("factor"), Value::F32(factor as f32))]))
        }
        "yarn" => {
            let Some(factor) = factor else { return Ok(RopeScaling::None) };
            let orig = s
                .get("original_max_position_embeddings")
                .and_then(Json::as_u64)
                .ok_or_else(|| GgufError::Unsupported { what: "yarn rope scaling without original_max_position_embeddings".into() })?;
            let mut keys = vec![
                (p("type"), Value::Str("yarn".into())),
                (p("factor"), Value::F32(factor as f32)),
                (p("original_context_length"), Value::U32(orig as u32)),
            ];
            for (hf, gg) in [("extrapolation_factor", "yarn_ext_factor"), ("beta_fast", "yarn_beta_fast"), ("beta_slow", "yarn_beta_slow")] {
                if let Some(v) = f(hf) {
                    keys.push((p(gg), Value::F32(v as f32)));
                }
            }
            if let Some(v) = f("attention_factor").or_else(|| f("attn_factor")) {
                keys.push((p("yarn_attn_factor"), Value::F32(v as f32)));
            }
            Ok(RopeScaling::Keys(keys))
        }
        "llama3" if arch.permute_qk => Ok(RopeScaling::Llama3(llama3_factors(cfg, s))),
        other => Err(GgufError::Unsupported { what: format!("rope scaling `{other}` for llama.cpp's {} architecture", arch.name) }),
    }
}

/// Llama 3.1's frequency-dependent rope factors, computed in f32 as llama.cpp's converter
/// computes them: 1 for high frequencies, `factor` for low ones, a smooth blend between.
fn llama3_factors(cfg: &ModelConfig, s: &Json) -> Vec<f32> {
    let f = |k: &str, d: f64| s.get(k).and_then(Json::as_f64).unwrap_or(d);
    let factor = f("factor", 8.0);
    let low = f("low_freq_factor", 1.0);
    let high = f("high_freq_factor", 4.0);
    let old_ctx = f("original_max_position_embeddings", 8192.0);
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
    if let RopeScaling::Keys(keys) = rope {
        out.extend(keys.iter().cloned());
    }
    out.push((k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)));
    out.push((k("attention.layer_norm_rms_epsilon"), Value::F32(cfg.rms_norm_eps as f32)));
    // The head width: the converter writes it when transformers' config has one (Llama's and
    // Mistral's always do, Qwen2's only when config.json states it).
    if arch.extra_keys.contains(&ExtraKey::HeadWidth) || raw.get("head_dim").is_some_and(Json::is_u64) {
        out.push((k("attention.key_length"), u(cfg.head_dim)));
        out.push((k("attention.value_length"), u(cfg.head_dim)));
    }
    out.push(("general.file_type".into(), Value::U32(file_type.llama_file_type())));
    for extra in arch.extra_keys {
        match extra {
            ExtraKey::VocabSize => out.push((k("vocab_size"), u(cfg.vocab_size))),
            ExtraKey::RopeDimensionCount => out.push((k("rope.dimension_count"), u(cfg.head_dim))),
            ExtraKey::HeadWidth => {}
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
