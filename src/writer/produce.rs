//! Producing one output tensor's bytes with bounded memory.
//!
//! * A taken tensor already in the output dtype is copied as stored (no float round trip),
//!   the same bytes `stitch::Stitched::to_bytes` would borrow from the memory map: by the
//!   kernel, file to file (`copy_file_range`, what `cp` does), which on a cold page cache
//!   measured faster than faulting the map in (see /work/notes/core.md); the map-streaming
//!   path is kept for the unit test that checks both give identical bytes.
//! * A taken tensor in another dtype, and an element-wise merge (task arithmetic, linear),
//!   is computed in f32 chunk by chunk and cast once, so memory stays a few MiB whatever
//!   the tensor size.
//! * Merges that need the whole tensor (SLERP's norms, TIES's top-k, DARE's per-tensor
//!   random stream) go through `stitch::stitch` on the whole tensor.
//!
//! Source pages are released chunk by chunk as they are consumed, so the resident set
//! stays a few tens of MiB whatever the checkpoint or tensor size (whole-tensor merges
//! excepted: they hold each operand in f32).

use crate::checkpoint::{Checkpoint, CheckpointError, Family, TensorView};
use crate::dtype;
use crate::merge;
use crate::recipe::{Merge, Rule};
use crate::stitch;

use super::shard_writer::ShardWriter;
use super::BuildError;
use crate::layout::OutputTensor;

/// Elements per chunk of f32 work (4 MiB per operand).
const CHUNK: usize = 1 << 20;

/// Bytes per chunk of a verbatim copy: large writes, few syscalls, bounded resident pages.
const COPY_CHUNK: usize = 64 << 20;

fn view<'a>(family: &'a Family, model: &str, t: &OutputTensor) -> Result<TensorView<'a>, BuildError> {
    let ckpt = family.get(model).ok_or_else(|| BuildError::Recipe(format!("the recipe names model `{model}`, which is not in the family")))?;
    let v = ckpt.view(&t.source)?;
    let v = match t.rows {
        Some(r) => v.first_rows(r),
        None => v,
    };
    if v.shape != t.shape {
        return Err(
            CheckpointError::BadShape { model: ckpt.name.clone(), tensor: t.source.clone(), found: v.shape, expected: t.shape.clone() }.into()
        );
    }
    Ok(v)
}

fn decode(v: &TensorView<'_>, from: usize, to: usize) -> Vec<f32> {
    let s = v.dtype.size();
    dtype::to_f32(v.dtype, &v.data[from * s..to * s])
}

/// Whether `merge` is element-wise, so chunks can be merged independently with identical results.
fn elementwise(m: &Merge) -> bool {
    m.info().elementwise
}

fn model_ckpt<'a>(family: &'a Family, model: &str) -> Result<&'a Checkpoint, BuildError> {
    family.get(model).ok_or_else(|| BuildError::Recipe(format!("the recipe names model `{model}`, which is not in the family")))
}

/// Bytes the kernel is asked to read ahead of the consumer, per source model.
const READ_AHEAD: usize = 64 << 20;

/// Sequential consumption of one source tensor: keeps a read-ahead window in flight and
/// releases pages behind the consumer.
struct Cursor<'a> {
    ckpt: &'a Checkpoint,
    tensor: &'a str,
    elem: usize,
    ahead_to: usize,
}

impl<'a> Cursor<'a> {
    fn new(family: &'a Family, model: &str, tensor: &'a str) -> Result<Self, BuildError> {
        let ckpt = family.get(model).ok_or_else(|| BuildError::Recipe(format!("the recipe names model `{model}`, which is not in the family")))?;
        let elem = ckpt.info(tensor)?.dtype.size();
        Ok(Self { ckpt, tensor, elem, ahead_to: 0 })
    }

    /// The consumer is about to read elements up to `to`: keep the window ahead of it.
    fn advance(&mut self, to: usize) {
        let pos = to.saturating_mul(self.elem);
        if pos + READ_AHEAD / 2 >= self.ahead_to {
            let end = pos.saturating_add(READ_AHEAD);
            self.ckpt.prefetch_part(self.tensor, self.ahead_to.max(pos.saturating_sub(pos % READ_AHEAD)), end);
            self.ahead_to = end;
        }
    }

