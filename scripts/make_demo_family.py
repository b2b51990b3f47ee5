#!/usr/bin/env python3
"""Train hf-tailor's built-in demo family: a tiny Llama base and three fine-tuned siblings.

Random weights cannot show that tailoring works, so the demo ships a real (tiny) trained
family. The base learns a mixture of three synthetic skills; each sibling continues from
the base and sharpens one skill:

  arith    the last digit of a sum of two numbers            "47+38=5"
  reverse  write a string of letters backwards               "rev kqzmw=wmzqk"
  recall   the value of a key in a fixed table of 700 facts  "fact rdf=6"

Each skill has a multiple-choice task (context + single-character choices, the JSONL
format hf-tailor's evaluator reads) with a calibration split (what the search optimises)
and a disjoint held-out test split (what the demo's accuracy table reports).

Like large LLMs, whose deeper layers can be removed with a modest loss, the family is
trained with stochastic depth (each layer skipped with a small probability), so that
depth pruning is meaningful at this scale.

Deterministic by seed (PyTorch on CPU, 2 threads, deterministic algorithms). Writes:

  OUT/base, OUT/arith, OUT/reverse, OUT/recall     LlamaForCausalLM checkpoints (f16)
  OUT/tasks/{calibration,test}/{arith,reverse,recall}.jsonl
  OUT/accuracy.json                                 the accuracy table printed at the end

Usage: python scripts/make_demo_family.py [--out assets/demo-family] [--seed 0]
The tokenizer files are the project's byte-level tokenizer, written by
`cargo run --example write_fixture` (so they are byte-identical to the test fixtures).
"""

import argparse
import json
import os
import random
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

BOS, EOS, PAD = 256, 257, 258
VOCAB = 259
SKILLS = ["arith", "reverse", "recall"]
SEQ_LEN = 32
LETTERS = string.ascii_lowercase

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- the skills

ARITH_TERMS = 2
REVERSE_LEN = (5, 8)
# Calibration and test items each ask about different facts, so the table holds exactly
# as many facts as the two splits have items (all of them are trained on).
FACT_COUNT = 700
FACTS = {}
FACT_KEYS = []
# The base sees reversal less often: it is the quickest skill to learn.
BASE_MIXTURE = (0.4, 0.2, 0.4)


def arith_example(rng):
    """Two-digit numbers and the last digit of their sum (addition mod 10)."""
    terms = [rng.randrange(10, 100) for _ in range(ARITH_TERMS)]
    return "+".join(map(str, terms)) + "=", str(sum(terms) % 10)


def reverse_example(rng):
    """A string of distinct letters and its reversal."""
    n = rng.randint(*REVERSE_LEN)
    word = "".join(rng.sample(LETTERS, n))
    return f"rev {word}=", word[::-1]


def make_facts(seed):
    """The fixed table the recall skill asks about: FACT_COUNT three-letter keys, a digit each.

    Recall is knowledge held in the weights (like a fine-tune that teaches facts), not
    in-context lookup: a key-value list in the prompt ("b4 q1 x7;x") needs an induction
    circuit, which this model size did not form within 4,000 steps (it stayed near the
    1-in-3 "some listed value" plateau), while memorising a table improves steadily with
    exposure, so the base (which sees it less) is measurably weaker than the sibling.
    """
    rng = random.Random(seed * 104729 + 3)
    keys = set()
    while len(keys) < FACT_COUNT:
        keys.add("".join(rng.choice(LETTERS) for _ in range(3)))
    FACTS.clear()
    FACTS.update({k: rng.randrange(10) for k in sorted(keys)})
    FACT_KEYS[:] = sorted(FACTS)


def recall_example(rng):
    """A key of the fact table; the answer is its value."""
    key = rng.choice(FACT_KEYS)
    return f"fact {key}=", str(FACTS[key])


MAKERS = {"arith": arith_example, "reverse": reverse_example, "recall": recall_example}


def mc_item(skill, rng):
    """One multiple-choice item: the context stops where a single answer character goes.

    Distractors are plausible: other digits for arith and recall, other letters of the same
    word for reverse.
    """
    prompt, answer = MAKERS[skill](rng)
    if skill == "reverse":
        # Cut the reversal at a random position: the next letter is the answer.
        cut = rng.randrange(len(answer))
        context = prompt + answer[:cut]
        correct = answer[cut]
        pool = [c for c in answer if c != correct]
    else:
        context, correct = prompt, answer
        pool = [d for d in "0123456789" if d != correct]
        rng.shuffle(pool)
    distractors = pool[:3] if skill != "reverse" else rng.sample(pool, 3)
    choices = [correct] + distractors
    rng.shuffle(choices)
    return {"context": context, "choices": choices, "label": choices.index(correct), "skill": skill}


