//! Merge methods: one signature, base + sources + parameters -> tensor, all in f32.
//!
//! Inputs are flat row-major tensors of equal length; `models[j]` is the j-th model the
//! [`Merge`] lists. `seed_key` makes stochastic methods (DARE) deterministic per tensor.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::recipe::Merge;

/// The facts about one merge method that recipe validation, stitching, the writer, the
/// search space, mergekit export and the model card read: kept beside the implementation
/// so that adding a method means one entry here and one arm in [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// The name in recipes (`method: ties`).
    pub name: &'static str,
    /// The name mergekit's `merge_method` uses.
    pub mergekit_name: &'static str,
    /// What the card calls it ("task arithmetic", "TIES", …).
    pub title: &'static str,
    /// Parameters as written in recipes, the headline one first.
    pub parameters: &'static [&'static str],
    /// The symbol tables and pictures show for the headline parameter, if it has one.
    pub symbol: Option<&'static str>,
    /// Every output element depends only on the same element of the inputs (so tensors
    /// can be merged chunk by chunk); TIES' magnitude trim and SLERP's norms are global.
    pub elementwise: bool,
    /// Reads the base only as the anchor of task vectors (`W_j − base`); linear and SLERP
    /// treat the base like any other model (it may be listed among the models).
    pub anchors_on_base: bool,
}

/// Every merge method, in the order the docs list them.
pub static METHODS: &[MethodInfo] = &[
    MethodInfo {
        name: "task_arithmetic",
        mergekit_name: "task_arithmetic",
        title: "task arithmetic",
        parameters: &["lambda"],
        symbol: Some("λ"),
        elementwise: true,
        anchors_on_base: true,
    },
    MethodInfo {
        name: "linear",
        mergekit_name: "linear",
        title: "linear",
        parameters: &["weights"],
        symbol: None,
        elementwise: true,
        anchors_on_base: false,
    },
    MethodInfo {
        name: "slerp",
        mergekit_name: "slerp",
        title: "SLERP",
        parameters: &["t"],
        symbol: Some("t"),
        elementwise: false,
        anchors_on_base: false,
    },
    MethodInfo {
        name: "ties",
        mergekit_name: "ties",
        title: "TIES",
        parameters: &["lambda", "density"],
        symbol: Some("λ"),
        elementwise: false,
        anchors_on_base: true,
    },
    MethodInfo {
        name: "dare",
        mergekit_name: "dare_linear",
        title: "DARE",
        parameters: &["lambda", "density", "seed"],
        symbol: Some("λ"),
        elementwise: false,
        anchors_on_base: true,
    },
];

/// The registry entry of a method name, if known.
pub fn method(name: &str) -> Option<&'static MethodInfo> {
    METHODS.iter().find(|m| m.name == name)
}

/// `task_arithmetic, linear, slerp, ties, dare`, for messages.
pub fn method_list() -> String {
    METHODS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// Apply `merge` to one tensor. `base` is the anchor; the linear method may list the base
/// among its models, in which case the caller passes the base again in `models`.
pub fn apply(merge: &Merge, base: &[f32], models: &[&[f32]], seed_key: &str) -> Vec<f32> {
    debug_assert!(models.iter().all(|m| m.len() == base.len()));
    match merge {
        Merge::TaskArithmetic { lambda, .. } => task_arithmetic(base, models, *lambda as f32),
        Merge::Linear { weights, .. } => linear(models, weights),
        Merge::Slerp { t, .. } => slerp(models[0], models[1], *t as f32),
        Merge::Ties { lambda, density, .. } => ties(base, models, *lambda as f32, *density),
        Merge::Dare { lambda, density, seed, .. } => dare(base, models, *lambda as f32, *density, *seed, seed_key),
    }
}

/// `base + λ·Σ_j (W_j − base)`.
pub fn task_arithmetic(base: &[f32], models: &[&[f32]], lambda: f32) -> Vec<f32> {
    let mut out = base.to_vec();
    for m in models {
        for ((o, &w), &b) in out.iter_mut().zip(m.iter()).zip(base.iter()) {
            *o += lambda * (w - b);
        }
    }
    out
}

/// Weighted mean, weights normalised to sum 1.
pub fn linear(models: &[&[f32]], weights: &[f64]) -> Vec<f32> {
    let total: f64 = weights.iter().sum();
    let mut acc = vec![0f64; models.first().map_or(0, |m| m.len())];
    for (m, w) in models.iter().zip(weights) {
        let w = w / total;
        for (a, &x) in acc.iter_mut().zip(m.iter()) {
            *a += w * x as f64;
        }
    }
    acc.into_iter().map(|x| x as f32).collect()
}

/// Spherical linear interpolation of the flattened tensors; falls back to linear
/// interpolation when they are (nearly) colinear.
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    let lerp = || a.iter().zip(b).map(|(x, y)| (1.0 - t) * x + t * y).collect::<Vec<f32>>();
    if na < 1e-12 || nb < 1e-12 {
        return lerp();
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 / na) * (*y as f64 / nb)).sum();
    if dot.abs() > 0.9995 {
        return lerp();
    }
    let omega = dot.clamp(-1.0, 1.0).acos();
    let so = omega.sin();
    let t = t as f64;
    let (s0, s1) = (((1.0 - t) * omega).sin() / so, (t * omega).sin() / so);
    a.iter().zip(b).map(|(x, y)| (s0 * *x as f64 + s1 * *y as f64) as f32).collect()
}

