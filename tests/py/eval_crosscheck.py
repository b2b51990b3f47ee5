"""Reference numbers for the evaluator cross-check, computed with transformers.

Usage: eval_crosscheck.py REQUESTS.json OUT.json
REQUESTS: {"requests": [{"label", "model": DIR, "sequences": [[ids...], ...],
            "items": [{"context", "choices"}, ...], "texts": [str], "window": N}, ...]},
          or a bare list of requests (then OUT is a bare list); "label", "texts" and
          "window" are optional
OUT: {"results": [{"single": [logits per sequence, run alone],
      "batched": [logits per sequence, run as one right-padded batch with an attention mask],
      "lls": [[log-likelihood per choice] per item]  (lm-eval's tokenisation rule),
      "perplexity": token-weighted perplexity of the texts over lm-eval's rolling windows
                    (max length N - 1, disjoint, BOS as the prefix token),
      "windows": number of windows}, ...]}
One process for every model: loading torch is the slow part.
"""
import json
import math
import sys

import torch
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_eval_protocol import encode_pair

torch.manual_seed(0)
torch.set_num_threads(1)


def reference(req):
    # Eager attention: the reference that applies soft-capping and sliding windows as written.
    model = AutoModelForCausalLM.from_pretrained(req["model"], dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tok = AutoTokenizer.from_pretrained(req["model"])

    def logits_of(seqs):
        n = max(len(s) for s in seqs)
        ids = torch.tensor([s + [s[0]] * (n - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask).logits
        return [out[i, : len(s)].tolist() for i, s in enumerate(seqs)]

    def logprobs(inp):
        with torch.no_grad():
            return torch.log_softmax(model(input_ids=torch.tensor([inp])).logits[0].float(), dim=-1)

    def loglikelihood(context, continuation):
        ctx, cont = encode_pair(tok, context, continuation)
        logp = logprobs((ctx + cont)[:-1])
        pos = range(len(ctx) - 1, len(ctx) - 1 + len(cont))
        return float(sum(logp[p, t] for p, t in zip(pos, cont)))

    # lm-eval's loglikelihood_rolling: windows of max_length inputs predicting max_length tokens.
    total, count, windows = 0.0, 0, 0
    for text in req.get("texts", []):
        tokens = tok(text, add_special_tokens=False)["input_ids"]
        for ctx, pred in map(make_disjoint_window, get_rolling_token_windows(tokens, tok.bos_token_id, req["window"] - 1, 1)):
            inp = (ctx + pred)[:-1]
            logp = logprobs(inp)
            first = len(inp) - len(pred)
            total += float(sum(logp[first + i, t] for i, t in enumerate(pred)))
            count += len(pred)
            windows += 1

    seqs = req["sequences"]
    return {
        "label": req.get("label"),
        "single": [logits_of([s])[0] for s in seqs],
        "batched": logits_of(seqs),
        "lls": [[loglikelihood(it["context"], c) for c in it["choices"]] for it in req["items"]],
        "perplexity": math.exp(-total / count) if count else None,
        "windows": windows,
    }


req = json.load(open(sys.argv[1]))
if isinstance(req, list):
    results = [reference(r) for r in req]
    json.dump(results, open(sys.argv[2], "w"))
else:
    results = [reference(r) for r in req["requests"]]
    json.dump({"results": results}, open(sys.argv[2], "w"))
print("ok", len(results), "models")
