//! The decoder forward pass of the Llama family (Llama, Mistral, Qwen2 with q/k/v biases,
//! Qwen3 and Gemma 3 with per-head q/k norms, Gemma 2/3 with sandwich norms, soft-capping
//! and alternating sliding/full layers), written over candle tensors so that any stitched
//! set of layers can run without a model object: RMSNorm, rotary embeddings (default,
//! linear, llama3; a local base for sliding layers), grouped-query attention with a causal +
//! padding (+ window) mask, gated MLP. Mirrors transformers' `modeling_llama`; what sets a
//! family apart is data ([`crate::arch::Flavor`], the config), read here in named branches.

use candle_core::{DType, Device, Tensor, D};

use super::weights::{HeadWeights, LayerWeights};
use super::EvalError;
use crate::arch::Activation;
use crate::config::{AttentionKind, ModelConfig, RopeScaling};

type CResult<T> = candle_core::Result<T>;

/// The shape facts the forward pass needs, from the base's config.
#[derive(Debug, Clone)]
pub struct Dims {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub eps: f32,
    /// Multiplies attention scores: `1/sqrt(query_pre_attn_scalar or head_dim)`.
    pub attn_scale: f64,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// Multiplies the embeddings (Gemma: `sqrt(hidden)`).
    pub embed_scale: Option<f64>,
    pub activation: Activation,
    /// Gemma's norms around the attention output and the MLP (see [`crate::arch::Flavor`]).
    pub sandwich_norms: bool,
}

impl Dims {
    pub fn from_config(c: &ModelConfig) -> Self {
        Self {
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            intermediate: c.intermediate_size,
            eps: c.rms_norm_eps as f32,
            attn_scale: 1.0 / c.query_pre_attn_scalar.unwrap_or(c.head_dim as f64).sqrt(),
            attn_softcap: c.attn_logit_softcapping,
            final_softcap: c.final_logit_softcapping,
            embed_scale: c.arch.flavor.embed_scale.then(|| (c.hidden_size as f64).sqrt()),
            activation: c.arch.flavor.activation,
            sandwich_norms: c.arch.flavor.sandwich_norms,
        }
    }
}

/// The positional rules of attention: rotary inverse frequencies, computed in f32 exactly
/// as transformers does, and the sliding attention window if some layer uses one.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// Inverse frequencies of sliding layers when their base differs (Gemma 3's local base).
    local_inv_freq: Option<Vec<f32>>,
    /// Query i sees key j only when `i - j < window` (transformers' sliding-window mask), on
    /// sliding layers; `None` when no layer slides.
    window: Option<usize>,
    /// LongRoPE (Phi-3): the long-context frequencies, used when a batch is longer than
    /// `original_max_position_embeddings` (the other frequencies are the short ones).
    long: Option<(Vec<f32>, usize)>,
    /// Multiplies cos and sin (LongRoPE's attention factor; 1 otherwise).
    attention_factor: f32,
}

impl Rope {
    pub fn from_config(c: &ModelConfig) -> Result<Self, EvalError> {
        let dim = c.head_dim;
        let plain = |base: f32| -> Vec<f32> { (0..dim).step_by(2).map(|i| 1.0f32 / base.powf(i as f32 / dim as f32)).collect() };
        let mut inv_freq = plain(c.rope_theta as f32);
        let (mut long, mut attention_factor) = (None, 1.0f32);
        match &c.rope_scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) => inv_freq.iter_mut().for_each(|f| *f /= *factor as f32),
            Some(RopeScaling::Llama3 { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: old_len }) => {
                let (factor, low, high, old_len) = (*factor as f32, *low as f32, *high as f32, *old_len as f32);
                let (low_wavelen, high_wavelen) = (old_len / low, old_len / high);
                for f in inv_freq.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    let scaled = if wavelen > low_wavelen { *f / factor } else { *f };
                    let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                    *f = if medium {
                        let smooth = (old_len / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
            Some(RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings: original,
                factor,
                attention_factor: attention,
            }) => {
                let original = *original;
                let scaled = |ext: &[f64]| -> Vec<f32> { plain(c.rope_theta as f32).iter().zip(ext).map(|(f, e)| f / *e as f32).collect() };
                inv_freq = scaled(short_factor);
                long = Some((scaled(long_factor), original));
                let factor = factor.unwrap_or(c.max_position_embeddings as f64 / original as f64);
                attention_factor = match attention {
                    Some(a) => *a as f32,
                    None if factor <= 1.0 => 1.0,
                    None => (1.0 + factor.ln() / (original as f64).ln()).sqrt() as f32,
                };
            }
        }
        let sliding = c.layer_attention.contains(&AttentionKind::Sliding);
        let local_inv_freq = c.rope_local_theta.filter(|_| sliding).map(|base| plain(base as f32));
        Ok(Self { inv_freq, local_inv_freq, window: c.sliding_window.filter(|_| sliding), long, attention_factor })
    }