    /// Elements `from..to` are consumed.
    fn release(&self, from: usize, to: usize) {
        self.ckpt.release_part(self.tensor, from.saturating_mul(self.elem), to.saturating_mul(self.elem));
    }
}

/// One merge operand read from its shard file in chunks.
struct OperandReader {
    file: std::fs::File,
    path: std::path::PathBuf,
    offset: u64,
    dtype: crate::dtype::Dtype,
    buf: Vec<u8>,
}

impl OperandReader {
    fn new(family: &Family, model: &str, t: &OutputTensor) -> Result<Self, BuildError> {
        let dtype = view(family, model, t)?.dtype; // also checks the shape
        let (path, offset, _) = model_ckpt(family, model)?.file_range(&t.source)?;
        let file = std::fs::File::open(path).map_err(|e| BuildError::Io { path: path.display().to_string(), source: e })?;
        Ok(Self { file, path: path.to_path_buf(), offset, dtype, buf: Vec::new() })
    }

    /// Elements `from..to` decoded to f32 into `out` (resized to fit).
    fn read_into(&mut self, from: usize, to: usize, out: &mut Vec<f32>) -> Result<(), BuildError> {
        use std::os::unix::fs::FileExt;
        let s = self.dtype.size();
        self.buf.resize((to - from) * s, 0);
        self.file
            .read_exact_at(&mut self.buf, self.offset + (from * s) as u64)
            .map_err(|e| BuildError::Io { path: self.path.display().to_string(), source: e })?;
        out.resize(to - from, 0.0);
        dtype::to_f32_into(self.dtype, &self.buf, out);
        Ok(())
    }
}

