"""Cross-check checkpoints written by `hf-tailor build` with the reference stack.

usage: check_build.py JOBS_JSON

JOBS_JSON: {"jobs": [{"out": OUT_DIR, "checks": [{"out": NAME, "src": NAME, "rule": RULE}, ...]}, ...]}

For every job: loads OUT_DIR with transformers (no missing, unexpected or mismatched keys
allowed), loads its tokenizer and runs a forward pass, then recomputes every tensor listed
from the *source* safetensors files with numpy, the merge formulas written out here
(independently of hf-tailor), and compares them with the loaded model's state dict (tied
`lm_head` included). RULE is {"take": DIR} or {"method": ..., "base": DIR, "models": [DIR],
...} with the method's parameters. Prints one OK line per job, exits non-zero otherwise.
"""
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file as load_torch
from transformers import AutoModelForCausalLM, AutoTokenizer

_tensors = {}


def source_tensor(folder, name):
    """A source tensor as float32 (bf16/f16 widened exactly)."""
    if folder not in _tensors:
        index = os.path.join(folder, "model.safetensors.index.json")
        files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
        tensors = {}
        for f in files:
            # numpy has no bf16: torch reads the file, values widen exactly to float32.
            for k, v in load_torch(os.path.join(folder, f)).items():
                tensors[k] = v.float().numpy()
        _tensors[folder] = tensors
    return _tensors[folder][name].astype(np.float32)


def trim(tau, density):
    """Keep the round(n * density) largest magnitudes (first ones on a tie), zero the rest."""
    flat = tau.reshape(-1)
    keep = int(math.floor(flat.size * density + 0.5))
    out = np.zeros_like(flat)
    if keep > 0:
        order = np.argsort(-np.abs(flat), kind="stable")[:keep]
        out[order] = flat[order]
    return out.reshape(tau.shape)


def expected(rule, src):
    """(values, tolerance) of a tensor under RULE. Tolerance 0: bit-exact."""
    if "take" in rule:
        return source_tensor(rule["take"], src), 0.0
    method = rule["method"]
    models = [source_tensor(m, src) for m in rule["models"]]
    if method == "linear":
        w = np.array(rule["weights"], dtype=np.float64)
        w = w / w.sum()
        acc = np.zeros(models[0].shape, dtype=np.float64)
        for wi, m in zip(w, models):
            acc += wi * m.astype(np.float64)
        return acc.astype(np.float32), 0.0
    if method == "slerp":
        a, b = (m.astype(np.float64).reshape(-1) for m in models)
        t = rule["t"]
        cos = np.dot(a / np.linalg.norm(a), b / np.linalg.norm(b))
        if abs(cos) > 0.9995:
            out = (1 - t) * a + t * b
        else:
            om = math.acos(max(-1.0, min(1.0, cos)))
            out = (math.sin((1 - t) * om) * a + math.sin(t * om) * b) / math.sin(om)
        return out.astype(np.float32).reshape(models[0].shape), 1e-6
    base = source_tensor(rule["base"], src)
    lam = np.float32(rule["lambda"])
    taus = [m - base for m in models]
    if method == "task_arithmetic":
        out = base.copy()
        for t in taus:
            out += lam * t
        return out, 0.0
    if method == "ties":
        taus = [trim(t, rule["density"]) for t in taus]
        stack = np.stack(taus)
        # Elected sign by total mass; a zero mass elects + (as mergekit's `>= 0` does).
        sign = np.where(stack.sum(axis=0) >= 0, 1.0, -1.0).astype(np.float32)
        agree = (stack != 0) & (np.sign(stack) == sign)
        n = agree.sum(axis=0)
        total = np.where(agree, stack, 0).sum(axis=0)
        merged = np.where(n > 0, total / np.maximum(n, 1), 0).astype(np.float32)
        return base + lam * merged, 1e-6
    raise ValueError(f"no reference for {method}")


# Relative rounding step of each output dtype: a value computed in float32 that differs in
# its last float32 bits may round to the neighbouring value of a narrower dtype.
ULP = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}


def check_dare(rule, src, got, ulp):
    """DARE's mask comes from hf-tailor's own RNG, so check what it must satisfy: every
    entry is base + Σ over a subset of the models of (λ / density)·τ_j (the 1/density
    rescale), and each model keeps about `density` of its entries."""
    base = source_tensor(rule["base"], src).reshape(-1).astype(np.float64)
    taus = [(source_tensor(m, src).reshape(-1) - base).astype(np.float64) for m in rule["models"]]
    d, lam = rule["density"], rule["lambda"]
    scale = lam / d
    diff = got.reshape(-1).astype(np.float64) - base
    m = len(taus)
    best = np.full(diff.shape, np.inf)
    kept = np.zeros((m, diff.size), dtype=bool)
    for subset in range(1 << m):
        cand = sum((scale * taus[j] for j in range(m) if subset >> j & 1), np.zeros_like(diff))
        err = np.abs(diff - cand)
        better = err < best
        best = np.where(better, err, best)
        for j in range(m):
            kept[j] = np.where(better, bool(subset >> j & 1), kept[j])
    tol = 1e-5 * (1 + np.abs(base) + sum(np.abs(scale * t) for t in taus)) + ulp * np.abs(got.reshape(-1))
    if not (best <= tol).all():
        sys.exit(f"{src}: DARE output is not base + (lambda/density) * a subset of task vectors (worst {best.max():.3g})")
    n = diff.size
    for j in range(m):
        frac = kept[j].mean()
        sigma = math.sqrt(d * (1 - d) / n)
        if abs(frac - d) > 5 * sigma + 1e-9:
            sys.exit(f"{src}: DARE kept {frac:.3f} of model {j}'s entries, density {d}")
    return n


def check_job(job):
    out = job["out"]
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True, dtype="auto")
    problems = {k: v for k, v in info.items() if v}
    if problems:
        sys.exit(f"loading {out} reported {problems}")
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    if set(state) - {c["out"] for c in job["checks"]}:
        sys.exit(f"{out}: tensors not checked: {sorted(set(state) - {c['out'] for c in job['checks']})}")
    dtype = next(model.parameters()).dtype
    for c in job["checks"]:
        p = state[c["out"]]
        got = p.float().numpy()
        rows = cfg["vocab_size"]
        if c["rule"].get("method") == "dare":
            check_dare(c["rule"], c["src"], got, ULP[dtype])
            continue
        want, tol = expected(c["rule"], c["src"])
        if want.ndim == 2 and c["src"] in ("model.embed_tokens.weight", "lm_head.weight"):
            want = want[:rows]
        # Cast once to the output dtype, as the writer does.
        want = torch.from_numpy(np.ascontiguousarray(want)).to(dtype).float().numpy()
        if got.shape != want.shape:
            sys.exit(f"{out}: {c['out']} has shape {got.shape}, recomputed {want.shape}")
        excess = np.abs(got - want) - (tol + (ULP[dtype] * np.abs(want) if tol > 0 else 0))
        if (excess > 0).any():
            diff = float(np.abs(got - want).max())
            sys.exit(f"{out}: {c['out']} differs from the recomputed value by {diff:.3g} (allowed {tol} + one {dtype} step)")
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("hello tailor", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    if logits.shape[-1] != cfg["vocab_size"] or not torch.isfinite(logits).all():
        sys.exit(f"{out}: bad logits: shape {tuple(logits.shape)}")
    print(f"OK {out}: {len(job['checks'])} tensors, {cfg['num_hidden_layers']} layers, dtype {dtype}")


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)["jobs"]
    torch.set_num_threads(1)
    for job in jobs:
        check_job(job)


if __name__ == "__main__":
    main()
