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

# The lm-eval tokenisation and batching rules, shared with the cross-check test.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "py"))
from lm_eval_protocol import Requests  # noqa: E402

model_dir, items_path, threads, max_batch_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(model_dir)
items = [json.loads(line) for line in open(items_path) if line.strip()]

requests = Requests(tok, items)
batches = requests.batches(max_batch_tokens)

with torch.inference_mode():
    requests.run(model, batches[-1], {})  # warm-up on the smallest batch
    scores = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        requests.run(model, b, scores)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0

print(json.dumps({"tokens": requests.tokens, "seconds": seconds, "cpu_seconds": cpu, "acc": requests.accuracy(items, scores)}))
