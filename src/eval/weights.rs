//! Weights of candidate models as device tensors: the tensors of the recipe's output layout
//! ([`crate::layout`], the same one the writer writes), each made through
//! [`crate::stitch::stitch`] (so the evaluator sees exactly the values the writer writes),
//! computed once per (source layer, rule) and kept in a byte-bounded LRU. Names, row cuts
//! and tying are the layout's; nothing here re-derives them.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::lru::{CacheStats, Lru};
use super::EvalError;
use crate::arch::Role;
use crate::checkpoint::Family;
use crate::layout::{self, Edges, OutputTensor};
use crate::recipe::{LayerRule, Recipe, Rule};
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
    /// (vocab, hidden): the layout's output projection (the embeddings themselves when tied).
    pub lm_head: Tensor,
}

/// What a cache entry is: the canonical JSON of a rule identifies it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Layer { from: usize, rule: String },
    /// A matrix outside the layers: (source tensor, rule).
    Matrix { source: String, rule: String },
    Head { norm_rule: String, projection: Box<Key> },
}

fn matrix_key(t: &OutputTensor) -> Key {
    Key::Matrix { source: t.source.clone(), rule: rule_key(&t.rule) }
}

#[derive(Clone)]
enum Cached {
    Layer(Arc<LayerWeights>),
    Matrix(Tensor),
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

    /// The edges (embeddings, final norm, output projection) of `recipe`'s output layout.
    fn edges(&self, recipe: &Recipe) -> Edges {
        let base = &self.family.base;
        layout::edges(&base.config, recipe, self.family.info.common_vocab, base.storage_dtype())
    }

    /// One output tensor, on the device in the compute dtype.
    fn tensor(&self, t: &OutputTensor) -> Result<Tensor, EvalError> {
        let stitched = stitch(&self.family, &t.rule, &t.source, t.rows)?;
        let wrap = |e: candle_core::Error| EvalError::Tensor { tensor: t.name.clone(), source: e };
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

    /// Output layer `index`, made from `layer` (cached by source layer and rule).
    pub fn layer(&mut self, index: usize, layer: &LayerRule) -> Result<Arc<LayerWeights>, EvalError> {
        let from = layer.from;
        let key = Key::Layer { from, rule: rule_key(&layer.rule) };
        if let Some(Cached::Layer(w)) = self.cache.get(&key) {
            return Ok(w);
        }
        let base = &self.family.base;
        let tensors = layout::layer_tensors(&base.config, index, layer, base.storage_dtype());
        let find = |role: Role| tensors.iter().find(|t| matches!(t.slot, layout::Slot::Layer { role: r, .. } if r == role));
        let maybe = |role: Role| -> Result<Option<Tensor>, EvalError> { find(role).map(|t| self.tensor(t)).transpose() };
        let need = |role: Role| -> Result<Tensor, EvalError> {
            maybe(role)?.ok_or_else(|| EvalError::Unsupported(format!("architecture has no {role:?} tensor")))
        };
        let cat = |parts: &[Tensor], what: &str| {
            Tensor::cat(parts, 0).map_err(|source| EvalError::Tensor { tensor: format!("layer {from} {what}"), source })
        };
        let qkv = cat(&[need(Role::Q)?, need(Role::K)?, need(Role::V)?], "q/k/v")?;
        let qkv_bias = match (maybe(Role::QBias)?, maybe(Role::KBias)?, maybe(Role::VBias)?) {
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

    /// The embedding matrix of `recipe`'s layout (cut to the family's common rows).
    pub fn embeddings(&mut self, recipe: &Recipe) -> Result<Tensor, EvalError> {
        let edges = self.edges(recipe);
        self.matrix(&edges.embeddings)
    }

    fn matrix(&mut self, t: &OutputTensor) -> Result<Tensor, EvalError> {
        let key = matrix_key(t);
        if let Some(Cached::Matrix(m)) = self.cache.get(&key) {
            return Ok(m);
        }
        let m = self.tensor(t)?;
        self.cache.insert(key, Cached::Matrix(m.clone()), bytes_of(&m));
        Ok(m)
    }

    /// Final norm and output projection of `recipe`'s layout. A projection tied to the
    /// embeddings is the embedding tensor itself (shared, not copied).
    pub fn head(&mut self, recipe: &Recipe) -> Result<Arc<HeadWeights>, EvalError> {
        let edges = self.edges(recipe);
        let projection = edges.projection();
        let key = Key::Head { norm_rule: rule_key(&edges.final_norm.rule), projection: Box::new(matrix_key(projection)) };
        if let Some(Cached::Head(h)) = self.cache.get(&key) {
            return Ok(h);
        }
        let norm = self.tensor(&edges.final_norm)?;
        let lm_head = self.matrix(projection)?;
        let h = Arc::new(HeadWeights { norm, lm_head });
        self.cache.insert(key, Cached::Head(h.clone()), bytes_of(&h.norm));
        Ok(h)
    }
}
