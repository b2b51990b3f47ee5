"""Cross-check a checkpoint written by `hf-tailor build` with the reference stack.

usage: check_build.py OUT_DIR EXPECT_JSON

Loads OUT_DIR with transformers (no missing, unexpected or mismatched keys allowed),
loads its tokenizer, runs a forward pass, and recomputes the tensors listed in
EXPECT_JSON from the *source* safetensors files with torch (take, or task arithmetic
`base + lambda * sum(W_j - base)` in float32, cast once to the output dtype), comparing
them with the loaded model's parameters. Prints OK on success, exits non-zero otherwise.
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer


def source_tensor(folder, name, cache={}):
    if folder not in cache:
        index = os.path.join(folder, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                cache[folder] = {k: os.path.join(folder, v) for k, v in json.load(f)["weight_map"].items()}
        else:
            single = os.path.join(folder, "model.safetensors")
            with safe_open(single, "pt") as f:
                cache[folder] = {k: single for k in f.keys()}
    with safe_open(cache[folder][name], "pt") as f:
        return f.get_tensor(name).float()


def expected(rule, src, rows):
    if "take" in rule:
        t = source_tensor(rule["take"], src)
    else:
        base = source_tensor(rule["base"], src)
        t = base.clone()
        for m in rule["models"]:
            t += rule["lambda"] * (source_tensor(m, src) - base)
    return t[:rows] if t.dim() == 2 and rows is not None else t


def main():
    out, expect_path = sys.argv[1], sys.argv[2]
    with open(expect_path) as f:
        checks = json.load(f)["checks"]
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True, dtype="auto")
    problems = {k: v for k, v in info.items() if v}
    if problems:
        sys.exit(f"loading {out} reported {problems}")
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    params = dict(model.named_parameters())
    for c in checks:
        p = params[c["out"]].detach()
        want = expected(c["rule"], c["src"], cfg["vocab_size"]).to(p.dtype)
        if p.shape != want.shape or not torch.equal(p, want):
            diff = (p.float() - want.float()).abs().max().item() if p.shape == want.shape else "shape"
            sys.exit(f"{c['out']} differs from the recomputed value (max abs diff {diff})")
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("hello tailor", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    if logits.shape[-1] != cfg["vocab_size"] or not torch.isfinite(logits).all():
        sys.exit(f"bad logits: shape {tuple(logits.shape)}")
    print(f"OK {len(checks)} tensors, {cfg['num_hidden_layers']} layers, dtype {next(model.parameters()).dtype}")


if __name__ == "__main__":
    main()
