//! Reading Hugging Face checkpoints: a folder with `config.json` and either one
//! `model.safetensors` or shards plus `model.safetensors.index.json`, memory-mapped.
//! A folder with PyTorch `.bin` weights only is converted once into the cache and opened
//! from there (see [`torch_bin`]).
//!
//! Every shard is validated when opened (header, offsets, lengths, dtypes), so later
//! stages can slice tensor bytes without re-checking.

mod family;
pub mod pickle;
mod shard;
mod tokenizer;
pub mod torch_bin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use family::{check_family, Family, FamilyInfo};
pub use shard::Shard;
pub use tokenizer::{chat_template_of, check_tokenizer_source, choose_tokenizer, resolve_chat_template, template_text};

use crate::arch::Arch;
use crate::config::{ConfigError, ModelConfig};
use crate::dtype::{self, Dtype};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{path}: not a model folder ({why})")]
    NotAModel { path: String, why: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: invalid safetensors file: {why}")]
    BadShard { path: String, why: String },
    #[error("{path}: tensor `{tensor}` has dtype {dtype}, hf-tailor reads only f32, f16 and bf16")]
    UnsupportedDtype { path: String, tensor: String, dtype: String },
    #[error("{path}: refused PyTorch checkpoint: {why}")]
    BadTorch { path: String, why: String },
    #[error("{path}: invalid index: {why}")]
    BadIndex { path: String, why: String },
    #[error("{model}: tensor `{tensor}` is missing")]
    MissingTensor { model: String, tensor: String },
    #[error("{model}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    BadShape { model: String, tensor: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("{model}: tensor `{tensor}` is stored in shards {first} and {second}")]
    Duplicate { model: String, tensor: String, first: String, second: String },
    #[error("incompatible models: {0}")]
    Incompatible(String),
}

/// Where a tensor lives and what it is.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub shard: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range inside the shard's data section.
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn nbytes(&self) -> usize {
        self.end - self.start
    }
}

/// A borrowed view of one tensor's bytes in the memory map.
#[derive(Debug, Clone)]
pub struct TensorView<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    pub fn to_f32(&self) -> Vec<f32> {
        dtype::to_f32(self.dtype, self.data)
    }

    /// The first `rows` rows of a matrix (a prefix of the bytes; no copy).
    pub fn first_rows(&self, rows: usize) -> TensorView<'a> {
        if self.shape.is_empty() || rows >= self.shape[0] {
            return self.clone();
        }
        let row_bytes = self.data.len() / self.shape[0].max(1);
        let mut shape = self.shape.clone();
        shape[0] = rows;
        TensorView { dtype: self.dtype, shape, data: &self.data[..rows * row_bytes] }
    }
}

/// An opened, validated checkpoint folder.
#[derive(Debug)]
pub struct Checkpoint {
    /// A short display name (repo id or folder).
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub shards: Vec<Shard>,
    /// Every tensor by name, sorted.
    pub tensors: BTreeMap<String, TensorInfo>,
}

pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const SINGLE_FILE: &str = "model.safetensors";

/// Tokenizer files a model folder may carry besides weights and config: what the Hub pull
/// fetches and what the writer copies byte for byte (with [`GENERATION_CONFIG`]).
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
];

/// Generation defaults (EOS ids); a merge that drops it gives wrong stopping behaviour.
pub const GENERATION_CONFIG: &str = "generation_config.json";

/// True for the side files a tailored model carries over unchanged from its base:
/// tokenizer files, the generation config and any `chat_template.*`.
pub fn is_side_file(name: &str) -> bool {
    TOKENIZER_FILES.contains(&name) || name == GENERATION_CONFIG || name.starts_with("chat_template.")
}

impl Checkpoint {
    /// Open `dir`, naming the model by its folder.
    pub fn open(dir: &Path) -> Result<Self, CheckpointError> {
        Self::open_named(dir, &dir.display().to_string())
    }

