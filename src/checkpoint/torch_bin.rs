//! PyTorch `.bin` checkpoints (`pytorch_model.bin`, or shards named by
//! `pytorch_model.bin.index.json`), as many Llama-2-era fine-tunes ship.
//!
//! Choice: such a folder is converted once into safetensors and the converted folder is
//! opened instead, so every later stage (memory maps, `copy_file_range` writes, validation)
//! keeps one code path. The conversion goes into `<hub cache>/hf-tailor-converted/<key>/`
//! (never into the user's folder), keyed by the source folder's path and its files' sizes and
//! modification times, and is written into a temporary sibling renamed into place, so a
//! half-written conversion is never opened. The pickles are read by [`super::pickle`], which
//! runs no pickled code; storage records are validated against the sizes the pickle declares.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::pickle::{read_state_dict, TensorRef};
use super::{is_side_file, CheckpointError};
use crate::dtype::Dtype;

pub const BIN_SINGLE: &str = "pytorch_model.bin";
pub const BIN_INDEX: &str = "pytorch_model.bin.index.json";

/// Largest `data.pkl` read: a state dict's pickle is a few hundred bytes per tensor.
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Whether `dir` carries PyTorch `.bin` weights (an index or a single file).
pub fn has_torch_weights(dir: &Path) -> bool {
    dir.join(BIN_INDEX).is_file() || dir.join(BIN_SINGLE).is_file()
}

fn bad(path: &Path, why: impl Into<String>) -> CheckpointError {
    CheckpointError::BadTorch { path: path.display().to_string(), why: why.into() }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.display().to_string(), source }
}

/// The converted safetensors folder for the `.bin` checkpoint in `dir`, converting it first
/// unless an up-to-date conversion is already in the cache.
pub fn converted_folder(dir: &Path) -> Result<PathBuf, CheckpointError> {
    let root = crate::hf_home::hub_cache_dir().join("hf-tailor-converted");
    converted_folder_in(dir, &root)
}

/// [`converted_folder`] with the conversions kept under `root`.
pub fn converted_folder_in(dir: &Path, root: &Path) -> Result<PathBuf, CheckpointError> {
    let key = folder_key(dir)?;
    let target = root.join(&key);
    if target.join(super::SINGLE_FILE).is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(root).map_err(io(root))?;
    let tmp = root.join(format!(".{key}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = convert_into(dir, &tmp).and_then(|()| match std::fs::rename(&tmp, &target) {
        Ok(()) => Ok(()),
        // Another process finished the same conversion first: use its copy.
        Err(_) if target.join(super::SINGLE_FILE).is_file() => Ok(()),
        Err(e) => Err(io(&target)(e)),
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| target)
}

/// Hash of the folder's canonical path and its files' names, sizes and modification times.
fn folder_key(dir: &Path) -> Result<String, CheckpointError> {
    let canon = dir.canonicalize().map_err(io(dir))?;
    let mut h = Sha256::new();
    h.update(canon.as_os_str().as_encoded_bytes());
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(io(dir))?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(m) = std::fs::metadata(e.path()) else { continue };
        if !m.is_file() {
            continue;
        }
        let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
        h.update(e.file_name().as_encoded_bytes());
        h.update([0]);
        h.update(m.len().to_le_bytes());
        h.update(mtime.to_le_bytes());
    }
    Ok(hex::encode(&h.finalize()[..16]))
}

/// The `.bin` files to read: the index's shards (validated), else `pytorch_model.bin`; and the weight map.
/// Tensor name -> `.bin` shard, from the index.
type WeightMap = BTreeMap<String, String>;

