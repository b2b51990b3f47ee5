"""Reference numbers for the evaluator cross-check, computed with transformers.

Usage: eval_crosscheck.py REQUEST.json OUT.json
REQUEST: {"model": DIR, "sequences": [[ids...], ...], "items": [{"context", "choices"}, ...]},
         or a list of such requests (one Python start for many models; OUT is then a list)
OUT: {"single": [logits per sequence, run alone],
      "batched": [logits per sequence, run as one right-padded batch with an attention mask],
      "lls": [[log-likelihood per choice] per item]}  (lm-eval's tokenisation rule)
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm_eval_protocol import encode_pair

torch.manual_seed(0)
torch.set_num_threads(1)

def answer(req):
    model = AutoModelForCausalLM.from_pretrained(req["model"], dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(req["model"])

    def logits_of(seqs):
        n = max(len(s) for s in seqs)
        ids = torch.tensor([s + [s[0]] * (n - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask).logits
        return [out[i, : len(s)].tolist() for i, s in enumerate(seqs)]

    def loglikelihood(context, continuation):
        ctx, cont = encode_pair(tok, context, continuation)
        inp = torch.tensor([(ctx + cont)[:-1]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=inp).logits[0].float(), dim=-1)
        pos = range(len(ctx) - 1, len(ctx) - 1 + len(cont))
        return float(sum(logp[p, t] for p, t in zip(pos, cont)))

    seqs = req["sequences"]
    return {
        "single": [logits_of([s])[0] for s in seqs],
        "batched": logits_of(seqs),
        "lls": [[loglikelihood(it["context"], c) for c in it["choices"]] for it in req["items"]],
    }


req = json.load(open(sys.argv[1]))
out = [answer(r) for r in req] if isinstance(req, list) else answer(req)
json.dump(out, open(sys.argv[2], "w"))
print("ok", len(req) if isinstance(req, list) else 1, "models")
