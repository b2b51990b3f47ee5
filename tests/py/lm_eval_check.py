"""Score multiple-choice JSONL tasks with lm-evaluation-harness itself (its HF backend on
CPU, each task a custom YAML over a local JSON file), for the test that hf-tailor's `acc`
and `acc_norm` are lm-eval's.

usage: lm_eval_check.py REQUEST.json OUT.json
REQUEST: {"model": DIR, "tasks": [{"name", "jsonl": PATH, "delimiter": " " or ""}, ...]}
  (rows {"context", "choices", "label"}; lm-eval puts `delimiter` before every choice)
OUT: {"lm_eval": VERSION, "results": {name: {"acc", "acc_norm", "items", "lls": [[ll per choice] per row]}}}
"""
import json
import os
import sys
import tempfile

work = tempfile.mkdtemp(prefix="hft-lm-eval-")
# Nothing outside the temporary folder: datasets' and lm-eval's caches go there.
os.environ["HF_DATASETS_CACHE"] = os.path.join(work, "datasets")
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lm_eval  # noqa: E402
import torch  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

torch.set_num_threads(1)
req = json.load(open(sys.argv[1]))
names = []
for t in req["tasks"]:
    with open(os.path.join(work, t["name"] + ".yaml"), "w") as f:
        f.write(
            f"task: {t['name']}\n"
            "dataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(t['jsonl'])}\n"
            "test_split: test\n"
            "output_type: multiple_choice\n"
            "doc_to_text: context\n"
            "doc_to_choice: choices\n"
            "doc_to_target: label\n"
            f"target_delimiter: {json.dumps(t['delimiter'])}\n"
            "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
        )
    names.append(t["name"])

out = lm_eval.simple_evaluate(
    model="hf",
    model_args=f"pretrained={req['model']},dtype=float32",
    tasks=names,
    task_manager=TaskManager(include_path=work),
    device="cpu",
    batch_size=4,
    log_samples=True,
)


def lls(samples):
    rows = sorted(samples, key=lambda s: s["doc_id"])
    return [[float(r[0][0]) for r in s["resps"]] for s in rows]


results = {
    n: {
        "acc": out["results"][n]["acc,none"],
        "acc_norm": out["results"][n]["acc_norm,none"],
        "items": out["n-samples"][n]["effective"],
        "lls": lls(out["samples"][n]),
    }
    for n in names
}
# lm-eval's own output object, for the test that hf-tailor writes the same shape (the
# per-task sections; `samples` and the run's environment are left out).
shape = {k: {n: out[k][n] for n in names} for k in ("results", "n-samples", "configs", "versions", "n-shot", "higher_is_better")}
shape["top_level_keys"] = sorted(out.keys())
json.dump({"lm_eval": lm_eval.__version__, "results": results, "shape": shape}, open(sys.argv[2], "w"), default=str)
print("ok", {n: (r["acc"], r["acc_norm"], r["items"]) for n, r in results.items()})
