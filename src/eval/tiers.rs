//! Which models' source tensors live in device memory and which stay in host memory, and what
//! that costs per trial. One rule, used by the evaluator when it opens the family and by
//! `--dry-run` before anything is downloaded.
//!
//! A 13B family of a base and three siblings is 4 × 26 GB in bf16: all of it fits a 141 GB
//! GPU, not an 80 GB one. Models are placed in order (the base first: every merge reads it),
//! each on the device when its tensors fit what is left of the bound; the others are read
//! from host memory (the memory-mapped safetensors, prefetched a layer ahead) each time one
//! of their layers is materialised under a new rule.

use serde::Serialize;

/// Where one model's source tensors are held during the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Uploaded once per (model, layer) and kept resident.
    Device,
    /// In host memory; copied to the device per use (a layer ahead) and not kept.
    Host,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Device => "device",
            Tier::Host => "host",
        })
    }
}

/// Tiers of `model_bytes` (base first) under a device bound of `bound` bytes.
pub fn assign(model_bytes: &[u64], bound: u64) -> Vec<Tier> {
    let mut left = bound;
    model_bytes
        .iter()
        .map(|&b| {
            if b <= left {
                left -= b;
                Tier::Device
            } else {
                Tier::Host
            }
        })
        .collect()
}

/// Host-to-device bytes of one trial whose `keep` layers are materialised for the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// Each kept layer taken from one model drawn uniformly from the family.
    pub expected: u64,
    /// Every kept layer merged from every model (what a merge-heavy trial reads).
    pub worst: u64,
}

/// Transfer per trial: `layer_bytes[m]` is one decoder layer of model m in its storage dtype.
/// Layers already materialised under the same rule come from the layer cache instead.
pub fn transfer_per_trial(layer_bytes: &[u64], tiers: &[Tier], keep: usize) -> Transfer {
    let host: Vec<u64> = layer_bytes.iter().zip(tiers).filter(|(_, t)| **t == Tier::Host).map(|(b, _)| *b).collect();
    let n = layer_bytes.len().max(1) as u64;
    let sum: u64 = host.iter().sum();
    Transfer { expected: keep as u64 * sum / n, worst: keep as u64 * sum }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_13b_family_fits_141_gb_but_not_80_gb() {
        // Llama-2-13B in bf16: 26.03 GB per model, 40 layers of 0.636 GB.
        let model = 26_031_728_640u64;
        let layer = 636_175_360u64;
        let family = [model; 4];
        assert_eq!(assign(&family, 130 << 30), vec![Tier::Device; 4]);
        let small = assign(&family, 70 << 30);
        assert_eq!(small, vec![Tier::Device, Tier::Device, Tier::Host, Tier::Host]);
        let t = transfer_per_trial(&[layer; 4], &small, 30);
        assert_eq!(t.worst, 30 * 2 * layer);
        assert_eq!(t.expected, 30 * layer / 2);
        assert_eq!(transfer_per_trial(&[layer; 4], &[Tier::Device; 4], 30), Transfer { expected: 0, worst: 0 });
    }
}
