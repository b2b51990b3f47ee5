//! The output `config.json`: the base's config with every field that depends on the layers,
//! the vocabulary, the dtype or tying rewritten to match what was written. Per-layer fields
//! come from the architecture table (`arch::PerLayerField`), not from code here.

use serde_json::{json, Value};

use crate::arch::{Arch, PerLayerField};

use super::{Layout, LayoutError};

/// The base config `base` rewritten for the output `layout`.
pub fn output_config(base: &Value, arch: &Arch, layout: &Layout) -> Result<Value, LayoutError> {
    let mut cfg = base.clone();
    let obj = cfg.as_object_mut().ok_or_else(|| LayoutError::Config("the base config.json is not an object".into()))?;
    let kept = &layout.kept;
    obj.insert("num_hidden_layers".into(), json!(kept.len()));
    obj.insert("vocab_size".into(), json!(layout.vocab));
    obj.insert("tie_word_embeddings".into(), json!(layout.tied));
    // transformers 4.x writes `torch_dtype`, 5.x `dtype`; keep whichever the base has.
    let dtype = layout.dtype.torch_name();
    let mut wrote_dtype = false;
    for key in ["torch_dtype", "dtype"] {
        if obj.contains_key(key) {
            obj.insert(key.into(), json!(dtype));
            wrote_dtype = true;
        }
    }
    if !wrote_dtype {
        obj.insert("torch_dtype".into(), json!(dtype));
    }
    if !obj.get("architectures").is_some_and(Value::is_array) {
        obj.insert("architectures".into(), json!([arch.default_architecture]));
    }
    let sliding = obj.get("use_sliding_window").and_then(Value::as_bool).unwrap_or(false);
    // A pattern ("every n-th layer is full") cannot describe reordered layers: a base that has
    // only `sliding_window_pattern` gets the explicit per-layer list, which the loop below cuts.
    if arch.flavor.per_layer_attention && obj.get("layer_types").is_none_or(Value::is_null) {
        let c = crate::config::ModelConfig::from_value(base.clone(), "the base config.json").map_err(|e| LayoutError::Config(e.to_string()))?;
        if c.sliding_window.is_some() {
            let name = |k: &crate::config::AttentionKind| match k {
                crate::config::AttentionKind::Full => "full_attention",
                crate::config::AttentionKind::Sliding => "sliding_attention",
            };
            obj.insert("layer_types".into(), json!(c.layer_attention.iter().map(name).collect::<Vec<_>>()));
        }
    }
    for field in arch.per_layer_fields {
        match *field {
            PerLayerField::List(name) => match obj.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) if items.len() == layout.source_layers => {
                    let picked: Vec<Value> = kept.iter().map(|&l| items[l].clone()).collect();
                    obj.insert(name.into(), Value::Array(picked));
                }
                Some(other) => {
                    return Err(LayoutError::Config(format!(
                        "the base config's `{name}` should list {} entries (one per layer), found {}",
                        layout.source_layers,
                        other.as_array().map_or_else(|| other.to_string(), |a| format!("{} entries", a.len()))
                    )))
                }
            },
            PerLayerField::LeadingCount(name) => {
                let Some(count) = obj.get(name).and_then(Value::as_u64) else { continue };
                let below = |l: usize| (l as u64) < count;
                let leading = kept.iter().take_while(|&&l| below(l)).count();
                // Layers under the count must still form a prefix, or one number cannot say which they are.
                if sliding && kept[leading..].iter().any(|&l| below(l)) {
                    return Err(LayoutError::Config(format!(
                        "`{name}` = {count} marks the first {count} source layers, but the recipe puts some of them after a later layer; \
                         with use_sliding_window on, the output cannot express that"
                    )));
                }
                obj.insert(name.into(), json!(leading));
            }
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::QWEN2;
    use crate::dtype::Dtype;
    use crate::recipe::{EdgePolicy, LayerRule, Recipe, Rule, SourceModel};

    fn recipe(from: &[usize]) -> Recipe {
        let base = SourceModel::local("b", "b");
        let layers = from.iter().map(|&f| LayerRule { from: f, rule: Rule::Take("b".into()) }).collect();
        Recipe::new("qwen2", 6, base, vec![], layers, EdgePolicy::Base)
    }

    fn layout(r: &Recipe) -> Layout {
        let kept = r.layers.iter().map(|l| l.from).collect();
        Layout { tensors: vec![], dtype: Dtype::Bf16, vocab: 100, tied: false, kept, source_layers: r.source_layers, notes: vec![] }
    }

    #[test]
    fn per_layer_fields_follow_the_kept_layers() {
        let base = json!({"model_type": "qwen2", "num_hidden_layers": 6, "vocab_size": 101, "dtype": "float32",
            "tie_word_embeddings": true, "use_sliding_window": true, "max_window_layers": 3,
            "layer_types": ["full_attention", "full_attention", "full_attention", "sliding_attention", "sliding_attention", "sliding_attention"]});
        let out = output_config(&base, &QWEN2, &layout(&recipe(&[0, 2, 3, 5]))).unwrap();
        assert_eq!(out["num_hidden_layers"], 4);
        assert_eq!(out["vocab_size"], 100);
        assert_eq!(out["dtype"], "bfloat16");
        assert!(out.get("torch_dtype").is_none());
        assert_eq!(out["tie_word_embeddings"], false);
        assert_eq!(out["max_window_layers"], 2);
        assert_eq!(out["layer_types"], json!(["full_attention", "full_attention", "sliding_attention", "sliding_attention"]));
        assert_eq!(out["architectures"], json!(["Qwen2ForCausalLM"]));
        // Layer 1 (full attention) after layer 4 (sliding) cannot be said with a leading count.
        let err = output_config(&base, &QWEN2, &layout(&recipe(&[0, 4, 1]))).unwrap_err();
        assert!(err.to_string().contains("max_window_layers"), "{err}");
        let bad = json!({"layer_types": ["full_attention"]});
        assert!(output_config(&bad, &QWEN2, &layout(&recipe(&[0]))).is_err());
    }
}

#[cfg(test)]
mod pattern_tests {
    use super::*;
    use crate::arch::GEMMA3_TEXT;
    use crate::dtype::Dtype;

    #[test]
    fn a_sliding_window_pattern_becomes_the_kept_layers_own_types() {
        let base = json!({"model_type": "gemma3_text", "num_hidden_layers": 6, "hidden_size": 8, "intermediate_size": 16,
            "num_attention_heads": 2, "vocab_size": 10, "sliding_window": 4, "sliding_window_pattern": 3});
        let layout = Layout { tensors: vec![], dtype: Dtype::F32, vocab: 10, tied: true, kept: vec![2, 0, 5, 3], source_layers: 6, notes: vec![] };
        let out = output_config(&base, &GEMMA3_TEXT, &layout).unwrap();
        assert_eq!(out["layer_types"], json!(["full_attention", "sliding_attention", "full_attention", "sliding_attention"]));
        assert_eq!(out["num_hidden_layers"], 4);
    }
}
