//! A checkpoint's tensors in llama.cpp's names, layout and types, written as one GGUF.

use std::path::Path;

use super::format::{self, TensorSpec, Value};
use super::metadata::{self, RopeScaling};
use super::names;
use super::quant::GgmlType;
use super::{tokenizer, FileType, GgufError, GgufFile};
use crate::arch::Role;
use crate::arch::{GgufArch, Head};
use crate::checkpoint::Checkpoint;

/// Where one GGUF tensor's values come from.
#[derive(Debug, Clone)]
enum Source {
    /// A checkpoint tensor: its first `shape[0]` rows, with the Q/K row permutation over this
    /// many heads when set, and `shift` added (Gemma's `1 + w` norms; 0 otherwise).
    Tensor { name: String, permute_heads: Option<usize>, shift: f32 },
    /// Rope factors computed from the config (Llama 3's, Phi-3's LongRoPE).
    Factors(Vec<f32>),
}

#[derive(Debug, Clone)]
struct Planned {
    gguf_name: String,
    shape: Vec<usize>,
    source: Source,
}

/// An opened model folder, ready to be written as GGUF of any type.
pub struct Model {
    checkpoint: Checkpoint,
    arch: &'static GgufArch,
    name: String,
    tokenizer: Vec<(String, Value)>,
    rope: RopeScaling,
    tensors: Vec<Planned>,
    params: u64,
}

impl Model {
    pub fn open(dir: &Path, name: &str) -> Result<Self, GgufError> {
        let checkpoint = Checkpoint::open(dir)?;
        let cfg = &checkpoint.config;
        let arch = cfg.arch.gguf;
        let a = cfg.arch;
        let untied_head = !cfg.tie_word_embeddings && checkpoint.has(a.lm_head);
        check_supported(cfg, arch, untied_head)?;
        let rope = metadata::rope_scaling(cfg, arch)?;
        let mut embed_shape = checkpoint.info(a.embed)?.shape.clone();
        if arch.trim_embedding {
            embed_shape[0] = embed_shape[0].min(tokenizer::token_count(dir)?);
        }
        let tokenizer = tokenizer::metadata(dir, embed_shape[0], arch.space_prefix)?;

        // Gemma's RMSNorm scales by `1 + w`, llama.cpp's by `w`: the 1 is folded into the weight.
        let norm_shift = if a.flavor.norm_plus_one { 1.0 } else { 0.0 };
        let tensor = |n: &str, shift: f32| Source::Tensor { name: n.to_string(), permute_heads: None, shift };
        let mut tensors = Vec::new();
        let shape_of = |n: &str| checkpoint.info(n).map(|i| i.shape.clone());
        let mut factors = |gguf_name: &str, f: &[f32]| {
            tensors.push(Planned { gguf_name: gguf_name.into(), shape: vec![f.len()], source: Source::Factors(f.to_vec()) });
        };
        match &rope {
            RopeScaling::Llama3(f) => factors(names::ROPE_FREQS, f),
            RopeScaling::LongRope { long, short, .. } => {
                factors(names::ROPE_FACTORS_LONG, long);
                factors(names::ROPE_FACTORS_SHORT, short);
            }
            RopeScaling::None | RopeScaling::Keys(_) => {}
        }
        tensors.push(Planned { gguf_name: names::TOKEN_EMBD.into(), shape: embed_shape, source: tensor(a.embed, 0.0) });
        for layer in 0..cfg.num_hidden_layers {
            for t in a.layer_tensors {
                let hf = a.layer_tensor_name(layer, t.suffix);
                let permute_heads = match t.role {
                    Role::Q if arch.permute_qk => Some(cfg.num_attention_heads),
                    Role::K if arch.permute_qk => Some(cfg.num_key_value_heads),
                    _ => None,
                };
                let shift = if t.role.is_norm() { norm_shift } else { 0.0 };
                let gguf_name = format!("blk.{layer}.{}", arch.tensor_name(t.role));
                tensors.push(Planned { gguf_name, shape: shape_of(&hf)?, source: Source::Tensor { name: hf, permute_heads, shift } });
            }
        }
        tensors.push(Planned { gguf_name: names::OUTPUT_NORM.into(), shape: shape_of(a.final_norm)?, source: tensor(a.final_norm, norm_shift) });
        // A tied head is the embedding: llama.cpp reads `token_embd` when `output` is absent.
        if untied_head {
            tensors.push(Planned { gguf_name: names::OUTPUT.into(), shape: shape_of(a.lm_head)?, source: tensor(a.lm_head, 0.0) });
        }
        let params = tensors.iter().filter(|t| matches!(t.source, Source::Tensor { .. })).map(|t| t.shape.iter().product::<usize>() as u64).sum();
        Ok(Self { checkpoint, arch, name: name.into(), tokenizer, rope, tensors, params })
    }

    /// The storage type of one tensor in a file of type `ft`: 1-D tensors stay f32, and a
    /// weight whose rows are not whole Q8_0 blocks falls back to f16 (as in the converter).
    fn tensor_type(t: &Planned, ft: FileType) -> GgmlType {
        if t.shape.len() < 2 {
            return GgmlType::F32;
        }
        let want = ft.weight_type();
        if want.fits_row(*t.shape.last().unwrap_or(&0)) {
            want
        } else {
            GgmlType::F16
        }
    }

