"""The reference design of one search trial, for scripts/bench-trial.sh: what a search
built on the usual tools pays per candidate. For each recipe: merge the layers on CPU
from the source shards (torch, f32: take, task arithmetic `base + λ·Σ(W_j − base)`,
linear), write the checkpoint (safetensors + config + tokenizer), reload it with
transformers, and score the multiple-choice items as lm-evaluation-harness does (its
context/continuation tokenisation; one request per choice, requests with the same
context + continuation[:-1] computed once; sorted longest first; right-padded batches of
at most MAX_BATCH_TOKENS padded tokens; full logits per batch).

Usage: bench_trial_reference.py ITEMS.jsonl WORK_DIR THREADS MAX_BATCH_TOKENS RECIPE.json...
Prints one JSON object per recipe: seconds (wall, total and per stage; and CPU seconds of
the process, all threads), tokens, acc.
"""
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "py"))
from lm_eval_protocol import Requests  # noqa: E402

items_path, work, threads, max_batch_tokens = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
items = [json.loads(line) for line in open(items_path) if line.strip()]


def shards(folder):
    index = Path(folder) / "model.safetensors.index.json"
    if index.exists():
        return {k: str(Path(folder) / v) for k, v in json.load(open(index))["weight_map"].items()}
    single = str(Path(folder) / "model.safetensors")
    with safe_open(single, "pt") as f:
        return {k: single for k in f.keys()}


def merged(rule, name, dirs, maps):
    def load(model):
        with safe_open(maps[model][name], "pt") as f:
            return f.get_tensor(name).float()

    if "take" in rule:
        return load(rule["take"])
    m = rule["merge"]
    if m["method"] == "task_arithmetic":
        base = load("__base__")
        acc = torch.zeros_like(base)
        for s in m["models"]:
            acc += load(s) - base
        return base + m["lambda"] * acc
    if m["method"] == "linear":
        total = sum(m["weights"])
        return sum(load(s) * (w / total) for s, w in zip(m["models"], m["weights"]))
    raise SystemExit(f"reference: merge method {m['method']} not implemented")


def folder(source):
    # Local sources: `path:` (older recipes: `repo:` holding a folder).
    return source.get("path") or source["repo"]


def materialise(recipe, out):
    dirs = {recipe["base"]["name"]: folder(recipe["base"]), "__base__": folder(recipe["base"])}
    dirs.update({s["name"]: folder(s) for s in recipe.get("siblings", [])})
    maps = {k: shards(v) for k, v in dirs.items()}
    base_map = maps["__base__"]
    tensors = {}
    for name in base_map:
        if name.startswith("model.layers."):
            continue
        rule = recipe["embeddings"] if "embed_tokens" in name else recipe["head"]
        tensors[name] = merged(rule, name, dirs, maps).contiguous()
    for i, layer in enumerate(recipe["layers"]):
        prefix = f"model.layers.{layer['from']}."
        for name in base_map:
            if name.startswith(prefix):
                tensors[f"model.layers.{i}." + name[len(prefix):]] = merged(layer, name, dirs, maps).contiguous()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    base_dir = Path(folder(recipe["base"]))
    config = json.load(open(base_dir / "config.json"))
    config["num_hidden_layers"] = len(recipe["layers"])
    if config.get("tie_word_embeddings") and recipe["embeddings"] != recipe["head"]:
        # As hf-tailor writes it: the output projection is the head rule's embedding matrix.
        tensors["lm_head.weight"] = merged(recipe["head"], "model.embed_tokens.weight", dirs, maps).contiguous()
        config["tie_word_embeddings"] = False
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.pop("layer_types", None)
    json.dump(config, open(out / "config.json", "w"), indent=2)
    for f in base_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")) or f.name == "generation_config.json":
            shutil.copy(f, out / f.name)


def score(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    t_loaded = time.perf_counter()
    requests = Requests(tok, items)
    scores = {}
    with torch.no_grad():
        for batch in requests.batches(max_batch_tokens):
            requests.run(model, batch, scores)
    return requests.accuracy(items, scores), requests.tokens, t_loaded


for path in sys.argv[5:]:
    recipe = json.load(open(path))
    out = work / "checkpoint"
    t0, c0 = time.perf_counter(), time.process_time()
    materialise(recipe, out)
    t1 = time.perf_counter()
    acc, tokens, t2 = score(out)
    t3 = time.perf_counter()
    print(json.dumps({"recipe": path, "seconds": t3 - t0, "cpu_seconds": time.process_time() - c0, "merge_write_s": t1 - t0, "reload_s": t2 - t1, "score_s": t3 - t2, "tokens": tokens, "acc": acc}), flush=True)
    shutil.rmtree(out, ignore_errors=True)
