#!/usr/bin/env bash
# Benchmark of `hf-tailor build` on a checkpoint of several GB (issue: Checkpoint core).
#
# Generates a bf16 Llama base and one sibling (default 8 layers, hidden 4096, MLP 11008,
# vocabulary 32000: ~3.8 GB each) in a temporary folder, builds a recipe that drops 25 % of
# the layers, takes one layer from the sibling and merges two layers with it, and prints:
#   * peak RSS of the build vs the budget 2 x largest tensor + 256 MiB (ratio must be <= 1);
#   * write throughput of the build vs a plain `cp` of the base's files on the same disk
#     (ratio goal >= 0.8), also vs `cp` followed by an fsync of the copies, because the
#     build fsyncs every file before its atomic rename.
# Both runs read their sources from disk: the source files are evicted from the page cache
# (posix_fadvise DONTNEED) before each. The build reads more than it writes (merged layers
# read base and sibling), so its ratio is conservative.
#
# Usage: scripts/bench-build.sh   (env: LAYERS HIDDEN INTER VOCAB sizes, SHARD_SIZE of the
#                                   output, BENCH_DIR where to put the ~11 GB of files,
#                                   HF_TAILOR_BIN the binary to measure instead of a release
#                                   build, BASELINE_BIN a second binary to compare it with on
#                                   the merge recipe, in the same run)
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-8}
HIDDEN=${HIDDEN:-4096}
INTER=${INTER:-11008}
VOCAB=${VOCAB:-32000}
SHARD_SIZE=${SHARD_SIZE:-5GB}
TARGET=${CARGO_TARGET_DIR:-target}

# The generator's speed is not measured: build it in the dev profile (already built by the
# tests); the measured build is the release binary.
cargo build --example bench_build
if [[ -z "${HF_TAILOR_BIN:-}" ]]; then
  cargo build --release --bin hf-tailor
fi
GEN="$TARGET/debug/examples/bench_build"
BIN=${HF_TAILOR_BIN:-$TARGET/release/hf-tailor}
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/hft-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

now() { date +%s.%N; }

echo "generating base and sibling ($LAYERS layers, hidden $HIDDEN, mlp $INTER, vocab $VOCAB, bf16) in $WORK"
"$GEN" gen "$WORK/base" 1 "$LAYERS" "$HIDDEN" "$INTER" "$VOCAB"
"$GEN" gen "$WORK/sib" 2 "$LAYERS" "$HIDDEN" "$INTER" "$VOCAB"

# Drop every layer i with i % 4 == 2 (25 %); merge layers 1 and LAYERS-3 with the sibling; take layer 3 from it.
{
  echo "format: hf-tailor/recipe-v1"
  echo "architecture: llama"
  echo "source_layers: $LAYERS"
  echo "base: {name: base, repo: $WORK/base}"
  echo "siblings: [{name: sib, repo: $WORK/sib}]"
  echo "layers:"
  for ((i = 0; i < LAYERS; i++)); do
    if ((i % 4 == 2)); then continue; fi
    if ((i == 1 || i == LAYERS - 3)); then
      echo "- {from: $i, merge: {method: task_arithmetic, models: [sib], lambda: 0.5}}"
    elif ((i == 3)); then
      echo "- {from: $i, take: sib}"
    else
      echo "- {from: $i, take: base}"
    fi
  done
  echo "embeddings: {take: base}"
  echo "head: {take: base}"
} >"$WORK/tailor.yaml"
# The same layers with every merge replaced by the base's layer: pure streaming, for reference.
sed 's/merge: {method: task_arithmetic, models: \[sib\], lambda: 0.5}/take: base/' "$WORK/tailor.yaml" >"$WORK/verbatim.yaml"

# Evict the sources from the page cache so that cp and the build both read from disk (the
# page cache of a busy machine holds an unpredictable part of ~7.5 GB otherwise).
evict() {
  sync
  python3 -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$WORK"/base/*.safetensors "$WORK"/sib/*.safetensors
}

