//! Storage dtypes hf-tailor reads and writes, and exact conversions to and from f32.

use half::{bf16, f16};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    pub fn from_safetensors(d: safetensors::Dtype) -> Option<Self> {
        match d {
            safetensors::Dtype::F32 => Some(Dtype::F32),
            safetensors::Dtype::F16 => Some(Dtype::F16),
            safetensors::Dtype::BF16 => Some(Dtype::Bf16),
            _ => None,
        }
    }

    pub fn to_safetensors(self) -> safetensors::Dtype {
        match self {
            Dtype::F32 => safetensors::Dtype::F32,
            Dtype::F16 => safetensors::Dtype::F16,
            Dtype::Bf16 => safetensors::Dtype::BF16,
        }
    }

    /// The name transformers uses in `torch_dtype` / `dtype`.
    pub fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::Bf16 => "bfloat16",
        }
    }

    /// Parse `float16`, `bf16`, `torch.bfloat16`, … as written in configs and on command lines.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim_start_matches("torch.").to_ascii_lowercase().as_str() {
            "float32" | "f32" | "fp32" => Some(Dtype::F32),
            "float16" | "f16" | "fp16" | "half" => Some(Dtype::F16),
            "bfloat16" | "bf16" => Some(Dtype::Bf16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        })
    }
}

/// Decode little-endian tensor bytes into f32 (exact for every supported dtype).
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / dtype.size()];
    to_f32_into(dtype, bytes, &mut out);
    out
}

/// [`to_f32`] into `out` (`bytes.len() / dtype.size()` values). The half-precision
/// dtypes go through `half`'s slice conversions (vectorised where the CPU allows).
pub fn to_f32_into(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    let n = bytes.len() / dtype.size();
    assert_eq!(out.len(), n, "to_f32_into: output length");
    let bytes = &bytes[..n * dtype.size()];
    match dtype {
        Dtype::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
            Ok(v) if cfg!(target_endian = "little") => out.copy_from_slice(v),
            _ => out.iter_mut().zip(bytes.chunks_exact(4)).for_each(|(o, c)| *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        },
        Dtype::F16 => half_to_f32::<f16>(bytes, out),
        Dtype::Bf16 => half_to_f32::<bf16>(bytes, out),
    }
}

/// Little-endian 16-bit floats to f32 in blocks: the bytes are reinterpreted in place
/// when aligned, else copied through a small aligned buffer.
fn half_to_f32<H: bytemuck::Pod>(bytes: &[u8], out: &mut [f32])
where
    [H]: half::slice::HalfFloatSliceExt,
{
    use half::slice::HalfFloatSliceExt;
    if cfg!(target_endian = "little") {
        if let Ok(h) = bytemuck::try_cast_slice::<u8, H>(bytes) {
            h.convert_to_f32_slice(out);
            return;
        }
    }
    const BLOCK: usize = 4096;
    let mut buf = [H::zeroed(); BLOCK];
    for (c, o) in bytes.chunks(BLOCK * 2).zip(out.chunks_mut(BLOCK)) {
        let b = &mut buf[..o.len()];
        for (x, p) in b.iter_mut().zip(c.chunks_exact(2)) {
            *x = bytemuck::cast(u16::from_le_bytes([p[0], p[1]]));
        }
        b.convert_to_f32_slice(o);
    }
}

/// Encode f32 values as little-endian bytes of `dtype` (round to nearest even).
pub fn from_f32(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    from_f32_into(dtype, values, &mut out);
    out
}

/// [`from_f32`] into `out` (cleared first), reusing its allocation.
pub fn from_f32_into(dtype: Dtype, values: &[f32], out: &mut Vec<u8>) {
    out.clear();
    match dtype {
        Dtype::F32 if cfg!(target_endian = "little") => out.extend_from_slice(bytemuck::cast_slice(values)),
        Dtype::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Dtype::F16 => f32_to_half::<f16>(values, out),
        Dtype::Bf16 => f32_to_half::<bf16>(values, out),
    }
}

fn f32_to_half<H: bytemuck::Pod>(values: &[f32], out: &mut Vec<u8>)
where
    [H]: half::slice::HalfFloatSliceExt,
{
    use half::slice::HalfFloatSliceExt;
    const BLOCK: usize = 4096;
    out.reserve(values.len() * 2);
    let mut buf = vec![H::zeroed(); BLOCK.min(values.len())];
    for v in values.chunks(BLOCK) {
        let b = &mut buf[..v.len()];
        b.convert_from_f32_slice(v);
        if cfg!(target_endian = "little") {
            out.extend_from_slice(bytemuck::cast_slice(b));
        } else {
            b.iter().for_each(|x| out.extend_from_slice(&bytemuck::cast::<H, u16>(*x).to_le_bytes()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly_representable_values() {
        let v = [0.0f32, 1.0, -2.5, 0.125, 65504.0];
        for d in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            let back = to_f32(d, &from_f32(d, &v[..4]));
            assert_eq!(back, &v[..4], "{d}");
        }
        assert_eq!(Dtype::parse("torch.bfloat16"), Some(Dtype::Bf16));
    }

    /// The slice conversions give exactly the per-element conversions, rounding included,
    /// for aligned and unaligned input and lengths that are not a multiple of any block.
    #[test]
    fn slice_conversions_equal_per_element_conversions() {
        let mut x = 0x1234_5678u32;
        let values: Vec<f32> = (0..10_001)
            .map(|i| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                match i % 7 {
                    0 => f32::from_bits(x),
                    1 => f32::NAN,
                    2 => -0.0,
                    3 => 65520.0,
                    _ => (x as f32 / u32::MAX as f32 - 0.5) * 1e3,
                }
            })
            .collect();
        for d in [Dtype::F32, Dtype::F16, Dtype::Bf16] {
            let expected: Vec<u8> = values
                .iter()
                .flat_map(|v| match d {
                    Dtype::F32 => v.to_le_bytes().to_vec(),
                    Dtype::F16 => f16::from_f32(*v).to_le_bytes().to_vec(),
                    Dtype::Bf16 => bf16::from_f32(*v).to_le_bytes().to_vec(),
                })
                .collect();
            let bytes = from_f32(d, &values);
            assert_eq!(bytes, expected, "{d} encode");
            let back_expected: Vec<u32> = expected
                .chunks_exact(d.size())
                .map(|c| match d {
                    Dtype::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]).to_bits(),
                    Dtype::F16 => f16::from_le_bytes([c[0], c[1]]).to_f32().to_bits(),
                    Dtype::Bf16 => bf16::from_le_bytes([c[0], c[1]]).to_f32().to_bits(),
                })
                .collect();
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(&bytes);
            for input in [&bytes[..], &shifted[1..]] {
                let back: Vec<u32> = to_f32(d, input).iter().map(|v| v.to_bits()).collect();
                assert_eq!(back.len(), back_expected.len());
                assert!(back == back_expected, "{d} decode differs");
            }
        }
        assert_eq!(Dtype::parse("int8"), None);
    }
}
