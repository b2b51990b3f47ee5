//! Architecture knowledge as data: one table per `model_type`.
//!
//! The reader, the forward pass, the writer and the config syncer all consult these
//! tables instead of formatting tensor names themselves, so adding a family means adding
//! a table, not touching code paths. What llama.cpp calls a family (the GGUF writer's facts)
//! is part of its table too ([`gguf`]).

mod gguf;

pub use gguf::{ExtraKey, GgufArch, Head, HeadWidth, RopeStyle, SpacePrefix};

/// What a per-layer tensor is for; the forward pass looks tensors up by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    Gate,
    Up,
    Down,
    InputNorm,
    PostAttentionNorm,
    /// Per-head RMSNorm of the queries / keys before rotary (Qwen3, Gemma 3): one weight of `head_dim`.
    QNorm,
    KNorm,
    /// Sandwich norms around the MLP (Gemma 2/3): the MLP input norm and the norm of its output.
    PreFeedforwardNorm,
    PostFeedforwardNorm,
    /// `[q; k; v]` rows in one tensor (Phi-3's `qkv_proj`).
    QkvFused,
    /// `[gate; up]` rows in one tensor (Phi-3's `gate_up_proj`).
    GateUpFused,
}

impl Role {
    /// A norm's weight (scaled by `1 + w` under a `norm_plus_one` flavour).
    pub fn is_norm(self) -> bool {
        matches!(self, Role::InputNorm | Role::PostAttentionNorm | Role::QNorm | Role::KNorm | Role::PreFeedforwardNorm | Role::PostFeedforwardNorm)
    }
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`).
    GeluTanh,
}

/// The numerical conventions that set a family's forward pass apart, as data; the forward
/// pass branches on these flags, never on the `model_type`.
#[derive(Debug, Clone, Copy)]
pub struct Flavor {
    /// RMSNorm scales by `(1 + w)` instead of `w` (Gemma).
    pub norm_plus_one: bool,
    /// Embeddings are multiplied by `sqrt(hidden_size)` (Gemma).
    pub embed_scale: bool,
    pub activation: Activation,
    /// The attention output is normalised (`post_attention_layernorm`) before the residual
    /// add, and the MLP has its own pre/post norms (Gemma 2/3), instead of
    /// `post_attention_layernorm` being the MLP's input norm (Llama).
    pub sandwich_norms: bool,
    /// Config flag that must be true for `sliding_window` to apply (Qwen2/3 `use_sliding_window`);
    /// `None`: a numeric `sliding_window` alone turns it on.
    pub window_switch: Option<&'static str>,
    /// Sliding and full layers are told apart by `layer_types` (or the legacy
    /// `sliding_window_pattern`), and each kind may have its own rotary base (Gemma 2/3).
    pub per_layer_attention: bool,
    /// The MLP's output (down_proj) joins the residual stream as it is, so a linear map on
    /// it fuses exactly into down_proj (the heal, [`crate::heal`]); false where a norm sits
    /// on the MLP branch (Gemma's post-feedforward norm).
    pub mlp_joins_residual: bool,
}

const LLAMA_FLAVOR: Flavor = Flavor {
    norm_plus_one: false,
    embed_scale: false,
    activation: Activation::Silu,
    sandwich_norms: false,
    window_switch: None,
    per_layer_attention: false,
    mlp_joins_residual: true,
};

/// One tensor inside a decoder layer, named relative to the layer prefix.
#[derive(Debug, Clone, Copy)]
pub struct LayerTensor {
    pub suffix: &'static str,
    pub role: Role,
}

/// How a per-layer config field must change when layers are removed or reordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerLayerField {
    /// A list with one entry per layer (e.g. `layer_types`): keep the entries of the kept source layers.
    List(&'static str),
    /// A count of leading layers with some property (e.g. Qwen2 `max_window_layers`): clamp to the new depth
    /// after counting how many kept source layers were below it.
    LeadingCount(&'static str),
}

/// The tensor names and config conventions of one architecture family.
#[derive(Debug)]
pub struct Arch {
    pub model_type: &'static str,
    /// `architectures` written to config.json when the base does not name one.
    pub default_architecture: &'static str,
    pub embed: &'static str,
    pub final_norm: &'static str,
    pub lm_head: &'static str,
    /// Prefix of layer `i`'s tensors, with `{i}` standing for the index.
    pub layer_prefix: &'static str,
    pub layer_tensors: &'static [LayerTensor],
    pub per_layer_fields: &'static [PerLayerField],
    pub flavor: Flavor,
    /// How llama.cpp names and runs this family (the GGUF writer's facts).
    pub gguf: &'static GgufArch,
}

/// `LayerTensor { suffix, role }`, short enough for the tables below.
const fn t(suffix: &'static str, role: Role) -> LayerTensor {
    LayerTensor { suffix, role }
}

/// The groups the layer tables are made of; a table lists its tensors in group order.
const ATTENTION: &[LayerTensor] = &[
    t("self_attn.q_proj.weight", Role::Q),
    t("self_attn.k_proj.weight", Role::K),
    t("self_attn.v_proj.weight", Role::V),
    t("self_attn.o_proj.weight", Role::O),
];
/// Qwen2's attention: each of q, k and v with its bias right after it.
const ATTENTION_WITH_BIAS: &[LayerTensor] = &[
    t("self_attn.q_proj.weight", Role::Q),
    t("self_attn.q_proj.bias", Role::QBias),
    t("self_attn.k_proj.weight", Role::K),
    t("self_attn.k_proj.bias", Role::KBias),
    t("self_attn.v_proj.weight", Role::V),
    t("self_attn.v_proj.bias", Role::VBias),
    t("self_attn.o_proj.weight", Role::O),
];
const QK_NORM: &[LayerTensor] = &[t("self_attn.q_norm.weight", Role::QNorm), t("self_attn.k_norm.weight", Role::KNorm)];
const MLP: &[LayerTensor] = &[t("mlp.gate_proj.weight", Role::Gate), t("mlp.up_proj.weight", Role::Up), t("mlp.down_proj.weight", Role::Down)];
const NORMS: &[LayerTensor] = &[t("input_layernorm.weight", Role::InputNorm), t("post_attention_layernorm.weight", Role::PostAttentionNorm)];
const SANDWICH_NORMS: &[LayerTensor] =
    &[t("pre_feedforward_layernorm.weight", Role::PreFeedforwardNorm), t("post_feedforward_layernorm.weight", Role::PostFeedforwardNorm)];

/// How many tensors `groups` hold together.
const fn total(groups: &[&[LayerTensor]]) -> usize {
    let (mut n, mut g) = (0, 0);
    while g < groups.len() {
        n += groups[g].len();
        g += 1;
    }
    n
}

/// `groups` one after the other (`N` is their [`total`]).
const fn concat<const N: usize>(groups: &[&[LayerTensor]]) -> [LayerTensor; N] {
    assert!(total(groups) == N);
    let mut out = [t("", Role::Q); N];
    let (mut i, mut g) = (0, 0);
    while g < groups.len() {
        let mut k = 0;
        while k < groups[g].len() {
            out[i] = groups[g][k];
            i += 1;
            k += 1;
        }
        g += 1;
    }
    out
}

/// A layer table made of the groups given, in order.
macro_rules! layer {
    ($($group:expr),+) => {{
        const GROUPS: &[&[LayerTensor]] = &[$($group),+];
        const TABLE: [LayerTensor; total(GROUPS)] = concat(GROUPS);
        &TABLE
    }};
}

const LLAMA_LAYER: &[LayerTensor] = layer!(ATTENTION, MLP, NORMS);
const QWEN2_LAYER: &[LayerTensor] = layer!(ATTENTION_WITH_BIAS, MLP, NORMS);
const QWEN3_LAYER: &[LayerTensor] = layer!(ATTENTION, QK_NORM, MLP, NORMS);
const GEMMA2_LAYER: &[LayerTensor] = layer!(ATTENTION, MLP, NORMS, SANDWICH_NORMS);
const GEMMA3_LAYER: &[LayerTensor] = layer!(ATTENTION, QK_NORM, MLP, NORMS, SANDWICH_NORMS);
const PHI3_LAYER: &[LayerTensor] = layer!(
    &[t("self_attn.qkv_proj.weight", Role::QkvFused), t("self_attn.o_proj.weight", Role::O)],
    &[t("mlp.gate_up_proj.weight", Role::GateUpFused), t("mlp.down_proj.weight", Role::Down)],
    NORMS
);

const GEMMA_FLAVOR: Flavor = Flavor {
    norm_plus_one: true,
    embed_scale: true,
    activation: Activation::GeluTanh,
    sandwich_norms: true,
    window_switch: None,
    per_layer_attention: true,
    mlp_joins_residual: false,
};

/// Qwen2/3: a numeric `sliding_window` applies only with `use_sliding_window`, and
/// `max_window_layers` counts leading layers.
const QWEN_FLAVOR: Flavor = Flavor { window_switch: Some("use_sliding_window"), ..LLAMA_FLAVOR };
const QWEN_FIELDS: &[PerLayerField] = &[PerLayerField::List("layer_types"), PerLayerField::LeadingCount("max_window_layers")];

/// A family laid out as Llama is (`model.embed_tokens`, `model.layers.{i}.`, `model.norm`,
/// `lm_head`, Llama's numerics) with its own layer tensors; a family states what differs.
const fn llama_like(
    model_type: &'static str,
    default_architecture: &'static str,
    layer_tensors: &'static [LayerTensor],
    gguf: &'static GgufArch,
) -> Arch {
    Arch {
        model_type,
        default_architecture,
        embed: "model.embed_tokens.weight",
        final_norm: "model.norm.weight",
        lm_head: "lm_head.weight",
        layer_prefix: "model.layers.{i}.",
        layer_tensors,
        per_layer_fields: &[PerLayerField::List("layer_types")],
        flavor: LLAMA_FLAVOR,
        gguf,
    }
}

pub static LLAMA: Arch = llama_like("llama", "LlamaForCausalLM", LLAMA_LAYER, &gguf::LLAMA);
pub static MISTRAL: Arch = llama_like("mistral", "MistralForCausalLM", LLAMA_LAYER, &gguf::LLAMA);
pub static QWEN2: Arch =
    Arch { per_layer_fields: QWEN_FIELDS, flavor: QWEN_FLAVOR, ..llama_like("qwen2", "Qwen2ForCausalLM", QWEN2_LAYER, &gguf::QWEN2) };
pub static QWEN3: Arch =
    Arch { per_layer_fields: QWEN_FIELDS, flavor: QWEN_FLAVOR, ..llama_like("qwen3", "Qwen3ForCausalLM", QWEN3_LAYER, &gguf::QWEN3) };
pub static GEMMA2: Arch = Arch { flavor: GEMMA_FLAVOR, ..llama_like("gemma2", "Gemma2ForCausalLM", GEMMA2_LAYER, &gguf::GEMMA2) };
pub static GEMMA3_TEXT: Arch = Arch { flavor: GEMMA_FLAVOR, ..llama_like("gemma3_text", "Gemma3ForCausalLM", GEMMA3_LAYER, &gguf::GEMMA3) };
pub static PHI3: Arch = llama_like("phi3", "Phi3ForCausalLM", PHI3_LAYER, &gguf::PHI3);

/// Every architecture hf-tailor knows, looked up by `model_type`.
pub static ARCHITECTURES: &[&Arch] = &[&LLAMA, &MISTRAL, &QWEN2, &QWEN3, &GEMMA2, &GEMMA3_TEXT, &PHI3];

/// `model_type`s of mixture-of-experts families: refused with their own message (a layer of
/// experts and a router is not a dense decoder layer, and stitching experts is another method).
pub static MIXTURE_OF_EXPERTS: &[&str] =
    &["qwen3_moe", "qwen2_moe", "mixtral", "deepseek_v2", "deepseek_v3", "olmoe", "phimoe", "granitemoe", "dbrx"];

/// The supported `model_type`s, for messages: "llama, mistral, qwen2".
pub fn supported_list() -> String {
    ARCHITECTURES.iter().map(|a| a.model_type).collect::<Vec<_>>().join(", ")
}

impl Arch {
    /// The table for a config's `model_type`, if supported.
    pub fn for_model_type(model_type: &str) -> Option<&'static Arch> {
        ARCHITECTURES.iter().copied().find(|a| a.model_type == model_type)
    }

    /// Full name of a per-layer tensor.
    pub fn layer_tensor_name(&self, layer: usize, suffix: &str) -> String {
        format!("{}{}", self.layer_prefix.replace("{i}", &layer.to_string()), suffix)
    }

    /// Full names of every tensor of layer `layer`, in table order.
    pub fn layer_tensor_names(&self, layer: usize) -> Vec<String> {
        self.layer_tensors.iter().map(|t| self.layer_tensor_name(layer, t.suffix)).collect()
    }

    /// The suffix for a role, if this architecture has it.
    pub fn suffix(&self, role: Role) -> Option<&'static str> {
        self.layer_tensors.iter().find(|t| t.role == role).map(|t| t.suffix)
    }

    /// If `name` is a layer tensor, its (layer index, suffix).
    pub fn parse_layer_tensor<'a>(&self, name: &'a str) -> Option<(usize, &'a str)> {
        let (head, _) = self.layer_prefix.split_once("{i}")?;
        let rest = name.strip_prefix(head)?;
        let (idx, suffix) = rest.split_once('.')?;
        Some((idx.parse().ok()?, suffix))
    }

    /// Names of the tensors outside the layers; `lm_head` only when embeddings are untied.
    pub fn global_tensor_names(&self, tied: bool) -> Vec<&'static str> {
        let mut v = vec![self.embed, self.final_norm];
        if !tied {
            v.push(self.lm_head);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_names_come_with_the_family() {
        assert_eq!(GEMMA2.gguf.tensor_name(Role::PostAttentionNorm), "post_attention_norm.weight");
        assert_eq!(LLAMA.gguf.tensor_name(Role::PostAttentionNorm), "ffn_norm.weight");
        assert_eq!((MISTRAL.gguf.name, PHI3.gguf.rope), ("llama", RopeStyle::LongRope));
    }

    #[test]
    fn parses_and_formats_layer_names() {
        let n = LLAMA.layer_tensor_name(12, "mlp.up_proj.weight");
        assert_eq!(n, "model.layers.12.mlp.up_proj.weight");
        assert_eq!(LLAMA.parse_layer_tensor(&n), Some((12, "mlp.up_proj.weight")));
        assert_eq!(LLAMA.parse_layer_tensor("model.norm.weight"), None);
        assert_eq!(QWEN2.layer_tensor_names(0).len(), 12);
        assert!(Arch::for_model_type("gpt2").is_none());
    }
}