evict
cp_bytes=$(du -cb "$WORK"/base/*.safetensors | tail -1 | cut -f1)
t0=$(now)
cp -r "$WORK/base" "$WORK/cp-copy"
t1=$(now)
sync "$WORK"/cp-copy/*
t2=$(now)
rm -rf "$WORK/cp-copy"

run_build() { # recipe report-name [binary]
  rm -rf "$WORK/out"
  evict
  /usr/bin/time -v "${3:-$BIN}" build --recipe "$1" --out "$WORK/out" --shard-size "$SHARD_SIZE" --json >"$WORK/$2.json" 2>"$WORK/$2.time" || {
    cat "$WORK/$2.time"
    exit 1
  }
  grep "Maximum resident set size" "$WORK/$2.time" | awk '{print $NF}'
}
verbatim_rss_kb=$(run_build "$WORK/verbatim.yaml" verbatim)
verbatim_seconds=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["seconds"], r["bytes"])' "$WORK/verbatim.json")
time_rss_kb=$(run_build "$WORK/tailor.yaml" report)
if [[ -n "${BASELINE_BIN:-}" ]]; then
  run_build "$WORK/tailor.yaml" baseline "$BASELINE_BIN" >/dev/null
  python3 - "$WORK/report.json" "$WORK/baseline.json" <<'PY'
import json, sys
new, old = (json.load(open(p)) for p in sys.argv[1:3])
print(f"merge recipe: {new['bytes'] / new['seconds'] / 1e6:.0f} MB/s vs the baseline binary's "
      f"{old['bytes'] / old['seconds'] / 1e6:.0f} MB/s: {old['seconds'] / new['seconds']:.2f} x faster")
PY
fi

python3 - "$WORK/report.json" "$cp_bytes" "$t0" "$t1" "$t2" "$time_rss_kb" "$WORK" $verbatim_seconds "$verbatim_rss_kb" <<'PY'
import glob, json, struct, sys
r = json.load(open(sys.argv[1]))
cp_bytes, t0, t1, t2, rss_kb = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
# Largest source tensor, from the safetensors headers of both models.
largest = 0
for path in glob.glob(sys.argv[7] + "/*/model-*.safetensors"):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    for k, v in header.items():
        if k != "__metadata__":
            largest = max(largest, v["data_offsets"][1] - v["data_offsets"][0])
r["largest_tensor_bytes"] = largest
MiB = 1 << 20
budget = 2 * largest + 256 * MiB
peak = rss_kb * 1024
build_tp = r["bytes"] / r["seconds"]
cp_tp, cp_sync_tp = cp_bytes / (t1 - t0), cp_bytes / (t2 - t0)
print(f"layers {r['layers_before']} -> {r['layers_after']}, params {r['params_before']/1e9:.2f}B -> {r['params_after']/1e9:.2f}B, "
      f"{r['shards']} shard(s), {r['bytes']/1e9:.2f} GB written in {r['seconds']:.1f} s")
print(f"peak RSS {peak/MiB:.0f} MiB; budget 2 x largest tensor ({r['largest_tensor_bytes']/MiB:.0f} MiB) + 256 MiB = {budget/MiB:.0f} MiB")
print(f"RSS ratio (peak / budget, goal <= 1.0): {peak/budget:.3f}")
print(f"build {build_tp/1e6:.0f} MB/s; cp {cp_tp/1e6:.0f} MB/s ({cp_bytes/1e9:.2f} GB in {t1-t0:.1f} s); cp + fsync {cp_sync_tp/1e6:.0f} MB/s")
print(f"throughput ratio vs cp (goal >= 0.8): {build_tp/cp_tp:.3f}")
print(f"throughput ratio vs cp + fsync: {build_tp/cp_sync_tp:.3f}")
v_seconds, v_bytes, v_rss_kb = float(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10])
print(f"same layers without merges (pure streaming): {v_bytes/v_seconds/1e6:.0f} MB/s, peak RSS {v_rss_kb*1024/MiB:.0f} MiB; "
      f"throughput ratio vs cp: {v_bytes/v_seconds/cp_tp:.3f}, RSS ratio: {v_rss_kb*1024/budget:.3f}")
PY
