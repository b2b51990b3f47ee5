#!/usr/bin/env python3
"""Where a search's trials went: read a search journal (journal.jsonl) and print

- per trial: origin, budget, distance to the incumbent at proposal time (layers moved,
  sources changed among common kept layers), the surrogate's prediction and the score;
- the Spearman rank correlation between each lower budget and the full budget, over the
  candidates evaluated at both;
- how well the surrogate's predictions ranked what the candidates scored;
- how many candidates of the optimiser's own beat the best warm start at the full budget,
  and by how much.

Values are the search objective's guiding value (higher is better; accuracy, or a
log-likelihood per token for loglik/ppl). The incumbent is the best candidate at the
highest budget told before the proposal (results in journal order); journals written
before proposals were journaled get it computed here, newer ones also show the
optimiser's own record. Standard library only.

Usage: scripts/trial_analysis.py JOURNAL [--quiet]   (--quiet: summaries only)
"""

import json
import sys

WARM = {"baseline", "warm_start"}


def load(path):
    header, trials = None, []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break  # a torn last line: the trial in flight when the search stopped
            d = json.loads(line)
            if d.get("kind") == "header":
                header = d
            elif d.get("kind") == "trial":
                trials.append(d)
    if header is None:
        sys.exit(f"{path}: no journal header")
    return header, trials


def value(t):
    o = t.get("objective")
    return o["value"] if o else t["mean"]


def layers(t):
    """{source layer: its rule as canonical JSON} of a trial's recipe."""
    out = {}
    for layer in t["recipe"]["layers"]:
        rule = {k: v for k, v in layer.items() if k != "from"}
        out[layer["from"]] = json.dumps(rule, sort_keys=True)
    return out


def recipe_key(t):
    return json.dumps(t["recipe"]["layers"], sort_keys=True)


def distance(a, b):
    ka, kb = set(a), set(b)
    moved = (len(ka ^ kb) + 1) // 2
    changed = sum(1 for i in ka & kb if a[i] != b[i])
    return moved, changed


def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(xs, ys):
    if len(xs) < 3:
        return None
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else None


