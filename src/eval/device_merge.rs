//! Merges computed where the evaluator's tensors live (a GPU, or the CPU), from source
//! tensors already resident there, with tensor ops in f32. The method definitions are
//! [`crate::merge`]'s (the writer's): this module reproduces them operation for operation so
//! that on the CPU its values are bit-identical in f32 to what the writer writes (tested),
//! and a candidate layer on a GPU costs a few kernels instead of a host pass over every
//! source tensor.
//!
//! Each operation mirrors one line of the host code: differences `w − b` and updates
//! `o + λ·d` in the same order, `where` instead of adding zero (so even the sign of a zero
//! matches), TIES' top-k threshold found by bisection on the magnitudes' bit patterns (exact,
//! no sort) with the host's tie rule, DARE's mask drawn from the writer's seekable stream.

use candle_core::{DType, Device, Tensor};

use crate::merge;
use crate::recipe::Merge;

type CResult<T> = candle_core::Result<T>;

/// Whether [`apply`] computes `merge` (linear and SLERP stay on the host path).
pub fn supports(merge: &Merge) -> bool {
    matches!(merge, Merge::TaskArithmetic { .. } | Merge::Ties { .. } | Merge::Dare { .. })
}

/// `merge` of one tensor: `base` is the anchor, `models[j]` the j-th model the merge lists,
/// any dtype and shape (all equal); returns f32 of the same shape. `seed_key` is the tensor's
/// name (DARE's mask depends on it). Panics in debug builds on a method [`supports`] rejects.
pub fn apply(merge: &Merge, base: &Tensor, models: &[Tensor], seed_key: &str) -> CResult<Tensor> {
    let shape = base.shape().clone();
    let flat = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F32);
    let b = flat(base)?;
    let out = match merge {
        Merge::TaskArithmetic { lambda, .. } => task_arithmetic(&b, models, *lambda as f32, flat)?,
        Merge::Ties { lambda, density, .. } => ties(&b, models, *lambda as f32, *density, flat)?,
        Merge::Dare { lambda, density, seed, .. } => dare(&b, models, *lambda as f32, *density, *seed, seed_key, flat)?,
        Merge::Linear { .. } | Merge::Slerp { .. } => {
            debug_assert!(false, "device_merge::apply called for {merge:?}");
            return Err(candle_core::Error::Msg("linear and slerp merges run on the host".into()));
        }
    };
    out.reshape(shape)
}

fn scalar(v: f32, device: &Device) -> CResult<Tensor> {
    Tensor::new(v, device)
}

/// `o ← o + λ·(w − b)` for every model in order (host: `*o += lambda * (w - b)`).
fn task_arithmetic(b: &Tensor, models: &[Tensor], lambda: f32, flat: impl Fn(&Tensor) -> CResult<Tensor>) -> CResult<Tensor> {
    let l = scalar(lambda, b.device())?;
    let mut out = b.clone();
    for m in models {
        let d = (flat(m)? - b)?;
        out = (out + d.broadcast_mul(&l)?)?;
    }
    Ok(out)
}

/// Number of entries of `mask` (u8) that are set.
fn count(mask: &Tensor) -> CResult<usize> {
    Ok(mask.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize)
}

