//! The writer: materialise a [`Recipe`] over an opened [`Family`] as a Hugging Face
//! checkpoint folder.
//!
//! Layers are renumbered `0..k-1`; verbatim tensors are streamed from the memory maps
//! without a float round trip; merged tensors are computed in f32 and cast once; shards
//! are written by streaming (header first, then tensor bytes one tensor at a time) with an
//! exact `model.safetensors.index.json`; `config.json` is the base's with every per-layer,
//! vocabulary, dtype and tying field made consistent; tokenizer files and
//! `generation_config.json` are the recipe's tokenizer source's, byte for byte, with its chat
//! template choice applied (`side_files`). Everything is written into a staging
//! folder beside the destination, reopened and verified there, and only then renamed into
//! place, so a failure never leaves a half-written model behind.

mod plan;
mod produce;
mod shard_writer;
mod side_files;
mod staging;

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::checkpoint::{Checkpoint, CheckpointError, Family, INDEX_FILE};
use crate::layout::Layout;
use crate::recipe::{Recipe, RecipeError};

pub use plan::Plan;
pub use shard_writer::{header_bytes, ShardWriter};
pub use staging::{remove_in_flight, track_in_flight, untrack_in_flight};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    RecipeFile(#[from] RecipeError),
    #[error("recipe does not fit the models: {0}")]
    Recipe(String),
    #[error("output folder {path}: {why}")]
    Destination { path: String, why: String },
    #[error("writing {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Layout(#[from] crate::layout::LayoutError),
    #[error("the written checkpoint failed verification: {0}")]
    Verify(String),
    #[error("invalid size `{0}`: use bytes or a unit such as 500MB, 5GB, 2GiB")]
    Size(String),
    #[error("output tensor `{tensor}` ({origin}) holds {what}: refusing to write a model with non-finite weights")]
    NonFinite { tensor: String, origin: String, what: &'static str },
    #[error(transparent)]
    Heal(#[from] crate::heal::HealError),
}

/// How to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Maximum bytes of tensor data per shard (a larger single tensor gets its own shard).
    pub shard_size: u64,
    /// Replace a non-empty destination (only after the new output is complete).
    pub force: bool,
}

/// The recipe inside a written model folder.
pub const RECIPE_FILE: &str = "tailor.yaml";
/// mergekit's name for the config inside its outputs.
pub const MERGEKIT_FILE: &str = "mergekit_config.yml";

/// transformers' default `max_shard_size` ("5GB").
pub const DEFAULT_SHARD_SIZE: u64 = 5_000_000_000;

impl Default for BuildOptions {
    fn default() -> Self {
        Self { shard_size: DEFAULT_SHARD_SIZE, force: false }
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub out: String,
    pub layers_before: usize,
    pub layers_after: usize,
    pub params_before: u64,
    pub params_after: u64,
    pub dtype: String,
    /// Bytes of every file written (shards with headers, index, config, tokenizer files).
    pub bytes: u64,
    /// File names in the output folder.
    pub files: Vec<String>,
    pub shards: usize,
    pub seconds: f64,
    /// Things the user should know (aligned vocabularies, untied embeddings, …).
    pub warnings: Vec<String>,
}

/// Parse a size such as `5GB`, `500MB`, `2GiB` or `1234` (bytes). Units are transformers'
/// (`GB` = 10^9, `GiB` = 2^30).
pub fn parse_size(s: &str) -> Result<u64, BuildError> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| BuildError::Size(s.into()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(BuildError::Size(s.into())),
    };
    let v = n * mult as f64;
    if !(v.is_finite() && v >= 1.0) {
        return Err(BuildError::Size(s.into()));
    }
    Ok(v as u64)
}

/// Write the checkpoint `recipe` describes into `out`. See the module docs for guarantees.
pub fn build(family: &Family, recipe: &Recipe, out: &Path, opts: &BuildOptions) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    recipe.validate()?;
    let layout = Layout::for_family(family, recipe)?;
    let sources: Vec<&Path> = family.models().map(|m| m.dir.as_path()).collect();
    staging::check_destination(out, opts.force, &sources)?;
    crate::checkpoint::check_tokenizer_source(family, recipe.tokenizer_model())?;
    let plan = Plan::new(layout, opts.shard_size.max(1));
    let config = plan.layout.output_config(&family.base.config.raw, family.base.arch())?;

    // A healed recipe's maps, checked against the sha256 the recipe names (never refitted).
    let maps = match &recipe.heal {
        Some(h) => {
            crate::heal::check_arch(recipe)?;
            crate::heal::read_maps(h, family.base.config.hidden_size)?
        }
        None => Default::default(),
    };
    let stage = staging::Staging::create(out)?;
    let mut bytes = write_shards(family, &plan, &maps, &stage.dir)?;
    bytes += write_json(&stage.dir.join(INDEX_FILE), &index_json(&plan))?;
    bytes += write_json(&stage.dir.join("config.json"), &config)?;
    bytes += side_files::write(family, recipe, &stage.dir)?;
    // The model carries its own recipe (and mergekit's form of it when one config can say
    // it), so a pushed repo can be rebuilt from itself.
    let published = recipe.published();
    bytes += write_text(&stage.dir.join(RECIPE_FILE), &published.to_yaml())?;
    // The maps travel with the model, so its `tailor.yaml` rebuilds it from the folder alone.
    if let (Some(h), Some(p)) = (&recipe.heal, &published.heal) {
        let to = stage.dir.join(&p.file);
        std::fs::copy(&h.file, &to).map_err(|e| BuildError::Io { path: to.display().to_string(), source: e })?;
        bytes += std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
    }
    if let Ok(yaml) = crate::mergekit::export(&published, Some(family.base.config.tie_word_embeddings)) {
        bytes += write_text(&stage.dir.join(MERGEKIT_FILE), &yaml)?;
    }
    verify(&stage.dir, &plan)?;
    check_finite(&stage.dir, &plan)?;
    let mut files: Vec<String> = std::fs::read_dir(&stage.dir)
        .map_err(|e| BuildError::Io { path: stage.dir.display().to_string(), source: e })?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    let stage_notes = stage.notes.clone();
    stage.commit()?;

    let mut warnings = stage_notes;
    warnings.extend(family.info.warnings.iter().cloned());
    warnings.extend(plan.layout.notes.iter().cloned());
    Ok(BuildReport {
        out: out.display().to_string(),
        layers_before: recipe.source_layers,
        layers_after: recipe.layers.len(),
        params_before: Layout::of_base(&family.base.config, recipe.source_layers, plan.layout.dtype).total_params(),
        params_after: plan.layout.total_params(),
        dtype: plan.layout.dtype.torch_name().into(),
        bytes,
        files,
        shards: plan.shards.len(),
        seconds: started.elapsed().as_secs_f64(),
        warnings,
    })
}

