"""Write a Llama-2-style tokenizer with real merges into a model folder (the Rust test
`gguf::gguf_files_run_in_llama_cpp_as_transformers_runs_the_checkpoint` drives this).

  gguf_check_tokenizer.py DIR VOCAB

The layout of Llama 2's tokenizer.json: SentencePiece-style BPE with byte fallback
(<0x00>..<0xFF> at ids 0..255), <s>, </s>, <unk> at 256..258, then pieces and merges
trained here on a small English text to fill VOCAB ids; spaces become U+2581 and a leading
one is prepended; the post-processor adds <s>. llama.cpp's converter reads it through its
tokenizer.json path (no tokenizer.model).
"""

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers

CORPUS = [
    "The tailored model keeps the layers that matter and drops the rest of them.",
    "Layers are cut and stitched from the base model and its fine-tuned siblings.",
    "Hello world! This is the test of the tokenizer, with the words it has seen there.",
    "A search over which layers to keep, which to take from a sibling and which to merge.",
    "They were there when the weather was better, and then they went to the other side.",
    "Numbers like 3, 14, 17 and 12345 are split into single digits by this tokenizer.",
]


def main(folder, vocab_size):
    folder, vocab_size = Path(folder), int(vocab_size)
    fixed = {f"<0x{b:02X}>": b for b in range(256)}
    fixed.update({"<s>": 256, "</s>": 257, "<unk>": 258})
    norm = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.normalizer = norm
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(fixed), show_progress=False, special_tokens=[])
    trainer_tok.train_from_iterator(CORPUS * 4, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    pieces = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    vocab = dict(fixed)
    for piece, _ in pieces:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    if len(vocab) != vocab_size:
        sys.exit(f"trained {len(vocab)} tokens, wanted {vocab_size}: lengthen the corpus")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = norm
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<s>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 256)])
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
    print(json.dumps({"vocab": len(vocab), "merges": len(merges)}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