fn bin_files(dir: &Path) -> Result<(Vec<String>, Option<WeightMap>), CheckpointError> {
    let index = dir.join(BIN_INDEX);
    if !index.is_file() {
        return Ok((vec![BIN_SINGLE.to_string()], None));
    }
    let text = crate::fsutil::read_text_input(&index, crate::limits::MAX_CONFIG_BYTES as u64).map_err(io(&index))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&index, e.to_string()))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad(&index, "no `weight_map` object"))?;
    let mut out = BTreeMap::new();
    for (k, f) in map {
        let f = f.as_str().ok_or_else(|| bad(&index, format!("entry `{k}` is not a file name")))?;
        if f.contains('/') || f.contains('\\') || f.starts_with('.') || !f.ends_with(".bin") {
            return Err(bad(&index, format!("entry `{k}` names an invalid shard `{f}`")));
        }
        out.insert(k.clone(), f.to_string());
    }
    let mut files: Vec<String> = out.values().cloned().collect();
    files.sort();
    files.dedup();
    for f in &files {
        if !dir.join(f).is_file() {
            return Err(bad(&index, format!("shard {f} is missing")));
        }
    }
    Ok((files, Some(out)))
}

/// One opened `.bin` archive and its tensors.
struct Archive {
    path: PathBuf,
    zip: zip::ZipArchive<File>,
    prefix: String,
    tensors: Vec<(String, TensorRef)>,
}

fn open_archive(path: &Path) -> Result<Archive, CheckpointError> {
    let file = File::open(path).map_err(io(path))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(path, format!("not a PyTorch zip archive ({e})")))?;
    let names: Vec<String> =
        zip.file_names().map(|n| n.map(|c| c.into_owned())).collect::<Result<_, _>>().map_err(|e| bad(path, format!("record name: {e}")))?;
    let pkls: Vec<&String> = names.iter().filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1).collect();
    let [pkl] = pkls.as_slice() else {
        return Err(bad(path, format!("expected one `NAME/data.pkl` record, found {}", pkls.len())));
    };
    let prefix = pkl.trim_end_matches("/data.pkl").to_string();
    if let Ok(mut bo) = zip.by_name(&format!("{prefix}/byteorder")) {
        let mut s = String::new();
        (&mut bo).take(16).read_to_string(&mut s).map_err(|e| bad(path, format!("byteorder record: {e}")))?;
        if s.trim() != "little" {
            return Err(bad(path, format!("byte order `{}` (only little-endian is read)", s.trim())));
        }
    }
    let pkl = pkl.to_string();
    let mut rec = zip.by_name(&pkl).map_err(|e| bad(path, format!("{pkl}: {e}")))?;
    if rec.size() > MAX_PICKLE_BYTES {
        return Err(bad(path, format!("{pkl} is {} bytes, more than a state dict needs", rec.size())));
    }
    let mut bytes = Vec::with_capacity(rec.size() as usize);
    (&mut rec).take(MAX_PICKLE_BYTES).read_to_end(&mut bytes).map_err(|e| bad(path, format!("{pkl}: {e}")))?;
    drop(rec);
    let tensors = read_state_dict(&bytes).map_err(|e| bad(path, format!("{pkl}: {e}")))?;
    Ok(Archive { path: path.to_path_buf(), zip, prefix, tensors })
}

fn st_dtype(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "F32",
        Dtype::F16 => "F16",
        Dtype::Bf16 => "BF16",
    }
}

