//! Merges computed where the evaluator's tensors live (a GPU, or the CPU), from source
//! tensors already resident there: [`crate::merge::methods`]' definitions (the writer's)
//! over candle tensors, so that on the CPU the values are bit-identical in f32 to what the
//! writer writes (tested), and a candidate layer on a GPU costs a few kernels instead of a
//! host pass over every source tensor.
//!
//! Each step keeps the host's order of operations: differences `w − b` and updates
//! `o + s·d`, `where` instead of adding zero (so even the sign of a zero matches), TIES'
//! top-k threshold found by bisection on the magnitudes' bit patterns (exact, no sort) with
//! the host's tie rule, DARE's mask drawn from the writer's seekable stream.

use candle_core::{DType, Device, Tensor};

use crate::merge::{self, methods, TensorOps};
use crate::recipe::Merge;

type CResult<T> = candle_core::Result<T>;

/// Whether [`apply`] computes `merge` (the registry's `on_device`: linear and SLERP stay on
/// the host path).
pub fn supports(merge: &Merge) -> bool {
    merge.info().on_device
}

/// `merge` of one tensor: `base` is the anchor, `models[j]` the j-th model the merge lists,
/// any dtype and shape (all equal); returns f32 of the same shape. `seed_key` is the tensor's
/// name (DARE's mask depends on it). Errors on a method [`supports`] rejects.
pub fn apply(merge: &Merge, base: &Tensor, models: &[Tensor], seed_key: &str) -> CResult<Tensor> {
    let shape = base.shape().clone();
    let b = flat(base)?;
    let ops = OnDevice { device: base.device() };
    match methods::apply(&ops, merge, &b, models, seed_key) {
        Some(out) => out?.reshape(shape),
        None => Err(candle_core::Error::Msg(format!("{} merges run on the host", merge.method_name()))),
    }
}

/// A source tensor as a flat f32 tensor.
fn flat(t: &Tensor) -> CResult<Tensor> {
    t.flatten_all()?.to_dtype(DType::F32)
}

fn scalar(v: f32, device: &Device) -> CResult<Tensor> {
    Tensor::new(v, device)
}

/// [`TensorOps`] over candle tensors on one device.
struct OnDevice<'a> {
    device: &'a Device,
}

impl TensorOps for OnDevice<'_> {
    type Source = Tensor;
    type Tensor = Tensor;
    type Mask = Tensor;
    type Error = candle_core::Error;

    fn len(&self, t: &Tensor) -> usize {
        t.elem_count()
    }

    fn start(&self, base: &Tensor) -> CResult<Tensor> {
        flat(base)
    }

    fn task_vector(&self, w: &Tensor, b: &Tensor) -> CResult<Tensor> {
        flat(w)? - flat(b)?
    }

    fn add_task_vector(&self, out: Tensor, w: &Tensor, b: &Tensor, s: f32, keep: Option<&Tensor>) -> CResult<Tensor> {
        let d = self.task_vector(w, b)?;
        let updated = (&out + d.broadcast_mul(&scalar(s, self.device)?)?)?;
        match keep {
            None => Ok(updated),
            Some(keep) => keep.where_cond(&updated, &out),
        }
    }

    /// Drawn on the host from the writer's stream in parallel chunks, then uploaded (a byte
    /// per entry).
    fn keep_mask(&self, n: usize, seed: u64, seed_key: &str, j: usize, density: f64) -> CResult<Tensor> {
        let mut mask = vec![0u8; n];
        let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1).max(1);
        let per = n.div_ceil(threads).div_ceil(MASK_CHUNK).max(1) * MASK_CHUNK;
        std::thread::scope(|s| {
            for (c, chunk) in mask.chunks_mut(per).enumerate() {
                s.spawn(move || merge::dare_keep_mask(seed, seed_key, j, density, c * per, chunk));
            }
        });
        Tensor::from_vec(mask, n, self.device)
    }

    fn trim(&self, tau: Tensor, keep: usize) -> CResult<Tensor> {
        trim(&tau, keep)
    }

    fn elect(&self, b: &Tensor, taus: &[Tensor], lambda: f32) -> CResult<Tensor> {
        let b = flat(b)?;
        let Some(first) = taus.first() else { return Ok(b) };
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
        for t in taus {
            let agrees = positive.where_cond(&t.gt(&zero)?, &t.lt(&zero)?)?;
            sum = (sum + agrees.where_cond(t, &zero)?)?;
            n = (n + agrees.where_cond(&one, &zero)?)?;
        }
        let update = (&b + sum.broadcast_mul(&scalar(lambda, self.device)?)?.div(&n)?)?;
        n.gt(&zero)?.where_cond(&update, &b)
    }
}

/// Number of entries of `mask` (u8) that are set.
fn count(mask: &Tensor) -> CResult<usize> {
    Ok(mask.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize)
}

/// `tau` with all but the `keep` largest-magnitude entries zeroed, ties at the threshold kept
/// in index order.
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

/// Most entries of one DARE mask chunk drawn per thread.
const MASK_CHUNK: usize = 1 << 20;

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
