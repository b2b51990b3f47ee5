//! Tensor storage types of a GGUF file and the encoders from f32 rows.
//!
//! `Q8_0` is ggml's reference quantiser: blocks of 32 values, one f16 scale
//! `d = max|x| / 127` and 32 signed bytes `round(x / d)` (round half away from zero, as C's
//! `roundf`); a block of zeros has scale 0. f16 and bf16 round to nearest even.

use crate::dtype::{self, Dtype};

/// A ggml tensor type hf-tailor writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    Q8_0,
}

/// Values per Q8_0 block.
pub const QK8_0: usize = 32;

impl GgmlType {
    /// ggml's `ggml_type` code.
    pub fn code(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::Bf16 => 30,
        }
    }

    /// Values per block (rows must be a whole number of blocks).
    pub fn block(self) -> usize {
        match self {
            GgmlType::Q8_0 => QK8_0,
            _ => 1,
        }
    }

    /// Bytes of one row of `n` values (`n` a multiple of [`Self::block`]).
    pub fn row_bytes(self, n: usize) -> usize {
        match self {
            GgmlType::F32 => 4 * n,
            GgmlType::F16 | GgmlType::Bf16 => 2 * n,
            GgmlType::Q8_0 => n / QK8_0 * (2 + QK8_0),
        }
    }

    /// True if rows of `n` values can be stored in this type.
    pub fn fits_row(self, n: usize) -> bool {
        n.is_multiple_of(self.block())
    }

    /// Append `values` (whole rows) encoded in this type to `out`.
    pub fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        let plain = |d: Dtype, out: &mut Vec<u8>| {
            let mut tmp = Vec::new();
            dtype::from_f32_into(d, values, &mut tmp);
            out.extend_from_slice(&tmp);
        };
        match self {
            GgmlType::F32 => plain(Dtype::F32, out),
            GgmlType::F16 => plain(Dtype::F16, out),
            GgmlType::Bf16 => plain(Dtype::Bf16, out),
            GgmlType::Q8_0 => quantize_q8_0(values, out),
        }
    }
}

/// ggml's `quantize_row_q8_0_ref` over `values` (a multiple of 32 long).
pub fn quantize_q8_0(values: &[f32], out: &mut Vec<u8>) {
    debug_assert_eq!(values.len() % QK8_0, 0);
    out.reserve(values.len() / QK8_0 * (2 + QK8_0));
    for block in values.chunks_exact(QK8_0) {
        let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|x| (x * id).round() as i8 as u8));
    }
}

/// The inverse of [`quantize_q8_0`] (tests and checks).
pub fn dequantize_q8_0(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2 + QK8_0)
        .flat_map(|b| {
            let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            b[2..].iter().map(move |q| *q as i8 as f32 * d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_round_trips_within_half_a_step() {
        let values: Vec<f32> = (0..96).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173).collect();
        let mut out = Vec::new();
        quantize_q8_0(&values, &mut out);
        assert_eq!(out.len(), GgmlType::Q8_0.row_bytes(96));
        let back = dequantize_q8_0(&out);
        for (block, got) in values.chunks(32).zip(back.chunks(32)) {
            let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let step = amax / 127.0;
            for (a, b) in block.iter().zip(got) {
                assert!((a - b).abs() <= step * 0.5 + amax * 1e-3, "{a} vs {b}");
            }
            // The largest magnitude maps to ±127 exactly.
            assert!(got.iter().any(|g| (g.abs() - amax).abs() <= amax * 1e-3));
        }
    }

    #[test]
    fn a_zero_block_has_scale_zero() {
        let mut out = Vec::new();
        quantize_q8_0(&[0.0; 32], &mut out);
        assert!(out.iter().all(|b| *b == 0));
    }

    #[test]
    fn row_sizes() {
        assert_eq!(GgmlType::Q8_0.row_bytes(64), 68);
        assert_eq!(GgmlType::F16.row_bytes(5), 10);
        assert!(!GgmlType::Q8_0.fits_row(48));
        assert!(GgmlType::F16.fits_row(48));
    }
}
