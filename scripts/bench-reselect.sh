#!/usr/bin/env bash
# The final choice made again on a validation set (issue 27), after bench-quality.sh and
# bench-paired.sh.
#
#   bash scripts/bench-reselect.sh                         # RUNS=healr-0,healr-1,healr-2
#
# A search chooses its result among five finalists and its best warm start, on a selection
# split of its calibration set: 2 texts per domain on the bench family, too few to tell
# candidates apart that differ by less than a few hundredths of a nat per token. This script
# asks what a larger validation set (`search --selection-tasks`) would have chosen, and by
# how much that choice beats the best warm start, on the same texts:
#   - each run's finalists are written as recipes (deduplicated across runs);
#   - each is healed as its trials were (`hf-tailor heal`, the heal's texts, $HEAL_SEARCH_TOKENS
#     tokens, the trial's teacher) and scored per text on the 243 texts of the larger held-out
#     set (`hf-tailor eval --samples`);
#   - per run, each finalist minus the best warm start, in nats per token, with the paired
#     standard error over texts, and the finalist the validation set would choose.
# Output: runs/reselect/reselect.json and the table on stdout. Cost: ≈ 4 min per distinct
# finalist on 2 cores (13 for the three heal searches).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${BENCH_QUALITY_CACHE:-$repo/.bench-cache/quality}"
python="${HF_TAILOR_PYTHON:-$repo/.venv/bin/python}"
bin="${HF_TAILOR_BIN:-$repo/target/release/hf-tailor}"
runs="$cache/runs" data="$cache/family/data"
out="$runs/reselect"
if [[ ! -f "$data/extra-heldout-text-news.jsonl" ]]; then
    echo "bench-reselect: no larger held-out set in $data; run scripts/bench-paired.sh first" >&2
    exit 2
fi
[[ -x "$bin" ]] || cargo build --release --manifest-path "$repo/Cargo.toml"
join() { local IFS=,; echo "$*"; }
heal_txt=(); val=()
for d in drama code news; do
    heal_txt+=("ppl:$d-heal=$data/heal-text-$d.jsonl")
    val+=("ppl:$d-extra-text=$data/extra-heldout-text-$d.jsonl")
done

"$python" "$repo/scripts/bench_quality.py" finalists --cache-runs "$runs" --runs "${RUNS:-healr-0,healr-1,healr-2}" --out "$out"
for r in "$out"/*.recipe.json; do
    n="${r%.recipe.json}"
    [[ -s "$n.jsonl" ]] && continue
    echo "bench-reselect: $(basename "$n")" >&2
    recipe="$r"
    if [[ -s "$n.teacher" ]]; then
        nice -n 10 "$bin" heal --recipe "$r" --teacher "$(cat "$n.teacher")" --calibration "$(join "${heal_txt[@]}")" \
            --heal-tokens "${HEAL_SEARCH_TOKENS:-4096}" --out "$n.yaml" > /dev/null
        recipe="$n.yaml"
    fi
    nice -n 10 "$bin" eval --recipe "$recipe" --tasks "$(join "${val[@]}")" --samples "$n.jsonl.tmp" --force --json > /dev/null
    mv "$n.jsonl.tmp" "$n.jsonl"
done
"$python" "$repo/scripts/bench_quality.py" reselect --samples "$out"
