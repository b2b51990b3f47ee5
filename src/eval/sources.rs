//! The family's source tensors on the evaluator's device, in their storage dtype: the
//! inputs of every stitched or merged candidate tensor ([`super::device_merge`]).
//!
//! Models of the device tier ([`super::tiers`]) are uploaded once per tensor and kept in a
//! byte-bounded LRU; models of the host tier stay in host memory (the memory-mapped
//! safetensors) and are copied per use. For those, [`SourceStore::prefetch`] asks the kernel
//! to read the next layer's pages and uploads them on a background thread while the current
//! layer runs, so a candidate's next layer is usually on the device when it is needed.
//! (candle 0.11 copies from pageable memory; it exposes no pinned host buffers.)

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::lru::{CacheStats, Lru};
use super::tiers::Tier;
use super::{candle_dtype, EvalError};
use crate::checkpoint::Family;

/// One source tensor: (model, tensor name, leading rows kept).
pub type SourceKey = (String, String, Option<usize>);

/// Memory and traffic of the source tensors, for the search's closing summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceStats {
    /// Device-tier tensors held (bytes, peak, bound).
    pub resident: CacheStats,
    /// Bytes copied to the device for host-tier models (prefetched or not).
    pub host_uploaded_bytes: u64,
    /// Of those, bytes that were uploaded ahead by the prefetcher and then used.
    pub prefetched_bytes: u64,
    /// (model, tier), base first.
    pub tiers: Vec<(String, Tier)>,
}

type Staged = Vec<(SourceKey, Result<Tensor, EvalError>)>;

pub struct SourceStore {
    family: Arc<Family>,
    device: Device,
    tiers: HashMap<String, Tier>,
    order: Vec<String>,
    resident: Lru<SourceKey, Tensor>,
    staged: HashMap<SourceKey, Tensor>,
    pending: Option<JoinHandle<Staged>>,
    host_uploaded_bytes: u64,
    prefetched_bytes: u64,
}

/// Copy one source tensor from the memory map to `device`, in its storage dtype.
fn upload(family: &Family, key: &SourceKey, device: &Device) -> Result<Tensor, EvalError> {
    let (model, tensor, rows) = key;
    let ckpt = family
        .get(model)
        .ok_or_else(|| EvalError::Layout(crate::layout::LayoutError::Mismatch(format!("the recipe names model `{model}`, which was not loaded"))))?;
    let view = ckpt.view(tensor)?;
    let view = match rows {
        Some(r) => view.first_rows(*r),
        None => view,
    };
    Tensor::from_raw_buffer(view.data, candle_dtype(view.dtype), &view.shape, device)
        .map_err(|source| EvalError::Tensor { tensor: format!("{tensor} of {model}"), source })
}

fn bytes_of(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}

impl SourceStore {
    /// `tiers[i]` is the tier of the family's i-th model (base first).
    pub fn new(family: Arc<Family>, device: Device, tiers: &[Tier], bound_bytes: u64) -> Self {
        let order: Vec<String> = family.names.clone();
        let tiers = order.iter().cloned().zip(tiers.iter().copied()).collect();
        Self {
            family,
            device,
            tiers,
            order,
            resident: Lru::new(bound_bytes),
            staged: HashMap::new(),
            pending: None,
            host_uploaded_bytes: 0,
            prefetched_bytes: 0,
        }
    }

    pub fn tier(&self, model: &str) -> Tier {
        self.tiers.get(model).copied().unwrap_or(Tier::Host)
    }

    pub fn stats(&self) -> SourceStats {
        SourceStats {
            resident: self.resident.stats(),
            host_uploaded_bytes: self.host_uploaded_bytes,
            prefetched_bytes: self.prefetched_bytes,
            tiers: self.order.iter().map(|m| (m.clone(), self.tier(m))).collect(),
        }
    }

    /// Move a finished (or unfinished: wait) background upload into `staged`.
    fn collect_pending(&mut self) -> Result<(), EvalError> {
        if let Some(h) = self.pending.take() {
            let staged = h.join().map_err(|_| EvalError::Device("the prefetch thread panicked".into()))?;
            for (k, t) in staged {
                // A failed prefetch is retried (and reported) by the use that needs it.
                if let Ok(t) = t {
                    self.staged.insert(k, t);
                }
            }
        }
        Ok(())
    }

    /// Source tensor `tensor` of `model` (its first `rows` rows), on the device.
    pub fn get(&mut self, model: &str, tensor: &str, rows: Option<usize>) -> Result<Tensor, EvalError> {
        let key: SourceKey = (model.to_string(), tensor.to_string(), rows);
        match self.tier(model) {
            Tier::Device => {
                if let Some(t) = self.resident.get(&key) {
                    return Ok(t);
                }
                let t = upload(&self.family, &key, &self.device)?;
                self.resident.insert(key, t.clone(), bytes_of(&t));
                Ok(t)
            }
            Tier::Host => {
                if self.pending.is_some() {
                    self.collect_pending()?;
                }
                if let Some(t) = self.staged.remove(&key) {
                    self.prefetched_bytes += bytes_of(&t);
                    self.host_uploaded_bytes += bytes_of(&t);
                    return Ok(t);
                }
                let t = upload(&self.family, &key, &self.device)?;
                self.host_uploaded_bytes += bytes_of(&t);
                Ok(t)
            }
        }
    }

    /// Start bringing `keys` of host-tier models to the device in the background (device-tier
    /// keys are uploaded on first use and kept, so they are skipped). Whatever an earlier
    /// prefetch staged and nobody used is dropped.
    pub fn prefetch(&mut self, keys: Vec<SourceKey>) -> Result<(), EvalError> {
        self.collect_pending()?;
        self.staged.clear();
        let keys: Vec<SourceKey> = keys.into_iter().filter(|k| self.tier(&k.0) == Tier::Host).collect();
        if keys.is_empty() {
            return Ok(());
        }
        for (model, tensor, _) in &keys {
            if let Some(c) = self.family.get(model) {
                c.prefetch_part(tensor, 0, usize::MAX);
            }
        }
        let (family, device) = (self.family.clone(), self.device.clone());
        self.pending = Some(std::thread::spawn(move || {
            keys.into_iter()
                .map(|k| {
                    let t = upload(&family, &k, &device);
                    (k, t)
                })
                .collect()
        }));
        Ok(())
    }
}

impl Drop for SourceStore {
    fn drop(&mut self) {
        if let Some(h) = self.pending.take() {
            let _ = h.join();
        }
    }
}
