#!/usr/bin/env bash
# Benchmark of the in-memory evaluator (issue: In-memory evaluator).
#
# Generates a Llama base and three siblings (default 8 layers, hidden 512, MLP 1376, GQA 8/4
# heads, the fixture's byte-level tokenizer) and MMLU-style multiple-choice items, then prints:
#   * tokens/s of hf-tailor (release build, f32, CPU) and of PyTorch/transformers f32 on the
#     same model and items with the same batching, and their ratio (goal >= 1.0);
#   * the speed-up of prefix caching on the reference's warm-start stream of candidates
#     (3 removal patterns x (all-base + 6 lambdas x 7 sibling subsets) = 129 recipes).
# Both engines run with THREADS threads (default 2).
#
# Usage: scripts/bench-eval.sh   (env: LAYERS HIDDEN INTER ITEMS STREAM_ITEMS THREADS BATCH_TOKENS)
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-8}
HIDDEN=${HIDDEN:-512}
INTER=${INTER:-1376}
ITEMS=${ITEMS:-64}
STREAM_ITEMS=${STREAM_ITEMS:-3}
THREADS=${THREADS:-2}
BATCH_TOKENS=${BATCH_TOKENS:-2048}
TARGET=${CARGO_TARGET_DIR:-target}
PY=${HF_TAILOR_PYTHON:-.venv/bin/python}

cargo build --release --example bench_eval
BIN="$TARGET/release/examples/bench_eval"
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/hft-bench-eval.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS TOKENIZERS_PARALLELISM=false

echo "model: llama, $LAYERS layers, hidden $HIDDEN, mlp $INTER; $ITEMS items; $THREADS threads; in $WORK"
"$BIN" gen "$WORK" "$LAYERS" "$HIDDEN" "$INTER" "$ITEMS" "$STREAM_ITEMS"

ours=$("$BIN" throughput "$WORK")
theirs=$(HF_HUB_OFFLINE=1 "$PY" scripts/bench_eval.py "$WORK/base" "$WORK/items.jsonl" "$THREADS" "$BATCH_TOKENS")
echo "hf-tailor: $ours"
echo "pytorch:   $theirs"
"$PY" - "$ours" "$theirs" <<'PYEOF'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert o["tokens"] == t["tokens"], f"token counts differ: {o['tokens']} vs {t['tokens']}"
ours, theirs = o["tokens"] / o["warm_s"], t["tokens"] / t["seconds"]
print(f"throughput (wall): hf-tailor {ours:,.0f} tok/s (cold run incl. weight load: {o['tokens'] / o['cold_s']:,.0f}), "
      f"pytorch {theirs:,.0f} tok/s, ratio {ours / theirs:.2f}x (goal >= 1.0); acc {o['acc']:.4f} vs {t['acc']:.4f}")
oc, tc = o["tokens"] / o["warm_cpu_s"], t["tokens"] / t["cpu_seconds"]
print(f"throughput (per CPU-second, less sensitive to other load): hf-tailor {oc:,.0f}, pytorch {tc:,.0f}, ratio {oc / tc:.2f}x")
PYEOF

stream=$("$BIN" stream "$WORK")
echo "stream: $stream"
"$PY" - "$stream" <<'PYEOF'
import json, sys
s = json.loads(sys.argv[1])
u, c = s["uncached"], s["cached"]
print(f"prefix caching on {s['candidates']} warm-start candidates ({s['kept_layers']} kept layers): "
      f"{u['seconds']:.1f}s uncached -> {c['seconds']:.1f}s cached = {u['seconds'] / c['seconds']:.2f}x speed-up "
      f"(CPU time {u['cpu_seconds']:.1f}s -> {c['cpu_seconds']:.1f}s = {u['cpu_seconds'] / c['cpu_seconds']:.2f}x); "
      f"layer-forwards saved {c['saved_fraction']:.1%}; prefix cache peak {c['stats']['prefix']['peak_bytes'] / 2**20:.0f} MiB, "
      f"weights peak {c['stats']['weights']['peak_bytes'] / 2**20:.0f} MiB")
PYEOF
