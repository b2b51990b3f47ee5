//! One memory-mapped safetensors file, validated on open.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;

use super::{CheckpointError, TensorInfo};
use crate::dtype::Dtype;

#[derive(Debug)]
pub struct Shard {
    pub path: PathBuf,
    mmap: Mmap,
    /// Offset of the data section (8 + header length).
    data_start: usize,
}

impl Shard {
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let p = path.display().to_string();
        let file = File::open(path).map_err(|source| CheckpointError::Io { path: p.clone(), source })?;
        // SAFETY: the map is read-only; hf-tailor never writes into source folders, and a
        // concurrent external truncation is the same hazard every mmap-based loader accepts.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| CheckpointError::Io { path: p.clone(), source })?;
        if mmap.len() < 8 {
            return Err(CheckpointError::BadShard { path: p, why: format!("file is {} bytes, too short for a header", mmap.len()) });
        }
        // Full validation: header JSON, offsets contiguous and in bounds, sizes match dtypes and shapes,
        // and the data section ends exactly at the end of the file.
        SafeTensors::deserialize(&mmap).map_err(|e| CheckpointError::BadShard { path: p.clone(), why: e.to_string() })?;
        let header_len = u64::from_le_bytes(mmap[..8].try_into().expect("8 bytes")) as usize;
        Ok(Self { path: path.to_path_buf(), mmap, data_start: 8 + header_len })
    }

    /// Offset in the file of data byte `start` (relative to `data()`).
    pub fn file_offset(&self, start: usize) -> u64 {
        (self.data_start + start) as u64
    }

    /// The data section (after the header).
    pub fn data(&self) -> &[u8] {
        &self.mmap[self.data_start..]
    }

    /// Drop this process's mapping of data bytes `start..end` (relative to `data()`), so a
    /// writer streaming a checkpoint larger than RAM does not keep every page it has read
    /// resident. The file is unchanged and read-only, so a later read of the range simply
    /// faults the same bytes back in from the page cache or disk.
    pub fn release(&self, start: usize, end: usize) {
        let (offset, len) = (self.data_start + start, end.saturating_sub(start));
        if len == 0 || offset + len > self.mmap.len() {
            return;
        }
        // SAFETY: MADV_DONTNEED on a read-only shared file mapping discards only the page-table
        // entries; the contents seen through existing borrows stay identical (re-read from the file).
        #[cfg(unix)]
        let _ = unsafe { self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
    }

    /// Ask the kernel to start reading data bytes `start..end` (relative to `data()`) in the
    /// background, so a sequential reader of a cold file does not wait on one small
    /// readahead window per page fault.
    pub fn prefetch(&self, start: usize, end: usize) {
        let (offset, len) = (self.data_start + start, end.saturating_sub(start));
        if len == 0 || offset + len > self.mmap.len() {
            return;
        }
        #[cfg(unix)]
        let _ = self.mmap.advise_range(memmap2::Advice::WillNeed, offset, len);
    }

    /// The tensors of this shard, with byte ranges relative to `data()`; `shard` is left 0.
    pub fn tensor_infos(&self) -> Result<Vec<(String, TensorInfo)>, CheckpointError> {
        let st = SafeTensors::deserialize(&self.mmap)
            .map_err(|e| CheckpointError::BadShard { path: self.path.display().to_string(), why: e.to_string() })?;
        let data_ptr = self.data().as_ptr() as usize;
        let mut out = Vec::new();
        for (name, view) in st.tensors() {
            let dtype = Dtype::from_safetensors(view.dtype()).ok_or_else(|| CheckpointError::UnsupportedDtype {
                path: self.path.display().to_string(),
                tensor: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            let start = view.data().as_ptr() as usize - data_ptr;
            let end = start + view.data().len();
            out.push((name, TensorInfo { shard: 0, dtype, shape: view.shape().to_vec(), start, end }));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}
