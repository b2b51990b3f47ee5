//! Weights of candidate models as device tensors: the tensors of the recipe's output layout
//! ([`crate::layout`], the same one the writer writes), each made with the writer's
//! definitions (so the evaluator sees exactly the values the writer writes), computed once
//! per (source layer, rule) and kept in a byte-bounded LRU. Names, row cuts and tying are
//! the layout's; nothing here re-derives them.
//!
//! Takes, task arithmetic, TIES and DARE are computed on the device from the resident source
//! tensors ([`super::sources`], [`super::device_merge`]), in f32 and cast once to the compute
//! dtype; linear and SLERP merges go through [`crate::stitch::stitch`] on the host.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::device_merge;
use super::lru::{CacheStats, Lru};
use super::sources::{SourceKey, SourceStats, SourceStore};
use super::tiers::Tier;
use super::{candle_dtype, EvalError};
use crate::arch::Role;
use crate::checkpoint::{CheckpointError, Family};
use crate::config::AttentionKind;
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
    /// Per-head q/k RMSNorm weights, (head_dim,) (Qwen3, Gemma 3).
    pub q_norm: Option<Tensor>,
    pub k_norm: Option<Tensor>,
    /// The MLP's own input and output norms (Gemma 2/3).
    pub pre_ff_norm: Option<Tensor>,
    pub post_ff_norm: Option<Tensor>,
    /// The attention of the source layer: a layer keeps its kind wherever it is placed.
    pub attention: AttentionKind,
}

/// Final norm and output projection.
#[derive(Debug)]
pub struct HeadWeights {
    pub norm: Tensor,
    /// (vocab, hidden): the layout's output projection (the embeddings themselves when tied).
    pub lm_head: Tensor,
}

fn is_norm(role: Role) -> bool {
    matches!(role, Role::InputNorm | Role::PostAttentionNorm | Role::QNorm | Role::KNorm | Role::PreFeedforwardNorm | Role::PostFeedforwardNorm)
}

/// What a cache entry is: the canonical JSON of a rule identifies it exactly.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Layer {
        from: usize,
        rule: String,
        /// sha256 of the heal map fused into its down_proj, if any.
        map: Option<String>,
    },
    /// A matrix outside the layers: (source tensor, rule).
    Matrix {
        source: String,
        rule: String,
    },
    Head {
        norm_rule: String,
        projection: Box<Key>,
    },
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
    sources: SourceStore,
    /// Heal maps by sha256 (f32, d × d), registered by the fit or read from a recipe's file.
    maps: std::collections::HashMap<String, Arc<Vec<f32>>>,
}

