//! Applying a recipe rule to one tensor: the single place that decides what bytes or
//! values an output tensor has. The writer and the evaluator both call it.

use crate::checkpoint::{CheckpointError, Family, TensorView};
use crate::dtype::Dtype;
use crate::merge;
use crate::recipe::{Merge, Rule};

/// An output tensor: borrowed verbatim from a source, or computed (merged) in f32.
#[derive(Debug)]
pub enum Stitched<'a> {
    Verbatim(TensorView<'a>),
    Computed { shape: Vec<usize>, values: Vec<f32> },
}

impl Stitched<'_> {
    pub fn shape(&self) -> &[usize] {
        match self {
            Stitched::Verbatim(v) => &v.shape,
            Stitched::Computed { shape, .. } => shape,
        }
    }

    /// Values as f32 (decoding a verbatim tensor).
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Stitched::Verbatim(v) => v.to_f32(),
            Stitched::Computed { values, .. } => values,
        }
    }

    /// Bytes in `dtype`: verbatim bytes when the dtype already matches (no float round trip),
    /// otherwise one cast from f32.
    pub fn to_bytes(&self, dtype: Dtype) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Stitched::Verbatim(v) if v.dtype == dtype => std::borrow::Cow::Borrowed(v.data),
            Stitched::Verbatim(v) => std::borrow::Cow::Owned(crate::dtype::from_f32(dtype, &v.to_f32())),
            Stitched::Computed { values, .. } => std::borrow::Cow::Owned(crate::dtype::from_f32(dtype, values)),
        }
    }
}

fn model<'a>(family: &'a Family, name: &str) -> Result<&'a crate::checkpoint::Checkpoint, CheckpointError> {
    family.get(name).ok_or_else(|| CheckpointError::Incompatible(format!("the recipe names model `{name}`, which was not loaded")))
}

/// Produce tensor `tensor` (a source tensor name) under `rule`. `rows` truncates matrices
/// to their first rows (vocabulary alignment of embeddings and lm_head).
pub fn stitch<'a>(family: &'a Family, rule: &Rule, tensor: &str, rows: Option<usize>) -> Result<Stitched<'a>, CheckpointError> {
    let fetch = |name: &str| -> Result<TensorView<'a>, CheckpointError> {
        let v = model(family, name)?.view(tensor)?;
        Ok(match rows {
            Some(r) => v.first_rows(r),
            None => v,
        })
    };
    match rule {
        Rule::Take(m) => Ok(Stitched::Verbatim(fetch(m)?)),
        Rule::Merge(merge) => {
            let base = fetch(family.base_name())?;
            let shape = base.shape.clone();
            let base_vals = base.to_f32();
            let mut sources = Vec::with_capacity(merge.models().len());
            for m in merge.models() {
                let v = fetch(m)?;
                if v.shape != shape {
                    return Err(CheckpointError::BadShape { model: m.clone(), tensor: tensor.into(), found: v.shape, expected: shape });
                }
                sources.push(if m == family.base_name() { base_vals.clone() } else { v.to_f32() });
            }
            let refs: Vec<&[f32]> = sources.iter().map(Vec::as_slice).collect();
            Ok(Stitched::Computed { values: merge::apply(merge, &base_vals, &refs, tensor), shape })
        }
    }
}

/// True when `merge` reads the base only as its anchor (see [`crate::merge::MethodInfo`]).
pub fn anchors_on_base(merge: &Merge) -> bool {
    merge.info().anchors_on_base
}
