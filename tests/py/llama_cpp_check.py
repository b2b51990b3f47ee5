"""llama.cpp's view of a tailored checkpoint (the Rust test `llama_cpp` drives this).

  llama_cpp_check.py tokenizer DIR
      Write a Llama-2-style tokenizer (byte-fallback BPE: <0x00>..<0xFF>, then <s>, </s>,
      <unk> at 256..258, the ids of the test fixtures) into DIR. llama.cpp's converter
      recognises Llama tokenizers by their shape; the fixtures' own byte-level BPE is not one.

  llama_cpp_check.py convert MODEL LLAMA_CPP RUNTIME OUT.gguf
      Convert MODEL with LLAMA_CPP/convert_hf_to_gguf.py (f32), read OUT.gguf back with
      llama.cpp's gguf-py and compare it with MODEL's safetensors: metadata (block count,
      widths, heads, vocabulary) and every tensor, q/k permuted the way llama.cpp's Llama
      converter permutes them. Then run OUT.gguf in llama.cpp itself (RUNTIME: node-llama-cpp
      and `node`, see scripts/setup-llama-cpp.sh) and compare its logits on a token sequence
      with transformers' on MODEL. Prints a JSON summary.

  llama_cpp_check.py convert-any MODEL LLAMA_CPP RUNTIME OUT.gguf
      The same for any architecture llama.cpp converts (Qwen3, Gemma 2/3, ...): convert (f32),
      read back the architecture, block count and tensor names with gguf-py, then run it in
      llama.cpp. The fixtures' byte-level tokenizer is one llama.cpp's BPE pre-tokenizer table
      does not know, and Gemma 2's and Phi-3's converters insist on a sentencepiece model, so the vocabulary
      is written through the converter's own GPT-2 path declared `default` (with one merge, as
      llama.cpp requires merges), and Gemma's per-layer sliding pattern is written from
      `layer_types` (llama.cpp's runtime reads it; its Gemma converters do not write it); the tensors, the
      hyperparameters and the forward pass are llama.cpp's, unpatched.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import llama2_tokenizer


def llama_permute(w, n_head):
    """convert_hf_to_gguf's LlamaModel.permute: HF's rotary halves to llama.cpp's interleaving."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}


