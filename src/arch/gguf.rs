//! What llama.cpp calls each architecture, as data beside the architecture's own table
//! ([`super::Arch::gguf`]): the GGUF architecture name (which prefixes the hyperparameter
//! keys), the tensor names per [`Role`], whether Q and K rows are permuted, and the
//! architecture-specific keys llama.cpp's converter writes. The GGUF writer reads it; a new
//! family adds its conventions here with its layout in `arch.rs`.

use super::Role;

/// Optional hyperparameter keys, written when a table lists them (as llama.cpp's converter
/// writes them only for some architectures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraKey {
    /// `{arch}.vocab_size`.
    VocabSize,
    /// `{arch}.rope.dimension_count` (the head dimension: rotary on the whole head).
    RopeDimensionCount,
    /// `{arch}.attention.sliding_window`, when the model has a window.
    SlidingWindow,
    /// `{arch}.attention.sliding_window`, 0 when the model has none (Phi-3's converter tells
    /// Phi-4, which has none, from Phi-3 by the 0).
    SlidingWindowOrZero,
    /// `{arch}.attention.sliding_window_pattern`: one bool per layer, true for sliding ones.
    /// The converter writes none, and llama.cpp then assumes Gemma's fixed alternation (every
    /// 2nd / 6th layer full), which the kept layers of a tailored model need not follow.
    SlidingWindowPattern,
    /// `{arch}.attn_logit_softcapping` and `{arch}.final_logit_softcapping`, when config.json sets them.
    Softcapping,
    /// `{arch}.rope.scaling.original_context_length` even without rope scaling (Phi-3).
    OriginalContextLength,
}

/// When `{arch}.attention.key_length` and `value_length` are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadWidth {
    /// Always (the converter reads transformers' config, which has a `head_dim` for these
    /// architectures even when config.json does not state it).
    Always,
    /// When config.json states `head_dim`.
    WhenStated,
    /// Never (Phi-3's converter writes its own keys, without these).
    Never,
}

/// What becomes of the checkpoint's `lm_head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// `output.weight` when the embeddings are untied (llama.cpp reads `token_embd` when it is absent).
    OutputWhenUntied,
    /// llama.cpp's graph always computes logits with `token_embd` (Gemma 2): an untied head is refused.
    TiedOnly,
}

/// Whether `tokenizer.ggml.add_space_prefix` is written for a SentencePiece-style tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpacePrefix {
    /// Not written.
    Omit,
    /// From `tokenizer_config.json`'s `add_prefix_space`, when it says (llama.cpp's `llama`).
    FromTokenizerConfig,
    /// Always false (Gemma's converters: its tokenizer prepends no space).
    Never,
}

/// How a model's rope scaling is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// `{arch}.rope.scaling.*` keys (linear, yarn), and for llama.cpp's Llama graph, Llama 3's
    /// `rope_freqs` tensor.
    Keys,
    /// Phi-3's LongRoPE: `rope_factors_long` / `rope_factors_short` tensors and an attention factor.
    LongRope,
}

/// One architecture's GGUF conventions.
#[derive(Debug)]
pub struct GgufArch {
    /// `general.architecture`: llama.cpp's name, the prefix of its hyperparameter keys.
    pub name: &'static str,
    /// llama.cpp's Llama graph applies rotary embeddings to interleaved pairs (GPT-J style),
    /// transformers' to the two halves of each head: the converter permutes the rows of Q
    /// and K so the two agree. The others use llama.cpp's NeoX rope and keep rows as they are.
    pub permute_qk: bool,
    pub extra_keys: &'static [ExtraKey],
    pub head_width: HeadWidth,
    /// llama.cpp's per-layer names where they differ from [`layer_tensor_name`]'s.
    pub renamed: &'static [(Role, &'static str)],
    pub head: Head,
    pub space_prefix: SpacePrefix,
    pub rope: RopeStyle,
    /// The embedding keeps only the rows of tokens the tokenizer has (Gemma 3's converter
    /// drops the padding rows; llama.cpp's vocabulary is then the tokenizer's).
    pub trim_embedding: bool,
    /// llama.cpp's graph takes the head width as `hidden_size / heads` (Phi-3): another
    /// `head_dim` is refused.
    pub head_dim_is_hidden_over_heads: bool,
    /// llama.cpp scales queries by `1/sqrt(head_dim)` (Gemma, except the 27B models it
    /// recognises by their layer count): a model whose `query_pre_attn_scalar` says otherwise
    /// is refused rather than written to run with the wrong scale.
    pub query_scale_is_head_dim: bool,
}

