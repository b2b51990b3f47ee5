//! The host backend: merges over f32 slices, as the writer and the evaluator's host path
//! compute them. Task arithmetic, TIES and DARE are [`super::methods`]' definitions over
//! [`Host`]; linear and SLERP run on the host only.

use std::convert::Infallible;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::methods::{self, TensorOps};
use super::Merge;

/// [`TensorOps`] over f32 slices, each step one pass over the entries.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl TensorOps for Host {
    type Source = [f32];
    type Tensor = Vec<f32>;
    type Mask = Vec<u8>;
    type Error = Infallible;

    fn len(&self, t: &[f32]) -> usize {
        t.len()
    }

    fn start(&self, base: &[f32]) -> Result<Vec<f32>, Infallible> {
        Ok(base.to_vec())
    }

    fn task_vector(&self, w: &[f32], b: &[f32]) -> Result<Vec<f32>, Infallible> {
        Ok(w.iter().zip(b).map(|(w, b)| w - b).collect())
    }

    fn add_task_vector(&self, mut out: Vec<f32>, w: &[f32], b: &[f32], s: f32, keep: Option<&Vec<u8>>) -> Result<Vec<f32>, Infallible> {
        match keep {
            None => {
                for ((o, &w), &b) in out.iter_mut().zip(w).zip(b) {
                    *o += s * (w - b);
                }
            }
            Some(keep) => {
                for (((o, &w), &b), &k) in out.iter_mut().zip(w).zip(b).zip(keep) {
                    if k != 0 {
                        *o += s * (w - b);
                    }
                }
            }
        }
        Ok(out)
    }

    fn keep_mask(&self, len: usize, seed: u64, seed_key: &str, j: usize, density: f64) -> Result<Vec<u8>, Infallible> {
        let mut keep = vec![0u8; len];
        dare_keep_mask(seed, seed_key, j, density, 0, &mut keep);
        Ok(keep)
    }

    fn trim(&self, mut tau: Vec<f32>, keep: usize) -> Result<Vec<f32>, Infallible> {
        trim_to(&mut tau, keep);
        Ok(tau)
    }

    fn elect(&self, b: &[f32], taus: &[Vec<f32>], lambda: f32) -> Result<Vec<f32>, Infallible> {
        let mut out = b.to_vec();
        for (i, o) in out.iter_mut().enumerate() {
            let mass: f32 = taus.iter().map(|t| t[i]).sum();
            let sign = mass.signum();
            let (mut sum, mut n) = (0f32, 0u32);
            for t in taus {
                if t[i] != 0.0 && t[i].signum() == sign {
                    sum += t[i];
                    n += 1;
                }
            }
            if n > 0 {
                *o += lambda * sum / n as f32;
            }
        }
        Ok(out)
    }
}

fn infallible<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// Apply `merge` to one tensor. `base` is the anchor; the linear method may list the base
/// among its models, in which case the caller passes the base again in `models`.
pub fn apply(merge: &Merge, base: &[f32], models: &[&[f32]], seed_key: &str) -> Vec<f32> {
    debug_assert!(models.iter().all(|m| m.len() == base.len()));
    match merge {
        Merge::Linear { weights, .. } => linear(models, weights),
        Merge::Slerp { t, .. } => slerp(models[0], models[1], *t as f32),
        _ => infallible(methods::apply(&Host, merge, base, models, seed_key).expect("every other method is written over TensorOps")),
    }
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

/// Keep the `keep` largest-magnitude entries of `tau`, zero the rest.
fn trim_to(tau: &mut [f32], keep: usize) {
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

    fn task_arithmetic(base: &[f32], models: &[&[f32]], lambda: f32) -> Vec<f32> {
        infallible(methods::task_arithmetic(&Host, base, models, lambda))
    }

    fn ties(base: &[f32], models: &[&[f32]], lambda: f32, density: f64) -> Vec<f32> {
        infallible(methods::ties(&Host, base, models, lambda, density))
    }

    fn dare(base: &[f32], models: &[&[f32]], lambda: f32, density: f64, seed: u64, seed_key: &str) -> Vec<f32> {
        infallible(methods::dare(&Host, base, models, lambda, density, seed, seed_key))
    }

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