/// `tau` with all but the `keep` largest-magnitude entries zeroed, ties at the threshold kept
/// in index order (the host's `trim_to_density`).
fn trim(tau: &Tensor, keep: usize) -> CResult<Tensor> {
    let n = tau.elem_count();
    if keep >= n {
        return Ok(tau.clone());
    }
    let zeros = tau.zeros_like()?;
    if keep == 0 {
        return Ok(zeros);
    }
    let mag = tau.abs()?;
    let dev = tau.device();
    // Non-negative floats order like their bit patterns: the keep-th largest magnitude is the
    // largest t with #(|tau| >= t) >= keep, found by bisection over the bits (exact).
    let (mut lo, mut hi) = (0u32, f32::INFINITY.to_bits());
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if count(&mag.ge(&scalar(f32::from_bits(mid), dev)?.broadcast_as(mag.shape())?)?)? >= keep {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let thr = scalar(f32::from_bits(lo), dev)?.broadcast_as(mag.shape())?;
    let above = mag.gt(&thr)?;
    let at = mag.eq(&thr)?;
    let need = keep - count(&above)?;
    let at_kept = if count(&at)? == need {
        at
    } else {
        // The first `need` entries at the threshold: the shortest prefix holding that many.
        let (mut lo, mut hi) = (need, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if count(&at.narrow(0, 0, mid)?)? >= need {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let rest = Tensor::zeros(n - lo, DType::U8, dev)?;
        Tensor::cat(&[&at.narrow(0, 0, lo)?, &rest], 0)?
    };
    let kept = above.maximum(&at_kept)?;
    kept.where_cond(tau, &zeros)
}

/// TIES: trim each task vector, elect the sign by total mass, add λ × the mean of the
/// agreeing non-zero entries (host: `ties`).
fn ties(b: &Tensor, models: &[Tensor], lambda: f32, density: f64, flat: impl Fn(&Tensor) -> CResult<Tensor>) -> CResult<Tensor> {
    let keep = merge::ties_keep_count(b.elem_count(), density);
    let mut taus = Vec::with_capacity(models.len());
    for m in models {
        taus.push(trim(&(flat(m)? - b)?, keep)?);
    }
    let Some(first) = taus.first() else { return Ok(b.clone()) };
    let mut mass = first.clone();
    for t in &taus[1..] {
        mass = (mass + t)?;
    }
    // signum(mass) is +1 for mass >= +0; a −0 mass only arises when every entry is zero,
    // and then nothing is selected either way.
    let zero = b.zeros_like()?;
    let positive = mass.ge(&zero)?;
    let mut sum = zero.clone();
    let mut n = zero.clone();
    let one = zero.ones_like()?;
    for t in &taus {
        let agrees = positive.where_cond(&t.gt(&zero)?, &t.lt(&zero)?)?;
        sum = (sum + agrees.where_cond(t, &zero)?)?;
        n = (n + agrees.where_cond(&one, &zero)?)?;
    }
    let update = (b + sum.broadcast_mul(&scalar(lambda, b.device())?)?.div(&n)?)?;
    n.gt(&zero)?.where_cond(&update, b)
}

/// Most entries of one DARE mask chunk drawn per thread.
const MASK_CHUNK: usize = 1 << 20;

/// DARE's keep mask of model `j` (u8, 1 = keep), drawn on the host from the writer's stream
/// in parallel chunks, then uploaded (a byte per entry).
fn dare_mask(n: usize, seed: u64, seed_key: &str, j: usize, density: f64, device: &Device) -> CResult<Tensor> {
    let mut mask = vec![0u8; n];
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1).max(1);
    let per = n.div_ceil(threads).div_ceil(MASK_CHUNK).max(1) * MASK_CHUNK;
    std::thread::scope(|s| {
        for (c, chunk) in mask.chunks_mut(per).enumerate() {
            s.spawn(move || merge::dare_keep_mask(seed, seed_key, j, density, c * per, chunk));
        }
    });
    Tensor::from_vec(mask, n, device)
}

/// DARE: `o ← o + (λ/density)·(w − b)` where the model's mask keeps the entry (host: `dare`).
fn dare(
    b: &Tensor,
    models: &[Tensor],
    lambda: f32,
    density: f64,
    seed: u64,
    seed_key: &str,
    flat: impl Fn(&Tensor) -> CResult<Tensor>,
) -> CResult<Tensor> {
    let scale = scalar(merge::dare_scale(lambda, density), b.device())?;
    let mut out = b.clone();
    for (j, m) in models.iter().enumerate() {
        let d = (flat(m)? - b)?;
        let keep = dare_mask(b.elem_count(), seed, seed_key, j, density, b.device())?;
        let updated = (&out + d.broadcast_mul(&scale)?)?;
        out = keep.where_cond(&updated, &out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::{self, Dtype};
    use rand::{Rng, SeedableRng};

    fn merges() -> Vec<Merge> {
        let models = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        vec![
            Merge::TaskArithmetic { models: models.clone(), lambda: 0.7 },
            Merge::TaskArithmetic { models: models.clone(), lambda: -0.35 },
            Merge::Ties { models: models.clone(), lambda: 1.1, density: 0.4 },
            Merge::Ties { models: models.clone(), lambda: 0.9, density: 0.93 },
            Merge::Ties { models: models.clone(), lambda: 1.0, density: 1.0 },
            Merge::Dare { models: models.clone(), lambda: 0.8, density: 0.3, seed: 11 },
            Merge::Dare { models, lambda: 1.3, density: 0.9, seed: 2 },
        ]
    }

    /// Random bf16-valued tensors (many equal magnitudes, as in real bf16 checkpoints), some
    /// entries shared with the base and some −0.0, so ties, zeros and signs are all exercised.
    fn family(n: usize, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let round = |v: f32| dtype::to_f32(Dtype::Bf16, &dtype::from_f32(Dtype::Bf16, &[v]))[0];
        let base: Vec<f32> = (0..n).map(|i| if i % 97 == 0 { -0.0 } else { round(rng.random_range(-0.05f32..0.05)) }).collect();
        let models = (0..3)
            .map(|_| base.iter().map(|&b| if rng.random_bool(0.2) { b } else { round(b + rng.random_range(-0.01f32..0.01)) }).collect())
            .collect();
        (base, models)
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn cpu_values_are_bit_identical_to_the_writers_merge() {
        for (n, seed) in [(1usize, 1u64), (7, 2), (4096, 3), (30_011, 4)] {
            let (base, models) = family(n, seed);
            let refs: Vec<&[f32]> = models.iter().map(Vec::as_slice).collect();
            // Sources as the store holds them: bf16 on the device, like the checkpoints.
            let dev = |v: &[f32]| Tensor::from_slice(v, (n,), &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
            let b = dev(&base);
            let ms: Vec<Tensor> = models.iter().map(|m| dev(m)).collect();
            for m in merges() {
                let want = merge::apply(&m, &base, &refs, "model.layers.3.mlp.down_proj.weight");
                let got = apply(&m, &b, &ms, "model.layers.3.mlp.down_proj.weight").unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(bits(&got), bits(&want), "{m:?} at n = {n}");
            }
        }
    }

    #[test]
    fn ties_threshold_ties_are_kept_in_index_order() {
        // Magnitudes 1, 2, 2, 2, 3: keeping 3 takes 3 and the first two 2s.
        let base = vec![0f32; 5];
        let a = vec![2.0f32, -2.0, 1.0, 2.0, 3.0];
        let t = Tensor::from_slice(&a, 5, &Device::Cpu).unwrap();
        let trimmed = trim(&t, 3).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(trimmed, vec![2.0, -2.0, 0.0, 0.0, 3.0]);
        let m = Merge::Ties { models: vec!["a".into()], lambda: 1.0, density: 0.6 };
        assert_eq!(merge::apply(&m, &base, &[&a], "t"), trimmed);
    }

    #[test]
    fn shapes_are_kept_and_linear_is_left_to_the_host() {
        let b = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
        let m = Tensor::ones((3, 4), DType::F32, &Device::Cpu).unwrap();
        let ta = Merge::TaskArithmetic { models: vec!["a".into()], lambda: 0.5 };
        assert_eq!(apply(&ta, &b, &[m], "t").unwrap().dims(), &[3, 4]);
        assert!(!supports(&Merge::Linear { models: vec!["a".into()], weights: vec![1.0] }));
    }
}