fn write_shards(family: &Family, plan: &Plan, maps: &crate::heal::Maps, dir: &Path) -> Result<u64, BuildError> {
    let mut bytes = 0;
    for (i, shard) in plan.shards.iter().enumerate() {
        let path = dir.join(plan.shard_file(i));
        let io = |e: std::io::Error| BuildError::Io { path: path.display().to_string(), source: e };
        let layout: Vec<(&str, crate::dtype::Dtype, &[usize])> = shard
            .iter()
            .map(|&t| (plan.layout.tensors[t].name.as_str(), plan.layout.tensors[t].dtype, plan.layout.tensors[t].shape.as_slice()))
            .collect();
        let mut w = ShardWriter::create(&path, &layout).map_err(io)?;
        for &t in shard {
            produce::write_tensor(family, &plan.layout.tensors[t], maps, &mut w)?;
        }
        bytes += w.finish().map_err(io)?;
    }
    Ok(bytes)
}

fn index_json(plan: &Plan) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    let mut entries: Vec<(&str, String)> = Vec::new();
    for (i, shard) in plan.shards.iter().enumerate() {
        for &t in shard {
            entries.push((plan.layout.tensors[t].name.as_str(), plan.shard_file(i)));
        }
    }
    entries.sort();
    for (name, file) in entries {
        map.insert(name.into(), json!(file));
    }
    json!({"metadata": {"total_size": plan.layout.total_bytes(), "total_parameters": plan.layout.total_params()}, "weight_map": map})
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<u64, BuildError> {
    write_text(path, &(serde_json::to_string_pretty(v).expect("JSON values serialise") + "\n"))
}

