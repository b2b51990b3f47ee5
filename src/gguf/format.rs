//! The GGUF container (version 3), written directly: a header of typed key/value pairs and
//! tensor descriptions, then the tensor data, each tensor aligned to 32 bytes.
//!
//! The writer streams: the header is computed from the tensors' shapes and types up front
//! (sizes are known before any data is produced), then each tensor's bytes are asked for in
//! turn, so a model is never held in memory twice.

use std::io::Write;

use super::quant::GgmlType;

/// `general.alignment`'s default; llama.cpp reads files with any power of two it names.
pub const ALIGNMENT: u64 = 32;
const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;

/// A metadata value, with the GGUF value types llama.cpp's loaders expect for each key.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
    F32Array(Vec<f32>),
    BoolArray(Vec<bool>),
}

// GGUF value type codes.
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARRAY: u32 = 9;

/// One tensor of the file: its GGUF name, its shape in PyTorch order (outermost first; the
/// file stores it innermost first) and its storage type.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub ty: GgmlType,
}

impl TensorSpec {
    /// Bytes of this tensor's data (rows of the innermost dimension, each in whole blocks).
    pub fn nbytes(&self) -> u64 {
        let row = *self.shape.last().unwrap_or(&1);
        let rows: usize = self.shape.iter().rev().skip(1).product();
        self.ty.row_bytes(row) as u64 * rows as u64
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    let u32le = |out: &mut Vec<u8>, x: u32| out.extend_from_slice(&x.to_le_bytes());
    match v {
        Value::U32(x) => {
            u32le(out, T_U32);
            u32le(out, *x);
        }
        Value::I32(x) => {
            u32le(out, T_I32);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::F32(x) => {
            u32le(out, T_F32);
            out.extend_from_slice(&x.to_le_bytes());
        }
        Value::Bool(b) => {
            u32le(out, T_BOOL);
            out.push(u8::from(*b));
        }
        Value::Str(s) => {
            u32le(out, T_STR);
            put_str(out, s);
        }
        Value::StrArray(items) => {
            u32le(out, T_ARRAY);
            u32le(out, T_STR);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|s| put_str(out, s));
        }
        Value::I32Array(items) => {
            u32le(out, T_ARRAY);
            u32le(out, T_I32);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::F32Array(items) => {
            u32le(out, T_ARRAY);
            u32le(out, T_F32);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::BoolArray(items) => {
            u32le(out, T_ARRAY);
            u32le(out, T_BOOL);
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            out.extend(items.iter().map(|b| u8::from(*b)));
        }
    }
}

fn pad_to(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// The header (metadata and tensor infos, padded to the alignment) and each tensor's offset
/// inside the data section.
pub fn header(metadata: &[(String, Value)], tensors: &[TensorSpec]) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_str(&mut out, key);
        put_value(&mut out, value);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&t.ty.code().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = pad_to(offset + t.nbytes());
    }
    out.resize(pad_to(out.len() as u64) as usize, 0);
    (out, offsets)
}

/// Write a whole GGUF to `w`: the header, then for each tensor the bytes `data(i, buf)`
/// puts into `buf` (checked against the size its spec implies), each padded to the alignment.
pub fn write<W: Write, E>(
    w: &mut W,
    metadata: &[(String, Value)],
    tensors: &[TensorSpec],
    mut data: impl FnMut(usize, &mut Vec<u8>) -> Result<(), E>,
    io_err: impl Fn(std::io::Error) -> E,
    size_err: impl Fn(&str, u64, u64) -> E,
) -> Result<u64, E> {
    let (head, _) = header(metadata, tensors);
    w.write_all(&head).map_err(&io_err)?;
    let mut written = head.len() as u64;
    let mut buf = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        buf.clear();
        data(i, &mut buf)?;
        if buf.len() as u64 != t.nbytes() {
            return Err(size_err(&t.name, buf.len() as u64, t.nbytes()));
        }
        let padded = pad_to(buf.len() as u64);
        buf.resize(padded as usize, 0);
        w.write_all(&buf).map_err(&io_err)?;
        written += padded;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_the_documented_one() {
        let meta = vec![("general.architecture".to_string(), Value::Str("llama".into())), ("x.n".to_string(), Value::U32(7))];
        let tensors = vec![
            TensorSpec { name: "a".into(), shape: vec![2, 3], ty: GgmlType::F32 },
            TensorSpec { name: "b".into(), shape: vec![5], ty: GgmlType::F16 },
        ];
        let (h, offsets) = header(&meta, &tensors);
        assert_eq!(&h[..4], b"GGUF");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(h[8..16].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(h[16..24].try_into().unwrap()), 2);
        assert_eq!(h.len() % 32, 0);
        // a: 24 bytes, padded to 32; b starts there.
        assert_eq!(offsets, vec![0, 32]);
        // The dimensions are stored innermost first: [3, 2] for a [2, 3] tensor.
        let pos = h.windows(9).position(|w| w == [1, 0, 0, 0, 0, 0, 0, 0, b'a']).unwrap() + 9;
        assert_eq!(u32::from_le_bytes(h[pos..pos + 4].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(h[pos + 4..pos + 12].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(h[pos + 12..pos + 20].try_into().unwrap()), 2);
    }
}