    /// cos and sin tables for positions `0..len`: (len, head_dim / 2) each.
    pub fn tables(&self, len: usize, device: &Device, dtype: DType) -> CResult<(Tensor, Tensor)> {
        // transformers switches LongRoPE to the long factors once a sequence passes the original length.
        let freq = match &self.long {
            Some((long, original)) if len > *original => long,
            _ => &self.inv_freq,
        };
        self.tables_of(freq, len, device, dtype)
    }

    fn tables_of(&self, inv_freq: &[f32], len: usize, device: &Device, dtype: DType) -> CResult<(Tensor, Tensor)> {
        let half = inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in 0..len {
            for f in inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos() * self.attention_factor);
                sin.push(a.sin() * self.attention_factor);
            }
        }
        let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

/// How one row of a batch is laid out: `context` tokens, then `branches` that each continue
/// the context on their own (a packed multiple-choice item: every continuation sees the
/// context and itself, never another continuation, and its positions restart right after
/// the context). A plain sequence is a context without branches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowLayout {
    pub context: usize,
    pub branches: Vec<usize>,
}

impl RowLayout {
    pub fn plain(len: usize) -> Self {
        Self { context: len, branches: Vec::new() }
    }

    /// Real tokens in the row.
    pub fn len(&self) -> usize {
        self.context + self.branches.iter().sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (segment, position id) of every real token: segment 0 is the context, k the k-th branch.
    fn tokens(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let ctx = (0..self.context).map(|p| (0, p));
        let branches = self.branches.iter().enumerate().flat_map(move |(k, &n)| (0..n).map(move |q| (k + 1, self.context + q)));
        ctx.chain(branches)
    }
}

/// Everything about a padded batch the layers share: rope tables and the additive mask.
pub struct BatchContext {
    pub batch: usize,
    pub len: usize,
    /// (len, head_dim / 2) when every row has positions 0..len, else (batch, len, head_dim / 2).
    cos: Tensor,
    sin: Tensor,
    /// Sliding layers' tables when their rotary base differs.
    local: Option<(Tensor, Tensor)>,
    /// (batch, 1, 1, len, len): 0 where query i may see key j (see [`BatchContext::packed`]),
    /// -inf elsewhere.
    mask: Tensor,
    /// The same with the sliding window applied, when some layer slides.
    sliding_mask: Option<Tensor>,
}

impl BatchContext {
    /// `lengths[b]` real tokens at the start of row b (right padding). Every length must be >= 1
    /// so that every query row sees at least one key.
    pub fn new(lengths: &[usize], len: usize, rope: &Rope, device: &Device, dtype: DType) -> CResult<Self> {
        let rows: Vec<RowLayout> = lengths.iter().map(|&n| RowLayout::plain(n)).collect();
        Self::packed(&rows, len, rope, device, dtype)
    }

