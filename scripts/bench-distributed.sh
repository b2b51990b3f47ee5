#!/usr/bin/env bash
# The same study (TRIALS trials, default 200) on the identity fixture family: the
# single-process file-journal search (the reference), then a PostgreSQL study with 1, 2 and 4
# CPU `hf-tailor worker` processes and a coordinator. Reports trials/s (and its ratio to the
# reference), queue overhead per trial ((finish − claim − scoring time) / scoring time:
# the claim's commit, the result's transaction and the notification), worker utilisation
# (scoring time / (workers × wall time)) and the best full-budget score reached.
# Needs PostgreSQL's server binaries (initdb, pg_ctl; `apt-get install postgresql`).
# Usage: scripts/bench-distributed.sh [TRIALS] [WORKER COUNTS...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
trials="${1:-200}"
shift || true
counts=("${@:-1 2 4}")
read -r -a counts <<<"${counts[*]}"
target="${CARGO_TARGET_DIR:-target}"

cargo build --features testkit --bin hf-tailor --example write_fixture >&2
bin="$target/debug/hf-tailor"
work="$(mktemp -d /tmp/hft-bench-dist-XXXXXX)"
chmod 755 "$work"
pgbin="$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb | tail -1)")")"
as_pg=()
if [[ $(id -u) -eq 0 ]]; then as_pg=(runuser -u postgres --); fi
cleanup() {
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

read -r -a family <<<"$("$target/debug/examples/write_fixture" "$work/family" identity)"
common=("${family[@]}" --trials "$trials" --budgets 8,24 --baselines none --selection-split 0 --seed 0)

mkdir "$work/pg"
[[ ${#as_pg[@]} -eq 0 ]] || chown postgres "$work/pg"
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg" -U bench --auth=trust --no-sync >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg" -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1" -l "$work/pg/log" -w start >/dev/null
url="postgresql://bench@127.0.0.1:$port/postgres"
psql() { "$pgbin/psql" -X -A -t -q "$url" -c "$1"; }

best_of_journal() { # the best mean accuracy at the full budget in a journal
    python3 -c 'import json,sys
best=max((t["mean"] for t in map(json.loads, open(sys.argv[1])) if t.get("kind")=="trial" and t["budget"]==24 and not t.get("failed")), default=float("nan"))
print(f"{100*best:.1f}")' "$1"
}

printf '%-28s %8s %10s %9s %16s %30s %8s\n' "run" "trials" "wall s" "trials/s" "vs reference" "queue overhead per trial" "best %"
start=$(date +%s.%N)
"$bin" search "${common[@]}" --out "$work/ref" >/dev/null 2>"$work/ref.log"
ref_wall=$(python3 -c "import time; print(time.time() - $start)")
ref_rate=$(python3 -c "print($trials / $ref_wall)")
printf '%-28s %8d %10.1f %9.2f %16s %30s %8s\n' "file journal, 1 process" "$trials" "$ref_wall" "$ref_rate" "1.00" "-" "$(best_of_journal "$work/ref/journal.jsonl")"

for n in "${counts[@]}"; do
    study="bench-$n"
    start=$(date +%s.%N)
    "$bin" search "${common[@]}" --storage "$url" --study "$study" --workers 0 --out "$work/out-$n" >/dev/null 2>"$work/coord-$n.log" &
    coord=$!
    pids=()
    for ((k = 0; k < n; k++)); do
        "$bin" worker --storage "$url" --study "$study" 2>"$work/worker-$n-$k.log" &
        pids+=($!)
    done
    wait "$coord"
    for p in "${pids[@]}"; do wait "$p"; done
    wall=$(python3 -c "import time; print(time.time() - $start)")
    "$bin" export --storage "$url" --study "$study" --journal "$work/$study.jsonl" 2>/dev/null
    # Per trial: claim-to-finish time less the scoring time (the result's transaction), in
    # % of the scoring time and in ms.
    ovh=$(psql "SELECT round((100 * sum(extract(epoch FROM finished_at - claimed_at) - (scored->>'seconds')::float8) / sum((scored->>'seconds')::float8))::numeric, 2) || '% ' || round((1000 * avg(extract(epoch FROM finished_at - claimed_at) - (scored->>'seconds')::float8))::numeric, 2) || 'ms' FROM hf_tailor_trial WHERE study = '$study' AND status = 'done'")
    util=$(psql "SELECT round((100 * sum((scored->>'seconds')::float8) / ($n * $wall))::numeric, 1) FROM hf_tailor_trial WHERE study = '$study' AND status = 'done'")
    rate=$(python3 -c "print($trials / $wall)")
    printf '%-28s %8d %10.1f %9.2f %16s %30s %8s\n' "postgresql, $n worker(s)" "$trials" "$wall" "$rate" "$(python3 -c "print(f'{$rate / $ref_rate:.2f}')")" "${ovh} (util ${util}%)" "$(best_of_journal "$work/$study.jsonl")"
done
