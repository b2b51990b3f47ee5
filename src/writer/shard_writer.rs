//! Streaming safetensors writer: the header is computed from shapes and dtypes alone, then
//! tensor bytes are appended one tensor at a time, so a shard is never held in memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::dtype::Dtype;

/// Buffer between the producers and the file: big enough for few syscalls on small
/// tensors; large verbatim slices bypass it (BufWriter writes them straight through).
const BUFFER: usize = 8 << 20;

/// The serialized safetensors header (length prefix included) for tensors in this order.
pub fn header_bytes(tensors: &[(&str, Dtype, &[usize])]) -> Vec<u8> {
    let mut map = Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, dtype, shape) in tensors {
        let n = shape.iter().product::<usize>() * dtype.size();
        map.insert((*name).to_string(), json!({"dtype": st_dtype_name(*dtype), "shape": shape, "data_offsets": [offset, offset + n]}));
        offset += n;
    }
    let mut header = serde_json::to_vec(&Value::Object(map)).expect("a JSON map always serialises");
    // The data section starts 8-byte aligned, as the reference implementation pads it.
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out
}

fn st_dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "F32",
        Dtype::F16 => "F16",
        Dtype::Bf16 => "BF16",
    }
}

/// An open shard being filled; checks that exactly the promised bytes arrive.
pub struct ShardWriter {
    out: BufWriter<File>,
    expected: Vec<usize>,
    next: usize,
    written_in_tensor: usize,
    pub bytes: u64,
}

impl ShardWriter {
    /// Create `path` and write the header for `tensors`.
    pub fn create(path: &Path, tensors: &[(&str, Dtype, &[usize])]) -> std::io::Result<Self> {
        let file = File::create(path)?;
        let mut out = BufWriter::with_capacity(BUFFER, file);
        let header = header_bytes(tensors);
        out.write_all(&header)?;
        let expected = tensors.iter().map(|(_, d, s)| s.iter().product::<usize>() * d.size()).collect();
        Ok(Self { out, expected, next: 0, written_in_tensor: 0, bytes: header.len() as u64 })
    }

    /// Append bytes of the current tensor (may be called several times per tensor).
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let want = self.expected.get(self.next).copied().unwrap_or(0);
        if self.written_in_tensor + bytes.len() > want {
            return Err(std::io::Error::other(format!(
                "tensor {} of this shard would get {} bytes, its header says {want}",
                self.next,
                self.written_in_tensor + bytes.len()
            )));
        }
        self.out.write_all(bytes)?;
        self.written_in_tensor += bytes.len();
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Append `len` bytes of the current tensor copied from `path` at `offset`. `std::io::copy`
    /// turns a file-to-file copy into `copy_file_range` on Linux (an in-kernel copy, as `cp`
    /// does; no user-space buffer) and falls back to read/write where that is unsupported.
    pub fn copy_from_file(&mut self, path: &Path, offset: u64, len: u64) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let want = self.expected.get(self.next).copied().unwrap_or(0) as u64;
        if self.written_in_tensor as u64 + len > want {
            return Err(std::io::Error::other(format!("tensor {} of this shard would get more bytes than its header says ({want})", self.next)));
        }
        let mut src = File::open(path)?;
        src.seek(SeekFrom::Start(offset))?;
        self.out.flush()?;
        let copied = std::io::copy(&mut src.take(len), self.out.get_mut())?;
        if copied != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} ended after {copied} of {len} bytes at offset {offset}", path.display()),
            ));
        }
        self.written_in_tensor += len as usize;
        self.bytes += len;
        Ok(())
    }

    /// Mark the current tensor complete.
    pub fn end_tensor(&mut self) -> std::io::Result<()> {
        let want = self.expected.get(self.next).copied().unwrap_or(0);
        if self.written_in_tensor != want {
            return Err(std::io::Error::other(format!(
                "tensor {} of this shard got {} bytes, its header says {want}",
                self.next, self.written_in_tensor
            )));
        }
        self.next += 1;
        self.written_in_tensor = 0;
        Ok(())
    }

    /// Flush and fsync; the shard is complete on disk when this returns.
    pub fn finish(self) -> std::io::Result<u64> {
        if self.next != self.expected.len() {
            return Err(std::io::Error::other(format!("shard closed after {} of {} tensors", self.next, self.expected.len())));
        }
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_file_is_read_back_by_the_safetensors_crate() {
        let dir = std::env::temp_dir().join(format!("hft-shardw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.safetensors");
        let a: Vec<u8> = crate::dtype::from_f32(Dtype::F32, &[1.0, 2.0, 3.0]);
        let b: Vec<u8> = crate::dtype::from_f32(Dtype::Bf16, &[0.5, -1.0]);
        let mut w = ShardWriter::create(&path, &[("x", Dtype::F32, &[3]), ("y", Dtype::Bf16, &[2, 1])]).unwrap();
        w.write(&a[..5]).unwrap();
        w.write(&a[5..]).unwrap();
        w.end_tensor().unwrap();
        assert!(w.write(&[0u8; 5]).is_err(), "overlong tensor must be refused");
        w.write(&b).unwrap();
        w.end_tensor().unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("x").unwrap().data(), &a[..]);
        assert_eq!(st.tensor("y").unwrap().shape(), &[2, 1]);
        assert_eq!(st.tensor("y").unwrap().data(), &b[..]);
        assert_eq!((8 + u64::from_le_bytes(bytes[..8].try_into().unwrap())) % 8, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