    /// Write the GGUF of type `ft` to `path`, through a temporary file beside it.
    pub fn write(&self, path: &Path, ft: FileType, force: bool) -> Result<GgufFile, GgufError> {
        let start = std::time::Instant::now();
        let cfg = &self.checkpoint.config;
        let mut meta = metadata::keys(cfg, self.arch, &self.name, ft, self.params, &self.rope);
        meta.extend(self.tokenizer.iter().cloned());
        let specs: Vec<TensorSpec> =
            self.tensors.iter().map(|t| TensorSpec { name: t.gguf_name.clone(), shape: t.shape.clone(), ty: Self::tensor_type(t, ft) }).collect();

        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source: std::io::Error| GgufError::Io { path: path.clone(), source }
        };
        let tmp = crate::fsutil::temp_sibling(path);
        crate::writer::track_in_flight(&tmp);
        let result = (|| -> Result<u64, GgufError> {
            let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let bytes = format::write(
                &mut w,
                &meta,
                &specs,
                |i, buf| self.tensor_bytes(&self.tensors[i], specs[i].ty, buf),
                io(&tmp),
                |tensor, got, expected| GgufError::Size { path: tmp.display().to_string(), tensor: tensor.into(), got, expected },
            )?;
            let file = w.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
            file.sync_all().map_err(io(&tmp))?;
            place(&tmp, path, force)?;
            Ok(bytes)
        })();
        crate::writer::untrack_in_flight(&tmp);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let bytes = result?;
        Ok(GgufFile { path: path.display().to_string(), file_type: ft, bytes, tensors: specs.len(), seconds: start.elapsed().as_secs_f64() })
    }

    fn tensor_bytes(&self, t: &Planned, ty: GgmlType, buf: &mut Vec<u8>) -> Result<(), GgufError> {
        match &t.source {
            Source::Factors(f) => ty.encode(f, buf),
            Source::Tensor { name, permute_heads, shift } => {
                let mut values = self.checkpoint.tensor_f32(name)?;
                self.checkpoint.release(name);
                values.truncate(t.shape.iter().product());
                if *shift != 0.0 {
                    values.iter_mut().for_each(|v| *v += shift);
                }
                if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                    let what = if bad.is_nan() { "NaN" } else { "an infinity" };
                    return Err(GgufError::NonFinite { model: self.checkpoint.name.clone(), tensor: name.clone(), what });
                }
                if let Some(heads) = permute_heads {
                    values = names::permute_rows(&values, t.shape[0], *heads);
                }
                ty.encode(&values, buf);
            }
        }
        Ok(())
    }
}

/// What llama.cpp's graph for `arch` would run differently from transformers: refused here, with
/// the reason, rather than written as a file that loads and computes something else.
fn check_supported(cfg: &crate::config::ModelConfig, arch: &GgufArch, untied_head: bool) -> Result<(), GgufError> {
    let refuse = |what: String| Err(GgufError::Unsupported { what });
    let name = arch.name;
    if arch.head == Head::TiedOnly && untied_head {
        return refuse(format!("an untied lm_head for llama.cpp's {name} architecture (its graph computes logits with the embedding)"));
    }
    if arch.head_dim_is_hidden_over_heads && cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size {
        return refuse(format!(
            "head_dim {} != hidden_size / num_attention_heads for llama.cpp's {name} architecture (it derives the head width from them)",
            cfg.head_dim
        ));
    }
    if let Some(q) = cfg.query_pre_attn_scalar.filter(|q| arch.query_scale_is_head_dim && *q != cfg.head_dim as f64) {
        return refuse(format!(
            "query_pre_attn_scalar {q} != head_dim {} for llama.cpp's {name} architecture (it scales queries by 1/sqrt(head_dim), or by the 27B models' own rule only at their original depth)",
            cfg.head_dim
        ));
    }
    Ok(())
}

/// Move the finished temporary file into place: without `force`, by a hard link, which
/// fails rather than replace a file that appeared meanwhile; with it, by a rename.
fn place(tmp: &Path, path: &Path, force: bool) -> Result<(), GgufError> {
    let err = |source: std::io::Error| GgufError::Io { path: path.display().to_string(), source };
    if force {
        std::fs::rename(tmp, path).map_err(err)?;
    } else {
        match std::fs::hard_link(tmp, path) {
            Ok(()) => {
                std::fs::remove_file(tmp).map_err(err)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(GgufError::Exists { path: path.display().to_string() }),
            // No hard links on this file system: the up-front check stands.
            Err(_) => std::fs::rename(tmp, path).map_err(err)?,
        }
    }
    if let Some(parent) = path.parent() {
        let _ = std::fs::File::open(if parent.as_os_str().is_empty() { Path::new(".") } else { parent }).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    fn config(model_type: &str, extra: serde_json::Value) -> ModelConfig {
        let mut raw = serde_json::json!({"model_type": model_type, "vocab_size": 300, "hidden_size": 64, "intermediate_size": 128,
            "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "head_dim": 16});
        raw.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        ModelConfig::from_value(raw, "config.json").unwrap()
    }

    fn refusal(model_type: &str, extra: serde_json::Value, untied: bool) -> Option<String> {
        let cfg = config(model_type, extra);
        check_supported(&cfg, cfg.arch.gguf, untied).err().map(|e| e.to_string())
    }

    #[test]
    fn what_llama_cpp_would_run_differently_is_refused() {
        assert!(refusal("gemma2", serde_json::json!({"query_pre_attn_scalar": 16}), true).unwrap().contains("untied lm_head"));
        assert!(refusal("gemma2", serde_json::json!({"query_pre_attn_scalar": 16}), false).is_none());
        assert!(refusal("gemma3_text", serde_json::json!({"query_pre_attn_scalar": 24}), false).unwrap().contains("query_pre_attn_scalar 24"));
        assert!(refusal("phi3", serde_json::json!({"head_dim": 8}), true).unwrap().contains("head_dim 8"));
        assert!(refusal("phi3", serde_json::json!({}), true).is_none());
        assert!(refusal("qwen3", serde_json::json!({}), true).is_none());
    }
}