def make_tasks(seed, n_calibration, n_test):
    """Disjoint calibration and test splits per skill (no context appears in both)."""
    rng = random.Random(seed * 7919 + 17)
    out = {}
    for skill in SKILLS:
        seen = set()
        items = []
        attempts = 0
        while len(items) < n_calibration + n_test:
            attempts += 1
            if attempts > 100 * (n_calibration + n_test):
                sys.exit(f"{skill}: cannot draw {n_calibration + n_test} distinct items")
            item = mc_item(skill, rng)
            if item["context"] in seen:
                continue
            seen.add(item["context"])
            items.append(item)
        out[skill] = {"calibration": items[:n_calibration], "test": items[n_calibration:]}
    return out


# ---------------------------------------------------------------- tokens and batches

def encode(text):
    """The project's byte-level tokenizer: one token per byte, <s> first."""
    return [BOS] + list(text.encode("utf-8"))


def batch(rng, weights, size):
    """`size` training sequences, each skill drawn with probability `weights[skill]`.

    Only the answers are learned, not the prompts: the prompts are random by construction
    and would only add noise to the gradient. Half the rows start with <s> and half do
    not, so that the family scores alike under lm-eval's protocol (context encoded without
    special tokens, which is what hf-tailor's evaluator does) and under transformers'
    default tokenisation (<s> first).
    """
    skills = list(weights)
    probs = [weights[s] for s in skills]
    rows, prompt_lens = [], []
    for _ in range(size):
        prompt, answer = MAKERS[rng.choices(skills, probs)[0]](rng)
        skip = 1 if rng.random() < 0.5 else 0
        prompt_ids = encode(prompt)[skip:]
        rows.append(prompt_ids + list(answer.encode("utf-8")) + [EOS])
        prompt_lens.append(len(prompt_ids))
    width = max(map(len, rows))
    assert width <= SEQ_LEN, width
    ids = torch.full((size, width), PAD, dtype=torch.long)
    for r, toks in enumerate(rows):
        ids[r, : len(toks)] = torch.tensor(toks)
    labels = ids.clone()
    labels[labels == PAD] = -100
    for r, n in enumerate(prompt_lens):
        labels[r, :n] = -100
    attention = (ids != PAD).long()
    return ids, attention, labels


# ---------------------------------------------------------------- model and training

def new_model(args):
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
        attention_bias=False,
        mlp_bias=False,
        initializer_range=0.05,
    )
    return LlamaForCausalLM(config)


class StochasticDepth:
    """Skips each decoder layer with probability `p` during training (output := input)."""

    def __init__(self, model, p, generator):
        self.p = p
        self.generator = generator
        self.skip = set()
        self.layers = list(model.model.layers)
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]

    def _hook(self, i):
        def hook(module, inputs, output):
            if module.training and i in self.skip:
                return inputs[0]
            return output

        return hook

    def resample(self):
        draws = torch.rand(len(self.layers), generator=self.generator)
        self.skip = {i for i, d in enumerate(draws.tolist()) if d < self.p}


