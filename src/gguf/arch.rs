//! What llama.cpp calls each architecture hf-tailor reads, as data: the GGUF architecture
//! name (which prefixes the hyperparameter keys), the tensor names per [`Role`], whether Q
//! and K rows are permuted, and the architecture-specific keys llama.cpp's converter writes.
//! A new family plugs in as one more table.

use crate::arch::Role;

/// Optional hyperparameter keys, written when a table lists them (as llama.cpp's converter
/// writes them only for some architectures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraKey {
    /// `{arch}.vocab_size`.
    VocabSize,
    /// `{arch}.rope.dimension_count` (the head dimension: rotary on the whole head).
    RopeDimensionCount,
    /// `{arch}.attention.key_length` and `value_length` even when config.json has no
    /// `head_dim` (the converter reads transformers' config, which has one for these
    /// architectures); otherwise they are written only when config.json states it.
    HeadWidth,
}

/// One architecture's GGUF conventions.
#[derive(Debug)]
pub struct GgufArch {
    /// The `model_type`s (config.json) this table serves.
    pub model_types: &'static [&'static str],
    /// `general.architecture`: llama.cpp's name, the prefix of its hyperparameter keys.
    pub name: &'static str,
    /// llama.cpp's Llama graph applies rotary embeddings to interleaved pairs (GPT-J style),
    /// transformers' to the two halves of each head: the converter permutes the rows of Q
    /// and K so the two agree. Qwen2 uses llama.cpp's NeoX rope and keeps rows as they are.
    pub permute_qk: bool,
    pub extra_keys: &'static [ExtraKey],
}

/// Mistral is llama.cpp's `llama` architecture (its converter maps `MistralForCausalLM`
/// there); llama.cpp's Llama graph has no sliding window, which only matters for contexts
/// longer than the window.
pub static LLAMA: GgufArch = GgufArch {
    model_types: &["llama", "mistral"],
    name: "llama",
    permute_qk: true,
    extra_keys: &[ExtraKey::VocabSize, ExtraKey::RopeDimensionCount, ExtraKey::HeadWidth],
};

pub static QWEN2: GgufArch = GgufArch { model_types: &["qwen2"], name: "qwen2", permute_qk: false, extra_keys: &[] };

pub static GGUF_ARCHITECTURES: &[&GgufArch] = &[&LLAMA, &QWEN2];

impl GgufArch {
    pub fn for_model_type(model_type: &str) -> Option<&'static GgufArch> {
        GGUF_ARCHITECTURES.iter().copied().find(|a| a.model_types.contains(&model_type))
    }

    /// The `model_type`s with a GGUF table, for messages.
    pub fn supported_list() -> String {
        GGUF_ARCHITECTURES.iter().flat_map(|a| a.model_types.iter().copied()).collect::<Vec<_>>().join(", ")
    }
}

/// llama.cpp's name of a per-layer tensor (after `blk.N.`), by role.
pub fn layer_tensor_name(role: Role) -> &'static str {
    match role {
        Role::Q => "attn_q.weight",
        Role::K => "attn_k.weight",
        Role::V => "attn_v.weight",
        Role::O => "attn_output.weight",
        Role::QBias => "attn_q.bias",
        Role::KBias => "attn_k.bias",
        Role::VBias => "attn_v.bias",
        Role::Gate => "ffn_gate.weight",
        Role::Up => "ffn_up.weight",
        Role::Down => "ffn_down.weight",
        Role::InputNorm => "attn_norm.weight",
        Role::PostAttentionNorm => "ffn_norm.weight",
        // llama.cpp's names for the roles of families without a GGUF table yet (Qwen3, Gemma,
        // Phi-3). A Gemma table must also map PostAttentionNorm to `post_attention_norm`.
        Role::QNorm => "attn_q_norm.weight",
        Role::KNorm => "attn_k_norm.weight",
        Role::PreFeedforwardNorm => "ffn_norm.weight",
        Role::PostFeedforwardNorm => "post_ffw_norm.weight",
        Role::QkvFused => "attn_qkv.weight",
        Role::GateUpFused => "ffn_up.weight",
    }
}

pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
pub const OUTPUT: &str = "output.weight";
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// llama.cpp's row permutation of a Q or K weight (`rows x cols`, row-major) with `heads`
/// heads: within each head, row `2j + h` of the result is row `h * half + j` of the input
/// (`half` = head_dim / 2), turning transformers' rotary halves into interleaved pairs.
pub fn permute_rows(values: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let cols = values.len() / rows.max(1);
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0f32; values.len()];
    for h in 0..heads {
        for j in 0..half {
            for s in 0..2 {
                let src = h * head_dim + s * half + j;
                let dst = h * head_dim + 2 * j + s;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Architectures hf-tailor reads whose GGUF export is not written yet (`hf-tailor gguf`
    /// refuses them with a clear message); a new family goes here or gets a table above.
    const NO_GGUF_TABLE_YET: &[&str] = &["qwen3", "gemma2", "gemma3_text", "phi3"];

    #[test]
    fn every_architecture_hf_tailor_reads_has_a_gguf_table_or_is_listed() {
        for a in crate::arch::ARCHITECTURES {
            assert!(
                GgufArch::for_model_type(a.model_type).is_some() || NO_GGUF_TABLE_YET.contains(&a.model_type),
                "{} has no GGUF table: add one, or list it in NO_GGUF_TABLE_YET",
                a.model_type
            );
        }
    }

    #[test]
    fn permutation_interleaves_the_halves_of_each_head() {
        // 2 heads of dim 4, one column: rows [0 1 2 3 | 4 5 6 7] -> [0 2 1 3 | 4 6 5 7].
        let v: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(permute_rows(&v, 8, 2), vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    }
}