    /// Open `dir`; `name` is used in messages (e.g. the Hub id it was downloaded as).
    pub fn open_named(dir: &Path, name: &str) -> Result<Self, CheckpointError> {
        let disp = dir.display().to_string();
        if !dir.is_dir() {
            return Err(CheckpointError::NotAModel { path: disp, why: "no such folder".into() });
        }
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(CheckpointError::NotAModel { path: disp, why: "config.json is missing".into() });
        }
        let config = ModelConfig::from_file(&cfg_path)?;
        let index_path = dir.join(INDEX_FILE);
        let (shard_files, weight_map) = if index_path.is_file() {
            let (files, map) = read_index(&index_path)?;
            (files, Some(map))
        } else if dir.join(SINGLE_FILE).is_file() {
            (vec![SINGLE_FILE.to_string()], None)
        } else if torch_bin::has_torch_weights(dir) {
            let converted = torch_bin::converted_folder(dir)?;
            return Self::open_named(&converted, name);
        } else {
            return Err(CheckpointError::NotAModel {
                path: disp,
                why: format!("neither {SINGLE_FILE} nor {INDEX_FILE} is present (nor pytorch_model.bin)"),
            });
        };
        let mut shards = Vec::with_capacity(shard_files.len());
        let mut tensors: BTreeMap<String, TensorInfo> = BTreeMap::new();
        for (i, file) in shard_files.iter().enumerate() {
            let shard = Shard::open(&dir.join(file))?;
            for (tname, mut info) in shard.tensor_infos()? {
                info.shard = i;
                if let Some(prev) = tensors.get(&tname) {
                    return Err(CheckpointError::Duplicate {
                        model: name.into(),
                        tensor: tname,
                        first: shard_files[prev.shard].clone(),
                        second: file.clone(),
                    });
                }
                tensors.insert(tname, info);
            }
            shards.push(shard);
        }
        if let Some(map) = weight_map {
            for (tname, file) in &map {
                match tensors.get(tname) {
                    None => {
                        return Err(CheckpointError::BadIndex {
                            path: index_path.display().to_string(),
                            why: format!("names tensor `{tname}` in {file}, which that shard does not contain"),
                        })
                    }
                    Some(info) if &shard_files[info.shard] != file => {
                        return Err(CheckpointError::BadIndex {
                            path: index_path.display().to_string(),
                            why: format!("places `{tname}` in {file}, but it is stored in {}", shard_files[info.shard]),
                        })
                    }
                    _ => {}
                }
            }
            if let Some(extra) = tensors.keys().find(|k| !map.contains_key(*k)) {
                return Err(CheckpointError::BadIndex { path: index_path.display().to_string(), why: format!("does not list tensor `{extra}`") });
            }
        }
        let ckpt = Self { name: name.into(), dir: dir.to_path_buf(), config, shards, tensors };
        ckpt.check_expected_tensors()?;
        Ok(ckpt)
    }

    pub fn arch(&self) -> &'static Arch {
        self.config.arch
    }

    /// Check that every tensor the architecture table requires is present with the
    /// shape the config implies.
    fn check_expected_tensors(&self) -> Result<(), CheckpointError> {
        let c = &self.config;
        let arch = c.arch;
        for layer in 0..c.num_hidden_layers {
            for t in arch.layer_tensors {
                let name = arch.layer_tensor_name(layer, t.suffix);
                let expected = c.layer_tensor_shape(t.role);
                self.expect_shape(&name, &expected)?;
            }
        }
        // Embedding rows may exceed vocab_size (padding) but never fall short of it.
        let emb = self.info(arch.embed)?;
        if emb.shape.len() != 2 || emb.shape[1] != c.hidden_size || emb.shape[0] < c.vocab_size {
            return Err(CheckpointError::BadShape {
                model: self.name.clone(),
                tensor: arch.embed.into(),
                found: emb.shape.clone(),
                expected: vec![c.vocab_size, c.hidden_size],
            });
        }
        self.expect_shape(arch.final_norm, &[c.hidden_size])?;
        if !c.tie_word_embeddings {
            self.expect_shape(arch.lm_head, &emb.shape.clone())?;
        }
        Ok(())
    }

    fn expect_shape(&self, name: &str, expected: &[usize]) -> Result<(), CheckpointError> {
        let info = self.info(name)?;
        if info.shape != expected {
            return Err(CheckpointError::BadShape {
                model: self.name.clone(),
                tensor: name.into(),
                found: info.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        Ok(())
    }

    /// Metadata of a tensor, or a `MissingTensor` error naming this model.
    pub fn info(&self, name: &str) -> Result<&TensorInfo, CheckpointError> {
        self.tensors.get(name).ok_or_else(|| CheckpointError::MissingTensor { model: self.name.clone(), tensor: name.into() })
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Borrow a tensor's bytes straight from the memory map.
    pub fn view(&self, name: &str) -> Result<TensorView<'_>, CheckpointError> {
        let info = self.info(name)?;
        Ok(TensorView { dtype: info.dtype, shape: info.shape.clone(), data: &self.shards[info.shard].data()[info.start..info.end] })
    }

    /// Let go of the resident pages of tensor `name` (see [`Shard::release`]); a no-op for unknown names.
    pub fn release(&self, name: &str) {
        self.release_part(name, 0, usize::MAX);
    }

    /// Let go of the resident pages of bytes `from..to` of tensor `name` (clamped to the tensor).
    pub fn release_part(&self, name: &str, from: usize, to: usize) {
        if let Some(info) = self.tensors.get(name) {
            let start = info.start.saturating_add(from).min(info.end);
            let end = info.start.saturating_add(to).min(info.end);
            self.shards[info.shard].release(start, end);
        }
    }

    /// Start reading bytes `from..to` of tensor `name` in the background (clamped to the tensor).
    pub fn prefetch_part(&self, name: &str, from: usize, to: usize) {
        if let Some(info) = self.tensors.get(name) {
            let start = info.start.saturating_add(from).min(info.end);
            let end = info.start.saturating_add(to).min(info.end);
            self.shards[info.shard].prefetch(start, end);
        }
    }

    /// Where tensor `name`'s bytes lie on disk: (shard file, offset in the file, length), so a
    /// writer can have the kernel copy them (`copy_file_range`) without reading them itself.
    pub fn file_range(&self, name: &str) -> Result<(&Path, u64, u64), CheckpointError> {
        let info = self.info(name)?;
        let shard = &self.shards[info.shard];
        Ok((shard.path.as_path(), shard.file_offset(info.start), info.nbytes() as u64))
    }

    /// A tensor decoded to f32.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>, CheckpointError> {
        Ok(self.view(name)?.to_f32())
    }

    /// The embedding matrix's row count (may exceed `vocab_size` for padded fine-tunes).
    pub fn embedding_rows(&self) -> usize {
        self.tensors.get(self.config.arch.embed).map(|i| i.shape[0]).unwrap_or(self.config.vocab_size)
    }

    /// The dtype most tensors are stored in (what "keep the source dtype" means).
    pub fn storage_dtype(&self) -> Dtype {
        let mut counts = [0usize; 3];
        for info in self.tensors.values() {
            counts[match info.dtype {
                Dtype::F32 => 0,
                Dtype::F16 => 1,
                Dtype::Bf16 => 2,
            }] += info.numel();
        }
        let best = (0..3).max_by_key(|i| counts[*i]).unwrap_or(0);
        [Dtype::F32, Dtype::F16, Dtype::Bf16][best]
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.values().map(|t| t.nbytes() as u64).sum()
    }
}

/// Read `model.safetensors.index.json`: the shard files in first-seen order, and the weight map.
fn read_index(path: &Path) -> Result<(Vec<String>, BTreeMap<String, String>), CheckpointError> {
    let p = path.display().to_string();
    let text = crate::fsutil::read_text_input(path, crate::limits::MAX_CONFIG_BYTES as u64)
        .map_err(|source| CheckpointError::Io { path: p.clone(), source })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| CheckpointError::BadIndex { path: p.clone(), why: e.to_string() })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| CheckpointError::BadIndex { path: p.clone(), why: "no `weight_map` object".into() })?;
    let mut files: Vec<String> = Vec::new();
    let mut out = BTreeMap::new();
    for (k, f) in map {
        let f = f.as_str().ok_or_else(|| CheckpointError::BadIndex { path: p.clone(), why: format!("entry `{k}` is not a file name") })?;
        if f.contains('/') || f.contains('\\') || f.starts_with('.') {
            return Err(CheckpointError::BadIndex { path: p.clone(), why: format!("entry `{k}` names an unsafe path `{f}`") });
        }
        if !files.iter().any(|x| x == f) {
            files.push(f.to_string());
        }
        out.insert(k.clone(), f.to_string());
    }
    files.sort();
    for f in &files {
        if !path.with_file_name(f).is_file() {
            return Err(CheckpointError::BadIndex { path: p.clone(), why: format!("shard {f} is missing") });
        }
    }
    Ok((files, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::fixture::{self, TinySpec};

    #[test]
    fn opens_sharded_fixture_family_and_aligns_padded_vocab() {
        let tmp = std::env::temp_dir().join(format!("hft-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let spec = TinySpec::llama();
        let (base_dir, sibs, weights) = fixture::write_family(&tmp, &spec, 1, 3).unwrap();
        let base = Checkpoint::open(&base_dir).unwrap();
        assert!(base.shards.len() > 1, "fixture should be sharded");
        assert_eq!(base.tensor_f32("model.layers.1.mlp.up_proj.weight").unwrap(), weights[0]["model.layers.1.mlp.up_proj.weight"].1);
        // A sibling padded by one vocabulary row, as real Llama-2 fine-tunes are.
        let padded = TinySpec { vocab: spec.vocab + 1, ..spec.clone() };
        let mut w = fixture::random_weights(&padded, 9);
        for (k, v) in weights[1].iter() {
            if !k.contains("embed") && !k.contains("lm_head") {
                w.insert(k.clone(), v.clone());
            }
        }
        let pdir = tmp.join("padded");
        fixture::write_model(&pdir, &padded, &w).unwrap();
        let sib = Checkpoint::open(&sibs[0]).unwrap();
        let pad = Checkpoint::open(&pdir).unwrap();
        let fam = Family::new(("base".into(), base), vec![("a".into(), sib), ("p".into(), pad)]).unwrap();
        assert_eq!(fam.info.common_vocab, spec.vocab);
        assert_eq!(fam.info.warnings.len(), 1);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
