#!/usr/bin/env bash
# Paired comparisons on a larger held-out set (issues 26 and 27), after bench-quality.sh.
#
#   bash scripts/bench-paired.sh
#
# bench-quality.sh's held-out set (100 cloze items and 12 texts per domain) gives each
# accuracy a standard error of 1.6 points, more than the differences it is asked to resolve.
# This script builds a larger held-out set from the siblings' training slices that no
# fine-tuning step touched (found by drawing the fine-tuning's windows again with its seed)
# and that the heal's fit never reads (its first 40 slices are skipped): up to 400 cloze items
# and 100 texts per domain (the news corpus gives 86 and 43). Then every model the benchmark
# made is scored on it and on the original held-out set with `hf-tailor eval --samples`
# (every item's and text's own score), and the differences are taken item by item:
#   - each model's accuracy minus the best baseline's (on the larger set), with the paired
#     standard error over items;
#   - each search run's log-likelihood per token minus its reference run's (the same seed's
#     warm starts alone), with the standard error over texts.
# Models: the baselines (runs/baselines/*.yaml), their healed cuts (runs/*-heal.yaml), the
# siblings' average, and every search's tailor.yaml (runs/NAME.out; a refit of it in
# runs/NAME-16k, when there is one, is used instead). Output: runs/samples/paired.json and
# the table on stdout. Cost: 2–4 min per model on 2 cores.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${BENCH_QUALITY_CACHE:-$repo/.bench-cache/quality}"
python="${HF_TAILOR_PYTHON:-$repo/.venv/bin/python}"
bin="${HF_TAILOR_BIN:-$repo/target/release/hf-tailor}"
runs="$cache/runs" family="$cache/family" data="$cache/family/data"
if [[ ! -d "$runs/baselines" ]]; then
    echo "bench-paired: no benchmark runs in $runs; run scripts/bench-quality.sh first" >&2
    exit 2
fi
[[ -x "$bin" ]] || cargo build --release --manifest-path "$repo/Cargo.toml"

"$python" "$repo/scripts/bench_quality.py" extra-heldout --cache "$family" --pkgs "$cache/pkgs"

tasks=()
for d in drama code news; do
    tasks+=("mc:$d-extra=$data/extra-heldout-$d.jsonl" "ppl:$d-extra-text=$data/extra-heldout-text-$d.jsonl"
            "mc:$d=$data/heldout-$d.jsonl" "ppl:$d-text=$data/heldout-text-$d.jsonl")
done
tasks="$(IFS=,; echo "${tasks[*]}")"
out="$runs/samples"
mkdir -p "$out"

score() { # NAME RECIPE
    [[ -s "$out/$1.jsonl" || ! -f "$2" ]] && return 0
    local t0=$SECONDS
    nice -n 10 "$bin" eval --recipe "$2" --tasks "$tasks" --json --samples "$out/$1.jsonl" --force > "$out/$1.json"
    echo "bench-paired: $1 scored in $((SECONDS - t0)) s" >&2
}
for b in shortgpt sleb angular; do score "$b" "$runs/baselines/$b.yaml"; done
score shortgpt-heal "$runs/shortgpt-heal.yaml"
score replaceme "$runs/angular-heal.yaml"
score average "$runs/average.recipe.json"
refs=()
for dir in "$runs"/*.out; do
    name="$(basename "$dir" .out)"
    recipe="$dir/tailor.yaml"
    [[ -f "$runs/$name-16k/tailor.yaml" ]] && recipe="$runs/$name-16k/tailor.yaml"
    score "$name" "$recipe"
    # The reference of a search: the same seed's warm starts alone.
    seed="${name##*-}"
    case "$name" in
        heal-*|healr-*) refs+=("$name=healwarm-$seed") ;;
        ppl-*) refs+=("$name=warm-$seed") ;;
    esac
done
"$python" "$repo/scripts/bench_quality.py" paired --samples "$out" --references "$(IFS=,; echo "${refs[*]}")"
