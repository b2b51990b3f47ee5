//! llama.cpp's names of the tensors outside the layers, and the Q/K row permutation its
//! Llama graph needs. What differs per architecture is in the architecture table
//! ([`crate::arch::GgufArch`]).

pub const TOKEN_EMBD: &str = "token_embd.weight";
pub const OUTPUT_NORM: &str = "output_norm.weight";
pub const OUTPUT: &str = "output.weight";
pub const ROPE_FREQS: &str = "rope_freqs.weight";
pub const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
pub const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";

/// llama.cpp's row permutation of a Q or K weight (`rows x cols`, row-major) with `heads`
/// heads: within each head, row `2j + h` of the result is row `h * half + j` of the input
/// (`half` = head_dim / 2), turning transformers' rotary halves into interleaved pairs.
pub fn permute_rows(values: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let cols = values.len() / rows.max(1);
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0f32; values.len()];
    for h in 0..heads {
        for j in 0..half {
            for s in 0..2 {
                let src = h * head_dim + s * half + j;
                let dst = h * head_dim + 2 * j + s;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_interleaves_the_halves_of_each_head() {
        // 2 heads of dim 4, one column: rows [0 1 2 3 | 4 5 6 7] -> [0 2 1 3 | 4 6 5 7].
        let v: Vec<f32> = (0..8).map(|i| i as f32).collect();
        assert_eq!(permute_rows(&v, 8, 2), vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    }
}
