#!/usr/bin/env bash
# Benchmark of the layer search: best objective against trials for the Bayesian optimiser
# (bo), the reference-style warm start (warmstart) and random search, on the same family.
#
#   bash scripts/bench-search.sh            # both parts, default sizes
#   SEEDS=3 TRIALS=200 bash scripts/bench-search.sh
#
# Part 1, synthetic: a scorer with a closed-form optimum at the reference's scale
# (40 layers, keep 30, 3 siblings, 2 tasks; budgets 111/333/1000); the table shows the
# regret of the chosen candidate (optimum − its exact mean accuracy, in points), mean over
# seeds, with the surrogate modelling the mean task cost (default) and ParEGO (reference).
# Part 2, real: a tiny Llama family scored by the in-memory evaluator whose optimum (100 %)
# is known by construction (identity layers + one sibling layer that the tasks need); the
# table shows the best full-budget mean accuracy reached after N trials, mean over seeds.
#
# The optimiser's trial sequence does not depend on speed, so the dev profile is used by
# default (PROFILE=release for timings comparable with other benchmarks).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
SEEDS="${SEEDS:-5}"
TRIALS="${TRIALS:-300}"
PROFILE="${PROFILE:-dev}"
cargo build --profile "$PROFILE" --example bench_search >&2
dir=debug; [[ "$PROFILE" == release ]] && dir=release
bin="${CARGO_TARGET_DIR:-target}/$dir/examples/bench_search"
echo "## synthetic, surrogate on the mean task cost (default)"
"$bin" synthetic --layers 40 --keep 30 --siblings 3 --tasks 2 --trials "$TRIALS" --seeds "$SEEDS"
echo
echo "## synthetic, ParEGO scalarisation (the reference)"
"$bin" synthetic --layers 40 --keep 30 --siblings 3 --tasks 2 --trials "$TRIALS" --seeds "$SEEDS" --parego
echo
echo "## real tiny family (in-memory evaluator), optimum 100 % by construction"
"$bin" family --trials 150 --seeds "$SEEDS"
