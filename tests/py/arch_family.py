"""Tiny random families built with transformers' own model classes (the Rust test `archs` drives this).

Usage: arch_family.py SPEC.json
SPEC: {"class": "Qwen3ForCausalLM", "config": {Qwen3Config fields}, "root": DIR, "siblings": N, "seed": S,
       "norm_center": C (optional, default 1.0: norm weights are C + 0.3 * noise)}
Writes DIR/base and DIR/sib1..sibN as safetensors checkpoints saved by `save_pretrained`, so
tensor names, shapes and config fields are transformers' own, not re-typed. Every tensor is
random (norm weights too, so that a norm convention such as Gemma's `1 + w` shows), and each
sibling differs from the base in every tensor. The tokenizer files are the Rust fixture's.
"""
import json
import sys
from pathlib import Path

import torch
import transformers

spec = json.load(open(sys.argv[1]))
torch.manual_seed(spec["seed"])
cls = getattr(transformers, spec["class"])
norm_center = spec.get("norm_center", 1.0)
config = cls.config_class(**spec["config"])
base = cls(config).float().eval()
with torch.no_grad():
    for name, p in base.named_parameters():
        if p.dim() == 1:
            p.copy_(norm_center + 0.3 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
        else:
            p.normal_(0.0, 0.15)
root = Path(spec["root"])
base.save_pretrained(root / "base")
for k in range(1, spec["siblings"] + 1):
    sib = cls(config).float().eval()
    sib.load_state_dict(base.state_dict())
    with torch.no_grad():
        for p in sib.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sib.save_pretrained(root / f"sib{k}")
print("ok", spec["class"], sum(p.numel() for p in base.parameters()), "parameters")