def run_in_llama_cpp(model, runtime, gguf_path):
    """llama.cpp's and transformers' logits at every position of one token sequence."""
    import torch
    from transformers import AutoModelForCausalLM

    config = json.loads((Path(model) / "config.json").read_text())
    text = b"Tailored layers, stitched and run by llama.cpp."
    tokens = [config["bos_token_id"]] + [b % config["vocab_size"] for b in text]
    script = Path(__file__).resolve().parent.parent / "js" / "llama_cpp_logits.mjs"
    entry = Path(runtime) / "node_modules" / "node-llama-cpp" / "dist" / "index.js"
    run = subprocess.run([str(Path(runtime) / "node"), str(script), str(entry), str(gguf_path), json.dumps(tokens)], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"llama.cpp (node-llama-cpp) failed ({run.returncode}):\n{run.stderr[-4000:]}")
    theirs = np.array(json.loads(run.stdout.strip().splitlines()[-1])["rows"], dtype=np.float64)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        ours = hf(input_ids=torch.tensor([tokens])).logits[0].double().numpy()
    top2 = np.sort(ours, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.05  # positions whose winner is not a near-tie
    return {
        "positions": len(tokens),
        "logits_shape_matches": list(theirs.shape) == list(ours.shape),
        "max_abs_logit_diff": float(np.max(np.abs(theirs - ours))) if theirs.shape == ours.shape else None,
        "max_abs_logit": float(np.max(np.abs(ours))),
        "clear_positions": int(clear.sum()),
        "argmax_agree_on_clear": bool(theirs.shape == ours.shape and np.all(theirs.argmax(-1)[clear] == ours.argmax(-1)[clear])),
    }


def convert(model, llama_cpp, runtime, out):
    from safetensors.numpy import load_file

    model, llama_cpp, out = Path(model), Path(llama_cpp), Path(out)
    run = subprocess.run(
        [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(model), "--outfile", str(out), "--outtype", "f32"],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed ({run.returncode}):\n{run.stderr[-4000:]}")

    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    import gguf

    config = json.loads((model / "config.json").read_text())
    weights = {}
    for f in sorted(model.glob("*.safetensors")):
        weights.update({k: v.astype(np.float32) for k, v in load_file(f).items()})

    reader = gguf.GGUFReader(out)
    fields = {name: reader.fields[name] for name in reader.fields}

    def scalar(key):
        f = fields[key]
        return f.parts[f.data[0]].tolist()[0]

    expected = {"token_embd.weight": weights["model.embed_tokens.weight"], "output_norm.weight": weights["model.norm.weight"]}
    if "lm_head.weight" in weights:
        expected["output.weight"] = weights["lm_head.weight"]
    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    for i in range(config["num_hidden_layers"]):
        for hf, gg in GGUF_NAMES.items():
            w = weights[f"model.layers.{i}.{hf}"]
            if hf.startswith("self_attn.q_proj"):
                w = llama_permute(w, n_head)
            elif hf.startswith("self_attn.k_proj"):
                w = llama_permute(w, n_kv)
            expected[f"blk.{i}.{gg}"] = w

    got = {}
    for t in reader.tensors:
        # gguf-py reports shapes innermost-first; the data is row-major like the HF tensor.
        got[t.name] = np.asarray(t.data, dtype=np.float32).reshape(list(reversed([int(d) for d in t.shape])))
    max_diff = 0.0
    mismatched = []
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            mismatched.append(f"{name}: {None if have is None else have.shape} vs {want.shape}")
            continue
        max_diff = max(max_diff, float(np.max(np.abs(have - want))))
    print(json.dumps({
        "arch": bytes(fields["general.architecture"].parts[-1]).decode(),
        "block_count": scalar("llama.block_count"),
        "embedding_length": scalar("llama.embedding_length"),
        "feed_forward_length": scalar("llama.feed_forward_length"),
        "head_count": scalar("llama.attention.head_count"),
        "head_count_kv": scalar("llama.attention.head_count_kv"),
        "vocab_tokens": len(fields["tokenizer.ggml.tokens"].data),
        "tensors": sorted(got),
        "unexpected": sorted(set(got) - set(expected) - {"rope_freqs.weight"}),
        "mismatched": mismatched,
        "max_abs_diff": max_diff,
        "llama_cpp_run": run_in_llama_cpp(model, runtime, out),
    }))


CONVERT_WITH_FIXTURE_VOCAB = """
import sys
sys.path.insert(0, sys.argv.pop(1))
import convert_hf_to_gguf
from conversion import base, gemma, phi
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "default"
gpt2_vocab = base.TextModel._set_vocab_gpt2
def set_vocab_gpt2(self):
    gpt2_vocab(self)
    # llama.cpp refuses a BPE vocabulary without merges; the fixture's has none (one token per byte).
    self.gguf_writer.add_token_merges(["\u0120 \u0120"])
base.TextModel._set_vocab_gpt2 = set_vocab_gpt2
gemma.Gemma2Model.set_vocab = lambda self: self._set_vocab_gpt2()
phi.Phi3MiniModel.set_vocab = lambda self: self._set_vocab_gpt2()
# llama.cpp runs a per-layer sliding pattern (as its Command-R and EXAONE converters write it),
# but its Gemma converters write none, so the runtime assumes Gemma's fixed pattern (every 2nd /
# 6th layer full), which a tailored model's kept layers need not follow. Write layer_types.
def with_layer_pattern(cls):
    params = cls.set_gguf_parameters
    def set_gguf_parameters(self):
        params(self)
        if self.hparams.get("sliding_window") and self.hparams.get("layer_types"):
            self.gguf_writer.add_sliding_window_pattern([t == "sliding_attention" for t in self.hparams["layer_types"]])
    cls.set_gguf_parameters = set_gguf_parameters
with_layer_pattern(gemma.Gemma2Model)
with_layer_pattern(gemma.Gemma3Model)
convert_hf_to_gguf.main()
"""


def convert_any(model, llama_cpp, runtime, out):
    model, llama_cpp, out = Path(model), Path(llama_cpp), Path(out)
    run = subprocess.run(
        [sys.executable, "-c", CONVERT_WITH_FIXTURE_VOCAB, str(llama_cpp), str(model), "--outfile", str(out), "--outtype", "f32"],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed ({run.returncode}):\n{run.stderr[-4000:]}")
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    import gguf

    reader = gguf.GGUFReader(out)
    fields = {name: reader.fields[name] for name in reader.fields}
    arch = bytes(fields["general.architecture"].parts[-1]).decode()
    f = fields[f"{arch}.block_count"]
    blocks = sorted({int(t.name.split(".")[1]) for t in reader.tensors if t.name.startswith("blk.")})
    print(json.dumps({
        "arch": arch,
        "block_count": f.parts[f.data[0]].tolist()[0],
        "blocks": blocks,
        "tensors": len(reader.tensors),
        "llama_cpp_run": run_in_llama_cpp(model, runtime, out),
    }))


if __name__ == "__main__":
    if sys.argv[1:2] == ["convert-any"] and len(sys.argv) == 6:
        convert_any(*sys.argv[2:])
        sys.exit(0)
    if sys.argv[1:2] == ["tokenizer"] and len(sys.argv) == 3:
        llama2_tokenizer.write(sys.argv[2])
    elif sys.argv[1:2] == ["convert"] and len(sys.argv) == 6:
        convert(*sys.argv[2:])
    else:
        sys.exit(__doc__)