def train(model, weights, max_steps, lr, seed, args, label, done=None, check_every=200):
    """AdamW with a short warm-up then a constant rate, for `max_steps` steps or until
    `done(model)` (checked every `check_every` steps) says the model is good enough."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    depth = StochasticDepth(model, args.layer_drop, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 50
    t0 = time.time()
    running = None
    step = 0
    for step in range(1, max_steps + 1):
        model.train()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, step / warmup)
        ids, attention, labels = batch(rng, weights, args.batch)
        depth.resample()
        logits = model(input_ids=ids, attention_mask=attention).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.97 * running + 0.03 * loss.item()
        if step % check_every == 0 or step == max_steps:
            model.eval()  # no layer is skipped outside training
            verdict = done(model) if done else None
            print(f"  [{label}] step {step}/{max_steps} loss {running:.3f} ({time.time() - t0:.0f}s)"
                  + (f" {verdict[1]}" if verdict else ""), flush=True)
            if verdict and verdict[0]:
                break
    for handle in depth.handles:
        handle.remove()
    model.eval()
    return step


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def mc_accuracy(model, items, bos=False):
    """lm-eval style: the choice with the highest continuation log-likelihood wins.

    Every choice is one token, so one forward pass per item scores all its choices.
    `bos=True` is lm-evaluation-harness 0.4.13's protocol (and hf-tailor's evaluator's): the
    context keeps the tokenizer's <s>; older lm-eval releases encoded it without special
    tokens (`bos=False`). The family is trained with and without <s> (see `batch`) and
    scored both ways.
    """
    model.eval()
    correct = 0
    for start in range(0, len(items), 128):
        chunk = items[start : start + 128]
        seqs = [encode(it["context"])[(0 if bos else 1):] for it in chunk]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s)
        logits = model(input_ids=ids, attention_mask=(ids != PAD).long()).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for r, it in enumerate(chunk):
            last = logp[r, len(seqs[r]) - 1]
            scores = [last[encode(c)[1]].item() for c in it["choices"]]
            assert all(len(encode(c)) == 2 for c in it["choices"]), "single-token choices"
            correct += int(max(range(len(scores)), key=scores.__getitem__) == it["label"])
    return correct / len(items)


def accuracy_row(model, tasks, split, bos=False):
    return {skill: mc_accuracy(model, tasks[skill][split], bos) for skill in SKILLS}


def fmt_row(row):
    return " ".join(f"{k}={v:.2f}" for k, v in row.items())


# ---------------------------------------------------------------- writing

def tokenizer_files(tmp):
    """The project's tokenizer files, written by the Rust fixture code itself."""
    out = Path(tmp) / "fixture"
    subprocess.run(
        ["cargo", "run", "--quiet", "--example", "write_fixture", "--", str(out)],
        cwd=REPO,
        check=True,
    )
    return out / "base"


def save(model, folder, tokenizer_dir, dtype):
    if folder.exists():
        shutil.rmtree(folder)
    model.to(dtype).save_pretrained(folder, safe_serialization=True)
    model.float()
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]:
        shutil.copyfile(tokenizer_dir / name, folder / name)


def write_tasks(tasks, out):
    for split in ["calibration", "test"]:
        d = out / "tasks" / split
        d.mkdir(parents=True, exist_ok=True)
        for skill in SKILLS:
            with open(d / f"{skill}.jsonl", "w") as f:
                for it in tasks[skill][split]:
                    row = {"context": it["context"], "choices": it["choices"], "label": it["label"]}
                    f.write(json.dumps(row) + "\n")


def check_tokenizer(folder):
    """The byte-level mapping this script assumes is what transformers' tokenizer does."""
    tok = AutoTokenizer.from_pretrained(folder)
    for text in ["rev abc=cba", "b=4 q=1;q=1", "47+38=5"]:
        got = tok(text)["input_ids"]
        assert got == encode(text), (text, got, encode(text))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "assets" / "demo-family"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--intermediate", type=int, default=192)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--base-steps", type=int, default=3000)
    ap.add_argument("--sibling-steps", type=int, default=2400, help="at most; each sibling stops once sharp enough")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--layer-drop", type=float, default=0.1)
    ap.add_argument("--calibration-items", type=int, default=200)
    ap.add_argument("--test-items", type=int, default=500)
    ap.add_argument("--min-gap", type=float, default=0.25,
                    help="a sibling trains until it beats the base on its skill by this much + 0.05 on the calibration split (or --sibling-steps)")
    ap.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    # One thread: on a shared 2-core machine two OpenMP threads are several times slower.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--evaluate-only", action="store_true", help="score the checkpoints already in --out; train nothing")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    t_start = time.time()

    if args.calibration_items + args.test_items > FACT_COUNT:
        sys.exit(f"recall asks each fact once: at most {FACT_COUNT} calibration + test items")
    make_facts(args.seed)
    tasks = make_tasks(args.seed, args.calibration_items, args.test_items)
    write_tasks(tasks, out)

    with tempfile.TemporaryDirectory() as tmp:
        if not args.evaluate_only:
            train_family(args, tasks, out, dtype, tmp)

    report(args, tasks, out, t_start)