/// Convert the `.bin` checkpoint in `src` into `out` (an empty folder): `model.safetensors`
/// plus copies of `config.json` and the side files.
fn convert_into(src: &Path, out: &Path) -> Result<(), CheckpointError> {
    let (files, weight_map) = bin_files(src)?;
    let mut archives = Vec::with_capacity(files.len());
    // name -> (archive, tensor index)
    let mut by_name: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for f in &files {
        let a = open_archive(&src.join(f))?;
        for (i, (name, _)) in a.tensors.iter().enumerate() {
            if let Some((prev, _)) = by_name.insert(name.clone(), (archives.len(), i)) {
                return Err(bad(&a.path, format!("tensor `{name}` is also stored in {}", files[prev])));
            }
            if let Some(map) = &weight_map {
                if map.get(name) != Some(f) {
                    return Err(bad(&src.join(BIN_INDEX), format!("does not place tensor `{name}` in {f}, where it is stored")));
                }
            }
        }
        archives.push(a);
    }
    if let Some(map) = &weight_map {
        if let Some(k) = map.keys().find(|k| !by_name.contains_key(*k)) {
            return Err(bad(&src.join(BIN_INDEX), format!("names tensor `{k}` in {}, which that shard does not contain", map[k])));
        }
    }
    // Validate every storage record against the pickle's sizes, and lay out the header.
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset: u64 = 0;
    for (name, &(ai, ti)) in &by_name {
        let a = &mut archives[ai];
        let t = &a.tensors[ti].1;
        let rec = format!("{}/data/{}", a.prefix, t.storage);
        let size = a.zip.by_name(&rec).map_err(|e| bad(&a.path, format!("tensor `{name}`: storage record {rec}: {e}")))?.size();
        let want = t.storage_numel.checked_mul(t.dtype.size() as u64).ok_or_else(|| bad(&a.path, "storage size overflows"))?;
        if size != want {
            return Err(bad(&a.path, format!("storage record {rec} is {size} bytes, its pickle declares {want}")));
        }
        let nbytes = t
            .shape
            .iter()
            .try_fold(t.dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| bad(&a.path, "tensor size overflows"))?;
        header.insert(name.clone(), serde_json::json!({"dtype": st_dtype(t.dtype), "shape": t.shape, "data_offsets": [offset, offset + nbytes]}));
        offset += nbytes;
    }
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header)).expect("JSON");
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let st_path = out.join(super::SINGLE_FILE);
    let file = File::create(&st_path).map_err(io(&st_path))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(head.len() as u64).to_le_bytes()).and_then(|()| w.write_all(&head)).map_err(io(&st_path))?;
    for (name, &(ai, ti)) in &by_name {
        let a = &mut archives[ai];
        let t = a.tensors[ti].1.clone();
        let rec = format!("{}/data/{}", a.prefix, t.storage);
        let el = t.dtype.size() as u64;
        let nbytes = t.shape.iter().product::<usize>() as u64 * el;
        let mut r = a.zip.by_name(&rec).map_err(|e| bad(&a.path, format!("{rec}: {e}")))?;
        let skipped = std::io::copy(&mut (&mut r).take(t.offset * el), &mut std::io::sink()).map_err(|e| bad(&a.path, format!("{rec}: {e}")))?;
        let copied = std::io::copy(&mut (&mut r).take(nbytes), &mut w).map_err(|e| bad(&a.path, format!("{rec}: {e}")))?;
        if skipped != t.offset * el || copied != nbytes {
            return Err(bad(&a.path, format!("storage record {rec} ends early (tensor `{name}`)")));
        }
    }
    let file = w.into_inner().map_err(|e| io(&st_path)(e.into_error()))?;
    file.sync_all().map_err(io(&st_path))?;
    // config.json and the side files travel with the weights, so the folder opens as a model.
    for e in std::fs::read_dir(src).map_err(io(src))?.filter_map(|e| e.ok()) {
        let n = e.file_name().to_string_lossy().to_string();
        if (n == "config.json" || is_side_file(&n)) && e.path().is_file() {
            std::fs::copy(e.path(), out.join(&n)).map_err(io(&e.path()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_non_zip_files_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        std::fs::write(dir.join(BIN_SINGLE), b"PK\x03\x04 not really").unwrap();
        let e = converted_folder_in(&dir, &tmp.path().join("cache")).unwrap_err().to_string();
        assert!(e.contains("not a PyTorch zip archive"), "{e}");
        assert!(!e.contains('\n'));
        // Nothing half-written is left in the cache.
        assert_eq!(std::fs::read_dir(tmp.path().join("cache")).unwrap().count(), 0);
    }
}
