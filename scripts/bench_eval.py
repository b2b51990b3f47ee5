"""PyTorch/transformers side of scripts/bench-eval.sh: score the same multiple-choice items
on the same model, the way lm-evaluation-harness would (lm-eval tokenisation, one input per
distinct context+continuation[:-1], sorted longest first, right-padded batches of at most
MAX_BATCH_TOKENS padded tokens), f32 on CPU, and print JSON {tokens, seconds, cpu_seconds, acc}.

Usage: bench_eval.py MODEL_DIR ITEMS.jsonl THREADS MAX_BATCH_TOKENS
"""
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# The lm-eval tokenisation rule, shared with the cross-check test.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "py"))
from lm_eval_protocol import encode_pair  # noqa: E402

model_dir, items_path, threads, max_batch_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(model_dir)
items = [json.loads(line) for line in open(items_path) if line.strip()]


# Distinct inputs and, per (item, choice), the (input, position, target) triples it sums.
inputs, index, needs = [], {}, []
for it in items:
    per_choice = []
    for c in it["choices"]:
        ctx, cont = encode_pair(tok, it["context"], c)
        inp = tuple((ctx + cont)[:-1])
        if inp not in index:
            index[inp] = len(inputs)
            inputs.append(inp)
        per_choice.append([(index[inp], len(ctx) - 1 + i, t) for i, t in enumerate(cont)])
    needs.append(per_choice)

order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))
batches, i = [], 0
while i < len(order):
    n = len(inputs[order[i]])
    rows = max(1, max_batch_tokens // n)
    batches.append(order[i : i + rows])
    i += rows

wanted = {}
for per_choice in needs:
    for triples in per_choice:
        for s, p, t in triples:
            wanted.setdefault(s, []).append((p, t))


def run(batch, out):
    n = max(len(inputs[s]) for s in batch)
    ids = torch.tensor([list(inputs[s]) + [inputs[s][0]] * (n - len(inputs[s])) for s in batch])
    mask = torch.tensor([[1] * len(inputs[s]) + [0] * (n - len(inputs[s])) for s in batch])
    logits = model(input_ids=ids, attention_mask=mask).logits
    for r, s in enumerate(batch):
        pos = torch.tensor([p for p, _ in wanted[s]])
        tgt = torch.tensor([t for _, t in wanted[s]])
        logp = torch.log_softmax(logits[r, pos].float(), dim=-1)
        out[s] = dict(zip(((p, t) for p, t in wanted[s]), logp[torch.arange(len(pos)), tgt].tolist()))


with torch.inference_mode():
    run(batches[-1], {})  # warm-up on the smallest batch
    scores = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        run(b, scores)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0

correct = 0
for it, per_choice in zip(items, needs):
    lls = [sum(scores[s][(p, t)] for s, p, t in triples) for triples in per_choice]
    correct += max(range(len(lls)), key=lambda k: (lls[k], -k)) == it["label"]
print(json.dumps({"tokens": sum(len(x) for x in inputs), "seconds": seconds, "cpu_seconds": cpu, "acc": correct / len(items)}))
