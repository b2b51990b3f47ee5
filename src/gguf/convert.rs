//! A checkpoint's tensors in llama.cpp's names, layout and types, written as one GGUF.

use std::path::Path;

use super::arch::{self, GgufArch};
use super::format::{self, TensorSpec, Value};
use super::metadata::{self, RopeScaling};
use super::quant::GgmlType;
use super::{tokenizer, FileType, GgufError, GgufFile};
use crate::arch::Role;
use crate::checkpoint::Checkpoint;

/// Where one GGUF tensor's values come from.
#[derive(Debug, Clone)]
enum Source {
    /// A checkpoint tensor, with the Q/K row permutation over this many heads when set.
    Tensor { name: String, permute_heads: Option<usize> },
    /// Llama 3 rope factors, computed from the config.
    RopeFreqs(Vec<f32>),
}

#[derive(Debug, Clone)]
struct Planned {
    gguf_name: String,
    shape: Vec<usize>,
    source: Source,
}

/// An opened model folder, ready to be written as GGUF of any type.
pub struct Model {
    checkpoint: Checkpoint,
    arch: &'static GgufArch,
    name: String,
    tokenizer: Vec<(String, Value)>,
    rope: RopeScaling,
    tensors: Vec<Planned>,
    params: u64,
}

impl Model {
    pub fn open(dir: &Path, name: &str) -> Result<Self, GgufError> {
        let checkpoint = Checkpoint::open(dir)?;
        let cfg = &checkpoint.config;
        let model_type = cfg.arch.model_type;
        let arch = GgufArch::for_model_type(model_type)
            .ok_or_else(|| GgufError::Unsupported { what: format!("model_type `{model_type}` yet (supported: {})", GgufArch::supported_list()) })?;
        let rope = metadata::rope_scaling(cfg, arch)?;
        let tokenizer = tokenizer::metadata(dir, checkpoint.embedding_rows(), arch.name == "llama")?;

        let a = cfg.arch;
        let tensor = |n: &str| Source::Tensor { name: n.to_string(), permute_heads: None };
        let mut tensors = Vec::new();
        let shape_of = |n: &str| checkpoint.info(n).map(|i| i.shape.clone());
        if let RopeScaling::Llama3(f) = &rope {
            tensors.push(Planned { gguf_name: arch::ROPE_FREQS.into(), shape: vec![f.len()], source: Source::RopeFreqs(f.clone()) });
        }
        tensors.push(Planned { gguf_name: arch::TOKEN_EMBD.into(), shape: shape_of(a.embed)?, source: tensor(a.embed) });
        for layer in 0..cfg.num_hidden_layers {
            for t in a.layer_tensors {
                let hf = a.layer_tensor_name(layer, t.suffix);
                let permute_heads = match t.role {
                    Role::Q if arch.permute_qk => Some(cfg.num_attention_heads),
                    Role::K if arch.permute_qk => Some(cfg.num_key_value_heads),
                    _ => None,
                };
                let gguf_name = format!("blk.{layer}.{}", arch::layer_tensor_name(t.role));
                tensors.push(Planned { gguf_name, shape: shape_of(&hf)?, source: Source::Tensor { name: hf, permute_heads } });
            }
        }
        tensors.push(Planned { gguf_name: arch::OUTPUT_NORM.into(), shape: shape_of(a.final_norm)?, source: tensor(a.final_norm) });
        // A tied head is the embedding: llama.cpp reads `token_embd` when `output` is absent.
        if !cfg.tie_word_embeddings && checkpoint.has(a.lm_head) {
            tensors.push(Planned { gguf_name: arch::OUTPUT.into(), shape: shape_of(a.lm_head)?, source: tensor(a.lm_head) });
        }
        let params = tensors.iter().filter(|t| matches!(t.source, Source::Tensor { .. })).map(|t| t.shape.iter().product::<usize>() as u64).sum();
        Ok(Self { checkpoint, arch, name: name.into(), tokenizer, rope, tensors, params })
    }

