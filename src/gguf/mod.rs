//! GGUF files beside the safetensors: `MODEL-F16.gguf`, `MODEL-Q8_0.gguf`, ... written from a
//! model folder natively, for llama.cpp, Ollama and LM Studio.
//!
//! One job per module: [`format`] writes the container, [`quant`] encodes tensors,
//! [`arch`] holds what llama.cpp calls each architecture (data), [`metadata`] the
//! hyperparameter keys, [`tokenizer`] the embedded tokenizer ([`pretok`] its pre-tokenizer
//! type), and [`convert`] puts a checkpoint's tensors in llama.cpp's names and layout.
//!
//! Every file is written to a hidden temporary name beside its destination and moved into
//! place only when complete; an existing file is never replaced without `force`, and an
//! interrupted export leaves nothing behind (the CLI's signal handler removes the temporary).

pub mod convert;
pub mod format;
pub mod metadata;
pub mod names;
pub mod pretok;
pub mod quant;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::checkpoint::CheckpointError;
use quant::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("GGUF export: {0}")]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error("GGUF export does not support {what}")]
    Unsupported { what: String },
    #[error("`{0}` is not a GGUF type (f32, f16, bf16, q8_0)")]
    BadType(String),
    #[error("{path} exists (use --force to replace it)")]
    Exists { path: String },
    #[error("{model}: tensor `{tensor}` holds {what}; a GGUF of it would not run")]
    NonFinite { model: String, tensor: String, what: &'static str },
    #[error("cannot write {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("internal error writing {path}: tensor `{tensor}` came out {got} bytes, expected {expected}")]
    Size { path: String, tensor: String, got: u64, expected: u64 },
}

/// A GGUF file type: the type of the 2-D weights (norms, biases and rope factors stay f32,
/// as in llama.cpp's converter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FileType {
    F32,
    F16,
    Bf16,
    Q8_0,
}

impl FileType {
    pub fn parse(s: &str) -> Result<Self, GgufError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            "q8_0" | "q8" => Ok(Self::Q8_0),
            _ => Err(GgufError::BadType(s.trim().into())),
        }
    }

    /// `f16,q8_0` -> [F16, Q8_0] (duplicates dropped, order kept).
    pub fn parse_list(s: &str) -> Result<Vec<Self>, GgufError> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let t = Self::parse(part)?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// The label in file names, as llama.cpp's converter spells it: F16, Q8_0, BF16, F32.
    pub fn label(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::Q8_0 => "Q8_0",
        }
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn llama_file_type(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 7,
            Self::Bf16 => 32,
        }
    }

    /// The storage type of 2-D weights.
    pub fn weight_type(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 => GgmlType::F16,
            Self::Bf16 => GgmlType::Bf16,
            Self::Q8_0 => GgmlType::Q8_0,
        }
    }
}

/// `NAME-F16.gguf`.
pub fn file_name(model_name: &str, t: FileType) -> String {
    format!("{model_name}-{}.gguf", t.label())
}

/// The model name a folder's GGUF files carry: the folder's own name.
pub fn model_name(dir: &Path) -> String {
    let resolved = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    resolved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
}

/// The GGUF files in `dir` (names, sorted): what a card links and a push uploads.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".gguf") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[derive(Debug, Clone, Default)]
pub struct GgufOptions {
    pub types: Vec<FileType>,
    /// Replace existing files of the same names.
    pub force: bool,
    /// The model name in file names and `general.name` (default: the folder's name).
    pub name: Option<String>,
}

/// One written file.
#[derive(Debug, Clone, Serialize)]
pub struct GgufFile {
    pub path: String,
    pub file_type: FileType,
    pub bytes: u64,
    pub tensors: usize,
    pub seconds: f64,
}

/// Write one GGUF per requested type into the model folder `dir`.
pub fn write_beside(dir: &Path, opts: &GgufOptions) -> Result<Vec<GgufFile>, GgufError> {
    let name = match &opts.name {
        Some(n) if !n.is_empty() && !n.contains(['/', '\\']) && !n.starts_with('.') => n.clone(),
        Some(n) => return Err(GgufError::Unsupported { what: format!("the model name `{n}` in file names") }),
        None => model_name(dir),
    };
    let targets: Vec<(FileType, PathBuf)> = opts.types.iter().map(|t| (*t, dir.join(file_name(&name, *t)))).collect();
    if !opts.force {
        if let Some((_, p)) = targets.iter().find(|(_, p)| std::fs::symlink_metadata(p).is_ok()) {
            return Err(GgufError::Exists { path: p.display().to_string() });
        }
    }
    let model = convert::Model::open(dir, &name)?;
    targets.iter().map(|(t, path)| model.write(path, *t, opts.force)).collect()
}
