#!/usr/bin/env bash
# The front from one search against dedicated single-depth searches with the same total
# trials split evenly over the depths, each side scored on held-out items the searches never
# saw, on two families:
#   demo      the demo family (8 layers, keep 4..7; budgets 22/66/200 of the 200 calibration
#             items a task; held out: the 500 test items a task under tasks/test)
#   identity  the test fixture's identity family (src/testkit/identity_family.rs: 6 layers,
#             keep 3..5; budgets 8/24 of 24 items a task; held out: 48 other items a task
#             labelled by the same teacher, written by `cargo run --example write_fixture`;
#             guided by accuracy, as the search-quality tests are: the tasks are labelled by a
#             teacher's argmax, and the default log-likelihood objective prefers recipes at
#             chance accuracy there)
# Differences of at least two standard errors (independent s.e. of the two held-out means,
# sqrt(se_front² + se_dedicated²)) are flagged.
# usage: scripts/bench-front.sh [HF_TAILOR_BIN] [TRIALS] [WORK_DIR] [FAMILIES]
#   e.g. nice -n 10 scripts/bench-front.sh target/debug/hf-tailor 120 /tmp/bench-front demo,identity
set -euo pipefail
BIN=${1:-target/release/hf-tailor}
TRIALS=${2:-120}
WORK=${3:-$(mktemp -d)}
FAMILIES=${4:-demo,identity}
export SEED=${SEED:-0}
mkdir -p "$WORK"

# Calibration texts for the baselines: each item's context with its answer.
texts() {
  python3 -c '
import json, sys
with open(sys.argv[2], "w") as out:
    for f in sys.argv[1].split(","):
        for line in open(f):
            r = json.loads(line)
            out.write(json.dumps({"text": r["context"] + r["choices"][r["label"]]}) + "\n")
' "$1" "$2"
}

# compare NAME LO HI BUDGETS HELDOUT_TASKS SEARCH_ARGS...
compare() {
  local name=$1 lo=$2 hi=$3 budgets=$4 held=$5
  shift 5
  local w="$WORK/$name" depths=$((hi - lo + 1))
  rm -rf "$w" && mkdir -p "$w"  # the bench's own folder: every run starts fresh
  local common=("$@" --budgets "$budgets" --seed "$SEED" --baselines shortgpt)
  "$BIN" search "${common[@]}" --keep-layers "$lo..$hi" --trials "$TRIALS" --out "$w/front" --json >/dev/null 2>"$w/front.log"
  for k in $(seq "$lo" "$hi"); do
    "$BIN" search "${common[@]}" --keep-layers "$k" --trials $((TRIALS / depths)) --out "$w/keep-$k" --json >/dev/null 2>"$w/keep-$k.log"
    "$BIN" eval --recipe "$w/front/front/keep-$k.yaml" --tasks "$held" --json >"$w/held-front-$k.json" 2>>"$w/eval.log"
    "$BIN" eval --recipe "$w/keep-$k/tailor.yaml" --tasks "$held" --json >"$w/held-keep-$k.json" 2>>"$w/eval.log"
  done
  python3 - "$w" "$lo" "$hi" "$TRIALS" "$name" <<'PY'
import json, sys
w, lo, hi, trials, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
depths = hi - lo + 1
def held(path):
    rows = [t for t in json.load(open(path))["hf_tailor"]["tasks"] if "acc" in t]
    n = len(rows)
    return 100 * sum(t["acc"] for t in rows) / n, 100 * sum(t["acc_stderr"] ** 2 for t in rows) ** 0.5 / n
front = {p["layers"]: p for p in json.load(open(f"{w}/front/report.json"))["front"]}
records = [r for r in map(json.loads, open(f"{w}/front/journal.jsonl")) if "recipe" in r and "budget" in r]
full = max(r["budget"] for r in records)
trials_at = {k: sum(len(r["recipe"]["layers"]) == k for r in records) for k in range(lo, hi + 1)}
full_at = {k: sum(len(r["recipe"]["layers"]) == k and r["budget"] == full for r in records) for k in range(lo, hi + 1)}
print(f"{name}: mean accuracy (%) on held-out items, front ({trials} trials, one search) vs dedicated ({trials // depths} trials at each depth), seed {__import__('os').environ.get('SEED', '0')}")
print()
print("| layers | front trials (at the full budget) | front | dedicated | front − dedicated |")
print("|---:|---:|---:|---:|---:|")
flagged = []
for k in range(lo, hi + 1):
    f, fe = held(f"{w}/held-front-{k}.json")
    d, de = held(f"{w}/held-keep-{k}.json")
    diff, se = f - d, (fe * fe + de * de) ** 0.5
    mark = ""
    if abs(diff) >= 2 * se and se > 0 or (se == 0 and diff != 0):
        mark = " (≥ 2 s.e.)"
        if diff < 0:
            flagged.append(k)
    print(f"| {k} | {trials_at[k]} ({full_at[k]}) | {f:.1f} ± {fe:.1f} | {d:.1f} ± {de:.1f} | {diff:+.1f} ± {se:.1f}{mark} |")
print()
print(f"{name}: depths where the front is worse by ≥ 2 s.e.: {', '.join(map(str, flagged)) or 'none'}")
print()
PY
}

for fam in ${FAMILIES//,/ }; do
  case $fam in
    demo)
      "$BIN" demo --out "$WORK/demo-src" --trials 1 --force >/dev/null 2>&1 || true
      F="$WORK/demo-src/family"
      C="$F/tasks/calibration"; H="$F/tasks/test"
      texts "$C/arith.jsonl,$C/reverse.jsonl,$C/recall.jsonl" "$WORK/demo-calib.jsonl"
      compare demo 4 7 22,66,200 "mc:arith=$H/arith.jsonl,mc:reverse=$H/reverse.jsonl,mc:recall=$H/recall.jsonl" \
        --base "$F/base" --finetunes "$F/arith,$F/reverse,$F/recall" \
        --tasks "mc:arith=$C/arith.jsonl,mc:reverse=$C/reverse.jsonl,mc:recall=$C/recall.jsonl" --calibration "ppl=$WORK/demo-calib.jsonl"
      ;;
    identity)
      F="$WORK/identity-src"
      if [[ ! -f "$F/heldout/needs_task.jsonl" ]]; then
        cargo run -q --example write_fixture -- "$F" identity >/dev/null
      fi
      texts "$F/needs_task.jsonl,$F/avoid_distractor.jsonl" "$WORK/identity-calib.jsonl"
      compare identity 3 5 8,24 "mc:needs_task=$F/heldout/needs_task.jsonl,mc:avoid_distractor=$F/heldout/avoid_distractor.jsonl" \
        --base "$F/base" --finetunes "$F/task,$F/distractor" \
        --tasks "mc:needs_task=$F/needs_task.jsonl,mc:avoid_distractor=$F/avoid_distractor.jsonl" --calibration "ppl=$WORK/identity-calib.jsonl" \
        --objective acc
      ;;
    *) echo "bench-front: unknown family $fam (demo, identity)" >&2; exit 2 ;;
  esac
done
