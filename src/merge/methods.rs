//! The arithmetic of the methods that run on the host and on the evaluator's device, written
//! once over [`TensorOps`]: the writer (host) and the evaluator (device) call the same
//! functions, so a candidate scores the tensors the writer will write, bit for bit in f32
//! (pinned by `eval::device_merge`'s tests). A backend supplies only the steps below; each
//! is one formula, stated in its doc comment, that the backend computes entry by entry in f32.

use std::borrow::Borrow;

use super::Merge;

/// The tensor steps the methods are made of. Every step computes each entry in f32 in the
/// order its doc comment writes it, so two backends agree bit for bit.
pub trait TensorOps {
    /// A source tensor as the backend holds it (the host: f32 values; a device: a tensor of
    /// any dtype and shape, flattened by the steps that read it).
    type Source: ?Sized;
    /// A flat f32 working tensor.
    type Tensor;
    /// One keep decision per entry.
    type Mask;
    type Error;

    /// Number of entries of `t`.
    fn len(&self, t: &Self::Source) -> usize;
    /// A copy of the anchor to accumulate into.
    fn start(&self, base: &Self::Source) -> Result<Self::Tensor, Self::Error>;
    /// The task vector `w − b`.
    fn task_vector(&self, w: &Self::Source, b: &Self::Source) -> Result<Self::Tensor, Self::Error>;
    /// `o + s·(w − b)` for every entry (only where `keep` is set, if given; `o` elsewhere).
    fn add_task_vector(
        &self,
        out: Self::Tensor,
        w: &Self::Source,
        b: &Self::Source,
        s: f32,
        keep: Option<&Self::Mask>,
    ) -> Result<Self::Tensor, Self::Error>;
    /// DARE's keep decisions for model `j` of tensor `seed_key` (see
    /// [`super::dare_keep_mask`]: every backend draws the same stream).
    fn keep_mask(&self, len: usize, seed: u64, seed_key: &str, j: usize, density: f64) -> Result<Self::Mask, Self::Error>;
    /// `tau` with all but its `keep` largest magnitudes zeroed; among entries at the
    /// smallest kept magnitude the first ones in index order are kept.
    fn trim(&self, tau: Self::Tensor, keep: usize) -> Result<Self::Tensor, Self::Error>;
    /// TIES' election: per entry, the sign of `Σ_j tau_j` (+ for a zero sum) elects the
    /// non-zero `tau_j` of that sign; the entry is `b + λ·Σ elected / #elected`, or `b`
    /// when none is elected.
    fn elect(&self, b: &Self::Source, taus: &[Self::Tensor], lambda: f32) -> Result<Self::Tensor, Self::Error>;
}

/// `merge` of one tensor by `ops`: `base` is the anchor, `models[j]` the j-th model the merge
/// lists. `None` for a method written for the host only (see
/// [`super::MethodInfo::on_device`]).
pub fn apply<O: TensorOps, M: Borrow<O::Source>>(
    ops: &O,
    merge: &Merge,
    base: &O::Source,
    models: &[M],
    seed_key: &str,
) -> Option<Result<O::Tensor, O::Error>> {
    Some(match merge {
        Merge::TaskArithmetic { lambda, .. } => task_arithmetic(ops, base, models, *lambda as f32),
        Merge::Ties { lambda, density, .. } => ties(ops, base, models, *lambda as f32, *density),
        Merge::Dare { lambda, density, seed, .. } => dare(ops, base, models, *lambda as f32, *density, *seed, seed_key),
        Merge::Linear { .. } | Merge::Slerp { .. } => return None,
    })
}

/// Task arithmetic: `base + λ·Σ_j (W_j − base)`, adding one task vector at a time.
pub fn task_arithmetic<O: TensorOps, M: Borrow<O::Source>>(ops: &O, base: &O::Source, models: &[M], lambda: f32) -> Result<O::Tensor, O::Error> {
    let mut out = ops.start(base)?;
    for m in models {
        out = ops.add_task_vector(out, m.borrow(), base, lambda, None)?;
    }
    Ok(out)
}

/// How many entries of a task vector of `len` entries TIES keeps at `density`.
pub fn ties_keep_count(len: usize, density: f64) -> usize {
    (((len as f64) * density).round() as usize).min(len)
}

/// TIES-merging (Yadav et al. 2023): trim each task vector to its `density` fraction of
/// largest magnitudes, elect a sign per entry by total mass, add λ × the disjoint mean.
pub fn ties<O: TensorOps, M: Borrow<O::Source>>(ops: &O, base: &O::Source, models: &[M], lambda: f32, density: f64) -> Result<O::Tensor, O::Error> {
    let keep = ties_keep_count(ops.len(base), density);
    let mut taus = Vec::with_capacity(models.len());
    for m in models {
        taus.push(ops.trim(ops.task_vector(m.borrow(), base)?, keep)?);
    }
    if taus.is_empty() {
        return ops.start(base);
    }
    ops.elect(base, &taus, lambda)
}

/// The factor DARE multiplies a kept difference by: `λ / density`, computed as `λ · (1/density)`
/// in f32.
pub fn dare_scale(lambda: f32, density: f64) -> f32 {
    lambda * (1.0 / density) as f32
}

/// DARE (Yu et al. 2024): drop each task-vector entry with probability `1 − density`,
/// rescale the kept ones by `1/density`, then task arithmetic. The mask depends only on
/// (seed, tensor, model index).
pub fn dare<O: TensorOps, M: Borrow<O::Source>>(
    ops: &O,
    base: &O::Source,
    models: &[M],
    lambda: f32,
    density: f64,
    seed: u64,
    seed_key: &str,
) -> Result<O::Tensor, O::Error> {
    let scale = dare_scale(lambda, density);
    let mut out = ops.start(base)?;
    for (j, m) in models.iter().enumerate() {
        let keep = ops.keep_mask(ops.len(base), seed, seed_key, j, density)?;
        out = ops.add_task_vector(out, m.borrow(), base, scale, Some(&keep))?;
    }
    Ok(out)
}
