//! Device memory by kind, each with its bound: the family's resident source tensors, the
//! materialised (layer, rule) weights, the prefix cache of hidden states and the hidden
//! states in flight. The search prints it in its closing summary.

use candle_core::{DType, Device};
use serde::Serialize;

use super::budget::{MemoryPlan, Watch};
use super::sources::SourceStats;
use super::tiers::Tier;
use super::{EvalError, EvalStats};
use crate::human::human_bytes;

/// One kind of device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub peak_bytes: u64,
    pub bound_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryReport {
    /// The family's source tensors (device-tier models).
    pub weights: Usage,
    /// Materialised (layer, rule) weights in the compute dtype.
    pub merged_layers: Usage,
    pub prefix_cache: Usage,
    /// Hidden states of the batches in flight.
    pub activations: Usage,
    /// Host-tier models' bytes copied to the device, and how much of it was prefetched.
    pub host_uploaded_bytes: u64,
    pub prefetched_bytes: u64,
    pub tiers: Vec<(String, Tier)>,
    pub compute_dtype: String,
    /// The lowest bounds of merged layers, prefix cache and activations when the machine's
    /// available memory fell during the run (`None`: the plan held throughout).
    pub lowered_to: Option<[u64; 3]>,
}

impl MemoryReport {
    pub fn new(stats: &EvalStats, sources: SourceStats, plan: &MemoryPlan, watch: &Watch, dtype: DType) -> Self {
        let b = plan.cache_bounds();
        Self {
            weights: Usage { peak_bytes: sources.resident.peak_bytes, bound_bytes: sources.resident.capacity_bytes },
            merged_layers: Usage { peak_bytes: stats.weights.peak_bytes, bound_bytes: b[0] },
            prefix_cache: Usage { peak_bytes: stats.prefix.peak_bytes, bound_bytes: b[1] },
            activations: Usage { peak_bytes: stats.peak_state_bytes, bound_bytes: b[2] },
            lowered_to: (watch.lowered > 0).then_some(watch.lowest),
            host_uploaded_bytes: sources.host_uploaded_bytes,
            prefetched_bytes: sources.prefetched_bytes,
            tiers: sources.tiers,
            compute_dtype: format!("{dtype:?}").to_lowercase(),
        }
    }

    /// A few lines for the end of a search.
    pub fn render(&self) -> String {
        let u = |u: &Usage| format!("{} of {}", human_bytes(u.peak_bytes), human_bytes(u.bound_bytes));
        let device: Vec<&str> = self.tiers.iter().filter(|(_, t)| *t == Tier::Device).map(|(m, _)| m.as_str()).collect();
        let host: Vec<&str> = self.tiers.iter().filter(|(_, t)| *t == Tier::Host).map(|(m, _)| m.as_str()).collect();
        let list = |v: &[&str]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        let lowered = match self.lowered_to {
            Some(l) => format!(
                "bounds lowered while the machine's available memory fell, at the lowest to: merged layers {}, prefix cache {}, activations {}\n",
                human_bytes(l[0]),
                human_bytes(l[1]),
                human_bytes(l[2])
            ),
            None => String::new(),
        };
        format!(
            "memory (peak of bound, compute {}): source weights {}, merged layers {}, prefix cache {}, activations {}\n{lowered}\
             models on the device: {}; in host memory: {} ({} uploaded, {} of it prefetched)\n",
            self.compute_dtype,
            u(&self.weights),
            u(&self.merged_layers),
            u(&self.prefix_cache),
            u(&self.activations),
            list(&device),
            list(&host),
            human_bytes(self.host_uploaded_bytes),
            human_bytes(self.prefetched_bytes),
        )
    }
}

/// (free, total) device memory in bytes; `None` on the CPU.
pub fn device_memory(device: &Device) -> Result<Option<(u64, u64)>, EvalError> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let (free, total) =
                d.cuda_stream().context().mem_get_info().map_err(|e| EvalError::Device(format!("cannot read the device's free memory: {e}")))?;
            Ok(Some((free as u64, total as u64)))
        }
        _ => Ok(None),
    }
}