fn write_text(path: &Path, text: &str) -> Result<u64, BuildError> {
    crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|e| BuildError::Io { path: path.display().to_string(), source: e })?;
    Ok(text.len() as u64)
}

/// Reopen the written folder with the reader (which validates headers, offsets, the index
/// and every tensor the config implies) and check every tensor against the plan.
fn verify(dir: &Path, plan: &Plan) -> Result<(), BuildError> {
    let ckpt = Checkpoint::open(dir).map_err(|e| BuildError::Verify(e.to_string()))?;
    if ckpt.tensors.len() != plan.layout.tensors.len() {
        return Err(BuildError::Verify(format!("{} tensors written, {} planned", ckpt.tensors.len(), plan.layout.tensors.len())));
    }
    for t in &plan.layout.tensors {
        let info = ckpt.info(&t.name).map_err(|e| BuildError::Verify(e.to_string()))?;
        if info.shape != t.shape || info.dtype != t.dtype {
            return Err(BuildError::Verify(format!("`{}` is {} {:?}, planned {} {:?}", t.name, info.dtype, info.shape, t.dtype, t.shape)));
        }
    }
    Ok(())
}

/// Refuse NaN or infinite weights (from a poisoned source, or a merge with an absurd
/// coefficient), naming the tensor and where it came from. Reads the written shards, which
/// were just written and are usually still in the page cache.
fn check_finite(dir: &Path, plan: &Plan) -> Result<(), BuildError> {
    let ckpt = Checkpoint::open(dir).map_err(|e| BuildError::Verify(e.to_string()))?;
    for t in &plan.layout.tensors {
        let v = ckpt.view(&t.name).map_err(|e| BuildError::Verify(e.to_string()))?;
        if let Some(what) = first_non_finite(v.dtype, v.data) {
            let origin = match &t.rule {
                crate::recipe::Rule::Take(m) => format!("`{}` of model `{m}`", t.source),
                crate::recipe::Rule::Merge(m) => format!("`{}` merged from base and {}", t.source, m.models().join(", ")),
            };
            return Err(BuildError::NonFinite { tensor: t.name.clone(), origin, what });
        }
        ckpt.release_part(&t.name, 0, v.data.len());
    }
    Ok(())
}

/// "NaN" or "an infinite value" if the little-endian `data` of `dtype` holds one.
pub fn first_non_finite(dtype: crate::dtype::Dtype, data: &[u8]) -> Option<&'static str> {
    use crate::dtype::Dtype;
    // All-ones exponent: infinity (zero mantissa) or NaN.
    let (size, exp, man): (usize, u32, u32) = match dtype {
        Dtype::F32 => (4, 0x7F80_0000, 0x007F_FFFF),
        Dtype::F16 => (2, 0x7C00, 0x03FF),
        Dtype::Bf16 => (2, 0x7F80, 0x007F),
    };
    let mut bad = None;
    for c in data.chunks_exact(size) {
        let bits = if size == 4 { u32::from_le_bytes([c[0], c[1], c[2], c[3]]) } else { u16::from_le_bytes([c[0], c[1]]) as u32 };
        if bits & exp == exp {
            if bits & man != 0 {
                return Some("NaN");
            }
            bad = Some("an infinite value");
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_found_in_every_dtype() {
        use crate::dtype::{self, Dtype};
        for d in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            assert_eq!(first_non_finite(d, &dtype::from_f32(d, &[0.0, -1.5, 65000.0, f32::MIN_POSITIVE])), None, "{d}");
            assert_eq!(first_non_finite(d, &dtype::from_f32(d, &[1.0, f32::NAN])), Some("NaN"), "{d}");
            assert_eq!(first_non_finite(d, &dtype::from_f32(d, &[f32::NEG_INFINITY, 1.0])), Some("an infinite value"), "{d}");
        }
    }

    #[test]
    fn sizes_parse_like_transformers() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("500mb").unwrap(), 500_000_000);
        assert_eq!(parse_size("1.5KB").unwrap(), 1500);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "GB", "5XB", "-1", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
