"""The arithmetic bound of scripts/bench-trial.sh: how much cheaper than the reference design
a trial can be at all, at the reference's own arithmetic rate, given the work each design
must do on the same items.

Work is counted in FLOPs of the linear maps (the kept layers' projections per token-pass,
and the output head per row whose logits are read; attention's score/value products are
left out: at these lengths they are < 2 % of either side). The reference runs every input
of lm-eval's requests (one per distinct context + continuation[:-1]) through the layers and
the head at every position (full logits). The least hf-tailor's packed plan can do is run
each item's context once and each distinct continuation[:-1] once through the layers, and
the head only at the rows it reads (the context's last position and each branch token).
Its measured token count is used for the layers; the head rows are this least count.

Used by bench-trial.sh's summary (`work_bound(...)`), or on its own:
bench_trial_bound.py MODEL_DIR ITEMS.jsonl KEEP OURS_TOKENS REF_TOKENS REF_SECONDS REF_SCORE_SECONDS
prints one JSON object: flops per trial of each design, their ratio, and `bound`: the ratio
of the reference's trial time to the time hf-tailor's least work takes at the reference's
scoring rate (merge, write and reload cost the reference time that hf-tailor does not pay).
"""
import json
import sys
from pathlib import Path

from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "py"))
from lm_eval_protocol import encode_pair  # noqa: E402


def work_bound(model_dir, items_path, keep, ours_tokens, ref_tokens, ref_seconds, ref_score_seconds):
    c = json.load(open(Path(model_dir) / "config.json"))
    h, inter, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    layer = 2 * (h * q + 2 * h * kv + q * h + 3 * h * inter) * keep
    head = 2 * h * vocab

    tok = AutoTokenizer.from_pretrained(model_dir)
    head_rows = 0
    for line in open(items_path):
        if not line.strip():
            continue
        it = json.loads(line)
        branches = {tuple(encode_pair(tok, it["context"], ch)[1][:-1]) for ch in it["choices"]}
        head_rows += 1 + sum(len(b) for b in branches)

    ours = ours_tokens * layer + head_rows * head
    ref = ref_tokens * (layer + head)
    return {"ours_flops": ours, "ref_flops": ref, "flop_ratio": ref / ours, "ours_head_rows": head_rows,
            "bound": ref_seconds / (ref_score_seconds * ours / ref)}


if __name__ == "__main__":
    model_dir, items_path, keep = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(work_bound(model_dir, items_path, keep, *(float(x) for x in sys.argv[4:8]))))