/// A merge as a three-stage pipeline over chunks: a reader thread per operand reads and
/// decodes chunk k+2, a merge thread merges and encodes chunk k+1 (`merge`), and the
/// caller's thread writes chunk k (`write`), so the disk, the f32 work and the writes
/// overlap on both cores instead of taking turns. At most `QUEUE` chunks wait between
/// two stages; buffers go back to their reader to be filled again.
fn merge_pipelined(
    readers: Vec<OperandReader>,
    n: usize,
    chunk: usize,
    merge: impl Fn(&[f32], &[&[f32]], &mut Vec<u8>) + Send,
    mut write: impl FnMut(&[u8]) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
    const QUEUE: usize = 2;
    let stopped = || BuildError::Verify("a merge pipeline stage stopped early".into());
    std::thread::scope(|scope| {
        // Per operand: its decoded chunks, and the channel that hands spent buffers back.
        type Operand = (Receiver<Result<Vec<f32>, BuildError>>, Sender<Vec<f32>>);
        let mut operands: Vec<Operand> = Vec::new();
        for mut reader in readers {
            let (tx, rx) = sync_channel::<Result<Vec<f32>, BuildError>>(QUEUE);
            let (back_tx, back_rx) = channel::<Vec<f32>>();
            scope.spawn(move || {
                for from in (0..n).step_by(chunk) {
                    let to = from.saturating_add(chunk).min(n);
                    let mut buf = back_rx.try_recv().unwrap_or_default();
                    let vals = reader.read_into(from, to, &mut buf).map(|()| buf);
                    let failed = vals.is_err();
                    // A closed channel means the consumer stopped (on an error of its own).
                    if tx.send(vals).is_err() || failed {
                        break;
                    }
                }
            });
            operands.push((rx, back_tx));
        }
        let (out_tx, out_rx) = sync_channel::<Result<Vec<u8>, BuildError>>(QUEUE);
        let (spent_tx, spent_rx) = channel::<Vec<u8>>();
        scope.spawn(move || {
            for _ in (0..n).step_by(chunk) {
                let mut vals = Vec::with_capacity(operands.len());
                for (rx, _) in &operands {
                    // A reader only hangs up early after sending its error, which comes first.
                    match rx.recv().map_err(|_| stopped()).and_then(|r| r) {
                        Ok(v) => vals.push(v),
                        Err(e) => {
                            let _ = out_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let refs: Vec<&[f32]> = vals[1..].iter().map(Vec::as_slice).collect();
                let mut bytes = spent_rx.try_recv().unwrap_or_default();
                merge(&vals[0], &refs, &mut bytes);
                if out_tx.send(Ok(bytes)).is_err() {
                    return;
                }
                for ((_, back), v) in operands.iter().zip(vals) {
                    let _ = back.send(v);
                }
            }
        });
        for _ in (0..n).step_by(chunk) {
            let bytes = out_rx.recv().map_err(|_| stopped())??;
            write(&bytes)?;
            let _ = spent_tx.send(bytes);
        }
        Ok(())
    })
}

/// Write tensor `t` into `w`, releasing the source pages as they are consumed. A tensor
/// with a fused heal map is computed whole in f32 ([`crate::heal::fuse`], as the evaluator
/// computes it) and cast once; `maps` holds the recipe's maps by name.
pub fn write_tensor(family: &Family, t: &OutputTensor, maps: &crate::heal::Maps, w: &mut ShardWriter) -> Result<(), BuildError> {
    if let Some(f) = &t.fused {
        let io = |e: std::io::Error| BuildError::Io { path: format!("output tensor `{}`", t.name), source: e };
        let map = maps.get(&f.name).ok_or_else(|| BuildError::Recipe(format!("the heal maps file has no map `{}`", f.name)))?;
        let s = stitch::stitch(family, &t.rule, &t.source, t.rows)?;
        let shape = s.shape().to_vec();
        if shape != t.shape {
            return Err(BuildError::Verify(format!("`{}` was computed with shape {:?}, planned {:?}", t.name, shape, t.shape)));
        }
        let fused = crate::heal::fuse(&s.into_f32(), &shape, map)?;
        w.write(&dtype::from_f32(t.dtype, &fused)).map_err(io)?;
        return w.end_tensor().map_err(io);
    }
    write_tensor_in_chunks(family, t, w, CHUNK, COPY_CHUNK, true)
}

/// [`write_tensor`] with explicit chunk sizes (elements of f32 work, bytes of verbatim copy).
/// `kernel_copy` lets the kernel copy verbatim tensors file to file; without it they are
/// copied from the memory map.
fn write_tensor_in_chunks(
    family: &Family,
    t: &OutputTensor,
    w: &mut ShardWriter,
    chunk: usize,
    copy_chunk: usize,
    kernel_copy: bool,
) -> Result<(), BuildError> {
    let io = |e: std::io::Error| BuildError::Io { path: format!("output tensor `{}`", t.name), source: e };
    let n = t.numel();
    match &t.rule {
        Rule::Take(m) if kernel_copy && view(family, m, t)?.dtype == t.dtype => {
            // Verbatim: the kernel copies the stored bytes (a prefix when rows are truncated).
            let (path, offset, _) = model_ckpt(family, m)?.file_range(&t.source)?;
            w.copy_from_file(path, offset, t.nbytes() as u64).map_err(io)?;
        }
        Rule::Take(m) => {
            let v = view(family, m, t)?;
            let mut cur = Cursor::new(family, m, &t.source)?;
            // Verbatim: copy bytes; otherwise decode, cast once.
            let step = if v.dtype == t.dtype { (copy_chunk / v.dtype.size()).max(1) } else { chunk };
            for from in (0..n).step_by(step) {
                let to = from.saturating_add(step).min(n);
                cur.advance(to);
                if v.dtype == t.dtype {
                    let s = v.dtype.size();
                    w.write(&v.data[from * s..to * s]).map_err(io)?;
                } else {
                    w.write(&dtype::from_f32(t.dtype, &decode(&v, from, to))).map_err(io)?;
                }
                cur.release(from, to);
            }
        }
        Rule::Merge(m) if elementwise(m) => {
            // Operands are read with positioned reads (sequential per file, so the kernel's
            // readahead streams them), which measured faster than faulting maps in on a cold cache.
            let readers = std::iter::once(family.base_name())
                .chain(m.models().iter().map(String::as_str))
                .map(|name| OperandReader::new(family, name, t))
                .collect::<Result<Vec<_>, _>>()?;
            let merge = |b: &[f32], refs: &[&[f32]], bytes: &mut Vec<u8>| dtype::from_f32_into(t.dtype, &merge::apply(m, b, refs, &t.source), bytes);
            merge_pipelined(readers, n, chunk, merge, |bytes| w.write(bytes).map_err(io))?;
        }
        Rule::Merge(m) => {
            let s = stitch::stitch(family, &t.rule, &t.source, t.rows)?;
            if s.shape() != t.shape.as_slice() {
                return Err(BuildError::Verify(format!("`{}` was computed with shape {:?}, planned {:?}", t.name, s.shape(), t.shape)));
            }
            w.write(&s.to_bytes(t.dtype)).map_err(io)?;
            for name in std::iter::once(family.base_name()).chain(m.models().iter().map(String::as_str)) {
                Cursor::new(family, name, &t.source)?.release(0, n);
            }
        }
    }
    w.end_tensor().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::{EdgePolicy, LayerRule, Recipe, SourceModel};
    use crate::testkit::fixture::{self, TinySpec};
    use crate::writer::plan::Plan;

    /// Chunked production must give exactly the bytes of the whole-tensor computation
    /// (`stitch`), for chunk sizes that split rows at odd places.
    #[test]
    fn chunked_output_equals_whole_tensor_output() {
        let tmp = std::env::temp_dir().join(format!("hft-produce-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let spec = TinySpec { dtype: crate::dtype::Dtype::F16, ..TinySpec::llama() };
        let (base, sibs, _) = fixture::write_family(&tmp, &spec, 2, 5).unwrap();
        let src = |n: &str, d: &std::path::Path| SourceModel::local(n, d);
        let rules = [
            Rule::Take("b".into()),
            Rule::Merge(Merge::TaskArithmetic { models: vec!["s1".into(), "s2".into()], lambda: 0.7 }),
            Rule::Merge(Merge::Linear { models: vec!["b".into(), "s2".into()], weights: vec![1.0, 3.0] }),
        ];
        let layers = rules.iter().enumerate().map(|(i, r)| LayerRule { from: i, rule: r.clone() }).collect();
        let mut recipe = Recipe::new("llama", 4, src("b", &base), vec![src("s1", &sibs[0]), src("s2", &sibs[1])], layers, EdgePolicy::FollowLayers);
        for out_dtype in [crate::dtype::Dtype::F16, crate::dtype::Dtype::Bf16] {
            recipe.dtype = Some(out_dtype);
            let family = Family::open_for_recipe(&recipe, |m| Ok(m.source.to_string().into())).unwrap();
            let plan = Plan::new(crate::layout::Layout::for_family(&family, &recipe).unwrap(), u64::MAX);
            for t in &plan.layout.tensors {
                let layout = [(t.name.as_str(), t.dtype, t.shape.as_slice())];
                let whole = stitch::stitch(&family, &t.rule, &t.source, t.rows).unwrap().to_bytes(t.dtype).into_owned();
                for (chunk, copy, kernel) in [(7, 10, false), (1000, 3, false), (usize::MAX / 4, usize::MAX / 4, false), (7, 10, true)] {
                    let path = tmp.join("t.safetensors");
                    let mut w = ShardWriter::create(&path, &layout).unwrap();
                    write_tensor_in_chunks(&family, t, &mut w, chunk, copy, kernel).unwrap();
                    w.finish().unwrap();
                    let bytes = std::fs::read(&path).unwrap();
                    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
                    assert_eq!(
                        st.tensor(&t.name).unwrap().data(),
                        &whole[..],
                        "{} ({out_dtype}, chunk {chunk}/{copy}, kernel copy {kernel})",
                        t.name
                    );
                }
            }
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
