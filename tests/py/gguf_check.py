"""Check a GGUF hf-tailor wrote against llama.cpp itself (the Rust tests `gguf::*` drive this).

  gguf_check.py MODEL LLAMA_CPP RUNTIME OURS.gguf TYPE REF.gguf [PRE]

- Converts MODEL with LLAMA_CPP/convert_hf_to_gguf.py (--outtype TYPE) into REF.gguf and
  reads both files back with llama.cpp's gguf-py: metadata keys and values, tensor names,
  shapes, types and (dequantised) values. PRE, when given, is the pre-tokenizer the
  converter is told to use for a byte-level tokenizer it does not recognise (it stops
  otherwise); hf-tailor decides that case itself.
- Runs OURS.gguf in llama.cpp (RUNTIME: node-llama-cpp and `node`): its logits on a token
  sequence against transformers' on MODEL's safetensors, and its tokenization of a test
  text against the Hugging Face tokenizer's.
Prints a JSON summary on the last line.
"""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np

# Spaces, digits, punctuation, accents, an emoji (byte fallback), and sentences whose merges
# the SentencePiece-style test tokenizer knows: with llama.cpp's converter's flat -1000 scores,
# llama.cpp splits these two sentences differently from transformers; with hf-tailor's
# rank-ordered scores it does not.
TEXT = (
    "Hello world!  Tailored layers, stitched: 3 + 14 = 17.\nNew line\twith a tab, café, naïve — 😀 'tis I've it's 12345 "
    "The tailored model keeps the layers that matter and drops the rest of them. "
    "A search over which layers to keep, which to take from a sibling and which to merge."
)