/// How many entries of a task vector of `len` entries TIES keeps at `density` (the rest are
/// zeroed). Among entries whose magnitude equals the smallest kept magnitude, the first ones
/// in flat index order are kept until the count is reached.
pub fn ties_keep_count(len: usize, density: f64) -> usize {
    (((len as f64) * density).round() as usize).min(len)
}

/// Keep the `density` fraction of largest-magnitude entries of `tau`, zero the rest.
fn trim_to_density(tau: &mut [f32], density: f64) {
    let keep = ties_keep_count(tau.len(), density);
    if keep >= tau.len() {
        return;
    }
    if keep == 0 {
        tau.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let mut mags: Vec<f32> = tau.iter().map(|x| x.abs()).collect();
    let idx = tau.len() - keep;
    let (_, threshold, _) = mags.select_nth_unstable_by(idx, |a, b| a.total_cmp(b));
    let threshold = *threshold;
    // Entries equal to the threshold are kept in order until `keep` is reached.
    let mut above = tau.iter().filter(|x| x.abs() > threshold).count();
    for x in tau.iter_mut() {
        let m = x.abs();
        if m < threshold || (m == threshold && above >= keep) {
            *x = 0.0;
        } else if m == threshold {
            above += 1;
        }
    }
}

/// TIES-merging (Yadav et al. 2023): trim, elect sign by total mass, disjoint mean.
pub fn ties(base: &[f32], models: &[&[f32]], lambda: f32, density: f64) -> Vec<f32> {
    let taus: Vec<Vec<f32>> = models
        .iter()
        .map(|m| {
            let mut t: Vec<f32> = m.iter().zip(base).map(|(w, b)| w - b).collect();
            trim_to_density(&mut t, density);
            t
        })
        .collect();
    let mut out = base.to_vec();
    for (i, o) in out.iter_mut().enumerate() {
        let mass: f32 = taus.iter().map(|t| t[i]).sum();
        let sign = mass.signum();
        let (mut sum, mut n) = (0f32, 0u32);
        for t in &taus {
            if t[i] != 0.0 && t[i].signum() == sign {
                sum += t[i];
                n += 1;
            }
        }
        if n > 0 {
            *o += lambda * sum / n as f32;
        }
    }
    out
}

/// DARE (Yu et al. 2024): random drop with keep-probability `density`, rescale by
/// `1/density`, then task arithmetic. The mask depends only on (seed, tensor, model index)
/// (see [`dare_keep_mask`]).
pub fn dare(base: &[f32], models: &[&[f32]], lambda: f32, density: f64, seed: u64, seed_key: &str) -> Vec<f32> {
    let mut out = base.to_vec();
    let scale = dare_scale(lambda, density);
    let mut keep = vec![0u8; base.len()];
    for (j, m) in models.iter().enumerate() {
        dare_keep_mask(seed, seed_key, j, density, 0, &mut keep);
        for (((o, &w), &b), &k) in out.iter_mut().zip(m.iter()).zip(base).zip(&keep) {
            if k != 0 {
                *o += scale * (w - b);
            }
        }
    }
    out
}

/// The factor DARE multiplies a kept difference by: `λ / density`, computed as `λ · (1/density)`
/// in f32.
pub fn dare_scale(lambda: f32, density: f64) -> f32 {
    lambda * (1.0 / density) as f32
}

/// Words of the ChaCha stream one keep decision consumes (one `u64` draw).
const DARE_WORDS_PER_ENTRY: u128 = 2;

/// DARE's keep decisions (1 = keep) of model `j` of tensor `seed_key` for the entries
/// `start .. start + out.len()`: entry i keeps its difference when the i-th uniform f64 of a
/// ChaCha8 stream seeded with SHA-256(seed, tensor name, j) is below `density`. Any chunk of
/// the stream can be drawn on its own (the stream is seekable), so the evaluator can draw
/// the mask in parallel and get the writer's exact mask.
pub fn dare_keep_mask(seed: u64, seed_key: &str, j: usize, density: f64, start: usize, out: &mut [u8]) {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(seed_key.as_bytes());
    h.update((j as u64).to_le_bytes());
    let digest: [u8; 32] = h.finalize().into();
    let mut rng = ChaCha8Rng::from_seed(digest);
    rng.set_word_pos(start as u128 * DARE_WORDS_PER_ENTRY);
    for k in out.iter_mut() {
        *k = u8::from(rng.random::<f64>() < density);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_arithmetic_matches_formula() {
        let base = [1.0, 2.0, 3.0];
        let a = [2.0, 2.0, 1.0];
        let b = [1.0, 4.0, 3.0];
        let out = task_arithmetic(&base, &[&a, &b], 0.5);
        assert_eq!(out, vec![1.5, 3.0, 2.0]);
        // λ = 1 with a single model is that model exactly.
        assert_eq!(task_arithmetic(&base, &[&a], 1.0), a.to_vec());
    }

    #[test]
    fn slerp_endpoints_and_midpoint_norm() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        assert_eq!(slerp(&a, &b, 0.0), vec![1.0, 0.0]);
        let mid = slerp(&a, &b, 0.5);
        assert!((mid[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6 && (mid[0] - mid[1]).abs() < 1e-6);
    }

    #[test]
    fn ties_trims_and_elects() {
        let base = [0.0f32; 4];
        let a = [1.0f32, -0.1, 2.0, 0.0];
        let b = [3.0f32, 0.2, -1.0, 0.0];
        // density 0.5 keeps a: {1.0, 2.0}, b: {3.0, -1.0}; signs: + (4), + (1); disjoint means.
        assert_eq!(ties(&base, &[&a, &b], 1.0, 0.5), vec![2.0, 0.0, 2.0, 0.0]);
    }

    #[test]
    fn dare_is_deterministic_and_unbiased_at_full_density() {
        let base = [0.5f32; 64];
        let a: Vec<f32> = (0..64).map(|i| i as f32).collect();
        assert_eq!(dare(&base, &[&a], 1.0, 1.0, 7, "t"), a);
        assert_eq!(dare(&base, &[&a], 1.0, 0.5, 7, "t"), dare(&base, &[&a], 1.0, 0.5, 7, "t"));
        assert_ne!(dare(&base, &[&a], 1.0, 0.5, 7, "t"), dare(&base, &[&a], 1.0, 0.5, 7, "u"));
    }

    #[test]
    fn dare_mask_chunks_are_the_sequential_stream() {
        let mut whole = vec![0u8; 1000];
        dare_keep_mask(3, "model.layers.0.mlp.up_proj.weight", 1, 0.3, 0, &mut whole);
        let mut parts = vec![0u8; 1000];
        for (c, chunk) in parts.chunks_mut(137).enumerate() {
            dare_keep_mask(3, "model.layers.0.mlp.up_proj.weight", 1, 0.3, c * 137, chunk);
        }
        assert_eq!(whole, parts);
        let kept = whole.iter().filter(|k| **k != 0).count();
        assert!((250..350).contains(&kept), "{kept} of 1000 kept at density 0.3");
    }
}