    /// The storage type of one tensor in a file of type `ft`: 1-D tensors stay f32, and a
    /// weight whose rows are not whole Q8_0 blocks falls back to f16 (as in the converter).
    fn tensor_type(t: &Planned, ft: FileType) -> GgmlType {
        if t.shape.len() < 2 {
            return GgmlType::F32;
        }
        let want = ft.weight_type();
        if want.fits_row(*t.shape.last().unwrap_or(&0)) {
            want
        } else {
            GgmlType::F16
        }
    }

    /// Write the GGUF of type `ft` to `path`, through a temporary file beside it.
    pub fn write(&self, path: &Path, ft: FileType, force: bool) -> Result<GgufFile, GgufError> {
        let start = std::time::Instant::now();
        let cfg = &self.checkpoint.config;
        let mut meta = metadata::keys(cfg, self.arch, &self.name, ft, self.params, &self.rope);
        meta.extend(self.tokenizer.iter().cloned());
        let specs: Vec<TensorSpec> =
            self.tensors.iter().map(|t| TensorSpec { name: t.gguf_name.clone(), shape: t.shape.clone(), ty: Self::tensor_type(t, ft) }).collect();

        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source: std::io::Error| GgufError::Io { path: path.clone(), source }
        };
        let tmp = crate::fsutil::temp_sibling(path);
        crate::writer::track_in_flight(&tmp);
        let result = (|| -> Result<u64, GgufError> {
            let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            let bytes = format::write(
                &mut w,
                &meta,
                &specs,
                |i, buf| self.tensor_bytes(&self.tensors[i], specs[i].ty, buf),
                io(&tmp),
                |tensor, got, expected| GgufError::Size { path: tmp.display().to_string(), tensor: tensor.into(), got, expected },
            )?;
            let file = w.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
            file.sync_all().map_err(io(&tmp))?;
            place(&tmp, path, force)?;
            Ok(bytes)
        })();
        crate::writer::untrack_in_flight(&tmp);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let bytes = result?;
        Ok(GgufFile { path: path.display().to_string(), file_type: ft, bytes, tensors: specs.len(), seconds: start.elapsed().as_secs_f64() })
    }

    fn tensor_bytes(&self, t: &Planned, ty: GgmlType, buf: &mut Vec<u8>) -> Result<(), GgufError> {
        match &t.source {
            Source::RopeFreqs(f) => ty.encode(f, buf),
            Source::Tensor { name, permute_heads } => {
                let mut values = self.checkpoint.tensor_f32(name)?;
                self.checkpoint.release(name);
                if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                    let what = if bad.is_nan() { "NaN" } else { "an infinity" };
                    return Err(GgufError::NonFinite { model: self.checkpoint.name.clone(), tensor: name.clone(), what });
                }
                if let Some(heads) = permute_heads {
                    values = arch::permute_rows(&values, t.shape[0], *heads);
                }
                ty.encode(&values, buf);
            }
        }
        Ok(())
    }
}

/// Move the finished temporary file into place: without `force`, by a hard link, which
/// fails rather than replace a file that appeared meanwhile; with it, by a rename.
fn place(tmp: &Path, path: &Path, force: bool) -> Result<(), GgufError> {
    let err = |source: std::io::Error| GgufError::Io { path: path.display().to_string(), source };
    if force {
        std::fs::rename(tmp, path).map_err(err)?;
    } else {
        match std::fs::hard_link(tmp, path) {
            Ok(()) => {
                std::fs::remove_file(tmp).map_err(err)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(GgufError::Exists { path: path.display().to_string() }),
            // No hard links on this file system: the up-front check stands.
            Err(_) => std::fs::rename(tmp, path).map_err(err)?,
        }
    }
    if let Some(parent) = path.parent() {
        let _ = std::fs::File::open(if parent.as_os_str().is_empty() { Path::new(".") } else { parent }).and_then(|d| d.sync_all());
    }
    Ok(())
}