    /// Rows laid out as `rows` say, right-padded to `len`. Query i sees key j when j <= i,
    /// j is not padding, and j is in the context or in i's own branch; padding queries see
    /// the context (their output is never read). Every row needs a context of >= 1 token.
    pub fn packed(rows: &[RowLayout], len: usize, rope: &Rope, device: &Device, dtype: DType) -> CResult<Self> {
        const PAD: usize = usize::MAX;
        let plain = rows.iter().all(|r| r.branches.iter().all(|&n| n == 0));
        let mut m = vec![0f32; rows.len() * len * len];
        let mut windowed = rope.window.map(|_| vec![0f32; rows.len() * len * len]);
        let mut positions = Vec::with_capacity(if plain { 0 } else { rows.len() * len });
        let mut segment = vec![PAD; len];
        let mut pos_of: Vec<usize> = (0..len).collect();
        for (b, row) in rows.iter().enumerate() {
            segment.iter_mut().for_each(|s| *s = PAD);
            pos_of.iter_mut().enumerate().for_each(|(i, p)| *p = i);
            let mut n = 0;
            for (i, (seg, pos)) in row.tokens().enumerate().take(len) {
                segment[i] = seg;
                pos_of[i] = pos;
                if !plain {
                    positions.push(pos as u32);
                }
                n = i + 1;
            }
            if !plain {
                positions.extend((n..len).map(|p| p as u32));
            }
            for i in 0..len {
                let own = segment[i];
                for j in 0..len {
                    // Padding queries keep the context: one that saw no key would turn its
                    // row into NaN, and NaN times a zero weight is still NaN. The sliding
                    // window counts positions, which restart after the context in a branch.
                    let visible = j <= i && segment[j] != PAD && (segment[j] == 0 || segment[j] == own);
                    let at = (b * len + i) * len + j;
                    if !visible {
                        m[at] = f32::NEG_INFINITY;
                    }
                    if let (Some(w), Some(wm)) = (rope.window, windowed.as_mut()) {
                        let in_window = own == PAD || pos_of[i].saturating_sub(pos_of[j]) < w;
                        if !(visible && in_window) {
                            wm[at] = f32::NEG_INFINITY;
                        }
                    }
                }
            }
        }
        let gather = |(cos, sin): (Tensor, Tensor)| -> CResult<(Tensor, Tensor)> {
            if plain {
                return Ok((cos, sin));
            }
            let idx = Tensor::from_vec(positions.clone(), rows.len() * len, device)?;
            let half = cos.dim(1)?;
            let pick = |t: &Tensor| t.index_select(&idx, 0)?.reshape((rows.len(), len, half))?.contiguous();
            Ok((pick(&cos)?, pick(&sin)?))
        };
        let (cos, sin) = gather(rope.tables(len, device, dtype)?)?;
        let local = match &rope.local_inv_freq {
            Some(f) => Some(gather(rope.tables_of(f, len, device, dtype)?)?),
            None => None,
        };
        let as_mask = |m: Vec<f32>| Tensor::from_vec(m, (rows.len(), 1, 1, len, len), device)?.to_dtype(dtype);
        let mask = as_mask(m)?;
        let sliding_mask = windowed.map(as_mask).transpose()?;
        Ok(Self { batch: rows.len(), len, cos, sin, local, mask, sliding_mask })
    }
}

fn linear(x: &Tensor, w: &Tensor) -> CResult<Tensor> {
    x.matmul(&w.t()?)
}

/// `cap * tanh(x / cap)`: Gemma 2's soft-capping of attention scores and final logits.
fn softcap(x: Tensor, cap: Option<f64>) -> CResult<Tensor> {
    match cap {
        Some(c) => (x / c)?.tanh()? * c,
        None => Ok(x),
    }
}

/// One decoder layer on hidden states (batch, len, hidden).
pub fn layer_forward(w: &LayerWeights, x: &Tensor, ctx: &BatchContext, d: &Dims) -> CResult<Tensor> {
    Ok(layer_forward_parts(w, x, ctx, d)?.0)
}

/// One decoder layer, returning its output and, separately, its MLP branch's output (what
/// joins the residual stream after the last norm of the branch), both (batch, len, hidden):
/// the heal fits a map on the latter.
pub fn layer_forward_parts(w: &LayerWeights, x: &Tensor, ctx: &BatchContext, d: &Dims) -> CResult<(Tensor, Tensor)> {
    let (b, t) = (ctx.batch, ctx.len);
    let (nh, nkv, hd) = (d.heads, d.kv_heads, d.head_dim);
    let rep = nh / nkv;
    let x2 = x.reshape((b * t, d.hidden))?;
    let sliding = w.attention == AttentionKind::Sliding;
    let (cos, sin) = match (&ctx.local, sliding) {
        (Some((c, s)), true) => (c, s),
        _ => (&ctx.cos, &ctx.sin),
    };
    let mask = match (&ctx.sliding_mask, sliding) {
        (Some(m), true) => m,
        _ => &ctx.mask,
    };

    // Attention block.
    let xn = candle_nn::ops::rms_norm(&x2, &w.input_norm, d.eps)?;
    let mut qkv = linear(&xn, &w.qkv)?;
    if let Some(bias) = &w.qkv_bias {
        qkv = qkv.broadcast_add(bias)?;
    }
    // (b, t, n, hd) per head; the per-head q/k norms (Qwen3, Gemma 3) act on the last axis.
    let heads = |start: usize, n: usize, norm: Option<&Tensor>| -> CResult<Tensor> {
        let h = qkv.narrow(1, start * hd, n * hd)?.reshape((b, t, n, hd))?;
        let h = match norm {
            Some(g) => candle_nn::ops::rms_norm(&h.contiguous()?, g, d.eps)?,
            None => h,
        };
        h.transpose(1, 2)?.contiguous()
    };
    let q = candle_nn::rotary_emb::rope(&heads(0, nh, w.q_norm.as_ref())?, cos, sin)?;
    let k = candle_nn::rotary_emb::rope(&heads(nh, nkv, w.k_norm.as_ref())?, cos, sin)?;
    let v = heads(nh + nkv, nkv, None)?;
    // Grouped-query attention without copying k/v: the `rep` query heads of a kv group are
    // adjacent, so (b, nh, t, hd) is (b, nkv, rep * t, hd).
    let q = (q * d.attn_scale)?.reshape((b, nkv, rep * t, hd))?;
    let scores = softcap(q.matmul(&k.t()?)?, d.attn_softcap)?.reshape((b, nkv, rep, t, t))?.broadcast_add(mask)?;
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.reshape((b, nkv, rep * t, t))?;
    let attn = probs.matmul(&v)?.reshape((b, nh, t, hd))?.transpose(1, 2)?.reshape((b * t, nh * hd))?;
    let attn = linear(&attn, &w.o)?;

    // MLP block. Llama: post_attention_layernorm is the MLP's input norm. Gemma: it
    // normalises the attention output, and the MLP has its own pre and post norms.
    let (h, hn) = if d.sandwich_norms {
        let h = (x2 + candle_nn::ops::rms_norm(&attn, &w.post_norm, d.eps)?)?;
        let pre = w.pre_ff_norm.as_ref().expect("a sandwich-norm layer has a pre-feedforward norm");
        let hn = candle_nn::ops::rms_norm(&h, pre, d.eps)?;
        (h, hn)
    } else {
        let h = (x2 + attn)?;
        let hn = candle_nn::ops::rms_norm(&h, &w.post_norm, d.eps)?;
        (h, hn)
    };
    let gu = linear(&hn, &w.gate_up)?;
    let i = d.intermediate;
    let gate = gu.narrow(1, 0, i)?;
    let gate = match d.activation {
        Activation::Silu => gate.silu()?,
        Activation::GeluTanh => gate.gelu()?,
    };
    let mut mlp = linear(&(gate * gu.narrow(1, i, i)?)?, &w.down)?;
    if let Some(post) = &w.post_ff_norm {
        mlp = candle_nn::ops::rms_norm(&mlp, post, d.eps)?;
    }
    let out = (h + &mlp)?;
    Ok((out.reshape((b, t, d.hidden))?, mlp.reshape((b, t, d.hidden))?))
}

/// Token embeddings: (batch, len) ids -> (batch, len, hidden), scaled where the family scales them.
pub fn embed(table: &Tensor, ids: &Tensor, d: &Dims) -> CResult<Tensor> {
    let (b, t) = ids.dims2()?;
    let flat = ids.flatten_all()?;
    let e = table.index_select(&flat, 0)?.reshape((b, t, table.dim(1)?))?;
    match d.embed_scale {
        // transformers rounds the factor to the compute dtype first.
        Some(s) => {
            let s = Tensor::new(s as f32, e.device())?.to_dtype(e.dtype())?;
            e.broadcast_mul(&s)
        }
        None => Ok(e),
    }
}

/// Log-probabilities (f32) over the vocabulary at the flat positions `rows` (index into the
/// batch-major `batch * len` positions) of hidden states (batch, len, hidden).
pub fn head_log_probs(head: &HeadWeights, hidden: &Tensor, rows: &[u32], d: &Dims) -> CResult<Tensor> {
    let logits = head_logits(head, hidden, rows, d)?;
    candle_nn::ops::log_softmax(&logits, D::Minus1)
}

/// Logits (f32) at the flat positions `rows`: only the rows a score needs go through lm_head.
pub fn head_logits(head: &HeadWeights, hidden: &Tensor, rows: &[u32], d: &Dims) -> CResult<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    let idx = Tensor::from_slice(rows, rows.len(), hidden.device())?;
    let x = hidden.reshape((b * t, h))?.index_select(&idx, 0)?;
    let x = candle_nn::ops::rms_norm(&x, &head.norm, d.eps)?;
    softcap(linear(&x, &head.lm_head)?.to_dtype(DType::F32)?, d.final_softcap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// LongRoPE as transformers computes it: short factors up to the original length, long
    /// ones past it, cos/sin scaled by sqrt(1 + ln(factor) / ln(original)).
    #[test]
    fn longrope_switches_factors_past_the_original_length_and_scales_cos_sin() {
        let raw = json!({"model_type": "phi3", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "vocab_size": 10, "max_position_embeddings": 64, "rope_theta": 100.0,
            "rope_scaling": {"type": "longrope", "original_max_position_embeddings": 16, "short_factor": [1.0, 2.0], "long_factor": [3.0, 4.0]}});
        let c = ModelConfig::from_value(raw, "c").unwrap();
        let rope = Rope::from_config(&c).unwrap();
        let scale = (1.0 + 4f64.ln() / 16f64.ln()).sqrt() as f32;
        assert!((rope.attention_factor - scale).abs() < 1e-7);
        let (cos, _) = rope.tables(17, &Device::Cpu, DType::F32).unwrap();
        let at = |t: &Tensor, p: usize, i: usize| t.to_vec2::<f32>().unwrap()[p][i];
        assert!((at(&cos, 1, 1) - (0.1f32 / 4.0).cos() * scale).abs() < 1e-6);
        let (cos, _) = rope.tables(16, &Device::Cpu, DType::F32).unwrap();
        assert!((at(&cos, 1, 1) - (0.1f32 / 2.0).cos() * scale).abs() < 1e-6);
    }
}
