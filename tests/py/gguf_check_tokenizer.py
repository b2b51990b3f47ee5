"""Write test tokenizers into a model folder (the Rust tests `gguf::*` drive this).

  gguf_check_tokenizer.py DIR VOCAB
  gguf_check_tokenizer.py llama3 DIR LLAMA_CPP

The second form writes Llama 3's tokenizer.json, rebuilt from the vocabulary GGUF llama.cpp
ships for its tokenizer tests (LLAMA_CPP/models/ggml-vocab-llama-bpe.gguf: 128256 tokens,
280147 merges) with Llama 3's published pre-tokenizer, post-processor and decoder; its
tokenization of llama.cpp's check text then hashes to the `llama-bpe` entry of llama.cpp's
converter, which says the rebuild is Llama 3's tokenizer.

The first form writes the layout of Llama 2's tokenizer.json (llama2_tokenizer.py), with
pieces and merges trained here on a small English text to fill VOCAB ids.
"""

import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, processors, trainers

import llama2_tokenizer

CORPUS = [
    "The tailored model keeps the layers that matter and drops the rest of them.",
    "Layers are cut and stitched from the base model and its fine-tuned siblings.",
    "Hello world! This is the test of the tokenizer, with the words it has seen there.",
    "A search over which layers to keep, which to take from a sibling and which to merge.",
    "They were there when the weather was better, and then they went to the other side.",
    "Numbers like 3, 14, 17 and 12345 are split into single digits by this tokenizer.",
]


LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def llama3(folder, llama_cpp):
    from tokenizers import Regex, pre_tokenizers

    sys.path.insert(0, str(Path(llama_cpp) / "gguf-py"))
    import gguf

    reader = gguf.GGUFReader(Path(llama_cpp) / "models" / "ggml-vocab-llama-bpe.gguf")
    field = lambda k: reader.fields[k].contents()
    tokens, types, merges = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type"), field("tokenizer.ggml.merges")
    vocab = {t: i for i, t in enumerate(tokens)}
    model = {
        "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
        "fuse_unk": False, "byte_fallback": False, "ignore_merges": True, "vocab": vocab, "merges": merges,
    }
    special = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
               for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3]
    tok = Tokenizer.from_str(json.dumps({"version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
                                         "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None, "model": model}))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", 128000)]),
    ])
    tok.decoder = decoders.ByteLevel()
    folder = Path(folder)
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
              "model_max_length": 131072, "clean_up_tokenization_spaces": True}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}) + "\n")
    print(json.dumps({"vocab": len(tokens), "merges": len(merges)}))


def main(folder, vocab_size):
    folder, vocab_size = Path(folder), int(vocab_size)
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.normalizer = llama2_tokenizer.normalizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(llama2_tokenizer.FIXED), show_progress=False, special_tokens=[])
    trainer_tok.train_from_iterator(CORPUS * 4, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    pieces = sorted(trained["vocab"].items(), key=lambda kv: kv[1])
    vocab = dict(llama2_tokenizer.FIXED)
    for piece, _ in pieces:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    if len(vocab) != vocab_size:
        sys.exit(f"trained {len(vocab)} tokens, wanted {vocab_size}: lengthen the corpus")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    llama2_tokenizer.write(folder, vocab, merges)
    print(json.dumps({"vocab": len(vocab), "merges": len(merges)}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["llama3"] and len(sys.argv) == 4:
        llama3(*sys.argv[2:])
    elif len(sys.argv) == 3:
        main(*sys.argv[1:])
    else:
        sys.exit(__doc__)
