"""The layout of Llama 2's tokenizer.json, shared by the test scripts that need one.

SentencePiece-style BPE with byte fallback (<0x00>..<0xFF> at ids 0..255), <s>, </s>, <unk> at
256..258 (the ids of the test fixtures), then whatever pieces the caller's vocabulary adds;
spaces become U+2581 and a leading one is prepended; the post-processor adds <s>. llama.cpp's
converter reads it through its tokenizer.json path (no tokenizer.model).
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, processors

# The byte tokens and the three specials, at the fixtures' ids.
FIXED = {**{f"<0x{b:02X}>": b for b in range(256)}, "<s>": 256, "</s>": 257, "<unk>": 258}


def normalizer():
    return normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])


def write(folder, vocab=None, merges=()):
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `folder`.
    `vocab` (default: FIXED alone) must start with FIXED; `merges` are (left, right) pairs."""
    vocab = dict(FIXED if vocab is None else vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges), unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizer()
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<s>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", FIXED["<s>"])])
    folder = Path(folder)
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "LlamaTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 2048,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}) + "\n")
