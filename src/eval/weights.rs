//! Weights of candidate models as device tensors, built from recipe rules through
//! [`crate::stitch::stitch`] (so the evaluator sees exactly the values the writer writes),
//! computed once per (source layer, rule) and kept in a byte-bounded LRU.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::lru::{CacheStats, Lru};
use super::EvalError;
use crate::arch::Role;
use crate::checkpoint::Family;
use crate::recipe::Rule;
use crate::stitch::{stitch, Stitched};

/// One decoder layer, with q/k/v and gate/up fused so each projection is one matrix product.
#[derive(Debug)]
pub struct LayerWeights {
    /// `[q; k; v]` rows: (q_out + 2 kv_out, hidden).
    pub qkv: Tensor,
    pub qkv_bias: Option<Tensor>,
    pub o: Tensor,
    /// `[gate; up]` rows: (2 intermediate, hidden).
    pub gate_up: Tensor,
    pub down: Tensor,
    pub input_norm: Tensor,
    pub post_norm: Tensor,
}

/// Final norm and output projection.
#[derive(Debug)]
pub struct HeadWeights {
    pub norm: Tensor,
    /// (vocab, hidden); for tied models the embedding matrix the written model would tie to.
    pub lm_head: Tensor,
}

/// What a cache entry is: the canonical JSON of a rule identifies it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Layer { from: usize, rule: String },
    Embed(String),
    Head { norm_rule: String, lm_head_rule: String },
}

#[derive(Clone)]
enum Cached {
    Layer(Arc<LayerWeights>),
    Embed(Tensor),
    Head(Arc<HeadWeights>),
}

/// Canonical text of a rule, used as a cache key (exact: same text, same weights).
pub fn rule_key(rule: &Rule) -> String {
    serde_json::to_string(rule).expect("a rule always serialises")
}

/// Lazily materialised weights of every (layer, rule) the candidates use.
pub struct WeightStore {
    family: Arc<Family>,
    device: Device,
    dtype: DType,
    cache: Lru<Key, Cached>,
}

fn bytes_of(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

impl WeightStore {
    pub fn new(family: Arc<Family>, device: Device, dtype: DType, capacity_bytes: u64) -> Self {
        Self { family, device, dtype, cache: Lru::new(capacity_bytes) }
    }

    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    pub fn family(&self) -> &Family {
        &self.family
    }

    /// One tensor under `rule`, on the device in the compute dtype.
    fn tensor(&self, rule: &Rule, name: &str, rows: Option<usize>) -> Result<Tensor, EvalError> {
        let stitched = stitch(&self.family, rule, name, rows)?;
        let wrap = |e: candle_core::Error| EvalError::Tensor { tensor: name.to_string(), source: e };
        let t = match stitched {
            Stitched::Verbatim(v) => {
                let dt = match v.dtype {
                    crate::dtype::Dtype::F32 => DType::F32,
                    crate::dtype::Dtype::F16 => DType::F16,
                    crate::dtype::Dtype::Bf16 => DType::BF16,
                };
                Tensor::from_raw_buffer(v.data, dt, &v.shape, &self.device).map_err(wrap)?
            }
            Stitched::Computed { shape, values } => Tensor::from_vec(values, shape, &self.device).map_err(wrap)?,
        };
        t.to_dtype(self.dtype).map_err(wrap)
    }

    fn layer_tensor(&self, from: usize, rule: &Rule, role: Role) -> Result<Option<Tensor>, EvalError> {
        let arch = self.family.base.config.arch;
        match arch.suffix(role) {
            Some(suffix) => Ok(Some(self.tensor(rule, &arch.layer_tensor_name(from, suffix), None)?)),
            None => Ok(None),
        }
    }

    /// Source layer `from` under `rule`.
    pub fn layer(&mut self, from: usize, rule: &Rule) -> Result<Arc<LayerWeights>, EvalError> {
        let key = Key::Layer { from, rule: rule_key(rule) };
        if let Some(Cached::Layer(w)) = self.cache.get(&key) {
            return Ok(w);
        }
        let need = |role: Role| -> Result<Tensor, EvalError> {
            self.layer_tensor(from, rule, role)?.ok_or_else(|| EvalError::Unsupported(format!("architecture has no {role:?} tensor")))
        };
        let cat = |parts: &[Tensor], what: &str| {
            Tensor::cat(parts, 0).map_err(|source| EvalError::Tensor { tensor: format!("layer {from} {what}"), source })
        };
        let qkv = cat(&[need(Role::Q)?, need(Role::K)?, need(Role::V)?], "q/k/v")?;
        let qkv_bias = match (
            self.layer_tensor(from, rule, Role::QBias)?,
            self.layer_tensor(from, rule, Role::KBias)?,
            self.layer_tensor(from, rule, Role::VBias)?,
        ) {
            (Some(q), Some(k), Some(v)) => Some(cat(&[q, k, v], "q/k/v bias")?),
            (None, None, None) => None,
            _ => return Err(EvalError::Unsupported("an architecture with only some of the q/k/v biases".into())),
        };
        let w = Arc::new(LayerWeights {
            qkv,
            qkv_bias,
            o: need(Role::O)?,
            gate_up: cat(&[need(Role::Gate)?, need(Role::Up)?], "gate/up")?,
            down: need(Role::Down)?,
            input_norm: need(Role::InputNorm)?,
            post_norm: need(Role::PostAttentionNorm)?,
        });
        let bytes = [&w.qkv, &w.o, &w.gate_up, &w.down, &w.input_norm, &w.post_norm].into_iter().map(bytes_of).sum::<u64>()
            + w.qkv_bias.as_ref().map(bytes_of).unwrap_or(0);
        self.cache.insert(key, Cached::Layer(w.clone()), bytes);
        Ok(w)
    }

    /// The embedding matrix under `rule`, cut to the rows every model of the family shares.
    pub fn embeddings(&mut self, rule: &Rule) -> Result<Tensor, EvalError> {
        let key = Key::Embed(rule_key(rule));
        if let Some(Cached::Embed(t)) = self.cache.get(&key) {
            return Ok(t);
        }
        let arch = self.family.base.config.arch;
        let t = self.tensor(rule, arch.embed, Some(self.family.info.common_vocab))?;
        self.cache.insert(key, Cached::Embed(t.clone()), bytes_of(&t));
        Ok(t)
    }

    /// Final norm under `head`, and lm_head under `head`, or, for tied models, the
    /// embeddings under `embeddings` (what a written model ties its output projection to).
    pub fn head(&mut self, head: &Rule, embeddings: &Rule) -> Result<Arc<HeadWeights>, EvalError> {
        let tied = self.family.base.config.tie_word_embeddings;
        let lm_head_rule = if tied { embeddings } else { head };
        let key = Key::Head { norm_rule: rule_key(head), lm_head_rule: rule_key(lm_head_rule) };
        if let Some(Cached::Head(h)) = self.cache.get(&key) {
            return Ok(h);
        }
        let arch = self.family.base.config.arch;
        let norm = self.tensor(head, arch.final_norm, None)?;
        // A tied lm_head is the embedding tensor itself: share it rather than hold a copy.
        let lm_head = if tied { self.embeddings(embeddings)? } else { self.tensor(head, arch.lm_head, Some(self.family.info.common_vocab))? };
        let bytes = bytes_of(&norm) + if tied { 0 } else { bytes_of(&lm_head) };
        let h = Arc::new(HeadWeights { norm, lm_head });
        self.cache.insert(key, Cached::Head(h.clone()), bytes);
        Ok(h)
    }
}
