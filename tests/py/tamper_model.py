"""Alter a written checkpoint so that it no longer scores what it was built to score:
zero the final norm's weight, which makes every logit 0 (all choices tie, the first wins).

usage: tamper_model.py MODEL_DIR   (the verify-failure test's HF_TAILOR_TEST_AFTER_BUILD hook)
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

folder = sys.argv[1]
name = "model.norm.weight"
index = os.path.join(folder, "model.safetensors.index.json")
shard = json.load(open(index))["weight_map"][name] if os.path.exists(index) else "model.safetensors"
path = os.path.join(folder, shard)
tensors = load_file(path)
tensors[name] = np.zeros_like(tensors[name])
save_file(tensors, path, metadata={"format": "pt"})
print(f"zeroed {name} in {shard}", file=sys.stderr)