def fmt(x, digits=4):
    return "-" if x is None else f"{x:+.{digits}f}"


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    quiet = "--quiet" in argv
    if len(args) != 1:
        sys.exit(__doc__)
    header, trials = load(args[0])
    opt = header["optimizer"]
    full = opt["budgets"][-1]
    guide = opt.get("objective", {}).get("guide", "acc")
    ok = [t for t in trials if not t.get("failed")]
    # The origin of a candidate: its first trial's (a promoted trial is that proposal's).
    first = {}
    for t in trials:
        first.setdefault(recipe_key(t), t)
    origin = {k: t["origin"] for k, t in first.items()}
    by_index = {t["index"]: t for t in trials}

    print(f"journal {args[0]}: {len(trials)} trials, optimizer {opt['kind']} (seed {opt['seed']}), "
          f"objective {guide}, budgets {opt['budgets']}")
    if not quiet:
        print("\n trial  origin      budget  inc  moved chg  predicted(sd)        scored    full-budget score")
    told = []  # results in journal order
    dist_by_origin = {}
    pred_pairs = []
    for t in trials:
        inc = None
        if told:
            top = max(x["budget"] for x in told)
            inc = max((x for x in told if x["budget"] == top), key=value)
        note = t.get("proposal") or {}
        moved = changed = None
        if inc is not None:
            moved, changed = distance(layers(t), layers(inc))
        if t["origin"] != "promoted" and moved is not None:
            dist_by_origin.setdefault(t["origin"], []).append((moved, changed))
        key = recipe_key(t)
        at_full = [x for x in ok if recipe_key(x) == key and x["budget"] == full]
        full_v = value(at_full[0]) if at_full else None
        if note.get("predicted") is not None and not t.get("failed"):
            pred_pairs.append((note["predicted"], full_v if full_v is not None else value(t), full_v is not None))
        if not quiet:
            pred = "-" if note.get("predicted") is None else f"{note['predicted']:+.4f}({note.get('predicted_sd', 0):.3f})"
            scored = "failed" if t.get("failed") else f"{value(t):+.4f}"
            inc_s = "-" if inc is None else str(inc["index"] + 1)
            own = ""
            if note.get("incumbent") is not None and (note.get("moved"), note.get("changed")) != (moved, changed):
                own = f"  (journal: inc {note['incumbent'] + 1}, {note.get('moved')}/{note.get('changed')})"
            print(f" {t['index'] + 1:5d}  {t['origin']:<10} {t['budget']:6d}  {inc_s:>4} {fmt_int(moved):>5} {fmt_int(changed):>3}  "
                  f"{pred:<19} {scored:>9}    {fmt(full_v) if full_v is not None else ''}{own}")
        told.append(t)

    print("\nDistance to the incumbent at proposal time (new candidates), by origin:")
    for o, ds in sorted(dist_by_origin.items()):
        mv = sum(d[0] for d in ds) / len(ds)
        ch = sum(d[1] for d in ds) / len(ds)
        near = sum(1 for d in ds if d[0] + d[1] <= 2)
        print(f"  {o:<10} {len(ds):4d} proposals: mean {mv:.2f} layers moved, {ch:.2f} sources changed; {near} within 2 steps")

    print("\nRank agreement between budgets (Spearman, candidates evaluated at both):")
    budgets = opt["budgets"]
    per_budget = {b: {} for b in budgets}
    for t in ok:
        if t["budget"] in per_budget:
            per_budget[t["budget"]][recipe_key(t)] = value(t)
    for b in budgets[:-1]:
        common = [k for k in per_budget[b] if k in per_budget[full]]
        rho = spearman([per_budget[b][k] for k in common], [per_budget[full][k] for k in common])
        print(f"  budget {b} vs {full}: {len(common)} candidates, rho {fmt(rho, 3) if rho is not None else '- (fewer than 3)'}")

    if pred_pairs:
        at_full = [(p, s) for p, s, f in pred_pairs if f]
        rho_all = spearman([p for p, _, _ in pred_pairs], [s for _, s, _ in pred_pairs])
        rho_full = spearman([p for p, _ in at_full], [s for _, s in at_full])
        err = [s - p for p, s in at_full]
        print(f"\nSurrogate: {len(pred_pairs)} predicted proposals; Spearman predicted vs scored (at their own budget "
              f"or full when reached) {fmt(rho_all, 3) if rho_all is not None else '-'}; "
              f"{len(at_full)} reached the full budget, rho {fmt(rho_full, 3) if rho_full is not None else '-'}"
              + (f", mean scored − predicted {sum(err) / len(err):+.4f}" if err else ""))

    print("\nOwn proposals against the best warm start, at the full budget:")
    full_trials = [t for t in ok if t["budget"] == full]
    warm = [t for t in full_trials if origin[recipe_key(t)] in WARM]
    own = {}
    for t in full_trials:
        if origin[recipe_key(t)] not in WARM:
            own.setdefault(recipe_key(t), t)
    if not any(origin[k] in WARM for k in origin):
        print("  the search had no warm start")
        return
    if not warm:
        print(f"  no warm start reached the full budget; {len(own)} candidates of the optimiser's own did")
        return
    best_warm = max(warm, key=value)
    print(f"  best warm start: trial {best_warm['index'] + 1} ({origin[recipe_key(best_warm)]}), {value(best_warm):+.4f}")
    beat = sorted((value(t) - value(best_warm), t) for t in own.values() if value(t) > value(best_warm))
    print(f"  {len(beat)} of {len(own)} candidates of the optimiser's own beat it")
    for d, t in reversed(beat):
        src = origin[recipe_key(t)]
        print(f"    trial {t['index'] + 1} ({src}, first proposed as trial {first[recipe_key(t)]['index'] + 1}): {value(t):+.4f}, by {d:+.4f}")
    if own and not beat:
        closest = max(own.values(), key=value)
        print(f"  closest: trial {closest['index'] + 1} ({origin[recipe_key(closest)]}), {value(closest) - value(best_warm):+.4f} behind")
    if own:
        vs = sorted(value(t) for t in own.values())
        print(f"  own candidates at the full budget: median {vs[len(vs) // 2]:+.4f}, best {vs[-1]:+.4f}")
    _ = by_index


def fmt_int(x):
    return "-" if x is None else str(x)


if __name__ == "__main__":
    main(sys.argv)
