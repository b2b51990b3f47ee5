//! `tokenizer.ggml.pre`: which pre-tokenizer llama.cpp applies before BPE.
//!
//! llama.cpp's converter decides it by encoding one fixed text with the model's tokenizer
//! and looking the SHA-256 of the id list (as Python prints it, `[1, 2, 3]`) up in a table
//! of known tokenizers. This module encodes the same text with the same tokenizer
//! (`tokenizers`, the library behind transformers' fast tokenizers) and looks the hash up in
//! the entries for the families hf-tailor supports. A tokenizer not in the table whose
//! pre-tokenizer is plain GPT-2 byte-level splitting (`ByteLevel` with its regex) is
//! `gpt-2`, which is exactly that; the converter refuses such tokenizers instead.

use sha2::{Digest, Sha256};

/// The text llama.cpp's converter encodes to recognise a pre-tokenizer (`chktxt`).
pub const CHKTXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\u{1f680} (normal) \u{1f636}\u{200d}\u{1f32b}\u{fe0f} (multiple emojis concatenated) \u{2705} \u{1f999}\u{1f999} 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u{1780}\u{17b6}\u{1793}\u{17cb}\u{178f}\u{17c2}\u{1796}\u{17b7}\u{179f}\u{17c1}\u{179f}\u{17a2}\u{17b6}\u{1785}\u{1f601} ?\u{6211}\u{60f3}\u{5728}apple\u{5de5}\u{4f5c}1314151\u{5929}\u{ff5e} ------======= \u{43d}\u{435}\u{449}\u{43e} \u{43d}\u{430} \u{411}\u{44a}\u{43b}\u{433}\u{430}\u{440}\u{441}\u{43a}\u{438} ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// (hash, llama.cpp pre-tokenizer, a model with that tokenizer), from llama.cpp's converter.
const KNOWN: &[(&str, &str, &str)] = &[
    ("0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5", "llama-bpe", "Meta-Llama-3-8B"),
    ("855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249", "smollm", "SmolLM-135M / SmolLM2"),
    ("e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea", "qwen2", "Qwen1.5 / Qwen2 / Qwen2.5"),
    ("d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c", "qwen2", "Qwen3-Embedding"),
    ("3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454", "gpt-2", "gpt2"),
    ("63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e", "tekken", "Mistral-Nemo"),
];

/// The hash llama.cpp's converter computes for token ids `ids`.
pub fn chk_hash(ids: &[u32]) -> String {
    let list = format!("[{}]", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "));
    hex::encode(Sha256::digest(list.as_bytes()))
}

/// The pre-tokenizer of a known hash.
pub fn known(hash: &str) -> Option<&'static str> {
    KNOWN.iter().find(|(h, _, _)| *h == hash).map(|(_, pre, _)| *pre)
}

/// True when `tokenizer.json`'s pre-tokenizer is GPT-2's: byte-level with its split regex,
/// alone or as the only step of a sequence.
pub fn is_plain_gpt2(pre_tokenizer: &serde_json::Value) -> bool {
    let byte_level = |v: &serde_json::Value| {
        v.get("type").and_then(|t| t.as_str()) == Some("ByteLevel") && v.get("use_regex").and_then(|u| u.as_bool()).unwrap_or(true)
    };
    match pre_tokenizer.get("type").and_then(|t| t.as_str()) {
        Some("ByteLevel") => byte_level(pre_tokenizer),
        Some("Sequence") => pre_tokenizer.get("pretokenizers").and_then(|p| p.as_array()).is_some_and(|p| p.len() == 1 && byte_level(&p[0])),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_of_pythons_list_repr() {
        // sha256(b"[1, 2, 3]")
        assert_eq!(chk_hash(&[1, 2, 3]), hex::encode(Sha256::digest(b"[1, 2, 3]")));
        assert_eq!(known("855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"), Some("smollm"));
        assert_eq!(CHKTXT.chars().count(), 350);
    }
}
