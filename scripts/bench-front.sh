#!/usr/bin/env bash
# The front from one search against dedicated single-depth searches with the same total
# trials split evenly over the depths, on the demo family (8 layers, keep 4..7).
# usage: scripts/bench-front.sh [HF_TAILOR_BIN] [TRIALS] [WORK_DIR]
set -euo pipefail
BIN=${1:-target/release/hf-tailor}
TRIALS=${2:-120}
WORK=${3:-$(mktemp -d)}
LO=4; HI=7
DEPTHS=$((HI - LO + 1))
"$BIN" demo --out "$WORK/demo" --trials 1 --force >/dev/null 2>&1 || true
FAM="$WORK/demo/family"
# Calibration texts for the baselines: each calibration item's context with its answer.
python3 -c '
import json, sys
with open(sys.argv[2], "w") as out:
    for f in sys.argv[1].split(","):
        for line in open(f):
            r = json.loads(line)
            out.write(json.dumps({"text": r["context"] + r["choices"][r["label"]]}) + "\n")
' "$FAM/tasks/calibration/arith.jsonl,$FAM/tasks/calibration/reverse.jsonl,$FAM/tasks/calibration/recall.jsonl" "$WORK/calib.jsonl"
T="mc:arith=$FAM/tasks/calibration/arith.jsonl,mc:reverse=$FAM/tasks/calibration/reverse.jsonl,mc:recall=$FAM/tasks/calibration/recall.jsonl"
COMMON=(--base "$FAM/base" --finetunes "$FAM/arith,$FAM/reverse,$FAM/recall" --tasks "$T" --budgets 22,66,200 --baselines shortgpt --calibration "ppl=$WORK/calib.jsonl")
"$BIN" search "${COMMON[@]}" --keep-layers "$LO..$HI" --trials "$TRIALS" --out "$WORK/front" --json >/dev/null 2>"$WORK/front.log"
for k in $(seq $LO $HI); do
  "$BIN" search "${COMMON[@]}" --keep-layers "$k" --trials $((TRIALS / DEPTHS)) --out "$WORK/keep-$k" --json >/dev/null 2>"$WORK/keep-$k.log"
done
python3 - "$WORK" $LO $HI "$TRIALS" <<'PY'
import json, sys
work, lo, hi, trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
front = {p["layers"]: p for p in json.load(open(f"{work}/front/report.json"))["front"]}
def mean(row):
    s = row["scores"]; se = row.get("se", {})
    return 100 * sum(s.values()) / len(s), 100 * (sum(v * v for v in se.values()) ** 0.5) / len(s)
print(f"| layers | front ({trials} trials, one search) | dedicated ({trials // (hi - lo + 1)} trials at this depth) | difference |")
print("|---:|---:|---:|---:|")
for k in range(lo, hi + 1):
    f, fe = mean(front[k]["tailored"])
    rep = json.load(open(f"{work}/keep-{k}/report.json"))
    d, de = mean(next(r for r in rep["rows"] if r["kind"] == "tailored"))
    diff, dse = f - d, (fe * fe + de * de) ** 0.5
    print(f"| {k} | {f:.1f} ± {fe:.1f} | {d:.1f} ± {de:.1f} | {diff:+.1f} ± {dse:.1f}{'' if abs(diff) < 2 * dse else ' (≥ 2 s.e.)'} |")
PY