def convert(model, llama_cpp, out_type, ref, pre):
    if pre is None:
        cmd = [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py")]
    else:
        # The converter, with its pre-tokenizer detection answering PRE (for a tokenizer it
        # does not know); everything else runs unchanged but for Gemma 2's vocabulary step.
        runner = (
            "import sys, runpy; sys.path.insert(0, sys.argv[1]); sys.path.insert(1, sys.argv[1] + '/gguf-py'); "
            "import conversion.base as b, conversion.gemma as g; pre = sys.argv[2]; b.TextModel.get_vocab_base_pre = lambda self, tok: pre; "
            # Gemma 2's converter reads only tokenizer.model; for a tokenizer.json-only checkpoint
            # it is told to take the same GPT-2 path as its Gemma 3 converter takes.
            "g.Gemma2Model.set_vocab = lambda self: self._set_vocab_gpt2(); "
            "script = sys.argv[1] + '/convert_hf_to_gguf.py'; sys.argv = [script] + sys.argv[3:]; runpy.run_path(script, run_name='__main__')"
        )
        cmd = [sys.executable, "-c", runner, str(llama_cpp), pre]
    run = subprocess.run(cmd + [str(model), "--outfile", str(ref), "--outtype", out_type], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"convert_hf_to_gguf.py failed ({run.returncode}):\n{run.stderr[-4000:]}")


def fields(reader):
    out = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        v = f.contents()
        out[name] = (int(f.types[-1]), v)
    return out


def summarize(v):
    if isinstance(v, list) and len(v) > 8:
        return f"[{len(v)} items: {v[:3]} ... {v[-2:]}]"
    return v


def first_difference(a, b):
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"item {i}: {x!r} vs {y!r}"
        return None
    return None if a == b else f"{a!r} vs {b!r}"


def tensors(reader, gguf):
    out = {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)
        out[t.name] = (t.tensor_type.name, [int(d) for d in t.shape], values, bytes(np.asarray(t.data).tobytes()))
    return out


def run_llama_cpp(model, runtime, gguf_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = json.loads((Path(model) / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(model)
    bos = tok.bos_token_id if tok.bos_token_id is not None else 0
    seq = [bos] + [b % config["vocab_size"] for b in b"Tailored layers, stitched and run by llama.cpp."]
    script = Path(__file__).resolve().parent.parent / "js" / "llama_cpp_gguf.mjs"
    entry = Path(runtime) / "node_modules" / "node-llama-cpp" / "dist" / "index.js"
    run = subprocess.run([str(Path(runtime) / "node"), str(script), str(entry), str(gguf_path), json.dumps(seq), TEXT], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"llama.cpp (node-llama-cpp) failed ({run.returncode}):\n{run.stderr[-4000:]}")
    got = json.loads(run.stdout.strip().splitlines()[-1])
    theirs = np.array(got["rows"], dtype=np.float64)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    with torch.no_grad():
        ours = hf(input_ids=torch.tensor([seq])).logits[0].double().numpy()
    hf_text = tok.encode(TEXT, add_special_tokens=False)
    with_special = tok.encode("x")
    return {
        "positions": len(seq),
        "logits_shape_matches": list(theirs.shape) == list(ours.shape),
        "max_abs_logit_diff": float(np.max(np.abs(theirs - ours))) if theirs.shape == ours.shape else None,
        "max_abs_logit": float(np.max(np.abs(ours))),
        "argmax_agreement": float(np.mean(theirs.argmax(-1) == ours.argmax(-1))) if theirs.shape == ours.shape else None,
        "text_tokens_equal": got["text_tokens"] == hf_text,
        "text_tokens": len(hf_text),
        "text_tokens_llama_cpp": got["text_tokens"] if got["text_tokens"] != hf_text else None,
        "text_tokens_hf": hf_text if got["text_tokens"] != hf_text else None,
        "bos": [got["bos"], tok.bos_token_id],
        "eos": [got["eos"], tok.eos_token_id],
        "add_bos": [got["add_bos"], tok.bos_token_id is not None and with_special[:1] == [tok.bos_token_id]],
    }


def main(model, llama_cpp, runtime, ours, out_type, ref, pre=None):
    model, llama_cpp, ref = Path(model), Path(llama_cpp), Path(ref)
    convert(model, llama_cpp, out_type, ref, pre)
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    import gguf

    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(ref)
    fa, fb = fields(a), fields(b)
    differ = {}
    for k in sorted(set(fa) & set(fb)):
        (ta, va), (tb, vb) = fa[k], fb[k]
        why = first_difference(va, vb)
        if ta != tb:
            why = f"value type {ta} vs {tb}" + (f"; {why}" if why else "")
        if why:
            differ[k] = why
    only_ours = {k: summarize(fa[k][1]) for k in sorted(set(fa) - set(fb))}
    only_ref = {k: summarize(fb[k][1]) for k in sorted(set(fb) - set(fa))}
    xa, xb = tensors(a, gguf), tensors(b, gguf)
    tensor_mismatch = []
    max_value_diff = 0.0
    identical_bytes = True
    for name in sorted(set(xa) | set(xb)):
        if name not in xa or name not in xb:
            tensor_mismatch.append(f"{name}: only in {'ours' if name in xa else 'converter'}")
            continue
        (ka, sa, va, ba), (kb, sb, vb, bb) = xa[name], xb[name]
        if (ka, sa) != (kb, sb):
            tensor_mismatch.append(f"{name}: {ka}{sa} vs {kb}{sb}")
            continue
        max_value_diff = max(max_value_diff, float(np.max(np.abs(va - vb))) if va.size else 0.0)
        identical_bytes &= ba == bb
    print(json.dumps({
        "metadata_keys": len(fa),
        "metadata_differ": differ,
        "metadata_only_ours": only_ours,
        "metadata_only_converter": only_ref,
        "tensors": len(xa),
        "tensor_mismatch": tensor_mismatch,
        "tensor_max_value_diff": max_value_diff,
        "tensor_bytes_identical": identical_bytes,
        "llama_cpp_run": run_llama_cpp(model, runtime, ours),
    }, default=str))


if __name__ == "__main__":
    if len(sys.argv) not in (7, 8):
        sys.exit(__doc__)
    main(*sys.argv[1:])
