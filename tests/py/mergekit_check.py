"""Run mergekit itself (the `mergekit-yaml` command, in this one process) on configs that
`hf-tailor mergekit export` wrote, and compare every output tensor with `hf-tailor build`'s.

usage: mergekit_check.py JOBS_JSON
JOBS_JSON: {"jobs": [{"label", "config": YAML, "out": MERGEKIT_OUT_DIR, "ours": HF_TAILOR_OUT_DIR}, ...]}
Prints one JSON line per job: {"label", "tensors", "max_abs_diff", "problems": [...]}.
"""
import glob
import json
import os
import sys

import torch
from safetensors.torch import load_file
from mergekit.scripts.run_yaml import main as mergekit_yaml

# One step of each dtype relative to the value: mergekit computes in its own order and
# casts once, as hf-tailor does, so a narrower dtype may round one step apart.
STEP = {torch.float32: 1e-6, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}


def tensors(folder):
    out = {}
    for f in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        out.update(load_file(f))
    return out


def check(job):
    try:
        mergekit_yaml.main(args=[job["config"], job["out"], "--copy-tokenizer"], standalone_mode=False)
    except SystemExit as e:
        if e.code:
            return {"label": job["label"], "problems": [f"mergekit-yaml exited {e.code}"]}
    except Exception as e:  # noqa: BLE001 - reported to the test
        return {"label": job["label"], "problems": [f"mergekit-yaml failed: {type(e).__name__}: {e}"]}
    ours, theirs = tensors(job["ours"]), tensors(job["out"])
    problems = []
    if set(ours) != set(theirs):
        problems.append(f"tensor names differ: only hf-tailor {sorted(set(ours) - set(theirs))}, only mergekit {sorted(set(theirs) - set(ours))}")
    worst = 0.0
    for name in sorted(set(ours) & set(theirs)):
        a, b = ours[name], theirs[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            problems.append(f"{name}: hf-tailor {tuple(a.shape)} {a.dtype}, mergekit {tuple(b.shape)} {b.dtype}")
            continue
        diff = (a.float() - b.float()).abs()
        worst = max(worst, diff.max().item())
        allowed = STEP[a.dtype] * torch.maximum(a.float().abs(), torch.tensor(1.0))
        if (diff > allowed).any():
            problems.append(f"{name}: differs by {diff.max().item():.3g}")
    cfg_ours = json.load(open(os.path.join(job["ours"], "config.json")))
    cfg_theirs = json.load(open(os.path.join(job["out"], "config.json")))
    for key in ("num_hidden_layers", "vocab_size"):
        if cfg_ours.get(key) != cfg_theirs.get(key):
            problems.append(f"config {key}: hf-tailor {cfg_ours.get(key)}, mergekit {cfg_theirs.get(key)}")
    return {"label": job["label"], "tensors": len(ours), "max_abs_diff": worst, "problems": problems}


def main():
    torch.set_num_threads(1)
    for job in json.load(open(sys.argv[1]))["jobs"]:
        print(json.dumps(check(job)), flush=True)


if __name__ == "__main__":
    main()