const BASE: GgufArch = GgufArch {
    name: "",
    permute_qk: false,
    extra_keys: &[],
    head_width: HeadWidth::WhenStated,
    renamed: &[],
    head: Head::OutputWhenUntied,
    space_prefix: SpacePrefix::Omit,
    rope: RopeStyle::Keys,
    trim_embedding: false,
    head_dim_is_hidden_over_heads: false,
    query_scale_is_head_dim: false,
};

/// Mistral is llama.cpp's `llama` architecture (its converter maps `MistralForCausalLM`
/// there); llama.cpp's Llama graph has no sliding window, which only matters for contexts
/// longer than the window.
pub static LLAMA: GgufArch = GgufArch {
    name: "llama",
    permute_qk: true,
    extra_keys: &[ExtraKey::VocabSize, ExtraKey::RopeDimensionCount],
    head_width: HeadWidth::Always,
    space_prefix: SpacePrefix::FromTokenizerConfig,
    ..BASE
};

pub static QWEN2: GgufArch = GgufArch { name: "qwen2", ..BASE };

/// Qwen 3: Qwen 2 without biases, with per-head q/k norms (`attn_q_norm`, `attn_k_norm`).
pub static QWEN3: GgufArch = GgufArch { name: "qwen3", head_width: HeadWidth::Always, ..BASE };

/// Gemma's sandwich norms: the attention output's norm is `post_attention_norm`, the MLP's
/// input norm `ffn_norm`, its output's `post_ffw_norm`. Gemma's `(1 + w)` norms are written as
/// `1 + w` (the flavour's `norm_plus_one`; llama.cpp's norm multiplies by the weight), and the
/// `sqrt(hidden)` embedding scale is llama.cpp's Gemma graph's own.
const GEMMA: GgufArch = GgufArch {
    extra_keys: &[ExtraKey::Softcapping, ExtraKey::SlidingWindow, ExtraKey::SlidingWindowPattern],
    head_width: HeadWidth::Always,
    renamed: &[(Role::PostAttentionNorm, "post_attention_norm.weight")],
    space_prefix: SpacePrefix::Never,
    query_scale_is_head_dim: true,
    ..BASE
};

pub static GEMMA2: GgufArch = GgufArch { name: "gemma2", head: Head::TiedOnly, ..GEMMA };

pub static GEMMA3: GgufArch = GgufArch { name: "gemma3", trim_embedding: true, ..GEMMA };

/// Phi-3 keeps its fused tensors: `attn_qkv` (q, k, v rows) and `ffn_up` (gate, up rows).
pub static PHI3: GgufArch = GgufArch {
    name: "phi3",
    extra_keys: &[ExtraKey::RopeDimensionCount, ExtraKey::SlidingWindowOrZero, ExtraKey::OriginalContextLength],
    head_width: HeadWidth::Never,
    rope: RopeStyle::LongRope,
    head_dim_is_hidden_over_heads: true,
    ..BASE
};

impl GgufArch {
    /// llama.cpp's name of a per-layer tensor of this architecture (after `blk.N.`).
    pub fn tensor_name(&self, role: Role) -> &'static str {
        self.renamed.iter().find(|(r, _)| *r == role).map(|(_, n)| *n).unwrap_or_else(|| layer_tensor_name(role))
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
        Role::QNorm => "attn_q_norm.weight",
        Role::KNorm => "attn_k_norm.weight",
        Role::PreFeedforwardNorm => "ffn_norm.weight",
        Role::PostFeedforwardNorm => "post_ffw_norm.weight",
        Role::QkvFused => "attn_qkv.weight",
        Role::GateUpFused => "ffn_up.weight",
    }
}
