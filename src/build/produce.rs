//! Producing one output tensor's bytes with bounded memory.
//!
//! * A taken tensor already in the output dtype is copied from the memory map as is (no
//!   float round trip), the same bytes `stitch::Stitched::to_bytes` would borrow.
//! * A taken tensor in another dtype, and an element-wise merge (task arithmetic, linear),
//!   is computed in f32 chunk by chunk and cast once, so memory stays a few MiB whatever
//!   the tensor size.
//! * Merges that need the whole tensor (SLERP's norms, TIES's top-k, DARE's per-tensor
//!   random stream) go through `stitch::stitch` on the whole tensor.
//!
//! After each tensor the source pages are released, so the resident set does not grow
//! with the checkpoint size.

use crate::checkpoint::{CheckpointError, Family, TensorView};
use crate::dtype;
use crate::merge;
use crate::recipe::{Merge, Rule};
use crate::stitch;

use super::plan::PlannedTensor;
use super::shard_writer::ShardWriter;
use super::BuildError;

/// Elements per chunk of f32 work (4 MiB per operand).
const CHUNK: usize = 1 << 20;

fn view<'a>(family: &'a Family, model: &str, t: &PlannedTensor) -> Result<TensorView<'a>, BuildError> {
    let ckpt = family
        .get(model)
        .ok_or_else(|| BuildError::Recipe(format!("the recipe names model `{model}`, which is not in the family")))?;
    let v = ckpt.view(&t.source)?;
    let v = match t.rows {
        Some(r) => v.first_rows(r),
        None => v,
    };
    if v.shape != t.shape {
        return Err(CheckpointError::BadShape { model: ckpt.name.clone(), tensor: t.source.clone(), found: v.shape, expected: t.shape.clone() }.into());
    }
    Ok(v)
}

fn decode(v: &TensorView<'_>, from: usize, to: usize) -> Vec<f32> {
    let s = v.dtype.size();
    dtype::to_f32(v.dtype, &v.data[from * s..to * s])
}

/// Whether `merge` is element-wise, so chunks can be merged independently with identical results.
fn elementwise(m: &Merge) -> bool {
    matches!(m, Merge::TaskArithmetic { .. } | Merge::Linear { .. })
}

/// Write tensor `t` into `w`, then release the source pages it read.
pub fn write_tensor(family: &Family, t: &PlannedTensor, w: &mut ShardWriter) -> Result<(), BuildError> {
    let io = |e: std::io::Error| BuildError::Io { path: format!("output tensor `{}`", t.name), source: e };
    let models: Vec<String> = match &t.rule {
        Rule::Take(m) => vec![m.clone()],
        Rule::Merge(m) => std::iter::once(family.base_name().to_string()).chain(m.models().iter().cloned()).collect(),
    };
    match &t.rule {
        Rule::Take(m) => {
            let v = view(family, m, t)?;
            if v.dtype == t.dtype {
                w.write(v.data).map_err(io)?;
            } else {
                for from in (0..t.numel()).step_by(CHUNK) {
                    let to = (from + CHUNK).min(t.numel());
                    w.write(&dtype::from_f32(t.dtype, &decode(&v, from, to))).map_err(io)?;
                }
            }
        }
        Rule::Merge(m) if elementwise(m) => {
            let base = view(family, family.base_name(), t)?;
            let sources = m.models().iter().map(|name| view(family, name, t)).collect::<Result<Vec<_>, _>>()?;
            for from in (0..t.numel()).step_by(CHUNK) {
                let to = (from + CHUNK).min(t.numel());
                let b = decode(&base, from, to);
                let vals: Vec<Vec<f32>> = sources.iter().map(|s| decode(s, from, to)).collect();
                let refs: Vec<&[f32]> = vals.iter().map(Vec::as_slice).collect();
                let out = merge::apply(m, &b, &refs, &t.source);
                w.write(&dtype::from_f32(t.dtype, &out)).map_err(io)?;
            }
        }
        Rule::Merge(_) => {
            let s = stitch::stitch(family, &t.rule, &t.source, t.rows)?;
            if s.shape() != t.shape.as_slice() {
                return Err(BuildError::Verify(format!("`{}` was computed with shape {:?}, planned {:?}", t.name, s.shape(), t.shape)));
            }
            w.write(&s.to_bytes(t.dtype)).map_err(io)?;
        }
    }
    w.end_tensor().map_err(io)?;
    for m in &models {
        if let Some(c) = family.get(m) {
            c.release(&t.source);
        }
    }
    Ok(())
}