fn bytes_of(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

impl WeightStore {
    /// `tiers[i]`: where the family's i-th model's source tensors live; `source_bytes` bounds
    /// the device-tier ones, `capacity_bytes` the materialised (layer, rule) weights.
    pub fn new(family: Arc<Family>, device: Device, dtype: DType, capacity_bytes: u64, tiers: &[Tier], source_bytes: u64) -> Self {
        let sources = SourceStore::new(family.clone(), device.clone(), tiers, source_bytes);
        Self { family, device, dtype, cache: Lru::new(capacity_bytes), sources, maps: Default::default() }
    }

    /// Make a heal map available to the layers that fuse it (by its sha256).
    pub fn register_map(&mut self, sha256: String, map: Arc<Vec<f32>>) {
        self.maps.insert(sha256, map);
    }

    /// Forget a heal map (a search's fit that left the fit cache).
    pub fn unregister_map(&mut self, sha256: &str) {
        self.maps.remove(sha256);
    }

    pub fn has_map(&self, sha256: &str) -> bool {
        self.maps.contains_key(sha256)
    }

    pub fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Lower (evicting) or raise the bound on materialised weights.
    pub fn set_capacity(&mut self, bytes: u64) {
        self.cache.set_capacity(bytes);
    }

    pub fn source_stats(&self) -> SourceStats {
        self.sources.stats()
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
    fn tensor(&mut self, t: &OutputTensor) -> Result<Tensor, EvalError> {
        let wrap = |e: candle_core::Error| EvalError::Tensor { tensor: t.name.clone(), source: e };
        let (name, rows) = (t.source.as_str(), t.rows);
        if let Some(f) = &t.fused {
            // On the host in f32, as the writer does, so both hold the same values.
            let map = self.maps.get(&f.sha256).cloned().ok_or_else(|| EvalError::Spec(format!("heal map `{}` is not loaded", f.name)))?;
            let down = stitch(&self.family, &t.rule, name, rows)?;
            let shape = down.shape().to_vec();
            let fused = crate::heal::fuse(&down.into_f32(), &shape, &map).map_err(|e| EvalError::Spec(e.to_string()))?;
            return Tensor::from_vec(fused, shape, &self.device).and_then(|x| x.to_dtype(self.dtype)).map_err(wrap);
        }
        let out = match &t.rule {
            Rule::Take(m) => self.sources.get(m, name, rows)?,
            Rule::Merge(merge) if device_merge::supports(merge) => {
                let base_name = self.family.base_name().to_string();
                let base = self.sources.get(&base_name, name, rows)?;
                let mut models = Vec::with_capacity(merge.models().len());
                for m in merge.models() {
                    let x = self.sources.get(m, name, rows)?;
                    if x.dims() != base.dims() {
                        let (found, expected) = (x.dims().to_vec(), base.dims().to_vec());
                        return Err(CheckpointError::BadShape { model: m.clone(), tensor: name.into(), found, expected }.into());
                    }
                    models.push(x);
                }
                device_merge::apply(merge, &base, &models, name).map_err(wrap)?
            }
            Rule::Merge(_) => match stitch(&self.family, &t.rule, name, rows)? {
                Stitched::Verbatim(v) => Tensor::from_raw_buffer(v.data, candle_dtype(v.dtype), &v.shape, &self.device).map_err(wrap)?,
                Stitched::Computed { shape, values } => Tensor::from_vec(values, shape, &self.device).map_err(wrap)?,
            },
        };
        out.to_dtype(self.dtype).map_err(wrap)
    }

    /// An RMSNorm weight as the forward pass multiplies by it: `1 + w` where the family's
    /// norms scale by `(1 + w)` (Gemma; the checkpoint stores `w`, the writer writes `w`).
    fn norm_weight(&self, w: Tensor, name: &str) -> Result<Tensor, EvalError> {
        if !self.family.base.config.arch.flavor.norm_plus_one {
            return Ok(w);
        }
        let wrap = |source| EvalError::Tensor { tensor: name.into(), source };
        // Gemma adds in f32 then casts: (1 + w.float()) * x.float().
        w.to_dtype(DType::F32).and_then(|x| x + 1.0).and_then(|x| x.to_dtype(self.dtype)).map_err(wrap)
    }

    /// Start uploading the source tensors output layer `index` (from `layer`) reads, for
    /// host-tier models only, unless that layer is already materialised: called a layer ahead.
    pub fn prefetch_layer(&mut self, index: usize, layer: &LayerRule, fused: Option<&layout::FusedMap>) -> Result<(), EvalError> {
        if self.cache.contains(&Key::Layer { from: layer.from, rule: rule_key(&layer.rule), map: fused.map(|f| f.sha256.clone()) }) {
            return Ok(());
        }
        let base = &self.family.base;
        let mut keys: Vec<SourceKey> = Vec::new();
        for t in layout::layer_tensors(&base.config, index, layer, base.storage_dtype(), fused) {
            let models: Vec<String> = match &t.rule {
                Rule::Take(m) => vec![m.clone()],
                Rule::Merge(merge) if device_merge::supports(merge) => {
                    std::iter::once(self.family.base_name().to_string()).chain(merge.models().iter().cloned()).collect()
                }
                Rule::Merge(_) => continue,
            };
            for m in models {
                let key = (m, t.source.clone(), t.rows);
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        self.sources.prefetch(keys)
    }

    /// Output layer `index`, made from `layer` with the heal map `fused` in its down_proj, if
    /// any (cached by source layer, rule and map).
    pub fn layer(&mut self, index: usize, layer: &LayerRule, fused: Option<&layout::FusedMap>) -> Result<Arc<LayerWeights>, EvalError> {
        let from = layer.from;
        let key = Key::Layer { from, rule: rule_key(&layer.rule), map: fused.map(|f| f.sha256.clone()) };
        if let Some(Cached::Layer(w)) = self.cache.get(&key) {
            return Ok(w);
        }
        let family = self.family.clone();
        let base = &family.base;
        let tensors = layout::layer_tensors(&base.config, index, layer, base.storage_dtype(), fused);
        let mut made: Vec<(Role, Tensor)> = Vec::with_capacity(tensors.len());
        for t in &tensors {
            if let layout::Slot::Layer { role, .. } = t.slot {
                let x = self.tensor(t)?;
                let x = if is_norm(role) { self.norm_weight(x, &t.name)? } else { x };
                made.push((role, x));
            }
        }
        let maybe = |role: Role| made.iter().find(|(r, _)| *r == role).map(|(_, t)| t.clone());
        let need = |role: Role| -> Result<Tensor, EvalError> {
            maybe(role).ok_or_else(|| EvalError::Unsupported(format!("architecture has no {role:?} tensor")))
        };
        let cat = |parts: &[Tensor], what: &str| {
            Tensor::cat(parts, 0).map_err(|source| EvalError::Tensor { tensor: format!("layer {from} {what}"), source })
        };
        // Fused in the checkpoint (Phi-3) or fused here: the forward pass sees one layout.
        let qkv = match maybe(Role::QkvFused) {
            Some(fused) => fused,
            None => cat(&[need(Role::Q)?, need(Role::K)?, need(Role::V)?], "q/k/v")?,
        };
        let gate_up = match maybe(Role::GateUpFused) {
            Some(fused) => fused,
            None => cat(&[need(Role::Gate)?, need(Role::Up)?], "gate/up")?,
        };
        let qkv_bias = match (maybe(Role::QBias), maybe(Role::KBias), maybe(Role::VBias)) {
            (Some(q), Some(k), Some(v)) => Some(cat(&[q, k, v], "q/k/v bias")?),
            (None, None, None) => None,
            _ => return Err(EvalError::Unsupported("an architecture with only some of the q/k/v biases".into())),
        };
        let w = Arc::new(LayerWeights {
            qkv,
            qkv_bias,
            o: need(Role::O)?,
            gate_up,
            down: need(Role::Down)?,
            input_norm: need(Role::InputNorm)?,
            post_norm: need(Role::PostAttentionNorm)?,
            q_norm: maybe(Role::QNorm),
            k_norm: maybe(Role::KNorm),
            pre_ff_norm: maybe(Role::PreFeedforwardNorm),
            post_ff_norm: maybe(Role::PostFeedforwardNorm),
            attention: base.config.layer_attention.get(from).copied().unwrap_or(AttentionKind::Full),
        });
        let optional = [&w.qkv_bias, &w.q_norm, &w.k_norm, &w.pre_ff_norm, &w.post_ff_norm];
        let bytes = [&w.qkv, &w.o, &w.gate_up, &w.down, &w.input_norm, &w.post_norm].into_iter().map(bytes_of).sum::<u64>()
            + optional.into_iter().flatten().map(bytes_of).sum::<u64>();
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
        let norm = self.norm_weight(norm, &edges.final_norm.name)?;
        let lm_head = self.matrix(projection)?;
        let h = Arc::new(HeadWeights { norm, lm_head });
        self.cache.insert(key, Cached::Head(h.clone()), bytes_of(&h.norm));
        Ok(h)
    }
}