def train_family(args, tasks, out, dtype, tmp):
    """The base on the mixture, then each sibling from the base (see the module docs)."""
    tok_dir = tokenizer_files(tmp)

    print(f"base: {args.base_steps} steps on a mixture of {', '.join(SKILLS)}", flush=True)
    torch.manual_seed(args.seed)
    base = new_model(args)
    mixture = dict(zip(SKILLS, BASE_MIXTURE))
    base_rows = {}

    def base_progress(model):
        base_rows.update(accuracy_row(model, tasks, "calibration"))
        return False, fmt_row(base_rows)

    train(base, mixture, args.base_steps, args.lr, args.seed * 1000 + 1, args, "base", base_progress)
    save(base, out / "base", tok_dir, dtype)
    check_tokenizer(out / "base")
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    base_cal = accuracy_row(base, tasks, "calibration")

    for j, skill in enumerate(SKILLS):
        print(f"{skill}: from the base, sharpening {skill} until it beats the base by "
              f"{args.min_gap:.2f} on the calibration split (at most {args.sibling_steps} steps)", flush=True)
        model = new_model(args)
        model.load_state_dict(base_state)
        # Mostly the sibling's skill, with some of the mixture replayed so that the
        # sibling does not forget the other skills (as real fine-tunes mostly do not).
        weights = {s: (0.8 if s == skill else 0.1) for s in SKILLS}

        def sharp_enough(m, skill=skill):
            row = accuracy_row(m, tasks, "calibration")
            # A margin over the target so that the held-out split shows the gap too.
            return row[skill] >= base_cal[skill] + args.min_gap + 0.05, fmt_row(row)

        train(model, weights, args.sibling_steps, args.lr, args.seed * 1000 + 10 + j, args, skill, sharp_enough)
        save(model, out / skill, tok_dir, dtype)

def report(args, tasks, out, t_start):
    """Score what was written (reloaded from disk, computed in f32) under both protocols."""
    table, table_bos = {}, {}
    for name in ["base"] + SKILLS:
        model = LlamaForCausalLM.from_pretrained(out / name, dtype=torch.float32)
        table[name] = {split: accuracy_row(model, tasks, split, bos=False) for split in ["calibration", "test"]}
        table_bos[name] = {split: accuracy_row(model, tasks, split, bos=True) for split in ["calibration", "test"]}

    for title, t in [("no special tokens (lm-eval before 0.4.13)", table), ("with <s> first, as transformers tokenises by default (lm-eval 0.4.13, what hf-tailor scores)", table_bos)]:
        print()
        print(f"held-out test accuracy, {title} ({args.test_items} items per task, chance = 0.25)")
        print(f"{'model':<10}" + "".join(f"{s:>10}" for s in SKILLS) + f"{'mean':>10}")
        for name, row in t.items():
            accs = [row["test"][s] for s in SKILLS]
            print(f"{name:<10}" + "".join(f"{a:>10.3f}" for a in accs) + f"{sum(accs) / len(accs):>10.3f}")
    train_args = {k: v for k, v in vars(args).items() if k not in ("out", "evaluate_only")}
    with open(out / "accuracy.json", "w") as f:
        json.dump({"seed": args.seed, "args": train_args, "accuracy": table, "accuracy_with_bos": table_bos}, f, indent=2)
        f.write("\n")

    failures = [
        f"{skill}: sibling {table[skill]['test'][skill]:.3f} vs base {table['base']['test'][skill]:.3f}"
        for skill in SKILLS
        if not measurably_better(table[skill]["test"][skill], table["base"]["test"][skill], args.test_items)
    ]
    print(f"\ntotal {time.time() - t_start:.0f}s")
    if failures:
        print("the base is not measurably weaker than each sibling on its skill: " + "; ".join(failures), file=sys.stderr)
        sys.exit(1)
    print("each sibling beats the base on its own skill (one-sided two-proportion z-test, p < 0.001)")


def measurably_better(sibling, base, n):
    """One-sided two-proportion z-test on `n` held-out items each: p < 0.001 (z > 3.09).

    A fixed margin would reject a base that is already good at a skill (94% vs 100% is 30
    errors against none on 500 items, far beyond chance) and accept noise on small splits.
    """
    pooled = (sibling + base) / 2
    se = (2 * pooled * (1 - pooled) / n) ** 0.5
    if se == 0:
        return sibling > base
    return (sibling - base) / se > 3.09


if __name__ == "__main__":
    main()
